//! Turns `--model` into bytes for the engine: the default model, a GGUF file,
//! or a Hugging Face directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use scalpel_engine::{shard_files, ModelFiles};

/// A model's files, read into memory.
pub type Files = ModelFiles<Vec<u8>>;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the set-up puts the default model: `$SCALPEL_MODEL_DIR`, else the
/// `models/` folder of the checkout this binary was built from, else
/// `models/` under the current directory or one of its parents.
pub fn default_model_path() -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("SCALPEL_MODEL_DIR") {
        candidates.push(PathBuf::from(dir).join(DEFAULT_MODEL_FILE));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(DEFAULT_MODEL_FILE));
    if let Ok(mut dir) = std::env::current_dir() {
        loop {
            candidates.push(dir.join("models").join(DEFAULT_MODEL_FILE));
            if !dir.pop() {
                break;
            }
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or(c));
        }
        tried.push(c.display().to_string());
    }
    bail!(
        "the default model {DEFAULT_MODEL_FILE} was not found (looked in: {}). \
         Fetch it with `cargo xtask fetch-model`, set SCALPEL_MODEL_DIR, or pass --model FILE.gguf",
        tried.join(", ")
    )
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Returns a display name and the files.
pub fn resolve(model: &str) -> Result<(String, Files)> {
    let path = if model == "default" { default_model_path()? } else { PathBuf::from(model) };
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    if path.is_dir() {
        return hf_dir(&path);
    }
    Ok((path.display().to_string(), ModelFiles::Gguf(read(&path)?)))
}

fn hf_dir(dir: &Path) -> Result<(String, Files)> {
    let name = dir.display().to_string();
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        bail!("{name}: not a model directory (no config.json); pass a .gguf file or a directory with config.json, tokenizer.json and *.safetensors");
    }
    let opt = |f: &str| -> Result<Option<Vec<u8>>> {
        let p = dir.join(f);
        if p.is_file() { Ok(Some(read(&p)?)) } else { Ok(None) }
    };
    let shards = match opt("model.safetensors.index.json")? {
        Some(index) => shard_files(&index)?,
        None if dir.join("model.safetensors").is_file() => vec!["model.safetensors".to_owned()],
        None => bail!("{name}: no model.safetensors (or model.safetensors.index.json) in the directory"),
    };
    let mut weights = Vec::new();
    for s in shards {
        let path = dir.join(&s);
        weights.push((path.display().to_string(), read(&path)?));
    }
    Ok((
        name,
        ModelFiles::HuggingFace {
            config: read(&config_path)?,
            tokenizer: opt("tokenizer.json")?,
            tokenizer_config: opt("tokenizer_config.json")?,
            weights,
        },
    ))
}
