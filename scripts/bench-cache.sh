#!/usr/bin/env bash
# Benchmark (issue 12, the download cache): serve BIG_MIB MiB + SMALL_COUNT ×
# SMALL_KIB KiB of random data from a local nginx (default 3 GiB + 2,000 ×
# 512 KiB = 4 GiB, one config with SMALL_COUNT+1 `files[]` entries) and, in
# one run, time
#   (a) nocache: a build without --cache-dir,
#   (b) cold:    a build with --cache-dir, the cache emptied first,
#   (c) warm:    the same build again with nginx stopped (every item a hit),
#   (d) cp:      `cp -r` of the cache's blobs (the same bytes, the same
#                number of files) to a fresh directory,
# each the best of RUNS, with the page cache dropped first (when root) and
# followed by sync. Prints wall time and peak RSS of each and the ratios
# against the targets: cold/nocache <= 1.15, warm speed >= 0.9x cp's
# (warm <= cp/0.9), peak RSS <= 64 MiB.
#
# The cache's policy.yaml is `max_size: 0` (no limit) and `check_after: 30d`,
# so the warm build asks no server (with nginx stopped a due check would only
# fail and keep the entry, at the cost of one refused connection per item).
#
#   BIG_MIB=3072 SMALL_COUNT=2000 SMALL_KIB=512 (defaults)  RUNS=1
#   BENCH_DIR=dir (default: a temp dir under /tmp, removed at the end)
#   IC_BIN=path: time that image-creator binary instead of building this tree's
#   A small run: BIG_MIB=64 SMALL_COUNT=50 SMALL_KIB=64 scripts/bench-cache.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIG_MIB=${BIG_MIB:-3072}
SMALL_COUNT=${SMALL_COUNT:-2000}
SMALL_KIB=${SMALL_KIB:-512}
RUNS=${RUNS:-1}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-cache.XXXXXX)}
mkdir -p "$work/www/s"
for t in nginx curl python3 sfdisk mkfs.vfat mkfs.ext4 mcopy /usr/bin/time; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench-cache: needs $t" >&2; exit 2; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}

# Content, generated once per BENCH_DIR and size.
stamp="$work/www/.made-$BIG_MIB-$SMALL_COUNT-$SMALL_KIB"
if [ ! -f "$stamp" ]; then
  echo "generating $BIG_MIB MiB + $SMALL_COUNT x $SMALL_KIB KiB of random data ..." >&2
  rm -rf "$work/www" && mkdir -p "$work/www/s"
  head -c "$((BIG_MIB << 20))" /dev/urandom >"$work/www/big.bin"
  python3 - "$work/www/s" "$SMALL_COUNT" "$SMALL_KIB" <<'EOF'
import os, sys
d, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, "s%05d.bin" % i), "wb") as f:
        f.write(os.urandom(kib << 10))
EOF
  touch "$stamp"
fi
total_mib=$((BIG_MIB + SMALL_COUNT * SMALL_KIB / 1024))

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root root;"
cat >"$work/nginx.conf" <<EOF
$user
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 256; }
http { access_log off; sendfile on; default_type application/octet-stream;
  client_body_temp_path $work/t1; proxy_temp_path $work/t2; fastcgi_temp_path $work/t3;
  uwsgi_temp_path $work/t4; scgi_temp_path $work/t5;
  server { listen 127.0.0.1:$port; root $work/www; } }
EOF
ngx=""
start_nginx() {
  "$nginx_bin" -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
  ngx=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return; sleep 0.1; done
  echo "bench-cache: nginx did not start" >&2; exit 1
}
stop_nginx() {
  if [ -n "$ngx" ]; then kill "$ngx" 2>/dev/null || true; wait "$ngx" 2>/dev/null || true; ngx=""; fi
}
trap 'stop_nginx; [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"' EXIT
start_nginx

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
{
  echo "base: {source: $work/base.img, rootfs_size: $rootfs}"
  echo "files:"
  echo "  - to: /data/big.bin"
  echo "    url: http://127.0.0.1:$port/big.bin"
  for f in "$work"/www/s/*.bin; do
    n=$(basename "$f")
    echo "  - to: /data/s/$n"
    echo "    url: http://127.0.0.1:$port/s/$n"
  done
} >"$work/c.yaml"

cache="$work/cache"
new_cache() {
  rm -rf "$cache" && mkdir -p "$cache"
  printf 'max_size: 0\ncheck_after: 30d\n' >"$cache/policy.yaml"
}

drop() { sync; if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi; }
measure() { # name, prepare-function, command...
  local name=$1 prep=$2; shift 2
  local best_t="" best_m=""
  for _ in $(seq 1 "$RUNS"); do
    rm -rf "$work/out.img" "$work/cp"; $prep; drop
    /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$* && sync" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r t m <"$work/time"
    if [ -z "$best_t" ] || awk "BEGIN{exit !($t < $best_t)}"; then best_t=$t; best_m=$m; fi
  done
  rm -rf "$work/out.img" "$work/cp"
  echo "$name $best_t $best_m"
}
nothing() { :; }

build="$ic -X '$work/c.yaml' '$work/out.img'"
cached="$ic -X --cache-dir '$cache' '$work/c.yaml' '$work/out.img'"
r_a=$(measure nocache nothing "$build")
r_b=$(measure cold new_cache "$cached")
n_entries=$(find "$cache/v1/entries" -name '*.json' | wc -l)
[ "$n_entries" = "$((SMALL_COUNT + 1))" ] || { echo "bench-cache: $n_entries entries after the cold build, expected $((SMALL_COUNT + 1))" >&2; exit 1; }
stop_nginx
r_c=$(measure warm nothing "$cached")
r_d=$(measure cp nothing "cp -r '$cache/v1/blobs/sha256' '$work/cp'")

read -r _ ta ma <<<"$r_a"
read -r _ tb mb <<<"$r_b"
read -r _ tc mc <<<"$r_c"
read -r _ td md <<<"$r_d"
printf '%-8s %8s %12s %10s   (%s MiB + %s x %s KiB = %s MiB, %s files, RUNS=%s)\n' \
  what seconds "peak RSS MiB" "MiB/s" "$BIG_MIB" "$SMALL_COUNT" "$SMALL_KIB" "$total_mib" "$((SMALL_COUNT + 1))" "$RUNS"
for r in "$r_a" "$r_b" "$r_c" "$r_d"; do
  read -r n t m <<<"$r"
  printf '%-8s %8.2f %12.1f %10.0f\n' "$n" "$t" "$(awk "BEGIN{print $m/1024}")" "$(awk "BEGIN{print $total_mib/$t}")"
done
awk "BEGIN{r=$tb/$ta; printf \"cold/nocache: %.2fx (target <= 1.15x) %s\n\", r, (r<=1.15?\"ok\":\"MISSED\")}"
awk "BEGIN{r=$td/$tc; printf \"warm speed vs cp: %.2fx (target >= 0.90x) %s\n\", r, (r>=0.9?\"ok\":\"MISSED\")}"
max_m=$(printf '%s\n' "$ma" "$mb" "$mc" | sort -n | tail -1)
awk "BEGIN{m=$max_m/1024; printf \"peak RSS of the builds: %.1f MiB (target <= 64 MiB) %s\n\", m, (m<=64?\"ok\":\"MISSED\")}"
