//! Arbitrary bytes as an intervention document, compiled and run on a tiny model. The body, and what must hold, is `scalpel_fuzzing::document`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::document(data));
