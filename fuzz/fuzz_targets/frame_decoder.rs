//! Fuzzes the QUIC API's frame decoder: arbitrary bytes, as one client stream, go
//! through `frame::read_frame` and `frame::decode::<ClientMsg>` as in a server session,
//! with the invariants of `omniroute_fuzz::check` (fuzz/src/lib.rs) checked on the way.
//! Run with `cargo +nightly fuzz run frame_decoder` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    omniroute_fuzz::check(data);
});
