//! Dispatcher benchmarks on a realistic center.
//!
//! `cargo bench --bench dispatch` — a center of 10,000 agents, 1,000 queues and 200
//! skills; agents hold 3–8 skills with proficiencies 1–10 and mixed capacity profiles
//! (voice-only, voice + chat with voice blocking chat, chat + email + messaging); queues
//! require one skill at a minimum proficiency with 0–2 optional skills, take one channel
//! each and use all four policies.
//!
//! * `arrival`: time of `submit` when an interaction arrives and is offered (the
//!   center runs at about 50 % occupancy: each iteration accepts the offer and
//!   completes the oldest work, untimed).
//! * `pull`: time of `complete` when an agent's capacity frees and it pulls the best
//!   waiting interaction across its queues (the center is oversubscribed: every queue
//!   has work waiting).
//! * `arrival_scaling/{1000,10000,100000}`: arrival decisions as the agents grow in the
//!   same 1,000 queues (each queue's membership grows 100×).
//! * `arrival_scaling_proportional/{…}`: queues (agents/10) and skills (agents/50) grow
//!   with the agents, so each agent serves as many queues as before.
//!
//! Besides criterion's estimates the bench prints per-decision percentiles (p50, p99,
//! p99.9, from individually timed calls) and the sustained single-core rate.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};

mod support;

use support::*;

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{label}: n={} p50={:?} p90={:?} p99={:?} p99.9={:?} max={:?} mean={:?} (≈{:.0} decisions/s on one core)",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1],
        mean,
        1.0 / mean.as_secs_f64()
    );
}

/// Total time of `iters` timed calls (for criterion's `iter_custom`).
fn timed_total(iters: u64, mut step: impl FnMut(&mut dyn FnMut(&mut dyn FnMut()))) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        step(&mut |f| {
            let start = Instant::now();
            f();
            total += start.elapsed();
        });
    }
    total
}

fn timed_samples(
    n: usize,
    mut step: impl FnMut(&mut dyn FnMut(&mut dyn FnMut())),
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        step(&mut |f| {
            let start = Instant::now();
            f();
            samples.push(start.elapsed());
        });
    }
    samples
}

fn bench_arrival(c: &mut Criterion) {
    let mut driver = ArrivalDriver::new(realistic(10_000));
    let samples = timed_samples(200_000, |t| driver.step(|f| t(f)));
    percentiles("arrival decision, 10,000 agents", samples);
    c.bench_function("arrival", |b| {
        b.iter_custom(|iters| timed_total(iters, |t| driver.step(|f| t(f))))
    });
}

fn bench_pull(c: &mut Criterion) {
    let mut driver = PullDriver::new(realistic(10_000));
    let samples = timed_samples(100_000, |t| driver.step(|f| t(f)));
    percentiles("pull decision (complete → offer), 10,000 agents", samples);
    c.bench_function("pull", |b| {
        b.iter_custom(|iters| timed_total(iters, |t| driver.step(|f| t(f))))
    });
}

fn scaling(c: &mut Criterion, group: &str, shape_of: fn(usize) -> Shape) {
    let mut group = c.benchmark_group(group);
    for agents in [1_000usize, 10_000, 100_000] {
        let shape = shape_of(agents);
        let mut driver = ArrivalDriver::new(shape);
        let samples = timed_samples(50_000, |t| driver.step(|f| t(f)));
        percentiles(
            &format!(
                "arrival decision, {agents} agents, {} queues, {} skills",
                shape.queues, shape.skills
            ),
            samples,
        );
        group.bench_with_input(BenchmarkId::from_parameter(agents), &agents, |b, _| {
            b.iter_custom(|iters| timed_total(iters, |t| driver.step(|f| t(f))))
        });
    }
    group.finish();
}

fn bench_scaling(c: &mut Criterion) {
    scaling(c, "arrival_scaling", realistic);
}

fn bench_scaling_proportional(c: &mut Criterion) {
    scaling(c, "arrival_scaling_proportional", proportional);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench_arrival, bench_pull, bench_scaling, bench_scaling_proportional
}
criterion_main!(benches);
