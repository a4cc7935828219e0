//! Arbitrary bytes as `model.safetensors`, with a fixed small valid
//! config.json and tokenizer.json. The first byte picks GPT-2 or llama.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scalpel_engine::{Model, ModelSource, Precision};

use scalpel_fuzz as common;

static TOKENIZER: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&sel, weights)) = data.split_first() else { return };
    let config = if sel & 1 == 0 { common::GPT2_CONFIG } else { common::LLAMA_CONFIG };
    let precision = if sel & 2 == 0 { Precision::F32 } else { Precision::Quantized };
    let source = ModelSource::HuggingFace {
        config: config.as_bytes(),
        tokenizer: Some(TOKENIZER.get_or_init(common::tokenizer_json)),
        tokenizer_config: None,
        weights: vec![("model.safetensors".to_owned(), weights)],
    };
    match Model::load("fuzz-hf", source, precision) {
        Ok(m) => common::exercise(&m),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("model.safetensors"), "error does not name the file: {msg}");
        }
    }
});
