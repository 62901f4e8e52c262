//! [`FileHashes`]: the sha256 of files inside the image, from the raw
//! image's stream of the output pass: a recorded build's lock (`--lock`,
//! `--sbom`, `--provenance`) needs each download's sha256, and a config
//! that declares no checksum gives the download none. When step 7 reads
//! the image anyway, the files are hashed there, on a thread of their own
//! beside the image's sha256, instead of on the download's (whose cores
//! the server and the writer use): the same bytes, read once.

use sha2::{Digest, Sha256};

use super::sink::{out_of_order, DownloadSink};

/// Where one file's bytes are in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpans {
    /// The file's name (the item's, `/data/…`), for the result.
    pub name: String,
    /// Byte ranges of the image, `(offset, len)`, in the file's order:
    /// their concatenation is the file.
    pub spans: Vec<(u64, u64)>,
}

impl FileSpans {
    /// Whether the pass can hash this file: its spans go forward through
    /// the image (the pass reads it in order) and none is empty or ends
    /// past 2^64.
    pub fn in_image_order(&self) -> bool {
        let mut at = 0u64;
        self.spans.iter().all(|&(o, n)| {
            let ok = n > 0 && o >= at;
            at = o.saturating_add(n);
            ok && o.checked_add(n).is_some()
        })
    }
}

/// One span, in image order: where it is and whose it is.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    file: usize,
}

/// The hashes of several files, each from its spans as the image passes.
pub struct FileHashes {
    names: Vec<String>,
    hashers: Vec<Sha256>,
    /// Every file's spans, sorted by offset.
    spans: Vec<Span>,
    next: usize,
    at: u64,
}

impl FileHashes {
    /// Hash `files`, each of which must be [`FileSpans::in_image_order`]
    /// and none overlapping another (a filesystem's files don't share
    /// blocks); `None` otherwise.
    pub fn new(files: Vec<FileSpans>) -> Option<Self> {
        let mut spans = Vec::new();
        let mut names = Vec::new();
        for (i, f) in files.into_iter().enumerate() {
            if !f.in_image_order() {
                return None;
            }
            spans.extend(f.spans.iter().map(|&(o, n)| Span {
                start: o,
                end: o + n,
                file: i,
            }));
            names.push(f.name);
        }
        spans.sort_by_key(|s| s.start);
        if spans.windows(2).any(|w| w[0].end > w[1].start) {
            return None;
        }
        Some(Self {
            hashers: vec![Sha256::new(); names.len()],
            names,
            spans,
            next: 0,
            at: 0,
        })
    }

    /// Each file's name with its sha256 (hex), once the pass finished.
    pub fn into_digests(self) -> Vec<(String, String)> {
        self.names
            .into_iter()
            .zip(self.hashers)
            .map(|(n, h)| (n, crate::io::hex(&h.finalize())))
            .collect()
    }
}

impl DownloadSink for FileHashes {
    fn name(&self) -> String {
        "the files' sha256".into()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset != self.at {
            return Err(out_of_order(self.at, offset));
        }
        let end = offset.saturating_add(data.len() as u64);
        self.at = end;
        while let Some(s) = self.spans.get(self.next) {
            if s.start >= end {
                break;
            }
            let (a, b) = (s.start.max(offset), s.end.min(end));
            if a < b {
                // Both within `data`: offset <= a < b <= end.
                let from = usize::try_from(a - offset).unwrap_or(data.len());
                let to = usize::try_from(b - offset).unwrap_or(data.len());
                if let Some(h) = self.hashers.get_mut(s.file) {
                    h.update(&data[from..to]);
                }
            }
            if s.end > end {
                break;
            }
            self.next += 1;
        }
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if len != self.at || self.next != self.spans.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the image ended at byte {len} with {} of {} file spans hashed",
                    self.next,
                    self.spans.len()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;
    use proptest::prelude::*;

    fn sha(data: &[u8]) -> String {
        crate::io::hex(&Sha256::digest(data))
    }

    /// Feed `image` in writes of `cut` bytes.
    fn feed(h: &mut FileHashes, image: &[u8], cut: usize) {
        let mut at = 0;
        while at < image.len() {
            let end = (at + cut.max(1)).min(image.len());
            h.write(at as u64, &image[at..end]).unwrap();
            at = end;
        }
        h.finish(image.len() as u64).unwrap();
    }

    #[test]
    fn files_in_several_spans_are_hashed_in_their_order() {
        let image: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let a = FileSpans {
            name: "/data/a".into(),
            spans: vec![(1000, 5000), (20_000, 123), (50_000, 7)],
        };
        let b = FileSpans {
            name: "/data/b".into(),
            spans: vec![(6000, 14_000), (30_000, 19_000)],
        };
        let mut h = FileHashes::new(vec![a, b]).unwrap();
        feed(&mut h, &image, 3000);
        let mut want_a = image[1000..6000].to_vec();
        want_a.extend_from_slice(&image[20_000..20_123]);
        want_a.extend_from_slice(&image[50_000..50_007]);
        let mut want_b = image[6000..20_000].to_vec();
        want_b.extend_from_slice(&image[30_000..49_000]);
        assert_eq!(
            h.into_digests(),
            vec![
                ("/data/a".to_string(), sha(&want_a)),
                ("/data/b".to_string(), sha(&want_b)),
            ]
        );
    }

    #[test]
    fn backward_or_overlapping_spans_are_refused() {
        let back = FileSpans {
            name: "x".into(),
            spans: vec![(8192, 4096), (0, 4096)],
        };
        assert!(!back.in_image_order());
        assert!(FileHashes::new(vec![back]).is_none());
        let one = FileSpans {
            name: "a".into(),
            spans: vec![(0, 4096)],
        };
        let other = FileSpans {
            name: "b".into(),
            spans: vec![(4095, 10)],
        };
        assert!(FileHashes::new(vec![one, other]).is_none());
    }

    #[test]
    fn a_short_stream_is_an_error() {
        let f = FileSpans {
            name: "a".into(),
            spans: vec![(0, 8192)],
        };
        let mut h = FileHashes::new(vec![f]).unwrap();
        h.write(0, &[0; 100]).unwrap();
        assert!(h.finish(100).is_err());
    }

    proptest! {
        /// Any split of the image into spans, handed to files in turn,
        /// any write size: each file's hash is that of its spans' bytes.
        #[test]
        fn any_layout_and_any_writes(
            cuts in proptest::collection::btree_set(1usize..20_000, 1..40),
            owners in proptest::collection::vec(0usize..4, 40),
            cut in 1usize..7000,
        ) {
            let image: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(7919) % 256) as u8).collect();
            let bounds: Vec<usize> = cuts.into_iter().collect();
            let mut files: Vec<Vec<(u64, u64)>> = vec![Vec::new(); 4];
            let mut want: Vec<Vec<u8>> = vec![Vec::new(); 4];
            // Every other piece belongs to a file; the rest is not hashed.
            for (i, w) in bounds.windows(2).enumerate() {
                if i % 2 == 1 {
                    continue;
                }
                let f = owners[i % owners.len()];
                files[f].push((w[0] as u64, (w[1] - w[0]) as u64));
                want[f].extend_from_slice(&image[w[0]..w[1]]);
            }
            let named: Vec<FileSpans> = files
                .into_iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, spans)| FileSpans { name: i.to_string(), spans })
                .collect();
            let mut h = FileHashes::new(named).unwrap();
            feed(&mut h, &image, cut);
            for (name, digest) in h.into_digests() {
                let i: usize = name.parse().unwrap();
                prop_assert_eq!(digest, sha(&want[i]));
            }
        }
    }
}
