//! Arbitrary bytes as a GGUF model file. The body, and what must hold, is `scalpel_fuzzing::gguf_load`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::gguf_load(data));
