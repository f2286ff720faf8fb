# syntax=docker/dockerfile:1
# The ssegate image: one static (musl) binary in an empty image, run as a
# non-root user. `docker build -t ssegate:dev .` on a clean checkout;
# scripts/image.sh builds this same file with buildah (the tested path).

# The build stage's base. On a machine that reaches no registry,
# scripts/image.sh makes an equivalent one locally (Debian bookworm, the
# installed Rust toolchain) and passes it here.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
# musl-gcc compiles and links the C parts (ring) against musl.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
# The image is built for the architecture the build runs on (amd64 or
# arm64: TARGETARCH, which docker sets and scripts/image.sh passes to
# buildah, else the stage's own; the build stage runs on it too, natively or
# emulated), so musl-gcc is that architecture's.
ARG TARGETARCH
RUN wanted=${TARGETARCH:-$(dpkg --print-architecture)} \
    && case "$wanted" in \
      amd64) arch=x86_64 ;; \
      arm64) arch=aarch64 ;; \
      *) echo "unsupported architecture: $wanted" >&2; exit 1 ;; \
    esac \
    && echo "$arch-unknown-linux-musl" > /rust-target \
    && rustup target add "$arch-unknown-linux-musl"
WORKDIR /src
COPY . .
# The registry and the target folder are build caches: a rebuild after a
# source change compiles ssegate alone.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target=$(cat /rust-target) \
    && export CC_$(echo "$target" | tr - _)=musl-gcc \
    && cargo build --profile dist --locked --target "$target" --bin ssegate \
    && cp "target/$target/dist/ssegate" /ssegate

FROM scratch
COPY --from=build /ssegate /ssegate
# 65532 is "nonroot" in distroless images; the chart runs the pod as it too.
USER 65532:65532
# Proxy (HTTP, HTTPS) and admin (health, metrics).
EXPOSE 8080 8443 9090
ENTRYPOINT ["/ssegate"]
CMD ["--help"]
