//! The shipped scenarios load, the small one runs clean, and mistakes in a scenario
//! are reported with where and what.

use omniroute_loadtest::scenario::Scenario;
use omniroute_loadtest::sim;
use std::path::Path;

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

#[test]
fn the_shipped_scenarios_load_and_the_small_one_runs_clean() {
    for name in [
        "small.toml",
        "omnichannel.toml",
        "stress-5000.toml",
        "day-1000.toml",
    ] {
        Scenario::load(&shipped(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let small = Scenario::load(&shipped("small.toml")).unwrap();
    let mut lines = Vec::new();
    let report = sim::run(&small, small.seed, &mut |t, r| {
        lines.push(r.progress_line(t, small.duration_s, 0.0))
    })
    .unwrap();
    // The progress line: simulated time, arrivals and their rate, service level so far.
    let mid = &lines[lines.len() / 2];
    assert!(
        mid.contains("s simulated") && mid.contains("SL ") && mid.contains('%'),
        "{mid}"
    );
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let q = &report.queues[0];
    assert_eq!(q.offered, q.answered + q.abandoned + q.refused);
    assert!(q.offered > 1_000, "{q:?}");
    assert!(q.abandoned > 0, "customers with patience abandon: {q:?}");
    // The HTML report: one self-contained page with its three charts.
    let page = omniroute_loadtest::html::render(&report);
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.matches("<polyline").count() >= 3);
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    assert!(page.contains("small single-queue center") && page.contains("no violation"));
    // Service level per interval covers the day, by arrival time.
    assert!(report.intervals.len() >= 16, "{}", report.intervals.len());
    let offered: u64 = report.intervals.iter().map(|i| i.offered[0]).sum();
    assert_eq!(offered, q.offered);
}

#[test]
fn short_abandons_are_counted_apart_and_left_out_of_the_service_level() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let plain = Scenario::parse(&text, Path::new(".")).unwrap();
    let short = Scenario::parse(
        &text.replace(
            "offer_timeout_s = 15",
            "offer_timeout_s = 15\nshort_abandon_s = 10",
        ),
        Path::new("."),
    )
    .unwrap();
    let a = sim::run(&plain, 7, &mut |_, _| {}).unwrap();
    let b = sim::run(&short, 7, &mut |_, _| {}).unwrap();
    let (qa, qb) = (&a.queues[0], &b.queues[0]);
    assert_eq!(qa.short_abandoned, 0);
    assert!(qb.short_abandoned > 0, "{qb:?}");
    // Same run, only the judging differs.
    assert_eq!((qa.answered, qa.abandoned), (qb.answered, qb.abandoned));
    let within = qa.service_level.unwrap() * (qa.answered + qa.abandoned) as f64;
    let expected = within / (qb.answered + qb.abandoned - qb.short_abandoned) as f64;
    assert!((qb.service_level.unwrap() - expected).abs() < 1e-9);
}

#[test]
fn mistakes_are_reported_with_where_and_what() {
    let good = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let err = |text: &str| Scenario::parse(text, Path::new(".")).unwrap_err();
    let e = err(&good.replace("mean_s = 180", "mean_s = \"long\""));
    assert!(e.starts_with("line "), "{e}");
    let e = err(&good.replace(
        "rate_per_hour = 180",
        "rate_per_hour = 180\nrates_per_hour = [1]",
    ));
    assert!(e.contains("not both"), "{e}");
    let e = err(&good.replace("queue = \"support\"", "queue = \"nowhere\""));
    assert!(e.contains("unknown queue `nowhere`"), "{e}");
    let e = err(&good.replace("count = 10", "count = 10\ncuont = 3"));
    assert!(e.contains("cuont"), "{e}");
    let e = err(&good.replace("skills = { support = 5 }", "skills = { support = 11 }"));
    assert!(e.contains("proficiency 11"), "{e}");
    let e = err(&good.replace(
        "dist = \"exponential\", mean_s = 120",
        "dist = \"empirical\", csv = \"missing.csv\"",
    ));
    assert!(e.contains("missing.csv"), "{e}");
}
