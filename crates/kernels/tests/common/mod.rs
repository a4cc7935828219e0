//! Random quantized blocks for the kernel tests and the wasm bench
//! (crates/kernels/wasm-bench includes this file by path).
#![allow(dead_code)]

use candle_core::quantized::GgmlDType;
use half::f16;
use scalpel_kernels::QType;

/// SplitMix64: tiny and seedable.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn sym(&mut self, s: f32) -> f32 {
        (self.unit() * 2.0 - 1.0) * s
    }
}

pub fn ggml(ty: QType) -> GgmlDType {
    match ty {
        QType::Q4_0 => GgmlDType::Q4_0,
        QType::Q4_1 => GgmlDType::Q4_1,
        QType::Q8_0 => GgmlDType::Q8_0,
    }
}

/// Random GGUF blocks: random quants, f16 scales in (0.001, 0.05), Q4_1 mins in ±0.2.
pub fn random_blocks(ty: QType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / 32 {
        out.extend_from_slice(&f16::from_f32(0.001 + rng.unit() * 0.049).to_le_bytes());
        if ty == QType::Q4_1 {
            out.extend_from_slice(&f16::from_f32(rng.sym(0.2)).to_le_bytes());
        }
        let n = if ty == QType::Q8_0 { 32 } else { 16 };
        out.extend((0..n).map(|_| rng.next() as u8));
    }
    out
}

