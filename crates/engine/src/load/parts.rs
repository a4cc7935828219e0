//! The shared parts layout: every architecture's tensors, by role, in one
//! shape. `arch/` modules fill it from a file's tensor names; the CPU model
//! (`model/`) and the GPU model build from it.
//!
//! Matrices are `[out, in]`. Query and key rows stay in the order the file
//! stored them (`Parts::qk_layout` says which), so quantized blocks are
//! multiplied exactly as llama.cpp and candle multiply them.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// A weight as the file holds it: f32 values, or quantized blocks (GGUF
/// types, dequantized or multiplied as blocks depending on the precision).
pub enum Weight {
    F32(Tensor),
    Quant(QTensor),
}

impl Weight {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Weight::F32(t) => t.dims().to_vec(),
            Weight::Quant(q) => q.shape().dims().to_vec(),
        }
    }

    /// The values in f32.
    pub fn to_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Weight::F32(t) => t.to_dtype(DType::F32)?,
            Weight::Quant(q) => q.dequantize(&Device::Cpu)?,
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
    pub o: LinearParts,
    pub ln2: NormParts,
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
}
