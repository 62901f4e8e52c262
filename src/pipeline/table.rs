//! Step 6: the partition table, written last so an image is bootable only
//! once complete (on a device, after step 7's zeros: see
//! [`super::target::Opened::write_table`]). p3 grows to the new data
//! filesystem; the disk id, p1 and p2 are the base's.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::BuildError;
use crate::partition::{Mbr, SECTOR};

/// The MBR of the copied base (`file`, step 3's copy; `name` for messages).
pub fn read_base(file: &File, name: &Path) -> Result<Mbr, BuildError> {
    let mut sector = [0u8; 512]; // one sector: the MBR
    file.read_exact_at(&mut sector, 0)
        .map_err(|source| BuildError::OutputIo {
            path: name.to_path_buf(),
            what: "reading the copied base's partition table at byte 0".into(),
            source,
        })?;
    Ok(Mbr::parse(&sector)?)
}

/// The MBR with p3 grown to `fs_size`.
pub fn final_mbr(mut mbr: Mbr, fs_size: u64) -> Result<[u8; 512], BuildError> {
    mbr.set_sectors(3, fs_size / SECTOR)?;
    Ok(mbr.to_bytes())
}
