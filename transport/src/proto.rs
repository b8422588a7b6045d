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

impl Role {
    /// Every role, in the order documents list them.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Supervisor, Role::Agent, Role::Channel];

    /// The role's name on the wire, in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Channel => "channel",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    /// A role by its name; the error names the ones there are.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (admin, supervisor, agent, channel)"))
    }
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
        /// Post into this conversation (the customer's, still open) rather than find
        /// it by customer.
        #[serde(default)]
        interaction: Option<InteractionId>,
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
    /// Agent: end a wrap-up before the queue's wrap-up time is over ("ready").
    EndWrapUp {
        /// Request id.
        id: u64,
        /// Interaction.
        interaction: InteractionId,
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
    /// Admin: create one entity, or replace the one with its name/id. Validated with
    /// the whole configuration and logged, as `configure` is.
    Put {
        /// Request id.
        id: u64,
        /// The entity, with a `kind`.
        entity: Box<Entity>,
        /// Rules only: where in the rule list (0 = first); default: a replaced rule
        /// keeps its place, a new one goes last.
        #[serde(default)]
        position: Option<u32>,
    },
    /// Admin: delete one entity (refused with `bad_config` while something uses it).
    Delete {
        /// Request id.
        id: u64,
        /// What kind of entity.
        kind: EntityKind,
        /// Its name (channel, skill, rule) or id (agent, queue).
        name: String,
    },
    /// Admin: a queue's wrap-up codes (empty: any code or none is accepted).
    SetWrapUpCodes {
        /// Request id.
        id: u64,
        /// Queue.
        queue: String,
        /// The codes.
        codes: Vec<String>,
    },
    /// Admin: the queue for interactions no rule matches (none: refused with
    /// `no_route`).
    SetDefaultQueue {
        /// Request id.
        id: u64,
        /// Queue, or nil.
        #[serde(default)]
        queue: Option<String>,
    },
    /// Admin: a new token; the reply holds it (shown once, stored hashed).
    CreateToken {
        /// Request id.
        id: u64,
        /// Unique name.
        name: String,
        /// Its role.
        role: Role,
        /// The agent an agent token is bound to.
        #[serde(default)]
        agent: Option<String>,
        /// A channel token's channels (empty: every channel).
        #[serde(default)]
        channels: Vec<String>,
    },
    /// Admin: revoke a token; its open sessions are ended at once.
    DeleteToken {
        /// Request id.
        id: u64,
        /// Its name.
        name: String,
    },
    /// Admin: the tokens' names, roles and agents (never the tokens).
    ListTokens {
        /// Request id.
        id: u64,
    },
    /// Supervisor: center statistics now (what `subscribe_stats` pushes).
    Stats {
        /// Request id.
        id: u64,
    },
    /// Supervisor: push `stats` every `interval_ms` (default 1,000; 100 at least)
    /// until `unsubscribe`.
    SubscribeStats {
        /// Request id.
        id: u64,
        /// Interval.
        #[serde(default)]
        interval_ms: Option<u64>,
    },
    /// Supervisor: push every engine event (`event`, `events_lagged`) until
    /// `unsubscribe`.
    SubscribeEvents {
        /// Request id.
        id: u64,
    },
    /// Channel: push what agents write to customers on these
    /// channels (`outbound`) and the end of their conversations (`conversation_ended`),
    /// so the adapter can deliver them; until `unsubscribe`.
    SubscribeOutbound {
        /// Request id.
        id: u64,
        /// Channel names; empty: every channel.
        #[serde(default)]
        channels: Vec<String>,
    },
    /// Supervisor, channel: stop a subscription.
    Unsubscribe {
        /// Request id.
        id: u64,
        /// `stats` or `events`.
        what: Subscription,
    },
    /// Supervisor: why an interaction is where it is (every agent ranked or excluded
    /// with the reason); or, with `queue` and `channel` instead, who would get a new
    /// interaction there now.
    Explain {
        /// Request id.
        id: u64,
        /// The interaction.
        #[serde(default)]
        interaction: Option<InteractionId>,
        /// Or a queue…
        #[serde(default)]
        queue: Option<String>,
        /// …and a channel.
        #[serde(default)]
        channel: Option<String>,
    },
    /// Admin: run the engine's own invariant check (capacity, one offer and one
    /// assignment per interaction, eligibility, work conservation, order) now; the
    /// breaches found. It walks every interaction held: for tests and load tests.
    CheckInvariants {
        /// Request id.
        id: u64,
    },
}

/// One configurable entity, tagged with its `kind`; the other fields are the
/// entity's (docs/CONFIG.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entity {
    /// A channel.
    Channel(omniroute_actors::engine::ChannelDef),
    /// A skill.
    Skill(omniroute_actors::engine::SkillDef),
    /// An agent.
    Agent(omniroute_actors::engine::AgentDef),
    /// A queue (with its wrap-up codes).
    Queue(omniroute_actors::engine::QueueDef),
    /// A routing rule.
    Rule(omniroute_actors::engine::RoutingRule),
    /// The center-wide settings (no name).
    Settings(omniroute_actors::engine::Settings),
}

/// The kinds `delete` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A channel, by name.
    Channel,
    /// A skill, by name.
    Skill,
    /// An agent, by id.
    Agent,
    /// A queue, by id.
    Queue,
    /// A routing rule, by name.
    Rule,
}

/// What a supervisor subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Periodic `stats` pushes.
    Stats,
    /// Every engine event.
    Events,
    /// A channel adapter's outbound messages.
    Outbound,
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
        "end_wrap_up",
        "transfer",
        "send_message",
        "conversation",
        "history",
        "agent_view",
        "queue_stats",
        "get_config",
        "configure",
        "put",
        "delete",
        "set_wrap_up_codes",
        "set_default_queue",
        "create_token",
        "delete_token",
        "list_tokens",
        "stats",
        "subscribe_stats",
        "subscribe_events",
        "subscribe_outbound",
        "unsubscribe",
        "explain",
        "check_invariants",
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
            | ClientMsg::EndWrapUp { id, .. }
            | ClientMsg::Transfer { id, .. }
            | ClientMsg::SendMessage { id, .. }
            | ClientMsg::Conversation { id, .. }
            | ClientMsg::History { id, .. }
            | ClientMsg::AgentView { id, .. }
            | ClientMsg::QueueStats { id, .. }
            | ClientMsg::GetConfig { id }
            | ClientMsg::Configure { id, .. }
            | ClientMsg::Put { id, .. }
            | ClientMsg::Delete { id, .. }
            | ClientMsg::SetWrapUpCodes { id, .. }
            | ClientMsg::SetDefaultQueue { id, .. }
            | ClientMsg::CreateToken { id, .. }
            | ClientMsg::DeleteToken { id, .. }
            | ClientMsg::ListTokens { id }
            | ClientMsg::Stats { id }
            | ClientMsg::SubscribeStats { id, .. }
            | ClientMsg::SubscribeEvents { id }
            | ClientMsg::SubscribeOutbound { id, .. }
            | ClientMsg::Unsubscribe { id, .. }
            | ClientMsg::Explain { id, .. }
            | ClientMsg::CheckInvariants { id } => *id,
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
            ClientMsg::EndWrapUp { .. } => "end_wrap_up",
            ClientMsg::Transfer { .. } => "transfer",
            ClientMsg::SendMessage { .. } => "send_message",
            ClientMsg::Conversation { .. } => "conversation",
            ClientMsg::History { .. } => "history",
            ClientMsg::AgentView { .. } => "agent_view",
            ClientMsg::QueueStats { .. } => "queue_stats",
            ClientMsg::GetConfig { .. } => "get_config",
            ClientMsg::Configure { .. } => "configure",
            ClientMsg::Put { .. } => "put",
            ClientMsg::Delete { .. } => "delete",
            ClientMsg::SetWrapUpCodes { .. } => "set_wrap_up_codes",
            ClientMsg::SetDefaultQueue { .. } => "set_default_queue",
            ClientMsg::CreateToken { .. } => "create_token",
            ClientMsg::DeleteToken { .. } => "delete_token",
            ClientMsg::ListTokens { .. } => "list_tokens",
            ClientMsg::Stats { .. } => "stats",
            ClientMsg::SubscribeStats { .. } => "subscribe_stats",
            ClientMsg::SubscribeEvents { .. } => "subscribe_events",
            ClientMsg::SubscribeOutbound { .. } => "subscribe_outbound",
            ClientMsg::Unsubscribe { .. } => "unsubscribe",
            ClientMsg::Explain { .. } => "explain",
            ClientMsg::CheckInvariants { .. } => "check_invariants",
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
            | ClientMsg::EndWrapUp { .. }
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
            ClientMsg::Configure { .. }
            | ClientMsg::Put { .. }
            | ClientMsg::Delete { .. }
            | ClientMsg::SetWrapUpCodes { .. }
            | ClientMsg::SetDefaultQueue { .. }
            | ClientMsg::CreateToken { .. }
            | ClientMsg::DeleteToken { .. }
            | ClientMsg::ListTokens { .. }
            | ClientMsg::CheckInvariants { .. } => role == Admin,
            ClientMsg::Stats { .. }
            | ClientMsg::SubscribeStats { .. }
            | ClientMsg::SubscribeEvents { .. }
            | ClientMsg::Explain { .. } => role == Supervisor,
            ClientMsg::SubscribeOutbound { .. } => role == Channel,
            ClientMsg::Unsubscribe { .. } => matches!(role, Supervisor | Channel),
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

/// What the server pushes to supervisor sessions that subscribed (agent sessions get
/// the actor runtime's [`Push`](omniroute_actors::Push) values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerPush {
    /// Center statistics (`subscribe_stats`).
    Stats(CenterStats),
    /// One logged operation's events (`subscribe_events`), in log order.
    Event {
        /// The record's sequence number.
        seq: u64,
        /// When it ran (Unix ms).
        at_ms: u64,
        /// The operation (`submit`, `accept`, `timer`, `configure`, …).
        command: String,
        /// Its events.
        events: Vec<omniroute_actors::engine::Event>,
    },
    /// The session read events too slowly: `missed` records were dropped for it (also
    /// sent to an outbound subscription that fell behind).
    EventsLagged {
        /// Records dropped.
        missed: u64,
    },
    /// A message for the customer (`subscribe_outbound`): deliver it on `channel`.
    Outbound {
        /// The conversation.
        interaction: InteractionId,
        /// The customer.
        customer: String,
        /// The channel to deliver it on.
        channel: String,
        /// `agent` (a virtual agent's replies come back in `inbound`'s reply; system
        /// lines are notes for agents, not for customers).
        from: omniroute_actors::engine::Sender,
        /// The agent or virtual agent, if any.
        from_id: Option<String>,
        /// The text.
        text: String,
        /// When it was logged (Unix ms).
        at_ms: u64,
    },
    /// A conversation on a subscribed channel ended (`subscribe_outbound`).
    ConversationEnded {
        /// The conversation.
        interaction: InteractionId,
        /// The customer.
        customer: String,
        /// Its channel.
        channel: String,
        /// `completed` (by its agent) or `abandoned` (the customer left, or it was
        /// withdrawn).
        reason: String,
    },
}

/// Agents counted by status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentCounts {
    /// Logged out.
    pub offline: u32,
    /// Available, nothing in hand.
    pub idle: u32,
    /// Holding offers or work.
    pub busy: u32,
    /// Only wrap-up in hand.
    pub wrap_up: u32,
    /// Away (whatever they hold).
    pub away: u32,
}

/// A supervisor's live view of the center.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CenterStats {
    /// When computed (Unix ms).
    pub at_ms: u64,
    /// Every queue's statistics.
    pub queues: Vec<omniroute_actors::queue::QueueStats>,
    /// Agents by status.
    pub agents: AgentCounts,
    /// Capacity units in use over capacity units of agents who are available (idle,
    /// busy or in wrap-up), percent; 0 when none is.
    pub occupancy_percent: f64,
    /// Interactions created and not yet finished.
    pub live_interactions: u64,
}
