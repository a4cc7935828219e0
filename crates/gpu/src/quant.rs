//! GGUF Q8_0 / Q4_1 blocks repacked for the GPU: GGUF blocks are 34 / 20
//! bytes (f16 scale(s) then quants), not 4-byte aligned, so each block
//! becomes whole `u32` words with the scales widened to f32:
//! - Q8_0 (9 words, 36 B): `[d, q0..3, q4..7, …, q28..31]` (i8, little-endian);
//! - Q4_1 (6 words, 24 B): `[d, m, qs0..3, …, qs12..15]`, byte i holding
//!   value i (low nibble) and value i + 16 (high nibble); value = q·d + m.
//!
//! The dequantized values are exactly candle's (f16 → f32 is exact).

use candle_core::quantized::GgmlDType;

/// Format codes passed to the quantized kernels (`fmt`).
pub const FMT_Q8_0: u32 = 0;
pub const FMT_Q4_1: u32 = 1;

/// The kernel format code for a GGUF type, if it has a quantized GPU kernel.
pub fn gpu_format(t: GgmlDType) -> Option<u32> {
    match t {
        GgmlDType::Q8_0 => Some(FMT_Q8_0),
        GgmlDType::Q4_1 => Some(FMT_Q4_1),
        _ => None,
    }
}

/// Words per repacked block of 32 values.
pub fn block_words(fmt: u32) -> usize {
    if fmt == FMT_Q8_0 {
        9
    } else {
        6
    }
}

pub fn f16_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) as u32) << 31;
    let e = ((h >> 10) & 0x1f) as u32;
    let m = (h & 0x3ff) as u32;
    let bits = if e == 0 {
        if m == 0 {
            s
        } else {
            // Subnormal: renormalize.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            s | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if e == 31 {
        s | 0x7f80_0000 | (m << 13)
    } else {
        s | ((e + 127 - 15) << 23) | (m << 13)
    };
    f32::from_bits(bits)
}

/// Repacks raw GGUF blocks of type `fmt` (see [`gpu_format`]) into words.
pub fn repack(fmt: u32, raw: &[u8]) -> Vec<u32> {
    let h = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]])).to_bits();
    let w = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if fmt == FMT_Q8_0 {
        assert_eq!(raw.len() % 34, 0, "Q8_0 data is whole 34-byte blocks");
        let mut out = Vec::with_capacity(raw.len() / 34 * 9);
        for b in raw.chunks_exact(34) {
            out.push(h(&b[0..2]));
            out.extend(b[2..].chunks_exact(4).map(w));
        }
        out
    } else {
        assert_eq!(raw.len() % 20, 0, "Q4_1 data is whole 20-byte blocks");
        let mut out = Vec::with_capacity(raw.len() / 20 * 6);
        for b in raw.chunks_exact(20) {
            out.push(h(&b[0..2]));
            out.push(h(&b[2..4]));
            out.extend(b[4..].chunks_exact(4).map(w));
        }
        out
    }
}
