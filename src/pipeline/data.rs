//! Step 4: the data partition (p3), written from scratch. The old p3 is
//! read first (it sits where the new one goes), every fixed-size file is
//! reserved in plan order (so the layout never depends on which download
//! finishes first), then the bytes arrive: inline and local files,
//! downloads `-T` at a time, image pulls, archive expansions; `finish()`
//! writes the metadata.

use std::path::Path;

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::Mutex;

use super::cache::{
    claim, copy_blob, try_claim, BuildCache, ClaimSpec, Claimed, FillSink, FillTap, Planned,
};
use super::error::BuildError;
use super::record::{Learnt, Recorder};
use crate::cache::Hit;
use crate::cache::{CacheError, FillMeta, Filler, Validators};
use crate::expand::{expand_archive, ArchiveSource, ExpandError, Expansion};
use crate::fetch::{redact, Continue, Fetched, HttpError, Net};
use crate::fs::ext4::{Ext4Builder, Ext4Params, FileWriter, InodeMeta, OldTree, Timestamp};
use crate::io::{ProgressSink, StreamVerifier, Tee, WriterSink, COPY_BUF};
use crate::oci::{ArchiveSink, PullJob, Registry};
use crate::output::FileSpans;
use crate::partition::PartitionWindow;
use crate::plan::{
    data_path, CacheUse, Expected, Item, ItemSource, OciPull, Plan, DIR_PERM, FILE_PERM,
};
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
    /// The plan's layout (its items are handed over apart: the step
    /// consumes them).
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
    /// Told of every write to p3 (a build onto a device).
    pub log: Option<std::sync::Arc<dyn crate::partition::WriteLog>>,
    /// A recorded build: told what each item's bytes were.
    pub recorder: Option<&'a Recorder>,
    /// Step 7 reads the finished image (a file OUTPUT with an output that
    /// needs its bytes): a recorded build's download with no declared
    /// checksum is hashed there, from the image, instead of while it
    /// downloads (the spans are collected here; see
    /// [`crate::output::FileHashes`]).
    pub deferred: Option<&'a Mutex<Vec<FileSpans>>>,
}

impl DataCtx<'_> {
    /// Tell the recorder (in a recorded build) what item `name` was.
    fn learn(&self, name: &str, learnt: impl FnOnce() -> Learnt) {
        if let Some(r) = self.recorder {
            r.learn(name, learnt());
        }
    }

    /// Where `d`'s bytes will be in the image, when its sha256 is wanted
    /// only for the record (nothing declared) and step 7 can hash them
    /// there: then its download computes no hash.
    fn defer_hash(&self, d: &Download) -> Option<FileSpans> {
        self.deferred?;
        if d.checksum.declared.is_some() || !d.checksum.sha256 {
            return None;
        }
        let spans = FileSpans {
            name: d.name.clone(),
            spans: d.w.image_spans(d.size).ok()?,
        };
        spans.in_image_order().then_some(spans)
    }

    /// Tell the recorder item `name`'s sha256, keeping what it knew.
    fn learn_sha256(&self, name: &str, sha256: String) {
        if let Some(r) = self.recorder {
            r.learn_sha256(name, sha256);
        }
    }

    /// Step 7 hashes `spans` for the record.
    fn defer(&self, spans: FileSpans) {
        if let Some(Ok(mut v)) = self.deferred.map(Mutex::lock) {
            v.push(spans);
        }
    }
}

/// Write the new data partition with the plan's `items`, which it
/// consumes (each with the download cache's part in it).
pub fn write_data_partition(ctx: &DataCtx<'_>, items: Vec<Item>) -> Result<(), BuildError> {
    let time = Timestamp::build_time();
    let mut builder = start_builder(ctx, time)?;
    let dir_meta = InodeMeta::new(DIR_PERM, time);
    let file_meta = InodeMeta::new(FILE_PERM, time);
    let planned: Vec<(String, u64)> = items.iter().map(|i| (i.name(), i.size)).collect();
    ctx.reporter.items_planned(&planned);
    // Archives are expanded after the fixed-size files (src/expand), in
    // plan order.
    let (archives, fixed): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| i.archive.is_some());
    let mut downloads = Vec::new();
    let mut images = Vec::new();
    let mut buf = vec![0u8; COPY_BUF];
    for (item, w) in reserve(&mut builder, fixed, dir_meta, file_meta)? {
        let name = item.name();
        let Item {
            size,
            source,
            cache,
            ..
        } = item;
        match source {
            ItemSource::Oci(pull) => images.push(Image {
                name,
                size,
                pull,
                cache,
                w,
            }),
            ItemSource::Http { url, checksum } => downloads.push(Download {
                name,
                size,
                url,
                checksum,
                cache,
                w,
            }),
            ItemSource::Bytes(b) => {
                ctx.reporter.item_started(&name, Some(size));
                w.write_at(0, &b)?;
                ctx.reporter.item_progress(&name, size);
                ctx.reporter.item_done(&name, size, None);
            }
            ItemSource::Local { path, checksum } => {
                let digest = copy_local(&name, size, &path, &checksum, &w, &mut buf, ctx.reporter)?;
                ctx.learn(&name, || Learnt::sha256(digest));
            }
        }
    }
    download_all(ctx, downloads)?;
    pull_images(ctx, &mut builder, images)?;
    expand_all(ctx, &mut builder, archives, dir_meta)?;
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
    )
    .with_log(ctx.log.clone());
    let mut builder = Ext4Builder::new(window, params)?;
    old.write_into(&mut builder)?;
    Ok(builder)
}

/// Reserve every fixed-size file, in plan order.
fn reserve(
    builder: &mut Ext4Builder,
    items: Vec<Item>,
    dir_meta: InodeMeta,
    file_meta: InodeMeta,
) -> Result<Vec<(Item, FileWriter)>, BuildError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let (parent_path, name) = item
            .dest
            .rsplit_once('/')
            .unwrap_or(("", item.dest.as_str()));
        let parent = builder.mkdir_all(parent_path, dir_meta)?;
        let w = builder.create_file(parent, name.as_bytes(), item.size, file_meta)?;
        out.push((item, w));
    }
    Ok(out)
}

/// A local file into its reservation (`size` bytes, the item `item_name`),
/// verified on the way; the digest its check computed.
fn copy_local(
    item_name: &str,
    size: u64,
    path: &Path,
    checksum: &Expected,
    w: &FileWriter,
    buf: &mut [u8],
    reporter: &dyn Reporter,
) -> Result<Option<String>, BuildError> {
    use crate::fs::ext4::CopyError;
    reporter.item_started(item_name, Some(size));
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| BuildError::SourceOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let mut verifier = checksum.verifier(&name);
    let changed = |how: String| BuildError::SourceChanged {
        name: name.clone(),
        how,
    };
    // Only the data regions are read and written: a sparse file's holes
    // stay holes in the image (FileWriter::copy_regions_from).
    let regions = crate::io::data_regions(&f, size)?;
    w.copy_regions_from(&f, &regions, buf, |chunk| {
        if let Some(v) = verifier.as_mut() {
            v.update(chunk);
        }
        reporter.item_progress(item_name, chunk.len() as u64);
    })
    .map_err(|e| match e {
        CopyError::Short { got, size } => changed(format!("size ({got} of {size} bytes)")),
        CopyError::Read(e) => BuildError::Io(e),
        CopyError::Write(e) => changed(format!("({e})")),
    })?;
    // Holes read as zeros, so a file cut short is not seen by the copy:
    // its length must still be the planned one. One byte more means it grew.
    let now = f
        .metadata()
        .map_err(|source| BuildError::SourceOpen {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if now < size {
        return Err(changed(format!("size ({now} of {size} bytes)")));
    }
    if std::os::unix::fs::FileExt::read_at(&f, &mut [0u8; 1], size)? > 0 {
        return Err(changed(format!("size (more than {size} bytes)")));
    }
    let digest = verifier.map(StreamVerifier::finish).transpose()?;
    reporter.item_done(item_name, size, digest.as_deref());
    Ok(digest)
}

/// A download into its reservation.
struct Download {
    /// The item's name (`/data/…`).
    name: String,
    size: u64,
    url: String,
    checksum: Expected,
    /// The cache's part, as planned (consumed when the download starts).
    cache: Option<Box<CacheUse>>,
    w: FileWriter,
}

/// A download, and the key it claims in the cache.
type Fetch = (Download, Option<ClaimSpec>);

/// Downloads, `concurrency` at a time, each straight into its blocks (and
/// into the cache when it fills one). Planned cache hits are copied first,
/// `concurrency` at a time.
fn download_all(ctx: &DataCtx<'_>, downloads: Vec<Download>) -> Result<(), BuildError> {
    let mut hits = Vec::new();
    let mut fetches: Vec<Fetch> = Vec::with_capacity(downloads.len());
    for mut d in downloads {
        let planned = match (ctx.cache, d.cache.take()) {
            (Some(c), use_) => c.planned(use_.map(|b| *b)),
            (None, _) => Planned::Plain,
        };
        match planned {
            Planned::Hit(hit) => hits.push((d, hit)),
            Planned::Claim(spec) => fetches.push((d, Some(spec))),
            Planned::Plain => fetches.push((d, None)),
        }
    }
    if let Some(cache) = ctx.cache {
        fetches.extend(copy_hits(ctx, cache, hits)?);
    }
    let results: Vec<Result<(), BuildError>> = ctx.net.block_on(async {
        use futures_util::stream::StreamExt;
        futures_util::stream::iter(fetches.into_iter().map(|(d, spec)| fetch_one(ctx, d, spec)))
            .buffer_unordered(ctx.concurrency.max(1))
            .collect()
            .await
    });
    results.into_iter().collect()
}

/// Copy planned hits, `concurrency` at a time; returns the downloads
/// whose blob turned out unusable (they fill the cache again).
fn copy_hits(
    ctx: &DataCtx<'_>,
    cache: &BuildCache<'_>,
    hits: Vec<(Download, Hit)>,
) -> Result<Vec<Fetch>, BuildError> {
    let reporter = ctx.reporter;
    let queue = Mutex::new(hits.into_iter());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..ctx.concurrency.max(1) {
            s.spawn(|| loop {
                let Some((d, hit)) = queue.lock().ok().and_then(|mut q| q.next()) else {
                    break;
                };
                reporter.item_started(&d.name, Some(d.size));
                let copied = copy_blob(hit, &d.w, &d.checksum, &d.name, |n| {
                    reporter.item_progress(&d.name, n as u64);
                });
                if let Ok(mut v) = done.lock() {
                    v.push((d, copied));
                }
            });
        }
    });
    let mut again = Vec::new();
    for (d, copied) in done.into_inner().unwrap_or_default() {
        match cache.settle(copied?) {
            Ok((entry, digest, shared)) => {
                ctx.learn(&d.name, || Learnt::entry(&entry));
                reporter.item_cached(&d.name);
                if shared > 0 {
                    reporter.item_cloned(&d.name, shared);
                }
                reporter.item_done(&d.name, d.size, digest.as_deref());
            }
            Err(spec) => again.push((d, Some(*spec))),
        }
    }
    Ok(again)
}

/// One download task: claim its key (waiting, off the async workers, for
/// another build downloading it: this task holds no other key), then copy
/// what that build published, or download into the image and the cache.
async fn fetch_one(
    ctx: &DataCtx<'_>,
    mut d: Download,
    spec: Option<ClaimSpec>,
) -> Result<(), BuildError> {
    let reporter = ctx.reporter;
    reporter.item_started(&d.name, Some(d.size));
    let mut fill = None;
    if let (Some(cache), Some(spec)) = (ctx.cache, spec) {
        let c = cache.cache().clone();
        match tokio::task::spawn_blocking(move || claim(&c, spec)).await {
            Ok(Claimed::Hit(hit)) => {
                if copy_claimed(ctx, cache, &d, hit).await? {
                    return Ok(());
                }
            }
            Ok(Claimed::Fill(f, v)) => fill = Some((f, v)),
            Ok(Claimed::Failed(e)) => cache.warn(&e),
            Err(_) => {}
        }
    }
    // The cache and the image on one filesystem with reflinks (XFS,
    // btrfs): the download goes to the cache only, and the image's blocks
    // are cloned from it once it is complete and verified.
    let clone = match (ctx.cache, &fill) {
        (Some(cache), Some((f, _))) => f.file().is_some_and(|_| cache.clones_into(ctx.image)),
        _ => false,
    };
    // The record's sha256, when nothing else needs a hash: from the
    // cache's commit, which computes its entry's, or from step 7's read.
    let deferred = ctx.defer_hash(&d);
    if deferred.is_some() {
        d.checksum.sha256 = false;
    }
    let (result, failed) = download(ctx, &d, fill.as_mut(), clone).await;
    let digest = match result {
        Ok(fetched) => {
            let digest = fetched.digest.clone();
            ctx.learn(&d.name, || Learnt::fetched(fetched));
            digest
        }
        Err(e) => {
            reporter.item_failed(&d.name, &e.to_string());
            return Err(e.into());
        }
    };
    let mut committed = None;
    if let (Some(cache), Some((filler, validators))) = (ctx.cache, fill) {
        match failed {
            Some(e) => {
                cache.warn(&e);
                if clone {
                    // Only the cache's copy had the bytes, and it failed:
                    // into the image, once more.
                    let redo = download(ctx, &d, None, false).await.0;
                    redo.inspect_err(|e| reporter.item_failed(&d.name, &e.to_string()))?;
                }
            }
            None => {
                if clone {
                    let shared = tokio::task::block_in_place(|| {
                        let blob = filler.file().ok_or(BuildError::Panicked("a cache fill"))?;
                        d.w.copy_file_from(blob, d.size).map_err(BuildError::from)
                    })?;
                    if shared > 0 {
                        reporter.item_cloned(&d.name, shared);
                    }
                }
                committed = cache.commit_async(filler, d.size, validators, &d.url).await;
            }
        }
    }
    if let Some(spans) = deferred {
        match committed {
            Some(entry) => ctx.learn_sha256(&d.name, entry.sha256),
            None => ctx.defer(spans),
        }
    }
    // Reported as each finishes, so the history is live.
    reporter.item_done(&d.name, d.size, digest.as_deref());
    Ok(())
}

/// Copy a hit another build published while we waited for its key;
/// `false` when its blob was unusable (then download).
async fn copy_claimed(
    ctx: &DataCtx<'_>,
    cache: &BuildCache<'_>,
    d: &Download,
    hit: Hit,
) -> Result<bool, BuildError> {
    let reporter = ctx.reporter;
    let (w2, ck, n2) = (d.w.clone(), d.checksum.clone(), d.name.clone());
    let copied = tokio::task::spawn_blocking(move || copy_blob(hit, &w2, &ck, &n2, |_| {}))
        .await
        .map_err(|_| BuildError::Panicked("a cache copy"))?;
    let Ok((entry, digest, shared)) = cache.settle(copied?) else {
        return Ok(false);
    };
    ctx.learn(&d.name, || Learnt::entry(&entry));
    reporter.item_progress(&d.name, d.size);
    reporter.item_cached(&d.name);
    if shared > 0 {
        reporter.item_cloned(&d.name, shared);
    }
    reporter.item_done(&d.name, d.size, digest.as_deref());
    Ok(true)
}

/// Download `d` into the image (unless `clone`: the cache's copy only)
/// and into `fill`, continuing the partial download the cache kept when
/// there is one. Returns the download's outcome and the fill's first
/// error.
async fn download(
    ctx: &DataCtx<'_>,
    d: &Download,
    mut fill: Option<&mut (Filler, Validators)>,
    clone: bool,
) -> (Result<Fetched, HttpError>, Option<CacheError>) {
    let reporter = ctx.reporter;
    let from = match (ctx.cache, fill.as_deref_mut()) {
        (Some(cache), Some((filler, validators))) => tokio::task::block_in_place(|| {
            let part = Part {
                url: &d.url,
                size: d.size,
                checksum: &d.checksum,
                w: (!clone).then_some(&d.w),
                name: &d.name,
            };
            continue_partial(cache, filler, validators, &part, reporter)
        }),
        _ => None,
    };
    let resumed = from.as_ref().map_or(0, |f| f.offset);
    let tee = Tee {
        first: ImageSink((!clone).then(|| WriterSink(d.w.clone()))),
        second: FillSink::new(fill.as_deref().map(|(f, _)| f)),
    };
    let mut sink = ProgressSink::new(tee, reporter, &d.name).starting_at(resumed);
    let http = &ctx.net.http;
    let (url, size, checksum) = (&d.url, d.size, &d.checksum);
    let mut result = match from {
        Some(from) => {
            http.download_from(url, size, checksum.clone(), from, &mut sink)
                .await
        }
        None => {
            http.download_fetched(url, Some(size), checksum.clone(), &mut sink)
                .await
        }
    };
    if resumed > 0 && matches!(result, Err(HttpError::Checksum(_))) {
        // The kept bytes were not the payload's after all (a partial the
        // server's validators could not tell apart): once more, whole.
        reporter.warn(&format!(
            "{}: the download continued from {resumed} bytes kept in the cache failed its checksum; downloading it whole",
            d.name
        ));
        crate::io::ChunkSink::restart(&mut sink);
        result = http
            .download_fetched(url, Some(size), checksum.clone(), &mut sink)
            .await;
    }
    (result, sink.into_inner().second.failed)
}

/// The image's side of a download: its reservation, or nothing when the
/// image's blocks are cloned from the cache's copy afterwards.
struct ImageSink(Option<WriterSink>);

impl crate::io::ChunkSink for ImageSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match &mut self.0 {
            Some(w) => w.write(offset, data),
            None => Ok(()),
        }
    }
    fn restart(&mut self) -> bool {
        self.0.as_mut().is_none_or(crate::io::ChunkSink::restart)
    }
}

/// A download that may continue a partial one.
struct Part<'a> {
    url: &'a str,
    size: u64,
    checksum: &'a Expected,
    /// The image's reservation; `None` when it is cloned from the cache's
    /// copy at the end.
    w: Option<&'a FileWriter>,
    name: &'a str,
}

/// Make `filler` keep a partial download if this one stops early; when a
/// stopped build left the same payload, copy what it kept into the image,
/// reading it once (the fill's sha256, the config's digest and the image's
/// bytes on the way), and say where the download continues.
fn continue_partial(
    cache: &BuildCache<'_>,
    filler: &mut Filler,
    validators: &Validators,
    part: &Part<'_>,
    reporter: &dyn Reporter,
) -> Option<Continue> {
    let meta = FillMeta {
        validators: validators.clone(),
        source: part.url.to_string(),
    };
    let offset = match filler.keep_partial(&meta, part.size) {
        Ok(offset) => offset,
        Err(e) => {
            cache.warn(&e);
            return None;
        }
    };
    let if_range = validators.if_range().filter(|_| offset > 0)?;
    let mut verifier = part.checksum.verifier(&redact(part.url));
    let read = filler.read_prefix(offset, &mut |at, chunk| {
        if let Some(w) = part.w {
            w.write_at(at, chunk).map_err(std::io::Error::other)?;
        }
        if let Some(v) = verifier.as_mut() {
            v.update(chunk);
        }
        reporter.item_progress(part.name, chunk.len() as u64);
        Ok(())
    });
    if let Err(e) = read {
        cache.warn(&e);
        filler.restart();
        return None;
    }
    Some(Continue {
        offset,
        if_range,
        verifier,
    })
}

/// A container image into its reservation.
struct Image {
    /// The item's name (`/data/images/…`).
    name: String,
    /// The reservation.
    size: u64,
    pull: Box<OciPull>,
    /// The cache's part, as planned.
    cache: Option<Box<CacheUse>>,
    w: FileWriter,
}

/// Container images (src/oci): pulled into their reservations (or copied
/// from the cache), then each file is shrunk to its archive's exact size.
fn pull_images(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    images: Vec<Image>,
) -> Result<(), BuildError> {
    let reporter = ctx.reporter;
    let mut jobs = Vec::new();
    let mut fills = HashMap::new();
    for image in images {
        let Image {
            name,
            size,
            pull,
            cache: cached,
            w,
        } = image;
        let mut fill = None;
        if let Some(cache) = ctx.cache {
            let claimed = match cache.planned(cached.map(|b| *b)) {
                Planned::Plain => None,
                Planned::Hit(hit) => Some(Claimed::Hit(hit)),
                // Without waiting: images are claimed before any pull
                // starts, so waiting here could wait on a build that waits
                // on us. Busy: pull without the cache.
                Planned::Claim(spec) => try_claim(cache.cache(), spec),
            };
            match claimed {
                Some(Claimed::Hit(hit)) => {
                    reporter.item_started(&name, Some(size));
                    let copied = copy_blob(hit, &w, &Expected::default(), &name, |n| {
                        reporter.item_progress(&name, n as u64);
                    })?;
                    if let Ok((entry, _, _)) = cache.settle(copied) {
                        ctx.learn(&name, || Learnt {
                            manifest_digest: entry.validators.digest.clone(),
                            ..Learnt::default()
                        });
                        builder.set_len(w.ino(), entry.size)?;
                        reporter.item_cached(&name);
                        reporter.item_done(&name, entry.size, entry.validators.digest.as_deref());
                        continue;
                    }
                }
                Some(Claimed::Fill(f, v)) => fill = Some((f, v)),
                Some(Claimed::Failed(e)) => cache.warn(&e),
                None => {}
            }
        }
        let source = pull.name();
        let image = match pull.resolved {
            Some(r) => r,
            // Planned from the cache without the registry; the copy failed.
            None => ctx
                .net
                .block_on(Registry::new(ctx.net.http.clone()).resolve_at(
                    &pull.reference,
                    &pull.platform,
                    pull.pin.as_deref(),
                ))?,
        };
        let tap = fill.map(|(filler, validators)| {
            let tap = Arc::new(FillTap::new(filler));
            fills.insert(name.clone(), (tap.clone(), validators, source));
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
        ctx.learn(&p.name, || Learnt {
            manifest_digest: Some(p.digest.clone()),
            ..Learnt::default()
        });
        reporter.item_done(&p.name, p.size, Some(&p.digest));
    }
    Ok(())
}

/// Expand every archive item, in plan order (src/expand). A remote
/// archive its pre-scan spooled is expanded from the spool; one in the
/// cache is expanded from its blob (checked whole first);
/// a miss the policy caches is downloaded into the expansion and the cache
/// at once. They run one at a time, after every download: waiting for a
/// key here holds no other.
fn expand_all(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    archives: Vec<Item>,
    dir_meta: InodeMeta,
) -> Result<(), BuildError> {
    for item in archives {
        let Some(plan) = &item.archive else { continue };
        // Container images are never archives (plan/items.rs).
        let Some(source) = item.source.as_archive() else {
            continue;
        };
        let job = Expansion {
            dest: &item.dest,
            source,
            plan,
            dir_meta,
        };
        if let Some(file) = &item.spool {
            // Downloaded whole by the pre-scan (no cache keeps it).
            expand_spooled(ctx, builder, &job, file)?;
            continue;
        }
        let mut claimed = ctx
            .cache
            .and_then(|c| match c.planned(item.cache.map(|b| *b)) {
                Planned::Plain => None,
                Planned::Hit(hit) => Some(Claimed::Hit(hit)),
                Planned::Claim(spec) => Some(claim(c.cache(), spec)),
            });
        if let (Some(cache), Some(Claimed::Hit(_))) = (ctx.cache, &claimed) {
            let Some(Claimed::Hit(hit)) = claimed.take() else {
                continue;
            };
            match expand_cached(ctx, cache, builder, &job, hit)? {
                None => continue,
                // Unusable blob (dropped): download, filling the cache again.
                Some(spec) => claimed = Some(claim(cache.cache(), spec)),
            }
        }
        expand_fetched(ctx, builder, &job, claimed)?;
    }
    Ok(())
}

/// Expand a cached archive from its blob, checked whole first. `Some`: the
/// blob was unusable (its entry is dropped); claim its key to download it.
fn expand_cached(
    ctx: &DataCtx<'_>,
    cache: &BuildCache<'_>,
    builder: &mut Ext4Builder,
    job: &Expansion<'_>,
    hit: Hit,
) -> Result<Option<ClaimSpec>, BuildError> {
    let name = data_path(job.dest);
    let spec = ClaimSpec {
        key: hit.key().clone(),
        validators: hit.validators().clone(),
        replaces: None,
    };
    let (entry, file) = match hit.verified_file() {
        Ok(found) => found,
        Err(crate::cache::CopyError::Corrupt(e)) => {
            cache.warn(&e);
            return Ok(Some(spec));
        }
        Err(crate::cache::CopyError::Sink { source, .. }) => return Err(source.into()),
    };
    // The blob's sha256 was checked (it is the entry's): a recorded build
    // learns it from there, not by hashing twice.
    let (url, checksum) = match job.source {
        ArchiveSource::Http { url, checksum } => {
            (redact(url), Expected::declared(checksum.declared.clone()))
        }
        _ => (name.clone(), Expected::default()),
    };
    let from_blob = Expansion {
        source: ArchiveSource::Open {
            file: &file,
            name: &url,
            checksum: &checksum,
        },
        ..*job
    };
    let expanded = expand_archive(
        builder,
        &from_blob,
        ctx.net,
        ctx.build_dir,
        &mut FillSink::new(None),
    );
    if let Err(ExpandError::Checksum(_)) = &expanded {
        // Cached under another checksum: the next build downloads it again.
        let _ = cache.cache().remove(&entry.key());
    }
    let (bytes, digest) = expanded?;
    let _ = cache.cache().touch(&entry.key(), crate::cache::unix_now());
    ctx.learn(&name, || Learnt::entry(&entry));
    ctx.reporter.item_cached(&name);
    ctx.reporter.item_done(&name, bytes, digest.as_deref());
    Ok(None)
}

/// Expand a remote archive from the spool its pre-scan downloaded into
/// (src/plan/spool.rs), verifying its checksum again as it is read.
fn expand_spooled(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    job: &Expansion<'_>,
    file: &std::fs::File,
) -> Result<(), BuildError> {
    let unchecked = Expected::default();
    let (url, checksum) = match job.source {
        ArchiveSource::Http { url, checksum } => (redact(url), checksum),
        _ => (data_path(job.dest), &unchecked),
    };
    let spooled = Expansion {
        source: ArchiveSource::Open {
            file,
            name: &url,
            checksum,
        },
        ..*job
    };
    let (bytes, digest) = expand_archive(
        builder,
        &spooled,
        ctx.net,
        ctx.build_dir,
        &mut FillSink::new(None),
    )?;
    let name = data_path(job.dest);
    ctx.learn(&name, || Learnt::sha256(digest.clone()));
    ctx.reporter.item_done(&name, bytes, digest.as_deref());
    Ok(())
}

/// Expand an archive from its source, filling the cache on the way when
/// its key was claimed.
fn expand_fetched(
    ctx: &DataCtx<'_>,
    builder: &mut Ext4Builder,
    job: &Expansion<'_>,
    claimed: Option<Claimed>,
) -> Result<(), BuildError> {
    let fill = match claimed {
        Some(Claimed::Fill(f, v)) => Some((f, v)),
        Some(Claimed::Failed(e)) => {
            if let Some(c) = ctx.cache {
                c.warn(&e);
            }
            None
        }
        // Another build published it while we waited: the entry is used
        // next time; download it this once.
        Some(Claimed::Hit(_)) | None => None,
    };
    let mut tap = FillSink::new(fill.as_ref().map(|(f, _)| f));
    let (bytes, digest) = expand_archive(builder, job, ctx.net, ctx.build_dir, &mut tap)?;
    let failed = tap.failed;
    if let (Some(cache), Some((filler, validators)), ArchiveSource::Http { url, .. }) =
        (ctx.cache, fill, job.source)
    {
        match failed {
            Some(e) => cache.warn(&e),
            None => {
                let size = job.plan.archive_size.unwrap_or(0);
                cache.commit(filler, size, validators, url);
            }
        }
    }
    let name = data_path(job.dest);
    ctx.learn(&name, || Learnt::sha256(digest.clone()));
    ctx.reporter.item_done(&name, bytes, digest.as_deref());
    Ok(())
}
