//! Softmax's `exp(x − shift)` over a row, with the bits of `(x - shift).exp()`
//! (candle's `softmax_last_dim` computes `(x - max).exp()`). In wasm the
//! simd128 version subtracts and computes `exp` four lanes at a time as
//! libm's `expf` does in its main range (`simd128/exp.rs`); any four with
//! another argument (the row's maximum itself, whose difference is 0, or
//! one below −87.34, NaN, ±∞) take the scalar call. The wasm self-test
//! compares it with the scalar formula bit for bit.

/// `xs[i] = (xs[i] − shift).exp()`.
pub fn exp_shifted(xs: &mut [f32], shift: f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return crate::simd128::exp::exp_shifted(xs, shift);
    #[allow(unreachable_code)]
    exp_shifted_portable(xs, shift)
}

/// The scalar formula, whatever the target (what the SIMD version must equal).
pub fn exp_shifted_portable(xs: &mut [f32], shift: f32) {
    xs.iter_mut().for_each(|x| *x = (*x - shift).exp());
}
