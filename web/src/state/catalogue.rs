//! The model menu: models a user of the field would want, by their
//! Hugging Face location, each with its download size and the precision
//! that fits a tab. The sizes are the repositories' own; which precision
//! fits follows the worker's rule ([`crate::weight_budget`]), checked by
//! the tests below against each model's config.json. The worker estimates
//! again from the real config.json (or GGUF header) before it downloads.

use crate::protocol::{ModelLocation, Precision};

/// One entry of the menu.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CatalogueModel {
    /// Stable key (in the menu's `<option value>`).
    pub key: &'static str,
    pub label: &'static str,
    /// `owner/name` on the Hugging Face hub.
    pub repo: &'static str,
    /// A GGUF file in the repository; `None`: its safetensors checkpoint.
    pub gguf: Option<&'static str>,
    /// Megabytes downloaded.
    pub download_mb: u32,
    /// How the weights are stored.
    pub stored: &'static str,
    /// The precision the page loads it in: f32 where it fits.
    pub precision: Precision,
    /// The repository is gated: downloads need a token of an account that
    /// accepted its terms.
    pub gated: bool,
}

impl CatalogueModel {
    pub fn location(&self) -> ModelLocation {
        let base = format!("https://huggingface.co/{}/resolve/main/", self.repo);
        match self.gguf {
            Some(file) => ModelLocation::Gguf { url: format!("{base}{file}") },
            None => ModelLocation::HfRepo { base },
        }
    }

    /// "269 MB bf16 · f32 precision fits · gated: needs a token".
    pub fn summary(&self) -> String {
        let fits = match self.precision {
            Precision::F32 => "f32 precision fits".to_string(),
            Precision::Quantized => "f32 does not fit a tab: quantized precision".to_string(),
        };
        let gated = if self.gated { " · gated: needs a Hugging Face token" } else { "" };
        format!("{} MB {} · {fits}{gated}", self.download_mb, self.stored)
    }
}

const fn hf(key: &'static str, label: &'static str, repo: &'static str, download_mb: u32, stored: &'static str, precision: Precision, gated: bool) -> CatalogueModel {
    CatalogueModel { key, label, repo, gguf: None, download_mb, stored, precision, gated }
}

pub const CATALOGUE: [CatalogueModel; 9] = [
    hf("smollm2-135m", "SmolLM2 135M Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 269, "bf16", Precision::F32, false),
    hf("smollm2-360m", "SmolLM2 360M Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 724, "bf16", Precision::F32, false),
    hf("gpt2", "GPT-2 small", "openai-community/gpt2", 548, "f32", Precision::F32, false),
    hf("pythia-70m", "Pythia 70M", "EleutherAI/pythia-70m", 166, "f16", Precision::F32, false),
    hf("pythia-160m", "Pythia 160M", "EleutherAI/pythia-160m", 375, "f16", Precision::F32, false),
    hf("gemma-3-270m", "Gemma 3 270M", "google/gemma-3-270m", 536, "bf16", Precision::F32, true),
    hf("gemma-3-270m-it", "Gemma 3 270M Instruct", "google/gemma-3-270m-it", 536, "bf16", Precision::F32, true),
    // Its bf16 checkpoint (1.5 GB) and the f32 model (2.4 GB) do not fit
    // together in a tab; the Qwen team's Q8_0 GGUF does, quantized.
    CatalogueModel {
        key: "qwen3-0.6b",
        label: "Qwen3 0.6B",
        repo: "Qwen/Qwen3-0.6B-GGUF",
        gguf: Some("Qwen3-0.6B-Q8_0.gguf"),
        download_mb: 639,
        stored: "Q8_0 GGUF",
        precision: Precision::Quantized,
        gated: false,
    },
    hf("qwen2.5-0.5b", "Qwen2.5 0.5B Instruct", "Qwen/Qwen2.5-0.5B-Instruct", 988, "bf16", Precision::Quantized, false),
];

pub fn by_key(key: &str) -> Option<&'static CatalogueModel> {
    CATALOGUE.iter().find(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalpel_engine::WeightEstimate;

    /// Each model's config.json as its repository has it (the fields the
    /// estimate reads).
    fn config(key: &str) -> serde_json::Value {
        let llama = |d: u32, layers: u32, heads: u32, kv: u32, mlp: u32| {
            serde_json::json!({"model_type": "llama", "vocab_size": 49152, "hidden_size": d, "num_hidden_layers": layers,
                "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": mlp, "max_position_embeddings": 8192,
                "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "bfloat16"})
        };
        let neox = |d: u32, layers: u32, heads: u32| {
            serde_json::json!({"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": d, "num_hidden_layers": layers,
                "num_attention_heads": heads, "intermediate_size": 4 * d, "max_position_embeddings": 2048, "rotary_pct": 0.25,
                "rotary_emb_base": 10000, "use_parallel_residual": true, "layer_norm_eps": 1e-5, "hidden_act": "gelu",
                "tie_word_embeddings": false, "torch_dtype": "float16"})
        };
        let gemma3 = serde_json::json!({"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 640, "num_hidden_layers": 18,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512, "query_pre_attn_scalar": 256,
            "hidden_activation": "gelu_pytorch_tanh", "torch_dtype": "bfloat16"}); // no tie_word_embeddings, as on the hub
        match key {
            "smollm2-135m" => llama(576, 30, 9, 3, 1536),
            "smollm2-360m" => llama(960, 32, 15, 5, 2560),
            "gpt2" => serde_json::json!({"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
                "n_positions": 1024, "n_ctx": 1024, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}),
            "pythia-70m" => neox(512, 6, 8),
            "pythia-160m" => neox(768, 12, 12),
            "gemma-3-270m" | "gemma-3-270m-it" => gemma3,
            "qwen3-0.6b" => serde_json::json!({"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "num_hidden_layers": 28,
                "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "max_position_embeddings": 40960,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "bfloat16"}),
            "qwen2.5-0.5b" => serde_json::json!({"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24,
                "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true, "hidden_act": "silu", "torch_dtype": "bfloat16"}),
            k => panic!("no config for {k}"),
        }
    }

    /// The precision each entry names is the one the worker's rule lets
    /// through: f32 when it fits beside the files, else quantized (which
    /// must fit). The download sizes agree with the configs.
    #[test]
    fn each_model_names_the_precision_that_fits() {
        for m in CATALOGUE {
            let est = WeightEstimate::from_hf_config("config.json", config(m.key).to_string().as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", m.key));
            let file = m.download_mb as u64 * 1_000_000;
            let budget = crate::weight_budget(file);
            let want = if est.f32_bytes <= budget { Precision::F32 } else { Precision::Quantized };
            assert_eq!(m.precision, want, "{}: f32 {} MB, quantized {} MB, budget {} MB", m.key, est.f32_bytes / 1_000_000, est.quantized_bytes / 1_000_000, budget / 1_000_000);
            assert!(est.built_bytes(m.precision) <= budget, "{} does not fit in either precision", m.key);
            if m.gguf.is_none() {
                // Pythia's files also hold each layer's causal-mask buffer.
                let ratio = file as f64 / est.file_bytes as f64;
                assert!((0.9..1.3).contains(&ratio), "{}: the config says {} MB, the entry {} MB", m.key, est.file_bytes / 1_000_000, m.download_mb);
            }
            assert!(matches!(m.location(), ModelLocation::HfRepo { .. } | ModelLocation::Gguf { .. }));
        }
        let keys: std::collections::HashSet<_> = CATALOGUE.iter().map(|m| m.key).collect();
        assert_eq!(keys.len(), CATALOGUE.len());
    }
}
