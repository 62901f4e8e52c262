#!/usr/bin/env bash
# Build a small Offspot-like base image with real tools, no root, no loop
# devices, structured like the real base (SPEC §2):
#   MBR (disk id 0x5452574f), 3 primary partitions aligned to 4 MiB,
#   p1 FAT (type 0x0c, label bootfs, 4 sectors/cluster): cmdline.txt,
#      config.txt, offspot.yaml, kernel8.img, overlays/README
#   p2 ext4 label rootfs (type 0x83): a few files
#   p3 ext4 label data (type 0x83, mke2fs -T largefile -m 1): master_fs,
#      images/base-httpd-1.0.tar, lost+found
# The image ends exactly at the end of p3. Fixed UUIDs, ids and times make
# the output reproducible.
#
# Usage: make-base-image.sh OUTPUT.img [P1_MIB P2_MIB P3_MIB]   (default 32 16 16)
# Prints the rootfs_size (byte offset of p3) on stdout.
set -euo pipefail

out=${1:?usage: make-base-image.sh OUTPUT.img [P1_MIB P2_MIB P3_MIB]}
p1=${2:-32}
p2=${3:-16}
p3=${4:-16}
for tool in sfdisk mkfs.vfat mkfs.ext4 mcopy mmd tar; do
  command -v "$tool" >/dev/null || { echo "make-base-image: $tool is required" >&2; exit 2; }
done

export E2FSPROGS_FAKE_TIME=1700000000
export SOURCE_DATE_EPOCH=1700000000
export TZ=UTC
stamp=202311142213.20 # 1700000000 as touch -t

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mib=$((1024 * 1024))
start1=$((4 * mib))
start2=$((start1 + p1 * mib))
start3=$((start2 + p2 * mib))
end=$((start3 + p3 * mib))

# Partition contents.
mkdir -p "$work/boot/overlays" "$work/root/etc" "$work/data/images" "$work/httpd"
printf 'console=serial0,115200 console=tty1 root=PARTUUID=5452574f-02 rootfstype=ext4 fsck.repair=yes rootwait\n' >"$work/boot/cmdline.txt"
printf '[all]\narm_64bit=1\nkernel=kernel8.img\n' >"$work/boot/config.txt"
printf '# default offspot config\nap:\n  ssid: Kiwix Offspot\n' >"$work/boot/offspot.yaml"
head -c 200000 /dev/zero | tr '\0' 'K' >"$work/boot/kernel8.img"
printf 'overlays\n' >"$work/boot/overlays/README"
printf 'PARTUUID=5452574f-03  /data  ext4  defaults,noatime  0  2\n' >"$work/root/etc/fstab"
printf 'offspot-base\n' >"$work/root/etc/hostname"
: >"$work/data/master_fs"
printf '<html>base httpd</html>\n' >"$work/httpd/index.html"
find "$work" -exec touch -h -t "$stamp" {} +
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
  -C "$work/httpd" -cf "$work/data/images/base-httpd-1.0.tar" .
touch -t "$stamp" "$work/data/images/base-httpd-1.0.tar" "$work/data/images" "$work/data"

# p1: FAT16 below 128.5 MiB, FAT32 above (as the real base).
fat=32
if [ "$p1" -lt 129 ]; then fat=16; fi
truncate -s $((p1 * mib)) "$work/p1.img"
mkfs.vfat -F "$fat" -s 4 -n bootfs -i 5452574f "$work/p1.img" >/dev/null
mmd -i "$work/p1.img" ::overlays
mcopy -m -i "$work/p1.img" "$work/boot/cmdline.txt" "$work/boot/config.txt" "$work/boot/offspot.yaml" "$work/boot/kernel8.img" ::
mcopy -m -i "$work/p1.img" "$work/boot/overlays/README" ::overlays/

# p2, p3: ext4.
truncate -s $((p2 * mib)) "$work/p2.img"
mkfs.ext4 -q -F -L rootfs -U 6f0c1b6e-2c1b-4c52-9a0e-0d1e2f3a4b5c \
  -E hash_seed=1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b -d "$work/root" "$work/p2.img"
truncate -s $((p3 * mib)) "$work/p3.img"
mkfs.ext4 -q -F -T largefile -m 1 -L data -U 0e9f5c44-2f0b-4b3e-9c62-1a2b3c4d5e6f \
  -E hash_seed=5b6fd653-d035-4b3d-b594-cacda5da9efc -d "$work/data" "$work/p3.img"

# Assemble.
rm -f "$out"
truncate -s "$end" "$out"
sfdisk --quiet "$out" <<SFDISK
label: dos
label-id: 0x5452574f
unit: sectors

start=$((start1 / 512)), size=$(((start2 - start1) / 512)), type=c
start=$((start2 / 512)), size=$(((start3 - start2) / 512)), type=83
start=$((start3 / 512)), size=$(((end - start3) / 512)), type=83
SFDISK
dd if="$work/p1.img" of="$out" bs=1M seek=$((start1 / mib)) conv=notrunc,sparse status=none
dd if="$work/p2.img" of="$out" bs=1M seek=$((start2 / mib)) conv=notrunc,sparse status=none
dd if="$work/p3.img" of="$out" bs=1M seek=$((start3 / mib)) conv=notrunc,sparse status=none
echo "$start3"
