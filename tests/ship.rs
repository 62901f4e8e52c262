//! Shipping: the static binary in an empty root, shell completions, the
//! man page, help wrapping, and what `cargo package` would publish.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::image::{debugfs_p3, fsck_p3, BIN};
use common::{have, is_root, run, skip, skip_machine, Capability};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The static binary `scripts/build-static.sh` writes (or
/// `IMAGE_CREATOR_STATIC_BIN`).
fn static_binary() -> PathBuf {
    std::env::var_os("IMAGE_CREATOR_STATIC_BIN").map_or_else(
        || manifest_dir().join("target/x86_64-unknown-linux-gnu/release-static/image-creator"),
        PathBuf::from,
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Every file under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The static binary builds the demo in a root holding nothing else: an
/// unprivileged user namespace (`unshare -Urm`), `chroot` into a fresh
/// directory with the binary, `demo.yaml` and `demo/`. No libc, no
/// `/etc`, no `/tmp`, no `/proc`, no certificates. The image's p3 is then
/// checked by e2fsck and debugfs outside.
#[test]
fn static_binary_builds_the_demo_in_an_empty_root() {
    if !is_root() {
        // unshare -U works for users too where the kernel allows it, but
        // CI and the developers' machines run as root; keep one path.
        return skip_machine(Capability::Root, "the empty-root test runs as root");
    }
    let bin = static_binary();
    if !bin.exists() {
        skip(&format!(
            "{} is missing: run scripts/build-static.sh (CI does, before the tests)",
            bin.display()
        ));
        return;
    }
    if !(have("unshare") && have("chroot") && have("readelf") && have("e2fsck")) {
        return;
    }
    let (code, elf) = run(Command::new("readelf").arg("-l").arg(&bin));
    assert_eq!(code, 0, "{elf}");
    assert!(
        !elf.contains("program interpreter"),
        "{} is dynamically linked:\n{elf}",
        bin.display()
    );
    // Can this machine make a user namespace at all?
    let (code, out) = run(Command::new("unshare").args(["-Urm", "true"]));
    if code != 0 {
        return skip_machine(
            Capability::UserNamespaces,
            &format!("unshare -Urm fails here: {out}"),
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::copy(&bin, root.join("image-creator")).unwrap();
    std::fs::copy(
        manifest_dir().join("examples/demo.yaml"),
        root.join("demo.yaml"),
    )
    .unwrap();
    copy_tree(&manifest_dir().join("examples/demo"), &root.join("demo"));
    std::fs::create_dir(root.join("out")).unwrap();
    let before = listing(&root);

    let in_root = |args: &[&str]| {
        let mut c = Command::new("unshare");
        c.args(["-Urm", "chroot"]).arg(&root).arg("/image-creator");
        c.args(args).stdin(Stdio::null());
        run(&mut c)
    };
    let (code, out) = in_root(&["--version"]);
    assert_eq!(code, 0, "--version in the empty root: {out}");
    assert!(out.starts_with("image-creator "), "{out}");

    let started = std::time::Instant::now();
    let (code, log) = in_root(&["--json", "/demo.yaml", "/out/demo.img"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "demo build in the empty root:\n{log}");
    eprintln!("demo build in the empty root: {took:?}");

    // Nothing but the image and its OUTPUT.json (--json) was added to the
    // root.
    let mut want = before.clone();
    want.push("out/demo.img".into());
    want.push("out/demo.img.json".into());
    want.sort();
    assert_eq!(listing(&root), want);

    let img = root.join("out/demo.img");
    fsck_p3(&img);
    let hello = debugfs_p3(&img, "cat /contents/hello.txt");
    assert!(
        hello.contains("Hello from the image-creator demo!"),
        "{hello}"
    );
}

/// The bash completion script registers itself and completes options
/// and subcommands (driven the way bash drives it: COMP_WORDS/CWORD).
#[test]
fn bash_completion_completes() {
    let script = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("image-creator.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let complete = |words: &str| {
        let prog = format!(
            "source {}; complete -p image-creator >/dev/null || exit 9; \
             COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _image__creator image-creator \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let (code, out) = run(Command::new("bash").arg("--norc").arg("-c").arg(prog));
        assert_eq!(code, 0, "{out}");
        out
    };
    let net = complete("image-creator --netw");
    assert_eq!(net.trim(), "--network", "{net}");
    let policy = complete("image-creator --network ''");
    for p in ["public", "private", "any"] {
        assert!(policy.lines().any(|l| l == p), "{p}: {policy}");
    }
    let sub = complete("image-creator oci-");
    assert!(sub.lines().any(|l| l == "oci-sizes"), "{sub}");
}

#[test]
fn zsh_and_fish_completions_name_every_option() {
    for (shell, head) in [
        ("zsh", "#compdef image-creator"),
        ("fish", "complete -c image-creator"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(head), "{shell}: no {head:?}");
        for word in [
            "network",
            "cache-dir",
            "allow-local-files",
            "oci-sizes",
            "platform",
        ] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// The man page renders with groff without a warning and documents
/// every option and subcommand.
#[test]
fn man_page_renders_and_documents_every_option() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let roff = String::from_utf8(out.stdout).unwrap();
    assert!(roff.contains(".TH image-creator 1"), "{roff}");
    if !have("groff") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("image-creator.1");
    std::fs::write(&page, &roff).unwrap();
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-rLL=200n"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(warnings.trim().is_empty(), "groff warns:\n{warnings}");
    // groff's utf8 output uses U+2010 for hyphens in some fonts; strip
    // backspace overstrikes and compare on plain text.
    let text: String =
        String::from_utf8_lossy(&rendered.stdout).replace(['\u{2010}', '\u{2212}'], "-");
    let text = strip_overstrike(&text);
    for arg in image_creator::cli::documented_command().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                text.contains(&format!("--{long}")),
                "--{long} missing:\n{text}"
            );
        }
    }
    for sub in ["oci-sizes", "completions", "man"] {
        assert!(text.contains(sub), "{sub} missing");
    }
}

fn strip_overstrike(s: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{8}' {
            out.pop();
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// `--help` wraps at the terminal's width (COLUMNS when stdout is not a
/// terminal), not at a fixed 100 columns.
#[test]
fn help_wraps_at_the_terminal_width() {
    let widest = |cols: &str| {
        let out = Command::new(BIN)
            .arg("--help")
            .env("COLUMNS", cols)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.chars().count())
            .max()
            .unwrap()
    };
    assert!(widest("60") <= 60);
    let wide = widest("180");
    assert!(wide > 100 && wide <= 180, "{wide}");
}

/// `cargo package --list`: every file is inside the crate and tracked
/// source; nothing from target/, nothing absolute or above the root.
#[test]
fn cargo_package_holds_only_crate_files() {
    let out = Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<&str> = list.lines().collect();
    for f in &files {
        assert!(
            !f.starts_with('/') && !f.split('/').any(|c| c == ".."),
            "{f}"
        );
        assert!(!f.starts_with("target/"), "{f}");
        // Cargo's own generated files have no source in the tree.
        if !matches!(
            *f,
            "Cargo.toml.orig" | ".cargo_vcs_info.json" | "Cargo.lock"
        ) {
            assert!(
                manifest_dir().join(f).is_file(),
                "{f} is not a file of the crate"
            );
        }
    }
    for needed in [
        "Cargo.toml",
        "src/main.rs",
        "src/lib.rs",
        "README.md",
        "LICENSE",
    ] {
        assert!(files.contains(&needed), "{needed} not packaged:\n{list}");
    }
}

/// `podman build` of the Containerfile and `podman run` of the demo into
/// a mounted directory, where podman can run containers on this machine.
#[test]
fn container_builds_the_demo_into_a_mounted_directory() {
    if !is_root() {
        return skip_machine(Capability::Root, "the container test runs as root");
    }
    let bin = static_binary();
    if !bin.exists() {
        skip(&format!(
            "{} is missing: run scripts/build-static.sh",
            bin.display()
        ));
        return;
    }
    if !(have("podman") && have("e2fsck")) {
        return;
    }
    let tag = format!("localhost/image-creator-test:{}", std::process::id());
    let (code, out) = run(Command::new("podman")
        .args([
            "build",
            "--network",
            "none",
            "-f",
            "Containerfile",
            "-t",
            &tag,
            ".",
        ])
        .current_dir(manifest_dir()));
    assert_eq!(code, 0, "podman build:\n{out}");

    let tmp = tempfile::tempdir().unwrap();
    // Readable and writable by the image's user (65532).
    let examples = tmp.path().join("examples");
    copy_tree(
        &manifest_dir().join("examples/demo"),
        &examples.join("demo"),
    );
    std::fs::copy(
        manifest_dir().join("examples/demo.yaml"),
        examples.join("demo.yaml"),
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for d in [tmp.path(), &examples, &examples.join("demo")] {
        run(Command::new("chmod").arg("0755").arg(d));
    }
    run(Command::new("chown").arg("65532:65532").arg(&out_dir));
    let mounts = [
        "-v".to_string(),
        format!("{}:/examples:ro", examples.display()),
        "-v".to_string(),
        format!("{}:/out", out_dir.display()),
    ];
    let podman_run = |extra: &[&str]| {
        let mut c = Command::new("podman");
        c.args(["run", "--rm", "--network", "none"])
            .args(extra)
            .args(&mounts);
        c.args([tag.as_str(), "/examples/demo.yaml", "/out/demo.img"]);
        run(&mut c)
    };
    let (mut code, mut log) = podman_run(&[]);
    if code != 0 && (log.contains("setrlimit") || log.contains("cgroups")) {
        // Containers inside containers: crun can't raise rlimits or use
        // hybrid cgroups there; runc with the current limits can.
        (code, log) = podman_run(&[
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
    }
    let _ = run(Command::new("podman").args(["rmi", "-f", &tag]));
    if code != 0 && log.contains("OCI") {
        return skip_machine(
            Capability::Containers,
            &format!("podman can't run containers here: {log}"),
        );
    }
    assert_eq!(code, 0, "podman run:\n{log}");
    let img = out_dir.join("demo.img");
    fsck_p3(&img);
    let hello = debugfs_p3(&img, "cat /contents/hello.txt");
    assert!(
        hello.contains("Hello from the image-creator demo!"),
        "{hello}"
    );
}
