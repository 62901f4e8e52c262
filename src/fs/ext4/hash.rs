//! The directory name hash of htree directories: "half MD4", the
//! filesystem's `s_def_hash_version` (1, mke2fs's default).
//!
//! Described in the kernel's ext4 documentation ("Hash Tree Directories",
//! Documentation/filesystems/ext4/directory.rst): the name is packed 32
//! bytes at a time into eight 32-bit words padded with its length
//! (`str2hashbuf`), each group runs through three rounds of MD4 over a
//! state seeded by `s_hash_seed`, and the major hash is state word 1 with
//! its low bit cleared (the low bit of an index entry marks a collision
//! run continuing into the next block), the minor hash state word 2.
//!
//! `s_flags` says whether name bytes were read as signed or unsigned chars
//! by the system that made the filesystem; that choice changes the hash of
//! names with bytes ≥ 0x80, so it is a parameter.

/// Initial MD4 state, used when the seed is all zeros (the MD4 constants).
const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
/// Round 2 and 3 constants of MD4 (√2 and √3 scaled to 2^30, in octal in
/// RFC 1320's reference code: 013240474631 and 015666365641).
const K2: u32 = 0x5A82_7999;
const K3: u32 = 0x6ED9_EBA1;
/// The hash the kernel reserves as "end of directory" for 32-bit readdir
/// cookies (`EXT4_HTREE_EOF_32BIT << 1`); a name hashing to it gets the
/// value just below.
const EOF_HASH: u32 = 0x7FFF_FFFF << 1;

/// The (major, minor) directory hash ext4 gives `name` in a filesystem
/// whose superblock holds `hash_seed` and the signedness `signed` (for
/// tests and tools: `debugfs -R 'dx_hash -h half_md4 -s SEED NAME'` prints
/// the same pair).
pub fn dir_hash(hash_seed: &[u8; 16], signed: bool, name: &[u8]) -> (u32, u32) {
    let h = DirHasher::new(hash_seed, signed).hash(name);
    (h.major, h.minor)
}

/// A name's major and minor hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NameHash {
    /// The hash index entries sort by (low bit always 0).
    pub major: u32,
    /// The tie-breaker e2fsck sorts by after the major hash.
    pub minor: u32,
}

/// Hashes names with one filesystem's seed and signedness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirHasher {
    seed: [u32; 4],
    signed: bool,
}

impl DirHasher {
    /// A hasher for `s_hash_seed` (as stored: four little-endian words)
    /// and the signedness `s_flags` records.
    pub fn new(hash_seed: &[u8; 16], signed: bool) -> Self {
        let mut seed = [0u32; 4];
        for (w, chunk) in seed.iter_mut().zip(hash_seed.chunks_exact(4)) {
            *w = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        if seed == [0; 4] {
            seed = DEFAULT_SEED;
        }
        Self { seed, signed }
    }

    /// The half-MD4 hash of `name`.
    pub fn hash(&self, name: &[u8]) -> NameHash {
        let mut state = self.seed;
        let mut rest = name;
        // At least one round, even for an empty name (never one here).
        loop {
            let words = pack(rest, self.signed);
            half_md4(&mut state, &words);
            match rest.get(32..) {
                Some(r) if !r.is_empty() => rest = r,
                _ => break,
            }
        }
        let mut major = state[1] & !1;
        if major == EOF_HASH {
            major = EOF_HASH.wrapping_sub(2);
        }
        NameHash {
            major,
            minor: state[2],
        }
    }
}

/// Eight words from the first 32 bytes of `msg`, big-endian-ish as the
/// kernel's `str2hashbuf`: each word starts as the padding value (the
/// remaining length repeated in all four bytes) and shifts in one byte at a
/// time; words past the name are the padding value.
fn pack(msg: &[u8], signed: bool) -> [u32; 8] {
    // The length only feeds the padding pattern: its low byte is all that
    // is used (`len | len << 8 | ...` in 32 bits), so truncation is intended.
    let len8 = u32::from(msg.len().to_le_bytes()[0]);
    let pad = len8 | (len8 << 8) | (len8 << 16) | (len8 << 24);
    let mut out = [pad; 8];
    let mut val = pad;
    let mut filled = 0usize;
    for (i, &b) in msg.iter().take(32).enumerate() {
        let byte = if signed {
            // A signed char sign-extends into the 32-bit sum.
            u32::from_le_bytes(i32::from(i8::from_le_bytes([b])).to_le_bytes())
        } else {
            u32::from(b)
        };
        val = byte.wrapping_add(val.wrapping_shl(8));
        if i % 4 == 3 {
            out[filled] = val; // i < 32, so filled < 8
            filled = filled.wrapping_add(1);
            val = pad;
        }
    }
    if let Some(slot) = out.get_mut(filled) {
        // A partial last word (or the padding value when the name ended
        // on a word boundary: then val == pad).
        *slot = val;
    }
    out
}

fn f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}
fn g(x: u32, y: u32, z: u32) -> u32 {
    (x & y).wrapping_add((x ^ y) & z)
}
fn h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

/// One MD4-style step: `a = rotl(a + fun(b, c, d) + x, s)`.
fn step(fun: fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, x: u32, s: u32) -> u32 {
    a.wrapping_add(fun(b, c, d)).wrapping_add(x).rotate_left(s)
}

/// The three reduced MD4 rounds over eight words ("half" MD4: 8 input
/// words instead of 16, 8 steps per round instead of 16).
fn half_md4(state: &mut [u32; 4], x: &[u32; 8]) {
    let [mut a, mut b, mut c, mut d] = *state;
    // Round 1: F, words in order, shifts 3 7 11 19.
    for &[w0, w1, w2, w3] in &[[0usize, 1, 2, 3], [4, 5, 6, 7]] {
        a = step(f, a, b, c, d, x[w0], 3);
        d = step(f, d, a, b, c, x[w1], 7);
        c = step(f, c, d, a, b, x[w2], 11);
        b = step(f, b, c, d, a, x[w3], 19);
    }
    // Round 2: G, words 1 3 5 7 0 2 4 6, shifts 3 5 9 13.
    for &[w0, w1, w2, w3] in &[[1usize, 3, 5, 7], [0, 2, 4, 6]] {
        a = step(g, a, b, c, d, x[w0].wrapping_add(K2), 3);
        d = step(g, d, a, b, c, x[w1].wrapping_add(K2), 5);
        c = step(g, c, d, a, b, x[w2].wrapping_add(K2), 9);
        b = step(g, b, c, d, a, x[w3].wrapping_add(K2), 13);
    }
    // Round 3: H, words 3 7 2 6 1 5 0 4, shifts 3 9 11 15.
    for &[w0, w1, w2, w3] in &[[3usize, 7, 2, 6], [1, 5, 0, 4]] {
        a = step(h, a, b, c, d, x[w0].wrapping_add(K3), 3);
        d = step(h, d, a, b, c, x[w1].wrapping_add(K3), 9);
        c = step(h, c, d, a, b, x[w2].wrapping_add(K3), 11);
        b = step(h, b, c, d, a, x[w3].wrapping_add(K3), 15);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_their_octal_form() {
        assert_eq!(K2, 0o13240474631);
        assert_eq!(K3, 0o15666365641);
    }

    #[test]
    fn low_bit_is_clear_and_hash_is_stable() {
        let hs = DirHasher::new(&[7u8; 16], true);
        for n in ["a", "file-00001", &"x".repeat(255)] {
            let h1 = hs.hash(n.as_bytes());
            assert_eq!(h1.major & 1, 0);
            assert_eq!(h1, hs.hash(n.as_bytes()));
        }
    }

    #[test]
    fn signedness_matters_only_for_high_bytes() {
        let s = DirHasher::new(&[1u8; 16], true);
        let u = DirHasher::new(&[1u8; 16], false);
        assert_eq!(s.hash(b"plain"), u.hash(b"plain"));
        assert_ne!(s.hash("é".as_bytes()), u.hash("é".as_bytes()));
    }
}
