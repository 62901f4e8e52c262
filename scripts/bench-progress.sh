#!/usr/bin/env bash
# Benchmark (issue 6): the cost of progress reporting. Builds the same image
# (the fixture base + one SIZE_MIB local file of random data, no checksum, so
# the build is pure copy and progress is the largest possible share) with and
# without `--progress-file`, alternating, RUNS times each, and prints the
# median wall and CPU times and their ratios. Each run starts after a `sync`;
# the build syncs its output itself.
#   SIZE_MIB=1536 RUNS=11 (defaults); BENCH_DIR=dir for the data (default: temp)
#   BIN=path to image-creator (default: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1536}
RUNS=${RUNS:-11}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-progress.XXXXXX)}
mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
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

# One build after a sync (so the previous run's writeback doesn't land in
# this one's time); prints "wall cpu" seconds (cpu = user + system).
run() {
  rm -f "$work/out.img"
  sync
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$BIN" -X "$@" "$work/image.yaml" "$work/out.img" >/dev/null
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$work/time"
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
  echo "run $i: without ${without[-1]}, with ${with[-1]} (wall cpu, s)" >&2
done
rm -f "$work/out.img"
col() { local c=$1; shift; printf '%s\n' "$@" | awk -v c="$c" '{ print $c }' | median; }
low() { local c=$1; shift; printf '%s\n' "$@" | awk -v c="$c" '{ print $c }' | sort -g | head -1; }
w0=$(col 1 "${without[@]}") w1=$(col 1 "${with[@]}")
c0=$(col 2 "${without[@]}") c1=$(col 2 "${with[@]}")
m0=$(low 1 "${without[@]}") m1=$(low 1 "${with[@]}")
echo "progress file: $(jq -c '{status, bytes_done, bytes_total}' "$work/progress.json" 2>/dev/null || head -c 200 "$work/progress.json")"
printf 'content %d MiB, %d runs each, medians\n' "$SIZE_MIB" "$RUNS"
printf 'without --progress-file: wall %.3f s, cpu %.3f s\n' "$w0" "$c0"
printf 'with    --progress-file: wall %.3f s, cpu %.3f s\n' "$w1" "$c1"
printf 'best wall: without %.3f s, with %.3f s\n' "$m0" "$m1"
awk -v a="$w0" -v b="$w1" -v c="$c0" -v d="$c1" -v e="$m0" -v f="$m1" 'BEGIN {
  printf "ratio with/without: median wall %.4f (%+.2f%%), median cpu %.4f (%+.2f%%), best wall %.4f (%+.2f%%)\n",
    b / a, (b / a - 1) * 100, d / c, (d / c - 1) * 100, f / e, (f / e - 1) * 100 }'
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
