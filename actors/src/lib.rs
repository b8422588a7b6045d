//! # omniroute-actors
//!
//! The actor runtime around the routing engine: one supervised actor per agent, queue and
//! live conversation, owning sessions, timers (offer timeout, wrap-up, relaxation steps,
//! preferred-agent fallback, patience) and the transcript, while the shared dispatcher in
//! [`omniroute_engine`] stays the hot path they call into.
//!
//! Mostly not built yet: this crate fixes the dependency direction `transport → actors →
//! engine` (see `ARCHITECTURE` in the repository's shared notes). Its work is the "actor
//! runtime" issue. Built so far: [`stats`], the per-queue sliding-window statistics the
//! queue actors will serve, and [`bus`], the ordered, durable-only, bounded stream of
//! routing events for observers, and [`center`], the durable engine on tokio time (so a
//! paused clock runs it virtually) with its timer driver. Until the actors exist the engine is driven directly (see
//! `omniroute demo`) or through its durable journal (`omniroute drive`).
#![warn(missing_docs)]

pub mod bus;
pub mod center;
pub mod stats;

pub use omniroute_engine as engine;
