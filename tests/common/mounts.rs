//! Filesystems a test mounts for itself (root): a size-limited tmpfs, and
//! a filesystem made by its own mkfs on a loop-backed file. Each is
//! unmounted (and its loop device freed) on drop. `None` after a machine
//! skip when the machine can't ([`super::skip_machine`]).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{have, is_root, run, skip_machine, Capability};

/// A mounted filesystem, unmounted on drop.
pub struct Mounted {
    /// Where it is mounted.
    pub dir: PathBuf,
    /// The backing file of a loop-backed one.
    backing: Option<PathBuf>,
}

impl Mounted {
    /// A tmpfs of `size` (`mount -o size=`) at `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Option<Self> {
        if !is_root() {
            skip_machine(Capability::Root, "mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let (code, out) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        if code != 0 {
            skip_machine(Capability::Mount, &format!("mount -t tmpfs: {out}"));
            return None;
        }
        Some(Self {
            dir: dir.to_path_buf(),
            backing: None,
        })
    }

    /// A filesystem made by `mkfs` (a program and its arguments before the
    /// device) on a sparse file of `bytes` in `scratch`, loop-mounted at
    /// `dir`. The tools missing: a skip (a failure under CI); no root or
    /// loop devices: a machine skip.
    pub fn loop_fs(scratch: &Path, dir: &Path, mkfs: &[&str], bytes: u64) -> Option<Self> {
        if !have(mkfs[0]) || !have("mount") || !have("umount") {
            return None;
        }
        if !is_root() {
            skip_machine(Capability::Root, "loop mounts need root");
            return None;
        }
        std::fs::create_dir_all(scratch).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let backing = scratch.join(format!("{name}.fs"));
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let (code, out) = run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&backing));
        assert_eq!(code, 0, "{}: {out}", mkfs.join(" "));
        let (code, out) = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&backing)
            .arg(dir));
        if code != 0 {
            let _ = std::fs::remove_file(&backing);
            let lacks = if Capability::LoopDevices.probe().0 {
                Capability::Mount
            } else {
                Capability::LoopDevices
            };
            skip_machine(lacks, &format!("mount -o loop ({}): {out}", mkfs[0]));
            return None;
        }
        Some(Self {
            dir: dir.to_path_buf(),
            backing: Some(backing),
        })
    }

    /// Bytes used on the filesystem (`statvfs`: blocks minus free blocks).
    pub fn used(&self) -> u64 {
        // Recent writes counted: a sync first (delayed allocation).
        let _ = Command::new("sync").arg("-f").arg(&self.dir).status();
        let st = rustix::fs::statvfs(&self.dir).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }

    /// Bytes free for an unprivileged writer.
    pub fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.dir).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        if let Some(b) = &self.backing {
            let _ = std::fs::remove_file(b);
        }
    }
}
