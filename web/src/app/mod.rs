//! The page. Owns no model: every model operation is a [`Request`] to the
//! worker, and the results come back as typed [`Response`]s.

mod panels;
mod stack;
mod widgets;

use crate::js::{cross_origin_isolated, js_err, now_ms};
use crate::protocol::{
    Envelope, LaneResult, ModelSource, ModelSummary, PatchOutcome, Precision, Request, Response, STOP_FLAG_INDEX,
};
use crate::state::{presets, Panel, Shared};
use crate::{DEFAULT_MODEL_URL, WORKER_SCRIPT};
use leptos::prelude::*;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker};

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// What the page is doing; mirrored in `data-state` on `<main>` for tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Starting,
    Downloading,
    Loading,
    Ready,
    Busy,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Downloading => "downloading",
            Phase::Loading => "loading",
            Phase::Ready => "ready",
            Phase::Busy => "busy",
            Phase::Failed => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub precision: Precision,
    pub bytes: f64,
    pub fetch_ms: f64,
    pub load_ms: f64,
    pub from_cache: bool,
    pub summary: ModelSummary,
    pub backend: String,
}

/// A lane while it streams.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Stream {
    pub ids: Vec<u32>,
    pub text: String,
    pub tok_s: f64,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Comparison {
    pub baseline: Stream,
    pub intervened: Stream,
    pub prompt_tokens: Vec<String>,
    pub result_baseline: Option<LaneResult>,
    pub result_intervened: Option<LaneResult>,
    pub report: Vec<crate::protocol::ItemSummary>,
    pub warnings: Vec<String>,
    /// What ran it (CPU engine and kernels, or WebGPU and its adapter).
    pub backend: String,
    pub done: bool,
    pub stopped: bool,
    /// performance.now() when the first token of this comparison arrived.
    pub first_token_at: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub precision: Precision,
    pub backend: String,
    pub prompt_tokens: u32,
    pub decode_tokens: u32,
    pub rounds: u32,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// The worker, the shared stop flag, and the request queue: one request is
/// in flight; a newer one waits (replacing any older waiting one) and, if the
/// running one can be stopped, stops it.
struct Engine {
    worker: Option<Worker>,
    stop: Option<js_sys::Int32Array>,
    stop_buffer: Option<JsValue>,
    stop_sent: bool,
    in_flight: Option<&'static str>,
    pending: Option<(Request, Option<JsValue>)>,
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::Ping { .. } => "ping",
        Request::Load { .. } => "load",
        Request::SetKernels { .. } => "kernels",
        Request::ClearCache => "clear-cache",
        Request::TopK { .. } => "top-k",
        Request::Generate { .. } => "generate",
        Request::Compare { .. } => "compare",
        Request::Patch { .. } => "patch",
        Request::Lens { .. } => "lens",
        Request::Attention { .. } => "attention",
        Request::Dla { .. } => "dla",
        Request::Neuron { .. } => "neuron",
        Request::Separation { .. } => "separation",
        Request::ImportControlVector { .. } => "control-vector",
        Request::SaeLatent { .. } => "sae",
        Request::Bench { .. } => "bench",
        Request::GpuInit { .. } => "gpu-init",
        Request::GpuRun { .. } => "gpu-run",
        Request::GpuBench { .. } => "bench",
    }
}

fn stoppable(kind: &str) -> bool {
    matches!(kind, "compare" | "patch" | "generate" | "gpu-run")
}

impl Engine {
    fn post(&mut self, req: &Request, file: Option<&JsValue>) -> Result<(), String> {
        let worker = self.worker.as_ref().ok_or("the engine worker is not running")?;
        let env = js_sys::Object::new();
        let v = serde_wasm_bindgen::to_value(req).map_err(|e| e.to_string())?;
        js_sys::Reflect::set(&env, &Envelope::REQ.into(), &v).map_err(js_err)?;
        if let Some(f) = file {
            js_sys::Reflect::set(&env, &Envelope::FILE.into(), f).map_err(js_err)?;
        }
        if !self.stop_sent {
            if let Some(buf) = &self.stop_buffer {
                js_sys::Reflect::set(&env, &Envelope::STOP.into(), buf).map_err(js_err)?;
            }
            self.stop_sent = true;
        }
        self.set_stop(0);
        worker.post_message(&env).map_err(js_err)?;
        self.in_flight = Some(kind(req));
        Ok(())
    }

    fn set_stop(&self, v: i32) {
        if let Some(a) = &self.stop {
            let _ = js_sys::Atomics::store(a, STOP_FLAG_INDEX, v);
        }
    }
}

/// Everything the panels share.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub st: RwSignal<Shared>,
    pub phase: RwSignal<Phase>,
    pub status: RwSignal<String>,
    pub error: RwSignal<Option<String>>,
    pub info: RwSignal<Option<ModelInfo>>,
    pub progress: RwSignal<(f64, Option<f64>, f64)>,
    pub busy_with: RwSignal<Option<&'static str>>,
    pub comparison: RwSignal<Comparison>,
    pub patch: RwSignal<Option<PatchOutcome>>,
    pub work: RwSignal<(u32, u32)>,
    pub lens: RwSignal<Option<Response>>,
    pub attention: RwSignal<Option<Response>>,
    pub dla: RwSignal<Option<Response>>,
    pub neuron: RwSignal<Option<Response>>,
    pub separation: RwSignal<Option<(u32, Response)>>,
    pub bench: RwSignal<Option<BenchResult>>,
    pub embed: bool,
    pub auto_run: RwSignal<bool>,
    engine: StoredValue<Engine, LocalStorage>,
    /// Which stack item asked for a separation scan / control vector import.
    pub asking_item: RwSignal<Option<u32>>,
    /// What the last comparison was sent for, so an unchanged state is not re-run.
    last_compare: StoredValue<String>,
    /// The WebGPU backend once started: the `GpuReady` message.
    pub gpu: RwSignal<Option<Response>>,
    pub gpu_result: RwSignal<Option<Response>>,
    /// Run comparisons on the WebGPU backend (once it is started).
    pub use_gpu: RwSignal<bool>,
    /// Models loaded so far (drives the first run of the open panel).
    loads: RwSignal<u32>,
    /// The model loaded before the current load request.
    prev_info: StoredValue<Option<ModelInfo>>,
    /// performance.now() of the page's first generated token.
    first_token_page: RwSignal<Option<f64>>,
}

impl Ctx {
    /// Queue a request (see [`Engine`]).
    pub fn send(self, req: Request) {
        self.send_with(req, None)
    }

    pub fn send_with(self, req: Request, file: Option<JsValue>) {
        self.error.set(None);
        let k = kind(&req);
        let r = self
            .engine
            .try_update_value(|e| {
                if let Some(running) = e.in_flight {
                    if stoppable(running) {
                        e.set_stop(1);
                    }
                    e.pending = Some((req, file));
                    Ok(false)
                } else {
                    e.post(&req, file.as_ref()).map(|_| true)
                }
            })
            .unwrap_or(Err("engine gone".into()));
        match r {
            Ok(true) => self.started(k),
            Ok(false) => self.status.set("Waiting for the current work to stop…".into()),
            Err(msg) => {
                self.error.set(Some(msg));
                self.phase.set(Phase::Failed);
            }
        }
    }

    fn started(self, k: &'static str) {
        self.busy_with.set(Some(k));
        if k == "load" {
            self.phase.set(Phase::Downloading);
        } else if self.phase.get_untracked() != Phase::Failed || self.info.get_untracked().is_some() {
            self.phase.set(Phase::Busy);
        }
        match k {
            "compare" => {
                self.comparison.set(Comparison::default());
                self.status.set("Generating (baseline, then intervened)…".into());
            }
            "patch" => {
                self.work.set((0, 0));
                self.status.set("Patching sweep running…".into());
            }
            "bench" => self.status.set("Benchmarking…".into()),
            _ => self.status.set("Working…".into()),
        }
    }

    /// The current request ended: start the waiting one, if any.
    fn finished(self) {
        self.busy_with.set(None);
        let next = self.engine.try_update_value(|e| {
            e.in_flight = None;
            e.pending.take()
        });
        if let Some(Some((req, file))) = next {
            let k = kind(&req);
            let r = self.engine.try_update_value(|e| e.post(&req, file.as_ref())).unwrap_or(Err("engine gone".into()));
            match r {
                Ok(()) => self.started(k),
                Err(msg) => self.error.set(Some(msg)),
            }
        } else if self.phase.get_untracked() != Phase::Failed {
            self.phase.set(if self.info.get_untracked().is_some() { Phase::Ready } else { Phase::Failed });
        }
    }

    pub fn stop(self) {
        let has_flag = self.engine.with_value(|e| e.stop.is_some());
        if has_flag {
            self.engine.with_value(|e| e.set_stop(1));
            self.status.set("Stopping…".into());
        } else {
            self.error.set(Some("Stop needs cross-origin isolation (serve with `cargo xtask serve`)".into()));
        }
    }

    pub fn ready(self) -> bool {
        self.info.get().is_some() && !matches!(self.phase.get(), Phase::Downloading | Phase::Loading | Phase::Starting)
    }

    pub fn busy(self, k: &str) -> bool {
        self.busy_with.get() == Some(k)
    }

    pub fn model_source(self) -> ModelSource {
        self.st.with_untracked(|s| s.model.clone()).unwrap_or(ModelSource::Gguf { url: DEFAULT_MODEL_URL.into() })
    }

    pub fn load(self, source: ModelSource, precision: Precision, file: Option<JsValue>) {
        // Kept in case the worker reports that the old model survived a failed load.
        let prev = self.info.get_untracked();
        self.prev_info.set_value(prev);
        self.info.set(None);
        self.comparison.set(Comparison::default());
        self.patch.set(None);
        self.progress.set((0.0, None, now_ms()));
        self.status.set(format!("Loading {} ({})…", source.label(), precision.as_str()));
        let kernels = self.st.with_untracked(|s| s.kernels);
        self.send_with(Request::Load { source, precision, kernels }, file);
    }

    pub fn n_layers(self) -> u32 {
        self.info.with(|i| i.as_ref().map(|i| i.summary.n_layers).unwrap_or(30))
    }

    pub fn document(self) -> Option<String> {
        match self.st.with_untracked(|s| s.document()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error.set(Some(e));
                None
            }
        }
    }

    /// The comparison request for the current state (its document may be invalid).
    fn compare_request(self) -> Result<Request, String> {
        let doc = self.st.with_untracked(|s| s.document())?;
        let (prompt, sampling) = self.st.with_untracked(|s| (crate::protocol::Prompt { text: s.prompt.clone(), chat: s.chat }, s.sampling.clone()));
        let gpu = self.use_gpu.get_untracked() && self.gpu.with_untracked(|g| g.is_some());
        Ok(Request::Compare { prompt, sampling, doc, top_k: 8, gpu })
    }

    fn send_compare(self, req: Request) {
        self.last_compare.set_value(compare_key(&req));
        self.send(req);
    }

    pub fn run_compare(self) {
        match self.compare_request() {
            Ok(req) => self.send_compare(req),
            Err(e) => self.error.set(Some(e)),
        }
    }

    /// Re-runs the comparison only if its inputs changed since the last one.
    fn rerun_compare_if_changed(self) {
        let Ok(req) = self.compare_request() else { return };
        if compare_key(&req) != self.last_compare.get_value() {
            self.send_compare(req);
        }
    }
}

fn compare_key(r: &Request) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

fn location_hash() -> String {
    web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default()
}

fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The state in the link (`#s=…`), or the default with a message on a bad link.
fn initial_state() -> (Shared, Option<String>) {
    let hash = location_hash();
    let mut st = Shared::default();
    let mut err = None;
    if let Some(enc) = hash.strip_prefix("#s=") {
        match Shared::decode(enc) {
            Ok(s) => st = s,
            Err(e) => err = Some(format!("This link could not be opened: {e}. Showing the defaults instead.")),
        }
    } else if !hash.is_empty() && hash != "#" {
        err = Some("This link could not be opened: its fragment is not a Scalpel state (#s=…). Showing the defaults instead.".into());
    }
    if let Some(p) = query_param("precision").and_then(|p| Precision::parse(&p)) {
        st.precision = p;
    }
    if let Some(k) = query_param("kernels").and_then(|k| crate::protocol::Kernels::parse(&k)) {
        st.kernels = k;
    }
    if let Some(p) = query_param("preset") {
        match presets().into_iter().find(|x| x.id == p) {
            Some(x) => st = x.state,
            None => err = Some(format!("There is no preset called '{}'.", p.chars().take(40).collect::<String>())),
        }
    }
    if let Some(p) = query_param("panel") {
        if let Some(panel) = Panel::ALL.into_iter().find(|x| x.id() == p) {
            st.panel = panel;
        }
    }
    (st, err)
}

/// The page's URL for `st` (embed adds `embed=1`).
pub fn link_for(st: &Shared, embed: bool) -> String {
    let loc = web_sys::window().map(|w| w.location());
    let origin = loc.as_ref().and_then(|l| l.origin().ok()).unwrap_or_default();
    let path = loc.as_ref().and_then(|l| l.pathname().ok()).unwrap_or_else(|| "/".into());
    let q = if embed { "?embed=1" } else { "" };
    format!("{origin}{path}{q}#s={}", st.encode())
}

pub fn copy_text(text: &str) -> bool {
    match web_sys::window() {
        Some(w) => {
            let _ = w.navigator().clipboard().write_text(text);
            true
        }
        None => false,
    }
}

#[component]
fn App() -> impl IntoView {
    let (initial, link_error) = initial_state();
    let embed = query_param("embed").as_deref() == Some("1");
    let ctx = Ctx {
        st: RwSignal::new(initial),
        phase: RwSignal::new(Phase::Starting),
        status: RwSignal::new("Starting the engine worker…".into()),
        error: RwSignal::new(None),
        info: RwSignal::new(None),
        progress: RwSignal::new((0.0, None, now_ms())),
        busy_with: RwSignal::new(None),
        comparison: RwSignal::new(Comparison::default()),
        patch: RwSignal::new(None),
        work: RwSignal::new((0, 0)),
        lens: RwSignal::new(None),
        attention: RwSignal::new(None),
        dla: RwSignal::new(None),
        neuron: RwSignal::new(None),
        separation: RwSignal::new(None),
        bench: RwSignal::new(None),
        embed,
        auto_run: RwSignal::new(true),
        engine: StoredValue::new_local(Engine {
            worker: None,
            stop: None,
            stop_buffer: None,
            stop_sent: false,
            in_flight: None,
            pending: None,
        }),
        asking_item: RwSignal::new(None),
        last_compare: StoredValue::new(String::new()),
        first_token_page: RwSignal::new(None),
        prev_info: StoredValue::new(None),
        loads: RwSignal::new(0),
        gpu: RwSignal::new(None),
        gpu_result: RwSignal::new(None),
        use_gpu: RwSignal::new(false),
    };
    provide_context(ctx);
    // A bad link keeps its message visible even after the model loads.
    let link_error = RwSignal::new(link_error);

    if cross_origin_isolated() {
        let buf = js_sys::SharedArrayBuffer::new(4);
        let arr = js_sys::Int32Array::new(&buf);
        ctx.engine.update_value(|e| {
            e.stop = Some(arr);
            e.stop_buffer = Some(buf.into());
        });
    }

    // Keep the URL in step with the state (replaceState: no history spam).
    Effect::new(move |_| {
        let enc = ctx.st.with(|s| s.encode());
        if let Some(w) = web_sys::window() {
            if let Ok(h) = w.history() {
                // Keep only `embed`; preset, panel and precision parameters
                // are folded into the state.
                let q = if embed { "?embed=1" } else { "" };
                let url = format!("{}{q}#s={enc}", w.location().pathname().unwrap_or_else(|_| "/".into()));
                let _ = h.replace_state_with_url(&JsValue::NULL, "", Some(&url));
            }
        }
    });

    let on_response = move |r: Response| {
        let is_final = r.is_final();
        match r {
            Response::Ready { engine: has_engine } => {
                if has_engine {
                    let (src, p) = (ctx.model_source(), ctx.st.with_untracked(|s| s.precision));
                    ctx.load(src, p, None);
                } else {
                    ctx.phase.set(Phase::Failed);
                    ctx.error.set(Some("this build of the worker has no engine".into()));
                }
            }
            Response::Pong { text } => ctx.status.set(format!("pong: {text}")),
            Response::Progress { loaded, total } => {
                ctx.progress.update(|p| {
                    p.0 = loaded;
                    p.1 = total;
                });
                if total.is_some_and(|t| loaded >= t) {
                    ctx.phase.set(Phase::Loading);
                    ctx.status.set("Building the model…".into());
                }
            }
            Response::Work { done, total } => ctx.work.set((done, total)),
            Response::KernelsSet { backend } => {
                ctx.info.update(|i| {
                    if let Some(i) = i {
                        i.backend = backend.clone();
                    }
                });
                ctx.status.set(format!("Backend: {backend}"));
            }
            Response::Loaded { name, precision, bytes, fetch_ms, load_ms, from_cache, summary, backend } => {
                ctx.progress.update(|p| {
                    p.0 = bytes;
                    p.1 = Some(bytes);
                });
                ctx.status.set(format!("Ready: {name} loaded"));
                ctx.info.set(Some(ModelInfo { name, precision, bytes, fetch_ms, load_ms, from_cache, summary, backend }));
                ctx.loads.update(|n| *n += 1);
                ctx.gpu.set(None);
                ctx.use_gpu.set(false);
                ctx.gpu_result.set(None);
            }
            Response::CacheCleared { entries } => ctx.status.set(format!("Model cache cleared ({entries} files)")),
            Response::LaneText { lane, ids, text, tok_s } => {
                let now = now_ms();
                // "Time to first token" is about page open: only the page's first token counts.
                let first_of_page = ctx.first_token_page.get_untracked().is_none();
                if first_of_page {
                    ctx.first_token_page.set(Some(now));
                }
                ctx.comparison.update(|c| {
                    if first_of_page {
                        c.first_token_at = Some(now);
                    }
                    let s = Stream { ids, text, tok_s };
                    match lane {
                        crate::protocol::Lane::Baseline => c.baseline = s,
                        crate::protocol::Lane::Intervened => c.intervened = s,
                    }
                });
            }
            Response::Compared { prompt_tokens, baseline, intervened, report, warnings, backend } => {
                ctx.comparison.update(|c| {
                    c.baseline = Stream { ids: baseline.ids.clone(), text: baseline.text.clone(), tok_s: baseline.decode_tok_s };
                    if let Some(i) = &intervened {
                        c.intervened = Stream { ids: i.ids.clone(), text: i.text.clone(), tok_s: i.decode_tok_s };
                    }
                    c.prompt_tokens = prompt_tokens;
                    c.result_baseline = Some(baseline);
                    c.result_intervened = intervened;
                    c.report = report;
                    c.warnings = warnings;
                    c.backend = backend;
                    c.done = true;
                });
                ctx.status.set("Comparison finished".into());
            }
            Response::Cancelled => {
                ctx.comparison.update(|c| {
                    c.stopped = true;
                    c.done = true;
                });
                ctx.status.set("Stopped".into());
            }
            Response::Patched { outcome } => {
                ctx.status.set(format!("Patching sweep finished in {:.1} s", outcome.seconds));
                ctx.patch.set(Some(outcome));
            }
            r @ Response::Lens { .. } => {
                ctx.lens.set(Some(r));
                ctx.status.set("Logit lens computed".into());
            }
            r @ Response::Attention { .. } => {
                ctx.attention.set(Some(r));
                ctx.status.set("Attention patterns computed".into());
            }
            r @ Response::Dla { .. } => {
                ctx.dla.set(Some(r));
                ctx.status.set("Direct logit attribution computed".into());
            }
            r @ Response::Neuron { .. } => {
                ctx.neuron.set(Some(r));
                ctx.status.set("Neuron view computed".into());
            }
            r @ Response::Separation { .. } => {
                if let Some(id) = ctx.asking_item.get_untracked() {
                    ctx.separation.set(Some((id, r)));
                }
                ctx.status.set("Layer scan finished".into());
            }
            Response::ControlVector { name, directions, warnings } => {
                if let Some(id) = ctx.asking_item.get_untracked() {
                    ctx.st.update(|s| {
                        if let Some(it) = s.stack.iter_mut().find(|i| i.id == id) {
                            it.vector = crate::state::VectorSpec::Control { name: name.clone(), directions };
                        }
                    });
                }
                ctx.status.set(if warnings.is_empty() { format!("Control vector {name} imported") } else { format!("Control vector {name} imported: {}", warnings.join("; ")) });
            }
            Response::SaeLatent { name, hook, latent, d_sae, values } => {
                if let Some(id) = ctx.asking_item.get_untracked() {
                    // Put the item at the SAE's hook: blocks.{l}.{site}.
                    let parsed = hook.strip_prefix("blocks.").and_then(|r| r.split_once('.')).and_then(|(l, site)| Some((l.parse::<u32>().ok()?, site.to_string())));
                    ctx.st.update(|s| {
                        if let Some(it) = s.stack.iter_mut().find(|i| i.id == id) {
                            if let Some((l, site)) = &parsed {
                                it.layer = Some(*l);
                                it.site = site.clone();
                            }
                            it.vector = crate::state::VectorSpec::Literal { label: format!("{name}: latent {latent} of {d_sae} at {hook}"), values };
                        }
                    });
                }
                ctx.status.set(format!("SAE latent {latent} loaded from {name}"));
            }
            Response::Bench { precision, backend, prompt_tokens, decode_tokens, rounds, prefill_tok_s, decode_tok_s } => {
                ctx.bench.set(Some(BenchResult { precision, backend, prompt_tokens, decode_tokens, rounds, prefill_tok_s, decode_tok_s }));
                ctx.status.set("Benchmark finished".into());
            }
            // The thin-slice requests (TopK, Generate) are not used by this page.
            Response::TopK { .. } | Response::Token { .. } | Response::Done { .. } => {}
            r @ Response::GpuReady { .. } => {
                ctx.status.set("WebGPU backend ready: comparisons run on it".into());
                ctx.gpu.set(Some(r));
                ctx.use_gpu.set(true);
            }
            r @ Response::GpuResult { .. } => {
                ctx.status.set("WebGPU run finished".into());
                ctx.gpu_result.set(Some(r));
            }
            Response::LoadFailed { message, kept } => {
                let prev = ctx.prev_info.get_value();
                ctx.error.set(Some(if kept && prev.is_some() { format!("{message} (the previous model is still loaded)") } else { message }));
                if kept && prev.is_some() {
                    ctx.info.set(prev);
                    ctx.progress.update(|p| p.1 = None);
                    ctx.status.set("Load failed; the previous model is still loaded".into());
                } else {
                    ctx.status.set("Load failed".into());
                    ctx.phase.set(Phase::Failed);
                }
            }
            Response::Error { message } => {
                ctx.error.set(Some(message));
                ctx.status.set("Error".into());
                if ctx.info.get_untracked().is_none() {
                    ctx.phase.set(Phase::Failed);
                }
                ctx.comparison.update(|c| c.done = true);
            }
        }
        if is_final {
            ctx.finished();
        }
    };

    match Worker::new(WORKER_SCRIPT) {
        Ok(w) => {
            let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                match serde_wasm_bindgen::from_value::<Response>(ev.data()) {
                    Ok(r) => on_response(r),
                    Err(e) => ctx.error.set(Some(format!("bad message from worker: {e}"))),
                }
            });
            w.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
            onmessage.forget();
            let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
                ev.prevent_default();
                let msg = ev.message();
                let msg = if msg.is_empty() { "could not start the engine worker".to_string() } else { msg };
                ctx.error.set(Some(format!("engine worker error: {msg}")));
                ctx.phase.set(Phase::Failed);
            });
            w.set_onerror(Some(onerror.as_ref().unchecked_ref()));
            onerror.forget();
            ctx.engine.update_value(|e| e.worker = Some(w));
        }
        Err(e) => {
            ctx.phase.set(Phase::Failed);
            ctx.error.set(Some(format!("could not start the engine worker: {}", js_err(e))));
        }
    }

    // Re-run the comparison shortly after the prompt, sampling or stack
    // change (debounced), once a model is loaded.
    let tick = StoredValue::new(0u64);
    Effect::new(move |prev: Option<()>| {
        // Any state change schedules a check; `rerun_compare_if_changed`
        // runs only if the comparison's inputs really changed.
        ctx.st.track();
        let loaded = ctx.info.with(|i| i.is_some());
        if prev.is_none() || !loaded || !ctx.auto_run.get_untracked() || ctx.st.with_untracked(|s| s.panel) != Panel::Steer {
            return;
        }
        tick.update_value(|t| *t += 1);
        let mine = tick.get_value();
        set_timeout(
            move || {
                if tick.get_value() == mine && ctx.info.get_untracked().is_some() {
                    ctx.rerun_compare_if_changed();
                }
            },
            Duration::from_millis(450),
        );
    });
    // First comparison (and the active panel's view) as soon as a model is
    // loaded (not when a failed load hands the previous model back).
    Effect::new(move |_| {
        if ctx.loads.get() > 0 {
            let panel = ctx.st.with_untracked(|s| s.panel);
            panels::run_panel(ctx, panel);
        }
    });

    let main_view = move || {
        let panel = ctx.st.with(|s| s.panel);
        match panel {
            Panel::Steer => panels::SteerPanel().into_any(),
            Panel::Patch => panels::PatchPanel().into_any(),
            Panel::Lens => panels::LensPanel().into_any(),
            Panel::Attention => panels::AttentionPanel().into_any(),
            Panel::Attribution => panels::AttributionPanel().into_any(),
        }
    };

    view! {
        <Show when=move || !embed fallback=move || view! { <widgets::EmbedHeader/> }>
            <header class="top">
                <div class="brand">
                    <h1>"Scalpel"</h1>
                    <p class="tagline">"Steer, ablate and patch a language model in your browser."</p>
                </div>
                <widgets::ShareBar/>
            </header>
        </Show>
        <main
            class:embed=embed
            data-state=move || ctx.phase.get().as_str()
            aria-busy=move || (!matches!(ctx.phase.get(), Phase::Ready | Phase::Failed)).to_string()
        >
            <Show when=move || link_error.with(|e| e.is_some())>
                <div class="notice" role="alert" aria-label="Link error">
                    <span>{move || link_error.get()}</span>
                    <button class="icon" aria-label="Dismiss the link error" on:click=move |_| link_error.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || !embed>
                <widgets::ModelCard/>
                <widgets::Presets/>
            </Show>
            <Show when=move || embed>
                <widgets::EmbedStatus/>
            </Show>
            <Show when=move || !embed>
                <nav class="tabs" role="tablist" aria-label="Panels">
                    {Panel::ALL
                        .into_iter()
                        .map(|p| {
                            view! {
                                <button
                                    role="tab"
                                    id=format!("tab-{}", p.id())
                                    aria-selected=move || (ctx.st.with(|s| s.panel) == p).to_string()
                                    on:click=move |_| {
                                        ctx.st.update(|s| s.panel = p);
                                        panels::run_panel(ctx, p);
                                    }
                                >
                                    {p.title()}
                                </button>
                            }
                        })
                        .collect_view()}
                </nav>
            </Show>
            <section class="panel" role="tabpanel" aria-label=move || ctx.st.with(|s| s.panel.title())>
                {main_view}
            </section>
            <p role="status" class="status">{move || ctx.status.get()}</p>
            <p role="alert" class="error">{move || ctx.error.get()}</p>
        </main>
    }
}

pub use widgets::fmt_mb;
