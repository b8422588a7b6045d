//! # omniroute-actors
//!
//! The actor runtime around the routing engine ([`runtime::Runtime`]): one supervised
//! [ractor](https://docs.rs/ractor) actor per agent ([`agent`]), per queue ([`queue`])
//! and per live conversation ([`conversation`]), owning sessions, timers (offer
//! timeout, wrap-up, relaxation steps, preferred-agent fallback, disconnect grace) and
//! transcripts, while the shared dispatcher in [`omniroute_engine`] — made durable by
//! its journal — stays the hot path every operation runs through.
//!
//! Also here: [`virtual_agent`] (the pluggable automated first stage and a rule-based
//! one), [`stats`] (per-queue sliding windows), [`bus`] (the ordered, bounded stream of
//! routing events for observers) and [`center`] (the journal on tokio time with its own
//! timer driver, for tools that want the engine without actors).
#![warn(missing_docs)]

pub mod agent;
#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod bus;
pub mod center;
pub mod conversation;
mod core;
pub mod queue;
pub mod runtime;
pub mod session;
pub mod stats;
mod timers;
pub mod transcript;
pub mod virtual_agent;

pub use crate::core::{JournalHandle, RuntimeConfig, RuntimeError};
pub use omniroute_engine as engine;
pub use runtime::{ActorKey, AgentSession, Inbound, InboundOutcome, Runtime};
pub use session::{AgentView, OfferPush, Push};
