//! Validation of a [`CenterConfig`] and its compilation into the index form the hot path
//! reads (the catalog). A catalog is immutable; a configuration change builds a new one
//! and swaps it in atomically, reusing the runtime cells (agents, targets, counters) of
//! everything that did not change, so routing never stops for an admin change.

use crate::capacity::{ChannelEntry, ChannelIdx, CompiledProfile};
use crate::cells::{AgentCell, AgentState, Membership, TargetCell, TargetSpec};
use crate::error::{EngineError, Result};
use crate::model::*;
use parking_lot::Mutex;
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

pub(crate) struct ChannelRt {
    pub name: Arc<str>,
    pub default_units: u16,
    pub auto_accept: bool,
    pub removed: bool,
}

#[derive(Default)]
pub(crate) struct QueueCounters {
    pub waiting: AtomicU32,
    /// Round-robin stamps for offers from this queue (per queue, so unrelated queues do
    /// not share a cache line on the hot path).
    pub round_robin: std::sync::atomic::AtomicU64,
}

pub(crate) struct QueueRt {
    pub idx: u32,
    pub id: Arc<str>,
    pub def: QueueDef,
    pub channel_mask: u64,
    /// Target per relaxation level.
    pub targets: Vec<u32>,
    /// For each relaxation step: the level after it, and the overflow queue it adds.
    pub step_level: Vec<u8>,
    pub step_overflow: Vec<Option<u32>>,
    pub offer_limit_queue: Option<u32>,
    pub counters: Arc<QueueCounters>,
}

impl QueueRt {
    pub fn step_due_ms(&self, step: u16, queue_entered_ms: TimeMs) -> Option<TimeMs> {
        self.def
            .relaxation
            .get(step as usize)
            .map(|s| queue_entered_ms.saturating_add(s.after_ms))
    }
}

pub(crate) struct CompiledRule {
    pub name: Arc<str>,
    pub channel_mask: u64,
    pub conditions: Vec<AttributeCondition>,
    pub queue: u32,
    pub priority: Option<i32>,
}

pub(crate) struct Catalog {
    pub channels: Vec<ChannelRt>,
    pub channel_by_name: HashMap<String, ChannelIdx>,
    pub skill_names: Vec<String>,
    pub queues: Vec<Option<Arc<QueueRt>>>,
    pub queue_by_id: HashMap<String, u32>,
    pub targets: Vec<Arc<TargetCell>>,
    pub agents: Vec<Option<Arc<AgentCell>>>,
    pub agent_by_id: HashMap<String, u32>,
    pub rules: Vec<CompiledRule>,
    pub default_queue: Option<u32>,
    pub settings: Settings,
    pub config: CenterConfig,
    /// Bumped by every configuration change.
    pub generation: u64,
}

/// An agent's compiled configuration, applied to its cell after the swap.
pub(crate) struct AgentUpdate {
    pub idx: u32,
    pub profile: Arc<CompiledProfile>,
    pub skills: Vec<(u16, u8)>,
    pub memberships: Arc<[Membership]>,
}

pub(crate) struct Compiled {
    pub catalog: Catalog,
    pub agent_updates: Vec<AgentUpdate>,
    /// Targets of the previous catalog that are no longer used.
    pub retired_targets: Vec<u32>,
    /// Agents and queues removed by this change.
    pub removed_agents: Vec<u32>,
    pub removed_queues: Vec<u32>,
}

fn invalid(context: impl Into<String>, message: impl Into<String>) -> EngineError {
    EngineError::InvalidConfig {
        context: context.into(),
        message: message.into(),
    }
}

fn check_proficiency(skill: &str, value: u8, context: &str) -> Result<()> {
    if PROFICIENCY_RANGE.contains(&value) {
        Ok(())
    } else {
        Err(EngineError::ProficiencyOutOfRange {
            skill: skill.to_string(),
            value,
            context: context.to_string(),
        })
    }
}

/// Stable indexes: names keep their index across reconfigurations; new names append.
fn stable_index<'a>(
    previous: &[&'a str],
    current: impl Iterator<Item = &'a str>,
) -> (Vec<String>, HashMap<String, usize>) {
    let mut names: Vec<String> = previous.iter().map(|s| s.to_string()).collect();
    let mut by_name: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    for name in current {
        if !by_name.contains_key(name) {
            by_name.insert(name.to_string(), names.len());
            names.push(name.to_string());
        }
    }
    (names, by_name)
}

struct Resolver<'a> {
    channel_by_name: &'a HashMap<String, ChannelIdx>,
    channels: &'a [ChannelRt],
    skill_by_name: &'a HashMap<String, u16>,
    queue_by_id: &'a HashMap<String, u32>,
}

impl Resolver<'_> {
    fn channel(&self, name: &str, context: &str) -> Result<ChannelIdx> {
        self.channel_by_name
            .get(name)
            .copied()
            .filter(|c| !self.channels[*c as usize].removed)
            .ok_or_else(|| EngineError::UnknownChannel {
                channel: name.to_string(),
                context: context.to_string(),
            })
    }

    fn skill(&self, name: &str, context: &str) -> Result<u16> {
        self.skill_by_name
            .get(name)
            .copied()
            .ok_or_else(|| EngineError::UnknownSkill {
                skill: name.to_string(),
                context: context.to_string(),
            })
    }

    fn queue(&self, id: &str, context: &str) -> Result<u32> {
        self.queue_by_id.get(id).copied().ok_or_else(|| {
            invalid(
                context.to_string(),
                format!("unknown queue `{id}` (define it under queues)"),
            )
        })
    }

    fn requirements(&self, list: &[SkillRequirement], context: &str) -> Result<Vec<(u16, u8)>> {
        let mut out = Vec::with_capacity(list.len());
        for r in list {
            check_proficiency(&r.skill, r.min_proficiency, context)?;
            let skill = self.skill(&r.skill, context)?;
            if out.iter().any(|(s, _)| *s == skill) {
                return Err(invalid(
                    context,
                    format!("skill `{}` listed twice", r.skill),
                ));
            }
            out.push((skill, r.min_proficiency));
        }
        Ok(out)
    }
}

fn compile_profile(resolver: &Resolver<'_>, agent: &AgentDef) -> Result<CompiledProfile> {
    let context = format!("agent `{}` capacity", agent.id);
    let p = &agent.capacity;
    if p.total_units == 0 {
        return Err(invalid(
            format!("{context}.total_units"),
            "must be at least 1",
        ));
    }
    if p.channels.is_empty() {
        return Err(invalid(
            format!("{context}.channels"),
            "lists no channel: this profile can never fit any channel",
        ));
    }
    let mut entries = Vec::with_capacity(p.channels.len());
    let mut handled_mask = 0u64;
    for c in &p.channels {
        let channel = resolver.channel(&c.channel, &context)?;
        if handled_mask & (1u64 << channel) != 0 {
            return Err(invalid(
                format!("{context}.channels"),
                format!("channel `{}` listed twice", c.channel),
            ));
        }
        let units = c
            .units
            .unwrap_or(resolver.channels[channel as usize].default_units);
        if units == 0 {
            return Err(invalid(
                format!("{context}.channels[{}].units", c.channel),
                "must be at least 1",
            ));
        }
        if units > p.total_units {
            return Err(invalid(
                format!("{context}.channels[{}].units", c.channel),
                format!(
                    "costs {units} units but the profile has only {} in total: it can never fit",
                    p.total_units
                ),
            ));
        }
        if c.max_concurrent == Some(0) {
            return Err(invalid(
                format!("{context}.channels[{}].max_concurrent", c.channel),
                "must be at least 1 (remove the channel instead)",
            ));
        }
        handled_mask |= 1u64 << channel;
        entries.push(ChannelEntry {
            channel,
            units,
            max_concurrent: c.max_concurrent.unwrap_or(u16::MAX),
        });
    }
    let mut blocks = Vec::with_capacity(p.blocking.len());
    for b in &p.blocking {
        let blocking = resolver.channel(&b.while_on, &context)?;
        let not_handled = |name: &str| {
            invalid(
                format!("{context}.blocking"),
                format!("`{name}` is not one of this agent's channels"),
            )
        };
        if handled_mask & (1u64 << blocking) == 0 {
            return Err(not_handled(&b.while_on));
        }
        let mut mask = 0u64;
        for c in &b.blocks {
            let blocked = resolver.channel(c, &context)?;
            if handled_mask & (1u64 << blocked) == 0 {
                return Err(not_handled(c));
            }
            mask |= 1u64 << blocked;
        }
        blocks.push((blocking, mask));
    }
    Ok(CompiledProfile {
        total_units: p.total_units,
        entries,
        handled_mask,
        blocks,
    })
}

fn compile_agent_skills(resolver: &Resolver<'_>, agent: &AgentDef) -> Result<Vec<(u16, u8)>> {
    let context = format!("agent `{}` skills", agent.id);
    let mut skills = Vec::with_capacity(agent.skills.len());
    for s in &agent.skills {
        check_proficiency(&s.skill, s.proficiency, &context)?;
        skills.push((resolver.skill(&s.skill, &context)?, s.proficiency));
    }
    skills.sort_unstable();
    if skills.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(invalid(context, "a skill is listed twice"));
    }
    Ok(skills)
}

/// A queue's target specs (one per relaxation level), and per step the level after it
/// and the overflow queue it adds.
type QueueLevels = (Vec<TargetSpec>, Vec<u8>, Vec<Option<u32>>);

/// The target specs of a queue, one per relaxation level, and the step → level map.
fn queue_levels(
    resolver: &Resolver<'_>,
    queue: &QueueDef,
    idx: u32,
    channel_mask: u64,
) -> Result<QueueLevels> {
    let context = format!("queue `{}`", queue.id);
    let required = resolver.requirements(
        &queue.required_skills,
        &format!("{context} required_skills"),
    )?;
    let optional = resolver.requirements(
        &queue.optional_skills,
        &format!("{context} optional_skills"),
    )?;
    let base = TargetSpec {
        queue: idx,
        level: 0,
        prefer_optional: !optional.is_empty(),
        required,
        optional,
        policy: queue.policy,
        channel_mask,
        aging_millipoints_per_second: queue.aging_millipoints_per_second,
    };
    let mut levels = vec![base];
    let mut step_level = Vec::new();
    let mut step_overflow = Vec::new();
    let mut last_after = 0u64;
    for (i, step) in queue.relaxation.iter().enumerate() {
        let step_context = format!("{context} relaxation[{i}]");
        if step.after_ms < last_after {
            return Err(invalid(
                format!("{step_context}.after_ms"),
                format!(
                    "{} is earlier than the previous step's {last_after}; steps must be in time order",
                    step.after_ms
                ),
            ));
        }
        last_after = step.after_ms;
        let current = levels.last().expect("level 0 exists").clone();
        let mut overflow = None;
        match &step.action {
            RelaxationAction::DropOptionalSkills => {
                if current.optional.is_empty() && !current.prefer_optional {
                    return Err(invalid(
                        step_context,
                        "drop_optional_skills but the queue has no optional skills (left)",
                    ));
                }
                let mut next = current;
                next.optional.clear();
                next.prefer_optional = false;
                next.level += 1;
                levels.push(next);
            }
            RelaxationAction::LowerProficiency { skill, to } => {
                check_proficiency(skill, *to, &step_context)?;
                let skill_idx = resolver.skill(skill, &step_context)?;
                let mut next = current;
                let requirement = next
                    .required
                    .iter_mut()
                    .find(|(s, _)| *s == skill_idx)
                    .ok_or_else(|| {
                        invalid(
                            &step_context,
                            format!("`{skill}` is not a required skill of the queue"),
                        )
                    })?;
                if *to >= requirement.1 {
                    return Err(invalid(
                        format!("{step_context}.to"),
                        format!(
                            "{to} does not lower the current minimum {} of `{skill}`",
                            requirement.1
                        ),
                    ));
                }
                requirement.1 = *to;
                next.level += 1;
                levels.push(next);
            }
            RelaxationAction::Overflow { queue: other } => {
                let target = resolver.queue(other, &step_context)?;
                if target == idx {
                    return Err(invalid(step_context, "a queue cannot overflow into itself"));
                }
                overflow = Some(target);
            }
        }
        if levels.len() > u8::MAX as usize {
            return Err(invalid(context, "too many relaxation levels (255 at most)"));
        }
        step_level.push((levels.len() - 1) as u8);
        step_overflow.push(overflow);
    }
    Ok((levels, step_level, step_overflow))
}

fn validate_queue_scalars(queue: &QueueDef) -> Result<()> {
    let context = format!("queue `{}`", queue.id);
    if queue.id.is_empty() {
        return Err(invalid("queues", "a queue has an empty id"));
    }
    if queue.offer_timeout_ms == 0 {
        return Err(invalid(
            format!("{context}.offer_timeout_ms"),
            "must be at least 1 ms",
        ));
    }
    if queue.max_waiting == 0 {
        return Err(invalid(
            format!("{context}.max_waiting"),
            "must be at least 1",
        ));
    }
    if !(1..=100).contains(&queue.service_level.percent) {
        return Err(invalid(
            format!("{context}.service_level.percent"),
            format!(
                "{} is not a percentage in 1-100",
                queue.service_level.percent
            ),
        ));
    }
    let mut codes = HashSet::new();
    for code in &queue.wrap_up_codes {
        if code.is_empty() || !codes.insert(code.as_str()) {
            return Err(invalid(
                format!("{context}.wrap_up_codes"),
                format!("`{code}` is empty or listed twice"),
            ));
        }
    }
    Ok(())
}

fn rule_matches_channel_check(
    resolver: &Resolver<'_>,
    rule: &RoutingRule,
    index: usize,
) -> Result<CompiledRule> {
    let context = format!("routing rule {index} (`{}`)", rule.name);
    let mut channel_mask = 0u64;
    for c in &rule.channels {
        channel_mask |= 1u64 << resolver.channel(c, &context)?;
    }
    let queue = resolver
        .queue_by_id
        .get(&rule.queue)
        .copied()
        .ok_or_else(|| EngineError::UnknownQueue(rule.queue.clone()))?;
    Ok(CompiledRule {
        name: Arc::from(rule.name.as_str()),
        channel_mask,
        conditions: rule.conditions.clone(),
        queue,
        priority: rule.priority,
    })
}

/// Validates `config` and builds a catalog, reusing `previous`'s runtime cells.
pub(crate) fn compile(config: CenterConfig, previous: Option<&Catalog>) -> Result<Compiled> {
    // Channels: stable indexes, at most MAX_CHANNELS ever.
    let mut seen = HashSet::new();
    for c in &config.channels {
        if c.name.is_empty() {
            return Err(invalid("channels", "a channel has an empty name"));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(EngineError::Duplicate {
                kind: "channel",
                id: c.name.clone(),
            });
        }
        if c.default_units == 0 {
            return Err(invalid(
                format!("channel `{}`.default_units", c.name),
                "must be at least 1",
            ));
        }
    }
    let previous_channels: Vec<&str> = previous
        .map(|p| p.channels.iter().map(|c| &*c.name).collect())
        .unwrap_or_default();
    let (channel_names, channel_pos) = stable_index(
        &previous_channels,
        config.channels.iter().map(|c| c.name.as_str()),
    );
    if channel_names.len() > MAX_CHANNELS {
        return Err(invalid(
            "channels",
            format!(
                "{} channels defined over the engine's life; at most {MAX_CHANNELS}",
                channel_names.len()
            ),
        ));
    }
    let channels: Vec<ChannelRt> = channel_names
        .iter()
        .map(
            |name| match config.channels.iter().find(|c| &c.name == name) {
                Some(c) => ChannelRt {
                    name: Arc::from(name.as_str()),
                    default_units: c.default_units,
                    auto_accept: c.auto_accept,
                    removed: false,
                },
                None => ChannelRt {
                    name: Arc::from(name.as_str()),
                    default_units: 1,
                    auto_accept: false,
                    removed: true,
                },
            },
        )
        .collect();
    let channel_by_name: HashMap<String, ChannelIdx> = channel_pos
        .into_iter()
        .map(|(n, i)| (n, i as ChannelIdx))
        .collect();
    let all_channels_mask = channels
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.removed)
        .fold(0u64, |m, (i, _)| m | (1u64 << i));

    // Skills.
    let mut seen = HashSet::new();
    for s in &config.skills {
        if s.name.is_empty() {
            return Err(invalid("skills", "a skill has an empty name"));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(EngineError::Duplicate {
                kind: "skill",
                id: s.name.clone(),
            });
        }
    }
    if config.skills.len() > u16::MAX as usize {
        return Err(invalid("skills", "too many skills (65535 at most)"));
    }
    let skill_names: Vec<String> = config.skills.iter().map(|s| s.name.clone()).collect();
    let skill_by_name: HashMap<String, u16> = skill_names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u16))
        .collect();

    // Queue ids: stable indexes, tombstones for removed ones.
    let mut seen = HashSet::new();
    for q in &config.queues {
        validate_queue_scalars(q)?;
        if !seen.insert(q.id.as_str()) {
            return Err(EngineError::Duplicate {
                kind: "queue",
                id: q.id.clone(),
            });
        }
    }
    let previous_queue_ids: Vec<&str> = previous
        .map(|p| {
            let mut ids = vec![""; p.queues.len()];
            for (id, i) in &p.queue_by_id {
                ids[*i as usize] = id.as_str();
            }
            ids
        })
        .unwrap_or_default();
    let (queue_slots, queue_pos) = stable_index(
        &previous_queue_ids,
        config.queues.iter().map(|q| q.id.as_str()),
    );
    let queue_by_id: HashMap<String, u32> = config
        .queues
        .iter()
        .map(|q| (q.id.clone(), queue_pos[&q.id] as u32))
        .collect();
    let resolver = Resolver {
        channel_by_name: &channel_by_name,
        channels: &channels,
        skill_by_name: &skill_by_name,
        queue_by_id: &queue_by_id,
    };

    // Queues and their targets.
    let mut targets: Vec<Arc<TargetCell>> = previous.map(|p| p.targets.clone()).unwrap_or_default();
    let mut used_targets = BTreeSet::new();
    let mut queues: Vec<Option<Arc<QueueRt>>> = vec![None; queue_slots.len()];
    for q in &config.queues {
        let idx = queue_by_id[&q.id];
        let context = format!("queue `{}`", q.id);
        let mut channel_mask = 0u64;
        for c in &q.channels {
            channel_mask |= 1u64 << resolver.channel(c, &format!("{context} channels"))?;
        }
        if q.channels.is_empty() {
            channel_mask = all_channels_mask;
        }
        let (levels, step_level, step_overflow) = queue_levels(&resolver, q, idx, channel_mask)?;
        let offer_limit_queue = match &q.on_offer_limit {
            OfferLimitAction::Requeue => None,
            OfferLimitAction::Transfer { queue } => {
                let target = resolver.queue(queue, &format!("{context}.on_offer_limit"))?;
                if target == idx {
                    return Err(invalid(
                        format!("{context}.on_offer_limit"),
                        "cannot transfer to itself",
                    ));
                }
                Some(target)
            }
        };
        let previous_queue = previous.and_then(|p| p.queues.get(idx as usize).cloned().flatten());
        let mut target_ids = Vec::with_capacity(levels.len());
        for spec in levels {
            let reused = previous_queue.as_ref().and_then(|pq| {
                pq.targets
                    .get(spec.level as usize)
                    .copied()
                    .filter(|t| targets[*t as usize].spec == spec)
            });
            let t = match reused {
                Some(t) => t,
                None => {
                    let t = targets.len() as u32;
                    targets.push(Arc::new(TargetCell::new(t, spec)));
                    t
                }
            };
            used_targets.insert(t);
            target_ids.push(t);
        }
        let counters = previous_queue
            .as_ref()
            .map(|pq| pq.counters.clone())
            .unwrap_or_default();
        queues[idx as usize] = Some(Arc::new(QueueRt {
            idx,
            id: Arc::from(q.id.as_str()),
            def: q.clone(),
            channel_mask,
            targets: target_ids,
            step_level,
            step_overflow,
            offer_limit_queue,
            counters,
        }));
    }
    let retired_targets: Vec<u32> = previous
        .map(|p| {
            p.queues
                .iter()
                .flatten()
                .flat_map(|q| q.targets.iter().copied())
                .filter(|t| !used_targets.contains(t))
                .collect()
        })
        .unwrap_or_default();
    let removed_queues: Vec<u32> = previous
        .map(|p| {
            p.queues
                .iter()
                .flatten()
                .filter(|q| !queue_by_id.contains_key(&*q.id))
                .map(|q| q.idx)
                .collect()
        })
        .unwrap_or_default();

    // Routing rules.
    let mut rules = Vec::with_capacity(config.routing.rules.len());
    // Rules are named in explanations and edited by name: names are unique.
    let mut seen = HashSet::new();
    for (i, rule) in config.routing.rules.iter().enumerate() {
        if !seen.insert(rule.name.as_str()) {
            return Err(EngineError::Duplicate {
                kind: "rule",
                id: rule.name.clone(),
            });
        }
        rules.push(rule_matches_channel_check(&resolver, rule, i)?);
    }
    let default_queue = match &config.routing.default_queue {
        Some(q) => Some(
            queue_by_id
                .get(q)
                .copied()
                .ok_or_else(|| EngineError::UnknownQueue(q.clone()))?,
        ),
        None => None,
    };

    // Agents: stable indexes; memberships via a skill → targets index so the cost is
    // the agent's own queues, not every queue.
    let mut seen = HashSet::new();
    for a in &config.agents {
        if a.id.is_empty() {
            return Err(invalid("agents", "an agent has an empty id"));
        }
        if !seen.insert(a.id.as_str()) {
            return Err(EngineError::Duplicate {
                kind: "agent",
                id: a.id.clone(),
            });
        }
    }
    let mut by_first_skill: HashMap<u16, Vec<u32>> = HashMap::default();
    let mut no_requirement: Vec<u32> = Vec::new();
    for t in &used_targets {
        let spec = &targets[*t as usize].spec;
        match spec.required.first() {
            Some((skill, _)) => by_first_skill.entry(*skill).or_default().push(*t),
            None => no_requirement.push(*t),
        }
    }
    let mut agents: Vec<Option<Arc<AgentCell>>> =
        previous.map(|p| p.agents.clone()).unwrap_or_default();
    let mut agent_by_id =
        HashMap::with_capacity_and_hasher(config.agents.len(), Default::default());
    let mut agent_updates = Vec::with_capacity(config.agents.len());
    for a in &config.agents {
        let profile = Arc::new(compile_profile(&resolver, a)?);
        let skills = compile_agent_skills(&resolver, a)?;
        let mut memberships = Vec::new();
        let candidates = skills
            .iter()
            .filter_map(|(s, _)| by_first_skill.get(s))
            .flatten()
            .chain(no_requirement.iter());
        for t in candidates {
            let spec = &targets[*t as usize].spec;
            if spec.channel_mask & profile.handled_mask == 0 {
                continue;
            }
            if let Some(m) = spec.membership(*t, &skills) {
                memberships.push(m);
            }
        }
        memberships.sort_unstable_by_key(|m| m.target);
        let existing = previous.and_then(|p| p.agent_by_id.get(&a.id).copied());
        let idx = match existing {
            Some(idx) => idx,
            None => {
                let idx = agents.len() as u32;
                agents.push(Some(Arc::new(AgentCell {
                    idx,
                    id: Arc::from(a.id.as_str()),
                    state: Mutex::new(AgentState {
                        deleted: false,
                        presence: Presence::Offline,
                        profile: profile.clone(),
                        skills: skills.clone(),
                        memberships: Arc::from(Vec::new()),
                        index: Vec::new(),
                        usage: Default::default(),
                        work: Vec::with_capacity(4),
                        last_work_ended_ms: 0,
                        consecutive_misses: 0,
                        round_robin: Vec::new(),
                        offers_received: 0,
                    }),
                })));
                idx
            }
        };
        agent_by_id.insert(a.id.clone(), idx);
        agent_updates.push(AgentUpdate {
            idx,
            profile,
            skills,
            memberships: Arc::from(memberships),
        });
    }
    let removed_agents: Vec<u32> = previous
        .map(|p| {
            p.agent_by_id
                .iter()
                .filter(|(id, _)| !agent_by_id.contains_key(*id))
                .map(|(_, i)| *i)
                .collect()
        })
        .unwrap_or_default();
    for idx in &removed_agents {
        agents[*idx as usize] = None;
    }

    let catalog = Catalog {
        channels,
        channel_by_name,
        skill_names,
        queues,
        queue_by_id,
        targets,
        agents,
        agent_by_id,
        rules,
        default_queue,
        settings: config.settings.clone(),
        config,
        generation: previous.map_or(0, |p| p.generation + 1),
    };
    Ok(Compiled {
        catalog,
        agent_updates,
        retired_targets,
        removed_agents,
        removed_queues,
    })
}

impl Catalog {
    pub fn queue(&self, idx: u32) -> &Arc<QueueRt> {
        self.queues[idx as usize]
            .as_ref()
            .expect("interactions only reference live queues")
    }

    pub fn agent(&self, idx: u32) -> Option<&Arc<AgentCell>> {
        self.agents.get(idx as usize).and_then(|a| a.as_ref())
    }

    pub fn target(&self, idx: u32) -> &Arc<TargetCell> {
        &self.targets[idx as usize]
    }

    pub fn channel_name(&self, channel: ChannelIdx) -> &Arc<str> {
        &self.channels[channel as usize].name
    }

    /// The first rule matching, or the default queue.
    pub fn route(
        &self,
        channel: ChannelIdx,
        request: &NewInteraction,
    ) -> Option<(u32, Option<i32>, Option<Arc<str>>)> {
        for rule in &self.rules {
            if rule.channel_mask != 0 && rule.channel_mask & (1u64 << channel) == 0 {
                continue;
            }
            let all = rule.conditions.iter().all(|c| match c {
                AttributeCondition::Equals { key, value } => {
                    request.attributes.get(key) == Some(value)
                }
                AttributeCondition::OneOf { key, values } => request
                    .attributes
                    .get(key)
                    .is_some_and(|v| values.contains(v)),
                AttributeCondition::Exists { key } => request.attributes.contains_key(key),
            });
            if all {
                return Some((rule.queue, rule.priority, Some(rule.name.clone())));
            }
        }
        self.default_queue.map(|q| (q, None, None))
    }
}
