//! Arbitrary `tokenizer.json` (and `tokenizer_config.json`) as the engine's tokenizer. The body, and what must hold, is `scalpel_fuzzing::tokenizer_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::tokenizer_json(data));
