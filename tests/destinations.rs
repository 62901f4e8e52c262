//! What planning accepts, the build can write: destinations the ext4
//! builder would refuse in step 4 are refused at planning (`--check` and a
//! build alike), with exit 3 and the config key, before anything is
//! written; the same destinations in a valid layout build cleanly
//! (e2fsck).
#![allow(clippy::unwrap_used)]

mod common;

use common::image::{self, files_config, make_base};

/// `--check` and a build of `files` (YAML list items) on a fresh base:
/// both exit 3 naming `key` and `why`, and the build leaves nothing.
fn refused(files: &str, key: &str, why: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let cfg = files_config(d, &base, rootfs, files);
    let out = d.join("out.img");
    for check in [true, false] {
        let mut args = vec![cfg.to_str().unwrap(), out.to_str().unwrap()];
        if check {
            args.insert(0, "--check");
        }
        let (code, log) = image::ic(&args);
        assert_eq!(code, 3, "check={check}: {log}");
        assert!(
            log.contains(&format!("error: {key}: ")),
            "check={check}: {log}"
        );
        assert!(log.contains(why), "check={check}: {log}");
        // Refused at planning: no step past it ran.
        assert!(!log.contains("[3/7]"), "check={check}: {log}");
        image::assert_nothing_left(d, &out);
    }
}

#[test]
fn a_name_over_255_bytes_is_refused_at_planning() {
    if !image::tools(&[]) {
        return;
    }
    let long = "n".repeat(300);
    refused(
        &format!(
            "  - to: /data/ok.txt\n    content: a\n  - to: /data/dir/{long}\n    content: b\n"
        ),
        "files[1].to",
        "longer than 255 bytes",
    );
}

#[test]
fn a_file_used_as_a_directory_is_refused_at_planning() {
    if !image::tools(&[]) {
        return;
    }
    refused(
        "  - to: /data/a\n    content: a\n  - to: /data/a/b\n    content: b\n",
        "files[1].to",
        "/data/a is a file (files[0].to), not a directory",
    );
    // The other order, and an archive expanding inside a file.
    let tgz_dir = tempfile::tempdir().unwrap();
    let src = common::archives::make_tree(tgz_dir.path());
    let tgz = tgz_dir.path().join("app.tgz");
    common::archives::pack("gztar", &src, &tgz);
    refused(
        &format!(
            "  - to: /data/x/y\n    url: {}\n    via: gztar\n  - to: /data/x\n    content: a\n",
            tgz.display()
        ),
        "files[0].to",
        "/data/x is a file (files[1].to), not a directory",
    );
}

#[test]
fn a_path_the_base_carries_over_is_refused_at_planning() {
    if !image::tools(&[]) {
        return;
    }
    // The fixture base's p3 holds the file `master_fs` and the directory
    // `images` (scripts/make-base-image.sh).
    refused(
        "  - to: /data/master_fs\n    content: a\n",
        "files[0].to",
        "/data/master_fs already exists in the base's data partition",
    );
    refused(
        "  - to: /data/master_fs/inside\n    content: a\n",
        "files[0].to",
        "/data/master_fs is a file in the base's data partition, not a directory",
    );
    refused(
        "  - to: /data/images\n    content: a\n",
        "files[0].to",
        "/data/images is a directory in the base's data partition",
    );
}

#[test]
fn the_same_names_in_a_valid_layout_build_cleanly() {
    if !image::tools(&["e2fsck", "debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let name = "n".repeat(255);
    let files = format!(
        "  - to: /data/a/b\n    content: one\n  - to: /data/a/{name}\n    content: two\n  - to: /data/images/extra.txt\n    content: three\n"
    );
    let cfg = files_config(d, &base, rootfs, &files);
    let out = d.join("out.img");
    let (code, log) = image::ic(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    image::fsck_p3(&out);
    let back = d.join("back");
    assert_eq!(image::read_p3(&out, &format!("/a/{name}"), &back), b"two");
    assert_eq!(image::read_p3(&out, "/images/extra.txt", &back), b"three");
}
