#!/usr/bin/env bash
# Builds the container image from ./Dockerfile with buildah (no Docker, no
# daemon), checks it, and exports it: the same file `docker build` takes.
#
#   scripts/image.sh build   the image ssegate:<version> (and ssegate:dev)
#   scripts/image.sh test    build, then run `ssegate --version` inside it and check its user
#   scripts/image.sh export  test, then write target/image/ssegate.tar (docker-archive;
#                            `kind load image-archive` and `ctr images import` take it)
#
# The Dockerfile's build stage starts FROM a Rust image (RUST_IMAGE). When
# buildah has no such image and none can be pulled (this machine reaches no
# registry), a local one is made first and cached by Rust version: Debian
# bookworm by debootstrap (gcc, libc6-dev, musl-tools, as in rust:*-slim) and
# the installed Rust toolchain with rustup, laid out as the official image lays
# it out (/usr/local/cargo, /usr/local/rustup). Cargo's registry and target
# folder are cache mounts of the build, kept by buildah between builds.
#
# buildah runs with the vfs storage driver and chroot isolation, so it works
# where no container engine runs. Environment: IMAGE (ssegate:<version>),
# RUST_IMAGE (a Rust image to build with instead).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
IMAGE=${IMAGE:-ssegate:$VERSION}
BUILDAH=(buildah --storage-driver vfs)
say() { printf 'image: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# The architecture to build for: this machine's (docker sets TARGETARCH itself; buildah
# before 1.35 does not).
TARGETARCH=$(dpkg --print-architecture 2>/dev/null || uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
# The build's downloads (crates.io) trust what this machine trusts: its CA
# bundle may hold a proxy's certificate authority that no image has.
TRUST=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  TRUST=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

# bud BASE ARGS...: buildah bud of ./Dockerfile with the build stage FROM BASE; the same
# options on every call, so each call hits the cache the others filled.
bud() {
  local base=$1; shift
  "${BUILDAH[@]}" bud --isolation chroot --layers -f Dockerfile "${TRUST[@]}" \
    --build-arg RUST_IMAGE="$base" --build-arg TARGETARCH="$TARGETARCH" "$@" .
}

has_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# local_rust_image: print the name of a local Rust build image for the
# installed toolchain, making it first if buildah does not have it.
local_rust_image() {
  local rust; rust=$(rustc --version | awk '{print $2}')
  local name=localhost/ssegate-rust:$rust-bookworm
  if has_image "$name"; then echo "$name"; return; fi
  command -v debootstrap >/dev/null || fail "debootstrap missing: apt-get install debootstrap"
  local sysroot; sysroot=$(rustc --print sysroot)
  [ -d "$sysroot/lib/rustlib/x86_64-unknown-linux-musl" ] \
    || fail "the Rust toolchain has no musl target: rustup target add x86_64-unknown-linux-musl"
  say "making $name (Debian bookworm by debootstrap, Rust $rust from $sysroot; once per Rust version)"
  local root; root=$(mktemp -d /var/tmp/ssegate-rust.XXXXXX)
  debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev,musl-tools \
    bookworm "$root" http://deb.debian.org/debian >&2 || fail "debootstrap bookworm"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  local toolchain=$root/usr/local/rustup/toolchains/$rust-x86_64-unknown-linux-gnu
  mkdir -p "$toolchain" "$root/usr/local/cargo/bin"
  # The compiler, cargo and the gnu and musl standard libraries; no docs.
  cp -a "$sysroot/bin" "$sysroot/lib" "$toolchain/"
  cp "$(command -v rustup)" "$root/usr/local/cargo/bin/rustup"
  local proxy
  for proxy in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
    ln -s rustup "$root/usr/local/cargo/bin/$proxy"
  done
  printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' "$rust" \
    > "$root/usr/local/rustup/settings.toml"
  local ctr; ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy "$ctr" "$root" / >/dev/null
  "${BUILDAH[@]}" config \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$rust" --cmd bash "$ctr"
  "${BUILDAH[@]}" commit --rm "$ctr" "$name" >/dev/null
  rm -rf "$root"
  echo "$name"
}

rust_image() {
  if [ -n "${RUST_IMAGE:-}" ]; then echo "$RUST_IMAGE"; return; fi
  local wanted; wanted=$(sed -n 's/^ARG RUST_IMAGE=//p' Dockerfile)
  if has_image "$wanted"; then echo "$wanted"; else local_rust_image; fi
}

build() {
  command -v buildah >/dev/null || fail "buildah missing: apt-get install buildah"
  local base; base=$(rust_image)
  local started=$SECONDS
  say "building $IMAGE from Dockerfile (build stage FROM $base)"
  bud "$base" -t "$IMAGE" -t ssegate:dev >&2
  say "built $IMAGE in $((SECONDS - started))s"
  prune_older_builds "$base"
}

# prune_older_builds BASE: with the vfs driver every cached build step is a full copy of
# the build stage's file system (over a GiB), and each source change leaves the last
# build's steps behind, unnamed. The build stage of this build gets a name (its steps
# all come from the cache just filled, so this takes seconds), which keeps its steps as
# the next build's cache; then every unnamed image no other image builds on goes, until
# none is left: earlier builds' steps, and the node's replaced pause and CoreDNS images.
prune_older_builds() {
  bud "$1" --quiet --target build -t localhost/ssegate-build:cache >/dev/null \
    || { say "could not name the build stage; nothing pruned"; return 0; }
  local before; before=$(du -sm /var/lib/containers/storage 2>/dev/null | cut -f1)
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  local after; after=$(du -sm /var/lib/containers/storage 2>/dev/null | cut -f1)
  say "pruned earlier builds' images: ${before:-?} MiB -> ${after:-?} MiB of image storage"
}

check() {
  local ctr; ctr=$("${BUILDAH[@]}" from "$IMAGE")
  local out; out=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- /ssegate --version)
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [ "$out" = "ssegate $VERSION" ] || fail "unexpected --version output: $out"
  local user; user=$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
  [ "$user" = "65532:65532" ] || fail "image runs as '$user', not non-root"
  say "ok: '$out', user $user"
}

export_archive() {
  mkdir -p target/image
  # Written aside, then renamed: a reader never sees half an archive.
  rm -f target/image/ssegate.tar.part
  "${BUILDAH[@]}" push "$IMAGE" "docker-archive:target/image/ssegate.tar.part:$IMAGE" >&2
  mv target/image/ssegate.tar.part target/image/ssegate.tar
  say "wrote target/image/ssegate.tar"
}

case "${1:-}" in
  build) build ;;
  test) build; check ;;
  export) build; check; export_archive ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
