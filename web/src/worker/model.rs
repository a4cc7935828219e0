//! The loaded CPU model: loading it, switching its kernels, and turning the
//! page's prompts into token ids. Every other request borrows it through
//! [`with_model`].

use super::compare;
use super::fetch;
use super::post;
use super::ModelBytes;
use crate::js::now_ms;
use crate::protocol::{Kernels, LoadedModel, ModelLocation, ModelSummary, Precision, Prompt, Response};
use scalpel_engine::{Logits, Model, PassSize, Tokenizer, WeightEstimate};
use std::cell::RefCell;

thread_local! {
    static MODEL: RefCell<Option<Model>> = const { RefCell::new(None) };
}

/// Runs `f` on the loaded model.
pub fn with_model<T>(f: impl FnOnce(&mut Model) -> Result<T, String>) -> Result<T, String> {
    MODEL.with(|m| {
        let mut m = m.borrow_mut();
        let model = m.as_mut().ok_or_else(|| "no model loaded yet".to_string())?;
        f(model)
    })
}

pub fn precision() -> Option<Precision> {
    MODEL.with(|m| m.borrow().as_ref().map(|m| m.precision))
}

pub fn is_loaded() -> bool {
    MODEL.with(|m| m.borrow().is_some())
}

/// What runs the CPU engine's matmuls, for the page.
pub fn backend(m: &Model) -> String {
    match m.precision {
        Precision::F32 => match m.kernels() {
            Kernels::Scalpel => "CPU wasm simd128 · f32 over the stored blocks (scalpel exact kernels)".to_string(),
            _ => "CPU wasm simd128 · f32 matmul (candle, weights dequantized)".to_string(),
        },
        Precision::Quantized => format!("CPU wasm simd128 · quantized kernels: {}", m.kernels()),
    }
}

pub fn set_kernels(kernels: Kernels) -> Result<(), String> {
    with_model(|m| {
        m.set_kernels(kernels).map_err(|e| e.to_string())?;
        // The cached baseline was made by the other kernels.
        compare::forget_baseline();
        post(&Response::KernelsSet { backend: backend(m) });
        Ok(())
    })
}

fn weight_budget(bytes: &ModelBytes) -> u64 {
    crate::weight_budget(bytes.byte_len() as u64)
}

/// How far into a GGUF file its header is looked for before the download:
/// 2 MB holds a 50k-token vocabulary, 16 MB the largest (262k tokens with
/// scores); a header that goes on past 64 MB waits for the whole file.
const GGUF_HEADER_PREFIXES: [usize; 3] = [2 << 20, 16 << 20, 64 << 20];

/// Before anything large is downloaded: the model's memory estimated from
/// its config.json or GGUF header, refused (saying which precision fits,
/// if one does) when its weights at `precision` would not fit beside its
/// files. Files already in the browser cache are not checked here (the
/// build checks the exact size); a header that cannot be read is left to
/// the full download, whose parse names the fault.
pub async fn check_before_download(source: &ModelLocation, precision: Precision) -> Result<(), String> {
    let label = source.label();
    let est = match source {
        ModelLocation::File { .. } => return Ok(()),
        ModelLocation::HfRepo { base } => {
            let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
            if fetch::is_cached(&format!("{base}model.safetensors")).await {
                return Ok(());
            }
            let url = format!("{base}config.json");
            let Some((config, _)) = fetch::fetch_cached_opt(&url, false, true, 1e6).await? else {
                return Err(format!("{url}: not found (is this a Hugging Face model folder?)"));
            };
            WeightEstimate::from_hf_config("config.json", &config).map_err(|e| format!("{label}: {e}"))?
        }
        ModelLocation::Gguf { url } => {
            if fetch::is_cached(url).await {
                return Ok(());
            }
            let mut found = None;
            for n in GGUF_HEADER_PREFIXES {
                let (prefix, total) = fetch::fetch_prefix(url, n).await?;
                let Some(total) = total else { return Ok(()) };
                if total as f64 > fetch::MAX_DOWNLOAD {
                    return Err(format!("{label}: the file has {:.0} MB, more than the {:.0} MB the browser build takes", total as f64 / 1e6, fetch::MAX_DOWNLOAD / 1e6));
                }
                found = WeightEstimate::from_gguf_header(&label, &prefix, total as usize).map_err(|e| e.to_string())?;
                if found.is_some() || prefix.len() as u64 >= total {
                    break;
                }
            }
            let Some(est) = found else { return Ok(()) };
            est
        }
    };
    let budget = crate::weight_budget(est.file_bytes);
    let need = est.built_bytes(precision);
    if need <= budget {
        return Ok(());
    }
    let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
    let other = match precision {
        Precision::F32 => Precision::Quantized,
        Precision::Quantized => Precision::F32,
    };
    let hint = if est.built_bytes(other) <= budget {
        format!("; in {} precision they need about {}, which fits: choose it under Precision and load again", other.as_str(), mb(est.built_bytes(other)))
    } else {
        format!(" (and about {} in {} precision): it does not fit a tab in either precision", mb(est.built_bytes(other)), other.as_str())
    };
    Err(format!(
        "{label}: its {:.0}M weights need about {} in {} precision, more than the {} a tab holds beside its {} of files{hint}. Nothing was downloaded.",
        est.params as f64 / 1e6,
        mb(need),
        precision.as_str(),
        mb(budget),
        mb(est.file_bytes)
    ))
}

/// Most bytes one forward pass may take: the last GiB of wasm32 memory
/// less room for what lives across passes (compiled interventions, the
/// tokenizer, results). A longer prompt is refused with the longest that fits.
const ACTIVATION_BUDGET: u64 = 768 << 20;

/// Err (naming the lengths and the limit) when a comparison of a prompt of
/// `prompt_len` tokens generating up to `max_new` could not run within the
/// activation budget: its generation (a cached pass up to the full length)
/// and its scoring (one pass over prompt and output, a logits row per
/// output token) are checked before anything runs.
pub fn check_fits(m: &Model, prompt_len: usize, max_new: usize) -> Result<(), String> {
    let total = (prompt_len + max_new).min(m.config.n_ctx);
    let generation = PassSize::prompt(total, Logits::Last, true);
    let scoring = PassSize::prompt(total, Logits::From(prompt_len.saturating_sub(1)), false);
    for s in [generation, scoring] {
        m.check_pass(s).map_err(|e| format!("the prompt has {prompt_len} tokens and up to {max_new} are generated: {e}"))?;
    }
    Ok(())
}

/// Builds the model from `bytes` and makes it the loaded one. The previous
/// model is dropped first, so two never share the memory: after a failure
/// no model is loaded (the caller rebuilds the previous one from its files).
pub fn load(location: &ModelLocation, bytes: &ModelBytes, precision: Precision, kernels: Kernels, fetch_ms: f64, from_cache: bool) -> Result<LoadedModel, String> {
    let name = location.label();
    MODEL.with(|m| *m.borrow_mut() = None);
    compare::forget_baseline();
    let t0 = now_ms();
    let model = bytes.load(&name, precision, kernels, Some(weight_budget(bytes))).map_err(|e| format!("{name}: {e}"))?;
    let mut model = model;
    model.set_activation_budget(Some(ACTIVATION_BUDGET));
    let load_ms = now_ms() - t0;
    let c = &model.config;
    let summary = ModelSummary {
        arch: c.arch.name().to_string(),
        n_layers: c.n_layers as u32,
        n_heads: c.n_heads as u32,
        n_kv_heads: c.n_kv_heads as u32,
        d_model: c.d_model as u32,
        d_mlp: c.d_mlp as u32,
        vocab: c.d_vocab as u32,
        n_ctx: c.n_ctx as u32,
        chat_template: model.tokenizer().chat_template.is_some(),
    };
    let loaded = LoadedModel { name, precision, bytes: bytes.byte_len() as f64, fetch_ms, load_ms, from_cache, summary, backend: backend(&model) };
    MODEL.with(|m| *m.borrow_mut() = Some(model));
    Ok(loaded)
}

/// Most characters a prompt may have (a bound on work and memory; the
/// context length bounds tokens).
const MAX_PROMPT_CHARS: usize = 20_000;

/// The prompt's token ids (wrapped in the chat template when asked).
pub fn encode(m: &Model, prompt: &Prompt) -> Result<Vec<u32>, String> {
    if prompt.text.is_empty() {
        return Err("the prompt is empty".into());
    }
    if prompt.text.len() > MAX_PROMPT_CHARS {
        return Err(format!("the prompt has {} characters; at most {MAX_PROMPT_CHARS} are accepted", prompt.text.len()));
    }
    let tok = m.tokenizer();
    let text = match prompt.chat {
        true => tok.apply_chat_template(&[("user", prompt.text.as_str())], true).map_err(|e| e.to_string())?,
        false => prompt.text.clone(),
    };
    let ids = tok.encode(&text).map_err(|e| e.to_string())?;
    if ids.len() >= m.config.n_ctx {
        return Err(format!("the prompt has {} tokens; the context length is {}", ids.len(), m.config.n_ctx));
    }
    Ok(ids)
}

pub fn plain(text: &str) -> Prompt {
    Prompt { text: text.to_string(), chat: false }
}

/// The prompt's ids and the tokenizer, for work that runs off the CPU model.
pub fn encode_with_tokenizer(prompt: &Prompt) -> Result<(Vec<u32>, Tokenizer), String> {
    with_model(|m| Ok((encode(m, prompt)?, m.tokenizer().clone())))
}
