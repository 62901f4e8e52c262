//! The docker-archive writer: what `docker save` / `skopeo copy
//! docker-archive:` write, streamed into a sink by positional writes.
//!
//! Layout (ustar, POSIX.1-1988 headers, mtime 0 so output is deterministic):
//! `<config hex>.json`, then one `<diff_id hex>.tar` per distinct layer
//! (uncompressed), then `manifest.json` and `repositories`, then the two
//! zero blocks that end a tar. A layer's header is written once its data
//! has streamed past it and its size is known.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::registry::{sha256_hex, Compression, Layer, Registry, Resolved};
use super::OciError;
use crate::fs::ext4::FileWriter;
use crate::io::{channel, hex, ChannelReader};

/// Where an archive's bytes go.
pub trait ArchiveSink: Send + Sync {
    /// Write `data` at `offset` of the archive.
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Bytes available (the reservation); writing past it is an error.
    fn capacity(&self) -> u64;
}

impl ArchiveSink for FileWriter {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        FileWriter::write_at(self, offset, data).map_err(std::io::Error::other)
    }
    fn capacity(&self) -> u64 {
        self.size()
    }
}

/// Writes nothing: for measuring an archive (`oci-sizes`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingSink;

impl ArchiveSink for CountingSink {
    fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn capacity(&self) -> u64 {
        u64::MAX
    }
}

/// Sizes of a written archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSizes {
    /// Bytes of the docker-archive tar (`filesize`).
    pub filesize: u64,
    /// Sum of regular-file sizes once the layers are extracted in order,
    /// whiteouts applied (`fullsize`); `None` when not measured.
    pub fullsize: Option<u64>,
}

/// Tar block.
const BLOCK: u64 = 512;
/// Layer bytes are decoded and written in 1 MiB batches (the download batch).
const WRITE_BATCH: usize = crate::fetch::BATCH;

/// ustar's `name` field (POSIX.1-1988): 100 bytes. Our members' names are
/// at most 69 (64 hex digits and `.json`), so `prefix` is never needed.
const NAME_MAX: usize = 100;

/// A member's tar header could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The name does not fit ustar's `name` field.
    #[error("tar member name {name:?} is longer than {NAME_MAX} bytes")]
    NameTooLong {
        /// The member's name.
        name: String,
    },
    /// The `tar` crate refused a field.
    #[error("tar member {name:?}: {source}")]
    Field {
        /// The member's name.
        name: String,
        /// What `tar` said.
        source: std::io::Error,
    },
}

/// A ustar header for a regular file (`0644`, uid/gid 0, mtime 0), by the
/// `tar` crate. Sizes of 8 GiB and more use the GNU base-256 encoding.
///
/// One field is re-encoded: `tar` writes `chksum` as 7 octal digits and a
/// NUL, where GNU tar and Go's `archive/tar` (`docker save`) write 6
/// digits, a NUL and a space (the same value). Our archives always had
/// the latter; keeping it keeps their bytes (and `filesize`s) unchanged.
fn header(name: &str, size: u64) -> Result<[u8; 512], HeaderError> {
    if name.len() > NAME_MAX {
        return Err(HeaderError::NameTooLong { name: name.into() });
    }
    let field = |source| HeaderError::Field {
        name: name.into(),
        source,
    };
    // Magic `ustar\0`, version `00`, mtime 0.
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(field)?;
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let sum = h.cksum().map_err(field)?;
    // At most 512 × 255 = 0o377000: six digits.
    h.as_old_mut()
        .cksum
        .copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(*h.as_bytes())
}

fn pad(size: u64) -> u64 {
    size.next_multiple_of(BLOCK)
}

/// Positional writer with a bound.
struct Out<'a> {
    sink: &'a dyn ArchiveSink,
    image: &'a str,
}

impl Out<'_> {
    fn put(&self, offset: u64, data: &[u8]) -> Result<(), OciError> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.sink.capacity() {
            return Err(OciError::TooBig {
                image: self.image.to_string(),
                reserved: self.sink.capacity(),
            });
        }
        self.sink
            .write_at(offset, data)
            .map_err(|e| OciError::Write {
                image: self.image.to_string(),
                message: e.to_string(),
            })
    }

    /// A whole member at `offset`; returns the offset after it.
    fn member(&self, offset: u64, name: &str, data: &[u8]) -> Result<u64, OciError> {
        let h = header(name, data.len() as u64).map_err(|source| OciError::Header {
            image: self.image.to_string(),
            source,
        })?;
        self.put(offset, &h)?;
        self.put(offset + BLOCK, data)?;
        let end = offset + BLOCK + data.len() as u64;
        let padded = offset + BLOCK + pad(data.len() as u64);
        self.put(end, &vec![0u8; usize::try_from(padded - end).unwrap_or(0)])?;
        Ok(padded)
    }
}

/// Hashes the uncompressed layer and writes it at `base + offset`, in
/// `WRITE_BATCH` batches, as it is read.
struct Tee<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: Sha256,
    sink: Arc<dyn ArchiveSink>,
    base: u64,
    written: u64,
    pending: Vec<u8>,
}

impl Tee<'_> {
    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.base + self.written;
        let end = at + self.pending.len() as u64;
        if end > self.sink.capacity() {
            return Err(std::io::Error::other(TooBigMarker));
        }
        self.sink.write_at(at, &self.pending)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// The reservation was exceeded (turned into [`OciError::TooBig`]).
#[derive(Debug)]
struct TooBigMarker;

impl std::fmt::Display for TooBigMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive exceeds its reservation")
    }
}

impl std::error::Error for TooBigMarker {}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(n)
    }
}

/// Regular files of the extracted image so far: path → size.
type Files = BTreeMap<String, u64>;

fn remove_tree(files: &mut Files, path: &str) {
    files.remove(path);
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    files.retain(|k, _| !k.starts_with(&prefix));
}

/// Apply one layer member to `files` (OCI whiteouts: `.wh.NAME` deletes
/// NAME, `.wh..wh..opq` empties its directory).
fn apply_member(files: &mut Files, path: &str, regular: Option<u64>) {
    let path = path.trim_start_matches("./").trim_matches('/');
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    if base == ".wh..wh..opq" {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        files.retain(|k, _| !k.starts_with(&prefix));
    } else if let Some(target) = base.strip_prefix(".wh.") {
        let target = if dir.is_empty() {
            target.to_string()
        } else {
            format!("{dir}/{target}")
        };
        remove_tree(files, &target);
    } else {
        match regular {
            Some(size) => {
                files.insert(path.to_string(), size);
            }
            None => {
                files.remove(path);
            }
        }
    }
}

/// Decode one layer from `rx` into `sink` at `base`; returns its size, its
/// diff_id and (when counting) the updated file map.
fn decode_layer(
    mut reader: ChannelReader,
    compression: Compression,
    sink: Arc<dyn ArchiveSink>,
    base: u64,
    files: Option<Files>,
) -> Result<(u64, String, Option<Files>), std::io::Error> {
    let result = decode_from(&mut reader, compression, sink, base, files);
    if result.is_ok() {
        // Drain, so the download never blocks on a decoder that stopped
        // early (bytes after a zstd frame). On error, dropping the channel
        // stops the download at once.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }
    result
}

fn decode_from(
    reader: &mut ChannelReader,
    compression: Compression,
    sink: Arc<dyn ArchiveSink>,
    base: u64,
    files: Option<Files>,
) -> Result<(u64, String, Option<Files>), std::io::Error> {
    let inner: Box<dyn Read + Send + '_> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(crate::io::zstd(std::io::BufReader::with_capacity(
            WRITE_BATCH,
            reader,
        ))?),
    };
    let mut tee = Tee {
        inner,
        hasher: Sha256::new(),
        sink,
        base,
        written: 0,
        pending: Vec::with_capacity(WRITE_BATCH),
    };
    let files = match files {
        Some(mut files) => {
            // Counting is best effort: layer bytes are verified by their
            // diff_id, not by parsing, and real layers (umoci's, for one)
            // may end without the tar's padding or zero blocks.
            let mut ar = tar::Archive::new(&mut tee);
            if let Ok(entries) = ar.entries() {
                for entry in entries {
                    let Ok(entry) = entry else { break };
                    let Ok(path) = entry.path() else { continue };
                    let path = path.to_string_lossy().into_owned();
                    let regular = entry.header().entry_type().is_file().then(|| entry.size());
                    apply_member(&mut files, &path, regular);
                }
            }
            Some(files)
        }
        None => None,
    };
    // The rest (or everything, when not counting), straight through.
    let mut buf = vec![0u8; WRITE_BATCH];
    while tee.read(&mut buf)? > 0 {}
    tee.flush()?;
    let diff_id = format!("sha256:{}", hex(&tee.hasher.finalize()));
    Ok((tee.written, diff_id, files))
}

/// Whether [`write_archive`] measures `fullsize` (the extracted files'
/// bytes, for `oci-sizes`): it costs a map of the layers' paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fullsize {
    /// Measure it.
    Measure,
    /// Don't (a build: the config declares it).
    Skip,
}

/// Pull `img` and write its docker-archive into `sink`; layers one after
/// the other (each is decoded on its own thread while it downloads).
pub async fn write_archive(
    registry: &Registry,
    img: &Resolved,
    sink: Arc<dyn ArchiveSink>,
    fullsize: Fullsize,
) -> Result<ArchiveSizes, OciError> {
    let image = img.name();
    let out = Out {
        sink: sink.as_ref(),
        image: &image,
    };
    let config_name = format!("{}.json", sha256_hex(&image, &img.config_digest)?);
    let mut pos = out.member(0, &config_name, &img.config)?;
    let mut files = (fullsize == Fullsize::Measure).then(Files::new);
    let mut names: Vec<String> = Vec::new();
    for layer in &img.layers {
        let name = format!("{}.tar", sha256_hex(&image, &layer.diff_id)?);
        if names.contains(&name) {
            // The same layer again: docker-archive references one file.
            names.push(name);
            continue;
        }
        // A fresh token when the cached one expired (Docker Hub's last
        // 5 minutes; a big image's layers take longer).
        registry.authenticate(img).await?;
        let (size, f) = pull_layer(registry, img, layer, sink.clone(), pos + BLOCK, files).await?;
        files = f;
        let h = header(&name, size).map_err(|source| OciError::Header {
            image: image.clone(),
            source,
        })?;
        out.put(pos, &h)?;
        let end = pos + BLOCK + size;
        let padded = pos + BLOCK + pad(size);
        out.put(end, &vec![0u8; usize::try_from(padded - end).unwrap_or(0)])?;
        pos = padded;
        names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [img.reference.repo_tag()],
        "Layers": names,
    }]);
    pos = out.member(pos, "manifest.json", manifest.to_string().as_bytes())?;
    let top = names
        .last()
        .map(|n| n.trim_end_matches(".tar").to_string())
        .unwrap_or_default();
    let r = &img.reference;
    let repositories = serde_json::json!({
        format!("{}/{}/{}", r.registry, r.repository, r.name): { r.tag.clone(): top }
    });
    pos = out.member(pos, "repositories", repositories.to_string().as_bytes())?;
    // End of archive: two zero blocks.
    out.put(pos, &[0u8; 1024])?;
    pos += 1024;
    Ok(ArchiveSizes {
        filesize: pos,
        fullsize: files.map(|f| f.values().sum()),
    })
}

async fn pull_layer(
    registry: &Registry,
    img: &Resolved,
    layer: &Layer,
    sink: Arc<dyn ArchiveSink>,
    base: u64,
    files: Option<Files>,
) -> Result<(u64, Option<Files>), OciError> {
    let image = img.name();
    let (mut chan, rx) = channel("the layer decoder");
    let compression = layer.compression;
    let capacity = sink.capacity();
    let decoder = std::thread::spawn(move || decode_layer(rx, compression, sink, base, files));
    let downloaded = registry.blob(&img.reference, layer, &mut chan).await;
    drop(chan);
    let decoded = tokio::task::block_in_place(|| decoder.join()).map_err(|_| OciError::Layer {
        image: image.clone(),
        digest: layer.digest.clone(),
        message: "the decoder thread panicked".into(),
    })?;
    // A bad blob explains a failed decode: report the download first,
    // unless it failed only because the decoder had stopped.
    match (downloaded, &decoded) {
        (Err(OciError::Http(crate::fetch::HttpError::Sink { .. })), Err(_)) => {}
        (d, _) => d?,
    }
    let (size, diff_id, files) = decoded.map_err(|e| {
        if e.get_ref().is_some_and(|i| i.is::<TooBigMarker>()) {
            OciError::TooBig {
                image: image.clone(),
                reserved: capacity,
            }
        } else {
            OciError::Layer {
                image: image.clone(),
                digest: layer.digest.clone(),
                message: e.to_string(),
            }
        }
    })?;
    if !diff_id.eq_ignore_ascii_case(&layer.diff_id) {
        return Err(OciError::DigestMismatch {
            image,
            what: format!("uncompressed layer {} (diff_id)", layer.digest),
            expected: layer.diff_id.clone(),
            actual: diff_id,
        });
    }
    Ok((size, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_valid_ustar() {
        let h = header("abc.json", 1234).expect("short name");
        let mut data = h.to_vec();
        data.extend(vec![0u8; 1536 + 1024]);
        let mut ar = tar::Archive::new(&data[..]);
        let e = ar
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("ok");
        assert_eq!(e.size(), 1234);
        assert_eq!(e.path().expect("path").to_str(), Some("abc.json"));
        let big = header("x.tar", 9u64 << 30).expect("ok");
        assert_eq!(big[124], 0x80);
    }

    /// The sha256 of each header the hand-written encoder (before the
    /// `tar` crate) made, recorded from it: the bytes must not change.
    #[test]
    fn headers_are_the_bytes_the_archives_always_had() {
        let hex64 = |s: &str| s.repeat(4);
        let cases = [
            (
                "abc.json".to_string(),
                1234,
                "1c4a93fc3d1e71192dd99db2c9892774b99c86c576d35f0cc78bf095e04753c1",
            ),
            (
                format!("{}.json", hex64("0123456789abcdef")),
                0,
                "9e5a9bf6b03c347a0eabe79c541997e14162da667dc2ec4815a99031dd1d7eae",
            ),
            (
                format!("{}.tar", hex64("fedcba9876543210")),
                (8u64 << 30) - 1,
                "4d2d1022f2348849163b04ca754afb779367cb810f781c812c03400d777bcd21",
            ),
            (
                format!("{}.tar", hex64("fedcba9876543210")),
                8u64 << 30,
                "0fbb32ec32305d6dd09e136152400e088fa57f430b7ae4dc5598f980f966c16f",
            ),
            (
                "x.tar".to_string(),
                1u64 << 40,
                "430f7e7b160d2cb58283b0139e175a13a446b13e8dd8a3238078cb008c659c97",
            ),
            (
                "manifest.json".to_string(),
                171,
                "e0a07e610bdcc925ab9bb619b37fc905983e7246d330f841737584072c55ce8f",
            ),
            (
                "repositories".to_string(),
                95,
                "ceb3bd65a6c1388cb020169647682aebf73801213bb2c147a8e7910ad1328769",
            ),
            (
                "a".repeat(100),
                7,
                "dd5918f764ab1d2d3c89cc5df24054dee1346eb5f20004fd77e56197213ff0e7",
            ),
        ];
        for (name, size, want) in cases {
            let h = header(&name, size).expect("a valid member");
            assert_eq!(hex(&Sha256::digest(h)), want, "{name} ({size} bytes)");
        }
        // The checksum field as GNU tar and docker write it.
        let h = header("abc.json", 1234).expect("a valid member");
        assert_eq!(&h[148..156], b"007364\0 ");
        let e = header(&"a".repeat(101), 1).expect_err("101 bytes");
        assert!(matches!(e, HeaderError::NameTooLong { .. }), "{e}");
        assert!(e.to_string().contains("longer than 100 bytes"), "{e}");
    }

    #[test]
    fn whiteouts() {
        let mut f = Files::new();
        apply_member(&mut f, "./etc/a", Some(3));
        apply_member(&mut f, "etc/sub/b", Some(4));
        apply_member(&mut f, "usr/c", Some(5));
        apply_member(&mut f, "etc/.wh.sub", None);
        assert_eq!(f.values().sum::<u64>(), 8);
        apply_member(&mut f, "usr/.wh..wh..opq", None);
        assert_eq!(f.values().sum::<u64>(), 3);
        apply_member(&mut f, "etc/a", None); // replaced by a symlink
        assert!(f.is_empty());
    }
}
