//! [`HashingReader`]: feeds what passes through to a [`StreamVerifier`].

use std::io::Read;

use super::digest::StreamVerifier;

/// Hashes what is read through it (when it has a verifier).
#[derive(Debug)]
pub struct HashingReader<'a, R> {
    inner: R,
    verifier: Option<&'a mut StreamVerifier>,
}

impl<'a, R> HashingReader<'a, R> {
    /// Read `inner`, feeding `verifier`.
    pub fn new(inner: R, verifier: Option<&'a mut StreamVerifier>) -> Self {
        Self { inner, verifier }
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(v) = self.verifier.as_deref_mut() {
            v.update(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashAlgo;

    #[test]
    fn hashes_every_byte_read() {
        // md5("hello") from coreutils' md5sum.
        let mut v = StreamVerifier::new(HashAlgo::Md5, "5d41402abc4b2a76b9719d911017c592", "t");
        let mut out = Vec::new();
        HashingReader::new(&b"hello"[..], Some(&mut v))
            .read_to_end(&mut out)
            .unwrap_or_default();
        assert_eq!(out, b"hello");
        assert!(v.finish().is_ok());
    }
}
