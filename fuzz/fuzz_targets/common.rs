#![allow(dead_code)]
//! Shared by the fuzz targets: the fixed Hugging Face side files and a
//! "use the model like the CLI does" step. Kept tiny so each run is fast.

use scalpel_engine::{generate, GenerateOptions, Model};

/// GPT-2 byte-level vocabulary (256 byte tokens, 6 merges, 3 control tokens),
/// the same one the engine's tests write (crates/engine/tests/common).
pub fn tokenizer_json() -> Vec<u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut b2u = ['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        b2u[*b as usize] = char::from_u32(*c).unwrap();
    }
    let merges = ["Ġ t", "h e", "i n", "Ġt he", "e r", "Ġ a"];
    let mut vocab = serde_json::Map::new();
    for (i, c) in b2u.iter().enumerate() {
        vocab.insert(c.to_string(), i.into());
    }
    for (i, m) in merges.iter().enumerate() {
        vocab.insert(m.replace(' ', ""), (256 + i).into());
    }
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut added = Vec::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), (262 + i).into());
        added.push(serde_json::json!({"id": 262 + i, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}));
    }
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    }))
    .unwrap()
}

/// The fixed config.json files; `fuzz/seeds/` holds matching weights
/// (regenerate with the ignored test `write_fuzz_seeds`).
pub const GPT2_CONFIG: &str = r#"{"model_type":"gpt2","n_layer":1,"n_embd":8,"n_head":2,"n_inner":16,"n_positions":8,"vocab_size":265,"activation_function":"gelu_new","layer_norm_epsilon":1e-5}"#;
pub const LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":8,"vocab_size":265,"rms_norm_eps":1e-5,"rope_theta":10000.0,"hidden_act":"silu","tie_word_embeddings":true}"#;

/// Uses a model that loaded; errors are fine, panics/hangs are bugs.
pub fn exercise(m: &Model) {
    let tok = m.tokenizer();
    if let Ok(ids) = tok.encode("in the <|im_start|>x") {
        let _ = tok.decode(&ids);
        let _ = m.logits(&ids);
    }
    let _ = m.logits(&[0, 1]);
    let _ = m.next_token_top_k(&[2], 3);
    let _ = generate(m, &[1], &GenerateOptions { max_new_tokens: 2, ..Default::default() }, None, &mut |_| true);
}
