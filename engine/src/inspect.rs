//! Reading the engine: snapshots of interactions, agents and queues, explanations of
//! routing decisions, and a full invariant check used by the tests and the simulator.
//!
//! None of this is on the hot path; it takes the same locks in the same order as routing
//! does, one target at a time, so it is safe to call while the engine is busy (the
//! invariant check only gives a meaningful answer when no operation is in flight).

use crate::InteractionId;
use crate::capacity::{CapacityShortfall, Usage};
use crate::catalog::Catalog;
use crate::cells::*;
use crate::engine::{
    Engine, compute_rank, membership_of, membership_position, others_exist, rank_words,
};
use crate::error::{EngineError, Result};
use crate::model::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// An interaction as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionSnapshot {
    /// Id.
    pub id: InteractionId,
    /// Channel name.
    pub channel: String,
    /// Customer.
    pub customer: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Current queue.
    pub queue: String,
    /// Base priority.
    pub priority: i32,
    /// State.
    pub state: InteractionState,
    /// Agent holding the offer, assignment or wrap-up.
    pub agent: Option<String>,
    /// Created.
    pub created_ms: TimeMs,
    /// Original enqueue time (its age).
    pub enqueued_ms: TimeMs,
    /// Entered its current queue.
    pub queue_entered_ms: TimeMs,
    /// Relaxation steps applied in the current queue.
    pub relaxation_steps_applied: u16,
    /// Agents who declined it (rejected or let time out).
    pub declined: Vec<String>,
    /// Offers made in the current queue.
    pub offers_in_queue: u32,
    /// The preferred agent, while its exclusivity lasts.
    pub preferred_agent: Option<String>,
    /// When the preferred agent's exclusivity ends.
    pub preferred_until_ms: Option<TimeMs>,
    /// First acceptance.
    pub answered_ms: Option<TimeMs>,
    /// Wrap-up code.
    pub wrap_up_code: Option<String>,
    /// Routing history, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One piece of work in an agent's hands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkSnapshot {
    /// Interaction.
    pub interaction: InteractionId,
    /// Channel name.
    pub channel: String,
    /// Units reserved.
    pub units: u16,
    /// `offered`, `assigned` or `wrap_up`.
    pub phase: String,
}

/// An agent as seen from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    /// Id.
    pub id: String,
    /// Chosen presence.
    pub presence: Presence,
    /// Presence combined with work.
    pub status: AgentStatus,
    /// Units in use.
    pub used_units: u16,
    /// Units in total.
    pub total_units: u16,
    /// Work in hand, in offer order.
    pub work: Vec<WorkSnapshot>,
    /// When its last work ended.
    pub last_work_ended_ms: TimeMs,
    /// Consecutive rejected or timed-out offers.
    pub consecutive_misses: u32,
    /// Offers received in total.
    pub offers_received: u64,
    /// Queues this agent serves (at the queue's first level).
    pub queues: Vec<String>,
}

/// One waiting interaction of a queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitingEntry {
    /// Interaction.
    pub interaction: InteractionId,
    /// Channel name.
    pub channel: String,
    /// Effective priority now, in thousandths of a point.
    pub effective_priority_millipoints: i64,
    /// Effective priority now in points, unrounded (to a millionth of a point): what
    /// ordering uses.
    pub effective_priority: f64,
    /// Original enqueue time.
    pub enqueued_ms: TimeMs,
}

/// A queue's waiting work, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Queue id.
    pub id: String,
    /// Interactions counted as waiting in this queue (its own, not overflow guests).
    pub waiting_count: u32,
    /// Everything waiting in this queue's lanes, its own and overflow guests, in the
    /// order agents will take them.
    pub waiting: Vec<WaitingEntry>,
}

/// Why an agent is not a candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Exclusion {
    /// Lacks a required skill.
    MissingSkill {
        /// Skill.
        skill: String,
    },
    /// Has the skill below the minimum.
    ProficiencyTooLow {
        /// Skill.
        skill: String,
        /// Agent's proficiency.
        has: u8,
        /// Minimum at the interaction's relaxation level.
        needs: u8,
    },
    /// Not available.
    Presence {
        /// Presence.
        presence: Presence,
    },
    /// No capacity for the channel now.
    Capacity {
        /// What is short.
        shortfall: CapacityShortfall,
    },
    /// Declined this interaction, and another member is available and handles the channel.
    AlreadyDeclined,
    /// The interaction waits for its preferred agent until the fallback time.
    WaitingForPreferredAgent {
        /// The preferred agent.
        preferred: String,
    },
}

/// One candidate in an explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Agent.
    pub agent: String,
    /// Rank words under the queue's policy (smaller is better), when eligible.
    pub rank: Option<[u64; 4]>,
    /// Set when the agent is eligible only through an overflow queue the interaction
    /// reached by relaxation (ranked after the queue's own agents, under that queue's
    /// policy).
    pub via_overflow_queue: Option<String>,
    /// Why excluded, when not eligible.
    pub excluded: Option<Exclusion>,
}

/// Why an interaction is where it is, and who would get it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Interaction; `None` for [`Engine::explain_next`] (a hypothetical new one).
    pub interaction: Option<InteractionId>,
    /// State.
    pub state: InteractionState,
    /// Queue.
    pub queue: String,
    /// Policy.
    pub policy: AssignmentPolicy,
    /// What the rank words mean for this policy.
    pub rank_meaning: String,
    /// Eligible candidates best first, then the excluded ones.
    pub candidates: Vec<Candidate>,
    /// Who would get it now (the best eligible), if anyone.
    pub winner: Option<String>,
    /// One-line summary.
    pub summary: String,
}

fn rank_meaning(policy: AssignmentPolicy) -> &'static str {
    match policy {
        AssignmentPolicy::LongestIdle => {
            "[optional skills missing (if preferred), work in hand, last work ended at ms, 0]"
        }
        AssignmentPolicy::MostSkilled => {
            "[u64::MAX - proficiency sum, work in hand, last work ended at ms, 0]"
        }
        AssignmentPolicy::LeastOccupied => {
            "[optional skills missing (if preferred), used/total as 32.32 fixed point, last work ended at ms, 0]"
        }
        AssignmentPolicy::RoundRobin => {
            "[optional skills missing (if preferred), last offer from this queue (sequence), 0, 0]"
        }
    }
}

fn phase_name(phase: WorkPhase) -> &'static str {
    match phase {
        WorkPhase::Offered => "offered",
        WorkPhase::Assigned => "assigned",
        WorkPhase::WrapUp => "wrap_up",
    }
}

impl Engine {
    /// Whether the engine holds interaction `id` (live, or finished and not purged).
    pub fn holds(&self, id: InteractionId) -> bool {
        self.interactions.contains_key(&id)
    }

    /// Changes whenever this engine forgets interactions (a purge, [`Engine::forget`]
    /// or a reconfiguration removing a queue with finished work — any that removed
    /// some) and differs between engines (a snapshot's restore builds a
    /// new one): an index of what the engine holds need not be checked again while
    /// this stays the same.
    pub fn forget_epoch(&self) -> (u64, u64) {
        (self.instance, self.forgets.load(Ordering::Acquire))
    }

    pub(crate) fn forgot(&self, how_many: usize) -> usize {
        if how_many > 0 {
            self.forgets.fetch_add(1, Ordering::AcqRel);
        }
        how_many
    }

    /// An interaction's customer and channel, without copying the rest (adapters'
    /// and sessions' ownership checks, outbound pushes).
    pub fn interaction_owner(&self, id: InteractionId) -> Result<(String, String)> {
        let ic = self
            .interaction_ref(id)
            .ok_or(EngineError::UnknownInteraction(id))?;
        let i = ic.lock();
        let catalog = self.catalog.load();
        Ok((
            i.request.customer.clone(),
            catalog.channel_name(i.channel).to_string(),
        ))
    }

    /// A live or finished interaction (finished ones stay until purged).
    pub fn interaction(&self, id: InteractionId) -> Result<InteractionSnapshot> {
        let ic = self
            .interaction_ref(id)
            .ok_or(EngineError::UnknownInteraction(id))?;
        let i = ic.lock();
        // Loaded with the interaction locked, so it knows the interaction's queue.
        let catalog = self.catalog.load();
        let agent_name = |a: u32| {
            catalog
                .agent(a)
                .map_or_else(|| format!("#{a}"), |c| c.id.to_string())
        };
        Ok(InteractionSnapshot {
            id,
            channel: catalog.channel_name(i.channel).to_string(),
            customer: i.request.customer.clone(),
            attributes: i.request.attributes.clone(),
            queue: catalog.queue(i.queue).id.to_string(),
            priority: i.priority,
            state: i.state,
            agent: i.agent.map(agent_name),
            created_ms: i.created_ms,
            enqueued_ms: i.enqueued_ms,
            queue_entered_ms: i.queue_entered_ms,
            relaxation_steps_applied: i.next_step,
            declined: i.declined.iter().map(|a| agent_name(*a)).collect(),
            offers_in_queue: i.offers_in_queue,
            preferred_agent: i.preferred.map(|(a, _)| agent_name(a)),
            preferred_until_ms: i.preferred.map(|(_, until)| until),
            answered_ms: i.answered_ms,
            wrap_up_code: i.wrap_up_code.clone(),
            history: i.history.to_vec(),
        })
    }

    /// Ids of every interaction the engine holds (live and finished), ascending.
    pub fn interaction_ids(&self) -> Vec<InteractionId> {
        let mut ids: Vec<InteractionId> = self.interactions.iter().map(|e| *e.key()).collect();
        ids.sort_unstable();
        ids
    }

    /// Forgets one finished interaction (completed or abandoned); its history lives on
    /// in the event log. Live interactions are refused.
    pub fn forget(&self, id: InteractionId) -> Result<()> {
        let ic = self
            .interaction_ref(id)
            .ok_or(EngineError::UnknownInteraction(id))?;
        let state = ic.lock().state;
        if !state.is_terminal() {
            return Err(EngineError::InvalidState {
                interaction: id,
                state,
                operation: "forget (it is still live)",
            });
        }
        if let Some((_, ic)) = self.interactions.remove(&id) {
            let last = ic.lock().last_activity_ms();
            self.unindex_finished(last, id);
        }
        self.forgot(1);
        Ok(())
    }

    /// The request interaction `id` was submitted with, shared with the engine (its
    /// first messages are in its history, not here).
    pub fn request_of(&self, id: InteractionId) -> Option<Arc<NewInteraction>> {
        self.interactions
            .get(&id)
            .map(|ic| ic.lock().request.clone())
    }

    /// Forgets every finished interaction (completed or abandoned); returns how many.
    pub fn purge_finished(&self) -> usize {
        let before = self.interactions.len();
        // Cleared first: work finishing meanwhile is either removed below or indexed.
        self.finished.lock().clear();
        self.interactions
            .retain(|_, ic| !ic.lock().state.is_terminal());
        self.forgot(before - self.interactions.len())
    }

    /// Drops the finished-work index's entry of `id`, which finished (last activity)
    /// at `at_ms` — cheap for recent work, the usual case (entries near the back).
    fn unindex_finished(&self, at_ms: TimeMs, id: InteractionId) {
        let mut index = self.finished.lock();
        let from = index.partition_point(|&(t, _)| t < at_ms);
        let found = (from..index.len())
            .take_while(|&k| index[k].0 == at_ms)
            .find(|&k| index[k].1 == id);
        if let Some(k) = found {
            index.remove(k);
        }
    }

    /// Forgets the finished interactions (completed or abandoned) whose last activity
    /// was before `cutoff_ms`; returns how many. Walks only the finished-work index's
    /// entries older than the cutoff, not every interaction held.
    pub fn purge_finished_before(&self, cutoff_ms: TimeMs) -> usize {
        // Taken out under the index's lock, checked without it (an interaction's lock
        // is taken before the index's when one finishes).
        let due: Vec<(TimeMs, InteractionId)> = {
            let mut index = self.finished.lock();
            let n = index.partition_point(|&(t, _)| t < cutoff_ms);
            let due = index.drain(..n).collect();
            // A peak's room is not kept for good.
            if index.capacity() > 4_096 && index.len() < index.capacity() / 4 {
                let keep = index.len() * 2;
                index.shrink_to(keep);
            }
            due
        };
        let mut purged = 0;
        for (_, id) in due {
            let mut active_after = None;
            let removed = self.interactions.remove_if(&id, |_, ic| {
                let i = ic.lock();
                if !i.state.is_terminal() {
                    return false; // active again: indexed anew when it finishes
                }
                match i.history.last().map(|h| h.at_ms()) {
                    // Active after it finished: kept until then. (Nothing adds to
                    // finished work's history today; this keeps the purge exact if
                    // something ever does.)
                    Some(last) if last >= cutoff_ms => {
                        active_after = Some(last);
                        false
                    }
                    _ => true,
                }
            });
            if removed.is_some() {
                purged += 1;
            } else if let Some(last) = active_after {
                self.finished_at(last, id);
            }
        }
        self.forgot(purged)
    }

    /// An agent's state.
    pub fn agent(&self, id: &str) -> Result<AgentSnapshot> {
        let catalog = self.catalog.load();
        let idx = *catalog
            .agent_by_id
            .get(id)
            .ok_or_else(|| EngineError::UnknownAgent(id.to_string()))?;
        let cell = catalog.agent(idx).expect("agent in catalog");
        let s = cell.state.lock();
        let status = match (&s.presence, s.work.is_empty()) {
            (Presence::Offline, _) => AgentStatus::Offline,
            (Presence::Away { .. }, _) => AgentStatus::Away,
            (Presence::Available, true) => AgentStatus::Idle,
            (Presence::Available, false) => {
                if s.work.iter().all(|w| w.phase == WorkPhase::WrapUp) {
                    AgentStatus::WrapUp
                } else {
                    AgentStatus::Busy
                }
            }
        };
        let mut queues: Vec<String> = s
            .memberships
            .iter()
            .filter(|m| {
                // Memberships may be newer than this catalog during a reconfiguration.
                catalog
                    .targets
                    .get(m.target as usize)
                    .is_some_and(|t| t.spec.level == 0)
            })
            .map(|m| catalog.queue(m.queue).id.to_string())
            .collect();
        queues.dedup();
        Ok(AgentSnapshot {
            id: id.to_string(),
            presence: s.presence.clone(),
            status,
            used_units: s.usage.used_units,
            total_units: s.profile.total_units,
            work: s
                .work
                .iter()
                .map(|w| WorkSnapshot {
                    interaction: w.interaction,
                    channel: catalog.channel_name(w.channel).to_string(),
                    units: w.units,
                    phase: phase_name(w.phase).to_string(),
                })
                .collect(),
            last_work_ended_ms: s.last_work_ended_ms,
            consecutive_misses: s.consecutive_misses,
            offers_received: s.offers_received,
            queues,
        })
    }

    /// A queue's waiting work in the order it will be served, as of `now_ms`.
    pub fn queue(&self, id: &str, now_ms: TimeMs) -> Result<QueueSnapshot> {
        let catalog = self.catalog.load();
        let idx = *catalog
            .queue_by_id
            .get(id)
            .ok_or_else(|| EngineError::UnknownQueue(id.to_string()))?;
        let queue = catalog.queue(idx);
        let mut entries: Vec<(std::cmp::Reverse<i128>, TimeMs, InteractionId, String)> = Vec::new();
        let mut seen = BTreeSet::new();
        for t in &queue.targets {
            let tc = catalog.target(*t);
            let ts = tc.state.lock();
            for lane in &ts.lanes {
                for key in lane.waiting.keys() {
                    if seen.insert(key.id) {
                        let effective = effective_priority(
                            key.order,
                            tc.spec.aging_millipoints_per_second,
                            now_ms,
                        );
                        entries.push((
                            std::cmp::Reverse(effective),
                            key.enqueued_ms,
                            key.id,
                            catalog.channel_name(lane.channel).to_string(),
                        ));
                    }
                }
            }
        }
        entries.sort();
        Ok(QueueSnapshot {
            id: id.to_string(),
            waiting_count: queue.counters.waiting.load(Ordering::Acquire),
            waiting: entries
                .into_iter()
                .map(
                    |(std::cmp::Reverse(e), enqueued_ms, interaction, channel)| WaitingEntry {
                        interaction,
                        channel,
                        effective_priority_millipoints: (e / 1000)
                            .clamp(i64::MIN as i128, i64::MAX as i128)
                            as i64,
                        effective_priority: e as f64 / 1e6,
                        enqueued_ms,
                    },
                )
                .collect(),
        })
    }

    /// Explains where an interaction stands: every agent of the center as a candidate
    /// for it, eligible ones ranked best first, the others with the reason they are out
    /// (skills, presence, capacity, already declined, waiting for a preferred agent).
    pub fn explain(&self, id: InteractionId, now_ms: TimeMs) -> Result<Explanation> {
        let ic = self
            .interaction_ref(id)
            .ok_or(EngineError::UnknownInteraction(id))?;
        let (state, queue_idx, level, channel, overflow, declined, preferred) = {
            let i = ic.lock();
            (
                i.state,
                i.queue,
                i.level,
                i.channel,
                i.overflow_targets.clone(),
                i.declined.clone(),
                i.preferred.filter(|(_, fallback)| now_ms < *fallback),
            )
        };
        // Loaded after reading the interaction, so it knows the interaction's queue.
        let catalog = self.catalog.load();
        Ok(self.explain_at(
            &catalog,
            Some(id),
            state,
            queue_idx,
            level,
            channel,
            &overflow,
            &declined,
            preferred,
        ))
    }

    /// Who would get a new interaction on `channel` arriving in `queue` now: every agent
    /// as a candidate, ranked or excluded with the reason, as [`Engine::explain`] does for
    /// an existing interaction.
    pub fn explain_next(&self, queue: &str, channel: &str, _now_ms: TimeMs) -> Result<Explanation> {
        let catalog = self.catalog.load();
        let queue_idx = *catalog
            .queue_by_id
            .get(queue)
            .ok_or_else(|| EngineError::UnknownQueue(queue.to_string()))?;
        let channel_idx = catalog
            .channel_by_name
            .get(channel)
            .copied()
            .filter(|c| !catalog.channels[*c as usize].removed)
            .ok_or_else(|| EngineError::UnknownChannel {
                channel: channel.to_string(),
                context: "explain_next".to_string(),
            })?;
        Ok(self.explain_at(
            &catalog,
            None,
            InteractionState::Queued,
            queue_idx,
            0,
            channel_idx,
            &[],
            &[],
            None,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn explain_at(
        &self,
        catalog: &Catalog,
        id: Option<InteractionId>,
        state: InteractionState,
        queue_idx: u32,
        level: u8,
        channel: u8,
        overflow: &[u32],
        declined: &[u32],
        preferred: Option<(u32, TimeMs)>,
    ) -> Explanation {
        let queue = catalog.queue(queue_idx);
        let tc = catalog.target(queue.targets[level as usize]);
        // The targets routing tries, in order: the queue at its level, then the overflow
        // queues reached by relaxation (only those taking the channel).
        let targets: Vec<(&Arc<TargetCell>, bool)> = std::iter::once(queue.targets[level as usize])
            .chain(overflow.iter().copied())
            .map(|t| catalog.target(t))
            .filter(|t| t.spec.channel_mask & (1u64 << channel) != 0)
            .map(|t| {
                let ts = t.state.lock();
                let others = ts
                    .lane_index(channel)
                    .is_some_and(|lane| others_exist(catalog, &ts, t.idx, lane, declined));
                (t, others)
            })
            .collect();
        let mut eligible = Vec::new();
        let mut excluded = Vec::new();
        for cell in catalog.agents.iter().flatten() {
            let s = cell.state.lock();
            let found = targets
                .iter()
                .enumerate()
                .find_map(|(n, (t, others))| membership_of(&s, t.idx).map(|m| (n, *t, *others, m)));
            let exclusion = match found {
                None => Some(skill_exclusion(catalog, &tc.spec, &s.skills)),
                Some(_) if s.profile.entry(channel).is_none() => Some(Exclusion::Capacity {
                    shortfall: CapacityShortfall::ChannelNotHandled,
                }),
                Some(_) if !s.is_available() => Some(Exclusion::Presence {
                    presence: s.presence.clone(),
                }),
                Some((_, _, others_exist, _)) => {
                    let holds_it = s.work.iter().any(|w| Some(w.interaction) == id);
                    match s.usage.fits(&s.profile, channel) {
                        Err(shortfall) if !holds_it => Some(Exclusion::Capacity { shortfall }),
                        _ if preferred.is_some_and(|(p, _)| p != cell.idx) => {
                            Some(Exclusion::WaitingForPreferredAgent {
                                preferred: catalog
                                    .agent(preferred.expect("checked").0)
                                    .map_or_else(String::new, |c| c.id.to_string()),
                            })
                        }
                        _ if declined.contains(&cell.idx) && others_exist => {
                            Some(Exclusion::AlreadyDeclined)
                        }
                        _ => None,
                    }
                }
            };
            match (exclusion, found) {
                (Some(e), _) => excluded.push(Candidate {
                    agent: cell.id.to_string(),
                    rank: None,
                    via_overflow_queue: None,
                    excluded: Some(e),
                }),
                (None, Some((position, t, _, m))) => {
                    // Explanations see the true rank, not a lazily refreshed index entry.
                    let rank = compute_rank(&t.spec, &m, &s, cell.idx);
                    let via = (position > 0).then(|| catalog.queue(t.spec.queue).id.to_string());
                    eligible.push((
                        (position, rank),
                        rank_words(&t.spec, &m, &s),
                        cell.id.to_string(),
                        via,
                    ));
                }
                (None, None) => unreachable!("an eligible agent is a member of a target"),
            }
        }
        eligible.sort();
        let winner = eligible.first().map(|(_, _, a, _)| a.clone());
        let summary = match &winner {
            Some(w) => format!(
                "{} eligible of {} agents; `{w}` ranks first under {:?} with {:?}{}",
                eligible.len(),
                eligible.len() + excluded.len(),
                tc.spec.policy,
                eligible[0].1,
                eligible[0]
                    .3
                    .as_ref()
                    .map_or_else(String::new, |q| format!(" (via overflow queue `{q}`)"))
            ),
            None => format!(
                "no eligible agent with free capacity among {} agents; the interaction waits",
                excluded.len()
            ),
        };
        let mut candidates: Vec<Candidate> = eligible
            .into_iter()
            .map(|(_, words, agent, via)| Candidate {
                agent,
                rank: Some(words),
                via_overflow_queue: via,
                excluded: None,
            })
            .collect();
        candidates.extend(excluded);
        Explanation {
            interaction: id,
            state,
            queue: queue.id.to_string(),
            policy: tc.spec.policy,
            rank_meaning: rank_meaning(tc.spec.policy).to_string(),
            candidates,
            winner,
            summary,
        }
    }

    /// Checks every invariant of the engine against its whole state and returns the
    /// violations found. Meaningful when no operation is in flight.
    pub fn check_invariants(&self, now_ms: TimeMs) -> Vec<String> {
        let catalog = self.catalog.load_full();
        let mut violations = Vec::new();
        let interactions: HashMap<InteractionId, InteractionRef> = self
            .interactions
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        check_agents(&catalog, &interactions, &mut violations);
        check_interactions(&catalog, &interactions, &mut violations);
        check_targets(&catalog, &interactions, now_ms, &mut violations);
        self.check_finished_index(&interactions, &mut violations);
        violations
    }

    /// Every finished interaction has an entry in the finished-work index no later than
    /// its last activity (else a purge would never forget it).
    fn check_finished_index(
        &self,
        interactions: &HashMap<InteractionId, InteractionRef>,
        violations: &mut Vec<String>,
    ) {
        let mut earliest: HashMap<InteractionId, TimeMs> = HashMap::new();
        let mut previous = 0;
        for &(at_ms, id) in self.finished.lock().iter() {
            if at_ms < previous {
                violations.push(format!(
                    "finished-work index out of order: {id} at {at_ms} ms after an entry at {previous} ms"
                ));
            }
            previous = at_ms;
            earliest.entry(id).or_insert(at_ms);
        }
        let mut ids: Vec<&InteractionId> = interactions.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let i = interactions[id].lock();
            if !i.state.is_terminal() {
                continue;
            }
            let last = i.last_activity_ms();
            match earliest.get(id) {
                Some(at_ms) if *at_ms <= last => {}
                Some(at_ms) => violations.push(format!(
                    "interaction {id}: finished, indexed at {at_ms} ms, after its last activity at {last} ms"
                )),
                None => violations.push(format!(
                    "interaction {id}: finished but missing from the finished-work index (never purged)"
                )),
            }
        }
    }
}

fn skill_exclusion(catalog: &Catalog, spec: &TargetSpec, skills: &[(u16, u8)]) -> Exclusion {
    for (skill, min) in &spec.required {
        let name = catalog.skill_names[*skill as usize].clone();
        match skills.iter().find(|(s, _)| s == skill) {
            None => return Exclusion::MissingSkill { skill: name },
            Some((_, has)) if has < min => {
                return Exclusion::ProficiencyTooLow {
                    skill: name,
                    has: *has,
                    needs: *min,
                };
            }
            _ => {}
        }
    }
    // Holds the skills but handles none of the queue's channels.
    Exclusion::Capacity {
        shortfall: CapacityShortfall::ChannelNotHandled,
    }
}

fn check_agents(
    catalog: &Catalog,
    interactions: &HashMap<InteractionId, InteractionRef>,
    violations: &mut Vec<String>,
) {
    for cell in catalog.agents.iter().flatten() {
        // Copy the agent's state, then look at its interactions with the agent unlocked:
        // the lock order is interaction → agent, never the reverse.
        let (work, profile, actual_usage) = {
            let s = cell.state.lock();
            (s.work.clone(), s.profile.clone(), s.usage.clone())
        };
        let mut usage = Usage::default();
        for (n, w) in work.iter().enumerate() {
            // Blocking: work taken later must not be blocked by work taken earlier.
            for earlier in &work[..n] {
                for (blocking, mask) in &profile.blocks {
                    if earlier.channel == *blocking && mask & (1u64 << w.channel) != 0 {
                        violations.push(format!(
                            "agent {} took interaction {} on a channel blocked by work in hand on {}",
                            cell.id, w.interaction, catalog.channel_name(earlier.channel)
                        ));
                    }
                }
            }
            usage.reserve(w.channel, w.units);
            let Some(ic) = interactions.get(&w.interaction) else {
                violations.push(format!(
                    "agent {} holds unknown interaction {}",
                    cell.id, w.interaction
                ));
                continue;
            };
            let i = ic.lock();
            let expected = match w.phase {
                WorkPhase::Offered => InteractionState::Offered,
                WorkPhase::Assigned => InteractionState::Assigned,
                WorkPhase::WrapUp => InteractionState::WrapUp,
            };
            if i.state != expected || i.agent != Some(cell.idx) {
                violations.push(format!(
                    "agent {} holds interaction {} as {:?} but it is {:?} with agent {:?}",
                    cell.id, w.interaction, w.phase, i.state, i.agent
                ));
            }
        }
        if usage != actual_usage {
            violations.push(format!(
                "agent {}: usage counters disagree with work in hand",
                cell.id
            ));
        }
        if actual_usage.used_units > profile.total_units {
            violations.push(format!(
                "agent {} uses {} units of {}",
                cell.id, actual_usage.used_units, profile.total_units
            ));
        }
        for e in &profile.entries {
            if actual_usage.counts[e.channel as usize] > e.max_concurrent {
                violations.push(format!(
                    "agent {} holds {} on {} (max {})",
                    cell.id,
                    actual_usage.counts[e.channel as usize],
                    catalog.channel_name(e.channel),
                    e.max_concurrent
                ));
            }
        }
    }
}

fn check_interactions(
    catalog: &Catalog,
    interactions: &HashMap<InteractionId, InteractionRef>,
    violations: &mut Vec<String>,
) {
    let mut counted: HashMap<u32, u32> = HashMap::new();
    for (id, ic) in interactions {
        let i = ic.lock();
        if i.counted_waiting != (i.state == InteractionState::Queued) {
            violations.push(format!(
                "interaction {id} is {:?} but counted_waiting={}",
                i.state, i.counted_waiting
            ));
        }
        if i.counted_waiting {
            *counted.entry(i.queue).or_default() += 1;
        }
        match i.state {
            InteractionState::Offered | InteractionState::Assigned | InteractionState::WrapUp => {
                let Some(agent) = i.agent.and_then(|a| catalog.agent(a)) else {
                    violations.push(format!(
                        "interaction {id} is {:?} without a live agent",
                        i.state
                    ));
                    continue;
                };
                let s = agent.state.lock();
                let holders = s.work.iter().filter(|w| w.interaction == *id).count();
                if holders != 1 {
                    violations.push(format!(
                        "interaction {id} appears {holders} times in agent {}'s work",
                        agent.id
                    ));
                }
                // Eligibility is a property of the offer when it was made: a later
                // configuration change may legitimately leave work with an agent who
                // would not qualify now.
                if !i.directed && i.offered_generation == catalog.generation {
                    let queue = catalog.queue(i.queue);
                    let mut allowed: Vec<u32> = queue.targets.clone();
                    allowed.extend(&i.overflow_targets);
                    if !s.memberships.iter().any(|m| allowed.contains(&m.target)) {
                        violations.push(format!(
                            "interaction {id} is with agent {} who is not eligible for queue {}",
                            agent.id, queue.id
                        ));
                    }
                }
                if !i.waiting_in.is_empty() {
                    violations.push(format!(
                        "interaction {id} is {:?} but still waits in {:?}",
                        i.state, i.waiting_in
                    ));
                }
            }
            InteractionState::Queued => {
                let queue = catalog.queue(i.queue);
                let mut expected: Vec<u32> = std::iter::once(queue.targets[i.level as usize])
                    .chain(i.overflow_targets.iter().copied())
                    .filter(|t| catalog.target(*t).spec.channel_mask & (1u64 << i.channel) != 0)
                    .collect();
                expected.sort_unstable();
                let mut actual = i.waiting_in.clone();
                actual.sort_unstable();
                if expected != actual {
                    violations.push(format!(
                        "interaction {id} waits in targets {actual:?}, expected {expected:?}"
                    ));
                }
            }
            _ => {}
        }
    }
    for queue in catalog.queues.iter().flatten() {
        let counter = queue.counters.waiting.load(Ordering::Acquire);
        let actual = counted.get(&queue.idx).copied().unwrap_or(0);
        if counter != actual {
            violations.push(format!(
                "queue {} counts {counter} waiting, {actual} are",
                queue.id
            ));
        }
    }
}

fn check_targets(
    catalog: &Catalog,
    interactions: &HashMap<InteractionId, InteractionRef>,
    now_ms: TimeMs,
    violations: &mut Vec<String>,
) {
    for tc in catalog.targets.iter() {
        let ts = tc.state.lock();
        if ts.retired {
            continue;
        }
        let mut available = vec![0u32; ts.lanes.len()];
        let mut listed = 0;
        for cell in catalog.agents.iter().flatten() {
            let s = cell.state.lock();
            let Some(position) = membership_position(&s, tc.idx) else {
                continue;
            };
            let m = &s.memberships[position];
            let Some(member) = s.index[position] else {
                violations.push(format!(
                    "target {}: agent {} is a member but was never indexed",
                    tc.idx, cell.id
                ));
                continue;
            };
            let fit = if s.is_available() {
                s.usage.fit_mask(&s.profile, tc.spec.channel_mask)
            } else {
                0
            };
            // Entries may be too good (refreshed lazily after an offer), never too bad,
            // and every lane the agent fits now must list it.
            if fit & !member.lanes_mask != 0
                || compute_rank(&tc.spec, m, &s, cell.idx) < member.rank
            {
                violations.push(format!(
                    "target {}: index misses or under-ranks agent {} (fits lanes {fit:#b}, listed in {:#b})",
                    tc.idx, cell.id, member.lanes_mask
                ));
            }
            listed += member.lanes_mask.count_ones() as usize;
            for lane in &ts.lanes {
                let in_lane = lane.agents.contains(&member.rank);
                if in_lane != (member.lanes_mask & (1u64 << lane.channel) != 0) {
                    violations.push(format!(
                        "target {}: lane index and member record disagree for agent {}",
                        tc.idx, cell.id
                    ));
                }
            }
            let handles = if s.is_available() {
                s.profile.handled_mask & tc.spec.channel_mask
            } else {
                0
            };
            if member.available_mask != handles {
                violations.push(format!(
                    "target {}: availability of agent {} is stale",
                    tc.idx, cell.id
                ));
            }
            for (n, lane) in ts.lanes.iter().enumerate() {
                if member.available_mask & (1u64 << lane.channel) != 0 {
                    available[n] += 1;
                }
            }
        }
        for (n, lane) in ts.lanes.iter().enumerate() {
            if lane.available_members != available[n] {
                violations.push(format!(
                    "target {}: available-member count off in a lane",
                    tc.idx
                ));
            }
        }
        let entries: usize = ts.lanes.iter().map(|l| l.agents.len()).sum();
        if entries != listed {
            violations.push(format!(
                "target {}: {entries} lane entries for {listed} member records",
                tc.idx
            ));
        }
        for (lane_idx, lane) in ts.lanes.iter().enumerate() {
            for (key, meta) in &lane.waiting {
                let Some(ic) = interactions.get(&key.id) else {
                    violations.push(format!(
                        "target {} lane waits for unknown interaction {}",
                        tc.idx, key.id
                    ));
                    continue;
                };
                {
                    let i = ic.lock();
                    if i.state != InteractionState::Queued
                        || i.epoch != meta.epoch
                        || !i.waiting_in.contains(&tc.idx)
                    {
                        violations.push(format!(
                            "target {} holds a stale entry for interaction {}",
                            tc.idx, key.id
                        ));
                        continue;
                    }
                }
                // Work-conserving: no free, eligible agent while this waits.
                for rank in &lane.agents {
                    // At the fallback instant itself the fallback timer may not have run
                    // yet (timers due at the same instant run one after another).
                    let preferred_block = meta
                        .preferred
                        .is_some_and(|(p, fallback)| p != rank.agent() && now_ms <= fallback);
                    let declined_block = meta.declined.contains(&rank.agent())
                        && others_exist(catalog, &ts, tc.idx, lane_idx, &meta.declined);
                    if preferred_block || declined_block {
                        continue;
                    }
                    let cell = catalog.agent(rank.agent()).expect("indexed agent exists");
                    let s = cell.state.lock();
                    if s.is_available() && s.usage.fits(&s.profile, lane.channel).is_ok() {
                        violations.push(format!(
                            "interaction {} waits in queue {} while agent {} is available with capacity for {}",
                            key.id,
                            catalog.queue(tc.spec.queue).id,
                            cell.id,
                            catalog.channel_name(lane.channel)
                        ));
                    }
                }
            }
        }
    }
}
