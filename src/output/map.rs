//! What an image needs on the card: every block its filesystems use, as
//! their own allocation metadata records it, plus everything that must
//! read as zeros. This is the block map of `--bmap` and the ranges a
//! device build must write (zeros included); it never comes from the
//! file's holes, which say nothing about what the filesystems rely on.
//!
//! - the MBR and the gap up to the first partition (boot loaders look
//!   there; the partition table is in it);
//! - ext4 (p2, p3): every block its block bitmaps mark in use (superblock
//!   and backups, descriptors, reserved descriptor blocks, bitmaps, inode
//!   tables — whole, used or not, zeros included —, the journal, the
//!   resize inode's blocks, directories, extent trees, and every block of
//!   every file, holes inside files included, as the builder allocates
//!   them initialised); groups whose bitmap is uninitialised get their
//!   superblock backup and descriptors; every group's bitmaps and inode
//!   table wherever they lie;
//! - FAT (p1): the reserved sectors, both FATs (with their zeroed tails:
//!   free clusters are zero entries), the FAT12/16 root directory, and
//!   every allocated cluster;
//! - a partition that is neither (or whose metadata doesn't parse): all
//!   of it.
//!
//! Free blocks are left out: what a card held there before does not
//! matter. Unknown or broken metadata only ever widens the map.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::partition::{Mbr, PartitionWindow, SECTOR};

use super::ranges::RangeSet;

/// How one partition was mapped (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapped {
    /// By its ext4 block bitmaps.
    Ext4,
    /// By its FAT.
    Fat,
    /// Whole.
    Whole,
}

/// The image's map, in bytes from the image's start, and how each
/// partition was mapped.
#[derive(Debug, Clone)]
pub struct ImageMap {
    /// The ranges.
    pub ranges: RangeSet,
    /// (partition number, how).
    pub parts: Vec<(usize, Mapped)>,
}

/// Map the image `file` (`len` bytes, named `path` in errors).
pub fn map_image(file: &Arc<File>, path: &Path, len: u64) -> std::io::Result<ImageMap> {
    use std::os::unix::fs::FileExt;
    let mut sector = [0u8; 512];
    file.read_exact_at(&mut sector, 0)?;
    match Mbr::parse(&sector) {
        Ok(m) => Ok(map_partitions(file, path, len, &m)),
        Err(_) => {
            // No partition table: everything.
            let mut ranges = RangeSet::new();
            ranges.insert(0, len);
            Ok(ImageMap {
                ranges,
                parts: Vec::new(),
            })
        }
    }
}

/// Map `file` (`len` bytes) with the partitions of `mbr` (which need not
/// be on `file` yet: a device gets its partition table last).
pub fn map_partitions(file: &Arc<File>, path: &Path, len: u64, mbr: &Mbr) -> ImageMap {
    let mut ranges = RangeSet::new();
    let mut parts = Vec::new();
    let mut first = len;
    for n in 1..=4 {
        let Ok(p) = mbr.partition(n) else { continue };
        let start = p.offset().min(len);
        let end = p.end().min(len);
        first = first.min(start);
        if start >= end {
            continue;
        }
        let window = PartitionWindow::new(file.clone(), path, start, end - start);
        let (how, used) = match ext4_used(&window) {
            Some(u) => (Mapped::Ext4, u),
            None => match fat_used(&window) {
                Some(u) => (Mapped::Fat, u),
                None => {
                    let mut all = RangeSet::new();
                    all.insert(0, end - start);
                    (Mapped::Whole, all)
                }
            },
        };
        for (s, e) in used.iter() {
            ranges.insert(start + s, (start + e).min(end));
        }
        parts.push((n, how));
    }
    // The MBR and the gap before the first partition.
    ranges.insert(0, first.max(SECTOR).min(len));
    ImageMap { ranges, parts }
}

fn le16(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn le32(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

/// Read `len` bytes at `at` of the window, or `None`.
fn read(w: &PartitionWindow, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    w.read_at(at, &mut buf).ok()?;
    Some(buf)
}

/// True when group `g` holds a superblock backup (sparse_super: groups 0,
/// 1 and powers of 3, 5 and 7).
fn has_backup(g: u64, sparse: bool) -> bool {
    if !sparse || g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut p = b;
        while p < g {
            p = p.saturating_mul(b);
        }
        p == g
    })
}

/// What mapping an ext4 filesystem needs of its superblock (offsets: the
/// kernel's `struct ext4_super_block`), checked against the window.
struct Ext4Geometry {
    /// Block size in bytes (`1024 << s_log_block_size`).
    bs: u64,
    /// `s_blocks_count_lo` (`| s_blocks_count_hi << 32` with `64bit`).
    blocks: u64,
    /// `s_first_data_block`.
    first_data: u64,
    /// `s_blocks_per_group`.
    bpg: u64,
    /// Bytes of a group descriptor (`s_desc_size` with `64bit`, else 32).
    desc: u64,
    /// Block groups.
    groups: u64,
    /// Blocks of group descriptors.
    gdt_blocks: u64,
    /// Blocks of one group's inode table.
    itable_blocks: u64,
    /// `s_reserved_gdt_blocks`.
    reserved_gdt: u64,
    /// `sparse_super`: backups only in groups 0, 1 and powers of 3, 5, 7.
    sparse: bool,
}

impl Ext4Geometry {
    /// The geometry of the ext4 in `w`, or `None` when there is none we
    /// can map (no magic, `meta_bg`, values that don't fit the window).
    fn read(w: &PartitionWindow) -> Option<Self> {
        const INCOMPAT_64BIT: u64 = 0x80;
        const INCOMPAT_META_BG: u64 = 0x10;
        const RO_COMPAT_SPARSE_SUPER: u64 = 1;
        let sb = read(w, 1024, 1024)?;
        if le16(&sb, 0x38)? != 0xEF53 {
            return None;
        }
        let log = le32(&sb, 0x18)?;
        if log > 6 {
            return None;
        }
        let bs = 1024u64 << log;
        let incompat = le32(&sb, 0x60)?;
        let ro_compat = le32(&sb, 0x64)?;
        if incompat & INCOMPAT_META_BG != 0 {
            return None;
        }
        let wide = incompat & INCOMPAT_64BIT != 0;
        let blocks = le32(&sb, 0x04)? | if wide { le32(&sb, 0x150)? << 32 } else { 0 };
        let first_data = le32(&sb, 0x14)?;
        let bpg = le32(&sb, 0x20)?;
        let ipg = le32(&sb, 0x28)?;
        let inode_size = match le16(&sb, 0x58)? {
            0 => 128,
            n => n,
        };
        let desc = if wide { le16(&sb, 0xFE)? } else { 32 };
        if bpg == 0 || bpg > bs * 8 || !(32..=1024).contains(&desc) || blocks <= first_data {
            return None;
        }
        if blocks.checked_mul(bs)? > w.len() {
            return None;
        }
        let groups = (blocks - first_data).div_ceil(bpg);
        Some(Self {
            bs,
            blocks,
            first_data,
            bpg,
            desc,
            groups,
            gdt_blocks: groups.checked_mul(desc)?.div_ceil(bs),
            itable_blocks: ipg.checked_mul(inode_size)?.div_ceil(bs),
            reserved_gdt: le16(&sb, 0xCE)?,
            sparse: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
        })
    }
}

/// What mapping needs of one group descriptor (`struct ext4_group_desc`;
/// the high halves only in 64-byte descriptors).
struct GroupDesc {
    /// `bg_block_bitmap`.
    block_bitmap: u64,
    /// `bg_inode_bitmap`.
    inode_bitmap: u64,
    /// `bg_inode_table`.
    inode_table: u64,
    /// `bg_flags`.
    flags: u64,
}

impl GroupDesc {
    /// `bg_flags`: the block bitmap is not initialised.
    const BLOCK_UNINIT: u64 = 2;

    /// Descriptor `g` of the descriptor table `gdt`.
    fn read(gdt: &[u8], g: u64, desc: u64) -> Option<Self> {
        let start = usize::try_from(g.checked_mul(desc)?).ok()?;
        let end = usize::try_from(g.checked_add(1)?.checked_mul(desc)?).ok()?;
        let d = gdt.get(start..end)?;
        let field = |lo: usize, hi: usize| -> Option<u64> {
            let high = if desc >= 64 { le32(d, hi)? << 32 } else { 0 };
            Some(le32(d, lo)? | high)
        };
        Some(Self {
            block_bitmap: field(0, 0x20)?,
            inode_bitmap: field(4, 0x24)?,
            inode_table: field(8, 0x28)?,
            flags: le16(d, 0x12)?,
        })
    }
}

/// The used set being built, in blocks of one filesystem.
struct UsedBlocks {
    set: RangeSet,
    bs: u64,
    blocks: u64,
}

impl UsedBlocks {
    /// Blocks `b..b + n`, cut at the filesystem's end.
    fn add(&mut self, b: u64, n: u64) {
        let end = b.saturating_add(n).min(self.blocks);
        if b < end {
            self.set.insert(b * self.bs, end * self.bs);
        }
    }
}

/// Each run of set bits among the first `len` bits of `bitmap` (bit `i`
/// is bit `i % 8` of byte `i / 8`), as `(first bit, count)`; whole `0x00`
/// and `0xFF` bytes are passed over at once. `None` when `bitmap` is
/// shorter than `len` bits.
fn bitmap_runs(bitmap: &[u8], len: u64, mut run_of: impl FnMut(u64, u64)) -> Option<()> {
    let mut run: Option<u64> = None;
    let mut i = 0u64;
    while i < len {
        let byte = *bitmap.get(usize::try_from(i / 8).ok()?)?;
        if i.is_multiple_of(8) && i + 8 <= len && (byte == 0 || byte == 0xFF) {
            match (byte, run) {
                (0, Some(s)) => {
                    run_of(s, i - s);
                    run = None;
                }
                (0xFF, None) => run = Some(i),
                _ => {}
            }
            i += 8;
            continue;
        }
        let set = byte >> (i % 8) & 1 == 1;
        match (set, run) {
            (true, None) => run = Some(i),
            (false, Some(s)) => {
                run_of(s, i - s);
                run = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = run {
        run_of(s, len - s);
    }
    Some(())
}

/// The byte ranges (from the window's start) an ext4 filesystem in `w`
/// uses, or `None` when `w` holds no ext4 we can read.
pub fn ext4_used(w: &PartitionWindow) -> Option<RangeSet> {
    let geo = Ext4Geometry::read(w)?;
    let gdt_len = usize::try_from(geo.gdt_blocks * geo.bs).ok()?;
    let gdt = read(w, (geo.first_data + 1) * geo.bs, gdt_len)?;
    let mut used = UsedBlocks {
        set: RangeSet::new(),
        bs: geo.bs,
        blocks: geo.blocks,
    };
    // The boot block and the primary superblock, whatever the block size.
    used.set.insert(0, 2048.min(w.len()));
    let mut bitmap = vec![0u8; usize::try_from(geo.bs).ok()?];
    for g in 0..geo.groups {
        let d = GroupDesc::read(&gdt, g, geo.desc)?;
        // Every group's bitmaps and inode table, wherever they lie.
        used.add(d.block_bitmap, 1);
        used.add(d.inode_bitmap, 1);
        used.add(d.inode_table, geo.itable_blocks);
        let g_start = geo.first_data + g * geo.bpg;
        let g_len = geo.bpg.min(geo.blocks - g_start);
        if d.flags & GroupDesc::BLOCK_UNINIT != 0 || d.block_bitmap >= geo.blocks {
            // No bitmap to read: the superblock backup and descriptors.
            if has_backup(g, geo.sparse) {
                used.add(g_start, 1 + geo.gdt_blocks + geo.reserved_gdt);
            }
            continue;
        }
        w.read_at(d.block_bitmap * geo.bs, &mut bitmap).ok()?;
        bitmap_runs(&bitmap, g_len, |s, n| used.add(g_start + s, n))?;
    }
    Some(used.set)
}

/// The byte ranges (from the window's start) a FAT16 or FAT32 filesystem
/// in `w` uses, or `None` (FAT12, or not FAT).
pub fn fat_used(w: &PartitionWindow) -> Option<RangeSet> {
    let bs = read(w, 0, 512)?;
    if bs[510] != 0x55 || bs[511] != 0xAA {
        return None;
    }
    let bps = le16(&bs, 11)?;
    let spc = u64::from(bs[13]);
    let reserved = le16(&bs, 14)?;
    let fats = u64::from(bs[16]);
    let root_entries = le16(&bs, 17)?;
    let total = match le16(&bs, 19)? {
        0 => le32(&bs, 32)?,
        n => n,
    };
    let fat_size = match le16(&bs, 22)? {
        0 => le32(&bs, 36)?,
        n => n,
    };
    if !matches!(bps, 512 | 1024 | 2048 | 4096)
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || fats == 0
        || fat_size == 0
    {
        return None;
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + fats * fat_size + root_sectors;
    if total <= data_start || total.checked_mul(bps)? > w.len() {
        return None;
    }
    let clusters = (total - data_start) / spc;
    let fat32 = match clusters {
        0..4085 => return None,
        4085..65525 => false,
        _ => true,
    };
    let entry = if fat32 { 4 } else { 2 };
    if (clusters + 2) * entry > fat_size * bps {
        return None;
    }
    let mut used = RangeSet::new();
    used.insert(0, data_start * bps);
    let cluster = spc * bps;
    // The first FAT, in chunks.
    const CHUNK: u64 = 1 << 20;
    let fat_bytes = (clusters + 2) * entry;
    let mut at = 0u64;
    while at < fat_bytes {
        let n = CHUNK.min(fat_bytes - at);
        let buf = read(w, reserved * bps + at, usize::try_from(n).ok()?)?;
        for (k, e) in buf.chunks_exact(usize::try_from(entry).ok()?).enumerate() {
            let c = (at / entry) + k as u64;
            if c < 2 {
                continue;
            }
            let v = if fat32 {
                le32(e, 0)? & 0x0FFF_FFFF
            } else {
                le16(e, 0)?
            };
            if v != 0 {
                let s = data_start * bps + (c - 2) * cluster;
                used.insert(s, s + cluster);
            }
        }
        at += n;
    }
    Some(used)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;
    use proptest::prelude::*;

    /// A window over `bytes` (in an unnamed temporary file).
    fn window(bytes: &[u8]) -> PartitionWindow {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        PartitionWindow::new(Arc::new(f), "fuzz.img", 0, bytes.len() as u64)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Garbage with the magic numbers in place never panics, and
        /// whatever is mapped lies inside the partition.
        #[test]
        fn garbage_metadata_never_panics(
            seed in proptest::collection::vec(any::<u8>(), 8192..24576),
            pokes in proptest::collection::vec((0usize..4096, any::<u8>()), 0..64),
        ) {
            let mut b = seed;
            // ext4: magic, small log block size.
            b[1024 + 0x38] = 0x53;
            b[1024 + 0x39] = 0xEF;
            b[1024 + 0x18] = 0;
            // FAT: boot signature, 512-byte sectors.
            b[510] = 0x55;
            b[511] = 0xAA;
            b[11] = 0;
            b[12] = 2;
            for (at, v) in pokes {
                b[at] = v;
            }
            let w = window(&b);
            for used in [ext4_used(&w), fat_used(&w)].into_iter().flatten() {
                for (_, e) in used.iter() {
                    prop_assert!(e <= b.len() as u64 || e <= 2048);
                }
            }
        }
    }

    proptest! {
        /// The runs are exactly the set bits, whatever the bytes and length.
        #[test]
        fn bitmap_runs_are_the_set_bits(
            bitmap in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 0..64),
            cut in 0u64..8,
        ) {
            let len = (bitmap.len() as u64 * 8).saturating_sub(cut);
            let mut got = vec![false; len as usize];
            let mut last_end = None;
            bitmap_runs(&bitmap, len, |s, n| {
                assert!(n > 0 && last_end.is_none_or(|e| e < s), "runs are maximal and ordered");
                for b in &mut got[s as usize..(s + n) as usize] {
                    *b = true;
                }
                last_end = Some(s + n);
            })
            .unwrap();
            let want: Vec<bool> = (0..len).map(|i| bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1).collect();
            prop_assert_eq!(got, want);
            let short = bitmap_runs(&bitmap, len + 9, |_, _| ());
            prop_assert!(short.is_none(), "a bitmap shorter than len is refused");
        }
    }

    #[test]
    fn backups_of_sparse_super() {
        let with: Vec<u64> = (0..60).filter(|&g| has_backup(g, true)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
        assert!(has_backup(4, false));
    }
}
