#!/usr/bin/env bash
# Benchmark (issue 25, the content on disk once): a warm rebuild of
# CONTENT_MIB MiB of content (default 4 GiB, FILES files from a local nginx)
# with the download cache and OUTPUT on loop-mounted XFS (mkfs.xfs -m
# reflink=1: hits are cloned with FICLONERANGE) against the same warm
# rebuild on loop-mounted ext4 (hits copied), both made the same size, in
# one run. Each filesystem gets a cold build (fills its cache), then the
# warm build is timed, the page cache dropped before it (when root). Prints
# the wall time of each warm build, their ratio (target: XFS <= 0.5x ext4)
# and the blocks the warm build allocated on each filesystem (statvfs, after
# a sync; target on XFS: <= 1 % of the content beyond the image's own
# blocks, which are printed too: `filefrag -v`'s unshared extents).
#
# Needs root (loop mounts), mkfs.xfs, mkfs.ext4, nginx, filefrag.
#   CONTENT_MIB=4096 FILES=4 (defaults)  RUNS=1 (best of)
#   BENCH_DIR=dir (default: a temp dir under /tmp, removed at the end)
#   IC_BIN=path: time that image-creator binary instead of building this tree's
#   A small run: CONTENT_MIB=256 scripts/bench-reflink.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONTENT_MIB=${CONTENT_MIB:-4096}
FILES=${FILES:-4}
RUNS=${RUNS:-1}
work=${BENCH_DIR:-$(mktemp -d /tmp/bench-reflink.XXXXXX)}
for t in nginx curl python3 sfdisk mkfs.vfat mkfs.ext4 mkfs.xfs mcopy filefrag mount; do
  command -v "$t" >/dev/null || { echo "bench-reflink: needs $t" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench-reflink: needs root (loop mounts)" >&2; exit 2; }
nginx_bin=$(command -v nginx)

if [ -z "${IC_BIN:-}" ]; then cargo build --release >/dev/null 2>&1; fi
ic=${IC_BIN:-$PWD/target/release/image-creator}

mkdir -p "$work/www" "$work/backing"
per_mib=$((CONTENT_MIB / FILES))
for i in $(seq "$FILES"); do
  f="$work/www/f$i.bin"
  [ "$(stat -c %s "$f" 2>/dev/null || echo 0)" = $((per_mib << 20)) ] ||
    head -c "$((per_mib << 20))" /dev/urandom >"$f"
done
rootfs=$(scripts/make-base-image.sh "$work/base.img")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<EOF
user root root;
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; default_type application/octet-stream;
  client_body_temp_path $work/t1; proxy_temp_path $work/t2; fastcgi_temp_path $work/t3;
  uwsgi_temp_path $work/t4; scgi_temp_path $work/t5;
  server { listen 127.0.0.1:$port; root $work/www; } }
EOF
"$nginx_bin" -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
ngx=$!
mounted=()
cleanup() {
  kill "$ngx" 2>/dev/null || true
  wait "$ngx" 2>/dev/null || true
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
  rm -f "$work"/backing/*.fs
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

{
  echo "base: {source: $work/base.img, rootfs_size: $rootfs}"
  echo "files:"
  for i in $(seq "$FILES"); do
    echo "  - to: /data/f$i.bin"
    echo "    url: http://127.0.0.1:$port/f$i.bin"
  done
} >"$work/image.yaml"

# Room for the blob and two images of the content, plus slack.
fs_bytes=$(((CONTENT_MIB * 3 + 2048) << 20))
used() { sync -f "$1"; python3 -c 'import os,sys; s=os.statvfs(sys.argv[1]); print((s.f_blocks-s.f_bfree)*s.f_frsize)' "$1"; }
unshared() { # bytes of $1 allocated and shared with no other file
  python3 - "$1" <<'EOF'
import os, re, subprocess, sys
out = subprocess.run(["filefrag", "-v", "-b4096", sys.argv[1]], capture_output=True, text=True).stdout
shared = sum(int(m.group(1)) for m in re.finditer(r":\s+(\d+):\s+\S*\s*\S*shared", out))
print(os.stat(sys.argv[1]).st_blocks * 512 - shared * 4096)
EOF
}
drop() { sync; [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches || true; }

declare -A warm_s grew own
for fs in ext4 xfs; do
  truncate -s "$fs_bytes" "$work/backing/$fs.fs"
  case $fs in
    ext4) mkfs.ext4 -q -F "$work/backing/$fs.fs" ;;
    xfs) mkfs.xfs -q -m reflink=1 "$work/backing/$fs.fs" ;;
  esac
  mkdir -p "$work/$fs"
  mount -o loop "$work/backing/$fs.fs" "$work/$fs"
  mounted+=("$work/$fs")
  d="$work/$fs"
  SOURCE_DATE_EPOCH=1700000000 "$ic" -q --cache-dir "$d/cache" "$work/image.yaml" "$d/cold.img" >/dev/null
  best=""
  for r in $(seq "$RUNS"); do
    rm -f "$d/warm.img"
    drop
    before=$(used "$d")
    t0=$(date +%s.%N)
    SOURCE_DATE_EPOCH=1700000000 "$ic" -q --cache-dir "$d/cache" "$work/image.yaml" "$d/warm.img" >/dev/null
    t1=$(date +%s.%N)
    after=$(used "$d")
    s=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then
      best=$s
      grew[$fs]=$((after - before))
      own[$fs]=$(unshared "$d/warm.img")
    fi
  done
  warm_s[$fs]=$best
  echo "$fs: warm rebuild of $CONTENT_MIB MiB: ${best} s; the filesystem grew $((grew[$fs] >> 10)) KiB (the image's own unshared blocks: $((own[$fs] >> 10)) KiB)"
done
cmp "$work/ext4/warm.img" "$work/xfs/warm.img" && echo "the two warm images are byte-identical"
python3 - "${warm_s[xfs]}" "${warm_s[ext4]}" "${grew[xfs]}" "${own[xfs]}" "$CONTENT_MIB" <<'EOF'
import sys
xfs, ext4, grew, own, mib = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
content = mib << 20
ratio = xfs / ext4 if ext4 else float("inf")
extra = max(0, grew - own)
print(f"warm XFS / warm ext4: {ratio:.2f}x (target <= 0.5x): {'OK' if ratio <= 0.5 else 'MISSED'}")
print(f"XFS warm allocated {grew} bytes, {extra} beyond the image's own blocks = "
      f"{100 * extra / content:.3f} % of the content (target <= 1 %): {'OK' if extra <= content / 100 else 'MISSED'}")
EOF
