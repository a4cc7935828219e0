//! The engine worker: receives [`Request`]s, runs the engine, posts [`Response`]s.
//!
//! All model work happens here, never on the page, and all of it calls the
//! same crates as the CLI. Work is synchronous inside the engine; streaming
//! goes out with `postMessage` from callbacks, and a stop request arrives
//! through a shared `Int32Array`.
//!
//! - `fetch.rs`: model files from the network or the browser cache;
//! - `model.rs`: the loaded CPU model, prompts → ids;
//! - `compare.rs`: baseline vs intervened generation (CPU or WebGPU);
//! - `gpu.rs`: the WebGPU backend; `bench.rs`: the CPU benchmark;
//! - `readouts.rs`, `patching.rs`, `vectors.rs`: the panels' other requests;
//! - `exercise.rs`: an exercise's checks on the student's state;
//! - `features.rs`: dictionaries, latents, dashboards, the corpus pass
//!   (kept in IndexedDB through `idb.rs`).

mod fetch;
#[cfg(feature = "engine")]
mod bench;
#[cfg(feature = "engine")]
mod compare;
#[cfg(feature = "engine")]
mod exercise;
#[cfg(feature = "engine")]
mod features;
#[cfg(feature = "engine")]
mod gpu;
#[cfg(feature = "engine")]
mod idb;
#[cfg(feature = "engine")]
mod model;
#[cfg(feature = "engine")]
mod patching;
#[cfg(feature = "engine")]
mod readouts;
#[cfg(feature = "engine")]
mod vectors;

use crate::js::{get, now_ms};
use crate::protocol::{Envelope, ModelLocation, Request, Response, STOP_FLAG_INDEX};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// The files of a model while the engine (or the GPU backend) builds its
/// weights from them: wasm32 has 4 GiB, and the built weights are what
/// stays.
#[cfg(feature = "engine")]
pub enum ModelBytes {
    /// A GGUF file, kept in a JS array: the engine copies its header and one
    /// tensor at a time into wasm memory, which never shrinks (holding the
    /// whole file there would keep its size for good).
    Gguf(js_sys::Uint8Array),
    /// A Hugging Face folder's files, in wasm memory.
    HuggingFace(scalpel_types::ModelFiles<Vec<u8>>),
}

#[cfg(feature = "engine")]
impl ModelBytes {
    /// Bytes in every file.
    pub fn byte_len(&self) -> usize {
        use scalpel_engine::gguf::ByteSource;
        match self {
            ModelBytes::Gguf(f) => f.len(),
            ModelBytes::HuggingFace(files) => files.byte_len(),
        }
    }

    /// The config, tokenizer and weights (`scalpel_engine::read`).
    pub fn read(&self, name: &str) -> scalpel_engine::Result<(scalpel_engine::Config, scalpel_engine::Tokenizer, scalpel_engine::load::parts::Parts)> {
        match self {
            ModelBytes::Gguf(f) => scalpel_engine::read_gguf_source(name, f),
            ModelBytes::HuggingFace(files) => scalpel_engine::read(name, files.source()),
        }
    }

    /// The CPU model (`Model::load_within`).
    pub fn load(&self, name: &str, precision: crate::protocol::Precision, kernels: scalpel_engine::Kernels, max_bytes: Option<u64>) -> scalpel_engine::Result<scalpel_engine::Model> {
        match self {
            ModelBytes::Gguf(f) => scalpel_engine::Model::load_gguf_source(name, f, precision, kernels, max_bytes),
            ModelBytes::HuggingFace(files) => scalpel_engine::Model::load_within(name, files.source(), precision, kernels, max_bytes),
        }
    }
}

#[derive(Default)]
struct State {
    stop: Option<js_sys::Int32Array>,
    /// Where the loaded model's files can be read again and how it was
    /// built: a precision change, the GPU backend and the rebuild after a
    /// failed load read them from there.
    loaded: Option<Loaded>,
}

#[derive(Clone)]
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
struct Loaded {
    source: ModelLocation,
    /// The local file the page sent (a handle outside wasm memory); None
    /// for a URL or repository, read again from the browser cache.
    file: Option<web_sys::Blob>,
    precision: crate::protocol::Precision,
    kernels: crate::protocol::Kernels,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// The size of this worker's `WebAssembly.Memory` in bytes (it only
/// grows, so this is the worker's high-water mark).
pub fn wasm_memory_bytes() -> u64 {
    let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
    js_sys::Reflect::get(&memory.buffer(), &"byteLength".into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u64
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

/// Whether the page asked to stop the current work.
#[cfg_attr(not(feature = "engine"), allow(dead_code))]
pub fn stop_requested() -> bool {
    STATE.with(|s| {
        s.borrow()
            .stop
            .as_ref()
            .is_some_and(|a| js_sys::Atomics::load(a, STOP_FLAG_INDEX).unwrap_or(0) != 0)
    })
}

thread_local! {
    /// This thread is the engine's own (the one [`start`] ran on), not a
    /// kernels' helper thread of the threaded build: only it talks to the page.
    static ENGINE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Longest panic text sent to the page (a message can quote user input).
const MAX_PANIC_TEXT: usize = 2000;

/// A panic goes to the console, as `console_error_panic_hook` writes it,
/// and, on the engine's thread, to the page (`Response::Panicked`) before
/// the trap ends the worker: the trap's error event says only
/// "unreachable", and the page's crash notice quotes this instead. A panic
/// on a helper thread reaches the page through the engine thread's own
/// (`gang`'s "a kernel helper thread stopped…").
fn set_panic_hook() {
    ENGINE_THREAD.with(|t| t.set(true));
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        if ENGINE_THREAD.with(|t| t.get()) {
            // "panicked at FILE:LINE:COL:\nMESSAGE" on one line.
            let mut message = info.to_string().replace('\n', " ");
            if message.len() > MAX_PANIC_TEXT {
                let cut = (0..=MAX_PANIC_TEXT).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
                message.truncate(cut);
                message.push('…');
            }
            post(&Response::Panicked { message });
        }
    }));
}

pub fn start() {
    set_panic_hook();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        let data = ev.data();
        let stop = get(&data, Envelope::STOP);
        if !stop.is_undefined() && !stop.is_null() {
            let arr = js_sys::Int32Array::new(&stop);
            STATE.with(|s| s.borrow_mut().stop = Some(arr));
        }
        let file = get(&data, Envelope::FILE);
        let file = (!file.is_undefined() && !file.is_null()).then_some(file);
        match serde_wasm_bindgen::from_value::<Request>(get(&data, Envelope::REQ)) {
            Ok(req) => wasm_bindgen_futures::spawn_local(async move {
                match handle(req, file).await {
                    Ok(()) => {}
                    // Work the user stopped before it produced anything (compiling a document, reading prompt sets).
                    #[cfg(feature = "engine")]
                    Err(message) if message == scalpel_interventions::STOPPED => post(&Response::Cancelled),
                    Err(message) => post(&Response::Error { message }),
                }
            }),
            Err(e) => post(&Response::Error { message: format!("worker: bad request: {e}") }),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    post(&Response::Ready { engine: cfg!(feature = "engine"), threads: kernel_threads(), threads_note: threads_note() });
}

/// The threaded build's entry point: `worker_loader.js` calls it once the
/// kernels' helper threads have joined (`kernel_helper`).
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn start_worker() {
    start()
}

/// The threaded build's compiled module and shared memory, for the helper
/// threads to instantiate (`public/worker_helper.js`).
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn kernel_module() -> JsValue {
    wasm_bindgen::module()
}
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn kernel_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// Threads the kernels use now: this one and the helpers that have joined.
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn kernel_threads_joined() -> u32 {
    kernel_threads()
}

/// A helper thread's life: takes pieces of the kernels' products. Never
/// returns (`public/worker_helper.js` calls it last).
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn kernel_helper() {
    #[cfg(target_feature = "atomics")]
    scalpel_engine::kernel_helper_loop();
}

/// `public/worker_helper.js` calls it when `kernel_helper` threw (the helper
/// trapped): the product waiting for that helper's piece then panics instead
/// of waiting for good, and the page restarts the worker.
#[cfg(feature = "threads")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn kernel_helper_died() {
    #[cfg(target_feature = "atomics")]
    scalpel_engine::kernel_helper_died();
}
fn kernel_threads() -> u32 {
    #[cfg(feature = "engine")]
    return scalpel_engine::kernel_threads() as u32;
    #[cfg(not(feature = "engine"))]
    1
}

/// Why the threaded build did not start, as `worker_loader.js` left it.
fn threads_note() -> Option<String> {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("scalpelThreadsFailed")).ok().and_then(|v| v.as_string())
}

/// Answers one request. Without the engine (feature `engine`) only the
/// plumbing (Ping, ClearCache) works.
async fn handle(req: Request, file: Option<JsValue>) -> Result<(), String> {
    match req {
        Request::Ping { text } => {
            post(&Response::Pong { text });
            Ok(())
        }
        Request::ClearCache => {
            let entries = fetch::clear_cache().await?;
            post(&Response::CacheCleared { entries });
            Ok(())
        }
        #[cfg(not(feature = "engine"))]
        _ => {
            let _ = file;
            Err("this worker was built without the engine (feature `engine`)".into())
        }
        #[cfg(feature = "engine")]
        other => engine_request(other, file).await,
    }
}

#[cfg(feature = "engine")]
async fn engine_request(req: Request, file: Option<JsValue>) -> Result<(), String> {
    match req {
        Request::Ping { .. } | Request::ClearCache => unreachable!("handled by `handle`"),
        Request::SetKernels { kernels } => model::set_kernels(kernels),
        Request::Load { source, precision, kernels, token } => {
            let t0 = now_ms();
            fetch::set_token(token);
            if let Err(message) = model::check_before_download(&source, precision).await {
                post(&Response::LoadFailed { message, kept: model::is_loaded() });
                return Ok(());
            }
            // The loaded model's own files (a precision change) made a model before.
            let rebuilt = file.is_none() && loaded().is_some_and(|l| l.source == source);
            let file = file.map(|f| f.unchecked_into::<web_sys::Blob>());
            // The previous model stays loaded until the new files are here,
            // so a mistyped URL does not cost the user their model.
            let (bytes, from_cache, file) = match files_for(&source, file).await {
                Ok(b) => b,
                Err(message) => {
                    post(&Response::LoadFailed { message, kept: model::is_loaded() });
                    return Ok(());
                }
            };
            // The GPU holds the previous model's weights: it is started again on request.
            gpu::stop();
            let built = model::load(&source, &bytes, precision, kernels, now_ms() - t0, from_cache);
            match built {
                Ok(loaded) => {
                    drop(bytes);
                    STATE.with(|s| s.borrow_mut().loaded = Some(Loaded { source, file, precision, kernels }));
                    post(&Response::Loaded(Box::new(loaded)));
                }
                Err(mut message) => {
                    // Files that do not make a model are not kept: the next try downloads them again.
                    if from_cache && !rebuilt && fetch::evict(&source, &bytes).await {
                        message.push_str(" (the cached copy was removed)");
                    }
                    drop(bytes);
                    post(&Response::LoadFailed { message, kept: rebuild_previous().await });
                }
            }
            Ok(())
        }
        Request::Compare { prompt, sampling, doc, top_k, gpu } => compare::compare(&prompt, &sampling, &doc, top_k, gpu).await,
        Request::Patch { spec } => patching::patch(&spec),
        Request::Check { state } => exercise::check(&state),
        Request::Lens { prompt, doc, target } => readouts::lens(&prompt, &doc, &target),
        Request::Attention { prompt, doc } => readouts::attention(&prompt, &doc),
        Request::Dla { prompt, doc, answer, wrong } => readouts::dla(&prompt, &doc, &answer, &wrong),
        Request::Neuron { layer, neuron, top_k, prompt } => readouts::neuron(layer, neuron, top_k, &prompt),
        Request::Separation { positive, negative, site, method } => vectors::separation(&positive, &negative, &site, &method),
        Request::ImportControlVector { name } => {
            let bytes = sent_bytes(file).await?.ok_or("no file was sent with the control vector")?;
            vectors::import_control_vector(&name, &bytes)
        }
        Request::Bench { prompt_tokens, decode_tokens, rounds } => bench::run(prompt_tokens, decode_tokens, rounds),
        Request::BenchThreads { prompt_tokens, decode_tokens, runs } => bench::run_threads(prompt_tokens, decode_tokens, runs),
        Request::LoadDictionary { source } => features::load(source, file).await,
        Request::Features { prompt, top_k } => features::features(&prompt, top_k),
        Request::Dashboard { latent } => features::dashboard_of(latent),
        Request::SearchLatents { text } => features::search(&text),
        Request::CorpusPass => features::corpus_pass().await,
        Request::GpuInit { allow_software } => {
            let l = loaded().ok_or("no model loaded yet")?;
            compare::forget_baseline();
            let (bytes, _, _) = files_for(&l.source, l.file).await?;
            gpu::init(&l.source.label(), &bytes, allow_software).await
        }
        Request::GpuRun { prompt, max_new_tokens, top_k } => gpu::run(&prompt, max_new_tokens, top_k).await,
        Request::GpuBench { prompt_tokens, decode_tokens, rounds } => gpu::bench(prompt_tokens, decode_tokens, rounds).await,
    }
}

#[cfg(feature = "engine")]
fn loaded() -> Option<Loaded> {
    STATE.with(|s| s.borrow().loaded.clone())
}

/// Builds the model that was loaded before a failed load, reading its
/// files again, quietly (the page keeps showing it). Whether there is one.
#[cfg(feature = "engine")]
async fn rebuild_previous() -> bool {
    let Some(prev) = loaded() else { return false };
    let built = match files_for(&prev.source, prev.file).await {
        Ok((bytes, _, _)) => model::load(&prev.source, &bytes, prev.precision, prev.kernels, 0.0, true).map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = built {
        web_sys::console::error_1(&format!("could not rebuild the previous model: {e}").into());
        STATE.with(|s| s.borrow_mut().loaded = None);
        return false;
    }
    true
}

/// The bytes of a file the page sent (a `File`/`Blob` or an `ArrayBuffer`),
/// in wasm memory.
#[cfg(feature = "engine")]
async fn sent_bytes(file: Option<JsValue>) -> Result<Option<Vec<u8>>, String> {
    match sent_file(file).await? {
        Some(data) => Ok(Some(fetch::to_wasm("the file", &data)?)),
        None => Ok(None),
    }
}

/// The bytes of a file the page sent, in a JS array.
#[cfg(feature = "engine")]
async fn sent_file(file: Option<JsValue>) -> Result<Option<js_sys::Uint8Array>, String> {
    let Some(f) = file else { return Ok(None) };
    let buf = match f.dyn_into::<web_sys::Blob>() {
        Ok(blob) => wasm_bindgen_futures::JsFuture::from(blob.array_buffer()).await.map_err(|e| format!("could not read the file: {}", crate::js::js_err(e)))?,
        Err(buf) => buf,
    };
    Ok(Some(js_sys::Uint8Array::new(&buf)))
}

/// The files at `source`, read into wasm memory: a local file from the
/// `file` the page sent (or the loaded model's), else fetched (from the
/// browser cache when possible). Returns whether every file came from the
/// cache, and the local file to read again later.
#[cfg(feature = "engine")]
async fn files_for(source: &ModelLocation, file: Option<web_sys::Blob>) -> Result<(ModelBytes, bool, Option<web_sys::Blob>), String> {
    Ok(match source {
        ModelLocation::Gguf { url } => {
            let (b, cached) = fetch::fetch_file(url, true).await?;
            (ModelBytes::Gguf(b), cached, None)
        }
        ModelLocation::File { name } => {
            let file = file.or_else(|| loaded().filter(|l| &l.source == source).and_then(|l| l.file));
            let file = file.ok_or_else(|| format!("{name}: the file was not sent (pick it again)"))?;
            let b = sent_file(Some(file.clone().into())).await.map_err(|e| format!("{name}: {e}"))?.unwrap_or_else(|| js_sys::Uint8Array::new_with_length(0));
            (ModelBytes::Gguf(b), false, Some(file))
        }
        ModelLocation::HfRepo { base } => {
            let (b, cached) = fetch::fetch_hf(base).await?;
            (b, cached, None)
        }
    })
}

/// Posts progress at most every 100 ms.
pub struct Throttle(f64);
impl Throttle {
    pub fn start() -> Self {
        Throttle(now_ms())
    }
    pub fn due(&mut self) -> bool {
        let t = now_ms();
        if t - self.0 > 100.0 {
            self.0 = t;
            true
        } else {
            false
        }
    }
}
