//! The output pass: one sequential read of the finished raw image that
//! hashes it (`extract_sha256`), hashes each bmap range, and feeds the
//! compressor (whose output is counted and hashed as it is written:
//! `image_download_size`, `image_download_sha256`). Holes are not read:
//! `SEEK_DATA`/`SEEK_HOLE` find them and a shared buffer of zeros stands
//! in. Reading runs on the caller's thread, hashing on its own, the
//! encoders on their own threads (zstd's and xz's `-T`); memory is a few
//! 1 MiB chunks, whatever the image size.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::bmap::{BmapRange, BLOCK};
use super::ranges::RangeSet;

/// Chunk size of the pass.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader and the hasher.
const DEPTH: usize = 8;

/// A compressed output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (`.zst`), level 1..=19.
    Zstd {
        /// Level (3 is zstd's default).
        level: i32,
    },
    /// xz (`.xz`), preset 0..=9.
    Xz {
        /// Preset (6 is xz's default).
        preset: u32,
    },
}

impl Compression {
    /// The file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Zstd { .. } => ".zst",
            Self::Xz { .. } => ".xz",
        }
    }
}

/// What the pass measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassResult {
    /// Raw image size.
    pub extract_size: u64,
    /// sha256 of the raw image, hex.
    pub extract_sha256: String,
    /// Size of the file to download (the compressed one, or the raw one).
    pub download_size: u64,
    /// Its sha256, hex.
    pub download_sha256: String,
    /// One hash per range of the map, when there was one.
    pub ranges: Vec<BmapRange>,
}

/// Where the download file's bytes go too, in order, with their offset
/// (`--publish`'s upload).
pub type Tee<'t> = &'t mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>;

/// Counts and hashes what goes through to `inner` (and to `tee`).
struct HashWriter<'t, W: Write> {
    inner: W,
    sha: Sha256,
    n: u64,
    tee: Option<Tee<'t>>,
}

impl<W: Write> Write for HashWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        if let Some(t) = self.tee.as_mut() {
            t(self.n, &buf[..k])?;
        }
        self.sha.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One chunk of the image: `len` bytes of `data` at `offset`.
struct Chunk {
    offset: u64,
    len: usize,
    data: Arc<Vec<u8>>,
}

/// Hashes of the whole image and of each mapped range.
struct Hashes {
    /// None: the whole image is not hashed (`--no-hash`).
    whole: Option<Sha256>,
    ranges: Vec<(u64, u64)>,
    next: usize,
    current: Sha256,
    done: Vec<BmapRange>,
}

impl Hashes {
    fn feed(&mut self, offset: u64, data: &[u8]) {
        if let Some(w) = self.whole.as_mut() {
            w.update(data);
        }
        let end = offset + data.len() as u64;
        while let Some(&(rs, re)) = self.ranges.get(self.next) {
            if rs >= end {
                break;
            }
            let a = rs.max(offset);
            let b = re.min(end);
            if a < b {
                self.current.update(
                    &data[usize::try_from(a - offset).unwrap_or(0)..]
                        [..usize::try_from(b - a).unwrap_or(0)],
                );
            }
            if re <= end {
                let sum = std::mem::take(&mut self.current).finalize();
                self.done.push(BmapRange {
                    first: rs / BLOCK,
                    last: re.div_ceil(BLOCK) - 1,
                    sha256: crate::io::hex(&sum),
                });
                self.next += 1;
            } else {
                break;
            }
        }
    }
}

/// Read `src` (`len` bytes) once, in order: hash it (unless `!hash`: then
/// `extract_sha256` and `download_sha256` are empty), hash each range of
/// `map` (byte ranges, cut to whole 4 KiB blocks and the image's end), and
/// write it compressed to `out` when asked, with `threads` encoder
/// threads. `progress` gets the bytes of each chunk read. `tee` gets the
/// download file's bytes in order (the compressed stream as it is written,
/// else the raw image's chunks). With nothing to hash, compress or tee,
/// nothing is read.
#[allow(clippy::too_many_arguments)] // the fan-out of sinks replaces this list
pub fn run_pass(
    src: &File,
    len: u64,
    map: Option<&RangeSet>,
    out: Option<(&File, Compression)>,
    threads: u32,
    hash: bool,
    progress: &dyn Fn(u64),
    tee: Option<Tee<'_>>,
) -> std::io::Result<PassResult> {
    if !hash && map.is_none() && out.is_none() && tee.is_none() {
        return Ok(unread(len));
    }
    let ranges: Vec<(u64, u64)> = map
        .map(|m| m.to_blocks(BLOCK, len).iter().collect())
        .unwrap_or_default();
    let regions = crate::os::data_regions(src, len)?;
    let zeros = Arc::new(vec![0u8; CHUNK]);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Chunk>(DEPTH);
        // Buffers come back from the hasher for the next reads: no
        // allocation (and no page faults) per chunk.
        let (back_tx, back_rx) = sync_channel::<Arc<Vec<u8>>>(DEPTH + 2);
        let hasher = s.spawn(move || {
            let mut h = Hashes {
                whole: hash.then(Sha256::new),
                ranges,
                next: 0,
                current: Sha256::new(),
                done: Vec::new(),
            };
            for c in rx {
                h.feed(c.offset, &c.data[..c.len]);
                if Arc::strong_count(&c.data) == 1 {
                    let _ = back_tx.try_send(c.data);
                }
            }
            h
        });
        // The download file's bytes: the encoder's output, else the chunks.
        let (mut encoder, mut raw_tee) = match out {
            None => (None, tee),
            Some((file, how)) => (Some(encoder(file, how, len, threads, tee)?), None),
        };
        let mut send = |c: Chunk| -> std::io::Result<()> {
            if let Some(e) = encoder.as_mut() {
                e.write_all(&c.data[..c.len])?;
            }
            if let Some(t) = raw_tee.as_mut() {
                t(c.offset, &c.data[..c.len])?;
            }
            progress(c.len as u64);
            tx.send(c)
                .map_err(|_| std::io::Error::other("the hashing thread stopped"))
        };
        let mut at = 0u64;
        let holes_to =
            |at: &mut u64, to: u64, send: &mut dyn FnMut(Chunk) -> std::io::Result<()>| {
                while *at < to {
                    let n = usize::try_from((to - *at).min(CHUNK as u64)).unwrap_or(CHUNK);
                    send(Chunk {
                        offset: *at,
                        len: n,
                        data: zeros.clone(),
                    })?;
                    *at += n as u64;
                }
                Ok::<(), std::io::Error>(())
            };
        for &(rs, re) in &regions {
            let (rs, re) = (rs.max(at).min(len), re.min(len));
            holes_to(&mut at, rs, &mut send)?;
            while at < re {
                let n = usize::try_from((re - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                let mut buf = back_rx
                    .try_recv()
                    .ok()
                    .and_then(|b| Arc::try_unwrap(b).ok())
                    .unwrap_or_else(|| vec![0u8; CHUNK]);
                src.read_exact_at(&mut buf[..n], at)?;
                send(Chunk {
                    offset: at,
                    len: n,
                    data: Arc::new(buf),
                })?;
                at += n as u64;
            }
        }
        holes_to(&mut at, len, &mut send)?;
        drop(tx);
        let written = match encoder.take() {
            Some(e) => Some(e.finish()?),
            None => None,
        };
        let h = hasher
            .join()
            .map_err(|_| std::io::Error::other("the hashing thread panicked"))?;
        let extract_sha256 = h
            .whole
            .map(|w| crate::io::hex(&w.finalize()))
            .unwrap_or_default();
        let (download_size, download_sha256) = match written {
            Some((n, sum)) if hash => (n, sum),
            Some((n, _)) => (n, String::new()),
            None => (len, extract_sha256.clone()),
        };
        Ok(PassResult {
            extract_size: len,
            extract_sha256,
            download_size,
            download_sha256,
            ranges: h.done,
        })
    })
}

/// The result of a pass with nothing to do: sizes, no hashes.
fn unread(len: u64) -> PassResult {
    PassResult {
        extract_size: len,
        extract_sha256: String::new(),
        download_size: len,
        download_sha256: String::new(),
        ranges: Vec::new(),
    }
}

/// A compressing writer into `file`, finished into (bytes written, sha256).
enum Encoder<'a, 't> {
    Zstd(zstd::stream::write::Encoder<'static, HashWriter<'t, std::io::BufWriter<&'a File>>>),
    Xz(liblzma::write::XzEncoder<HashWriter<'t, std::io::BufWriter<&'a File>>>),
}

impl Encoder<'_, '_> {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Zstd(e) => e.write_all(buf),
            Self::Xz(e) => e.write_all(buf),
        }
    }

    fn finish(self) -> std::io::Result<(u64, String)> {
        let mut w = match self {
            Self::Zstd(e) => e.finish()?,
            Self::Xz(e) => e.finish()?,
        };
        w.flush()?;
        Ok((w.n, crate::io::hex(&w.sha.finalize())))
    }
}

fn encoder<'a, 't>(
    file: &'a File,
    how: Compression,
    len: u64,
    threads: u32,
    tee: Option<Tee<'t>>,
) -> std::io::Result<Encoder<'a, 't>> {
    let sink = HashWriter {
        inner: std::io::BufWriter::with_capacity(CHUNK, file),
        sha: Sha256::new(),
        n: 0,
        tee,
    };
    let threads = threads.max(1);
    Ok(match how {
        Compression::Zstd { level } => {
            let mut e = zstd::stream::write::Encoder::new(sink, level)?;
            e.multithread(threads)?;
            e.include_checksum(true)?;
            e.set_pledged_src_size(Some(len))?;
            Encoder::Zstd(e)
        }
        Compression::Xz { preset } => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .preset(preset)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(std::io::Error::other)?;
            Encoder::Xz(liblzma::write::XzEncoder::new_stream(sink, stream))
        }
    })
}
