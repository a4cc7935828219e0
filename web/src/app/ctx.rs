//! What every part of the page shares: the link state, the loaded model,
//! the page's phase and messages, and the way to the worker. Each panel
//! keeps its own results (`panels/`).

use leptos::prelude::*;

use super::client::{Client, Stopping};
use crate::js::now_ms;
use crate::protocol::{BenchResult, LoadedModel, ModelLocation, Precision, Request, Response, ThreadGain};
use crate::state::{CheckOutcome, EmbedControls, Shared};
use crate::MODEL_URL_META;

thread_local! {
    static DEFAULT_MODEL_URL: Option<String> = read_default_model_url();
}

/// The `<meta name="scalpel-model-url">` of the page (see [`MODEL_URL_META`]).
fn read_default_model_url() -> Option<String> {
    let doc = web_sys::window()?.document()?;
    let meta = doc.query_selector(&format!("meta[name=\"{MODEL_URL_META}\"]")).ok()??;
    Some(meta.get_attribute("content")?.trim().to_string()).filter(|u| !u.is_empty())
}

/// Why there is no default model: the page was built without its `<meta>`.
pub fn missing_default_model() -> Option<String> {
    DEFAULT_MODEL_URL.with(|u| u.is_none()).then(|| {
        format!("This page names no default model (its index.html lacks <meta name=\"{MODEL_URL_META}\" content=\"URL\">; `cargo xtask dist` writes it). Load a model by URL or from a file.")
    })
}

/// Where the default model is (the page's `<meta name="scalpel-model-url">`).
pub fn default_model() -> ModelLocation {
    ModelLocation::Gguf { url: DEFAULT_MODEL_URL.with(|u| u.clone().unwrap_or_default()) }
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
    /// A link names a model other than the default: waiting for the user's click.
    Confirm,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Downloading => "downloading",
            Phase::Loading => "loading",
            Phase::Ready => "ready",
            Phase::Busy => "busy",
            Phase::Failed => "error",
            Phase::Confirm => "confirm",
        }
    }
}

/// Everything the page's parts share (copyable signals).
#[derive(Clone, Copy)]
pub struct Ctx {
    pub st: RwSignal<Shared>,
    pub phase: RwSignal<Phase>,
    pub status: RwSignal<String>,
    pub error: RwSignal<Option<String>>,
    pub info: RwSignal<Option<LoadedModel>>,
    /// Bytes loaded, bytes in all (if known), and when the download started.
    pub progress: RwSignal<(f64, Option<f64>, f64)>,
    pub busy_with: RwSignal<Option<&'static str>>,
    /// Cells (or layers) done of all, for a sweep.
    pub work: RwSignal<(u32, u32)>,
    pub bench: RwSignal<Option<BenchResult>>,
    /// The last "against 1 thread" measurement.
    pub thread_gain: RwSignal<Option<ThreadGain>>,
    pub embed: bool,
    /// What an embed's reader may change (`?controls=`; none outside embeds).
    pub controls: EmbedControls,
    /// Which stack item asked for a separation scan / control vector / SAE latent.
    pub asking_item: RwSignal<Option<u32>>,
    /// The last separation scan and the stack item that asked for it.
    pub scan: RwSignal<Option<(u32, Response)>>,
    /// The WebGPU backend once started: the `GpuReady` message.
    pub gpu: RwSignal<Option<Response>>,
    pub gpu_result: RwSignal<Option<Response>>,
    /// Run comparisons on the WebGPU backend (once it is started).
    pub use_gpu: RwSignal<bool>,
    /// Models loaded so far (drives the first run of the open panel).
    pub loads: RwSignal<u32>,
    /// performance.now() of the page's first generated token.
    pub first_token_page: RwSignal<Option<f64>>,
    /// Something the user should know that is not an error of their last
    /// request (a file the cache refused, a worker restarted after a crash).
    pub notice: RwSignal<Option<String>>,
    /// The model a link names, waiting for the user's click before it is downloaded.
    pub confirm_model: RwSignal<Option<ModelLocation>>,
    /// A Hugging Face token the user pasted (gated repositories): held in
    /// memory for this visit only, never in the link state or storage.
    pub hf_token: RwSignal<String>,
    /// The last exercise check's verdicts (cleared when a check starts).
    pub checked: RwSignal<Option<Vec<CheckOutcome>>>,
    /// The teacher's exercise builder is open (instead of the student's view).
    pub building: RwSignal<bool>,
    /// Threads asked for (the Model card's setting, kept in localStorage).
    pub threads: RwSignal<u32>,
    /// What the running worker reported: its kernels' threads, and why it
    /// runs one when more were asked for.
    pub threads_running: RwSignal<Option<(u32, Option<String>)>>,
    /// The user has chosen a model this visit (a restarted worker reloads it unasked).
    chosen: StoredValue<bool>,
    /// The next load follows a worker crash: it must not run anything by itself.
    recovering: StoredValue<bool>,
    /// The worker was ended to stop its work (no cross-origin isolation):
    /// the next load reloads the same model and the panels keep their results.
    reload_after_stop: StoredValue<bool>,
    /// A worker crashed loading the model: the next one waits for the user's pick.
    hold_load: StoredValue<bool>,
    /// The model loaded before the current load request.
    prev_info: StoredValue<Option<LoadedModel>>,
    client: StoredValue<Client, LocalStorage>,
    /// The local model file the user picked (a handle): a restarted worker
    /// is sent it again.
    local_file: StoredValue<Option<wasm_bindgen::JsValue>, LocalStorage>,
    /// Told the kind of each request as it starts (the panels reset what it replaces).
    on_start: StoredValue<Option<OnStart>, LocalStorage>,
}

/// A callback told the kind of each request as it starts.
type OnStart = Box<dyn Fn(&'static str)>;

impl Ctx {
    pub fn new(st: Shared, embed: Option<EmbedControls>) -> Ctx {
        Ctx {
            st: RwSignal::new(st),
            phase: RwSignal::new(Phase::Starting),
            status: RwSignal::new("Starting the engine worker…".into()),
            error: RwSignal::new(None),
            info: RwSignal::new(None),
            progress: RwSignal::new((0.0, None, now_ms())),
            busy_with: RwSignal::new(None),
            work: RwSignal::new((0, 0)),
            bench: RwSignal::new(None),
            thread_gain: RwSignal::new(None),
            embed: embed.is_some(),
            controls: embed.unwrap_or_default(),
            asking_item: RwSignal::new(None),
            scan: RwSignal::new(None),
            gpu: RwSignal::new(None),
            gpu_result: RwSignal::new(None),
            use_gpu: RwSignal::new(false),
            loads: RwSignal::new(0),
            first_token_page: RwSignal::new(None),
            notice: RwSignal::new(None),
            confirm_model: RwSignal::new(None),
            hf_token: RwSignal::new(String::new()),
            checked: RwSignal::new(None),
            building: RwSignal::new(false),
            threads: RwSignal::new(super::threads::saved_or_default()),
            threads_running: RwSignal::new(None),
            chosen: StoredValue::new(false),
            recovering: StoredValue::new(false),
            reload_after_stop: StoredValue::new(false),
            hold_load: StoredValue::new(false),
            prev_info: StoredValue::new(None),
            client: StoredValue::new_local(Client::default()),
            local_file: StoredValue::new_local(None),
            on_start: StoredValue::new_local(None),
        }
    }

    pub(super) fn set_on_start(self, f: impl Fn(&'static str) + 'static) {
        self.on_start.set_value(Some(Box::new(f)));
    }

    pub(super) fn with_client<T>(self, f: impl FnOnce(&mut Client) -> T) -> Option<T> {
        self.client.try_update_value(f)
    }

    /// Queue a request (see [`Client`]).
    pub fn send(self, req: Request) {
        self.send_with(req, None)
    }

    pub fn send_with(self, req: Request, file: Option<wasm_bindgen::JsValue>) {
        self.error.set(None);
        let kind = req.kind();
        match self.with_client(|c| c.submit(req, file)).unwrap_or(Err("engine gone".into())) {
            Ok(true) => self.started(kind),
            Ok(false) => self.status.set("Waiting for the current work to stop…".into()),
            Err(msg) => {
                self.error.set(Some(msg));
                self.phase.set(Phase::Failed);
            }
        }
    }

    pub(super) fn started(self, kind: &'static str) {
        self.busy_with.set(Some(kind));
        if kind == "load" {
            self.phase.set(Phase::Downloading);
        } else if self.phase.get_untracked() != Phase::Failed || self.info.get_untracked().is_some() {
            self.phase.set(Phase::Busy);
        }
        self.status.set(
            match kind {
                "compare" => "Generating (baseline, then intervened)…",
                "patch" => {
                    self.work.set((0, 0));
                    "Patching sweep running…"
                }
                "bench" => "Benchmarking…",
                "bench-threads" => "Comparing the threads with 1…",
                _ => "Working…",
            }
            .into(),
        );
        self.on_start.with_value(|f| f.iter().for_each(|f| f(kind)));
    }

    /// The current request ended: start the waiting one, if any.
    pub(super) fn finished(self) {
        if self.busy_with.get_untracked().is_some_and(|k| k != "load") {
            // Work ran to its end: a reload may run this state again.
            super::link::clear_crashed();
        }
        self.busy_with.set(None);
        match self.with_client(|c| c.next()) {
            Some(Some(Ok(kind))) => self.started(kind),
            Some(Some(Err(msg))) => self.error.set(Some(msg)),
            _ if self.phase.get_untracked() != Phase::Failed => {
                self.phase.set(if self.info.get_untracked().is_some() { Phase::Ready } else { Phase::Failed });
            }
            _ => {}
        }
    }

    /// Stops the running work: through the shared flag where the page is
    /// cross-origin isolated; otherwise by ending the worker (the work runs
    /// synchronously inside it, so no message would reach it) and starting a
    /// fresh one, which reloads the model from the browser cache and runs
    /// nothing; the panels keep what the stopped work showed.
    pub fn stop(self, panels: super::panels::Panels) {
        match self.with_client(|c| c.stop()) {
            Some(Stopping::Flag) => self.status.set("Stopping…".into()),
            Some(Stopping::EndWorker) => {
                let Some(Some(what)) = self.with_client(|c| c.halt()) else { return };
                panels.on_response(self, &Response::Cancelled);
                self.restart_worker(
                    panels,
                    true,
                    format!("Stopped '{what}' by restarting the engine worker (this page is not cross-origin isolated); reloading the model…"),
                );
            }
            _ => {}
        }
    }

    /// Runs the engine on `n` threads: a pool is started once per worker, so
    /// the worker is ended and a fresh one (the threaded build for n > 1)
    /// reloads the model from the browser cache; the panels keep their results.
    pub fn set_threads(self, n: u32, panels: super::panels::Panels) {
        super::threads::save(n);
        self.threads.set(n);
        if self.with_client(|c| c.halt()).flatten().is_some() {
            panels.on_response(self, &Response::Cancelled);
        }
        let had_model = self.info.get_untracked().is_some();
        self.restart_worker(panels, had_model, format!("Restarting the engine worker on {n} thread{}…", if n == 1 { "" } else { "s" }));
    }

    /// Starts a fresh worker after the old one was ended (`Client::halt`):
    /// it reloads the model from the cache and runs nothing by itself;
    /// `keep_panels` keeps what the panels show across that reload.
    fn restart_worker(self, panels: super::panels::Panels, keep_panels: bool, status: String) {
        self.busy_with.set(None);
        self.gpu.set(None);
        self.use_gpu.set(false);
        self.threads_running.set(None);
        self.recovering.set_value(true);
        self.reload_after_stop.set_value(keep_panels);
        self.prev_info.set_value(None);
        self.info.set(None);
        self.phase.set(Phase::Starting);
        self.status.set(status);
        super::client::start(self, panels);
    }

    /// Whether the model just loaded is the one reloaded after a Stop that
    /// ended the worker (and forget it).
    pub(super) fn take_reload_after_stop(self) -> bool {
        let r = self.reload_after_stop.get_value();
        self.reload_after_stop.set_value(false);
        r
    }

    /// Whether a control is shown: always on the page; in an embed, when
    /// the link's `controls=` offers it (`pick` reads which).
    pub fn shows(self, pick: fn(EmbedControls) -> bool) -> bool {
        !self.embed || pick(self.controls)
    }

    pub fn ready(self) -> bool {
        self.info.get().is_some() && !matches!(self.phase.get(), Phase::Downloading | Phase::Loading | Phase::Starting)
    }

    pub fn busy(self, k: &str) -> bool {
        self.busy_with.get() == Some(k)
    }

    /// The GGUF file the user picked, if the model came from one.
    pub fn local_file(self) -> Option<wasm_bindgen::JsValue> {
        self.local_file.get_value()
    }

    pub fn model_source(self) -> ModelLocation {
        self.st.with_untracked(|s| s.model.clone()).unwrap_or_else(default_model)
    }

    /// The first model load will not run the open panel (the state crashed
    /// the engine last time); `why` tells the user.
    pub(super) fn skip_first_run(self, why: String) {
        self.recovering.set_value(true);
        self.notice.set(Some(why));
    }

    /// The worker died (a panic or an out-of-memory trap): what it was doing
    /// is dropped, and a fresh worker reloads the model without running
    /// anything (`client::start` is called again). `what` names what it was doing.
    pub(super) fn crashed(self, message: &str, what: Option<&'static str>) {
        let doing = what.map(|k| format!(" while running '{k}'")).unwrap_or_default();
        self.reload_after_stop.set_value(false);
        self.busy_with.set(None);
        self.gpu.set(None);
        self.use_gpu.set(false);
        if what == Some("load") {
            // Loading it again would crash again.
            self.hold_load.set_value(true);
            self.recovering.set_value(false);
            self.info.set(None);
            self.phase.set(Phase::Failed);
            self.error.set(Some(format!(
                "The engine worker crashed loading the model ({message}). Pick another model or the quantized precision, which needs less memory."
            )));
            return;
        }
        self.st.with_untracked(super::link::mark_crashed);
        self.recovering.set_value(true);
        self.prev_info.set_value(None);
        self.info.set(None);
        self.phase.set(Phase::Starting);
        self.status.set("Restarting the engine worker…".into());
        self.notice.set(Some(format!(
            "The engine worker crashed{doing} ({message}). A fresh worker reloads the model; your settings are kept and nothing is re-run until you ask."
        )));
    }

    pub fn load(self, source: ModelLocation, precision: Precision, file: Option<wasm_bindgen::JsValue>) {
        self.chosen.set_value(true);
        self.confirm_model.set(None);
        // Kept in case the worker reports that the old model survived a failed load.
        self.prev_info.set_value(self.info.get_untracked());
        self.info.set(None);
        self.progress.set((0.0, None, now_ms()));
        self.status.set(format!("Loading {} ({})…", source.label(), precision.as_str()));
        let kernels = self.st.with_untracked(|s| s.kernels);
        let file = match (&source, file) {
            (ModelLocation::File { .. }, Some(f)) => {
                self.local_file.set_value(Some(f.clone()));
                Some(f)
            }
            (ModelLocation::File { .. }, None) => self.local_file.get_value(),
            (_, f) => f,
        };
        let token = Some(self.hf_token.get_untracked()).filter(|t| !t.trim().is_empty());
        self.send_with(Request::Load { source, precision, kernels, token }, file);
    }

    pub fn n_layers(self) -> u32 {
        self.info.with(|i| i.as_ref().map(|i| i.summary.n_layers).unwrap_or(30))
    }

    /// The intervention document of the stack (or `None`, with the error shown).
    pub fn document(self) -> Option<String> {
        match self.st.with_untracked(|s| s.document()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error.set(Some(e));
                None
            }
        }
    }

    /// Applies a response that is not a panel's result: the worker's
    /// lifecycle, downloads, the model, the stack's imports, the GPU.
    pub(super) fn on_response(self, r: &Response) {
        match r {
            Response::Ready { engine: true, threads, threads_note } => {
                self.threads_running.set(Some((*threads, threads_note.clone())));
                let source = self.model_source();
                if self.hold_load.get_value() {
                    self.hold_load.set_value(false);
                    self.status.set("A fresh engine worker is ready: pick a model to load".into());
                } else if let (true, Some(why)) = (source == default_model(), missing_default_model()) {
                    self.error.set(Some(why));
                    self.phase.set(Phase::Failed);
                } else if self.chosen.get_value() || source == default_model() {
                    self.load(source, self.st.with_untracked(|s| s.precision), None);
                } else {
                    self.confirm_model.set(Some(source));
                    self.phase.set(Phase::Confirm);
                    self.status.set("This link names its own model: nothing is downloaded until you confirm".into());
                }
            }
            Response::Ready { engine: false, .. } => {
                self.phase.set(Phase::Failed);
                self.error.set(Some("this build of the worker has no engine".into()));
            }
            Response::Pong { text } => self.status.set(format!("pong: {text}")),
            // A dictionary's download: told in the status line, not the model's progress bar.
            Response::Progress { loaded, total } if self.busy_with.get_untracked() == Some("dictionary") => {
                let of = total.map(|t| format!(" of {}", super::widgets::fmt_mb(t))).unwrap_or_default();
                self.status.set(format!("Downloading the dictionary: {}{of}…", super::widgets::fmt_mb(*loaded)));
            }
            Response::Progress { loaded, total } => {
                self.progress.update(|p| (p.0, p.1) = (*loaded, *total));
                if total.is_some_and(|t| *loaded >= t) {
                    self.phase.set(Phase::Loading);
                    self.status.set("Building the model…".into());
                }
            }
            Response::Work { done, total } => self.work.set((*done, *total)),
            Response::KernelsSet { backend } => {
                self.info.update(|i| i.iter_mut().for_each(|i| i.backend = backend.clone()));
                self.status.set(format!("Backend: {backend}"));
            }
            Response::Loaded(m) => self.loaded(m),
            Response::LoadFailed { message, kept } => self.load_failed(message, *kept),
            Response::CacheCleared { entries } => self.status.set(format!("Model cache cleared ({entries} files)")),
            Response::ControlVector { .. } | Response::Separation { .. } => super::stack::on_response(self, r),
            Response::Bench(b) => {
                self.bench.set(Some((**b).clone()));
                self.status.set("Benchmark finished".into());
            }
            Response::ThreadGain(g) => {
                self.thread_gain.set(Some((**g).clone()));
                self.status.set("Thread comparison finished".into());
            }
            Response::GpuReady { .. } => {
                self.status.set("WebGPU backend ready: comparisons run on it".into());
                self.gpu.set(Some(r.clone()));
                self.use_gpu.set(true);
            }
            Response::GpuResult { .. } => {
                self.status.set("WebGPU run finished".into());
                self.gpu_result.set(Some(r.clone()));
            }
            Response::Checked { outcomes } => {
                let passed = outcomes.iter().filter(|o| o.pass).count();
                self.status.set(format!("Checked: {passed} of {} checks pass", outcomes.len()));
                self.checked.set(Some(outcomes.clone()));
            }
            Response::Cancelled => self.status.set("Stopped".into()),
            Response::Notice { message } => self.notice.set(Some(message.clone())),
            Response::Error { message } => {
                self.error.set(Some(message.clone()));
                self.status.set("Error".into());
                if self.info.get_untracked().is_none() {
                    self.phase.set(Phase::Failed);
                }
            }
            _ => {}
        }
    }

    fn loaded(self, m: &LoadedModel) {
        self.progress.update(|p| (p.0, p.1) = (m.bytes, Some(m.bytes)));
        self.status.set(format!("Ready: {} loaded", m.name));
        self.info.set(Some(m.clone()));
        if self.recovering.get_value() {
            self.recovering.set_value(false);
            self.status.set(if self.reload_after_stop.get_value() {
                format!("Stopped; {} reloaded in a fresh engine worker", m.name)
            } else {
                format!("Ready: {} reloaded after the crash; nothing was re-run", m.name)
            });
        } else {
            self.loads.update(|n| *n += 1);
        }
        self.gpu.set(None);
        self.use_gpu.set(false);
        self.gpu_result.set(None);
    }

    fn load_failed(self, message: &str, kept: bool) {
        self.reload_after_stop.set_value(false);
        let prev = self.prev_info.get_value();
        if kept && prev.is_some() {
            self.error.set(Some(format!("{message} (the previous model is still loaded)")));
            self.info.set(prev);
            self.progress.update(|p| p.1 = None);
            self.status.set("Load failed; the previous model is still loaded".into());
        } else {
            self.error.set(Some(message.to_string()));
            self.status.set("Load failed".into());
            self.phase.set(Phase::Failed);
        }
    }
}
