//! The in-process cost of progress reporting (issue 6), measured directly:
//! what a build pays per 1 MiB chunk (one `item_progress` through the
//! binary's reporters: the JSON progress file and the hidden bars), and per
//! snapshot written. `scripts/bench-progress.sh` measures whole builds.
//!
//! `cargo run --release --example progress_cost`

use std::time::Instant;

use image_creator::progress::{
    Bars, ProgressFile, ProgressFileOptions, Reporter, Tee, TextHistory,
};

fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("progress.json");
    // Default cadence (0.5 s / 2 s): what a real build runs with.
    let pf = ProgressFile::create(&path, ProgressFileOptions::default())?;
    let bars = Bars::new(indicatif::ProgressDrawTarget::hidden());
    let text = TextHistory::new(std::io::sink(), false);
    let all = Tee(vec![&pf, &bars, &text]);
    // A plan of 1,000 items so per-item lookups aren't trivially small.
    let items: Vec<(String, u64)> = (0..1000)
        .map(|i| (format!("/data/item/{i:04}.zim"), 1 << 40))
        .collect();
    all.items_planned(&items);
    all.item_started("/data/item/0500.zim", Some(1 << 40));

    // 1 MiB chunks: one event each (the download batch and the copy buffer).
    let chunks: u32 = 1_000_000;
    let t = Instant::now();
    for _ in 0..chunks {
        all.item_progress("/data/item/0500.zim", 1 << 20);
    }
    let per_event = t.elapsed() / chunks;

    // Snapshot writes: force some with step changes (each writes at once).
    let writes: u32 = 200;
    let t = Instant::now();
    for i in 0..writes {
        pf.step(4, 6, if i % 2 == 0 { "a" } else { "b" });
    }
    let per_write = t.elapsed() / writes;
    let size = std::fs::metadata(&path)?.len();
    println!("per item_progress event (file + bars + history): {per_event:?}");
    println!("per snapshot write ({size} bytes, 1,000 items, temp + rename): {per_write:?}");

    // Steady state while copying at 1.5 GiB/s: 1,536 events and at most
    // 2 timer writes (every 0.5 s) per second of build; once per build:
    // 8 writes (start, 6 steps, end).
    let per_second = per_event * 1536 + per_write * 2;
    #[allow(clippy::cast_precision_loss)] // display only
    let share = per_second.as_secs_f64() * 100.0;
    println!("steady state at 1.5 GiB/s: {per_second:?} per second = {share:.3}% of the build");
    println!("once per build: {:?}", per_write * 8);
    Ok(())
}
