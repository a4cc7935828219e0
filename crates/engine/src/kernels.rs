//! Which kernels multiply stored blocks: candle's or Scalpel's own
//! (`scalpel-kernels`: wasm simd128). In quantized precision, candle's
//! `QMatMul` or Scalpel's int8-activation kernels (tiled prefill); in f32
//! precision, candle's f32 matmul over dequantized weights (dequantize-all,
//! the reference) or Scalpel's exact kernels over the blocks (f32
//! activations, weights dequantized in registers). A matrix whose type or
//! shape the Scalpel kernels do not handle keeps using candle.

use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use scalpel_kernels::{QActs, QMatrix, QType};

use crate::error::{Error, Result};

pub use scalpel_types::Kernels;

pub(crate) fn qtype(t: GgmlDType) -> Option<QType> {
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
    Ok(forward_shared(&[m], x)?.pop().expect("one product per matrix"))
}

/// The width of `x`'s rows, which every matrix must take.
fn input_width(ms: &[&QMatrix], x: &Tensor) -> Result<usize> {
    let k = x.dims().last().copied().ok_or_else(|| Error::input("matmul of a scalar"))?;
    match ms.iter().find(|m| m.cols() != k) {
        Some(m) => Err(Error::input(format!("matmul input has {k} features; the matrix takes {}", m.cols()))),
        None => Ok(k),
    }
}

/// One output per matrix for `n` activation rows, filled by `fill`, as
/// tensors of `x`'s shape with each matrix's rows as the last dimension.
fn shared_outputs(ms: &[&QMatrix], n: usize, x: &Tensor, fill: impl FnOnce(&mut [&mut [f32]]) -> Result<()>) -> Result<Vec<Tensor>> {
    let mut outs: Vec<Vec<f32>> = ms.iter().map(|m| vec![0f32; n * m.rows()]).collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
    fill(&mut views)?;
    ms.iter()
        .zip(outs)
        .map(|(m, o)| {
            let mut dims = x.dims().to_vec();
            *dims.last_mut().expect("checked: not a scalar") = m.rows();
            Ok(Tensor::from_vec(o, dims, x.device())?)
        })
        .collect()
}

/// `x @ mᵀ` for each of `ms` (a layer's q, k and v, or its gate and up):
/// `x` quantized once and the products one job for the threads
/// (`scalpel_kernels::matmul_shared`); each result is `forward`'s, bit for bit.
pub(crate) fn forward_shared(ms: &[&QMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
    let k = input_width(ms, x)?;
    let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let kerr = |e: scalpel_kernels::KernelError| Error::input(format!("quantized matmul: {e}"));
    let acts = QActs::quantize(&data, k).map_err(kerr)?;
    shared_outputs(ms, acts.rows(), x, |outs| scalpel_kernels::matmul_shared(ms, &acts, outs).map_err(kerr))
}

/// Rows `rows` of the weights in f32, `[rows.len(), cols]`, dequantizing
/// only those rows.
pub(crate) fn dequantize_rows(m: &QMatrix, rows: &[u32]) -> Result<Tensor> {
    let data = m.dequantize_rows(rows).map_err(|e| Error::input(e.0))?;
    Ok(Tensor::from_vec(data, (rows.len(), m.cols()), &Device::Cpu)?)
}

/// At and above this many activation rows (prefill, batched sweeps) an
/// f32-precision product over blocks dequantizes the matrix a slice of rows
/// at a time and uses candle's f32 matmul: the conversion is then paid once
/// for many rows, and candle's tiled matmul is faster than the exact kernel
/// there (measured in wasm: docs/kernels.md).
const EXACT_KERNEL_MAX_ROWS: usize = 8;

/// f32 numbers per dequantized slice (8 MB): the unembedding of a 262k-token
/// vocabulary is never expanded whole (wasm memory does not shrink).
const SLICE_ELEMS: usize = 1 << 21;

/// Rows per slice at most. Small, so that the threads of the threaded
/// build share a product's slices evenly: a thread that finds none left
/// waits for the other's last one (docs/kernels.md, "Threads", measures
/// it). Finer slices cost little: candle's matmul packs the slice, not the
/// activations, so packing stays proportional to the matrix. Not finer
/// still: the slice's shape changes candle's rounding, and with 64-row
/// slices the default model's logits moved to 1.13e-4 from
/// dequantize-all's, past the 1e-4 bound of `crates/cli/tests/kernels.rs`
/// (7.3e-5 with 256 rows, 8.2e-5 with 128).
const SLICE_ROWS: usize = 128;

/// The row slices of a `rows`-row matrix of width `k`: at most
/// [`SLICE_ROWS`] rows and [`SLICE_ELEMS`] numbers each. They depend only on
/// the matrix's shape, never on the thread count (candle's rounding
/// depends on the product's shape, see above).
fn slices(rows: usize, k: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per = (SLICE_ELEMS / k).clamp(1, SLICE_ROWS);
    (0..rows.div_ceil(per)).map(move |j| j * per..((j + 1) * per).min(rows))
}

/// `x @ mᵀ` in f32 over the blocks. Few activation rows (decode): the exact
/// kernel (`QMatrix::matmul_exact`) as a candle op whose backward pass is
/// `grad @ m` (the matrix dequantized for that one product), so attribution
/// patching's gradients flow through it. Many rows: slices of dequantized
/// rows times `x` with candle's matmul (the dequantize-all path's numbers).
pub(crate) fn forward_exact(m: &Arc<QMatrix>, x: &Tensor) -> Result<Tensor> {
    Ok(forward_exact_shared(&[m], x, true)?.pop().expect("one product per matrix"))
}

/// [`forward_exact`] for each of `ms` (a layer's q, k and v, or its gate and
/// up), their products one job for the threads; each result is
/// `forward_exact`'s, bit for bit. Few rows and not `differentiable`: the
/// exact kernel over all the matrices at once
/// (`scalpel_kernels::matmul_exact_shared`); few rows and `differentiable`:
/// each matrix's candle op, for its backward pass. Many rows: every
/// matrix's slices share the threads.
pub(crate) fn forward_exact_shared(ms: &[&Arc<QMatrix>], x: &Tensor, differentiable: bool) -> Result<Vec<Tensor>> {
    let plain: Vec<&QMatrix> = ms.iter().map(|m| m.as_ref()).collect();
    let k = input_width(&plain, x)?;
    if x.elem_count() / k < EXACT_KERNEL_MAX_ROWS {
        let x = x.contiguous()?;
        if differentiable {
            return ms.iter().map(|&m| Ok(x.apply_op1(ExactMatmul(m.clone()))?)).collect();
        }
        let data: Vec<f32> = x.flatten_all()?.to_vec1()?;
        return shared_outputs(&plain, data.len() / k, &x, |outs| {
            scalpel_kernels::matmul_exact_shared(&plain, &data, outs).map_err(|e| Error::input(format!("exact matmul: {e}")))
        });
    }
    // Each matrix's slices (`slices`; several per matrix, so threads share
    // them): each is one dequantization and one candle matmul whose shape
    // does not depend on the thread count or on the other matrices, so
    // neither does the result.
    let per_matrix: Vec<Vec<std::ops::Range<usize>>> = ms.iter().map(|m| slices(m.rows(), k).collect()).collect();
    let all: Vec<(usize, std::ops::Range<usize>)> =
        per_matrix.iter().enumerate().flat_map(|(i, s)| s.iter().map(move |r| (i, r.clone()))).collect();
    // Handed out largest first, so a short last slice of a matrix ends the
    // job rather than leaving a thread waiting on a full one.
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&p| std::cmp::Reverse(all[p].1.len()));
    let mut done: Vec<Option<Result<Tensor>>> = (0..all.len()).map(|_| None).collect();
    for (p, part) in order.iter().zip(scalpel_kernels::map_pieces(order.len(), |o| {
        let (i, rows) = &all[order[o]];
        let rows: Vec<u32> = (rows.start as u32..rows.end as u32).collect();
        dequantize_rows(ms[*i], &rows).and_then(|w| Ok(x.broadcast_matmul(&w.t()?)?))
    })) {
        done[*p] = Some(part);
    }
    let mut parts = done.into_iter().map(|p| p.expect("map_pieces runs every slice"));
    // Each matrix's slices joined in turn, the slices dropped as they are.
    per_matrix
        .iter()
        .map(|s| {
            let mut own = parts.by_ref().take(s.len()).collect::<Result<Vec<Tensor>>>()?;
            Ok(match own.len() {
                1 => own.pop().expect("one slice"),
                _ => Tensor::cat(&own, candle_core::D::Minus1)?,
            })
        })
        .collect()
}

struct ExactMatmul(Arc<QMatrix>);

impl CustomOp1 for ExactMatmul {
    fn name(&self) -> &'static str {
        "exact-matmul-over-blocks"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = &self.0;
        let CpuStorage::F32(data) = storage else { candle_core::bail!("exact matmul: f32 activations only") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("exact matmul: activations not contiguous") };
        let x = &data[start..end];
        let mut out = vec![0f32; x.len() / m.cols() * m.rows()];
        m.matmul_exact(x, &mut out).map_err(|e| candle_core::Error::Msg(format!("exact matmul: {e}")))?;
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("checked: not a scalar") = m.rows();
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = Tensor::from_vec(self.0.dequantize(), (self.0.rows(), self.0.cols()), grad.device())?;
        Ok(Some(grad.broadcast_matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The exact op's gradient (its `bwd`) is the dequantized matrix's.
    #[test]
    fn exact_matmul_backward_is_the_dequantized_weights() {
        let (rows, cols) = (5, 64);
        let xs: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let w = Tensor::from_vec(xs, (rows, cols), &Device::Cpu).unwrap();
        let q = candle_core::quantized::QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let m = Arc::new(to_scalpel(&q).unwrap());
        let deq = dequantize(&m).unwrap();
        let x = Var::from_vec((0..2 * 3 * cols).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect::<Vec<f32>>(), (2, 3, cols), &Device::Cpu).unwrap();
        let y = forward_exact(&m, x.as_tensor()).unwrap();
        let want = x.as_tensor().broadcast_matmul(&deq.t().unwrap()).unwrap();
        let d = (&y - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{d}");
        let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let g2 = (want.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let (a, b) = (g.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "{d}");
    }

    /// Products sharing an input (a layer's q, k and v) give each matrix's
    /// own `forward` / `forward_exact` bit for bit: decode-sized and
    /// prefill-sized inputs (the kernel, the candle op and the dequantized
    /// slices), types mixed; a wrong width is an error naming it.
    #[test]
    fn shared_products_equal_each_product_alone() {
        let cols = 576;
        let matrix = |rows: usize, ty: GgmlDType, seed: usize| {
            let v: Vec<f32> = (0..rows * cols).map(|i| (((i + seed) * 7919 % 2003) as f32 - 1001.0) / 1001.0).collect();
            let w = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
            to_scalpel(&QTensor::quantize(&w, ty).unwrap()).unwrap()
        };
        let ms = [matrix(576, GgmlDType::Q4_1, 1), matrix(192, GgmlDType::Q4_0, 2), matrix(300, GgmlDType::Q8_0, 3)];
        let arcs: Vec<Arc<QMatrix>> = ms.iter().cloned().map(Arc::new).collect();
        let same = |a: &Tensor, b: &Tensor| {
            a.dims() == b.dims() && {
                let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits())
            }
        };
        for t in [1, 5, 9, 20] {
            let x = Tensor::from_vec((0..t * cols).map(|i| ((i * 31 % 97) as f32 - 48.0) / 9.0).collect::<Vec<f32>>(), (1, t, cols), &Device::Cpu).unwrap();
            let refs: Vec<&QMatrix> = ms.iter().collect();
            let got = forward_shared(&refs, &x).unwrap();
            let arc_refs: Vec<&Arc<QMatrix>> = arcs.iter().collect();
            let exact = forward_exact_shared(&arc_refs, &x, false).unwrap();
            let exact_diff = forward_exact_shared(&arc_refs, &x, true).unwrap();
            for (i, m) in ms.iter().enumerate() {
                assert!(same(&got[i], &forward(m, &x).unwrap()), "int8, matrix {i}, {t} rows");
                let alone = forward_exact(&arcs[i], &x).unwrap();
                assert!(same(&exact[i], &alone), "exact, matrix {i}, {t} rows");
                assert!(same(&exact_diff[i], &alone), "exact (differentiable), matrix {i}, {t} rows");
            }
        }
        let narrow = Tensor::zeros((1, 2, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = forward_shared(&[&ms[0], &ms[1]], &narrow).unwrap_err().to_string();
        assert!(e.contains("64 features; the matrix takes 576"), "{e}");
    }
}
