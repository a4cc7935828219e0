//! The exact kernel (`crate::exact`) in wasm simd128: the four accumulators
//! of a (weight row, activation row) pair are the lanes of one f32x4, so each
//! pair's float operations are the portable kernel's, in its order.

use core::arch::wasm32::*;

use super::{load, load4};
use crate::{QMatrix, QType, QK};

/// Block `i`'s 32 weights as eight f32x4 (elements 4g..4g+4 in lane order),
/// with [`QMatrix::dequantize`]'s formulas.
#[inline(always)]
fn block(w: &QMatrix, i: usize, at: usize) -> [v128; 8] {
    let d = f32x4_splat(w.d[at]);
    let ints: [v128; 8] = match w.ty {
        QType::Q4_0 | QType::Q4_1 => {
            let v = load(&w.qs[i]);
            let mut lo = v128_and(v, u8x16_splat(0x0F));
            let mut hi = u8x16_shr(v, 4);
            if w.ty == QType::Q4_0 {
                lo = i8x16_sub(lo, i8x16_splat(8));
                hi = i8x16_sub(hi, i8x16_splat(8));
            }
            widen(lo, hi)
        }
        QType::Q8_0 => widen(load(&w.qs[2 * i]), load(&w.qs[2 * i + 1])),
    };
    let m = (w.ty == QType::Q4_1).then(|| f32x4_splat(w.m[at]));
    ints.map(|q| {
        let scaled = f32x4_mul(f32x4_convert_i32x4(q), d);
        match m {
            Some(m) => f32x4_add(scaled, m),
            None => scaled,
        }
    })
}

/// Sixteen i8 (elements 0..16) and sixteen more (16..32) as eight i32x4.
#[inline(always)]
fn widen(a: v128, b: v128) -> [v128; 8] {
    let (a0, a1) = (i16x8_extend_low_i8x16(a), i16x8_extend_high_i8x16(a));
    let (b0, b1) = (i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b));
    [
        i32x4_extend_low_i16x8(a0),
        i32x4_extend_high_i16x8(a0),
        i32x4_extend_low_i16x8(a1),
        i32x4_extend_high_i16x8(a1),
        i32x4_extend_low_i16x8(b0),
        i32x4_extend_high_i16x8(b0),
        i32x4_extend_low_i16x8(b1),
        i32x4_extend_high_i16x8(b1),
    ]
}

/// A pair's four accumulator vectors summed in `crate::exact::reduce`'s order.
#[inline(always)]
fn total(acc: [v128; 4]) -> f32 {
    let g = f32x4_add(f32x4_add(acc[0], acc[1]), f32x4_add(acc[2], acc[3]));
    (f32x4_extract_lane::<0>(g) + f32x4_extract_lane::<1>(g)) + (f32x4_extract_lane::<2>(g) + f32x4_extract_lane::<3>(g))
}

/// Dots of weight rows `r0 .. r0 + R` with activation rows `xs` (`out[t][r]`):
/// each dequantized block serves every activation row, each loaded
/// activation block every weight row.
#[inline(always)]
fn dots<const R: usize, const T: usize>(w: &QMatrix, r0: usize, xs: [&[f32]; T]) -> [[f32; R]; T] {
    let mut acc = [[[f32x4_splat(0.0); 4]; R]; T];
    for b in 0..w.nb {
        let x: [[v128; 8]; T] = core::array::from_fn(|t| {
            let xb: &[f32; QK] = xs[t][b * QK..(b + 1) * QK].try_into().expect("a block of activations");
            core::array::from_fn(|g| load4(&xb[4 * g..]))
        });
        for r in 0..R {
            let wv = block(w, (r0 + r) * w.nb + b, (r0 + r) * w.nbp + b);
            for t in 0..T {
                for g in 0..8 {
                    acc[t][r][g % 4] = f32x4_add(acc[t][r][g % 4], f32x4_mul(wv[g], x[t][g]));
                }
            }
        }
    }
    acc.map(|row| row.map(total))
}
pub(crate) fn matmul(w: &QMatrix, x: &[f32], out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / cols;
    let xrow = |t: usize| &x[t * cols..(t + 1) * cols];
    let mut t = 0;
    // Prefill: four activation rows per dequantized block.
    while t + 4 <= n {
        for r in 0..rows {
            let got = dots::<1, 4>(w, r, core::array::from_fn(|k| xrow(t + k)));
            for k in 0..4 {
                out[(t + k) * rows + r] = got[k][0];
            }
        }
        t += 4;
    }
    // Decode (and the last rows of a prefill): four weight rows at a time.
    while t < n {
        let mut r = 0;
        while r + 4 <= rows {
            let got = dots::<4, 1>(w, r, [xrow(t)]);
            out[t * rows + r..t * rows + r + 4].copy_from_slice(&got[0]);
            r += 4;
        }
        while r < rows {
            out[t * rows + r] = dots::<1, 1>(w, r, [xrow(t)])[0][0];
            r += 1;
        }
        t += 1;
    }
}
