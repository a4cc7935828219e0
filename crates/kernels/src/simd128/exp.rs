//! `exp` in wasm simd128, four lanes at a time, as libm's `expf` computes
//! it for 2⁻¹⁴ < |x| < 87.34 (callers send other arguments to the scalar
//! call): SwiGLU's gate (`simd128/silu.rs`) and softmax's `exp(x − max)`
//! ([`crate::exp`]). libm's steps there, all in f32, none fused (wasm has no
//! fused multiply-add):
//! - k = trunc(x / ln 2 ± ½) if |x| > 1.5 ln 2, else ±1 if |x| > ½ ln 2,
//!   else 0 (the `hi = x, lo = 0` branch is the same values: x − 0·ln2_hi
//!   is x, 0·ln2_lo is +0);
//! - hi = x − k·ln2_hi, lo = k·ln2_lo, r = hi − lo;
//! - c = r − r²·(P1 + r²·P2), y = 1 + ((r·c / (2 − c) − lo) + hi);
//! - y · 2^k, k in [−126, 126] here, so `scalbnf`'s single multiply.

use core::arch::wasm32::*;

// libm's constants (its decimals, as f32 bit patterns).
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 6.9314575195e-01
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286067653e-06
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216e+00
const P1: f32 = f32::from_bits(0x3e2a_aa8f); // 1.6666625440e-1
const P2: f32 = f32::from_bits(0xbb35_5215); // -2.7667332906e-3

/// |x| bits bounding libm's main range (exclusive): 2⁻¹⁴ and 87.33655.
const TINY: i32 = 0x3900_0000;
const LARGE: i32 = 0x42ae_ac50;

/// exp of four lanes, each in the main range.
#[inline(always)]
pub(super) fn exp_main(x: v128) -> v128 {
    let hx = v128_and(x, i32x4_splat(0x7fff_ffff));
    let negative = i32x4_shr(x, 31); // all ones where the sign is set
    let half = v128_bitselect(f32x4_splat(-0.5), f32x4_splat(0.5), negative);
    let k_far = i32x4_trunc_sat_f32x4(f32x4_add(f32x4_mul(f32x4_splat(INV_LN2), x), half));
    let k_near = i32x4_add(i32x4_splat(1), i32x4_add(negative, negative));
    let far = i32x4_gt(hx, i32x4_splat(0x3f85_1592)); // |x| > 1.5 ln 2
    let near = i32x4_gt(hx, i32x4_splat(0x3eb1_7218)); // |x| > 0.5 ln 2
    let k = v128_bitselect(k_far, v128_and(k_near, near), far);
    let kf = f32x4_convert_i32x4(k);
    let hi = f32x4_sub(x, f32x4_mul(kf, f32x4_splat(LN2_HI)));
    let lo = f32x4_mul(kf, f32x4_splat(LN2_LO));
    let r = f32x4_sub(hi, lo);
    let rr = f32x4_mul(r, r);
    let c = f32x4_sub(r, f32x4_mul(rr, f32x4_add(f32x4_splat(P1), f32x4_mul(rr, f32x4_splat(P2)))));
    let q = f32x4_div(f32x4_mul(r, c), f32x4_sub(f32x4_splat(2.0), c));
    let y = f32x4_add(f32x4_splat(1.0), f32x4_add(f32x4_sub(q, lo), hi));
    f32x4_mul(y, i32x4_shl(i32x4_add(k, i32x4_splat(127)), 23))
}

/// Whether every lane of `x` is in libm's main range.
#[inline(always)]
pub(super) fn in_main_range(x: v128) -> bool {
    let h = v128_and(x, i32x4_splat(0x7fff_ffff));
    i32x4_all_true(v128_and(i32x4_gt(h, i32x4_splat(TINY)), i32x4_lt(h, i32x4_splat(LARGE))))
}

/// [`crate::exp_shifted`]: four at a time where all four differences are
/// in the main range.
pub(crate) fn exp_shifted(xs: &mut [f32], shift: f32) {
    let s = f32x4_splat(shift);
    let mut chunks = xs.chunks_exact_mut(4);
    for c in &mut chunks {
        let x = f32x4_sub(super::load4(c), s);
        if in_main_range(x) {
            let y = exp_main(x);
            c.copy_from_slice(&[f32x4_extract_lane::<0>(y), f32x4_extract_lane::<1>(y), f32x4_extract_lane::<2>(y), f32x4_extract_lane::<3>(y)]);
        } else {
            crate::exp_shifted_portable(c, shift);
        }
    }
    crate::exp_shifted_portable(chunks.into_remainder(), shift);
}
