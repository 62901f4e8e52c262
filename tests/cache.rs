//! The download cache as a library: fills and hits, corruption, crash
//! leftovers, concurrent users, read-only dirs and `--show-cache` output.

mod common;

use common::env::sha256_hex;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use image_creator::cache::{
    unix_now, Cache, CacheOptions, Claim, CopyError, Entry, FillMeta, Key, Validators,
};

type R = Result<(), Box<dyn std::error::Error>>;

fn key(name: &str) -> Key {
    Key::file(&format!("http://example.org/d/{name}")).expect("http url")
}

/// Deterministic payload, different per seed.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn meta(url: &str) -> FillMeta {
    FillMeta {
        validators: Validators {
            etag: Some("\"v1\"".into()),
            ..Validators::default()
        },
        source: url.into(),
    }
}

/// Fill `key` with `data` in 3 KiB chunks, the second half first.
fn fill(cache: &Cache, k: &Key, data: &[u8]) -> Result<Entry, Box<dyn std::error::Error>> {
    let f = cache.begin_fill(k)?;
    let half = data.len() / 2;
    for (start, part) in [(half, &data[half..]), (0, &data[..half])] {
        for (i, chunk) in part.chunks(3072).enumerate() {
            f.write_at(u64::try_from(start + i * 3072)?, chunk)?;
        }
    }
    Ok(f.commit(u64::try_from(data.len())?, meta(k.as_str()))?)
}

fn copy_out(hit: image_creator::cache::Hit) -> Result<Vec<u8>, CopyError> {
    let mut out = vec![0u8; usize::try_from(hit.size()).unwrap_or(0)];
    hit.copy_into(|off, b| {
        let off = usize::try_from(off).map_err(std::io::Error::other)?;
        out[off..off + b.len()].copy_from_slice(b);
        Ok(())
    })?;
    Ok(out)
}

fn open(dir: &Path) -> Result<Cache, Box<dyn std::error::Error>> {
    Cache::open(dir)?.ok_or_else(|| "cache unexpectedly disabled".into())
}

fn blob_path(dir: &Path, sha: &str) -> PathBuf {
    dir.join("v1/blobs/sha256").join(&sha[..2]).join(sha)
}

fn entry_path(dir: &Path, k: &Key) -> PathBuf {
    let h = k.hash();
    dir.join("v1/entries")
        .join(&h[..2])
        .join(format!("{h}.json"))
}

fn tmp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("v1/tmp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every entry's blob exists with the entry's size and sha256, computed here.
fn assert_consistent(dir: &Path) -> R {
    let cache = open(dir)?;
    for e in cache.entries()? {
        let bytes = std::fs::read(blob_path(dir, &e.sha256))?;
        assert_eq!(u64::try_from(bytes.len())?, e.size, "{}", e.key);
        assert_eq!(sha256_hex(&bytes), e.sha256, "{}", e.key);
    }
    Ok(())
}

#[test]
fn fill_then_hit_copies_the_same_bytes() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    assert!(dir.path().join("CACHEDIR.TAG").is_file());
    let data = payload(1, 100_000);
    let k = key("wikipedia_en_all_2024-01.zim");
    assert!(cache.lookup(&k, unix_now())?.is_none());
    let entry = fill(&cache, &k, &data)?;
    // The blob is content-addressed by the real digest of the bytes.
    assert_eq!(entry.sha256, sha256_hex(&data));
    assert_eq!(std::fs::read(blob_path(dir.path(), &entry.sha256))?, data);
    assert!(entry_path(dir.path(), &k).is_file());
    let hit = cache.lookup(&k, unix_now())?.ok_or("hit expected")?;
    assert_eq!(hit.validators().etag.as_deref(), Some("\"v1\""));
    assert_eq!(copy_out(hit)?, data);
    assert!(tmp_files(dir.path()).is_empty());
    // A second handle sees it too.
    let other = open(dir.path())?;
    assert!(other.lookup(&k, unix_now())?.is_some());
    Ok(())
}

#[test]
fn an_incomplete_or_abandoned_fill_publishes_nothing() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    let k = key("holey");
    let f = cache.begin_fill(&k)?;
    f.write_at(0, &[1; 10])?;
    f.write_at(20, &[2; 10])?;
    let err = f.commit(30, meta("x")).expect_err("hole at 10..20");
    assert!(err.to_string().contains("holey"), "{err}");
    assert!(cache.lookup(&k, unix_now())?.is_none());
    let f = cache.begin_fill(&k)?;
    f.write_at(0, &[1; 10])?;
    assert!(
        f.commit(5, meta("x")).is_err(),
        "longer than committed size"
    );
    let f = cache.begin_fill(&k)?;
    f.write_at(0, &[1; 10])?;
    drop(f);
    assert!(cache.lookup(&k, unix_now())?.is_none());
    assert!(tmp_files(dir.path()).is_empty());
    // A rewrite of an already-hashed range is hashed from disk.
    let f = cache.begin_fill(&k)?;
    f.write_at(0, &[9; 10])?;
    f.write_at(0, &[7; 10])?;
    let e = f.commit(10, meta("x"))?;
    assert_eq!(e.sha256, sha256_hex(&[7; 10]));
    Ok(())
}

#[test]
fn a_flipped_byte_is_detected_and_the_entry_dropped() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    let data = payload(2, 50_000);
    let k = key("flip.bin");
    let entry = fill(&cache, &k, &data)?;
    let blob = blob_path(dir.path(), &entry.sha256);
    let mut bytes = std::fs::read(&blob)?;
    bytes[31_337] ^= 0x01;
    std::fs::write(&blob, &bytes)?;
    let hit = cache.lookup(&k, unix_now())?.ok_or("hit expected")?;
    match copy_out(hit) {
        Err(CopyError::Corrupt(e)) => assert!(e.to_string().contains("sha256"), "{e}"),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(cache.lookup(&k, unix_now())?.is_none());
    assert!(
        !blob.exists(),
        "a corrupt blob must not be reused by a refill"
    );
    // Refill and hit again.
    fill(&cache, &k, &data)?;
    let hit = cache.lookup(&k, unix_now())?.ok_or("hit expected")?;
    assert_eq!(copy_out(hit)?, data);
    Ok(())
}

#[test]
fn missing_blob_or_corrupt_entry_json_is_a_miss_not_an_error() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    let (a, b) = (key("a"), key("b"));
    let ea = fill(&cache, &a, &payload(3, 1000))?;
    fill(&cache, &b, &payload(4, 1000))?;
    std::fs::remove_file(blob_path(dir.path(), &ea.sha256))?;
    assert!(cache.lookup(&a, unix_now())?.is_none());
    assert!(!entry_path(dir.path(), &a).exists());
    std::fs::write(entry_path(dir.path(), &b), b"{ not json")?;
    assert!(cache.entries()?.is_empty());
    assert!(!entry_path(dir.path(), &b).exists());
    assert!(cache.lookup(&b, unix_now())?.is_none());
    Ok(())
}

#[test]
fn a_disabled_cache_touches_nothing() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "enabled: false\nmax_size: 1G\n",
    )?;
    assert!(Cache::open(dir.path())?.is_none());
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["policy.yaml"]);
    Ok(())
}

#[test]
fn a_bad_policy_is_a_config_error_naming_the_line() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_size: 1G\nfiles:\n  max_num: 1\n  colour: red\n",
    )?;
    let err = Cache::open(dir.path()).expect_err("unknown key");
    assert!(err.is_bad_policy());
    let msg = err.to_string();
    assert!(
        msg.contains("colour") && msg.contains("line 4") && msg.contains("policy.yaml"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn an_unusable_cache_dir_is_an_error_to_warn_about() -> R {
    let dir = tempfile::tempdir()?;
    // Under a regular file: fails even for root.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x")?;
    let err = Cache::open(&file.join("cache")).expect_err("not a directory");
    assert!(!err.is_bad_policy());
    assert!(err.to_string().contains("plain-file"), "{err}");
    // A read-only existing cache (meaningful only when not root).
    let ro = dir.path().join("ro");
    drop(open(&ro)?);
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        eprintln!("skipping the chmod part: root ignores permissions");
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555))?;
    std::fs::set_permissions(ro.join("v1/tmp"), std::fs::Permissions::from_mode(0o555))?;
    let result = Cache::open(&ro).and_then(|c| {
        let c = c.ok_or_else(|| image_creator::cache::CacheError::LockTimeout {
            path: ro.clone(),
            seconds: 0,
        })?;
        c.begin_fill(&key("x")).map(drop)
    });
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(ro.join("v1/tmp"), std::fs::Permissions::from_mode(0o755))?;
    let err = result.expect_err("read-only");
    assert!(!err.is_bad_policy());
    Ok(())
}

#[test]
fn check_after_touch_and_mark_checked() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("policy.yaml"), "check_after: 1h\n")?;
    let cache = open(dir.path())?;
    let k = key("k");
    let e = fill(&cache, &k, b"hello")?;
    let t = e.checked;
    assert!(!cache.lookup(&k, t + 3599)?.ok_or("hit")?.is_due_for_check());
    assert!(cache.lookup(&k, t + 3600)?.ok_or("hit")?.is_due_for_check());
    let remote = Validators {
        digest: Some("SHA-256=abc".into()),
        ..Validators::default()
    };
    assert!(cache.mark_checked(&k, t + 3600, Some(&remote))?);
    let hit = cache.lookup(&k, t + 3601)?.ok_or("hit")?;
    assert!(!hit.is_due_for_check());
    assert_eq!(hit.validators().digest.as_deref(), Some("SHA-256=abc"));
    assert_eq!(hit.validators().etag.as_deref(), Some("\"v1\""), "kept");
    assert!(cache.touch(&k, t + 10)?);
    assert!(cache.touch(&k, t + 20)?);
    let e = cache.entries()?.pop().ok_or("one entry")?;
    assert_eq!((e.use_count, e.last_used), (2, t + 20));
    assert!(!cache.touch(&key("absent"), t)?);
    Ok(())
}

#[test]
fn eviction_does_not_break_a_pinned_reader_and_skips_busy_keys() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_num: 1\neviction: oldest\n",
    )?;
    let cache = open(dir.path())?;
    let (a, b) = (key("a"), key("b"));
    let da = payload(5, 20_000);
    fill(&cache, &a, &da)?;
    fill(&cache, &b, &payload(6, 20_000))?;
    // Make `a` the oldest whatever the clock did.
    let path = entry_path(dir.path(), &a);
    let mut e: Entry = serde_json::from_slice(&std::fs::read(&path)?)?;
    e.added = 1;
    std::fs::write(&path, serde_json::to_vec(&e)?)?;
    let pinned = cache.lookup(&a, unix_now())?.ok_or("hit")?;
    let other = open(dir.path())?;
    // A build refilling `a` holds its key: eviction skips it.
    let refill = cache.begin_fill(&a)?;
    let report = other.evict(unix_now())?;
    assert!(report.evicted.is_empty());
    assert_eq!(report.busy.len(), 1);
    drop(refill);
    let report = other.evict(unix_now())?;
    assert_eq!(report.evicted.len(), 1);
    assert_eq!(report.evicted[0].0.key, a.as_str());
    assert!(!blob_path(dir.path(), &e.sha256).exists());
    // The reader opened before the eviction still gets verified bytes.
    assert_eq!(copy_out(pinned)?, da);
    assert!(cache.lookup(&a, unix_now())?.is_none());
    assert!(cache.lookup(&b, unix_now())?.is_some());
    Ok(())
}

#[test]
fn one_download_per_key_others_wait_then_hit() -> R {
    let dir = tempfile::tempdir()?;
    drop(open(dir.path())?);
    let data = Arc::new(payload(7, 200_000));
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (dir, data, barrier) = (
                dir.path().to_path_buf(),
                Arc::clone(&data),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || -> Result<bool, String> {
                let cache = open(&dir).map_err(|e| e.to_string())?;
                let k = key("shared.zim");
                barrier.wait();
                match cache.claim(&k, unix_now()).map_err(|e| e.to_string())? {
                    Claim::Fill(f) => {
                        for (i, c) in data.chunks(10_000).enumerate() {
                            std::thread::sleep(Duration::from_millis(10));
                            f.write_at(u64::try_from(i * 10_000).unwrap_or(0), c)
                                .map_err(|e| e.to_string())?;
                        }
                        f.commit(u64::try_from(data.len()).unwrap_or(0), meta("u"))
                            .map_err(|e| e.to_string())?;
                        Ok(true)
                    }
                    Claim::Ready(hit) => {
                        let got = copy_out(hit).map_err(|e| e.to_string())?;
                        if got != *data {
                            return Err("wrong bytes".into());
                        }
                        Ok(false)
                    }
                }
            })
        })
        .collect();
    let mut fills = 0;
    for t in threads {
        if t.join().map_err(|_| "thread panicked")?? {
            fills += 1;
        }
    }
    assert_eq!(fills, 1, "the key was downloaded {fills} times");
    Ok(())
}

#[test]
fn concurrent_users_and_an_evictor_keep_the_cache_consistent() -> R {
    let dir = tempfile::tempdir()?;
    // Small limits so the evictor really removes things under the users' feet.
    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_num: 3\nmax_size: 400000\n",
    )?;
    drop(open(dir.path())?);
    let sizes: Vec<usize> = (0..8).map(|i| 30_000 + i * 7_001).collect();
    let users: Vec<_> = (0..4u64)
        .map(|t| {
            let dir = dir.path().to_path_buf();
            let sizes = sizes.clone();
            std::thread::spawn(move || -> Result<(u32, u32), String> {
                let cache = open(&dir).map_err(|e| e.to_string())?;
                let (mut hits, mut fills) = (0, 0);
                for round in 0..12u64 {
                    let i = usize::try_from((t * 3 + round * 5) % 8).unwrap_or(0);
                    let k = key(&format!("item-{i}"));
                    let data = payload(100 + i as u64, sizes[i]);
                    let hit = match cache.lookup(&k, unix_now()).map_err(|e| e.to_string())? {
                        Some(h) => Some(h),
                        None => match cache.claim(&k, unix_now()).map_err(|e| e.to_string())? {
                            Claim::Ready(h) => Some(h),
                            Claim::Fill(f) => {
                                for (n, c) in data.chunks(8192).enumerate() {
                                    f.write_at(u64::try_from(n * 8192).unwrap_or(0), c)
                                        .map_err(|e| e.to_string())?;
                                }
                                f.commit(u64::try_from(data.len()).unwrap_or(0), meta("u"))
                                    .map_err(|e| e.to_string())?;
                                fills += 1;
                                None
                            }
                        },
                    };
                    if let Some(h) = hit {
                        match copy_out(h) {
                            Ok(got) if got == data => hits += 1,
                            Ok(_) => return Err(format!("wrong bytes for item-{i}")),
                            Err(e) => return Err(format!("item-{i}: {e}")),
                        }
                        cache.touch(&k, unix_now()).map_err(|e| e.to_string())?;
                    }
                }
                Ok((hits, fills))
            })
        })
        .collect();
    let evictor = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || -> Result<usize, String> {
            let cache = open(&dir).map_err(|e| e.to_string())?;
            let mut evicted = 0;
            for _ in 0..40 {
                evicted += cache
                    .evict(unix_now())
                    .map_err(|e| e.to_string())?
                    .evicted
                    .len();
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(evicted)
        })
    };
    let (mut hits, mut fills) = (0, 0);
    for u in users {
        let (h, f) = u.join().map_err(|_| "user panicked")??;
        hits += h;
        fills += f;
    }
    let evicted = evictor.join().map_err(|_| "evictor panicked")??;
    eprintln!("hits {hits}, fills {fills}, evicted {evicted}");
    assert_eq!(hits + fills, 48);
    assert!(fills >= 8);
    assert_consistent(dir.path())?;
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );
    let cache = open(dir.path())?;
    cache.evict(unix_now())?;
    let entries = cache.entries()?;
    assert!(entries.len() <= 3);
    assert!(entries.iter().map(|e| e.size).sum::<u64>() <= 400_000);
    Ok(())
}

/// Not a test: the child process of
/// `kill_9_during_a_fill_leaves_nothing_behind`, run by it (`--ignored
/// --exact`) with `CACHE_TEST_HELPER_DIR` set. It starts a fill there,
/// says `HELPER-READY` and waits to be killed. Run any other way it fails.
#[test]
#[ignore = "a helper process of kill_9_during_a_fill_leaves_nothing_behind"]
fn helper_fill_and_hang() -> R {
    let dir = std::env::var_os("CACHE_TEST_HELPER_DIR")
        .ok_or("CACHE_TEST_HELPER_DIR is unset: run kill_9_during_a_fill_leaves_nothing_behind")?;
    let cache = open(Path::new(&dir))?;
    let f = cache.begin_fill(&key("crash.zim"))?;
    f.write_at(0, &payload(9, 100_000))?;
    println!("HELPER-READY");
    std::thread::sleep(Duration::from_secs(60));
    Err("helper_fill_and_hang was not killed within 60 s".into())
}

#[test]
fn kill_9_during_a_fill_leaves_nothing_behind() -> R {
    let dir = tempfile::tempdir()?;
    drop(open(dir.path())?);
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--ignored",
            "--exact",
            "helper_fill_and_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHE_TEST_HELPER_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.contains("HELPER-READY")));
    assert!(ready, "helper did not start its fill");
    // While the owner lives, a new opener keeps its in-flight file and can't
    // take the key.
    let opts = CacheOptions {
        key_lock_timeout: Duration::from_millis(100),
        ..CacheOptions::default()
    };
    let live = Cache::open_with(dir.path(), opts)?.ok_or("enabled")?;
    assert_eq!(tmp_files(dir.path()).len(), 1);
    let err = live
        .begin_fill(&key("crash.zim"))
        .expect_err("held by the child");
    assert!(err.to_string().contains(".lock"), "{err}");
    // kill -9.
    child.kill()?;
    child.wait()?;
    // The next run removes the orphan; the key is free; nothing was published.
    let cache = open(dir.path())?;
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );
    assert!(cache.lookup(&key("crash.zim"), unix_now())?.is_none());
    let data = payload(9, 100_000);
    match cache.claim(&key("crash.zim"), unix_now())? {
        Claim::Fill(f) => {
            f.write_at(0, &data)?;
            f.commit(100_000, meta("u"))?;
        }
        Claim::Ready(_) => panic!("nothing may have been published"),
    }
    assert_consistent(dir.path())?;
    Ok(())
}

#[test]
fn show_cache_text_and_json() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_num: 1\neviction: oldest\n",
    )?;
    let cache = open(dir.path())?;
    assert_eq!(cache.report(unix_now())?.render_text(), "Cache is empty.\n");
    let (a, b) = (key("first.zim"), key("second.zim"));
    fill(&cache, &b, &[0; 2_500_000])?;
    fill(&cache, &a, &[1; 1000])?;
    // Fixed times: a added 2024-01-01 00:00 UTC, b a day later.
    for (k, added) in [(&a, 1_704_067_200u64), (&b, 1_704_153_600)] {
        let path = entry_path(dir.path(), k);
        let mut e: Entry = serde_json::from_slice(&std::fs::read(&path)?)?;
        e.added = added;
        e.last_used = added + 60;
        e.use_count = 3;
        std::fs::write(&path, serde_json::to_vec(&e)?)?;
    }
    let report = cache.report(unix_now())?;
    let text = report.render_text();
    eprintln!("{text}");
    for needle in [
        "| Size ",
        "| Entries ",
        "| Oldest ",
        "| Newest ",
        "| Added On ",
        "| Nb. Used ",
        "| Last Used ",
        "| Source ",
        "2.5 MB",
        "2024-01-01 00:00",
        "2024-01-02 00:00",
        "2024-01-01 00:01",
        "2.5 MB ",
        "files/http/example.org/d/first.zim",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Sorted by added date: first.zim's row before second.zim's.
    let first = text.find("first.zim").ok_or("first")?;
    let second = text.find("second.zim").ok_or("second")?;
    assert!(first < second);
    // max_num 1, oldest first: first.zim is marked.
    let row = text
        .lines()
        .find(|l| l.contains("first.zim"))
        .ok_or("row")?;
    assert!(row.contains("over max_num"), "{row}");
    let row = text
        .lines()
        .find(|l| l.contains("second.zim"))
        .ok_or("row")?;
    assert!(!row.contains("over max_num"), "{row}");
    let json = serde_json::to_value(&report)?;
    assert_eq!(json["summary"]["entries"], 2);
    assert_eq!(json["summary"]["size"], 2_501_000);
    assert_eq!(json["summary"]["oldest"], "2024-01-01T00:00:00Z");
    assert_eq!(
        json["entries"][0]["key"],
        "files/http/example.org/d/first.zim"
    );
    assert_eq!(json["entries"][0]["nb_used"], 3);
    assert!(json["entries"][0]["evict"].is_string());
    assert!(json["entries"][1]["evict"].is_null());
    // --check's view is the same plan.
    let planned = cache.plan_eviction(unix_now())?;
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].0.key, a.as_str());
    Ok(())
}

#[test]
fn image_keys_cache_per_platform() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    let arm64 = Key::image(
        "ghcr.io",
        "offspot",
        "kiwix-serve",
        Some("3.8.1"),
        None,
        "linux/arm64/v8",
    );
    let armv7 = Key::image(
        "ghcr.io",
        "offspot",
        "kiwix-serve",
        Some("3.8.1"),
        None,
        "linux/arm/v7",
    );
    fill(&cache, &arm64, b"arm64 tar")?;
    assert!(cache.lookup(&armv7, unix_now())?.is_none());
    fill(&cache, &armv7, b"armv7 tar")?;
    assert_eq!(
        copy_out(cache.lookup(&arm64, unix_now())?.ok_or("hit")?)?,
        b"arm64 tar"
    );
    assert_eq!(
        copy_out(cache.lookup(&armv7, unix_now())?.ok_or("hit")?)?,
        b"armv7 tar"
    );
    let e = cache.entries()?;
    assert_eq!(e.len(), 2);
    assert!(e
        .iter()
        .all(|e| e.key == "images/ghcr.io/offspot/kiwix-serve:3.8.1"));
    Ok(())
}

#[test]
fn garbage_collection_waits_for_no_other_user() -> R {
    let dir = tempfile::tempdir()?;
    let cache = open(dir.path())?;
    fill(&cache, &key("a"), b"kept")?;
    // An unreferenced blob, as a crash between blob rename and entry write leaves.
    let stray = blob_path(dir.path(), &sha256_hex(b"stray"));
    std::fs::create_dir_all(stray.parent().ok_or("parent")?)?;
    std::fs::write(&stray, b"stray")?;
    let other = open(dir.path())?;
    assert_eq!(cache.collect_garbage()?, None, "another user holds .lock");
    drop(other);
    assert!(cache.collect_garbage()?.is_some());
    assert!(!stray.exists());
    assert_eq!(
        copy_out(cache.lookup(&key("a"), unix_now())?.ok_or("hit")?)?,
        b"kept"
    );
    Ok(())
}

#[test]
fn a_read_only_open_changes_nothing() -> R {
    let dir = tempfile::tempdir()?;
    let absent = dir.path().join("never-made");
    let ro = Cache::open_read_only(&absent)?.ok_or("enabled")?;
    assert!(ro.is_read_only());
    assert!(ro.entries()?.is_empty());
    assert!(ro.lookup(&key("a"), unix_now())?.is_none());
    assert!(!absent.exists(), "--check must not create the cache");

    let cache = open(dir.path())?;
    std::fs::write(dir.path().join("policy.yaml"), "max_num: 1\n")?;
    let ea = fill(&cache, &key("a"), b"aaa")?;
    fill(&cache, &key("b"), b"bbb")?;
    std::fs::remove_file(blob_path(dir.path(), &ea.sha256))?;
    std::fs::write(dir.path().join("v1/tmp/orphan"), b"left by a crash")?;
    let ro = Cache::open_read_only(dir.path())?.ok_or("enabled")?;
    assert!(ro.lookup(&key("a"), unix_now())?.is_none());
    assert!(
        entry_path(dir.path(), &key("a")).exists(),
        "not dropped read-only"
    );
    assert!(dir.path().join("v1/tmp/orphan").exists());
    assert_eq!(ro.plan_eviction(unix_now())?.len(), 1);
    let err = ro.evict(unix_now()).expect_err("read-only");
    assert!(
        !err.is_bad_policy() && err.to_string().contains("read-only"),
        "{err}"
    );
    assert!(ro.begin_fill(&key("c")).is_err());
    assert!(ro.touch(&key("b"), 1).is_err());
    assert_eq!(ro.entries()?.len(), 2);
    Ok(())
}

#[test]
fn an_eviction_keeps_blobs_other_entries_share() -> R {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("policy.yaml"),
        "max_num: 1\neviction: oldest\n",
    )?;
    let cache = open(dir.path())?;
    let (a, b, c) = (key("a"), key("b"), key("c"));
    let ea = fill(&cache, &a, b"same bytes")?;
    let eb = fill(&cache, &b, b"other bytes")?;
    fill(&cache, &c, b"same bytes")?;
    for (k, added) in [(&a, 1u64), (&b, 2), (&c, 3)] {
        let path = entry_path(dir.path(), k);
        let mut e: Entry = serde_json::from_slice(&std::fs::read(&path)?)?;
        e.added = added;
        std::fs::write(&path, serde_json::to_vec(&e)?)?;
    }
    let report = cache.evict(unix_now())?;
    let mut gone: Vec<_> = report.evicted.iter().map(|(e, _)| e.key.clone()).collect();
    gone.sort();
    assert_eq!(gone, [a.as_str(), b.as_str()]);
    assert!(
        blob_path(dir.path(), &ea.sha256).exists(),
        "c still uses it"
    );
    assert!(!blob_path(dir.path(), &eb.sha256).exists());
    assert_eq!(
        copy_out(cache.lookup(&c, unix_now())?.ok_or("hit")?)?,
        b"same bytes"
    );
    Ok(())
}
