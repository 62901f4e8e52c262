#!/usr/bin/env bash
# Byte identity of a refactor: the same inputs built by two binaries give the
# same bytes. Builds, with SOURCE_DATE_EPOCH and -T 1, every route a change
# to the pipeline or the output stage touches:
#   raw      the combined pipeline test's config into a raw image
#   demo     examples/demo.yaml (an .xz base: planned, then sized from
#            its copy)
#   zst      the same into .img.zst with --bmap (image, .bmap, .json)
#   warm     the same with its files served over http (python's http.server
#            on 127.0.0.1): a cold --cache-dir build, then a warm rebuild
#            with the server stopped; the warm image is compared
#   device   onto a loop device (root and /dev/loop-control only); the
#            device's first image-size bytes are compared
# and compares each output of A with B's (cmp), printing one line a route.
#
#   scripts/identity.sh BIN_A BIN_B DIR
#
# DIR holds the inputs: make them with the combined test,
#   IC_COMBINED_DIR=DIR cargo test --test pipeline every_kind_of_item
# (its image.yaml names them by absolute path).
set -euo pipefail
a=$1 b=$2 dir=$(cd "$3" && pwd)
demo=$(cd "$(dirname "$0")/.." && pwd)/examples/demo.yaml
cfg=$dir/image.yaml
work=$(mktemp -d)
server=
loopdev=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export SOURCE_DATE_EPOCH=1700000000

# The config with blob.bin and app.tgz over http.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed "s#url: $dir/blob.bin#url: http://127.0.0.1:$port/blob.bin#; s#url: $dir/app.tgz#url: http://127.0.0.1:$port/app.tgz#" \
  "$cfg" >"$work/http.yaml"

build() { # NAME BIN
  local n=$1 bin=$2 o=$work/$1
  mkdir -p "$o"
  "$bin" -q -T 1 "$cfg" "$o/raw.img"
  "$bin" -q -T 1 "$demo" "$o/demo.img"
  "$bin" -q -T 1 --bmap "$cfg" "$o/z.img.zst"
  (cd "$dir" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
  server=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/blob.bin" && break; sleep 0.1; done
  "$bin" -q -T 1 --cache-dir "$o/cache" "$work/http.yaml" "$o/cold.img"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  "$bin" -q -T 1 --cache-dir "$o/cache" "$work/http.yaml" "$o/warm.img"
  if [ "$(id -u)" = 0 ] && [ -e /dev/loop-control ]; then
    local size
    size=$(stat -c %s "$o/raw.img")
    truncate -s $((size + (64 << 20))) "$o/dev.backing"
    # The same pseudo-random bytes for both binaries where the image goes:
    # the build must write every byte it needs, and what it leaves is equal.
    python3 -c 'import random,sys; sys.stdout.buffer.write(random.Random(1).randbytes(int(sys.argv[1])))' "$size" |
      dd of="$o/dev.backing" conv=notrunc status=none
    loopdev=$(losetup -f --show "$o/dev.backing")
    "$bin" -q -T 1 "$cfg" "$loopdev"
    head -c "$size" "$loopdev" >"$o/device.img"
    losetup -d "$loopdev"; loopdev=
    rm -f "$o/dev.backing"
  fi
}
build a "$a"
build b "$b"
status=0
for f in raw.img raw.img.json demo.img z.img.zst z.img.zst.bmap z.img.zst.json warm.img device.img; do
  if [ ! -e "$work/a/$f" ] && [ ! -e "$work/b/$f" ]; then
    echo "$f: not built (needs root and loop devices)"
  elif [ ! -e "$work/a/$f" ] || [ ! -e "$work/b/$f" ]; then
    # A raw build without flags writes no OUTPUT.json since issue 24.
    echo "$f: only in $([ -e "$work/a/$f" ] && echo A || echo B)"; status=1
  elif cmp -s "$work/a/$f" "$work/b/$f"; then
    echo "$f: identical ($(stat -c %s "$work/a/$f") bytes)"
  else
    echo "$f: DIFFERENT"; status=1
  fi
done
exit $status
