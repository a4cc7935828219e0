//! Downloads with progress, kept in the browser's Cache API so a reload is
//! instant and works offline.

use super::{post, ModelBytes, Throttle};
use crate::js::js_err;
use crate::js::{content_length, get};
use crate::protocol::{last_segment, ModelLocation, Response};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Name of the Cache API store holding model files (bump to invalidate).
pub const CACHE_NAME: &str = "scalpel-models-v1";

pub use crate::MAX_DOWNLOAD_BYTES as MAX_DOWNLOAD;

/// Most shards an index may list (the largest hub checkpoints have a few hundred).
const MAX_SHARDS: usize = 512;

fn scope() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

thread_local! {
    /// The Hugging Face token the user pasted, for gated repositories. It
    /// lives here in the worker's memory only (never in a link, the cache
    /// or storage) and is sent only to the hub and this page's own origin,
    /// so a link naming a model elsewhere cannot collect it.
    static TOKEN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Sets the token later downloads may send (`None` forgets it).
pub fn set_token(token: Option<String>) {
    TOKEN.with(|t| *t.borrow_mut() = token.filter(|t| !t.trim().is_empty()).map(|t| t.trim().to_string()));
}

fn has_token() -> bool {
    TOKEN.with(|t| t.borrow().is_some())
}

/// Whether the token may travel to `url`: `https://huggingface.co/…`, or
/// this page's own origin.
fn token_goes_to(url: &str) -> bool {
    let here = get(&js_sys::global(), "location");
    let (href, origin) = (get(&here, "href").as_string().unwrap_or_default(), get(&here, "origin").as_string().unwrap_or_default());
    let Ok(u) = web_sys::Url::new_with_base(url, &href) else { return false };
    (u.protocol() == "https:" && u.host() == "huggingface.co") || (!origin.is_empty() && u.origin() == origin)
}

/// A GET of `url`, with the token when it may go there and `range` when given.
async fn get_url(url: &str, range: Option<&str>) -> Result<web_sys::Response, String> {
    let headers = web_sys::Headers::new().map_err(js_err)?;
    if let Some(t) = TOKEN.with(|t| t.borrow().clone()).filter(|_| token_goes_to(url)) {
        headers.set("Authorization", &format!("Bearer {t}")).map_err(js_err)?;
    }
    if let Some(r) = range {
        headers.set("Range", r).map_err(js_err)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_headers(&headers);
    let resp = JsFuture::from(scope().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| format!("could not fetch {url}: {} (network error or the server refused cross-origin access)", js_err(e)))?;
    Ok(resp.unchecked_into())
}

/// What a refused download means, for the user.
fn refused(url: &str, resp: &web_sys::Response) -> String {
    let status = resp.status();
    let why = match (status, has_token() && token_goes_to(url)) {
        (401 | 403, false) => " — the repository is gated or private: accept its terms on its Hugging Face page while signed in, then paste an access token in the Model card (\"Hugging Face token\") and load again",
        (401, true) => " — the token was not accepted (mistyped, or revoked?)",
        (403, true) => " — the token was refused: its account may not have accepted this repository's terms yet, or the token lacks read access",
        _ => "",
    };
    format!("could not fetch {url}: HTTP {status} {}{why}", resp.status_text())
}

/// The first `n` bytes of `url` (a `Range` request; a server that sends
/// the whole file is read only that far), and the file's full size when
/// the server says. Nothing is cached.
pub async fn fetch_prefix(url: &str, n: usize) -> Result<(Vec<u8>, Option<u64>), String> {
    let resp = get_url(url, Some(&format!("bytes=0-{}", n - 1))).await?;
    if !resp.ok() {
        return Err(refused(url, &resp));
    }
    let total = match resp.status() {
        206 => resp.headers().get("content-range").ok().flatten().and_then(|r| r.rsplit('/').next().and_then(|t| t.parse::<u64>().ok())),
        _ => content_length(&resp).map(|t| t as u64),
    };
    let body = resp.body().ok_or_else(|| format!("{url}: empty response body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < n {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("download of {url} failed: {}", js_err(e)))?;
        if get(&chunk, "done").as_bool() == Some(true) {
            break;
        }
        let value: js_sys::Uint8Array = get(&chunk, "value").unchecked_into();
        let take = (value.length() as usize).min(n - buf.len());
        let start = buf.len();
        buf.resize(start + take, 0);
        value.subarray(0, take as u32).copy_to(&mut buf[start..]);
    }
    let _ = reader.cancel();
    Ok((buf, total))
}

/// Whether `url` is in the model cache (no bytes read).
pub async fn is_cached(url: &str) -> bool {
    let Some(c) = cache().await else { return false };
    JsFuture::from(c.match_with_str(url)).await.is_ok_and(|hit| !hit.is_undefined() && !hit.is_null())
}

async fn cache() -> Option<web_sys::Cache> {
    let storage = scope().caches().ok()?;
    JsFuture::from(storage.open(CACHE_NAME)).await.ok().map(|c| c.unchecked_into())
}

/// Deletes the model cache; returns how many files it held.
pub async fn clear_cache() -> Result<u32, String> {
    let Ok(storage) = scope().caches() else { return Ok(0) };
    let mut n = 0;
    if let Some(c) = cache().await {
        if let Ok(keys) = JsFuture::from(c.keys()).await {
            n = js_sys::Array::from(&keys).length();
        }
    }
    JsFuture::from(storage.delete(CACHE_NAME)).await.map_err(|e| format!("could not clear the model cache: {}", js_err(e)))?;
    Ok(n)
}

/// Removes a model's files from the cache (they came from it and do not
/// make a model); whether any was there.
pub async fn evict(source: &ModelLocation, bytes: &ModelBytes) -> bool {
    let Some(c) = cache().await else { return false };
    let urls: Vec<String> = match (source, bytes) {
        (ModelLocation::Gguf { url }, _) => vec![url.clone()],
        (ModelLocation::HfRepo { base }, ModelBytes::HuggingFace(scalpel_types::ModelFiles::HuggingFace { weights, .. })) => {
            let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
            ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"]
                .into_iter()
                .map(str::to_string)
                .chain(weights.iter().map(|(name, _)| name.clone()))
                .map(|f| format!("{base}{f}"))
                .collect()
        }
        _ => vec![],
    };
    let mut any = false;
    for url in urls {
        any |= JsFuture::from(c.delete_with_str(&url)).await.ok().and_then(|v| v.as_bool()).unwrap_or(false);
    }
    any
}

/// The bytes at `url`, from the cache when held there (else fetched and
/// stored), kept in a JS `Uint8Array` outside wasm memory (a model file is
/// copied in a tensor at a time: see `model::load`). Returns whether they
/// came from the cache.
pub async fn fetch_file(url: &str, progress: bool) -> Result<(js_sys::Uint8Array, bool), String> {
    match fetch_js(url, progress, false, MAX_DOWNLOAD).await? {
        Some(x) => Ok(x),
        None => Err(format!("could not fetch {url}: not found")),
    }
}

/// As [`fetch_file`], copied into wasm memory (a buffer of exactly the
/// file's size). `optional`: a 404 is `Ok(None)` instead of an error.
/// `budget`: the bytes this file may take (what is left of the model's
/// [`MAX_DOWNLOAD`]).
pub async fn fetch_cached_opt(url: &str, progress: bool, optional: bool, budget: f64) -> Result<Option<(Vec<u8>, bool)>, String> {
    match fetch_js(url, progress, optional, budget).await? {
        Some((data, cached)) => Ok(Some((to_wasm(url, &data)?, cached))),
        None => Ok(None),
    }
}

/// A JS byte array copied into a wasm buffer of exactly its size (reserved
/// first, so a failed allocation is a message, not an abort).
pub fn to_wasm(what: &str, data: &js_sys::Uint8Array) -> Result<Vec<u8>, String> {
    let n = data.length() as usize;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(n).map_err(|_| format!("out of memory reserving {n} bytes for {what}"))?;
    buf.resize(n, 0);
    data.copy_to(&mut buf);
    Ok(buf)
}

async fn fetch_js(url: &str, progress: bool, optional: bool, budget: f64) -> Result<Option<(js_sys::Uint8Array, bool)>, String> {
    let cache = cache().await;
    if let Some(c) = &cache {
        if let Ok(hit) = JsFuture::from(c.match_with_str(url)).await {
            if !hit.is_undefined() && !hit.is_null() {
                let resp: web_sys::Response = hit.unchecked_into();
                // A damaged entry is dropped and fetched again.
                match read_cached(url, resp, progress, budget).await {
                    Ok(b) => return Ok(Some((b, true))),
                    Err(e) => {
                        web_sys::console::warn_1(&format!("cached {url} unreadable ({e}); fetching again").into());
                        let _ = JsFuture::from(c.delete_with_str(url)).await;
                    }
                }
            }
        }
    }
    let resp = get_url(url, None).await?;
    if optional && resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        return Err(refused(url, &resp));
    }
    let bytes = read_body(url, resp, progress, budget).await?;
    if let Some(c) = &cache {
        // Storing can fail (quota, non-http URL): the page still works, only
        // the next visit downloads again.
        match web_sys::Response::new_with_opt_buffer_source(Some(&bytes)) {
            Ok(r) => {
                if let Err(e) = JsFuture::from(c.put_with_str(url, &r)).await {
                    post(&Response::Notice { message: not_cached(url, &js_err(e)) });
                }
            }
            Err(e) => post(&Response::Notice { message: not_cached(url, &js_err(e)) }),
        }
    }
    Ok(Some((bytes, false)))
}

fn too_large(url: &str) -> String {
    format!("{url}: the model's files are larger than {:.0} MB, the most the browser build takes", MAX_DOWNLOAD / 1e6)
}

fn not_cached(url: &str, why: &str) -> String {
    format!("{} could not be kept in the browser's cache ({why}); the next visit downloads it again", last_segment(url))
}

/// A cache entry's bytes, read whole (the Cache API keeps no
/// Content-Length for the entries this worker stores). The entry came from
/// this origin's own writes, within `budget` when stored; its size is
/// checked again.
async fn read_cached(url: &str, resp: web_sys::Response, progress: bool, budget: f64) -> Result<js_sys::Uint8Array, String> {
    let read = resp.array_buffer().map_err(|e| format!("{url}: {}", js_err(e)))?;
    let data = js_sys::Uint8Array::new(&JsFuture::from(read).await.map_err(|e| format!("{url}: {}", js_err(e)))?);
    let n = data.length() as f64;
    if n > budget {
        return Err(format!("{} ({:.0} MB)", too_large(url), n / 1e6));
    }
    if progress {
        post(&Response::Progress { loaded: n, total: Some(n) });
    }
    Ok(data)
}

/// A response's body, streamed with progress and the size budget checked
/// as it arrives, into one JS byte array of exactly its size (never into
/// wasm memory, which never shrinks: a buffer grown chunk by chunk there
/// would leave it at up to twice the file).
async fn read_body(url: &str, resp: web_sys::Response, progress: bool, budget: f64) -> Result<js_sys::Uint8Array, String> {
    let total = content_length(&resp);
    if let Some(t) = total {
        if t > budget {
            return Err(format!("{} ({:.0} MB)", too_large(url), t / 1e6));
        }
    }
    let body = resp.body().ok_or_else(|| format!("{url}: empty response body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    if progress {
        post(&Response::Progress { loaded: 0.0, total });
    }
    let chunks = js_sys::Array::new();
    let mut len = 0usize;
    let mut throttle = Throttle::start();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("download of {url} failed: {}", js_err(e)))?;
        if get(&chunk, "done").as_bool() == Some(true) {
            break;
        }
        let value: js_sys::Uint8Array = get(&chunk, "value").unchecked_into();
        len += value.length() as usize;
        if len as f64 > budget {
            let _ = reader.cancel();
            return Err(too_large(url));
        }
        chunks.push(&value);
        if progress && throttle.due() {
            post(&Response::Progress { loaded: len as f64, total });
        }
    }
    if progress {
        post(&Response::Progress { loaded: len as f64, total });
    }
    if let Some(t) = total {
        if (len as f64) < t {
            return Err(format!("download of {url} was cut short ({len} of {t} bytes)"));
        }
    }
    let out = js_sys::Uint8Array::new_with_length(len as u32);
    let mut at = 0u32;
    for c in chunks.iter() {
        let c: js_sys::Uint8Array = c.unchecked_into();
        out.set(&c, at);
        at += c.length();
    }
    Ok(out)
}

/// A Hugging Face repository's files under `base`, together at most
/// [`MAX_DOWNLOAD`] bytes.
pub async fn fetch_hf(base: &str) -> Result<(ModelBytes, bool), String> {
    let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
    let mut got = Tally { left: MAX_DOWNLOAD, all_cached: true };
    let config = got.take(fetch_cached_opt(&format!("{base}config.json"), false, true, got.left).await?)
        .ok_or_else(|| format!("{base}config.json: not found (is this a Hugging Face model folder?)"))?;
    let tokenizer = got.take(fetch_cached_opt(&format!("{base}tokenizer.json"), false, true, got.left).await?);
    let tokenizer_config = got.take(fetch_cached_opt(&format!("{base}tokenizer_config.json"), false, true, got.left).await?);
    let mut weights = Vec::new();
    match got.take(fetch_cached_opt(&format!("{base}model.safetensors"), true, true, got.left).await?) {
        Some(b) => weights.push(("model.safetensors".to_string(), b)),
        None => {
            let index = got.take(fetch_cached_opt(&format!("{base}model.safetensors.index.json"), false, true, got.left).await?)
                .ok_or_else(|| format!("{base}: neither model.safetensors nor model.safetensors.index.json was found"))?;
            let shards = scalpel_shards(&index)?;
            if shards.len() > MAX_SHARDS {
                return Err(format!("{base}model.safetensors.index.json lists {} shards; at most {MAX_SHARDS} are read", shards.len()));
            }
            for s in shards {
                let url = format!("{base}{s}");
                let b = got.take(fetch_cached_opt(&url, true, false, got.left).await?).ok_or_else(|| format!("could not fetch {url}: not found"))?;
                weights.push((s, b));
            }
        }
    }
    Ok((ModelBytes::HuggingFace(scalpel_types::ModelFiles::HuggingFace { config, tokenizer, tokenizer_config, weights }), got.all_cached))
}

/// What a model's files have taken so far.
struct Tally {
    /// Bytes the remaining files may take.
    left: f64,
    all_cached: bool,
}

impl Tally {
    fn take(&mut self, got: Option<(Vec<u8>, bool)>) -> Option<Vec<u8>> {
        got.map(|(b, cached)| {
            self.all_cached &= cached;
            self.left -= b.len() as f64;
            b
        })
    }
}

#[cfg(feature = "engine")]
fn scalpel_shards(index: &[u8]) -> Result<Vec<String>, String> {
    scalpel_engine::shard_files(index).map_err(|e| e.to_string())
}

#[cfg(not(feature = "engine"))]
fn scalpel_shards(_: &[u8]) -> Result<Vec<String>, String> {
    Err("this worker was built without the engine".into())
}
