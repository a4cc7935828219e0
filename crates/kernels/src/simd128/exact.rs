//! The exact kernel (`crate::exact`) in wasm simd128: a (weight row,
//! activation row) pair's four lanes are one f32x4, so each pair's float
//! operations are the portable kernel's, in its order.

use core::arch::wasm32::*;
use core::ops::Range;

use super::{load, load4};
use crate::{QMatrix, QType, QK};

/// Block `i`'s 32 integer quants as two i8x16 (elements 0..16, 16..32):
/// Q4_0 `q − 8`, Q4_1 `q`, Q8_0 `q`.
#[inline(always)]
pub(super) fn raw_quants(w: &QMatrix, i: usize) -> [v128; 2] {
    match w.ty {
        QType::Q4_0 | QType::Q4_1 => {
            let v = load(&w.qs[i]);
            let (lo, hi) = (v128_and(v, u8x16_splat(0x0F)), u8x16_shr(v, 4));
            match w.ty {
                QType::Q4_0 => [i8x16_sub(lo, i8x16_splat(8)), i8x16_sub(hi, i8x16_splat(8))],
                _ => [lo, hi],
            }
        }
        QType::Q8_0 => [load(&w.qs[2 * i]), load(&w.qs[2 * i + 1])],
    }
}

/// One lane-sum of a block, `Σ_g q_{4g+l}·x_{4g+l}` in g order: the quants
/// are widened and converted (exactly) four at a time as they are used,
/// which keeps few vectors live (V8 has 16 on x86-64).
#[inline(always)]
fn block_dot(raw: [v128; 2], x: &[v128; 8]) -> v128 {
    let mut p = f32x4_splat(0.0);
    for half in 0..2 {
        for part in 0..2 {
            let h = if part == 0 { i16x8_extend_low_i8x16(raw[half]) } else { i16x8_extend_high_i8x16(raw[half]) };
            for s in 0..2 {
                let g = half * 4 + part * 2 + s;
                let q = f32x4_convert_i32x4(if s == 0 { i32x4_extend_low_i16x8(h) } else { i32x4_extend_high_i16x8(h) });
                p = if g == 0 { f32x4_mul(q, x[0]) } else { f32x4_add(p, f32x4_mul(q, x[g])) };
            }
        }
    }
    p
}

/// A pair's lanes summed in `crate::exact::dots`' order.
#[inline(always)]
fn total(acc: v128) -> f32 {
    (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc)) + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc))
}

/// Dots of weight row `r` with activation rows `xs` (lane sums `ss`): each
/// loaded block serves every activation row.
#[inline(always)]
fn dots<const T: usize>(w: &QMatrix, r: usize, xs: [&[f32]; T], ss: [&[[f32; 4]]; T]) -> [f32; T] {
    let mut acc = [f32x4_splat(0.0); T];
    let q41 = w.ty == QType::Q4_1;
    for b in 0..w.nb {
        let x: [[v128; 8]; T] = core::array::from_fn(|t| {
            let xb: &[f32; QK] = xs[t][b * QK..(b + 1) * QK].try_into().expect("a block of activations");
            core::array::from_fn(|g| load4(&xb[4 * g..]))
        });
        let at = r * w.nbp + b;
        let raw = raw_quants(w, r * w.nb + b);
        let d = f32x4_splat(w.d[at]);
        for t in 0..T {
            let p = block_dot(raw, &x[t]);
            acc[t] = f32x4_add(acc[t], f32x4_mul(p, d));
            if q41 {
                acc[t] = f32x4_add(acc[t], f32x4_mul(load4(&ss[t][b]), f32x4_splat(w.m[at])));
            }
        }
    }
    acc.map(total)
}

/// Weight rows `rows` times every activation row: `out` is `[n, rows.len()]`.
pub(crate) fn matmul(w: &QMatrix, x: &[f32], rows: Range<usize>, out: &mut [f32]) {
    let cols = w.cols;
    let (len, n) = (rows.len(), x.len() / cols);
    let sx = crate::exact::lane_sums(x, cols);
    let xrow = |t: usize| &x[t * cols..(t + 1) * cols];
    let srow = |t: usize| &sx[t * w.nb..(t + 1) * w.nb];
    let at = |t: usize, r: usize| t * len + r - rows.start;
    let mut t = 0;
    // Prefill: four activation rows per converted block.
    while t + 4 <= n {
        for r in rows.clone() {
            let got = dots::<4>(w, r, core::array::from_fn(|k| xrow(t + k)), core::array::from_fn(|k| srow(t + k)));
            for k in 0..4 {
                out[at(t + k, r)] = got[k];
            }
        }
        t += 4;
    }
    // Decode (and the last rows of a prefill): one weight row at a time. A
    // tile of 4 (or 2) rows sharing the activation block's 8 vectors spilled
    // registers in V8: a decode step's exact products took 1.2x as long
    // (the Q8_0 unembedding 1.6x).
    while t < n {
        for r in rows.clone() {
            out[at(t, r)] = dots::<1>(w, r, [xrow(t)], [srow(t)])[0];
        }
        t += 1;
    }
}
