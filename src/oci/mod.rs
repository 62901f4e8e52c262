//! OCI images (docs/spec.md §5): a registry client for the HTTP API v2, platform
//! selection, and a docker-archive writer that streams layers straight
//! into the image file. Planning resolves images with
//! [`Registry::resolve`]; the build pulls them with [`pull_all`];
//! `oci-sizes` is [`measure`].

mod archive;
mod platform;
mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use archive::{write_archive, ArchiveSink, ArchiveSizes, CountingSink, Fullsize, HeaderError};
pub use platform::{Platform, DEFAULT_PLATFORM};
pub use registry::{
    api_base, resolve_documents, Compression, Layer, Registry, Resolved, MAX_JSON, MAX_TOKEN,
};

use crate::config::OciReference;
use crate::error::ExitKind;
use crate::fetch::{HttpError, Net};
use crate::fs::ext4::{FileWriter, Ino};
use crate::progress::Reporter;

/// A failed pull; every variant names the image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// HTTP failure (status, transport, blob digest mismatch...).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The registry answered something we can't use.
    #[error("{image}: {message}")]
    Registry {
        /// Image.
        image: String,
        /// What was wrong.
        message: String,
    },
    /// The image has no manifest for the wanted platform.
    #[error("{image}: no image for platform {wanted}; it has: {available}")]
    NoPlatform {
        /// Image.
        image: String,
        /// Requested platform.
        wanted: String,
        /// Platforms the image has.
        available: String,
    },
    /// A format or algorithm we don't handle.
    #[error("{image}: unsupported {what}")]
    Unsupported {
        /// Image.
        image: String,
        /// What.
        what: String,
    },
    /// A document or uncompressed layer does not match its digest.
    #[error("{image}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Image.
        image: String,
        /// Which document.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// A layer could not be decoded.
    #[error("{image}: layer {digest}: {message}")]
    Layer {
        /// Image.
        image: String,
        /// Blob digest.
        digest: String,
        /// What failed.
        message: String,
    },
    /// The archive is larger than its reservation.
    #[error("{image}: the docker-archive is larger than the {reserved} bytes reserved for it (filesize + fullsize in the config); run `image-creator oci-sizes` and update them")]
    TooBig {
        /// Image.
        image: String,
        /// Bytes reserved.
        reserved: u64,
    },
    /// A member's tar header could not be made.
    #[error("{image}: writing the archive: {source}")]
    Header {
        /// Image.
        image: String,
        /// What was wrong.
        source: HeaderError,
    },
    /// Writing into the image failed.
    #[error("{image}: writing the archive: {message}")]
    Write {
        /// Image.
        image: String,
        /// What failed.
        message: String,
    },
}

impl OciError {
    /// The exit code class: an unreachable registry or a missing platform
    /// is 4, anything else 1.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Http(e) if e.is_unreachable() => ExitKind::Unreachable,
            Self::NoPlatform { .. } => ExitKind::Unreachable,
            _ => ExitKind::Failure,
        }
    }
}

/// An image to pull into its reserved file.
pub struct PullJob {
    /// The file's name (for progress).
    pub name: String,
    /// What to pull.
    pub image: Box<Resolved>,
    /// Its reservation.
    pub writer: FileWriter,
    /// Also receives every write (the download cache); its errors are its
    /// own business and never fail the pull.
    pub tap: Option<Arc<dyn ArchiveSink>>,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// Its file's inode.
    pub ino: Ino,
    /// The file's name.
    pub name: String,
    /// The archive's exact size (the caller shrinks the file to it).
    pub size: u64,
    /// The platform manifest's digest.
    pub digest: String,
}

/// Pull every job, `concurrency` at a time, into its file.
pub fn pull_all(
    net: &Net,
    jobs: Vec<PullJob>,
    concurrency: usize,
    reporter: &dyn Reporter,
) -> Result<Vec<Pulled>, OciError> {
    let registry = Registry::new(net.http.clone());
    let mut tracked = Vec::with_capacity(jobs.len());
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (dest, img) = (job.name, job.image);
            let sink = Arc::new(Counted {
                inner: job.writer,
                tap: job.tap,
                high: AtomicU64::new(0),
            });
            tracked.push((dest.clone(), sink.clone(), 0u64));
            (dest, img, sink)
        })
        .collect();
    let results: Vec<Result<Pulled, OciError>> = net.rt.block_on(async {
        use futures_util::stream::StreamExt;
        let work = futures_util::stream::iter(jobs.into_iter().map(|(dest, img, sink)| {
            let registry = &registry;
            async move {
                reporter.item_started(&dest, Some(sink.inner.size()));
                let ino = sink.inner.ino();
                let sizes = write_archive(registry, &img, sink, Fullsize::Skip).await?;
                Ok(Pulled {
                    ino,
                    name: dest,
                    size: sizes.filesize,
                    digest: img.manifest_digest.clone(),
                })
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>();
        // Bytes written so far, reported every PROGRESS_TICK while the
        // pulls run (writes happen on decoder threads).
        let ticker = async {
            loop {
                tokio::time::sleep(PROGRESS_TICK).await;
                for (name, sink, reported) in &mut tracked {
                    let high = sink.high.load(Ordering::Relaxed);
                    if high > *reported {
                        reporter.item_progress(name, high - *reported);
                        *reported = high;
                    }
                }
            }
        };
        let (work, ticker) = (std::pin::pin!(work), std::pin::pin!(ticker));
        match futures_util::future::select(work, ticker).await {
            futures_util::future::Either::Left((done, _)) => done,
            futures_util::future::Either::Right((_, work)) => work.await,
        }
    });
    results.into_iter().collect()
}

/// How often the bytes written by image pulls are reported.
const PROGRESS_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// A reserved file that remembers how far into it the archive has been
/// written (the high-water mark), for progress.
struct Counted {
    inner: FileWriter,
    tap: Option<Arc<dyn ArchiveSink>>,
    high: AtomicU64,
}

impl ArchiveSink for Counted {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner
            .write_at(offset, data)
            .map_err(std::io::Error::other)?;
        if let Some(t) = &self.tap {
            // The tap's errors are its own (see PullJob::tap).
            let _ = t.write_at(offset, data);
        }
        self.high
            .fetch_max(offset.saturating_add(data.len() as u64), Ordering::Relaxed);
        Ok(())
    }
    fn capacity(&self) -> u64 {
        self.inner.size()
    }
}

/// `oci-sizes`: pull `ident` for `platform` without writing anything and
/// return (`filesize`, `fullsize`).
pub fn measure(
    ident: &OciReference,
    platform: &Platform,
    net: &Net,
) -> Result<ArchiveSizes, OciError> {
    let registry = Registry::new(net.http.clone());
    net.block_on(async {
        let img = registry.resolve(ident, platform).await?;
        write_archive(&registry, &img, Arc::new(CountingSink), Fullsize::Measure).await
    })
}
