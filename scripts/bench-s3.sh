#!/usr/bin/env bash
# Benchmark (issue 17, the download cache on object storage): serve N_FILES
# files of FILE_MIB MiB of random data from a local nginx (default 4 × 1 GiB
# = 4 GiB, one config, `-T 4`), run an S3-compatible server on loopback
# (moto_server, $MOTO_SERVER or on PATH), and in one run time
#   (a) nocache:    a build without --cache-dir,
#   (b) cold-s3:    a build with --cache-dir s3://bench/p, the prefix new
#                   (every file downloaded once and uploaded on the way),
#   (c) cold-local: the same with a local --cache-dir (fills it),
#   (d) warm-local: the same build again from the local cache (nginx
#                   stopped),
#   (e) warm-s3:    the same build from the bucket (nginx stopped),
#   (f) boto3-up:   boto3's `upload_file` of the same files to a new
#                   prefix (the reference client, issue 25),
#   (g) boto3-down: boto3's `download_file` of the bucket's blobs (the
#                   same bytes the warm build reads) to the same disk,
# each the best of RUNS, page cache dropped first (when root), followed by
# sync. Prints wall time and peak RSS of each, and the targets' ratios:
# warm-s3/warm-local <= 1.25, cold-s3/nocache <= 1.2 (issue 17); against
# the reference client, warm-s3/boto3-down <= 1.2 and
# cold-s3/(nocache + boto3-up) <= 0.8 (issue 25: both sides pay the same
# server, so the ratio is ours). boto3 comes from BOTO3_PYTHON (default
# moto's venv, /opt/moto/bin/python), default transfer settings (8 MiB
# parts, 10 threads per file), one file after another.
#
# moto keeps objects in Python (spooled to temporary files past a few MB)
# and serves a ranged GET by reading the whole object: its throughput, not
# ours, bounds (b) and (e) (measured: 20 MiB/s warm at 1 GiB objects, moto
# using 312 CPU s for 4 GiB). The moto_server process's CPU time and the
# builds' own CPU time (user + sys) are printed to tell them apart.
#
#   N_FILES=4 FILE_MIB=1024 RUNS=1 (defaults); BENCH_DIR=dir (default: a
#   temp dir under /tmp, removed at the end); IC_BIN=path
#   A small run: N_FILES=4 FILE_MIB=64 scripts/bench-s3.sh
#   S3S_FS=path: use s3s-fs instead of moto (a Rust S3 server on a local
#   directory, `cargo install s3s-fs@0.14.1 --features binary`; serves
#   ranged GETs without reading whole objects, so it measures us, not the
#   server); the bucket and policy.yaml are then made as its files.
#   BUCKET_DIR=dir: keep the server's storage (s3s-fs's root, moto's
#   temporary files) in a new directory under dir, removed at the end,
#   e.g. BUCKET_DIR=/dev/shm (RAM). Default: under the work dir, i.e. on
#   the disk the image is written to.
#
# Why BUCKET_DIR: a real deployment's store runs on other machines, so its
# disk writes are not the build's. With the bucket on the image's disk,
# a cold run writes each byte three times to one disk (s3s-fs writes the
# parts, then copies them into the object on completion, and we write the
# image), and a warm run reads the objects back from it while the image
# is written: the bench then measures that one disk, not the cache.
# Storage in RAM (tmpfs) takes the server's disk out of the comparison;
# its CPU (md5 of every part, twice; the copy on completion) stays on the
# same two cores as the build, and is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

N_FILES=${N_FILES:-4}
FILE_MIB=${FILE_MIB:-1024}
RUNS=${RUNS:-1}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-s3.XXXXXX)}
mkdir -p "$work/www"
moto=${MOTO_SERVER:-$(command -v moto_server || true)}
s3s=${S3S_FS:-}
[ -n "$moto" ] || [ -n "$s3s" ] || { echo "bench-s3: needs moto_server (pip install 'moto[server]') or MOTO_SERVER" >&2; exit 2; }
for t in nginx curl python3 sfdisk mkfs.vfat mkfs.ext4 mcopy /usr/bin/time; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench-s3: needs $t" >&2; exit 2; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}

stamp="$work/www/.made-$N_FILES-$FILE_MIB"
if [ ! -f "$stamp" ]; then
  echo "generating $N_FILES x $FILE_MIB MiB of random data ..." >&2
  rm -rf "$work/www" && mkdir -p "$work/www"
  for i in $(seq 1 "$N_FILES"); do head -c "$((FILE_MIB << 20))" /dev/urandom >"$work/www/f$i.bin"; done
  touch "$stamp"
fi
total_mib=$((N_FILES * FILE_MIB))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
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
  echo "bench-s3: nginx did not start" >&2; exit 1
}
stop_nginx() {
  if [ -n "$ngx" ]; then kill "$ngx" 2>/dev/null || true; wait "$ngx" 2>/dev/null || true; ngx=""; fi
}
s3port=$(free_port)
if [ -n "${BUCKET_DIR:-}" ]; then
  mkdir -p "$BUCKET_DIR"
  s3dir=$(mktemp -d "$BUCKET_DIR/bench-s3-bucket.XXXXXX")
else
  s3dir="$work/s3root"
fi
mkdir -p "$s3dir"
# Its own process group, stopped whole at the end; its temporary files
# (the objects) under $work.
if [ -n "$s3s" ]; then
  mkdir -p "$s3dir/bench"
  setsid "$s3s" --host 127.0.0.1 --port "$s3port" --access-key bench --secret-key bench \
    "$s3dir" >"$work/moto.log" 2>&1 &
else
  TMPDIR="$s3dir" setsid "$moto" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1 &
fi
motopid=$!
cleanup() {
  stop_nginx
  kill -TERM -- "-$motopid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$motopid" 2>/dev/null || true
  wait "$motopid" 2>/dev/null || true
  rm -rf "$s3dir"
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$s3port/" && break; sleep 0.1; done
[ -n "$s3s" ] || curl -sf -X PUT "http://127.0.0.1:$s3port/bench" >/dev/null
start_nginx

export AWS_ENDPOINT_URL="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

rootfs=$(bash scripts/make-base-image.sh "$work/base.img")
{
  echo "base: {source: $work/base.img, rootfs_size: $rootfs}"
  echo "files:"
  for i in $(seq 1 "$N_FILES"); do
    echo "  - to: /data/f$i.bin"
    echo "    url: http://127.0.0.1:$port/f$i.bin"
  done
} >"$work/c.yaml"

printf 'max_size: 0\ncheck_after: 30d\n' >"$work/policy.yaml"
cache="$work/cache"
echo 0 >"$work/s3n"
new_local() { rm -rf "$cache" && mkdir -p "$cache" && cp "$work/policy.yaml" "$cache/"; }
# A new prefix per cold run (measure runs in a subshell: the counter and
# the URL live in files).
new_s3() {
  n=$(($(cat "$work/s3n") + 1)); echo "$n" >"$work/s3n"; echo "s3://bench/p$n" >"$work/s3url"
  if [ -n "$s3s" ]; then
    mkdir -p "$s3dir/bench/p$n" && cp "$work/policy.yaml" "$s3dir/bench/p$n/"
  else
    curl -sf -X PUT -T "$work/policy.yaml" "http://127.0.0.1:$s3port/bench/p$n/policy.yaml" >/dev/null
  fi
}
drop() { sync; if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; fi; }
measure() { # name, prepare-function, command (s3url expanded after prep)...
  local name=$1 prep=$2 cmd=$3
  local best_t="" best_m="" best_c=""
  for _ in $(seq 1 "$RUNS"); do
    rm -rf "$work/out.img"; $prep; drop
    local s3url; s3url=$(cat "$work/s3url" 2>/dev/null || true)
    local c=${cmd//S3URL/$s3url}
    /usr/bin/time -f "%e %M %U %S" -o "$work/time" bash -c "$c && sync" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    if grep -q "download cache" "$work/err"; then echo "bench-s3: $name warned:" >&2; grep "download cache" "$work/err" >&2; exit 1; fi
    read -r t m u s <"$work/time"
    if [ -z "$best_t" ] || awk "BEGIN{exit !($t < $best_t)}"; then best_t=$t; best_m=$m; best_c=$(awk "BEGIN{print $u+$s}"); fi
  done
  rm -rf "$work/out.img"
  echo "$name $best_t $best_m $best_c"
}
nothing() { :; }
motocpu() { awk '{print ($14+$15)/100}' "/proc/$(pgrep -g "$motopid" | head -1)/stat" 2>/dev/null || echo "?"; }

build="$ic -X -T 4 '$work/c.yaml' '$work/out.img'"
local_c="$ic -X -T 4 --cache-dir '$cache' '$work/c.yaml' '$work/out.img'"
s3_c="$ic -X -T 4 --cache-dir S3URL '$work/c.yaml' '$work/out.img'"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
r_a=$(measure nocache nothing "$build")
m0=$(motocpu)
r_b=$(measure cold-s3 new_s3 "$s3_c")
m1=$(motocpu)
r_c=$(measure cold-local new_local "$local_c")
stop_nginx
r_d=$(measure warm-local nothing "$local_c")
m2=$(motocpu)
r_e=$(measure warm-s3 nothing "$s3_c")
m3=$(motocpu)
# The reference client (skipped when BOTO3_PYTHON has no boto3).
py=${BOTO3_PYTHON:-/opt/moto/bin/python}
r_f="" r_g=""
if "$py" -c 'import boto3' 2>/dev/null; then
  export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
  cat >"$work/boto.py" <<'EOF'
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
how, bucket, prefix, local = sys.argv[1:5]
if how == "up":
    for name in sorted(os.listdir(local)):
        if name.endswith(".bin"):
            s3.upload_file(os.path.join(local, name), bucket, f"{prefix}/{name}")
else:
    os.makedirs(local, exist_ok=True)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/v1/blobs/")
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys, "no blobs"
    for i, key in enumerate(keys):
        s3.download_file(bucket, key, os.path.join(local, f"b{i}"))
EOF
  up_prefix() { n=$(($(cat "$work/s3n") + 1)); echo "$n" >"$work/s3n"; echo "up$n" >"$work/upprefix"; }
  clear_down() { rm -rf "$work/down"; }
  blobs=$(cut -d/ -f4- "$work/s3url")
  r_f=$(measure boto3-up up_prefix "'$py' '$work/boto.py' up bench \$(cat '$work/upprefix') '$work/www'")
  r_g=$(measure boto3-down clear_down "'$py' '$work/boto.py' down bench '$blobs' '$work/down' && rm -rf '$work/down'")
fi
# The bucket holds every file once.
entries=$("$ic" --show-cache --json --cache-dir "$(cat "$work/s3url")" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))')
[ "$entries" = "$N_FILES" ] || { echo "bench-s3: $entries entries in the bucket, expected $N_FILES" >&2; exit 1; }

printf '%-10s %8s %12s %10s %10s   (%s x %s MiB = %s MiB, RUNS=%s)\n' \
  what seconds "peak RSS MiB" "MiB/s" "our CPU s" "$N_FILES" "$FILE_MIB" "$total_mib" "$RUNS"
for r in "$r_a" "$r_b" "$r_c" "$r_d" "$r_e" "$r_f" "$r_g"; do
  [ -n "$r" ] || continue
  read -r nm t m c <<<"$r"
  printf '%-10s %8.2f %12.1f %10.0f %10.2f\n' "$nm" "$t" "$(awk "BEGIN{print $m/1024}")" "$(awk "BEGIN{print $total_mib/$t}")" "$c"
done
echo "load average before: $load0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "S3 server ($([ -n "$s3s" ] && echo s3s-fs || echo moto_server)) CPU seconds: cold-s3 $(awk "BEGIN{print $m1-$m0}"), warm-s3 $(awk "BEGIN{print $m3-$m2}")"
read -r _ ta _ <<<"$r_a"; read -r _ tb _ <<<"$r_b"; read -r _ td _ <<<"$r_d"; read -r _ te _ <<<"$r_e"
awk "BEGIN{r=$te/$td; printf \"warm-s3/warm-local: %.2fx (target <= 1.25x) %s\n\", r, (r<=1.25?\"ok\":\"MISSED\")}"
awk "BEGIN{r=$tb/$ta; printf \"cold-s3/nocache: %.2fx (target <= 1.2x) %s\n\", r, (r<=1.2?\"ok\":\"MISSED\")}"
if [ -n "$r_f" ]; then
  read -r _ tf _ <<<"$r_f"; read -r _ tg _ <<<"$r_g"
  awk "BEGIN{r=$te/$tg; printf \"warm-s3/boto3-down: %.2fx (target <= 1.2x) %s\n\", r, (r<=1.2?\"ok\":\"MISSED\")}"
  awk "BEGIN{r=$tb/($ta+$tf); printf \"cold-s3/(nocache + boto3-up): %.2fx (target <= 0.8x) %s\n\", r, (r<=0.8?\"ok\":\"MISSED\")}"
fi
