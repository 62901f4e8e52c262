#!/usr/bin/env bash
# Benchmark: pulling a ~200 MB image from a local registry into a Pi image
# (image-creator build) versus `skopeo copy docker://… docker-archive:…` of
# the same image (what the old tool's docker-export step amounts to).
#
# Needs: docker-registry, umoci, skopeo, the make-base-image.sh tools, and a
# release build (cargo build --release). Runs in a temp dir; the registry is
# stopped by its pid at exit.
#
# Usage: scripts/bench-oci.sh [MB_PER_LAYER (default 50)] [LAYERS (default 4)]
#
# Measured 2026-11-24 (2 shared cores, release build, 4 x 50 MB gzip layers,
# 3 runs): image-creator build 0.48 / 0.81 / 0.84 s (base copy, pull, ext4
# included) vs skopeo copy 0.79 / 1.24 / 0.98 s: ratio 0.62 / 0.66 / 0.86;
# build peak RSS ~29 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${IMAGE_CREATOR:-$here/target/release/image-creator}
mb=${1:-50}
layers=${2:-4}
for t in docker-registry umoci skopeo; do
  command -v "$t" >/dev/null || { echo "bench-oci: $t is required" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "bench-oci: build $bin first (cargo build --release)" >&2; exit 2; }

work=$(mktemp -d)
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > reg.yml <<CONF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/store}}
http: {addr: 127.0.0.1:$port}
CONF
docker-registry serve reg.yml >/dev/null 2>&1 &
reg_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

# Layers alternate incompressible (random) and ~25%-compressible (base64 of
# random) data, like a mix of binaries and text.
umoci init --layout lay >/dev/null
umoci new --image lay:b >/dev/null
umoci config --image lay:b --os linux --architecture arm64 >/dev/null
for i in $(seq "$layers"); do
  if [ $((i % 2)) = 1 ]; then
    head -c "$((mb * 1000000))" /dev/urandom > "data$i"
  else
    head -c "$((mb * 750000))" /dev/urandom | base64 -w 0 | head -c "$((mb * 1000000))" > "data$i"
  fi
  umoci insert --rootless --image lay:b "data$i" "/data/file$i" >/dev/null
  rm "data$i"
done
img=127.0.0.1:$port/bench/big:1
skopeo --insecure-policy copy -q --dest-tls-verify=false oci:lay:b "docker://$img"
rm -rf lay

now() { date +%s.%N; }
t0=$(now)
sizes=$("$bin" oci-sizes "$img")
t1=$(now)
filesize=$(echo "$sizes" | awk '/filesize/ {print $2}')
fullsize=$(echo "$sizes" | awk '/fullsize/ {print $2}')

rootfs=$(bash "$here/scripts/make-base-image.sh" base.img 2>/dev/null)
printf 'base: {source: %s, rootfs_size: %s}\noci_images:\n  - {ident: "%s", filesize: %s, fullsize: %s}\n' \
  "$work/base.img" "$rootfs" "$img" "$filesize" "$fullsize" > c.yaml
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f "image-creator build: peak RSS %M KiB" -o rss.txt)
t2=$(now)
"${timer[@]}" "$bin" c.yaml out.img >/dev/null
t3=$(now)
skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$img" "docker-archive:$work/skopeo.tar:$img"
t4=$(now)

python3 - "$t0" "$t1" "$t2" "$t3" "$t4" "$filesize" "$(stat -c %s skopeo.tar)" "$(stat -c %s base.img)" <<'PY'
import sys
t0, t1, t2, t3, t4 = map(float, sys.argv[1:6])
fs, sk, base = map(int, sys.argv[6:9])
ic, sc = t3 - t2, t4 - t3
print(f"image: {fs/1e6:.1f} MB docker-archive (skopeo's: {sk/1e6:.1f} MB); base image {base/1e6:.1f} MB")
print(f"oci-sizes (pull, count, write nothing): {t1-t0:.2f} s")
print(f"image-creator build (base copy + pull into p3 + fs): {ic:.2f} s ({fs/1e6/ic:.0f} MB/s)")
print(f"skopeo copy docker:// -> docker-archive: {sc:.2f} s ({sk/1e6/sc:.0f} MB/s)")
print(f"ratio image-creator / skopeo: {ic/sc:.2f}")
PY
cat rss.txt 2>/dev/null || true
