//! A conversation's transcript: every message (customer, agent, virtual agent) plus a
//! system line for each routing step, in order, with timestamps and channels.
//!
//! Messages are durable: they are logged (`post` records) and kept in the engine's
//! history of the interaction, so a transcript built live from events and one rebuilt
//! from the engine after a restart are the same, entry for entry.

use omniroute_engine::{
    Event, HistoryEntry, Message, RescindReason, Sender, TimeMs, TransferTarget,
};
use serde::{Deserialize, Serialize};

/// One line of a transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// When it was logged.
    pub at_ms: TimeMs,
    /// Who wrote it (`system` for routing steps).
    pub from: Sender,
    /// The agent or virtual agent that wrote it.
    pub from_id: Option<String>,
    /// The channel (empty for routing steps).
    pub channel: String,
    /// The text.
    pub text: String,
    /// When the writer wrote it (a virtual agent's exchange is logged on escalation).
    pub sent_ms: TimeMs,
}

impl TranscriptEntry {
    fn message(at_ms: TimeMs, m: &Message) -> Self {
        TranscriptEntry {
            at_ms,
            from: m.from,
            from_id: m.from_id.clone(),
            channel: m.channel.clone(),
            text: m.text.clone(),
            sent_ms: m.sent_ms,
        }
    }

    fn system(at_ms: TimeMs, text: String) -> Self {
        TranscriptEntry {
            at_ms,
            from: Sender::System,
            from_id: None,
            channel: String::new(),
            text,
            sent_ms: at_ms,
        }
    }
}

fn rescind_how(reason: RescindReason) -> &'static str {
    match reason {
        RescindReason::CustomerLeft => "customer_left",
        RescindReason::AgentOffline => "agent_offline",
        RescindReason::ServerRestart => "server_restart",
    }
}

/// The transcript line an event adds, if any (routing steps that matter to a reader).
pub fn from_event(at_ms: TimeMs, event: &Event) -> Option<TranscriptEntry> {
    let text = match event {
        Event::Created { queue, .. } => format!("created in queue {queue}"),
        Event::Offered { agent, .. } => format!("offered to {agent}"),
        Event::Accepted { agent, .. } => format!("accepted by {agent}"),
        Event::Rejected { agent, .. } => format!("offer to {agent} ended: rejected"),
        Event::OfferTimedOut { agent, .. } => format!("offer to {agent} ended: timed_out"),
        Event::OfferRescinded { agent, reason, .. } => {
            format!("offer to {agent} ended: {}", rescind_how(*reason))
        }
        Event::Transferred { from_agent, to, .. } => {
            let to = match to {
                TransferTarget::Agent(a) => format!("agent:{a}"),
                TransferTarget::Queue(q) => format!("queue:{q}"),
            };
            match from_agent {
                Some(a) => format!("transferred by {a} to {to}"),
                None => format!("transferred to {to}"),
            }
        }
        Event::Completed {
            agent,
            wrap_up_code,
            ..
        } => match wrap_up_code {
            Some(code) => format!("completed by {agent} ({code})"),
            None => format!("completed by {agent}"),
        },
        Event::Abandoned { .. } => "customer left".to_string(),
        Event::MessagePosted { message, .. } => {
            return Some(TranscriptEntry::message(at_ms, message));
        }
        _ => return None,
    };
    Some(TranscriptEntry::system(at_ms, text))
}

/// The transcript line a history entry stands for (the same as [`from_event`] gives for
/// the event that wrote it).
pub fn from_history(entry: &HistoryEntry) -> Option<TranscriptEntry> {
    let at = entry.at_ms();
    let text = match entry {
        HistoryEntry::Created { queue, .. } => format!("created in queue {queue}"),
        HistoryEntry::Offered { agent, .. } => format!("offered to {agent}"),
        HistoryEntry::Accepted { agent, .. } => format!("accepted by {agent}"),
        HistoryEntry::OfferEnded { agent, how, .. } => format!("offer to {agent} ended: {how}"),
        HistoryEntry::Transferred { from_agent, to, .. } => match from_agent {
            Some(a) => format!("transferred by {a} to {to}"),
            None => format!("transferred to {to}"),
        },
        HistoryEntry::Completed {
            agent,
            wrap_up_code,
            ..
        } => match wrap_up_code {
            Some(code) => format!("completed by {agent} ({code})"),
            None => format!("completed by {agent}"),
        },
        HistoryEntry::Abandoned { .. } => "customer left".to_string(),
        HistoryEntry::Message { at_ms, message } => {
            return Some(TranscriptEntry::message(*at_ms, message));
        }
        _ => return None,
    };
    Some(TranscriptEntry::system(at, text))
}
