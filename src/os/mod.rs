//! The platform layer: every call whose form depends on the operating
//! system, each behind one function with a portable fallback.
//!
//! | function | Linux | macOS | fallback |
//! |---|---|---|---|
//! | [`punch_hole`] | `fallocate(PUNCH_HOLE \| KEEP_SIZE)` | `fcntl(F_PUNCHHOLE)`, block-aligned ranges | none: the caller writes zeros |
//! | [`data_regions`], [`data_bytes`] | `lseek(SEEK_DATA / SEEK_HOLE)` | the same | the whole file is data |
//! | [`KEEPS_HOLES`] | true | true | false: every byte of a file may be allocated |
//! | [`copy_range`] | `copy_file_range(2)` (in-kernel, reflinks or server-side copies where the filesystem can) | positional read/write | positional read/write |
//! | [`reflink`] | `ioctl(FICLONE)` | none (`clonefile(2)` works on paths only) | none: the caller copies |
//! | [`clone_range`], [`clone_or_copy`] | `ioctl(FICLONERANGE)` (XFS, btrfs: the ranges share blocks) | none | none: [`clone_or_copy`] copies ([`copy_range`]) |
//! | [`drop_cache`] | `posix_fadvise(DONTNEED)` | `fcntl(F_NOCACHE)` | nothing |
//! | [`will_need`] | `posix_fadvise(WILLNEED)` | nothing (the kernel's own readahead) | nothing |
//! | [`raw_device_path`] | the path | `/dev/diskN` → `/dev/rdiskN` | the path |
//! | [`blockdev::open_direct`] | `open(O_DIRECT)` | none | none: the caller uses a plain descriptor |
//! | [`map_in`] | `mmap(PROT_READ, MAP_SHARED)` + `madvise(MADV_POPULATE_READ)` | none | none: the caller reads |
//!
//! [`blockdev`] holds what a whole-disk device needs before it is written
//! (the refusals, read from `/proc` and `/sys`, which elsewhere find
//! nothing; the exclusive open; aligned buffers for direct I/O).
//! Not here: `O_TMPFILE` (the output's creation in `build`), `statvfs`
//! (POSIX, the same call everywhere through rustix). There are no
//! block-device ioctls in the crate.
//!
//! **Feature `portable`** compiles every fallback in place of the Linux
//! calls, so the code a platform without them runs is built and tested
//! here: CI runs the test suite once with `--features portable`
//! (`.ci/run`). The macOS column is compiled on macOS only; each of its
//! calls is one system call, and the logic around it (alignment, the
//! region walk, the `/dev/rdiskN` mapping) is shared code tested here.

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable")
))]
mod linux;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable")
))]
use linux as native;

#[cfg(all(target_vendor = "apple", not(feature = "portable")))]
mod apple;
#[cfg(all(target_vendor = "apple", not(feature = "portable")))]
use apple as native;

mod portable;
#[cfg(any(
    feature = "portable",
    not(any(target_os = "linux", target_os = "android", target_vendor = "apple"))
))]
use portable as native;

#[cfg(all(
    any(target_os = "linux", target_os = "android", target_vendor = "apple"),
    not(feature = "portable")
))]
mod seek;

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable")
))]
mod mapped;

pub mod blockdev;
mod device;
mod regions;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use portable::COPY_BUFFER;

/// Which implementation this build uses: `"linux"`, `"macos"` or
/// `"portable"` (for logs and tests).
pub const BACKEND: &str = native::NAME;

/// Make `[offset, offset + len)` of `file` read as zeros without writing
/// them, keeping the file's size. False when the platform or the
/// filesystem can't (or the range does not suit it): the caller then
/// writes zeros, which also reports real I/O errors with their path.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    len == 0 || native::punch_hole(file, offset, len)
}

/// The `[start, end)` byte ranges of `file` that hold data, up to `len`,
/// in order. Where the platform or filesystem can't tell, the whole file
/// is one region.
pub fn data_regions(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    native::data_regions(file, len)
}

/// Bytes in the data regions of `file` up to `len`: what copying it by
/// its regions writes (and what it occupies, give or take the
/// filesystem's block rounding). Holds no list of regions. Where the
/// platform can't tell, `len`.
pub fn data_bytes(file: &File, len: u64) -> std::io::Result<u64> {
    native::data_bytes(file, len)
}

/// Whether files this build writes keep their holes: false with the
/// portable fallbacks (no hole punching, no `SEEK_DATA`), where an image
/// must be counted at its apparent size, every byte of it possibly
/// allocated.
pub const KEEPS_HOLES: bool = native::KEEPS_HOLES;

/// Copy `len` bytes of `src` at `src_offset` to `dst` at `dst_offset`
/// (positional: neither file's cursor is used), in the kernel where the
/// platform can. A source shorter than `src_offset + len` is an
/// `UnexpectedEof` error naming the offset.
pub fn copy_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<()> {
    native::copy_range(src, src_offset, dst, dst_offset, len)
}

/// Make `len` bytes of `dst` at `dst_offset` share the blocks of `src` at
/// `src_offset` (copy-on-write, nothing written): `Ok(false)` when this
/// platform, filesystem or pair of files can't, or the range is not
/// aligned to the filesystem's blocks as it requires.
pub fn clone_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<bool> {
    native::clone_range(src, src_offset, dst, dst_offset, len)
}

/// [`copy_range`] that shares blocks where it can: the part of the range
/// aligned to `block` bytes on both sides is cloned ([`clone_range`]);
/// an unaligned head and tail, and everything when the filesystem can't
/// clone or the two offsets are not aligned alike, are copied. Returns the
/// bytes cloned (0 everywhere reflinks don't exist: then it is exactly
/// [`copy_range`]).
pub fn clone_or_copy(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
    block: u64,
) -> std::io::Result<u64> {
    let Some((head, body)) = clone_split(src_offset, dst_offset, len, block) else {
        copy_range(src, src_offset, dst, dst_offset, len)?;
        return Ok(0);
    };
    let (s, d) = (
        src_offset.saturating_add(head),
        dst_offset.saturating_add(head),
    );
    if !clone_range(src, s, dst, d, body)? {
        copy_range(src, src_offset, dst, dst_offset, len)?;
        return Ok(0);
    }
    copy_range(src, src_offset, dst, dst_offset, head)?;
    let (after, rest) = (
        head.saturating_add(body),
        len.saturating_sub(head.saturating_add(body)),
    );
    copy_range(
        src,
        src_offset.saturating_add(after),
        dst,
        dst_offset.saturating_add(after),
        rest,
    )?;
    Ok(body)
}

/// Whether files in `dir` can share blocks with `other` ([`clone_range`]
/// between them works): `other` is on the same filesystem as `dir` (the
/// same device), and two unnamed files made in `dir` (gone at once, never
/// visible) clone a block. Asked once per build, before deciding whether a
/// download is written once and cloned (XFS with reflinks, btrfs) or
/// written twice (anywhere else).
pub fn can_clone(dir: &Path, other: &File) -> bool {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let (Ok(d), Ok(o)) = (std::fs::metadata(dir), other.metadata()) else {
        return false;
    };
    if d.dev() != o.dev() {
        return false;
    }
    let (Ok(a), Ok(b)) = (tempfile::tempfile_in(dir), tempfile::tempfile_in(dir)) else {
        return false;
    };
    let data = vec![1u8; portable::PROBE_BLOCK];
    let block = u64::try_from(data.len()).unwrap_or(0);
    a.write_all_at(&data, 0).is_ok()
        && b.set_len(block).is_ok()
        && clone_range(&a, 0, &b, 0, block).unwrap_or(false)
}

/// For [`clone_or_copy`]: the bytes to copy before the clonable body and
/// the body's length, a positive multiple of `block`; `None` when nothing
/// can be cloned (offsets aligned differently, a range shorter than a
/// block, no block size).
fn clone_split(src_offset: u64, dst_offset: u64, len: u64, block: u64) -> Option<(u64, u64)> {
    if block == 0 || src_offset % block != dst_offset % block {
        return None;
    }
    let head = (block - src_offset % block) % block;
    let body = len.checked_sub(head)? / block * block;
    (body > 0).then_some((head, body))
}

/// Make `dst` share `src`'s blocks (copy-on-write), replacing its
/// contents. False when the platform or filesystem can't (different
/// filesystems, no reflink support): the caller copies instead.
pub fn reflink(src: &File, dst: &File) -> bool {
    native::reflink(src, dst)
}

/// Tell the kernel that the cached bytes of `file` won't be read again
/// soon (a base image read once, an output written once). Advisory: false
/// when nothing was done. On macOS this also turns caching off for the
/// file's later reads and writes (`F_NOCACHE`).
pub fn drop_cache(file: &File) -> bool {
    native::drop_cache(file)
}

/// Ask the kernel to start reading `len` bytes of `file` at `offset` into
/// the cache now, ahead of the reads that will want them. Advisory: false
/// when nothing was done.
pub fn will_need(file: &File, offset: u64, len: u64) -> bool {
    native::will_need(file, offset, len)
}

/// Bytes of a file seen in place ([`map_in`]); unmapped when dropped.
pub struct Mapped(native::Mapped);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// `len` bytes of `file` at `offset`, mapped read-only and paged in (from
/// the page cache where they are, else from the disk), so that a reader
/// sees them without copying them: the output pass over a finished image.
/// `None` when the platform can't, the file is shorter, or a page can't be
/// read (the caller then reads the range, and `read(2)` reports the error
/// with its offset). Memory: the pages are the page cache's; mapped, they
/// count in the process's RSS until the mapping drops.
///
/// # Safety
/// Nothing may write to or truncate that range of `file` while the
/// mapping lives (the bytes are handed out as `&[u8]`; a truncated page
/// would raise SIGBUS). A file this build finished and now only reads
/// (the output pass's raw image) qualifies.
#[allow(unsafe_code)]
pub unsafe fn map_in(file: &File, offset: u64, len: usize) -> Option<Mapped> {
    // SAFETY: the caller's promise, passed on.
    unsafe { native::map_in(file, offset, len) }.map(Mapped)
}

/// Bytes [`ReadAhead`] asks for ahead of its reads.
const AHEAD: u64 = 64 << 20;

/// Sequential reads of a local file that keep [`will_need`] 32 to 64 MiB
/// ahead of them: a cold archive's pre-scan parses while the disk reads
/// at its own speed, instead of waiting on every small readahead window.
/// Memory: the page cache's, never more than the window ahead.
#[derive(Debug)]
pub struct ReadAhead<'a> {
    file: &'a File,
    pos: u64,
    advised: u64,
}

impl<'a> ReadAhead<'a> {
    /// Read `file` from its current offset (0 for a file just opened).
    pub fn new(file: &'a File) -> Self {
        Self {
            file,
            pos: 0,
            advised: 0,
        }
    }
}

impl std::io::Read for ReadAhead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos.saturating_add(AHEAD / 2) >= self.advised {
            let from = self.advised.max(self.pos);
            will_need(self.file, from, AHEAD);
            self.advised = from.saturating_add(AHEAD);
        }
        let mut f = self.file;
        let n = f.read(buf)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

/// The path to open for raw I/O on `path`: on macOS, the character
/// device `/dev/rdiskN` of a `/dev/diskN` (unbuffered, many times
/// faster for whole-disk writes); elsewhere `path` itself.
pub fn raw_device_path(path: &Path) -> PathBuf {
    if native::RAW_DISKS {
        device::rdisk_of(path).unwrap_or_else(|| path.to_path_buf())
    } else {
        path.to_path_buf()
    }
}

/// True when `offset` and `len` are multiples of `block` (a positive
/// block size): the ranges macOS's `F_PUNCHHOLE` accepts.
#[cfg_attr(
    not(all(target_vendor = "apple", not(feature = "portable"))),
    allow(dead_code)
)]
fn aligned(offset: u64, len: u64, block: u64) -> bool {
    block > 0 && offset.is_multiple_of(block) && len.is_multiple_of(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn clone_split_takes_the_aligned_body() {
        let b = 4096;
        // Aligned alike: the head up to the next block, whole blocks, a tail.
        assert_eq!(clone_split(0, 8192, 10_000, b), Some((0, 8192)));
        assert_eq!(clone_split(100, 4196, 20_000, b), Some((3996, 12_288)));
        assert_eq!(clone_split(0, 100, 1 << 20, b), None, "aligned differently");
        assert_eq!(clone_split(0, 0, 4095, b), None, "shorter than a block");
        assert_eq!(clone_split(0, 0, 1 << 20, 0), None);
    }

    #[test]
    fn clone_or_copy_gives_the_bytes_wherever_it_runs() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| u8::try_from(i % 253).unwrap_or(0))
            .collect();
        let src = file_with(&[(0, &data)], data.len() as u64);
        let dst = file_with(&[], 200_000);
        let cloned = clone_or_copy(&src, 0, &dst, 8192, data.len() as u64, 4096).expect("copy");
        assert!(cloned <= 98_304, "{cloned}");
        let back = read_all(&dst, 200_000);
        assert_eq!(&back[8192..8192 + data.len()], &data[..]);
        assert!(back[..8192].iter().all(|&b| b == 0));
    }

    #[test]
    fn alignment_rule() {
        assert!(aligned(0, 4096, 4096));
        assert!(aligned(8192, 4096 * 3, 4096));
        assert!(!aligned(512, 4096, 4096));
        assert!(!aligned(4096, 100, 4096));
        assert!(!aligned(0, 0, 0), "a zero block size is never aligned");
    }

    fn file_with(bytes: &[(u64, &[u8])], len: u64) -> File {
        let f = tempfile::tempfile().expect("tmp");
        f.set_len(len).expect("len");
        for (at, b) in bytes {
            f.write_all_at(b, *at).expect("write");
        }
        f
    }

    fn read_all(f: &File, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    #[test]
    fn a_punched_range_reads_as_zeros_and_keeps_the_size() {
        let f = file_with(&[(0, &[0xaa; 1 << 20])], 1 << 20);
        if punch_hole(&f, 64 << 10, 128 << 10) {
            let all = read_all(&f, 1 << 20);
            assert!(all[..64 << 10].iter().all(|&b| b == 0xaa));
            assert!(all[64 << 10..192 << 10].iter().all(|&b| b == 0));
            assert!(all[192 << 10..].iter().all(|&b| b == 0xaa));
        }
        assert_eq!(f.metadata().expect("meta").len(), 1 << 20);
        assert!(punch_hole(&f, 5, 0), "an empty range needs nothing");
    }

    #[test]
    fn data_regions_cover_every_data_byte() {
        let len = 64u64 << 20;
        let f = file_with(&[(10 << 20, b"x"), (40 << 20, b"y")], len);
        let regions = data_regions(&f, len).expect("regions");
        for at in [10u64 << 20, 40 << 20] {
            assert!(
                regions.iter().any(|&(a, b)| a <= at && at < b),
                "{regions:?}"
            );
        }
        assert!(regions.windows(2).all(|w| w[0].1 <= w[1].0), "{regions:?}");
        assert!(
            regions.iter().all(|&(a, b)| a < b && b <= len),
            "{regions:?}"
        );
    }

    #[test]
    fn copy_range_copies_between_offsets() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let src = file_with(&[(1000, &data)], 1000 + data.len() as u64);
        let dst = file_with(&[], 0);
        copy_range(&src, 1000, &dst, 77, data.len() as u64).expect("copy");
        let back = read_all(&dst, 77 + data.len());
        assert!(back[..77].iter().all(|&b| b == 0));
        assert_eq!(&back[77..], &data[..]);
        let e = copy_range(&src, 1000, &dst, 0, data.len() as u64 + 1).expect_err("short");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("301000"), "{e}");
    }

    #[test]
    fn a_reflink_makes_equal_contents() {
        let src = file_with(&[(0, b"shared blocks")], 4096);
        let dst = file_with(&[(0, b"old")], 3);
        if reflink(&src, &dst) {
            assert_eq!(read_all(&dst, 4096), read_all(&src, 4096));
        } else {
            assert_eq!(
                read_all(&dst, 3),
                b"old",
                "a failed reflink changes nothing"
            );
        }
    }

    #[test]
    fn drop_cache_leaves_the_contents() {
        let f = file_with(&[(0, b"kept")], 4);
        let _ = drop_cache(&f);
        assert_eq!(read_all(&f, 4), b"kept");
    }

    #[test]
    fn raw_device_path_is_the_path_off_macos() {
        let p = Path::new("/dev/disk4");
        let want = if BACKEND == "macos" {
            "/dev/rdisk4"
        } else {
            "/dev/disk4"
        };
        assert_eq!(raw_device_path(p), Path::new(want));
    }

    /// On Linux the native calls are really used (tmpfs and ext4, where
    /// the tests' temporary files live, support holes).
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    #[test]
    fn linux_uses_its_own_calls() {
        assert_eq!(BACKEND, "linux");
        let f = file_with(&[(0, &[1u8; 1 << 20])], 1 << 20);
        assert!(punch_hole(&f, 0, 1 << 20), "fallocate(PUNCH_HOLE) failed");
        let g = file_with(&[(10 << 20, b"x")], 64 << 20);
        let covered: u64 = data_regions(&g, 64 << 20)
            .expect("regions")
            .iter()
            .map(|(a, b)| b - a)
            .sum();
        assert!(covered < 1 << 20, "SEEK_DATA saw no holes: {covered}");
    }

    /// With `portable`, every fallback is in use on Linux too.
    #[cfg(feature = "portable")]
    #[test]
    fn portable_feature_forces_the_fallbacks() {
        assert_eq!(BACKEND, "portable");
        let f = file_with(&[(0, &[1u8; 8192])], 8192);
        assert!(!punch_hole(&f, 0, 4096));
        let g = file_with(&[(10 << 20, b"x")], 64 << 20);
        assert_eq!(
            data_regions(&g, 64 << 20).expect("regions"),
            vec![(0, 64 << 20)]
        );
        assert!(!reflink(&f, &g));
        assert!(!drop_cache(&f));
    }
}
