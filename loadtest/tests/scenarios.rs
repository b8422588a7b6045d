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
    // The progress line: simulated time, arrivals, the current rate and service level.
    let mid = &lines[lines.len() / 2];
    assert!(
        mid.contains("s simulated")
            && mid.contains("/min now")
            && mid.contains("SL now ")
            && mid.contains('%'),
        "{mid}"
    );
    // "Now" is the last 15 minutes: the running totals in the samples give the same.
    let last = report.samples.last().unwrap();
    let before = report
        .samples
        .iter()
        .rev()
        .find(|s| s.at_ms + 15 * 60_000 <= last.at_ms)
        .unwrap();
    assert!(last.arrived > before.arrived && last.judged >= before.judged);
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
fn agents_set_away_for_missed_offers_come_back_and_staffing_gaps_are_not_violations() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    // Half the offers rejected: the engine sets agents away after 3 misses in a row;
    // simulated agents make themselves available again, so the work is still done.
    let picky = Scenario::parse(
        &text.replace(
            "channels = { voice = 1 }",
            "channels = { voice = 1 }\nreject_probability = 0.5",
        ),
        Path::new("."),
    )
    .unwrap();
    let r = sim::run(&picky, 7, &mut |_, _| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert!(r.engine.set_away_after_misses > 0, "{:?}", r.engine);
    let q = &r.queues[0];
    assert!(q.answered * 2 > q.offered, "{q:?}");
    // Everyone logs out at 4 h and nobody gives up: the rest wait in the engine, which
    // is reported, not a violation.
    let short_day = Scenario::parse(
        &text
            .replace(
                "channels = { voice = 1 }",
                "channels = { voice = 1 }\nshift_end_s = 14_400",
            )
            .replace("patience = { dist = \"exponential\", mean_s = 120 }\n", ""),
        Path::new("."),
    )
    .unwrap();
    let r = sim::run(&short_day, 7, &mut |_, _| {}).unwrap();
    assert!(
        r.violations.is_empty(),
        "{:?}",
        &r.violations[..3.min(r.violations.len())]
    );
    assert!(r.queues[0].still_waiting > 100, "{:?}", r.queues[0]);
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
    // Mistakes found after parsing say which table, and its line.
    let line_of = |header: &str| good.lines().position(|l| l.starts_with(header)).unwrap() + 1;
    let e = err(&good.replace("queue = \"support\"", "queue = \"nowhere\""));
    assert!(e.contains("unknown queue `nowhere`"), "{e}");
    let arrivals = format!("line {}: [[arrivals]] number 1: ", line_of("[[arrivals]]"));
    assert!(e.starts_with(&arrivals), "{e}");
    let spaced = good
        .replace("[[arrivals]]", "  [[ \"arrivals\" ]] # spaced")
        .replace("queue = \"support\"", "queue = \"nowhere\"");
    assert!(err(&spaced).starts_with(&arrivals), "{}", err(&spaced));
    let e = err(&good.replace("count = 10", "count = 10\ncuont = 3"));
    assert!(e.contains("cuont"), "{e}");
    let e = err(&good.replace("skills = { support = 5 }", "skills = { support = 11 }"));
    assert!(e.contains("proficiency 11"), "{e}");
    let e = err(&good.replace(
        "dist = \"exponential\", mean_s = 120",
        "dist = \"empirical\", csv = \"missing.csv\"",
    ));
    assert!(e.contains("missing.csv"), "{e}");
    let e = err(&good.replace("channel = \"voice\"", "channel = \"fax\""));
    assert!(e.contains("unknown channel `fax`"), "{e}");
    let e = err(&good.replace("channel = \"voice\"", "channel = \"chat\""));
    assert!(e.contains("does not take channel `chat`"), "{e}");
    let e = err(&good.replace(
        "count = 10",
        "count = 10\nshift_start_s = 100\nshift_end_s = 50",
    ));
    assert!(e.contains("shift_end_s after it"), "{e}");
    let groups = format!(
        "line {}: [[agent_groups]] number 1: ",
        line_of("[[agent_groups]]")
    );
    assert!(e.starts_with(&groups), "{e}");
    let e = err(&good.replace("service_level_s = 20", "service_level_s = inf"));
    assert!(e.contains("service_level_s"), "{e}");
    // Arrivals per channel with no queue taking the channel.
    let e = err(&good.replace(
        "queue = \"support\"\nchannel = \"voice\"",
        "channel = \"chat\"",
    ));
    assert!(
        e.contains("arrivals on `chat`: no queue takes this channel"),
        "{e}"
    );
    // Capacity profiles name channels the agents handle.
    let e = err(&good.replace(
        "channels = { voice = 1 }",
        "channels = { voice = 1 }\nblocking = { voice = [\"pigeon\"] }",
    ));
    assert!(e.contains("pigeon"), "{e}");
    let e = err(&good.replace(
        "channels = { voice = 1 }",
        "channels = { voice = 1 }\nwrap_up = { dist = \"fixed\", s = -1 }",
    ));
    assert!(e.contains("agent_groups `tier1`.wrap_up"), "{e}");
}

#[test]
fn occupancy_counts_wrap_up_as_busy_and_handle_time_does_not() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let wrap = Scenario::parse(
        &text.replace(
            "offer_timeout_s = 15",
            "offer_timeout_s = 15\nwrap_up_s = 30",
        ),
        Path::new("."),
    )
    .unwrap();
    let r = sim::run(&wrap, 7, &mut |_, _| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let (g, q) = (&r.groups[0], &r.queues[0]);
    // Every answered interaction has its 30 s wrap-up, but the run ends with the last
    // completion: wrap-ups still running then (a few at most) are not counted.
    let wrap_s = (g.busy_hours - g.handle_hours) * 3_600.0;
    let all = q.answered as f64 * 30.0;
    assert!(
        wrap_s <= all + 1e-3 && wrap_s >= all - 5.0 * 30.0,
        "{g:?} {wrap_s} {all}"
    );
    let missing = (all - wrap_s) / 30.0;
    assert!(
        (missing - missing.round()).abs() < 1e-3,
        "whole wrap-ups: {wrap_s}"
    );
    // One call at a time: occupied is busy, and occupancy busy ÷ staffed.
    assert!((g.occupied_hours - g.busy_hours).abs() < 1e-9, "{g:?}");
    let occupancy = g.occupancy.unwrap();
    assert!((occupancy - g.busy_hours / g.staffed_hours).abs() < 1e-9);
    assert_eq!(g.concurrency, Some(1.0));
    // Handle time is accept → complete: the wrap-up is not in it.
    let aht = q.average_handle_time_s.unwrap();
    assert!((aht - g.handle_hours * 3_600.0 / q.answered as f64).abs() < 1e-6);
}

/// The small center for `duration_s` seconds with the agents' shifts ending at 600 s
/// (`agents`: more lines for the group; `edit`: a replacement in the file), run clean.
fn small_with_short_shifts(
    duration_s: &str,
    agents: &str,
    edit: Option<(&str, &str)>,
) -> omniroute_loadtest::report::Report {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let mut late = text
        .replace("duration_s = 28_800", &format!("duration_s = {duration_s}"))
        .replace(
            "channels = { voice = 1 }     # one call at a time",
            &format!("channels = {{ voice = 1 }}\nshift_end_s = 600\n{agents}"),
        );
    if let Some((from, to)) = edit {
        assert!(late.contains(from), "{from}");
        late = late.replace(from, to);
    }
    assert_ne!(late, text);
    let s = Scenario::parse(&late, Path::new(".")).unwrap();
    let r = sim::run(&s, 7, &mut |_, _| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    r
}

#[test]
fn work_finished_after_a_shift_ends_counts_as_staffed_time() {
    // Shifts end at 10 minutes, calls take 20: every agent busy at the end of its shift
    // works on past it, and that time is staffed (occupancy stays a share of it).
    let r = small_with_short_shifts("900", "handle_time = { dist = \"fixed\", s = 1200 }", None);
    let g = &r.groups[0];
    let shifts_h = 10.0 * 600.0 / 3_600.0;
    // Everyone took a call in the first ten minutes (180 calls an hour for 10 agents)
    // and held it 20 minutes.
    assert!(r.queues[0].answered >= 10, "{:?}", r.queues[0]);
    assert!(
        g.staffed_hours > shifts_h + 10.0 * 600.0 / 3_600.0 - 1e-9,
        "{g:?}"
    );
    assert!(g.occupied_hours <= g.staffed_hours + 1e-9, "{g:?}");
    let occupancy = g.occupancy.unwrap();
    assert!(occupancy <= 1.0 && occupancy > 0.5, "{g:?}");
    let c = &r.channels[0];
    assert!((c.staffed_hours - g.staffed_hours).abs() < 1e-9, "{c:?}");
}

#[test]
fn work_left_when_every_shift_is_over_ends_the_run_and_is_reported() {
    // Shifts end at 10 minutes, customers keep coming for 30 and never give up: what
    // arrives late waits for nobody. The run ends when nothing more can happen, not a
    // simulated day later.
    let r = small_with_short_shifts(
        "1_800",
        "",
        Some(("patience = { dist = \"exponential\", mean_s = 120 }\n", "")),
    );
    let q = &r.queues[0];
    assert!(q.still_waiting > 20, "{q:?}");
    assert_eq!(
        q.answered + q.abandoned + q.still_waiting,
        q.offered,
        "{q:?}"
    );
    assert!(r.simulated_s < 1_800.0 + 3_600.0, "{}", r.simulated_s);
    assert!(
        r.table().contains("waiting when the run ended"),
        "{}",
        r.table()
    );
}

#[test]
fn auto_accepted_offers_are_answered_without_an_accept() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let auto = Scenario::parse(
        &text.replace(
            "seed = 7\n",
            "seed = 7\nchannels = [{ name = \"voice\", default_units = 1, auto_accept = true }]\n",
        ),
        Path::new("."),
    )
    .unwrap();
    let plain = Scenario::parse(&text, Path::new(".")).unwrap();
    let a = sim::run(&auto, 7, &mut |_, _| {}).unwrap();
    let p = sim::run(&plain, 7, &mut |_, _| {}).unwrap();
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    let (qa, qp) = (&a.queues[0], &p.queues[0]);
    // Same customers, and with immediate accepts the same service.
    assert_eq!(qa.offered, qp.offered);
    assert_eq!((qa.answered, qa.abandoned), (qp.answered, qp.abandoned));
    assert!(qa.answered > 1_000, "{qa:?}");
}

#[test]
fn arrivals_per_channel_go_to_the_queue_that_takes_the_channel() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let per_channel = text.replace("[[arrivals]]\nqueue = \"support\"\n", "[[arrivals]]\n");
    assert_ne!(per_channel, text);
    let s = Scenario::parse(&per_channel, Path::new(".")).unwrap();
    assert_eq!(s.arrivals[0].queue, "support");
    let a = sim::run(&s, 7, &mut |_, _| {}).unwrap();
    let b = sim::run(
        &Scenario::parse(&text, Path::new(".")).unwrap(),
        7,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(a.queues[0].offered, b.queues[0].offered);
    // Two queues taking the channel: the scenario must say which.
    let two = per_channel.replace(
        "[[agent_groups]]",
        "[[queues]]\nid = \"sales\"\nchannels = [\"voice\"]\nhandle_time = { dist = \"fixed\", s = 60 }\n\n[[agent_groups]]",
    );
    let e = Scenario::parse(&two, Path::new(".")).unwrap_err();
    assert!(
        e.contains("name a `queue`") && e.contains("support, sales"),
        "{e}"
    );
}

#[test]
fn blocking_and_channel_maxima_shape_the_work_and_are_honoured() {
    let text = std::fs::read_to_string(shipped("omnichannel.toml")).unwrap();
    // Blended agents: a call costs 2 of 3 units (a chat may run beside it), but no new
    // chat or email is offered during a call; at most one chat at a time.
    let variant = text
        .replace(
            "channels = { voice = 3, chat = 1, email = 1 }",
            "channels = { voice = 2, chat = 1, email = 1 }\nblocking = { voice = [\"chat\", \"email\"] }",
        )
        .replace("max_concurrent = { email = 1 }", "max_concurrent = { email = 1, chat = 1 }");
    assert_ne!(variant, text);
    let s = Scenario::parse(&variant, Path::new(".")).unwrap();
    let r = sim::run(&s, 3, &mut |_, _| {}).unwrap();
    assert!(
        r.violations.is_empty(),
        "{:?}",
        &r.violations[..3.min(r.violations.len())]
    );
    let plain = sim::run(
        &Scenario::parse(&text, Path::new(".")).unwrap(),
        3,
        &mut |_, _| {},
    )
    .unwrap();
    // The settings reach the engine: same customers, different service.
    let asa = |r: &omniroute_loadtest::report::Report| {
        r.queues
            .iter()
            .map(|q| q.average_speed_of_answer_s.unwrap_or(0.0))
            .collect::<Vec<_>>()
    };
    assert_eq!(r.overall.offered, plain.overall.offered);
    assert_ne!(asa(&r), asa(&plain));
    // Occupancy counts an agent's time once however much it carries at once: it stays
    // within the logged-in time, and the work held at once is what makes busy exceed
    // it (the shipped blended and Spanish agents take chats and emails side by side).
    for (name, occupied, busy, staffed, occupancy, at_once) in plain
        .groups
        .iter()
        .map(|g| {
            let n = g.group.as_str();
            (
                n,
                g.occupied_hours,
                g.busy_hours,
                g.staffed_hours,
                g.occupancy,
                g.concurrency,
            )
        })
        .chain(plain.channels.iter().map(|c| {
            let n = c.channel.as_str();
            (
                n,
                c.occupied_hours,
                c.busy_hours,
                c.staffed_hours,
                c.occupancy,
                c.concurrency,
            )
        }))
    {
        let (occupancy, at_once) = (occupancy.unwrap(), at_once.unwrap());
        assert!(occupied <= busy + 1e-9 && occupied <= staffed, "{name}");
        assert!((occupancy - occupied / staffed).abs() < 1e-9, "{name}");
        assert!((at_once - busy / occupied).abs() < 1e-9, "{name}");
        assert!(occupancy <= 1.0, "{name}: {occupancy}");
    }
    let group = |n: &str| plain.groups.iter().find(|g| g.group == n).unwrap();
    // Voice agents take one call at a time; Spanish agents several chats.
    assert!((group("voice").concurrency.unwrap() - 1.0).abs() < 1e-9);
    assert!(group("spanish").concurrency.unwrap() > 1.05);
}

#[test]
fn a_group_s_own_handle_time_replaces_the_queue_s() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let fast = Scenario::parse(
        &text.replace(
            "channels = { voice = 1 }",
            "channels = { voice = 1 }\nhandle_time = { dist = \"fixed\", s = 60 }",
        ),
        Path::new("."),
    )
    .unwrap();
    let r = sim::run(&fast, 7, &mut |_, _| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let aht = r.queues[0].average_handle_time_s.unwrap();
    assert!((aht - 60.0).abs() < 0.01, "{aht}");
}

#[test]
fn agents_done_with_wrap_up_sooner_end_it_themselves() {
    let text = std::fs::read_to_string(shipped("small.toml")).unwrap();
    let s = Scenario::parse(
        &text
            .replace(
                "offer_timeout_s = 15",
                "offer_timeout_s = 15\nwrap_up_s = 60",
            )
            .replace(
                "channels = { voice = 1 }",
                "channels = { voice = 1 }\nwrap_up = { dist = \"fixed\", s = 20 }",
            ),
        Path::new("."),
    )
    .unwrap();
    let r = sim::run(&s, 7, &mut |_, _| {}).unwrap();
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let (g, q) = (&r.groups[0], &r.queues[0]);
    // 20 s of after-call work each, not the queue's 60 s (a few still running at the
    // end are not counted).
    let wrap_s = (g.busy_hours - g.handle_hours) * 3_600.0;
    let all = q.answered as f64 * 20.0;
    assert!(
        wrap_s <= all + 1e-3 && wrap_s >= all - 5.0 * 20.0,
        "{wrap_s} vs {all}"
    );
}

#[test]
fn replications_and_jobs_below_one_are_refused_by_name() {
    for (flag, args) in [
        ("--replications", ["--replications", "0", "--jobs", "1"]),
        ("--jobs", ["--replications", "2", "--jobs", "0"]),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .arg("--scenario")
            .arg(shipped("small.toml"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
        assert!(
            out.stdout.is_empty(),
            "nothing ran: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn replications_report_their_throughput_over_all_runs() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("--scenario")
        .arg(shipped("small.toml"))
        .args(["--replications", "2", "--jobs", "2", "--report"])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("2 runs, "))
        .unwrap_or_else(|| panic!("no throughput line: {text}"));
    let total: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // The two runs' own counts, from the report: each run's interactions are its
    // customers, at least as many as its queues were offered.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    let mut own = 0;
    for r in runs {
        let n = r["interactions"].as_u64().expect("interactions");
        let offered = r["overall"]["offered"].as_u64().expect("overall offered");
        assert!(
            n >= offered && offered > 1_000,
            "{n} interactions, {offered} offered"
        );
        own += n;
    }
    assert_eq!(total, own, "{line}");
    assert!(
        line.contains("with 2 jobs") && line.ends_with("interactions per wall second"),
        "{line}"
    );
}

/// Every key of `value` (objects' field names, at any depth).
fn keys(value: &serde_json::Value, into: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                into.insert(k.clone());
                keys(v, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
        _ => {}
    }
}

#[test]
fn every_field_of_the_json_reports_is_documented() {
    // docs/SIMULATOR.md is the reports' schema: each field the JSON has is named there
    // (in backticks), for a run's report and for a replications summary.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SIMULATOR.md"))
            .unwrap();
    let text = std::fs::read_to_string(shipped("omnichannel.toml")).unwrap();
    let s = Scenario::parse(
        &text.replace("duration_s = 28_800", "duration_s = 3_600"),
        Path::new("."),
    )
    .unwrap();
    let mut found = std::collections::BTreeSet::new();
    let report = sim::run(&s, 1, &mut |_, _| {}).unwrap();
    keys(&serde_json::to_value(&report).unwrap(), &mut found);
    let summary = omniroute_loadtest::replications::run(&s, &[1, 2], 1).unwrap();
    keys(&serde_json::to_value(&summary).unwrap(), &mut found);
    assert!(found.len() > 50, "{found:?}");
    let missing: Vec<&String> = found
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")) && !doc.contains(&format!("`{k}[]`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/SIMULATOR.md: {missing:?}");
}
