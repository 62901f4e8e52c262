//! Test servers: a real nginx (started per test on a loopback port) and an
//! in-process HTTP/1.1 server for faults nginx can't produce.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A running nginx serving `root`; stopped on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    /// Start nginx on a free loopback port serving `dir/www`; None when
    /// nginx is not installed, after [`super::skip`] (SKIP locally, a panic
    /// under `CI=true`).
    pub fn start(dir: &Path) -> Option<Self> {
        Self::start_with(dir, "")
    }

    /// [`Nginx::start`] with `extra` directives in the server block
    /// (`limit_rate 32m;`).
    pub fn start_with(dir: &Path, extra: &str) -> Option<Self> {
        let Some(bin) = nginx_binary() else {
            super::skip("nginx is not installed (CI installs nginx-light; see .ci/run)");
            return None;
        };
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let user = if super::is_root() {
            "user root root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/nginx-access.log;\n  default_type application/octet-stream;\n\
               client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; {extra} }}\n}}\n",
            root = root.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .spawn()
            .unwrap();
        // Until its port answers; the deadline only bounds a failure (a
        // loaded machine may take seconds to start it).
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port, root });
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "nginx exited ({st}): {}",
                    std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers (SIGKILL would orphan
        // them); SIGKILL only if it has not exited after 2 s.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A latch a test opens once it has seen what it waits for; a
/// [`Behaviour::Gated`] download stops half-way until then.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Let every waiting (and later) download go on.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Wait until opened, or `limit` (a failure guard: a test that forgot
    /// to open its gate); true when opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let open = self.open.lock().unwrap();
        let (open, _) = self.cv.wait_timeout_while(open, limit, |o| !*o).unwrap();
        *open
    }
}

/// How the fault server answers one path.
#[derive(Clone)]
pub enum Behaviour {
    /// Serve `body` with Range support; the first `fail_first` requests are
    /// cut after half the body.
    DropThenResume {
        body: Arc<Vec<u8>>,
        fail_first: usize,
    },
    /// Answer 503 with `Retry-After: 1` `times` times, then serve `body`.
    Unavailable { body: Arc<Vec<u8>>, times: usize },
    /// A chunked body that never ends.
    Endless,
    /// Promise `len` bytes, send half, close.
    Short { len: usize },
    /// Send headers and a few bytes, then stall.
    Stall { len: usize },
    /// 404.
    NotFound,
    /// Plain 200 with a body.
    Ok(Arc<Vec<u8>>),
    /// 200 with the first half of `body`, then the rest once `gate` is
    /// open: a download that is mid-way for as long as the test needs.
    /// Never opened, the connection is closed after 10 minutes. A build
    /// hands downloads to the image 1 MiB at a time (`fetch::BATCH`): for
    /// bytes to show in the image (and the progress file) while the gate
    /// is closed, the body must be over 2 MiB.
    Gated { body: Arc<Vec<u8>>, gate: Arc<Gate> },
    /// 200 with `body` sent `chunk` bytes at a time, `pause` between
    /// chunks: a download slow enough to watch.
    Slow {
        body: Arc<Vec<u8>>,
        chunk: usize,
        pause: Duration,
    },
}

/// In-process HTTP/1.1 server on a loopback port; requests are logged.
pub struct Faulty {
    pub port: u16,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Faulty {
    pub fn start(routes: Vec<(&'static str, Behaviour)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
        let routes = Arc::new(routes);
        let log2 = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let routes = routes.clone();
                let log = log2.clone();
                let counts = counts.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &routes, &log, &counts);
                });
            }
        });
        Self { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &[(&'static str, Behaviour)],
    log: &Mutex<Vec<String>>,
    counts: &Mutex<std::collections::HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut range: Option<u64> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    let n = {
        let mut c = counts.lock().unwrap();
        let e = c.entry(format!("{method} {path}")).or_insert(0);
        *e += 1;
        *e
    };
    log.lock()
        .unwrap()
        .push(format!("{method} {path} range={range:?}"));
    let head = method == "HEAD";
    let behaviour = routes
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| b.clone())
        .unwrap_or(Behaviour::NotFound);
    let send_body = |stream: &mut TcpStream,
                     body: &[u8],
                     status: &str,
                     extra: &str|
     -> std::io::Result<()> {
        write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: \"v1\"\r\n{extra}Connection: close\r\n\r\n", body.len())?;
        if !head {
            stream.write_all(body)?;
        }
        Ok(())
    };
    match behaviour {
        Behaviour::NotFound => send_body(&mut stream, b"not found", "404 Not Found", ""),
        Behaviour::Ok(body) => send_body(&mut stream, &body, "200 OK", ""),
        Behaviour::Unavailable { body, times } => {
            if n <= times && !head {
                send_body(
                    &mut stream,
                    b"busy",
                    "503 Service Unavailable",
                    "Retry-After: 1\r\n",
                )
            } else {
                send_body(&mut stream, &body, "200 OK", "")
            }
        }
        Behaviour::DropThenResume { body, fail_first } => {
            if head {
                return send_body(&mut stream, &body, "200 OK", "");
            }
            let get_n = log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(&format!("GET {path} ")))
                .count();
            if let Some(start) = range {
                let start = start as usize;
                let part = &body[start..];
                write!(stream, "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n", part.len(), body.len() - 1, body.len())?;
                if get_n <= fail_first {
                    stream.write_all(&part[..part.len() / 2])?;
                    return Ok(());
                }
                return stream.write_all(part);
            }
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n", body.len())?;
            if get_n <= fail_first {
                stream.write_all(&body[..body.len() / 2])?;
                stream.flush()?;
                return Ok(());
            }
            stream.write_all(&body)
        }
        Behaviour::Endless => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )?;
            if head {
                return Ok(());
            }
            let chunk = vec![b'z'; 64 * 1024];
            for _ in 0..100_000 {
                write!(stream, "{:x}\r\n", chunk.len())?;
                stream.write_all(&chunk)?;
                stream.write_all(b"\r\n")?;
            }
            Ok(())
        }
        Behaviour::Short { len } => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            if !head {
                stream.write_all(&vec![b's'; len / 2])?;
            }
            Ok(())
        }
        Behaviour::Stall { len } => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            )?;
            if !head {
                stream.write_all(b"abc")?;
                stream.flush()?;
                std::thread::sleep(Duration::from_secs(30));
            }
            Ok(())
        }
        Behaviour::Gated { body, gate } => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if !head {
                let (first, rest) = body.split_at(body.len() / 2);
                stream.write_all(first)?;
                stream.flush()?;
                if !gate.wait(Duration::from_secs(600)) {
                    return Ok(());
                }
                stream.write_all(rest)?;
            }
            Ok(())
        }
        Behaviour::Slow { body, chunk, pause } => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if !head {
                for part in body.chunks(chunk.max(1)) {
                    stream.write_all(part)?;
                    stream.flush()?;
                    std::thread::sleep(pause);
                }
            }
            Ok(())
        }
    }?;
    let mut sink = Vec::new();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = stream.read_to_end(&mut sink);
    Ok(())
}
