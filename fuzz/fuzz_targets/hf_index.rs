//! Arbitrary bytes as `model.safetensors.index.json`. The body, and what must hold, is `scalpel_fuzzing::hf_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::hf_index(data));
