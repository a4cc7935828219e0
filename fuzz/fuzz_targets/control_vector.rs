//! Arbitrary bytes as a llama.cpp control-vector GGUF. The body, and what must hold, is `scalpel_fuzzing::control_vector`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::control_vector(data));
