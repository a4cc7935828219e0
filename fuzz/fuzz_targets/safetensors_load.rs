//! A selector byte, then arbitrary bytes as `model.safetensors`. The body, and what must hold, is `scalpel_fuzzing::safetensors_load`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::safetensors_load(data));
