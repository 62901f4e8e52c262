//! A real S3-compatible server for the object-store cache tests:
//! `moto_server` (PyPI `moto[server]`), started per test on a free loopback
//! port in its own process group, and stopped with everything it started.
//! Found as `$MOTO_SERVER`, else `moto_server` on `PATH` (`.ci/run`
//! installs it in a venv and sets `MOTO_SERVER`).
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running moto_server; stopped (its whole process group) on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

pub fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Start moto_server; `None` after [`super::skip`] when it is not
    /// installed. `env`: extra environment of the server
    /// (`INITIAL_NO_AUTH_ACTION_COUNT=0` makes it check credentials).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Option<Self> {
        let Some(bin) = moto_binary() else {
            super::skip("moto_server is not installed (pip install 'moto[server]'; see .ci/run)");
            return None;
        };
        let port = free_port();
        let log = std::fs::File::create(dir.join(format!("moto-{port}.log"))).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("moto_server exited: {st}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("moto_server did not start on port {port}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a build needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        client_env(&self.endpoint())
    }

    /// An unsigned request (moto accepts them unless it checks
    /// credentials): (status, body).
    pub fn request(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        http(self.port, method, path)
    }

    pub fn create_bucket(&self, name: &str) {
        let (st, body) = self.request("PUT", &format!("/{name}"));
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Every object under `prefix` in `bucket`: key → (size, sha256, the
    /// text of a `.json`), read by boto3 (moto's own dependency, run by the
    /// python beside moto_server): signed requests, an independent client.
    pub fn dump(&self, bucket: &str, prefix: &str) -> BTreeMap<String, Obj> {
        let out = self.boto(&format!(
            "import hashlib, json\n\
             out = {{}}\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket={bucket:?}, Prefix={prefix:?}):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       b = s3.get_object(Bucket={bucket:?}, Key=o['Key'])['Body'].read()\n\
             \x20       out[o['Key']] = [len(b), hashlib.sha256(b).hexdigest(), b.decode() if o['Key'].endswith('.json') else None]\n\
             print(json.dumps(out))\n"
        ));
        let v: BTreeMap<String, (u64, String, Option<String>)> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v.into_iter()
            .map(|(k, (size, sha256, text))| (k, Obj { size, sha256, text }))
            .collect()
    }

    /// Delete `key` (signed, by boto3).
    pub fn delete(&self, bucket: &str, key: &str) {
        self.boto(&format!(
            "s3.delete_object(Bucket={bucket:?}, Key={key:?})\n"
        ));
    }

    /// Write `key` (signed, by boto3).
    pub fn put(&self, bucket: &str, key: &str, text: &str) {
        self.boto(&format!(
            "s3.put_object(Bucket={bucket:?}, Key={key:?}, Body={text:?}.encode())\n"
        ));
    }

    /// Every object under `prefix` in `bucket`: key → its last-modified
    /// time (Unix seconds, as the listing says).
    pub fn last_modified(&self, bucket: &str, prefix: &str) -> BTreeMap<String, f64> {
        let out = self.boto(&format!(
            "import json\n\
             out = {{o['Key']: o['LastModified'].timestamp() for o in \
             s3.list_objects_v2(Bucket={bucket:?}, Prefix={prefix:?}).get('Contents', [])}}\n\
             print(json.dumps(out))\n"
        ));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The buckets.
    pub fn buckets(&self) -> Vec<String> {
        let out = self.boto(
            "import json\nprint(json.dumps([b['Name'] for b in s3.list_buckets()['Buckets']]))\n",
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Unfinished multipart uploads in `bucket` (invisible to listings).
    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        self.boto(&format!(
            "print(len(s3.list_multipart_uploads(Bucket={bucket:?}).get('Uploads', [])))\n"
        ))
        .trim()
        .parse()
        .unwrap()
    }

    /// Run `body` in the python beside moto_server with `s3`, a boto3
    /// client of this server; its stdout.
    fn boto(&self, body: &str) -> String {
        let bin = moto_binary().unwrap();
        let py = bin.with_file_name("python");
        let py = if py.is_file() {
            py
        } else {
            PathBuf::from("python3")
        };
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url={:?}, aws_access_key_id='testing', \
             aws_secret_access_key='testing', region_name='us-east-1')\n{body}",
            self.endpoint()
        );
        let out = Command::new(&py).arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// An object, as [`Moto::dump`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj {
    pub size: u64,
    pub sha256: String,
    /// The text of a `.json` object.
    pub text: Option<String>,
}

/// The `AWS_*` variables of a client of `endpoint` (any credentials: moto
/// does not check them by default).
pub fn client_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

/// A minimal HTTP/1.1 request on loopback (Connection: close).
fn http(port: u16, method: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    (status, body)
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The whole group (werkzeug may run helpers): TERM, then KILL.
        let pgid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pgid) = pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(pgid) = pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}
