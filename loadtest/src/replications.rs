//! Replications: the same scenario on virtual time with several seeds, and each
//! figure's mean with a 95 % confidence interval across them — how a planner tells a
//! real difference between two staffing plans from the noise of one run.

use crate::report::Report;
use crate::scenario::Scenario;
use crate::sim;
use serde::Serialize;

/// A figure across replications.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stat {
    /// Replications that had the figure (a queue with no answered call has no ASA).
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 with one replication).
    pub sd: f64,
    /// Half-width of the 95 % confidence interval of the mean (Student's t; 0 with
    /// fewer than two replications).
    pub ci95: f64,
}

impl Stat {
    /// Of these values (None if there are none).
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(Stat {
                n,
                mean,
                sd: 0.0,
                ci95: 0.0,
            });
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sd = var.sqrt();
        Some(Stat {
            n,
            mean,
            sd,
            ci95: t_975(n - 1) * sd / (n as f64).sqrt(),
        })
    }
}

/// Student's t, 97.5th percentile, for `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// One queue's (or the center's) figures across replications.
#[derive(Clone, Debug, Serialize)]
pub struct QueueSummary {
    /// Queue id (`all` for the center).
    pub queue: String,
    /// Offered per replication.
    pub offered: Option<Stat>,
    /// Service level.
    pub service_level: Option<Stat>,
    /// Average speed of answer, seconds.
    pub average_speed_of_answer_s: Option<Stat>,
    /// Abandon rate.
    pub abandon_rate: Option<Stat>,
    /// Average handle time, seconds.
    pub average_handle_time_s: Option<Stat>,
}

/// The summary of a set of replications.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// Per queue, then `all`.
    pub queues: Vec<QueueSummary>,
    /// Occupancy per agent group.
    pub group_occupancy: Vec<(String, Option<Stat>)>,
    /// Every replication's violations, with the seed: (seed, kind, interaction, agent,
    /// detail).
    pub violations: Vec<(u64, String, u64, String, String)>,
    /// Every replication's own report.
    pub runs: Vec<Report>,
}

/// How many replications run at once: `jobs`, at least one, at most one per run.
pub fn threads(jobs: usize, runs: usize) -> usize {
    jobs.clamp(1, runs.max(1))
}

/// Runs `scenario` once per seed on virtual time.
///
/// Up to `jobs` replications run at once, each on a thread of its own (a run is
/// single-threaded: its own paused clock and runtime), so a machine's cores all work;
/// each run depends only on its seed, so the summary is the same for any `jobs`.
pub fn run(scenario: &Scenario, seeds: &[u64], jobs: usize) -> Result<Summary, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<std::sync::Mutex<Option<Result<Report, String>>>> =
        seeds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads(jobs, seeds.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(seed) = seeds.get(i) else { return };
                    let run = sim::run(scenario, *seed, &mut |_, _| {});
                    let failed = run.is_err();
                    *done[i].lock().unwrap() = Some(run);
                    if failed {
                        // The others finish what they run; nothing new starts.
                        next.store(seeds.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut runs = Vec::with_capacity(seeds.len());
    for (seed, run) in seeds.iter().zip(done) {
        match run.into_inner().unwrap() {
            Some(Ok(report)) => runs.push(report),
            Some(Err(e)) => return Err(format!("seed {seed}: {e}")),
            // Not started: an earlier seed failed (runs start in seed order).
            None => return Err(format!("seed {seed}: not run")),
        }
    }
    Ok(summarise(scenario, seeds, runs))
}

fn summarise(scenario: &Scenario, seeds: &[u64], runs: Vec<Report>) -> Summary {
    let queue_names: Vec<String> = scenario
        .queues
        .iter()
        .map(|q| q.id.clone())
        .chain(std::iter::once("all".to_string()))
        .collect();
    let queues = queue_names
        .iter()
        .enumerate()
        .map(|(qi, name)| {
            let pick = |r: &Report| {
                if qi < scenario.queues.len() {
                    r.queues[qi].clone()
                } else {
                    r.overall.clone()
                }
            };
            let stat = |f: &dyn Fn(&crate::report::QueueReport) -> Option<f64>| {
                let values: Vec<f64> = runs.iter().filter_map(|r| f(&pick(r))).collect();
                Stat::of(&values)
            };
            QueueSummary {
                queue: name.clone(),
                offered: stat(&|q| Some(q.offered as f64)),
                service_level: stat(&|q| q.service_level),
                average_speed_of_answer_s: stat(&|q| q.average_speed_of_answer_s),
                abandon_rate: stat(&|q| q.abandon_rate),
                average_handle_time_s: stat(&|q| q.average_handle_time_s),
            }
        })
        .collect();
    let group_occupancy = scenario
        .agent_groups
        .iter()
        .enumerate()
        .map(|(gi, g)| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.groups[gi].occupancy).collect();
            (g.name.clone(), Stat::of(&values))
        })
        .collect();
    let violations = runs
        .iter()
        .flat_map(|r| {
            r.violations.iter().map(move |v| {
                (
                    r.seed,
                    v.kind.clone(),
                    v.interaction,
                    v.agent.clone(),
                    v.detail.clone(),
                )
            })
        })
        .collect();
    Summary {
        scenario: scenario.name.clone(),
        seeds: seeds.to_vec(),
        queues,
        group_occupancy,
        violations,
        runs,
    }
}

impl Summary {
    /// The terminal table: mean ± 95 % CI half-width.
    pub fn table(&self) -> String {
        let pm = |s: &Option<Stat>, scale: f64, unit: &str| match s {
            Some(s) => format!("{:.1}{unit} ± {:.1}", s.mean * scale, s.ci95 * scale),
            None => "-".to_string(),
        };
        let mut out = format!(
            "scenario `{}`: {} replications (seeds {}–{}), mean ± 95 % confidence half-width\n",
            self.scenario,
            self.seeds.len(),
            self.seeds.first().copied().unwrap_or(0),
            self.seeds.last().copied().unwrap_or(0)
        );
        out.push_str(&format!(
            "{:<14} {:>16} {:>16} {:>16} {:>16} {:>16}\n",
            "queue", "offered", "SL", "ASA_s", "abn_rate", "AHT_s"
        ));
        for q in &self.queues {
            out.push_str(&format!(
                "{:<14} {:>16} {:>16} {:>16} {:>16} {:>16}\n",
                q.queue,
                pm(&q.offered, 1.0, ""),
                pm(&q.service_level, 100.0, "%"),
                pm(&q.average_speed_of_answer_s, 1.0, ""),
                pm(&q.abandon_rate, 100.0, "%"),
                pm(&q.average_handle_time_s, 1.0, ""),
            ));
        }
        for (g, s) in &self.group_occupancy {
            out.push_str(&format!("group {g:<12} occupancy {}\n", pm(s, 100.0, "%")));
        }
        if self.violations.is_empty() {
            out.push_str("checks: no violation in any replication\n");
        } else {
            out.push_str(&format!(
                "checks: {} VIOLATIONS (first: seed {} {} interaction {} agent `{}`: {})\n",
                self.violations.len(),
                self.violations[0].0,
                self.violations[0].1,
                self.violations[0].2,
                self.violations[0].3,
                self.violations[0].4
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sd_and_confidence_interval() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.n, 4);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // t(0.975, 3) = 3.182
        assert!((s.ci95 - 3.182 * s.sd / 2.0).abs() < 1e-9);
        assert_eq!(Stat::of(&[7.0]).unwrap().ci95, 0.0);
        assert!(Stat::of(&[]).is_none());
    }
}
