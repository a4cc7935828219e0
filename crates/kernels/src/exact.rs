//! Exact products over quantized storage: f32 activations times weights
//! dequantized in registers, never rounded to 8 bits.
//!
//! Each weight is dequantized with the formula of [`QMatrix::dequantize`]
//! (candle's and ggml's, so the value is the f32 weight a dequantize-all
//! model multiplies by), multiplied by the f32 activation and accumulated in
//! f32. The result is the f32 path's `x · wᵀ` up to summation order, while
//! reading the 4- or 8-bit blocks instead of f32 weights: 5-6× fewer bytes,
//! which is what bounds decoding.
//!
//! One summation order for every target and every tiling: a (weight row,
//! activation row) pair keeps sixteen f32 accumulators; element `k` goes to
//! accumulator `k % 16` (`acc += w * x`, a multiply then an add, never
//! fused), blocks in order; the result adds them as four groups of four,
//! `g_i = (a_i + a_{4+i}) + (a_{8+i} + a_{12+i})`, then
//! `(g_0 + g_1) + (g_2 + g_3)`. The simd128 kernel keeps the accumulators in
//! four f32x4 (element `k` in vector `(k / 4) % 4`, lane `k % 4`; four
//! independent chains keep the adds from waiting on each other) and so equals
//! the portable one bit for bit; how rows are tiled (or split across threads)
//! does not change any pair's operations.

use crate::{QMatrix, QType, Result, QK};

/// The f32 value of element `j` (0..32) of block `i`'s quants `q`, with scale
/// `d` and min `m`: [`QMatrix::dequantize`]'s formulas.
#[inline(always)]
fn weight(ty: QType, w: &QMatrix, i: usize, j: usize, d: f32, m: f32) -> f32 {
    match ty {
        QType::Q4_0 | QType::Q4_1 => {
            let byte = w.qs[i].0[j % 16];
            let q = if j < 16 { byte & 0x0F } else { byte >> 4 } as i16;
            if ty == QType::Q4_0 {
                (q - 8) as f32 * d
            } else {
                q as f32 * d + m
            }
        }
        QType::Q8_0 => w.qs[2 * i + j / 16].0[j % 16] as i8 as f32 * d,
    }
}

/// The sixteen accumulators of a pair summed in the module's order.
#[inline(always)]
pub(crate) fn reduce(acc: &[f32; 16]) -> f32 {
    let g = |i: usize| (acc[i] + acc[4 + i]) + (acc[8 + i] + acc[12 + i]);
    (g(0) + g(1)) + (g(2) + g(3))
}

/// The dot of weight row `r` with `x` (one activation row) in the module's order.
pub(crate) fn dot(w: &QMatrix, r: usize, x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for b in 0..w.nb {
        let at = r * w.nbp + b;
        let (d, m) = (w.d[at], if w.ty == QType::Q4_1 { w.m[at] } else { 0.0 });
        let i = r * w.nb + b;
        for j in 0..QK {
            acc[j % 16] += weight(w.ty, w, i, j, d, m) * x[b * QK + j];
        }
    }
    reduce(&acc)
}

pub(crate) fn matmul_portable(w: &QMatrix, x: &[f32], out: &mut [f32]) {
    for (xt, row) in x.chunks_exact(w.cols).zip(out.chunks_exact_mut(w.rows)) {
        for (r, o) in row.iter_mut().enumerate() {
            *o = dot(w, r, xt);
        }
    }
}

impl QMatrix {
    /// `out[t * rows + r] = Σ_k w[r, k] * x[t, k]` with `x` (`[n, cols]`
    /// row-major) in f32: the dequantize-all product up to summation order
    /// (see the module docs). `out` must hold `n * rows` numbers.
    pub fn matmul_exact(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_exact(x, out)?;
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        crate::simd128::exact::matmul(self, x, out);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        matmul_portable(self, x, out);
        Ok(())
    }

    /// The portable exact kernel, whatever the target (to compare against the SIMD one).
    pub fn matmul_exact_portable(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_exact(x, out)?;
        matmul_portable(self, x, out);
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
    fn equals_the_dequantized_weights_in_the_stated_order() {
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
                        let mut acc = [0f32; 16];
                        for k in 0..cols {
                            acc[k % 16] += deq[r * cols + k] * x[t * cols + k];
                        }
                        let want = reduce(&acc);
                        assert_eq!(got[t * rows + r].to_bits(), want.to_bits(), "{ty:?} [{rows}, {cols}] t={t} r={r}");
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
