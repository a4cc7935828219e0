//! Downloads with progress, kept in the browser's Cache API so a reload is
//! instant and works offline.

use super::{post, ModelBytes, Throttle};
use crate::js::js_err;
use crate::js::get;
use crate::protocol::Response;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Name of the Cache API store holding model files (bump to invalidate).
pub const CACHE_NAME: &str = "scalpel-models-v1";

/// Largest single file we accept (wasm32 memory is 4 GiB and the model needs room).
const MAX_DOWNLOAD: f64 = 2.0e9;

fn scope() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
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

/// The bytes at `url`, from the cache when held there (else fetched and
/// stored). Returns whether they came from the cache. `optional`: a 404 is
/// `Ok(None)` instead of an error.
pub async fn fetch_cached(url: &str, progress: bool) -> Result<(Vec<u8>, bool), String> {
    match fetch_cached_opt(url, progress, false).await? {
        Some(x) => Ok(x),
        None => Err(format!("could not fetch {url}: not found")),
    }
}

async fn fetch_cached_opt(url: &str, progress: bool, optional: bool) -> Result<Option<(Vec<u8>, bool)>, String> {
    let cache = cache().await;
    if let Some(c) = &cache {
        if let Ok(hit) = JsFuture::from(c.match_with_str(url)).await {
            if !hit.is_undefined() && !hit.is_null() {
                let resp: web_sys::Response = hit.unchecked_into();
                // A damaged entry is dropped and fetched again.
                match read_body(url, resp, progress).await {
                    Ok(b) => return Ok(Some((b, true))),
                    Err(e) => {
                        web_sys::console::warn_1(&format!("cached {url} unreadable ({e}); fetching again").into());
                        let _ = JsFuture::from(c.delete_with_str(url)).await;
                    }
                }
            }
        }
    }
    let resp = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| format!("could not fetch {url}: {} (network error or the server refused cross-origin access)", js_err(e)))?;
    let resp: web_sys::Response = resp.unchecked_into();
    if optional && resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        return Err(format!("could not fetch {url}: HTTP {} {}", resp.status(), resp.status_text()));
    }
    let mut bytes = read_body(url, resp, progress).await?;
    if let Some(c) = &cache {
        // Storing can fail (quota, non-http URL): the page still works, only
        // the next visit downloads again.
        match web_sys::Response::new_with_opt_u8_array(Some(bytes.as_mut_slice())) {
            Ok(r) => {
                if let Err(e) = JsFuture::from(c.put_with_str(url, &r)).await {
                    web_sys::console::warn_1(&format!("could not cache {url}: {}", js_err(e)).into());
                }
            }
            Err(e) => web_sys::console::warn_1(&e),
        }
    }
    Ok(Some((bytes, false)))
}

async fn read_body(url: &str, resp: web_sys::Response, progress: bool) -> Result<Vec<u8>, String> {
    let total = resp.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<f64>().ok());
    if let Some(t) = total {
        if t > MAX_DOWNLOAD {
            return Err(format!("{url} is {:.0} MB; the browser build takes at most {:.0} MB", t / 1e6, MAX_DOWNLOAD / 1e6));
        }
    }
    let body = resp.body().ok_or_else(|| format!("{url}: empty response body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut buf: Vec<u8> = Vec::new();
    if let Some(t) = total {
        buf.try_reserve_exact(t as usize).map_err(|_| format!("out of memory reserving {t} bytes for {url}"))?;
    }
    if progress {
        post(&Response::Progress { loaded: 0.0, total });
    }
    let mut throttle = Throttle::start();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("download of {url} failed: {}", js_err(e)))?;
        if get(&chunk, "done").as_bool() == Some(true) {
            break;
        }
        let value: js_sys::Uint8Array = get(&chunk, "value").unchecked_into();
        let n = value.length() as usize;
        let start = buf.len();
        if (start + n) as f64 > MAX_DOWNLOAD {
            return Err(format!("{url} is larger than {:.0} MB", MAX_DOWNLOAD / 1e6));
        }
        buf.try_reserve(n).map_err(|_| format!("out of memory downloading {url}"))?;
        buf.resize(start + n, 0);
        value.copy_to(&mut buf[start..]);
        if progress && throttle.due() {
            post(&Response::Progress { loaded: buf.len() as f64, total });
        }
    }
    if progress {
        post(&Response::Progress { loaded: buf.len() as f64, total });
    }
    if let Some(t) = total {
        if (buf.len() as f64) < t {
            return Err(format!("download of {url} was cut short ({} of {t} bytes)", buf.len()));
        }
    }
    Ok(buf)
}

/// A Hugging Face repository's files under `base`.
pub async fn fetch_hf(base: &str) -> Result<(ModelBytes, bool), String> {
    let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
    let mut all_cached = true;
    let get_file = |name: &'static str| {
        let url = format!("{base}{name}");
        async move { fetch_cached_opt(&url, false, true).await }
    };
    let (config, c) = get_file("config.json").await?.ok_or_else(|| format!("{base}config.json: not found (is this a Hugging Face model folder?)"))?;
    all_cached &= c;
    let tokenizer = get_file("tokenizer.json").await?.map(|(b, c)| {
        all_cached &= c;
        Rc::from(b)
    });
    let tokenizer_config = get_file("tokenizer_config.json").await?.map(|(b, c)| {
        all_cached &= c;
        Rc::from(b)
    });
    let mut weights = Vec::new();
    match fetch_cached_opt(&format!("{base}model.safetensors"), true, true).await? {
        Some((b, c)) => {
            all_cached &= c;
            weights.push(("model.safetensors".to_string(), Rc::from(b)));
        }
        None => {
            let (index, c) = fetch_cached_opt(&format!("{base}model.safetensors.index.json"), false, true)
                .await?
                .ok_or_else(|| format!("{base}: neither model.safetensors nor model.safetensors.index.json was found"))?;
            all_cached &= c;
            let shards = scalpel_shards(&index)?;
            for s in shards {
                let (b, c) = fetch_cached(&format!("{base}{s}"), true).await?;
                all_cached &= c;
                weights.push((s, Rc::from(b)));
            }
        }
    }
    Ok((ModelBytes::HuggingFace { config: Rc::from(config), tokenizer, tokenizer_config, weights }, all_cached))
}

#[cfg(feature = "engine")]
fn scalpel_shards(index: &[u8]) -> Result<Vec<String>, String> {
    scalpel_engine::shard_files(index).map_err(|e| e.to_string())
}

#[cfg(not(feature = "engine"))]
fn scalpel_shards(_: &[u8]) -> Result<Vec<String>, String> {
    Err("this worker was built without the engine".into())
}
