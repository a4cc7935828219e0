//! Arbitrary `config.json` (and `tokenizer_config.json`) with fixed tiny weights. The body, and what must hold, is `scalpel_fuzzing::hf_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::hf_config(data));
