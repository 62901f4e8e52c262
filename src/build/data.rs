//! Step 4: the data partition (p3), written from scratch. The old p3 is
//! read first (it sits where the new one goes), every fixed-size file is
//! reserved in plan order (so the layout never depends on which download
//! finishes first), then the bytes arrive: inline and local files,
//! downloads `-T` at a time, image pulls, archive expansions; `finish()`
//! writes the metadata.

use std::path::Path;

use std::collections::HashMap;
use std::sync::Arc;

use super::cache::{BuildCache, FillSink, FillTap, Source};
use super::error::BuildError;
use crate::fetch::{HttpError, Net};
use crate::fs::ext4::{Ext4Builder, Ext4Params, FileWriter, InodeMeta, OldTree, Timestamp};
use crate::io::{ProgressSink, StreamVerifier, Tee, WriterSink, COPY_BUF};
use crate::oci::{ArchiveSink, PullJob, Registry};
use crate::partition::PartitionWindow;
use crate::plan::{Expected, Item, ItemSource, OciPull, Plan, DIR_PERM, FILE_PERM};
use crate::progress::Reporter;

/// What writing the data partition needs.
pub struct DataCtx<'a> {
    /// The output image, already grown to the plan's size.
    pub image: &'a std::sync::Arc<std::fs::File>,
    /// Its path (for messages).
    pub image_path: &'a Path,
    /// Where the base's data partition is in the copy.
    pub old_p3: (u64, u64),
    /// Base image name, for messages.
    pub base_name: &'a str,
    /// The plan.
    pub plan: &'a Plan,
    /// Temporary space (spill of the old tree, remote zips).
    pub build_dir: &'a Path,
    /// The network.
    pub net: &'a Net,
    /// Parallel downloads.
    pub concurrency: usize,
    /// Progress.
    pub reporter: &'a dyn Reporter,
    /// The download cache, when one is used.
    pub cache: Option<&'a BuildCache<'a>>,
}

/// Write the new data partition.
pub fn write_data_partition(ctx: &DataCtx<'_>) -> Result<(), BuildError> {
    let time = Timestamp::build_time();
    let mut builder = start_builder(ctx, time)?;
    let dir_meta = InodeMeta::new(DIR_PERM, time);
    let file_meta = InodeMeta::new(FILE_PERM, time);
    let planned: Vec<(String, u64)> = ctx.plan.items.iter().map(|i| (i.name(), i.size)).collect();
    ctx.reporter.items_planned(&planned);
    // Archives are expanded after the fixed-size files (src/expand).
    let fixed: Vec<&Item> = ctx
        .plan
        .items
        .iter()
        .filter(|i| i.archive.is_none())
        .collect();
    let mut downloads = Vec::new();
    let mut images = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];
    for (item, w) in reserve(&mut builder, &fixed, dir_meta, file_meta)? {
        match &item.source {
            ItemSource::Oci(pull) => images.push((item, pull.as_ref(), w)),
            ItemSource::Http { url, checksum } => downloads.push((item, url, checksum, w)),
            ItemSource::Bytes(b) => {
                ctx.reporter.item_started(&item.name(), Some(item.size));
                w.write_at(0, b)?;
                ctx.reporter.item_progress(&item.name(), item.size);
                ctx.reporter.item_done(&item.name(), item.size, None);
            }
            ItemSource::Local { path, checksum } => {
                copy_local(item, path, checksum, &w, &mut buf, ctx.reporter)?;
            }
        }
    }
    download_all(ctx, downloads)?;
    pull_images(ctx, &mut builder, images)?;
    expand_all(ctx, &mut builder, dir_meta)?;
    builder.finish()?;
    Ok(())
}

/// Read the old p3 (before anything overwrites it) and start a builder
/// with its identity (UUID, label, hash seed, reserved blocks) and tree.
fn start_builder(ctx: &DataCtx<'_>, time: Timestamp) -> Result<Ext4Builder, BuildError> {
    let (start, len) = ctx.old_p3;
    let old_window = PartitionWindow::new(ctx.image.clone(), ctx.image_path, start, len);
    let old = OldTree::read(&old_window, ctx.build_dir).map_err(|e| {
        BuildError::BadBase(format!(
            "base image {}: data partition (p3): {e}",
            ctx.base_name
        ))
    })?;
    let mut params = Ext4Params {
        time,
        ..Ext4Params::default()
    };
    params.reserved_percent = old.superblock().reserved_percent;
    old.apply_identity(&mut params);
    params.inodes.expected_inodes = ctx.plan.inodes_expected;
    let window = PartitionWindow::new(
        ctx.image.clone(),
        ctx.image_path,
        ctx.plan.p3_start,
        ctx.plan.fs_size,
    );
    let mut builder = Ext4Builder::new(window, params)?;
    old.write_into(&mut builder)?;
    Ok(builder)
}

/// Reserve every fixed-size file, in plan order.
fn reserve<'i>(
    builder: &mut Ext4Builder,
    items: &[&'i Item],
    dir_meta: InodeMeta,
    file_meta: InodeMeta,
) -> Result<Vec<(&'i Item, FileWriter)>, BuildError> {
    let mut out = Vec::with_capacity(items.len());
    for &item in items {
        let (parent_path, name) = item
            .dest
            .rsplit_once('/')
            .unwrap_or(("", item.dest.as_str()));
        let parent = builder.mkdir_all(parent_path, dir_meta)?;
        out.push((
            item,
            builder.create_file(parent, name.as_bytes(), item.size, file_meta)?,
        ));
    }
    Ok(out)
}

/// A local file into its reservation, verified on the way.
fn copy_local(
    item: &Item,
    path: &Path,
    checksum: &Expected,
    w: &FileWriter,
    buf: &mut [u8],
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    use crate::fs::ext4::CopyError;
    use std::io::Read;
    let item_name = item.name();
    reporter.item_started(&item_name, Some(item.size));
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|source| BuildError::SourceOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let mut verifier = checksum
        .as_ref()
        .map(|(a, v)| StreamVerifier::new(*a, v, &name));
    let changed = |how: String| BuildError::SourceChanged {
        name: name.clone(),
        how,
    };
    w.copy_from(&mut f, buf, |chunk| {
        if let Some(v) = verifier.as_mut() {
            v.update(chunk);
        }
        reporter.item_progress(&item_name, chunk.len() as u64);
    })
    .map_err(|e| match e {
        CopyError::Short { got, size } => changed(format!("size ({got} of {size} bytes)")),
        CopyError::Read(e) => BuildError::Io(e),
        CopyError::Write(e) => changed(format!("({e})")),
    })?;
    // One byte more means the file grew since it was planned.
    if f.read(&mut [0u8; 1])? > 0 {
        return Err(changed(format!("size (more than {} bytes)", item.size)));
    }
    let digest = verifier.map(StreamVerifier::finish).transpose()?;
    reporter.item_done(&item_name, item.size, digest.as_deref());
    Ok(())
}

/// A download into its reservation.
type Download<'a> = (&'a Item, &'a String, &'a Expected, FileWriter);

/// Downloads, `concurrency` at a time, each straight into its blocks (and
/// into the cache when it fills one). Cache hits are copied first.
fn download_all(ctx: &DataCtx<'_>, downloads: Vec<Download<'_>>) -> Result<(), BuildError> {
    let reporter = ctx.reporter;
    let mut fetches = Vec::with_capacity(downloads.len());
    for (item, url, checksum, w) in downloads {
        let source = match ctx.cache {
            Some(c) => c.source(item.cache.as_ref()),
            None => Source::Fetch(None),
        };
        match source {
            Source::Hit(hit) => {
                let name = item.name();
                reporter.item_started(&name, Some(item.size));
                let cache = ctx.cache.ok_or(BuildError::Panicked("cache"))?;
                match cache.copy_hit(hit, &w, checksum, &name)? {
                    Some((_, digest)) => {
                        reporter.item_cached(&name);
                        reporter.item_done(&name, item.size, digest.as_deref());
                    }
                    // A corrupt or outdated blob: the network, over the same range.
                    None => fetches.push((item, url, checksum, w, None)),
                }
            }
            Source::Fetch(fill) => fetches.push((item, url, checksum, w, fill)),
        }
    }
    let results: Vec<Result<(), HttpError>> = ctx.net.block_on(async {
        use futures_util::stream::StreamExt;
        futures_util::stream::iter(fetches.into_iter().map(|(item, url, checksum, w, fill)| {
            let http = ctx.net.http.clone();
            async move {
                let name = item.name();
                reporter.item_started(&name, Some(item.size));
                let tee = Tee {
                    first: WriterSink(w),
                    second: FillSink::new(fill.as_ref().map(|(f, _)| f)),
                };
                let mut sink = ProgressSink::new(tee, reporter, &name);
                let result = http
                    .download(url, Some(item.size), checksum.clone(), &mut sink)
                    .await;
                let failed = sink.into_inner().second.failed;
                match result {
                    Ok(digest) => {
                        if let (Some(cache), Some((filler, validators))) = (ctx.cache, fill) {
                            match failed {
                                Some(e) => cache.warn(&e),
                                None => cache.commit(filler, item.size, validators, url),
                            }
                        }
                        // Reported as each finishes, so the history is live.
                        reporter.item_done(&name, item.size, digest.as_deref());
                        Ok(())
                    }
                    Err(e) => {
                        reporter.item_failed(&name, &e.to_string());
                        Err(e)
                    }
                }
            }
        }))
        .buffer_unordered(ctx.concurrency.max(1))
        .collect()
        .await
    });
    for r in results {
        r?;
    }
    Ok(())
}

/// Container images (src/oci): pulled into their reservations (or copied
/// from the cache), then each file is shrunk to its archive's exact size.
fn pull_images(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    images: Vec<(&Item, &OciPull, FileWriter)>,
) -> Result<(), BuildError> {
    let reporter = ctx.reporter;
    let mut jobs = Vec::new();
    let mut fills = HashMap::new();
    for (item, pull, w) in images {
        let name = item.name();
        let mut fill = None;
        match ctx.cache.map(|c| (c, c.source(item.cache.as_ref()))) {
            Some((cache, Source::Hit(hit))) => {
                reporter.item_started(&name, Some(item.size));
                if let Some((entry, _)) = cache.copy_hit(hit, &w, &None, &name)? {
                    builder.set_len(w.ino(), entry.size)?;
                    reporter.item_cached(&name);
                    reporter.item_done(&name, entry.size, entry.validators.digest.as_deref());
                    continue;
                }
            }
            Some((_, Source::Fetch(f))) => fill = f,
            None => {}
        }
        let image = match &pull.resolved {
            Some(r) => r.clone(),
            // Planned from the cache without the registry; the copy failed.
            None => ctx.net.block_on(
                Registry::new(ctx.net.http.clone()).resolve(&pull.reference, &pull.platform),
            )?,
        };
        let tap = fill.map(|(filler, validators)| {
            let tap = Arc::new(FillTap::new(filler));
            fills.insert(name.clone(), (tap.clone(), validators, pull.name()));
            tap as Arc<dyn ArchiveSink>
        });
        jobs.push(PullJob {
            name,
            image: Box::new(image),
            writer: w,
            tap,
        });
    }
    for p in crate::oci::pull_all(ctx.net, jobs, ctx.concurrency, reporter)? {
        builder.set_len(p.ino, p.size)?;
        if let (Some(cache), Some((tap, validators, source))) = (ctx.cache, fills.remove(&p.name)) {
            // The pull's sinks are dropped by now: the tap is ours alone.
            if let Ok(tap) = Arc::try_unwrap(tap) {
                tap.commit(cache, p.size, validators, &source);
            }
        }
        reporter.item_done(&p.name, p.size, Some(&p.digest));
    }
    Ok(())
}

/// Expand every archive item, in plan order (src/expand).
fn expand_all(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    dir_meta: InodeMeta,
) -> Result<(), BuildError> {
    for item in &ctx.plan.items {
        let Some(plan) = &item.archive else { continue };
        // Container images are never archives (plan/items.rs).
        let Some(source) = item.source.as_archive() else {
            continue;
        };
        let (bytes, digest) = crate::expand::expand_archive(
            builder,
            &item.dest,
            source,
            plan,
            dir_meta,
            ctx.net,
            ctx.build_dir,
        )?;
        ctx.reporter
            .item_done(&item.name(), bytes, digest.as_deref());
    }
    Ok(())
}
