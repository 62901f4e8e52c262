//! `flash`'s SOURCE: a local file or an http(s) URL, raw or compressed
//! (zstd, xz: told by their magic bytes, not their names), its decoded
//! size when it can be known before reading it, its bmap, and the one
//! read that decodes it into the fan-out ([`produce`]).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::FlashError;
use crate::cache::FillSink;
use crate::fetch::{redact, HttpError, Net};
use crate::io::{channel, drain, Check, Tee};
use crate::output::{Bmap, Feed, PassError};

/// Where the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file.
    Local(PathBuf),
    /// An http(s) URL.
    Http(String),
}

/// How it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// The raw image.
    Raw,
    /// zstd (one or more frames).
    Zstd,
    /// xz (one or more streams).
    Xz,
}

/// The image to flash.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where.
    pub location: Location,
    /// How it is stored.
    pub coding: Coding,
    /// Its decoded size, when known before reading: a raw file's or
    /// URL's length, a zstd frame header's content size.
    pub size: Option<u64>,
    /// A URL's copy from the download cache (a verified blob): read
    /// instead of the network.
    pub blob: Option<Arc<File>>,
}

impl Source {
    /// The local file to read (a path's, or a cached URL's blob) and the
    /// name for its errors; `None` for a URL read from the network.
    pub fn local_file(&self) -> std::io::Result<Option<(Arc<File>, PathBuf)>> {
        match (&self.blob, &self.location) {
            (Some(b), _) => Ok(Some((b.clone(), self.location.path()))),
            (None, Location::Local(p)) => Ok(Some((Arc::new(File::open(p)?), p.clone()))),
            (None, Location::Http(_)) => Ok(None),
        }
    }
}

/// Bytes of a source read to tell its coding: a zstd frame header is at
/// most 18 bytes (RFC 8878 §3.1.1.1), xz's magic 6.
const SNIFF: usize = 18;
/// Largest bmap read: 64 MiB (a bmap lists a handful of ranges per ext4
/// block group, ~100 bytes each: a 1 TB image's is a few MB).
const MAX_BMAP: usize = 64 << 20;

impl Location {
    /// As the user named it (a URL without its credentials).
    pub fn name(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Http(u) => redact(u),
        }
    }

    /// A path for messages and errors.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.name())
    }
}

/// `text` as a location: an http(s) URL, else a path.
pub fn locate(text: &str) -> Location {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Location::Http(text.to_string())
    } else {
        Location::Local(PathBuf::from(text))
    }
}

/// The coding told by the first bytes, and a zstd frame's content size.
fn sniff(prefix: &[u8]) -> (Coding, Option<u64>) {
    if prefix.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        let size = zstd::zstd_safe::get_frame_content_size(prefix)
            .ok()
            .flatten();
        (Coding::Zstd, size)
    } else if prefix.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        (Coding::Xz, None)
    } else {
        (Coding::Raw, None)
    }
}

fn source_err(name: &str, source: std::io::Error) -> FlashError {
    FlashError::Source {
        source_name: name.to_string(),
        source,
    }
}

/// Open `location` far enough to know its coding and, when it can be
/// known, its decoded size. A URL is asked for its first bytes (and a
/// raw one for its length), unless `blob` (its cached copy) is read
/// instead.
pub fn inspect(
    location: Location,
    net: Option<&Net>,
    blob: Option<Arc<File>>,
) -> Result<Source, FlashError> {
    let name = location.name();
    let local = match (&blob, &location) {
        (Some(b), _) => Some(b.clone()),
        (None, Location::Local(path)) => Some(Arc::new(
            File::open(path).map_err(|e| source_err(&name, e))?,
        )),
        (None, Location::Http(_)) => None,
    };
    let (coding, size) = match (&local, &location) {
        (Some(f), _) => {
            let len = f.metadata().map_err(|e| source_err(&name, e))?.len();
            let mut prefix = [0u8; SNIFF];
            let mut n = 0;
            while n < SNIFF {
                match f.read_at(&mut prefix[n..], n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(source_err(&name, e)),
                }
            }
            let (coding, size) = sniff(&prefix[..n]);
            (
                coding,
                if coding == Coding::Raw {
                    Some(len)
                } else {
                    size
                },
            )
        }
        (None, Location::Http(url)) => {
            let net = net.ok_or_else(|| FlashError::Internal("no network client".into()))?;
            let prefix = net.block_on(net.http.get_prefix(url, SNIFF))?;
            let (coding, size) = sniff(&prefix);
            let size = match coding {
                Coding::Raw => net.block_on(net.http.probe(url))?.size,
                _ => size,
            };
            (coding, size)
        }
        (None, Location::Local(_)) => return Err(FlashError::Internal("unopened source".into())),
    };
    Ok(Source {
        location,
        coding,
        size,
        blob,
    })
}

/// Where a bmap of `name` may be, in order: `NAME.bmap`, then for a
/// compressed name `NAME` without `.zst`/`.xz` + `.bmap` (bmaptool looks
/// at both).
fn bmap_candidates(name: &str) -> Vec<String> {
    let mut c = vec![format!("{name}.bmap")];
    for suffix in [".zst", ".xz"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            c.push(format!("{stem}.bmap"));
        }
    }
    c
}

/// The bmap: `given`, else one beside the source when there is one.
pub fn find_bmap(
    src: &Source,
    given: Option<&Path>,
    net: Option<&Net>,
) -> Result<Option<(PathBuf, Bmap)>, FlashError> {
    let parse = |path: PathBuf, text: &str| -> Result<Option<(PathBuf, Bmap)>, FlashError> {
        let bmap = Bmap::parse(&path, text)?;
        Ok(Some((path, bmap)))
    };
    if let Some(p) = given {
        let text = std::fs::read_to_string(p).map_err(|e| FlashError::Source {
            source_name: format!("--bmap {}", p.display()),
            source: e,
        })?;
        return parse(p.to_path_buf(), &text);
    }
    match &src.location {
        Location::Local(path) => {
            let Some(s) = path.to_str() else {
                return Ok(None);
            };
            for c in bmap_candidates(s) {
                let p = PathBuf::from(c);
                if p.is_file() {
                    let text = std::fs::read_to_string(&p).map_err(|e| FlashError::Source {
                        source_name: p.display().to_string(),
                        source: e,
                    })?;
                    return parse(p, &text);
                }
            }
            Ok(None)
        }
        Location::Http(url) => {
            let net = net.ok_or_else(|| FlashError::Internal("no network client".into()))?;
            for c in bmap_candidates(url) {
                match net.block_on(net.http.get_small(&c, MAX_BMAP)) {
                    Ok(body) => {
                        let text = String::from_utf8_lossy(&body);
                        return parse(PathBuf::from(redact(&c)), &text);
                    }
                    Err(HttpError::Status { status: 404, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(None)
        }
    }
}

/// The data regions of a local raw source (a file, or a cached URL's
/// blob; `None` for any other): its holes are not read, and without a
/// bmap not written.
pub fn local_regions(src: &Source) -> Result<Option<Vec<(u64, u64)>>, FlashError> {
    let (Coding::Raw, Some(len)) = (src.coding, src.size) else {
        return Ok(None);
    };
    let name = src.location.name();
    let Some((f, _)) = src.local_file().map_err(|e| source_err(&name, e))? else {
        return Ok(None);
    };
    crate::os::data_regions(&f, len)
        .map(Some)
        .map_err(|e| source_err(&name, e))
}

/// Decode `src` once into `feed`: exactly `size` bytes (a source that
/// decodes to fewer or more is an error here, before the stream ends, so
/// no card gets its partition table). A download also goes to `tap` (the
/// cache's side of it, or a no-op).
pub fn produce(
    src: &Source,
    net: Option<&Net>,
    size: u64,
    feed: &mut Feed<'_>,
    tap: &mut FillSink<'_>,
) -> Result<(), PassError> {
    let path = src.location.path();
    if let Some((f, _)) = src.local_file().map_err(|e| read_err(&path, 0, e))? {
        if src.coding == Coding::Raw {
            let regions = crate::os::data_regions(&f, size).map_err(|e| read_err(&path, 0, e))?;
            return feed.copy_regions(&f, &path, size, &regions);
        }
        // From its start (a cached blob is handed over rewound).
        return decode(src.coding, &*f, &path, size, feed);
    }
    let Location::Http(url) = &src.location else {
        return Err(read_err(&path, 0, std::io::Error::other("no source")));
    };
    let net = net.ok_or_else(|| read_err(&path, 0, std::io::Error::other("no network")))?;
    let (tx, mut rx) = channel("the decoder of the image");
    std::thread::scope(|s| {
        let download = s.spawn(move || {
            let mut sink = Tee {
                first: tx,
                second: tap,
            };
            net.block_on(net.http.download(url, None, Check::default(), &mut sink))
        });
        let decoded = decode(src.coding, &mut rx, &path, size, feed);
        // The rest unread, so the download never waits on us (and the
        // cache gets the whole payload).
        let _ = drain(&mut rx);
        let fetched = download
            .join()
            .map_err(|_| read_err(&path, 0, std::io::Error::other("the download panicked")))?;
        match (fetched, decoded) {
            // The download's own error first: a decoder that saw its
            // stream end early is its consequence.
            (Err(e), _) if !crate::io::ReaderStopped::is_cause_of(&e) => {
                Err(read_err(&path, feed.position(), std::io::Error::other(e)))
            }
            (_, d) => d,
        }
    })
}

fn read_err(path: &Path, offset: u64, source: std::io::Error) -> PassError {
    PassError::Read {
        path: path.to_path_buf(),
        offset,
        source,
    }
}

/// `r` decoded as `coding` into `feed`, `size` bytes and not one more.
fn decode(
    coding: Coding,
    r: impl Read,
    path: &Path,
    size: u64,
    feed: &mut Feed<'_>,
) -> Result<(), PassError> {
    let limit = size.saturating_add(1);
    let buffered = BufReader::with_capacity(crate::io::COPY_BUF, r);
    match coding {
        Coding::Raw => feed.read_from(&mut { buffered }, path, limit)?,
        Coding::Zstd => {
            let mut d = crate::io::zstd(buffered).map_err(|e| read_err(path, 0, e))?;
            feed.read_from(&mut d, path, limit)?;
        }
        Coding::Xz => {
            let mut d = crate::io::xz(buffered).map_err(|e| read_err(path, 0, e))?;
            feed.read_from(&mut d, path, limit)?;
        }
    }
    let at = feed.position();
    if at == size {
        return Ok(());
    }
    let why = if at > size {
        format!("it decodes to more than the image's {size} bytes")
    } else {
        format!("it ends at byte {at}, before the image's {size} bytes")
    };
    Err(read_err(
        path,
        at.min(size),
        std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_are_told_by_their_magic() {
        // One-shot compression writes the content size in the frame header.
        let z = zstd::bulk::compress(&[7u8; 10_000], 3).expect("zstd");
        assert_eq!(sniff(&z[..SNIFF]), (Coding::Zstd, Some(10_000)));
        assert_eq!(sniff(&[0xFD, b'7', b'z', b'X', b'Z', 0, 1]).0, Coding::Xz);
        assert_eq!(sniff(b"\0\0\0\0 raw"), (Coding::Raw, None));
        assert_eq!(sniff(b""), (Coding::Raw, None));
        // A cut header: no size, still zstd.
        assert_eq!(sniff(&z[..5]).0, Coding::Zstd);
    }

    #[test]
    fn bmaps_are_looked_for_beside_the_source() {
        assert_eq!(bmap_candidates("a.img"), ["a.img.bmap"]);
        assert_eq!(
            bmap_candidates("https://h/x.img.zst"),
            ["https://h/x.img.zst.bmap", "https://h/x.img.bmap"]
        );
        assert_eq!(bmap_candidates("x.img.xz"), ["x.img.xz.bmap", "x.img.bmap"]);
    }

    #[test]
    fn urls_and_paths() {
        assert_eq!(locate("HTTPS://h/x"), Location::Http("HTTPS://h/x".into()));
        assert_eq!(locate("x.img"), Location::Local("x.img".into()));
        assert_eq!(locate("./http:x"), Location::Local("./http:x".into()));
    }
}
