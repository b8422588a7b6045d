//! The simulator's statistics against queueing theory: a single-skill queue with
//! Poisson arrivals and exponential handle times is M/M/c, whose waits Erlang C gives
//! exactly. Also: the same scenario and seed give the same run.

use omniroute_loadtest::scenario::Scenario;
use omniroute_loadtest::sim;
use std::path::Path;

fn scenario(
    agents: u32,
    calls_per_hour: f64,
    mean_handle_s: f64,
    hours: f64,
    seed: u64,
) -> Scenario {
    let text = format!(
        r#"
name = "M/M/{agents}"
duration_s = {duration}
seed = {seed}

[[queues]]
id = "q"
channels = ["voice"]
skills = {{ s = 1 }}
service_level_s = 20
offer_timeout_s = 60
handle_time = {{ dist = "exponential", mean_s = {mean_handle_s} }}

[[agent_groups]]
name = "a"
count = {agents}
skills = {{ s = 1 }}
channels = {{ voice = 1 }}

[[arrivals]]
queue = "q"
channel = "voice"
rate_per_hour = {calls_per_hour}
"#,
        duration = hours * 3_600.0
    );
    Scenario::parse(&text, Path::new(".")).unwrap()
}

/// Erlang C: the probability an arrival waits, for `c` servers and `a` Erlangs.
fn erlang_c(c: u32, a: f64) -> f64 {
    // Erlang B by recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho + rho * b)
}

#[test]
fn an_m_m_c_queue_matches_erlang_c() {
    // 5 agents, 3 Erlangs (60 calls/h × 180 s), 300 simulated hours ≈ 18,000 calls.
    let (c, lambda_h, mean) = (5, 60.0, 180.0);
    let s = scenario(c, lambda_h, mean, 300.0, 11);
    let report = sim::run(&s, 11, &mut |_, _| {}).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let q = &report.queues[0];
    let lambda = lambda_h / 3_600.0;
    let mu = 1.0 / mean;
    let a = lambda / mu;
    let pw = erlang_c(c, a);
    let decay = c as f64 * mu - lambda;
    let expected_sl = 1.0 - pw * (-decay * 20.0).exp();
    let expected_asa = pw / decay;
    let sl = q.service_level.unwrap();
    let asa = q.average_speed_of_answer_s.unwrap();
    eprintln!(
        "offered {} SL {sl:.4} (Erlang C {expected_sl:.4}), ASA {asa:.2} s (Erlang C {expected_asa:.2} s), AHT {:?}",
        q.offered, q.average_handle_time_s
    );
    assert_eq!(q.abandoned, 0);
    assert_eq!(q.answered, q.offered);
    assert!((sl - expected_sl).abs() < 0.03, "SL {sl} vs {expected_sl}");
    assert!(
        (asa - expected_asa).abs() < 0.15 * expected_asa,
        "ASA {asa} vs {expected_asa}"
    );
    let aht = q.average_handle_time_s.unwrap();
    assert!((aht - mean).abs() < 0.05 * mean, "AHT {aht}");
    // Occupancy of an M/M/c queue is a/c.
    let occ = report.groups[0].occupancy.unwrap();
    assert!(
        (occ - a / c as f64).abs() < 0.03,
        "occupancy {occ} vs {}",
        a / c as f64
    );
}

#[test]
fn the_same_scenario_and_seed_give_the_same_run() {
    let s = scenario(3, 40.0, 200.0, 8.0, 5);
    let one = sim::run(&s, 5, &mut |_, _| {}).unwrap();
    let two = sim::run(&s, 5, &mut |_, _| {}).unwrap();
    let figures = |r: &omniroute_loadtest::report::Report| {
        serde_json::to_string(&(&r.queues, &r.groups, r.simulated_s, r.engine.offers)).unwrap()
    };
    assert_eq!(figures(&one), figures(&two));
    let other = sim::run(&s, 6, &mut |_, _| {}).unwrap();
    assert_ne!(figures(&one), figures(&other), "another seed, another run");
}
