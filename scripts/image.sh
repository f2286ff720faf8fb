#!/usr/bin/env bash
# Builds the container image without Docker, checks it, and exports it.
#
#   scripts/image.sh build   static binary + image ssegate:<version>
#   scripts/image.sh test    build, then run `ssegate --version` inside it
#   scripts/image.sh export  build, then write target/image/ssegate.tar
#                            (docker-archive; `kind load image-archive` takes it)
#
# Uses buildah with the vfs storage driver and chroot isolation, so it works
# where no container engine runs.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
IMAGE=${IMAGE:-ssegate:$VERSION}
BUILDAH=(buildah --storage-driver vfs)
say() { printf 'image: %s\n' "$*" >&2; }

static_binary() {
  # musl gives a fully static binary; fall back to glibc with crt-static.
  if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1; then
    command -v musl-gcc >/dev/null || { say "musl-gcc missing: apt-get install musl-tools"; exit 1; }
    cargo build --profile dist --locked --target x86_64-unknown-linux-musl >&2
    echo target/x86_64-unknown-linux-musl/dist/ssegate
  else
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile dist --locked --target x86_64-unknown-linux-gnu >&2
    echo target/x86_64-unknown-linux-gnu/dist/ssegate
  fi
}

build() {
  command -v buildah >/dev/null || { say "buildah missing: apt-get install buildah"; exit 1; }
  local binary; binary=$(static_binary)
  local target_dir=${CARGO_TARGET_DIR:-target}
  binary=${binary/#target/$target_dir}
  if file "$binary" 2>/dev/null | grep -q 'dynamically linked'; then
    say "$binary is not static"; exit 1
  fi
  # The build context must hold the binary: stage it under target/image.
  mkdir -p target/image
  cp "$binary" target/image/ssegate
  "${BUILDAH[@]}" bud --isolation chroot --layers=false -f Containerfile \
    --build-arg BINARY=target/image/ssegate -t "$IMAGE" . >&2
  say "built $IMAGE"
}

check() {
  local ctr; ctr=$("${BUILDAH[@]}" from "$IMAGE")
  local out; out=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- /ssegate --version)
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  [ "$out" = "ssegate $VERSION" ] || { say "unexpected --version output: $out"; exit 1; }
  local user; user=$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
  [ "$user" = "65532:65532" ] || { say "image runs as '$user', not non-root"; exit 1; }
  say "ok: '$out', user $user"
}

export_archive() {
  mkdir -p target/image
  rm -f target/image/ssegate.tar
  "${BUILDAH[@]}" push "$IMAGE" "docker-archive:target/image/ssegate.tar:$IMAGE" >&2
  say "wrote target/image/ssegate.tar"
}

case "${1:-}" in
  build) build ;;
  test) build; check ;;
  export) build; check; export_archive ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
