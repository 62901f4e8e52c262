//! Little- and big-endian field helpers for fixed on-disk layouts.
//!
//! Every structure is serialised field by field at the offset the ext4 and
//! jbd2 documentation give it; these helpers keep that code short. The slices
//! are buffers this module sized itself, so an out-of-range offset is a bug in
//! the layout code (caught by the tests), never a consequence of input.

#[cfg(not(target_pointer_width = "64"))]
compile_error!("image-creator indexes images larger than 4 GiB: it needs a 64-bit target");

/// `u64` to `usize`: lossless, since the crate only builds for 64-bit
/// targets (see the `compile_error!` above).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn us(v: u64) -> usize {
    v as usize
}

/// `usize` to `u64`: lossless on every target Rust supports.
pub(crate) const fn u64_of(v: usize) -> u64 {
    v as u64
}

/// Low 16 bits of a `usize` that the on-disk format bounds (entry counts,
/// record lengths inside a 4 KiB block).
#[allow(clippy::cast_possible_truncation)] // masked: truncation is the intent
pub(crate) const fn field16(v: usize) -> u16 {
    (v & 0xFFFF) as u16
}

/// Low 8 bits of a `usize` that the format bounds (name lengths <= 255).
#[allow(clippy::cast_possible_truncation)] // masked: truncation is the intent
pub(crate) const fn field8(v: usize) -> u8 {
    (v & 0xFF) as u8
}

pub(crate) fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    buf[off] = v;
}

pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..][..2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..][..4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..][..8].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_be32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..][..4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn get_u16(buf: &[u8], off: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&buf[off..][..2]);
    u16::from_le_bytes(w)
}

pub(crate) fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[off..][..4]);
    u32::from_le_bytes(w)
}

/// Low 32 bits of a 64-bit value (the `_lo` half of an ext4 field).
pub(crate) fn lo32(v: u64) -> u32 {
    (v & 0xFFFF_FFFF) as u32
}

/// High 32 bits of a 64-bit value (the `_hi` half of an ext4 field).
pub(crate) fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}

/// Low 16 bits.
pub(crate) fn lo16(v: u32) -> u16 {
    (v & 0xFFFF) as u16
}

/// High 16 bits.
pub(crate) fn hi16(v: u32) -> u16 {
    (v >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn little_endian_round_trip() {
        let mut b = [0u8; 16];
        put_u16(&mut b, 0, 0xEF53);
        put_u32(&mut b, 2, 0x0102_0304);
        put_u64(&mut b, 6, 0x1122_3344_5566_7788);
        assert_eq!(&b[..2], &[0x53, 0xEF]);
        assert_eq!(get_u16(&b, 0), 0xEF53);
        assert_eq!(get_u32(&b, 2), 0x0102_0304);
        assert_eq!(b[6], 0x88);
        put_be32(&mut b, 12, 0xC03B_3998);
        assert_eq!(&b[12..], &[0xC0, 0x3B, 0x39, 0x98]);
    }

    #[test]
    fn halves() {
        let v = 0x1234_5678_9ABC_DEF0u64;
        assert_eq!(lo32(v), 0x9ABC_DEF0);
        assert_eq!(hi32(v), 0x1234_5678);
        assert_eq!(lo16(0xAAAA_BBBB), 0xBBBB);
        assert_eq!(hi16(0xAAAA_BBBB), 0xAAAA);
    }
}
