//! OCI images against a real registry (Debian's `docker-registry`) holding
//! images built with `umoci` and pushed with `skopeo`: a two-platform OCI
//! index, gzip / zstd / uncompressed layers, a single-arch image of the
//! wrong platform; the written docker-archives are checked by `skopeo
//! inspect`, `skopeo copy` + `umoci unpack`. An in-process malicious
//! registry serves a blob with the wrong digest.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::image::{self, assert_nothing_left, dump_p3, fsck_p3, ic, make_base};
use common::registry::{umoci_image, umoci_whiteout, DockerRegistry};
use common::servers::{Behaviour, Faulty};
use common::{have, run};
use sha2::Digest;

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs"])
}

fn rt() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn get(url: &str, accept: &str) -> Vec<u8> {
    rt().block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.bytes().await.unwrap().to_vec()
    })
}

fn sha256(data: &[u8]) -> String {
    let h = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The registry's manifest (digest, size) and config diff_ids of `repo:tag`.
fn registry_image(reg: &DockerRegistry, repo_tag: &str) -> (String, usize, Vec<String>) {
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
    let base = format!("http://{}/v2/{repo}", reg.host());
    let m = get(&format!("{base}/manifests/{tag}"), OCI_MANIFEST);
    let mj: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let cfg = get(
        &format!("{base}/blobs/{}", mj["config"]["digest"].as_str().unwrap()),
        "*/*",
    );
    let cj: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    let diff_ids = cj["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (sha256(&m), m.len(), diff_ids)
}

/// PUT an OCI index at `repo:tag` referencing the given (manifest repo_tag, arch).
fn put_index(reg: &DockerRegistry, repo_tag: &str, members: &[(&str, &str)]) {
    let manifests: Vec<serde_json::Value> = members
        .iter()
        .map(|(rt, arch)| {
            let (digest, size, _) = registry_image(reg, rt);
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
    let url = format!("http://{}/v2/{repo}/manifests/{tag}", reg.host());
    rt().block_on(async {
        let r = reqwest::Client::new()
            .put(&url)
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .body(index.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PUT {url}: {}", r.status());
    });
}

/// `oci-sizes IDENT` → (filesize, fullsize).
fn oci_sizes(ident: &str, extra: &[&str]) -> (u64, u64) {
    let mut args = vec!["oci-sizes", ident];
    args.extend_from_slice(extra);
    let (code, out) = ic(&args);
    assert_eq!(code, 0, "oci-sizes {ident}: {out}");
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(out.contains(&format!("- ident: {ident}")), "{out}");
    (field("filesize:"), field("fullsize:"))
}

fn json_of(cmd: &mut Command) -> serde_json::Value {
    let (code, out) = run(cmd);
    assert_eq!(code, 0, "{cmd:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?}: {e}: {out}"))
}

#[test]
fn pulls_an_index_and_zstd_and_plain_layers_into_docker_archives_that_skopeo_and_umoci_read() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = DockerRegistry::start(tmp.path()) else {
        return;
    };
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let layout = umoci_image(
        tmp.path(),
        "arm",
        "arm64",
        &[("/etc/hello.txt", b"hello arm\n"), ("/srv/big.bin", &big)],
    );
    umoci_image(
        tmp.path(),
        "amd",
        "amd64",
        &[("/etc/hello.txt", b"hello amd\n")],
    );
    reg.push(&layout, "arm", "test/app:arm", &[]);
    reg.push(&layout, "amd", "test/app:amd", &[]);
    reg.push(
        &layout,
        "arm",
        "test/app:zstd",
        &["--dest-compress-format", "zstd"],
    );
    reg.push(&layout, "arm", "test/app:plain", &["--dest-decompress"]);
    put_index(
        &reg,
        "test/app:multi",
        &[("test/app:amd", "amd64"), ("test/app:arm", "arm64")],
    );
    let (_, _, arm_diff_ids) = registry_image(&reg, "test/app:arm");
    assert_eq!(arm_diff_ids.len(), 2);

    let host = reg.host();
    let tags = ["multi", "zstd", "plain"];
    let mut entries = String::from("oci_images:\n");
    let mut sizes = Vec::new();
    for t in tags {
        let ident = format!("{host}/test/app:{t}");
        let (filesize, fullsize) = oci_sizes(&ident, &[]);
        // Regular files: hello.txt + big.bin.
        assert_eq!(fullsize, 10 + big.len() as u64, "{t}");
        sizes.push(filesize);
        entries.push_str(&format!(
            "  - {{ident: '{ident}', filesize: {filesize}, fullsize: {fullsize}}}\n"
        ));
    }
    // `--platform` picks the other member of the index.
    let (_, amd_full) = oci_sizes(
        &format!("{host}/test/app:multi"),
        &["--platform", "linux/amd64"],
    );
    assert_eq!(amd_full, 10);

    let (base, rootfs) = make_base(tmp.path());
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\n{entries}",
            base.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out.img");
    let (code, log) = ic(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);

    let port = reg.port;
    for (t, filesize) in tags.iter().zip(sizes) {
        let name = format!("127.0.0.1{port}_test_app_{t}_linuxarm64v8.tar");
        let tar = tmp.path().join(&name);
        dump_p3(&out, &format!("/images/{name}"), &tar);
        assert_eq!(std::fs::metadata(&tar).unwrap().len(), filesize, "{name}");

        // The Pi's loader reads manifest.json[0].RepoTags[0].
        let (code, m) = run(Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg("manifest.json"));
        assert_eq!(code, 0, "{m}");
        let m: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(m[0]["RepoTags"][0], format!("{host}/test/app:{t}"));

        let archive = format!("docker-archive:{}", tar.display());
        let info = json_of(Command::new("skopeo").args(["inspect", &archive]));
        assert_eq!(info["Architecture"], "arm64", "{t}: {info}");
        assert_eq!(info["Os"], "linux");
        let cfg = json_of(Command::new("skopeo").args(["inspect", "--config", &archive]));
        let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(diff_ids, arm_diff_ids, "{t}");

        // Copy to an OCI layout (skopeo recomputes every layer digest) and unpack.
        let oci = tmp.path().join(format!("copy-{t}"));
        let (code, o) = run(Command::new("skopeo").args([
            "--insecure-policy",
            "copy",
            &archive,
            &format!("oci:{}:x", oci.display()),
        ]));
        assert_eq!(code, 0, "skopeo copy {t}: {o}");
        let bundle = tmp.path().join(format!("bundle-{t}"));
        let (code, o) = run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", oci.display()))
            .arg(&bundle));
        assert_eq!(code, 0, "umoci unpack {t}: {o}");
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read(rootfs.join("etc/hello.txt")).unwrap(),
            b"hello arm\n"
        );
        assert_eq!(std::fs::read(rootfs.join("srv/big.bin")).unwrap(), big);
    }

    // `url`: a prebuilt docker-archive (here: one we wrote) is copied as is.
    let prebuilt = tmp
        .path()
        .join(format!("127.0.0.1{port}_test_app_zstd_linuxarm64v8.tar"));
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: '{host}/test/app:prebuilt', filesize: 1, fullsize: 1000000, url: '{}'}}\n",
            base.display(),
            prebuilt.display()
        ),
    )
    .unwrap();
    let out3 = tmp.path().join("prebuilt.img");
    let (code, log) = ic(&[cfg.to_str().unwrap(), out3.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    let copy = tmp.path().join("copy.tar");
    dump_p3(
        &out3,
        &format!("/images/127.0.0.1{port}_test_app_prebuilt_linuxarm64v8.tar"),
        &copy,
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&prebuilt).unwrap()
    );

    // A reservation too small for the archive is a clear error, nothing left.
    let small = format!(
        "base: {{source: {}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: '{host}/test/app:arm', filesize: 2000, fullsize: 0}}\n",
        base.display()
    );
    std::fs::write(&cfg, small).unwrap();
    let out2 = tmp.path().join("small.img");
    let (code, log) = ic(&[cfg.to_str().unwrap(), out2.to_str().unwrap()]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("test/app:arm") && log.contains("2000 bytes reserved"),
        "{log}"
    );
    assert!(!out2.exists());
}

#[test]
fn a_missing_platform_is_exit_4_naming_the_platforms_the_image_has() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = DockerRegistry::start(tmp.path()) else {
        return;
    };
    let layout = umoci_image(tmp.path(), "amd", "amd64", &[("/a", b"a")]);
    reg.push(&layout, "amd", "test/only-amd:1", &[]);
    let host = reg.host();
    let (base, rootfs) = make_base(tmp.path());
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: '{host}/test/only-amd:1', filesize: 100000, fullsize: 100000}}\n",
            base.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out.img");
    for args in [vec!["-C"], vec![]] {
        let mut all = args.clone();
        all.extend([cfg.to_str().unwrap(), out.to_str().unwrap()]);
        let (code, log) = ic(&all);
        assert_eq!(code, 4, "{log}");
        assert!(
            log.contains(&format!("{host}/test/only-amd:1")) && log.contains("linux/amd64"),
            "{log}"
        );
        assert!(!out.exists());
    }
    let (code, log) = ic(&["oci-sizes", &format!("{host}/test/only-amd:1")]);
    assert_eq!(code, 4, "{log}");
    assert!(
        log.contains("linux/arm64/v8") && log.contains("linux/amd64"),
        "{log}"
    );
    let (code, log) = ic(&[
        "oci-sizes",
        "--platform",
        "linux/amd64",
        &format!("{host}/test/only-amd:1"),
    ]);
    assert_eq!(code, 0, "{log}");
}

/// A valid one-layer arm64 image: (manifest, config, layer tar, diff_id).
fn one_layer_image() -> (Vec<u8>, Vec<u8>, Vec<u8>, String) {
    let mut layer = Vec::new();
    {
        let mut b = tar::Builder::new(&mut layer);
        let data = b"genuine content\n";
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "file.txt", &data[..]).unwrap();
        b.finish().unwrap();
    }
    let diff_id = sha256(&layer);
    let config = serde_json::json!({
        "architecture": "arm64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    (manifest, config, layer, diff_id)
}

#[test]
fn a_blob_with_the_wrong_digest_is_refused_and_nothing_is_left_behind() {
    if !tools() {
        return;
    }
    // A valid one-layer image whose layer blob the server swaps for other
    // bytes of the same length.
    let (manifest, config, layer, diff_id) = one_layer_image();
    let mut evil = layer.clone();
    evil[600] ^= 0xff; // inside the file's data
    let cfg_path: &'static str =
        Box::leak(format!("v2/evil/app/blobs/{}", sha256(&config)).into_boxed_str());
    let layer_path: &'static str =
        Box::leak(format!("v2/evil/app/blobs/{diff_id}").into_boxed_str());
    let by_digest: &'static str =
        Box::leak(format!("v2/evil/app/manifests/{}", sha256(&manifest)).into_boxed_str());
    let manifest = Arc::new(manifest);
    let server = Faulty::start(vec![
        ("v2/evil/app/manifests/1", Behaviour::Ok(manifest.clone())),
        (by_digest, Behaviour::Ok(manifest)),
        (cfg_path, Behaviour::Ok(Arc::new(config))),
        (layer_path, Behaviour::Ok(Arc::new(evil))),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\noci_images:\n  - {{ident: '127.0.0.1:{}/evil/app:1', filesize: 100000, fullsize: 1000}}\n",
            base.display(),
            server.port
        ),
    )
    .unwrap();
    let out = tmp.path().join("out.img");
    let (code, log) = ic(&[
        "--attempts",
        "1",
        cfg.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&diff_id[7..]),
        "the error names the blob: {log}"
    );
    assert_nothing_left(tmp.path(), &out);
}

/// A registry that wants a bearer token (as ghcr.io and Docker Hub do):
/// 401 + `WWW-Authenticate: Bearer realm=…` without it, a token endpoint
/// that logs its queries.
fn token_registry(files: Vec<(String, Vec<u8>)>) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (files, log) = (files.clone(), log2.clone());
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                    authorized |= h
                        .to_ascii_lowercase()
                        .starts_with("authorization: bearer good");
                }
                log.lock()
                    .unwrap()
                    .push(format!("{path} auth={authorized}"));
                let (status, extra, body): (&str, String, Vec<u8>) = if path.starts_with("/token?")
                {
                    ("200 OK", String::new(), br#"{"token":"good"}"#.to_vec())
                } else if !authorized {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test registry\",scope=\"repository:auth/app:pull\"\r\n"),
                        Vec::new(),
                    )
                } else if let Some((_, b)) = files.iter().find(|(p, _)| *p == path) {
                    ("200 OK", String::new(), b.clone())
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    (port, log)
}

#[test]
fn anonymous_bearer_tokens_are_fetched_from_the_challenge_realm() {
    let (manifest, config, layer, diff_id) = one_layer_image();
    let files = vec![
        ("/v2/auth/app/manifests/1".to_string(), manifest.clone()),
        (
            format!("/v2/auth/app/manifests/{}", sha256(&manifest)),
            manifest,
        ),
        (format!("/v2/auth/app/blobs/{}", sha256(&config)), config),
        (format!("/v2/auth/app/blobs/{diff_id}"), layer.clone()),
    ];
    let (port, log) = token_registry(files);
    let (filesize, fullsize) = oci_sizes(&format!("127.0.0.1:{port}/auth/app:1"), &[]);
    assert_eq!(fullsize, 16);
    // config + layer members, manifest.json, repositories, end blocks.
    assert!(filesize > layer.len() as u64 + 4 * 512, "{filesize}");
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.starts_with("/token?")
            && l.contains("service=test+registry")
            && l.contains("scope=repository%3Aauth%2Fapp%3Apull")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("/v2/auth/app/blobs/{diff_id} auth=true"))),
        "{log:?}"
    );
}

#[test]
fn oci_sizes_fullsize_is_what_umoci_unpacks_with_whiteouts_applied() {
    if !have("find") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(reg) = DockerRegistry::start(tmp.path()) else {
        return;
    };
    let layout = umoci_image(
        tmp.path(),
        "wh",
        "arm64",
        &[
            ("/d/a", b"aaaaa"),
            ("/d/sub/b", b"bbbbbbb"),
            ("/e/c", &[b'c'; 3000]),
            ("/e/c", b"shorter"), // replaced in a later layer
        ],
    );
    umoci_whiteout(&layout, "wh", "/d/a");
    umoci_whiteout(&layout, "wh", "/d/sub");
    reg.push(&layout, "wh", "test/wh:1", &[]);
    let ident = format!("{}/test/wh:1", reg.host());
    let (_, fullsize) = oci_sizes(&ident, &[]);

    // The oracle: umoci's own extraction of the registry's image.
    let oci = tmp.path().join("pulled");
    let (code, o) = run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{ident}"),
        &format!("oci:{}:x", oci.display()),
    ]));
    assert_eq!(code, 0, "{o}");
    let bundle = tmp.path().join("bundle");
    let (code, o) = run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:x", oci.display()))
        .arg(&bundle));
    assert_eq!(code, 0, "{o}");
    let (code, o) = run(Command::new("find")
        .arg(bundle.join("rootfs"))
        .args(["-type", "f", "-printf", "%s\\n"]));
    assert_eq!(code, 0, "{o}");
    let unpacked: u64 = o.lines().map(|l| l.trim().parse::<u64>().unwrap()).sum();
    assert_eq!(fullsize, unpacked);
    assert_eq!(fullsize, 7, "only /e/c (\"shorter\") is left");
}
