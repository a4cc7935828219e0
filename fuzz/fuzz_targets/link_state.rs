//! Arbitrary bytes as a share link's state (`Shared::decode`). The body, and what must hold, is `scalpel_fuzzing::link_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::link_state(data));
