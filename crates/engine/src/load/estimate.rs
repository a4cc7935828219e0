//! How much memory a model's weights will take, known before they are
//! downloaded: from a Hugging Face `config.json`, or from a GGUF file's
//! header (its first megabytes). The page refuses a download that could
//! not be built, or suggests the precision that fits. It is an estimate:
//! `Parts::built_bytes` is the exact check, made once the files are here.

use candle_core::quantized::GgmlDType;

use super::gguf;
use crate::error::Result;
use scalpel_types::{Kernels, Precision};

/// A model's size before download.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightEstimate {
    /// Numbers the weights hold.
    pub params: u64,
    /// Bytes of the files that will be downloaded.
    pub file_bytes: u64,
    /// Bytes the built model holds in f32 precision.
    pub f32_bytes: u64,
    /// Bytes the built model holds in quantized precision.
    pub quantized_bytes: u64,
}

impl WeightEstimate {
    pub fn built_bytes(&self, precision: Precision) -> u64 {
        match precision {
            Precision::F32 => self.f32_bytes,
            Precision::Quantized => self.quantized_bytes,
        }
    }

    /// From a Hugging Face `config.json` (the checkpoint's dtype, from
    /// `torch_dtype` or `dtype`, gives the download's size; float32 when
    /// it says none).
    pub fn from_hf_config(file: &str, json: &[u8]) -> Result<WeightEstimate> {
        let cfg = crate::arch::hf_config(file, json)?;
        let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
        let dtype = v.get("torch_dtype").or_else(|| v.get("dtype")).and_then(|d| d.as_str()).unwrap_or("float32");
        let stored = match dtype {
            "bfloat16" | "float16" => 2,
            _ => 4,
        };
        let params = cfg.weight_count();
        let (d, m, v) = (cfg.d_model as u64, cfg.d_mlp as u64, cfg.d_vocab as u64);
        let (q, kv) = (cfg.d_attn() as u64, (cfg.n_kv_heads * cfg.d_head) as u64);
        // As `Parts::built_bytes`: embeddings (and learned positions) stay
        // f32; a matrix becomes Q8_0 in quantized precision when its rows
        // are whole blocks; the unembedding, tied or not, is a Q8_0 matrix.
        let matrices = q8_or_f32(q, d) + 2 * q8_or_f32(kv, d) + q8_or_f32(d, q)
            + (if cfg.gated_mlp { 2 } else { 1 }) * q8_or_f32(m, d) + q8_or_f32(d, m);
        let matrix_params = d * q + 2 * d * kv + q * d + (if cfg.gated_mlp { 3 } else { 2 }) * d * m;
        let embed = v * d + cfg.position_count();
        let unembed = if cfg.tied_embeddings { 0 } else { v * d };
        let rest = params - embed - unembed - cfg.n_layers as u64 * matrix_params;
        let quantized_bytes = (embed + rest) * 4 + q8_or_f32(v, d) + cfg.n_layers as u64 * matrices;
        Ok(WeightEstimate { params, file_bytes: params * stored, f32_bytes: params * 4, quantized_bytes })
    }

    /// From the first bytes (`prefix`) of a `file_len`-byte GGUF file;
    /// `None` when the header goes on past them.
    pub fn from_gguf_header(file: &str, prefix: &[u8], file_len: usize) -> Result<Option<WeightEstimate>> {
        let Some(h) = gguf::header(file, prefix, file_len)? else { return Ok(None) };
        let (mut params, mut quantized_bytes, mut f32_bytes) = (0u64, 0u64, 0u64);
        let mut tied = true;
        // As `Parts::built_bytes` with the default kernels: Q4_0, Q4_1 and
        // Q8_0 blocks stay blocks in quantized precision, and in f32
        // precision where `Auto` picks the exact kernels (wasm32).
        let scalpel_blocks = |d: &GgmlDType| matches!(d, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0);
        let f32_blocks = Kernels::Auto.resolve(Precision::F32) == Kernels::Scalpel;
        for (name, dtype, shape, len) in &h.tensors {
            let elems: u64 = shape.iter().map(|&d| d as u64).product();
            params += elems;
            tied &= name != "output.weight";
            let (f, q) = match (name.as_str(), dtype) {
                // The embeddings are built in f32 (but see the tied case below).
                ("token_embd.weight" | "position_embd.weight", _) => (elems * 4, elems * 4),
                (_, GgmlDType::F32) => (elems * 4, elems * 4),
                // f16/bf16 matrices become Q8_0.
                (_, GgmlDType::F16 | GgmlDType::BF16) => (elems * 4, q8_bytes(elems)),
                (_, d) if scalpel_blocks(d) => (if f32_blocks { *len as u64 } else { elems * 4 }, *len as u64),
                _ => (elems * 4, *len as u64),
            };
            f32_bytes += f;
            quantized_bytes += q;
        }
        if tied {
            if let Some((_, dtype, shape, len)) = h.tensors.iter().find(|t| t.0 == "token_embd.weight") {
                let (elems, len) = (shape.iter().map(|&d| d as u64).product::<u64>(), *len as u64);
                if scalpel_blocks(dtype) {
                    // The unembedding keeps the blocks and the embedding's rows come from them.
                    if f32_blocks {
                        f32_bytes = f32_bytes - elems * 4 + len;
                    }
                    quantized_bytes = quantized_bytes - elems * 4 + len;
                } else {
                    // The unembedding is the embeddings' stored blocks, kept quantized.
                    quantized_bytes += len;
                }
            }
        }
        Ok(Some(WeightEstimate { params, file_bytes: file_len as u64, f32_bytes, quantized_bytes }))
    }
}

/// Bytes of `elems` numbers in Q8_0 blocks (32 values in 34 bytes).
fn q8_bytes(elems: u64) -> u64 {
    elems / GgmlDType::Q8_0.block_size() as u64 * GgmlDType::Q8_0.type_size() as u64
}

/// Bytes of a `rows × cols` matrix built in quantized precision: Q8_0 when
/// its rows are whole blocks, else f32.
fn q8_or_f32(rows: u64, cols: u64) -> u64 {
    match cols % GgmlDType::Q8_0.block_size() as u64 {
        0 => q8_bytes(rows * cols),
        _ => rows * cols * 4,
    }
}
