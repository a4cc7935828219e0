//! The architectures the engine runs, one module each: how to read its
//! hyperparameters (GGUF metadata, Hugging Face `config.json`) and how its
//! tensor names map onto the shared parts layout (`load::Parts`), with any
//! row permutation. The forward pass (`model/`) reads only the `Config`.
//!
//! Adding an architecture: a new module here with its `ArchDef`, its entry
//! in `ARCHS` and its variant in `config::Arch`.

mod gpt2;
mod llama;

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

const ARCHS: [ArchDef; 2] = [llama::DEF, gpt2::DEF];

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
        ModelSource::Gguf(bytes) => {
            let g = Gguf::parse(name, bytes)?;
            let cfg = gguf_config(&g)?;
            let tokenizer = Tokenizer::from_gguf(&g)?;
            let parts = gguf_parts(&cfg, &g)?;
            Ok((cfg, tokenizer, parts))
        }
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

/// The hyperparameters in a Hugging Face `config.json`.
fn hf_config(file: &str, json: &[u8]) -> Result<Config> {
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

/// The rotary base of a Hugging Face `config.json`, in either form
/// transformers writes: top-level `rope_theta` (and `rope_scaling`) up to
/// version 4, `rope_parameters: {rope_theta, rope_type}` from version 5.
/// Absent from both, transformers' own default (10000). A scaling other
/// than `default` (e.g. `llama3`, `yarn`, `linear`) changes the numbers and
/// is not implemented: it is an error naming it, never ignored; so are two
/// forms that disagree.
pub(crate) fn hf_rope_theta(file: &str, v: &serde_json::Value) -> Result<f64> {
    let theta_of = |x: &serde_json::Value, at: &str| -> Result<Option<f64>> {
        match x.get("rope_theta") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(t) => match t.as_f64() {
                Some(f) if f.is_finite() && f > 0.0 => Ok(Some(f)),
                _ => Err(Error::load(file, format!("field '{at}rope_theta' should be a positive number, found {t}"))),
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
            None | Some(Some("default")) => {}
            Some(Some(other)) => return Err(Error::load(file, format!("{at}: rope type '{other}' is not supported (only 'default' rotary embeddings are)"))),
            Some(None) => return Err(Error::load(file, format!("{at}: rope type should be a string, found {}", ty.unwrap()))),
        }
        match x.get("partial_rotary_factor").map(|f| f.as_f64()) {
            None | Some(Some(1.0)) => Ok(()),
            Some(f) => Err(Error::load(file, format!("{at}: partial_rotary_factor {f:?} is not supported for this architecture"))),
        }
    };
    let top = theta_of(v, "")?;
    if let Some(scaling) = v.get("rope_scaling").filter(|r| !r.is_null()) {
        check_type(scaling, "rope_scaling")?;
    }
    let nested = match v.get("rope_parameters").filter(|r| !r.is_null()) {
        None => None,
        Some(p) => {
            check_type(p, "rope_parameters")?;
            theta_of(p, "rope_parameters.")?
        }
    };
    match (top, nested) {
        (Some(a), Some(b)) if a != b => Err(Error::load(file, format!("rope_theta {a} and rope_parameters.rope_theta {b} disagree"))),
        (a, b) => Ok(b.or(a).unwrap_or(10000.0)),
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
