//! The output pass: one sequential read of the finished raw image, fanned
//! out to consumers that each run on their own thread behind a bounded
//! channel (docs/design.md "Output stage"). Holes are not read:
//! `SEEK_DATA`/`SEEK_HOLE` find them and a shared chunk of zeros stands
//! in.
//!
//! ```text
//! raw image ─► reader ─┬─► image sha256          (extract_sha256)
//!                      ├─► bmap range hashes
//!                      └─► encoder (zstd/xz) ─► download stream ─┬─► OUTPUT (.zst/.xz)
//!                                                                ├─► its sha256
//!                                                                └─► torrent pieces, upload…
//! ```
//!
//! For a raw OUTPUT the raw image is the download file: the download
//! stream's consumers (the torrent's pieces, an upload) hang off the
//! reader, and its sha256 is the image's. Memory is a few 1 MiB chunks
//! per stream, whatever the image size ([`super::chunk`]).

use std::fs::File;
use std::path::Path;

use super::bmap::BmapRange;
use super::chunk::{first_cause, join_all, Fanout, Wired};
use super::digest::Sha256Sink;
use super::encode::{Compression, EncoderSink};
use super::error::PassError;
use super::feed::Feed;
use super::file_out::FileOut;
use super::range_hash::RangeHashes;
use super::ranges::RangeSet;
use super::sink::DownloadSink;

/// Compressing into OUTPUT.
pub struct Compress<'a> {
    /// The compressed OUTPUT (empty).
    pub file: &'a File,
    /// Its name in errors.
    pub path: &'a Path,
    /// How.
    pub how: Compression,
    /// Encoder threads.
    pub threads: u32,
}

/// What the pass reads and computes.
pub struct Pass<'a> {
    /// The finished raw image.
    pub raw: &'a File,
    /// Its name in errors.
    pub raw_path: &'a Path,
    /// Its length.
    pub len: u64,
    /// Hash the raw image (`extract_sha256`).
    pub image_sha256: bool,
    /// Hash each range of this map (byte ranges, cut to whole 4 KiB
    /// blocks and the image's end): the bmap's.
    pub map: Option<&'a RangeSet>,
    /// Compress the image into a file: the download file.
    pub compress: Option<Compress<'a>>,
    /// Hash the download file (`image_download_sha256`; for a raw OUTPUT,
    /// the image's sha256).
    pub download_sha256: bool,
    /// The download file's other consumers (the torrent's pieces, an
    /// upload), fed in order as it is written.
    pub sinks: Vec<&'a mut dyn DownloadSink>,
    /// The raw image's other consumers (the files' sha256 of a recorded
    /// build), fed in order as it is read.
    pub raw_sinks: Vec<&'a mut dyn DownloadSink>,
}

/// What the pass measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassResult {
    /// Raw image size.
    pub extract_size: u64,
    /// sha256 of the raw image, hex, when asked.
    pub extract_sha256: Option<String>,
    /// Size of the file to download (the compressed one, or the raw one).
    pub download_size: u64,
    /// Its sha256, hex, when asked.
    pub download_sha256: Option<String>,
    /// One hash per range of the map, when there was one.
    pub ranges: Vec<BmapRange>,
}

/// Read the raw image once, in order, and feed every consumer `p` asks
/// for. `progress` gets the bytes of each chunk read (holes count: they
/// are sent as zeros). With nothing to compute, nothing is read.
pub fn run_pass(p: Pass<'_>, progress: &dyn Fn(u64)) -> Result<PassResult, PassError> {
    let Pass {
        raw,
        raw_path,
        len,
        image_sha256,
        map,
        compress,
        download_sha256,
        sinks,
        raw_sinks,
    } = p;
    let raw_download = compress.is_none();
    let mut image_sha = (image_sha256 || (raw_download && download_sha256))
        .then(|| Sha256Sink::new("the image's sha256"));
    let mut ranges = map.map(|m| RangeHashes::new(m, len));
    if image_sha.is_none()
        && ranges.is_none()
        && raw_download
        && sinks.is_empty()
        && raw_sinks.is_empty()
    {
        return Ok(PassResult {
            extract_size: len,
            extract_sha256: None,
            download_size: len,
            download_sha256: None,
            ranges: Vec::new(),
        });
    }
    let read_err = |offset, source| PassError::Read {
        path: raw_path.to_path_buf(),
        offset,
        source,
    };
    let regions = crate::os::data_regions(raw, len).map_err(|e| read_err(0, e))?;

    let mut download_sha =
        (!raw_download && download_sha256).then(|| Sha256Sink::new("the download file's sha256"));
    let mut file_out = compress
        .as_ref()
        .map(|c| FileOut::new(c.file, c.path.to_path_buf()));
    let mut download: Vec<&mut dyn DownloadSink> = Vec::new();
    if let Some(f) = file_out.as_mut() {
        download.push(f);
    }
    if let Some(d) = download_sha.as_mut() {
        download.push(d);
    }
    download.extend(sinks);

    // Wiring: the raw image's consumers, then the download file's (on the
    // encoder's output, or on the reader's for a raw OUTPUT).
    let mut raw_fan = Fanout::new();
    let mut raw_wired: Vec<Wired<'_>> = Vec::new();
    let mut download_wired: Vec<Wired<'_>> = Vec::new();
    let mut encoder = None;
    match &compress {
        Some(c) => {
            let mut fan = Fanout::new();
            download_wired.extend(download.into_iter().map(|d| fan.connect(d)));
            let e =
                EncoderSink::new(c.how, c.threads, len, fan).map_err(|source| PassError::Sink {
                    sink: format!("starting the encoder for {}", c.path.display()),
                    offset: 0,
                    source,
                })?;
            raw_wired.push(raw_fan.connect(encoder.insert(e)));
        }
        None => download_wired.extend(download.into_iter().map(|d| raw_fan.connect(d))),
    }
    if let Some(h) = image_sha.as_mut() {
        raw_wired.push(raw_fan.connect(h));
    }
    if let Some(r) = ranges.as_mut() {
        raw_wired.push(raw_fan.connect(r));
    }
    raw_wired.extend(raw_sinks.into_iter().map(|r| raw_fan.connect(r)));

    drive(
        Wiring {
            raw_fan,
            raw: raw_wired,
            download: download_wired,
        },
        |fan| read_all(raw, raw_path, len, &regions, fan, progress),
    )?;

    let extract_sha256 = image_sha.and_then(|h| h.result()).map(|(_, h)| h);
    let (download_size, download_sha256) = match &encoder {
        Some(e) => (
            e.compressed_len().unwrap_or(0),
            download_sha.and_then(|h| h.result()).map(|(_, h)| h),
        ),
        None => (len, extract_sha256.clone().filter(|_| download_sha256)),
    };
    Ok(PassResult {
        extract_size: len,
        extract_sha256,
        download_size,
        download_sha256,
        ranges: ranges.map(RangeHashes::into_ranges).unwrap_or_default(),
    })
}

/// The consumers of both streams, connected, their threads not started.
struct Wiring<'e> {
    raw_fan: Fanout,
    raw: Vec<Wired<'e>>,
    download: Vec<Wired<'e>>,
}

/// Start every consumer's thread, run `read` (the producer of the raw
/// stream) on this one, wait for them all: the pass's first error that is
/// a cause, not a consequence.
fn drive(
    w: Wiring<'_>,
    read: impl FnOnce(Fanout) -> Result<(), PassError>,
) -> Result<(), PassError> {
    std::thread::scope(|s| {
        // Upstream first: a download consumer's thread waits for the
        // encoder, which must exist to end it.
        let mut raw_threads = Vec::new();
        let mut download_threads = Vec::new();
        let mut started = Ok(());
        for c in w.raw {
            match c.spawn(s) {
                Ok(t) => raw_threads.push(t),
                Err(e) => started = Err(e),
            }
        }
        if started.is_ok() {
            for c in w.download {
                match c.spawn(s) {
                    Ok(t) => download_threads.push(t),
                    Err(e) => started = Err(e),
                }
            }
        }
        let read = match started {
            Ok(()) => read(w.raw_fan),
            Err(e) => {
                // Ends the consumers that did start.
                drop(w.raw_fan);
                Err(e)
            }
        };
        // The download file's errors first: an encoder or a reader that
        // stopped because a consumer failed reports a consequence.
        first_cause([join_all(download_threads), join_all(raw_threads), read])
    })
}

/// The reader: data regions read in chunks, holes sent as zeros, then the
/// end of the stream. On an error `fan` drops without its end, which
/// tells every consumer the stream failed.
fn read_all(
    raw: &File,
    path: &Path,
    len: u64,
    regions: &[(u64, u64)],
    fan: Fanout,
    progress: &dyn Fn(u64),
) -> Result<(), PassError> {
    let mut feed = Feed::new(fan, progress);
    if raw.metadata().is_ok_and(|m| m.is_file()) {
        // SAFETY: the pass's raw image is finished: nothing writes to or
        // truncates it until the pass returns, and `drive` joins every
        // consumer, dropping the last chunk, before it does. (The build
        // made it, an unnamed file or its own; only the `fsync` of a raw
        // OUTPUT runs beside this, which changes no byte.)
        #[allow(unsafe_code)]
        unsafe {
            feed.map_regions(raw, path, len, regions)?;
        }
    } else {
        // A device: read (an I/O error is then an error, not a signal).
        feed.copy_regions(raw, path, len, regions)?;
    }
    feed.end().map(|_| ())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test patterns of small numbers
mod tests {
    use super::*;
    use crate::output::chunk::CHUNK;
    use crate::output::pieces::Pieces;
    use sha1::Digest as _;
    use sha2::Sha256;
    use std::os::unix::fs::FileExt;

    /// A sparse file: data at 0, a hole, data across a chunk boundary,
    /// a hole at the end.
    fn image() -> (tempfile::NamedTempFile, Vec<u8>) {
        let f = tempfile::NamedTempFile::new().expect("tempfile");
        let len = 5 * CHUNK + 12_345;
        let mut data = vec![0u8; len];
        for (i, b) in data[..70_000].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        let mid = 2 * CHUNK - 5000;
        for (i, b) in data[mid..mid + 9000].iter_mut().enumerate() {
            *b = (i % 13) as u8 + 7;
        }
        f.as_file().write_all_at(&data[..70_000], 0).expect("write");
        f.as_file()
            .write_all_at(&data[mid..mid + 9000], mid as u64)
            .expect("write");
        f.as_file().set_len(len as u64).expect("length");
        (f, data)
    }

    fn hex256(d: &[u8]) -> String {
        crate::io::hex(&Sha256::digest(d))
    }

    /// Fails at its first write.
    struct Broken(u32);

    impl DownloadSink for Broken {
        fn name(&self) -> String {
            "the broken sink".into()
        }
        fn write(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
            self.0 += 1;
            Err(std::io::Error::other("disk on fire"))
        }
        fn finish(&mut self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn raw_image_hashes_pieces_and_progress() {
        let (f, data) = image();
        let mut map = RangeSet::default();
        map.insert(0, 8192);
        let mut pieces = Pieces::new(1 << 18);
        let seen = std::sync::atomic::AtomicU64::new(0);
        let progress = |n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let r = run_pass(
            Pass {
                raw: f.as_file(),
                raw_path: f.path(),
                len: data.len() as u64,
                image_sha256: true,
                map: Some(&map),
                compress: None,
                download_sha256: true,
                sinks: vec![&mut pieces],
                raw_sinks: Vec::new(),
            },
            &progress,
        )
        .expect("pass");
        assert_eq!(r.extract_sha256.as_deref(), Some(hex256(&data).as_str()));
        assert_eq!(r.download_sha256, r.extract_sha256);
        assert_eq!(r.download_size, data.len() as u64);
        assert_eq!(r.ranges.len(), 1);
        assert_eq!(r.ranges[0].sha256, hex256(&data[..8192]));
        let want: Vec<u8> = data
            .chunks(1 << 18)
            .flat_map(|p| sha1::Sha1::digest(p).to_vec())
            .collect();
        assert_eq!(pieces.result(), Some((data.len() as u64, want.as_slice())));
        assert_eq!(seen.into_inner(), data.len() as u64);
    }

    #[test]
    fn compressed_stream_feeds_the_file_its_hash_and_the_pieces() {
        let (f, data) = image();
        let out = tempfile::tempfile().expect("tempfile");
        let mut pieces = Pieces::new(16 << 10);
        let r = run_pass(
            Pass {
                raw: f.as_file(),
                raw_path: f.path(),
                len: data.len() as u64,
                image_sha256: true,
                map: None,
                compress: Some(Compress {
                    file: &out,
                    path: Path::new("out.img.zst"),
                    how: Compression::Zstd { level: 3 },
                    threads: 2,
                }),
                download_sha256: true,
                sinks: vec![&mut pieces],
                raw_sinks: Vec::new(),
            },
            &|_| {},
        )
        .expect("pass");
        let mut z = Vec::new();
        std::io::Read::read_to_end(&mut &out, &mut z).expect("read back");
        assert_eq!(r.download_size, z.len() as u64);
        assert_eq!(r.download_sha256.as_deref(), Some(hex256(&z).as_str()));
        assert_eq!(r.extract_sha256.as_deref(), Some(hex256(&data).as_str()));
        let back = zstd::stream::decode_all(z.as_slice()).expect("zstd");
        assert!(back == data, "the compressed file decodes to the image");
        let want: Vec<u8> = z
            .chunks(16 << 10)
            .flat_map(|p| sha1::Sha1::digest(p).to_vec())
            .collect();
        assert_eq!(pieces.result(), Some((z.len() as u64, want.as_slice())));
    }

    #[test]
    fn a_failing_download_sink_is_the_error_and_ends_the_pass() {
        let (f, data) = image();
        let out = tempfile::tempfile().expect("tempfile");
        for compress in [false, true] {
            let mut broken = Broken(0);
            let e = run_pass(
                Pass {
                    raw: f.as_file(),
                    raw_path: f.path(),
                    len: data.len() as u64,
                    image_sha256: true,
                    map: None,
                    compress: compress.then(|| Compress {
                        file: &out,
                        path: Path::new("o.xz"),
                        how: Compression::Xz { preset: 0 },
                        threads: 1,
                    }),
                    download_sha256: false,
                    sinks: vec![&mut broken],
                    raw_sinks: Vec::new(),
                },
                &|_| {},
            )
            .expect_err("a sink failed");
            assert!(
                matches!(&e, PassError::Sink { sink, .. } if sink == "the broken sink"),
                "compress {compress}: {e}"
            );
        }
    }

    #[test]
    fn nothing_asked_reads_nothing() {
        let (f, data) = image();
        let read = std::sync::atomic::AtomicU64::new(0);
        let r = run_pass(
            Pass {
                raw: f.as_file(),
                raw_path: f.path(),
                len: data.len() as u64,
                image_sha256: false,
                map: None,
                compress: None,
                download_sha256: false,
                sinks: Vec::new(),
                raw_sinks: Vec::new(),
            },
            &|n| {
                read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
        )
        .expect("pass");
        assert_eq!(read.into_inner(), 0);
        assert_eq!((r.extract_sha256, r.download_sha256), (None, None));
    }
}
