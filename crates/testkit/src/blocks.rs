//! Random quantized weight blocks, for the kernels' tests and benches.

use candle_core::quantized::GgmlDType;
use half::f16;
use scalpel_kernels::QType;

use crate::rng::Rng;

/// candle's name for a kernel block type.
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
        out.extend((0..n).map(|_| rng.next_u64() as u8));
    }
    out
}
