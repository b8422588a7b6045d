//! The dispatcher: every routing operation of the engine.
//!
//! Two directions, both event-driven:
//! * **work arrives** (submit, re-queue after a reject, transfer, relaxation): the target's
//!   agent index for the interaction's channel is walked from the best rank; the first
//!   agent that is available and still fits (checked under its own lock) gets the offer
//!   with its capacity reserved. Nobody fits: the interaction joins the target's waiting
//!   lane, ordered by effective priority, original enqueue time, id.
//! * **capacity frees** (accept is not one; wrap-up end, reject, abandon, transfer away,
//!   presence → available): the agent is re-indexed, then pulls the best head across
//!   every lane of every target it is a member of, for the channels it fits now, until it
//!   is full or nothing waits.
//!
//! The cost of a decision depends on the agent's own queues and on a walk that stops at
//! the first fitting agent, never on the number of agents in the center.

use crate::InteractionId;
use crate::capacity::ChannelIdx;
use crate::catalog::{Catalog, QueueRt, compile};
use crate::cells::*;
use crate::error::{EngineError, Result};
use crate::events::{Event, RescindReason, Timer, TransferTarget};
use crate::model::*;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The routing engine. All methods take `&self` and may be called from many threads at
/// once; driven from one thread with the same inputs it makes the same decisions.
pub struct Engine {
    pub(crate) catalog: ArcSwap<Catalog>,
    /// Serialises configuration changes only; routing never takes it.
    admin: Mutex<()>,
    pub(crate) interactions: DashMap<InteractionId, InteractionRef, rustc_hash::FxBuildHasher>,
    pub(crate) next_interaction: AtomicU64,
    /// Which engine this is in the process (see [`Engine::forget_epoch`]).
    pub(crate) instance: u64,
    /// How many times this engine has forgotten interactions.
    pub(crate) forgets: AtomicU64,
    /// Finished interactions by when they finished, for purging old ones without
    /// walking every interaction held (the purge runs under the log's sequencer). Each
    /// finished interaction has an entry no later than its last history entry; an
    /// entry may be stale (forgotten since, or active again after it finished) and is
    /// checked against the interaction when it comes up. Ordered by time: work
    /// finishes in clock order, so an entry is pushed at the back (no allocation once
    /// the queue has grown; a clock stepping back inserts in place).
    pub(crate) finished: Mutex<std::collections::VecDeque<(TimeMs, InteractionId)>>,
}

/// Numbers each engine built in this process (see [`Engine::forget_epoch`]).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// Who routed an offer, for the history.
#[derive(Clone, Copy)]
pub(crate) enum OfferReason {
    Policy([u64; 4]),
    Transfer,
}

/// The key parts of an interaction's waiting entries; fixed for its life.
#[derive(Clone, Copy)]
struct WaitingRef {
    id: InteractionId,
    /// Epoch of the entries to remove.
    epoch: u64,
    channel: ChannelIdx,
    priority: i32,
    enqueued_ms: TimeMs,
}

enum Claim {
    Offered,
    Retry,
    AgentDone,
}

impl Engine {
    /// Notes that `interaction` finished at `at_ms` (see [`Engine::finished`]).
    pub(crate) fn finished_at(&self, at_ms: TimeMs, interaction: InteractionId) {
        let mut index = self.finished.lock();
        match index.back() {
            Some(&(last, _)) if last > at_ms => {
                let at = index.partition_point(|&(t, _)| t <= at_ms);
                index.insert(at, (at_ms, interaction));
            }
            _ => index.push_back((at_ms, interaction)),
        }
    }

    /// Validates `config` and builds an engine. Agents start offline.
    pub fn new(config: CenterConfig) -> Result<Engine> {
        Engine::with_capacity(config, 0)
    }

    /// [`Engine::new`] with room for `interactions` interactions before its map grows
    /// (a restore knows how many it brings).
    pub(crate) fn with_capacity(config: CenterConfig, interactions: usize) -> Result<Engine> {
        let compiled = compile(config, None)?;
        let node = u64::from(compiled.catalog.settings.node_id) << 48;
        let engine = Engine {
            catalog: ArcSwap::from_pointee(compiled.catalog),
            admin: Mutex::new(()),
            interactions: DashMap::with_capacity_and_hasher(
                interactions,
                rustc_hash::FxBuildHasher,
            ),
            next_interaction: AtomicU64::new(node + 1),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            forgets: AtomicU64::new(0),
            finished: Mutex::new(std::collections::VecDeque::new()),
        };
        let catalog = engine.catalog.load();
        for update in compiled.agent_updates {
            let cell = catalog
                .agent(update.idx)
                .expect("agent just created")
                .clone();
            let mut s = cell.state.lock();
            s.index = vec![None; update.memberships.len()];
            s.memberships = update.memberships;
            drop(s);
            engine.reindex(&cell);
        }
        Ok(engine)
    }

    /// The configuration in force.
    pub fn config(&self) -> CenterConfig {
        self.catalog.load().config.clone()
    }

    /// Reads the configuration in force without copying it (a copy of a large center's
    /// configuration, its agents and their skills, is not free).
    pub fn with_config<R>(&self, f: impl FnOnce(&CenterConfig) -> R) -> R {
        f(&self.catalog.load().config)
    }

    /// Replaces the configuration. Validation happens first: on error nothing changes.
    /// Agents, queues and interactions that the change does not touch keep their state;
    /// interactions waiting in a queue whose routing changed are re-routed with their
    /// original age. Removing a queue that still holds live work, an agent with work in
    /// hand, or a channel in use is refused.
    pub fn reconfigure(
        &self,
        config: CenterConfig,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let _admin = self.admin.lock();
        let old = self.catalog.load_full();
        let compiled = compile(config, Some(&old))?;
        for q in &compiled.removed_queues {
            let id = &old.queue(*q).id;
            if let Some(live) = self.interactions.iter().find(|e| {
                let i = e.value().lock();
                i.queue == *q && !i.state.is_terminal()
            }) {
                return Err(EngineError::InUse {
                    what: format!("queue `{id}`"),
                    by: format!("interaction {}", live.key()),
                });
            }
        }
        for a in &compiled.removed_agents {
            let cell = old.agent(*a).expect("removed agent existed");
            if !cell.state.lock().work.is_empty() {
                return Err(EngineError::InUse {
                    what: format!("agent `{}`", cell.id),
                    by: "work in hand".to_string(),
                });
            }
        }
        for (idx, channel) in compiled.catalog.channels.iter().enumerate() {
            if channel.removed
                && !old.channels[idx].removed
                && let Some(live) = self.interactions.iter().find(|e| {
                    let i = e.value().lock();
                    i.channel as usize == idx && !i.state.is_terminal()
                })
            {
                return Err(EngineError::InUse {
                    what: format!("channel `{}`", channel.name),
                    by: format!("interaction {}", live.key()),
                });
            }
        }

        out.push(Event::Configured {
            changes: crate::journal::config_changes(&old.config, &compiled.catalog.config),
        });
        self.catalog.store(Arc::new(compiled.catalog));
        let catalog = self.catalog.load_full();
        // Removed agents: out of every index.
        for a in &compiled.removed_agents {
            let cell = old.agent(*a).expect("removed agent existed").clone();
            let (memberships, index) = {
                let mut s = cell.state.lock();
                s.deleted = true;
                (
                    std::mem::replace(&mut s.memberships, Arc::from(Vec::new())),
                    std::mem::take(&mut s.index),
                )
            };
            for (m, record) in memberships.iter().zip(index) {
                remove_member(&mut catalog.target(m.target).state.lock(), record);
            }
        }
        // Retire targets that no longer exist and collect what waited in them.
        let mut to_reroute = Vec::new();
        for t in &compiled.retired_targets {
            let mut ts = catalog.target(*t).state.lock();
            ts.retired = true;
            for lane in &mut ts.lanes {
                to_reroute.extend(std::mem::take(&mut lane.waiting).into_keys().map(|k| k.id));
                lane.agents.clear();
            }
            for lane in &mut ts.lanes {
                lane.available_members = 0;
            }
        }
        // Agents: new profile, skills and memberships, then re-index.
        for update in compiled.agent_updates {
            let cell = catalog.agent(update.idx).expect("agent in catalog").clone();
            let dropped: Vec<(u32, Option<Member>)> = {
                let mut s = cell.state.lock();
                let old_memberships = s.memberships.clone();
                let mut old_index = std::mem::take(&mut s.index);
                // Kept targets keep their index records; dropped ones are removed below.
                s.index = update
                    .memberships
                    .iter()
                    .map(|m| {
                        old_memberships
                            .iter()
                            .position(|o| o.target == m.target)
                            .and_then(|p| old_index[p].take())
                    })
                    .collect();
                let dropped = old_memberships
                    .iter()
                    .zip(old_index)
                    .filter(|(m, _)| !update.memberships.iter().any(|n| n.target == m.target))
                    .map(|(m, record)| (m.target, record))
                    .collect();
                s.profile = update.profile;
                s.skills = update.skills;
                s.memberships = update.memberships;
                dropped
            };
            for (t, record) in dropped {
                remove_member(&mut catalog.target(t).state.lock(), record);
            }
            self.reindex(&cell);
        }
        // Finished interactions of removed queues are forgotten (live ones were refused).
        if !compiled.removed_queues.is_empty() {
            let before = self.interactions.len();
            self.interactions
                .retain(|_, ic| !compiled.removed_queues.contains(&ic.lock().queue));
            self.forgot(before - self.interactions.len());
        }
        // Every live interaction of a changed queue has its relaxation state repaired
        // against the new definition; queued ones route again keeping their age (which
        // also re-arms their relaxation timers).
        let changed_queues: Vec<u32> = catalog
            .queues
            .iter()
            .flatten()
            .filter(|q| {
                old.queues
                    .get(q.idx as usize)
                    .and_then(|o| o.as_ref())
                    .is_none_or(|o| o.def != q.def || o.targets != q.targets)
            })
            .map(|q| q.idx)
            .collect();
        to_reroute.sort_unstable();
        to_reroute.dedup();
        let live: Vec<InteractionRef> = self
            .interactions
            .iter()
            .map(|e| e.value().clone())
            .collect();
        // First take every affected queued interaction out of its lanes, then route them
        // best first, so the change cannot let a younger one overtake an older one.
        let mut again = Vec::new();
        for ic in live {
            let (stale, waiting, order) = {
                let mut i = ic.lock();
                let affected = changed_queues.contains(&i.queue)
                    || i.overflow_targets
                        .iter()
                        .any(|t| compiled.retired_targets.contains(t))
                    || to_reroute.binary_search(&i.id).is_ok();
                if i.state.is_terminal() || !affected {
                    continue;
                }
                repair_relaxation(&catalog, &mut i);
                if i.state != InteractionState::Queued {
                    continue;
                }
                let (stale, waiting) = detach(&mut i);
                let aging = catalog.queue(i.queue).def.aging_millipoints_per_second;
                let effective =
                    effective_priority(wait_order(i.priority, aging, i.enqueued_ms), aging, now_ms);
                (stale, waiting, (Reverse(effective), i.enqueued_ms, i.id))
            };
            self.remove_waiting(&stale, waiting);
            again.push((order, waiting.epoch + 1, ic));
        }
        again.sort_by_key(|(order, _, _)| *order);
        for (_, epoch, ic) in again {
            self.route(&ic, epoch, now_ms, out);
        }
        // Agents pull whatever the change made reachable.
        for cell in catalog.agents.iter().flatten() {
            self.pull(cell, now_ms, out);
        }
        Ok(())
    }

    // ----------------------------------------------------------------- channel side

    /// Submits a new interaction: routing rules (or `request.queue`) pick the queue and
    /// priority; it is offered at once to the best eligible agent with free capacity, or
    /// waits. Fails with `QueueFull` when the queue holds `max_waiting` interactions.
    pub fn submit(
        &self,
        mut request: NewInteraction,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<InteractionId> {
        let catalog = self.catalog.load();
        let first_messages = std::mem::take(&mut request.messages);
        for m in &first_messages {
            if m.text.len() > crate::model::MAX_MESSAGE_BYTES {
                return Err(EngineError::MessageTooLong {
                    len: m.text.len(),
                    max: crate::model::MAX_MESSAGE_BYTES,
                });
            }
            if !catalog.channel_by_name.contains_key(&m.channel) {
                return Err(EngineError::UnknownChannel {
                    channel: m.channel.clone(),
                    context: "a message of a submit".to_string(),
                });
            }
        }
        let channel = catalog
            .channel_by_name
            .get(&request.channel)
            .copied()
            .filter(|c| !catalog.channels[*c as usize].removed)
            .ok_or_else(|| EngineError::UnknownChannel {
                channel: request.channel.clone(),
                context: "submit".to_string(),
            })?;
        let (queue_idx, rule_priority, rule) = match &request.queue {
            Some(q) => (
                *catalog
                    .queue_by_id
                    .get(q)
                    .ok_or_else(|| EngineError::UnknownQueue(q.clone()))?,
                None,
                None,
            ),
            None => catalog
                .route(channel, &request)
                .ok_or_else(|| EngineError::NoRoute {
                    channel: request.channel.clone(),
                })?,
        };
        let queue = catalog.queue(queue_idx).clone();
        if queue.channel_mask & (1u64 << channel) == 0 {
            return Err(EngineError::ChannelNotAccepted {
                queue: queue.id.to_string(),
                channel: request.channel.clone(),
            });
        }
        let preferred = match &request.preferred_agent {
            Some(agent) => {
                let idx = *catalog
                    .agent_by_id
                    .get(agent)
                    .ok_or_else(|| EngineError::UnknownAgent(agent.clone()))?;
                (request.preferred_fallback_ms > 0)
                    .then(|| (idx, now_ms.saturating_add(request.preferred_fallback_ms)))
            }
            None => None,
        };
        admit(&queue)?;
        let id = InteractionId(self.next_interaction.fetch_add(1, Ordering::Relaxed));
        let priority = request
            .priority
            .or(rule_priority)
            .unwrap_or(queue.def.base_priority);
        let mut history = Vec::with_capacity(8);
        out.push(Event::Created {
            interaction: id,
            queue: queue.id.clone(),
            channel: catalog.channels[channel as usize].name.clone(),
            priority,
            rule: rule.clone(),
        });
        history.push(HistoryEntry::Created {
            at_ms: now_ms,
            queue: queue.id.clone(),
            rule,
        });
        for message in first_messages {
            history.push(HistoryEntry::Message {
                at_ms: now_ms,
                message: message.clone(),
            });
            out.push(Event::MessagePosted {
                interaction: id,
                message,
            });
        }
        let interaction = Interaction {
            id,
            channel,
            request: Arc::new(request),
            queue: queue_idx,
            priority,
            created_ms: now_ms,
            enqueued_ms: now_ms,
            queue_entered_ms: now_ms,
            state: InteractionState::Queued,
            level: 0,
            next_step: 0,
            overflow_targets: Vec::new(),
            waiting_in: Vec::new(),
            counted_waiting: true,
            epoch: 0,
            preferred,
            declined: Vec::new(),
            offers_in_queue: 0,
            offer_seq: 0,
            agent: None,
            directed: false,
            offered_generation: 0,
            offer_deadline_ms: 0,
            answered_ms: None,
            wrap_up_until_ms: None,
            wrap_up_code: None,
            history: Arc::new(history),
        };
        let ic = Arc::new(Mutex::new(interaction));
        self.interactions.insert(id, ic.clone());
        self.route(&ic, 0, now_ms, out);
        Ok(id)
    }

    /// The customer left. Queued: removed from its queue. Offered: the offer is
    /// rescinded and the agent's capacity freed. Later states are refused.
    pub fn abandon(
        &self,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let ic = self.existing(interaction)?;
        let mut freed = None;
        let (stale, waiting) = {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            let previous_state = i.state;
            let queue = catalog.queue(i.queue).clone();
            match i.state {
                InteractionState::Queued => {}
                InteractionState::Offered => {
                    let agent = i.agent.expect("offered interaction has an agent");
                    let cell = catalog.agent(agent).expect("offered agent exists").clone();
                    cell.state.lock().release(interaction);
                    out.push(Event::OfferRescinded {
                        interaction,
                        agent: cell.id.clone(),
                        reason: RescindReason::CustomerLeft,
                    });
                    i.record(HistoryEntry::OfferEnded {
                        at_ms: now_ms,
                        agent: cell.id.clone(),
                        how: Arc::from("customer_left"),
                    });
                    i.agent = None;
                    freed = Some(cell);
                }
                state => {
                    return Err(EngineError::InvalidState {
                        interaction,
                        state,
                        operation: "abandon (the customer left after being served; complete it instead)",
                    });
                }
            }
            uncount_waiting(&queue, &mut i);
            i.state = InteractionState::Abandoned;
            let detached = detach(&mut i);
            i.record(HistoryEntry::Abandoned { at_ms: now_ms });
            self.finished_at(now_ms, interaction);
            out.push(Event::Abandoned {
                interaction,
                queue: queue.id.clone(),
                previous_state,
            });
            detached
        };
        self.remove_waiting(&stale, waiting);
        if let Some(cell) = freed {
            self.capacity_freed(&cell, now_ms, out);
        }
        Ok(())
    }

    /// Whether a channel of this name is configured.
    pub fn has_channel(&self, name: &str) -> bool {
        self.catalog.load().channel_by_name.contains_key(name)
    }

    /// Adds a message to an interaction's transcript (its history), for a live
    /// interaction only. An agent's message must come from the agent it is assigned to;
    /// the channel must exist (a customer may write on another channel than the one the
    /// interaction arrived on).
    pub fn post_message(
        &self,
        interaction: InteractionId,
        message: crate::model::Message,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        if message.text.len() > crate::model::MAX_MESSAGE_BYTES {
            return Err(EngineError::MessageTooLong {
                len: message.text.len(),
                max: crate::model::MAX_MESSAGE_BYTES,
            });
        }
        let ic = self.existing(interaction)?;
        let catalog = self.catalog.load();
        if !catalog.channel_by_name.contains_key(&message.channel) {
            return Err(EngineError::UnknownChannel {
                channel: message.channel.clone(),
                context: format!("a message to interaction {interaction}"),
            });
        }
        let mut i = ic.lock();
        match i.state {
            InteractionState::Completed
            | InteractionState::Abandoned
            | InteractionState::WrapUp => {
                return Err(EngineError::InvalidState {
                    interaction,
                    state: i.state,
                    operation: "post a message (the conversation is over)",
                });
            }
            _ => {}
        }
        if message.from == crate::model::Sender::Agent {
            let agent = message.from_id.clone().unwrap_or_default();
            let holds = i.state == InteractionState::Assigned
                && i.agent
                    .and_then(|a| catalog.agent(a))
                    .is_some_and(|cell| *cell.id == *agent);
            if !holds {
                return Err(EngineError::NotAssignedToAgent { interaction, agent });
            }
        }
        i.record(HistoryEntry::Message {
            at_ms: now_ms,
            message: message.clone(),
        });
        out.push(Event::MessagePosted {
            interaction,
            message,
        });
        Ok(())
    }

    // ------------------------------------------------------------------- agent side

    /// Sets an agent's presence. Available: the agent pulls waiting work at once.
    /// Offline: outstanding offers are rescinded and re-routed (assigned work stays).
    pub fn set_presence(
        &self,
        agent: &str,
        presence: Presence,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        let offers: Vec<InteractionId> = {
            let mut s = cell.state.lock();
            if s.presence == presence {
                return Ok(());
            }
            if presence == Presence::Available {
                s.consecutive_misses = 0;
            }
            s.presence = presence.clone();
            if presence == Presence::Offline {
                s.work
                    .iter()
                    .filter(|w| w.phase == WorkPhase::Offered)
                    .map(|w| w.interaction)
                    .collect()
            } else {
                Vec::new()
            }
        };
        out.push(Event::PresenceChanged {
            agent: cell.id.clone(),
            presence: presence.clone(),
        });
        self.reindex(&cell);
        for interaction in offers {
            self.end_offer(&cell, interaction, None, OfferEnd::Rescinded, now_ms, out)
                .ok();
        }
        if presence == Presence::Available {
            self.pull(&cell, now_ms, out);
        }
        if presence != Presence::Available {
            // No longer one of the "others" keeping work from agents who declined it.
            self.recheck_declined(&cell, now_ms, out);
        }
        Ok(())
    }

    /// After an agent stops being available, interactions it was the last "other" for
    /// may now go back to an agent who declined them: route those again.
    fn recheck_declined(&self, cell: &AgentCell, now_ms: TimeMs, out: &mut Vec<Event>) {
        let memberships = cell.state.lock().memberships.clone();
        let guard = self.catalog.load(); // after the memberships, as in `reindex`
        let catalog: &Catalog = &guard;
        let mut ids = Vec::new();
        for m in memberships.iter() {
            let ts = catalog.target(m.target).state.lock();
            for (lane_idx, lane) in ts.lanes.iter().enumerate() {
                ids.extend(
                    lane.waiting
                        .iter()
                        .filter(|(_, meta)| {
                            !meta.declined.is_empty()
                                && !others_exist(catalog, &ts, m.target, lane_idx, &meta.declined)
                        })
                        .map(|(key, _)| key.id),
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.reroute(id, now_ms, out);
        }
    }

    /// Takes a queued interaction out of its lanes and routes it again (same key, so
    /// the same position if it has to wait).
    fn reroute(&self, id: InteractionId, now_ms: TimeMs, out: &mut Vec<Event>) {
        let Some(ic) = self.interaction_ref(id) else {
            return;
        };
        let (stale, waiting) = {
            let mut i = ic.lock();
            if i.state != InteractionState::Queued {
                return;
            }
            detach(&mut i)
        };
        self.remove_waiting(&stale, waiting);
        self.route(&ic, waiting.epoch + 1, now_ms, out);
    }

    /// The agent accepts its offer: the interaction is assigned.
    pub fn accept(
        &self,
        agent: &str,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        let ic = self.existing(interaction)?;
        let mut i = ic.lock();
        if i.state != InteractionState::Offered || i.agent != Some(cell.idx) {
            return Err(EngineError::NotOfferedToAgent {
                interaction,
                agent: agent.to_string(),
            });
        }
        let mut s = cell.state.lock();
        accept_locked(&cell, &mut s, &mut i, now_ms, out);
        Ok(())
    }

    /// The agent rejects its offer: it goes to the next best agent (not this one again
    /// while another eligible agent is available and handles the channel).
    pub fn reject(
        &self,
        agent: &str,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        self.end_offer(&cell, interaction, None, OfferEnd::Rejected, now_ms, out)
    }

    /// The agent completes its assigned interaction with a wrap-up code (checked against
    /// the queue's list when it has one). With a wrap-up time the capacity stays held
    /// until the `WrapUpEnd` timer.
    pub fn complete(
        &self,
        agent: &str,
        interaction: InteractionId,
        wrap_up_code: Option<&str>,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        let ic = self.existing(interaction)?;
        let freed = {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            if i.state != InteractionState::Assigned || i.agent != Some(cell.idx) {
                if i.state == InteractionState::Assigned || i.agent != Some(cell.idx) {
                    return Err(EngineError::NotAssignedToAgent {
                        interaction,
                        agent: agent.to_string(),
                    });
                }
                return Err(EngineError::InvalidState {
                    interaction,
                    state: i.state,
                    operation: "complete",
                });
            }
            let queue = catalog.queue(i.queue).clone();
            let codes = &queue.def.wrap_up_codes;
            if !codes.is_empty() {
                match wrap_up_code {
                    None => {
                        return Err(EngineError::WrapUpCodeRequired {
                            queue: queue.id.to_string(),
                            allowed: codes.join(", "),
                        });
                    }
                    Some(code) if !codes.iter().any(|c| c == code) => {
                        return Err(EngineError::InvalidWrapUpCode {
                            code: code.to_string(),
                            queue: queue.id.to_string(),
                            allowed: codes.join(", "),
                        });
                    }
                    Some(_) => {}
                }
            }
            let mut s = cell.state.lock();
            let code = wrap_up_code.map(str::to_string);
            i.wrap_up_code = code.clone();
            i.record(HistoryEntry::Completed {
                at_ms: now_ms,
                agent: cell.id.clone(),
                wrap_up_code: code.clone(),
            });
            let wrap = queue.def.wrap_up_ms;
            if wrap > 0 {
                let until = now_ms.saturating_add(wrap);
                let index = s.work_index(interaction).expect("assigned work is in hand");
                s.work[index].phase = WorkPhase::WrapUp;
                i.state = InteractionState::WrapUp;
                i.wrap_up_until_ms = Some(until);
                out.push(Event::Completed {
                    interaction,
                    agent: cell.id.clone(),
                    wrap_up_code: code,
                    wrap_up_until_ms: Some(until),
                });
                false
            } else {
                s.release(interaction).expect("assigned work is in hand");
                s.last_work_ended_ms = now_ms;
                i.state = InteractionState::Completed;
                self.finished_at(now_ms, interaction);
                out.push(Event::Completed {
                    interaction,
                    agent: cell.id.clone(),
                    wrap_up_code: code,
                    wrap_up_until_ms: None,
                });
                true
            }
        };
        if freed {
            self.capacity_freed(&cell, now_ms, out);
        }
        Ok(())
    }

    /// Transfers an assigned interaction to another agent (offered to them directly;
    /// they must be available with capacity) or to a queue (routed there keeping its
    /// original age). Id and history are kept; the transferring agent's capacity frees.
    pub fn transfer(
        &self,
        agent: &str,
        interaction: InteractionId,
        to: TransferTarget,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        let ic = self.existing(interaction)?;
        let mut reroute = None;
        let mut target_cell = None;
        {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            if i.state != InteractionState::Assigned || i.agent != Some(cell.idx) {
                return Err(EngineError::NotAssignedToAgent {
                    interaction,
                    agent: agent.to_string(),
                });
            }
            match &to {
                TransferTarget::Queue(q) => {
                    let q_idx = *catalog
                        .queue_by_id
                        .get(q)
                        .ok_or_else(|| EngineError::UnknownQueue(q.clone()))?;
                    let queue = catalog.queue(q_idx).clone();
                    if queue.channel_mask & (1u64 << i.channel) == 0 {
                        return Err(EngineError::ChannelNotAccepted {
                            queue: q.clone(),
                            channel: catalog.channel_name(i.channel).to_string(),
                        });
                    }
                    admit(&queue)?;
                    release_agent(&cell, interaction, now_ms);
                    i.counted_waiting = true;
                    i.queue = q_idx;
                    i.level = 0;
                    i.next_step = 0;
                    i.overflow_targets.clear();
                    i.queue_entered_ms = now_ms;
                    i.declined.clear();
                    i.offers_in_queue = 0;
                    i.preferred = None;
                    i.agent = None;
                    i.state = InteractionState::Queued;
                    i.epoch += 1;
                    reroute = Some(i.epoch);
                }
                TransferTarget::Agent(b) => {
                    let other = agent_cell(catalog, b)?;
                    if other.idx == cell.idx {
                        return Err(EngineError::AgentUnavailable {
                            agent: b.clone(),
                            interaction,
                            reason: "it is already assigned to this agent".to_string(),
                        });
                    }
                    // Two agent locks at once only here, always in index order.
                    let (mut from, mut o) = if cell.idx < other.idx {
                        let from = cell.state.lock();
                        (from, other.state.lock())
                    } else {
                        let o = other.state.lock();
                        (cell.state.lock(), o)
                    };
                    if !o.is_available() {
                        return Err(EngineError::AgentUnavailable {
                            agent: b.clone(),
                            interaction,
                            reason: format!("presence is {:?}", o.presence),
                        });
                    }
                    let units = o.usage.fits(&o.profile, i.channel).map_err(|why| {
                        EngineError::AgentUnavailable {
                            agent: b.clone(),
                            interaction,
                            reason: format!("no capacity: {why:?}"),
                        }
                    })?;
                    from.release(interaction).expect("assigned work is in hand");
                    from.last_work_ended_ms = now_ms;
                    drop(from);
                    out.push(Event::Transferred {
                        interaction,
                        from_agent: Some(cell.id.clone()),
                        to: to.clone(),
                    });
                    i.record(HistoryEntry::Transferred {
                        at_ms: now_ms,
                        from_agent: Some(cell.id.clone()),
                        to: Arc::from(format!("agent:{b}")),
                    });
                    let queue = i.queue;
                    self.offer_locked(
                        catalog,
                        queue,
                        &other,
                        &mut o,
                        &mut i,
                        units,
                        OfferReason::Transfer,
                        now_ms,
                        out,
                    );
                    i.directed = true;
                    target_cell = Some(other.clone());
                }
            }
            if reroute.is_some() {
                out.push(Event::Transferred {
                    interaction,
                    from_agent: Some(cell.id.clone()),
                    to: to.clone(),
                });
                if let TransferTarget::Queue(q) = &to {
                    i.record(HistoryEntry::Transferred {
                        at_ms: now_ms,
                        from_agent: Some(cell.id.clone()),
                        to: Arc::from(format!("queue:{q}")),
                    });
                }
            }
        }
        if let Some(epoch) = reroute {
            self.route(&ic, epoch, now_ms, out);
        }
        // The transfer target's entries became too good: refreshed lazily.
        drop(target_cell);
        self.capacity_freed(&cell, now_ms, out);
        Ok(())
    }

    // ------------------------------------------------------------------------ timers

    /// Fires a timer the engine asked for. Stale timers (the state moved on) do nothing
    /// and return `false`.
    pub fn on_timer(&self, timer: Timer, now_ms: TimeMs, out: &mut Vec<Event>) -> bool {
        let catalog = self.catalog.load();
        match timer {
            Timer::OfferTimeout {
                interaction,
                offer_seq,
            } => {
                let Some(agent) = self.interaction_ref(interaction).and_then(|ic| {
                    let i = ic.lock();
                    (i.state == InteractionState::Offered && i.offer_seq == offer_seq)
                        .then_some(i.agent)
                        .flatten()
                }) else {
                    return false;
                };
                let cell = catalog.agent(agent).expect("offered agent exists").clone();
                self.end_offer(
                    &cell,
                    interaction,
                    Some(offer_seq),
                    OfferEnd::TimedOut,
                    now_ms,
                    out,
                )
                .is_ok()
            }
            Timer::WrapUpEnd { interaction } => self.end_wrap_up(interaction, now_ms, out),
            Timer::Relaxation { interaction, step } => self.relax(interaction, step, now_ms, out),
            Timer::PreferredFallback { interaction } => {
                self.preferred_fallback(interaction, now_ms, out)
            }
        }
    }

    /// The agent ends its wrap-up before the queue's wrap-up time is over ("ready"):
    /// the capacity is free at once (the wrap-up timer then finds nothing to do).
    pub fn end_wrap_up_early(
        &self,
        agent: &str,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let catalog = self.catalog.load();
        let cell = agent_cell(&catalog, agent)?;
        let ic = self.existing(interaction)?;
        {
            let i = ic.lock();
            if i.agent != Some(cell.idx) {
                return Err(EngineError::NotAssignedToAgent {
                    interaction,
                    agent: agent.to_string(),
                });
            }
            if i.state != InteractionState::WrapUp {
                return Err(EngineError::InvalidState {
                    interaction,
                    state: i.state,
                    operation: "end_wrap_up",
                });
            }
        }
        // The journal runs one operation at a time, so it is still in wrap-up; were it
        // not, say so rather than do nothing.
        if self.finish_wrap_up(interaction, now_ms, true, out) {
            Ok(())
        } else {
            Err(EngineError::InvalidState {
                interaction,
                state: InteractionState::Completed,
                operation: "end_wrap_up",
            })
        }
    }

    fn end_wrap_up(
        &self,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> bool {
        self.finish_wrap_up(interaction, now_ms, false, out)
    }

    /// Ends a wrap-up: at its time (`early`: false; a timer before it does nothing),
    /// or when the agent says so.
    fn finish_wrap_up(
        &self,
        interaction: InteractionId,
        now_ms: TimeMs,
        early: bool,
        out: &mut Vec<Event>,
    ) -> bool {
        let Some(ic) = self.interaction_ref(interaction) else {
            return false;
        };
        let cell = {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            if i.state != InteractionState::WrapUp
                || (!early && i.wrap_up_until_ms.is_none_or(|u| u > now_ms))
            {
                return false;
            }
            let agent = i.agent.expect("wrap-up has an agent");
            let cell = catalog.agent(agent).expect("wrap-up agent exists").clone();
            release_agent(&cell, interaction, now_ms);
            i.state = InteractionState::Completed;
            i.record(HistoryEntry::WrapUpEnded { at_ms: now_ms });
            self.finished_at(now_ms, interaction);
            out.push(Event::WrapUpEnded {
                interaction,
                agent: cell.id.clone(),
            });
            cell
        };
        self.capacity_freed(&cell, now_ms, out);
        true
    }

    fn relax(
        &self,
        interaction: InteractionId,
        step: u16,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> bool {
        let Some(ic) = self.interaction_ref(interaction) else {
            return false;
        };
        let (stale, waiting) = {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            let queue = catalog.queue(i.queue).clone();
            if i.state != InteractionState::Queued
                || i.next_step != step
                || queue
                    .step_due_ms(step, i.queue_entered_ms)
                    .is_none_or(|due| due > now_ms)
            {
                return false;
            }
            i.next_step += 1;
            i.level = queue.step_level[step as usize];
            if let Some(overflow) = queue.step_overflow[step as usize] {
                let t = catalog.queue(overflow).targets[0];
                if !i.overflow_targets.contains(&t) {
                    i.overflow_targets.push(t);
                }
            }
            let detached = detach(&mut i);
            i.record(HistoryEntry::Relaxed {
                at_ms: now_ms,
                step,
            });
            out.push(Event::Relaxed {
                interaction,
                queue: queue.id.clone(),
                step,
            });
            detached
        };
        self.remove_waiting(&stale, waiting);
        self.route(&ic, waiting.epoch + 1, now_ms, out);
        true
    }

    fn preferred_fallback(
        &self,
        interaction: InteractionId,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> bool {
        let Some(ic) = self.interaction_ref(interaction) else {
            return false;
        };
        let (stale, waiting) = {
            let mut i = ic.lock();
            if i.preferred.is_none_or(|(_, fallback)| fallback > now_ms) {
                return false;
            }
            i.preferred = None;
            if i.state != InteractionState::Queued {
                return true;
            }
            let detached = detach(&mut i);
            i.record(HistoryEntry::PreferredFallback { at_ms: now_ms });
            out.push(Event::PreferredFallback { interaction });
            detached
        };
        self.remove_waiting(&stale, waiting);
        self.route(&ic, waiting.epoch + 1, now_ms, out);
        true
    }

    // -------------------------------------------------------------------- internals

    pub(crate) fn interaction_ref(&self, id: InteractionId) -> Option<InteractionRef> {
        self.interactions.get(&id).map(|e| e.value().clone())
    }

    fn existing(&self, id: InteractionId) -> Result<InteractionRef> {
        self.interaction_ref(id)
            .ok_or(EngineError::UnknownInteraction(id))
    }

    /// Ends an offer by reject, timeout or rescind, and re-routes the interaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_offer(
        &self,
        cell: &Arc<AgentCell>,
        interaction: InteractionId,
        offer_seq: Option<u32>,
        how: OfferEnd,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<()> {
        let ic = self.existing(interaction)?;
        let mut transfer_to = None;
        let mut went_away = false;
        let route_epoch;
        {
            let mut i = ic.lock();
            // Loaded with the interaction locked: at least as new as whatever catalog
            // last moved it (a concurrent reconfiguration may have added its queue).
            let fresh_catalog = self.catalog.load();
            let catalog: &Catalog = &fresh_catalog;
            if i.state != InteractionState::Offered
                || i.agent != Some(cell.idx)
                || offer_seq.is_some_and(|seq| seq != i.offer_seq)
            {
                return Err(EngineError::NotOfferedToAgent {
                    interaction,
                    agent: cell.id.to_string(),
                });
            }
            let queue = catalog.queue(i.queue).clone();
            {
                let mut s = cell.state.lock();
                s.release(interaction).expect("offered work is in hand");
                if how.is_miss() {
                    s.consecutive_misses += 1;
                    let limit = catalog.settings.max_consecutive_misses;
                    if limit > 0
                        && s.consecutive_misses >= limit
                        && s.presence == Presence::Available
                    {
                        let away = Presence::Away {
                            reason: "missed offers".to_string(),
                        };
                        s.presence = away.clone();
                        went_away = true;
                        out.push(Event::PresenceChanged {
                            agent: cell.id.clone(),
                            presence: away,
                        });
                    }
                }
            }
            let how_name = match how {
                OfferEnd::Rejected => {
                    out.push(Event::Rejected {
                        interaction,
                        agent: cell.id.clone(),
                    });
                    "rejected"
                }
                OfferEnd::TimedOut => {
                    out.push(Event::OfferTimedOut {
                        interaction,
                        agent: cell.id.clone(),
                    });
                    "timed_out"
                }
                OfferEnd::Rescinded => {
                    out.push(Event::OfferRescinded {
                        interaction,
                        agent: cell.id.clone(),
                        reason: RescindReason::AgentOffline,
                    });
                    "agent_offline"
                }
                OfferEnd::Restart => {
                    out.push(Event::OfferRescinded {
                        interaction,
                        agent: cell.id.clone(),
                        reason: RescindReason::ServerRestart,
                    });
                    "server_restart"
                }
            };
            i.record(HistoryEntry::OfferEnded {
                at_ms: now_ms,
                agent: cell.id.clone(),
                how: Arc::from(how_name),
            });
            i.agent = None;
            i.directed = false;
            i.state = InteractionState::Queued;
            i.epoch += 1;
            route_epoch = i.epoch;
            // The preferred agent declined: the preference is spent.
            if how.is_miss() && i.preferred.is_some_and(|(p, _)| p == cell.idx) {
                i.preferred = None;
            }
            if how.is_miss() && !i.declined.contains(&cell.idx) {
                i.declined.push(cell.idx);
            }
            i.counted_waiting = true;
            queue.counters.waiting.fetch_add(1, Ordering::Relaxed);
            if queue.def.max_offers > 0 && i.offers_in_queue >= queue.def.max_offers {
                out.push(Event::OfferLimitReached {
                    interaction,
                    queue: queue.id.clone(),
                    offers: i.offers_in_queue,
                });
                let offers = i.offers_in_queue;
                i.record(HistoryEntry::OfferLimitReached {
                    at_ms: now_ms,
                    offers,
                });
                i.declined.clear();
                i.offers_in_queue = 0;
                // A transfer target that does not take this channel is skipped: the
                // interaction stays and keeps routing here rather than strand.
                let accepts = |q: &u32| catalog.queue(*q).channel_mask & (1u64 << i.channel) != 0;
                if let Some(q) = queue.offer_limit_queue.filter(accepts) {
                    let target = catalog.queue(q).clone();
                    transfer_to = Some(target.id.clone());
                    uncount_waiting(&queue, &mut i);
                    i.counted_waiting = true;
                    target.counters.waiting.fetch_add(1, Ordering::Relaxed);
                    i.queue = q;
                    i.level = 0;
                    i.next_step = 0;
                    i.overflow_targets.clear();
                    i.queue_entered_ms = now_ms;
                    i.record(HistoryEntry::Transferred {
                        at_ms: now_ms,
                        from_agent: None,
                        to: Arc::from(format!("queue:{}", target.id)),
                    });
                }
            }
        }
        if let Some(queue_id) = transfer_to {
            out.push(Event::Transferred {
                interaction,
                from_agent: None,
                to: TransferTarget::Queue(queue_id.to_string()),
            });
        }
        self.route(&ic, route_epoch, now_ms, out);
        self.capacity_freed(cell, now_ms, out);
        if went_away {
            self.recheck_declined(cell, now_ms, out);
        }
        Ok(())
    }

    /// Routes an interaction that is queued and in no waiting lane: offer to the best
    /// fitting agent of its targets, or wait in each of them.
    ///
    /// `epoch` is the epoch the caller set when it (re-)queued the interaction: if anyone
    /// moved it on since, that thread owns the routing and this call does nothing. (Two
    /// routings of the same epoch would put it in its lanes twice.)
    pub(crate) fn route(
        &self,
        ic: &InteractionRef,
        epoch: u64,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) {
        // The newest catalog: a concurrent reconfiguration may have repaired this
        // interaction's relaxation state for it after the caller loaded its own.
        let guard = self.catalog.load();
        let catalog: &Catalog = &guard;
        let (primary, overflow, channel, waiting) = {
            let mut i = ic.lock();
            if i.state != InteractionState::Queued || i.epoch != epoch || !i.waiting_in.is_empty() {
                return;
            }
            if i.level as usize >= catalog.queue(i.queue).targets.len() {
                repair_relaxation(catalog, &mut i);
            }
            let queue = catalog.queue(i.queue);
            (
                queue.targets[i.level as usize],
                i.overflow_targets.clone(),
                i.channel,
                waiting_ref(&i),
            )
        };
        let mut offered_to = None;
        let mut retired = false;
        for t in std::iter::once(primary).chain(overflow) {
            let tc = catalog.target(t);
            let mut ts = tc.state.lock();
            if ts.retired {
                retired = true;
                break;
            }
            let mut i = ic.lock();
            if i.state != InteractionState::Queued || i.epoch != epoch {
                return;
            }
            let Some(lane) = ts.lane_index(channel) else {
                continue;
            };
            if let Some(agent) = self.select_agent(catalog, tc, &mut ts, lane, &mut i, now_ms, out)
            {
                // Entries this call left in earlier targets are stale now (they carry
                // `epoch`); detach them while the interaction is still locked, so a
                // re-queue by another thread starts from an empty list.
                offered_to = Some((agent, std::mem::take(&mut i.waiting_in)));
                break;
            }
            let key = WaitKey::of(&i, tc.spec.aging_millipoints_per_second);
            ts.lanes[lane].waiting.insert(key, WaitMeta::of(&i, epoch));
            i.waiting_in.push(t);
        }
        if retired {
            // A configuration change retired this target after we loaded the catalog:
            // undo and route with the new one — unless another thread moved the
            // interaction on meanwhile (it then owns the entries we left).
            let fresh = self.catalog.load_full();
            let stale = {
                let mut i = ic.lock();
                if i.epoch != epoch {
                    return;
                }
                // Re-derive level and overflow targets under the new definitions, so
                // the retry cannot meet the retired target again (unless yet another
                // reconfiguration retires the new one: each retry follows a real change).
                repair_relaxation(&fresh, &mut i);
                std::mem::take(&mut i.waiting_in)
            };
            self.remove_waiting(&stale, waiting);
            return self.route(ic, epoch, now_ms, out);
        }
        if let Some((_, stale)) = offered_to {
            // The agent's index entries elsewhere are now too good; they are refreshed
            // lazily by the next walk that meets them (see `select_agent`).
            self.remove_waiting(&stale, waiting);
            return;
        }
        let i = ic.lock();
        if i.state == InteractionState::Queued && i.epoch == epoch && !i.waiting_in.is_empty() {
            let queue = catalog.queue(i.queue);
            out.push(Event::Queued {
                interaction: i.id,
                queue: queue.id.clone(),
                next_relaxation: queue
                    .step_due_ms(i.next_step, i.queue_entered_ms)
                    .map(|due| (i.next_step, due)),
                preferred_fallback_ms: i.preferred.map(|(_, fallback)| fallback),
            });
        }
    }

    /// Walks a lane's agent index from the best rank; offers to the first agent that is
    /// available and fits (under its lock). Agents who declined this interaction are
    /// skipped while another member is available and handles the channel.
    ///
    /// Index entries are refreshed eagerly when an agent's rank improves (work ends,
    /// presence) but lazily when it worsens (an offer): an entry may rank an agent better
    /// than it is now, never worse. The walk re-checks each entry under the agent's lock
    /// and moves a stale one to its true place, later in the walk, so the first entry
    /// that is current and fits is the true best.
    #[allow(clippy::too_many_arguments)]
    fn select_agent(
        &self,
        catalog: &Catalog,
        tc: &TargetCell,
        ts: &mut TargetState,
        lane: usize,
        i: &mut Interaction,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Option<u32> {
        if let Some((preferred, fallback)) = i.preferred
            && now_ms < fallback
        {
            let cell = catalog.agent(preferred)?;
            let rank = {
                let s = cell.state.lock();
                let position = membership_position(&s, tc.idx)?;
                compute_rank(&tc.spec, &s.memberships[position], &s, preferred)
            };
            return self
                .try_offer(catalog, tc, ts, rank, i, true, now_ms, out)
                .then_some(preferred);
        }
        let mut skipped_declined = false;
        let mut cursor: Option<Rank> = None;
        while let Some(rank) = next_in_lane(ts, lane, cursor) {
            cursor = Some(rank);
            if i.declined.contains(&rank.agent()) {
                skipped_declined = true;
                continue;
            }
            if self.try_offer(catalog, tc, ts, rank, i, false, now_ms, out) {
                return Some(rank.agent());
            }
        }
        if skipped_declined && !others_exist(catalog, ts, tc.idx, lane, &i.declined) {
            let mut cursor: Option<Rank> = None;
            while let Some(rank) = next_in_lane(ts, lane, cursor) {
                cursor = Some(rank);
                if i.declined.contains(&rank.agent())
                    && self.try_offer(catalog, tc, ts, rank, i, false, now_ms, out)
                {
                    return Some(rank.agent());
                }
            }
        }
        None
    }

    /// Offers to the agent of an index entry if the entry is current and the agent fits;
    /// otherwise refreshes the entry and declines. `any_rank` skips the currency check
    /// (a preferred agent is wanted whatever its rank).
    #[allow(clippy::too_many_arguments)]
    fn try_offer(
        &self,
        catalog: &Catalog,
        tc: &TargetCell,
        ts: &mut TargetState,
        entry: Rank,
        i: &mut Interaction,
        any_rank: bool,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> bool {
        let Some(cell) = catalog.agent(entry.agent()) else {
            return false;
        };
        let mut s = cell.state.lock();
        let Some(position) = membership_position(&s, tc.idx) else {
            return false;
        };
        let words = rank_words(&tc.spec, &s.memberships[position], &s);
        let actual = pack_rank(&tc.spec, &words, cell.idx);
        let fits = if s.is_available() {
            s.usage.fits(&s.profile, i.channel).ok()
        } else {
            None
        };
        match fits {
            // Better than its entry: it freed capacity and its re-index has not reached this
            // target yet (another thread); everything before the cursor was ineligible, so
            // it is the best.
            Some(units) if actual <= entry || any_rank => {
                self.offer_locked(
                    catalog,
                    tc.spec.queue,
                    cell,
                    &mut s,
                    i,
                    units,
                    OfferReason::Policy(words),
                    now_ms,
                    out,
                );
                true
            }
            _ => {
                refresh_entry(ts, &tc.spec, &mut s, position, cell.idx);
                false
            }
        }
    }

    /// Reserves capacity and offers; both the interaction and the agent are locked.
    #[allow(clippy::too_many_arguments)]
    fn offer_locked(
        &self,
        catalog: &Catalog,
        routed_by_queue: u32,
        cell: &AgentCell,
        s: &mut AgentState,
        i: &mut Interaction,
        units: u16,
        reason: OfferReason,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) {
        // The routing invariants, checked on every offer (cheap: a few comparisons over
        // the agent's own work and queues), in release builds too.
        assert!(
            s.is_available(),
            "offer to agent {} who is not available",
            cell.id
        );
        assert!(
            s.work.iter().all(|w| w.interaction != i.id),
            "interaction {} offered twice to agent {}",
            i.id,
            cell.id
        );
        match reason {
            OfferReason::Policy(_) => {
                assert_eq!(
                    i.state,
                    InteractionState::Queued,
                    "offer of {} in state {:?}",
                    i.id,
                    i.state
                );
                assert!(
                    s.memberships.iter().any(|m| m.queue == routed_by_queue),
                    "offer of {} to agent {} who lacks the skills of its queue",
                    i.id,
                    cell.id
                );
            }
            OfferReason::Transfer => assert_eq!(i.state, InteractionState::Assigned),
        }
        debug_assert!(s.usage.fits(&s.profile, i.channel).is_ok());
        s.usage.reserve(i.channel, units);
        assert!(
            s.usage.used_units <= s.profile.total_units,
            "capacity exceeded for agent {}",
            cell.id
        );
        s.work.push(Work {
            interaction: i.id,
            channel: i.channel,
            units,
            phase: WorkPhase::Offered,
        });
        s.offers_received += 1;
        let stamp = catalog
            .queue(routed_by_queue)
            .counters
            .round_robin
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        s.stamp_round_robin(routed_by_queue, stamp);
        let queue = catalog.queue(i.queue).clone();
        uncount_waiting(&queue, i);
        i.state = InteractionState::Offered;
        i.agent = Some(cell.idx);
        i.directed = false;
        i.offer_seq += 1;
        i.offers_in_queue += 1;
        i.offer_deadline_ms = now_ms.saturating_add(queue.def.offer_timeout_ms);
        i.offered_generation = catalog.generation;
        i.epoch += 1;
        i.record(HistoryEntry::Offered {
            at_ms: now_ms,
            agent: cell.id.clone(),
            rank: match reason {
                OfferReason::Policy(words) => Some(words),
                OfferReason::Transfer => None,
            },
        });
        let channel = &catalog.channels[i.channel as usize];
        out.push(Event::Offered {
            interaction: i.id,
            agent: cell.id.clone(),
            queue: queue.id.clone(),
            channel: channel.name.clone(),
            offer_seq: i.offer_seq,
            deadline_ms: i.offer_deadline_ms,
            auto_accepted: channel.auto_accept,
        });
        if channel.auto_accept {
            accept_locked(cell, s, i, now_ms, out);
        }
    }

    /// Removes an interaction's entries from the given targets' waiting lanes.
    fn remove_waiting(&self, targets: &[u32], waiting: WaitingRef) {
        if targets.is_empty() {
            return;
        }
        // The targets were recorded by a route that may have used a newer catalog than
        // the caller's; targets are only ever appended, so the newest knows them all.
        let guard = self.catalog.load();
        let catalog: &Catalog = &guard;
        for t in targets {
            let tc = catalog.target(*t);
            let mut ts = tc.state.lock();
            if let Some(lane) = ts.lane_index(waiting.channel) {
                let key = WaitKey {
                    order: wait_order(
                        waiting.priority,
                        tc.spec.aging_millipoints_per_second,
                        waiting.enqueued_ms,
                    ),
                    enqueued_ms: waiting.enqueued_ms,
                    id: waiting.id,
                };
                let waiting_lane = &mut ts.lanes[lane].waiting;
                // Only the entry this caller detached: a re-queue may already have put a
                // fresh one (same key, newer epoch) in its place.
                if waiting_lane
                    .get(&key)
                    .is_some_and(|m| m.epoch == waiting.epoch)
                {
                    waiting_lane.remove(&key);
                }
            }
        }
    }

    /// An agent's rank improved or its capacity freed: re-index it everywhere (eagerly,
    /// so no arrival misses it), then let it pull waiting work.
    fn capacity_freed(&self, cell: &Arc<AgentCell>, now_ms: TimeMs, out: &mut Vec<Event>) {
        self.reindex(cell);
        self.pull(cell, now_ms, out);
    }

    /// Refreshes the agent's entries in every target it belongs to: rank, the lanes it
    /// fits now, availability per lane.
    pub(crate) fn reindex(&self, cell: &AgentCell) {
        let memberships = cell.state.lock().memberships.clone();
        // Loaded after the memberships: a reconfiguration swaps the catalog before it
        // rewrites memberships, so this catalog knows every target they name.
        let guard = self.catalog.load();
        let catalog: &Catalog = &guard;
        for (position, m) in memberships.iter().enumerate() {
            let tc = catalog.target(m.target);
            let mut ts = tc.state.lock();
            if ts.retired {
                continue;
            }
            let mut s = cell.state.lock();
            if !Arc::ptr_eq(&s.memberships, &memberships) {
                return; // reconfigured meanwhile; the reconfiguration re-indexes
            }
            refresh_entry(&mut ts, &tc.spec, &mut s, position, cell.idx);
        }
    }

    /// The agent takes the best waiting work across its targets, for the channels it
    /// fits, until it is full or nothing eligible waits.
    pub(crate) fn pull(&self, cell: &Arc<AgentCell>, now_ms: TimeMs, out: &mut Vec<Event>) {
        loop {
            let (memberships, fit_mask) = {
                let s = cell.state.lock();
                if !s.is_available() {
                    break;
                }
                (
                    s.memberships.clone(),
                    s.usage.fit_mask(&s.profile, u64::MAX),
                )
            };
            if fit_mask == 0 {
                break;
            }
            // Loaded after the memberships (see `reindex`).
            let guard = self.catalog.load();
            let catalog: &Catalog = &guard;
            let mut best: Option<(Reverse<i128>, TimeMs, InteractionId, u32, usize, WaitKey)> =
                None;
            for m in memberships.iter() {
                let tc = catalog.target(m.target);
                let ts = tc.state.lock();
                if ts.retired {
                    continue;
                }
                for (lane_idx, lane) in ts.lanes.iter().enumerate() {
                    if fit_mask & (1u64 << lane.channel) == 0 {
                        continue;
                    }
                    if let Some(key) =
                        first_eligible(catalog, &ts, m.target, lane_idx, cell.idx, now_ms)
                    {
                        let effective = effective_priority(
                            key.order,
                            tc.spec.aging_millipoints_per_second,
                            now_ms,
                        );
                        let candidate = (
                            Reverse(effective),
                            key.enqueued_ms,
                            key.id,
                            m.target,
                            lane_idx,
                            key,
                        );
                        if best.as_ref().is_none_or(|b| {
                            (candidate.0, candidate.1, candidate.2) < (b.0, b.1, b.2)
                        }) {
                            best = Some(candidate);
                        }
                    }
                }
            }
            let Some((_, _, _, target, lane, key)) = best else {
                break;
            };
            match self.claim(catalog, cell, target, lane, key, now_ms, out) {
                Claim::Offered | Claim::Retry => {}
                Claim::AgentDone => break,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        catalog: &Catalog,
        cell: &Arc<AgentCell>,
        target: u32,
        lane: usize,
        key: WaitKey,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Claim {
        let tc = catalog.target(target);
        let mut ts = tc.state.lock();
        if ts.retired {
            return Claim::Retry;
        }
        let Some(meta) = ts.lanes[lane].waiting.get(&key) else {
            return Claim::Retry;
        };
        let epoch = meta.epoch;
        let Some(ic) = self.interaction_ref(key.id) else {
            ts.lanes[lane].waiting.remove(&key);
            return Claim::Retry;
        };
        let mut i = ic.lock();
        if i.state != InteractionState::Queued || i.epoch != epoch {
            ts.lanes[lane].waiting.remove(&key);
            return Claim::Retry;
        }
        let mut s = cell.state.lock();
        if !s.is_available() {
            return Claim::AgentDone;
        }
        let Ok(units) = s.usage.fits(&s.profile, i.channel) else {
            return Claim::Retry;
        };
        // A reconfiguration may have taken the agent out of this target since the scan.
        let Some(m) = membership_of(&s, tc.idx) else {
            return Claim::Retry;
        };
        let words = rank_words(&tc.spec, &m, &s);
        self.offer_locked(
            catalog,
            tc.spec.queue,
            cell,
            &mut s,
            &mut i,
            units,
            OfferReason::Policy(words),
            now_ms,
            out,
        );
        drop(s);
        ts.lanes[lane].waiting.remove(&key);
        i.waiting_in.retain(|t| *t != target);
        let stale = std::mem::take(&mut i.waiting_in);
        // The other entries carry the epoch before this offer.
        let waiting = WaitingRef {
            epoch,
            ..waiting_ref(&i)
        };
        drop(i);
        drop(ts);
        self.remove_waiting(&stale, waiting);
        Claim::Offered
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferEnd {
    Rejected,
    TimedOut,
    Rescinded,
    /// Taken back by [`Engine::recover`] after a restart: like `Rescinded`, not a miss.
    Restart,
}

impl OfferEnd {
    fn is_miss(self) -> bool {
        matches!(self, OfferEnd::Rejected | OfferEnd::TimedOut)
    }
}

/// Re-derives an interaction's relaxation level and overflow targets from the steps it
/// has passed, under its queue's current definition.
fn repair_relaxation(catalog: &Catalog, i: &mut Interaction) {
    let queue = catalog.queue(i.queue);
    i.next_step = i.next_step.min(queue.def.relaxation.len() as u16);
    i.level = match i.next_step {
        0 => 0,
        n => queue.step_level[n as usize - 1],
    };
    i.overflow_targets.clear();
    for step in 0..i.next_step as usize {
        if let Some(overflow) = queue.step_overflow[step] {
            let t = catalog.queue(overflow).targets[0];
            if !i.overflow_targets.contains(&t) {
                i.overflow_targets.push(t);
            }
        }
    }
}

/// Takes a queued interaction out of its lanes' bookkeeping: returns the targets it
/// waited in and the key of those entries (with their epoch), and bumps the epoch so the
/// entries are stale for everyone else until removed.
fn detach(i: &mut Interaction) -> (Vec<u32>, WaitingRef) {
    let waiting = waiting_ref(i);
    i.epoch += 1;
    (std::mem::take(&mut i.waiting_in), waiting)
}

fn waiting_ref(i: &Interaction) -> WaitingRef {
    WaitingRef {
        id: i.id,
        epoch: i.epoch,
        channel: i.channel,
        priority: i.priority,
        enqueued_ms: i.enqueued_ms,
    }
}

fn agent_cell(catalog: &Catalog, agent: &str) -> Result<Arc<AgentCell>> {
    catalog
        .agent_by_id
        .get(agent)
        .and_then(|i| catalog.agent(*i))
        .cloned()
        .ok_or_else(|| EngineError::UnknownAgent(agent.to_string()))
}

/// Counts one more waiting interaction in the queue, unless it is full.
fn admit(queue: &QueueRt) -> Result<()> {
    let max = queue.def.max_waiting;
    queue
        .counters
        .waiting
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .map(|_| ())
        .map_err(|_| EngineError::QueueFull {
            queue: queue.id.to_string(),
            max_waiting: max,
        })
}

fn uncount_waiting(queue: &QueueRt, i: &mut Interaction) {
    if i.counted_waiting {
        queue.counters.waiting.fetch_sub(1, Ordering::AcqRel);
        i.counted_waiting = false;
    }
}

fn accept_locked(
    cell: &AgentCell,
    s: &mut AgentState,
    i: &mut Interaction,
    now_ms: TimeMs,
    out: &mut Vec<Event>,
) {
    let index = s.work_index(i.id).expect("offered work is in hand");
    assert_eq!(
        s.work[index].phase,
        WorkPhase::Offered,
        "{} assigned twice",
        i.id
    );
    s.work[index].phase = WorkPhase::Assigned;
    s.consecutive_misses = 0;
    i.state = InteractionState::Assigned;
    i.answered_ms.get_or_insert(now_ms);
    i.record(HistoryEntry::Accepted {
        at_ms: now_ms,
        agent: cell.id.clone(),
    });
    out.push(Event::Accepted {
        interaction: i.id,
        agent: cell.id.clone(),
    });
}

fn release_agent(cell: &AgentCell, interaction: InteractionId, now_ms: TimeMs) {
    let mut s = cell.state.lock();
    s.release(interaction)
        .expect("work is in the agent's hands");
    s.last_work_ended_ms = now_ms;
}

/// The first waiting entry of a lane this agent may take now.
fn first_eligible(
    catalog: &Catalog,
    ts: &TargetState,
    target: u32,
    lane_idx: usize,
    agent: u32,
    now_ms: TimeMs,
) -> Option<WaitKey> {
    ts.lanes[lane_idx]
        .waiting
        .iter()
        .find(|(_, meta)| {
            if let Some((preferred, fallback)) = meta.preferred
                && preferred != agent
                && now_ms < fallback
            {
                return false;
            }
            !(meta.declined.contains(&agent)
                && others_exist(catalog, ts, target, lane_idx, &meta.declined))
        })
        .map(|(key, _)| *key)
}

/// The next index entry after `cursor` in a lane (re-read each step: the walk may move
/// entries).
fn next_in_lane(ts: &TargetState, lane: usize, cursor: Option<Rank>) -> Option<Rank> {
    use std::ops::Bound::{Excluded, Unbounded};
    let agents = &ts.lanes[lane].agents;
    match cursor {
        None => agents.first().copied(),
        Some(c) => agents.range((Excluded(c), Unbounded)).next().copied(),
    }
}

/// Where a target is in the agent's memberships (sorted by target).
pub(crate) fn membership_position(s: &AgentState, target: u32) -> Option<usize> {
    s.memberships
        .binary_search_by_key(&target, |m| m.target)
        .ok()
}

/// The agent's membership of a target.
pub(crate) fn membership_of(s: &AgentState, target: u32) -> Option<Membership> {
    membership_position(s, target).map(|i| s.memberships[i])
}

/// Occupancy as a fixed-point fraction that orders exactly like `used / total` for
/// totals up to 65,535.
fn occupancy_key(used: u16, total: u16) -> u64 {
    (u64::from(used) << 32) / u64::from(total.max(1))
}

/// The policy's rank words for an agent in a target (smaller is better), as shown in
/// explanations and the history.
pub(crate) fn rank_words(spec: &TargetSpec, m: &Membership, s: &AgentState) -> [u64; 4] {
    let preference = if spec.prefer_optional {
        u64::from(u16::MAX - m.optional_matched)
    } else {
        0
    };
    let in_hand = s.work.len() as u64;
    let idle_since = s.last_work_ended_ms;
    match spec.policy {
        AssignmentPolicy::LongestIdle => [preference, in_hand, idle_since, 0],
        AssignmentPolicy::MostSkilled => [
            u64::MAX - u64::from(m.proficiency_sum),
            in_hand,
            idle_since,
            0,
        ],
        AssignmentPolicy::LeastOccupied => [
            preference,
            occupancy_key(s.usage.used_units, s.profile.total_units),
            idle_since,
            0,
        ],
        AssignmentPolicy::RoundRobin => [preference, s.round_robin_stamp(spec.queue), 0, 0],
    }
}

/// The agent's index key in a target: its rank words packed (see [`Rank`]).
pub(crate) fn compute_rank(spec: &TargetSpec, m: &Membership, s: &AgentState, agent: u32) -> Rank {
    pack_rank(spec, &rank_words(spec, m, s), agent)
}

/// Packs already computed rank words (see [`Rank`]).
fn pack_rank(spec: &TargetSpec, w: &[u64; 4], agent: u32) -> Rank {
    match spec.policy {
        AssignmentPolicy::LongestIdle => Rank::pack(&[(w[0], 16), (w[1], 16), (w[2], 48)], agent),
        AssignmentPolicy::MostSkilled => Rank::pack(
            &[
                (
                    u64::from(u16::MAX) - (u64::MAX - w[0]).min(u64::from(u16::MAX)),
                    16,
                ),
                (w[1], 16),
                (w[2], 48),
            ],
            agent,
        ),
        AssignmentPolicy::LeastOccupied => Rank::pack(&[(w[0], 16), (w[1], 33), (w[2], 47)], agent),
        AssignmentPolicy::RoundRobin => Rank::pack(&[(w[0], 16), (w[1], 64)], agent),
    }
}

/// Recomputes one agent's entry in one target (target and agent both locked).
fn refresh_entry(
    ts: &mut TargetState,
    spec: &TargetSpec,
    s: &mut AgentState,
    position: usize,
    agent: u32,
) {
    let lanes_mask = if s.is_available() {
        s.usage.fit_mask(&s.profile, spec.channel_mask)
    } else {
        0
    };
    let rank = compute_rank(spec, &s.memberships[position], s, agent);
    let available_mask = if s.is_available() {
        s.profile.handled_mask & spec.channel_mask
    } else {
        0
    };
    update_member(ts, &mut s.index[position], rank, lanes_mask, available_mask);
}

fn update_member(
    ts: &mut TargetState,
    slot: &mut Option<Member>,
    rank: Rank,
    lanes_mask: u64,
    available_mask: u64,
) {
    if let Some(old) = *slot
        && old.rank == rank
        && old.lanes_mask == lanes_mask
        && old.available_mask == available_mask
    {
        return;
    }
    remove_member(ts, slot.take());
    for lane in ts.lanes.iter_mut() {
        let bit = 1u64 << lane.channel;
        if lanes_mask & bit != 0 {
            lane.agents.insert(rank);
        }
        if available_mask & bit != 0 {
            lane.available_members += 1;
        }
    }
    *slot = Some(Member {
        rank,
        lanes_mask,
        available_mask,
    });
}

fn remove_member(ts: &mut TargetState, record: Option<Member>) {
    // A retired target's lanes and counts were cleared when it retired.
    if ts.retired {
        return;
    }
    if let Some(old) = record {
        for lane in ts.lanes.iter_mut() {
            let bit = 1u64 << lane.channel;
            if old.lanes_mask & bit != 0 {
                lane.agents.remove(&old.rank);
            }
            if old.available_mask & bit != 0 {
                lane.available_members -= 1;
            }
        }
    }
}

/// Whether an agent who declined may be offered again: only when no other member of the
/// target is available and handles the lane's channel (busy or not). Target locked;
/// takes the declined agents' locks (target → agent order).
pub(crate) fn others_exist(
    catalog: &Catalog,
    ts: &TargetState,
    target: u32,
    lane: usize,
    declined: &[u32],
) -> bool {
    let bit = 1u64 << ts.lanes[lane].channel;
    let declined_available = declined
        .iter()
        .filter(|a| {
            catalog.agent(**a).is_some_and(|cell| {
                let s = cell.state.lock();
                membership_position(&s, target)
                    .is_some_and(|p| s.index[p].is_some_and(|m| m.available_mask & bit != 0))
            })
        })
        .count() as u32;
    ts.lanes[lane].available_members > declined_available
}
