//! Which kernels multiply quantized matrices: candle's `QMatMul` or
//! Scalpel's own (`scalpel-kernels`: wasm simd128, int8 activations, tiled
//! prefill). Only `Precision::Quantized` matrices are affected; a matrix whose
//! type or shape the Scalpel kernels do not handle keeps using candle.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use scalpel_kernels::{QActs, QMatrix, QType};

use crate::error::{Error, Result};

pub use scalpel_types::Kernels;

fn qtype(t: GgmlDType) -> Option<QType> {
    match t {
        GgmlDType::Q4_0 => Some(QType::Q4_0),
        GgmlDType::Q4_1 => Some(QType::Q4_1),
        GgmlDType::Q8_0 => Some(QType::Q8_0),
        _ => None,
    }
}

pub(crate) fn ggml(t: QType) -> GgmlDType {
    match t {
        QType::Q4_0 => GgmlDType::Q4_0,
        QType::Q4_1 => GgmlDType::Q4_1,
        QType::Q8_0 => GgmlDType::Q8_0,
    }
}

/// Repacks a candle matrix for the Scalpel kernels; `None` if its type or
/// shape is not supported (the caller keeps candle's).
pub(crate) fn to_scalpel(q: &QTensor) -> Option<QMatrix> {
    let ty = qtype(q.dtype())?;
    let &[rows, cols] = q.shape().dims() else { return None };
    let data = q.data().ok()?;
    QMatrix::from_gguf(ty, rows, cols, &data).ok()
}

/// The candle matrix back, from the same blocks.
pub(crate) fn to_candle(m: &QMatrix) -> Result<QTensor> {
    Ok(qtensor_from_ggml(ggml(m.qtype()), &m.to_gguf(), vec![m.rows(), m.cols()], &Device::Cpu)?)
}

/// The weights in f32, `[rows, cols]`.
pub(crate) fn dequantize(m: &QMatrix) -> Result<Tensor> {
    Ok(Tensor::from_vec(m.dequantize(), (m.rows(), m.cols()), &Device::Cpu)?)
}

/// `x @ mᵀ` for `x` of shape `[.., cols]` (f32): `[.., rows]`.
pub(crate) fn forward(m: &QMatrix, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some(&k) = dims.last() else { return Err(Error::input("quantized matmul of a scalar")) };
    if k != m.cols() {
        return Err(Error::input(format!("matmul input has {k} features; the matrix takes {}", m.cols())));
    }
    let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let kerr = |e: scalpel_kernels::KernelError| Error::input(format!("quantized matmul: {e}"));
    let acts = QActs::quantize(&data, k).map_err(kerr)?;
    let mut out = vec![0f32; acts.rows() * m.rows()];
    m.matmul(&acts, &mut out).map_err(kerr)?;
    let mut od = dims.to_vec();
    *od.last_mut().expect("non-empty dims") = m.rows();
    Ok(Tensor::from_vec(out, od, x.device())?)
}
