//! # omniroute-loadtest
//!
//! The bundled contact-center simulator and load generator: scenarios in TOML, the real
//! engine and actors on virtual time, or a live server over QUIC, with service-level
//! statistics and invariant checks.
//!
//! Not built yet: its work is the "simulator and load tester" issue. A small virtual-time
//! run of the engine exists today as `omniroute demo`.
#![warn(missing_docs)]

pub use omniroute_transport as transport;
