//! wasm simd128 kernel. Same float operations in the same order as
//! `portable::dot` (see crate docs): bit-identical results.
//!
//! Integer products are formed either with `i16x8_extmul_*_i8x16` and summed
//! in i16 lanes before widening, or (one activation row) from operands
//! widened to i16 with `i32x4_dot_i16x8`, which sums two products into an
//! i32 lane. Neither can overflow: activations are in [-127, 127]
//! (`round(x / (max|x| / 127))`), Q4 weights in [-8, 15], so four Q4
//! products sum to at most 4 * 15 * 127 = 7620; Q8_0 weights are in
//! [-128, 127], so two products sum to at most 2 * 128 * 127 = 32512 < 32767.
//! Integer sums are exact in any grouping, so both give the same block sums.
//! The one-row Q4 dot takes the nibbles as stored, in [0, 15], split into
//! even and odd elements (`q4_part_wide`); Q4_0's offset is then taken off
//! as 8·Σx of the block, still in integers.

#![allow(clippy::needless_range_loop)] // index loops over tile arrays read clearer here

use core::arch::wasm32::*;
use core::ops::Range;

use crate::{QActs, QMatrix, QType, V16};

mod dequantize;
pub(crate) use dequantize::dequantize_row;
pub(crate) mod exact;
pub(crate) mod exp;
pub(crate) mod quantize;
pub(crate) mod silu;

#[inline(always)]
fn load(v: &V16) -> v128 {
    // SAFETY: `V16` is 16 readable bytes (16-byte aligned); v128_load reads
    // exactly 16 bytes from the pointer.
    unsafe { v128_load(v as *const V16 as *const v128) }
}

#[inline(always)]
pub(super) fn load4(xs: &[f32]) -> v128 {
    let xs: &[f32; 4] = xs[..4].try_into().expect("4 floats");
    // SAFETY: `xs` is 4 readable f32 (16 bytes); v128_load accepts any alignment.
    unsafe { v128_load(xs.as_ptr() as *const v128) }
}

/// [v0, v1, v2, v3] (i32x4 partial dots of four blocks) → their four totals.
#[inline(always)]
fn reduce4(p: [v128; 4]) -> v128 {
    let a = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(p[0], p[1]), i32x4_shuffle::<2, 6, 3, 7>(p[0], p[1]));
    let b = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(p[2], p[3]), i32x4_shuffle::<2, 6, 3, 7>(p[2], p[3]));
    i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(a, b), i32x4_shuffle::<2, 3, 6, 7>(a, b))
}

#[inline(always)]
fn q4_part(lo: v128, hi: v128, x0: v128, x1: v128) -> v128 {
    let s = i16x8_add(
        i16x8_add(i16x8_extmul_low_i8x16(lo, x0), i16x8_extmul_high_i8x16(lo, x0)),
        i16x8_add(i16x8_extmul_low_i8x16(hi, x1), i16x8_extmul_high_i8x16(hi, x1)),
    );
    i32x4_extadd_pairwise_i16x8(s)
}

/// A Q4 block's partial dot with activations widened to i16 once per block,
/// split into even and odd elements (`xw`: [even 0..16, odd 0..16, even
/// 16..32, odd 16..32], see `split_even_odd`). The nibbles come out of the
/// block's bytes in that order with 16-bit shifts and one mask, already
/// widened: in each 16-bit lane, bits 0..4 are element 2k, 8..12 element
/// 2k + 1, 4..8 element 16 + 2k and 12..16 element 17 + 2k. This spares
/// the 8-bit shift (which wasm engines emulate on x86) and the four extends.
#[inline(always)]
fn q4_part_wide(q: v128, mask16: v128, xw: &[v128; 4]) -> v128 {
    let lo_even = v128_and(q, mask16);
    let lo_odd = v128_and(u16x8_shr(q, 8), mask16);
    let hi_even = v128_and(u16x8_shr(q, 4), mask16);
    let hi_odd = u16x8_shr(q, 12);
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(lo_even, xw[0]), i32x4_dot_i16x8(lo_odd, xw[1])),
        i32x4_add(i32x4_dot_i16x8(hi_even, xw[2]), i32x4_dot_i16x8(hi_odd, xw[3])),
    )
}

/// 16 i8 → their even and odd elements, each sign-extended into i16 lanes.
#[inline(always)]
fn split_even_odd(x: v128) -> (v128, v128) {
    (i16x8_shr(i16x8_shl(x, 8), 8), i16x8_shr(x, 8))
}

/// A Q8_0 block's partial dot with activations widened to i16 once per block
/// (as `q4_part_wide`).
#[inline(always)]
fn q8_part_wide(w0: v128, w1: v128, xw: &[v128; 4]) -> v128 {
    i32x4_add(
        i32x4_add(i32x4_dot_i16x8(i16x8_extend_low_i8x16(w0), xw[0]), i32x4_dot_i16x8(i16x8_extend_high_i8x16(w0), xw[1])),
        i32x4_add(i32x4_dot_i16x8(i16x8_extend_low_i8x16(w1), xw[2]), i32x4_dot_i16x8(i16x8_extend_high_i8x16(w1), xw[3])),
    )
}

#[inline(always)]
fn q8_part(w0: v128, w1: v128, x0: v128, x1: v128) -> v128 {
    let s0 = i16x8_add(i16x8_extmul_low_i8x16(w0, x0), i16x8_extmul_high_i8x16(w0, x0));
    let s1 = i16x8_add(i16x8_extmul_low_i8x16(w1, x1), i16x8_extmul_high_i8x16(w1, x1));
    i32x4_add(i32x4_extadd_pairwise_i16x8(s0), i32x4_extadd_pairwise_i16x8(s1))
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// [v0, v1, v2, v3] (f32x4 each) → [v0[j], v1[j], v2[j], v3[j]] for j = 0..4.
#[inline(always)]
fn transpose4(v: [v128; 4]) -> [v128; 4] {
    let (a, b) = (i32x4_shuffle::<0, 4, 1, 5>(v[0], v[1]), i32x4_shuffle::<2, 6, 3, 7>(v[0], v[1]));
    let (c, d) = (i32x4_shuffle::<0, 4, 1, 5>(v[2], v[3]), i32x4_shuffle::<2, 6, 3, 7>(v[2], v[3]));
    [
        i32x4_shuffle::<0, 1, 4, 5>(a, c),
        i32x4_shuffle::<2, 3, 6, 7>(a, c),
        i32x4_shuffle::<0, 1, 4, 5>(b, d),
        i32x4_shuffle::<2, 3, 6, 7>(b, d),
    ]
}

/// Dots of weight rows `r0 .. r0 + R` with activation rows `t0 .. t0 + T`
/// (`out[t][r]`). Each loaded weight block serves T activation rows and each
/// loaded activation block R weight rows; every pair's float operations are
/// those of `portable::dot`, in its order.
///
/// One activation row (decode): its blocks are widened to i16 once and
/// serve every weight row through `i32x4_dot_i16x8` (`*_part_wide`), which
/// measured faster there (Q4_1 decode shapes 1.15–1.2×, Q8_0 1.1×) and
/// slower for prefill tiles, which keep `i16x8_extmul`. Q4 blocks are split
/// into even and odd elements by 16-bit shifts rather than widened: a
/// decode step's Q4_1 products 1.11× faster in Chromium, 1.14× in Node.
#[inline(always)]
fn dots<const TY: u8, const R: usize, const T: usize>(w: &QMatrix, r0: usize, a: &QActs, t0: usize) -> [[f32; R]; T] {
    let vecs = if TY == Q8_0 { 2 } else { 1 };
    let (nb, nbp) = (w.nb, w.nbp);
    let wq: [&[V16]; R] = core::array::from_fn(|r| &w.qs[(r0 + r) * nb * vecs..(r0 + r + 1) * nb * vecs]);
    let xq: [&[V16]; T] = core::array::from_fn(|t| &a.qs[(t0 + t) * nb * 2..(t0 + t + 1) * nb * 2]);
    let wide = T == 1;
    let mask = u8x16_splat(0x0F);
    let eight = i8x16_splat(8);
    let (mask16, eight16) = (u16x8_splat(0x000F), i16x8_splat(8));
    let zero = i32x4_splat(0);
    let mut acc = [[0f32; R]; T];
    // Four weight rows: their sums kept as one f32x4 per activation row.
    let mut acc_rows = [f32x4_splat(0.0); T];
    let mut g = 0;
    while g < nbp {
        let mut parts = [[[zero; 4]; R]; T];
        let valid = (nb - g).min(4);
        for j in 0..valid {
            let b = g + j;
            let x: [(v128, v128); T] = core::array::from_fn(|t| (load(&xq[t][2 * b]), load(&xq[t][2 * b + 1])));
            let xw: [[v128; 4]; T] = core::array::from_fn(|t| match (wide, TY == Q8_0) {
                (true, true) => [
                    i16x8_extend_low_i8x16(x[t].0),
                    i16x8_extend_high_i8x16(x[t].0),
                    i16x8_extend_low_i8x16(x[t].1),
                    i16x8_extend_high_i8x16(x[t].1),
                ],
                (true, false) => {
                    let ((e0, o0), (e1, o1)) = (split_even_odd(x[t].0), split_even_odd(x[t].1));
                    [e0, o0, e1, o1]
                }
                (false, _) => [zero; 4],
            });
            // Q4_0's nibbles are stored + 8: the wide dot takes them as they
            // are and subtracts 8·Σx of the block, in integers (exact).
            let x8: [v128; T] = core::array::from_fn(|t| match wide && TY == Q4_0 {
                true => i32x4_dot_i16x8(i16x8_add(i16x8_add(xw[t][0], xw[t][1]), i16x8_add(xw[t][2], xw[t][3])), eight16),
                false => zero,
            });
            for r in 0..R {
                if TY == Q8_0 {
                    let (w0, w1) = (load(&wq[r][2 * b]), load(&wq[r][2 * b + 1]));
                    for t in 0..T {
                        parts[t][r][j] = if wide { q8_part_wide(w0, w1, &xw[t]) } else { q8_part(w0, w1, x[t].0, x[t].1) };
                    }
                } else if wide {
                    let q = load(&wq[r][b]);
                    for t in 0..T {
                        let p = q4_part_wide(q, mask16, &xw[t]);
                        parts[t][r][j] = if TY == Q4_0 { i32x4_sub(p, x8[t]) } else { p };
                    }
                } else {
                    let q = load(&wq[r][b]);
                    let (mut lo, mut hi) = (v128_and(q, mask), u8x16_shr(q, 4));
                    if TY == Q4_0 {
                        lo = i8x16_sub(lo, eight);
                        hi = i8x16_sub(hi, eight);
                    }
                    for t in 0..T {
                        parts[t][r][j] = q4_part(lo, hi, x[t].0, x[t].1);
                    }
                }
            }
        }
        // Each weight row's four block scales (and mins), loaded once for
        // all T activation rows.
        let dw: [v128; R] = core::array::from_fn(|r| load4(&w.d[(r0 + r) * nbp + g..]));
        let mw: [v128; R] = core::array::from_fn(|r| if TY == Q4_1 { load4(&w.m[(r0 + r) * nbp + g..]) } else { zero });
        for t in 0..T {
            let row = (t0 + t) * nbp + g;
            let (xd, xs) = (load4(&a.d[row..]), if TY == Q4_1 { load4(&a.s[row..]) } else { zero });
            // Each row's four block terms, as the scalar code forms them.
            let terms: [v128; R] = core::array::from_fn(|r| {
                let isum = f32x4_convert_i32x4(reduce4(parts[t][r]));
                let v = f32x4_mul(f32x4_mul(isum, dw[r]), xd);
                if TY == Q4_1 { f32x4_add(v, f32x4_mul(mw[r], xs)) } else { v }
            });
            if R == 4 {
                // Transposed, one vector holds a block's term for the four
                // rows: adding them in block order does, lane by lane, the
                // scalar code's additions (one add a block, not four).
                let by_block = transpose4(core::array::from_fn(|r| terms[r]));
                for v in by_block.iter().take(valid) {
                    acc_rows[t] = f32x4_add(acc_rows[t], *v);
                }
                continue;
            }
            for r in 0..R {
                let v = terms[r];
                // Blocks in order, as the scalar code adds them.
                let mut f = acc[t][r];
                f += f32x4_extract_lane::<0>(v);
                if valid > 1 {
                    f += f32x4_extract_lane::<1>(v);
                }
                if valid > 2 {
                    f += f32x4_extract_lane::<2>(v);
                }
                if valid > 3 {
                    f += f32x4_extract_lane::<3>(v);
                }
                acc[t][r] = f;
            }
        }
        g += 4;
    }
    if R == 4 {
        for t in 0..T {
            let v = acc_rows[t];
            acc[t][..4].copy_from_slice(&[
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]);
        }
    }
    acc
}

/// Tiles of R weight rows × T activation rows, with 1-row remainders, over
/// weight rows `rows`: `out` is `[a.rows, rows.len()]`.
fn tiled<const TY: u8, const R: usize, const T: usize>(w: &QMatrix, a: &QActs, rows: Range<usize>, out: &mut [f32]) {
    let (n, m) = (rows.len(), a.rows);
    let at = |t: usize, r: usize| t * n + r - rows.start;
    let mut t0 = 0;
    while t0 + T <= m {
        let mut r0 = rows.start;
        while r0 + R <= rows.end {
            let v = dots::<TY, R, T>(w, r0, a, t0);
            for (t, row) in v.iter().enumerate() {
                out[at(t0 + t, r0)..at(t0 + t, r0) + R].copy_from_slice(row);
            }
            r0 += R;
        }
        while r0 < rows.end {
            let v = dots::<TY, 1, T>(w, r0, a, t0);
            for (t, row) in v.iter().enumerate() {
                out[at(t0 + t, r0)] = row[0];
            }
            r0 += 1;
        }
        t0 += T;
    }
    while t0 < m {
        let mut r0 = rows.start;
        while r0 + R <= rows.end {
            let v = dots::<TY, R, 1>(w, r0, a, t0);
            out[at(t0, r0)..at(t0, r0) + R].copy_from_slice(&v[0]);
            r0 += R;
        }
        while r0 < rows.end {
            out[at(t0, r0)] = dots::<TY, 1, 1>(w, r0, a, t0)[0][0];
            r0 += 1;
        }
        t0 += 1;
    }
}

fn by_shape<const TY: u8>(w: &QMatrix, a: &QActs, rows: Range<usize>, out: &mut [f32]) {
    // Tile sizes measured in Node (V8, x86-64): Q4 blocks are one vector, so
    // four weight rows fit in registers for decode and 2 x 4 for prefill; a
    // Q8_0 block is two vectors and spilled at those sizes.
    match (TY == Q8_0, a.rows < 4) {
        (false, true) => tiled::<TY, 4, 1>(w, a, rows, out),
        (false, false) => tiled::<TY, 2, 4>(w, a, rows, out),
        (true, true) => tiled::<TY, 1, 1>(w, a, rows, out),
        (true, false) => tiled::<TY, 1, 4>(w, a, rows, out),
    }
}

pub(crate) fn matmul(w: &QMatrix, a: &QActs, rows: Range<usize>, out: &mut [f32]) {
    match w.ty {
        QType::Q4_0 => by_shape::<Q4_0>(w, a, rows, out),
        QType::Q4_1 => by_shape::<Q4_1>(w, a, rows, out),
        QType::Q8_0 => by_shape::<Q8_0>(w, a, rows, out),
    }
}
