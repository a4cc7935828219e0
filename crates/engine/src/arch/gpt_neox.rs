//! GPT-NeoX (Pythia): LayerNorm with biases, attention and MLP in parallel
//! off the block input (`use_parallel_residual`), rotary embeddings on the
//! first `rotary_pct` of each head, a fused query/key/value matrix laid
//! out head by head (`[q_h, k_h, v_h]` for each head h), a GELU MLP with
//! biases and an untied unembedding.
//!
//! GGUF files (`gptneox`) are read as llama.cpp reads them
//! (`src/models/gptneox.cpp`), with one deliberate difference: llama.cpp
//! computes the MLP's GELU with the tanh approximation, while the models
//! (Pythia: `hidden_act: "gelu"`) were trained with the exact, erf-based
//! GELU that transformers computes. The file does not say which; Scalpel
//! computes the model's own, so a GGUF gives transformers' numbers
//! (llama.cpp's differ by up to ~1e-3 per activation).

use candle_core::Tensor;

use crate::arch::{hf_bool, hf_opt_f64, hf_usize, size, ArchDef};
use crate::config::{Activation, Arch, Config, NormKind, PosEmbedding};
use crate::error::{Error, Result};
use crate::load::gguf::Gguf;
use crate::load::parts::{BlockParts, LinearParts, NormParts, Parts, QkLayout, Weight};
use crate::load::safetensors::Store;

pub(crate) const DEF: ArchDef = ArchDef {
    arch: Arch::GptNeox,
    gguf_names: &["gptneox"],
    hf_model_types: &["gpt_neox"],
    gguf_config: Some(gguf_config),
    gguf_parts: Some(gguf_parts),
    hf_config,
    hf_parts,
};

fn gguf_config(g: &Gguf, name: &str) -> Result<Config> {
    let file = &g.file;
    let key = |k: &str| format!("{name}.{k}");
    let u = |k: &str| -> Result<usize> { size(file, &key(k), g.require_u64(&key(k))?) };
    let number = |k: &str| g.opt_f64(&key(k));
    let d_model = u("embedding_length")?;
    let n_heads = u("attention.head_count")?;
    let d_head = d_model.checked_div(n_heads).unwrap_or(0);
    if let Some(kv) = g.get(&key("attention.head_count_kv")) {
        if kv.as_u64() != Some(n_heads as u64) {
            return Err(Error::load(file, format!("{} differs from the head count {n_heads}: GPT-NeoX has no grouped keys", key("attention.head_count_kv"))));
        }
    }
    // llama.cpp requires both; a default would silently change the block.
    let parallel = g
        .require(&key("use_parallel_residual"))?
        .as_bool()
        .ok_or_else(|| Error::load(file, format!("{} is not a boolean", key("use_parallel_residual"))))?;
    let eps = number("attention.layer_norm_epsilon")?.ok_or_else(|| Error::load(file, format!("missing metadata '{}'", key("attention.layer_norm_epsilon"))))?;
    let rotary_dim = match g.get(&key("rope.dimension_count")) {
        None => d_head,
        Some(_) => u("rope.dimension_count")?,
    };
    if rotary_dim == 0 || rotary_dim > d_head || rotary_dim % 2 != 0 {
        return Err(Error::load(file, format!("{} = {rotary_dim} is not an even number in 2..={d_head}", key("rope.dimension_count"))));
    }
    g.check_no_rope_scaling(name)?;
    let d_vocab = g.info("token_embd.weight").and_then(|t| t.shape.first().copied()).ok_or_else(|| Error::load(file, "missing tensor 'token_embd.weight'"))?;
    if g.info("output.weight").is_none() {
        return Err(Error::load(file, "missing tensor 'output.weight': GPT-NeoX's unembedding is its own matrix"));
    }
    Ok(Config {
        arch: Arch::GptNeox,
        n_layers: u("block_count")?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head,
        d_mlp: u("feed_forward_length")?,
        d_vocab,
        n_ctx: u("context_length")?,
        norm: NormKind::Layer,
        norm_eps: eps,
        pos_embedding: PosEmbedding::Rope,
        rope_theta: number("rope.freq_base")?.unwrap_or(10000.0) as f32,
        gated_mlp: false,
        act: Activation::Gelu,
        tied_embeddings: false,
        extra: crate::config::Features {
            parallel_residual: parallel,
            rotary_dim: (rotary_dim != d_head).then_some(rotary_dim),
            ..Default::default()
        },
    })
}

/// llama.cpp's converter reorders the fused query/key/value rows from
/// head by head to role by role (all query rows, then key, then value) and
/// keeps Hugging Face's rotary order within a head.
fn gguf_parts(cfg: &Config, g: &Gguf) -> Result<Parts> {
    let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
    let check = |t: &str, got: &[usize], want: &[usize]| -> Result<()> {
        if got != want {
            return Err(Error::load(&g.file, format!("tensor '{t}' has shape {got:?}, expected {want:?}")));
        }
        Ok(())
    };
    let matrix = |t: &str, want: [usize; 2]| -> Result<Weight> {
        let w = g.weight(t)?;
        check(t, &w.dims(), &want)?;
        Ok(w)
    };
    let vector = |t: &str, width: usize| -> Result<Tensor> {
        let q = g.qtensor(t)?;
        check(t, q.shape().dims(), &[width])?;
        Ok(q.dequantize(&candle_core::Device::Cpu)?)
    };
    let ln = |n: &str| -> Result<NormParts> { Ok(NormParts { w: vector(&format!("{n}.weight"), d)?, b: Some(vector(&format!("{n}.bias"), d)?) }) };
    let linear = |n: &str, want: [usize; 2]| -> Result<LinearParts> {
        Ok(LinearParts { w: matrix(&format!("{n}.weight"), want)?, b: Some(vector(&format!("{n}.bias"), want[0])?) })
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("blk.{l}");
        let qkv = format!("{p}.attn_qkv");
        let info = g.info(&format!("{qkv}.weight")).ok_or_else(|| Error::load(&g.file, format!("missing tensor '{qkv}.weight'")))?;
        check(&format!("{qkv}.weight"), &info.shape, &[3 * d, d])?;
        let bias = vector(&format!("{qkv}.bias"), 3 * d)?;
        let part = |i: usize| -> Result<LinearParts> {
            Ok(LinearParts { w: g.weight_rows(&format!("{qkv}.weight"), i * d, d)?, b: Some(bias.narrow(0, i * d, d)?.contiguous()?) })
        };
        blocks.push(BlockParts {
            ln1: ln(&format!("{p}.attn_norm"))?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            q_norm: None,
            k_norm: None,
            o: linear(&format!("{p}.attn_output"), [d, d])?,
            ln1_post: None,
            ln2: ln(&format!("{p}.ffn_norm"))?,
            ln2_post: None,
            gate: None,
            up: linear(&format!("{p}.ffn_up"), [m, d])?,
            down: linear(&format!("{p}.ffn_down"), [d, m])?,
        });
    }
    Ok(Parts {
        embed: matrix("token_embd.weight", [v, d])?,
        pos_embed: None,
        blocks,
        ln_final: ln("output_norm")?,
        unembed: Some(matrix("output.weight", [v, d])?),
        qk_layout: QkLayout::Halves,
    })
}

fn hf_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    let get = |k: &str| hf_usize(file, v, k);
    let d_model = get("hidden_size")?;
    let n_heads = get("num_attention_heads")?;
    let d_head = d_model.checked_div(n_heads).unwrap_or(0);
    let act = match v.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("gelu") {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        other => return Err(Error::load(file, format!("hidden_act '{other}' is not supported (gelu, gelu_new)"))),
    };
    // transformers 4: `rotary_pct` and `rotary_emb_base`; 5: `rope_parameters`.
    let rope = super::hf_rope(file, v)?;
    let (theta, partial) = match (hf_opt_f64(file, v, "rotary_emb_base")?, hf_opt_f64(file, v, "rotary_pct")?) {
        (None, None) => (rope.theta, rope.partial),
        (base, pct) => {
            if v.get("rope_parameters").is_some_and(|p| !p.is_null()) {
                return Err(Error::load(file, "both 'rotary_pct'/'rotary_emb_base' and 'rope_parameters' are set"));
            }
            (base.unwrap_or(10000.0), pct.unwrap_or(1.0))
        }
    };
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(Error::load(file, format!("rotary fraction {partial} is not in (0, 1]")));
    }
    // transformers: `int(head_dim * partial_rotary_factor)`.
    let rotary_dim = (d_head as f64 * partial) as usize;
    if !hf_bool(file, v, "attention_bias", true)? {
        return Err(Error::load(file, "attention_bias false is not supported for gpt_neox"));
    }
    Ok(Config {
        arch: Arch::GptNeox,
        n_layers: get("num_hidden_layers")?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head,
        d_mlp: get("intermediate_size")?,
        d_vocab: get("vocab_size")?,
        n_ctx: get("max_position_embeddings")?,
        norm: NormKind::Layer,
        norm_eps: hf_opt_f64(file, v, "layer_norm_eps")?.unwrap_or(1e-5),
        pos_embedding: PosEmbedding::Rope,
        rope_theta: theta as f32,
        gated_mlp: false,
        act,
        tied_embeddings: hf_bool(file, v, "tie_word_embeddings", false)?,
        extra: crate::config::Features {
            parallel_residual: hf_bool(file, v, "use_parallel_residual", true)?,
            rotary_dim: (rotary_dim != d_head).then_some(rotary_dim),
            ..Default::default()
        },
    })
}

fn hf_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    let (d, m, v, nh, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_heads, cfg.d_head);
    let pre = if st.has("gpt_neox.embed_in.weight") { "gpt_neox." } else { "" };
    let get = |n: &str, shape: &[usize]| st.get(&format!("{pre}{n}"), shape);
    let linear = |n: &str, out: usize, inp: usize| -> Result<LinearParts> {
        Ok(LinearParts::f32(get(&format!("{n}.weight"), &[out, inp])?, Some(get(&format!("{n}.bias"), &[out])?)))
    };
    let ln = |n: &str| -> Result<NormParts> {
        Ok(NormParts { w: get(&format!("{n}.weight"), &[d])?, b: Some(get(&format!("{n}.bias"), &[d])?) })
    };
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("layers.{l}");
        let qkv = linear(&format!("{p}.attention.query_key_value"), 3 * d, d)?;
        let (w, b) = match qkv {
            LinearParts { w: Weight::F32(w), b: Some(b) } => (w, b),
            _ => unreachable!("read as f32 with a bias above"),
        };
        // Rows are [head][q | k | v][d_head]: gather each of q, k, v.
        let w = w.reshape((nh, 3, dh, d))?;
        let b = b.reshape((nh, 3, dh))?;
        let part = |i: usize| -> Result<LinearParts> {
            let wi: Tensor = w.narrow(1, i, 1)?.reshape((nh * dh, d))?.contiguous()?;
            let bi: Tensor = b.narrow(1, i, 1)?.reshape(nh * dh)?.contiguous()?;
            Ok(LinearParts::f32(wi, Some(bi)))
        };
        blocks.push(BlockParts {
            ln1: ln(&format!("{p}.input_layernorm"))?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            q_norm: None,
            k_norm: None,
            o: linear(&format!("{p}.attention.dense"), d, d)?,
            ln1_post: None,
            ln2: ln(&format!("{p}.post_attention_layernorm"))?,
            ln2_post: None,
            gate: None,
            up: linear(&format!("{p}.mlp.dense_h_to_4h"), m, d)?,
            down: linear(&format!("{p}.mlp.dense_4h_to_h"), d, m)?,
        });
    }
    let embed = get("embed_in.weight", &[v, d])?;
    let unembed = if cfg.tied_embeddings { None } else { Some(Weight::F32(st.get("embed_out.weight", &[v, d])?)) };
    Ok(Parts { embed: Weight::F32(embed), pos_embed: None, blocks, ln_final: ln("final_layer_norm")?, unembed, qk_layout: QkLayout::Halves })
}
