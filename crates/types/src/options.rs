//! How a model runs: precision, quantized-matmul kernels, sampling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that is not one of the accepted values; the message lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl From<ParseError> for String {
    fn from(e: ParseError) -> String {
        e.0
    }
}

/// How weights are held and multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every weight dequantized to f32; exact arithmetic (interpretability).
    #[default]
    F32,
    /// Matrices kept quantized (GGUF types as stored; safetensors → Q8_0);
    /// activations are rounded to 8 bits inside each matmul. Fast.
    Quantized,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Quantized];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Quantized => "quantized",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "f32" => Ok(Precision::F32),
            "quantized" | "q" => Ok(Precision::Quantized),
            other => Err(ParseError(format!("precision '{other}' is not one of: f32, quantized"))),
        }
    }
}

/// Which kernels multiply a file's quantized blocks (docs/kernels.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// Scalpel's kernels where they measured faster than candle's, else
    /// candle's; the engine resolves it at load.
    #[default]
    Auto,
    /// candle's `QMatMul` (bit-identical to candle-transformers).
    Candle,
    /// Scalpel's kernels (Q4_0, Q4_1, Q8_0; other types stay on candle):
    /// int8 activations in quantized precision, exact f32 products over the
    /// blocks in f32 precision.
    Scalpel,
}

impl Kernels {
    pub const ALL: [Kernels; 3] = [Kernels::Auto, Kernels::Candle, Kernels::Scalpel];

    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::Auto => "auto",
            Kernels::Candle => "candle",
            Kernels::Scalpel => "scalpel",
        }
    }

    /// `Auto` becomes what measured fastest at `precision` on this target
    /// (docs/kernels.md). Quantized: Scalpel's, in wasm32 (candle has no
    /// simd128 path for Q4_1 and does not tile prefill) and natively
    /// (candle's Q4_1 kernel is scalar). f32: in wasm32, Scalpel's exact
    /// kernels over the stored blocks (a fifth of the memory, and they read
    /// a fifth of the bytes); natively, candle's f32 matmul over dequantized
    /// weights (AVX2/FMA, memory is plentiful there).
    pub fn resolve(self, precision: Precision) -> Kernels {
        match (self, precision) {
            (Kernels::Auto, Precision::F32) if !cfg!(target_arch = "wasm32") => Kernels::Candle,
            (Kernels::Auto, _) => Kernels::Scalpel,
            (k, _) => k,
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kernels {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Kernels::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseError(format!("kernels '{s}' is not one of: auto, candle, scalpel")))
    }
}

/// Generation length and sampling.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax, lowest id on ties).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
    /// Stop when the model emits one of its end-of-sequence tokens.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 32, temperature: 0.0, top_k: None, top_p: None, seed: 0, stop_at_eos: true }
    }
}

impl GenerateOptions {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature {} must be a finite number >= 0", self.temperature));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top_p {p} must be in (0, 1]"));
            }
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for k in Kernels::ALL {
            assert_eq!(k.as_str().parse::<Kernels>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("f16".parse::<Precision>().unwrap_err().0.contains("f32, quantized"));
    }
}
