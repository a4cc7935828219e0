//! The engine worker: receives [`Request`]s, runs the engine, posts [`Response`]s.
//!
//! All model work happens here, never on the page. Work is synchronous
//! inside the engine; streaming goes out with `postMessage` from the token
//! callback, and a stop request arrives through a shared `Int32Array`.

use crate::js::{get, js_err, now_ms};
use crate::protocol::{Envelope, Request, Response, STOP_FLAG_INDEX};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// The model bytes are kept so a precision change reloads without refetching.
struct Bytes {
    url: String,
    data: Rc<Vec<u8>>,
}

#[derive(Default)]
struct State {
    stop: Option<js_sys::Int32Array>,
    bytes: Option<Bytes>,
    #[cfg(feature = "engine")]
    model: Option<Rc<scalpel_engine::Model>>,
    #[cfg(feature = "engine")]
    precision: Option<crate::protocol::Precision>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

pub fn post(r: &Response) {
    match serde_wasm_bindgen::to_value(r) {
        Ok(v) => {
            if let Err(e) = scope().post_message(&v) {
                web_sys::console::error_1(&e);
            }
        }
        Err(e) => web_sys::console::error_1(&JsValue::from_str(&e.to_string())),
    }
}

#[cfg_attr(not(feature = "engine"), allow(dead_code))]
fn stop_requested() -> bool {
    STATE.with(|s| {
        s.borrow()
            .stop
            .as_ref()
            .is_some_and(|a| js_sys::Atomics::load(a, STOP_FLAG_INDEX).unwrap_or(0) != 0)
    })
}

pub fn start() {
    console_error_panic_hook::set_once();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        let data = ev.data();
        let stop = get(&data, Envelope::STOP);
        if !stop.is_undefined() && !stop.is_null() {
            let arr = js_sys::Int32Array::new(&stop);
            STATE.with(|s| s.borrow_mut().stop = Some(arr));
        }
        match serde_wasm_bindgen::from_value::<Request>(get(&data, Envelope::REQ)) {
            Ok(req) => wasm_bindgen_futures::spawn_local(async move {
                if let Err(message) = handle(req).await {
                    post(&Response::Error { message });
                }
            }),
            Err(e) => post(&Response::Error { message: format!("worker: bad request: {e}") }),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    post(&Response::Ready { engine: cfg!(feature = "engine") });
}

async fn handle(req: Request) -> Result<(), String> {
    match req {
        Request::Ping { text } => {
            post(&Response::Pong { text });
            Ok(())
        }
        Request::Load { url, precision } => {
            let t0 = now_ms();
            let data = bytes_for(&url).await?;
            let fetch_ms = now_ms() - t0;
            engine::load(&url, data, precision, fetch_ms)
        }
        Request::TopK { prompt, k } => engine::top_k(&prompt, k),
        Request::Generate { prompt, sampling } => engine::generate(&prompt, &sampling),
        Request::Bench { prompt_tokens, decode_tokens, rounds } => engine::bench(prompt_tokens, decode_tokens, rounds),
    }
}

/// The bytes at `url`: the held copy if it is the same URL, else a fresh fetch.
async fn bytes_for(url: &str) -> Result<Rc<Vec<u8>>, String> {
    let held = STATE.with(|s| {
        s.borrow().bytes.as_ref().filter(|b| b.url == url).map(|b| b.data.clone())
    });
    if let Some(d) = held {
        return Ok(d);
    }
    // Drop the old model and bytes first: memory is the tight resource.
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.bytes = None;
        #[cfg(feature = "engine")]
        {
            s.model = None;
        }
    });
    let data = Rc::new(fetch_with_progress(url).await?);
    STATE.with(|s| s.borrow_mut().bytes = Some(Bytes { url: url.to_string(), data: data.clone() }));
    Ok(data)
}

/// Largest download we accept (wasm32 memory is 4 GiB and the model needs room).
const MAX_DOWNLOAD: f64 = 2.0e9;

async fn fetch_with_progress(url: &str) -> Result<Vec<u8>, String> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| format!("could not fetch {url}: {}", js_err(e)))?;
    let resp: web_sys::Response = resp.unchecked_into();
    if !resp.ok() {
        return Err(format!("could not fetch {url}: HTTP {} {}", resp.status(), resp.status_text()));
    }
    let total = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<f64>().ok());
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
    post(&Response::Progress { loaded: 0.0, total });
    let mut last = now_ms();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| format!("download of {url} failed: {}", js_err(e)))?;
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
        let t = now_ms();
        if t - last > 100.0 {
            last = t;
            post(&Response::Progress { loaded: buf.len() as f64, total });
        }
    }
    post(&Response::Progress { loaded: buf.len() as f64, total });
    if let Some(t) = total {
        if (buf.len() as f64) < t {
            return Err(format!("download of {url} was cut short ({} of {t} bytes)", buf.len()));
        }
    }
    Ok(buf)
}

#[cfg(not(feature = "engine"))]
mod engine {
    use crate::protocol::{Precision, Sampling};
    use std::rc::Rc;

    const NO_ENGINE: &str = "this worker was built without the engine (feature `engine`)";

    pub fn load(_: &str, _: Rc<Vec<u8>>, _: Precision, _: f64) -> Result<(), String> {
        Err(NO_ENGINE.into())
    }
    pub fn top_k(_: &str, _: u32) -> Result<(), String> {
        Err(NO_ENGINE.into())
    }
    pub fn generate(_: &str, _: &Sampling) -> Result<(), String> {
        Err(NO_ENGINE.into())
    }
    pub fn bench(_: u32, _: u32, _: u32) -> Result<(), String> {
        Err(NO_ENGINE.into())
    }
}

#[cfg(feature = "engine")]
mod engine {
    use super::{post, stop_requested, STATE};
    use crate::js::now_ms;
    use crate::protocol::{Precision, Response, Sampling, TokenLogit};
    use scalpel_engine as se;
    use std::rc::Rc;

    fn e(err: impl std::fmt::Display) -> String {
        err.to_string()
    }

    fn model() -> Result<Rc<se::Model>, String> {
        STATE
            .with(|s| s.borrow().model.clone())
            .ok_or_else(|| "no model loaded yet".to_string())
    }

    fn name_of(url: &str) -> String {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        path.rsplit('/').next().unwrap_or(path).to_string()
    }

    pub fn load(url: &str, data: Rc<Vec<u8>>, precision: Precision, fetch_ms: f64) -> Result<(), String> {
        let name = name_of(url);
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.model = None;
            s.precision = None;
        });
        let t0 = now_ms();
        let p = match precision {
            Precision::F32 => se::Precision::F32,
            Precision::Quantized => se::Precision::Quantized,
        };
        let model = se::Model::load(&name, se::ModelSource::Gguf(data.as_ref().clone()), p)
            .map_err(|err| format!("{name}: {err}"))?;
        let load_ms = now_ms() - t0;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.model = Some(Rc::new(model));
            s.precision = Some(precision);
        });
        post(&Response::Loaded { name, precision, bytes: data.len() as f64, fetch_ms, load_ms });
        Ok(())
    }

    fn encode(m: &se::Model, prompt: &str) -> Result<Vec<u32>, String> {
        if prompt.is_empty() {
            return Err("the prompt is empty".into());
        }
        m.tokenizer().encode(prompt).map_err(e)
    }

    pub fn top_k(prompt: &str, k: u32) -> Result<(), String> {
        let m = model()?;
        let ids = encode(&m, prompt)?;
        let top = m.next_token_top_k(&ids, k as usize).map_err(e)?;
        let top = top
            .into_iter()
            .map(|(id, logit)| TokenLogit { id, text: m.tokenizer().decode(&[id]), logit })
            .collect();
        post(&Response::TopK { prompt_ids: ids, top });
        Ok(())
    }

    pub fn generate(prompt: &str, s: &Sampling) -> Result<(), String> {
        let m = model()?;
        let prompt_ids = encode(&m, prompt)?;
        let opts = se::GenerateOptions {
            max_new_tokens: s.max_new_tokens as usize,
            temperature: s.temperature,
            top_k: s.top_k.map(|k| k as usize),
            top_p: s.top_p,
            seed: s.seed,
            stop_at_eos: true,
        };
        let t0 = now_ms();
        let mut first_ms: Option<f64> = None;
        let mut ids: Vec<u32> = Vec::new();
        let mut stopped = false;
        let mut on_token = |id: u32| -> bool {
            let t = now_ms();
            let t1 = *first_ms.get_or_insert(t);
            ids.push(id);
            let n = ids.len() as u32;
            let tok_s = if n > 1 { (n - 1) as f64 / ((t - t1) / 1e3) } else { 0.0 };
            post(&Response::Token { id, text: m.tokenizer().decode(&ids), n, tok_s });
            if stop_requested() {
                stopped = true;
                return false;
            }
            true
        };
        se::generate(&m, &prompt_ids, &opts, None, &mut on_token).map_err(e)?;
        let t_end = now_ms();
        let first_token_ms = first_ms.map(|t| t - t0).unwrap_or(0.0);
        let decode_tok_s = match (first_ms, ids.len()) {
            (Some(t1), n) if n > 1 => (n - 1) as f64 / ((t_end - t1) / 1e3),
            _ => 0.0,
        };
        let text = m.tokenizer().decode(&ids);
        post(&Response::Done { prompt_ids, ids, text, stopped, first_token_ms, decode_tok_s });
        Ok(())
    }

    /// Mirrors `ours()` in crates/cli/src/bench.rs, so the numbers compare.
    pub fn bench(prompt_tokens: u32, decode_tokens: u32, rounds: u32) -> Result<(), String> {
        let m = model()?;
        let precision = STATE.with(|s| s.borrow().precision).unwrap_or(Precision::F32);
        if rounds == 0 || prompt_tokens == 0 {
            return Err("bench: rounds and prompt tokens must be at least 1".into());
        }
        let base = m.tokenizer().encode(crate::protocol::BENCH_SEED_TEXT).map_err(e)?;
        let prompt: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens as usize).collect();
        if prompt.len() + decode_tokens as usize + 1 > m.config.n_ctx {
            return Err(format!("bench: prompt + decode tokens exceed the context length {}", m.config.n_ctx));
        }
        let last = |logits: se::Tensor| -> Result<u32, String> {
            Ok(se::argmax(&logits.flatten_all().map_err(e)?.to_vec1::<f32>().map_err(e)?))
        };
        let (mut pre, mut dec) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t0 = now_ms();
            let mut cache = se::KvCache::new(&m.config);
            let x = m.ids_tensor(&prompt).map_err(e)?;
            let mut next = last(m.forward(&x, Some(&mut cache), None, se::Logits::Last).map_err(e)?)?;
            pre.push(prompt.len() as f64 / ((now_ms() - t0) / 1e3));
            let t1 = now_ms();
            for _ in 0..decode_tokens {
                let x = m.ids_tensor(&[next]).map_err(e)?;
                next = last(m.forward(&x, Some(&mut cache), None, se::Logits::Last).map_err(e)?)?;
            }
            dec.push(decode_tokens as f64 / ((now_ms() - t1) / 1e3));
        }
        post(&Response::Bench {
            precision,
            prompt_tokens,
            decode_tokens,
            rounds,
            prefill_tok_s: median(pre),
            decode_tok_s: median(dec),
        });
        Ok(())
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
}
