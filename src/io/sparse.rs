//! Sparse copy of a stream into a file: all-zero 4 KiB blocks are skipped,
//! so the destination keeps holes (never write zeros we don't have to).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// Copy buffer: 1 MiB (large sequential reads and writes; a multiple of the
/// 4 KiB hole granularity).
pub const SPARSE_BUF: usize = 1 << 20;
/// Granularity of zero detection: the filesystem block size.
const BLOCK: usize = 4096;

/// What a sparse copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes read from the source.
    pub read: u64,
    /// Bytes written to the destination.
    pub written: u64,
}

/// Copy `src` into `dst` from `offset`, skipping zero blocks. The caller
/// sizes `dst` (`set_len`) so skipped tails read as zeros. `on_bytes` is
/// called with each chunk read (hashing, progress).
pub fn sparse_copy(
    src: &mut impl Read,
    dst: &File,
    offset: u64,
    mut on_bytes: impl FnMut(&[u8]),
) -> std::io::Result<CopyStats> {
    let mut buf = vec![0u8; SPARSE_BUF];
    let mut stats = CopyStats::default();
    loop {
        // Fill the buffer fully (decoders return short reads).
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(stats);
        }
        let chunk = &buf[..n];
        on_bytes(chunk);
        let base = offset + stats.read;
        let mut i = 0;
        while i < n {
            let end = (i + BLOCK).min(n);
            if chunk[i..end].iter().all(|&b| b == 0) {
                i = end;
                continue;
            }
            // Extend over consecutive non-zero blocks for one write.
            let mut j = end;
            while j < n {
                let e2 = (j + BLOCK).min(n);
                if chunk[j..e2].iter().all(|&b| b == 0) {
                    break;
                }
                j = e2;
            }
            dst.write_all_at(&chunk[i..j], base + i as u64)?;
            stats.written += (j - i) as u64;
            i = j;
        }
        stats.read += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn output_equals_input(runs in proptest::collection::vec((any::<bool>(), 1usize..20_000), 0..20)) {
            let mut data = Vec::new();
            for (zero, len) in runs {
                if zero {
                    data.extend(std::iter::repeat_n(0u8, len));
                } else {
                    data.extend((0..len).map(|i| u8::try_from(i % 251).unwrap_or(0) | 1));
                }
            }
            let tmp = tempfile::tempfile().expect("tmp");
            tmp.set_len(data.len() as u64 + 100).expect("len");
            let mut seen = 0usize;
            let st = sparse_copy(&mut data.as_slice(), &tmp, 100, |c| seen += c.len()).expect("copy");
            prop_assert_eq!(st.read, data.len() as u64);
            prop_assert_eq!(seen, data.len());
            let mut back = vec![0u8; data.len()];
            tmp.read_exact_at(&mut back, 100).expect("read");
            prop_assert!(back == data);
        }
    }

    #[test]
    fn zero_blocks_are_not_written() {
        let mut data = vec![0u8; 3 * 1024 * 1024];
        data[5000] = 1;
        let tmp = tempfile::tempfile().expect("tmp");
        tmp.set_len(data.len() as u64).expect("len");
        let st = sparse_copy(&mut data.as_slice(), &tmp, 0, |_| {}).expect("copy");
        assert_eq!(st.written, 4096);
    }
}
