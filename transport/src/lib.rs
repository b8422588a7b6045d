//! # omniroute-transport
//!
//! The QUIC API: length-prefixed MessagePack frames over quinn streams, the server that
//! maps sessions onto actors, and the typed Rust client.
//!
//! [`frame`]: the framing with its stable error codes; [`tls`]: the QUIC endpoints
//! (ALPN `omniroute/1`, TLS 1.3, a self-signed certificate kept in the data directory,
//! keep-alives); [`proto`]: every message and who may send it; [`server`]: sessions
//! over the actor runtime (hashed tokens with revocation, agent, channel, supervisor and
//! admin operations, pushes, subscriptions, limits); [`client`]: the typed client;
//! [`config`]: the TOML configuration file. The wire protocol is docs/PROTOCOL.md, the
//! file docs/CONFIG.md.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod frame;
pub mod proto;
pub mod server;
pub mod tls;

pub use omniroute_actors as actors;
