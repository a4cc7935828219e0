//! GPT-2 (and checkpoints of its layout): LayerNorm with biases, learned
//! position embeddings, a GELU MLP, Conv1D weights stored `[in, out]` and a
//! fused `c_attn` holding the query, key and value projections.

use candle_core::Tensor;

use crate::arch::{hf_opt_usize, hf_usize, ArchDef};
use crate::config::{Activation, Arch, Config, NormKind, PosEmbedding};
use crate::error::{Error, Result};
use crate::load::parts::{BlockParts, LinearParts, NormParts, Parts, QkLayout, Weight};
use crate::load::safetensors::Store;

pub(crate) const DEF: ArchDef = ArchDef {
    arch: Arch::Gpt2,
    gguf_names: &[],
    hf_model_types: &["gpt2"],
    gguf_config: None,
    gguf_parts: None,
    hf_config,
    hf_parts,
};

fn hf_config(file: &str, v: &serde_json::Value) -> Result<Config> {
    let get = |k: &str| hf_usize(file, v, k);
    let d_model = get("n_embd")?;
    let n_heads = get("n_head")?;
    let act = match v.get("activation_function").and_then(|a| a.as_str()).unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        other => return Err(Error::load(file, format!("activation_function '{other}' is not supported"))),
    };
    Ok(Config {
        arch: Arch::Gpt2,
        n_layers: get("n_layer")?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head: d_model.checked_div(n_heads).unwrap_or(0),
        d_mlp: hf_opt_usize(file, v, "n_inner")?.unwrap_or(d_model.saturating_mul(4)),
        d_vocab: get("vocab_size")?,
        n_ctx: get("n_positions").or_else(|_| get("n_ctx"))?,
        norm: NormKind::Layer,
        norm_eps: v.get("layer_norm_epsilon").and_then(|x| x.as_f64()).unwrap_or(1e-5),
        pos_embedding: PosEmbedding::Learned,
        rope_theta: 10000.0,
        gated_mlp: false,
        act,
        tied_embeddings: true,
        extra: Default::default(),
    })
}

fn hf_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    // GPT2LMHeadModel checkpoints prefix the body with "transformer.".
    let pre = if st.has("transformer.wte.weight") { "transformer." } else { "" };
    let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
    let get = |n: &str, shape: &[usize]| st.get(&format!("{pre}{n}"), shape);
    // Conv1D stores [in, out]; our matrices are [out, in].
    let conv = |n: &str, d_in: usize, d_out: usize| -> Result<(Tensor, Tensor)> {
        let w = get(&format!("{n}.weight"), &[d_in, d_out])?.t()?.contiguous()?;
        Ok((w, get(&format!("{n}.bias"), &[d_out])?))
    };
    let linear = |n: &str, d_in: usize, d_out: usize| -> Result<LinearParts> {
        let (w, b) = conv(n, d_in, d_out)?;
        Ok(LinearParts::f32(w, Some(b)))
    };
    let ln = |n: &str| -> Result<NormParts> {
        Ok(NormParts { w: get(&format!("{n}.weight"), &[d])?, b: Some(get(&format!("{n}.bias"), &[d])?) })
    };
    let embed = get("wte.weight", &[v, d])?;
    let pos_embed = Some(get("wpe.weight", &[cfg.n_ctx, d])?);
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("h.{l}");
        let (qkv_w, qkv_b) = conv(&format!("{p}.attn.c_attn"), d, 3 * d)?;
        let part = |i: usize| -> Result<LinearParts> {
            Ok(LinearParts::f32(qkv_w.narrow(0, i * d, d)?.contiguous()?, Some(qkv_b.narrow(0, i * d, d)?.contiguous()?)))
        };
        blocks.push(BlockParts {
            ln1: ln(&format!("{p}.ln_1"))?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            o: linear(&format!("{p}.attn.c_proj"), d, d)?,
            q_norm: None,
            k_norm: None,
            ln1_post: None,
            ln2_post: None,
            ln2: ln(&format!("{p}.ln_2"))?,
            gate: None,
            up: linear(&format!("{p}.mlp.c_fc"), d, m)?,
            down: linear(&format!("{p}.mlp.c_proj"), m, d)?,
        });
    }
    let unembed = st.get_opt("lm_head.weight", &[v, d])?.map(Weight::F32);
    let ln_final = ln("ln_f")?;
    Ok(Parts { embed: Weight::F32(embed), pos_embed, blocks, ln_final, unembed, qk_layout: QkLayout::Halves })
}
