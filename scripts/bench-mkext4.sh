#!/usr/bin/env bash
# Benchmark: build the same tree with our mkext4 and with `mke2fs -t ext4 -d`
# in one run, each followed by sync (page cache dropped first when root), each
# image checked with e2fsck -fn. Prints wall time, peak RSS and the ratio.
#
# Tree (issue 2): one BIG_MIB file + SMALL_COUNT files of SMALL_KIB, random data.
#   BIG_MIB=3072 SMALL_COUNT=2000 SMALL_KIB=512 (defaults), RUNS=2 (best of)
#   BENCH_DIR=dir to hold the tree and images (default: a temp dir under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."

BIG_MIB=${BIG_MIB:-3072}
SMALL_COUNT=${SMALL_COUNT:-2000}
SMALL_KIB=${SMALL_KIB:-512}
RUNS=${RUNS:-2}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-mkext4.XXXXXX)}
mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

cargo build --release --example mkext4 >/dev/null 2>&1
mkext4=target/release/examples/mkext4

src="$work/tree"
if [ ! -f "$src/.complete-$BIG_MIB-$SMALL_COUNT-$SMALL_KIB" ]; then
  rm -rf "$src"; mkdir -p "$src/small"
  echo "generating tree in $src ..." >&2
  head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$src/big.bin"
  head -c "$((SMALL_KIB * 1024 * 64))" /dev/urandom >"$work/pool"
  for i in $(seq 1 "$SMALL_COUNT"); do
    dd if="$work/pool" of="$src/small/f$i" bs=1024 count="$SMALL_KIB" skip="$(( (i * 7) % 32 * SMALL_KIB / 2 ))" status=none iflag=skip_bytes 2>/dev/null \
      || head -c "$((SMALL_KIB * 1024))" /dev/urandom >"$src/small/f$i"
  done
  touch "$src/.complete-$BIG_MIB-$SMALL_COUNT-$SMALL_KIB"
fi
size_mib=$(( BIG_MIB + SMALL_COUNT * SMALL_KIB / 1024 ))
size_mib=$(( size_mib + size_mib / 10 + 256 ))M

drop() { sync; if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi; }

measure() { # name, command...
  local name=$1; shift
  local best_t="" best_m=""
  for _ in $(seq 1 "$RUNS"); do
    rm -f "$work/out.img"; drop
    /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$* && sync" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    e2fsck -fn "$work/out.img" >/dev/null 2>&1 || { echo "$name: e2fsck failed" >&2; e2fsck -fn "$work/out.img" | tail >&2; exit 1; }
    read -r t m <"$work/time"
    if [ -z "$best_t" ] || awk "BEGIN{exit !($t < $best_t)}"; then best_t=$t; best_m=$m; fi
  done
  echo "$name $best_t $best_m"
}

ours=$(measure mkext4 "$mkext4 '$src' '$work/out.img' $size_mib")
theirs=$(measure mke2fs "mke2fs -q -F -t ext4 -d '$src' '$work/out.img' $size_mib")
rm -f "$work/out.img"
read -r _ t1 m1 <<<"$ours"
read -r _ t2 m2 <<<"$theirs"
printf '%-8s %8s %12s\n' tool seconds "peak RSS MiB"
printf '%-8s %8.2f %12.1f\n' mkext4 "$t1" "$(awk "BEGIN{print $m1/1024}")"
printf '%-8s %8.2f %12.1f\n' mke2fs "$t2" "$(awk "BEGIN{print $m2/1024}")"
awk "BEGIN{printf \"ratio mke2fs/mkext4: %.2fx\n\", $t2/$t1}"
[ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
