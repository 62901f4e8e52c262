//! [`Sha256Sink`]: the length and sha256 of a stream of the pass: the raw
//! image's (`extract_sha256`) or the download file's
//! (`image_download_sha256`).

use sha2::{Digest, Sha256};

use super::sink::{out_of_order, DownloadSink};

/// Hashes a stream; its result once finished.
pub struct Sha256Sink {
    what: &'static str,
    sha: Sha256,
    len: u64,
    hex: Option<String>,
}

impl Sha256Sink {
    /// A hasher named `what` in errors ("the image's sha256").
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            sha: Sha256::new(),
            len: 0,
            hex: None,
        }
    }

    /// (length, lowercase hex sha256), once finished.
    pub fn result(&self) -> Option<(u64, String)> {
        self.hex.clone().map(|h| (self.len, h))
    }
}

impl DownloadSink for Sha256Sink {
    fn name(&self) -> String {
        self.what.to_string()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset != self.len {
            return Err(out_of_order(self.len, offset));
        }
        self.sha.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if len != self.len {
            return Err(out_of_order(self.len, len));
        }
        let sum = std::mem::take(&mut self.sha).finalize();
        self.hex = Some(crate::io::hex(&sum));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_it_is_given_and_refuses_gaps() {
        let mut s = Sha256Sink::new("t");
        assert!(s.result().is_none());
        s.write(0, b"ab").expect("in order");
        s.write(2, b"c").expect("in order");
        s.finish(3).expect("complete");
        assert_eq!(
            s.result(),
            Some((
                3,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            ))
        );
        let mut s = Sha256Sink::new("t");
        s.write(0, b"ab").expect("in order");
        let e = s.write(5, b"c").expect_err("a gap");
        assert!(e.to_string().contains("expected byte 2, got byte 5"), "{e}");
        assert!(s.finish(9).is_err(), "a length that is not what came");
    }
}
