//! What the engine tells the outside world, and the timers it asks for.
//!
//! Every operation appends [`Event`]s to a caller-owned buffer (reused across calls, so
//! the hot path does not allocate for them). Events that start a clock — an offer, a
//! wrap-up, a wait with a relaxation step or a preferred agent — name the [`Timer`] the
//! driver must fire back through [`crate::Engine::on_timer`] when its time comes. The
//! engine itself never reads a clock; [`Scheduler`] is a small deterministic timer queue
//! for single-threaded drivers (tests, the simulator on virtual time).

use crate::InteractionId;
use crate::model::{InteractionState, Presence, TimeMs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why an offer was withdrawn before the agent answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescindReason {
    /// The customer left.
    CustomerLeft,
    /// The agent went offline.
    AgentOffline,
    /// The server restarted before the agent answered; the interaction went back to its
    /// queue at its original position.
    ServerRestart,
}

/// Where a transfer goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum TransferTarget {
    /// Offer directly to this agent (skills not required: a person chose them).
    Agent(String),
    /// Route in this queue, keeping the interaction's original age.
    Queue(String),
}

/// How a configuration entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New.
    Added,
    /// Gone.
    Removed,
    /// Still there, with another definition.
    Changed,
}

/// One entry of a configuration change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfigChange {
    /// `channel`, `skill`, `agent`, `queue`, `rule`, `default_queue` or `settings`.
    pub kind: String,
    /// Its name or id (the new default queue; empty for settings).
    pub id: String,
    /// How it changed.
    pub change: ChangeKind,
}

/// Something that happened in the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The configuration changed (the first configuration of a log lists everything as
    /// added). Re-routing that the change causes follows as its own events.
    Configured {
        /// What changed.
        changes: Vec<ConfigChange>,
    },
    /// A new interaction was accepted by the engine (it is routed next: `Offered` or
    /// `Queued` follows).
    Created {
        /// The id it was given.
        interaction: InteractionId,
        /// The queue routing rules (or the request) chose.
        queue: Arc<str>,
        /// Channel name.
        channel: Arc<str>,
        /// Its priority.
        priority: i32,
        /// The routing rule that matched, if one did.
        rule: Option<Arc<str>>,
    },
    /// The interaction waits in a queue (after submit, reject, transfer, relaxation…).
    Queued {
        /// Interaction.
        interaction: InteractionId,
        /// Queue.
        queue: Arc<str>,
        /// Next relaxation step and when it is due.
        next_relaxation: Option<(u16, TimeMs)>,
        /// When the preferred agent's exclusivity ends.
        preferred_fallback_ms: Option<TimeMs>,
    },
    /// Offered to an agent; its capacity is reserved.
    Offered {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
        /// The queue the interaction belongs to.
        queue: Arc<str>,
        /// Channel name.
        channel: Arc<str>,
        /// Offer number for this interaction (timers carry it).
        offer_seq: u32,
        /// When the offer times out.
        deadline_ms: TimeMs,
        /// Accepted on the agent's behalf (auto-accept channel).
        auto_accepted: bool,
    },
    /// The agent accepted; the interaction is assigned.
    Accepted {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
    },
    /// The agent rejected the offer.
    Rejected {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
    },
    /// The agent let the offer time out.
    OfferTimedOut {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
    },
    /// The offer was withdrawn.
    OfferRescinded {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
        /// Why.
        reason: RescindReason,
    },
    /// The agent completed the interaction. Capacity stays held until
    /// `wrap_up_until_ms` when there is one.
    Completed {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
        /// Wrap-up code given.
        wrap_up_code: Option<String>,
        /// End of wrap-up, if the queue has one.
        wrap_up_until_ms: Option<TimeMs>,
    },
    /// Wrap-up ended; the agent's capacity is free.
    WrapUpEnded {
        /// Interaction.
        interaction: InteractionId,
        /// Agent.
        agent: Arc<str>,
    },
    /// The customer left before being served.
    Abandoned {
        /// Interaction.
        interaction: InteractionId,
        /// Queue.
        queue: Arc<str>,
        /// State when the customer left (queued or offered).
        previous_state: InteractionState,
    },
    /// Moved to another agent or queue, keeping id, age and history.
    Transferred {
        /// Interaction.
        interaction: InteractionId,
        /// The agent who transferred it, if any.
        from_agent: Option<Arc<str>>,
        /// Destination.
        to: TransferTarget,
    },
    /// A relaxation step applied.
    Relaxed {
        /// Interaction.
        interaction: InteractionId,
        /// Queue.
        queue: Arc<str>,
        /// Step number (0-based).
        step: u16,
    },
    /// The preferred agent's time ran out; any eligible agent may now take it.
    PreferredFallback {
        /// Interaction.
        interaction: InteractionId,
    },
    /// The queue's `max_offers` was reached.
    OfferLimitReached {
        /// Interaction.
        interaction: InteractionId,
        /// Queue.
        queue: Arc<str>,
        /// Offers made in this queue.
        offers: u32,
    },
    /// A message was added to the conversation's transcript.
    MessagePosted {
        /// Interaction.
        interaction: InteractionId,
        /// The message.
        message: crate::model::Message,
    },
    /// An agent's presence changed (by the agent, a supervisor, or the engine after
    /// missed offers).
    PresenceChanged {
        /// Agent.
        agent: Arc<str>,
        /// New presence.
        presence: Presence,
    },
}

/// A timer the engine asked for; hand it back to [`crate::Engine::on_timer`] when due.
/// Stale timers (the offer was answered, the interaction moved on) are ignored there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum Timer {
    /// The offer `offer_seq` of an interaction times out.
    OfferTimeout {
        /// Interaction.
        interaction: InteractionId,
        /// Which offer.
        offer_seq: u32,
    },
    /// Wrap-up ends.
    WrapUpEnd {
        /// Interaction.
        interaction: InteractionId,
    },
    /// A relaxation step is due.
    Relaxation {
        /// Interaction.
        interaction: InteractionId,
        /// Step number.
        step: u16,
    },
    /// The preferred agent's exclusivity ends.
    PreferredFallback {
        /// Interaction.
        interaction: InteractionId,
    },
}

impl Event {
    /// The timers this event asks for, with their due times.
    pub fn timers(&self, mut arm: impl FnMut(TimeMs, Timer)) {
        match self {
            Event::Offered {
                interaction,
                offer_seq,
                deadline_ms,
                auto_accepted: false,
                ..
            } => arm(
                *deadline_ms,
                Timer::OfferTimeout {
                    interaction: *interaction,
                    offer_seq: *offer_seq,
                },
            ),
            Event::Completed {
                interaction,
                wrap_up_until_ms: Some(until),
                ..
            } => arm(
                *until,
                Timer::WrapUpEnd {
                    interaction: *interaction,
                },
            ),
            Event::Queued {
                interaction,
                next_relaxation,
                preferred_fallback_ms,
                ..
            } => {
                if let Some((step, due)) = next_relaxation {
                    arm(
                        *due,
                        Timer::Relaxation {
                            interaction: *interaction,
                            step: *step,
                        },
                    );
                }
                if let Some(due) = preferred_fallback_ms {
                    arm(
                        *due,
                        Timer::PreferredFallback {
                            interaction: *interaction,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// The interaction this event is about, if any.
    pub fn interaction(&self) -> Option<InteractionId> {
        match self {
            Event::Created { interaction, .. }
            | Event::Queued { interaction, .. }
            | Event::Offered { interaction, .. }
            | Event::Accepted { interaction, .. }
            | Event::Rejected { interaction, .. }
            | Event::OfferTimedOut { interaction, .. }
            | Event::OfferRescinded { interaction, .. }
            | Event::Completed { interaction, .. }
            | Event::WrapUpEnded { interaction, .. }
            | Event::Abandoned { interaction, .. }
            | Event::Transferred { interaction, .. }
            | Event::Relaxed { interaction, .. }
            | Event::PreferredFallback { interaction }
            | Event::OfferLimitReached { interaction, .. }
            | Event::MessagePosted { interaction, .. } => Some(*interaction),
            Event::PresenceChanged { .. } | Event::Configured { .. } => None,
        }
    }
}

/// A deterministic timer queue for single-threaded drivers: arm from events, pop what is
/// due in (time, arming order) order.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: BTreeMap<(TimeMs, u64), Timer>,
    sequence: u64,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms every timer the events ask for.
    pub fn arm_from(&mut self, events: &[Event]) {
        for event in events {
            event.timers(|due, timer| self.arm(due, timer));
        }
    }

    /// Arms one timer.
    pub fn arm(&mut self, due_ms: TimeMs, timer: Timer) {
        self.sequence += 1;
        self.timers.insert((due_ms, self.sequence), timer);
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<TimeMs> {
        self.timers.keys().next().map(|(due, _)| *due)
    }

    /// Removes and returns the earliest timer due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: TimeMs) -> Option<(TimeMs, Timer)> {
        let (&(due, seq), _) = self.timers.iter().next()?;
        if due > now_ms {
            return None;
        }
        self.timers.remove(&(due, seq)).map(|t| (due, t))
    }

    /// Timers armed and not yet popped.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}
