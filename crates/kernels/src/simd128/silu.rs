//! [`crate::silu`] in wasm simd128: `exp` four lanes at a time
//! (`simd128/exp.rs`, libm's `expf` for 2⁻¹⁴ < |x| < 87.34); any four with
//! another argument go to the scalar formula.

use core::arch::wasm32::*;

use super::exp::{exp_main, in_main_range};

pub(crate) fn silu_mul(v: &[f32], l: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.len());
    let (vc, lc) = (v.chunks_exact(4), l.chunks_exact(4));
    let (vr, lr) = (vc.remainder(), lc.remainder());
    for (v4, l4) in vc.zip(lc) {
        let (x, m) = (super::load4(v4), super::load4(l4));
        let neg = f32x4_neg(x);
        if in_main_range(neg) {
            let g = f32x4_mul(f32x4_div(x, f32x4_add(f32x4_splat(1.0), exp_main(neg))), m);
            out.extend([f32x4_extract_lane::<0>(g), f32x4_extract_lane::<1>(g), f32x4_extract_lane::<2>(g), f32x4_extract_lane::<3>(g)]);
        } else {
            out.extend(v4.iter().zip(l4).map(|(&v, &l)| crate::silu::silu_mul_one(v, l)));
        }
    }
    out.extend(vr.iter().zip(lr).map(|(&v, &l)| crate::silu::silu_mul_one(v, l)));
    out
}
