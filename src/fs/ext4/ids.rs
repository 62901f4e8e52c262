//! The filesystem UUID and directory hash seed: derived from the build's
//! inputs when the build is reproducible, random otherwise.

use super::params::{Ext4Params, Timestamp};

/// What a 16-byte identifier is for; each purpose derives different bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdPurpose {
    /// `s_uuid`.
    Uuid,
    /// `s_hash_seed`.
    HashSeed,
}

impl IdPurpose {
    fn tag(self) -> &'static str {
        match self {
            Self::Uuid => "uuid",
            Self::HashSeed => "hash-seed",
        }
    }
}

/// Inputs of a derived identifier.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdSource<'a> {
    /// Derive from the inputs (reproducible builds) instead of reading
    /// the OS's random source.
    pub deterministic: bool,
    /// Filesystem label.
    pub label: &'a str,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Build time.
    pub time: Timestamp,
}

impl<'a> IdSource<'a> {
    /// The inputs a builder with `params` over `size` bytes uses.
    pub fn new(params: &'a Ext4Params, size: u64) -> Self {
        Self {
            deterministic: params.deterministic,
            label: &params.label,
            size,
            time: params.time,
        }
    }

    /// 16 bytes for `purpose`, shaped as a random (version 4) UUID.
    pub fn uuid_v4(&self, purpose: IdPurpose) -> [u8; 16] {
        as_uuid_v4(self.bytes(purpose))
    }

    /// 16 bytes from the OS's random source, or derived from the inputs
    /// (always when `deterministic`, else when the random source fails).
    fn bytes(&self, purpose: IdPurpose) -> [u8; 16] {
        let mut out = [0u8; 16];
        if !self.deterministic {
            use std::io::Read;
            if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
                if f.read_exact(&mut out).is_ok() {
                    return out;
                }
            }
        }
        for (i, chunk) in out.chunks_mut(4).enumerate() {
            let mut c = crc32c::crc32c(format!("image-creator:{}:{i}:", purpose.tag()).as_bytes());
            c = crc32c::crc32c_append(c, self.label.as_bytes());
            c = crc32c::crc32c_append(c, &self.size.to_le_bytes());
            c = crc32c::crc32c_append(c, &self.time.secs.to_le_bytes());
            chunk.copy_from_slice(&c.to_le_bytes());
        }
        out
    }
}

/// Set the version (4) and variant (RFC 4122) bits.
fn as_uuid_v4(mut b: [u8; 16]) -> [u8; 16] {
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_ids_depend_on_purpose_and_inputs() {
        let src = IdSource {
            deterministic: true,
            label: "data",
            size: 1 << 30,
            time: Timestamp::from_secs(1_700_000_000),
        };
        let u = src.uuid_v4(IdPurpose::Uuid);
        assert_eq!(u, src.uuid_v4(IdPurpose::Uuid), "reproducible");
        assert_ne!(u, src.uuid_v4(IdPurpose::HashSeed));
        assert_ne!(
            u,
            IdSource {
                size: 2 << 30,
                ..src
            }
            .uuid_v4(IdPurpose::Uuid)
        );
        assert_eq!(u[6] >> 4, 4, "version 4");
        assert_eq!(u[8] >> 6, 2, "RFC 4122 variant");
    }
}
