//! Object storage (`s3://`, `gs://`, `az://`) for the layers above: the
//! download cache on a bucket (the `cache` module) and publishing a build
//! (`output::publish`). One client setup ([`open`]: the URL's
//! scheme, credentials and endpoint from the standard environment, our
//! timeouts, retries, trust roots and resolver), one runtime every store
//! call runs on ([`runtime`]), and one streaming multipart upload
//! ([`Upload`]) fed in order from another thread's bytes.

pub mod client;
pub mod runtime;
pub mod upload;

pub use client::{is_url, open, ClientError, Patience};
pub use runtime::{run, RuntimeError};
pub use upload::{PartSizes, Upload, UploadError, UploadOptions, Uploaded, MIN_PART};
