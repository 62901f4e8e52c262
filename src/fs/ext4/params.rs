//! Builder parameters, with documented defaults.

use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time with nanoseconds, as ext4 stores it (seconds may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// A timestamp of whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Self { secs, nanos: 0 }
    }

    /// `SOURCE_DATE_EPOCH` when set and valid, else the current time.
    pub fn build_time() -> Self {
        source_date_epoch().unwrap_or_else(Self::now)
    }

    /// The current time.
    pub fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(_) => Self::default(),
        }
    }

    /// ext4's 32-bit seconds field plus the `_extra` word (2 epoch bits, 30
    /// nanosecond bits), as the kernel's `ext4_encode_extra_time` packs them.
    pub(crate) fn encode(self) -> (u32, u32) {
        let lo = (self.secs & 0xFFFF_FFFF) as u32;
        let signed_lo = i64::from(lo as i32);
        let epoch = ((self.secs.wrapping_sub(signed_lo) >> 32) & 3) as u32;
        let nanos = self.nanos.min(999_999_999);
        (lo, epoch | (nanos << 2))
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible builds) when set to an integer.
pub fn source_date_epoch() -> Option<Timestamp> {
    let v = std::env::var("SOURCE_DATE_EPOCH").ok()?;
    v.trim().parse::<i64>().ok().map(Timestamp::from_secs)
}

/// Owner, permissions and times of one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeMeta {
    /// Permission bits (`0o7777` mask: rwx, setuid, setgid, sticky).
    pub perm: u16,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last inode change.
    pub ctime: Timestamp,
    /// Creation.
    pub crtime: Timestamp,
}

impl InodeMeta {
    /// `perm`, root-owned, all four times `at`.
    pub fn new(perm: u16, at: Timestamp) -> Self {
        Self {
            perm: perm & 0o7777,
            uid: 0,
            gid: 0,
            atime: at,
            mtime: at,
            ctime: at,
            crtime: at,
        }
    }

    /// Same metadata with another owner.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// How many inodes the filesystem gets. The inode count is fixed when the
/// layout is made (inode tables have a fixed place), so it is decided up front.
///
/// Count = max(`size / bytes_per_inode`, `expected_inodes + expected_inodes/4 + 1024`),
/// rounded up so every group's inode table fills whole blocks.
///
/// Why 64 KiB per inode by default: the real data partition is made with
/// `mke2fs -T largefile` (1 inode per MiB) which leaves a 256 MiB partition
/// 256 inodes, far too few once an archive of 100,000 files is expanded into
/// it; mke2fs's general default is 16 KiB per inode (1.6% of the space in
/// inode tables). 64 KiB costs 0.4% of the space and still gives 16,384
/// inodes per GiB, which covers content made mostly of large ZIM files plus
/// expanded web apps; `expected_inodes` covers anything denser. The Pi's
/// `resize2fs` growth keeps the per-group count, so the ratio also holds
/// after the partition grows to the whole SD card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodePolicy {
    /// One inode per this many bytes of filesystem (default 64 KiB).
    pub bytes_per_inode: u64,
    /// Inodes the caller knows it will create (carried-over tree, files,
    /// archive members); 25% + 1024 are added for the Pi's own use.
    pub expected_inodes: u64,
}

impl Default for InodePolicy {
    fn default() -> Self {
        Self {
            bytes_per_inode: 64 * 1024,
            expected_inodes: 0,
        }
    }
}

/// Parameters of a new ext4 filesystem.
#[derive(Debug, Clone)]
pub struct Ext4Params {
    /// Volume label (at most 16 bytes). Default: empty.
    pub label: String,
    /// Filesystem UUID. Default (`None`): random, or derived from the label,
    /// size and `SOURCE_DATE_EPOCH` when that is set (no randomness then).
    pub uuid: Option<[u8; 16]>,
    /// Directory hash seed (`s_hash_seed`). Default: derived like the UUID.
    pub hash_seed: Option<[u8; 16]>,
    /// Inode count policy.
    pub inodes: InodePolicy,
    /// Percentage of blocks reserved for root (`mke2fs -m`). Default 1, as the
    /// Offspot base image's data partition (`mke2fs -T largefile -m 1`).
    pub reserved_percent: u8,
    /// Time written into the superblock and used for the root directory,
    /// `lost+found` and reserved inodes. Default: [`Timestamp::build_time`].
    pub time: Timestamp,
    /// `s_flags`: signed (true) or unsigned directory hash. Default: signed,
    /// as mke2fs sets it on x86 (kept from the old filesystem when carried over).
    pub signed_hash: bool,
    /// No randomness: UUID and hash seed, when not given, are derived from
    /// the label, size and time. Default: true when `SOURCE_DATE_EPOCH` is set.
    pub deterministic: bool,
    /// Longest extent in blocks. ext4's maximum for an initialised extent is
    /// 32768 (128 MiB); tests lower it to force deep extent trees on small files.
    pub max_extent_blocks: u16,
}

impl Default for Ext4Params {
    fn default() -> Self {
        Self {
            label: String::new(),
            uuid: None,
            hash_seed: None,
            inodes: InodePolicy::default(),
            reserved_percent: 1,
            time: Timestamp::build_time(),
            signed_hash: true,
            deterministic: source_date_epoch().is_some(),
            max_extent_blocks: MAX_EXTENT_BLOCKS,
        }
    }
}

/// Longest initialised extent ext4 allows (the high bit of `ee_len` marks
/// unwritten extents, so 2^15 blocks).
pub const MAX_EXTENT_BLOCKS: u16 = 32768;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_encoding_matches_kernel_rules() {
        // 1970..2038: plain seconds, epoch bits 0.
        assert_eq!(
            Timestamp {
                secs: 1_700_000_000,
                nanos: 5
            }
            .encode(),
            (1_700_000_000, 5 << 2)
        );
        // Before 1970: the signed 32-bit field carries it, epoch bits 0.
        assert_eq!(Timestamp::from_secs(-1).encode(), (0xFFFF_FFFF, 0));
        // After 2038: epoch bit 1 set.
        let t = Timestamp::from_secs(1i64 << 31);
        assert_eq!(t.encode(), (0x8000_0000, 1));
    }
}
