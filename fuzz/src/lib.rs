//! Shared by the fuzz targets: the fixed Hugging Face side files and a
//! "use the model like the CLI does" step. Kept tiny so each run is fast.

use scalpel_engine::{generate, GenerateOptions, Model};

/// The byte-level `tokenizer.json` the engine's tests use.
pub use scalpel_testkit::tokenizer_json;

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
