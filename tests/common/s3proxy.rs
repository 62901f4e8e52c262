//! A fault-injecting proxy in front of a real S3 server (moto): what a
//! real server can't be made to do on cue. Every request is forwarded to
//! the server unless a rule says otherwise: answer 500 to the first
//! attempts of a multipart part, or to every attempt, or hold each part
//! for a while (a slow store). One request per connection (`Connection:
//! close` both ways), requests logged as `METHOD PATH?QUERY`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do with the requests uploading multipart part `part` (1-based;
/// 0: every part).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer 500 to the first `times` attempts of the part.
    Fail { part: u32, times: usize },
    /// Hold each attempt of the part `delay` before forwarding it.
    Slow { part: u32, delay: Duration },
}

/// The proxy; it runs until the test process ends.
pub struct S3Proxy {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    /// Parts the server acknowledged (2xx), by number.
    done: Arc<Mutex<Vec<u32>>>,
}

impl S3Proxy {
    /// Forward to `upstream` (a loopback port) with `faults`.
    pub fn start(upstream: u16, faults: Vec<Fault>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
        let faults = Arc::new(faults);
        let (log2, done2) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, done, attempts, faults) = (
                    log2.clone(),
                    done2.clone(),
                    attempts.clone(),
                    faults.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream, &faults, &log, &done, &attempts);
                });
            }
        });
        Self { port, log, done }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Attempts at part `n` so far.
    pub fn part_attempts(&self, n: u32) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("PUT ") && part_number(r) == Some(n))
            .count()
    }

    /// Parts the server acknowledged so far.
    pub fn parts_done(&self) -> usize {
        self.done.lock().unwrap().len()
    }
}

/// The `partNumber` of a request line's query.
fn part_number(line: &str) -> Option<u32> {
    let query = line.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("partNumber="))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    faults: &[Fault],
    log: &Mutex<Vec<String>>,
    done: &Mutex<Vec<u32>>,
    attempts: &Mutex<HashMap<u32, usize>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut request_line = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        assert!(
            !lower.starts_with("transfer-encoding:"),
            "chunked requests are not proxied: {request_line}"
        );
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let what = request_line
        .rsplit_once(' ')
        .map_or(request_line.clone(), |(a, _)| a.to_string());
    log.lock().unwrap().push(what.clone());
    let part = part_number(&what).filter(|_| what.starts_with("PUT "));
    if let Some(n) = part {
        let attempt = {
            let mut a = attempts.lock().unwrap();
            let e = a.entry(n).or_insert(0);
            *e += 1;
            *e
        };
        for f in faults {
            match *f {
                Fault::Fail { part, times } if (part == n || part == 0) && attempt <= times => {
                    let body =
                        "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
                    write!(
                        client,
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )?;
                    return Ok(());
                }
                Fault::Slow { part, delay } if part == n || part == 0 => {
                    std::thread::sleep(delay);
                }
                _ => {}
            }
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if let Some(n) = part {
        if answer.starts_with(b"HTTP/1.1 2") || answer.starts_with(b"HTTP/1.0 2") {
            done.lock().unwrap().push(n);
        }
    }
    client.write_all(&answer)?;
    client.flush()
}
