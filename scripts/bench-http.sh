#!/usr/bin/env bash
# Benchmark (issue 4): serve GIB GiB of random data from a local nginx and,
# in one run, time
#   (a) an image-creator build that downloads it into the image, and
#   (b) `curl -o file && sync` of the same bytes,
# each with the page cache dropped first (when root) and followed by sync.
# Prints wall time, peak RSS (of image-creator / curl) and the ratio.
#
#   GIB=2 (default)  RUNS=1  BENCH_DIR=dir (default: a temp dir under /tmp)
#   IC_BIN=path: time that image-creator binary instead of building this tree's
#   (to compare two versions back to back with the same BENCH_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

GIB=${GIB:-2}
RUNS=${RUNS:-1}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-http.XXXXXX)}
mkdir -p "$work/www"
for t in nginx curl sfdisk mkfs.vfat mkfs.ext4 mcopy /usr/bin/time; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench-http: needs $t" >&2; exit 2; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}

if [ ! -f "$work/www/blob.$GIB" ]; then
  echo "generating $GIB GiB of random data ..." >&2
  head -c "$((GIB << 30))" /dev/urandom >"$work/www/blob.$GIB"
fi
sha=$(sha256sum "$work/www/blob.$GIB" | cut -d' ' -f1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root root;"
cat >"$work/nginx.conf" <<EOF
$user
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; default_type application/octet-stream;
  client_body_temp_path $work/t1; proxy_temp_path $work/t2; fastcgi_temp_path $work/t3;
  uwsgi_temp_path $work/t4; scgi_temp_path $work/t5;
  server { listen 127.0.0.1:$port; root $work/www; } }
EOF
"$nginx_bin" -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
ngx=$!
trap 'kill $ngx 2>/dev/null || true; [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
cat >"$work/c.yaml" <<EOF
base: {source: $work/base.img, rootfs_size: $rootfs}
files:
  - to: /data/blob.bin
    url: http://127.0.0.1:$port/blob.$GIB
    checksum: {algo: sha-256, value: $sha}
EOF

drop() { sync; if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi; }
measure() { # name, command...
  local name=$1; shift
  local best_t="" best_m=""
  for _ in $(seq 1 "$RUNS"); do
    rm -f "$work/out.img" "$work/curl.bin"; drop
    /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$* && sync" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r t m <"$work/time"
    if [ -z "$best_t" ] || awk "BEGIN{exit !($t < $best_t)}"; then best_t=$t; best_m=$m; fi
  done
  echo "$name $best_t $best_m"
}

ours=$(measure build "$ic -X '$work/c.yaml' '$work/out.img'")
theirs=$(measure curl "curl -sS -o '$work/curl.bin' http://127.0.0.1:$port/blob.$GIB")
rm -f "$work/out.img" "$work/curl.bin"
read -r _ t1 m1 <<<"$ours"
read -r _ t2 m2 <<<"$theirs"
printf '%-6s %8s %12s   (%s GiB)\n' what seconds "peak RSS MiB" "$GIB"
printf '%-6s %8.2f %12.1f\n' build "$t1" "$(awk "BEGIN{print $m1/1024}")"
printf '%-6s %8.2f %12.1f\n' curl "$t2" "$(awk "BEGIN{print $m2/1024}")"
awk "BEGIN{printf \"ratio build/curl: %.2fx (target <= 1.10x)\n\", $t1/$t2}"
