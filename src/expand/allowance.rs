//! A reader that lets the tar walker decode only what the member at hand
//! can need: its declared data plus [`HEADROOM`] for the next headers.
//!
//! The `tar` crate reads GNU long names/links and PAX records whole into
//! memory and skips the data of members we don't write (junk, directories
//! with a size) by decoding it. Without a bound, a few MiB of gzip could
//! hold a 20 GiB "long name" (memory) or skipped member (CPU). The walker
//! re-arms the allowance as each header arrives.

use std::cell::Cell;
use std::io::Read;
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
}

impl<R> Allowed<R> {
    /// Wrap `inner`, spending `left`.
    pub fn new(inner: R, left: Allowance) -> Self {
        Self { inner, left }
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
}
