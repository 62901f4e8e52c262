//! Untrusted configs (issue 18): a remote config may not name local files;
//! `--network public|private|any` decides where requests may go, after DNS
//! and on every redirect hop; responses are bounded.
//!
//! No test here sends a packet to a non-loopback address: the cases whose
//! destinations are not loopback run inside a network namespace that has
//! only `lo` (tests/common/netns.rs), where a request that wrongly goes out
//! fails with "Network is unreachable" (os error 101) on this machine.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::canned::{Canned, Reply};
use common::image::{assert_nothing_left, ic, make_base, read_p3, tools};
use common::netns;
use common::servers::Nginx;
use image_creator::config::OciReference;
use image_creator::fetch::{FetchOptions, HttpError, Net, MAX_HEADERS, MAX_HEAD_BYTES};
use image_creator::oci::{Platform, Registry, MAX_JSON, MAX_TOKEN};

/// The kernel's words when a request leaves for an address with no route:
/// the request was allowed and went out, and the namespace stopped it.
const NET_UNREACHABLE: &str = "os error 101";

fn net() -> Net {
    Net::new(FetchOptions {
        max_attempts: 1,
        ..FetchOptions::default()
    })
    .unwrap()
}

// ---- local sources through a remote config -------------------------------

#[test]
fn remote_config_naming_local_files_is_exit_3_unless_allowed() {
    if !tools(&["debugfs"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(ng) = Nginx::start(tmp.path()) else {
        return;
    };
    let (base, rootfs) = make_base(tmp.path());
    std::fs::copy(&base, ng.root.join("base.img")).unwrap();
    let secret1 = tmp.path().join("secret1.txt");
    let secret2 = tmp.path().join("secret2.txt");
    std::fs::write(&secret1, "host file one\n").unwrap();
    std::fs::write(&secret2, "host file two\n").unwrap();
    let remote_base = ng.url("base.img");
    let s1 = secret1.display().to_string();
    let s2 = secret2.display().to_string();
    let b = base.display().to_string();

    // Each kind of local source alone: (config, key, path).
    let cases = [
        (
            format!("base: {{source: {b}, rootfs_size: {rootfs}}}\nfiles:\n  - {{to: /data/x, content: x}}\n"),
            "base.source",
            b.clone(),
        ),
        (
            format!("base: {{source: {remote_base}, rootfs_size: {rootfs}}}\nfiles:\n  - {{to: /data/leak1.txt, url: 'file://{s1}'}}\n"),
            "files[0].url",
            s1.clone(),
        ),
        (
            format!("base: {{source: {remote_base}, rootfs_size: {rootfs}}}\nfiles:\n  - {{to: /data/leak2.txt, url: '{s2}'}}\n"),
            "files[0].url",
            s2.clone(),
        ),
        (
            format!("base: {{source: {remote_base}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: 'a/b:c', filesize: 14, fullsize: 14, url: '{s1}'}}\n"),
            "oci_images[0].url",
            s1.clone(),
        ),
    ];
    for (i, (text, key, path)) in cases.iter().enumerate() {
        std::fs::write(ng.root.join(format!("c{i}.yaml")), text).unwrap();
        let out = tmp.path().join(format!("out{i}.img"));
        for check in [false, true] {
            let mut args = vec![];
            if check {
                args.push("-C");
            }
            let url = ng.url(&format!("c{i}.yaml"));
            args.extend([url.as_str(), out.to_str().unwrap()]);
            let (code, log) = ic(&args);
            assert_eq!(code, 3, "{key}: {log}");
            assert!(
                log.contains(&format!("{key}: {path}")) && log.contains("--allow-local-files"),
                "{key}: {log}"
            );
            assert_nothing_left(tmp.path(), &out);
        }
    }

    // All three at once: every one named; with --allow-local-files it builds.
    let all = format!(
        "base: {{source: {b}, rootfs_size: {rootfs}}}\nfiles:\n  - {{to: /data/leak1.txt, url: 'file://{s1}'}}\n  - {{to: /data/leak2.txt, url: '{s2}'}}\n"
    );
    std::fs::write(ng.root.join("all.yaml"), all).unwrap();
    let out = tmp.path().join("all.img");
    let url = ng.url("all.yaml");
    let (code, log) = ic(&[&url, out.to_str().unwrap()]);
    assert_eq!(code, 3, "{log}");
    for needle in [
        format!("base.source: {b}"),
        format!("files[0].url: {s1}"),
        format!("files[1].url: {s2}"),
    ] {
        assert!(log.contains(&needle), "{needle} not in: {log}");
    }
    assert_nothing_left(tmp.path(), &out);

    let (code, log) = ic(&["--allow-local-files", &url, out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    let scratch = tmp.path().join("dump");
    assert_eq!(
        read_p3(&out, "/leak1.txt", &scratch),
        b"host file one\n".to_vec()
    );
    assert_eq!(
        read_p3(&out, "/leak2.txt", &scratch),
        b"host file two\n".to_vec()
    );
}

#[test]
fn remote_config_over_1_mib_is_refused_naming_the_limit() {
    if !tools(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(ng) = Nginx::start(tmp.path()) else {
        return;
    };
    let limit = image_creator::pipeline::load::MAX_REMOTE_CONFIG;
    assert_eq!(limit, 1 << 20);
    let (base, rootfs) = make_base(tmp.path());
    let head = format!(
        "base: {{source: {}, rootfs_size: {rootfs}}}\n# ",
        base.display()
    );
    // Exactly at the limit: accepted; one byte more: refused.
    let pad = limit - head.len() - 1;
    std::fs::write(
        ng.root.join("fits.yaml"),
        format!("{head}{}\n", "x".repeat(pad)),
    )
    .unwrap();
    std::fs::write(
        ng.root.join("big.yaml"),
        format!("{head}{}\n", "x".repeat(pad + 1)),
    )
    .unwrap();
    let out = tmp.path().join("o.img");
    let (code, log) = ic(&[
        "-C",
        "--allow-local-files",
        &ng.url("fits.yaml"),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    let (code, log) = ic(&[
        "-C",
        "--allow-local-files",
        &ng.url("big.yaml"),
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("big.yaml") && log.contains(&format!("limit of {limit} bytes")),
        "{log}"
    );
    assert!(!out.exists());
}

// ---- bounded responses (loopback only) ------------------------------------

#[test]
fn response_heads_over_the_limit_are_refused_naming_it() {
    let many = (0..=MAX_HEADERS).fold(Reply::ok("x"), |r, i| {
        r.header(&format!("X-Filler-{i}"), "y")
    });
    let huge = Reply::ok("x").header("X-Huge", &"h".repeat(MAX_HEAD_BYTES));
    // Within both limits: 90 fields, 90 × 700 bytes (61.5 KiB).
    let fine = (0..90).fold(Reply::ok("x"), |r, i| {
        r.header(&format!("X-F{i:02}"), &"f".repeat(700 - 5))
    });
    let srv = Canned::start(vec![
        ("many".into(), many),
        ("huge".into(), huge),
        ("fine".into(), fine),
    ]);
    let net = net();
    for path in ["many", "huge"] {
        let e = net.block_on(net.http.probe(&srv.url(path))).unwrap_err();
        assert!(
            matches!(e, HttpError::HeadersTooLarge { .. }),
            "{path}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&srv.url(path))
                && msg.contains(&format!("{MAX_HEADERS} fields"))
                && msg.contains(&format!("{MAX_HEAD_BYTES} bytes")),
            "{msg}"
        );
    }
    let p = net.block_on(net.http.probe(&srv.url("fine"))).unwrap();
    assert_eq!(p.size, Some(1));
}

#[test]
fn redirect_chains_stop_after_10_hops() {
    // c0 → c1 → … → c12, which answers: asking for cK takes 12 − K hops.
    let mut routes: Vec<(String, Reply)> = Vec::new();
    for i in 0..12 {
        routes.push((
            format!("c{i}"),
            Reply::redirect(302, &format!("/c{}", i + 1)),
        ));
    }
    routes.push(("c12".into(), Reply::ok("end")));
    let srv = Canned::start(routes);
    let net = net();
    let body = net
        .block_on(net.http.get_small(&srv.url("c2"), 16))
        .unwrap();
    assert_eq!(body, b"end");
    let before = srv.requests().len();
    let e = net
        .block_on(net.http.get_small(&srv.url("c1"), 16))
        .unwrap_err();
    assert!(matches!(e, HttpError::BlockedRedirect { .. }), "{e}");
    assert!(e.to_string().contains("more than 10 redirects"), "{e}");
    // The 11th hop was never requested.
    let after = srv.requests();
    assert_eq!(after.len() - before, 11, "{after:?}");
    assert_eq!(after.last().map(String::as_str), Some("GET /c11"));
}

/// Resolve `HOST/library/NAME:1` for the default platform.
fn resolve_image(net: &Net, host: &str, name: &str) -> Result<(), String> {
    let r = OciReference::parse(&format!("{host}/library/{name}:1")).unwrap();
    let reg = Registry::new(net.http.clone());
    net.block_on(reg.resolve(&r, &Platform::default()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// 401 with a bearer challenge whose realm is `realm`.
fn challenge(realm: &str) -> Reply {
    Reply {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer realm=\"{realm}\",service=\"stub\""),
        )],
        body: Arc::new(Vec::new()),
    }
}

#[test]
fn manifests_and_token_responses_over_their_limits_are_refused() {
    assert_eq!((MAX_JSON, MAX_TOKEN), (4 << 20, 64 << 10));
    let token = |len: usize| {
        let json = format!("{{\"token\": \"{}\"}}", "t".repeat(len - 13));
        assert_eq!(json.len(), len);
        Reply::ok(json)
    };
    let srv = Canned::start(vec![
        (
            "v2/library/big/manifests/1".into(),
            Reply::ok(vec![b' '; MAX_JSON + 1]),
        ),
        (
            "v2/library/tok/manifests/1".into(),
            challenge("http://{self}/bigtoken"),
        ),
        ("bigtoken".into(), token(MAX_TOKEN + 1)),
        (
            "v2/library/tokfits/manifests/1".into(),
            challenge("http://{self}/token"),
        ),
        ("token".into(), token(MAX_TOKEN)),
    ]);
    let net = net();
    let e = resolve_image(&net, &srv.host(), "big").unwrap_err();
    assert!(
        e.contains("manifests/1") && e.contains(&format!("limit of {MAX_JSON} bytes")),
        "{e}"
    );
    let e = resolve_image(&net, &srv.host(), "tok").unwrap_err();
    assert!(
        e.contains("/bigtoken") && e.contains(&format!("limit of {MAX_TOKEN} bytes")),
        "{e}"
    );
    // A token of exactly the limit is read; the stub then still says 401.
    let e = resolve_image(&net, &srv.host(), "tokfits").unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(srv.requests().iter().any(|r| r.starts_with("GET /token?")));
}

// ---- the network policy, inside a loopback-only namespace -----------------

/// What a policy does with a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Requested and answered (the loopback server).
    Allowed,
    /// Refused before any connection, naming this address.
    Refused(&'static str),
    /// Allowed, so the request went out, and the namespace (which has no
    /// route but loopback) stopped it: os error 101.
    WentOut,
}

const POLICIES: [&str; 3] = ["public", "private", "any"];

/// Names the cases use, answered by `--resolve` (checked like DNS).
const OVERRIDES: [&str; 4] = [
    "metadata.test:169.254.169.254",
    "loopback.test:127.0.0.1",
    "lan.test:10.0.0.1",
    "auth.test:169.254.169.254",
];

/// Run `image-creator -C` on `cfg` under `policy` and check `want`.
fn expect(case: &str, policy: &str, cfg: &Path, want: Outcome) -> String {
    let mut args = vec!["-C", "--attempts", "1", "--network", policy];
    for o in OVERRIDES {
        args.extend(["--resolve", o]);
    }
    let out = cfg.with_extension("img");
    args.extend([cfg.to_str().unwrap(), out.to_str().unwrap()]);
    let (code, log) = ic(&args);
    let refused = format!("refused by --network {policy}");
    match want {
        Outcome::Allowed => assert_eq!(code, 0, "{case} under {policy}: {log}"),
        Outcome::Refused(addr) => {
            assert_eq!(code, 4, "{case} under {policy}: {log}");
            assert!(
                log.contains(&format!("address {addr}")) && log.contains(&refused),
                "{case} under {policy}: not refused naming {addr}: {log}"
            );
            assert!(
                !log.contains(NET_UNREACHABLE),
                "{case} under {policy}: {log}"
            );
        }
        Outcome::WentOut => {
            assert_eq!(code, 4, "{case} under {policy}: {log}");
            assert!(
                log.contains(NET_UNREACHABLE) && !log.contains("refused by --network"),
                "{case} under {policy}: expected an allowed request stopped by the namespace: {log}"
            );
        }
    }
    assert!(!out.exists());
    format!("{want:?}")
}

#[test]
fn policy_by_destination_in_a_loopback_only_namespace() {
    if !netns::enter("policy_by_destination_in_a_loopback_only_namespace") || !tools(&[]) {
        return;
    }
    use Outcome::*;
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let srv = Canned::start(vec![
        ("file".into(), Reply::ok("payload")),
        (
            "to-loopback".into(),
            Reply::redirect(302, "http://{self}/file"),
        ),
        (
            "to-metadata".into(),
            Reply::redirect(302, "http://169.254.169.254/latest/meta-data/"),
        ),
        (
            "to-metadata-name".into(),
            Reply::redirect(307, "http://metadata.test/latest/meta-data/"),
        ),
        (
            "to-lan".into(),
            Reply::redirect(301, "http://10.1.2.3/admin"),
        ),
        (
            "to-ec2v6".into(),
            Reply::redirect(302, "http://[fd00:ec2::254]/latest/meta-data/"),
        ),
    ]);
    let lo = "127.0.0.1";
    let meta = "169.254.169.254";
    let ec2 = "fd00:ec2::254";
    // (destination, URL, [public, private, any])
    let cases: Vec<(&str, String, [Outcome; 3])> = vec![
        (
            "loopback literal",
            srv.url("file"),
            [Refused(lo), Allowed, Allowed],
        ),
        (
            "redirect to loopback",
            srv.url("to-loopback"),
            [Refused(lo), Allowed, Allowed],
        ),
        (
            "name resolving to loopback",
            format!("http://loopback.test:{}/file", srv.port),
            [Refused(lo), Allowed, Allowed],
        ),
        (
            "169.254.169.254 literal",
            format!("http://{meta}/latest/meta-data/"),
            [Refused(meta), Refused(meta), WentOut],
        ),
        (
            "169.254.169.254 as a decimal literal",
            "http://2852039166/latest/meta-data/".into(),
            [Refused(meta), Refused(meta), WentOut],
        ),
        (
            "IPv4-mapped 169.254.169.254",
            "http://[::ffff:169.254.169.254]/latest/".into(),
            [
                Refused("::ffff:169.254.169.254"),
                Refused("::ffff:169.254.169.254"),
                WentOut,
            ],
        ),
        (
            "redirect to 169.254.169.254",
            srv.url("to-metadata"),
            [Refused(lo), Refused(meta), WentOut],
        ),
        (
            "name resolving to 169.254.169.254",
            "http://metadata.test/latest/meta-data/".into(),
            [Refused(meta), Refused(meta), WentOut],
        ),
        (
            "redirect to a name resolving to 169.254.169.254",
            srv.url("to-metadata-name"),
            [Refused(lo), Refused(meta), WentOut],
        ),
        (
            "fd00:ec2::254 literal",
            format!("http://[{ec2}]/latest/meta-data/"),
            [Refused(ec2), Refused(ec2), WentOut],
        ),
        (
            "redirect to fd00:ec2::254",
            srv.url("to-ec2v6"),
            [Refused(lo), Refused(ec2), WentOut],
        ),
        (
            "100.100.100.200 (metadata) literal",
            "http://100.100.100.200/latest/meta-data/".into(),
            [
                Refused("100.100.100.200"),
                Refused("100.100.100.200"),
                WentOut,
            ],
        ),
        (
            "10.1.2.3 literal",
            "http://10.1.2.3/admin".into(),
            [Refused("10.1.2.3"), WentOut, WentOut],
        ),
        (
            "redirect to 10.1.2.3",
            srv.url("to-lan"),
            [Refused(lo), WentOut, WentOut],
        ),
        (
            "name resolving to 10.0.0.1",
            "http://lan.test/admin".into(),
            [Refused("10.0.0.1"), WentOut, WentOut],
        ),
        (
            "CGNAT 100.64.0.1 literal",
            "http://100.64.0.1/".into(),
            [Refused("100.64.0.1"), WentOut, WentOut],
        ),
    ];
    let mut table = String::from("| destination | public | private | any |\n|---|---|---|---|\n");
    for (i, (name, url, wants)) in cases.iter().enumerate() {
        let cfg = tmp.path().join(format!("c{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "base: {{source: {}, rootfs_size: {rootfs}}}\nfiles:\n  - to: /data/f\n    url: '{url}'\n",
                base.display()
            ),
        )
        .unwrap();
        let mut row = format!("| {name} |");
        for (policy, want) in POLICIES.iter().zip(wants) {
            row.push_str(&format!(" {} |", expect(name, policy, &cfg, *want)));
        }
        table.push_str(&row);
        table.push('\n');
    }
    eprintln!("{table}");
}

#[test]
fn oci_token_realms_and_blob_redirects_obey_the_policy() {
    if !netns::enter("oci_token_realms_and_blob_redirects_obey_the_policy") || !tools(&[]) {
        return;
    }
    use Outcome::*;
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let config_digest = format!("sha256:{}", "a".repeat(64));
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":2}},\
         \"layers\":[]}}"
    );
    let srv = Canned::start(vec![
        (
            "v2/library/realm-ip/manifests/1".into(),
            challenge("http://169.254.169.254/token"),
        ),
        (
            "v2/library/realm-name/manifests/1".into(),
            challenge("http://auth.test/token"),
        ),
        (
            "v2/library/realm-lan/manifests/1".into(),
            challenge("http://10.9.8.7/token"),
        ),
        (
            "v2/library/cdn/manifests/1".into(),
            Reply::ok(manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        ),
        (
            format!("v2/library/cdn/blobs/{config_digest}"),
            Reply::redirect(307, "http://169.254.169.254/blob"),
        ),
    ]);
    let meta = "169.254.169.254";
    let lo = "127.0.0.1";
    let cases = [
        (
            "token realm on 169.254.169.254",
            "realm-ip",
            [Refused(lo), Refused(meta), WentOut],
        ),
        (
            "token realm named auth.test → 169.254.169.254",
            "realm-name",
            [Refused(lo), Refused(meta), WentOut],
        ),
        (
            "token realm on 10.9.8.7",
            "realm-lan",
            [Refused(lo), WentOut, WentOut],
        ),
        (
            "blob redirect to 169.254.169.254",
            "cdn",
            [Refused(lo), Refused(meta), WentOut],
        ),
    ];
    let mut table =
        String::from("| OCI destination | public | private | any |\n|---|---|---|---|\n");
    for (i, (name, repo, wants)) in cases.iter().enumerate() {
        let cfg = tmp.path().join(format!("o{i}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "base: {{source: {}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: '{}/library/{repo}:1', filesize: 1, fullsize: 1}}\n",
                base.display(),
                srv.host()
            ),
        )
        .unwrap();
        let mut row = format!("| {name} |");
        for (policy, want) in POLICIES.iter().zip(wants) {
            row.push_str(&format!(" {} |", expect(name, policy, &cfg, *want)));
        }
        table.push_str(&row);
        table.push('\n');
    }
    // The realm was the registry's word; the registry itself was asked.
    assert!(srv
        .requests()
        .iter()
        .any(|r| r == "GET /v2/library/realm-ip/manifests/1"));
    eprintln!("{table}");
}
