//! The llama family (Llama, Mistral, SmolLM2, TinyLlama, ...): RMSNorm,
//! rotary embeddings, grouped-query attention, a SiLU-gated MLP.
//!
//! GGUF stores each head's query and key rows permuted for llama.cpp's
//! interleaved rotary embedding (`QkLayout::Interleaved`). They stay as
//! stored: reordering them would change the attention scores' summation
//! order, which the quantized path's int8 roundings amplify; hooks still
//! show Hugging Face order (`model::forward`).

use crate::arch::{hf_opt_usize, hf_usize, size, ArchDef};
use crate::config::{Activation, Arch, Config, NormKind, PosEmbedding};
use crate::error::{Error, Result};
use crate::load::gguf::Gguf;
use crate::load::parts::{BlockParts, LinearParts, NormParts, Parts, QkLayout, Weight};
use crate::load::safetensors::Store;

pub(crate) const DEF: ArchDef = ArchDef {
    arch: Arch::Llama,
    gguf_names: &["llama", "mistral"],
    hf_model_types: &["llama", "mistral"],
    gguf_config: Some(gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config,
    hf_parts,
};

fn gguf_config(g: &Gguf, arch: &str) -> Result<Config> {
    gguf_decoder_config(g, arch, Arch::Llama)
}

/// The hyperparameters of a GGUF file of the llama layout (llama, Qwen2,
/// Qwen3: `{arch}.embedding_length`, `attention.head_count`, ...; the head
/// size from `attention.key_length` when it is given).
pub(crate) fn gguf_decoder_config(g: &Gguf, arch: &str, kind: Arch) -> Result<Config> {
    let key = |k: &str| format!("{arch}.{k}");
    let u = |k: &str| -> Result<usize> { size(&g.file, &key(k), g.require_u64(&key(k))?) };
    let f = |k: &str| -> Option<f64> { g.get(&key(k)).and_then(|v| v.as_f64()) };
    let n_heads = u("attention.head_count")?;
    let d_model = u("embedding_length")?;
    let n_kv_heads = match g.get(&key("attention.head_count_kv")) {
        Some(_) => u("attention.head_count_kv")?,
        None => n_heads,
    };
    let d_vocab = match g.get(&key("vocab_size")) {
        Some(_) => u("vocab_size")?,
        None => g
            .info("token_embd.weight")
            .map(|t| t.shape[0])
            .ok_or_else(|| Error::load(&g.file, "missing tensor 'token_embd.weight'"))?,
    };
    let d_head = match g.get(&key("attention.key_length")) {
        Some(_) => u("attention.key_length")?,
        None => d_model.checked_div(n_heads).unwrap_or(0),
    };
    if let Some(v) = g.get(&key("attention.value_length")) {
        if v.as_u64() != Some(d_head as u64) {
            return Err(Error::load(&g.file, format!("{} differs from the key length {d_head}: not supported", key("attention.value_length"))));
        }
    }
    let cfg = Config {
        arch: kind,
        n_layers: u("block_count")?,
        d_model,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: u("feed_forward_length")?,
        d_vocab,
        n_ctx: u("context_length")?,
        norm: NormKind::Rms,
        norm_eps: f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        pos_embedding: PosEmbedding::Rope,
        rope_theta: f("rope.freq_base").unwrap_or(10000.0) as f32,
        gated_mlp: true,
        act: Activation::Silu,
        tied_embeddings: g.info("output.weight").is_none(),
        extra: Default::default(),
    };
    cfg.validate(&g.file)?;
    g.check_no_rope_scaling(arch)?;
    if let Some(rope_dim) = g.get(&key("rope.dimension_count")).and_then(|v| v.as_u64()) {
        if rope_dim != cfg.d_head as u64 {
            return Err(Error::load(
                &g.file,
                format!(
                    "rope dimension {rope_dim} differs from the head dimension {}; partial rotary embeddings are not supported",
                    cfg.d_head
                ),
            ));
        }
    }
    Ok(cfg)
}

fn gguf_parts(cfg: &Config, g: &Gguf) -> Result<Parts> {
    gguf_decoder_parts(cfg, g, QkLayout::Interleaved)
}

/// The weights of a GGUF file of the llama layout: `blk.{l}.attn_q` ...
/// with the biases (`attn_q.bias`, Qwen2) and q/k norms (`attn_q_norm`,
/// Qwen3) the file has. `layout`: llama.cpp's converter permutes query and
/// key rows for llama models only.
pub(crate) fn gguf_decoder_parts(cfg: &Config, g: &Gguf, layout: QkLayout) -> Result<Parts> {
    let check = |t: &str, shape: &[usize], want: &[usize]| -> Result<()> {
        if shape != want {
            return Err(Error::load(&g.file, format!("tensor '{t}' has shape {shape:?}, expected {want:?}")));
        }
        Ok(())
    };
    let weight = |t: &str, want: &[usize]| -> Result<Weight> {
        let w = g.weight(t)?;
        check(t, &w.dims(), want)?;
        Ok(w)
    };
    let norm_of = |t: &str, width: usize| -> Result<NormParts> { Ok(NormParts { w: weight(t, &[width])?.to_f32()?, b: None }) };
    let norm = |t: &str| norm_of(t, cfg.d_model);
    let (d, v, m) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
    let (q_rows, kv) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let bias = |t: &str, width: usize| -> Result<Option<candle_core::Tensor>> {
        match g.info(t) {
            Some(_) => Ok(Some(weight(t, &[width])?.to_f32()?)),
            None => Ok(None),
        }
    };
    let embed = weight("token_embd.weight", &[v, d])?;
    let unembed = match g.info("output.weight") {
        Some(_) => Some(weight("output.weight", &[v, d])?),
        None => None,
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        let lin = |s: &str, want: [usize; 2]| -> Result<LinearParts> {
            Ok(LinearParts { w: weight(&n(s), &want)?, b: bias(&format!("blk.{l}.{s}.bias"), want[0])? })
        };
        let qk_norm = |s: &str| -> Result<Option<NormParts>> {
            if cfg.extra.qk_norm { norm_of(&n(s), cfg.d_head).map(Some) } else { Ok(None) }
        };
        blocks.push(BlockParts {
            ln1: norm(&n("attn_norm"))?,
            q: lin("attn_q", [q_rows, d])?,
            k: lin("attn_k", [kv, d])?,
            v: lin("attn_v", [kv, d])?,
            q_norm: qk_norm("attn_q_norm")?,
            k_norm: qk_norm("attn_k_norm")?,
            o: lin("attn_output", [d, q_rows])?,
            ln1_post: None,
            ln2: norm(&n("ffn_norm"))?,
            ln2_post: None,
            gate: Some(lin("ffn_gate", [m, d])?),
            up: lin("ffn_up", [m, d])?,
            down: lin("ffn_down", [d, m])?,
        });
    }
    let ln_final = norm("output_norm.weight")?;
    Ok(Parts { embed, pos_embed: None, blocks, ln_final, unembed, qk_layout: layout })
}

fn hf_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    let act = v.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("silu");
    if act != "silu" {
        return Err(Error::load(file, format!("hidden_act '{act}' is not supported (llama: silu)")));
    }
    hf_decoder_config(file, v, Arch::Llama, Activation::Silu)
}

/// The hyperparameters every checkpoint of the llama layout shares (llama,
/// Qwen2/3, Gemma 2/3 start from these): sizes, RMSNorm epsilon, rotary
/// base, tied embeddings, and sliding-window layers from `layer_types`.
pub(crate) fn hf_decoder_config(file: &str, v: &serde_json::Value, arch: Arch, act: Activation) -> Result<Config> {
    let get = |k: &str| hf_usize(file, v, k);
    let opt = |k: &str| hf_opt_usize(file, v, k);
    let d_model = get("hidden_size")?;
    let n_heads = get("num_attention_heads")?;
    let n_layers = get("num_hidden_layers")?;
    let rope_theta = super::hf_rope_theta(file, v)? as f32;
    let sliding_layers = super::hf_layer_types(file, v, n_layers, |_| false)?;
    let sliding_window = if sliding_layers.is_empty() { None } else { opt("sliding_window")? };
    Ok(Config {
        arch,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: opt("num_key_value_heads")?.unwrap_or(n_heads),
        d_head: opt("head_dim")?.unwrap_or(d_model.checked_div(n_heads).unwrap_or(0)),
        d_mlp: get("intermediate_size")?,
        d_vocab: get("vocab_size")?,
        n_ctx: get("max_position_embeddings")?,
        norm: NormKind::Rms,
        norm_eps: super::hf_opt_f64(file, v, "rms_norm_eps")?.unwrap_or(1e-6),
        pos_embedding: PosEmbedding::Rope,
        rope_theta,
        gated_mlp: true,
        act,
        // Absent, transformers' default for the config class: tied for
        // Gemma 2/3 (whose hub configs omit it), untied for llama and Qwen.
        tied_embeddings: super::hf_bool(file, v, "tie_word_embeddings", matches!(arch, Arch::Gemma2 | Arch::Gemma3))?,
        extra: crate::config::Features { sliding_window, sliding_layers, ..Default::default() },
    })
}

fn hf_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    hf_decoder_parts(cfg, st, DecoderNorms::Llama)
}

/// How a checkpoint of the llama layout names and applies its block norms.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecoderNorms {
    /// `input_layernorm` before attention, `post_attention_layernorm`
    /// before the MLP; RMSNorm scales by `w` (llama, Qwen).
    Llama,
    /// Gemma 2/3: four norms a block (`input_layernorm`,
    /// `post_attention_layernorm` after attention, `pre_feedforward_layernorm`,
    /// `post_feedforward_layernorm`), each scaling by `1 + w`.
    Gemma,
}

/// The weights of a checkpoint of the llama layout (`model.layers.{l}.
/// self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`, ...), with the
/// biases and q/k norms it has.
pub(crate) fn hf_decoder_parts(cfg: &Config, st: &Store, norms: DecoderNorms) -> Result<Parts> {
    let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
    let (q_rows, kv) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
    let lin = |n: &str, out: usize, inp: usize| -> Result<LinearParts> {
        Ok(LinearParts::f32(st.get(&format!("{n}.weight"), &[out, inp])?, st.get_opt(&format!("{n}.bias"), &[out])?))
    };
    let norm_of = |n: &str, width: usize| -> Result<NormParts> {
        let w = st.get(&format!("{n}.weight"), &[width])?;
        match norms {
            DecoderNorms::Llama => Ok(NormParts::weight(w)),
            DecoderNorms::Gemma => NormParts::one_plus(w),
        }
    };
    let norm = |n: &str| norm_of(n, d);
    let embed = st.get("model.embed_tokens.weight", &[v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let qk_norm = |which: &str| -> Result<Option<NormParts>> {
            if cfg.extra.qk_norm { norm_of(&format!("{p}.self_attn.{which}"), cfg.d_head).map(Some) } else { Ok(None) }
        };
        let (ln2, ln1_post, ln2_post) = match norms {
            DecoderNorms::Llama => (norm(&format!("{p}.post_attention_layernorm"))?, None, None),
            DecoderNorms::Gemma => (
                norm(&format!("{p}.pre_feedforward_layernorm"))?,
                Some(norm(&format!("{p}.post_attention_layernorm"))?),
                Some(norm(&format!("{p}.post_feedforward_layernorm"))?),
            ),
        };
        blocks.push(BlockParts {
            ln1: norm(&format!("{p}.input_layernorm"))?,
            q: lin(&format!("{p}.self_attn.q_proj"), q_rows, d)?,
            k: lin(&format!("{p}.self_attn.k_proj"), kv, d)?,
            v: lin(&format!("{p}.self_attn.v_proj"), kv, d)?,
            q_norm: qk_norm("q_norm")?,
            k_norm: qk_norm("k_norm")?,
            o: lin(&format!("{p}.self_attn.o_proj"), d, q_rows)?,
            ln1_post,
            ln2,
            ln2_post,
            gate: Some(lin(&format!("{p}.mlp.gate_proj"), m, d)?),
            up: lin(&format!("{p}.mlp.up_proj"), m, d)?,
            down: lin(&format!("{p}.mlp.down_proj"), d, m)?,
        });
    }
    let unembed = if cfg.tied_embeddings { None } else { Some(Weight::F32(st.get("lm_head.weight", &[v, d])?)) };
    let ln_final = norm("model.norm")?;
    Ok(Parts { embed: Weight::F32(embed), pos_embed: None, blocks, ln_final, unembed, qk_layout: QkLayout::Halves })
}
