#!/usr/bin/env bash
# Benchmark (issue 13, the output stage): one config with CONTENT_MIB MiB of
# content (half random bytes, as incompressible as ZIMs; half base64 text),
# built on the fixture base, and, in one run:
#   (a) raw:   a build into OUT.img with --json (step 7 = the hash pass);
#   (b) zst:   the same build into OUT.img.zst; its step 7 (the one pass that
#              hashes and compresses) against
#   (c) zstd:  `zstd -T2 -3` of the raw image of (a), to a file;
#              target: (b) step 7 <= 1.1 x (c);
#   (d) file:  a build into a file plus `sync`, against
#   (e) dev:   the same build onto a loop device over a file of the image's
#              size + 64 MiB (root only); target: (e) <= 1.1 x (d).
# The page cache is dropped before each build (when root); (c) reads the raw
# image of (a) from the page cache, as (b)'s step 7 reads the raw image it
# just wrote. Times are wall seconds; other load on the machine skews them.
#
#   CONTENT_MIB=2048 (default)   BENCH_DIR=dir (default: under /tmp, removed)
#   IC_BIN=path: time that binary instead of building this tree's (release)
set -euo pipefail
cd "$(dirname "$0")/.."

CONTENT_MIB=${CONTENT_MIB:-2048}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-output.XXXXXX)}
mkdir -p "$work"
loopdev=""
cleanup() {
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" || true; fi
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
for t in zstd sfdisk mkfs.vfat mkfs.ext4 mcopy python3; do
  command -v "$t" >/dev/null || { echo "bench-output: needs $t" >&2; exit 2; }
done
if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}
export SOURCE_DATE_EPOCH=1700000000

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
half=$((CONTENT_MIB / 2))
head -c "${half}M" /dev/urandom >"$work/random.bin"
(base64 -w 76 /dev/urandom || true) | head -c "${half}M" >"$work/text.txt"
cat >"$work/image.yaml" <<YAML
base:
  source: $work/base.img
  rootfs_size: $rootfs
files:
  - to: /data/random.bin
    url: $work/random.bin
  - to: /data/text.txt
    url: $work/text.txt
YAML

drop() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
step7() { sed -n 's/^✓ \[7\/7\] .*(\([0-9.]*\)s)$/\1/p' "$1"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

drop
t0=$(now); "$ic" --json "$work/image.yaml" "$work/raw.img" >"$work/raw.log"; t1=$(now)
raw_total=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
raw_step7=$(step7 "$work/raw.log")
size=$(stat -c %s "$work/raw.img")

# zstd reads the raw image just written (in the page cache), as step 7
# of a .zst build reads the raw image it just wrote.
t0=$(now); zstd -q -T2 -3 "$work/raw.img" -o "$work/cli.zst"; t1=$(now); sync; t2=$(now)
zstd_cli=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
zstd_sync=$(python3 -c "print(f'{$t2 - $t0:.2f}')")
rm -f "$work/cli.zst" "$work/raw.img" "$work"/raw.img.json

drop
"$ic" "$work/image.yaml" "$work/out.img.zst" >"$work/zst.log"
zst_step7=$(step7 "$work/zst.log")
rm -f "$work/out.img.zst" "$work/out.img.zst.json"

drop
t0=$(now); "$ic" "$work/image.yaml" "$work/file.img" >/dev/null; sync; t1=$(now)
file_sync=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
rm -f "$work/file.img" "$work/file.img.json"

dev=skipped
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
  truncate -s $((size + 64 * 1024 * 1024)) "$work/card"
  loopdev=$(losetup --find --show "$work/card")
  drop
  t0=$(now); "$ic" --build-dir "$work/b" "$work/image.yaml" "$loopdev" >/dev/null; t1=$(now)
  dev=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
fi

echo "content: $CONTENT_MIB MiB; raw image: $size bytes"
echo "(a) raw build: ${raw_total}s, of which step 7 (hash pass) ${raw_step7}s"
echo "(b) zst build, step 7 (hash + compress): ${zst_step7}s"
echo "(c) zstd -T2 -3 of the raw image: ${zstd_cli}s"
echo "    (b)/(c) = $(ratio "$zst_step7" "$zstd_cli")  (target <= 1.1)"
echo "    with sync (step 7 fsyncs OUTPUT): zstd + sync ${zstd_sync}s, (b)/that = $(ratio "$zst_step7" "$zstd_sync")"
echo "(d) build into a file + sync: ${file_sync}s"
if [ "$dev" != skipped ]; then
  echo "(e) build onto a loop device: ${dev}s"
  echo "    (e)/(d) = $(ratio "$dev" "$file_sync")  (target <= 1.1)"
else
  echo "(e) build onto a loop device: skipped (needs root and losetup)"
fi
