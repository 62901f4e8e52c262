//! Archive expansion end to end: archives made by the real tools expand to
//! their source tree (read back with debugfs, p3 e2fsck-clean), locally and
//! over HTTP; hostile archives (bombs, traversal, absolute paths, symlink
//! escapes, hard links to outside, devices, too many entries) are refused
//! with an error naming the archive and the member, leaving no output.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::archives::{
    assert_same_tree, crafted_tgz, make_tree, many_entries_tgz, pack, tgz_bomb, zip_bomb,
};
use common::image::{
    self, assert_nothing_left, debugfs_p3, files_config, fsck_p3, image_creator_env, make_base,
};
use common::servers::Nginx;

fn tools() -> bool {
    image::tools(&[
        "e2fsck", "debugfs", "python3", "tar", "gzip", "bzip2", "xz", "zip",
    ])
}

fn build(cfg: &Path, out: &Path, env: &[(&str, &str)]) -> (i32, String) {
    image_creator_env(&[cfg.to_str().unwrap(), out.to_str().unwrap()], env)
}

/// e2fsck -fn clean, then `rdump` of `/` into `into`.
fn check_and_dump(img: &Path, into: &Path) -> PathBuf {
    fsck_p3(img);
    std::fs::create_dir_all(into).unwrap();
    debugfs_p3(img, &format!("rdump / {}", into.display()));
    into.to_path_buf()
}

#[test]
fn archives_made_by_real_tools_expand_to_their_source_tree() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let src = make_tree(d);
    let kinds = ["tar", "gztar", "bztar", "xztar", "zip"];
    let mut files = String::new();
    for k in kinds {
        let a = d.join(format!("a.{k}"));
        pack(k, &src, &a);
        files.push_str(&format!(
            "  - to: /data/x/{k}\n    url: {}\n    via: {k}\n",
            a.display()
        ));
    }
    let out = d.join("out.img");
    let (code, log) = build(&files_config(d, &base, rootfs, &files), &out, &[]);
    assert_eq!(code, 0, "{log}");
    let got = check_and_dump(&out, &d.join("dump"));
    for k in kinds {
        // rdump's chown clears setgid on its copy: rwx bits here, the
        // special bits with `stat` below.
        assert_same_tree(&src, &got.join("x").join(k), 0o777, k);
    }
    for (k, path, mode) in [
        ("gztar", "shared", "02775"),
        ("bztar", "tmp", "01777"),
        ("xztar", "bin/run.sh", "0755"),
        ("zip", "secret/key", "0600"),
    ] {
        let st = debugfs_p3(&out, &format!("stat /x/{k}/{path}"));
        assert!(st.contains(&format!("Mode:  {mode}")), "{k}/{path}: {st}");
    }
    // Hard link (tar): one inode, two names.
    let st = debugfs_p3(&out, "stat /x/gztar/index.html");
    assert!(st.contains("Links: 2"), "{st}");
    // tar's numeric owners are kept.
    let st = debugfs_p3(&out, "stat /x/tar/secret/key");
    let uid = rustix::process::geteuid().as_raw();
    assert!(st.contains(&format!("User: {uid:5}")), "{st}");
}

#[test]
fn remote_archives_stream_over_http() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(ng) = Nginx::start(d) else { return };
    let (base, rootfs) = make_base(d);
    let src = make_tree(d);
    let mut files = String::new();
    for k in ["xztar", "zip"] {
        pack(k, &src, &ng.root.join(format!("a.{k}")));
        files.push_str(&format!(
            "  - to: /data/{k}\n    url: {}\n    via: {k}\n",
            ng.url(&format!("a.{k}"))
        ));
    }
    let out = d.join("out.img");
    let (code, log) = build(&files_config(d, &base, rootfs, &files), &out, &[]);
    assert_eq!(code, 0, "{log}");
    let got = check_and_dump(&out, &d.join("dump"));
    assert_same_tree(&src, &got.join("xztar"), 0o777, "remote xztar");
    assert_same_tree(&src, &got.join("zip"), 0o777, "remote zip");
    assert_nothing_left(d, &d.join("none"));

    // A remote tar.gz bomb is stopped while it streams: 2 GiB of zeros
    // under a declared 1 MB.
    tgz_bomb(&ng.root.join("bomb.tgz"), 2);
    let files = format!(
        "  - to: /data/b\n    url: {}\n    via: gztar\n    size: 1000000\n",
        ng.url("bomb.tgz")
    );
    let out = d.join("bomb.img");
    let t = Instant::now();
    let (code, log) = build(&files_config(d, &base, rootfs, &files), &out, &[]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("bomb.tgz") && log.contains("\"zeros\"") && log.contains("files[0].size"),
        "{log}"
    );
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
    assert_nothing_left(d, &out);

    // Remote tars are pre-scanned while planning: the path rules refuse
    // them there, before anything is written.
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["dir:sub", "sym:l:sub", "file:l/x:1"],
            "l/x",
            "through a symlink",
        ),
        (&["file:a:1", "hard:h:../a"], "\"h\"", "`..`"),
        (&["sym:l:../../etc"], "\"l\"", "leaves the target directory"),
        (&["file:../evil:1"], "../evil", "`..`"),
    ];
    for (i, (members, member, why)) in cases.iter().enumerate() {
        let name = format!("evil{i}.tgz");
        crafted_tgz(&ng.root.join(&name), members);
        let files = format!(
            "  - to: /data/e\n    url: {}\n    via: gztar\n",
            ng.url(&name)
        );
        let out = d.join("evil.img");
        let (code, log) = build(&files_config(d, &base, rootfs, &files), &out, &[]);
        assert_eq!(code, 3, "{log}");
        assert!(
            log.contains(&name) && log.contains(member) && log.contains(why),
            "{log}"
        );
        assert_nothing_left(d, &out);
    }

    // The inode policy for remote archives (README, "Sizing of remote
    // archives"): a remote tar is pre-scanned, so 20,000 empty files under
    // a declared size of 1000 bytes (an estimate by bytes would reserve
    // ~1,000 inodes) all get one.
    let many = ng.root.join("many.tgz");
    common::archives::many_entries_tgz(&many, 20_000);
    let files = format!(
        "  - to: /data/m\n    url: {}\n    via: gztar\n    size: 1000\n",
        ng.url("many.tgz")
    );
    let out = d.join("many.img");
    let (code, log) = build(&files_config(d, &base, rootfs, &files), &out, &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    let ls = debugfs_p3(&out, "ls -l /m");
    assert_eq!(ls.lines().filter(|l| l.contains(" f00")).count(), 20_000);
    let stat = debugfs_p3(&out, "stat /m/f0019999");
    assert!(stat.contains("Type: regular"), "{stat}");
    let htree = debugfs_p3(&out, "htree /m");
    assert!(htree.contains("Root node dump"), "{htree}");
}

/// Build `files` expecting exit 3 with every `needles` in the log and no output.
fn refused(d: &Path, files: &str, env: &[(&str, &str)], needles: &[&str]) {
    let (base, rootfs) = (d.join("base.img"), base_start(d));
    let out = d.join("bad.img");
    let t = Instant::now();
    let (code, log) = build(&files_config(d, &base, rootfs, files), &out, env);
    assert_eq!(code, 3, "{log}");
    for n in needles {
        assert!(log.contains(n), "missing {n:?} in: {log}");
    }
    assert!(t.elapsed().as_secs() < 30, "{:?}: {log}", t.elapsed());
    assert_nothing_left(d, &out);
}

fn base_start(d: &Path) -> u64 {
    std::fs::read_to_string(d.join("rootfs"))
        .unwrap()
        .parse()
        .unwrap()
}

fn setup() -> Option<tempfile::TempDir> {
    if !tools() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, rootfs) = make_base(tmp.path());
    std::fs::write(tmp.path().join("rootfs"), rootfs.to_string()).unwrap();
    Some(tmp)
}

fn entry(a: &Path, via: &str, extra: &str) -> String {
    format!(
        "  - to: /data/t\n    url: {}\n    via: {via}\n{extra}",
        a.display()
    )
}

#[test]
fn bombs_are_refused() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    let tgz = d.join("bomb.tgz");
    tgz_bomb(&tgz, 2);
    // Declared size: the limit.
    refused(
        d,
        &entry(&tgz, "gztar", "    size: 1MB\n"),
        &[],
        &["bomb.tgz", "\"zeros\"", "files[0].size"],
    );
    // No size: 8 × the compressed size.
    refused(
        d,
        &entry(&tgz, "gztar", ""),
        &[],
        &["bomb.tgz", "\"zeros\"", "8 × the archive's"],
    );
    let zip = d.join("bomb.zip");
    zip_bomb(&zip, 2);
    refused(
        d,
        &entry(&zip, "zip", "    size: 1MB\n"),
        &[],
        &["bomb.zip", "\"zeros\"", "files[0].size"],
    );
    // A member may not claim more than what is left after the others.
    let two = d.join("two.tgz");
    crafted_tgz(&two, &["file:a:600000", "file:b:600000"]);
    refused(
        d,
        &entry(&two, "gztar", "    size: 1MB\n"),
        &[],
        &["\"b\"", "400000 bytes are left"],
    );
    // A 64 MiB GNU long name (read whole by the tar reader): refused after
    // 1 MiB of header data, not held in memory.
    let long = d.join("longname.tgz");
    common::archives::python(
        "import io, sys, tarfile\nwith tarfile.open(sys.argv[1], 'w:gz', format=tarfile.GNU_FORMAT) as t:\n    ti = tarfile.TarInfo('a' * (64 << 20)); ti.size = 1\n    t.addfile(ti, io.BytesIO(b'x'))",
        &[long.to_str().unwrap()],
    );
    refused(
        d,
        &entry(&long, "gztar", "    size: 1MB\n"),
        &[],
        &["longname.tgz", "bytes of headers"],
    );
    // Junk is dropped, but its data is still decoded to skip it: members
    // may not declare more than twice the limit in all.
    let junk = d.join("junk.tgz");
    crafted_tgz(&junk, &["file:._junk:4000000", "file:a:1"]);
    refused(
        d,
        &entry(&junk, "gztar", "    size: 1MB\n"),
        &[],
        &["junk.tgz", "declare more than", "files[0].size"],
    );
}

#[test]
fn unsafe_paths_are_refused() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    let cases: &[(&[&str], &str, &str)] = &[
        (&["file:../evil:1"], "../evil", "`..`"),
        (&["file:ok/../../evil:1"], "ok/../../evil", "`..`"),
        (&["file:/etc/evil:1"], "/etc/evil", "absolute path"),
        (&["sym:l:../../etc"], "\"l\"", "leaves the target directory"),
        (&["sym:l:/etc"], "\"l\"", "absolute target"),
        // A link that stays inside, then a write through it.
        (
            &["dir:sub", "sym:l:sub", "file:l/x:1"],
            "l/x",
            "through a symlink",
        ),
        (
            &["dir:sub", "sym:s:.", "sym:l:s/../.."],
            "\"l\"",
            "`..` after a name",
        ),
        (&["hard:h:../../etc/passwd"], "\"h\"", "`..`"),
        (&["hard:h:/etc/passwd"], "\"h\"", "absolute path"),
        (&["hard:h:nowhere"], "\"h\"", "not an earlier member"),
        // A relative symlink checked at depth 2, hard-linked to depth 0,
        // would climb out: hard links to symlinks are refused.
        (
            &["dir:a", "dir:a/b", "sym:a/b/l:../../x", "hard:h:a/b/l"],
            "\"h\"",
            "hard link to a symlink",
        ),
        (&["fifo:p"], "\"p\"", "FIFO"),
        (&["chr:null"], "\"null\"", "character device"),
    ];
    for (i, (members, member, why)) in cases.iter().enumerate() {
        let a = d.join(format!("evil{i}.tgz"));
        crafted_tgz(&a, members);
        refused(
            d,
            &entry(&a, "gztar", ""),
            &[],
            &[&format!("evil{i}.tgz"), member, why],
        );
    }
    // A member clashing with the base's data partition (found while
    // building): the archive's fault, exit 3, nothing left.
    let clash = d.join("clash.tgz");
    crafted_tgz(&clash, &["file:master_fs:1"]);
    refused(
        d,
        &format!(
            "  - to: /data\n    url: {}\n    via: gztar\n",
            clash.display()
        ),
        &[],
        &["clash.tgz", "master_fs", "already exists"],
    );
    // The same rules for zip (Python's zipfile writes any name).
    let z = d.join("evil.zip");
    common::archives::python(
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr('../../evil', b'x')\nz.close()",
        &[z.to_str().unwrap()],
    );
    refused(
        d,
        &entry(&z, "zip", ""),
        &[],
        &["evil.zip", "../../evil", "`..`"],
    );
    // A symlink whose target hides `..` behind a NUL (the kernel stops
    // reading at the NUL): refused.
    let z = d.join("nul.zip");
    common::archives::python(
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\ni = zipfile.ZipInfo('l')\ni.create_system = 3\ni.external_attr = 0o120777 << 16\nz.writestr(i, b'..\\0x')\nz.close()",
        &[z.to_str().unwrap()],
    );
    refused(d, &entry(&z, "zip", ""), &[], &["nul.zip", "NUL byte"]);
}

#[test]
fn entry_count_is_bounded() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    // A configured limit of 100: 150 entries are refused, naming the limit.
    let small = d.join("small.tgz");
    let names: Vec<String> = (0..150).map(|i| format!("file:f{i}:1")).collect();
    crafted_tgz(
        &small,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    refused(
        d,
        &entry(&small, "gztar", ""),
        &[("IMAGE_CREATOR_MAX_ENTRIES", "100")],
        &[
            "small.tgz",
            "\"f100\"",
            "more than 100 entries",
            "IMAGE_CREATOR_MAX_ENTRIES=100",
        ],
    );
    // A million tiny entries under a quarter-million limit: refused
    // quickly, after reading a quarter of it. (The default limit, 10
    // million, admits it: docs/benchmarks.md builds such archives.)
    let million = d.join("million.tgz");
    many_entries_tgz(&million, 1_000_000);
    refused(
        d,
        &entry(&million, "gztar", ""),
        &[("IMAGE_CREATOR_MAX_ENTRIES", "250000")],
        &["million.tgz", "more than 250000 entries"],
    );
}

/// A remote archive served without Content-Length can't be bounded: it is
/// refused while planning (exit 3), before anything is copied or written.
#[test]
fn remote_archive_without_a_length_is_refused_at_planning() {
    let Some(tmp) = setup() else { return };
    let d = tmp.path();
    let srv = common::servers::Faulty::start(vec![("a.tgz", common::servers::Behaviour::Endless)]);
    refused(
        d,
        &format!(
            "  - to: /data/x\n    url: {}\n    via: gztar\n    size: 1MB\n",
            srv.url("a.tgz")
        ),
        &[],
        &["a.tgz", "no Content-Length"],
    );
}

/// GETs of `/name` in nginx's access log.
fn gets(d: &Path, name: &str) -> usize {
    std::fs::read_to_string(d.join("nginx-access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /{name} ")))
        .count()
}

/// Without the download cache, a remote tar is downloaded once: its
/// pre-scan at planning keeps it in the build dir (an unnamed file, gone
/// afterwards) and the build expands it from there. nginx's access log
/// shows one GET. When the build dir has no room for it (a tmpfs of
/// 4 MiB, below the archive plus the spool's 64 MiB margin), a warning
/// says so and the build downloads it again, correctly.
#[test]
fn a_remote_tar_without_a_cache_is_downloaded_once() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(ng) = Nginx::start(d) else { return };
    let (base, rootfs) = make_base(d);
    let src = make_tree(d);
    pack("gztar", &src, &ng.root.join("a.tgz"));
    let files = format!(
        "  - to: /data/t\n    url: {}\n    via: gztar\n",
        ng.url("a.tgz")
    );
    let cfg = files_config(d, &base, rootfs, &files);
    let build_dir = d.join("bd");
    let out = d.join("out.img");
    let (code, log) = image_creator_env(
        &[
            "--build-dir",
            build_dir.to_str().unwrap(),
            cfg.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("downloaded again"), "{log}");
    let got = check_and_dump(&out, &d.join("dump"));
    assert_same_tree(&src, &got.join("t"), 0o777, "remote gztar");
    assert_eq!(gets(d, "a.tgz"), 1, "one GET of the archive");
    assert_eq!(
        std::fs::read_dir(&build_dir).unwrap().count(),
        0,
        "the spool is gone"
    );

    // No room in the build dir: downloaded twice, with a warning.
    let Some(small) = common::mounts::Mounted::tmpfs(&d.join("small"), "4m") else {
        return;
    };
    let out2 = d.join("out2.img");
    let (code, log) = image_creator_env(
        &[
            "--build-dir",
            small.dir.to_str().unwrap(),
            cfg.to_str().unwrap(),
            out2.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("a.tgz: not kept for the build")
            && log.contains("bytes free")
            && log.contains("downloaded again"),
        "{log}"
    );
    assert_eq!(gets(d, "a.tgz"), 3, "two more GETs");
    let got = check_and_dump(&out2, &d.join("dump2"));
    assert_same_tree(&src, &got.join("t"), 0o777, "remote gztar, no spool");
    assert_eq!(std::fs::read_dir(&small.dir).unwrap().count(), 0);
}
