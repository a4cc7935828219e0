//! Linear layers at a precision (f32 values, f32 products over stored
//! blocks, or quantized with candle's or Scalpel's kernels) and norms.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::config::NormKind;
use crate::error::Result;
use crate::kernels::Kernels;
use crate::load::parts::{LinearParts, NormParts, Weight};
use crate::Precision;

pub(crate) enum Linear {
    F32 { w: candle_nn::Linear },
    Quant { w: QMatMul, b: Option<Tensor> },
    /// Quantized, multiplied by Scalpel's kernels (`crate::kernels`).
    Scalpel { w: scalpel_kernels::QMatrix, b: Option<Tensor> },
    /// f32 precision over the stored blocks: f32 activations times weights
    /// dequantized in registers (`scalpel_kernels::exact`), the f32 path's
    /// numbers up to summation order while holding and reading the blocks.
    Exact { w: Arc<scalpel_kernels::QMatrix>, b: Option<Tensor> },
}

impl Linear {
    /// From f32 values: kept in f32, or quantized to Q8_0 in `quantized`
    /// precision (when the input width is whole blocks).
    pub fn from_f32(w: Tensor, b: Option<Tensor>, precision: Precision) -> Result<Linear> {
        let in_dim = w.dim(1)?;
        if precision == Precision::Quantized && in_dim % GgmlDType::Q8_0.block_size() == 0 {
            // `quantize` reads the storage from its start, ignoring a view's
            // offset (e.g. the k and v slices of GPT-2's fused c_attn): copy.
            let q = QTensor::quantize(&w.force_contiguous()?, GgmlDType::Q8_0)?;
            return Ok(Linear::Quant { w: QMatMul::from_qtensor(q)?, b });
        }
        Ok(Linear::F32 { w: candle_nn::Linear::new(w, b) })
    }

    /// From stored blocks of a type Scalpel's kernels do not multiply
    /// (`Weight::Quant`: k-quants, Q5_*, ...): dequantized in f32
    /// precision, candle's `QMatMul` in `quantized` precision.
    pub fn from_blocks(q: QTensor, b: Option<Tensor>, precision: Precision) -> Result<Linear> {
        match precision {
            Precision::F32 => Ok(Linear::F32 { w: candle_nn::Linear::new(q.dequantize(&Device::Cpu)?, b) }),
            Precision::Quantized => Ok(Linear::Quant { w: QMatMul::from_qtensor(q)?, b }),
        }
    }

    /// From Q4_0 / Q4_1 / Q8_0 blocks already in Scalpel's layout: kept as
    /// they are with Scalpel's kernels (`Exact` in f32, `Scalpel` when
    /// quantized); with candle's, dequantized (f32) or handed back to
    /// candle as the same blocks (quantized).
    pub fn from_matrix(m: scalpel_kernels::QMatrix, b: Option<Tensor>, precision: Precision, kernels: Kernels) -> Result<Linear> {
        Ok(match (precision, kernels.resolve(precision)) {
            (Precision::F32, Kernels::Scalpel) => Linear::Exact { w: Arc::new(m), b },
            (Precision::F32, _) => Linear::F32 { w: candle_nn::Linear::new(crate::kernels::dequantize(&m)?, b) },
            (Precision::Quantized, Kernels::Scalpel) => Linear::Scalpel { w: m, b },
            (Precision::Quantized, _) => Linear::Quant { w: QMatMul::from_qtensor(crate::kernels::to_candle(&m)?)?, b },
        })
    }

    pub fn from_parts(p: LinearParts, precision: Precision, kernels: Kernels) -> Result<Linear> {
        match p.w {
            Weight::F32(w) => Linear::from_f32(w, p.b, precision),
            Weight::Quant(q) => Linear::from_blocks(q, p.b, precision),
            Weight::Blocks(m) => Linear::from_matrix(m, p.b, precision, kernels),
        }
    }

    /// Bytes of the matrix (and bias) as held: what one matmul over a
    /// single row reads.
    pub fn bytes(&self) -> u64 {
        let bias = |b: &Option<Tensor>| b.as_ref().map_or(0, |b| (b.elem_count() * b.dtype().size_in_bytes()) as u64);
        match self {
            Linear::F32 { w } => (w.weight().elem_count() * 4) as u64 + bias(&w.bias().cloned()),
            Linear::Quant { w, b } => {
                let m = match w {
                    QMatMul::QTensor(q) => q.storage_size_in_bytes() as u64,
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
                };
                m + bias(b)
            }
            Linear::Scalpel { w, b } => blocks_bytes(w) + bias(b),
            Linear::Exact { w, b } => blocks_bytes(w) + bias(b),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (y, b) = match self {
            Linear::F32 { w } => return Ok(w.forward(x)?),
            Linear::Quant { w, b } => (w.forward(x)?, b),
            Linear::Scalpel { w, b } => (crate::kernels::forward(w, x)?, b),
            Linear::Exact { w, b } => (crate::kernels::forward_exact(w, x)?, b),
        };
        with_bias(y, b.as_ref())
    }

    /// `forward` of each of `ls` on the same input `x` (a layer's q, k and
    /// v, or its gate and up), with the same results. When all hold blocks
    /// for Scalpel's kernels, the products are one job for the threads and
    /// the quantized path quantizes `x` once (`crate::kernels::forward_shared`).
    pub fn forward_shared(ls: &[&Linear], x: &Tensor, differentiable: bool) -> Result<Vec<Tensor>> {
        let scalpel: Option<Vec<_>> = ls.iter().map(|l| if let Linear::Scalpel { w, .. } = l { Some(w) } else { None }).collect();
        let exact: Option<Vec<_>> = ls.iter().map(|l| if let Linear::Exact { w, .. } = l { Some(w) } else { None }).collect();
        let ys = match (scalpel, exact) {
            (Some(ws), _) if ls.len() > 1 => crate::kernels::forward_shared(&ws, x)?,
            (_, Some(ws)) if ls.len() > 1 => crate::kernels::forward_exact_shared(&ws, x, differentiable)?,
            _ => return ls.iter().map(|l| l.forward(x)).collect(),
        };
        ys.into_iter().zip(ls).map(|(y, l)| with_bias(y, l.bias())).collect()
    }

    /// Moves a matrix to the given (resolved) kernels: quantized blocks
    /// between candle's and Scalpel's kernels; in f32 precision, blocks
    /// multiplied exactly (`Exact`) to the dequantize-all path (`Candle`).
    /// The way back from dequantized values is not taken (the blocks are
    /// gone): `Model::set_kernels` refuses it. f32 layers and types the
    /// Scalpel kernels do not handle are left as they are.
    pub fn set_kernels(&mut self, k: Kernels) -> Result<()> {
        let new = match (&*self, k) {
            (Linear::Quant { w: QMatMul::QTensor(q), b }, Kernels::Scalpel) => {
                crate::kernels::to_scalpel(q).map(|w| Linear::Scalpel { w, b: b.clone() })
            }
            (Linear::Scalpel { w, b }, Kernels::Candle) => {
                Some(Linear::Quant { w: QMatMul::from_qtensor(crate::kernels::to_candle(w)?)?, b: b.clone() })
            }
            (Linear::Exact { w, b }, Kernels::Candle) => {
                Some(Linear::F32 { w: candle_nn::Linear::new(crate::kernels::dequantize(w)?, b.clone()) })
            }
            _ => None,
        };
        if let Some(new) = new {
            *self = new;
        }
        Ok(())
    }

    /// Whether rows can be read from the held blocks cheaply
    /// (`rows_f32` dequantizes just them): Scalpel's repacked matrices.
    pub fn serves_rows(&self) -> bool {
        matches!(self, Linear::Exact { .. } | Linear::Scalpel { .. })
    }

    /// The weight as used, dequantized to f32, `[out, in]`.
    pub fn weight_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Linear::F32 { w } => w.weight().clone(),
            Linear::Quant { w: QMatMul::QTensor(q), .. } => q.dequantize(&Device::Cpu)?,
            Linear::Quant { w: QMatMul::Tensor(t), .. } => t.clone(),
            Linear::Quant { w: QMatMul::TensorF16(t), .. } => t.to_dtype(DType::F32)?,
            Linear::Scalpel { w, .. } => crate::kernels::dequantize(w)?,
            Linear::Exact { w, .. } => crate::kernels::dequantize(w)?,
        })
    }

    /// Rows `rows` of the weight as used, in f32 (`[rows.len(), in]`),
    /// dequantizing only those rows' blocks: a readout that needs a few
    /// rows of a 262k-token unembedding (671 MB in f32 for Gemma 3 270M)
    /// must not expand all of it.
    pub fn rows_f32(&self, rows: &[u32]) -> Result<Tensor> {
        let pick_blocks = |dtype: GgmlDType, data: &[u8], n_rows: usize, cols: usize| -> Result<Tensor> {
            let row_bytes = cols / dtype.block_size() * dtype.type_size();
            let mut words = vec![0u32; (rows.len() * row_bytes).div_ceil(4)];
            // SAFETY: a u32 buffer (aligned for any block type) viewed as bytes, within its length.
            let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, rows.len() * row_bytes) };
            for (i, &r) in rows.iter().enumerate() {
                let r = r as usize;
                if r >= n_rows {
                    return Err(crate::Error::input(format!("row {r} of a {n_rows}-row matrix")));
                }
                bytes[i * row_bytes..(i + 1) * row_bytes].copy_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
            }
            let q = candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, bytes, vec![rows.len(), cols], &Device::Cpu)?;
            Ok(q.dequantize(&Device::Cpu)?)
        };
        let select = |t: &Tensor| -> Result<Tensor> {
            let n = t.dim(0)?;
            if let Some(&r) = rows.iter().find(|&&r| r as usize >= n) {
                return Err(crate::Error::input(format!("row {r} of a {n}-row matrix")));
            }
            Ok(t.index_select(&Tensor::new(rows, t.device())?, 0)?.to_dtype(DType::F32)?)
        };
        match self {
            Linear::F32 { w } => select(w.weight()),
            Linear::Quant { w: QMatMul::QTensor(q), .. } => {
                let (n, cols) = q.shape().dims2()?;
                pick_blocks(q.dtype(), &q.data()?, n, cols)
            }
            Linear::Quant { w: QMatMul::Tensor(t) | QMatMul::TensorF16(t), .. } => select(t),
            Linear::Scalpel { w, .. } => crate::kernels::dequantize_rows(w, rows),
            Linear::Exact { w, .. } => crate::kernels::dequantize_rows(w, rows),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::F32 { w } => w.bias(),
            Linear::Quant { b, .. } | Linear::Scalpel { b, .. } | Linear::Exact { b, .. } => b.as_ref(),
        }
    }
}

fn with_bias(y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Bytes of a matrix's blocks as GGUF stores them.
fn blocks_bytes(w: &scalpel_kernels::QMatrix) -> u64 {
    (w.rows() * w.cols() / 32 * w.qtype().gguf_block_bytes()) as u64
}

pub(crate) struct Norm {
    pub kind: NormKind,
    pub w: Tensor,
    pub b: Option<Tensor>,
    pub eps: f32,
}

impl Norm {
    pub fn new(p: NormParts, kind: NormKind, eps: f32) -> Norm {
        Norm { kind, w: p.w, b: p.b, eps }
    }

    /// `differentiable` picks candle's composed ops, which have a backward pass.
    pub fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        Ok(match (self.kind, differentiable) {
            (NormKind::Rms, false) => candle_nn::ops::rms_norm(x, &self.w, self.eps)?,
            (NormKind::Rms, true) => candle_nn::ops::rms_norm_slow(x, &self.w, self.eps)?,
            (NormKind::Layer, d) => {
                let b = match &self.b {
                    Some(b) => b.clone(),
                    None => self.w.zeros_like()?,
                };
                if d {
                    candle_nn::ops::layer_norm_slow(x, &self.w, &b, self.eps)?
                } else {
                    candle_nn::ops::layer_norm(x, &self.w, &b, self.eps)?
                }
            }
        })
    }
}
