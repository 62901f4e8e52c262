//! [`DownloadSink`]: one consumer of a stream of the output pass, in
//! order, on a thread of its own (docs/design.md "Output stage").
//!
//! The pass has two streams: the raw image, read once, and the download
//! file (what people fetch: the compressed OUTPUT as the encoder writes
//! it, or for a raw OUTPUT the raw image itself). The download file's
//! consumers are its sha256, the compressed file on disk, the torrent's
//! pieces and, plugged in the same way, an upload; the raw image's are
//! its sha256, the bmap's range hashes and the encoder. All take their
//! bytes through this trait, so adding one never adds a read.

/// A consumer of one stream of the pass. The pass calls [`write`] with
/// consecutive pieces of the stream (each `offset` is where the last
/// ended), then [`finish`] once, after the last byte, only when the whole
/// stream was delivered; when the pass fails instead (the read, or
/// another consumer), [`abort`] is called and `finish` never is.
///
/// [`write`]: DownloadSink::write
/// [`finish`]: DownloadSink::finish
/// [`abort`]: DownloadSink::abort
pub trait DownloadSink: Send {
    /// What it is, for errors: "the torrent's pieces", "writing out.img.zst".
    fn name(&self) -> String;

    /// The next `data`, at `offset` of the stream.
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;

    /// The stream ended, `len` bytes long: complete what the sink makes
    /// (a digest, a multipart upload). Its error fails the build.
    fn finish(&mut self, len: u64) -> std::io::Result<()>;

    /// The pass failed: undo what the sink started (an upload is aborted,
    /// so nothing appears). Default: nothing to undo.
    fn abort(&mut self) {}
}

/// The `offset` a sink was given is not where the last write ended: a bug
/// of the pass, refused rather than hashed out of order.
pub fn out_of_order(expected: u64, got: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("out of order: expected byte {expected}, got byte {got}"),
    )
}
