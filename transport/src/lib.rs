//! # omniroute-transport
//!
//! The QUIC API: length-prefixed MessagePack frames over quinn streams, the server that
//! maps sessions onto actors, and the typed Rust client.
//!
//! Not built yet: this crate fixes the dependency direction `transport → actors → engine`.
//! Its work is the "QUIC API" issue.
#![warn(missing_docs)]

pub use omniroute_actors as actors;
