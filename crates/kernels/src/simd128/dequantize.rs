//! Dequantizing a row in wasm simd128, four weights per operation: the
//! integer quants are widened and converted exactly, then one f32 multiply
//! (and for Q4_1 one add) per weight, as in `QMatrix::block_f32` (candle's /
//! ggml's `dequantize_row_*`). simd128 has no fused multiply-add, so each
//! lane rounds as the scalar code does: the same bits.

use core::arch::wasm32::*;

use super::exact::raw_quants;
use crate::{QMatrix, QType, QK};

#[inline(always)]
fn store4(y: &mut [f32], v: v128) {
    let y: &mut [f32; 4] = (&mut y[..4]).try_into().expect("4 floats");
    // SAFETY: `y` is 4 writable f32 (16 bytes); v128_store accepts any alignment.
    unsafe { v128_store(y.as_mut_ptr() as *mut v128, v) }
}

/// Row `r` of `w` in f32 into `y` (`w.cols` numbers).
pub(crate) fn dequantize_row(w: &QMatrix, r: usize, y: &mut [f32]) {
    let q41 = w.ty == QType::Q4_1;
    for (b, yb) in y.chunks_exact_mut(QK).enumerate() {
        let at = r * w.nbp + b;
        let d = f32x4_splat(w.d[at]);
        let m = f32x4_splat(if q41 { w.m[at] } else { 0.0 });
        // Elements 0..16 and 16..32 as i8 (Q4_0 already `q − 8`).
        let raw = raw_quants(w, r * w.nb + b);
        for (half, &v) in raw.iter().enumerate() {
            for (part, h) in [i16x8_extend_low_i8x16(v), i16x8_extend_high_i8x16(v)].into_iter().enumerate() {
                for (s, q) in [i32x4_extend_low_i16x8(h), i32x4_extend_high_i16x8(h)].into_iter().enumerate() {
                    let mut f = f32x4_mul(f32x4_convert_i32x4(q), d);
                    if q41 {
                        f = f32x4_add(f, m);
                    }
                    store4(&mut yb[half * 16 + part * 8 + s * 4..], f);
                }
            }
        }
    }
}
