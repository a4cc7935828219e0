//! The architectures the engine runs, one module each: how to read its
//! hyperparameters (GGUF metadata, Hugging Face `config.json`) and how its
//! tensor names map onto the shared parts layout (`load::Parts`), with any
//! row permutation. The forward pass (`model/`) reads only the `Config`.
//!
//! Adding an architecture: a new module here with its `ArchDef`, its entry
//! in `ARCHS` and its variant in `config::Arch`.

mod gemma;
mod gpt2;
mod gpt_neox;
mod llama;
mod qwen;

use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::load::gguf::Gguf;
use crate::load::parts::Parts;
use crate::load::safetensors::Store;
use crate::tokenizer::Tokenizer;
use scalpel_types::ModelSource;

/// One architecture: the names it goes by and its readers. `None`: the
/// format has no such model (e.g. GPT-2 is read from safetensors only).
pub(crate) struct ArchDef {
    pub arch: Arch,
    /// `general.architecture` values of its GGUF files.
    pub gguf_names: &'static [&'static str],
    /// `model_type` values of its `config.json`.
    pub hf_model_types: &'static [&'static str],
    pub gguf_config: Option<fn(&Gguf, &str) -> Result<Config>>,
    pub gguf_parts: Option<fn(&Config, &Gguf) -> Result<Parts>>,
    pub hf_config: fn(&str, &serde_json::Value) -> Result<Config>,
    pub hf_parts: fn(&Config, &Store) -> Result<Parts>,
}

const ARCHS: [ArchDef; 7] = [llama::DEF, gpt2::DEF, qwen::QWEN2, qwen::QWEN3, gpt_neox::DEF, gemma::GEMMA2, gemma::GEMMA3];

fn def(arch: Arch) -> &'static ArchDef {
    ARCHS.iter().find(|d| d.arch == arch).expect("every Arch is registered")
}

fn names(f: impl Fn(&ArchDef) -> &'static [&'static str]) -> String {
    let mut all: Vec<&str> = ARCHS.iter().flat_map(|d| f(d).iter().copied()).collect();
    all.sort();
    all.join(", ")
}

/// The config, tokenizer and weights (in the shared parts layout) of a
/// model file; `name` names the file in messages. Every format goes through
/// the same steps: hyperparameters, tokenizer, then tensors by role.
pub fn read(name: &str, source: ModelSource) -> Result<(Config, Tokenizer, Parts)> {
    match source {
        ModelSource::Gguf(bytes) => read_gguf(&Gguf::parse(name, bytes)?),
        ModelSource::HuggingFace { config, tokenizer, tokenizer_config, weights } => {
            let cfg = hf_config("config.json", config)?;
            let tokenizer = tokenizer.ok_or_else(|| {
                Error::load(
                    name,
                    "missing tokenizer.json: a Hugging Face model directory needs config.json, tokenizer.json and *.safetensors",
                )
            })?;
            let tokenizer = Tokenizer::from_hf_json("tokenizer.json", tokenizer, tokenizer_config)?;
            let store = Store::new(&weights)?;
            let parts = hf_parts(&cfg, &store)?;
            Ok((cfg, tokenizer, parts))
        }
    }
}

/// As [`read`], for a GGUF file read a range at a time (see
/// [`ByteSource`](crate::gguf::ByteSource)): only the header and one tensor
/// at a time are copied into memory.
pub fn read_gguf_source(name: &str, source: &dyn crate::gguf::ByteSource) -> Result<(Config, Tokenizer, Parts)> {
    read_gguf(&Gguf::parse_source(name, source)?)
}

fn read_gguf(g: &Gguf) -> Result<(Config, Tokenizer, Parts)> {
    let cfg = gguf_config(g)?;
    let tokenizer = Tokenizer::from_gguf(g)?;
    let parts = gguf_parts(&cfg, g)?;
    Ok((cfg, tokenizer, parts))
}

/// The hyperparameters of a GGUF file, from its metadata.
fn gguf_config(g: &Gguf) -> Result<Config> {
    let name = g
        .require("general.architecture")?
        .as_str()
        .ok_or_else(|| Error::load(&g.file, "general.architecture is not a string"))?;
    let read = ARCHS.iter().find(|d| d.gguf_names.contains(&name)).and_then(|d| d.gguf_config).ok_or_else(|| {
        Error::load(
            &g.file,
            format!(
                "architecture '{name}' is not supported (GGUF: {}; safetensors: {})",
                names(|d| if d.gguf_config.is_some() { d.gguf_names } else { &[] }),
                names(|d| d.hf_model_types)
            ),
        )
    })?;
    let cfg = read(g, name)?;
    cfg.validate(&g.file)?;
    Ok(cfg)
}

/// The weights of a GGUF file whose config `cfg` came from [`gguf_config`].
fn gguf_parts(cfg: &Config, g: &Gguf) -> Result<Parts> {
    let read = def(cfg.arch).gguf_parts.expect("gguf_config accepted this architecture");
    read(cfg, g)
}

/// The hyperparameters in a Hugging Face `config.json` (before any weight
/// is fetched: the page estimates memory from them).
pub fn hf_config(file: &str, json: &[u8]) -> Result<Config> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| Error::load(file, format!("not valid JSON: {e}")))?;
    let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
    if model_type.is_empty() {
        return Err(Error::load(file, "missing field 'model_type'"));
    }
    let d = ARCHS.iter().find(|d| d.hf_model_types.contains(&model_type)).ok_or_else(|| {
        Error::load(file, format!("model_type '{model_type}' is not supported (supported: {})", names(|d| d.hf_model_types)))
    })?;
    let cfg = (d.hf_config)(file, &v)?;
    cfg.validate(file)?;
    Ok(cfg)
}

/// The weights of a Hugging Face checkpoint whose config is `cfg`.
fn hf_parts(cfg: &Config, store: &Store) -> Result<Parts> {
    (def(cfg.arch).hf_parts)(cfg, store)
}

/// A size read from a file, refused (never truncated) when it does not fit
/// this platform's `usize`: on wasm32 a value over 2^32 would otherwise wrap
/// to a small one the 64-bit CLI never sees.
pub(crate) fn size(file: &str, key: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::load(file, format!("'{key}' = {v} does not fit this platform's address space")))
}

/// Reads a `config.json` field as a size.
pub(crate) fn hf_usize(file: &str, v: &serde_json::Value, key: &str) -> Result<usize> {
    hf_opt_usize(file, v, key)?.ok_or_else(|| Error::load(file, format!("missing field '{key}'")))
}

/// The rotary embedding of a Hugging Face `config.json`: its base and the
/// fraction of each head it turns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HfRope {
    pub theta: f64,
    /// `partial_rotary_factor` (1 when absent).
    pub partial: f64,
}

/// The rotary base of a Hugging Face `config.json` for an architecture that
/// turns whole heads: as [`hf_rope`], with a partial rotary factor other
/// than 1 refused.
pub(crate) fn hf_rope_theta(file: &str, v: &serde_json::Value) -> Result<f64> {
    let rope = hf_rope(file, v)?;
    if rope.partial != 1.0 {
        return Err(Error::load(file, format!("partial_rotary_factor {} is not supported for this architecture", rope.partial)));
    }
    Ok(rope.theta)
}

/// The rotary embedding of a Hugging Face `config.json`, in either form
/// transformers writes: top-level `rope_theta` (and `rope_scaling`) up to
/// version 4, `rope_parameters: {rope_theta, rope_type,
/// partial_rotary_factor}` from version 5. Absent from both, transformers'
/// own default base (10000). A scaling other than `default` (e.g.
/// `llama3`, `yarn`, `linear`) changes the numbers and is not implemented:
/// it is an error naming it, never ignored; so are two forms that disagree.
pub(crate) fn hf_rope(file: &str, v: &serde_json::Value) -> Result<HfRope> {
    let number = |x: &serde_json::Value, key: &str, at: &str| -> Result<Option<f64>> {
        match x.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(t) => match t.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
                _ => Err(Error::load(file, format!("field '{at}{key}' should be a positive number, found {t}"))),
            },
        }
    };
    let check_type = |x: &serde_json::Value, at: &str| -> Result<()> {
        if !x.is_object() {
            return Err(Error::load(file, format!("field '{at}' should be an object, found {x}")));
        }
        // transformers 4 named it `type` in older checkpoints.
        let ty = x.get("rope_type").or_else(|| x.get("type"));
        match ty.map(|t| t.as_str()) {
            None | Some(Some("default")) => Ok(()),
            Some(Some(other)) => Err(Error::load(file, format!("{at}: rope type '{other}' is not supported (only 'default' rotary embeddings are)"))),
            Some(None) => Err(Error::load(file, format!("{at}: rope type should be a string, found {}", ty.unwrap()))),
        }
    };
    let agree = |a: Option<f64>, b: Option<f64>, what: &str| -> Result<Option<f64>> {
        match (a, b) {
            (Some(a), Some(b)) if a != b => Err(Error::load(file, format!("{what} {a} (top level) and rope_parameters.{what} {b} disagree"))),
            (a, b) => Ok(b.or(a)),
        }
    };
    if let Some(scaling) = v.get("rope_scaling").filter(|r| !r.is_null()) {
        check_type(scaling, "rope_scaling")?;
    }
    let (theta, partial) = match v.get("rope_parameters").filter(|r| !r.is_null()) {
        None => (None, None),
        Some(p) => {
            check_type(p, "rope_parameters")?;
            (number(p, "rope_theta", "rope_parameters.")?, number(p, "partial_rotary_factor", "rope_parameters.")?)
        }
    };
    let theta = agree(number(v, "rope_theta", "")?, theta, "rope_theta")?.unwrap_or(10000.0);
    let partial = agree(number(v, "partial_rotary_factor", "")?, partial, "partial_rotary_factor")?.unwrap_or(1.0);
    if partial > 1.0 {
        return Err(Error::load(file, format!("partial_rotary_factor {partial} is more than 1")));
    }
    Ok(HfRope { theta, partial })
}

/// Which layers of a Hugging Face checkpoint attend through a sliding
/// window, from `layer_types` (`full_attention` / `sliding_attention`);
/// `default` when the config has no such list (older checkpoints). Empty
/// when no layer slides.
pub(crate) fn hf_layer_types(file: &str, v: &serde_json::Value, n_layers: usize, default: impl Fn(usize) -> bool) -> Result<Vec<bool>> {
    let sliding: Vec<bool> = match v.get("layer_types").filter(|x| !x.is_null()) {
        None => (0..n_layers).map(default).collect(),
        Some(serde_json::Value::Array(types)) => {
            if types.len() != n_layers {
                return Err(Error::load(file, format!("'layer_types' lists {} layers; the model has {n_layers}", types.len())));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(Error::load(file, format!("layer type {t} is not supported (full_attention, sliding_attention)"))),
                })
                .collect::<Result<_>>()?
        }
        Some(other) => return Err(Error::load(file, format!("'layer_types' should be a list, found {other}"))),
    };
    Ok(if sliding.iter().any(|&s| s) { sliding } else { Vec::new() })
}

/// Reads an optional `config.json` number (absent or null: `None`).
pub(crate) fn hf_opt_f64(file: &str, v: &serde_json::Value, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(x) => x.as_f64().filter(|f| f.is_finite()).map(Some).ok_or_else(|| Error::load(file, format!("field '{key}' should be a number, found {x}"))),
    }
}

/// Reads an optional `config.json` boolean (absent or null: `default`).
pub(crate) fn hf_bool(file: &str, v: &serde_json::Value, key: &str, default: bool) -> Result<bool> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(x) => x.as_bool().ok_or_else(|| Error::load(file, format!("field '{key}' should be true or false, found {x}"))),
    }
}

/// Reads an optional `config.json` size: absent or null is `None`; any
/// other non-integer is an error, not a silent default.
pub(crate) fn hf_opt_usize(file: &str, v: &serde_json::Value, key: &str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) => size(file, key, n).map(Some),
            None => Err(Error::load(file, format!("field '{key}' should be a non-negative integer, found {x}"))),
        },
    }
}
