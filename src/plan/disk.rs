//! What a build allocates on disk, counted as blocks rather than apparent
//! sizes (docs/spec.md §6): holes stay holes. Local sources are copied by
//! their data regions (`SEEK_DATA`/`SEEK_HOLE`), so a 100 GB sparse file
//! holding 1 GB of data costs 1 GB; the base image's part before the data
//! partition likewise. Downloads, inline bytes, archives' expansions and
//! the carried-over data partition count whole. Where the platform can't
//! keep holes (the portable fallbacks, [`crate::os::KEEPS_HOLES`]), the
//! image may allocate every byte of its size, and counts so.

use std::path::Path;

use super::base::{BaseInfo, BaseLocation};
use super::item::{Item, ItemSource};

/// The image's footprint on disk, for the free-space check and `--check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUse {
    /// Bytes the build allocates: the image's (its holes excluded when
    /// the platform keeps them) plus its temporary copies (remote zips).
    pub bytes: u64,
    /// Holes were counted as holes (false: the apparent size).
    pub holes: bool,
}

/// What the build of `items` on `base` (its data partition at
/// `p3_start`, the carried-over content `old_bytes`, the image
/// `image_size` bytes) allocates on disk.
pub fn disk_use(
    base: &BaseInfo,
    p3_start: u64,
    items: &[Item],
    old_bytes: u64,
    image_size: u64,
) -> DiskUse {
    let temp: u64 = items
        .iter()
        .map(|i| i.archive.as_ref().map_or(0, |a| a.temp_bytes()))
        .sum();
    if !crate::os::KEEPS_HOLES {
        return DiskUse {
            bytes: image_size.saturating_add(temp),
            holes: false,
        };
    }
    let before_p3 = base.size.min(p3_start);
    let base_bytes = match &base.location {
        BaseLocation::Local(path) if !base.xz => data_bytes(path, before_p3),
        _ => before_p3,
    };
    let content: u64 = items.iter().map(item_bytes).sum();
    DiskUse {
        bytes: base_bytes
            .saturating_add(content)
            .saturating_add(old_bytes)
            .saturating_add(temp),
        holes: true,
    }
}

/// What `item` writes into the image: a local file its data regions,
/// anything else its size.
fn item_bytes(item: &Item) -> u64 {
    match (&item.source, &item.archive) {
        (ItemSource::Local { path, .. }, None) => data_bytes(path, item.size),
        _ => item.size,
    }
}

/// Bytes of `path`'s data regions up to `len`; `len` when it can't be
/// read (the build reports that error where it copies the file).
fn data_bytes(path: &Path, len: u64) -> u64 {
    std::fs::File::open(path)
        .and_then(|f| crate::os::data_bytes(&f, len))
        .map_or(len, |n| n.min(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Mbr;

    fn base(path: &Path, size: u64) -> Result<BaseInfo, Box<dyn std::error::Error>> {
        let mut sector = [0u8; 512];
        sector[510] = 0x55;
        sector[511] = 0xAA;
        Ok(BaseInfo {
            location: BaseLocation::Local(path.to_path_buf()),
            checksum: Default::default(),
            xz: false,
            size,
            mbr: Mbr::parse(&sector)?,
            old: None,
        })
    }

    fn local(path: &Path, size: u64) -> Item {
        Item {
            key: "files[0]".into(),
            dest: "f".into(),
            size,
            source: ItemSource::Local {
                path: path.to_path_buf(),
                checksum: Default::default(),
            },
            archive: None,
            cache: None,
            spool: None,
        }
    }

    #[test]
    fn a_sparse_local_file_counts_its_data() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir()?;
        let sparse = dir.path().join("sparse");
        let f = std::fs::File::create(&sparse)?;
        f.set_len(1 << 30)?;
        f.write_all_at(&[1u8; 4096], 512 << 20)?;
        let b = dir.path().join("base");
        std::fs::File::create(&b)?.set_len(8 << 20)?;
        let items = [local(&sparse, 1 << 30), local(&dir.path().join("gone"), 77)];
        let got = disk_use(&base(&b, 8 << 20)?, 4 << 20, &items, 1000, 2 << 30);
        if crate::os::KEEPS_HOLES {
            // The sparse file's 4 KiB (a filesystem without SEEK_DATA:
            // all of it), the base's nothing, the missing file's size.
            assert!(got.holes);
            let data = crate::os::data_bytes(&f, 1 << 30)?;
            assert_eq!(got.bytes, data + crate::os::data_bytes(&f, 0)? + 77 + 1000);
            assert!(data <= 1 << 30);
        } else {
            assert_eq!(
                got,
                DiskUse {
                    bytes: 2 << 30,
                    holes: false
                }
            );
        }
        Ok(())
    }
}
