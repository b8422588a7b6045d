//! # omniroute-loadtest
//!
//! The bundled contact-center simulator and load generator: scenarios in TOML, the real
//! engine and actors on virtual time, or a live server over QUIC, with service-level
//! statistics and invariant checks.
//!
//! Being built (the "simulator and load tester" issue). Today: [`connect`], the
//! measurement run against a live server over QUIC (open-loop arrivals, HDR latency
//! percentiles, raw QUIC round trip for comparison). Not yet: scenario files, virtual
//! time, invariant checks, reports. A small virtual-time run of the engine exists as
//! `omniroute demo`.
#![warn(missing_docs)]

pub use omniroute_transport as transport;

pub mod connect;
