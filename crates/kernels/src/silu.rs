//! SwiGLU's gate, `silu(v) · l = v / (1 + exp(−v)) · l` element by element:
//! candle's `silu(pre) * lin` formula and rounding steps, so the same bits.
//!
//! In wasm the simd128 version computes `exp` four lanes at a time with the
//! operations, constants and order of the standard library's `f32::exp`
//! there (libm's `expf`, from FreeBSD's `e_expf.c`), for arguments in its
//! main range (2⁻¹⁴ < |x| < 87.34); any group of four with another argument
//! (NaN, ±∞, overflow or underflow, tiny |x|) is computed by the scalar
//! formula. The wasm self-test compares it with the scalar formula bit for
//! bit over every 97th f32 bit pattern and the patterns around libm's range
//! edges (all 2³² gave 0 differences once, by hand: docs/kernels.md).

/// `out[i] = v[i] / (1 + exp(−v[i])) · l[i]` (`v` and `l` of equal length).
pub fn silu_mul(v: &[f32], l: &[f32]) -> Vec<f32> {
    assert_eq!(v.len(), l.len(), "silu_mul: the gate and the linear input must have equal lengths");
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return crate::simd128::silu::silu_mul(v, l);
    #[allow(unreachable_code)]
    silu_mul_portable(v, l)
}

/// The scalar formula, whatever the target (what the SIMD version must equal).
pub fn silu_mul_portable(v: &[f32], l: &[f32]) -> Vec<f32> {
    v.iter().zip(l).map(|(&v, &l)| silu_mul_one(v, l)).collect()
}

#[inline(always)]
pub(crate) fn silu_mul_one(v: f32, l: f32) -> f32 {
    v / (1.0 + (-v).exp()) * l
}
