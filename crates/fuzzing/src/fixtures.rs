//! The fixed side of each target: tiny models and files built once per
//! process, so one execution spends its time on the fuzzed input.

use std::sync::{Mutex, MutexGuard, OnceLock};

use scalpel_engine::{generate, GenerateOptions, Model, Tokenizer};
use scalpel_testkit::{gpt2_tensors, llama_hf_tensors, load_gguf, safetensors_bytes, tiny_llama, Gpt2Spec, LlamaSpec};

/// The `config.json` the `safetensors_load` target pairs with GPT-2 weights
/// (and the `hf_config` seed for GPT-2); it matches [`gpt2_spec`].
pub const GPT2_CONFIG: &str = r#"{"model_type":"gpt2","n_layer":1,"n_embd":8,"n_head":2,"n_inner":16,"n_positions":8,"vocab_size":265,"activation_function":"gelu_new","layer_norm_epsilon":1e-5}"#;
/// The llama `config.json`, matching [`llama_spec`].
pub const LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":8,"vocab_size":265,"rms_norm_eps":1e-5,"rope_theta":10000.0,"hidden_act":"silu","tie_word_embeddings":true}"#;

/// The one-block llama of the loader targets (GGUF seed and HF weights).
pub fn llama_spec() -> LlamaSpec {
    LlamaSpec { n_layers: 1, d_model: 8, n_heads: 2, n_kv_heads: 1, d_mlp: 16, n_ctx: 8, tied: true, seed: 21 }
}

/// The one-block GPT-2 of the loader targets.
pub fn gpt2_spec() -> Gpt2Spec {
    Gpt2Spec { n_layer: 1, n_embd: 8, n_head: 2, n_inner: 16, n_positions: 8, prefix: false, seed: 22 }
}

/// The model documents, control vectors and SAEs are checked against: two
/// blocks (so `blocks.*` and per-layer control vectors have something to
/// span), d_model 16, two heads sharing one KV head, a 16-token context.
pub fn document_spec() -> LlamaSpec {
    LlamaSpec { n_layers: 2, d_model: 16, n_heads: 2, n_kv_heads: 1, d_mlp: 32, n_ctx: 16, tied: true, seed: 7 }
}

/// The prompt documents are compiled and run for (its length is the
/// `prompt_len` they are compiled with; `patch` sources must match it).
pub const DOCUMENT_PROMPT: &str = "the cat in a";

/// The byte-level `tokenizer.json` of the testkit vocabulary.
pub fn fixed_tokenizer_json() -> &'static [u8] {
    static JSON: OnceLock<Vec<u8>> = OnceLock::new();
    JSON.get_or_init(scalpel_testkit::tokenizer_json)
}

/// Safetensors weights matching [`GPT2_CONFIG`] and [`LLAMA_CONFIG`].
pub fn hf_weights() -> &'static (Vec<u8>, Vec<u8>) {
    static WEIGHTS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    WEIGHTS.get_or_init(|| {
        (safetensors_bytes(&gpt2_tensors(&gpt2_spec())), safetensors_bytes(&llama_hf_tensors(&llama_spec())))
    })
}

/// The document model, shared: running a document edits its weights
/// (`low_rank`) and restores them, so callers hold the lock throughout.
pub fn document_model() -> MutexGuard<'static, Model> {
    static MODEL: OnceLock<Mutex<Model>> = OnceLock::new();
    let m = MODEL.get_or_init(|| Mutex::new(load_gguf(&tiny_llama(&document_spec()).bytes()).expect("the document model loads")));
    // A replayed input that panicked poisons the lock; the model itself is
    // only ever edited inside `run`, which restores it, so it is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The testkit tokenizer, for rendering fuzzed chat templates.
pub fn template_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::from_hf_json("tokenizer.json", fixed_tokenizer_json(), None).expect("the testkit tokenizer.json loads"))
}

/// Splits `data` at its first 0xFF byte (which no UTF-8 JSON contains):
/// the first file, and the second if there is a separator.
pub fn split_at_ff(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// Uses a model that loaded as the CLI does (tokenize, logits, a few
/// generated tokens, the chat template); errors are fine, panics and hangs
/// are bugs.
pub fn exercise(m: &Model) {
    let tok = m.tokenizer();
    if let Ok(ids) = tok.encode("in the <|im_start|>x") {
        let _ = tok.decode(&ids);
        let _ = m.logits(&ids);
    }
    let _ = m.logits(&[0, 1]);
    let _ = m.next_token_top_k(&[2], 3);
    let _ = generate(m, &[1], &GenerateOptions { max_new_tokens: 2, ..Default::default() }, None, &mut |_| true);
    let _ = tok.apply_chat_template(&[("user", "hi")], true);
}
