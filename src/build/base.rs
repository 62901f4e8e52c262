//! Step 3: the base image copied into the output, sparse (holes stay
//! holes), xz decoded on the way, verified against its digest.

use std::fs::File;
use std::io::Read;

use super::error::BuildError;
use crate::fetch::Net;
use crate::io::{
    channel, data_regions, drain, sparse_copy, xz, HashingReader, ProgressSink, SparseFileSink,
    StreamVerifier,
};
use crate::partition::PartitionWindow;
use crate::plan::{BaseInfo, BaseLocation};
use crate::progress::Reporter;

/// Copy the base into `out` (from offset 0) and give `out` its full size.
pub fn copy_base(
    out: &File,
    base: &BaseInfo,
    net: &Net,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    let name = base.location.name();
    reporter.item_started(&name, Some(base.size));
    let decoded = match &base.location {
        BaseLocation::Local(path) if base.xz || base.checksum.is_some() => {
            copy_local_stream(out, base, path, reporter)?
        }
        BaseLocation::Local(path) => copy_local_regions(out, base, path, reporter)?,
        BaseLocation::Http(url) if base.xz => copy_remote_xz(out, base, url, net, reporter)?,
        BaseLocation::Http(url) => {
            let mut sink = ProgressSink::new(SparseFileSink::new(out, 0), reporter, &name);
            // Exactly the size planned from the probe (or the partition
            // table): a GET that disagrees is an error, never zero-padded.
            net.block_on(net.http.download(
                url,
                Some(base.size),
                base.checksum.clone(),
                &mut sink,
            ))?;
            base.size
        }
    };
    if decoded < base.size {
        return Err(BuildError::BadBase(format!(
            "base image {name}: {decoded} bytes, but its partition table ends at {}",
            base.size
        )));
    }
    // Trailing zeros were skipped: give the copy its full length.
    out.set_len(decoded)?;
    reporter.item_done(&name, decoded, None);
    Ok(())
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
) -> Result<u64, BuildError> {
    let name = base.location.name();
    let progress = |chunk: &[u8]| reporter.item_progress(&name, chunk.len() as u64);
    let src = open(path)?;
    let mut verifier = base
        .checksum
        .as_ref()
        .map(|(a, v)| StreamVerifier::new(*a, v, &name));
    let mut hashing = HashingReader::new(src, verifier.as_mut());
    let copied = if base.xz {
        let st = xz(&mut hashing)
            .and_then(|d| sparse_copy(&mut d.take(base.size), out, 0, progress));
        // Hash any bytes past the xz stream too.
        drain(&mut hashing)?;
        st
    } else {
        sparse_copy(&mut hashing, out, 0, progress)
    };
    let copied =
        copied.map_err(|e| BuildError::BadBase(format!("reading base image {name}: {e}")))?;
    if let Some(v) = verifier {
        v.finish()?;
    }
    Ok(copied.read)
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
) -> Result<u64, BuildError> {
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
        let mut sink = ProgressSink::new(tx, reporter, &name);
        let res = net.block_on(
            net.http
                .download(url, None, base.checksum.clone(), &mut sink),
        );
        drop(sink);
        let st = decoder
            .join()
            .map_err(|_| BuildError::Panicked("the xz decoder"))?;
        res?;
        st.map_err(|e| BuildError::BadBase(format!("decompressing base image {name}: {e}")))
    })?;
    Ok(decoded.read)
}
