//! The configuration model an administrator writes: channels, skills, agents with their
//! capacity profiles, queues with their policies and relaxation steps, routing rules.
//!
//! These types are plain data (serde, so the log and the QUIC API can carry them). They
//! are validated and compiled into the engine's internal, index-based form by
//! [`crate::Engine::new`] and [`crate::Engine::reconfigure`]; a mistake is reported as an
//! [`crate::EngineError`] naming the entity and field.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds on the caller's clock. The engine never reads a clock: every operation
/// takes `now_ms` as an argument, so the same inputs give the same decisions.
pub type TimeMs = u64;

/// Most channels a center may define (built-in and admin-defined together). Channel sets
/// are bitmasks of this width on the hot path.
pub const MAX_CHANNELS: usize = 64;
/// Lowest and highest skill proficiency.
pub const PROFICIENCY_RANGE: std::ops::RangeInclusive<u8> = 1..=10;

/// The built-in channels and their default capacity cost in units (out of an agent's
/// total, typically 100 or 10). Voice is exclusive by default (it costs a whole agent
/// with the usual total of 10), messaging channels are light.
pub const BUILTIN_CHANNELS: &[(&str, u16)] = &[
    ("voice", 10),
    ("chat", 3),
    ("email", 2),
    ("sms", 2),
    ("whatsapp", 2),
    ("messenger", 2),
    ("line", 2),
    ("apple_messages", 2),
    ("web", 3),
];

/// A channel customers arrive on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDef {
    /// Name, unique: `voice`, `chat`, … or an admin-defined one.
    pub name: String,
    /// Capacity units one interaction of this channel consumes unless an agent's profile
    /// says otherwise.
    pub default_units: u16,
    /// Offers on this channel are accepted on the agent's behalf at once.
    #[serde(default)]
    pub auto_accept: bool,
}

impl ChannelDef {
    /// The built-in channel set with default costs.
    pub fn builtin() -> Vec<ChannelDef> {
        BUILTIN_CHANNELS
            .iter()
            .map(|(name, units)| ChannelDef {
                name: (*name).to_string(),
                default_units: *units,
                auto_accept: false,
            })
            .collect()
    }
}

/// A skill. Languages are skills too (`is_language` only informs displays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillDef {
    /// Name, unique.
    pub name: String,
    /// Whether this skill is a spoken/written language.
    #[serde(default)]
    pub is_language: bool,
}

/// A skill held by an agent, with proficiency 1–10.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillLevel {
    /// Skill name.
    pub skill: String,
    /// 1 (novice) to 10 (expert).
    pub proficiency: u8,
}

/// A queue's demand on one skill: the agent must hold it with at least `min_proficiency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    /// Skill name.
    pub skill: String,
    /// Lowest acceptable proficiency, 1–10.
    pub min_proficiency: u8,
}

/// How much of one channel an agent can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCapacity {
    /// Channel name.
    pub channel: String,
    /// Units one interaction costs this agent; the channel's default when absent.
    #[serde(default)]
    pub units: Option<u16>,
    /// At most this many interactions of the channel at once, whatever the units say.
    #[serde(default)]
    pub max_concurrent: Option<u16>,
}

/// While an agent works an interaction on `while_on`, no new work on `blocks` is offered
/// (a voice call blocks new chats, say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelBlock {
    /// The channel whose work blocks.
    pub while_on: String,
    /// The channels it blocks.
    pub blocks: Vec<String>,
}

/// An agent's capacity: a budget of units, what each channel costs, per-channel maxima
/// and blocking. An agent handles only the channels listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityProfile {
    /// Total units.
    pub total_units: u16,
    /// The channels this agent handles.
    pub channels: Vec<ChannelCapacity>,
    /// Blocking rules.
    #[serde(default)]
    pub blocking: Vec<ChannelBlock>,
}

impl CapacityProfile {
    /// A profile of `total_units` handling the given channels at their default cost.
    pub fn simple(total_units: u16, channels: &[&str]) -> Self {
        CapacityProfile {
            total_units,
            channels: channels
                .iter()
                .map(|c| ChannelCapacity {
                    channel: (*c).to_string(),
                    units: None,
                    max_concurrent: None,
                })
                .collect(),
            blocking: Vec::new(),
        }
    }
}

/// An agent (a person, or an automated worker that takes offers like one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDef {
    /// Unique id, e.g. `a-1042`.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Skills with proficiency.
    pub skills: Vec<SkillLevel>,
    /// Capacity profile.
    pub capacity: CapacityProfile,
}

/// How a queue chooses among eligible agents with free capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentPolicy {
    /// The agent whose last work ended longest ago (agents with no work in hand first).
    #[default]
    LongestIdle,
    /// Highest proficiency sum over required and optional skills; ties longest idle.
    MostSkilled,
    /// Lowest used/total capacity ratio; ties longest idle. Fair under multi-tasking.
    LeastOccupied,
    /// The agent this queue offered to least recently.
    RoundRobin,
}

impl AssignmentPolicy {
    /// Every policy, in declaration order.
    pub const ALL: [AssignmentPolicy; 4] = [
        AssignmentPolicy::LongestIdle,
        AssignmentPolicy::MostSkilled,
        AssignmentPolicy::LeastOccupied,
        AssignmentPolicy::RoundRobin,
    ];
}

/// A queue's service-level objective: `percent` of interactions answered within
/// `threshold_ms` (e.g. 80 % in 20 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLevel {
    /// Target share, 1–100.
    pub percent: u8,
    /// Answer-time threshold.
    pub threshold_ms: u64,
}

impl Default for ServiceLevel {
    fn default() -> Self {
        ServiceLevel {
            percent: 80,
            threshold_ms: 20_000,
        }
    }
}

/// What a relaxation step does once an interaction has waited `after_ms` in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RelaxationAction {
    /// Stop preferring agents who hold the optional skills (and stop counting them for
    /// most-skilled): every agent meeting the required skills ranks on policy alone.
    DropOptionalSkills,
    /// Accept agents with a lower proficiency on one required skill.
    LowerProficiency {
        /// Skill name (must be a required skill of the queue).
        skill: String,
        /// New minimum, lower than the current one.
        to: u8,
    },
    /// Also offer the interaction to agents of another queue (it keeps its original age
    /// and stays visible to this queue's agents too).
    Overflow {
        /// Overflow queue id.
        queue: String,
    },
}

/// A timed relaxation step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaxationStep {
    /// Applies once the interaction has waited this long in the queue.
    pub after_ms: u64,
    /// What it does.
    #[serde(flatten)]
    pub action: RelaxationAction,
}

/// What happens when an interaction reached the queue's `max_offers` without being
/// accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OfferLimitAction {
    /// Keep routing in this queue: the declined list is cleared, the counter restarts and
    /// an `OfferLimitReached` event tells supervisors.
    #[default]
    Requeue,
    /// Transfer the interaction to another queue (keeping its age).
    Transfer {
        /// Target queue id.
        queue: String,
    },
}

/// A queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Unique id, e.g. `billing-en`.
    pub id: String,
    /// Channels accepted; empty means every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Skills every agent must hold.
    #[serde(default)]
    pub required_skills: Vec<SkillRequirement>,
    /// Preferred skills: agents holding them rank first until a `drop_optional_skills`
    /// step; counted by most-skilled.
    #[serde(default)]
    pub optional_skills: Vec<SkillRequirement>,
    /// Priority given to interactions unless a routing rule sets one.
    #[serde(default)]
    pub base_priority: i32,
    /// Aging: priority points gained per second waited, in thousandths of a point.
    #[serde(default)]
    pub aging_millipoints_per_second: u32,
    /// Assignment policy.
    #[serde(default)]
    pub policy: AssignmentPolicy,
    /// How long an agent has to accept an offer.
    pub offer_timeout_ms: u64,
    /// Offers per interaction before `on_offer_limit` applies; 0 = unlimited.
    #[serde(default)]
    pub max_offers: u32,
    /// What happens at `max_offers`.
    #[serde(default)]
    pub on_offer_limit: OfferLimitAction,
    /// Wrap-up time during which the agent's capacity stays held after completion.
    #[serde(default)]
    pub wrap_up_ms: u64,
    /// Allowed wrap-up codes; empty means any code (or none) is accepted.
    #[serde(default)]
    pub wrap_up_codes: Vec<String>,
    /// Service-level objective (statistics only: it does not change routing).
    #[serde(default)]
    pub service_level: ServiceLevel,
    /// Most interactions waiting at once; past it, submit fails with `QueueFull`.
    pub max_waiting: u32,
    /// Relaxation steps, in increasing `after_ms`.
    #[serde(default)]
    pub relaxation: Vec<RelaxationStep>,
}

impl QueueDef {
    /// A queue with sensible defaults: 30 s offer timeout, no wrap-up, 10,000 waiting.
    pub fn new(id: &str, required: &[(&str, u8)]) -> Self {
        QueueDef {
            id: id.to_string(),
            channels: Vec::new(),
            required_skills: required
                .iter()
                .map(|(s, p)| SkillRequirement {
                    skill: (*s).to_string(),
                    min_proficiency: *p,
                })
                .collect(),
            optional_skills: Vec::new(),
            base_priority: 0,
            aging_millipoints_per_second: 0,
            policy: AssignmentPolicy::LongestIdle,
            offer_timeout_ms: 30_000,
            max_offers: 0,
            on_offer_limit: OfferLimitAction::Requeue,
            wrap_up_ms: 0,
            wrap_up_codes: Vec::new(),
            service_level: ServiceLevel::default(),
            max_waiting: 10_000,
            relaxation: Vec::new(),
        }
    }
}

/// A condition on an interaction's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AttributeCondition {
    /// `attributes[key] == value`.
    Equals {
        /// Attribute name.
        key: String,
        /// Expected value.
        value: String,
    },
    /// `attributes[key]` is one of `values`.
    OneOf {
        /// Attribute name.
        key: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// The attribute is present.
    Exists {
        /// Attribute name.
        key: String,
    },
}

/// A routing rule: when the channel and every condition match, route to `queue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// Name, for explanations.
    pub name: String,
    /// Channels this rule applies to; empty means any.
    #[serde(default)]
    pub channels: Vec<String>,
    /// All must hold.
    #[serde(default)]
    pub conditions: Vec<AttributeCondition>,
    /// Target queue id.
    pub queue: String,
    /// Priority; the queue's base priority when absent.
    #[serde(default)]
    pub priority: Option<i32>,
}

/// Ordered rules plus the default queue for interactions no rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoutingConfig {
    /// Tried in order; the first match wins.
    #[serde(default)]
    pub rules: Vec<RoutingRule>,
    /// Where unmatched interactions go; without it they are refused with `NoRoute`.
    #[serde(default)]
    pub default_queue: Option<String>,
}

/// Center-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// After this many consecutive rejected or timed-out offers the agent is set away
    /// (reason `missed offers`); 0 disables.
    pub max_consecutive_misses: u32,
    /// Node number stamped in the high 16 bits of interaction ids, so ids stay unique
    /// when centers are partitioned across nodes.
    pub node_id: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_consecutive_misses: 3,
            node_id: 0,
        }
    }
}

/// Everything an administrator configures, in one value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CenterConfig {
    /// Channels (include [`ChannelDef::builtin`] for the standard ones).
    pub channels: Vec<ChannelDef>,
    /// Skills.
    pub skills: Vec<SkillDef>,
    /// Agents.
    pub agents: Vec<AgentDef>,
    /// Queues.
    pub queues: Vec<QueueDef>,
    /// Routing rules.
    pub routing: RoutingConfig,
    /// Settings.
    #[serde(default)]
    pub settings: Settings,
}

/// An agent's chosen presence. Busy and wrap-up are derived from work in hand (see
/// [`AgentStatus`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "presence", rename_all = "snake_case")]
pub enum Presence {
    /// Logged out.
    Offline,
    /// Ready for offers.
    Available,
    /// Logged in, taking no new offers.
    Away {
        /// Why (break, lunch, training, `missed offers`, …).
        reason: String,
    },
}

/// What a supervisor sees: presence combined with work in hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Logged out.
    Offline,
    /// Available with no work in hand.
    Idle,
    /// Holding offers or assigned work.
    Busy,
    /// Only wrap-up in hand.
    WrapUp,
    /// Away.
    Away,
}

/// An interaction's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InteractionState {
    /// Waiting in a queue.
    Queued,
    /// Offered to one agent, capacity reserved.
    Offered,
    /// Accepted; the agent is working it.
    Assigned,
    /// Completed; the agent's capacity is held for wrap-up.
    WrapUp,
    /// Done.
    Completed,
    /// The customer left before an agent accepted.
    Abandoned,
    /// Being moved to another agent or queue. Transfers are atomic in the engine, so
    /// snapshots never show it; it exists for the event log and adapters that model a
    /// transfer in flight.
    Transferred,
}

impl InteractionState {
    /// Whether the interaction is finished.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            InteractionState::Completed | InteractionState::Abandoned
        )
    }
}

/// Who wrote a conversation message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    /// The customer.
    Customer,
    /// An agent (`from_id` names it).
    Agent,
    /// An automated virtual agent (`from_id` names it).
    VirtualAgent,
    /// The system (routing notes, data a virtual agent collected).
    System,
}

/// Longest message text accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One message of a conversation's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub from: Sender,
    /// The agent id or virtual agent name, when `from` is one.
    #[serde(default)]
    pub from_id: Option<String>,
    /// The channel it came or went on (a customer may switch channel mid-conversation).
    pub channel: String,
    /// The text (at most [`MAX_MESSAGE_BYTES`]).
    pub text: String,
    /// When it was written (a virtual agent's messages are posted later, on escalation).
    pub sent_ms: TimeMs,
}

/// A new interaction as a channel adapter submits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInteraction {
    /// Channel name.
    pub channel: String,
    /// Customer id or contact point.
    pub customer: String,
    /// Attributes routing rules can match (intent, language, segment, …).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Route straight to this queue, bypassing routing rules.
    #[serde(default)]
    pub queue: Option<String>,
    /// Priority override.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Prefer this agent (e.g. the customer's last agent) until `preferred_fallback_ms`
    /// has passed; then anyone eligible.
    #[serde(default)]
    pub preferred_agent: Option<String>,
    /// How long to wait for the preferred agent.
    #[serde(default)]
    pub preferred_fallback_ms: u64,
    /// The conversation so far — the customer's first message, or a virtual agent's
    /// whole exchange when it escalates — kept in the interaction's history by the same
    /// operation that creates it (so every offer carries it and no agent can finish
    /// the work before it is there). (Logs written before this field existed decode it
    /// as empty: serde fills a missing trailing field from its default.)
    #[serde(default)]
    pub messages: Vec<Message>,
}

impl NewInteraction {
    /// An interaction on `channel` from `customer`, routed by the rules.
    pub fn new(channel: &str, customer: &str) -> Self {
        NewInteraction {
            channel: channel.to_string(),
            customer: customer.to_string(),
            attributes: BTreeMap::new(),
            queue: None,
            priority: None,
            preferred_agent: None,
            preferred_fallback_ms: 0,
            messages: Vec::new(),
        }
    }

    /// Route directly to `queue`.
    pub fn to_queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_string());
        self
    }

    /// Add an attribute.
    pub fn with_attribute(mut self, key: &str, value: &str) -> Self {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }
}
