//! Step 7 alone, over a raw image a build already made: the code a build
//! runs after its partition table (`pipeline::output::finish`: the one
//! read of the image, its consumers, the `fsync`), timed, so
//! `scripts/bench-publish.sh` can drop the page cache right before it, as
//! it does before `sha256sum`. The side files it makes are written beside
//! the image with a `.step7` suffix (`IMAGE.torrent.step7`, ...): with the
//! same `SOURCE_DATE_EPOCH` they equal the build's.
//!
//! `cargo run --release --example step7 -- IMAGE [--torrent] [--json] [--bmap] [--webseed URL]...`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use image_creator::output::TorrentOptions;
use image_creator::pipeline::output::{finish, Finish};
use image_creator::progress::Silent;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut image: Option<PathBuf> = None;
    let (mut torrent, mut json, mut bmap) = (false, false, false);
    let mut webseeds = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--torrent" => torrent = true,
            "--json" => json = true,
            "--bmap" => bmap = true,
            "--webseed" => webseeds.extend(args.next()),
            _ if image.is_none() => image = Some(PathBuf::from(a)),
            _ => {
                eprintln!("usage: step7 IMAGE [--torrent] [--json] [--bmap] [--webseed URL]...");
                return ExitCode::from(2);
            }
        }
    }
    let Some(image) = image else {
        eprintln!("usage: step7 IMAGE [--torrent] [--json] [--bmap] [--webseed URL]...");
        return ExitCode::from(2);
    };
    let file = match std::fs::File::open(&image) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", image.display());
            return ExitCode::FAILURE;
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let options = TorrentOptions {
        webseeds,
        ..TorrentOptions::default()
    };
    let f = Finish {
        raw: &file,
        raw_name: &image,
        len,
        output: &image,
        compressed: None,
        bmap,
        // As a build decides it: --torrent writes the json too.
        json: json || torrent,
        torrent: torrent.then_some(&options),
        files: &[],
        threads: 0,
        sync_raw: true,
        reporter: &Silent,
    };
    let t = Instant::now();
    let sides = match finish(&f, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("step 7: {e}");
            return ExitCode::FAILURE;
        }
    };
    let took = t.elapsed();
    for (path, bytes) in &sides.files {
        let mut p = path.clone().into_os_string();
        p.push(".step7");
        if let Err(e) = std::fs::write(&p, bytes) {
            eprintln!("{}: {e}", PathBuf::from(p).display());
            return ExitCode::FAILURE;
        }
    }
    println!("{:.3}", took.as_secs_f64());
    ExitCode::SUCCESS
}
