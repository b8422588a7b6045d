//! # omniroute-transport
//!
//! The QUIC API: length-prefixed MessagePack frames over quinn streams, the server that
//! maps sessions onto actors, and the typed Rust client.
//!
//! Being built (the "QUIC API" issue). Done so far: [`frame`] (the framing with its
//! stable error codes) and [`tls`] (the QUIC endpoints: ALPN `omniroute/1`, TLS 1.3, a
//! self-signed certificate kept in the data directory). Not yet: the message catalogue,
//! the server mapping sessions onto the actor runtime, the client, the CLI.
#![warn(missing_docs)]

pub mod frame;
pub mod tls;

pub use omniroute_actors as actors;
