//! Exact products over quantized storage: f32 activations times the
//! stored weights, never rounded to 8 bits.
//!
//! A block's weights are `w_k = d·q_k + m` (Q4_1; Q4_0 `d·(q_k − 8)`, Q8_0
//! `d·q_k`) with small integer quants `q_k`, so a block's dot is
//! `d·Σ q_k·x_k + m·Σ x_k`: the integers are converted to f32 exactly, the
//! sum is taken in f32, and the scale (and min) applied once per block.
//! That is the dequantize-all product `Σ fl(d·q_k + m)·x_k` up to float
//! rounding (the weights are not rounded to f32 first, and the sums are
//! taken in another order: a relative difference of a few ulps per dot),
//! while reading the 4- or 8-bit blocks instead of f32 weights (5-6× fewer
//! bytes, which is what bounds decoding) and doing two float operations
//! per weight instead of four.
//!
//! One order of operations for every target and every tiling. A (weight
//! row, activation row) pair has four f32 lanes; element `k` of a block
//! belongs to lane `k % 4`. Per block, each lane sums its eight products in
//! element order (`p = q_l·x_l`, then `p = p + q_{4g+l}·x_{4g+l}` for
//! g = 1..8: a multiply then an add, never fused), then
//! `acc_l = acc_l + p_l·d`, and for Q4_1 `acc_l = acc_l + s_l·m` with
//! `s_l` the lane's sum of the block's activations in the same order.
//! Blocks in order; the result is `(acc_0 + acc_1) + (acc_2 + acc_3)`. The
//! simd128 kernel keeps the lanes in one f32x4 and so equals the portable
//! one bit for bit; how rows are tiled (or split across threads) does not
//! change any pair's operations.

#![allow(clippy::needless_range_loop)] // lane loops read clearer indexed

use std::ops::Range;

use crate::{QMatrix, QType, Result, QK};

/// Each activation row's per-block lane sums `s` (Q4_1's min term), `[n · nb]`.
pub(crate) fn lane_sums(x: &[f32], cols: usize) -> Vec<[f32; 4]> {
    x.chunks_exact(QK)
        .map(|xb| {
            let mut s = [xb[0], xb[1], xb[2], xb[3]];
            for g in 1..QK / 4 {
                for l in 0..4 {
                    s[l] += xb[4 * g + l];
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .chunks_exact(cols / QK)
        .flatten()
        .copied()
        .collect()
}

/// One block of a pair, in the module's order: the four lane sums of
/// `q·x`, then `acc += p·d` and, with a min `m` (Q4_1), `acc += s·m`. Each
/// loop over the four lanes is what compilers vectorize natively.
#[inline(always)]
fn add_block(acc: &mut [f32; 4], q: &[f32; QK], xb: &[f32], d: f32, m: Option<f32>, s: &[f32; 4]) {
    let mut p = [0f32; 4];
    for l in 0..4 {
        p[l] = q[l] * xb[l];
    }
    for g in 1..QK / 4 {
        for l in 0..4 {
            p[l] += q[4 * g + l] * xb[4 * g + l];
        }
    }
    for l in 0..4 {
        acc[l] += p[l] * d;
    }
    if let Some(m) = m {
        for l in 0..4 {
            acc[l] += s[l] * m;
        }
    }
}

/// Dots of weight row `r` with `T` activation rows (their lane sums `ss`):
/// each block's quants are converted once for all `T` (prefill tiles of 4,
/// decode 1); every pair's operations are [`add_block`]'s.
fn dots<const T: usize>(w: &QMatrix, r: usize, xs: [&[f32]; T], ss: [&[[f32; 4]]; T]) -> [f32; T] {
    let mut acc = [[0f32; 4]; T];
    for b in 0..w.nb {
        let q = w.block_quants(r, b);
        let at = r * w.nbp + b;
        let m = (w.ty == QType::Q4_1).then(|| w.m[at]);
        for t in 0..T {
            add_block(&mut acc[t], &q, &xs[t][b * QK..(b + 1) * QK], w.d[at], m, &ss[t][b]);
        }
    }
    acc.map(|a| (a[0] + a[1]) + (a[2] + a[3]))
}

/// Weight rows `rows` times every activation row: `out` is `[n, rows.len()]`.
pub(crate) fn matmul_portable(w: &QMatrix, x: &[f32], rows: Range<usize>, out: &mut [f32]) {
    let (cols, nb) = (w.cols, w.nb);
    let (len, n) = (rows.len(), x.len() / cols);
    let sx = lane_sums(x, cols);
    let xrow = |t: usize| &x[t * cols..(t + 1) * cols];
    let srow = |t: usize| &sx[t * nb..(t + 1) * nb];
    let at = |t: usize, r: usize| t * len + r - rows.start;
    let mut t = 0;
    while t + 4 <= n {
        for r in rows.clone() {
            let got = dots::<4>(w, r, core::array::from_fn(|k| xrow(t + k)), core::array::from_fn(|k| srow(t + k)));
            for k in 0..4 {
                out[at(t + k, r)] = got[k];
            }
        }
        t += 4;
    }
    while t < n {
        for r in rows.clone() {
            out[at(t, r)] = dots::<1>(w, r, [xrow(t)], [srow(t)])[0];
        }
        t += 1;
    }
}

impl QMatrix {
    /// `out[t * rows + r] = Σ_k w[r, k] * x[t, k]` with `x` (`[n, cols]`
    /// row-major) in f32: the dequantize-all product up to summation order
    /// (see the module docs). `out` must hold `n * rows` numbers.
    pub fn matmul_exact(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        matmul_exact_shared(&[self], x, &mut [out])
    }

    /// The portable exact kernel, whatever the target (to compare against the SIMD one).
    pub fn matmul_exact_portable(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_exact(x, out)?;
        matmul_portable(self, x, 0..self.rows, out);
        Ok(())
    }

    fn check_exact(&self, x: &[f32], out: &[f32]) -> Result<()> {
        if !x.len().is_multiple_of(self.cols) {
            return crate::err(format!("{} activations do not form rows of {}", x.len(), self.cols));
        }
        let n = x.len() / self.cols;
        if out.len() != n * self.rows {
            return crate::err(format!("output holds {} numbers; need {n} x {}", out.len(), self.rows));
        }
        Ok(())
    }
}

/// [`crate::matmul_shared`] for the exact kernel: `outs[i] = x @ ws[i]ᵀ` in
/// f32 (`x` is `[n, cols]`), the matrices' rows one job for the threads;
/// each output's bits are [`QMatrix::matmul_exact`]'s of its own matrix.
pub fn matmul_exact_shared(ws: &[&QMatrix], x: &[f32], outs: &mut [&mut [f32]]) -> Result<()> {
    crate::check_shared(ws, outs.len(), |w, i| w.check_exact(x, &outs[i][..]))?;
    let n = x.len() / ws.first().map_or(1, |w| w.cols);
    crate::over_rows(ws, n, outs, |w, rows, out| {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        crate::simd128::exact::matmul(w, x, rows, out);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        matmul_portable(w, x, rows, out);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Blocks of type `ty`: scales 0.001..0.05, Q4_1 mins ±0.2, arbitrary quants.
    fn blocks(ty: QType, n: usize, seed: &mut u64) -> Vec<u8> {
        let mut next = || {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) as u32
        };
        let mut out = Vec::new();
        for _ in 0..n {
            out.extend_from_slice(&f16::from_f32(0.001 + (next() % 1000) as f32 * 4.9e-5).to_le_bytes());
            if ty == QType::Q4_1 {
                out.extend_from_slice(&f16::from_f32((next() % 400) as f32 / 1000.0 - 0.2).to_le_bytes());
            }
            let quants = if ty == QType::Q8_0 { 32 } else { 16 };
            out.extend((0..quants).map(|_| next() as u8));
        }
        out
    }

    #[test]
    fn follows_the_stated_order_and_equals_dequantize_all_within_rounding() {
        let mut seed = 7;
        for ty in [QType::Q4_0, QType::Q4_1, QType::Q8_0] {
            for (rows, cols, n) in [(1, 32, 1), (5, 96, 3), (9, 576, 5)] {
                let w = QMatrix::from_gguf(ty, rows, cols, &blocks(ty, rows * cols / QK, &mut seed)).unwrap();
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
                let mut got = vec![0f32; n * rows];
                w.matmul_exact(&x, &mut got).unwrap();
                let deq = w.dequantize();
                for t in 0..n {
                    for r in 0..rows {
                        // The module's order, written out from the dequantized
                        // weights' integers: (w - m) / d is q exactly for these scales.
                        let mut acc = [0f32; 4];
                        for b in 0..cols / QK {
                            let at = r * w.nbp + b;
                            let (d, m) = (w.d[at], if ty == QType::Q4_1 { w.m[at] } else { 0.0 });
                            let q: Vec<f32> = w.block_quants(r, b).to_vec();
                            for (k, &qk) in q.iter().enumerate() {
                                let back = deq[r * cols + b * QK + k];
                                assert_eq!(back, qk * d + m, "the quants are the dequantized weights' integers");
                            }
                            let xb = &x[t * cols + b * QK..t * cols + (b + 1) * QK];
                            let mut p = [0f32; 4];
                            let mut s = [0f32; 4];
                            for k in 0..QK {
                                let l = k % 4;
                                p[l] = if k < 4 { q[k] * xb[k] } else { p[l] + q[k] * xb[k] };
                                s[l] = if k < 4 { xb[k] } else { s[l] + xb[k] };
                            }
                            for l in 0..4 {
                                acc[l] += p[l] * d;
                                if ty == QType::Q4_1 {
                                    acc[l] += s[l] * m;
                                }
                            }
                        }
                        let want = (acc[0] + acc[1]) + (acc[2] + acc[3]);
                        assert_eq!(got[t * rows + r].to_bits(), want.to_bits(), "{ty:?} [{rows}, {cols}] t={t} r={r}");
                        // And the dequantize-all product within float rounding.
                        let exact: f64 = (0..cols).map(|k| deq[r * cols + k] as f64 * x[t * cols + k] as f64).sum();
                        // Bound: ~30 roundings along a dot of 576, each ≤ eps of Σ(|d·q| + |m|)·|x|.
                        let mag: f64 = (0..cols)
                            .map(|k| {
                                let at = r * w.nbp + k / QK;
                                let m = if ty == QType::Q4_1 { w.m[at].abs() } else { 0.0 };
                                ((deq[r * cols + k] - if ty == QType::Q4_1 { w.m[at] } else { 0.0 }).abs() + m) as f64 * (x[t * cols + k] as f64).abs()
                            })
                            .sum();
                        assert!((got[t * rows + r] as f64 - exact).abs() <= 64.0 * f32::EPSILON as f64 * mag + 1e-30, "{ty:?} t={t} r={r}");
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let w = QMatrix::from_gguf(QType::Q8_0, 2, 32, &[0; 68]).unwrap();
        assert!(w.matmul_exact(&[0.0; 33], &mut [0.0; 2]).is_err());
        assert!(w.matmul_exact(&[0.0; 64], &mut [0.0; 3]).is_err());
    }
}
