#!/usr/bin/env bash
# Benchmark (issue 24, `--publish`): an image of SIZE_MIB MiB of random
# content (default 1024) built and published to an S3-compatible server on
# loopback (moto_server, $MOTO_SERVER or on PATH), against the standard
# way: build, then upload the file with boto3 (`upload_file`, its default
# TransferConfig: 8 MiB parts, 10 threads). For a raw OUTPUT and a `.zst`
# one, in one run, the page cache dropped before each (when root), time
#   (a) build --publish s3://bench/ic/   (step 7: one pass, the upload fed by it)
#   (b) build                            (the same without --publish)
#   (c) boto3 upload_file OUTPUT         (the file (b) wrote)
#   (d) sha256sum OUTPUT                 (a plain read of it, for scale)
#   (e) build --torrent --webseed W --publish s3://bench/it/  (step 7: one
#       pass, the image's sha256, the torrent's pieces and the upload)
#   (f) mktorrent -w W of OUTPUT         (the torrent the standard way)
# and the issue's target: (e)'s step 7 <= 0.6 x (d) + (f) + (c), the same
# outputs made one after the other with standard tools.
# and print wall seconds, step 7's seconds (from the history), our CPU
# seconds (user + sys), peak RSS, and the moto_server process's CPU
# seconds during each upload: moto parses every part in Python on the same
# two cores, so its CPU, not ours, bounds the uploads here.
#
#   SIZE_MIB=1024 (default); BENCH_DIR=dir (default: a temp dir under
#   /tmp, removed at the end); IC_BIN=path (default: cargo build --release)
#   S3S_FS=path: s3s-fs instead of moto (a Rust S3 server storing objects
#   in a directory, `cargo install s3s-fs@0.14.1 --features binary`;
#   BUCKET_DIR=dir puts that directory elsewhere, e.g. /dev/shm, so the
#   store's disk is not the image's); boto3 still comes from moto's venv
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-1024}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-upload.XXXXXX)}
mkdir -p "$work"
moto=${MOTO_SERVER:-$(command -v moto_server || true)}
s3s=${S3S_FS:-}
[ -n "$moto" ] || { echo "bench-upload: needs moto_server (pip install 'moto[server]') or MOTO_SERVER (its python has boto3)" >&2; exit 2; }
py="$(dirname "$moto")/python"
[ -x "$py" ] || py=python3
"$py" -c 'import boto3' || { echo "bench-upload: needs boto3 for $py" >&2; exit 2; }
for t in mktorrent curl python3 sha256sum sfdisk mkfs.vfat mkfs.ext4 mcopy /usr/bin/time; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench-upload: needs $t" >&2; exit 2; }
done
if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ -n "${BUCKET_DIR:-}" ]; then s3dir=$(mktemp -d "$BUCKET_DIR/bench-upload.XXXXXX"); else s3dir="$work/s3tmp"; fi
mkdir -p "$s3dir"
# Its own process group, stopped whole at the end; its objects under
# $s3dir.
if [ -n "$s3s" ]; then
  mkdir -p "$s3dir/bench"
  setsid "$s3s" --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench \
    "$s3dir" >"$work/moto.log" 2>&1 &
else
  TMPDIR="$s3dir" setsid "$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
fi
motopid=$!
cleanup() {
  kill -TERM -- "-$motopid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$motopid" 2>/dev/null || true
  wait "$motopid" 2>/dev/null || true
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
  [ -z "${BUCKET_DIR:-}" ] || rm -rf "$s3dir"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
[ -n "$s3s" ] || curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench

rootfs=$(bash scripts/make-base-image.sh "$work/base.img" 2>/dev/null)
[ -f "$work/data.bin" ] || head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/data.bin"
printf 'base: {source: %s, rootfs_size: %s}\nfiles:\n  - to: /data/data.bin\n    url: %s\n' \
  "$work/base.img" "$rootfs" "$work/data.bin" >"$work/c.yaml"

dropped=no
drop() { sync; if [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; fi; }
motocpu() { awk '{print ($14+$15)/100}' "/proc/$(pgrep -g "$motopid" | head -1)/stat" 2>/dev/null || echo 0; }
# measure NAME COMMAND: one run, page cache dropped first; prints
# "NAME wall rss_kib cpu step7 moto_cpu".
measure() {
  local name=$1 cmd=$2
  drop
  local m0; m0=$(motocpu)
  /usr/bin/time -f "%e %M %U %S" -o "$work/time" bash -c "$cmd" >"$work/out-$name.log" 2>&1 \
    || { cat "$work/out-$name.log" >&2; exit 1; }
  local m1; m1=$(motocpu)
  read -r t m u s <"$work/time"
  local s7; s7=$(grep -o '\[7/7\][^(]*([0-9.]*s)' "$work/out-$name.log" | grep -o '[0-9.]*s)$' | tr -d 's)' || true)
  echo "$name $t $m $(awk "BEGIN{print $u+$s}") ${s7:--} $(awk "BEGIN{print $m1-$m0}")"
}

# (measure runs in a subshell: whether drop works is found out here.)
drop
results=()
for out in out.img out.img.zst; do
  o="$work/$out"
  rm -f "$o"*
  results+=("$(measure "publish:$out" "'$ic' -X --publish s3://bench/ic/ '$work/c.yaml' '$o' && sync")")
  # The bucket holds the file byte for byte.
  "$py" - "$o" "ic/$out" <<'EOF'
import boto3, hashlib, sys
s3 = boto3.client('s3')
b = s3.get_object(Bucket='bench', Key=sys.argv[2])['Body']
h = hashlib.sha256()
for c in iter(lambda: b.read(1 << 20), b''):
    h.update(c)
local = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest()
assert h.hexdigest() == local, (sys.argv[2], h.hexdigest(), local)
EOF
  results+=("$(measure "build:$out" "'$ic' -X '$work/c.yaml' '$o' && sync")")
  results+=("$(measure "boto3:$out" "'$py' -c \"import boto3; boto3.client('s3').upload_file('$o', 'bench', 'boto/$out')\"")")
  results+=("$(measure "sha256sum:$out" "sha256sum '$o' >/dev/null")")
  seed="http://mirror.example/images/$out"
  results+=("$(measure "pubtorrent:$out" "'$ic' -X --torrent --webseed '$seed' --publish s3://bench/it/ '$work/c.yaml' '$o' && sync")")
  # mktorrent's piece length as ours (at most ~2,000 pieces).
  lg=$(python3 -c "import sys; n=int(sys.argv[1]); l=14
while l < 24 and n > 2000 << l: l += 1
print(l)" "$(stat -c %s "$o")")
  results+=("$(measure "mktorrent:$out" "rm -f '$work/m.torrent' && mktorrent -l $lg -w '$seed' -o '$work/m.torrent' '$o' >/dev/null")")
  echo "$out: $(stat -c %s "$o") bytes" >&2
done

printf '%-22s %8s %8s %10s %12s %10s   (SIZE_MIB=%s, page cache dropped: %s)\n' \
  what wall_s step7_s our_cpu_s peak_RSS_MiB store_cpu_s "$SIZE_MIB" "$dropped"
for r in "${results[@]}"; do
  read -r nm t m c s7 mc <<<"$r"
  printf '%-22s %8.2f %8s %10.2f %12.1f %10.2f\n' "$nm" "$t" "$s7" "$c" "$(awk "BEGIN{print $m/1024}")" "$mc"
done
echo "(boto3 and sha256sum: our_cpu_s is theirs. The upload's cost in a build is publish step 7 - build step 7; the standard way costs build step 7 + boto3.)"
for out in out.img out.img.zst; do
  get() { for r in "${results[@]}"; do read -r nm t _ _ s7 _ <<<"$r"; [ "$nm" = "$1:$out" ] && echo "${2:-$t}" "$s7"; done; }
  read -r _ ours <<<"$(get pubtorrent)"
  read -r sha _ <<<"$(get sha256sum)"; read -r mk _ <<<"$(get mktorrent)"; read -r up _ <<<"$(get boto3)"
  awk -v o="$ours" -v a="$sha" -v b="$mk" -v c="$up" -v n="$out" 'BEGIN{printf "%s: --torrent --publish step 7 %.2fs vs sha256sum + mktorrent + boto3 %.2f+%.2f+%.2f = %.2fs: %.2fx (target <= 0.6x)\n", n, o, a, b, c, a+b+c, o/(a+b+c)}'
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
