//! The durable event log: every state change is a record appended before anyone is told.
//!
//! A [`Record`] holds one operation that changed the engine — the [`Command`] with the
//! time it ran at — and every [`Event`] it produced (created, queued, offered, accepted,
//! rejected, timed out, transferred, completed, abandoned, presence changes,
//! configuration). Records are encoded with MessagePack (rmp-serde), framed with a
//! CRC-32 checksum that also covers the key (see [`codec`]), and appended under
//! monotonic big-endian `u64` keys to a [`LogStore`] — sled by default
//! ([`SledStore`]), an in-memory store for tests ([`MemoryStore`]), one that keeps nothing for the
//! simulator ([`DiscardStore`]).
//!
//! Recovery replays the newest snapshot, then every record after it, through the engine
//! and checks that each replayed operation produced exactly the events the record holds:
//! a replay that would diverge from what clients were told refuses to start instead.
//! [`Journal`] is the durable front of the engine: it sequences operations, appends
//! them, acknowledges only once they are durable (group commit), keeps the timers,
//! takes snapshots and truncates the log behind them.

pub mod codec;
mod node;
#[cfg(feature = "sled")]
mod sled_store;
mod store;

pub use node::{
    Ack, DataDirLock, Durability, Journal, JournalConfig, JournalError, Observer, Published,
    RecoveryReport, TailCut, replay,
};
#[cfg(feature = "sled")]
pub use sled_store::SledStore;
pub use store::{DiscardStore, LogStore, MemoryStore, RawEntry};

use crate::InteractionId;
use crate::engine::Engine;
use crate::error::Result;

use crate::events::{ChangeKind, ConfigChange, Event, Timer, TransferTarget};
use crate::image::EngineImage;
use crate::model::{CenterConfig, Message, NewInteraction, Presence, TimeMs};
use serde::{Deserialize, Serialize};

/// One operation that changes the engine's state: what a record replays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Replace the configuration (channels, skills, agents, queues, rules, wrap-up
    /// codes, settings). The first record of a log is always one.
    Configure {
        /// The whole new configuration.
        config: CenterConfig,
    },
    /// A new interaction.
    Submit {
        /// The request.
        request: NewInteraction,
    },
    /// The customer left.
    Abandon {
        /// Interaction.
        interaction: InteractionId,
    },
    /// An agent's presence changed.
    SetPresence {
        /// Agent.
        agent: String,
        /// New presence.
        presence: Presence,
    },
    /// An agent accepted its offer.
    Accept {
        /// Agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
    },
    /// An agent rejected its offer.
    Reject {
        /// Agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
    },
    /// An agent completed its interaction.
    Complete {
        /// Agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
        /// Wrap-up code.
        wrap_up_code: Option<String>,
    },
    /// An agent ended its wrap-up before the queue's wrap-up time ("ready").
    EndWrapUp {
        /// Agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
    },
    /// An agent transferred its interaction.
    Transfer {
        /// Agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
        /// Destination.
        to: TransferTarget,
    },
    /// A message joined a conversation's transcript.
    Post {
        /// Interaction.
        interaction: InteractionId,
        /// The message.
        message: Message,
    },
    /// A timer fired (offer timeout, wrap-up end, relaxation step, preferred fallback).
    Timer {
        /// The timer.
        timer: Timer,
    },
    /// The server restarted: [`Engine::recover`].
    Restart,
    /// An agent's reconnect grace period ended: [`Engine::reclaim_work`].
    ReclaimWork {
        /// Agent.
        agent: String,
    },
    /// The journal continued from a snapshot of the state: `restore(export(engine))`.
    /// Written under the sequencer when a snapshot is taken; the snapshot holds the
    /// state after this record.
    Rebase,
    /// Forget interactions that finished before `finished_before_ms` (logged before a
    /// snapshot, so memory and snapshots stay bounded over a long run).
    PurgeFinished {
        /// Cutoff.
        finished_before_ms: TimeMs,
    },
}

impl Command {
    /// A short name for logs and acknowledgements.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Configure { .. } => "configure",
            Command::Submit { .. } => "submit",
            Command::Abandon { .. } => "abandon",
            Command::SetPresence { .. } => "set_presence",
            Command::Accept { .. } => "accept",
            Command::Reject { .. } => "reject",
            Command::Complete { .. } => "complete",
            Command::EndWrapUp { .. } => "end_wrap_up",
            Command::Transfer { .. } => "transfer",
            Command::Post { .. } => "post",
            Command::Timer { .. } => "timer",
            Command::Restart => "restart",
            Command::ReclaimWork { .. } => "reclaim_work",
            Command::PurgeFinished { .. } => "purge_finished",
            Command::Rebase => "rebase",
        }
    }

    /// Runs the command on `engine`. `Ok(false)` means it changed nothing (a stale
    /// timer, a grace period that ended after the agent came back): nothing to log.
    /// `Configure` here is a reconfiguration; a log's first record builds the engine
    /// (see [`Command::build`]).
    pub fn run(&self, engine: &Engine, now_ms: TimeMs, out: &mut Vec<Event>) -> Result<bool> {
        match self {
            Command::Configure { config } => engine.reconfigure(config.clone(), now_ms, out)?,
            Command::Submit { request } => {
                engine.submit(request.clone(), now_ms, out)?;
            }
            Command::Abandon { interaction } => engine.abandon(*interaction, now_ms, out)?,
            Command::SetPresence { agent, presence } => {
                engine.set_presence(agent, presence.clone(), now_ms, out)?
            }
            Command::Accept { agent, interaction } => {
                engine.accept(agent, *interaction, now_ms, out)?
            }
            Command::Reject { agent, interaction } => {
                engine.reject(agent, *interaction, now_ms, out)?
            }
            Command::Complete {
                agent,
                interaction,
                wrap_up_code,
            } => engine.complete(agent, *interaction, wrap_up_code.as_deref(), now_ms, out)?,
            Command::EndWrapUp { agent, interaction } => {
                engine.end_wrap_up_early(agent, *interaction, now_ms, out)?
            }
            Command::Transfer {
                agent,
                interaction,
                to,
            } => engine.transfer(agent, *interaction, to.clone(), now_ms, out)?,
            Command::Post {
                interaction,
                message,
            } => engine.post_message(*interaction, message.clone(), now_ms, out)?,
            Command::Timer { timer } => return Ok(engine.on_timer(*timer, now_ms, out)),
            Command::Restart => {
                engine.recover(now_ms, out);
            }
            Command::ReclaimWork { agent } => {
                let (moved, kept) = engine.reclaim_work(agent, now_ms, out)?;
                for (interaction, why) in kept {
                    tracing::warn!(%agent, %interaction, error = %why, "kept by its agent: its queue cannot take it back");
                }
                return Ok(moved > 0);
            }
            // Replaces the engine: the journal and replay handle it themselves.
            Command::Rebase => return Ok(false),
            Command::PurgeFinished { finished_before_ms } => {
                return Ok(engine.purge_finished_before(*finished_before_ms) > 0);
            }
        }
        Ok(true)
    }
}

/// What changed between two configurations, for the `configured` event: every channel,
/// skill, agent, queue and routing rule added, removed or changed (by name or id), plus
/// the default queue and the settings. A queue's wrap-up codes, policy and relaxation
/// are part of the queue.
pub fn config_changes(old: &CenterConfig, new: &CenterConfig) -> Vec<ConfigChange> {
    use std::collections::BTreeMap;
    fn diff<T: PartialEq>(
        kind: &'static str,
        old: &[T],
        new: &[T],
        id: impl Fn(&T) -> &str,
        out: &mut Vec<ConfigChange>,
    ) {
        let before: BTreeMap<&str, &T> = old.iter().map(|t| (id(t), t)).collect();
        let after: BTreeMap<&str, &T> = new.iter().map(|t| (id(t), t)).collect();
        for (name, t) in &after {
            let change = match before.get(name) {
                None => ChangeKind::Added,
                Some(b) if *b != *t => ChangeKind::Changed,
                Some(_) => continue,
            };
            out.push(ConfigChange {
                kind: kind.to_string(),
                id: name.to_string(),
                change,
            });
        }
        for name in before.keys().filter(|n| !after.contains_key(*n)) {
            out.push(ConfigChange {
                kind: kind.to_string(),
                id: name.to_string(),
                change: ChangeKind::Removed,
            });
        }
    }
    let mut out = Vec::new();
    diff(
        "channel",
        &old.channels,
        &new.channels,
        |c| &c.name,
        &mut out,
    );
    diff("skill", &old.skills, &new.skills, |s| &s.name, &mut out);
    diff("agent", &old.agents, &new.agents, |a| &a.id, &mut out);
    diff("queue", &old.queues, &new.queues, |q| &q.id, &mut out);
    diff(
        "rule",
        &old.routing.rules,
        &new.routing.rules,
        |r| &r.name,
        &mut out,
    );
    if old.routing.default_queue != new.routing.default_queue {
        out.push(ConfigChange {
            kind: "default_queue".into(),
            id: new.routing.default_queue.clone().unwrap_or_default(),
            change: ChangeKind::Changed,
        });
    }
    if old.settings != new.settings {
        out.push(ConfigChange {
            kind: "settings".into(),
            id: String::new(),
            change: ChangeKind::Changed,
        });
    }
    out
}

/// One log record: an operation, when it ran, and what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's key (also in the frame's checksum; stored twice to catch a record
    /// filed under the wrong key).
    pub seq: u64,
    /// The time the operation ran at (ms since the Unix epoch for a server).
    pub now_ms: TimeMs,
    /// The operation.
    pub command: Command,
    /// Every event it produced, in order.
    pub events: Vec<Event>,
}

/// A snapshot: the engine's whole state after record `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last record the image includes.
    pub seq: u64,
    /// When it was taken.
    pub taken_ms: TimeMs,
    /// The state.
    pub image: EngineImage,
}
