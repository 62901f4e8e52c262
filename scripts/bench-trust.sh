#!/usr/bin/env bash
# Benchmark (issue 26): what --lock, --sbom, --provenance and --sign add to
# a build of the benchmark's content route (scripts/bench-report.sh: a
# CONTENT_MIB MiB random file from nginx on loopback into a durable
# image). In one run, each row after `sync` and a dropped page cache
# (when root), alternating ROUNDS times:
#   (a) `image-creator --json CONFIG OUT.img`: the build with the image's
#       sha256 (step 7's one read), which --sign and --sbom need anyway;
#   (b) (a) + `--lock OUT.lock --sbom --provenance --sign KEY`;
#   (c) the plain build (no step-7 read), for reference.
# Target: (b) <= 1.02 x (a). Wall seconds and the build's CPU seconds
# (user + sys) from /usr/bin/time; other load on the machine skews them.
#
# With DECLARED=1 the config declares the file's sha256 (`checksum:`), so
# every build hashes the download anyway and the record reuses it; by
# default it declares none, so a recorded build hashes 4 GiB more than
# an unrecorded one (the lock's sha256: that hash exists nowhere else).
#
#   CONTENT_MIB=4096 (default)  ROUNDS=1  DECLARED=0  BENCH_DIR=dir (default: under
#   /tmp, removed)  IC_BIN=path: time that binary instead of this tree's
#   release build
set -euo pipefail
cd "$(dirname "$0")/.."

CONTENT_MIB=${CONTENT_MIB:-4096}
ROUNDS=${ROUNDS:-1}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-trust.XXXXXX)}
mkdir -p "$work"
ngx=
cleanup() {
  if [ -n "$ngx" ]; then kill "$ngx" 2>/dev/null || true; wait "$ngx" 2>/dev/null || true; fi
  if [ -z "${BENCH_DIR:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
for t in sfdisk mkfs.vfat mkfs.ext4 mcopy nginx minisign /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "bench-trust: needs $t" >&2; exit 2; }
done
if [ -z "${IC_BIN:-}" ]; then
  cargo build --release --bin image-creator >/dev/null 2>&1
fi
ic=${IC_BIN:-$PWD/target/release/image-creator}
export SOURCE_DATE_EPOCH=1700000000

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
mkdir -p "$work/www"
head -c "$((CONTENT_MIB << 20))" /dev/urandom >"$work/www/content.bin"
port=$((20000 + RANDOM % 20000))
cat >"$work/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {} http { access_log off; sendfile on;
  server { listen 127.0.0.1:$port; root $work/www; } }
NGX
nginx -c "$work/nginx.conf" -p "$work" & ngx=$!
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
cat >"$work/dl.yaml" <<YAML
base:
  source: $work/base.img
  rootfs_size: $rootfs
files:
  - to: /data/content.bin
    url: http://127.0.0.1:$port/content.bin
YAML
if [ "${DECLARED:-0}" = 1 ]; then
  sum=$(sha256sum "$work/www/content.bin" | cut -d' ' -f1)
  echo "    checksum: {algo: sha-256, value: $sum}" >>"$work/dl.yaml"
fi
minisign -G -W -f -p "$work/k.pub" -s "$work/k.key" >/dev/null

drop() {
  sync
  if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi
}
# row NAME FLAGS...: one build; prints "NAME wall cpu".
row() {
  local name=$1; shift
  rm -f "$work"/out.img*
  drop
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$ic" "$@" "$work/dl.yaml" "$work/out.img" >"$work/log.$name" 2>&1 \
    || { echo "FAILED: $name" >&2; tail -5 "$work/log.$name" >&2; exit 1; }
  read -r wall user sys <"$work/time"
  echo "$name $wall $(echo "$user + $sys" | bc)"
}
for _ in $(seq "$ROUNDS"); do
  row json --json
  row trust --json --lock "$work/out.img.lock" --sbom --provenance --sign "$work/k.key"
  minisign -V -q -p "$work/k.pub" -m "$work/out.img.SHA256SUMS"
  row plain
done | tee "$work/rows"
python3 - "$work/rows" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, wall, cpu = line.split()
    rows.setdefault(name, []).append((float(wall), float(cpu)))
med = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in rows.items()}
for n, (w, c) in med.items():
    print(f"{n:6} wall {w:7.2f} s  cpu {c:7.2f} s")
w, c = med["trust"][0] / med["json"][0], med["trust"][1] / med["json"][1]
print(f"lock+sbom+provenance+sign vs --json: wall x{w:.3f}, cpu x{c:.3f} (target wall <= 1.02)")
PY
