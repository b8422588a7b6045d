//! Runtime state, one lock per agent, per routing target and per interaction.
//!
//! There is no global lock. Each agent, each *routing target* (a queue at one relaxation
//! level) and each live interaction has its own mutex, always taken in the order
//! **target → interaction → agent**, and never two targets at once; two agents only in a
//! transfer to a named agent, and then in index order.
//! The agent lock is the authority on capacity: a reservation happens only under it, so
//! capacity can never be exceeded however many threads route at once. A target's agent
//! index is a *hint* kept fresh by re-indexing after every change of an agent; a stale
//! entry is re-checked under the agent lock before anything is reserved.

use crate::InteractionId;
use crate::capacity::{ChannelIdx, CompiledProfile, Usage};
use crate::model::{
    AssignmentPolicy, InteractionState, MAX_CHANNELS, NewInteraction, Presence, TimeMs,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An agent's position in a target's index: smaller ranks first. The policy's rank words
/// (see `engine::rank_words`) are packed most significant first into the high 96 bits,
/// each saturated to its width, and the agent index fills the low 32 bits, so the order
/// is total and deterministic and a comparison is one 128-bit compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Rank(pub u128);

impl Rank {
    /// Packs `(value, bit width)` fields, most significant first (96 bits at most).
    pub fn pack(fields: &[(u64, u32)], agent: u32) -> Rank {
        let mut key = 0u128;
        let mut used = 0;
        for &(value, width) in fields {
            let max = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            key = (key << width) | u128::from(value.min(max));
            used += width;
        }
        debug_assert!(used <= 96, "rank fields exceed 96 bits");
        Rank((key << (96 - used) << 32) | u128::from(agent))
    }

    pub fn agent(self) -> u32 {
        self.0 as u32
    }
}

/// An agent's standing in one target, fixed by configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Membership {
    pub target: u32,
    pub queue: u32,
    /// Proficiency sum over the target's required skills and (while preferred) optional
    /// skills.
    pub proficiency_sum: u32,
    /// How many of the target's optional skills the agent holds at the minimum.
    pub optional_matched: u16,
}

/// Lifecycle of one piece of work in an agent's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkPhase {
    Offered,
    Assigned,
    WrapUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Work {
    pub interaction: InteractionId,
    pub channel: ChannelIdx,
    pub units: u16,
    pub phase: WorkPhase,
}

pub(crate) struct AgentState {
    pub deleted: bool,
    pub presence: Presence,
    pub profile: Arc<CompiledProfile>,
    pub skills: Vec<(u16, u8)>,
    pub memberships: Arc<[Membership]>,
    /// This agent's entry in each membership's target index (same order as
    /// `memberships`), written only under that target's lock.
    pub index: Vec<Option<Member>>,
    pub usage: Usage,
    /// Work in hand in offer order (offers, assigned, wrap-up).
    pub work: Vec<Work>,
    pub last_work_ended_ms: TimeMs,
    pub consecutive_misses: u32,
    /// Per queue: the round-robin stamp of the last offer from it.
    pub round_robin: Vec<(u32, u64)>,
    pub offers_received: u64,
}

impl AgentState {
    pub fn is_available(&self) -> bool {
        !self.deleted && self.presence == Presence::Available
    }

    pub fn round_robin_stamp(&self, queue: u32) -> u64 {
        self.round_robin
            .iter()
            .find(|(q, _)| *q == queue)
            .map_or(0, |(_, s)| *s)
    }

    pub fn stamp_round_robin(&mut self, queue: u32, stamp: u64) {
        match self.round_robin.iter_mut().find(|(q, _)| *q == queue) {
            Some(entry) => entry.1 = stamp,
            None => self.round_robin.push((queue, stamp)),
        }
    }

    pub fn work_index(&self, interaction: InteractionId) -> Option<usize> {
        self.work.iter().position(|w| w.interaction == interaction)
    }

    /// Releases the capacity of one piece of work and forgets it.
    pub fn release(&mut self, interaction: InteractionId) -> Option<Work> {
        let index = self.work_index(interaction)?;
        let work = self.work.remove(index);
        self.usage.release(work.channel, work.units);
        Some(work)
    }
}

pub(crate) struct AgentCell {
    pub idx: u32,
    pub id: Arc<str>,
    pub state: Mutex<AgentState>,
}

/// A queue at one relaxation level, as routing sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TargetSpec {
    pub queue: u32,
    pub level: u8,
    pub required: Vec<(u16, u8)>,
    pub optional: Vec<(u16, u8)>,
    pub prefer_optional: bool,
    pub policy: AssignmentPolicy,
    pub channel_mask: u64,
    pub aging_millipoints_per_second: u32,
}

impl TargetSpec {
    /// Whether an agent with these skills qualifies, and its membership if so.
    pub fn membership(&self, target: u32, skills: &[(u16, u8)]) -> Option<Membership> {
        let level_of = |skill: u16| {
            skills
                .binary_search_by_key(&skill, |(s, _)| *s)
                .ok()
                .map(|i| skills[i].1)
        };
        let mut sum = 0u32;
        for (skill, min) in &self.required {
            let level = level_of(*skill)?;
            if level < *min {
                return None;
            }
            sum += u32::from(level);
        }
        let mut matched = 0u16;
        for (skill, min) in &self.optional {
            if let Some(level) = level_of(*skill).filter(|l| l >= min) {
                matched += 1;
                sum += u32::from(level);
            }
        }
        Some(Membership {
            target,
            queue: self.queue,
            proficiency_sum: sum,
            optional_matched: matched,
        })
    }
}

/// One channel of a target: the agents who could take work on it now, ordered by rank,
/// and the interactions waiting on it, ordered by effective priority then age then id.
pub(crate) struct Lane {
    pub channel: ChannelIdx,
    pub agents: BTreeSet<Rank>,
    pub waiting: BTreeMap<WaitKey, WaitMeta>,
    /// Members who are available and handle this channel (busy or not): the "others"
    /// that keep an interaction away from an agent who declined it.
    pub available_members: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    pub rank: Rank,
    /// Lanes (by channel bit) whose index holds this agent.
    pub lanes_mask: u64,
    /// Lanes whose channel the agent handles while it is available (0 when not).
    pub available_mask: u64,
}

pub(crate) struct TargetState {
    pub retired: bool,
    pub lanes: Vec<Lane>,
    pub lane_of: [u8; MAX_CHANNELS],
}

impl TargetState {
    pub fn lane_index(&self, channel: ChannelIdx) -> Option<usize> {
        match self.lane_of[channel as usize] {
            u8::MAX => None,
            lane => Some(lane as usize),
        }
    }
}

pub(crate) struct TargetCell {
    pub idx: u32,
    pub spec: TargetSpec,
    pub state: Mutex<TargetState>,
}

impl TargetCell {
    pub fn new(idx: u32, spec: TargetSpec) -> Self {
        let mut lanes = Vec::new();
        let mut lane_of = [u8::MAX; MAX_CHANNELS];
        let mut rest = spec.channel_mask;
        while rest != 0 {
            let channel = rest.trailing_zeros() as ChannelIdx;
            rest &= rest - 1;
            lane_of[channel as usize] = lanes.len() as u8;
            lanes.push(Lane {
                channel,
                agents: BTreeSet::new(),
                waiting: BTreeMap::new(),
                available_members: 0,
            });
        }
        TargetCell {
            idx,
            spec,
            state: Mutex::new(TargetState {
                retired: false,
                lanes,
                lane_of,
            }),
        }
    }
}

/// Order of waiting work within a target: `order` ascending is effective priority
/// descending (see `wait_order`), then original enqueue time, then id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WaitKey {
    pub order: i128,
    pub enqueued_ms: TimeMs,
    pub id: InteractionId,
}

/// `base_priority + aging × waited` is `static + aging × now`, so sorting by
/// `-(base × 1000 × 1000 − aging × enqueued_ms)` orders by effective priority at every
/// instant without re-sorting. Units: milli-points × ms.
impl WaitKey {
    /// An interaction's key in a lane of a target with this aging rate.
    pub fn of(i: &Interaction, aging_millipoints_per_second: u32) -> WaitKey {
        WaitKey {
            order: wait_order(i.priority, aging_millipoints_per_second, i.enqueued_ms),
            enqueued_ms: i.enqueued_ms,
            id: i.id,
        }
    }
}

impl WaitMeta {
    /// What a lane entry carries for an interaction queued at `epoch`.
    pub fn of(i: &Interaction, epoch: u64) -> WaitMeta {
        WaitMeta {
            epoch,
            preferred: i.preferred,
            declined: i.declined.clone(),
        }
    }
}

pub(crate) fn wait_order(
    priority: i32,
    aging_millipoints_per_second: u32,
    enqueued_ms: u64,
) -> i128 {
    let static_part = i128::from(priority) * 1_000_000
        - i128::from(aging_millipoints_per_second) * i128::from(enqueued_ms);
    -static_part
}

/// Effective priority × 10⁶ at `now_ms`, for comparing heads of different targets.
pub(crate) fn effective_priority(
    order: i128,
    aging_millipoints_per_second: u32,
    now_ms: u64,
) -> i128 {
    -order + i128::from(aging_millipoints_per_second) * i128::from(now_ms)
}

#[derive(Clone, Debug)]
pub(crate) struct WaitMeta {
    pub epoch: u64,
    pub preferred: Option<(u32, TimeMs)>,
    pub declined: Vec<u32>,
}

/// One step of an interaction's routing history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// Created and routed to a queue.
    Created {
        /// When.
        at_ms: TimeMs,
        /// The queue.
        queue: Arc<str>,
        /// The routing rule that matched, if any.
        rule: Option<Arc<str>>,
    },
    /// Offered to an agent.
    Offered {
        /// When.
        at_ms: TimeMs,
        /// The agent.
        agent: Arc<str>,
        /// The agent's rank words under the queue's policy when it won (see
        /// `docs/ROUTING.md`); absent for a transfer to a named agent.
        rank: Option<[u64; 4]>,
    },
    /// Accepted.
    Accepted {
        /// When.
        at_ms: TimeMs,
        /// The agent.
        agent: Arc<str>,
    },
    /// Rejected, timed out or rescinded.
    OfferEnded {
        /// When.
        at_ms: TimeMs,
        /// The agent.
        agent: Arc<str>,
        /// `rejected`, `timed_out`, `agent_offline`, `customer_left`.
        how: Arc<str>,
    },
    /// A relaxation step applied.
    Relaxed {
        /// When.
        at_ms: TimeMs,
        /// Step number (0-based).
        step: u16,
    },
    /// The preferred agent's time ran out.
    PreferredFallback {
        /// When.
        at_ms: TimeMs,
    },
    /// Moved to a queue or agent.
    Transferred {
        /// When.
        at_ms: TimeMs,
        /// From this agent.
        from_agent: Option<Arc<str>>,
        /// `queue:<id>` or `agent:<id>`.
        to: Arc<str>,
    },
    /// Completed by an agent.
    Completed {
        /// When.
        at_ms: TimeMs,
        /// The agent.
        agent: Arc<str>,
        /// Wrap-up code.
        wrap_up_code: Option<String>,
    },
    /// Wrap-up over, capacity freed.
    WrapUpEnded {
        /// When.
        at_ms: TimeMs,
    },
    /// The customer left.
    Abandoned {
        /// When.
        at_ms: TimeMs,
    },
    /// `max_offers` reached.
    OfferLimitReached {
        /// When.
        at_ms: TimeMs,
        /// Offers made.
        offers: u32,
    },
    /// A message of the conversation (customer, agent, virtual agent or system).
    Message {
        /// When it was logged.
        at_ms: TimeMs,
        /// The message.
        message: crate::model::Message,
    },
}

impl HistoryEntry {
    /// When it happened.
    pub fn at_ms(&self) -> TimeMs {
        match self {
            HistoryEntry::Created { at_ms, .. }
            | HistoryEntry::Offered { at_ms, .. }
            | HistoryEntry::Accepted { at_ms, .. }
            | HistoryEntry::OfferEnded { at_ms, .. }
            | HistoryEntry::Relaxed { at_ms, .. }
            | HistoryEntry::PreferredFallback { at_ms }
            | HistoryEntry::Transferred { at_ms, .. }
            | HistoryEntry::Completed { at_ms, .. }
            | HistoryEntry::WrapUpEnded { at_ms }
            | HistoryEntry::Abandoned { at_ms }
            | HistoryEntry::OfferLimitReached { at_ms, .. }
            | HistoryEntry::Message { at_ms, .. } => *at_ms,
        }
    }
}

pub(crate) struct Interaction {
    pub id: InteractionId,
    pub channel: ChannelIdx,
    /// Shared with snapshot images (never changed after submit).
    pub request: Arc<NewInteraction>,
    pub queue: u32,
    pub priority: i32,
    pub created_ms: TimeMs,
    /// Original enqueue time: the age used for ordering, kept across transfers,
    /// relaxation and re-offers.
    pub enqueued_ms: TimeMs,
    /// When it entered its current queue (relaxation steps count from here).
    pub queue_entered_ms: TimeMs,
    pub state: InteractionState,
    pub level: u8,
    pub next_step: u16,
    pub overflow_targets: Vec<u32>,
    pub waiting_in: Vec<u32>,
    /// Counted in its queue's waiting total.
    pub counted_waiting: bool,
    pub epoch: u64,
    pub preferred: Option<(u32, TimeMs)>,
    pub declined: Vec<u32>,
    pub offers_in_queue: u32,
    pub offer_seq: u32,
    pub agent: Option<u32>,
    /// The current offer was a transfer to a named agent (skills not required).
    pub directed: bool,
    /// Catalog generation the current offer was made under.
    pub offered_generation: u64,
    pub offer_deadline_ms: TimeMs,
    pub answered_ms: Option<TimeMs>,
    pub wrap_up_until_ms: Option<TimeMs>,
    pub wrap_up_code: Option<String>,
    /// Shared with snapshot images until the next entry (copy on write: see
    /// [`Interaction::record`]).
    pub history: Arc<Vec<HistoryEntry>>,
}

impl Interaction {
    /// Appends to the history (a snapshot image still holding the old one keeps it).
    pub fn record(&mut self, entry: HistoryEntry) {
        Arc::make_mut(&mut self.history).push(entry);
    }

    /// When its last history entry was written (0 with none).
    pub fn last_activity_ms(&self) -> TimeMs {
        self.history.last().map_or(0, |h| h.at_ms())
    }
}

pub(crate) type InteractionRef = Arc<Mutex<Interaction>>;

#[cfg(test)]
mod tests {
    use super::Rank;

    #[test]
    fn packed_ranks_order_like_their_fields_then_agent() {
        let r = |a, b, c, agent| Rank::pack(&[(a, 16), (b, 16), (c, 48)], agent);
        assert!(
            r(0, 1, 500, 9) < r(0, 2, 0, 1),
            "second field dominates the third"
        );
        assert!(
            r(0, 1, 5, 9) < r(0, 1, 6, 1),
            "third field dominates the agent"
        );
        assert!(r(0, 1, 5, 1) < r(0, 1, 5, 2), "agent breaks ties");
        assert!(
            r(1, 0, 0, 0) > r(0, u64::MAX, u64::MAX, u32::MAX),
            "saturation keeps order"
        );
        assert_eq!(r(3, 4, 5, 77).agent(), 77);
        let rr = |stamp, agent| Rank::pack(&[(0, 16), (stamp, 64)], agent);
        assert!(rr(u64::MAX - 1, 0) < rr(u64::MAX, 0));
    }
}
