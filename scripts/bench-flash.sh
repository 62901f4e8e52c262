#!/usr/bin/env bash
# Benchmark (issue 27, `image-creator flash`): an image.img.zst with its
# bmap (CONTENT_MIB MiB of random content, built on the fixture base by
# this tree's binary), flashed onto loop devices backed by files in
# /dev/shm (so the devices cost memory bandwidth, not a disk), in one run,
# ROUNDS times, alternating, medians reported:
#   (a) one:      flash SRC dev0                      (write + read-back)
#   (b) four:     flash SRC dev0 dev1 dev2 dev3       target: (b) <= 1.5 x (a)
#   (c) bmaptool: bmaptool copy SRC dev0              target: (a) <= 1.1 x (c)
#   (d) one, --no-verify (bmaptool copy reads nothing back: the like for
#       like of (c))
# Times are wall seconds; the machine's other load skews them. Needs root
# (loop devices), zstd-capable bmaptool, python3.
#
#   CONTENT_MIB=512 (default)  ROUNDS=3 (default)
#   IC_BIN=path: time that binary instead of building this tree's (release)
set -euo pipefail
cd "$(dirname "$0")/.."

CONTENT_MIB=${CONTENT_MIB:-512}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d /dev/shm/bench-flash.XXXXXX)
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for t in bmaptool losetup sfdisk mkfs.vfat mkfs.ext4 mcopy python3; do
  command -v "$t" >/dev/null || { echo "bench-flash: needs $t" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench-flash: needs root (loop devices)" >&2; exit 2; }
if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}
export SOURCE_DATE_EPOCH=1700000000

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
head -c "${CONTENT_MIB}M" /dev/urandom >"$work/random.bin"
cat >"$work/image.yaml" <<YAML
base:
  source: $work/base.img
  rootfs_size: $rootfs
files:
  - to: /data/random.bin
    url: $work/random.bin
YAML
"$ic" -q --bmap "$work/image.yaml" "$work/image.img.zst" >/dev/null
rm "$work/random.bin"
src=$work/image.img.zst
raw_size=$(python3 -c "import re,sys;print(re.search(r'<ImageSize>\s*(\d+)',open(sys.argv[1]).read()).group(1))" "$src.bmap")
card=$((raw_size + (64 << 20)))
for i in 0 1 2 3; do
  truncate -s "$card" "$work/card$i"
  loops+=("$(losetup --find --show "$work/card$i")")
done
echo "source: $(du -h --apparent-size "$src" | cut -f1) zst, raw $raw_size bytes, mapped $(grep -o '<MappedBlocksCount>[^<]*' "$src.bmap" | cut -d'>' -f2 | tr -d ' ') blocks; cards ${loops[*]}"

now() { date +%s.%N; }
timed() {
  local t0 t1
  t0=$(now)
  "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
one=() four=() bt=() nov=()
for r in $(seq "$ROUNDS"); do
  one+=("$(timed "$ic" flash -q "$src" "${loops[0]}")")
  four+=("$(timed "$ic" flash -q "$src" "${loops[@]}")")
  bt+=("$(timed bmaptool copy "$src" "${loops[0]}")")
  nov+=("$(timed "$ic" flash -q --no-verify "$src" "${loops[0]}")")
  echo "round $r: one ${one[-1]} s, four ${four[-1]} s, bmaptool ${bt[-1]} s, one --no-verify ${nov[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m1=$(median "${one[@]}"); m4=$(median "${four[@]}"); mb=$(median "${bt[@]}"); mn=$(median "${nov[@]}")
python3 - "$m1" "$m4" "$mb" "$mn" <<'PY'
import sys
one, four, bt, nov = map(float, sys.argv[1:])
print(f"medians: one {one:.2f} s, four {four:.2f} s, bmaptool copy {bt:.2f} s, one --no-verify {nov:.2f} s")
print(f"four / one           = {four / one:.3f}  (target <= 1.5)")
print(f"one / bmaptool copy  = {one / bt:.3f}  (target <= 1.1; with the read-back bmaptool doesn't do)")
print(f"one --no-verify / bmaptool copy = {nov / bt:.3f}")
PY
