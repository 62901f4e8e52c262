//! `--publish URL`: the download file (the compressed OUTPUT, else the raw
//! image) and its side files uploaded to an object store
//! (`s3://bucket/prefix/`, `gs://`, `az://`; credentials and endpoint
//! from the environment, as for the download cache).
//!
//! - At planning, [`Publisher::open`] reads the URL and
//!   [`Publisher::check`] asks the store for the image's key (a HEAD): an
//!   object there is refused unless `-X`, and a store that can't be
//!   reached or refuses us stops the build before anything is written.
//! - In step 7, [`Publisher::start`] begins the image's multipart upload
//!   and the output pass feeds it ([`ImageUpload::write`]) the bytes of
//!   the download file as they are written (no second read of the image).
//!   A failed upload never fails the pass: it is aborted (nothing appears
//!   at the key), the build goes on, and the failure is reported when the
//!   image has been published locally.
//! - After OUTPUT is published, [`ImageUpload::complete`]: the old
//!   `OUTPUT.json` goes first, then the image's upload completes, then the
//!   other side files (`OUTPUT.bmap`, `OUTPUT.torrent`) go up and stale
//!   ones of an earlier image are deleted, and `OUTPUT.json` goes up
//!   **last**: a consumer that waits for the JSON finds a complete set. A
//!   failure there deletes what this build put, so a failed publish leaves
//!   nothing at the keys.
//!
//! Objects are named `PREFIX/NAME`, NAME being the local file's name.
//! Every error names the object's URL.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::ExitKind;
use crate::objstore::{
    self, ClientError, PartSizes, Patience, RuntimeError, Upload, UploadError, UploadOptions,
};
use crate::progress::Reporter;

/// Parts uploading at once: 4 × 8 MiB (with the part being filled, 40 MiB
/// of memory up to ~75 GB images; parts grow past that, see
/// [`PartSizes::for_size`]).
const IN_FLIGHT: usize = 4;

/// Why publishing failed. Each names the URL of the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `--publish` is not a URL of an object store we open (exit 3).
    #[error("--publish {url}: {source}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// OUTPUT's file name can't name an object.
    #[error(
        "--publish {url}: the object's name would be OUTPUT's, {name:?}, which is not UTF-8 text"
    )]
    BadName {
        /// The URL as given.
        url: String,
        /// OUTPUT's file name.
        name: PathBuf,
    },
    /// An object is at the image's key and `-X` was not given (exit 3).
    #[error("{url} already exists (use -X/--overwrite to replace it)")]
    Exists {
        /// The object.
        url: String,
    },
    /// A request failed, after the client's retries.
    #[error("{url}: {action}: {source}")]
    Store {
        /// The object.
        url: String,
        /// What was being done.
        action: &'static str,
        /// The store's answer.
        #[source]
        source: object_store::Error,
    },
    /// The stores' runtime could not run a request.
    #[error("{url}: {}: {source}", source.action())]
    Runtime {
        /// The object.
        url: String,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// The image's upload failed (and was aborted).
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The upload took other bytes than the local file has (a bug: the
    /// upload is aborted rather than completed).
    #[error("{url}: {uploaded} bytes were uploaded, the file has {size}")]
    SizeMismatch {
        /// The object.
        url: String,
        /// Bytes the upload took.
        uploaded: u64,
        /// The local file's size.
        size: u64,
    },
    /// Publishing failed after the build: what was put is removed (or
    /// what could not be), the local OUTPUT is kept.
    #[error("{source}; not published ({cleanup}), {} is kept", output.display())]
    NotPublished {
        /// Why.
        #[source]
        source: Box<PublishError>,
        /// What became of the objects this build put.
        cleanup: String,
        /// The local OUTPUT.
        output: PathBuf,
    },
}

impl PublishError {
    /// The exit code class: a bad URL or an existing object is bad input
    /// (3); a store that can't be used at planning is unreachable (4); a
    /// failed upload after the build is a failure (1).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::BadUrl { .. } | Self::BadName { .. } | Self::Exists { .. } => ExitKind::BadInput,
            Self::Store { .. } | Self::Runtime { .. } => ExitKind::Unreachable,
            Self::Upload(_) | Self::SizeMismatch { .. } | Self::NotPublished { .. } => {
                ExitKind::Failure
            }
        }
    }
}

/// Where a build publishes: the store, the prefix, OUTPUT's name.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// The URL as given, without a trailing `/`.
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// OUTPUT's file name: the image object's name.
    name: String,
}

impl Publisher {
    /// The publisher of `output` to `url`, each request tried `attempts`
    /// times (`--attempts`), with the downloads' backoff: 1 s, doubling,
    /// at most 30 s between attempts. Nothing is asked of the store yet.
    pub fn open(url: &str, output: &FsPath, attempts: u32) -> Result<Self, PublishError> {
        // reqwest is built without a TLS provider of its own (as for the
        // downloads, src/fetch/http.rs): ring, process-wide.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let patience = Patience {
            attempts,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            retry_within: Duration::from_secs(600),
            // A part of 8 MiB in 300 s is 28 KB/s.
            request_timeout: Duration::from_secs(300),
        };
        let (store, prefix) =
            objstore::open(url, &patience).map_err(|source| PublishError::BadUrl {
                url: url.to_string(),
                source,
            })?;
        let file_name = output.file_name().unwrap_or(output.as_os_str());
        let name = file_name
            .to_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| PublishError::BadName {
                url: url.to_string(),
                name: PathBuf::from(file_name),
            })?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
            name: name.to_string(),
        })
    }

    /// The URL of object `name` (a local file's name).
    pub fn object_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// The image's URL.
    pub fn image_url(&self) -> String {
        self.object_url(&self.name)
    }

    /// The image object's name (OUTPUT's).
    pub fn image_name(&self) -> &str {
        &self.name
    }

    fn key(&self, name: &str) -> Path {
        self.prefix.clone().join(PathPart::from(name))
    }

    /// Run `f` on the stores' runtime, naming object `url` if it can't.
    fn run<F>(&self, url: &str, f: F) -> Result<F::Output, PublishError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        objstore::run(f).map_err(|source| PublishError::Runtime {
            url: url.to_string(),
            source,
        })
    }

    /// At planning: is there an object at the image's key? Refused unless
    /// `overwrite`. A store that can't answer (unreachable, refused
    /// credentials, errors after the retries) is an error now, before
    /// anything is built. (A missing bucket reads as a missing object to a
    /// HEAD: it shows when the upload starts.)
    pub fn check(&self, overwrite: bool) -> Result<(), PublishError> {
        let (store, key, url) = (
            Arc::clone(&self.store),
            self.key(&self.name),
            self.image_url(),
        );
        match self.run(&url, async move { store.head(&key).await })? {
            Ok(_) if !overwrite => Err(PublishError::Exists { url }),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(PublishError::Store {
                url,
                action: "checking for an existing object",
                source,
            }),
        }
    }

    /// In step 7: start the image's multipart upload, for a download file
    /// of about `size` bytes (the raw image's size: a compressed one is
    /// smaller), reported to `reporter` as an item named after its URL.
    pub fn start(
        &self,
        size: u64,
        output: &FsPath,
        reporter: &dyn Reporter,
    ) -> Result<ImageUpload, PublishError> {
        let url = self.image_url();
        let options = UploadOptions {
            parts: PartSizes::for_size(size),
            in_flight: IN_FLIGHT,
            hash: false,
        };
        let upload = Upload::start(
            Arc::clone(&self.store),
            self.key(&self.name),
            url.clone(),
            options,
        )?;
        reporter.item_started(&url, None);
        Ok(ImageUpload {
            publisher: self.clone(),
            output: output.to_path_buf(),
            url,
            upload: Some(upload),
            failed: None,
            reported: 0,
        })
    }

    /// Put `bytes` at object `name`.
    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), PublishError> {
        let (store, key, url) = (
            Arc::clone(&self.store),
            self.key(name),
            self.object_url(name),
        );
        let put = self.run(&url, async move {
            store.put(&key, PutPayload::from(bytes)).await.map(|_| ())
        })?;
        put.map_err(|source| PublishError::Store {
            url,
            action: "uploading",
            source,
        })
    }

    /// Delete object `name` (there or not).
    fn delete(&self, name: &str) -> Result<(), PublishError> {
        let (store, key, url) = (
            Arc::clone(&self.store),
            self.key(name),
            self.object_url(name),
        );
        match self.run(&url, async move { store.delete(&key).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(PublishError::Store {
                url,
                action: "deleting",
                source,
            }),
        }
    }
}

/// The image's upload, fed by the output pass.
#[derive(Debug)]
pub struct ImageUpload {
    publisher: Publisher,
    output: PathBuf,
    url: String,
    /// None once finished, or failed.
    upload: Option<Upload>,
    failed: Option<UploadError>,
    /// Uploaded bytes reported so far.
    reported: u64,
}

impl ImageUpload {
    /// The next bytes of the download file, at `offset`. Never an error:
    /// a failed upload has aborted itself, is reported (the item failed
    /// now, the error at [`ImageUpload::complete`]) and takes nothing
    /// more, so the local build goes on.
    pub fn write(&mut self, offset: u64, data: &[u8], reporter: &dyn Reporter) {
        let Some(up) = self.upload.as_mut() else {
            return;
        };
        match up.write(offset, data) {
            Ok(()) => {
                let now = up.uploaded();
                if now > self.reported {
                    reporter.item_progress(&self.url, now - self.reported);
                    self.reported = now;
                }
            }
            Err(e) => {
                // Shown now; the build goes on and fails at the end.
                reporter.item_failed(&self.url, &e.to_string());
                self.upload = None;
                self.failed = Some(e);
            }
        }
    }

    /// The build failed: abort the upload (nothing appears at the key).
    pub fn abort(mut self, reporter: &dyn Reporter) {
        if let Some(up) = self.upload.take() {
            if let Err(e) = up.abort() {
                reporter.warn(&format!(
                    "{e} (the bucket's lifecycle rule for incomplete multipart uploads removes its parts)"
                ));
            }
        }
    }

    /// After OUTPUT (of `size` bytes) is published locally: complete the
    /// image's upload and put the side files (`(local path, contents)`;
    /// each object is named after its file), `.json` last; delete the
    /// objects of `stale` suffixes (side files of an earlier image that
    /// this build does not write). On failure, what this build put is
    /// deleted.
    pub fn complete(
        mut self,
        size: u64,
        sides: &[(PathBuf, Vec<u8>)],
        stale: &[&str],
        reporter: &dyn Reporter,
    ) -> Result<(), PublishError> {
        let mut put = Vec::new();
        let failed_before = self.failed.is_some();
        let done = self.put_all(size, sides, stale, &mut put, reporter);
        let p = &self.publisher;
        let Err(e) = done else {
            return Ok(());
        };
        if !failed_before {
            reporter.item_failed(&self.url, &e.to_string());
        }
        let cleanup = if put.is_empty() {
            "nothing of this build is at its keys".to_string()
        } else {
            let left: Vec<String> = put
                .iter()
                .filter(|name| p.delete(name).is_err())
                .map(|name| p.object_url(name))
                .collect();
            if left.is_empty() {
                format!("the {} object(s) it had put are deleted", put.len())
            } else {
                format!("could not delete {}", left.join(", "))
            }
        };
        Err(PublishError::NotPublished {
            source: Box::new(e),
            cleanup,
            output: self.output.clone(),
        })
    }

    /// [`ImageUpload::complete`]'s steps, each name put recorded in `put`.
    fn put_all(
        &mut self,
        size: u64,
        sides: &[(PathBuf, Vec<u8>)],
        stale: &[&str],
        put: &mut Vec<String>,
        reporter: &dyn Reporter,
    ) -> Result<(), PublishError> {
        let p = self.publisher.clone();
        if let Some(e) = self.failed.take() {
            return Err(e.into());
        }
        let Some(up) = self.upload.take() else {
            return Ok(());
        };
        if up.written() != size {
            let uploaded = up.written();
            let _ = up.abort();
            return Err(PublishError::SizeMismatch {
                url: self.url.clone(),
                uploaded,
                size,
            });
        }
        let json = format!("{}.json", p.name);
        // Until the new JSON is up, no set at these keys looks complete.
        if let Err(e) = p.delete(&json) {
            let _ = up.abort();
            return Err(e);
        }
        let done = up.finish()?;
        put.push(p.name.clone());
        reporter.item_done(&self.url, done.size, None);
        let named: Vec<(String, &[u8])> = sides
            .iter()
            .filter_map(|(path, bytes)| {
                let name = path.file_name()?.to_str()?;
                Some((name.to_string(), bytes.as_slice()))
            })
            .collect();
        let (last, first): (Vec<_>, Vec<_>) = named.into_iter().partition(|(n, _)| *n == json);
        for (name, bytes) in &first {
            p.put(name, bytes.to_vec())?;
            put.push(name.clone());
            reporter.item_done(&p.object_url(name), len(bytes), None);
        }
        for suffix in stale {
            let name = format!("{}{suffix}", p.name);
            if name != json && !first.iter().any(|(n, _)| *n == name) {
                p.delete(&name)?;
            }
        }
        for (name, bytes) in &last {
            p.put(name, bytes.to_vec())?;
            put.push(name.clone());
            reporter.item_done(&p.object_url(name), len(bytes), None);
        }
        Ok(())
    }
}

fn len(b: &[u8]) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutResult,
    };
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::output::pass::run_pass;
    use crate::output::Compression;
    use crate::progress::Recorder;

    /// An in-memory store whose puts of `.json` objects fail while `fail`
    /// is set (a store that breaks between the image and its JSON).
    #[derive(Debug, Default)]
    struct JsonRefused {
        inner: InMemory,
        fail: AtomicBool,
    }

    impl std::fmt::Display for JsonRefused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JsonRefused")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for JsonRefused {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if self.fail.load(Ordering::Relaxed) && location.as_ref().ends_with(".json") {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "503 Slow Down".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn publisher(store: Arc<dyn ObjectStore>) -> Publisher {
        Publisher {
            url: "mem://b/p".into(),
            store,
            prefix: Path::from("p"),
            name: "o.img".into(),
        }
    }

    /// key → (last-modified, bytes).
    fn objects(store: &Arc<dyn ObjectStore>) -> std::collections::BTreeMap<String, (i64, Vec<u8>)> {
        use futures_util::StreamExt;
        let s = Arc::clone(store);
        objstore::run(async move {
            let mut out = std::collections::BTreeMap::new();
            let metas: Vec<_> = s.list(None).collect().await;
            for m in metas.into_iter().flatten() {
                let b = s.get(&m.location).await;
                if let Ok(b) = b {
                    let bytes = b.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    let when = m.last_modified.timestamp_nanos_opt().unwrap_or(0);
                    out.insert(m.location.to_string(), (when, bytes));
                }
            }
            out
        })
        .unwrap_or_default()
    }

    fn sides(bmap: bool) -> Vec<(PathBuf, Vec<u8>)> {
        let mut s = vec![(PathBuf::from("/x/o.img.json"), b"{}\n".to_vec())];
        if bmap {
            s.insert(0, (PathBuf::from("/x/o.img.bmap"), b"<bmap/>".to_vec()));
        }
        s
    }

    /// The image, then its side files, `.json` last; a stale side file of
    /// an earlier image gone; the key now refused without `-X`.
    #[test]
    fn a_publish_puts_the_image_and_its_sides_json_last() -> Result<(), PublishError> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = publisher(Arc::clone(&store));
        p.put("o.img.bmap", b"stale".to_vec())?;
        p.check(false)?;
        let r = Recorder::default();
        let image: Vec<u8> = (0..3 * MIN + 5)
            .map(|i| u8::try_from(i % 253).unwrap_or(0))
            .collect();
        let mut up = p.start(
            u64::try_from(image.len()).unwrap_or(0),
            FsPath::new("/x/o.img"),
            &r,
        )?;
        for (i, c) in image.chunks(1 << 20).enumerate() {
            up.write(u64::try_from(i << 20).unwrap_or(0), c, &r);
        }
        up.complete(
            u64::try_from(image.len()).unwrap_or(0),
            &sides(false),
            &[".json", ".bmap"],
            &r,
        )?;
        let got = objects(&store);
        let keys: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(keys, ["p/o.img", "p/o.img.json"], "the stale .bmap is gone");
        assert!(got["p/o.img"].1 == image);
        assert!(got["p/o.img.json"].0 >= got["p/o.img"].0);
        match p.check(false) {
            Err(e @ PublishError::Exists { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "mem://b/p/o.img already exists (use -X/--overwrite to replace it)"
                );
                assert_eq!(e.exit_kind(), ExitKind::BadInput);
            }
            other => panic!("{other:?}"),
        }
        p.check(true)?;
        let done: Vec<String> = r
            .events()
            .iter()
            .filter_map(|e| match e {
                crate::progress::Event::ItemDone { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(done, ["mem://b/p/o.img", "mem://b/p/o.img.json"]);
        Ok(())
    }

    /// A store that fails the JSON after the image and the bmap went up:
    /// both are deleted, the error names the JSON's URL and says OUTPUT is
    /// kept; a build that failed aborts its upload: nothing at the key.
    #[test]
    fn a_failed_publish_leaves_nothing_at_the_keys() -> Result<(), PublishError> {
        let faulty = Arc::new(JsonRefused::default());
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let p = publisher(Arc::clone(&store));
        let r = Recorder::default();
        let mut up = p.start(10, FsPath::new("/x/o.img"), &r)?;
        up.write(0, b"0123456789", &r);
        faulty.fail.store(true, Ordering::Relaxed);
        let e = up
            .complete(10, &sides(true), &[".json", ".bmap"], &r)
            .err()
            .map(|e| (e.to_string(), e.exit_kind()));
        let Some((msg, kind)) = e else {
            panic!("published")
        };
        assert!(
            msg.starts_with("mem://b/p/o.img.json: uploading: "),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "not published (the 2 object(s) it had put are deleted), /x/o.img is kept"
            ),
            "{msg}"
        );
        assert_eq!(kind, ExitKind::Failure);
        assert!(objects(&store).is_empty(), "{:?}", objects(&store).keys());

        let mut up = p.start(10, FsPath::new("/x/o.img"), &r)?;
        up.write(0, &vec![1u8; MIN + 1], &r);
        up.abort(&r);
        assert!(objects(&store).is_empty());

        // An upload that took other bytes than the file has is not
        // completed.
        faulty.fail.store(false, Ordering::Relaxed);
        let mut up = p.start(10, FsPath::new("/x/o.img"), &r)?;
        up.write(0, b"012345678", &r);
        let e = up
            .complete(10, &sides(false), &[], &r)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "mem://b/p/o.img: 9 bytes were uploaded, the file has 10; not published \
                 (nothing of this build is at its keys), /x/o.img is kept"
            )
        );
        assert!(objects(&store).is_empty());
        Ok(())
    }

    const MIN: usize = objstore::MIN_PART;

    /// The download file's bytes in order, as a sink of the pass gets them.
    struct Collect(Vec<u8>);

    impl crate::output::DownloadSink for Collect {
        fn name(&self) -> String {
            "collect".into()
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            assert_eq!(offset, u64::try_from(self.0.len()).unwrap_or(0), "in order");
            self.0.extend_from_slice(data);
            Ok(())
        }
        fn finish(&mut self, _len: u64) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The pass hands the download file's bytes over in order: a raw
    /// image's chunks (holes as zeros), or the compressed stream exactly
    /// as written to OUTPUT.
    #[test]
    fn the_pass_feeds_the_download_file_in_order() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir()?;
        let raw_path = dir.path().join("raw");
        let raw = std::fs::File::create_new(&raw_path)?;
        raw.write_all_at(&[5u8; 3 << 20], 1 << 20)?;
        raw.set_len(7 << 20)?;
        let raw = std::fs::File::open(&raw_path)?;
        let expected = std::fs::read(&raw_path)?;
        for out in [None, Some(Compression::Zstd { level: 3 })] {
            let zst = dir.path().join("out.zst");
            let file = std::fs::File::create(&zst)?;
            let mut got = Collect(Vec::new());
            let pass = crate::output::Pass {
                raw: &raw,
                raw_path: &raw_path,
                len: 7 << 20,
                image_sha256: false,
                map: None,
                compress: out.map(|how| crate::output::Compress {
                    file: &file,
                    path: &zst,
                    how,
                    threads: 1,
                }),
                download_sha256: true,
                sinks: vec![&mut got],
                raw_sinks: Vec::new(),
            };
            let pass = run_pass(pass, &|_| {})?;
            let want = if out.is_some() {
                std::fs::read(&zst)?
            } else {
                expected.clone()
            };
            assert!(got.0 == want, "{out:?}");
            assert_eq!(
                pass.download_sha256,
                Some(crate::io::hex(&Sha256::digest(&got.0)))
            );
        }
        Ok(())
    }
}
