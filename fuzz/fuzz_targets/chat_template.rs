//! Arbitrary bytes as a model's chat template, rendered. The body, and what must hold, is `scalpel_fuzzing::chat_template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::chat_template(data));
