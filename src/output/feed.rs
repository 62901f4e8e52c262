//! [`fan_out`]: one stream, produced on the caller's thread through a
//! [`Feed`], handed to [`DownloadSink`]s that each run on a thread of
//! their own behind a bounded channel ([`super::chunk`]). The output pass
//! reads the finished image through it; `flash` feeds it a decoded
//! source and hangs a device on each sink. Memory: a few 1 MiB chunks
//! per consumer, whatever the stream's length.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::chunk::{first_cause, join_all, Chunk, Fanout, Pool, CHUNK, DEPTH};
use super::error::PassError;
use super::sink::DownloadSink;
use crate::os::blockdev::AlignedBuf;

/// The producing end of a stream: chunks go out in order, each to every
/// consumer; `progress` hears of every byte sent.
pub struct Feed<'p> {
    fan: Fanout,
    pool: Pool,
    at: u64,
    progress: &'p dyn Fn(u64),
}

impl<'p> Feed<'p> {
    /// The producing end of `fan`, from offset 0.
    pub(super) fn new(fan: Fanout, progress: &'p dyn Fn(u64)) -> Self {
        Self {
            fan,
            pool: Pool::new(),
            at: 0,
            progress,
        }
    }

    /// The stream ends here.
    pub(super) fn end(self) -> Result<u64, PassError> {
        let len = self.at;
        self.fan.end(len)?;
        Ok(len)
    }

    /// Bytes sent so far: where the next chunk starts.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// `n` (at most [`CHUNK`]) bytes of `buf` (from [`Feed::buffer`]).
    fn send(&mut self, buf: AlignedBuf, n: usize) -> Result<(), PassError> {
        let chunk = self.pool.chunk(self.at, buf, n);
        self.push(&chunk, n)
    }

    /// `chunk` (`n` bytes, at [`Feed::position`]) out to every consumer.
    fn push(&mut self, chunk: &Chunk, n: usize) -> Result<(), PassError> {
        self.fan.send(chunk)?;
        (self.progress)(n as u64);
        self.at += n as u64;
        Ok(())
    }

    /// Zeros up to `to` (a hole, never read: one shared chunk of zeros).
    pub fn zeros_to(&mut self, to: u64) -> Result<(), PassError> {
        while self.at < to {
            let n = usize::try_from((to - self.at).min(CHUNK as u64)).unwrap_or(CHUNK);
            self.fan.send(&self.pool.zeros(self.at, n))?;
            (self.progress)(n as u64);
            self.at += n as u64;
        }
        Ok(())
    }

    /// Everything `r` gives until its end, at most `limit` bytes; an error
    /// of `r` names `what` and the offset.
    pub fn read_from(
        &mut self,
        r: &mut dyn Read,
        what: &Path,
        limit: u64,
    ) -> Result<(), PassError> {
        loop {
            let room = limit.saturating_sub(self.at).min(CHUNK as u64);
            let room = usize::try_from(room).unwrap_or(CHUNK);
            let mut buf = self.pool.take();
            let mut n = 0;
            while n < room {
                match r.read(&mut buf[n..room]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(PassError::Read {
                            path: what.to_path_buf(),
                            offset: self.at + n as u64,
                            source,
                        })
                    }
                }
            }
            if n == 0 {
                return Ok(());
            }
            self.send(buf, n)?;
            if n < room || self.at >= limit {
                return Ok(());
            }
        }
    }

    /// The data `regions` of `file` (`len` bytes, `path` in errors) read
    /// in chunks; the holes between them sent as zeros, never read.
    pub fn copy_regions(
        &mut self,
        file: &File,
        path: &Path,
        len: u64,
        regions: &[(u64, u64)],
    ) -> Result<(), PassError> {
        self.walk(len, regions, |feed, end| feed.read_to(file, path, end))
    }

    /// The holes before, between and after `regions` (up to `len`) sent
    /// as zeros; each region's data sent by `data(self, its end)`.
    fn walk(
        &mut self,
        len: u64,
        regions: &[(u64, u64)],
        mut data: impl FnMut(&mut Self, u64) -> Result<(), PassError>,
    ) -> Result<(), PassError> {
        for &(rs, re) in regions {
            let (rs, re) = (rs.max(self.at).min(len), re.min(len));
            self.zeros_to(rs)?;
            data(self, re)?;
        }
        self.zeros_to(len)
    }

    /// `file`'s bytes from here to `end`, read in chunks.
    fn read_to(&mut self, file: &File, path: &Path, end: u64) -> Result<(), PassError> {
        while self.at < end {
            let n = usize::try_from((end - self.at).min(CHUNK as u64)).unwrap_or(CHUNK);
            let mut buf = self.pool.take();
            file.read_exact_at(&mut buf[..n], self.at)
                .map_err(|source| PassError::Read {
                    path: path.to_path_buf(),
                    offset: self.at,
                    source,
                })?;
            self.send(buf, n)?;
        }
        Ok(())
    }
}

/// Bytes mapped at a time by [`Feed::map_regions`]: as many as the
/// chunks queued before a consumer, so a few windows are mapped at once
/// (their pages count in the RSS while they are), whatever the file's size.
pub(super) const WINDOW: usize = DEPTH * CHUNK;

impl Feed<'_> {
    /// [`Feed::copy_regions`] without the copy: each window of the data
    /// regions is mapped ([`crate::os::map_in`]) and its chunks are views
    /// of the page cache the consumers read in place; a window the
    /// platform can't map, or whose pages can't all be read, is read into
    /// buffers as `copy_regions` does (which then reports the error with
    /// its offset).
    ///
    /// # Safety
    /// Nothing may write to or truncate `file` until the stream's last
    /// chunk is dropped (for the pass: until [`fan_out`]'s consumers are
    /// joined).
    #[allow(unsafe_code)]
    pub(super) unsafe fn map_regions(
        &mut self,
        file: &File,
        path: &Path,
        len: u64,
        regions: &[(u64, u64)],
    ) -> Result<(), PassError> {
        self.walk(len, regions, |feed, end| {
            while feed.at < end {
                let n = usize::try_from((end - feed.at).min(WINDOW as u64)).unwrap_or(WINDOW);
                // SAFETY: the caller's promise covers the whole file.
                let Some(map) = (unsafe { crate::os::map_in(file, feed.at, n) }) else {
                    feed.read_to(file, path, feed.at + n as u64)?;
                    continue;
                };
                let map = std::sync::Arc::new(map);
                let mut at = 0;
                while at < n {
                    let k = (n - at).min(CHUNK);
                    feed.push(&Chunk::mapped(feed.at, &map, at, k), k)?;
                    at += k;
                }
            }
            Ok(())
        })
    }
}

/// Start a thread per sink, run `produce` on this one, end the stream
/// where it stopped, wait for them all. The stream's length, or the first
/// error that is a cause, not a consequence (a consumer's error before the
/// producer's "stopped", a producer's error before the consumers'
/// aborts). A sink that must not stop the others (a card that fails)
/// keeps its error to itself and goes on taking chunks.
pub fn fan_out(
    sinks: Vec<&mut dyn DownloadSink>,
    progress: &dyn Fn(u64),
    produce: impl FnOnce(&mut Feed<'_>) -> Result<(), PassError>,
) -> Result<u64, PassError> {
    let mut fan = Fanout::new();
    let wired: Vec<_> = sinks.into_iter().map(|s| fan.connect(s)).collect();
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        let mut started = Ok(());
        for w in wired {
            match w.spawn(s) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let produced = started.and_then(|()| {
            let mut feed = Feed::new(fan, progress);
            produce(&mut feed)?;
            feed.end()
        });
        // (On an error the fan-out was dropped without its end: every
        // consumer aborts.)
        let len = produced.as_ref().ok().copied().unwrap_or(0);
        first_cause([join_all(threads), produced.map(|_| ())]).map(|()| len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        got: Vec<u8>,
        end: Option<u64>,
        aborted: bool,
    }

    impl DownloadSink for Collect {
        fn name(&self) -> String {
            "collect".into()
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            assert_eq!(offset, self.got.len() as u64);
            self.got.extend_from_slice(data);
            Ok(())
        }
        fn finish(&mut self, len: u64) -> std::io::Result<()> {
            self.end = Some(len);
            Ok(())
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    #[test]
    fn a_read_stream_reaches_every_sink_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 77)
            .map(|i| u8::try_from(i % 253).unwrap_or(0))
            .collect();
        let (mut a, mut b) = (Collect::default(), Collect::default());
        let seen = std::sync::atomic::AtomicU64::new(0);
        let len = fan_out(
            vec![&mut a, &mut b],
            &|n| {
                seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
            |feed| {
                // A reader that gives odd-sized pieces.
                let mut r = std::io::Read::chain(&data[..1000], &data[1000..]);
                feed.read_from(&mut r, Path::new("src"), u64::MAX)?;
                feed.zeros_to(feed.position() + 5)
            },
        )
        .expect("fan out");
        assert_eq!(len, data.len() as u64 + 5);
        assert_eq!(seen.into_inner(), len);
        for s in [&a, &b] {
            assert_eq!(&s.got[..data.len()], &data[..]);
            assert_eq!(&s.got[data.len()..], &[0; 5]);
            assert_eq!((s.end, s.aborted), (Some(len), false));
        }
    }

    #[test]
    fn a_limit_stops_the_read_and_a_failed_producer_aborts_the_sinks() {
        let data = vec![9u8; 3 * CHUNK];
        let mut a = Collect::default();
        let len = fan_out(vec![&mut a], &|_| {}, |feed| {
            feed.read_from(&mut &data[..], Path::new("src"), CHUNK as u64 + 3)
        })
        .expect("fan out");
        assert_eq!(len, CHUNK as u64 + 3);
        let mut b = Collect::default();
        let e = fan_out(vec![&mut b], &|_| {}, |feed| {
            feed.zeros_to(10)?;
            let mut broken = std::io::Read::chain(&b"xy"[..], Failing);
            feed.read_from(&mut broken, Path::new("the source"), u64::MAX)
        })
        .expect_err("the read failed");
        assert!(matches!(&e, PassError::Read { offset: 12, .. }), "{e}");
        assert!(b.aborted && b.end.is_none());
    }

    /// The same stream from the page cache in place and from reads: a
    /// sparse file whose data regions start and end off page boundaries
    /// and span several windows, the holes sent as zeros.
    #[test]
    #[allow(unsafe_code)]
    fn mapped_regions_stream_what_reads_do() {
        use std::os::unix::fs::FileExt;
        let f = tempfile::tempfile().expect("tempfile");
        let len = 3 * WINDOW + 5 * CHUNK + 123;
        let pattern = |at: usize| u8::try_from(at % 251).unwrap_or(0) + 1;
        let spans = [
            (5000, 8000),
            (WINDOW - 7, WINDOW + 2 * CHUNK + 11),
            (len - 4099, len),
        ];
        for &(s, e) in &spans {
            let bytes: Vec<u8> = (s..e).map(pattern).collect();
            f.write_all_at(&bytes, s as u64).expect("write");
        }
        f.set_len(len as u64).expect("length");
        let regions: Vec<(u64, u64)> = spans.iter().map(|&(s, e)| (s as u64, e as u64)).collect();
        let (mut read, mut mapped) = (Collect::default(), Collect::default());
        let path = Path::new("img");
        fan_out(vec![&mut read], &|_| {}, |feed| {
            feed.copy_regions(&f, path, len as u64, &regions)
        })
        .expect("read");
        let seen = std::sync::atomic::AtomicU64::new(0);
        let n = fan_out(
            vec![&mut mapped],
            &|n| {
                seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
            // SAFETY: nothing else has the file.
            |feed| unsafe { feed.map_regions(&f, path, len as u64, &regions) },
        )
        .expect("mapped");
        assert_eq!((n, seen.into_inner()), (len as u64, len as u64));
        assert_eq!(read.got.len(), len);
        assert!(mapped.got == read.got, "the two streams differ");
        for &(s, e) in &spans {
            assert!(mapped.got[s..e]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(s + i)));
        }
        assert!(mapped.got[..5000].iter().all(|&b| b == 0));
    }

    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("bad sector"))
        }
    }
}
