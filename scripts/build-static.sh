#!/usr/bin/env bash
# Build the static Linux binary that runs with no host files at all (an
# empty chroot, a FROM scratch container):
#
#   scripts/build-static.sh            # → target/x86_64-unknown-linux-gnu/release-static/image-creator
#
# glibc linked statically (`-C target-feature=+crt-static`), because the
# musl target is not installable on our machines. Nothing in the binary
# needs NSS at run time: DNS is hickory-resolver (src/fetch/dns.rs), TLS
# roots fall back to the built-in Mozilla list (src/fetch/roots.rs).
#
# Profile `release-static` (Cargo.toml): stripped, fat LTO, one codegen
# unit. Extra arguments go to cargo (e.g. `--features portable`).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
# --target keeps the flag off build scripts and proc macros, which are
# host code and can't be static.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --locked --profile release-static --target "$target" --bin image-creator "$@"

bin="target/$target/release-static/image-creator"
# A dynamic executable has a PT_INTERP (program interpreter) header.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
  echo "error: $bin is dynamically linked" >&2
  exit 1
fi
echo "$bin ($(stat -c %s "$bin") bytes)"
