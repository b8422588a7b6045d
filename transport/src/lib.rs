//! # omniroute-transport
//!
//! The QUIC API: length-prefixed MessagePack frames over quinn streams, the server that
//! maps sessions onto actors, and the typed Rust client.
//!
//! Being built (the "QUIC API" issue). Done so far: [`frame`] (the framing with its
//! stable error codes), [`tls`] (the QUIC endpoints: ALPN `omniroute/1`, TLS 1.3, a
//! self-signed certificate kept in the data directory), [`proto`] (the first messages
//! and who may send them), [`server`] (sessions over the actor runtime: hello with
//! hashed tokens, agent, channel and supervisor operations, agent pushes) and
//! [`client`]. Not yet: admin operations, live statistics subscriptions, explanations,
//! the TOML configuration, `omniroute serve` and the CLI clients.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod frame;
pub mod proto;
pub mod server;
pub mod tls;

pub use omniroute_actors as actors;
