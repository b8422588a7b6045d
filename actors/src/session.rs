//! Agent sessions: what the server pushes to a connected agent, and the bounded
//! per-session buffer that carries it.

use crate::transcript::TranscriptEntry;
use omniroute_engine::{InteractionId, Presence, TimeMs, TransferTarget, WorkSnapshot};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// An offer as pushed to the agent: the work and everything known about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferPush {
    /// Interaction.
    pub interaction: InteractionId,
    /// Its queue.
    pub queue: String,
    /// Its channel.
    pub channel: String,
    /// Offer number (answers name it implicitly: one offer per interaction at a time).
    pub offer_seq: u32,
    /// When the offer times out (Unix ms).
    pub deadline_ms: TimeMs,
    /// Accepted on the agent's behalf.
    pub auto_accepted: bool,
    /// The customer.
    pub customer: String,
    /// The interaction's attributes, including what a virtual agent collected.
    pub attributes: BTreeMap<String, String>,
    /// The transcript so far (a transferred conversation carries all of it).
    pub transcript: Vec<TranscriptEntry>,
}

impl OfferPush {
    /// The push of an `offered` event (`None` for any other), with the context the
    /// caller holds.
    pub(crate) fn of(
        event: &omniroute_engine::Event,
        customer: String,
        attributes: BTreeMap<String, String>,
        transcript: Vec<TranscriptEntry>,
    ) -> Option<OfferPush> {
        let omniroute_engine::Event::Offered {
            interaction,
            queue,
            channel,
            offer_seq,
            deadline_ms,
            auto_accepted,
            ..
        } = event
        else {
            return None;
        };
        Some(OfferPush {
            interaction: *interaction,
            queue: queue.to_string(),
            channel: channel.to_string(),
            offer_seq: *offer_seq,
            deadline_ms: *deadline_ms,
            auto_accepted: *auto_accepted,
            customer,
            attributes,
            transcript,
        })
    }
}

/// What an agent's actor tells the agent's sessions, unasked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Push {
    /// New work offered.
    Offer(Arc<OfferPush>),
    /// An offer ended without acceptance: `rejected`, `timed_out`, `customer_left`,
    /// `agent_offline`, `server_restart`.
    OfferEnded {
        /// Interaction.
        interaction: InteractionId,
        /// How.
        reason: String,
    },
    /// The agent accepted: the work is assigned.
    Assigned {
        /// Interaction.
        interaction: InteractionId,
    },
    /// A new line in the transcript of work the agent holds.
    Message {
        /// Interaction.
        interaction: InteractionId,
        /// The line.
        entry: TranscriptEntry,
    },
    /// Completed; wrap-up runs until the time given, if any.
    Completed {
        /// Interaction.
        interaction: InteractionId,
        /// End of wrap-up.
        wrap_up_until_ms: Option<TimeMs>,
    },
    /// Wrap-up over; the capacity is free.
    WrapUpEnded {
        /// Interaction.
        interaction: InteractionId,
    },
    /// The agent transferred the work away.
    TransferredAway {
        /// Interaction.
        interaction: InteractionId,
        /// Where.
        to: TransferTarget,
    },
    /// The agent's presence changed (by the agent, a supervisor, or missed offers).
    Presence {
        /// New presence.
        presence: Presence,
    },
    /// This session fell behind: `missed` pushes were dropped for it. Re-read the
    /// agent's state ([`AgentView`]) to resynchronise.
    Lagged {
        /// Pushes dropped.
        missed: u64,
    },
    /// The agent's actor was restarted after a failure: here is its whole state.
    Resync(AgentView),
}

/// An agent as its actor sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Agent id.
    pub agent: String,
    /// Presence.
    pub presence: Presence,
    /// Work in hand (offered, assigned, wrap-up).
    pub work: Vec<WorkSnapshot>,
    /// Offers outstanding and their deadlines.
    pub offers: Vec<(InteractionId, TimeMs)>,
    /// Offers missed in a row (timed out), reset by an acceptance.
    pub consecutive_misses: u32,
    /// Sessions connected.
    pub sessions: usize,
    /// Restart grace running after the last session dropped: when it ends.
    pub grace_until_ms: Option<TimeMs>,
}

/// Where a session's pushes go.
pub(crate) enum PushTo {
    /// A bounded buffer the session reads (it may fall behind: see `Lagged`).
    Buffer(mpsc::Sender<Push>),
    /// A function called with each push as the agent's actor sends it, in order (an
    /// in-process client that handles pushes at once; it never falls behind). It runs
    /// on the actor's task: it must not block.
    Call(Arc<dyn Fn(Push) + Send + Sync>),
}

struct Slot {
    id: u64,
    tx: PushTo,
    missed: u64,
}

/// An agent's connected sessions. Kept outside the agent's actor so a restarted actor
/// finds them again (sessions survive an actor failure).
#[derive(Default)]
pub(crate) struct SessionSet {
    slots: Mutex<Vec<Slot>>,
}

impl SessionSet {
    pub fn add(&self, id: u64, tx: PushTo) {
        self.slots.lock().push(Slot { id, tx, missed: 0 });
    }

    pub fn remove(&self, id: u64) -> usize {
        let mut slots = self.slots.lock();
        slots.retain(|s| s.id != id);
        slots.len()
    }

    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Pushes to every session without waiting: a full buffer drops the push for that
    /// session and counts it; the next push that fits is preceded by `Lagged`.
    pub fn push(&self, push: Push) {
        // Handlers are called after the table's lock is released: one may drop or
        // open a session of this agent.
        let mut first: Option<Arc<dyn Fn(Push) + Send + Sync>> = None;
        let mut more = Vec::new();
        let mut slots = self.slots.lock();
        slots.retain_mut(|slot| {
            let tx = match &slot.tx {
                PushTo::Buffer(tx) => tx,
                PushTo::Call(f) => {
                    match first {
                        None => first = Some(f.clone()),
                        Some(_) => more.push(f.clone()),
                    }
                    return true;
                }
            };
            if slot.missed > 0 {
                match tx.try_send(Push::Lagged {
                    missed: slot.missed,
                }) {
                    Ok(()) => slot.missed = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.missed += 1;
                        return true;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            match tx.try_send(push.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.missed += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(slots);
        for f in first.into_iter().chain(more) {
            f(push.clone());
        }
    }
}
