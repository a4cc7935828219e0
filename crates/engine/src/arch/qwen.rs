//! Qwen2 / Qwen2.5 and Qwen3: the llama layout with q/k/v biases (Qwen2)
//! or per-head RMSNorms of queries and keys before RoPE and a `head_dim`
//! of its own (Qwen3).

use crate::arch::llama::{gguf_decoder_config, gguf_decoder_parts, hf_decoder_config, hf_decoder_parts, DecoderNorms};
use crate::load::gguf::Gguf;
use crate::load::parts::QkLayout;
use crate::arch::ArchDef;
use crate::config::{Activation, Arch, Config};
use crate::error::{Error, Result};
use crate::load::parts::Parts;
use crate::load::safetensors::Store;

pub(crate) const QWEN2: ArchDef = ArchDef {
    arch: Arch::Qwen2,
    gguf_names: &["qwen2"],
    hf_model_types: &["qwen2"],
    gguf_config: Some(qwen2_gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config: qwen2_config,
    hf_parts,
};

pub(crate) const QWEN3: ArchDef = ArchDef {
    arch: Arch::Qwen3,
    gguf_names: &["qwen3"],
    hf_model_types: &["qwen3"],
    gguf_config: Some(qwen3_gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config: qwen3_config,
    hf_parts,
};

fn qwen2_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    config(file, v, Arch::Qwen2)
}

fn qwen3_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    let mut cfg = config(file, v, Arch::Qwen3)?;
    cfg.extra.qk_norm = true;
    Ok(cfg)
}

fn config(file: &str, v: &serde_json::Value, arch: Arch) -> Result<Config> {
    let act = v.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("silu");
    if act != "silu" {
        return Err(Error::load(file, format!("hidden_act '{act}' is not supported ({}: silu)", arch.name())));
    }
    // Without `layer_types`, transformers derives the sliding layers from
    // `use_sliding_window` and `max_window_layers`: not read here, so a
    // checkpoint that turns it on without listing its layers is refused.
    if super::hf_bool(file, v, "use_sliding_window", false)? && v.get("layer_types").is_none_or(|x| x.is_null()) {
        return Err(Error::load(file, "use_sliding_window is true but 'layer_types' is absent: which layers slide is not known"));
    }
    hf_decoder_config(file, v, arch, Activation::Silu)
}

fn hf_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    hf_decoder_parts(cfg, st, DecoderNorms::Llama)
}

fn qwen2_gguf_config(g: &Gguf, name: &str) -> Result<Config> {
    gguf_decoder_config(g, name, Arch::Qwen2)
}

fn qwen3_gguf_config(g: &Gguf, name: &str) -> Result<Config> {
    let mut cfg = gguf_decoder_config(g, name, Arch::Qwen3)?;
    cfg.extra.qk_norm = true;
    Ok(cfg)
}

/// llama.cpp's converter leaves Qwen's query and key rows in Hugging Face
/// order (it rotates them as NeoX does, `rotate_half`).
fn gguf_parts(cfg: &Config, g: &Gguf) -> Result<Parts> {
    gguf_decoder_parts(cfg, g, QkLayout::Halves)
}
