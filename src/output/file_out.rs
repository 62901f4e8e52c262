//! [`FileOut`]: the download file's stream written into a file (the
//! compressed OUTPUT), made durable (`fsync`) when it ends.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::sink::{out_of_order, DownloadSink};

/// Positional writes into `file`, named `path` in errors.
pub struct FileOut<'a> {
    file: &'a File,
    path: PathBuf,
    at: u64,
}

impl<'a> FileOut<'a> {
    /// Writes into `file` (empty), named `path` in errors.
    pub fn new(file: &'a File, path: PathBuf) -> Self {
        Self { file, path, at: 0 }
    }
}

impl DownloadSink for FileOut<'_> {
    fn name(&self) -> String {
        format!("writing {}", self.path.display())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset != self.at {
            return Err(out_of_order(self.at, offset));
        }
        self.file.write_all_at(data, offset)?;
        self.at += data.len() as u64;
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if len != self.at {
            return Err(out_of_order(self.at, len));
        }
        self.file.set_len(len)?;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_order_and_cuts_at_the_end() {
        let f = tempfile::tempfile().expect("tempfile");
        f.write_all_at(&[9; 64], 0).expect("old bytes");
        let mut out = FileOut::new(&f, "x.zst".into());
        out.write(0, b"abc").expect("write");
        out.write(3, b"de").expect("write");
        assert!(out.write(9, b"z").is_err());
        out.finish(5).expect("finish");
        let mut got = vec![0; 5];
        f.read_exact_at(&mut got, 0).expect("read");
        assert_eq!(&got, b"abcde");
        assert_eq!(f.metadata().expect("stat").len(), 5);
        assert!(out.name().contains("x.zst"));
    }
}
