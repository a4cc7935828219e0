//! Arbitrary bytes as a GGUF file: `Model::load` must return Ok or Err,
//! never panic, hang, or allocate by an unchecked header field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalpel_engine::{Model, ModelSource, Precision};

use scalpel_fuzz as common;

fuzz_target!(|data: &[u8]| {
    // Alternate precisions on the last byte so both weight paths are reached.
    let precision = if data.last().is_some_and(|b| b & 1 == 1) { Precision::Quantized } else { Precision::F32 };
    match Model::load("fuzz.gguf", ModelSource::Gguf(data), precision) {
        Ok(m) => {
            common::exercise(&m);
            let _ = m.tokenizer().apply_chat_template(&[("user", "hi")], true);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.gguf"), "error does not name the file: {msg}");
        }
    }
});
