//! Gemma 2 and Gemma 3 (text): the llama layout with four norms a block
//! (pre/post attention, pre/post MLP), RMSNorm scaling by `1 + w`,
//! embeddings scaled by √d_model, a GELU-tanh gated MLP,
//! `query_pre_attn_scalar`, sliding-window layers, and soft-capped
//! attention scores and logits (Gemma 2) or q/k norms and a second RoPE
//! base for sliding layers (Gemma 3).

use crate::arch::llama::{gguf_decoder_config, gguf_decoder_parts, hf_decoder_config, hf_decoder_parts, DecoderNorms};
use crate::load::gguf::Gguf;
use crate::load::parts::{NormParts, QkLayout};
use crate::arch::{hf_opt_f64, ArchDef};
use crate::config::{Activation, Arch, Config};
use crate::error::{Error, Result};
use crate::load::parts::Parts;
use crate::load::safetensors::Store;

pub(crate) const GEMMA2: ArchDef = ArchDef {
    arch: Arch::Gemma2,
    gguf_names: &["gemma2"],
    hf_model_types: &["gemma2"],
    gguf_config: Some(gemma2_gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config: gemma2_config,
    hf_parts,
};

pub(crate) const GEMMA3: ArchDef = ArchDef {
    arch: Arch::Gemma3,
    gguf_names: &["gemma3"],
    hf_model_types: &["gemma3_text", "gemma3"],
    gguf_config: Some(gemma3_gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config: gemma3_config,
    hf_parts,
};

/// The activation of Gemma's gated MLP (`hidden_activation`, or `hidden_act`
/// in older configs).
fn activation(file: &str, v: &serde_json::Value) -> Result<Activation> {
    let act = v.get("hidden_activation").filter(|a| !a.is_null()).or_else(|| v.get("hidden_act")).and_then(|a| a.as_str());
    match act.unwrap_or("gelu_pytorch_tanh") {
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
        "gelu" => Ok(Activation::Gelu),
        other => Err(Error::load(file, format!("hidden_activation '{other}' is not supported (gelu_pytorch_tanh, gelu)"))),
    }
}

/// What Gemma 2 and 3 share on top of the llama layout's config. `rope` is
/// the (already checked) config the rotary base is read from: Gemma 3 in
/// transformers 5 nests one per layer type.
fn common(file: &str, v: &serde_json::Value, arch: Arch, sliding_default: impl Fn(usize) -> bool) -> Result<Config> {
    let act = activation(file, v)?;
    // Layer types come from `layer_types`, else the architecture's pattern.
    let mut plain = v.clone();
    if let Some(o) = plain.as_object_mut() {
        o.remove("rope_parameters");
        if v.get("layer_types").is_none_or(|x| x.is_null()) {
            let n = super::hf_usize(file, v, "num_hidden_layers")?;
            let types: Vec<&str> = (0..n).map(|l| if sliding_default(l) { "sliding_attention" } else { "full_attention" }).collect();
            o.insert("layer_types".into(), serde_json::json!(types));
        }
    }
    let mut cfg = hf_decoder_config(file, &plain, arch, act)?;
    let f = &mut cfg.extra;
    f.post_norms = true;
    f.embed_scale = Some((cfg.d_model as f64).sqrt() as f32);
    let scalar = hf_opt_f64(file, v, "query_pre_attn_scalar")?.unwrap_or(cfg.d_head as f64);
    if scalar.is_nan() || scalar <= 0.0 {
        return Err(Error::load(file, format!("query_pre_attn_scalar {scalar} is not positive")));
    }
    f.attn_scale = Some(scalar.powf(-0.5) as f32);
    f.attn_softcap = hf_opt_f64(file, v, "attn_logit_softcapping")?.map(|c| c as f32);
    f.final_softcap = hf_opt_f64(file, v, "final_logit_softcapping")?.map(|c| c as f32);
    if !f.sliding_layers.is_empty() && f.sliding_window.is_none() {
        return Err(Error::load(file, "sliding-window layers but no 'sliding_window' size"));
    }
    Ok(cfg)
}

fn gemma2_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    // Older Gemma 2 configs list no layer types: even layers slide.
    let mut cfg = common(file, v, Arch::Gemma2, |l| l % 2 == 0)?;
    cfg.rope_theta = super::hf_rope_theta(file, v)? as f32;
    Ok(cfg)
}

fn gemma3_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    if v.get("model_type").and_then(|m| m.as_str()) == Some("gemma3") {
        return Err(Error::load(
            file,
            "this is a multimodal Gemma 3 checkpoint (model_type 'gemma3', text under 'text_config'): open a text-only one (model_type 'gemma3_text', e.g. gemma-3-270m or gemma-3-1b)",
        ));
    }
    // Older configs: every `sliding_window_pattern`-th layer is global.
    let pattern = super::hf_opt_usize(file, v, "sliding_window_pattern")?.or(super::hf_opt_usize(file, v, "_sliding_window_pattern")?).unwrap_or(6);
    if pattern == 0 {
        return Err(Error::load(file, "sliding_window_pattern is 0"));
    }
    let mut cfg = common(file, v, Arch::Gemma3, |l| (l + 1) % pattern != 0)?;
    cfg.extra.qk_norm = true;
    if cfg.extra.attn_softcap.is_some() {
        return Err(Error::load(file, "attn_logit_softcapping is set: Gemma 3 has no attention soft-capping"));
    }
    // transformers 5: `rope_parameters: {full_attention: {...}, sliding_attention: {...}}`;
    // transformers 4: `rope_theta` (+ `rope_scaling`) for full layers and
    // `rope_local_base_freq` for sliding ones.
    let nested = v.get("rope_parameters").filter(|p| p.get("full_attention").is_some() || p.get("sliding_attention").is_some());
    let (global, local) = match nested {
        Some(p) => {
            let theta_of = |key: &str| -> Result<Option<f64>> {
                match p.get(key) {
                    None => Ok(None),
                    Some(sub) => super::hf_rope_theta(file, &serde_json::json!({ "rope_parameters": sub })).map(Some),
                }
            };
            let global = theta_of("full_attention")?.ok_or_else(|| Error::load(file, "rope_parameters has no 'full_attention' entry"))?;
            (global, theta_of("sliding_attention")?)
        }
        None => (super::hf_rope_theta(file, v)?, hf_opt_f64(file, v, "rope_local_base_freq")?),
    };
    cfg.rope_theta = global as f32;
    cfg.extra.rope_local_theta = Some(local.unwrap_or(10000.0) as f32);
    Ok(cfg)
}

fn hf_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    hf_decoder_parts(cfg, st, DecoderNorms::Gemma)
}

/// What llama.cpp fixes or defaults for a Gemma GGUF, where the two
/// generations differ (`src/models/gemma2.cpp`, `gemma3.cpp`).
struct GgufDefaults {
    /// `set_swa_pattern`'s group size when the file gives no
    /// `attention.sliding_window_pattern`.
    swa_pattern: usize,
    /// The window when the file gives none (`None`: no layer slides).
    window: Option<usize>,
    /// The sliding layers' RoPE base when `rope.freq_base_swa` is absent
    /// (`None`: the full layers' base).
    local_theta: Option<f64>,
    /// Layer count of the model whose scores scale by (d_model / heads)^-½
    /// instead of head_dim^-½ (the 27B of each generation).
    wide_scale_layers: usize,
}

/// A Gemma 2 GGUF as llama.cpp reads it: even layers slide (window 4096
/// unless given), scores scale by head_dim^-½ (the file carries no
/// `query_pre_attn_scalar`), attention and final soft-caps from the file
/// or llama.cpp's defaults (50, 30), one RoPE base unless
/// `rope.freq_base_swa` is given.
fn gemma2_gguf_config(g: &Gguf, name: &str) -> Result<Config> {
    let d = GgufDefaults { swa_pattern: 2, window: Some(4096), local_theta: None, wide_scale_layers: 46 };
    let mut cfg = gguf_config(g, name, Arch::Gemma2, d)?;
    let f = &mut cfg.extra;
    f.attn_softcap = Some(g.opt_f64(&format!("{name}.attn_logit_softcapping"))?.unwrap_or(50.0) as f32);
    f.final_softcap = Some(g.opt_f64(&format!("{name}.final_logit_softcapping"))?.unwrap_or(30.0) as f32);
    cfg.validate(&g.file)?;
    Ok(cfg)
}

/// A Gemma 3 GGUF as llama.cpp reads it: the file carries no
/// `query_pre_attn_scalar` (scores scale by head_dim^-½, or
/// (d_model / heads)^-½ for the 62-layer 27B) and no layer types unless
/// `attention.sliding_window_pattern` is given (else every 6th layer is
/// full); the sliding layers' RoPE base is `rope.freq_base_swa` (default
/// 10000); no attention soft-cap, a final one only when the file says.
fn gemma3_gguf_config(g: &Gguf, name: &str) -> Result<Config> {
    let d = GgufDefaults { swa_pattern: 6, window: None, local_theta: Some(10000.0), wide_scale_layers: 62 };
    let mut cfg = gguf_config(g, name, Arch::Gemma3, d)?;
    cfg.extra.qk_norm = true;
    cfg.extra.final_softcap = g.opt_f64(&format!("{name}.final_logit_softcapping"))?.map(|c| c as f32);
    cfg.validate(&g.file)?;
    Ok(cfg)
}

/// What Gemma 2 and 3 GGUF files share: the llama layout's keys, √d_model
/// embedding scale, post-norms, GELU-tanh, the score scale and the sliding
/// layers. The converter stores the norms' `1 + w` itself.
fn gguf_config(g: &Gguf, name: &str, arch: Arch, defaults: GgufDefaults) -> Result<Config> {
    let mut cfg = gguf_decoder_config(g, name, arch)?;
    let key = |k: &str| format!("{name}.{k}");
    let file = &g.file;
    cfg.act = Activation::GeluTanh;
    let f = &mut cfg.extra;
    f.post_norms = true;
    f.embed_scale = Some((cfg.d_model as f64).sqrt() as f32);
    let scale_width = if cfg.n_layers == defaults.wide_scale_layers { cfg.d_model / cfg.n_heads } else { cfg.d_head };
    f.attn_scale = Some((scale_width as f64).powf(-0.5) as f32);
    let window = match g.get(&key("attention.sliding_window")) {
        None => defaults.window,
        Some(v) => {
            let w = v.as_u64().ok_or_else(|| Error::load(file, format!("{} is not an integer", key("attention.sliding_window"))))?;
            Some(super::size(file, &key("attention.sliding_window"), w)?)
        }
    };
    if let Some(window) = window.filter(|&w| w > 0) {
        f.sliding_window = Some(window);
        f.sliding_layers = match g.get(&key("attention.sliding_window_pattern")) {
            Some(v) => match (v.as_array(), v.as_u64()) {
                (Some(a), _) => {
                    let layers: Vec<bool> = a.iter().map(|x| x.as_bool()).collect::<Option<_>>().ok_or_else(|| {
                        Error::load(file, format!("{} is not an array of booleans", key("attention.sliding_window_pattern")))
                    })?;
                    if layers.len() != cfg.n_layers {
                        return Err(Error::load(file, format!("{} lists {} layers; the model has {}", key("attention.sliding_window_pattern"), layers.len(), cfg.n_layers)));
                    }
                    layers
                }
                (None, Some(p)) => pattern_layers(cfg.n_layers, p as usize),
                _ => return Err(Error::load(file, format!("{} is neither a number nor an array", key("attention.sliding_window_pattern")))),
            },
            None => pattern_layers(cfg.n_layers, defaults.swa_pattern),
        };
        f.rope_local_theta = g.opt_f64(&key("rope.freq_base_swa"))?.or(defaults.local_theta).map(|t| t as f32);
    }
    Ok(cfg)
}

/// llama.cpp's `set_swa_pattern`: layer `l` slides unless it is the last
/// of each group of `p` (every layer slides when `p` is 0).
fn pattern_layers(n_layers: usize, p: usize) -> Vec<bool> {
    (0..n_layers).map(|l| p == 0 || l % p < p - 1).collect()
}

fn gguf_parts(cfg: &Config, g: &Gguf) -> Result<Parts> {
    // Query and key rows are in Hugging Face order (Gemma rotates halves).
    let mut parts = gguf_decoder_parts(cfg, g, QkLayout::Halves)?;
    for (l, b) in parts.blocks.iter_mut().enumerate() {
        let norm = |s: &str| -> Result<NormParts> {
            let t = format!("blk.{l}.{s}.weight");
            let w = g.qtensor(&t)?.dequantize(&candle_core::Device::Cpu)?;
            if w.dims() != [cfg.d_model] {
                return Err(Error::load(&g.file, format!("tensor '{t}' has shape {:?}, expected [{}]", w.dims(), cfg.d_model)));
            }
            Ok(NormParts::weight(w))
        };
        b.ln1_post = Some(norm("post_attention_norm")?);
        b.ln2_post = Some(norm("post_ffw_norm")?);
    }
    Ok(parts)
}
