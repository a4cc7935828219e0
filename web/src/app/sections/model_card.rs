//! The model card: where the model comes from (default, URL, Hugging Face
//! repository, local file), its precision and kernels, the download, what
//! is loaded, the benchmark and the WebGPU backend. Once a model is loaded
//! it folds to one line (name, precision, backend, "Change"), so the first
//! screen shows the experiment; a user who opens it keeps it open.

use gloo_storage::{LocalStorage, Storage};
use leptos::prelude::*;

use super::super::widgets::{event_target, fmt_mb, StopButton, TokenField};
use super::super::{Ctx, Phase};
use super::gpu::GpuSection;
use super::llama_cpp::LlamaCppComparison;
use crate::protocol::{Kernels, ModelLocation, Precision, Request};
use crate::state::catalogue;

fn loading(ctx: Ctx) -> bool {
    matches!(ctx.phase.get(), Phase::Downloading | Phase::Loading | Phase::Starting)
}

/// localStorage key of the card's fold: `open` keeps it open across loads
/// and visits (a preference, not part of any link).
const CARD_KEY: &str = "scalpel.model_card";

fn set_open(open: RwSignal<bool>, o: bool) {
    open.set(o);
    // Private windows and full storage refuse: the card still folds for this visit.
    let storage = LocalStorage::raw();
    let _ = if o { storage.set_item(CARD_KEY, "open") } else { storage.remove_item(CARD_KEY) };
}

#[component]
pub fn ModelCard() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let open = RwSignal::new(LocalStorage::raw().get_item(CARD_KEY).ok().flatten().as_deref() == Some("open"));
    // Folded only with a model in place and nothing being fetched or confirmed.
    let folded = move || !open.get() && ctx.info.with(|i| i.is_some()) && !loading(ctx) && ctx.confirm_model.with(|m| m.is_none());
    view! {
        <Show when=folded fallback=move || view! { <FullCard open=open/> }>
            <FoldedCard open=open/>
        </Show>
    }
}

/// The card as one line: what is loaded, and the way back to the rest.
#[component]
fn FoldedCard(open: RwSignal<bool>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let line = move || {
        ctx.info
            .get()
            .map(|i| format!("{} · {} · {} · {}", i.name, i.precision.as_str(), i.backend, threads_text(ctx)))
            .unwrap_or_default()
    };
    view! {
        <section class="card model folded" aria-labelledby="model-h">
            <h2 id="model-h">"Model"</h2>
            <p role="group"
                class="model-info"
                aria-label="Loaded model"
                data-precision=move || ctx.info.get().map(|i| i.precision.as_str()).unwrap_or_default()
                data-cached=move || ctx.info.get().map(|i| i.from_cache.to_string()).unwrap_or_default()
                title=move || ctx.info.get().map(|i| loaded_line(&i)).unwrap_or_default()
            >
                {line}
            </p>
            <button class="secondary" aria-label="Change the model, precision or backend" on:click=move |_| set_open(open, true)>"Change"</button>
        </section>
    }
}

#[component]
fn FullCard(open: RwSignal<bool>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // The worker gets the File itself (a handle, not its bytes): it reads
    // it into wasm memory only while it builds the model, and again on a
    // precision change.
    let load_file = move |file: web_sys::File| {
        let p = ctx.st.with_untracked(|s| s.precision);
        ctx.load(ModelLocation::File { name: file.name() }, p, Some(file.into()));
    };
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|l| l.get(0)) {
            load_file(f);
        }
    };
    view! {
        <section class="card model" aria-labelledby="model-h" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <div class="row card-head">
                <h2 id="model-h">"Model"</h2>
                <Show when=move || ctx.info.with(|i| i.is_some())>
                    <button class="secondary" aria-label="Fold the model card to one line" on:click=move |_| set_open(open, false)>"Fold"</button>
                </Show>
            </div>
            <Source load_file=load_file/>
            <PrecisionRow/>
            <Download/>
            <Loaded/>
            <GpuSection/>
            <Benchmark/>
        </section>
    }
}

/// The source picker: the default model, a model from the menu
/// (`state::catalogue`), a GGUF or Hugging Face URL, or a local file; and
/// the Hugging Face token gated repositories need.
#[component]
fn Source(load_file: impl Fn(web_sys::File) + Copy + 'static) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let url = RwSignal::new(String::new());
    let kind = RwSignal::new("default".to_string());
    let chosen = move || kind.get().strip_prefix("cat:").and_then(catalogue::by_key);
    let on_load = move |_| {
        let mut p = ctx.st.with_untracked(|s| s.precision);
        let typed = url.get_untracked().trim().to_string();
        if let (true, Some(why)) = (kind.get_untracked() == "default", super::super::ctx::missing_default_model()) {
            ctx.error.set(Some(why));
            return;
        }
        let src = match kind.get_untracked().as_str() {
            "gguf" => ModelLocation::Gguf { url: typed },
            "hf" => ModelLocation::HfRepo { base: typed },
            k => match k.strip_prefix("cat:").and_then(catalogue::by_key) {
                Some(m) => {
                    // A model whose f32 weights do not fit loads quantized.
                    if m.precision == Precision::Quantized && p == Precision::F32 {
                        p = Precision::Quantized;
                        ctx.st.update(|s| s.precision = p);
                    }
                    m.location()
                }
                None => super::super::ctx::default_model(),
            },
        };
        if let ModelLocation::Gguf { url } | ModelLocation::HfRepo { base: url } = &src {
            if url.is_empty() {
                ctx.error.set(Some("enter a URL first".into()));
                return;
            }
        }
        let shared = if kind.get_untracked() == "default" { None } else { Some(src.clone()) };
        ctx.st.update(|s| s.model = shared);
        ctx.load(src, p, None);
    };
    let on_file = move |ev: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            load_file(f);
        }
    };
    view! {
        <div class="row">
            <label>
                "Source "
                <select aria-label="Model source" on:change=move |ev| kind.set(event_target_value(&ev)) prop:value=move || kind.get()>
                    <option value="default">"SmolLM2-135M-Instruct (default)"</option>
                    <optgroup label="From the Hugging Face hub">
                        {catalogue::CATALOGUE
                            .iter()
                            .map(|m| view! { <option value=format!("cat:{}", m.key)>{format!("{} ({} MB)", m.label, m.download_mb)}</option> })
                            .collect_view()}
                    </optgroup>
                    <option value="gguf">"GGUF file by URL"</option>
                    <option value="hf">"Hugging Face repository (URL)"</option>
                </select>
            </label>
            <Show when=move || kind.get() == "gguf" || kind.get() == "hf">
                <input
                    type="url"
                    class="wide"
                    aria-label="Model URL"
                    placeholder=move || if kind.get() == "hf" { "https://huggingface.co/ORG/REPO/resolve/main/" } else { "https://…/model.gguf" }
                    prop:value=move || url.get()
                    on:input=move |ev| url.set(event_target_value(&ev))
                />
            </Show>
            <button on:click=on_load disabled=move || loading(ctx)>"Load"</button>
            <label class="file">
                "or open a GGUF file "
                <input type="file" accept=".gguf" aria-label="Open a model file" on:change=on_file />
            </label>
        </div>
        <Show when=move || chosen().is_some()>
            <p class="muted" role="group" aria-label="Chosen model">
                {move || chosen().map(|m| format!("{} · {} · {}", m.label, m.repo, m.summary())).unwrap_or_default()}
            </p>
        </Show>
        <Show when=move || kind.get() != "default">
            <div class="row">
                <TokenField label="Hugging Face token " placeholder="hf_… (gated models only)"/>
                <span class="muted">"Kept in this tab's memory only: not in links, caches or storage; sent only to huggingface.co and this site."</span>
            </div>
        </Show>
    }
}

/// Precision (reloads), the kernels for the file's blocks (switched in
/// place; in f32 precision a reload, since the dequantize-all path drops
/// the blocks), the backend.
#[component]
fn PrecisionRow() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let on_precision = move |ev: web_sys::Event| {
        if let Ok(p) = event_target_value(&ev).parse::<Precision>() {
            ctx.st.update(|s| s.precision = p);
            ctx.load(ctx.model_source(), p, None);
        }
    };
    let on_kernels = move |ev: web_sys::Event| {
        if let Ok(k) = event_target_value(&ev).parse::<Kernels>() {
            ctx.st.update(|s| s.kernels = k);
            match ctx.st.with_untracked(|s| s.precision) {
                Precision::F32 => ctx.load(ctx.model_source(), Precision::F32, None),
                Precision::Quantized => ctx.send(Request::SetKernels { kernels: k }),
            }
        }
    };
    view! {
        <div class="row">
            <label>
                "Precision "
                <select aria-label="Precision" on:change=on_precision prop:value=move || ctx.st.with(|s| s.precision.as_str()) disabled=move || loading(ctx)>
                    {Precision::ALL
                        .into_iter()
                        .map(|p| view! { <option value=p.as_str() selected=move || ctx.st.with(|s| s.precision) == p>{p.as_str()}</option> })
                        .collect_view()}
                </select>
            </label>
            <label title=move || match ctx.st.with(|s| s.precision) {
                Precision::F32 => "f32 precision: scalpel (auto) multiplies the file's quantized blocks exactly in f32; candle dequantizes every weight first (5x the memory, the reference path)",
                Precision::Quantized => "quantized precision: scalpel (auto) or candle int8-activation kernels",
            }>
                "Kernels "
                <select aria-label="Kernels" on:change=on_kernels disabled=move || loading(ctx)>
                    {Kernels::ALL.into_iter().map(|k| view! { <option value=k.as_str() selected=move || ctx.st.with(|s| s.kernels) == k>{k.as_str()}</option> }).collect_view()}
                </select>
            </label>
            <span role="group" class="muted" aria-label="Backend">
                {move || ctx.info.get().map(|i| format!("backend: {} · {}", i.backend, threads_text(ctx))).unwrap_or_else(|| format!("backend: CPU wasm simd128 · {}", threads_text(ctx)))}
            </span>
            <Threads/>
            <button class="secondary" on:click=move |_| ctx.send(Request::ClearCache) disabled=move || loading(ctx)>"Clear cached models"</button>
        </div>
    }
}

/// How many threads the running worker's kernels use, and why only one when
/// more were asked for.
fn threads_text(ctx: Ctx) -> String {
    match ctx.threads_running.get() {
        None => "starting".into(),
        Some((1, Some(why))) => format!("1 thread ({why})"),
        Some((1, None)) => "1 thread".into(),
        Some((n, _)) => format!("{n} threads"),
    }
}

/// The thread count (restarts the worker: a pool is set up once per worker).
#[component]
fn Threads() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<crate::app::panels::Panels>();
    let on_change = move |ev: web_sys::Event| {
        if let Ok(n) = event_target_value(&ev).parse::<u32>() {
            if n != ctx.threads.get_untracked() {
                ctx.set_threads(n, panels);
            }
        }
    };
    let cores = crate::app::threads::cores();
    view! {
        <label title=format!("Threads the kernels split each product over (this machine reports {cores} cores; default {}). More than one needs a cross-origin isolated page; changing it restarts the engine worker, which reloads the model from the browser cache.", crate::app::threads::default())>
            "Threads "
            <select aria-label="Threads" on:change=on_change disabled=move || loading(ctx)>
                {(1..=crate::app::threads::max())
                    .map(|n| view! { <option value=n.to_string() selected=move || ctx.threads.get() == n>{n.to_string()}</option> })
                    .collect_view()}
            </select>
        </label>
    }
}

/// The download: a progress bar, bytes and speed.
#[component]
fn Download() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let percent = move || {
        let (l, t, _) = ctx.progress.get();
        t.filter(|t| *t > 0.0).map(|t| (100.0 * l / t).min(100.0))
    };
    let speed = move || {
        let (l, _, t0) = ctx.progress.get();
        let dt = (crate::js::now_ms() - t0) / 1e3;
        if dt > 0.05 && l > 0.0 {
            format!(" · {:.1} MB/s", l / 1e6 / dt)
        } else {
            String::new()
        }
    };
    let text = move || {
        let (l, t, _) = ctx.progress.get();
        let base = match (t, percent()) {
            (Some(t), Some(p)) => format!("{} / {} ({p:.0}%)", fmt_mb(l), fmt_mb(t)),
            _ => fmt_mb(l),
        };
        if loading(ctx) {
            format!("{base}{}", speed())
        } else {
            base
        }
    };
    view! {
        <div class="row">
            <progress aria-label="Model download" max="100" value=move || percent().map(|p| format!("{p:.1}")).unwrap_or_default()></progress>
            <span role="group" class="progress-text" aria-label="Download progress">{text}</span>
        </div>
    }
}

/// What is loaded: name, precision, size, where it came from, timings, shape.
#[component]
fn Loaded() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let line = move || match ctx.info.get() {
        None => "No model loaded".to_string(),
        Some(i) => loaded_line(&i),
    };
    view! {
        <p role="group"
            class="model-info"
            aria-label="Loaded model"
            data-precision=move || ctx.info.get().map(|i| i.precision.as_str()).unwrap_or_default()
            data-cached=move || ctx.info.get().map(|i| i.from_cache.to_string()).unwrap_or_default()
        >
            {line}
        </p>
    }
}

/// Everything about the loaded model, on one line.
fn loaded_line(i: &crate::protocol::LoadedModel) -> String {
    format!(
        "Loaded: {} · {} · {} · {} {:.1} s · build {:.1} s · {} layers × {} heads, d_model {}",
        i.name,
        i.precision.as_str(),
        fmt_mb(i.bytes),
        if i.from_cache { "from cache" } else { "download" },
        i.fetch_ms / 1e3,
        i.load_ms / 1e3,
        i.summary.n_layers,
        i.summary.n_heads,
        i.summary.d_model
    )
}

/// The kernels' threads against the worker's thread alone, in one run
/// (`Request::BenchThreads`): on a shared machine, timing each thread count
/// in its own page mostly measures when it ran.
#[component]
fn ThreadGainRow(llama_running: RwSignal<bool>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let g = ctx.thread_gain;
    let threads = move || ctx.threads_running.get().map_or(1, |t| t.0);
    let attr = move |f: fn(&crate::protocol::ThreadGain) -> String| move || g.get().map(|g| f(&g)).unwrap_or_default();
    view! {
        <div class="row">
            <button on:click=move |_| { g.set(None); ctx.send(Request::BenchThreads { prompt_tokens: 64, decode_tokens: 64, runs: 6 }) }
                disabled=move || !ctx.ready() || llama_running.get() || threads() < 2>"Against 1 thread"</button>
            // Only while it runs: the page's other panels have Stop buttons of their own.
            <Show when=move || ctx.busy("bench-threads")>
                <StopButton kind="bench-threads"/>
            </Show>
            <span class="muted">{move || if threads() < 2 {
                "compares the kernels' threads with one: needs more than 1 thread (Threads, above)".to_string()
            } else {
                format!("{} threads and 1 taking turns in this worker, over 6 runs of the benchmark's prompt", threads())
            }}</span>
        </div>
        <p role="group"
            aria-label="Thread gain"
            data-threads=attr(|g| g.threads.to_string())
            data-decode-gain=attr(|g| g.decode_gain.to_string())
            data-prefill-gain=attr(|g| g.prefill_gain.to_string())
        >
            {move || g.get().map(|g| format!(
                "{} threads against 1 ({}): decode {:.2}× ({:.1} against {:.1} tok/s, median of {} pairs of {}-step windows) · prefill {:.2}× ({:.1} against {:.1} tok/s, {} pairs of runs)",
                g.threads, g.precision.as_str(), g.decode_gain, g.decode_tok_s_all, g.decode_tok_s_one, g.decode_pairs, g.window,
                g.prefill_gain, g.prefill_tok_s_all, g.prefill_tok_s_one, g.prefill_pairs
            )).unwrap_or_default()}
        </p>
    }
}

/// The benchmark, measured like `scalpel bench`.
#[component]
fn Benchmark() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let b = ctx.bench;
    let attr = move |f: fn(&crate::protocol::BenchResult) -> String| move || b.get().map(|b| f(&b)).unwrap_or_default();
    let (opened, llama_running) = (RwSignal::new(false), RwSignal::new(false));
    view! {
        <details class="bench" on:toggle=move |ev| opened.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary>"Benchmark"</summary>
            <div class="row">
                <button on:click=move |_| { b.set(None); ctx.send(Request::Bench { prompt_tokens: 64, decode_tokens: 64, rounds: 3 }) }
                    disabled=move || !ctx.ready() || llama_running.get()>"Run benchmark"</button>
                <span class="muted">"64-token prefill + 64 decode steps, median of 3 after a warm-up run, this tab"</span>
            </div>
            <p role="group"
                aria-label="Benchmark result"
                data-backend=attr(|b| b.backend.clone())
                data-prefill=attr(|b| b.prefill_tok_s.to_string())
                data-decode=attr(|b| b.decode_tok_s.to_string())
                data-decode-tokens=attr(|b| b.decode_tokens.to_string())
                data-wasm-memory=attr(|b| b.wasm_memory_bytes.to_string())
                data-weight-bytes=attr(|b| b.weight_bytes.to_string())
            >
                {move || b.get().map(|b| format!(
                    "{}: prefill {:.1} tok/s ({} tokens) · decode {:.1} tok/s ({} tokens) · median of {} after a warm-up · weights {:.0} MB, worker memory {:.0} MB",
                    b.backend, b.prefill_tok_s, b.prompt_tokens, b.decode_tok_s, b.decode_tokens, b.rounds,
                    b.weight_bytes as f64 / 1e6, b.wasm_memory_bytes as f64 / 1e6
                )).unwrap_or_default()}
            </p>
            <ThreadGainRow llama_running=llama_running/>
            <LlamaCppComparison opened=opened running=llama_running/>
        </details>
    }
}
