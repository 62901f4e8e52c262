//! A reader that lets the tar walker decode only what the member at hand
//! can need: its declared data plus [`HEADROOM`] for the next headers.
//!
//! The `tar` crate reads GNU long names/links and PAX records whole into
//! memory and skips the data of members we don't write (junk, directories
//! with a size) by decoding it. Without a bound, a few MiB of gzip could
//! hold a 20 GiB "long name" (memory) or skipped member (CPU). The walker
//! re-arms the allowance as each header arrives.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

/// Decoded bytes allowed beyond a member's declared data: 1 MiB, for the
/// next header blocks, PAX records and GNU long names (Linux paths are
/// at most 4 KiB; real PAX records a few hundred bytes).
pub const HEADROOM: u64 = 1 << 20;

/// The shared counter: the walker sets it, the reader spends it.
#[derive(Debug, Clone)]
pub struct Allowance(Rc<Cell<u64>>);

impl Allowance {
    /// Allow `n` bytes.
    pub fn new(n: u64) -> Self {
        Self(Rc::new(Cell::new(n)))
    }

    /// Allow `n` more bytes from now on (replaces what was left).
    pub fn set(&self, n: u64) {
        self.0.set(n);
    }
}

/// `Read` that fails once its [`Allowance`] is spent.
#[derive(Debug)]
pub struct Allowed<R> {
    inner: R,
    left: Allowance,
    /// Bytes read so far (what [`Seek`] reports).
    pos: u64,
    /// Where skipped bytes go (made on the first skip, then reused).
    skip_buf: Vec<u8>,
}

impl<R> Allowed<R> {
    /// Wrap `inner`, spending `left`.
    pub fn new(inner: R, left: Allowance) -> Self {
        Self {
            inner,
            left,
            pos: 0,
            skip_buf: Vec::new(),
        }
    }
}

/// Forward-only "seeking": `SeekFrom::Current(n >= 0)` reads `n` bytes
/// (hashed and counted like any others) into a buffer kept for the next
/// time. The `tar` crate skips each member's padding (and unwritten data)
/// this way when the archive "seeks"; otherwise it zeroes a fresh 32 KiB
/// buffer per skip, which cost more than the rest of decoding a small
/// member. Other seeks are refused.
impl<R: Read> Seek for Allowed<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let SeekFrom::Current(n) = pos else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        let Ok(mut amt) = u64::try_from(n) else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        if self.skip_buf.is_empty() && amt > 0 {
            self.skip_buf = vec![0; 32 << 10];
        }
        let mut buf = std::mem::take(&mut self.skip_buf);
        let res = (|| {
            while amt > 0 {
                let want = usize::try_from(amt).map_or(buf.len(), |a| a.min(buf.len()));
                match self.read(buf.get_mut(..want).unwrap_or_default()) {
                    Ok(0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "unexpected EOF during skip",
                        ))
                    }
                    Ok(n) => amt = amt.saturating_sub(n as u64),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(self.pos)
        })();
        self.skip_buf = buf;
        res
    }
}

impl<R: Read> Read for Allowed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left.0.get();
        if left == 0 && !buf.is_empty() {
            return Err(std::io::Error::other(format!(
                "more than {HEADROOM} bytes of headers (long names, PAX records) or undeclared data between members"
            )));
        }
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let got = self.inner.read(&mut buf[..n])?;
        self.left.0.set(left.saturating_sub(got as u64));
        self.pos = self.pos.saturating_add(got as u64);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_allowance_and_resume_when_rearmed() {
        let data = vec![7u8; 100];
        let allow = Allowance::new(30);
        let mut r = Allowed::new(data.as_slice(), allow.clone());
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).ok(), Some(30));
        let err = r
            .read(&mut buf)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("more than"), "{err}");
        allow.set(50);
        let mut rest = Vec::new();
        assert!(r.read_to_end(&mut rest).is_err());
        assert_eq!(rest.len(), 50);
    }

    #[test]
    fn seeking_forward_reads_through_the_allowance() {
        let data: Vec<u8> = (0..100u8).collect();
        let allow = Allowance::new(60);
        let mut r = Allowed::new(data.as_slice(), allow.clone());
        assert_eq!(r.seek(SeekFrom::Current(10)).ok(), Some(10));
        let mut b = [0u8; 5];
        r.read_exact(&mut b).expect("allowed");
        assert_eq!(b, [10, 11, 12, 13, 14]);
        assert_eq!(r.stream_position().ok(), Some(15));
        assert!(r.seek(SeekFrom::Current(-1)).is_err(), "backwards");
        assert!(r.seek(SeekFrom::Start(0)).is_err());
        assert!(r.seek(SeekFrom::End(0)).is_err());
        let err = r.seek(SeekFrom::Current(50)).err().map(|e| e.to_string());
        assert!(
            err.unwrap_or_default().contains("more than"),
            "allowance spent"
        );
        allow.set(1000);
        let eof = r.seek(SeekFrom::Current(1000)).err().map(|e| e.kind());
        assert_eq!(eof, Some(std::io::ErrorKind::UnexpectedEof));
    }
}
