//! Arbitrary `cfg.json` and `sae_weights.safetensors` as a SAELens SAE. The body, and what must hold, is `scalpel_fuzzing::sae`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::sae(data));
