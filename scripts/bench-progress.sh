#!/usr/bin/env bash
# Benchmark (issue 6): the cost of progress reporting. Builds the same image
# (the fixture base + one SIZE_MIB local file of random data, no checksum, so
# the build is pure copy and progress is the largest possible share) with and
# without `--progress-file`, alternating, RUNS times each, and prints the
# median wall times and their ratio. The output is synced by the build itself.
#   SIZE_MIB=1536 RUNS=5 (defaults); BENCH_DIR=dir for the data (default: temp)
#   BIN=path to image-creator (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1536}
RUNS=${RUNS:-5}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-progress.XXXXXX)}
mkdir -p "$work"
if [ -z "${BIN:-}" ]; then
  cargo build --release >/dev/null 2>&1
  BIN=target/release/image-creator
fi

rootfs=$(bash scripts/make-base-image.sh "$work/base.img" 2>/dev/null)
if [ ! -f "$work/big.bin" ] || [ "$(stat -c %s "$work/big.bin")" -ne $((SIZE_MIB << 20)) ]; then
  echo "generating $SIZE_MIB MiB of random data in $work ..." >&2
  head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/big.bin"
fi
cat >"$work/image.yaml" <<YAML
base:
  source: $work/base.img
  rootfs_size: $rootfs
files:
  - to: /data/big.bin
    url: $work/big.bin
YAML

# One build; prints its wall time in seconds.
run() {
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" -X "$@" "$work/image.yaml" "$work/out.img" >/dev/null
  t1=$(date +%s.%N)
  rm -f "$work/out.img"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

run >/dev/null # warm the page cache with the source file
without=() with=()
for i in $(seq 1 "$RUNS"); do
  # Alternate which goes first, so drift (writeback, neighbours) hits both.
  if [ $((i % 2)) -eq 1 ]; then
    without+=("$(run)"); with+=("$(run --progress-file "$work/progress.json")")
  else
    with+=("$(run --progress-file "$work/progress.json")"); without+=("$(run)")
  fi
  echo "run $i: without ${without[-1]} s, with ${with[-1]} s" >&2
done
m0=$(printf '%s\n' "${without[@]}" | median)
m1=$(printf '%s\n' "${with[@]}" | median)
echo "progress file: $(jq -c '{status, bytes_done, bytes_total}' "$work/progress.json" 2>/dev/null || head -c 200 "$work/progress.json")"
printf 'content %d MiB, %d runs each (median)\n' "$SIZE_MIB" "$RUNS"
printf 'without --progress-file: %.3f s\n' "$m0"
printf 'with    --progress-file: %.3f s\n' "$m1"
awk -v a="$m0" -v b="$m1" 'BEGIN { printf "ratio with/without: %.4f (%+.2f%%)\n", b / a, (b / a - 1) * 100 }'
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
