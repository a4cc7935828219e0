//! Arbitrary bytes as `config.json` (and, after a 0xFF separator, as
//! `tokenizer_config.json`), with fixed tiny GPT-2 weights and tokenizer.json.
//! Finds arithmetic on unchecked config fields.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use scalpel_engine::{Model, ModelSource, Precision};

use scalpel_fuzz as common;

static TOKENIZER: OnceLock<Vec<u8>> = OnceLock::new();
static WEIGHTS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();

fn seed(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/safetensors_load");
    std::fs::read(dir.join(name)).map(|b| b[1..].to_vec()).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let (gpt2, llama) = WEIGHTS.get_or_init(|| (seed("gpt2.bin"), seed("llama.bin")));
    let (config, tok_cfg) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    // Weights matching whichever family the config claims (if it parses).
    let weights = if config.windows(7).any(|w| w == b"\"llama\"") { llama } else { gpt2 };
    let source = ModelSource::HuggingFace {
        config,
        tokenizer: Some(TOKENIZER.get_or_init(common::tokenizer_json)),
        tokenizer_config: tok_cfg,
        weights: vec![("model.safetensors".to_owned(), weights.as_slice())],
    };
    if let Ok(m) = Model::load("fuzz-hf", source, Precision::F32) {
        common::exercise(&m);
        let _ = m.tokenizer().apply_chat_template(&[("user", "hi")], true);
    }
});
