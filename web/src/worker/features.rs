//! The Features panel's requests: one dictionary at a time (checked against
//! the loaded model), its latents on a prompt, latent dashboards and
//! search, and the corpus pass, whose index is kept in IndexedDB per model,
//! dictionary and corpus. Every number comes from `scalpel_dictionaries`
//! and `scalpel_experiments::features`, as in `scalpel features`.

use std::cell::RefCell;
use std::sync::Arc;

use scalpel_dictionaries::corpus::{corpus_windows, index_corpus, CorpusIndex};
use scalpel_dictionaries::features::prompt_features;
use scalpel_dictionaries::{DictFiles, Sae};
use scalpel_engine::Model;
use scalpel_experiments::features::{dashboard, search_token, splice};
use wasm_bindgen::{JsCast, JsValue};

use super::fetch::{fetch_cached_opt, MAX_DOWNLOAD};
use super::model::{encode, with_model};
use super::{idb, post, Throttle};
use crate::js::now_ms;
use crate::protocol::{
    CorpusStatus, DictLocation, DictionaryInfo, Prompt, Response, CORPUS_CONTEXTS, CORPUS_URL, CORPUS_WINDOW_TOKENS,
};

/// The weights files a dictionary folder may hold, in the order a URL
/// folder is probed (docs/features.md).
const WEIGHTS: [&str; 4] = ["sae_weights.safetensors", "sae.safetensors", "params.safetensors", "params.npz"];
/// Largest cfg.json read.
const MAX_CFG: f64 = 1e6;
/// Most latents a search lists; the dashboard's vocabulary lists.
const MATCHES: usize = 20;
const VOCAB_TOP: usize = 12;
/// Windows between saves of a running corpus pass.
const SAVE_EVERY: usize = 64;

struct Dict {
    sae: Arc<Sae>,
    /// Names the dictionary's bytes (source, size, sampled content) for the corpus cache.
    key: String,
}

struct Corpus {
    key: String,
    windows: Vec<Vec<u32>>,
    index: CorpusIndex,
}

thread_local! {
    static DICT: RefCell<Option<Dict>> = const { RefCell::new(None) };
    static CORPUS: RefCell<Option<Corpus>> = const { RefCell::new(None) };
}

/// The loaded dictionary, for documents that name its latents (`sae_clamp`, `{"from": "sae"}`).
pub fn saes() -> Vec<Arc<Sae>> {
    DICT.with(|d| d.borrow().as_ref().map(|d| vec![d.sae.clone()]).unwrap_or_default())
}

fn with_dict<T>(f: impl FnOnce(&mut Model, &Sae, &str) -> Result<T, String>) -> Result<T, String> {
    let (sae, key) = DICT
        .with(|d| d.borrow().as_ref().map(|d| (d.sae.clone(), d.key.clone())))
        .ok_or("no dictionary loaded: load one in the Features panel first")?;
    with_model(|m| {
        // The model may have changed since the dictionary was loaded.
        sae.point(m)?;
        sae.point_out(m)?;
        f(m, &sae, &key)
    })
}

/// The layer file of a circuit-tracer set that the hook field names:
/// `layer_6.safetensors`, `layer_6`, `6`, or another `*.safetensors` name
/// its config.yaml lists.
fn circuit_tracer_file(label: &str, field: Option<&str>) -> Result<String, String> {
    let f = field.ok_or_else(|| format!("{label} is a circuit-tracer transcoder set (config.yaml): name the layer's file in the Hook field, e.g. layer_6.safetensors"))?;
    let name = if f.bytes().all(|b| b.is_ascii_digit()) {
        format!("layer_{f}.safetensors")
    } else if f.ends_with(".safetensors") {
        f.to_string()
    } else {
        format!("{f}.safetensors")
    };
    let stem = &name[..name.len() - ".safetensors".len()];
    if stem.is_empty() || stem.len() > 100 || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') || stem.contains("..") {
        return Err(format!("{label}: '{f}' is not a layer file name (layer_6.safetensors)"));
    }
    Ok(name)
}

/// A short content key: the length, then 64-bit words sampled every 64 KiB (FNV-1a).
fn sample_key(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    for chunk in bytes.chunks(1 << 16) {
        mix(&chunk[..chunk.len().min(64)]);
    }
    format!("{}:{h:016x}", bytes.len())
}

pub async fn load(source: DictLocation, file: Option<JsValue>) -> Result<(), String> {
    let label = source.label();
    let (folder, hook, files) = match &source {
        DictLocation::Url { base, hook } => {
            let base = if base.ends_with('/') { base.clone() } else { format!("{base}/") };
            let folder = crate::protocol::last_segment(&base);
            let mut files = Vec::new();
            let mut hook = hook.clone();
            if let Some((b, _)) = fetch_cached_opt(&format!("{base}cfg.json"), false, true, MAX_CFG).await? {
                files.push(("cfg.json".to_string(), b));
            }
            // No cfg.json: a circuit-tracer set has a config.yaml instead.
            let yaml = if files.is_empty() { fetch_cached_opt(&format!("{base}config.yaml"), false, true, MAX_CFG).await? } else { None };
            if let Some((b, _)) = yaml {
                // A circuit-tracer transcoder set: the field names the layer's file.
                let file = circuit_tracer_file(&label, hook.take().as_deref())?;
                files.push(("config.yaml".to_string(), b));
                let (w, _) = fetch_cached_opt(&format!("{base}{file}"), true, true, MAX_DOWNLOAD)
                    .await?
                    .ok_or_else(|| format!("{label}: the transcoder set has no {file} (at {base}{file})"))?;
                files.push((file, w));
            } else {
                for name in WEIGHTS {
                    if let Some((b, _)) = fetch_cached_opt(&format!("{base}{name}"), true, true, MAX_DOWNLOAD).await? {
                        files.push((name.to_string(), b));
                        break;
                    }
                }
                if !files.iter().any(|(n, _)| n != "cfg.json") {
                    return Err(format!("{label}: none of {}, nor a circuit-tracer config.yaml, was found in the folder {base}", WEIGHTS.join(", ")));
                }
            }
            (folder, hook, files)
        }
        DictLocation::Files { folder, names, hook } => {
            let list: js_sys::Array = file.ok_or("no files were sent with the dictionary")?.dyn_into().map_err(|_| "the dictionary's files were not sent as a list")?;
            if list.length() as usize != names.len() || names.len() > 4 {
                return Err(format!("{} files named, {} sent (at most 4)", names.len(), list.length()));
            }
            let mut files = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let bytes = super::sent_bytes(Some(list.get(i as u32))).await?.unwrap_or_default();
                files.push((name.clone(), bytes));
            }
            (folder.clone(), hook.clone(), files)
        }
    };
    let mut df = DictFiles { folder: &folder, hook: hook.as_deref(), ..Default::default() };
    let circuit_tracer = files.iter().any(|(n, _)| n == "config.yaml");
    for (name, bytes) in &files {
        let b = Some(bytes.as_slice());
        match name.as_str() {
            "cfg.json" => df.cfg_json = b,
            "sae_weights.safetensors" => df.sae_weights_safetensors = b,
            "sae.safetensors" => df.sae_safetensors = b,
            "params.npz" => df.params_npz = b,
            "params.safetensors" => df.params_safetensors = b,
            "config.yaml" => df.config_yaml = b,
            other if circuit_tracer && other.ends_with(".safetensors") && df.layer_file.is_none() => df.layer_file = Some((other, bytes)),
            other => {
                return Err(format!(
                    "{other}: not a dictionary file (expected {}; or a circuit-tracer config.yaml with one layer_N.safetensors)",
                    scalpel_dictionaries::FILE_NAMES.join(", ")
                ))
            }
        }
    }
    let sae = Sae::load_files(&label, &df)?;
    let key = format!("{label}|{}", files.iter().map(|(n, b)| format!("{n}={}", sample_key(b))).collect::<Vec<_>>().join(","));
    drop(files);
    with_model(|m| {
        sae.point(m)?;
        sae.point_out(m)?;
        Ok(())
    })?;
    let info = DictionaryInfo {
        name: label,
        format: serde_json::to_value(sae.format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        architecture: match (sae.arch, sae.relu) {
            (scalpel_dictionaries::SaeArch::Standard, _) => "standard (ReLU)".into(),
            (scalpel_dictionaries::SaeArch::JumpRelu, true) => "JumpReLU".into(),
            (scalpel_dictionaries::SaeArch::JumpRelu, false) => "JumpReLU (no ReLU: a negative value above its threshold stays)".into(),
            (scalpel_dictionaries::SaeArch::TopK(k), true) => format!("TopK, k = {k}"),
            (scalpel_dictionaries::SaeArch::TopK(k), false) => format!("TopK, k = {k} (no ReLU: the k largest, negative or not)"),
            (scalpel_dictionaries::SaeArch::GroupMax(k), _) => format!("group max, k = {k}"),
        },
        hook: sae.hook_name.clone(),
        hook_out: sae.hook_name_out.clone(),
        d_in: sae.d_in,
        d_out: sae.d_out,
        d_sae: sae.d_sae,
        notes: sae.notes.clone(),
    };
    DICT.with(|d| *d.borrow_mut() = Some(Dict { sae: Arc::new(sae), key }));
    // The corpus findings were another dictionary's.
    CORPUS.with(|c| *c.borrow_mut() = None);
    super::compare::forget_baseline();
    post(&Response::DictionaryLoaded(Box::new(info)));
    Ok(())
}

pub fn features(prompt: &Prompt, top_k: u32) -> Result<(), String> {
    with_dict(|m, sae, _| {
        let ids = encode(m, prompt)?;
        let (mut report, _) = prompt_features(m, sae, &ids, top_k.clamp(1, 64) as usize)?;
        report.splice = Some(splice(m, sae, &ids).map_err(|e| e.to_string())?);
        post(&Response::Features(Box::new(report)));
        Ok(())
    })
}

/// The corpus findings, when the pass ran for this model and dictionary.
fn with_corpus<T>(key: &str, f: impl FnOnce(Option<(&[Vec<u32>], &CorpusIndex)>) -> T) -> T {
    CORPUS.with(|c| {
        let c = c.borrow();
        match c.as_ref().filter(|c| c.key == key) {
            Some(c) => f(Some((&c.windows, &c.index))),
            None => f(None),
        }
    })
}

pub fn dashboard_of(latent: u32) -> Result<(), String> {
    with_dict(|m, sae, dict_key| {
        let key = corpus_key(m, dict_key);
        let d = with_corpus(&key, |c| dashboard(m, sae, latent as usize, VOCAB_TOP, c)).map_err(|e| e.to_string())?;
        post(&Response::Dashboard(Box::new(d)));
        Ok(())
    })
}

pub fn search(text: &str) -> Result<(), String> {
    with_dict(|m, sae, dict_key| {
        let id = scalpel_experiments::readouts::first_token(m, "search", text).map_err(|e| e.to_string())?;
        let key = corpus_key(m, dict_key);
        let found = with_corpus(&key, |c| search_token(m, sae, id, MATCHES, c)).map_err(|e| e.to_string())?;
        post(&Response::LatentSearch(Box::new(found)));
        Ok(())
    })
}

/// Names what a corpus index depends on: the model (and how it computes),
/// the dictionary, the corpus and the pass's settings.
fn corpus_key(m: &Model, dict_key: &str) -> String {
    let model = super::loaded().map(|l| l.source.label()).unwrap_or_default();
    format!(
        "v1|{model}|{}|{}|{dict_key}|{CORPUS_URL}|{CORPUS_WINDOW_TOKENS}|{CORPUS_CONTEXTS}",
        m.precision.as_str(),
        super::model::backend(m)
    )
}

fn status(c: &Corpus, cached: bool, seconds: f64, tokens_read: u64) -> CorpusStatus {
    CorpusStatus {
        windows: c.index.windows,
        windows_total: c.index.windows_total,
        tokens: c.index.tokens,
        complete: c.index.complete(),
        cached,
        seconds,
        tokens_per_second: if seconds > 0.0 { tokens_read as f64 / seconds } else { 0.0 },
    }
}

pub async fn corpus_pass() -> Result<(), String> {
    let key = with_dict(|m, _, dict_key| Ok(corpus_key(m, dict_key)))?;
    let in_memory = CORPUS.with(|c| c.borrow().as_ref().filter(|c| c.key == key).map(|c| c.index.complete()));
    if in_memory == Some(true) {
        CORPUS.with(|c| post(&Response::CorpusIndexed(Box::new(status(c.borrow().as_ref().unwrap(), true, 0.0, 0)))));
        return Ok(());
    }
    if in_memory.is_none() {
        let (text, _) = fetch_cached_opt(CORPUS_URL, false, false, 16e6).await?.ok_or("the corpus was not found")?;
        let text = String::from_utf8(text).map_err(|_| format!("{CORPUS_URL} is not UTF-8 text"))?;
        let (windows, d_sae) = with_dict(|m, sae, _| Ok((corpus_windows(m, &text, CORPUS_WINDOW_TOKENS as usize)?, sae.d_sae)))?;
        // A cached index (complete, or stopped part-way) is used only if it fits.
        let cached = match idb::get(&key).await {
            Ok(Some(bytes)) => match CorpusIndex::from_bytes(&bytes) {
                Ok(ix) if ix.d_sae == d_sae && ix.windows_total == windows.len() => Some(ix),
                Ok(_) => None,
                Err(e) => {
                    post(&Response::Notice { message: format!("{e}; computing it again") });
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                post(&Response::Notice { message: format!("the browser's IndexedDB is not available ({e}); the corpus pass will not be kept") });
                None
            }
        };
        let from_cache = cached.is_some();
        let index = match cached {
            Some(ix) => ix,
            None => CorpusIndex::new(d_sae, CORPUS_CONTEXTS as usize, windows.len())?,
        };
        let complete = index.complete();
        CORPUS.with(|c| *c.borrow_mut() = Some(Corpus { key: key.clone(), windows, index }));
        if from_cache && complete {
            CORPUS.with(|c| post(&Response::CorpusIndexed(Box::new(status(c.borrow().as_ref().unwrap(), true, 0.0, 0)))));
            return Ok(());
        }
    }
    // Compute (or resume) in chunks, each in the model's borrow, saving the
    // index after each: a worker that is ended to stop it (a page without
    // SharedArrayBuffer) or that crashes loses at most one chunk.
    let t0 = now_ms();
    let tokens_before = CORPUS.with(|c| c.borrow().as_ref().map(|c| c.index.tokens).unwrap_or(0));
    let mut throttle = Throttle::start();
    loop {
        let chunk_end = CORPUS.with(|c| c.borrow().as_ref().map(|c| c.index.windows + SAVE_EVERY)).unwrap_or(0);
        with_dict(|m, sae, _| {
            CORPUS.with(|c| {
                let mut c = c.borrow_mut();
                let c = c.as_mut().ok_or("the corpus was not read")?;
                let mut progress = |done: usize, total: usize| {
                    if throttle.due() {
                        post(&Response::Work { done: done as u32, total: total as u32 });
                    }
                    done < chunk_end && !super::stop_requested()
                };
                index_corpus(m, sae, &c.windows, &mut c.index, &mut progress).map(|_| ())
            })
        })?;
        let (bytes, done) = CORPUS.with(|c| {
            let c = c.borrow();
            let c = c.as_ref().unwrap();
            (c.index.to_bytes(), c.index.complete())
        });
        if let Err(e) = idb::put(&key, &bytes).await {
            post(&Response::Notice { message: format!("the corpus pass could not be kept in IndexedDB ({e}); it is computed again next visit") });
        }
        if done || super::stop_requested() {
            break;
        }
    }
    let seconds = (now_ms() - t0) / 1e3;
    let st = CORPUS.with(|c| {
        let c = c.borrow();
        let c = c.as_ref().unwrap();
        status(c, false, seconds, c.index.tokens - tokens_before)
    });
    post(&Response::CorpusIndexed(Box::new(st)));
    Ok(())
}
