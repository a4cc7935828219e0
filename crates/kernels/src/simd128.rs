//! wasm simd128 kernel. Same float operations in the same order as
//! `portable::dot` (see crate docs): bit-identical results.
//!
//! Integer products are formed with `i16x8_extmul_*_i8x16` and summed in
//! i16 lanes before widening. That cannot overflow: activations are in
//! [-127, 127] (`round(x / (max|x| / 127))`), Q4 weights in [-8, 15], so four
//! Q4 products sum to at most 4 * 15 * 127 = 7620; Q8_0 weights are in
//! [-128, 127], so two products sum to at most 2 * 128 * 127 = 32512 < 32767.

use core::arch::wasm32::*;

use crate::{QActs, QMatrix, QType, V16};

/// Activation rows per tile: each loaded and unpacked weight block is used
/// for this many rows.
const TILE: usize = 4;

#[inline(always)]
fn load(v: &V16) -> v128 {
    // SAFETY: `V16` is 16 readable bytes (16-byte aligned); v128_load reads
    // exactly 16 bytes from the pointer.
    unsafe { v128_load(v as *const V16 as *const v128) }
}

#[inline(always)]
fn load4(xs: &[f32]) -> v128 {
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

#[inline(always)]
fn q8_part(w0: v128, w1: v128, x0: v128, x1: v128) -> v128 {
    let s0 = i16x8_add(i16x8_extmul_low_i8x16(w0, x0), i16x8_extmul_high_i8x16(w0, x0));
    let s1 = i16x8_add(i16x8_extmul_low_i8x16(w1, x1), i16x8_extmul_high_i8x16(w1, x1));
    i32x4_add(i32x4_extadd_pairwise_i16x8(s0), i32x4_extadd_pairwise_i16x8(s1))
}

/// Dots of weight row `r` with activation rows `t0 .. t0 + T`.
#[inline(always)]
fn dots<const T: usize>(w: &QMatrix, r: usize, a: &QActs, t0: usize) -> [f32; T] {
    let vecs = w.ty.vecs();
    let wq = &w.qs[r * w.nb * vecs..(r + 1) * w.nb * vecs];
    let xq: [&[V16]; T] = core::array::from_fn(|t| &a.qs[(t0 + t) * a.nb * 2..(t0 + t + 1) * a.nb * 2]);
    let wd = &w.d[r * w.nbp..(r + 1) * w.nbp];
    let wm = if w.ty == QType::Q4_1 { &w.m[r * w.nbp..(r + 1) * w.nbp] } else { &[][..] };
    let mask = u8x16_splat(0x0F);
    let eight = i8x16_splat(8);
    let zero = i32x4_splat(0);
    let mut acc = [0f32; T];
    let mut g = 0;
    while g < w.nbp {
        let mut parts = [[zero; 4]; T];
        for j in 0..4 {
            let b = g + j;
            if b >= w.nb {
                break;
            }
            match w.ty {
                QType::Q4_0 | QType::Q4_1 => {
                    let q = load(&wq[b]);
                    let (mut lo, mut hi) = (v128_and(q, mask), u8x16_shr(q, 4));
                    if w.ty == QType::Q4_0 {
                        lo = i8x16_sub(lo, eight);
                        hi = i8x16_sub(hi, eight);
                    }
                    for t in 0..T {
                        parts[t][j] = q4_part(lo, hi, load(&xq[t][2 * b]), load(&xq[t][2 * b + 1]));
                    }
                }
                QType::Q8_0 => {
                    let (w0, w1) = (load(&wq[2 * b]), load(&wq[2 * b + 1]));
                    for t in 0..T {
                        parts[t][j] = q8_part(w0, w1, load(&xq[t][2 * b]), load(&xq[t][2 * b + 1]));
                    }
                }
            }
        }
        let dw = load4(&wd[g..]);
        let mw = if w.ty == QType::Q4_1 { Some(load4(&wm[g..])) } else { None };
        let valid = (w.nb - g).min(4);
        for t in 0..T {
            let row = (t0 + t) * a.nbp + g;
            let isum = f32x4_convert_i32x4(reduce4(parts[t]));
            let mut v = f32x4_mul(f32x4_mul(isum, dw), load4(&a.d[row..]));
            if let Some(mw) = mw {
                v = f32x4_add(v, f32x4_mul(mw, load4(&a.s[row..])));
            }
            // Blocks in order, as the scalar code adds them.
            let mut f = acc[t];
            f += f32x4_extract_lane::<0>(v);
            if valid == 4 {
                f += f32x4_extract_lane::<1>(v);
                f += f32x4_extract_lane::<2>(v);
                f += f32x4_extract_lane::<3>(v);
            } else {
                if valid > 1 {
                    f += f32x4_extract_lane::<1>(v);
                }
                if valid > 2 {
                    f += f32x4_extract_lane::<2>(v);
                }
            }
            acc[t] = f;
        }
        g += 4;
    }
    acc
}

pub(crate) fn matmul(w: &QMatrix, a: &QActs, out: &mut [f32]) {
    let n = w.rows;
    let mut t0 = 0;
    while t0 + TILE <= a.rows {
        for r in 0..n {
            let v = dots::<TILE>(w, r, a, t0);
            for (t, x) in v.into_iter().enumerate() {
                out[(t0 + t) * n + r] = x;
            }
        }
        t0 += TILE;
    }
    while t0 < a.rows {
        for r in 0..n {
            out[t0 * n + r] = dots::<1>(w, r, a, t0)[0];
        }
        t0 += 1;
    }
}
