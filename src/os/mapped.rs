//! Read-only views of a file's bytes where they lie in the page cache
//! (`mmap(2)`, Linux): the output pass hashes a finished image in place
//! instead of copying it into buffers first ([`super::map_in`]).

use std::ffi::c_void;
use std::fs::File;
use std::ptr::NonNull;

use rustix::mm::{madvise, mmap, munmap, Advice, MapFlags, ProtFlags};

/// `len` bytes of a file, mapped read-only (shared) and paged in;
/// unmapped when dropped.
pub(super) struct Mapped {
    /// Where the mapping starts: a page boundary at or before the bytes.
    base: NonNull<c_void>,
    /// The mapping's length (`skip + len`).
    map_len: usize,
    /// Bytes of the first page before the ones asked for.
    skip: usize,
    len: usize,
}

// SAFETY: a `Mapped` owns its mapping (made in `map_in`, removed once, in
// `Drop`) and only ever hands out shared `&[u8]` views of it, which any
// thread may read at once; nothing in it is tied to the thread that
// made it.
#[allow(unsafe_code)]
unsafe impl Send for Mapped {}
// SAFETY: as above: `&Mapped` gives read-only bytes only.
#[allow(unsafe_code)]
unsafe impl Sync for Mapped {}

impl Mapped {
    /// The bytes.
    #[allow(unsafe_code)]
    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `map_in` mapped `map_len = skip + len` bytes readable at
        // `base` and they stay mapped until `self` drops, which the
        // returned borrow of `self` outlives not. They are not written
        // while mapped: the mapping is PROT_READ in this process, and
        // `map_in`'s caller promised that nothing writes or truncates the
        // file's range meanwhile. They are paged in (MADV_POPULATE_READ
        // succeeded), and u8 has no invalid values.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<u8>().add(self.skip), self.len)
        }
    }
}

impl Drop for Mapped {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly the mapping `map_in` made,
        // unmapped here only; no view of it outlives `self` (`as_slice`
        // borrows it).
        let _ = unsafe { munmap(self.base.as_ptr(), self.map_len) };
    }
}

/// See [`super::map_in`].
///
/// # Safety
/// Nothing may write to or truncate `[offset, offset + len)` of `file`
/// while the mapping lives.
#[allow(unsafe_code)]
pub(super) unsafe fn map_in(file: &File, offset: u64, len: usize) -> Option<Mapped> {
    let end = offset.checked_add(u64::try_from(len).ok()?)?;
    if len == 0 || file.metadata().ok()?.len() < end {
        return None;
    }
    let page = u64::try_from(rustix::param::page_size()).ok()?.max(1);
    let start = offset - offset % page;
    let skip = usize::try_from(offset - start).ok()?;
    let map_len = len.checked_add(skip)?;
    // SAFETY: a fresh mapping (no address hint, so it replaces nothing) of
    // `map_len` bytes of an open descriptor, at a page-aligned offset; the
    // file holds every byte asked for (checked above; pages past its end
    // would fault). `Mapped` takes ownership of it at once.
    let ptr = unsafe {
        mmap(
            std::ptr::null_mut(),
            map_len,
            ProtFlags::READ,
            MapFlags::SHARED,
            file,
            start,
        )
    }
    .ok()?;
    let m = Mapped {
        base: NonNull::new(ptr)?,
        map_len,
        skip,
        len,
    };
    // Page it all in now, from the cache or the disk: MADV_POPULATE_READ
    // (Linux 5.14) reports a page that can't be read as an error here,
    // where touching it later would raise SIGBUS. An older kernel refuses
    // the advice: then no mapping (the caller reads instead).
    // SAFETY: advice over the range just mapped, which it does not change.
    unsafe { madvise(m.base.as_ptr(), map_len, Advice::LinuxPopulateRead) }.ok()?;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    #[allow(unsafe_code)]
    fn maps_any_range_of_the_file_and_nothing_past_it() {
        let f = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        f.write_all_at(&data, 0).expect("write");
        for (off, len) in [
            (0usize, 50_000usize),
            (5000, 12_345),
            (4096, 4096),
            (49_999, 1),
        ] {
            // SAFETY: nothing else has the file.
            let m = unsafe { map_in(&f, off as u64, len) }.expect("mapped");
            assert_eq!(m.as_slice(), &data[off..off + len], "{off}+{len}");
        }
        // SAFETY: as above.
        unsafe {
            assert!(map_in(&f, 49_000, 1001).is_none(), "past the end");
            assert!(map_in(&f, 0, 0).is_none(), "empty");
            assert!(map_in(&f, u64::MAX, 2).is_none(), "overflow");
        }
    }
}
