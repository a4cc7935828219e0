//! What every command shares: the model, input and sampling arguments,
//! loading, the input ids, an intervention document, and JSON output.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_engine::{GenerateOptions, Model, Precision};

use crate::{source, vectors};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// `default` (SmolLM2-135M-Instruct), a .gguf file, or a Hugging Face
    /// directory (config.json + tokenizer.json + *.safetensors).
    #[arg(long, default_value = "default")]
    pub model: String,
    /// f32 (exact, dequantized) or quantized (fast).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Kernels for a file's quantized blocks: auto, candle or scalpel. In f32 precision
    /// scalpel multiplies the blocks exactly in f32 (the page's default) and candle
    /// dequantizes them all (auto natively: AVX2 is faster there); docs/kernels.md.
    #[arg(long, default_value = "auto")]
    pub kernels: String,
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for tensor ops (this VM kind is fastest with 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Generation length and sampling, shared by `generate` and `monitor`.
#[derive(Args, Clone, Copy)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    pub fn options(&self, stop_at_eos: bool) -> GenerateOptions {
        let SamplingArgs { max_new_tokens, temperature, top_k, top_p, seed } = *self;
        GenerateOptions { max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos }
    }
}

#[derive(Args, Clone)]
pub struct InputArgs {
    /// Text input, tokenized with the model's own tokenizer.
    #[arg(long, conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Token ids, comma separated (e.g. 504,3458,282).
    #[arg(long)]
    pub ids: Option<String>,
    /// Wrap the prompt in the model's chat template (as a user message).
    #[arg(long)]
    pub chat: bool,
    /// An intervention document (JSON, docs/interventions.md) applied during the run.
    #[arg(long)]
    pub interventions: Option<std::path::PathBuf>,
    /// A dictionary directory (SAELens, sparsify or Gemma Scope with a
    /// cfg.json naming its hook), or a circuit-tracer layer_N.safetensors
    /// (docs/features.md), for the document's `sae_clamp` ops and `{"from": "sae"}` vectors; repeatable.
    #[arg(long)]
    pub sae: Vec<std::path::PathBuf>,
}

/// Compiles `--interventions` for this model and prompt length.
pub fn interventions(model: &Model, i: &InputArgs, prompt_len: usize) -> Result<Option<scalpel_interventions::Interventions>> {
    let Some(path) = &i.interventions else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let doc = scalpel_interventions::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (doc, saes) = vectors::resolve_doc(model, doc, &i.sae, path)?;
    let iv = scalpel_interventions::Interventions::compile_with(model, &doc, prompt_len, &saes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for w in &iv.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Some(iv))
}

pub fn report_of(iv: &Option<&mut scalpel_interventions::Interventions>) -> serde_json::Value {
    match iv {
        Some(iv) => json!({"applied": iv.report(), "warnings": iv.run_warnings()}),
        None => serde_json::Value::Null,
    }
}


pub fn set_threads(n: usize) {
    // candle sizes its thread pools from this variable; must precede any tensor work.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
}

pub fn load(m: &ModelArgs) -> Result<Model> {
    set_threads(m.threads);
    let precision: Precision = m.precision.parse()?;
    let kernels: scalpel_engine::Kernels = m.kernels.parse()?;
    let (name, files) = source::resolve(&m.model)?;
    let model = Model::load_with(&name, files.source(), precision, kernels)?;
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    Ok(model)
}

pub fn input_ids(model: &Model, i: &InputArgs) -> Result<Vec<u32>> {
    let ids = match (&i.prompt, &i.ids) {
        (Some(p), None) => {
            let text = if i.chat { model.tokenizer().apply_chat_template(&[("user", p)], true)? } else { p.clone() };
            model.tokenizer().encode(&text)?
        }
        (None, Some(s)) => {
            if i.chat {
                bail!("--chat applies to --prompt text, not to --ids");
            }
            s.split(',')
                .map(|x| x.trim())
                .filter(|x| !x.is_empty())
                .map(|x| x.parse::<u32>().with_context(|| format!("--ids: '{x}' is not a token id")))
                .collect::<Result<Vec<_>>>()?
        }
        (None, None) => bail!("give the input as --prompt TEXT or --ids 1,2,3"),
        (Some(_), Some(_)) => bail!("give either --prompt or --ids, not both"),
    };
    if ids.is_empty() {
        bail!("empty prompt: it tokenizes to no tokens");
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= model.config.d_vocab) {
        bail!("token id {bad} is out of range: the vocabulary has {} tokens", model.config.d_vocab);
    }
    Ok(ids)
}

pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

