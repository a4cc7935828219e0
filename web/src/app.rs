//! The page. Owns no model: every model operation is a [`Request`] to the worker.

use crate::js::{cross_origin_isolated, js_err};
use crate::protocol::{Envelope, Precision, Request, Response, Sampling, TokenLogit, STOP_FLAG_INDEX};
use crate::{DEFAULT_MODEL_URL, WORKER_SCRIPT};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker};

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// What the page is doing; mirrored in `data-state` on `<main>` for tests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
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
struct Generation {
    text: String,
    ids: Vec<u32>,
    tok_s: f64,
    first_token_ms: Option<f64>,
    done: bool,
    stopped: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct BenchResult {
    precision: Precision,
    prompt_tokens: u32,
    decode_tokens: u32,
    rounds: u32,
    prefill_tok_s: f64,
    decode_tok_s: f64,
}

#[derive(Clone, Debug, PartialEq)]
struct ModelInfo {
    name: String,
    precision: Precision,
    bytes: f64,
    fetch_ms: f64,
    load_ms: f64,
}

/// The worker plus the shared stop flag (when cross-origin isolated).
struct Engine {
    worker: Option<Worker>,
    stop: Option<js_sys::Int32Array>,
    stop_buffer: Option<JsValue>,
    /// Whether `stop_buffer` has been handed to the current worker yet.
    stop_sent: bool,
}

impl Engine {
    fn send(&mut self, req: &Request) -> Result<(), String> {
        let worker = self.worker.as_ref().ok_or("the engine worker is not running")?;
        let env = js_sys::Object::new();
        let v = serde_wasm_bindgen::to_value(req).map_err(|e| e.to_string())?;
        js_sys::Reflect::set(&env, &Envelope::REQ.into(), &v).map_err(js_err)?;
        if !self.stop_sent {
            if let Some(buf) = &self.stop_buffer {
                js_sys::Reflect::set(&env, &Envelope::STOP.into(), buf).map_err(js_err)?;
            }
            self.stop_sent = true;
        }
        worker.post_message(&env).map_err(js_err)
    }

    fn set_stop(&self, v: i32) {
        if let Some(a) = &self.stop {
            let _ = js_sys::Atomics::store(a, STOP_FLAG_INDEX, v);
        }
    }
}

fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

fn fmt_mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

/// A token's text made visible: quotes, escaped whitespace.
fn show_token(t: &str) -> String {
    format!("{t:?}")
}

#[component]
fn App() -> impl IntoView {
    let initial_precision = query_param("precision")
        .and_then(|p| Precision::parse(&p))
        // f32 is the default: exact, and in wasm it measured faster than the
        // quantized path for the default model (see README, "Tests").
        .unwrap_or(Precision::F32);

    let (phase, set_phase) = signal(Phase::Starting);
    let (status, set_status) = signal("Starting the engine worker…".to_string());
    let (error, set_error) = signal(None::<String>);
    let (progress, set_progress) = signal((0.0f64, None::<f64>));
    let (precision, set_precision) = signal(initial_precision);
    let (info, set_info) = signal(None::<ModelInfo>);
    let (prompt, set_prompt) = signal("The capital of France is".to_string());
    let (max_new, set_max_new) = signal(32u32);
    let (temperature, set_temperature) = signal(0.0f32);
    let (seed, set_seed) = signal(0u64);
    let (top, set_top) = signal(Vec::<TokenLogit>::new());
    let (gen, set_gen) = signal(None::<Generation>);
    let (bench, set_bench) = signal(None::<BenchResult>);

    let engine = StoredValue::new_local(Engine { worker: None, stop: None, stop_buffer: None, stop_sent: false });
    if cross_origin_isolated() {
        let buf = js_sys::SharedArrayBuffer::new(4);
        let arr = js_sys::Int32Array::new(&buf);
        engine.update_value(|e| {
            e.stop = Some(arr);
            e.stop_buffer = Some(buf.into());
        });
    }

    let send = move |req: Request| {
        let r = engine.try_update_value(|e| e.send(&req)).unwrap_or(Err("engine gone".into()));
        if let Err(msg) = r {
            set_error.set(Some(msg));
            set_phase.set(Phase::Failed);
        }
    };

    let load = move |p: Precision| {
        set_error.set(None);
        set_top.set(Vec::new());
        set_gen.set(None);
        set_bench.set(None);
        set_info.set(None);
        set_phase.set(Phase::Downloading);
        set_status.set(format!("Loading {} ({})…", crate::DEFAULT_MODEL_NAME, p.as_str()));
        send(Request::Load { url: DEFAULT_MODEL_URL.to_string(), precision: p });
    };

    // Messages from the worker.
    let on_response = move |r: Response| match r {
        Response::Ready { engine: has_engine } => {
            if has_engine {
                load(precision.get_untracked());
            } else {
                set_phase.set(Phase::Failed);
                set_error.set(Some("this build of the worker has no engine".into()));
            }
        }
        Response::Pong { text } => set_status.set(format!("pong: {text}")),
        Response::Progress { loaded, total } => {
            set_progress.set((loaded, total));
            if total.is_some_and(|t| loaded >= t) {
                set_phase.set(Phase::Loading);
                set_status.set("Building the model…".into());
            }
        }
        Response::Loaded { name, precision, bytes, fetch_ms, load_ms } => {
            set_progress.set((bytes, Some(bytes)));
            set_status.set(format!("Ready: {name} loaded"));
            set_info.set(Some(ModelInfo { name, precision, bytes, fetch_ms, load_ms }));
            set_phase.set(Phase::Ready);
        }
        Response::TopK { top, .. } => {
            set_top.set(top);
            set_phase.set(Phase::Ready);
            set_status.set("Next tokens computed".into());
        }
        Response::Token { id, text, tok_s, .. } => {
            set_gen.update(|g| {
                let g = g.get_or_insert_with(|| Generation {
                    text: String::new(),
                    ids: vec![],
                    tok_s: 0.0,
                    first_token_ms: None,
                    done: false,
                    stopped: false,
                });
                g.ids.push(id);
                g.text = text;
                g.tok_s = tok_s;
            });
        }
        Response::Done { ids, text, stopped, first_token_ms, decode_tok_s, .. } => {
            set_gen.set(Some(Generation {
                text,
                ids,
                tok_s: decode_tok_s,
                first_token_ms: Some(first_token_ms),
                done: true,
                stopped,
            }));
            set_phase.set(Phase::Ready);
            set_status.set(if stopped { "Generation stopped".into() } else { "Generation finished".into() });
        }
        Response::Bench { precision, prompt_tokens, decode_tokens, rounds, prefill_tok_s, decode_tok_s } => {
            set_bench.set(Some(BenchResult { precision, prompt_tokens, decode_tokens, rounds, prefill_tok_s, decode_tok_s }));
            set_phase.set(Phase::Ready);
            set_status.set("Benchmark finished".into());
        }
        Response::Error { message } => {
            set_error.set(Some(message));
            // Recoverable if a model is loaded; otherwise the page stays failed.
            set_phase.set(if info.get_untracked().is_some() { Phase::Ready } else { Phase::Failed });
            set_status.set("Error".into());
        }
    };

    // Spawn the worker.
    match Worker::new(WORKER_SCRIPT) {
        Ok(w) => {
            let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                match serde_wasm_bindgen::from_value::<Response>(ev.data()) {
                    Ok(r) => on_response(r),
                    Err(e) => set_error.set(Some(format!("bad message from worker: {e}"))),
                }
            });
            w.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
            onmessage.forget();
            let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
                ev.prevent_default();
                let msg = ev.message();
                let msg = if msg.is_empty() { "could not start the engine worker".to_string() } else { msg };
                set_error.set(Some(format!("engine worker error: {msg}")));
                set_phase.set(Phase::Failed);
            });
            w.set_onerror(Some(onerror.as_ref().unchecked_ref()));
            onerror.forget();
            engine.update_value(|e| e.worker = Some(w));
        }
        Err(e) => {
            set_phase.set(Phase::Failed);
            set_error.set(Some(format!("could not start the engine worker: {}", js_err(e))));
        }
    }

    let ready = move || phase.get() == Phase::Ready;
    let generating = move || phase.get() == Phase::Busy && gen.get().is_some_and(|g| !g.done);

    let on_next = move |_| {
        set_error.set(None);
        set_phase.set(Phase::Busy);
        set_status.set("Computing next tokens…".into());
        send(Request::TopK { prompt: prompt.get_untracked(), k: 5 });
    };
    let on_generate = move |_| {
        set_error.set(None);
        engine.with_value(|e| e.set_stop(0));
        set_gen.set(Some(Generation {
            text: String::new(),
            ids: vec![],
            tok_s: 0.0,
            first_token_ms: None,
            done: false,
            stopped: false,
        }));
        set_phase.set(Phase::Busy);
        set_status.set("Generating…".into());
        let t = temperature.get_untracked();
        send(Request::Generate {
            prompt: prompt.get_untracked(),
            sampling: Sampling {
                max_new_tokens: max_new.get_untracked(),
                temperature: t,
                top_k: None,
                top_p: None,
                seed: seed.get_untracked(),
            },
        });
    };
    let on_stop = move |_| {
        let has_flag = engine.with_value(|e| e.stop.is_some());
        if has_flag {
            engine.with_value(|e| e.set_stop(1));
            set_status.set("Stopping…".into());
        } else {
            set_error.set(Some(
                "Stop needs cross-origin isolation (serve with `cargo xtask serve`)".into(),
            ));
        }
    };
    let on_bench = move |_| {
        set_error.set(None);
        set_bench.set(None);
        set_phase.set(Phase::Busy);
        set_status.set("Benchmarking…".into());
        send(Request::Bench { prompt_tokens: 64, decode_tokens: 64, rounds: 3 });
    };
    let on_precision = move |ev: web_sys::Event| {
        if let Some(p) = Precision::parse(&event_target_value(&ev)) {
            set_precision.set(p);
            load(p);
        }
    };

    let percent = move || {
        let (l, t) = progress.get();
        t.filter(|t| *t > 0.0).map(|t| (100.0 * l / t).min(100.0))
    };

    view! {
        <header>
            <h1>"Scalpel"</h1>
            <p class="tagline">"Look inside a small language model, in your browser."</p>
        </header>
        <main data-state=move || phase.get().as_str() aria-busy=move || (!matches!(phase.get(), Phase::Ready | Phase::Failed)).to_string()>
            <section class="card" aria-labelledby="model-h">
                <h2 id="model-h">"Model"</h2>
                <div class="row">
                    <span class="model-name">{crate::DEFAULT_MODEL_NAME}</span>
                    <label>
                        "Precision "
                        <select
                            aria-label="Precision"
                            on:change=on_precision
                            prop:value=move || precision.get().as_str()
                            disabled=move || !ready() && phase.get() != Phase::Failed
                        >
                            {Precision::ALL
                                .into_iter()
                                .map(|p| {
                                    view! {
                                        <option value=p.as_str() selected=move || precision.get() == p>
                                            {p.as_str()}
                                        </option>
                                    }
                                })
                                .collect_view()}
                        </select>
                    </label>
                </div>
                <div class="row">
                    <progress
                        aria-label="Model download"
                        max="100"
                        value=move || percent().map(|p| format!("{p:.1}")).unwrap_or_default()
                    ></progress>
                    <span class="progress-text" aria-label="Download progress">
                        {move || {
                            let (l, t) = progress.get();
                            match (t, percent()) {
                                (Some(t), Some(p)) => format!("{} / {} ({p:.0}%)", fmt_mb(l), fmt_mb(t)),
                                _ => fmt_mb(l),
                            }
                        }}
                    </span>
                </div>
                <p
                    class="model-info"
                    aria-label="Loaded model"
                    data-precision=move || info.get().map(|i| i.precision.as_str()).unwrap_or_default()
                >
                    {move || match info.get() {
                        None => "No model loaded".to_string(),
                        Some(i) => format!(
                            "Loaded: {} · {} · download {:.1} s · build {:.1} s",
                            i.precision.as_str(),
                            fmt_mb(i.bytes),
                            i.fetch_ms / 1e3,
                            i.load_ms / 1e3
                        ),
                    }}
                </p>
                <p role="status" class="status">{move || status.get()}</p>
            </section>

            <section class="card" aria-labelledby="prompt-h">
                <h2 id="prompt-h">"Prompt"</h2>
                <textarea
                    aria-label="Prompt"
                    rows="3"
                    prop:value=move || prompt.get()
                    on:input=move |ev| set_prompt.set(event_target_value(&ev))
                ></textarea>
                <div class="row controls">
                    <button on:click=on_next disabled=move || !ready()>"Next tokens"</button>
                    <button on:click=on_generate disabled=move || !ready()>"Generate"</button>
                    <button on:click=on_stop disabled=move || !generating()>"Stop"</button>
                    <label>
                        "Max new tokens "
                        <input
                            type="number"
                            aria-label="Max new tokens"
                            min="1"
                            max="512"
                            value=max_new.get_untracked().to_string()
                            on:input=move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<u32>() {
                                    set_max_new.set(v.clamp(1, 512));
                                }
                            }
                        />
                    </label>
                    <label>
                        "Temperature "
                        <input
                            type="number"
                            aria-label="Temperature"
                            min="0"
                            max="5"
                            step="0.1"
                            value=temperature.get_untracked().to_string()
                            on:input=move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<f32>() {
                                    set_temperature.set(v.clamp(0.0, 5.0));
                                }
                            }
                        />
                    </label>
                    <label>
                        "Seed "
                        <input
                            type="number"
                            aria-label="Seed"
                            min="0"
                            value=seed.get_untracked().to_string()
                            on:input=move |ev| {
                                if let Ok(v) = event_target_value(&ev).parse::<u64>() {
                                    set_seed.set(v);
                                }
                            }
                        />
                    </label>
                </div>
            </section>

            <section class="card" aria-labelledby="next-h">
                <h2 id="next-h">"Next tokens"</h2>
                <table aria-label="Top next tokens">
                    <thead>
                        <tr>
                            <th scope="col">"#"</th>
                            <th scope="col">"Token"</th>
                            <th scope="col">"Id"</th>
                            <th scope="col">"Logit"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || {
                            top.get()
                                .into_iter()
                                .enumerate()
                                .map(|(i, t)| {
                                    view! {
                                        <tr data-id=t.id.to_string() data-logit=t.logit.to_string()>
                                            <td>{i + 1}</td>
                                            <td class="tok">{show_token(&t.text)}</td>
                                            <td class="num">{t.id}</td>
                                            <td class="num">{format!("{:.4}", t.logit)}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                        }}
                    </tbody>
                </table>
            </section>

            <section class="card" aria-labelledby="gen-h">
                <h2 id="gen-h">"Generation"</h2>
                <div
                    class="generation"
                    role="log"
                    aria-label="Generated text"
                    data-ids=move || gen.get().map(|g| g.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default()
                    data-done=move || gen.get().is_some_and(|g| g.done).to_string()
                >
                    <span class="prompt-echo">{move || gen.get().map(|_| prompt.get_untracked())}</span>
                    <span class="generated">{move || gen.get().map(|g| g.text)}</span>
                </div>
                <p aria-label="Tokens per second" class="speed">
                    {move || match gen.get() {
                        None => "—".to_string(),
                        Some(g) => {
                            let mut s = format!("{:.1} tokens/s", g.tok_s);
                            if let Some(ms) = g.first_token_ms {
                                s.push_str(&format!(" · first token after {ms:.0} ms"));
                            }
                            s.push_str(&format!(" · {} tokens", g.ids.len()));
                            if g.stopped {
                                s.push_str(" · stopped");
                            }
                            s
                        }
                    }}
                </p>
            </section>

            <section class="card" aria-labelledby="bench-h">
                <h2 id="bench-h">"Benchmark"</h2>
                <div class="row">
                    <button on:click=on_bench disabled=move || !ready()>"Run benchmark"</button>
                    <span class="muted">"single thread, this tab"</span>
                </div>
                <p
                    aria-label="Benchmark result"
                    data-prefill=move || bench.get().map(|b| b.prefill_tok_s.to_string()).unwrap_or_default()
                    data-decode=move || bench.get().map(|b| b.decode_tok_s.to_string()).unwrap_or_default()
                >
                    {move || {
                        bench
                            .get()
                            .map(|b| {
                                format!(
                                    "{}: prefill {:.1} tok/s ({} tokens) · decode {:.1} tok/s ({} tokens) · median of {}",
                                    b.precision.as_str(),
                                    b.prefill_tok_s,
                                    b.prompt_tokens,
                                    b.decode_tok_s,
                                    b.decode_tokens,
                                    b.rounds
                                )
                            })
                            .unwrap_or_default()
                    }}
                </p>
            </section>

            <p role="alert" class="error">{move || error.get()}</p>
        </main>
    }
}
