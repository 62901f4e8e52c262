//! DOS MBR: read the partition table, grow a partition, write it back.
//!
//! Offsets are those of the classic MBR: disk id at 440 (4 bytes, little
//! endian), four 16-byte entries from 446, signature 0x55 0xAA at 510.
//! Rewriting keeps every byte we did not change (boot code, disk id,
//! untouched entries) identical.

/// Bytes per sector: MBR LBAs count 512-byte sectors.
pub const SECTOR: u64 = 512;
const DISK_ID: usize = 440;
const TABLE: usize = 446;
const ENTRY: usize = 16;
const SIGNATURE: usize = 510;

/// A sector number (512-byte units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lba(pub u64);

impl Lba {
    /// Byte offset of this sector. An MBR's LBAs are 32-bit (at most 2^41
    /// bytes); a larger hand-made `Lba` saturates at `u64::MAX`, an offset
    /// that every window's bounds check refuses.
    pub fn bytes(self) -> u64 {
        self.0.saturating_mul(SECTOR)
    }
}

/// Problems with an MBR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MbrError {
    /// No 0x55AA signature.
    #[error("no MBR partition table (missing 0x55AA signature at byte 510)")]
    NoSignature,
    /// A partition the image needs is absent.
    #[error("partition {0} is missing from the MBR")]
    Missing(usize),
    /// A partition extends past the end of the image.
    #[error("partition {n} ends at byte {end}, past the end of the image ({len} bytes)")]
    PastEnd {
        /// Partition number (1-based).
        n: usize,
        /// End offset.
        end: u64,
        /// Image length.
        len: u64,
    },
    /// Two partitions overlap.
    #[error("partitions {0} and {1} overlap")]
    Overlap(usize, usize),
    /// A requested size does not fit an MBR entry.
    #[error("partition {n}: {sectors} sectors do not fit a 32-bit MBR entry")]
    TooLarge {
        /// Partition number.
        n: usize,
        /// Requested sectors.
        sectors: u64,
    },
}

/// One primary partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Boot flag (0x80 active).
    pub boot: u8,
    /// Partition type (0x0c FAT32 LBA, 0x83 Linux, ...).
    pub kind: u8,
    /// First sector.
    pub start: Lba,
    /// Length in sectors.
    pub sectors: u64,
}

impl Partition {
    /// Byte offset of the partition.
    pub fn offset(&self) -> u64 {
        self.start.bytes()
    }
    /// Length in bytes (saturating like [`Lba::bytes`]; parsed and
    /// `set_sectors` lengths are 32-bit, so it never saturates for them).
    pub fn len(&self) -> u64 {
        self.sectors.saturating_mul(SECTOR)
    }
    /// True for an empty entry.
    pub fn is_empty(&self) -> bool {
        self.kind == 0 || self.sectors == 0
    }
    /// Byte offset just past the partition.
    pub fn end(&self) -> u64 {
        // Both < 2^41 for MBR values: the sum can not saturate for them.
        self.offset().saturating_add(self.len())
    }
}

/// A parsed MBR, keeping the original sector for byte-exact rewriting.
#[derive(Debug, Clone)]
pub struct Mbr {
    raw: [u8; 512],
    parts: [Option<Partition>; 4],
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..][..4]);
    u32::from_le_bytes(w)
}

/// The four 16-byte partition entries.
fn entries(raw: &[u8; 512]) -> impl Iterator<Item = &[u8]> {
    raw[TABLE..SIGNATURE].chunks_exact(ENTRY)
}

impl Mbr {
    /// Parse sector 0.
    pub fn parse(raw: &[u8; 512]) -> Result<Self, MbrError> {
        if raw[SIGNATURE] != 0x55 || raw[SIGNATURE + 1] != 0xAA {
            return Err(MbrError::NoSignature);
        }
        let mut parts = [None; 4];
        for (p, e) in parts.iter_mut().zip(entries(raw)) {
            let part = Partition {
                boot: e[0],
                kind: e[4],
                start: Lba(u64::from(le32(e, 8))),
                sectors: u64::from(le32(e, 12)),
            };
            if !part.is_empty() {
                *p = Some(part);
            }
        }
        Ok(Self { raw: *raw, parts })
    }

    /// Check the partitions the image needs (1..=`required`) exist, do not
    /// overlap and end within `image_len` bytes.
    pub fn validate(&self, required: usize, image_len: u64) -> Result<(), MbrError> {
        for n in 1..=required.min(4) {
            let p = self.partition(n)?;
            if p.end() > image_len {
                return Err(MbrError::PastEnd {
                    n,
                    end: p.end(),
                    len: image_len,
                });
            }
        }
        let numbered = || (1usize..).zip(self.parts.iter());
        for (a, x) in numbered() {
            for (b, y) in numbered().skip(a) {
                if let (Some(x), Some(y)) = (x, y) {
                    if x.offset() < y.end() && y.offset() < x.end() {
                        return Err(MbrError::Overlap(a, b));
                    }
                }
            }
        }
        Ok(())
    }

    /// Partition `n` (1-based).
    pub fn partition(&self, n: usize) -> Result<Partition, MbrError> {
        n.checked_sub(1)
            .and_then(|i| self.parts.get(i).copied().flatten())
            .ok_or(MbrError::Missing(n))
    }

    /// The disk identifier (bytes 440–443), used in PARTUUIDs `<id>-0N`.
    pub fn disk_id(&self) -> u32 {
        le32(&self.raw, DISK_ID)
    }

    /// Resize partition `n` to `sectors`, keeping its start.
    pub fn set_sectors(&mut self, n: usize, sectors: u64) -> Result<(), MbrError> {
        let count = u32::try_from(sectors).map_err(|_| MbrError::TooLarge { n, sectors })?;
        let mut p = self.partition(n)?;
        let end = p
            .start
            .0
            .checked_add(sectors)
            .ok_or(MbrError::TooLarge { n, sectors })?;
        // The last sector (the start itself for an empty partition).
        let last = end.saturating_sub(1).max(p.start.0);
        u32::try_from(last).map_err(|_| MbrError::TooLarge { n, sectors })?;
        p.sectors = sectors;
        let index = n.checked_sub(1).ok_or(MbrError::Missing(n))?;
        let (Some(slot), Some(entry)) = (
            self.parts.get_mut(index),
            self.raw[TABLE..SIGNATURE]
                .chunks_exact_mut(ENTRY)
                .nth(index),
        ) else {
            return Err(MbrError::Missing(n));
        };
        *slot = Some(p);
        entry[12..16].copy_from_slice(&count.to_le_bytes());
        // CHS of the last sector: beyond 1023 cylinders every tool writes the
        // 1023/254/63 marker (0xFE 0xFF 0xFF) and relies on the LBA fields.
        entry[5..8].copy_from_slice(&chs(last));
        Ok(())
    }

    /// The sector to write back.
    pub fn to_bytes(&self) -> [u8; 512] {
        self.raw
    }
}

/// CHS triple for an LBA with the 255 heads × 63 sectors geometry.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let c = lba / (HEADS * SPT);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / SPT) % HEADS;
    // Sectors count from 1: lba % SPT < 63, so no overflow.
    let s = (lba % SPT).saturating_add(1);
    let c_lo = (c & 0xFF) as u8;
    let c_hi = ((c >> 2) & 0xC0) as u8;
    [(h & 0xFF) as u8, (s & 0x3F) as u8 | c_hi, c_lo]
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // fixtures: small literal offsets
mod tests {
    use super::*;

    fn sample() -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0] = 0xEB; // boot code byte
        b[440..444].copy_from_slice(&0x5452_574fu32.to_le_bytes());
        for (i, (kind, start, len)) in [
            (0x0c, 8192u32, 65536u32),
            (0x83, 73728, 32768),
            (0x83, 106_496, 32768),
        ]
        .iter()
        .enumerate()
        {
            let off = 446 + i * 16;
            b[off + 4] = *kind;
            b[off + 8..off + 12].copy_from_slice(&start.to_le_bytes());
            b[off + 12..off + 16].copy_from_slice(&len.to_le_bytes());
        }
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn parses_and_grows_p3_only() {
        let raw = sample();
        let mut m = Mbr::parse(&raw).expect("parse");
        assert_eq!(m.disk_id(), 0x5452_574f);
        assert_eq!(m.partition(3).expect("p3").offset(), 106_496 * 512);
        m.validate(3, 139_264 * 512).expect("valid");
        m.set_sectors(3, 1_000_000).expect("grow");
        let out = m.to_bytes();
        let changed: Vec<usize> = (0..512).filter(|&i| out[i] != raw[i]).collect();
        assert!(
            changed.iter().all(|&i| (478..494).contains(&i)),
            "only p3's entry changes: {changed:?}"
        );
        assert_eq!(
            Mbr::parse(&out)
                .expect("reparse")
                .partition(3)
                .expect("p3")
                .sectors,
            1_000_000
        );
    }

    #[test]
    fn errors() {
        let mut raw = sample();
        assert_eq!(
            Mbr::parse(&raw)
                .expect("ok")
                .validate(3, 1000)
                .expect_err("past end"),
            MbrError::PastEnd {
                n: 1,
                end: (8192 + 65536) * 512,
                len: 1000
            }
        );
        assert!(Mbr::parse(&raw).expect("ok").partition(4).is_err());
        let mut m = Mbr::parse(&raw).expect("ok");
        assert!(matches!(
            m.set_sectors(3, 1 << 33),
            Err(MbrError::TooLarge { .. })
        ));
        raw[510] = 0;
        assert_eq!(
            Mbr::parse(&raw).expect_err("no signature"),
            MbrError::NoSignature
        );
    }

    #[test]
    fn chs_marker_beyond_1023_cylinders() {
        assert_eq!(chs(100_000_000), [0xFE, 0xFF, 0xFF]);
        assert_eq!(chs(0), [0, 1, 0]);
    }
}
