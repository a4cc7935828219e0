//! The Benchmark panel's side-by-side run of llama.cpp's wasm build (npm
//! `@wllama/wllama`): the loaded GGUF, the benchmark's prompt as text, CPU
//! only, at the thread count of Scalpel's result and at 1 thread, then each
//! speed as a ratio. It runs in a module worker of its own
//! (`public/llama_cpp_bench.js`), so Stop ends llama.cpp's threads at once.
//!
//! llama.cpp is a test dependency, not part of the app: `cargo xtask serve`
//! serves it at `llama.cpp/` next to the page. A page served without it says
//! so and offers nothing.

use leptos::prelude::*;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

use super::super::Ctx;
use crate::js::{get, js_err};
use crate::protocol::{BenchResult, ModelLocation};

/// llama.cpp's folder, relative to the page.
const BASE: &str = "llama.cpp/";
/// The module worker that runs it (copied next to the page by Trunk).
const SCRIPT: &str = "llama_cpp_bench.js";
/// Greedy completions per thread count; llama.cpp's timings of the last are
/// shown (the first warms it up).
const ROUNDS: u32 = 2;

/// One thread count's run, as `llama_cpp_bench.js` reports it (llama.cpp's
/// own timings).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct Run {
    /// Threads asked for, and those llama.cpp ran (1 where the page is not
    /// cross-origin isolated).
    asked: u32,
    threads: u32,
    prompt_n: u32,
    predicted_n: u32,
    prefill: f64,
    decode: f64,
}

/// The page's base URL (`document.baseURI`), which a sub-path build moves.
fn base_uri() -> Option<String> {
    web_sys::window()?.document()?.base_uri().ok().flatten()
}

/// `rel` resolved against the page's base URL.
fn resolve(rel: &str) -> Result<String, String> {
    let base = base_uri().ok_or("the page has no base URL")?;
    web_sys::Url::new_with_base(rel, &base).map(|u| u.href()).map_err(|e| format!("bad URL {rel}: {}", js_err(e)))
}

/// Whether llama.cpp is served next to this page: its `index.js`, as
/// JavaScript (a host that answers every path with the page's HTML is not
/// serving it).
async fn served() -> bool {
    let Some(w) = web_sys::window() else { return false };
    let Ok(url) = resolve(&format!("{BASE}index.js")) else { return false };
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    let Ok(r) = JsFuture::from(w.fetch_with_str_and_init(&url, &init)).await else { return false };
    let r: web_sys::Response = r.unchecked_into();
    r.ok() && r.headers().get("content-type").ok().flatten().is_some_and(|t| t.contains("javascript"))
}

/// What llama.cpp loads: the model's URL, or the file the user picked.
fn model_for_llama(ctx: Ctx) -> Result<JsValue, String> {
    match ctx.model_source() {
        ModelLocation::Gguf { url } => resolve(&url).map(JsValue::from),
        ModelLocation::File { name } => ctx.local_file().ok_or_else(|| format!("the file {name} is no longer at hand: pick it again")),
        ModelLocation::HfRepo { .. } => Err("llama.cpp reads GGUF files, and this model came from a Hugging Face repository (safetensors)".into()),
    }
}

#[component]
pub fn LlamaCppComparison(
    /// Set when the Benchmark panel is opened: the check for llama.cpp runs then.
    opened: RwSignal<bool>,
    /// llama.cpp is running (Scalpel's own benchmark waits: both would share the cores).
    running: RwSignal<bool>,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let available = RwSignal::new(None::<bool>);
    let runs = RwSignal::new(Vec::<Run>::new());
    let status = RwSignal::new(String::new());
    let failed = RwSignal::new(None::<String>);
    let worker = StoredValue::new_local(None::<Worker>);
    let checked = StoredValue::new(false);
    Effect::new(move |_| {
        if opened.get() && !checked.get_value() {
            checked.set_value(true);
            wasm_bindgen_futures::spawn_local(async move { available.set(Some(served().await)) });
        }
    });
    // A new Scalpel result: the old comparison no longer applies.
    Effect::new(move |_| {
        if ctx.bench.with(|b| b.is_none()) {
            runs.set(Vec::new());
            failed.set(None);
            status.set(String::new());
        }
    });
    let stop = move || {
        if let Some(w) = worker.get_value() {
            w.terminate();
        }
        worker.set_value(None);
        running.set(false);
    };
    let start = move |b: BenchResult| {
        runs.set(Vec::new());
        failed.set(None);
        let Some(n) = b.cpu_threads else { return };
        let model = match model_for_llama(ctx) {
            Ok(m) => m,
            Err(e) => {
                failed.set(Some(e));
                return;
            }
        };
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        let w = match resolve(SCRIPT).and_then(|s| Worker::new_with_options(&s, &opts).map_err(js_err)) {
            Ok(w) => w,
            Err(e) => {
                failed.set(Some(format!("could not start llama.cpp's worker: {e}")));
                return;
            }
        };
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let d = ev.data();
            if let Some(s) = get(&d, "status").as_string() {
                status.set(s);
            } else if let Some(e) = get(&d, "error").as_string() {
                failed.set(Some(format!("llama.cpp: {e}")));
                stop();
            } else if get(&d, "done").is_truthy() {
                stop();
            } else {
                match serde_wasm_bindgen::from_value::<Run>(get(&d, "result")) {
                    Ok(r) => runs.update(|v| v.push(r)),
                    Err(e) => {
                        failed.set(Some(format!("llama.cpp's worker sent a bad result: {e}")));
                        stop();
                    }
                }
            }
        });
        w.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();
        let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
            ev.prevent_default();
            failed.set(Some(format!("llama.cpp's worker failed: {}", ev.message())));
            stop();
        });
        w.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        onerror.forget();
        let threads = js_sys::Array::new();
        threads.push(&JsValue::from(n));
        if n > 1 {
            threads.push(&JsValue::from(1));
        }
        let msg = js_sys::Object::new();
        for (k, v) in [
            ("model", model),
            ("prompt", JsValue::from(b.prompt_text.as_str())),
            ("threads", threads.into()),
            ("tokens", JsValue::from(b.decode_tokens)),
            ("rounds", JsValue::from(ROUNDS)),
        ] {
            let _ = js_sys::Reflect::set(&msg, &JsValue::from_str(k), &v);
        }
        if let Err(e) = w.post_message(&msg) {
            failed.set(Some(format!("could not reach llama.cpp's worker: {}", js_err(e))));
            w.terminate();
            return;
        }
        status.set("llama.cpp: starting…".into());
        worker.set_value(Some(w));
        running.set(true);
    };
    // Why the comparison cannot run for the current result, if it cannot.
    let blocked = move || -> Option<&'static str> {
        match ctx.bench.get() {
            None => Some("Run the benchmark first: llama.cpp runs the same prompt at its thread count."),
            Some(b) if b.cpu_threads.is_none() => Some("llama.cpp runs on the CPU: compare a CPU result."),
            Some(_) => None,
        }
    };
    let row = move |r: Run, b: Option<BenchResult>| {
        let ratio = b
            .filter(|b| b.cpu_threads == Some(r.threads))
            .map(|b| format!("Scalpel {:.2}× · {:.2}×", b.prefill_tok_s / r.prefill, b.decode_tok_s / r.decode))
            .unwrap_or_default();
        view! {
            <tr data-threads=r.threads.to_string() data-asked=r.asked.to_string() data-prefill=r.prefill.to_string()
                data-decode=r.decode.to_string() data-prompt-n=r.prompt_n.to_string() data-predicted-n=r.predicted_n.to_string()>
                <th scope="row">{format!("llama.cpp wasm, {} thread{}", r.threads, if r.threads > 1 { "s" } else { "" })}</th>
                <td>{format!("{:.1}", r.prefill)}</td>
                <td>{format!("{:.1}", r.decode)}</td>
                <td>{ratio}</td>
            </tr>
        }
    };
    view! {
        <Show when=move || available.get() == Some(true)
            fallback=move || view! {
                <p class="muted">{move || (available.get() == Some(false)).then_some(
                    "Side by side with llama.cpp: its wasm build is not served with this page (`cargo xtask serve` serves it at llama.cpp/)."
                )}</p>
            }>
            <div class="row">
                <Show when=move || running.get()
                    fallback=move || view! {
                        <button on:click=move |_| { if let Some(b) = ctx.bench.get_untracked() { start(b) } }
                            disabled=move || blocked().is_some() || !ctx.ready()>"Compare with llama.cpp"</button>
                    }>
                    <button on:click=move |_| { stop(); status.set("llama.cpp: stopped.".into()) }>"Stop llama.cpp"</button>
                </Show>
                <span class="muted" aria-live="polite">{move || {
                    if running.get() || !status.get().is_empty() && runs.with(|r| r.is_empty()) {
                        status.get()
                    } else {
                        blocked().map(str::to_string).unwrap_or_else(|| format!(
                            "llama.cpp's wasm build (CPU, same GGUF and prompt), greedy, last of {ROUNDS} runs"
                        ))
                    }
                }}</span>
            </div>
            {move || failed.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <Show when=move || runs.with(|r| !r.is_empty())>
                <table aria-label="llama.cpp result" class="bench-table">
                    <thead><tr><th></th><th scope="col">"prefill tok/s"</th><th scope="col">"decode tok/s"</th><th scope="col">"Scalpel ÷ llama.cpp"</th></tr></thead>
                    <tbody>
                        {move || ctx.bench.get().map(|b| view! {
                            <tr>
                                <th scope="row">{format!("Scalpel, {} thread{}", b.cpu_threads.unwrap_or(1), if b.cpu_threads.unwrap_or(1) > 1 { "s" } else { "" })}</th>
                                <td>{format!("{:.1}", b.prefill_tok_s)}</td>
                                <td>{format!("{:.1}", b.decode_tok_s)}</td>
                                <td></td>
                            </tr>
                        })}
                        {move || runs.get().into_iter().map(|r| row(r, ctx.bench.get())).collect_view()}
                    </tbody>
                </table>
            </Show>
        </Show>
    }
}
