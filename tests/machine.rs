//! The skip rule for machine capabilities (`skip_machine` in
//! tests/common/mod.rs): a SKIP for a missing capability is checked under
//! `CI=true` and fails where the machine has it.

mod common;

use common::{is_root, machine_skip, Capability};

/// Root is the capability whose presence this process knows without a
/// probe: as root a "needs root" skip fails under CI and passes
/// otherwise; as a user it passes both ways.
#[test]
fn a_machine_skip_fails_under_ci_only_where_the_capability_is_there() {
    let under_ci =
        std::panic::catch_unwind(|| machine_skip(true, Capability::Root, "needs root (test)"));
    assert_eq!(under_ci.is_err(), is_root(), "CI=true, root: {}", is_root());
    let local =
        std::panic::catch_unwind(|| machine_skip(false, Capability::Root, "needs root (test)"));
    let line = local.unwrap_or_else(|_| panic!("without CI a machine skip never fails"));
    assert!(line.starts_with("SKIP (this machine can't: Root"), "{line}");
}

/// Each probe runs and says what it saw; the cheap facts agree with it.
#[test]
fn probes_say_what_they_saw() {
    for cap in [
        Capability::Root,
        Capability::LoopDevices,
        Capability::Mount,
        Capability::NetNamespaces,
        Capability::UserNamespaces,
        Capability::Containers,
        Capability::Zram,
    ] {
        let (present, seen) = cap.probe();
        eprintln!("{cap:?}: {present} ({seen})");
        assert!(!seen.is_empty());
        let needs_root = matches!(
            cap,
            Capability::Root
                | Capability::LoopDevices
                | Capability::Mount
                | Capability::Containers
                | Capability::Zram
        );
        if needs_root && !is_root() {
            assert!(!present, "{cap:?} without root");
        }
        if cap == Capability::LoopDevices && present {
            assert!(std::path::Path::new("/dev/loop-control").exists());
        }
    }
}
