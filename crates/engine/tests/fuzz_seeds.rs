//! Writes the seed inputs of the cargo-fuzz targets in `fuzz/` (run with
//! `cargo test -p scalpel-engine --release --test fuzz_seeds -- --ignored`)
//! and checks that each seed is a model the engine accepts. The fixed
//! config.json strings must match `fuzz/fuzz_targets/common.rs`.


use std::path::PathBuf;

use scalpel_testkit::*;
use scalpel_engine::{Model, ModelSource, Precision};

const GPT2_CONFIG: &str = r#"{"model_type":"gpt2","n_layer":1,"n_embd":8,"n_head":2,"n_inner":16,"n_positions":8,"vocab_size":265,"activation_function":"gelu_new","layer_norm_epsilon":1e-5}"#;
const LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":8,"vocab_size":265,"rms_norm_eps":1e-5,"rope_theta":10000.0,"hidden_act":"silu","tie_word_embeddings":true}"#;

fn llama_spec() -> LlamaSpec {
    LlamaSpec { n_layers: 1, d_model: 8, n_heads: 2, n_kv_heads: 1, d_mlp: 16, n_ctx: 8, tied: true, seed: 21 }
}

fn gpt2_spec() -> Gpt2Spec {
    Gpt2Spec { n_layer: 1, n_embd: 8, n_head: 2, n_inner: 16, n_positions: 8, prefix: false, seed: 22 }
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut gpt2 = vec![0u8];
    gpt2.extend(safetensors_bytes(&gpt2_tensors(&gpt2_spec())));
    let mut llama = vec![1u8];
    llama.extend(safetensors_bytes(&llama_hf_tensors(&llama_spec())));
    let mut with_tok_cfg = GPT2_CONFIG.as_bytes().to_vec();
    with_tok_cfg.push(0xFF);
    with_tok_cfg.extend_from_slice(br#"{"eos_token":"<|endoftext|>","chat_template":"{{ messages[0]['content'] }}"}"#);
    vec![
        ("gguf_load", "tiny.gguf", tiny_llama(&llama_spec()).bytes()),
        ("safetensors_load", "gpt2.bin", gpt2),
        ("safetensors_load", "llama.bin", llama),
        ("hf_config", "gpt2.json", GPT2_CONFIG.as_bytes().to_vec()),
        ("hf_config", "llama.json", LLAMA_CONFIG.as_bytes().to_vec()),
        ("hf_config", "gpt2_tokcfg.bin", with_tok_cfg),
    ]
}

/// Every seed is a valid model under the fuzz targets' fixed files.
#[test]
fn fuzz_seeds_are_valid_models() {
    let s = seeds();
    let tokenizer = tokenizer_json();
    let hf = |config: &str, weights: &[u8]| {
        Model::load(
            "seed",
            ModelSource::HuggingFace {
                config: config.as_bytes(),
                tokenizer: Some(&tokenizer),
                tokenizer_config: None,
                weights: vec![(ST_NAME.into(), weights)],
            },
            Precision::F32,
        )
    };
    load_gguf(&s[0].2).unwrap().logits(&[1, 2]).unwrap();
    hf(GPT2_CONFIG, &s[1].2[1..]).unwrap().logits(&[1, 2]).unwrap();
    hf(LLAMA_CONFIG, &s[2].2[1..]).unwrap().logits(&[1, 2]).unwrap();
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    for (target, name, bytes) in seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
