//! # omniroute-engine
//!
//! The routing core of omniroute: the contact-center model (channels, skills, agents with
//! capacity profiles, queues with policies and relaxation steps, routing rules,
//! interactions) and the dispatcher that matches interactions to agents.
//!
//! The engine is **deterministic and sans-IO**, in the manner of `quinn-proto`: it opens
//! no sockets, spawns no threads and never reads a clock. Every operation takes the
//! current time as `now_ms` and appends [`Event`]s to a caller-owned buffer; events that
//! start a clock name the [`Timer`] to fire back through [`Engine::on_timer`]. The same
//! sequence of calls gives the same decisions, so the simulator runs the real engine on
//! virtual time and any bug found there replays exactly.
//!
//! It is also **safe to drive from many threads**: there is no global lock. Each agent,
//! routing target (a queue at one relaxation level) and interaction has its own lock,
//! taken in one fixed order; capacity is reserved only under the agent's lock, so it can
//! never be exceeded. See `cells.rs` for the locking discipline and `engine.rs` for the
//! two routing directions.
//!
//! ```
//! use omniroute_engine::*;
//!
//! let mut config = CenterConfig::default();
//! config.channels = ChannelDef::builtin();
//! config.skills = vec![SkillDef { name: "billing".into(), is_language: false }];
//! config.queues = vec![QueueDef::new("billing", &[("billing", 3)])];
//! config.routing.default_queue = Some("billing".into());
//! config.agents = vec![AgentDef {
//!     id: "ana".into(),
//!     name: "Ana".into(),
//!     skills: vec![SkillLevel { skill: "billing".into(), proficiency: 7 }],
//!     capacity: CapacityProfile::simple(10, &["voice", "chat"]),
//! }];
//! let engine = Engine::new(config).unwrap();
//! let mut events = Vec::new();
//! engine.set_presence("ana", Presence::Available, 0, &mut events).unwrap();
//! let id = engine.submit(NewInteraction::new("chat", "cust-1"), 1_000, &mut events).unwrap();
//! assert!(events.iter().any(|e| matches!(e, Event::Offered { agent, .. } if &**agent == "ana")));
//! engine.accept("ana", id, 1_500, &mut events).unwrap();
//! engine.complete("ana", id, None, 60_000, &mut events).unwrap();
//! assert_eq!(engine.interaction(id).unwrap().state, InteractionState::Completed);
//! ```
#![warn(missing_docs)]

mod capacity;
mod catalog;
mod cells;
mod engine;
mod error;
mod events;
mod image;
mod inspect;
pub mod journal;
pub mod model;
mod rng;

pub use capacity::CapacityShortfall;
pub use cells::HistoryEntry;
pub use engine::Engine;
pub use error::{EngineError, Result};
pub use events::{
    ChangeKind, ConfigChange, Event, RescindReason, Scheduler, Timer, TransferTarget,
};
pub use image::{AgentImage, EngineImage, InteractionImage, QueueImage, WorkImage, WorkPhaseImage};
pub use inspect::{
    AgentSnapshot, Candidate, Exclusion, Explanation, InteractionSnapshot, QueueSnapshot,
    WaitingEntry, WorkSnapshot,
};
pub use model::*;
pub use rng::SeededRng;

/// An interaction's id: unique per engine; the high 16 bits carry the node number so
/// partitioned deployments never collide.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct InteractionId(pub u64);

impl std::fmt::Display for InteractionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "i-{}", self.0)
    }
}
