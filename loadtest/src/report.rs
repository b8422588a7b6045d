//! What a run records, and the report made from it (terminal table, JSON). Every
//! figure's definition is in docs/SIMULATOR.md.

use crate::scenario::Scenario;
use crate::watch::Watch;
use hdrhistogram::Histogram;
use omniroute_transport::actors::Push;
use serde::Serialize;
use std::collections::HashMap;

/// One interaction as the simulator saw it (times in ms from the run's start).
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Queue index in the scenario.
    pub queue: usize,
    /// The engine's id, once submitted.
    pub id: Option<u64>,
    /// When it arrived.
    pub arrived_ms: u64,
    /// The same in µs (connect mode measures routing latency from it).
    pub arrived_us: u64,
    /// The channel it arrived on (index in the scenario's channels).
    pub channel: usize,
    /// When an agent accepted it.
    pub answered_ms: Option<u64>,
    /// Which agent (index in the scenario's agent list).
    pub agent: Option<usize>,
    /// When the customer gave up.
    pub abandoned_ms: Option<u64>,
    /// When the agent completed it.
    pub completed_ms: Option<u64>,
    /// When its wrap-up ended (queues with wrap-up).
    pub wrap_up_ended_ms: Option<u64>,
    /// Why the submit was refused.
    pub refused: Option<String>,
    /// Still waiting in the engine at the end (no agent left to take it).
    pub still_waiting: bool,
    /// When it arrived, the simulator saw an eligible agent with room for it (connect
    /// mode times routing on these only).
    pub found_free: bool,
}

impl Record {
    /// Arrived at `arrived_ms` in queue `queue`.
    pub fn new(queue: usize, arrived_ms: u64) -> Self {
        Record {
            queue,
            arrived_ms,
            arrived_us: arrived_ms * 1_000,
            ..Default::default()
        }
    }

    /// Accept → complete, ms.
    pub fn handle_ms(&self) -> Option<u64> {
        Some(self.completed_ms? - self.answered_ms?)
    }

    /// Accept → end of wrap-up (or completion without wrap-up), ms.
    pub fn busy_ms(&self) -> Option<u64> {
        Some(self.wrap_up_ended_ms.or(self.completed_ms)? - self.answered_ms?)
    }

    /// The agent's index and when it held this work: accept → end of wrap-up (or
    /// completion without wrap-up), ms.
    fn busy_span(&self) -> Option<(usize, u64, u64)> {
        let to = self.wrap_up_ended_ms.or(self.completed_ms)?;
        Some((self.agent?, self.answered_ms?, to))
    }

    /// Completed, abandoned, refused, or known to be still waiting at the end.
    pub fn finished(&self) -> bool {
        self.completed_ms.is_some()
            || self.abandoned_ms.is_some()
            || self.refused.is_some()
            || self.still_waiting
    }
}

/// Engine id → record index. The engine hands out ids in order, so mostly a vector
/// by id (the ids in use are the latest: its end stays in cache, where a hash table's
/// entries would be anywhere); an id far outside the range seen, or one that would
/// leave the vector mostly empty (in connect mode, when other clients take most of a
/// server's ids), goes to a map.
#[derive(Default)]
struct IdIndex {
    /// The first id seen: `dense[id - base]`.
    base: Option<u64>,
    /// Record index + 1 (0: none).
    dense: Vec<u32>,
    /// Slots of `dense` in use.
    filled: usize,
    sparse: rustc_hash::FxHashMap<u64, usize>,
}

impl IdIndex {
    /// How far past the dense end an id may land and still extend it.
    const GAP: u64 = 1 << 16;
    /// The vector grows to at most this many slots per one in use (past `GAP`).
    const SPREAD: u64 = 8;

    fn insert(&mut self, id: u64, index: usize) {
        let base = *self.base.get_or_insert(id);
        let len = self.dense.len() as u64;
        let bound = Self::SPREAD * (self.filled as u64 + 1) + Self::GAP;
        let slot = id.checked_sub(base).filter(|&at| {
            (at < len || (at < len + Self::GAP && at < bound)) && index < u32::MAX as usize
        });
        match slot {
            Some(at) => {
                let at = at as usize;
                if at >= self.dense.len() {
                    self.dense.resize(at + 1, 0);
                }
                if self.dense[at] == 0 {
                    self.filled += 1;
                }
                self.dense[at] = index as u32 + 1;
            }
            None => {
                self.sparse.insert(id, index);
            }
        }
    }

    fn get(&self, id: u64) -> Option<usize> {
        let dense = self
            .base
            .and_then(|base| id.checked_sub(base))
            .and_then(|at| self.dense.get(at as usize))
            .filter(|&&i| i != 0)
            .map(|&i| i as usize - 1);
        dense.or_else(|| self.sparse.get(&id).copied())
    }

    fn reserve(&mut self, n: usize) {
        self.dense.reserve(n);
    }
}

/// Time agents held at least one of `records`' interactions, ms: each agent's busy
/// spans merged, so work carried at once counts once.
fn occupied_ms<'a>(records: impl Iterator<Item = &'a Record>) -> u64 {
    let mut spans: Vec<(usize, u64, u64)> = records.filter_map(Record::busy_span).collect();
    merged_ms(&mut spans).iter().map(|(_, ms)| ms).sum()
}

/// Each agent's spans `(agent, from, to)` merged where they overlap or touch: the time
/// each agent (in order) spent in at least one, ms.
fn merged_ms(spans: &mut [(usize, u64, u64)]) -> Vec<(usize, u64)> {
    spans.sort_unstable();
    let mut totals: Vec<(usize, u64)> = Vec::new();
    let mut open: Option<(usize, u64, u64)> = None;
    let mut close = |(agent, start, end): (usize, u64, u64)| match totals.last_mut() {
        Some((a, total)) if *a == agent => *total += end - start,
        _ => totals.push((agent, end - start)),
    };
    for &(agent, from, to) in spans.iter() {
        match &mut open {
            Some((a, _, end)) if *a == agent && from <= *end => *end = (*end).max(to),
            _ => {
                if let Some(done) = open {
                    close(done);
                }
                open = Some((agent, from, to));
            }
        }
    }
    if let Some(done) = open {
        close(done);
    }
    totals
}

/// `part` ÷ `whole`, if there is a whole.
fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Each agent's staffed time, ms: logged in, or holding work after its shift ended
/// (an agent finishing a call past the end of its shift is at work), until `end_ms`.
fn staffed_ms(records: &Records, end_ms: u64) -> Vec<u64> {
    let mut spans: Vec<(usize, u64, u64)> = records
        .agents
        .iter()
        .enumerate()
        .flat_map(|(i, (_, shifts))| {
            shifts
                .iter()
                .map(move |(from, to)| (i, *from, to.unwrap_or(end_ms)))
        })
        .filter(|(_, from, to)| to > from)
        .chain(records.interactions.iter().filter_map(Record::busy_span))
        .collect();
    let mut staffed = vec![0; records.agents.len()];
    for (agent, ms) in merged_ms(&mut spans) {
        if let Some(s) = staffed.get_mut(agent) {
            *s = ms;
        }
    }
    staffed
}

/// A broken rule, with what it concerns.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// `agent_over_capacity`, `assigned_twice`, `offer_to_ineligible_agent`,
    /// `unaccounted`, `engine_invariant`, …
    pub kind: String,
    /// The interaction (0: none).
    pub interaction: u64,
    /// The agent (empty: none).
    pub agent: String,
    /// When (ms from the start).
    pub at_ms: u64,
    /// What exactly.
    pub detail: String,
}

/// A point of the time series (every simulated minute).
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Simulated ms from the start.
    pub at_ms: u64,
    /// Interactions live (waiting, offered or being handled).
    pub live: usize,
    /// Waiting per queue (arrived, not answered, not abandoned).
    pub waiting: Vec<u64>,
    /// Routing latency p99 of the submits in this minute, µs (wall clock).
    pub routing_p99_us: u64,
    /// Interactions arrived so far.
    pub arrived: u64,
    /// Answered within their queue's threshold so far.
    pub within_threshold: u64,
    /// Answered + abandoned so far (the service level's denominator).
    pub judged: u64,
}

/// A shift: logged in at, logged out at (None: still on at the end).
type Shift = (u64, Option<u64>);

/// Everything a run records.
pub struct Records {
    /// Interactions in arrival order.
    pub interactions: Vec<Record>,
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Offers made.
    pub offers: u64,
    /// Offers rejected by agents.
    pub rejected: u64,
    /// Offers that timed out.
    pub timed_out: u64,
    /// Times the engine set an agent away after missed offers (the simulated agent
    /// then made itself available again).
    pub set_away: u64,
    routing: Histogram<u64>,
    /// The routing latencies since the last sample, µs (a few hundred: sorting them
    /// costs less than clearing a histogram of an hour's range every minute).
    routing_minute: Vec<u64>,
    /// Per agent: group index and shift intervals (ms).
    agents: Vec<(usize, Vec<Shift>)>,
    /// Per-minute series.
    pub samples: Vec<Sample>,
    finished_ms: u64,
    /// Waiting per queue now (kept as events come, so samples cost nothing).
    waiting: Vec<u64>,
    /// Interactions not finished now.
    open: usize,
    /// Service-level thresholds per queue, ms.
    thresholds: Vec<u64>,
    /// Answered within threshold, and answered + abandoned, so far.
    sl_so_far: (u64, u64),
    /// The simulator's view of agents and waiting work, and its checks.
    pub watch: Watch,
    /// Engine id → index in `interactions`.
    by_id: IdIndex,
    /// Wall-clock time spent setting up before the run's clock started.
    pub setup_wall: std::time::Duration,
}

/// The 99th percentile of `values` (0 for none): the least value at or above which
/// 1 % of them lie — the ⌈0.99 n⌉-th smallest. Reorders them.
fn p99(values: &mut [u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = (values.len() * 99).div_ceil(100);
    *values.select_nth_unstable(rank - 1).1
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Records {
    /// Empty records for a scenario.
    pub fn new(scenario: &Scenario) -> Self {
        Records {
            interactions: Vec::new(),
            violations: Vec::new(),
            offers: 0,
            rejected: 0,
            timed_out: 0,
            set_away: 0,
            routing: histogram(),
            routing_minute: Vec::new(),
            agents: scenario
                .agents()
                .into_iter()
                .map(|(g, _)| (g, Vec::new()))
                .collect(),
            samples: Vec::new(),
            finished_ms: 0,
            waiting: vec![0; scenario.queues.len()],
            open: 0,
            thresholds: scenario
                .queues
                .iter()
                .map(|q| (q.service_level_s * 1000.0).round() as u64)
                .collect(),
            sl_so_far: (0, 0),
            watch: Watch::new(scenario, 1_000),
            by_id: Default::default(),
            setup_wall: std::time::Duration::ZERO,
        }
    }

    /// The record of engine interaction `id`, once its submit returned.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.by_id.get(id)
    }

    /// Interaction `i`'s submit returned its id at `at_ms`.
    pub fn submitted(&mut self, i: usize, id: u64, at_ms: u64) {
        let r = &mut self.interactions[i];
        r.id = Some(id);
        let (queue, channel) = (r.queue, r.channel);
        self.by_id.insert(id, i);
        self.watch.arrived(id, queue, channel, at_ms);
    }

    /// Room for `n` interactions more (the run's arrivals are drawn up front).
    pub fn expect(&mut self, n: usize) {
        self.interactions.reserve(n);
        self.by_id.reserve(n);
    }

    /// A push read from agent `agent`'s session at `at_ms` (capacity and presence as
    /// the simulator sees them; an offer beyond capacity is a violation).
    pub fn push_seen(&mut self, agent: usize, push: &Push, at_ms: u64) {
        self.watch.push(agent, push, at_ms);
        match push {
            Push::Offer(_) => self.offers += 1,
            Push::OfferEnded { reason, .. } if reason == "timed_out" => self.timed_out += 1,
            _ => {}
        }
        if let Push::WrapUpEnded { interaction } = push
            && let Some(i) = self.index_of(interaction.0)
        {
            self.interactions[i].wrap_up_ended_ms = Some(at_ms);
        }
        self.take_found();
    }

    /// Checks work conservation at `at_ms` (no interaction waiting while an eligible
    /// agent sat free: see [`Watch`]).
    pub fn check_conservation(&mut self, at_ms: u64) {
        self.watch.check(at_ms);
        self.take_found();
    }

    fn take_found(&mut self) {
        for v in std::mem::take(&mut self.watch.found) {
            self.violate(v);
        }
    }

    /// An interaction arrived (its record is the next index).
    pub fn arrive(&mut self, record: Record) -> usize {
        self.waiting[record.queue] += 1;
        self.open += 1;
        self.interactions.push(record);
        self.interactions.len() - 1
    }

    /// A broken rule.
    pub fn violate(&mut self, v: Violation) {
        if self.violations.len() < 10_000 {
            self.violations.push(v);
        }
    }

    /// An agent's shift starts (`on`) or ends.
    pub fn shift(&mut self, agent: usize, group: usize, at_ms: u64, on: bool) {
        let entry = &mut self.agents[agent];
        entry.0 = group;
        if on {
            entry.1.push((at_ms, None));
        } else if let Some(last) = entry.1.last_mut() {
            last.1 = Some(at_ms);
        }
    }

    /// A submit took `us` of wall-clock time.
    pub fn routing_us(&mut self, us: u64) {
        self.routing.saturating_record(us.max(1));
        self.routing_minute.push(us.max(1));
    }

    /// Interaction `i` was accepted by `agent`.
    pub fn answered(&mut self, i: usize, at_ms: u64, agent: &str, agent_idx: usize) {
        let (already, abandoned, id) = {
            let r = &self.interactions[i];
            (
                r.answered_ms.is_some(),
                r.abandoned_ms.is_some(),
                r.id.unwrap_or(0),
            )
        };
        if already {
            self.violate(Violation {
                kind: "assigned_twice".into(),
                interaction: id,
                agent: agent.to_string(),
                at_ms,
                detail: "accepted by a second agent (or twice)".into(),
            });
            return;
        }
        if abandoned {
            self.violate(Violation {
                kind: "answered_after_abandon".into(),
                interaction: id,
                agent: agent.to_string(),
                at_ms,
                detail: "accepted after the customer left".into(),
            });
        }
        let r = &mut self.interactions[i];
        r.answered_ms = Some(at_ms);
        r.agent = Some(agent_idx);
        if !abandoned {
            self.sl_so_far.1 += 1;
            if at_ms - r.arrived_ms <= self.thresholds[r.queue] {
                self.sl_so_far.0 += 1;
            }
        }
        if !abandoned && r.refused.is_none() {
            self.waiting[r.queue] -= 1;
        }
    }

    /// Interaction `i` was completed.
    pub fn completed(&mut self, i: usize, at_ms: u64) {
        let r = &mut self.interactions[i];
        if !r.finished() {
            self.open -= 1;
        }
        r.completed_ms = Some(at_ms);
    }

    /// Interaction `i` was abandoned.
    pub fn abandoned(&mut self, i: usize, at_ms: u64) {
        let r = &mut self.interactions[i];
        if !r.finished() {
            self.open -= 1;
            if r.answered_ms.is_none() {
                self.waiting[r.queue] -= 1;
                self.sl_so_far.1 += 1;
            }
        }
        r.abandoned_ms = Some(at_ms);
        if let Some(id) = r.id {
            self.watch.finished(id);
        }
    }

    /// Interaction `i` is still waiting in the engine at the end of the run.
    pub fn still_waiting(&mut self, i: usize) {
        let r = &mut self.interactions[i];
        if !r.finished() {
            self.open -= 1;
        }
        r.still_waiting = true;
    }

    /// Interaction `i` was refused at submit.
    pub fn refused(&mut self, i: usize, why: String) {
        let r = &mut self.interactions[i];
        if !r.finished() {
            self.open -= 1;
            self.waiting[r.queue] -= 1;
        }
        r.refused = Some(why);
    }

    /// Interactions not finished yet.
    pub fn open(&self) -> usize {
        self.open
    }

    /// A one-line progress report: simulated time, the arrival rate and the service
    /// level over the last 15 minutes (of the run's clock; since the start before
    /// that), open interactions.
    pub fn progress_line(&self, t: f64, total: f64, wall_s: f64) -> String {
        const WINDOW_MS: u64 = 15 * 60_000;
        let bar_len = 24;
        let done = ((t / total).clamp(0.0, 1.0) * bar_len as f64) as usize;
        let now_ms = (t * 1000.0) as u64;
        let (since_ms, arrived, within, judged) = self
            .samples
            .iter()
            .rev()
            .find(|s| s.at_ms + WINDOW_MS <= now_ms)
            .map_or((0, 0, 0, 0), |s| {
                (s.at_ms, s.arrived, s.within_threshold, s.judged)
            });
        let minutes = ((now_ms - since_ms.min(now_ms)) as f64 / 60_000.0).max(1.0 / 60.0);
        let rate = (self.interactions.len() as u64 - arrived) as f64 / minutes;
        let judged_now = self.sl_so_far.1 - judged;
        let sl = (judged_now > 0)
            .then(|| (self.sl_so_far.0 - within) as f64 / judged_now as f64)
            .map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0));
        format!(
            "[{}{}] {:>7.0}/{:.0} s simulated, {} arrived, {rate:.0}/min now, {} open, SL now {sl}",
            "#".repeat(done),
            ".".repeat(bar_len - done),
            t,
            total,
            self.interactions.len(),
            self.open,
        ) + &format!(" ({wall_s:.1} s wall)")
    }

    /// A point of the time series.
    pub fn sample(&mut self, at_ms: u64, live: usize) {
        let waiting = self.waiting.clone();
        let routing_p99_us = p99(&mut self.routing_minute);
        self.routing_minute.clear();
        self.samples.push(Sample {
            at_ms,
            live,
            waiting,
            routing_p99_us,
            arrived: self.interactions.len() as u64,
            within_threshold: self.sl_so_far.0,
            judged: self.sl_so_far.1,
        });
    }

    /// The run is over at `at_ms`: every interaction must be accounted for.
    pub fn close(&mut self, at_ms: u64) {
        self.finished_ms = at_ms;
        let open: Vec<(u64, u64, String)> = self
            .interactions
            .iter()
            .filter(|r| !r.finished())
            .map(|r| {
                let agent = r.agent.map_or("", |a| self.watch.agent_id(a));
                (r.id.unwrap_or(0), r.arrived_ms, agent.to_string())
            })
            .collect();
        for (id, arrived, agent) in open {
            let held = if agent.is_empty() {
                String::new()
            } else {
                format!(" (accepted by {agent})")
            };
            self.violate(Violation {
                kind: "unaccounted".into(),
                interaction: id,
                agent,
                at_ms,
                detail: format!(
                    "arrived at {arrived} ms and was neither completed nor abandoned by the end{held}"
                ),
            });
        }
    }
}

/// A breach the engine's own invariant check found, with the interaction and agent it
/// names (its messages say `interaction N` and `agent ID`).
pub fn engine_violation(detail: String, at_ms: u64) -> Violation {
    let after = |word: &str| {
        detail.split(word).nth(1).and_then(|rest| {
            let token: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ':')
                .collect();
            (!token.is_empty()).then_some(token)
        })
    };
    Violation {
        kind: "engine_invariant".into(),
        interaction: after("interaction ")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        agent: after("agent ").unwrap_or_default(),
        at_ms,
        detail,
    }
}

/// Percentiles of a set of durations, seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Waits {
    /// Mean.
    pub mean_s: f64,
    /// Median.
    pub p50_s: f64,
    /// 90th percentile.
    pub p90_s: f64,
    /// 99th percentile.
    pub p99_s: f64,
    /// Largest.
    pub max_s: f64,
}

impl Waits {
    fn of(ms: &mut [u64]) -> Self {
        if ms.is_empty() {
            return Waits::default();
        }
        ms.sort_unstable();
        let at = |q: f64| {
            ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1] as f64 / 1e3
        };
        Waits {
            mean_s: ms.iter().sum::<u64>() as f64 / ms.len() as f64 / 1e3,
            p50_s: at(0.5),
            p90_s: at(0.9),
            p99_s: at(0.99),
            max_s: *ms.last().expect("not empty") as f64 / 1e3,
        }
    }
}

/// One queue's figures (or the whole center's).
#[derive(Clone, Debug, Serialize)]
pub struct QueueReport {
    /// Queue id (`all` for the center).
    pub queue: String,
    /// Interactions that arrived.
    pub offered: u64,
    /// Accepted by an agent.
    pub answered: u64,
    /// Given up by the customer before an agent accepted.
    pub abandoned: u64,
    /// Of those, within the queue's `short_abandon_s` (left out of the service level).
    pub short_abandoned: u64,
    /// Refused at submit (a full queue, say).
    pub refused: u64,
    /// Still waiting in the engine when the run ended (no agent left to take them).
    pub still_waiting: u64,
    /// Answered within the threshold ÷ (answered + abandoned − short abandons); None
    /// with neither.
    pub service_level: Option<f64>,
    /// The threshold, seconds (`None` for `all`: each interaction is judged against
    /// its own queue's).
    pub service_level_threshold_s: Option<f64>,
    /// The queue's service-level target, a share (`service_level_percent` ÷ 100;
    /// `None` for `all`).
    pub service_level_target: Option<f64>,
    /// Whether the service level reached the target (`None` without either).
    pub service_level_met: Option<bool>,
    /// Mean wait of the answered (average speed of answer), seconds.
    pub average_speed_of_answer_s: Option<f64>,
    /// Waits of the answered.
    pub answered_waits: Waits,
    /// Waits of the abandoned (time to abandon).
    pub abandoned_waits: Waits,
    /// Abandoned ÷ (answered + abandoned).
    pub abandon_rate: Option<f64>,
    /// Mean accept → complete, seconds.
    pub average_handle_time_s: Option<f64>,
}

/// One agent group's occupancy.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    /// Group name.
    pub group: String,
    /// Agents.
    pub agents: u32,
    /// Staffed time of the group, hours: logged in, or holding work past a shift's end.
    pub staffed_hours: f64,
    /// Handle time (accept → complete) of the group's work, hours.
    pub handle_hours: f64,
    /// Busy time (accept → end of wrap-up) of the group's work, hours: the sum over
    /// its interactions (two chats at once count twice).
    pub busy_hours: f64,
    /// Time its agents held at least one interaction (accept → end of wrap-up; work
    /// carried at once counts once), hours.
    pub occupied_hours: f64,
    /// occupied ÷ staffed: the share of logged-in time spent working (at most 1).
    pub occupancy: Option<f64>,
    /// busy ÷ occupied: interactions held at once on average while working (1 for
    /// agents who take one at a time).
    pub concurrency: Option<f64>,
}

/// One channel's share of the agents' time.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelReport {
    /// Channel name.
    pub channel: String,
    /// Interactions that arrived on it.
    pub offered: u64,
    /// Handle time (accept → complete) of its work, hours.
    pub handle_hours: f64,
    /// Busy time (accept → end of wrap-up) of its work, hours (summed, as for groups).
    pub busy_hours: f64,
    /// Time its agents held at least one interaction of this channel, hours.
    pub occupied_hours: f64,
    /// Staffed time (as for groups) of the agents who handle the channel, hours.
    pub staffed_hours: f64,
    /// occupied ÷ staffed (at most 1; a blended agent's logged-in time counts for
    /// each of its channels).
    pub occupancy: Option<f64>,
    /// busy ÷ occupied: this channel's interactions held at once on average while
    /// its agents worked on it.
    pub concurrency: Option<f64>,
}

/// The engine's side.
#[derive(Clone, Debug, Serialize)]
pub struct EngineReport {
    /// Interactions completed per second of the run's clock (simulated seconds on
    /// virtual time, real ones in connect mode), over the whole run.
    pub completed_per_s: f64,
    /// The busiest minute of the run's clock: interactions completed in it.
    pub peak_completed_per_min: u64,
    /// How many latencies the percentiles are of.
    pub routing_samples: u64,
    /// Routing latency, µs: on virtual time the wall-clock time of each submit (route,
    /// log, offer); in connect mode the time from a customer's due time to its first
    /// offer reaching an agent's client, for customers who arrived while an eligible
    /// agent had room.
    pub routing_p50_us: u64,
    /// 90th percentile.
    pub routing_p90_us: u64,
    /// 99th percentile.
    pub routing_p99_us: u64,
    /// 99.9th percentile.
    pub routing_p999_us: u64,
    /// Largest.
    pub routing_max_us: u64,
    /// Offers made.
    pub offers: u64,
    /// Offers rejected.
    pub rejected: u64,
    /// Offers timed out.
    pub timed_out: u64,
    /// Agents set away by the engine after missed offers (they came back at once).
    pub set_away_after_misses: u64,
    /// Agents whose sessions fell behind (pushes dropped) or were resynchronised: the
    /// simulator's capacity and conservation checks stop judging them from then on.
    pub agents_not_judged: usize,
}

/// A run's report (the `--report` JSON; schema in docs/SIMULATOR.md).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed used.
    pub seed: u64,
    /// Simulated seconds until the last interaction finished.
    pub simulated_s: f64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Of those, setting up before the clock started (connect mode: configuring the
    /// server, making tokens, opening sessions; virtual time: starting the runtime).
    pub setup_wall_s: f64,
    /// Interactions submitted (every customer who arrived).
    pub interactions: u64,
    /// Interactions simulated per wall-clock second, setup left out.
    pub interactions_per_wall_s: f64,
    /// Per queue.
    pub queues: Vec<QueueReport>,
    /// The whole center.
    pub overall: QueueReport,
    /// Per agent group.
    pub groups: Vec<GroupReport>,
    /// Per channel that had work.
    pub channels: Vec<ChannelReport>,
    /// The engine.
    pub engine: EngineReport,
    /// Broken rules (empty in a correct run).
    pub violations: Vec<Violation>,
    /// The per-minute series.
    pub samples: Vec<Sample>,
    /// Service level per queue per 30-minute interval of arrival.
    pub intervals: Vec<IntervalReport>,
}

/// One interval's service level per queue (by arrival time).
#[derive(Clone, Debug, Serialize)]
pub struct IntervalReport {
    /// Interval start, simulated seconds.
    pub start_s: f64,
    /// Per queue (in scenario order): answered within threshold ÷ (answered +
    /// abandoned) of the interactions that arrived in the interval; None with neither.
    pub service_level: Vec<Option<f64>>,
    /// Per queue: interactions that arrived in the interval.
    pub offered: Vec<u64>,
}

/// The interval the per-interval figures use, seconds.
pub const INTERVAL_S: f64 = 1_800.0;

impl Report {
    /// The run's exit status: 2 when any check found a violation, else 0.
    pub fn exit_status(&self) -> i32 {
        if self.violations.is_empty() { 0 } else { 2 }
    }

    /// Computes the report.
    pub fn build(
        scenario: &Scenario,
        seed: u64,
        records: &Records,
        wall: std::time::Duration,
    ) -> Report {
        let short_ms =
            |r: &Record| (scenario.queues[r.queue].short_abandon_s * 1000.0).round() as u64;
        let is_short = |r: &Record| {
            r.answered_ms.is_none()
                && r.abandoned_ms
                    .is_some_and(|a| a - r.arrived_ms < short_ms(r))
        };
        let queue = |name: &str, threshold_s: f64, pick: &dyn Fn(&Record) -> bool| {
            let threshold_ms = (threshold_s * 1000.0).round() as u64;
            let short = records
                .interactions
                .iter()
                .filter(|r| pick(r) && is_short(r))
                .count() as u64;
            let rs: Vec<&Record> = records.interactions.iter().filter(|r| pick(r)).collect();
            let mut answered_w: Vec<u64> = rs
                .iter()
                .filter_map(|r| r.answered_ms.map(|a| a - r.arrived_ms))
                .collect();
            let mut abandoned_w: Vec<u64> = rs
                .iter()
                .filter(|r| r.answered_ms.is_none())
                .filter_map(|r| r.abandoned_ms.map(|a| a - r.arrived_ms))
                .collect();
            let handles: Vec<u64> = rs
                .iter()
                .filter_map(|r| Some(r.completed_ms? - r.answered_ms?))
                .collect();
            let answered = answered_w.len() as u64;
            let abandoned = abandoned_w.len() as u64;
            let within = answered_w.iter().filter(|w| **w <= threshold_ms).count() as u64;
            let outcomes = answered + abandoned;
            let judged = outcomes - short;
            QueueReport {
                queue: name.to_string(),
                offered: rs.len() as u64,
                answered,
                abandoned,
                short_abandoned: short,
                refused: rs.iter().filter(|r| r.refused.is_some()).count() as u64,
                still_waiting: rs.iter().filter(|r| r.still_waiting).count() as u64,
                service_level: (judged > 0).then(|| within as f64 / judged as f64),
                service_level_threshold_s: Some(threshold_s),
                service_level_target: None,
                service_level_met: None,
                average_speed_of_answer_s: (answered > 0)
                    .then(|| answered_w.iter().sum::<u64>() as f64 / answered as f64 / 1e3),
                answered_waits: Waits::of(&mut answered_w),
                abandoned_waits: Waits::of(&mut abandoned_w),
                abandon_rate: (outcomes > 0).then(|| abandoned as f64 / outcomes as f64),
                average_handle_time_s: (!handles.is_empty())
                    .then(|| handles.iter().sum::<u64>() as f64 / handles.len() as f64 / 1e3),
            }
        };
        let queues: Vec<QueueReport> = scenario
            .queues
            .iter()
            .enumerate()
            .map(|(qi, q)| {
                let mut report = queue(&q.id, q.service_level_s, &|r: &Record| r.queue == qi);
                let target = f64::from(q.service_level_percent) / 100.0;
                report.service_level_target = Some(target);
                report.service_level_met = report.service_level.map(|sl| sl >= target);
                report
            })
            .collect();
        // The center: each interaction against its own queue's threshold.
        let mut overall = queue("all", f64::NAN, &|_| true);
        let within_own: u64 = records
            .interactions
            .iter()
            .filter(|r| {
                r.answered_ms.is_some_and(|a| {
                    a - r.arrived_ms
                        <= (scenario.queues[r.queue].service_level_s * 1000.0).round() as u64
                })
            })
            .count() as u64;
        let judged = overall.answered + overall.abandoned - overall.short_abandoned;
        overall.service_level = (judged > 0).then(|| within_own as f64 / judged as f64);
        overall.service_level_threshold_s = None;

        let end = records.finished_ms;
        let staffed = staffed_ms(records, end);
        let groups = scenario
            .agent_groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let staffed_ms: u64 = records
                    .agents
                    .iter()
                    .zip(&staffed)
                    .filter(|((group, _), _)| *group == gi)
                    .map(|(_, ms)| ms)
                    .sum();
                let mine = || {
                    records
                        .interactions
                        .iter()
                        .filter(|r| r.agent.is_some_and(|a| records.agents[a].0 == gi))
                };
                let handle_ms: u64 = mine().filter_map(Record::handle_ms).sum();
                let busy_ms: u64 = mine().filter_map(Record::busy_ms).sum();
                let occupied_ms = occupied_ms(mine());
                GroupReport {
                    group: g.name.clone(),
                    agents: g.count,
                    staffed_hours: staffed_ms as f64 / 3.6e6,
                    handle_hours: handle_ms as f64 / 3.6e6,
                    busy_hours: busy_ms as f64 / 3.6e6,
                    occupied_hours: occupied_ms as f64 / 3.6e6,
                    occupancy: ratio(occupied_ms, staffed_ms),
                    concurrency: ratio(busy_ms, occupied_ms),
                }
            })
            .collect();
        let interval_ms = (INTERVAL_S * 1000.0) as u64;
        let n_intervals = records
            .interactions
            .iter()
            .map(|r| r.arrived_ms / interval_ms + 1)
            .max()
            .unwrap_or(0) as usize;
        let nq = scenario.queues.len();
        // (within, outcomes, offered) per interval per queue
        let mut acc = vec![vec![(0u64, 0u64, 0u64); nq]; n_intervals];
        for r in &records.interactions {
            let cell = &mut acc[(r.arrived_ms / interval_ms) as usize][r.queue];
            cell.2 += 1;
            let threshold = (scenario.queues[r.queue].service_level_s * 1000.0).round() as u64;
            match (r.answered_ms, r.abandoned_ms) {
                (Some(a), _) => {
                    cell.1 += 1;
                    if a - r.arrived_ms <= threshold {
                        cell.0 += 1;
                    }
                }
                (None, Some(_)) if !is_short(r) => cell.1 += 1,
                _ => {}
            }
        }
        let intervals = acc
            .into_iter()
            .enumerate()
            .map(|(i, cells)| IntervalReport {
                start_s: i as f64 * INTERVAL_S,
                service_level: cells
                    .iter()
                    .map(|(w, o, _)| (*o > 0).then(|| *w as f64 / *o as f64))
                    .collect(),
                offered: cells.iter().map(|c| c.2).collect(),
            })
            .collect();
        let channel_defs = scenario.channel_defs();
        let agent_defs = scenario.agents();
        let channels = channel_defs
            .iter()
            .enumerate()
            .filter(|(ci, _)| records.interactions.iter().any(|r| r.channel == *ci))
            .map(|(ci, c)| {
                let staffed_ms: u64 = staffed
                    .iter()
                    .zip(&agent_defs)
                    .filter(|(_, (_, def))| {
                        def.capacity.channels.iter().any(|x| x.channel == c.name)
                    })
                    .map(|(ms, _)| ms)
                    .sum();
                let mine = || records.interactions.iter().filter(|r| r.channel == ci);
                let handle_ms: u64 = mine().filter_map(Record::handle_ms).sum();
                let busy_ms: u64 = mine().filter_map(Record::busy_ms).sum();
                let occupied_ms = occupied_ms(mine());
                ChannelReport {
                    channel: c.name.clone(),
                    offered: records
                        .interactions
                        .iter()
                        .filter(|r| r.channel == ci)
                        .count() as u64,
                    handle_hours: handle_ms as f64 / 3.6e6,
                    busy_hours: busy_ms as f64 / 3.6e6,
                    occupied_hours: occupied_ms as f64 / 3.6e6,
                    staffed_hours: staffed_ms as f64 / 3.6e6,
                    occupancy: ratio(occupied_ms, staffed_ms),
                    concurrency: ratio(busy_ms, occupied_ms),
                }
            })
            .collect();
        let h = &records.routing;
        let q = |x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        Report {
            scenario: scenario.name.clone(),
            seed,
            simulated_s: end as f64 / 1e3,
            wall_s: wall.as_secs_f64(),
            setup_wall_s: records.setup_wall.as_secs_f64(),
            interactions: records.interactions.len() as u64,
            interactions_per_wall_s: records.interactions.len() as f64
                / wall
                    .saturating_sub(records.setup_wall)
                    .as_secs_f64()
                    .max(1e-9),
            queues,
            overall,
            groups,
            channels,
            engine: EngineReport {
                completed_per_s: records
                    .interactions
                    .iter()
                    .filter(|r| r.completed_ms.is_some())
                    .count() as f64
                    / (end as f64 / 1e3).max(1e-9),
                peak_completed_per_min: {
                    let mut per_min: HashMap<u64, u64> = HashMap::new();
                    for r in &records.interactions {
                        if let Some(c) = r.completed_ms {
                            *per_min.entry(c / 60_000).or_default() += 1;
                        }
                    }
                    per_min.into_values().max().unwrap_or(0)
                },
                routing_samples: records.routing.len(),
                routing_p50_us: q(0.5),
                routing_p90_us: q(0.9),
                routing_p99_us: q(0.99),
                routing_p999_us: q(0.999),
                routing_max_us: h.max(),
                offers: records.offers,
                rejected: records.rejected,
                timed_out: records.timed_out,
                set_away_after_misses: records.set_away,
                agents_not_judged: records.watch.blind_agents(),
            },
            violations: records.violations.clone(),
            samples: records.samples.clone(),
            intervals,
        }
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        // Hours, or minutes under an hour (a short run's staffing is not "0.0 h").
        let hours = |h: f64| {
            if h < 1.0 {
                format!("{:.1} min", h * 60.0)
            } else {
                format!("{h:.1} h")
            }
        };
        // Interactions held at once while working, where agents carry several.
        let at_once = |c: Option<f64>| match c {
            Some(c) if c >= 1.005 => format!(", {c:.2} at once"),
            _ => String::new(),
        };
        let mut out = format!(
            "scenario `{}` seed {}: {:.0} simulated s in {:.2} wall s ({:.0} interactions/s)\n",
            self.scenario, self.seed, self.simulated_s, self.wall_s, self.interactions_per_wall_s
        );
        out.push_str(&format!(
            "{:<14} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>7} {:>8} {:>8} {:>8}\n",
            "queue",
            "offered",
            "answered",
            "abandon",
            "refused",
            "SL",
            "target",
            "ASA_s",
            "p90_w_s",
            "abn_rate",
            "AHT_s"
        ));
        for q in self.queues.iter().chain(std::iter::once(&self.overall)) {
            out.push_str(&format!(
                "{:<14} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>7} {:>8.1} {:>8} {:>8}\n",
                q.queue,
                q.offered,
                q.answered,
                q.abandoned,
                q.refused,
                pct(q.service_level),
                match (q.service_level_target, q.service_level_met) {
                    (Some(t), Some(true)) => format!("{} met", pct(Some(t))),
                    (Some(t), Some(false)) => format!("{} MISS", pct(Some(t))),
                    (Some(t), None) => pct(Some(t)),
                    (None, _) => "-".to_string(),
                },
                secs(q.average_speed_of_answer_s),
                q.answered_waits.p90_s,
                pct(q.abandon_rate),
                secs(q.average_handle_time_s),
            ));
        }
        // Work no agent was left to take: in none of the columns above.
        for q in self.queues.iter().filter(|q| q.still_waiting > 0) {
            out.push_str(&format!(
                "queue {} still had {} waiting when the run ended (no agent took them)\n",
                q.queue, q.still_waiting
            ));
        }
        for g in &self.groups {
            out.push_str(&format!(
                "group {:<12} {:>4} agents, staffed {}, handling {}, busy (with wrap-up) {}, occupancy {}{}\n",
                g.group,
                g.agents,
                hours(g.staffed_hours),
                hours(g.handle_hours),
                hours(g.busy_hours),
                pct(g.occupancy),
                at_once(g.concurrency)
            ));
        }
        for c in &self.channels {
            out.push_str(&format!(
                "channel {:<10} {:>6} offered, busy {} (handling {}) of {} staffed by its agents, occupancy {}{}\n",
                c.channel,
                c.offered,
                hours(c.busy_hours),
                hours(c.handle_hours),
                hours(c.staffed_hours),
                pct(c.occupancy),
                at_once(c.concurrency)
            ));
        }
        let e = &self.engine;
        out.push_str(&format!(
            "engine: routing p50 {} µs p90 {} µs p99 {} µs p99.9 {} µs max {} µs ({} timed); offers {}, rejected {}, timed out {}; completed {:.2}/s, peak {}/min\n",
            e.routing_p50_us,
            e.routing_p90_us,
            e.routing_p99_us,
            e.routing_p999_us,
            e.routing_max_us,
            e.routing_samples,
            e.offers,
            e.rejected,
            e.timed_out,
            e.completed_per_s,
            e.peak_completed_per_min
        ));
        if self.engine.agents_not_judged > 0 {
            out.push_str(&format!(
                "note: {} agents' sessions fell behind or were resynchronised: the capacity and conservation checks stopped judging them\n",
                self.engine.agents_not_judged
            ));
        }
        if self.violations.is_empty() {
            out.push_str("checks: no violation\n");
        } else {
            out.push_str(&format!("checks: {} VIOLATIONS\n", self.violations.len()));
            for v in self.violations.iter().take(20) {
                out.push_str(&format!(
                    "  {} interaction {} agent `{}` at {} ms: {}\n",
                    v.kind, v.interaction, v.agent, v.at_ms, v.detail
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Records {
        let s = crate::scenario::test_scenario("", "count = 2\nchannels = { voice = 1 }");
        Records::new(&s)
    }

    fn kinds(r: &Records) -> Vec<(&str, u64, &str)> {
        r.violations
            .iter()
            .map(|v| (v.kind.as_str(), v.interaction, v.agent.as_str()))
            .collect()
    }

    #[test]
    fn a_second_accept_and_an_accept_after_the_customer_left_are_breaches() {
        let mut r = records();
        let i = r.arrive(Record::new(0, 0));
        r.submitted(i, 41, 0);
        r.answered(i, 10, "a-0", 0);
        r.answered(i, 20, "a-1", 1);
        let j = r.arrive(Record::new(0, 30));
        r.submitted(j, 42, 30);
        r.abandoned(j, 40);
        r.answered(j, 50, "a-1", 1);
        assert_eq!(
            kinds(&r),
            vec![
                ("assigned_twice", 41, "a-1"),
                ("answered_after_abandon", 42, "a-1")
            ]
        );
    }

    #[test]
    fn work_neither_finished_nor_waiting_at_the_end_is_unaccounted_for() {
        let mut r = records();
        let done = r.arrive(Record::new(0, 0));
        r.submitted(done, 1, 0);
        r.answered(done, 5, "a-0", 0);
        r.completed(done, 65);
        let waiting = r.arrive(Record::new(0, 10));
        r.submitted(waiting, 2, 10);
        r.still_waiting(waiting);
        let lost = r.arrive(Record::new(0, 20));
        r.submitted(lost, 3, 20);
        r.answered(lost, 25, "a-1", 1);
        r.close(100_000);
        assert_eq!(kinds(&r), vec![("unaccounted", 3, "a-1")]);
        assert_eq!(r.open(), 1);
        // Reported, and the run exits with status 2.
        let s = crate::scenario::test_scenario("", "count = 2\nchannels = { voice = 1 }");
        let report = Report::build(&s, 1, &r, std::time::Duration::from_secs(1));
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.exit_status(), 2);
        // The table says what still waited (in none of its columns).
        assert!(
            report
                .table()
                .contains("still had 1 waiting when the run ended"),
            "{}",
            report.table()
        );
        let mut clean = records();
        clean.close(0);
        assert_eq!(
            Report::build(&s, 1, &clean, std::time::Duration::from_secs(1)).exit_status(),
            0
        );
    }

    #[test]
    fn the_99th_percentile_is_the_value_ranked_at_99_percent() {
        assert_eq!(p99(&mut []), 0);
        assert_eq!(p99(&mut [7]), 7);
        // 1..=100 shuffled: the 99th smallest; 1..=200: the 198th; 1..=101: the 100th.
        let mut v: Vec<u64> = (1..=100).rev().collect();
        v.swap(3, 70);
        assert_eq!(p99(&mut v), 99);
        assert_eq!(p99(&mut (1..=200).collect::<Vec<u64>>()), 198);
        assert_eq!(p99(&mut (1..=101).collect::<Vec<u64>>()), 100);
        // A minute's samples with one slow submit in a hundred and one: not hidden.
        let mut spike: Vec<u64> = std::iter::repeat_n(3, 99).chain([900, 950]).collect();
        assert_eq!(p99(&mut spike), 900);
    }

    #[test]
    fn the_id_index_finds_every_id_in_order_or_not() {
        let mut x = IdIndex::default();
        assert_eq!(x.get(5), None);
        // In order from 1,000, a gap, ids below the first and far beyond: all found.
        let ids = [
            1_000,
            1_001,
            1_003,
            999,
            0,
            1_000 + (1 << 20),
            u64::MAX,
            1_002,
        ];
        for (i, id) in ids.iter().enumerate() {
            x.insert(*id, i);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(x.get(*id), Some(i), "id {id}");
        }
        assert_eq!(x.get(1_004), None);
        assert_eq!(x.get(1_000 + (1 << 19)), None);
        assert_eq!(x.dense.len(), 4, "far ids are not in the vector");
        // Ids 100 apart (a client with 1 % of a server's ids): all found, and the
        // vector stays within its bound of slots per id in it.
        let mut y = IdIndex::default();
        for i in 0..20_000u64 {
            y.insert(7 + i * 100, i as usize);
        }
        for i in 0..20_000u64 {
            assert_eq!(y.get(7 + i * 100), Some(i as usize));
        }
        let bound = IdIndex::SPREAD as usize * (y.filled + 1) + IdIndex::GAP as usize;
        assert!(y.dense.len() <= bound, "{} > {bound}", y.dense.len());
        assert!(!y.sparse.is_empty());
    }

    #[test]
    fn occupied_time_counts_work_carried_at_once_once_per_agent() {
        let span = |agent: usize, from: u64, to: u64| Record {
            agent: Some(agent),
            answered_ms: Some(from),
            completed_ms: Some(to),
            ..Default::default()
        };
        let mut wrapped = span(1, 500, 600);
        wrapped.wrap_up_ended_ms = Some(700);
        let records = [
            // Agent 0: 0–100 and 50–150 overlap (150), 150–200 touches (50), 300–400.
            span(0, 0, 100),
            span(0, 50, 150),
            span(0, 150, 200),
            span(0, 300, 400),
            // Agent 1: the same hours as agent 0's first: counted for agent 1 too.
            span(1, 0, 100),
            // Its wrap-up counts (500–700), and work inside it adds nothing.
            wrapped,
            span(1, 550, 650),
            // Not answered, or not finished: no span.
            Record::default(),
            Record {
                agent: Some(1),
                answered_ms: Some(900),
                ..Default::default()
            },
        ];
        assert_eq!(occupied_ms(records.iter()), 200 + 100 + 100 + 200);
        let busy: u64 = records.iter().filter_map(Record::busy_ms).sum();
        assert_eq!(busy, 100 + 100 + 50 + 100 + 100 + 200 + 100);
        assert_eq!(occupied_ms([].iter()), 0);
    }

    #[test]
    fn the_table_gives_short_staffing_in_minutes() {
        let s = crate::scenario::test_scenario("", "count = 2\nchannels = { voice = 1 }");
        let mut r = records();
        r.close(0);
        let mut report = Report::build(&s, 1, &r, std::time::Duration::from_secs(1));
        report.groups[0].staffed_hours = 0.25;
        report.groups[0].busy_hours = 2.0;
        let table = report.table();
        assert!(table.contains("staffed 15.0 min,"), "{table}");
        assert!(table.contains("busy (with wrap-up) 2.0 h,"), "{table}");
    }
}
