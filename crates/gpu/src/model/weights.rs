//! The model's weights on the GPU, uploaded from the engine's parts layout:
//! f32, or (when asked) Q8_0/Q4_1 blocks repacked into 4-byte words. Query
//! and key rows are put in Hugging Face order here (whole rows move, so
//! quantized blocks move as they are) and the GPU's RoPE runs on pairs
//! `i, i + d_head/2`.

use scalpel_engine::load::parts::{Parts, Weight};
use scalpel_engine::config::{Activation, NormKind, PosEmbedding};
use scalpel_engine::{rotary, Config};

use crate::device::Gpu;
use crate::quant::{block_words, gpu_format, repack};
use crate::{GpuError, Result};

/// A weight matrix `[out, in]` on the GPU: f32, or repacked blocks of a
/// quantized format (`fmt`, see `quant.rs`).
pub(super) struct Mat {
    pub buf: wgpu::Buffer,
    pub fmt: Option<u32>,
}

pub(super) struct LayerWeights {
    pub ln1: wgpu::Buffer,
    /// Query, key and value rows stacked (one matmul).
    pub wqkv: Mat,
    pub wo: Mat,
    pub ln2: wgpu::Buffer,
    /// Gate and up rows stacked.
    pub wgu: Mat,
    pub wdown: Mat,
    pub k_cache: wgpu::Buffer,
    pub v_cache: wgpu::Buffer,
}

pub(super) struct Weights {
    pub embed: Mat,
    /// `None`: tied to the embedding.
    pub unembed: Option<Mat>,
    pub ln_f: wgpu::Buffer,
    pub cos: wgpu::Buffer,
    pub sin: wgpu::Buffer,
    /// Bound where a kernel's optional input is absent.
    pub dummy: wgpu::Buffer,
    pub layers: Vec<LayerWeights>,
}

/// Why the GPU forward pass cannot run `cfg`'s architecture, if it cannot:
/// every feature it lacks, by name (the CPU engine runs them all).
pub(super) fn unsupported(name: &str, cfg: &Config, parts: &Parts) -> Option<String> {
    let (d, m, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_head);
    let f = &cfg.extra;
    let biased = parts.blocks.iter().any(|b| [&b.q, &b.k, &b.v, &b.o].iter().any(|l| l.b.is_some()));
    let lacks: Vec<&str> = [
        (cfg.norm != NormKind::Rms, "LayerNorm"),
        (cfg.pos_embedding != PosEmbedding::Rope, "learned position embeddings"),
        (!cfg.gated_mlp, "an ungated MLP"),
        (cfg.act != Activation::Silu, "GELU activations"),
        (biased, "attention biases"),
        (f.qk_norm, "query/key norms"),
        (f.post_norms, "post-attention and post-MLP norms"),
        (f.embed_scale.is_some(), "scaled embeddings"),
        (f.attn_scale.is_some(), "a custom attention scale"),
        (f.attn_softcap.is_some() || f.final_softcap.is_some(), "soft-capping"),
        (!f.sliding_layers.is_empty(), "sliding-window attention"),
        (f.parallel_residual, "parallel attention and MLP"),
        (f.rotary_dim.is_some(), "partial rotary embeddings"),
        (cfg.d_attn() != d, "heads wider than d_model / n_heads"),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect();
    if !lacks.is_empty() {
        return Some(format!(
            "{name}: the GPU backend cannot run this {} model: it has no {} (the CPU engine runs it)",
            cfg.arch.name(),
            lacks.join(", ")
        ));
    }
    if d % 4 != 0 || m % 4 != 0 || dh > 256 {
        return Some(format!("{name}: the GPU kernels need d_model and d_mlp divisible by 4 and d_head <= 256 (got {d}, {m}, {dh})"));
    }
    None
}

impl Weights {
    pub fn upload(gpu: &Gpu, cfg: &Config, parts: &Parts, max_seq: usize, quantized: bool) -> Result<Weights> {
        let mat = |label: &str, ws: &[&Weight]| upload_mat(gpu, label, &ws.iter().map(|&w| (w, None)).collect::<Vec<_>>(), quantized);
        let qk_rows = |w: &Weight| parts.qk_layout.hf_row_order(w.dims()[0], cfg.d_head);
        let vec = |label: &str, t: &candle_core::Tensor| -> Result<wgpu::Buffer> { Ok(gpu.storage_f32(label, &t.flatten_all()?.to_vec1()?)) };
        let cache_bytes = (cfg.n_kv_heads * max_seq * cfg.d_head * 4) as u64;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for b in &parts.blocks {
            let gate = b.gate.as_ref().ok_or_else(|| GpuError::Input("the GPU MLP needs a gate".into()))?;
            layers.push(LayerWeights {
                ln1: vec("attn_norm", &b.ln1.w)?,
                wqkv: upload_mat(
                    gpu,
                    "wqkv",
                    &[(&b.q.w, Some(qk_rows(&b.q.w))), (&b.k.w, Some(qk_rows(&b.k.w))), (&b.v.w, None)],
                    quantized,
                )?,
                wo: mat("wo", &[&b.o.w])?,
                ln2: vec("ffn_norm", &b.ln2.w)?,
                wgu: mat("wgu", &[&gate.w, &b.up.w])?,
                wdown: mat("wdown", &[&b.down.w])?,
                k_cache: gpu.storage_zeroed("k cache", cache_bytes),
                v_cache: gpu.storage_zeroed("v cache", cache_bytes),
            });
        }
        // RoPE tables exactly as the engine computes them (f32 on the CPU).
        let (cos, sin) = rotary::angles(&rotary::inv_freq(cfg.d_head, cfg.rope_theta), 0, max_seq);
        Ok(Weights {
            embed: mat("token_embd", &[&parts.embed])?,
            unembed: parts.unembed.as_ref().map(|u| mat("output", &[u])).transpose()?,
            ln_f: vec("output_norm", &parts.ln_final.w)?,
            cos: gpu.storage_f32("cos", &cos),
            sin: gpu.storage_f32("sin", &sin),
            dummy: gpu.storage_zeroed("dummy", 16),
            layers,
        })
    }

    /// Bytes of weights on the GPU (matrices, embedding/unembedding, norms;
    /// not the KV cache, RoPE tables or activations).
    pub fn bytes(&self) -> u64 {
        let mut b = self.embed.buf.size() + self.unembed.as_ref().map_or(0, |u| u.buf.size()) + self.ln_f.size();
        for l in &self.layers {
            b += l.ln1.size() + l.ln2.size() + l.wqkv.buf.size() + l.wo.buf.size() + l.wgu.buf.size() + l.wdown.buf.size();
        }
        b
    }

    /// Whether any matrix is kept quantized.
    pub fn is_quantized(&self) -> bool {
        self.embed.fmt.is_some() || self.layers.iter().any(|l| [&l.wqkv, &l.wo, &l.wgu, &l.wdown].iter().any(|m| m.fmt.is_some()))
    }
}

/// The rows of `ws` stacked into one matrix, each weight's rows in the
/// given order (row `r` is stored row `order[r]`) or as stored: kept
/// quantized when asked for and every part has the same Q8_0/Q4_1 type and
/// whole blocks per row; f32 otherwise.
fn upload_mat(gpu: &Gpu, label: &str, ws: &[(&Weight, Option<Vec<usize>>)], quantized: bool) -> Result<Mat> {
    let fmt_of = |w: &Weight| w.block_type().and_then(gpu_format);
    let fmt = fmt_of(ws[0].0);
    let blocks = quantized && fmt.is_some() && ws.iter().all(|(w, _)| fmt_of(w) == fmt && w.dims().get(1).is_some_and(|c| c % 32 == 0));
    if let (true, Some(fmt)) = (blocks, fmt) {
        let mut words = Vec::new();
        for (w, order) in ws {
            let [rows, cols] = [w.dims()[0], w.dims()[1]];
            let data = w.gguf_bytes()?.expect("checked: stored blocks");
            let repacked = repack(fmt, &data);
            debug_assert_eq!(repacked.len(), rows * cols / 32 * block_words(fmt));
            extend_rows(&mut words, &repacked, rows, order.as_deref());
        }
        return Ok(Mat { buf: gpu.storage(label, bytemuck::cast_slice(&words)), fmt: Some(fmt) });
    }
    let mut all = Vec::new();
    for (w, order) in ws {
        extend_rows(&mut all, &w.to_f32()?.flatten_all()?.to_vec1::<f32>()?, w.dims()[0], order.as_deref());
    }
    Ok(Mat { buf: gpu.storage_f32(label, &all), fmt: None })
}

/// Appends the `rows` equal rows of `data`, in `order` if given.
fn extend_rows<T: Copy>(out: &mut Vec<T>, data: &[T], rows: usize, order: Option<&[usize]>) {
    let Some(order) = order else { return out.extend_from_slice(data) };
    let len = data.len() / rows;
    for &r in order {
        out.extend_from_slice(&data[r * len..(r + 1) * len]);
    }
}
