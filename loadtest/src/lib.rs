//! # omniroute-loadtest
//!
//! The bundled contact-center simulator and load generator: scenarios in TOML, the real
//! engine and actors on virtual time, or a live server over QUIC, with service-level
//! statistics and invariant checks.
//!
//! Being built (the "simulator and load tester" issue). Today: [`scenario`] (the TOML
//! scenario), [`sim`] (virtual-time mode: the real engine and actors on a paused clock,
//! with the simulator's own checks), [`report`] (the figures, terminal table, JSON), [`html`] (the self-contained HTML report) and
//! [`live`] (connect mode driven by a scenario: every agent a QUIC client session,
//! open-loop customers, the same checks and report) and [`connect`] (a fixed
//! measurement run against a live server: open-loop arrivals, HDR latency percentiles,
//! the raw QUIC round trip for comparison).
#![warn(missing_docs)]

pub use omniroute_transport as transport;

pub mod agent;
pub mod connect;
pub mod html;
pub mod live;
pub mod replications;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod watch;
