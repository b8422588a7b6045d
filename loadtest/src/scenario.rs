//! A scenario: the center (channels, skills, queues), its agents in groups, how
//! customers arrive, how long they talk and how long they wait before giving up, and
//! how agents behave. Read from TOML (docs/SIMULATOR.md lists every field); times are
//! in seconds unless a field says otherwise.

use omniroute_transport::actors::engine::{
    AgentDef, AssignmentPolicy, CapacityProfile, CenterConfig, ChannelBlock, ChannelCapacity,
    ChannelDef, QueueDef, SeededRng, ServiceLevel, SkillDef, SkillLevel, SkillRequirement,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The longest duration a scenario may name (about 31 years).
pub const MAX_SECONDS: f64 = 1e9;

/// A duration distribution, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Always `s`.
    Fixed {
        /// Seconds.
        s: f64,
    },
    /// Exponential with mean `mean_s`.
    Exponential {
        /// Mean, seconds.
        mean_s: f64,
    },
    /// Log-normal with mean `mean_s` and standard deviation `sd_s` (of the duration
    /// itself, not of its logarithm).
    Lognormal {
        /// Mean, seconds.
        mean_s: f64,
        /// Standard deviation, seconds.
        sd_s: f64,
    },
    /// Drawn uniformly from a CSV file's first column (seconds; a header line is
    /// skipped; relative to the scenario file).
    Empirical {
        /// The CSV file.
        csv: String,
        /// The values, read at load.
        #[serde(skip)]
        values: Vec<f64>,
    },
}

impl Dist {
    /// A draw, in seconds (within 0 and [`MAX_SECONDS`]).
    pub fn sample(&self, rng: &mut SeededRng) -> f64 {
        self.draw(rng).clamp(0.0, MAX_SECONDS)
    }

    fn draw(&self, rng: &mut SeededRng) -> f64 {
        match self {
            Dist::Fixed { s } => *s,
            Dist::Exponential { mean_s } => rng.exponential(*mean_s),
            Dist::Lognormal { mean_s, sd_s } => {
                // Parameters of the underlying normal from the mean and sd.
                let var = sd_s * sd_s;
                let sigma2 = (1.0 + var / (mean_s * mean_s)).ln();
                let mu = mean_s.ln() - sigma2 / 2.0;
                // Box–Muller.
                let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
                let u2 = rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (mu + sigma2.sqrt() * z).exp()
            }
            Dist::Empirical { values, .. } => values[rng.below(values.len())],
        }
    }

    /// The mean, seconds.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed { s } => *s,
            Dist::Exponential { mean_s } | Dist::Lognormal { mean_s, .. } => *mean_s,
            Dist::Empirical { values, .. } => values.iter().sum::<f64>() / values.len() as f64,
        }
    }

    fn check(&mut self, field: &str, base: &Path) -> Result<(), String> {
        let positive = |v: f64, what: &str| {
            if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{field}: {what} must be a number of seconds from 0 to {MAX_SECONDS:e}, found {v}"
                ))
            }
        };
        match self {
            Dist::Fixed { s } => positive(*s, "s"),
            Dist::Exponential { mean_s } => {
                positive(*mean_s, "mean_s")?;
                if *mean_s == 0.0 {
                    return Err(format!("{field}: mean_s must be above 0"));
                }
                Ok(())
            }
            Dist::Lognormal { mean_s, sd_s } => {
                positive(*sd_s, "sd_s")?;
                positive(*mean_s, "mean_s")?;
                if *mean_s == 0.0 {
                    return Err(format!("{field}: mean_s must be above 0"));
                }
                Ok(())
            }
            Dist::Empirical { csv, values } => {
                let path = base.join(&*csv);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))?;
                for (n, line) in text.lines().enumerate() {
                    let cell = line.split(',').next().unwrap_or("").trim();
                    if cell.is_empty() {
                        continue;
                    }
                    match cell.parse::<f64>() {
                        Ok(v) if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) => {
                            values.push(v)
                        }
                        Err(_) if n == 0 => {} // a header
                        _ => {
                            return Err(format!(
                                "{field}: {}:{}: `{cell}` is not a duration in seconds",
                                path.display(),
                                n + 1
                            ));
                        }
                    }
                }
                if values.is_empty() {
                    return Err(format!("{field}: {} holds no durations", path.display()));
                }
                Ok(())
            }
        }
    }
}

/// A queue and the work that arrives in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Queue id.
    pub id: String,
    /// Channels it takes (default: every channel).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Required skills: name → minimum proficiency (1–10).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Assignment policy (`longest_idle`, `most_skilled`, `least_occupied`,
    /// `round_robin`).
    #[serde(default)]
    pub policy: AssignmentPolicy,
    /// Priority of its interactions.
    #[serde(default)]
    pub priority: i32,
    /// Service-level threshold, seconds (default 20).
    #[serde(default = "twenty")]
    pub service_level_s: f64,
    /// Service-level target, percent (default 80; reported, not used for routing).
    #[serde(default = "eighty")]
    pub service_level_percent: u8,
    /// How long an agent has to accept an offer, seconds (default 30).
    #[serde(default = "thirty")]
    pub offer_timeout_s: f64,
    /// Handle time: accept → complete.
    pub handle_time: Dist,
    /// Wrap-up after completion, seconds (default 0).
    #[serde(default)]
    pub wrap_up_s: f64,
    /// How long a customer waits before giving up; absent: never.
    #[serde(default)]
    pub patience: Option<Dist>,
    /// Most waiting at once (default 100,000).
    #[serde(default = "lots")]
    pub max_waiting: u32,
    /// Abandons within this many seconds are "short abandons": counted apart and left
    /// out of the service level's denominator (default 0: none).
    #[serde(default)]
    pub short_abandon_s: f64,
}

fn twenty() -> f64 {
    20.0
}
fn eighty() -> u8 {
    80
}
fn thirty() -> f64 {
    30.0
}
fn lots() -> u32 {
    100_000
}

/// A group of identical agents.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentGroup {
    /// Group name (agents are `<name>-<n>`).
    pub name: String,
    /// How many.
    pub count: u32,
    /// Skills: name → proficiency (1–10).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Capacity units in total (default 1 with every channel costing 1: one
    /// interaction at a time).
    #[serde(default = "one_u16")]
    pub total_units: u16,
    /// Channels handled: name → units one interaction costs (default: every channel
    /// of the scenario at 1 unit).
    #[serde(default)]
    pub channels: BTreeMap<String, u16>,
    /// Most interactions of a channel at once, whatever the units say: name → count
    /// (default: only the units limit).
    #[serde(default)]
    pub max_concurrent: BTreeMap<String, u16>,
    /// While working a channel, no new work on others: name → the channels it blocks
    /// (`{ voice = ["chat", "email"] }`: no new chat or email during a call).
    #[serde(default)]
    pub blocking: BTreeMap<String, Vec<String>>,
    /// Shift start, seconds from the scenario's start (default 0).
    #[serde(default)]
    pub shift_start_s: f64,
    /// Shift end (default: the end of the run).
    #[serde(default)]
    pub shift_end_s: Option<f64>,
    /// Time to accept an offer (default: at once).
    #[serde(default)]
    pub accept_delay: Option<Dist>,
    /// This group's handle time, for every queue (default: each queue's own): faster
    /// or slower agents than the queue's norm.
    #[serde(default)]
    pub handle_time: Option<Dist>,
    /// How long these agents take over their wrap-up (after-call work): done sooner
    /// than the queue's `wrap_up_s`, they end it themselves; the queue's time is the
    /// most (default: all of it).
    #[serde(default)]
    pub wrap_up: Option<Dist>,
    /// Probability of rejecting an offer, 0–1 (default 0).
    #[serde(default)]
    pub reject_probability: f64,
}

fn one_u16() -> u16 {
    1
}

/// How customers arrive: on a channel, into a queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// The queue; absent: the one queue that takes the channel (arrivals per channel).
    #[serde(default)]
    pub queue: String,
    /// The channel they arrive on.
    pub channel: String,
    /// Poisson arrivals at this rate per hour…
    #[serde(default)]
    pub rate_per_hour: Option<f64>,
    /// …or a rate per hour for each interval of `interval_s`, in order (the last one
    /// holds until the end).
    #[serde(default)]
    pub rates_per_hour: Vec<f64>,
    /// The intervals' length, seconds (default 1,800).
    #[serde(default = "half_hour")]
    pub interval_s: f64,
}

fn half_hour() -> f64 {
    1_800.0
}

impl Arrivals {
    /// The rate per second at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self.rate_per_hour {
            Some(r) => r / 3_600.0,
            None => {
                let i = ((t / self.interval_s) as usize).min(self.rates_per_hour.len() - 1);
                self.rates_per_hour[i] / 3_600.0
            }
        }
    }

    /// The highest rate per second (for thinning).
    pub fn max_rate(&self) -> f64 {
        match self.rate_per_hour {
            Some(r) => r / 3_600.0,
            None => self.rates_per_hour.iter().copied().fold(0.0, f64::max) / 3_600.0,
        }
    }
}

/// What the simulator checks an agent's offers against: its skills, the channels it
/// handles with what each costs, its capacity.
#[derive(Clone, Debug)]
pub struct AgentProfile {
    /// Skill → proficiency.
    pub skills: std::collections::HashMap<String, u8>,
    /// Channel → units one interaction costs.
    pub costs: std::collections::HashMap<String, u16>,
    /// Capacity units in total.
    pub total_units: u16,
    /// Channel → most at once.
    pub max_concurrent: std::collections::HashMap<String, u16>,
    /// Channel → the channels its work blocks.
    pub blocking: std::collections::HashMap<String, Vec<String>>,
}

impl AgentProfile {
    /// The profile of an agent the scenario defines.
    pub fn of(def: &AgentDef) -> Self {
        AgentProfile {
            skills: def
                .skills
                .iter()
                .map(|s| (s.skill.clone(), s.proficiency))
                .collect(),
            costs: def
                .capacity
                .channels
                .iter()
                .map(|c| (c.channel.clone(), c.units.unwrap_or(1)))
                .collect(),
            total_units: def.capacity.total_units,
            max_concurrent: def
                .capacity
                .channels
                .iter()
                .filter_map(|c| Some((c.channel.clone(), c.max_concurrent?)))
                .collect(),
            blocking: def
                .capacity
                .blocking
                .iter()
                .map(|b| (b.while_on.clone(), b.blocks.clone()))
                .collect(),
        }
    }

    /// Whether the agent may be offered work of `queue` on `channel`.
    pub fn eligible(&self, queue: Option<&QueueSpec>, channel: &str) -> bool {
        queue.is_some_and(|q| {
            q.skills
                .iter()
                .all(|(s, min)| self.skills.get(s).is_some_and(|p| p >= min))
        }) && self.costs.contains_key(channel)
    }

    /// Units one interaction on `channel` costs.
    pub fn cost(&self, channel: &str) -> u16 {
        self.costs.get(channel).copied().unwrap_or(1)
    }
}

/// What a simulated agent does with one offer, drawn when the offer arrives (both
/// modes draw the same way, in the same order).
#[derive(Clone, Copy, Debug)]
pub struct OfferPlan {
    /// Seconds before answering.
    pub delay_s: f64,
    /// Reject it (after the delay).
    pub reject: bool,
    /// Accept → complete, seconds.
    pub handle_s: f64,
    /// Ends the wrap-up itself this long after completing, when that is sooner than
    /// the queue's wrap-up time (None: the queue's time runs out first, or none).
    pub ready_after_s: Option<f64>,
}

/// `error` found in the `n`-th (from 0) `[[kind]]` table: said with the table's line
/// when the scenario writes it as a `[[kind]]` header (else with its number).
fn at_table(text: &str, kind: &str, n: usize, error: String) -> String {
    let header = format!("[[{kind}]]");
    // `[[kind]]`, `[[ kind ]]` or `[["kind"]]`, perhaps indented or with a comment.
    let is_header = |l: &str| {
        l.trim_start()
            .strip_prefix("[[")
            .and_then(|rest| rest.split_once("]]"))
            .is_some_and(|(name, _)| name.trim().trim_matches('"') == kind)
    };
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| is_header(l))
        .nth(n)
        .map(|(i, _)| i + 1);
    match line {
        Some(l) => format!("line {l}: {header} number {}: {error}", n + 1),
        None => format!("{header} number {}: {error}", n + 1),
    }
}

fn check_queue(
    q: &mut QueueSpec,
    base: &Path,
    seconds: impl Fn(f64) -> bool,
) -> Result<(), String> {
    q.handle_time
        .check(&format!("queues `{}`.handle_time", q.id), base)?;
    if let Some(p) = &mut q.patience {
        p.check(&format!("queues `{}`.patience", q.id), base)?;
    }
    if q.offer_timeout_s <= 0.0
        || !seconds(q.offer_timeout_s)
        || !seconds(q.service_level_s)
        || !seconds(q.wrap_up_s)
        || !seconds(q.short_abandon_s)
    {
        return Err(format!(
            "queues `{}`: offer_timeout_s must be above 0, service_level_s, wrap_up_s and short_abandon_s at least 0",
            q.id
        ));
    }
    Ok(())
}

fn check_group(
    g: &mut AgentGroup,
    base: &Path,
    seconds: impl Fn(f64) -> bool,
) -> Result<(), String> {
    if let Some(d) = &mut g.accept_delay {
        d.check(&format!("agent_groups `{}`.accept_delay", g.name), base)?;
    }
    if let Some(d) = &mut g.handle_time {
        d.check(&format!("agent_groups `{}`.handle_time", g.name), base)?;
    }
    if let Some(d) = &mut g.wrap_up {
        d.check(&format!("agent_groups `{}`.wrap_up", g.name), base)?;
    }
    if !seconds(g.shift_start_s)
        || g.shift_end_s
            .is_some_and(|e| !seconds(e) || e <= g.shift_start_s)
    {
        return Err(format!(
            "agent_groups `{}`: shift_start_s must be from 0 on and shift_end_s after it",
            g.name
        ));
    }
    if !(0.0..=1.0).contains(&g.reject_probability) {
        return Err(format!(
            "agent_groups `{}`.reject_probability must be within 0–1",
            g.name
        ));
    }
    Ok(())
}

/// The queue that takes arrivals on `channel` given without a queue: the only one.
fn queue_for_channel(queues: &[QueueSpec], channel: &str) -> Result<String, String> {
    let takers: Vec<&str> = queues
        .iter()
        .filter(|q| q.channels.is_empty() || q.channels.iter().any(|c| c == channel))
        .map(|q| q.id.as_str())
        .collect();
    match takers[..] {
        [one] => Ok(one.to_string()),
        [] => Err(format!(
            "arrivals on `{channel}`: no queue takes this channel"
        )),
        _ => Err(format!(
            "arrivals on `{channel}`: name a `queue` ({} take this channel)",
            takers.join(", ")
        )),
    }
}

fn check_arrivals(
    a: &Arrivals,
    queues: &[QueueSpec],
    channel_names: &[String],
) -> Result<(), String> {
    let Some(queue) = queues.iter().find(|q| q.id == a.queue) else {
        return Err(format!("arrivals: unknown queue `{}`", a.queue));
    };
    if !channel_names.contains(&a.channel) {
        return Err(format!(
            "arrivals `{}`: unknown channel `{}` (channels: {})",
            a.queue,
            a.channel,
            channel_names.join(", ")
        ));
    }
    if !queue.channels.is_empty() && !queue.channels.contains(&a.channel) {
        return Err(format!(
            "arrivals `{}`: the queue does not take channel `{}` (it takes {})",
            a.queue,
            a.channel,
            queue.channels.join(", ")
        ));
    }
    if !(a.interval_s.is_finite() && a.interval_s > 0.0) {
        return Err(format!(
            "arrivals `{}`: interval_s must be above 0",
            a.queue
        ));
    }
    match (a.rate_per_hour, a.rates_per_hour.is_empty()) {
        (Some(r), true) if r.is_finite() && r >= 0.0 => Ok(()),
        (None, false) if a.rates_per_hour.iter().all(|r| r.is_finite() && *r >= 0.0) => Ok(()),
        _ => Err(format!(
            "arrivals `{}`: give `rate_per_hour` or `rates_per_hour` (numbers ≥ 0), not both",
            a.queue
        )),
    }
}

impl AgentGroup {
    /// This group's plan for an offer of `queue` (None: not the scenario's queue).
    pub fn plan(&self, queue: Option<&QueueSpec>, rng: &mut SeededRng) -> OfferPlan {
        let delay_s = self.accept_delay.as_ref().map_or(0.0, |d| d.sample(rng));
        let reject = self.reject_probability > 0.0 && rng.next_f64() < self.reject_probability;
        let handle_s = queue.map_or(0.0, |q| {
            self.handle_time
                .as_ref()
                .unwrap_or(&q.handle_time)
                .sample(rng)
        });
        let queue_wrap_up_s = queue.map_or(0.0, |q| q.wrap_up_s);
        let ready_after_s = match &self.wrap_up {
            Some(d) if queue_wrap_up_s > 0.0 => {
                let drawn = d.sample(rng);
                (drawn < queue_wrap_up_s).then_some(drawn)
            }
            _ => None,
        };
        OfferPlan {
            delay_s,
            reject,
            handle_s,
            ready_after_s,
        }
    }
}

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A name for reports.
    #[serde(default)]
    pub name: String,
    /// Simulated seconds of arrivals (agents finish the work in hand after it).
    pub duration_s: f64,
    /// Random seed (`--seed` overrides).
    #[serde(default)]
    pub seed: u64,
    /// Channels (default: the built-in set).
    #[serde(default)]
    pub channels: Vec<ChannelDef>,
    /// Skills (default: every skill a queue or agent group names).
    #[serde(default)]
    pub skills: Vec<String>,
    /// Queues.
    pub queues: Vec<QueueSpec>,
    /// Agents.
    pub agent_groups: Vec<AgentGroup>,
    /// Arrivals.
    pub arrivals: Vec<Arrivals>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Scenario::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks a scenario given as text (`base`: where relative CSV paths start).
    pub fn parse(text: &str, base: &Path) -> Result<Scenario, String> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message().trim()),
                None => e.message().trim().to_string(),
            }
        })?;
        if !(s.duration_s.is_finite() && s.duration_s > 0.0 && s.duration_s <= MAX_SECONDS) {
            return Err(format!(
                "duration_s must be above 0 and at most {MAX_SECONDS:e}"
            ));
        }
        let seconds = |v: f64| v.is_finite() && (0.0..=MAX_SECONDS).contains(&v);
        for (n, q) in s.queues.iter_mut().enumerate() {
            let at = |e: String| at_table(text, "queues", n, e);
            check_queue(q, base, seconds).map_err(at)?;
        }
        for (n, g) in s.agent_groups.iter_mut().enumerate() {
            let at = |e: String| at_table(text, "agent_groups", n, e);
            check_group(g, base, seconds).map_err(at)?;
        }
        let channel_names: Vec<String> = s.channel_defs().into_iter().map(|c| c.name).collect();
        // Arrivals per channel: the queue is the one that takes the channel.
        for (n, a) in s.arrivals.iter_mut().enumerate() {
            let at = |e: String| at_table(text, "arrivals", n, e);
            if a.queue.is_empty() {
                a.queue = queue_for_channel(&s.queues, &a.channel).map_err(at)?;
            }
        }
        for (n, a) in s.arrivals.iter().enumerate() {
            let at = |e: String| at_table(text, "arrivals", n, e);
            check_arrivals(a, &s.queues, &channel_names).map_err(at)?;
        }
        // The engine checks the rest (skills, channels, capacity) when the center is
        // built.
        s.center()
            .map_err(|e| format!("the center is not valid: {e}"))?;
        Ok(s)
    }

    /// Every arrival of the run, in time order: (seconds from the start, arrival
    /// stream index, queue index). Poisson by thinning (exact for a rate per interval).
    pub fn arrival_plan(&self, rng: &mut SeededRng) -> Vec<(f64, usize, usize)> {
        let mut plan = Vec::new();
        for (si, a) in self.arrivals.iter().enumerate() {
            let max = a.max_rate();
            if max <= 0.0 {
                continue;
            }
            let qi = self
                .queues
                .iter()
                .position(|q| q.id == a.queue)
                .expect("checked at load");
            let mut t = 0.0;
            loop {
                t += rng.exponential(1.0 / max);
                if t >= self.duration_s {
                    break;
                }
                if rng.next_f64() * max <= a.rate_at(t) {
                    plan.push((t, si, qi));
                }
            }
        }
        plan.sort_by(|a, b| a.0.total_cmp(&b.0));
        plan
    }

    /// The channels in play.
    pub fn channel_defs(&self) -> Vec<ChannelDef> {
        if self.channels.is_empty() {
            ChannelDef::builtin()
        } else {
            self.channels.clone()
        }
    }

    /// Agents of a group, with their ids.
    pub fn agents(&self) -> Vec<(usize, AgentDef)> {
        let channels = self.channel_defs();
        let mut out = Vec::new();
        for (gi, g) in self.agent_groups.iter().enumerate() {
            let chans: Vec<ChannelCapacity> = if g.channels.is_empty() {
                channels
                    .iter()
                    .map(|c| ChannelCapacity {
                        channel: c.name.clone(),
                        units: Some(1),
                        max_concurrent: g.max_concurrent.get(&c.name).copied(),
                    })
                    .collect()
            } else {
                g.channels
                    .iter()
                    .map(|(c, u)| ChannelCapacity {
                        channel: c.clone(),
                        units: Some(*u),
                        max_concurrent: g.max_concurrent.get(c).copied(),
                    })
                    .collect()
            };
            for n in 0..g.count {
                out.push((
                    gi,
                    AgentDef {
                        id: format!("{}-{n}", g.name),
                        name: format!("{} {n}", g.name),
                        skills: g
                            .skills
                            .iter()
                            .map(|(s, p)| SkillLevel {
                                skill: s.clone(),
                                proficiency: *p,
                            })
                            .collect(),
                        capacity: CapacityProfile {
                            total_units: g.total_units,
                            channels: chans.clone(),
                            blocking: g
                                .blocking
                                .iter()
                                .map(|(on, blocks)| ChannelBlock {
                                    while_on: on.clone(),
                                    blocks: blocks.clone(),
                                })
                                .collect(),
                        },
                    },
                ));
            }
        }
        out
    }

    /// The engine's configuration for this scenario.
    pub fn center(&self) -> Result<CenterConfig, String> {
        let mut skills: Vec<String> = self.skills.clone();
        for name in self
            .queues
            .iter()
            .flat_map(|q| q.skills.keys())
            .chain(self.agent_groups.iter().flat_map(|g| g.skills.keys()))
        {
            if !skills.contains(name) {
                skills.push(name.clone());
            }
        }
        let config = CenterConfig {
            channels: self.channel_defs(),
            skills: skills
                .into_iter()
                .map(|name| SkillDef {
                    name,
                    is_language: false,
                })
                .collect(),
            agents: self.agents().into_iter().map(|(_, a)| a).collect(),
            queues: self
                .queues
                .iter()
                .map(|q| {
                    let mut d = QueueDef::new(&q.id, &[]);
                    d.channels = q.channels.clone();
                    d.required_skills = q
                        .skills
                        .iter()
                        .map(|(s, p)| SkillRequirement {
                            skill: s.clone(),
                            min_proficiency: *p,
                        })
                        .collect();
                    d.policy = q.policy;
                    d.base_priority = q.priority;
                    d.offer_timeout_ms = (q.offer_timeout_s * 1000.0).round() as u64;
                    d.wrap_up_ms = (q.wrap_up_s * 1000.0).round() as u64;
                    d.service_level = ServiceLevel {
                        percent: q.service_level_percent,
                        threshold_ms: (q.service_level_s * 1000.0).round() as u64,
                    };
                    d.max_waiting = q.max_waiting;
                    d
                })
                .collect(),
            ..Default::default()
        };
        omniroute_transport::actors::engine::Engine::new(config.clone())
            .map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// A scenario for unit tests: one voice queue `q` (skill `general` ≥ 1) plus the
/// queues in `more`, one agent group `a` whose lines after its name are `group`, and
/// voice arrivals to `q`.
#[cfg(test)]
pub(crate) fn test_scenario(more: &str, group: &str) -> Scenario {
    let text = format!(
        r#"
duration_s = 3600
[[queues]]
id = "q"
channels = ["voice"]
skills = {{ general = 1 }}
handle_time = {{ dist = "fixed", s = 60 }}
{more}
[[agent_groups]]
name = "a"
{group}
[[arrivals]]
queue = "q"
channel = "voice"
rate_per_hour = 60
"#
    );
    Scenario::parse(&text, Path::new(".")).expect("a valid test scenario")
}
