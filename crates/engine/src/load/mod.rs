//! Bytes → parts → model. Every format goes through the same steps: the
//! file's hyperparameters (`arch::*_config`), its tokenizer, then its
//! tensors in the shared parts layout (`arch::*_parts`), which the CPU
//! model (`Model::load`) and the GPU model build from.

pub mod gguf;
pub mod parts;
pub mod safetensors;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::ModelSource;
use crate::tokenizer::Tokenizer;
use self::parts::Parts;

/// The config, tokenizer and weights of a model file; `name` names the
/// file in messages.
pub fn read(name: &str, source: ModelSource) -> Result<(Config, Tokenizer, Parts)> {
    match source {
        ModelSource::Gguf(bytes) => {
            let g = gguf::Gguf::parse(name, bytes)?;
            let cfg = crate::arch::gguf_config(&g)?;
            let tokenizer = Tokenizer::from_gguf(&g)?;
            let parts = crate::arch::gguf_parts(&cfg, &g)?;
            Ok((cfg, tokenizer, parts))
        }
        ModelSource::HuggingFace { config, tokenizer, tokenizer_config, weights } => {
            let cfg = crate::arch::hf_config("config.json", config)?;
            let tokenizer = tokenizer.ok_or_else(|| {
                Error::load(
                    name,
                    "missing tokenizer.json: a Hugging Face model directory needs config.json, tokenizer.json and *.safetensors",
                )
            })?;
            let tokenizer = Tokenizer::from_hf_json("tokenizer.json", tokenizer, tokenizer_config)?;
            let store = safetensors::Store::new(&weights)?;
            let parts = crate::arch::hf_parts(&cfg, &store)?;
            Ok((cfg, tokenizer, parts))
        }
    }
}
