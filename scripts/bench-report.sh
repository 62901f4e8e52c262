#!/usr/bin/env bash
# One run of every scale comparison of issue 14 on this machine; writes
# docs/benchmarks.md (table + SVG chart) and docs/benchmarks.json (raw).
# Ratios measured in one run are the figures that matter.
#
#   FILES=1000000     small files (100 bytes, in FILES/1000 directories)
#   BIGDIR=100000     entries of the one-directory case
#   CONTENT_MIB=4096  the download route's content (from nginx)
#   BENCH_DIR=...     scratch (default /dev/shm/bench-report: needs RAM for
#                     the trees; the content route's disk is where it lives)
#   OUT=docs          where the report goes
#   MKE2FS_TIMEOUT=0  seconds before a mke2fs -d run is stopped (0: never;
#                     it inserts into linear directories, so the 100k-entry
#                     one takes many minutes)
#   ROUTES="mkext4 tar items content"  the routes to run (default: all)
#   IC=PATH           the image-creator binary to measure (default: this
#                     checkout's release build), e.g. a build of an earlier
#                     commit, to compare two versions in one sitting
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-1000000}
BIGDIR=${BIGDIR:-100000}
CONTENT_MIB=${CONTENT_MIB:-4096}
work=${BENCH_DIR:-/dev/shm/bench-report}
OUT=${OUT:-docs}
mkdir -p "$work" "$OUT"
for t in /usr/bin/time mke2fs e2fsck python3 curl tar; do
  command -v "$t" >/dev/null || { echo "bench-report: needs $t" >&2; exit 2; }
done
ROUTES=${ROUTES:-mkext4 tar items content}
route() { case " $ROUTES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# (Nothing to build when IC names the binary and mkext4 is not measured.)
if [ -z "${IC:-}" ] || route mkext4; then
  cargo build --release --example mkext4 --bin image-creator >/dev/null 2>&1
fi
root=$PWD
mkext4=$root/target/release/examples/mkext4
ic=${IC:-$root/target/release/image-creator}
results="$work/results.jsonl"; : >"$results"

drop() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# measure ROUTE NAME UNITS UNIT command...: wall seconds and peak RSS.
measure() {
  local route=$1 name=$2 units=$3 unit=$4; shift 4
  drop
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/log" 2>&1 || { echo "FAILED: $name" >&2; tail -5 "$work/log" >&2; return 0; }
  read -r secs rss_kib <"$work/time"
  python3 - "$route" "$name" "$units" "$unit" "$secs" "$rss_kib" >>"$results" <<'PY'
import json, sys
route, name, units, unit, secs, rss = sys.argv[1:]
secs = max(float(secs), 0.01)
print(json.dumps({"route": route, "name": name, "seconds": secs, "rate": float(units) / secs,
                  "unit": unit, "peak_rss_mib": int(rss) / 1024}))
PY
  echo "$name: ${secs}s, peak RSS $((rss_kib / 1024)) MiB" >&2
}

# --- trees ---------------------------------------------------------------
tree="$work/tree-$FILES"
if [ ! -f "$tree.done" ]; then
  rm -rf "$tree"; echo "generating $FILES files ..." >&2
  python3 - "$tree" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
data = b"x" * 100
for d in range(max(n // 1000, 1)):
    p = os.path.join(root, "d%04d" % d); os.makedirs(p)
    for i in range(min(1000, n)):
        with open(os.path.join(p, "f%04d" % i), "wb") as f: f.write(data)
PY
  touch "$tree.done"
fi
bigdir="$work/bigdir-$BIGDIR"
if [ ! -f "$bigdir.done" ]; then
  rm -rf "$bigdir"; mkdir -p "$bigdir/big"
  python3 - "$bigdir/big" "$BIGDIR" <<'PY'
import os, sys
for i in range(int(sys.argv[2])): open(os.path.join(sys.argv[1], "entry-%06d" % i), "wb").close()
PY
  touch "$bigdir.done"
fi
size=$(( FILES / 100000 + 2 ))GiB

# --- 1M files and the 100k directory: mkext4 vs mke2fs -d ---------------
route mkext4 && for case in "tree:$tree:$FILES:$size" "bigdir:$bigdir:$BIGDIR:1GiB"; do
  IFS=: read -r label src n sz <<<"$case"
  rm -f "$work/a.img" "$work/b.img"
  measure "$label" "$label: image-creator mkext4" "$n" files/s "$mkext4" "$src" "$work/a.img" "$sz"
  e2fsck -fn "$work/a.img" >/dev/null || echo "e2fsck: $work/a.img not clean" >&2
  bytes=$(python3 -c "import sys;u={'GiB':1<<30};s=sys.argv[1];print(int(s[:-3])*u[s[-3:]])" "$sz")
  truncate -s "$bytes" "$work/b.img"
  measure "$label" "$label: mke2fs -d" "$n" files/s timeout "${MKE2FS_TIMEOUT:-0}" mke2fs -q -F -t ext4 -N "$((n + n / 5 + 4096))" -d "$src" "$work/b.img"
  rm -f "$work/a.img" "$work/b.img"
done

# --- a local tar of FILES files through image-creator, and curl | tar x ---
tarball="$work/files.tar"
[ -f "$tarball" ] || tar -C "$tree" -cf "$tarball" .
base="$work/base.img"
[ -f "$base" ] || bash scripts/make-base-image.sh "$base" >"$work/rootfs"
rootfs=$(cat "$work/rootfs")
cat >"$work/tar.yaml" <<YAML
base:
  source: $base
  rootfs_size: $rootfs
files:
  - to: /data/t
    url: file://$tarball
    via: tar
YAML
if route tar; then
rm -f "$work/tar-out.img"
measure "tar" "local tar: image-creator" "$FILES" files/s "$ic" "$work/tar.yaml" "$work/tar-out.img" || true
rm -f "$work/tar-out.img"
rm -rf "$work/untar"; mkdir -p "$work/untar"
measure "tar" "local tar: tar x" "$FILES" files/s tar -C "$work/untar" -xf "$tarball"
rm -rf "$work/untar"
fi

# --- a config listing 10,000 files (memory: one item each) ----------------
items=$(( FILES < 10000 ? FILES : 10000 ))
python3 - "$work/items.yaml" "$base" "$rootfs" "$tree" "$items" <<'PY'
import sys
out, base, rootfs, tree, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
lines = ["base:", "  source: " + base, "  rootfs_size: " + rootfs, "files:"]
for i in range(n):
    d, f = divmod(i, 1000)
    lines += ["  - to: /data/items/d%04d/f%04d" % (d, f), "    url: file://%s/d%04d/f%04d" % (tree, d, f)]
open(out, "w").write("\n".join(lines) + "\n")
PY
rm -f "$work/items.img"
route items && measure "items" "$items-item config: image-creator" "$items" files/s "$ic" "$work/items.yaml" "$work/items.img"
rm -f "$work/items.img"

# --- CONTENT_MIB from nginx into a durable image --------------------------
if route content && command -v nginx >/dev/null; then
  www="$work/www"; mkdir -p "$www"
  [ -f "$www/content.bin" ] || head -c "$((CONTENT_MIB << 20))" /dev/urandom >"$www/content.bin"
  port=$((20000 + RANDOM % 20000))
  cat >"$work/nginx.conf" <<NGX
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err;
events {} http { access_log off; sendfile on;
  server { listen 127.0.0.1:$port; root $www; } }
NGX
  nginx -c "$work/nginx.conf" & ngx=$!
  sleep 1
  url=http://127.0.0.1:$port/content.bin
  # The local tar again, from nginx (pre-scanned at planning, then expanded).
  ln -f "$tarball" "$www/files.tar" 2>/dev/null || cp "$tarball" "$www/files.tar"
  cat >"$work/rtar.yaml" <<YAML
base:
  source: $base
  rootfs_size: $rootfs
files:
  - to: /data/t
    url: http://127.0.0.1:$port/files.tar
    via: tar
YAML
  rm -f "$work/rtar-out.img"
  measure "tar" "remote tar (nginx): image-creator" "$FILES" files/s "$ic" "$work/rtar.yaml" "$work/rtar-out.img"
  rm -f "$work/rtar-out.img" "$www/files.tar"
  bytes=$((CONTENT_MIB << 20))
  cat >"$work/dl.yaml" <<YAML
base:
  source: $base
  rootfs_size: $rootfs
files:
  - to: /data/content.bin
    url: $url
YAML
  rm -f "$work/dl.img"
  measure content "download: image-creator" "$bytes" B/s "$ic" "$work/dl.yaml" "$work/dl.img"
  rm -f "$work/dl.img"
  measure content "dd bs=4M conv=fdatasync" "$bytes" B/s dd if="$www/content.bin" of="$work/dd.out" bs=4M conv=fdatasync status=none
  rm -f "$work/dd.out"
  measure content "curl -o f && sync" "$bytes" B/s sh -c "curl -s -o '$work/c.out' '$url' && sync"
  rm -f "$work/c.out"
  measure content "curl | dd oflag=direct" "$bytes" B/s sh -c "curl -s '$url' | dd of='$work/c.out' bs=4M oflag=direct iflag=fullblock status=none"
  rm -f "$work/c.out"
  mkdir -p "$work/two"; truncate -s $(( (CONTENT_MIB + 512) << 20 )) "$work/two.img"
  measure content "curl + mke2fs -d" "$bytes" B/s sh -c "curl -s -o '$work/two/content.bin' '$url' && mke2fs -q -F -t ext4 -d '$work/two' '$work/two.img' && sync"
  rm -rf "$work/two" "$work/two.img"
  if [ "$(id -u)" = 0 ] && [ -e /dev/loop-control ]; then
    truncate -s $(( (CONTENT_MIB + 512) << 20 )) "$work/k.img"; mkdir -p "$work/mnt"
    measure content "kernel: mkfs + loop mount + curl + umount" "$bytes" B/s sh -c \
      "mke2fs -q -F -t ext4 '$work/k.img' && mount -o loop '$work/k.img' '$work/mnt' && curl -s -o '$work/mnt/content.bin' '$url' && umount '$work/mnt' && sync"
    rm -f "$work/k.img"
  fi
  kill "$ngx" 2>/dev/null || true
fi

python3 scripts/bench-report.py "$results" "$OUT"
