# syntax=docker/dockerfile:1
# The ssegate image: one static (musl) binary in an empty image, run as a
# non-root user. `docker build -t ssegate:dev .` on a clean checkout;
# scripts/image.sh builds this same file with buildah (the tested path).

# The build stage's base. On a machine that reaches no registry,
# scripts/image.sh makes an equivalent one locally (Debian bookworm, the
# installed Rust toolchain) and passes it here.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
# musl-gcc links the C parts (ring) against musl.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The registry and the target folder are build caches: a rebuild after a
# source change compiles ssegate alone.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --target x86_64-unknown-linux-musl --bin ssegate \
    && cp target/x86_64-unknown-linux-musl/dist/ssegate /ssegate

FROM scratch
COPY --from=build /ssegate /ssegate
# 65532 is "nonroot" in distroless images; the chart runs the pod as it too.
USER 65532:65532
# Proxy (HTTP, HTTPS) and admin (health, metrics).
EXPOSE 8080 8443 9090
ENTRYPOINT ["/ssegate"]
CMD ["--help"]
