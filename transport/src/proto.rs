//! The messages: what clients send (each with an `id` the reply echoes), what the
//! server answers, and the roles allowed to send each. Pushes (offers, messages,
//! presence, …) are the actor runtime's [`Push`](omniroute_actors::Push) values, framed
//! as they are; see docs/PROTOCOL.md.

use omniroute_actors::engine::{InteractionId, TransferTarget};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Configures everything.
    Admin,
    /// Watches and steers (statistics, explanations, forced presence).
    Supervisor,
    /// One agent: its own presence, offers and work.
    Agent,
    /// A channel adapter: submits customer work and customer messages.
    Channel,
}

/// Presence as a client sets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceArg {
    /// Ready for offers.
    Available,
    /// Logged in, taking no offers.
    Away,
    /// Logged out.
    Offline,
}

/// Everything a client may send. Each has an `id` (chosen by the client, echoed in the
/// reply).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message of a session.
    Hello {
        /// Request id.
        id: u64,
        /// The session's token.
        token: String,
    },
    /// Channel: a customer message — joins their open conversation, continues a
    /// just-ended one, starts a virtual-agent or a new conversation.
    Inbound {
        /// Request id.
        id: u64,
        /// Channel name.
        channel: String,
        /// Customer id or contact point.
        customer: String,
        /// The message.
        text: String,
        /// Attributes for a new conversation.
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        /// Queue for a new conversation (else routing rules).
        #[serde(default)]
        queue: Option<String>,
        /// Start with this virtual agent.
        #[serde(default)]
        virtual_agent: Option<String>,
    },
    /// Channel: the customer left.
    CustomerLeft {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
    },
    /// Agent: set own presence (supervisor: any agent's, with `agent`).
    SetPresence {
        /// Request id.
        id: u64,
        /// New presence.
        presence: PresenceArg,
        /// Reason when away.
        #[serde(default)]
        reason: Option<String>,
        /// Supervisor only: the agent to force.
        #[serde(default)]
        agent: Option<String>,
    },
    /// Agent: accept an offer.
    Accept {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
    },
    /// Agent: reject an offer.
    Reject {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
    },
    /// Agent: complete assigned work.
    Complete {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
        /// Wrap-up code.
        #[serde(default)]
        wrap_up_code: Option<String>,
    },
    /// Agent: transfer assigned work.
    Transfer {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
        /// Destination.
        to: TransferTarget,
    },
    /// Agent: a message to the customer.
    SendMessage {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
        /// Text.
        text: String,
        /// Channel (default: the one the customer last wrote on).
        #[serde(default)]
        channel: Option<String>,
    },
    /// Agent, supervisor: a conversation with its transcript.
    Conversation {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
    },
    /// Agent, supervisor: a customer's conversations.
    History {
        /// Request id.
        id: u64,
        /// Customer.
        customer: String,
    },
    /// Agent: own state; supervisor: any agent's (`agent`).
    AgentView {
        /// Request id.
        id: u64,
        /// Supervisor only: which agent.
        #[serde(default)]
        agent: Option<String>,
    },
    /// Supervisor: a queue's statistics.
    QueueStats {
        /// Request id.
        id: u64,
        /// Queue.
        queue: String,
    },
    /// Admin, supervisor: the whole configuration.
    GetConfig {
        /// Request id.
        id: u64,
    },
    /// Admin: replace the whole configuration (channels, skills, agents, queues,
    /// routing rules, wrap-up codes, settings): read it with `get_config`, change what
    /// you need, send it back. Validated as a whole; logged, so it survives restarts.
    Configure {
        /// Request id.
        id: u64,
        /// The new configuration.
        config: Box<omniroute_actors::engine::CenterConfig>,
    },
}

impl ClientMsg {
    /// Every `type` a client may send.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "inbound",
        "customer_left",
        "set_presence",
        "accept",
        "reject",
        "complete",
        "transfer",
        "send_message",
        "conversation",
        "history",
        "agent_view",
        "queue_stats",
        "get_config",
        "configure",
    ];

    /// The request id.
    pub fn id(&self) -> u64 {
        match self {
            ClientMsg::Hello { id, .. }
            | ClientMsg::Inbound { id, .. }
            | ClientMsg::CustomerLeft { id, .. }
            | ClientMsg::SetPresence { id, .. }
            | ClientMsg::Accept { id, .. }
            | ClientMsg::Reject { id, .. }
            | ClientMsg::Complete { id, .. }
            | ClientMsg::Transfer { id, .. }
            | ClientMsg::SendMessage { id, .. }
            | ClientMsg::Conversation { id, .. }
            | ClientMsg::History { id, .. }
            | ClientMsg::AgentView { id, .. }
            | ClientMsg::QueueStats { id, .. }
            | ClientMsg::GetConfig { id }
            | ClientMsg::Configure { id, .. } => *id,
        }
    }

    /// Its wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::Inbound { .. } => "inbound",
            ClientMsg::CustomerLeft { .. } => "customer_left",
            ClientMsg::SetPresence { .. } => "set_presence",
            ClientMsg::Accept { .. } => "accept",
            ClientMsg::Reject { .. } => "reject",
            ClientMsg::Complete { .. } => "complete",
            ClientMsg::Transfer { .. } => "transfer",
            ClientMsg::SendMessage { .. } => "send_message",
            ClientMsg::Conversation { .. } => "conversation",
            ClientMsg::History { .. } => "history",
            ClientMsg::AgentView { .. } => "agent_view",
            ClientMsg::QueueStats { .. } => "queue_stats",
            ClientMsg::GetConfig { .. } => "get_config",
            ClientMsg::Configure { .. } => "configure",
        }
    }

    /// Whether `role` may send it (an agent acts only as itself: checked again where
    /// the agent is named).
    pub fn allowed(&self, role: Role) -> bool {
        use Role::*;
        match self {
            ClientMsg::Hello { .. } => true,
            ClientMsg::Inbound { .. } | ClientMsg::CustomerLeft { .. } => role == Channel,
            ClientMsg::SetPresence { agent, .. } => match role {
                Agent => agent.is_none(),
                Supervisor => agent.is_some(),
                _ => false,
            },
            ClientMsg::Accept { .. }
            | ClientMsg::Reject { .. }
            | ClientMsg::Complete { .. }
            | ClientMsg::Transfer { .. }
            | ClientMsg::SendMessage { .. } => role == Agent,
            ClientMsg::Conversation { .. } | ClientMsg::History { .. } => {
                matches!(role, Agent | Supervisor)
            }
            ClientMsg::AgentView { agent, .. } => match role {
                Agent => agent.is_none(),
                Supervisor => agent.is_some(),
                _ => false,
            },
            ClientMsg::QueueStats { .. } => role == Supervisor,
            ClientMsg::GetConfig { .. } => matches!(role, Admin | Supervisor),
            ClientMsg::Configure { .. } => role == Admin,
        }
    }
}

/// What the server sends in answer to a request (pushes are framed separately).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The session is authenticated.
    Welcome {
        /// The hello's id.
        id: u64,
        /// Its role.
        role: Role,
        /// The agent it is bound to (agent role).
        #[serde(default)]
        agent: Option<String>,
    },
    /// Done; `data` holds the result (its shape depends on the request, see
    /// docs/PROTOCOL.md).
    Ok {
        /// The request's id.
        id: u64,
        /// The result, if any.
        #[serde(default)]
        data: Option<rmpv::Value>,
    },
    /// Refused: a stable `code` and what was wrong.
    Error {
        /// The request's id, when it could be read.
        #[serde(default)]
        id: Option<u64>,
        /// Stable code.
        code: String,
        /// What was wrong.
        message: String,
    },
}
