//! The shared parts layout: every architecture's tensors, by role, in one
//! shape. `arch/` modules fill it from a file's tensor names; the CPU model
//! (`model/`) and the GPU model build from it.
//!
//! Matrices are `[out, in]`. Query and key rows stay in the order the file
//! stored them (`Parts::qk_layout` says which), so quantized blocks are
//! multiplied exactly as llama.cpp and candle multiply them.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use scalpel_kernels::QMatrix;

use crate::error::Result;
use scalpel_types::{Kernels, Precision};

/// A weight as the file holds it: f32 values, or quantized blocks (GGUF
/// types, dequantized or multiplied as blocks depending on the precision).
pub enum Weight {
    F32(Tensor),
    /// Blocks of a type Scalpel's kernels do not multiply (k-quants, Q5_*,
    /// f16...), as candle holds them.
    Quant(QTensor),
    /// Q4_0 / Q4_1 / Q8_0 matrices, read from the file straight into the
    /// layout Scalpel's kernels multiply. No candle copy comes first: wasm
    /// memory never shrinks, so a transient second copy of every weight
    /// would stay in the tab for good.
    Blocks(QMatrix),
}

impl Weight {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::F32(t) => t.dims().to_vec(),
            Weight::Quant(q) => q.shape().dims().to_vec(),
            Weight::Blocks(m) => vec![m.rows(), m.cols()],
        }
    }

    /// The GGUF type of stored blocks; `None` for f32 values.
    pub fn block_type(&self) -> Option<GgmlDType> {
        match self {
            Weight::F32(_) => None,
            Weight::Quant(q) => Some(q.dtype()),
            Weight::Blocks(m) => Some(crate::kernels::ggml(m.qtype())),
        }
    }

    /// The blocks as GGUF stores them (`None` for f32 values).
    pub fn gguf_bytes(&self) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(match self {
            Weight::F32(_) => None,
            Weight::Quant(q) => Some(q.data()?),
            Weight::Blocks(m) => Some(Cow::Owned(m.to_gguf())),
        })
    }

    /// Whether these are blocks Scalpel's kernels multiply (Q4_0, Q4_1,
    /// Q8_0): kept as blocks in both precisions with those kernels.
    pub fn scalpel_blocks(&self) -> bool {
        matches!(self, Weight::Blocks(_))
    }

    /// The stored blocks' bytes (as GGUF counts them).
    fn stored_bytes(&self) -> u64 {
        match self {
            Weight::F32(t) => t.elem_count() as u64 * 4,
            Weight::Quant(q) => q.storage_size_in_bytes() as u64,
            Weight::Blocks(m) => (m.rows() * m.cols() / 32 * m.qtype().gguf_block_bytes()) as u64,
        }
    }

    /// Bytes the model holds for this matrix once built at `precision`
    /// with `kernels` (see `model::Linear`: f32 values, the stored blocks,
    /// or f32 values quantized to Q8_0 when rows are whole blocks).
    pub fn built_bytes(&self, precision: Precision, kernels: Kernels) -> u64 {
        let elems: u64 = self.dims().iter().map(|&d| d as u64).product();
        let cols = self.dims().last().copied().unwrap_or(0);
        match (self, precision) {
            (Weight::Blocks(_), Precision::F32) if kernels.resolve(precision) == Kernels::Scalpel => self.stored_bytes(),
            (_, Precision::F32) => elems * 4,
            (Weight::Quant(_) | Weight::Blocks(_), Precision::Quantized) => self.stored_bytes(),
            (Weight::F32(_), Precision::Quantized) if cols % GgmlDType::Q8_0.block_size() == 0 => {
                elems / GgmlDType::Q8_0.block_size() as u64 * GgmlDType::Q8_0.type_size() as u64
            }
            (Weight::F32(_), Precision::Quantized) => elems * 4,
        }
    }

    /// The values in f32.
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::F32(t) => t.to_dtype(DType::F32)?,
            Weight::Quant(q) => q.dequantize(&Device::Cpu)?,
            Weight::Blocks(m) => crate::kernels::dequantize(m)?,
        })
    }
}

/// A linear layer: weight `[out, in]` and optional bias `[out]`.
pub struct LinearParts {
    pub w: Weight,
    pub b: Option<Tensor>,
}

/// A norm: weight and, for LayerNorm, bias (`[d]`, f32).
pub struct NormParts {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

pub struct BlockParts {
    pub ln1: NormParts,
    pub q: LinearParts,
    pub k: LinearParts,
    pub v: LinearParts,
    /// Per-head RMSNorms of queries and keys (`[d_head]`; Qwen3, Gemma 3).
    pub q_norm: Option<NormParts>,
    pub k_norm: Option<NormParts>,
    pub o: LinearParts,
    /// The norm of the attention output before the residual add (Gemma 2/3).
    pub ln1_post: Option<NormParts>,
    pub ln2: NormParts,
    /// The norm of the MLP output before the residual add (Gemma 2/3).
    pub ln2_post: Option<NormParts>,
    /// The gate of a gated MLP (`act(gate(x)) * up(x)`).
    pub gate: Option<LinearParts>,
    pub up: LinearParts,
    pub down: LinearParts,
}

/// The order of the query and key rows within each head, which decides the
/// dimension pairs rotary embeddings turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkLayout {
    /// Hugging Face order: pairs `i, i + d_head/2` (`rotate_half`).
    Halves,
    /// llama.cpp's GGUF order: pairs `2i, 2i + 1`; stored row `2i + j` of a
    /// head is Hugging Face row `j·d_head/2 + i`.
    Interleaved,
}

impl QkLayout {
    /// For each Hugging Face head dimension, the stored dimension behind it.
    pub fn to_hf(self, d_head: usize) -> Vec<usize> {
        let half = d_head / 2;
        (0..d_head)
            .map(|r| match self {
                QkLayout::Halves => r,
                QkLayout::Interleaved => 2 * (r % half) + r / half,
            })
            .collect()
    }

    /// For each stored head dimension, the Hugging Face dimension behind it
    /// (the inverse of `to_hf`).
    pub fn to_stored(self, d_head: usize) -> Vec<usize> {
        let mut inv = vec![0; d_head];
        for (hf, s) in self.to_hf(d_head).into_iter().enumerate() {
            inv[s] = hf;
        }
        inv
    }

    /// The stored row behind each Hugging Face row of a query or key matrix
    /// of `rows` rows (heads of `d_head` rows).
    pub fn hf_row_order(self, rows: usize, d_head: usize) -> Vec<usize> {
        let head = self.to_hf(d_head);
        (0..rows).map(|r| r / d_head * d_head + head[r % d_head]).collect()
    }
}

pub struct Parts {
    /// Token embeddings `[vocab, d_model]`.
    pub embed: Weight,
    /// Learned position embeddings `[n_ctx, d_model]`.
    pub pos_embed: Option<Tensor>,
    pub blocks: Vec<BlockParts>,
    pub ln_final: NormParts,
    /// `[vocab, d_model]`; `None` when tied to the embeddings.
    pub unembed: Option<Weight>,
    pub qk_layout: QkLayout,
}

impl LinearParts {
    pub fn f32(w: Tensor, b: Option<Tensor>) -> Self {
        LinearParts { w: Weight::F32(w), b }
    }

    fn built_bytes(&self, precision: Precision, kernels: Kernels) -> u64 {
        self.w.built_bytes(precision, kernels) + self.b.as_ref().map_or(0, tensor_bytes)
    }
}

/// Bytes of an f32 tensor (norms, biases, embeddings are built in f32).
fn tensor_bytes(t: &Tensor) -> u64 {
    t.elem_count() as u64 * 4
}

impl NormParts {
    /// A plain norm weight (no bias).
    pub fn weight(w: Tensor) -> Self {
        NormParts { w, b: None }
    }

    /// A norm that scales by `1 + w` (Gemma's RMSNorm), kept as the scale
    /// it applies: `1 + w` computed in f32, as transformers computes it
    /// (`output * (1.0 + weight.float())`), so the product is the same.
    pub fn one_plus(w: Tensor) -> Result<Self> {
        Ok(NormParts { w: (w + 1.0)?, b: None })
    }

    fn built_bytes(&self) -> u64 {
        tensor_bytes(&self.w) + self.b.as_ref().map_or(0, tensor_bytes)
    }
}

impl Parts {
    /// Whether the file stored any matrix as quantized blocks (GGUF's
    /// f32/f16/bf16 tensors are not blocks).
    pub fn has_blocks(&self) -> bool {
        let quant = |w: &Weight| w.block_type().is_some_and(|t| !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16));
        quant(&self.embed)
            || self.unembed.as_ref().is_some_and(quant)
            || self.blocks.iter().any(|b| {
                [Some(&b.q), Some(&b.k), Some(&b.v), Some(&b.o), b.gate.as_ref(), Some(&b.up), Some(&b.down)].into_iter().flatten().any(|l| quant(&l.w))
            })
    }

    /// About how many bytes the model built from these parts at `precision`
    /// with the default kernels holds (weights only): [`Parts::built_bytes_with`].
    pub fn built_bytes(&self, precision: Precision) -> u64 {
        self.built_bytes_with(precision, Kernels::Auto)
    }

    /// About how many bytes the model built from these parts at `precision`
    /// with `kernels` holds (weights only), read from the shapes before
    /// anything is expanded: the embeddings are f32, except when tied to an
    /// unembedding that Scalpel's kernels keep as blocks (rows are then
    /// read from those blocks); a tied f32 unembedding shares the
    /// embeddings. Checked against a memory budget before the build
    /// (`Model::load_within`).
    pub fn built_bytes_with(&self, precision: Precision, kernels: Kernels) -> u64 {
        let scalpel = kernels.resolve(precision) == Kernels::Scalpel;
        let (embed, unembed) = match (&self.unembed, precision) {
            (Some(w), p) => (self.embed.built_bytes(Precision::F32, Kernels::Candle), w.built_bytes(p, kernels)),
            (None, p) if scalpel && self.embed.scalpel_blocks() => (0, self.embed.built_bytes(p, kernels)),
            (None, Precision::F32) => (self.embed.built_bytes(Precision::F32, Kernels::Candle), 0),
            (None, p) => (self.embed.built_bytes(Precision::F32, Kernels::Candle), self.embed.built_bytes(p, kernels)),
        };
        let blocks: u64 = self
            .blocks
            .iter()
            .map(|b| {
                let linears = [Some(&b.q), Some(&b.k), Some(&b.v), Some(&b.o), b.gate.as_ref(), Some(&b.up), Some(&b.down)];
                let norms = [Some(&b.ln1), Some(&b.ln2), b.q_norm.as_ref(), b.k_norm.as_ref(), b.ln1_post.as_ref(), b.ln2_post.as_ref()];
                linears.into_iter().flatten().map(|l| l.built_bytes(precision, kernels)).sum::<u64>()
                    + norms.into_iter().flatten().map(NormParts::built_bytes).sum::<u64>()
            })
            .sum();
        embed + unembed + blocks + self.pos_embed.as_ref().map_or(0, tensor_bytes) + self.ln_final.built_bytes()
    }
}
