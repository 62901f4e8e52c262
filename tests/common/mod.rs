//! Helpers shared by the integration tests: external oracles (e2fsprogs,
//! util-linux) and a model of an expected tree.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

pub mod archives;
pub mod canned;
pub mod env;
pub mod image;
pub mod moto;
pub mod mounts;
pub mod netns;
pub mod registry;
pub mod s3proxy;
pub mod servers;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use image_creator::fs::ext4::{
    Ext4Builder, Ext4Params, FinishStats, Ino, InodeMeta, Timestamp, ROOT_INO,
};
use image_creator::partition::PartitionWindow;

/// True when the tests run under CI: the environment variable `CI` is
/// `true` (any case) or `1`, as GitHub Actions, GitLab CI and `.ci/run` set it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The test can't run here because of `reason` (a missing oracle tool or
/// server). Locally it prints `SKIP: reason` and returns false, so a check
/// reads `have(x) || skip(..)` and the test returns. Under CI it panics
/// instead: `.ci/run` installs every oracle, so a skip there is a broken CI
/// set-up, and a green run must mean every oracle really ran.
pub fn skip(reason: &str) -> bool {
    if in_ci() {
        panic!("{reason}; CI=true, so this fails instead of skipping");
    }
    say_skip(&format!("SKIP: {reason}"));
    false
}

/// A SKIP line written to the process's stderr itself, past the test
/// harness's capture (which shows a passing test's `eprintln!` only with
/// `--nocapture`): every `cargo test` shows it, and `.ci/run` counts them.
fn say_skip(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A capability of the machine that no package provides, which a test
/// may find missing ([`skip_machine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// The tests run as root.
    Root,
    /// Loop devices: root, and `/dev/loop-control` opens read-write (a
    /// device cgroup that denies it denies `losetup --find`).
    LoopDevices,
    /// Mounting filesystems: root, and a tmpfs mounts in a private mount
    /// namespace (`unshare -m mount -t tmpfs`: what mount(2) needs,
    /// CAP_SYS_ADMIN and no seccomp or LSM rule against it).
    Mount,
    /// Network namespaces: `unshare -n true` works.
    NetNamespaces,
    /// A zram disk can be set up (`zramctl --find`: root, the zram module
    /// loaded or loadable): a fixed (non-removable) disk that is safe to
    /// hand to refusal tests.
    Zram,
    /// Unprivileged-style user namespaces: `unshare -Urm true` works.
    UserNamespaces,
    /// Containers: podman runs one. Not probed: only the test itself can
    /// show it (seen here: every namespace a container is made of can be
    /// made, yet runc is refused setting the container's rlimits inside
    /// this sandbox), so its skip stays a SKIP under CI, counted in the
    /// total `.ci/run` prints.
    Containers,
}

impl Capability {
    /// Whether this machine has the capability, found by a probe of its
    /// own (not the test's attempt), with what was seen.
    pub fn probe(self) -> (bool, String) {
        let unshare = |args: &[&str]| {
            let (code, out) = run(Command::new("unshare").args(args));
            (
                code == 0,
                format!("`unshare {}`: exit {code} {}", args.join(" "), out.trim()),
            )
        };
        let root = is_root();
        match self {
            Self::Root => (root, format!("euid 0: {root}")),
            Self::LoopDevices => {
                let open = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/loop-control");
                let seen = format!("root: {root}; /dev/loop-control: {:?}", open.as_ref().err());
                (root && open.is_ok(), seen)
            }
            Self::Mount => {
                let dir = tempfile::tempdir().unwrap();
                let target = dir.path().to_string_lossy().into_owned();
                let (ok, seen) = unshare(&["-m", "mount", "-t", "tmpfs", "none", &target]);
                (root && ok, format!("root: {root}; {seen}"))
            }
            Self::NetNamespaces => unshare(&["-n", "true"]),
            Self::Zram => {
                let (code, out) = run(Command::new("zramctl").args(["--find", "--size", "1M"]));
                if code == 0 {
                    let _ = Command::new("zramctl")
                        .arg("--reset")
                        .arg(out.trim())
                        .status();
                }
                (
                    root && code == 0,
                    format!("root: {root}; `zramctl --find`: exit {code} {out}"),
                )
            }
            Self::UserNamespaces => unshare(&["-Urm", "true"]),
            Self::Containers => (
                false,
                "not probed: only running a container shows it".to_string(),
            ),
        }
    }
}

/// The test can't run because the machine lacks `missing`, a capability
/// no package provides (root, loop devices, permission to mount,
/// namespaces). It prints a loud SKIP line and the test returns: CI
/// containers often have no loop devices or may not mount, and failing
/// there would only teach people to ignore a red CI. But under `CI=true`
/// the claim is checked by [`Capability::probe`]: a machine that does have
/// the capability fails the test, so a broken test can't hide behind a
/// machine skip.
pub fn skip_machine(missing: Capability, reason: &str) {
    say_skip(&machine_skip(in_ci(), missing, reason));
}

/// The SKIP line of [`skip_machine`], with `ci` given; under `ci`, a panic
/// when the machine has `missing` after all.
pub fn machine_skip(ci: bool, missing: Capability, reason: &str) -> String {
    if ci {
        let (present, seen) = missing.probe();
        assert!(
            !present,
            "SKIP claims this machine lacks {missing:?} ({reason}), but it has it ({seen}); \
             CI=true, so this fails instead of skipping"
        );
    }
    format!(
        "SKIP (this machine can't: {missing:?}, CI={}): {reason}",
        std::env::var("CI").unwrap_or_default()
    )
}

/// True when `tool` is an executable on `PATH` (a shell builtin of the same
/// name does not count: the tests run the program, not `sh`). Otherwise
/// [`skip`]: SKIP locally, a panic under CI.
pub fn have(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // An executable file on PATH (not a shell builtin: `command -v kill`
    // answers `kill` even where /bin/kill is missing).
    let on_path = |dir: &Path| {
        std::fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if tool.contains('/') {
        on_path(Path::new(""))
    } else {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| on_path(&d)))
    };
    found
        || skip(&format!(
            "`{tool}` is not installed (CI installs it; see .ci/run)"
        ))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Run a command, returning (exit code, stdout+stderr).
pub fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

/// Wait for an event: poll `ready` (every 20 ms) until it holds (true),
/// or `child` has exited or `limit` has passed (false). `limit` only
/// bounds a failure; a test never depends on how long something takes.
pub fn wait_for_event(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The progress file at `path` (docs/progress.md), or `None` while it is
/// missing (not yet created) or unreadable.
pub fn progress_snapshot(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// `bytes_done` of item `name` in the progress file at `path`; 0 while the
/// file or the item is missing.
pub fn progress_bytes_done(path: &Path, name: &str) -> u64 {
    progress_snapshot(path)
        .and_then(|v| {
            v["items"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
        })
        .and_then(|i| i["bytes_done"].as_u64())
        .unwrap_or(0)
}

/// Every checksum algorithm of the config and the tool that computes it
/// (for [`digest`]; `adler32` is python's zlib).
pub const CHECKSUM_TOOLS: [(&str, &str); 7] = [
    ("md5", "md5sum"),
    ("sha-1", "sha1sum"),
    ("sha-224", "sha224sum"),
    ("sha-256", "sha256sum"),
    ("sha-384", "sha384sum"),
    ("sha-512", "sha512sum"),
    ("adler32", "adler32"),
];

/// The hex digest of `file` by `tool` (a coreutils `*sum`, or `adler32`).
pub fn digest(tool: &str, file: &Path) -> String {
    if tool == "adler32" {
        // zlib's own adler32 (coreutils has none), as 8 hex digits.
        let script = format!(
            "import zlib;print('%08x' % zlib.adler32(open('{}','rb').read()))",
            file.display()
        );
        let (code, out) = run(Command::new("python3").arg("-c").arg(script));
        assert_eq!(code, 0, "{out}");
        return out.trim().to_string();
    }
    let (code, out) = run(Command::new(tool).arg(file));
    assert_eq!(code, 0, "{out}");
    out.split_whitespace().next().unwrap().to_string()
}

/// `e2fsck -fn IMG` must exit 0.
pub fn assert_e2fsck_clean(img: &Path) {
    let (code, out) = run(Command::new("e2fsck").arg("-fn").arg(img));
    assert_eq!(code, 0, "e2fsck -fn {} failed:\n{out}", img.display());
}

pub fn debugfs(img: &Path, req: &str) -> String {
    let (code, out) = run(Command::new("debugfs").arg("-R").arg(req).arg(img));
    assert_eq!(code, 0, "debugfs -R '{req}' failed:\n{out}");
    out
}

/// `debugfs -R 'rdump / DIR'` into a fresh directory under `into`.
pub fn rdump(img: &Path, into: &Path) -> PathBuf {
    let dst = into.join("rdump");
    std::fs::create_dir_all(&dst).unwrap();
    debugfs(img, &format!("rdump / {}", dst.display()));
    dst
}

/// A fresh zero-filled image file of `size` bytes and a window over it.
pub fn image(dir: &Path, name: &str, size: u64) -> (PathBuf, PartitionWindow) {
    let path = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(size).unwrap();
    let w = PartitionWindow::new(Arc::new(f), &path, 0, size);
    (path, w)
}

/// Fixed identity and time so builds are comparable.
pub fn fixed_params() -> Ext4Params {
    Ext4Params {
        label: "data".into(),
        uuid: Some(*b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x81\x23\x45\x67\x89\xab\xcd\xef"),
        hash_seed: Some([7; 16]),
        time: Timestamp::from_secs(1_700_000_000),
        deterministic: true,
        ..Ext4Params::default()
    }
}

/// One entry of an expected tree.
#[derive(Debug, Clone)]
pub enum MKind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    /// Hard link to the entry at this index (a file).
    HardLink(usize),
}

#[derive(Debug, Clone)]
pub struct MEntry {
    /// Relative path, parents listed before children.
    pub path: String,
    pub kind: MKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Build the model into a fresh image; data is written in reverse order of
/// creation to show the layout does not depend on write order.
pub fn build_model(entries: &[MEntry], img: &PartitionWindow, params: Ext4Params) -> FinishStats {
    let mut b = Ext4Builder::new(img.clone(), params).unwrap();
    let mut inos: Vec<Option<Ino>> = Vec::new();
    let mut writes = Vec::new();
    for e in entries {
        let (parent_path, name) = match e.path.rfind('/') {
            Some(i) => (&e.path[..i], &e.path[i + 1..]),
            None => ("", e.path.as_str()),
        };
        let parent = if parent_path.is_empty() {
            ROOT_INO
        } else {
            b.lookup(parent_path).unwrap()
        };
        let meta = InodeMeta {
            mtime: Timestamp {
                secs: e.mtime,
                nanos: 123_456_789,
            },
            ..InodeMeta::new(e.perm, Timestamp::from_secs(e.mtime))
        }
        .with_owner(e.uid, e.gid);
        let ino = match &e.kind {
            MKind::Dir => Some(b.mkdir(parent, name.as_bytes(), meta).unwrap()),
            MKind::File(data) => {
                let w = b
                    .create_file(parent, name.as_bytes(), data.len() as u64, meta)
                    .unwrap();
                let ino = w.ino();
                writes.push((w, data.clone()));
                Some(ino)
            }
            MKind::Symlink(t) => Some(b.symlink(parent, name.as_bytes(), t, meta).unwrap()),
            MKind::HardLink(i) => {
                b.hard_link(parent, name.as_bytes(), inos[*i].unwrap())
                    .unwrap();
                None
            }
        };
        inos.push(ino);
    }
    for (w, data) in writes.iter().rev() {
        // In two halves, second half first.
        let mid = data.len() / 2;
        w.write_at(mid as u64, &data[mid..]).unwrap();
        w.write_at(0, &data[..mid]).unwrap();
    }
    b.finish().unwrap()
}

/// Check an image against its model with e2fsck and debugfs.
pub fn verify_model(entries: &[MEntry], img: &Path, scratch: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_e2fsck_clean(img);
    let root = rdump(img, scratch);
    let mut expected_names: Vec<String> = Vec::new();
    for e in entries {
        let p = root.join(&e.path);
        expected_names.push(e.path.clone());
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        match &e.kind {
            MKind::Dir => assert!(md.is_dir(), "{} should be a directory", e.path),
            MKind::File(data) => {
                assert!(md.is_file(), "{} should be a file", e.path);
                let got = std::fs::read(&p).unwrap();
                assert!(
                    got == *data,
                    "{}: content differs ({} vs {} bytes)",
                    e.path,
                    got.len(),
                    data.len()
                );
            }
            MKind::Symlink(t) => {
                let got = std::fs::read_link(&p).unwrap();
                use std::os::unix::ffi::OsStrExt;
                assert_eq!(
                    got.as_os_str().as_bytes(),
                    t.as_slice(),
                    "{} target",
                    e.path
                );
            }
            MKind::HardLink(i) => {
                let MKind::File(data) = &entries[*i].kind else {
                    panic!("hard link to non-file")
                };
                assert_eq!(&std::fs::read(&p).unwrap(), data, "{} (hard link)", e.path);
            }
        }
        if !matches!(e.kind, MKind::Symlink(_) | MKind::HardLink(_)) {
            // rdump chowns after chmod, which clears setuid/setgid on the
            // copy: compare the low bits here and the full mode with stat.
            assert_eq!(
                md.permissions().mode() & 0o777,
                u32::from(e.perm & 0o777),
                "{} permissions",
                e.path
            );
            if e.perm & 0o7000 != 0 {
                let st = debugfs(img, &format!("stat \"/{}\"", e.path));
                assert!(
                    st.contains(&format!("Mode:  0{:04o}", e.perm)),
                    "{} mode: {st}",
                    e.path
                );
            }
            if is_root() {
                assert_eq!((md.uid(), md.gid()), (e.uid, e.gid), "{} owner", e.path);
            }
            assert_eq!(md.mtime(), e.mtime, "{} mtime", e.path);
        }
    }
    // Nothing else in the image but lost+found.
    let mut found = Vec::new();
    collect(&root, &root, &mut found);
    found.retain(|p| p != "lost+found");
    found.sort();
    expected_names.sort();
    assert_eq!(found, expected_names, "set of paths in the image");
    // Hard link counts, from the inode.
    for e in entries {
        if let MKind::HardLink(i) = e.kind {
            let out = debugfs(img, &format!("stat \"/{}\"", entries[i].path));
            let n = 1 + entries
                .iter()
                .filter(|x| matches!(x.kind, MKind::HardLink(j) if j == i))
                .count();
            assert!(
                out.contains(&format!("Links: {n}")),
                "links of {}: {out}",
                entries[i].path
            );
        }
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.push(rel);
        if e.file_type().unwrap().is_dir() {
            collect(root, &e.path(), out);
        }
    }
}
