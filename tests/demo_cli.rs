//! Black-box tests of the `omniroute` binary.
//!
//! `omniroute demo` drives the real engine on virtual time and checks the engine's
//! invariants after every step (it panics on a violation), so a clean exit is itself a
//! check. Same seed must give the same run, byte for byte.

use std::process::Command;

fn demo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .arg("demo")
        .args(args)
        .output()
        .expect("the omniroute binary runs")
}

#[test]
fn demo_runs_a_center_and_reports_per_queue() {
    let out = demo(&["--minutes", "90", "--seed", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for queue in ["billing", "billing-es", "tech"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(queue)),
            "no summary row for {queue}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("History of the first interaction"),
        "{stdout}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = demo(&["--minutes", "45", "--seed", "11", "--verbose"]);
    let b = demo(&["--minutes", "45", "--seed", "11", "--verbose"]);
    let c = demo(&["--minutes", "45", "--seed", "12", "--verbose"]);
    assert!(a.status.success() && b.status.success() && c.status.success());
    assert_eq!(a.stdout, b.stdout, "same seed, different decisions");
    assert_ne!(a.stdout, c.stdout, "the seed has no effect");
    let routed = String::from_utf8_lossy(&a.stdout);
    assert!(
        routed.contains("offered to"),
        "verbose output shows routing decisions:\n{routed}"
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let out = demo(&["--arrivals-per-minute=-1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--arrivals-per-minute"), "{stderr}");
    let out = demo(&["--minutes", "many"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses a non-number");
}
