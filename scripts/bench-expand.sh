#!/usr/bin/env bash
# Benchmark (issue 5): expand a tar.gz served by nginx, in one run:
#   A) curl URL | tar xz -C dir && sync
#   B) image-creator building an image whose files[] has that URL with
#      via: gztar (the base image copy included), then sync
# Prints wall time and peak RSS of each and the ratio B/A; B's p3 is
# checked with e2fsck -fn.
#
# Tree: SIZE_MIB (default 1024) MiB, half in 8 large random files, half in
# 32 KiB files of base64 text (compressible, many inodes).
#   BENCH_DIR=dir for the tree and outputs (default: a temp dir under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-expand.XXXXXX)}
mkdir -p "$work/www"
for t in nginx curl tar gzip e2fsck sfdisk /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done

cargo build --release --bin image-creator >/dev/null 2>&1
bin=$PWD/target/release/image-creator

src="$work/tree"
if [ ! -f "$work/www/tree-$SIZE_MIB.tar.gz" ]; then
  rm -rf "$src"; mkdir -p "$src/big" "$src/small"
  echo "generating a $SIZE_MIB MiB tree in $src ..." >&2
  half=$((SIZE_MIB / 2))
  for i in $(seq 1 8); do head -c "$((half * 1024 * 1024 / 8))" /dev/urandom >"$src/big/b$i.bin"; done
  head -c "$((half * 1024 * 1024 * 3 / 4))" /dev/urandom | base64 -w 0 >"$work/pool"
  (cd "$src/small" && split -a 5 -d -b 32k "$work/pool" s)
  rm -f "$work/pool"
  echo "packing ..." >&2
  tar -C "$src" -cf - . | gzip -1 >"$work/www/tree-$SIZE_MIB.tar.gz"
fi
expanded=$(du -sb --apparent-size "$src" | cut -f1)
entries=$(find "$src" | wc -l)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=""; [ "$(id -u)" = 0 ] && user="user root root;"
cat >"$work/nginx.conf" <<CONF
$user
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 64; }
http { access_log off; default_type application/octet-stream; sendfile on;
  client_body_temp_path $work/t1; proxy_temp_path $work/t2; fastcgi_temp_path $work/t3; uwsgi_temp_path $work/t4; scgi_temp_path $work/t5;
  server { listen 127.0.0.1:$port; root $work/www; } }
CONF
nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
ngx=$!
trap 'kill -TERM $ngx 2>/dev/null; wait $ngx 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/tree-$SIZE_MIB.tar.gz" -r 0-0 && break; sleep 0.1; done
url="http://127.0.0.1:$port/tree-$SIZE_MIB.tar.gz"

start=$(bash scripts/make-base-image.sh "$work/base.img")
cat >"$work/image.yaml" <<YAML
base:
  source: $work/base.img
  rootfs_size: $start
files:
  - to: /data/tree
    url: $url
    via: gztar
    size: $expanded
YAML

drop() { sync; if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi; }
measure() { # name, command
  drop
  /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$2 && sync" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r t m <"$work/time"; echo "$1 $t $m"
}
rm -rf "$work/x"; mkdir -p "$work/x"
a=$(measure curl+tar "curl -sf '$url' | tar xz -C '$work/x'")
rm -rf "$work/x"
rm -f "$work/out.img"
b=$(measure image-creator "'$bin' -X '$work/image.yaml' '$work/out.img'")
p3=$(( $(sfdisk -J "$work/out.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][2]["start"])') * 512 ))
e2fsck -fn "$work/out.img?offset=$p3" >/dev/null 2>&1 || { echo "e2fsck failed on p3" >&2; exit 1; }
want=$(stat -c %s "$src/big/b1.bin")
debugfs -R "stat /tree/big/b1.bin" "$work/out.img?offset=$p3" 2>/dev/null | grep -q "Size: $want" \
  || { echo "tree/big/b1.bin missing or of the wrong size in the image" >&2; exit 1; }
rm -f "$work/out.img"
read -r _ t1 m1 <<<"$a"; read -r _ t2 m2 <<<"$b"
echo "archive: $(stat -c %s "$work/www/tree-$SIZE_MIB.tar.gz") bytes gz, $expanded bytes expanded, $entries entries"
printf '%-14s %8s %12s\n' what seconds "peak RSS MiB"
printf '%-14s %8.2f %12.1f\n' "curl|tar xz" "$t1" "$(awk "BEGIN{print $m1/1024}")"
printf '%-14s %8.2f %12.1f\n' image-creator "$t2" "$(awk "BEGIN{print $m2/1024}")"
echo "ratio image-creator / curl|tar: $(awk "BEGIN{printf \"%.2f\", $t2/$t1}")"
