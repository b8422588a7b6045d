//! The engine's whole state as plain data, and the operations a restart needs.
//!
//! [`EngineImage`] is what a snapshot stores: the configuration in force and every
//! agent's and interaction's state, with internal indexes replaced by ids, so an image
//! does not depend on how the catalog happened to number things. [`Engine::restore`]
//! builds an engine from an image; `restore(export(e))` has the same logical state as
//! `e` (same queue order, enqueue times, offers, assignments, capacity, counters).
//!
//! [`Engine::recover`] applies the restart rules: every agent comes back offline, every
//! outstanding offer goes back to its queue at its original position (its enqueue time
//! is kept), assigned work stays with its agent. [`Engine::reclaim_work`] returns an
//! offline agent's assigned work to its queue when its grace period ends.
//! [`Engine::pending_timers`] lists the timers the state implies, so a restarted driver
//! can arm them again.

use crate::InteractionId;
use crate::capacity::ChannelIdx;
use crate::catalog::Catalog;
use crate::cells::*;
use crate::engine::{Engine, OfferEnd};
use crate::error::{EngineError, Result};
use crate::events::{Event, Timer, TransferTarget};
use crate::model::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The engine's whole state as plain data (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineImage {
    /// The configuration in force.
    pub config: CenterConfig,
    /// The next interaction id to hand out.
    pub next_interaction: u64,
    /// Per-queue counters.
    pub queues: Vec<QueueImage>,
    /// Every agent of the configuration.
    pub agents: Vec<AgentImage>,
    /// Every interaction the engine still holds, by id.
    pub interactions: Vec<InteractionImage>,
}

/// A queue's runtime counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueImage {
    /// Queue id.
    pub id: String,
    /// Round-robin stamp counter.
    pub round_robin: u64,
}

/// Which part of its life a piece of an agent's work is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkPhaseImage {
    /// Offered, not yet answered.
    Offered,
    /// Accepted.
    Assigned,
    /// Completed, wrap-up running.
    WrapUp,
}

/// One piece of work in an agent's hands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkImage {
    /// Interaction.
    pub interaction: InteractionId,
    /// Channel name.
    pub channel: String,
    /// Capacity units reserved.
    pub units: u16,
    /// Phase.
    pub phase: WorkPhaseImage,
}

/// An agent's runtime state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentImage {
    /// Agent id.
    pub id: String,
    /// Presence.
    pub presence: Presence,
    /// Work in hand, in the order it was taken.
    pub work: Vec<WorkImage>,
    /// When the agent's last work ended (longest-idle policy).
    pub last_work_ended_ms: TimeMs,
    /// Offers missed in a row.
    pub consecutive_misses: u32,
    /// Round-robin stamps by queue id.
    pub round_robin: Vec<(String, u64)>,
    /// Offers received (fewest-offers policy).
    pub offers_received: u64,
}

/// An interaction's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionImage {
    /// Id.
    pub id: InteractionId,
    /// The request as submitted (shared with the engine: an image costs no copy of it).
    pub request: Arc<NewInteraction>,
    /// Current queue id.
    pub queue: String,
    /// Priority.
    pub priority: i32,
    /// When it was created.
    pub created_ms: TimeMs,
    /// Its age reference (kept across transfers and re-queues).
    pub enqueued_ms: TimeMs,
    /// When it entered its current queue (relaxation steps count from here).
    pub queue_entered_ms: TimeMs,
    /// Lifecycle state.
    pub state: InteractionState,
    /// Relaxation level in force.
    pub level: u8,
    /// Next relaxation step.
    pub next_step: u16,
    /// Queues added by overflow steps.
    pub overflow_queues: Vec<String>,
    /// Whether it sits in its queues' waiting lanes.
    pub waiting: bool,
    /// Whether it counts toward its queue's `max_waiting`.
    pub counted_waiting: bool,
    /// Routing epoch.
    pub epoch: u64,
    /// Preferred agent and when its exclusivity ends.
    pub preferred: Option<(String, TimeMs)>,
    /// Agents who declined it in this queue.
    pub declined: Vec<String>,
    /// Offers made in this queue.
    pub offers_in_queue: u32,
    /// Offers made in its life.
    pub offer_seq: u32,
    /// The agent holding it.
    pub agent: Option<String>,
    /// Offered by a transfer to a named agent.
    pub directed: bool,
    /// When the current offer times out.
    pub offer_deadline_ms: TimeMs,
    /// When it was first accepted.
    pub answered_ms: Option<TimeMs>,
    /// End of wrap-up.
    pub wrap_up_until_ms: Option<TimeMs>,
    /// Wrap-up code.
    pub wrap_up_code: Option<String>,
    /// History (shared with the engine until its next entry).
    pub history: Arc<Vec<HistoryEntry>>,
}

fn corrupt(what: String) -> EngineError {
    EngineError::InvalidImage(what)
}

impl Engine {
    /// The whole state as plain data. Call it while no other thread operates on the
    /// engine (the journal holds its sequencer lock): a concurrent operation may be
    /// half-visible otherwise.
    pub fn export(&self) -> EngineImage {
        let catalog = self.catalog.load();
        let queue_id = |q: u32| catalog.queue(q).id.to_string();
        // References to agents a reconfiguration removed are dropped: such an agent
        // holds no work (removal is refused otherwise) and can take no offer, so only
        // a finished interaction's last agent (still in its history) or a preference
        // nobody can honour is lost.
        let agent_id = |a: u32| -> Option<String> {
            catalog
                .agents
                .get(a as usize)
                .and_then(|c| c.as_ref())
                .map(|c| c.id.to_string())
        };
        let queues = catalog
            .queues
            .iter()
            .flatten()
            .map(|q| QueueImage {
                id: q.id.to_string(),
                round_robin: q.counters.round_robin.load(Ordering::Acquire),
            })
            .collect();
        let agents = catalog
            .agents
            .iter()
            .flatten()
            .map(|cell| {
                let s = cell.state.lock();
                AgentImage {
                    id: cell.id.to_string(),
                    presence: s.presence.clone(),
                    work: s
                        .work
                        .iter()
                        .map(|w| WorkImage {
                            interaction: w.interaction,
                            channel: catalog.channel_name(w.channel).to_string(),
                            units: w.units,
                            phase: match w.phase {
                                WorkPhase::Offered => WorkPhaseImage::Offered,
                                WorkPhase::Assigned => WorkPhaseImage::Assigned,
                                WorkPhase::WrapUp => WorkPhaseImage::WrapUp,
                            },
                        })
                        .collect(),
                    last_work_ended_ms: s.last_work_ended_ms,
                    consecutive_misses: s.consecutive_misses,
                    round_robin: s
                        .round_robin
                        .iter()
                        .filter(|(q, _)| {
                            catalog.queues.get(*q as usize).is_some_and(Option::is_some)
                        })
                        .map(|(q, stamp)| (queue_id(*q), *stamp))
                        .collect(),
                    offers_received: s.offers_received,
                }
            })
            .collect();
        // In id order: the references sorted (not the images, which are large).
        let mut held: Vec<(InteractionId, InteractionRef)> = self
            .interactions
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        held.sort_unstable_by_key(|(id, _)| *id);
        let interactions: Vec<InteractionImage> = held
            .iter()
            .map(|(_, ic)| {
                let i = ic.lock();
                InteractionImage {
                    id: i.id,
                    request: i.request.clone(),
                    queue: queue_id(i.queue),
                    priority: i.priority,
                    created_ms: i.created_ms,
                    enqueued_ms: i.enqueued_ms,
                    queue_entered_ms: i.queue_entered_ms,
                    state: i.state,
                    level: i.level,
                    next_step: i.next_step,
                    overflow_queues: i
                        .overflow_targets
                        .iter()
                        .map(|t| queue_id(catalog.target(*t).spec.queue))
                        .collect(),
                    waiting: !i.waiting_in.is_empty(),
                    counted_waiting: i.counted_waiting,
                    epoch: i.epoch,
                    preferred: i.preferred.and_then(|(a, at)| Some((agent_id(a)?, at))),
                    declined: i.declined.iter().filter_map(|a| agent_id(*a)).collect(),
                    offers_in_queue: i.offers_in_queue,
                    offer_seq: i.offer_seq,
                    agent: i.agent.and_then(agent_id),
                    directed: i.directed,
                    offer_deadline_ms: i.offer_deadline_ms,
                    answered_ms: i.answered_ms,
                    wrap_up_until_ms: i.wrap_up_until_ms,
                    wrap_up_code: i.wrap_up_code.clone(),
                    history: i.history.clone(),
                }
            })
            .collect();
        drop(held);
        EngineImage {
            config: catalog.config.clone(),
            next_interaction: self.next_interaction.load(Ordering::Acquire),
            queues,
            agents,
            interactions,
        }
    }

    /// Builds an engine holding exactly the state of `image`. An image that does not fit
    /// its own configuration (unknown ids, capacity over the profile, work held by an
    /// agent the interaction does not name) is refused with [`EngineError::InvalidImage`].
    pub fn restore(image: EngineImage) -> Result<Engine> {
        Engine::restore_from(&image)
    }

    /// [`Engine::restore`] from a borrowed image: requests and histories are shared
    /// with it (the journal keeps the image of a snapshot to encode it off the
    /// sequencer while the restored engine runs on).
    pub fn restore_from(image: &EngineImage) -> Result<Engine> {
        let engine = Engine::with_capacity(image.config.clone(), image.interactions.len())?;
        engine
            .next_interaction
            .store(image.next_interaction, Ordering::Release);
        let catalog = engine.catalog.load_full();
        // `what` names the part of the image, for errors only (not built otherwise).
        type What<'a> = &'a dyn Fn() -> String;
        let queue_idx = |id: &str, what: What| -> Result<u32> {
            catalog
                .queue_by_id
                .get(id)
                .copied()
                .ok_or_else(|| corrupt(format!("{} names unknown queue `{id}`", what())))
        };
        let agent_idx = |id: &str, what: What| -> Result<u32> {
            catalog
                .agent_by_id
                .get(id)
                .copied()
                .ok_or_else(|| corrupt(format!("{} names unknown agent `{id}`", what())))
        };
        let channel_idx = |name: &str, what: What| -> Result<ChannelIdx> {
            catalog
                .channel_by_name
                .get(name)
                .copied()
                .ok_or_else(|| corrupt(format!("{} names unknown channel `{name}`", what())))
        };
        for q in &image.queues {
            let idx = queue_idx(&q.id, &|| "queue counters".to_string())?;
            catalog
                .queue(idx)
                .counters
                .round_robin
                .store(q.round_robin, Ordering::Release);
        }
        for a in &image.agents {
            let what = || format!("agent `{}`", a.id);
            let cell = catalog
                .agent(agent_idx(&a.id, &what)?)
                .expect("agent of the catalog")
                .clone();
            let mut s = cell.state.lock();
            s.presence = a.presence.clone();
            s.last_work_ended_ms = a.last_work_ended_ms;
            s.consecutive_misses = a.consecutive_misses;
            s.offers_received = a.offers_received;
            s.round_robin = a
                .round_robin
                .iter()
                .map(|(q, stamp)| Ok((queue_idx(q, &what)?, *stamp)))
                .collect::<Result<_>>()?;
            for w in &a.work {
                let channel = channel_idx(&w.channel, &what)?;
                s.usage.reserve(channel, w.units);
                s.work.push(Work {
                    interaction: w.interaction,
                    channel,
                    units: w.units,
                    phase: match w.phase {
                        WorkPhaseImage::Offered => WorkPhase::Offered,
                        WorkPhaseImage::Assigned => WorkPhase::Assigned,
                        WorkPhaseImage::WrapUp => WorkPhase::WrapUp,
                    },
                });
            }
            if s.usage.used_units > s.profile.total_units {
                return Err(corrupt(format!(
                    "{} holds {} capacity units, its profile allows {}",
                    what(),
                    s.usage.used_units,
                    s.profile.total_units
                )));
            }
        }
        let mut finished = Vec::new();
        for im in &image.interactions {
            let what = || format!("interaction {}", im.id);
            let queue = queue_idx(&im.queue, &what)?;
            let channel = channel_idx(&im.request.channel, &what)?;
            let overflow_targets = im
                .overflow_queues
                .iter()
                .map(|q| Ok(catalog.queue(queue_idx(q, &what)?).targets[0]))
                .collect::<Result<Vec<u32>>>()?;
            let agent = im
                .agent
                .as_deref()
                .map(|a| agent_idx(a, &what))
                .transpose()?;
            if let Some(a) = agent {
                let holds = catalog
                    .agent(a)
                    .is_some_and(|c| c.state.lock().work_index(im.id).is_some());
                if !holds && !im.state.is_terminal() {
                    return Err(corrupt(format!(
                        "{} is held by agent `{}`, who does not list it as work",
                        what(),
                        im.agent.as_deref().unwrap_or_default()
                    )));
                }
            }
            let rt = catalog.queue(queue).clone();
            // A level past the queue's steps is legal outside a queue (a reconfiguration
            // removed steps; routing repairs it when the interaction is queued again),
            // but an interaction waiting there cannot be.
            if im.waiting && im.level as usize >= rt.targets.len() {
                return Err(corrupt(format!(
                    "{} is at relaxation level {} of queue `{}`, which has {}",
                    what(),
                    im.level,
                    rt.id,
                    rt.targets.len()
                )));
            }
            let mut i = Interaction {
                id: im.id,
                channel,
                request: im.request.clone(),
                queue,
                priority: im.priority,
                created_ms: im.created_ms,
                enqueued_ms: im.enqueued_ms,
                queue_entered_ms: im.queue_entered_ms,
                state: im.state,
                level: im.level,
                next_step: im.next_step,
                overflow_targets,
                waiting_in: Vec::new(),
                counted_waiting: im.counted_waiting,
                epoch: im.epoch,
                preferred: im
                    .preferred
                    .as_ref()
                    .map(|(a, at)| Ok::<_, EngineError>((agent_idx(a, &what)?, *at)))
                    .transpose()?,
                declined: im
                    .declined
                    .iter()
                    .map(|a| agent_idx(a, &what))
                    .collect::<Result<_>>()?,
                offers_in_queue: im.offers_in_queue,
                offer_seq: im.offer_seq,
                agent,
                directed: im.directed,
                // Made under a configuration this engine never had: the invariant
                // check treats it like an offer from before a reconfiguration.
                offered_generation: u64::MAX,
                offer_deadline_ms: im.offer_deadline_ms,
                answered_ms: im.answered_ms,
                wrap_up_until_ms: im.wrap_up_until_ms,
                wrap_up_code: im.wrap_up_code.clone(),
                history: im.history.clone(),
            };
            if i.counted_waiting {
                rt.counters.waiting.fetch_add(1, Ordering::AcqRel);
            }
            if im.waiting && i.state == InteractionState::Queued {
                let targets = std::iter::once(rt.targets[i.level as usize])
                    .chain(i.overflow_targets.iter().copied())
                    .collect::<Vec<_>>();
                for t in targets {
                    let tc = catalog.target(t);
                    let mut ts = tc.state.lock();
                    let Some(lane) = ts.lane_index(channel) else {
                        continue;
                    };
                    let key = WaitKey::of(&i, tc.spec.aging_millipoints_per_second);
                    ts.lanes[lane]
                        .waiting
                        .insert(key, WaitMeta::of(&i, i.epoch));
                    i.waiting_in.push(t);
                }
            }
            if i.state.is_terminal() {
                finished.push((i.last_activity_ms(), i.id));
            }
            engine.interactions.insert(i.id, Arc::new(Mutex::new(i)));
        }
        finished.sort_unstable();
        *engine.finished.lock() = finished.into();
        // Every piece of work an agent holds must be an interaction held by that agent,
        // in the matching state: the restart rules and every later operation rely on it.
        for cell in catalog.agents.iter().flatten() {
            let s = cell.state.lock();
            for w in &s.work {
                let expected = match w.phase {
                    WorkPhase::Offered => InteractionState::Offered,
                    WorkPhase::Assigned => InteractionState::Assigned,
                    WorkPhase::WrapUp => InteractionState::WrapUp,
                };
                let consistent = engine.interaction_ref(w.interaction).is_some_and(|ic| {
                    let i = ic.lock();
                    i.agent == Some(cell.idx) && i.state == expected && i.channel == w.channel
                });
                if !consistent {
                    return Err(corrupt(format!(
                        "agent `{}` holds {} as {:?} work, which the interaction does not match",
                        cell.id, w.interaction, w.phase
                    )));
                }
            }
        }
        for cell in catalog.agents.iter().flatten() {
            engine.reindex(cell);
        }
        Ok(engine)
    }

    /// The restart rules (see the module docs): every agent goes offline; every offer
    /// outstanding goes back to its queue at its original position; assigned work and
    /// wrap-ups stay with their agents. Returns the agents left holding assigned work,
    /// whose grace period starts now (see [`Engine::reclaim_work`]).
    pub fn recover(&self, now_ms: TimeMs, out: &mut Vec<Event>) -> Vec<Arc<str>> {
        let catalog = self.catalog.load_full();
        let mut offers = Vec::new();
        let mut holding = Vec::new();
        // Everyone offline first, so the offers taken back below find nobody to go to
        // and wait where they were.
        for cell in catalog.agents.iter().flatten() {
            {
                let mut s = cell.state.lock();
                if s.presence != Presence::Offline {
                    s.presence = Presence::Offline;
                    out.push(Event::PresenceChanged {
                        agent: cell.id.clone(),
                        presence: Presence::Offline,
                    });
                }
                offers.extend(
                    s.work
                        .iter()
                        .filter(|w| w.phase == WorkPhase::Offered)
                        .map(|w| (cell.clone(), w.interaction)),
                );
                if s.work.iter().any(|w| w.phase == WorkPhase::Assigned) {
                    holding.push(cell.id.clone());
                }
            }
            self.reindex(cell);
        }
        offers.sort_by_key(|(_, id)| *id);
        for (cell, interaction) in offers {
            self.end_offer(&cell, interaction, None, OfferEnd::Restart, now_ms, out)
                .expect("an offer in an agent's hands is outstanding");
        }
        holding
    }

    /// An agent's grace period after a restart ended: if it is still offline, its
    /// assigned work goes back to the queue it came from (keeping its age, like a
    /// transfer to that queue). Returns how many interactions went back, and those a
    /// full queue could not take (they stay with the agent). Only an unknown agent is
    /// an error.
    pub fn reclaim_work(
        &self,
        agent: &str,
        now_ms: TimeMs,
        out: &mut Vec<Event>,
    ) -> Result<(usize, Vec<(InteractionId, EngineError)>)> {
        let catalog: Arc<Catalog> = self.catalog.load_full();
        let cell = catalog
            .agent_by_id
            .get(agent)
            .and_then(|i| catalog.agent(*i))
            .cloned()
            .ok_or_else(|| EngineError::UnknownAgent(agent.to_string()))?;
        let assigned: Vec<InteractionId> = {
            let s = cell.state.lock();
            if s.presence != Presence::Offline {
                return Ok((0, Vec::new()));
            }
            s.work
                .iter()
                .filter(|w| w.phase == WorkPhase::Assigned)
                .map(|w| w.interaction)
                .collect()
        };
        let mut moved = 0;
        let mut kept = Vec::new();
        for id in assigned {
            let Some(queue) = self
                .interaction_ref(id)
                .map(|ic| catalog.queue(ic.lock().queue).id.to_string())
            else {
                continue;
            };
            match self.transfer(agent, id, TransferTarget::Queue(queue), now_ms, out) {
                Ok(()) => moved += 1,
                Err(e) => kept.push((id, e)),
            }
        }
        Ok((moved, kept))
    }

    /// The timers the current state implies, with their due times, in (due, timer)
    /// order: outstanding offers' timeouts, wrap-up ends, relaxation steps and
    /// preferred-agent fallbacks. A restarted driver arms these.
    pub fn pending_timers(&self) -> Vec<(TimeMs, Timer)> {
        let catalog = self.catalog.load();
        let mut timers = Vec::new();
        for e in self.interactions.iter() {
            let i = e.value().lock();
            let interaction = i.id;
            match i.state {
                InteractionState::Offered => timers.push((
                    i.offer_deadline_ms,
                    Timer::OfferTimeout {
                        interaction,
                        offer_seq: i.offer_seq,
                    },
                )),
                InteractionState::WrapUp => {
                    if let Some(until) = i.wrap_up_until_ms {
                        timers.push((until, Timer::WrapUpEnd { interaction }));
                    }
                }
                InteractionState::Queued => {
                    if let Some(due) = catalog
                        .queue(i.queue)
                        .step_due_ms(i.next_step, i.queue_entered_ms)
                    {
                        timers.push((
                            due,
                            Timer::Relaxation {
                                interaction,
                                step: i.next_step,
                            },
                        ));
                    }
                }
                _ => {}
            }
            if let Some((_, fallback)) = i.preferred {
                timers.push((fallback, Timer::PreferredFallback { interaction }));
            }
        }
        timers.sort();
        timers
    }
}
