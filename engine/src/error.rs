//! The engine's one error type. Every variant says what was wrong and where; an operation
//! that returns an error has left the engine's state unchanged.

use crate::InteractionId;
use crate::model::InteractionState;

/// Why an engine operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No agent with this id.
    #[error("unknown agent `{0}`")]
    UnknownAgent(String),
    /// No queue with this id.
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// A state image (a snapshot) does not fit its own configuration.
    #[error("invalid state image: {0}")]
    InvalidImage(String),
    /// No skill with this name.
    #[error("unknown skill `{skill}` (referenced by {context})")]
    UnknownSkill {
        /// The skill name.
        skill: String,
        /// Which entity referenced it.
        context: String,
    },
    /// A message too long to keep.
    #[error("message is {len} bytes; the limit is {max}")]
    MessageTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No channel with this name.
    #[error("unknown channel `{channel}` (referenced by {context})")]
    UnknownChannel {
        /// The channel name.
        channel: String,
        /// Which entity referenced it.
        context: String,
    },
    /// No live interaction with this id.
    #[error("unknown interaction {0}")]
    UnknownInteraction(InteractionId),
    /// A configuration value is invalid.
    #[error("invalid configuration: {context}: {message}")]
    InvalidConfig {
        /// Entity and field, e.g. `agent a-1 capacity.total_units`.
        context: String,
        /// What was expected.
        message: String,
    },
    /// Proficiency outside 1–10.
    #[error("proficiency {value} out of range 1-10 for skill `{skill}` ({context})")]
    ProficiencyOutOfRange {
        /// Skill name.
        skill: String,
        /// The bad value.
        value: u8,
        /// Which entity.
        context: String,
    },
    /// The queue already holds `max_waiting` interactions.
    #[error("queue `{queue}` is full ({max_waiting} waiting)")]
    QueueFull {
        /// Queue id.
        queue: String,
        /// Its limit.
        max_waiting: u32,
    },
    /// No routing rule matched and there is no default queue.
    #[error("no routing rule matches channel `{channel}` and there is no default queue")]
    NoRoute {
        /// The interaction's channel.
        channel: String,
    },
    /// The queue does not take this channel.
    #[error("queue `{queue}` does not accept channel `{channel}`")]
    ChannelNotAccepted {
        /// Queue id.
        queue: String,
        /// Channel.
        channel: String,
    },
    /// The interaction is not in a state that allows the operation.
    #[error("interaction {interaction} is {state:?}; cannot {operation}")]
    InvalidState {
        /// Interaction.
        interaction: InteractionId,
        /// Its current state.
        state: InteractionState,
        /// What was attempted.
        operation: &'static str,
    },
    /// The offer is not (or no longer) this agent's: rescinded, timed out, or another's.
    #[error("interaction {interaction} is not offered to agent `{agent}`")]
    NotOfferedToAgent {
        /// Interaction.
        interaction: InteractionId,
        /// The agent that tried.
        agent: String,
    },
    /// The interaction is assigned to someone else (or to nobody).
    #[error("interaction {interaction} is not assigned to agent `{agent}`")]
    NotAssignedToAgent {
        /// Interaction.
        interaction: InteractionId,
        /// The agent that tried.
        agent: String,
    },
    /// The wrap-up code is not in the queue's list.
    #[error("wrap-up code `{code}` is not allowed in queue `{queue}` (allowed: {allowed})")]
    InvalidWrapUpCode {
        /// The code given.
        code: String,
        /// Queue id.
        queue: String,
        /// The allowed codes, comma-separated.
        allowed: String,
    },
    /// The queue requires a wrap-up code and none was given.
    #[error("queue `{queue}` requires a wrap-up code (allowed: {allowed})")]
    WrapUpCodeRequired {
        /// Queue id.
        queue: String,
        /// The allowed codes.
        allowed: String,
    },
    /// A transfer target agent cannot take the interaction now.
    #[error("agent `{agent}` cannot take interaction {interaction} now: {reason}")]
    AgentUnavailable {
        /// Target agent.
        agent: String,
        /// Interaction.
        interaction: InteractionId,
        /// Why (presence, capacity).
        reason: String,
    },
    /// An entity is still in use and cannot be removed.
    #[error("{what} is in use: {by}")]
    InUse {
        /// What was to be removed.
        what: String,
        /// What still uses it.
        by: String,
    },
    /// A duplicate id or name in configuration.
    #[error("duplicate {kind} `{id}`")]
    Duplicate {
        /// Entity kind.
        kind: &'static str,
        /// The id.
        id: String,
    },
}

/// Shorthand.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
