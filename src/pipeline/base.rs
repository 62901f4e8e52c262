//! Step 3: the base image copied into the output, sparse (holes stay
//! holes), xz decoded on the way, verified against its digest.

use std::fs::File;
use std::io::Read;

use super::cache::{claim, BuildCache, ClaimSpec, Claimed, FillSink, Planned};
use super::error::BuildError;
use super::Ctx;
use crate::cache::Hit;
use crate::config::HashAlgo;
use crate::fetch::Net;
use crate::io::{
    channel, data_regions, drain, sparse_copy, xz, HashingReader, ProgressSink, SparseFileSink,
    StreamVerifier, Tee, SPARSE_BUF,
};
use crate::partition::PartitionWindow;
use crate::plan::{BaseInfo, BaseLocation, CacheUse};
use crate::progress::Reporter;

/// Copy the base into `out` (from offset 0) and give `out` its full size.
/// A remote base in the download cache (`cached`, as planned) is copied
/// from its blob; one the policy caches is downloaded into the image and
/// the cache at once. Returns the digest its check computed: the sha256
/// when the build records its inputs (else the declared algorithm's, or
/// none).
pub fn copy_base(
    out: &File,
    base: &BaseInfo,
    cached: Option<CacheUse>,
    ctx: &Ctx<'_>,
) -> Result<Option<String>, BuildError> {
    let (net, reporter, cache) = (ctx.net, ctx.reporter, ctx.cache);
    let name = base.location.name();
    reporter.item_started(&name, Some(base.size));
    let mut fill = None;
    if let (Some(cache), BaseLocation::Http(url)) = (cache, &base.location) {
        // Nothing else of the cache is held yet: waiting for the key is safe.
        let mut claimed = match cache.planned(cached) {
            Planned::Plain => None,
            Planned::Hit(hit) => Some(Claimed::Hit(hit)),
            Planned::Claim(spec) => Some(claim(cache.cache(), spec)),
        };
        if let Some(Claimed::Hit(hit)) = take_hit(&mut claimed) {
            let spec = ClaimSpec {
                key: hit.key().clone(),
                validators: hit.validators().clone(),
                replaces: None,
            };
            if let Some((decoded, sha256)) = copy_from_blob(out, base, hit, ctx, cache)? {
                finish(out, base, decoded, ctx)?;
                return Ok(Some(sha256));
            }
            // Unusable blob (dropped): download, filling the cache again.
            claimed = Some(claim(cache.cache(), spec));
        }
        match claimed {
            Some(Claimed::Fill(f, v)) => fill = Some((f, v, url.clone())),
            Some(Claimed::Failed(e)) => cache.warn(&e),
            _ => {}
        }
    }
    let mut tap = FillSink::new(fill.as_ref().map(|(f, _, _)| f));
    let (decoded, digest) = copy_source(out, base, net, reporter, &mut tap)?;
    let (failed, end) = (tap.failed, tap.end);
    if let (Some(cache), Some((filler, validators, url))) = (cache, fill) {
        match failed {
            Some(e) => cache.warn(&e),
            None => cache.commit(filler, end, validators, &url),
        }
    }
    finish(out, base, decoded, ctx)?;
    Ok(digest)
}

/// The hit out of `claimed`, leaving anything else in place.
fn take_hit(claimed: &mut Option<Claimed>) -> Option<Claimed> {
    match claimed {
        Some(Claimed::Hit(_)) => claimed.take(),
        _ => None,
    }
}

/// Check the decoded size and give `out` its full length.
fn finish(out: &File, base: &BaseInfo, decoded: u64, ctx: &Ctx<'_>) -> Result<(), BuildError> {
    let name = base.location.name();
    if decoded < base.size {
        return Err(BuildError::BadBase(format!(
            "base image {name}: {decoded} bytes, but its partition table ends at {}",
            base.size
        )));
    }
    // Trailing zeros were skipped: give the copy its full length.
    out.set_len(decoded)
        .map_err(|e| ctx.output_io(format!("setting the base copy's length to {decoded}"), e))?;
    ctx.reporter.item_done(&name, decoded, None);
    Ok(())
}

/// A cached base from its blob, hashed twice on the way: against its entry
/// (a corrupt blob is dropped) and against the base's own checksum (an
/// entry from before a change of it is dropped). The decoded size and the
/// blob's sha256 (the base's, as stored). `Ok(None)`: unusable, the
/// output is emptied for the download that follows (the sparse copy relies
/// on a fresh file reading as zeros).
fn copy_from_blob(
    out: &File,
    base: &BaseInfo,
    hit: Hit,
    ctx: &Ctx<'_>,
    cache: &BuildCache<'_>,
) -> Result<Option<(u64, String)>, BuildError> {
    let reporter = ctx.reporter;
    let name = base.location.name();
    let key = hit.key().clone();
    let mut blob_check = StreamVerifier::new(HashAlgo::Sha256, &hit.entry().sha256, &name);
    // (Not learning a second sha256: the blob's is the base's.)
    let mut base_check = crate::io::Check::declared(base.checksum.declared.clone()).verifier(&name);
    // Positional reads (the window reader): the pinned blob's own cursor
    // is never moved.
    let blob = std::sync::Arc::new(hit.file()?.try_clone()?);
    let len = hit.size();
    let window = PartitionWindow::new(blob, std::path::Path::new(key.as_str()), 0, len);
    let reader = window.reader(0, len).map_err(std::io::Error::from)?;
    let src = std::io::BufReader::with_capacity(SPARSE_BUF, reader);
    let mut hashing = HashingReader::new(
        HashingReader::new(src, Some(&mut blob_check)),
        base_check.as_mut(),
    );
    let copied = copy_stream(out, &mut hashing, base, reporter)?;
    drop(hashing);
    let blob_sha256 = blob_check.finish();
    let usable = blob_sha256.is_ok() && base_check.map(StreamVerifier::finish).transpose().is_ok();
    if !usable {
        cache.warn(&crate::cache::CacheError::CorruptBlob {
            key: key.to_string(),
            path: std::path::PathBuf::from(key.as_str()),
            reason: "it does not match its entry or the base's checksum".into(),
        });
        if let Err(e) = cache.cache().remove(&key) {
            cache.warn(&e);
        }
        out.set_len(0)
            .map_err(|e| ctx.output_io("emptying it for a download".into(), e))?;
        return Ok(None);
    }
    let copied =
        copied.map_err(|e| BuildError::BadBase(format!("reading base image {name}: {e}")))?;
    if let Err(e) = cache.cache().touch(&key, crate::cache::unix_now()) {
        cache.warn(&e);
    }
    reporter.item_cached(&name);
    Ok(Some((copied.read, blob_sha256.unwrap_or_default())))
}

/// Copy from the base's own source (file or network); the network bytes
/// also go to `tap`. Returns the decoded size and the digest its check
/// computed.
fn copy_source(
    out: &File,
    base: &BaseInfo,
    net: &Net,
    reporter: &dyn Reporter,
    tap: &mut FillSink<'_>,
) -> Result<(u64, Option<String>), BuildError> {
    let name = base.location.name();
    let decoded = match &base.location {
        BaseLocation::Local(path) if base.xz || base.checksum.is_active() => {
            copy_local_stream(out, base, path, reporter)?
        }
        BaseLocation::Local(path) => (copy_local_regions(out, base, path, reporter)?, None),
        BaseLocation::Http(url) if base.xz => copy_remote_xz(out, base, url, net, reporter, tap)?,
        BaseLocation::Http(url) => {
            let sink = Tee {
                first: SparseFileSink::new(out, 0),
                second: tap,
            };
            let mut sink = ProgressSink::new(sink, reporter, &name);
            // Exactly the size planned from the probe (or the partition
            // table): a GET that disagrees is an error, never zero-padded.
            let digest = net.block_on(net.http.download(
                url,
                Some(base.size),
                base.checksum.clone(),
                &mut sink,
            ))?;
            (base.size, digest)
        }
    };
    Ok(decoded)
}

fn open(path: &std::path::Path) -> Result<File, BuildError> {
    File::open(path).map_err(|source| BuildError::SourceOpen {
        path: path.to_path_buf(),
        source,
    })
}

/// Stream the whole local file (hashing it as stored), decoding xz no
/// further than the end of p3: whatever an xz stream holds past it belongs
/// to no partition (and an endless one would fill the disk).
fn copy_local_stream(
    out: &File,
    base: &BaseInfo,
    path: &std::path::Path,
    reporter: &dyn Reporter,
) -> Result<(u64, Option<String>), BuildError> {
    let name = base.location.name();
    let src = open(path)?;
    let mut verifier = base.checksum.verifier(&name);
    let mut hashing = HashingReader::new(src, verifier.as_mut());
    let copied = copy_stream(out, &mut hashing, base, reporter)?;
    let copied =
        copied.map_err(|e| BuildError::BadBase(format!("reading base image {name}: {e}")))?;
    let digest = verifier.map(StreamVerifier::finish).transpose()?;
    Ok((copied.read, digest))
}

/// `src` into `out` from offset 0, sparse: xz decoded no further than the
/// end of p3 (whatever an xz stream holds past it belongs to no partition,
/// and an endless one would fill the disk), or as is. The rest of `src` is
/// read too (it counts for the checksums). The copy's own result is
/// returned apart: a caller may judge the source before its error.
fn copy_stream(
    out: &File,
    src: &mut dyn Read,
    base: &BaseInfo,
    reporter: &dyn Reporter,
) -> Result<std::io::Result<crate::io::CopyStats>, BuildError> {
    let name = base.location.name();
    let progress = |chunk: &[u8]| reporter.item_progress(&name, chunk.len() as u64);
    let copied = if base.xz {
        xz(&mut *src).and_then(|d| sparse_copy(&mut d.take(base.size), out, 0, progress))
    } else {
        sparse_copy(&mut &mut *src, out, 0, progress)
    };
    drain(src)?;
    Ok(copied)
}

/// Copy only the data regions of a plain local file: holes are neither
/// read nor written.
fn copy_local_regions(
    out: &File,
    base: &BaseInfo,
    path: &std::path::Path,
    reporter: &dyn Reporter,
) -> Result<u64, BuildError> {
    let name = base.location.name();
    let src = std::sync::Arc::new(open(path)?);
    let window = PartitionWindow::new(src.clone(), path, 0, base.size);
    for (start, end) in data_regions(&src, base.size)? {
        let mut region = window.reader(start, end).map_err(std::io::Error::from)?;
        sparse_copy(&mut region, out, start, |chunk| {
            reporter.item_progress(&name, chunk.len() as u64);
        })
        .map_err(|e| {
            BuildError::Io(std::io::Error::new(
                e.kind(),
                format!("copying base image {name}: {e}"),
            ))
        })?;
    }
    Ok(base.size)
}

/// Download an xz base and decode it on a thread, through the bounded
/// channel, no further than the end of p3 (see [`copy_local_stream`]).
fn copy_remote_xz(
    out: &File,
    base: &BaseInfo,
    url: &str,
    net: &Net,
    reporter: &dyn Reporter,
    tap: &mut FillSink<'_>,
) -> Result<(u64, Option<String>), BuildError> {
    let name = base.location.name();
    let (tx, rx) = channel("the xz decoder");
    let end = base.size;
    let decoded = std::thread::scope(|s| {
        let decoder = s.spawn(move || {
            let mut rx = rx;
            let r = xz(&mut rx).and_then(|mut dec| {
                let r = sparse_copy(&mut (&mut dec).take(end), out, 0, |_| {});
                // Drain so the downloader never blocks on a dead decoder.
                let _ = drain(dec.get_mut());
                r
            });
            // Also when the decoder could not be set up.
            let _ = drain(&mut rx);
            r
        });
        // Compressed bytes: the decoded size is known only at the end.
        let tee = Tee {
            first: tx,
            second: tap,
        };
        let mut sink = ProgressSink::new(tee, reporter, &name);
        let res = net.block_on(
            net.http
                .download(url, None, base.checksum.clone(), &mut sink),
        );
        drop(sink);
        let st = decoder
            .join()
            .map_err(|_| BuildError::Panicked("the xz decoder"))?;
        let digest = res?;
        st.map(|st| (st.read, digest))
            .map_err(|e| BuildError::BadBase(format!("decompressing base image {name}: {e}")))
    })?;
    Ok(decoded)
}
