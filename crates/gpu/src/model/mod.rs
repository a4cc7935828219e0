//! A llama-family model on the GPU, built from the engine's parts: weights
//! in f32 (the engine's `f32` precision) or as Q8_0/Q4_1 blocks, a KV
//! cache, prefill and decode, TransformerLens hook points that can be read
//! (copying only that tensor back) or edited on the GPU, and greedy or
//! seeded sampled decoding with a 4-byte readback per token.
//!
//! `weights.rs` uploads the parts; `plan.rs` lays out the pass once per
//! buffer size; `forward.rs` runs a call; `edits.rs` turns hook edits and
//! sampling into dispatches; `generate.rs` chains decode steps;
//! `encode.rs` records commands.

mod edits;
mod encode;
mod forward;
mod generate;
mod plan;
mod weights;

use std::ops::Range;
use std::sync::Arc;

use scalpel_engine::load::parts::Parts;
use scalpel_engine::{Config, GenerateOptions, HookPoint, ModelSource};
use scalpel_types::Edit;

use self::plan::{Item, Plan, Work};
use self::weights::Weights;
use crate::device::Gpu;
use crate::{GpuError, Result};

/// Sizes chosen at load.
#[derive(Clone, Debug)]
pub struct GpuModelOptions {
    /// KV-cache capacity in positions (clamped to the model's context).
    pub max_seq: usize,
    /// Keep Q8_0 and Q4_1 matrices quantized on the GPU (repacked into
    /// 4-byte words, dequantized on the fly by `matvec_q` / `embed_q`)
    /// instead of dequantizing everything to f32 at load. Off by default.
    pub quantized: bool,
}

impl Default for GpuModelOptions {
    fn default() -> Self {
        GpuModelOptions { max_seq: 1024, quantized: false }
    }
}

/// Which logits a forward call copies back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogitsOut {
    /// None (e.g. decode with GPU argmax).
    None,
    /// The last position's row, `[1, vocab]`.
    #[default]
    Last,
    /// Every new position, `[t, vocab]`.
    All,
}

/// An activation kept on the GPU (from [`ForwardRequest::keep`]), to patch
/// into a later run with [`EditOp::Patch`].
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Absolute position of row 0.
    pub start: usize,
    pub rows: usize,
    pub width: usize,
}


/// Sampling of one next token on the GPU (`sample.wgsl`), with the CPU
/// engine's semantics (`scalpel_engine::Sampler`): temperature, then top-k,
/// then top-p, then the first token whose cumulative probability exceeds
/// `uniform` (a number in [0, 1) from `Sampler::next_uniform`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleStep {
    /// > 0 (0 is greedy: use `argmax`).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub uniform: f32,
}

/// What one forward call computes and copies back.
#[derive(Clone, Debug, Default)]
pub struct ForwardRequest {
    pub logits: LogitsOut,
    /// Greedy next token on the GPU (lowest id on ties), 4 bytes back.
    pub argmax: bool,
    /// A sampled next token on the GPU instead of the greedy one, 4 bytes back.
    pub sample: Option<SampleStep>,
    /// Hook points copied back to the CPU.
    pub read: Vec<HookPoint>,
    /// Hook points copied into new GPU buffers (no readback).
    pub keep: Vec<HookPoint>,
    pub edits: Vec<GpuEdit>,
}

/// A generation on the GPU: see [`GpuModel::generate`].
#[derive(Clone, Debug)]
pub struct GenerateRequest<'a> {
    /// Length, temperature, top-k, top-p and seed (`stop_at_eos` is the
    /// caller's: the GPU model has no tokenizer, so pass its ids in `stop`).
    pub opts: &'a GenerateOptions,
    /// Stop after any of these ids (kept in the output, as on the CPU).
    pub stop: &'a [u32],
    pub edits: &'a [GpuEdit],
    /// Decode steps submitted per readback (1..=64).
    pub ahead: usize,
}

#[derive(Clone, Debug, Default)]
pub struct GpuGeneration {
    pub ids: Vec<u32>,
    /// The absolute positions each forward call ran (the prompt, then one
    /// per kept decode step), to count which edits applied.
    pub calls: Vec<Range<usize>>,
}

/// A hook value read back: `[t, d_model]`, `[t, d_mlp]` or for `attn.hook_z`
/// `[t, n_heads, d_head]` (no batch axis).
#[derive(Clone, Debug)]
pub struct HookValue {
    pub point: HookPoint,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Default)]
pub struct ForwardOutput {
    /// Row-major `[rows, vocab]`.
    pub logits: Option<Vec<f32>>,
    pub next_token: Option<u32>,
    pub hooks: Vec<HookValue>,
    pub kept: Vec<(HookPoint, GpuTensor)>,
}

/// A hook edit applied on the GPU, in place, at its hook point: the
/// lowered form of an intervention (`scalpel_types::Edit`), its patch source
/// on the GPU (kept from a run, or uploaded by [`upload_edits`](crate::upload_edits)).
pub type GpuEdit = Edit<GpuTensor>;

pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub config: Config,
    pub max_seq: usize,
    len: usize,
    weights: Weights,
    step: wgpu::Buffer,
    work: Work,
    plan: Plan,
}

impl GpuModel {
    /// The model of `config` and `parts` (from `scalpel_engine::read`),
    /// or an error naming what the GPU forward pass lacks for it.
    pub fn from_parts(gpu: Arc<Gpu>, name: &str, config: &Config, parts: &Parts, opts: &GpuModelOptions) -> Result<GpuModel> {
        if let Some(why) = weights::unsupported(name, config, parts) {
            return Err(GpuError::Input(why));
        }
        let max_seq = opts.max_seq.clamp(1, config.n_ctx);
        let weights = Weights::upload(&gpu, config, parts, max_seq, opts.quantized)?;
        let step = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let work = Self::make_work(&gpu, config, 16, 1);
        let plan = Self::make_plan(&gpu, config, max_seq, &weights, &work, &step);
        Ok(GpuModel { gpu, config: config.clone(), max_seq, len: 0, weights, step, work, plan })
    }

    /// Loads a GGUF file through the engine's loader (see [`from_parts`](Self::from_parts)).
    pub fn from_gguf(gpu: Arc<Gpu>, name: &str, bytes: &[u8], opts: &GpuModelOptions) -> Result<GpuModel> {
        let (config, _, parts) = scalpel_engine::read(name, ModelSource::Gguf(bytes))?;
        Self::from_parts(gpu, name, &config, &parts, opts)
    }

    /// Positions in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget everything after the first `n` positions.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
    /// Empty the KV cache.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes of weights on the GPU (matrices, embedding/unembedding, norms;
    /// not the KV cache, RoPE tables or activations).
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes()
    }

    /// Whether any matrix is kept quantized on the GPU.
    pub fn is_quantized(&self) -> bool {
        self.weights.is_quantized()
    }

    /// Dispatches per decode step with no hooks (for docs and the bench).
    pub fn dispatches_per_token(&self) -> usize {
        self.plan.body.iter().chain(&self.plan.tail_last).filter(|i| matches!(i, Item::Op(_))).count() + 1
    }
}
