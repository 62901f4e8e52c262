//! Running a test inside a network namespace that has only loopback
//! (`unshare -n`, root only): a request that wrongly goes out fails there
//! with "network unreachable" and never leaves the machine, whatever the
//! code under test does.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

/// Names the test the re-run process is to run inside the namespace.
const INNER: &str = "IMAGE_CREATOR_TEST_NETNS";

/// Call first in a test that must run isolated. Returns true in the
/// process inside the namespace (run the test's body), after checking that
/// it has no interface but `lo`. In the normal test process, re-runs the
/// test binary on `test` (its exact name) inside a fresh namespace with
/// `lo` up, fails if it fails, and returns false; or skips with a SKIP
/// line when the machine can't make a namespace.
pub fn enter(test: &str) -> bool {
    if std::env::var(INNER).as_deref() == Ok(test) {
        assert_only_loopback();
        return true;
    }
    if !super::is_root() {
        super::skip_machine(
            super::Capability::Root,
            "a network namespace needs root (unshare -n)",
        );
        return false;
    }
    if !super::have("unshare") || !super::have("ip") {
        return false;
    }
    let works = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        super::skip_machine(
            super::Capability::NetNamespaces,
            "`unshare -n true` fails: no network namespaces here",
        );
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {test}, inside the namespace ---\n{stdout}{stderr}");
    assert!(out.status.success(), "{test} failed inside the namespace");
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside the namespace"
    );
    false
}

/// The current network namespace has one interface, `lo`
/// (`/proc/self/net/dev` is per namespace; `/sys/class/net` is not).
fn assert_only_loopback() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        names,
        ["lo"],
        "the namespace must have only loopback; refusing to run"
    );
}
