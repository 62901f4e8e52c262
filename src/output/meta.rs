//! `OUTPUT.json`: the fields of an rpi-imager os-list entry that describe
//! the download, from the output pass.

use serde::Serialize;

use super::pass::PassResult;

/// rpi-imager's os-list fields for the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsListEntry {
    /// Raw image bytes.
    pub extract_size: u64,
    /// sha256 of the raw image.
    pub extract_sha256: String,
    /// Bytes of the file to download (compressed or raw).
    pub image_download_size: u64,
    /// Its sha256.
    pub image_download_sha256: String,
}

impl OsListEntry {
    /// The entry, when the pass hashed both the image and the download
    /// file.
    pub fn from_pass(p: &PassResult) -> Option<Self> {
        Some(Self {
            extract_size: p.extract_size,
            extract_sha256: p.extract_sha256.clone()?,
            image_download_size: p.download_size,
            image_download_sha256: p.download_sha256.clone()?,
        })
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
