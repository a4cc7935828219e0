//! Quantizing a block of activations in wasm simd128, four at a time, with
//! the portable code's values (`amax_portable`, `quants_portable` in lib.rs): the
//! largest |x| by the same comparison (exact, so its order does not
//! matter), `x · id` as one f32 multiply per lane, rounding half away from
//! zero by `round_half_away`'s steps, then a saturating conversion to i8 as
//! Rust's `as i8` does (NaN to 0). The integer sum is exact in any order.

use core::arch::wasm32::*;

use super::load4;
use crate::{QK, V16};

/// The largest |x| of a block, 0 if there is none (NaN is skipped):
/// `f32x4.pmax(a, v)` is `a < v ? v : a`, the portable fold's comparison.
#[inline]
pub(crate) fn amax(xs: &[f32]) -> f32 {
    let mut a = f32x4_splat(0.0);
    for c in xs.chunks_exact(4) {
        a = f32x4_pmax(a, f32x4_abs(load4(c)));
    }
    let l = [f32x4_extract_lane::<0>(a), f32x4_extract_lane::<1>(a), f32x4_extract_lane::<2>(a), f32x4_extract_lane::<3>(a)];
    l.into_iter().fold(0f32, |a, v| if v > a { v } else { a })
}

/// `round_half_away(x · id) as i8` of four lanes, as i32 lanes.
#[inline(always)]
fn quants4(xs: &[f32], id: v128) -> v128 {
    let p = f32x4_mul(load4(xs), id);
    let t = f32x4_trunc(p);
    let away = f32x4_ge(f32x4_abs(f32x4_sub(p, t)), f32x4_splat(0.5));
    // ±1 with p's sign where the fraction is at least a half, else +0.
    let one = v128_or(v128_and(p, u32x4_splat(0x8000_0000)), f32x4_splat(1.0));
    // Integer-valued, so truncating is exact; out of i32's range and NaN
    // saturate, then the narrowing saturates to i8: Rust's `as i8`.
    i32x4_trunc_sat_f32x4(f32x4_add(t, v128_and(one, away)))
}

/// The block's 32 quants (`qs[0]` elements 0..16, `qs[1]` 16..32) at
/// inverse scale `id`; returns their sum.
#[inline]
pub(crate) fn quants(xs: &[f32], id: f32, qs: &mut [V16]) -> i32 {
    debug_assert_eq!(xs.len(), QK);
    let id = f32x4_splat(id);
    let mut sum = i32x4_splat(0);
    for (h, q) in qs[..2].iter_mut().enumerate() {
        let x = &xs[h * 16..h * 16 + 16];
        let v: [v128; 4] = core::array::from_fn(|k| quants4(&x[4 * k..], id));
        let b = i8x16_narrow_i16x8(i16x8_narrow_i32x4(v[0], v[1]), i16x8_narrow_i32x4(v[2], v[3]));
        // The sum of the saturated i8 quants, as the portable code sums them.
        sum = i32x4_add(sum, i32x4_extadd_pairwise_i16x8(i16x8_extadd_pairwise_i8x16(b)));
        // SAFETY: `V16` is 16 writable bytes; v128_store accepts any alignment.
        unsafe { v128_store(q as *mut V16 as *mut v128, b) };
    }
    i32x4_extract_lane::<0>(sum) + i32x4_extract_lane::<1>(sum) + i32x4_extract_lane::<2>(sum) + i32x4_extract_lane::<3>(sum)
}
