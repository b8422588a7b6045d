//! The simulator's statistics against queueing theory: a single-skill queue with
//! Poisson arrivals and exponential handle times is M/M/c, whose waits Erlang C gives
//! exactly. Also: the same scenario and seed give the same run.

use omniroute_loadtest::replications::{self, Stat};
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

/// M/M/c+M (Erlang A) by its birth–death chain: the share of customers who abandon and
/// the mean wait of all customers (answered or not), E[Lq] / λ.
fn erlang_a(c: u32, lambda: f64, mu: f64, theta: f64) -> (f64, f64) {
    let n_max = 2_000;
    let mut p = vec![1.0f64];
    for n in 1..=n_max {
        let death = (n.min(c as usize)) as f64 * mu + n.saturating_sub(c as usize) as f64 * theta;
        let next = p[n - 1] * lambda / death;
        p.push(next);
    }
    let total: f64 = p.iter().sum();
    let lq: f64 = p
        .iter()
        .enumerate()
        .map(|(n, pn)| n.saturating_sub(c as usize) as f64 * pn / total)
        .sum();
    (theta * lq / lambda, lq / lambda)
}

/// 5 agents, 4.5 Erlangs offered (90 calls an hour, 180 s each), patience 60 s on
/// average: many wait, some leave — M/M/5+M for `hours`.
const ERLANG_A: (u32, f64, f64, f64) = (5, 90.0, 180.0, 60.0);

fn erlang_a_scenario(hours: f64) -> Scenario {
    let (c, lambda_h, mean, patience) = ERLANG_A;
    let text = format!(
        r#"
duration_s = {duration}
[[queues]]
id = "q"
channels = ["voice"]
offer_timeout_s = 60
handle_time = {{ dist = "exponential", mean_s = {mean} }}
patience = {{ dist = "exponential", mean_s = {patience} }}
[[agent_groups]]
name = "a"
count = {c}
channels = {{ voice = 1 }}
[[arrivals]]
queue = "q"
channel = "voice"
rate_per_hour = {lambda_h}
"#,
        duration = hours * 3_600.0
    );
    Scenario::parse(&text, Path::new(".")).unwrap()
}

/// Erlang A's abandon share and mean wait (answered or not) for [`ERLANG_A`].
fn erlang_a_theory() -> (f64, f64) {
    let (c, lambda_h, mean, patience) = ERLANG_A;
    erlang_a(c, lambda_h / 3_600.0, 1.0 / mean, 1.0 / patience)
}

/// A run's mean wait of every customer, answered (arrival → accept) or not (arrival →
/// leaving), seconds.
fn mean_wait_of_all(q: &omniroute_loadtest::report::QueueReport) -> f64 {
    (q.answered_waits.mean_s * q.answered as f64 + q.abandoned_waits.mean_s * q.abandoned as f64)
        / (q.answered + q.abandoned) as f64
}

#[test]
fn customers_who_give_up_match_erlang_a() {
    let s = erlang_a_scenario(200.0);
    let report = sim::run(&s, 3, &mut |_, _| {}).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let q = &report.queues[0];
    let (p_ab, mean_wait) = erlang_a_theory();
    let sim_ab = q.abandoned as f64 / q.offered as f64;
    let sim_wait = mean_wait_of_all(q);
    eprintln!(
        "offered {}: abandoned {sim_ab:.4} (Erlang A {p_ab:.4}), mean wait {sim_wait:.2} s (Erlang A {mean_wait:.2} s)",
        q.offered
    );
    assert!(
        (sim_ab - p_ab).abs() < 0.015,
        "abandon share {sim_ab} vs {p_ab}"
    );
    assert!(
        (sim_wait - mean_wait).abs() < 0.1 * mean_wait,
        "mean wait {sim_wait} vs {mean_wait}"
    );
}

/// Two queues served by the same 4 agents (120 s calls); "gold" (30 an hour) has
/// priority over "basic" (60 an hour).
const PRIORITIES: (u32, f64, f64, f64) = (4, 120.0, 30.0, 60.0);

fn priority_scenario(hours: f64) -> Scenario {
    let (c, mean, gold_h, basic_h) = PRIORITIES;
    let text = format!(
        r#"
duration_s = {duration}
[[queues]]
id = "gold"
channels = ["voice"]
priority = 10
offer_timeout_s = 60
handle_time = {{ dist = "exponential", mean_s = {mean} }}
[[queues]]
id = "basic"
channels = ["voice"]
offer_timeout_s = 60
handle_time = {{ dist = "exponential", mean_s = {mean} }}
[[agent_groups]]
name = "a"
count = {c}
channels = {{ voice = 1 }}
[[arrivals]]
queue = "gold"
channel = "voice"
rate_per_hour = {gold_h}
[[arrivals]]
queue = "basic"
channel = "voice"
rate_per_hour = {basic_h}
"#,
        duration = hours * 3_600.0
    );
    Scenario::parse(&text, Path::new(".")).unwrap()
}

/// The mean waits of [`PRIORITIES`]' two classes: with one service rate, an M/M/c
/// non-preemptive priority queue's are W_k = C(c, a) / (cμ) / ((1 − σ_{k−1})(1 − σ_k)),
/// σ_k the load of classes 1..k.
fn priority_theory() -> (f64, f64) {
    let (c, mean, gold_h, basic_h) = PRIORITIES;
    let mu = 1.0 / mean;
    let (l1, l2) = (gold_h / 3_600.0, basic_h / 3_600.0);
    let cmu = c as f64 * mu;
    let (s1, s2) = (l1 / cmu, (l1 + l2) / cmu);
    let w0 = erlang_c(c, (l1 + l2) / mu) / cmu;
    (w0 / (1.0 - s1), w0 / ((1.0 - s1) * (1.0 - s2)))
}

#[test]
fn priorities_match_the_non_preemptive_m_m_c_formula() {
    let s = priority_scenario(300.0);
    let report = sim::run(&s, 9, &mut |_, _| {}).unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let (w_gold, w_basic) = priority_theory();
    let (gold, basic) = (&report.queues[0], &report.queues[1]);
    let (g, b) = (
        gold.average_speed_of_answer_s.unwrap(),
        basic.average_speed_of_answer_s.unwrap(),
    );
    eprintln!(
        "gold {g:.2} s (theory {w_gold:.2} s), basic {b:.2} s (theory {w_basic:.2} s), {} + {} calls",
        gold.offered, basic.offered
    );
    assert!((g - w_gold).abs() < 0.2 * w_gold, "gold {g} vs {w_gold}");
    assert!(
        (b - w_basic).abs() < 0.12 * w_basic,
        "basic {b} vs {w_basic}"
    );
    assert!(g < b / 2.0);
}

#[test]
fn replications_put_erlang_c_inside_their_confidence_interval() {
    // M/M/5 at 3 Erlangs again, as 6 independent replications of 100 hours: the mean
    // service level and ASA across them, with a 95 % interval that holds the theory.
    let (c, lambda_h, mean) = (5, 60.0, 180.0);
    let s = scenario(c, lambda_h, mean, 100.0, 1);
    let seeds: Vec<u64> = (1..=6).collect();
    // Two at a time (one per core here): the summary does not depend on it.
    let summary = omniroute_loadtest::replications::run(&s, &seeds, 2).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    let (lambda, mu) = (lambda_h / 3_600.0, 1.0 / mean);
    let pw = erlang_c(c, lambda / mu);
    let decay = c as f64 * mu - lambda;
    let expected_sl = 1.0 - pw * (-decay * 20.0).exp();
    let expected_asa = pw / decay;
    let q = &summary.queues[0];
    let sl = q.service_level.clone().unwrap();
    let asa = q.average_speed_of_answer_s.clone().unwrap();
    eprintln!("SL {sl:?} vs {expected_sl:.4}; ASA {asa:?} vs {expected_asa:.2}");
    assert_eq!(sl.n, 6);
    assert!(sl.ci95 > 0.0 && sl.ci95 < 0.05, "{sl:?}");
    assert!(
        (sl.mean - expected_sl).abs() <= sl.ci95,
        "{sl:?} vs {expected_sl}"
    );
    assert!(
        (asa.mean - expected_asa).abs() <= asa.ci95,
        "{asa:?} vs {expected_asa}"
    );
    // Each replication is the run that seed gives alone, in seed order.
    let alone = sim::run(&s, 3, &mut |_, _| {}).unwrap();
    assert_eq!(
        summary.runs[2].queues[0].service_level,
        alone.queues[0].service_level
    );
    let one_at_a_time = omniroute_loadtest::replications::run(&s, &seeds[..3], 1).unwrap();
    for (a, b) in one_at_a_time.runs.iter().zip(&summary.runs) {
        assert_eq!(a.queues[0].service_level, b.queues[0].service_level);
        assert_eq!(a.queues[0].answered, b.queues[0].answered);
    }
}

#[test]
fn replications_put_erlang_a_and_the_priority_formula_inside_their_intervals() {
    // As for Erlang C above: six independent replications, their mean and its
    // interval (Student's t), which must hold the theory — a tolerance from the runs'
    // own spread, not one chosen by hand. 99 % here (t 4.032 for 5 degrees of freedom
    // against the 95 % half-width's 2.571): four figures at 95 % would, by chance alone,
    // fail after one harmless change in five that moves the random draws.
    let seeds: Vec<u64> = (1..=6).collect();
    let inside = |what: &str, stat: &Stat, theory: f64| {
        eprintln!("{what}: {stat:?} vs {theory:.4}");
        assert_eq!(stat.n, 6, "{what}");
        assert!(stat.ci95 > 0.0, "{what}: {stat:?}");
        let ci99 = stat.ci95 * 4.032 / 2.571;
        assert!(
            (stat.mean - theory).abs() <= ci99,
            "{what}: {stat:?} (99 %: ± {ci99}) vs {theory}"
        );
    };

    // Erlang A: the abandon share, and the mean wait of every customer.
    let summary = replications::run(&erlang_a_scenario(100.0), &seeds, 2).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    let (p_ab, mean_wait) = erlang_a_theory();
    let q = &summary.queues[0];
    inside("abandon share", q.abandon_rate.as_ref().unwrap(), p_ab);
    let waits: Vec<f64> = summary
        .runs
        .iter()
        .map(|r| mean_wait_of_all(&r.queues[0]))
        .collect();
    inside("mean wait", &Stat::of(&waits).unwrap(), mean_wait);

    // Priorities: each class's mean wait.
    let summary = replications::run(&priority_scenario(100.0), &seeds, 2).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    let (w_gold, w_basic) = priority_theory();
    let asa = |i: usize| summary.queues[i].average_speed_of_answer_s.clone().unwrap();
    inside("gold wait", &asa(0), w_gold);
    inside("basic wait", &asa(1), w_basic);
}
