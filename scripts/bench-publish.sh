#!/usr/bin/env bash
# Benchmark (issue 24): step 7 with --torrent on a raw image against
# `sha256sum OUTPUT` alone. One config with CONTENT_MIB MiB of random
# bytes (a local file item, as incompressible as ZIMs) on the fixture base,
# and, in one run:
#   (a) build: `image-creator --torrent -D` into OUT.img; its step 7 from
#       the --debug timestamps ("step 7/7" to "finished"): the image was
#       just written, so it is read from the page cache while its fsync
#       runs; against
#   (b) `sha256sum OUT.img` right after it (the page cache as the build
#       left it, synced);
#   then ROUNDS times, alternating, the page cache dropped before each
#   (when root):
#   (c) step 7 alone: examples/step7.rs runs the build's own step 7 code
#       (pipeline::output::finish: one read, the image's sha256 and the
#       torrent's SHA-1 pieces on their own threads, the fsync) over
#       OUT.img; its torrent is checked equal to the build's;
#   (d) `sha256sum OUT.img`.
#   Target: median (c) <= 1.15 x median (d).
# Times are wall seconds; other load on the machine skews them.
#
#   CONTENT_MIB=2048 (default)  ROUNDS=3  BENCH_DIR=dir (default: under /tmp, removed)
#   IC_BIN=path, STEP7_BIN=path: time those binaries instead of building
#   this tree's (release)
set -euo pipefail
cd "$(dirname "$0")/.."

CONTENT_MIB=${CONTENT_MIB:-2048}
ROUNDS=${ROUNDS:-3}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-publish.XXXXXX)}
mkdir -p "$work"
cleanup() {
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
for t in sfdisk mkfs.vfat mkfs.ext4 mcopy python3 sha256sum; do
  command -v "$t" >/dev/null || { echo "bench-publish: needs $t" >&2; exit 2; }
done
if [ -z "${IC_BIN:-}" ] || [ -z "${STEP7_BIN:-}" ]; then
  cargo build --release --bin image-creator --example step7 >/dev/null 2>&1
fi
ic=${IC_BIN:-$PWD/target/release/image-creator}
step7=${STEP7_BIN:-$PWD/target/release/examples/step7}
export SOURCE_DATE_EPOCH=1700000000
seed=http://mirror.example/images/

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

drop() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
# Seconds between two RFC 3339 timestamps of the --debug log.
debug_span() {
  python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
t = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\S+Z) (step 7/7|finished)', line)
    if m:
        t[m.group(2)] = datetime.fromisoformat(m.group(1).replace('Z', '+00:00'))
print(f"{(t['finished'] - t['step 7/7']).total_seconds():.3f}")
PY
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

out=$work/out.img
drop
"$ic" -D --torrent --webseed "$seed" "$work/image.yaml" "$out" >"$work/build.log" 2>"$work/debug.log"
build_step7=$(debug_span "$work/debug.log")
size=$(stat -c %s "$out")
t0=$(now); sha256sum "$out" >/dev/null; t1=$(now)
warm_sha=$(secs "$t0" "$t1")

step7s=()
shas=()
for _ in $(seq "$ROUNDS"); do
  drop
  step7s+=("$("$step7" "$out" --torrent --webseed "$seed")")
  drop
  t0=$(now); sha256sum "$out" >/dev/null; t1=$(now)
  shas+=("$(secs "$t0" "$t1")")
done
cmp -s "$out.torrent" "$out.torrent.step7" || {
  echo "bench-publish: step7's torrent differs from the build's" >&2
  exit 1
}
cmp -s "$out.json" "$out.json.step7" || {
  echo "bench-publish: step7's json differs from the build's" >&2
  exit 1
}

echo "content: $CONTENT_MIB MiB random; raw image: $size bytes; $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(a) build --torrent, step 7 (from -D timestamps; image in the page cache, fsync running): ${build_step7}s"
echo "(b) sha256sum right after the build (same cache state): ${warm_sha}s   (a)/(b) = $(ratio "$build_step7" "$warm_sha")"
echo "page cache dropped before each, $ROUNDS rounds:"
echo "(c) step 7 alone (--torrent: sha256 + SHA-1 pieces, fsync): ${step7s[*]}  median $(median "${step7s[@]}")s"
echo "(d) sha256sum OUTPUT:                                      ${shas[*]}  median $(median "${shas[@]}")s"
echo "    (c)/(d) = $(ratio "$(median "${step7s[@]}")" "$(median "${shas[@]}")")  (target <= 1.15)"
