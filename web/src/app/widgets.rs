//! Page chrome (model card, presets, share bar) and shared views (heatmap, bars).

use super::{copy_text, link_for, Ctx, Phase};
use crate::protocol::{Kernels, ModelSource, Precision, Request, Response};
use crate::state::presets;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

pub fn fmt_mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

/// A token made visible: quotes, escaped whitespace.
pub fn show_token(t: &str) -> String {
    format!("{t:?}")
}

/// Diverging colour for `v` on a scale symmetric around 0 with `max` = |v|max:
/// blue (negative) – white – red (positive). Readable in print (no reliance
/// on background images) and for red–green colour blindness.
pub fn diverging(v: f32, max: f32) -> String {
    let t = if max > 0.0 { (v / max).clamp(-1.0, 1.0) } else { 0.0 };
    let (r, g, b) = if t >= 0.0 { (178.0, 24.0, 43.0) } else { (33.0, 102.0, 172.0) };
    let a = t.abs();
    let mix = |c: f32| (255.0 + (c - 255.0) * a).round() as u8;
    format!("rgb({},{},{})", mix(r), mix(g), mix(b))
}

/// Sequential colour for `t` in [0, 1]: white → dark blue.
pub fn sequential(t: f32) -> String {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: f32, b: f32| (a + (b - a) * t).round() as u8;
    format!("rgb({},{},{})", mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// Text colour that stays readable on `sequential(t)` / `diverging`.
pub fn ink(strength: f32) -> &'static str {
    if strength > 0.55 {
        "#fff"
    } else {
        "#111"
    }
}

/// A labelled heatmap table. Each cell carries `data-value` (full precision)
/// and a title with its row, column and value.
#[component]
pub fn Heatmap(
    label: String,
    rows: Vec<String>,
    cols: Vec<String>,
    values: Vec<Vec<f32>>,
    /// Diverging around 0 (else sequential on [0, max]).
    diverging_scale: bool,
    #[prop(optional)] cell_text: Option<Vec<Vec<String>>>,
    #[prop(optional)] cell_titles: Option<Vec<Vec<String>>>,
    #[prop(optional)] fixed_max: Option<f32>,
) -> impl IntoView {
    let max = fixed_max.unwrap_or_else(|| values.iter().flatten().fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m }));
    let legend = if diverging_scale { format!("colour scale: −{max:.3} (blue) · 0 (white) · +{max:.3} (red)") } else { format!("colour scale: 0 (white) … {max:.3} (dark blue)") };
    let header = cols.iter().map(|c| view! { <th scope="col" class="col-label">{show_label(c)}</th> }).collect_view();
    let body = values
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let rl = rows.get(r).cloned().unwrap_or_default();
            let cells = row
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    let bg = if diverging_scale { diverging(v, max) } else { sequential(if max > 0.0 { v / max } else { 0.0 }) };
                    let strength = if max > 0.0 { (v.abs() / max).min(1.0) } else { 0.0 };
                    let title = cell_titles
                        .as_ref()
                        .and_then(|t| t.get(r).and_then(|x| x.get(c)).cloned())
                        .unwrap_or_else(|| format!("{rl} · {} (col {c}): {v:.4}", cols.get(c).map(|s| show_token(s)).unwrap_or_default()));
                    let text = cell_text.as_ref().and_then(|t| t.get(r).and_then(|x| x.get(c)).cloned()).unwrap_or_default();
                    view! {
                        <td
                            class="cell"
                            data-value=v.to_string()
                            title=title
                            style=format!("background:{bg};color:{}", ink(strength))
                        >
                            {text}
                        </td>
                    }
                })
                .collect_view();
            view! {
                <tr>
                    <th scope="row" class="row-label">{rl.clone()}</th>
                    {cells}
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="heatmap-wrap">
            <table class="heatmap" aria-label=label.clone() data-rows=values.len().to_string() data-cols=cols.len().to_string()>
                <thead>
                    <tr>
                        <th></th>
                        {header}
                    </tr>
                </thead>
                <tbody>{body}</tbody>
            </table>
            <p class="legend">{legend}</p>
        </div>
    }
}

fn show_label(s: &str) -> String {
    // Token labels: show spaces and newlines visibly, keep them short.
    let t: String = s.replace(' ', "·").replace('\n', "⏎").replace('Ġ', "·").replace('Ċ', "⏎");
    if t.chars().count() > 10 {
        format!("{}…", t.chars().take(9).collect::<String>())
    } else {
        t
    }
}

/// Horizontal bars for (label, value); signed values grow left/right from the middle.
#[component]
pub fn Bars(
    label: String,
    items: Vec<(String, f32)>,
    #[prop(optional)] signed: bool,
    #[prop(optional)] percent: bool,
    /// Labels are names (L3H2, L5.mlp), not tokens: shown as they are.
    #[prop(optional)]
    names: bool,
) -> impl IntoView {
    let max = items.iter().fold(0f32, |m, (_, v)| m.max(v.abs())).max(1e-9);
    let rows = items
        .into_iter()
        .map(|(name, v)| {
            let w = 100.0 * v.abs() / max;
            let style = if signed {
                let w = w / 2.0;
                if v >= 0.0 { format!("margin-left:50%;width:{w:.1}%") } else { format!("margin-left:{:.1}%;width:{w:.1}%", 50.0 - w) }
            } else {
                format!("width:{w:.1}%")
            };
            // Signed bars use the heatmaps' colours: red positive, blue negative.
            let cls = match (signed, v < 0.0) {
                (false, _) => "bar",
                (true, false) => "bar pos",
                (true, true) => "bar neg",
            };
            let shown = if percent { format!("{:.1}%", 100.0 * v) } else { format!("{v:.3}") };
            view! {
                <li data-value=v.to_string()>
                    <span class="bar-label">{if names { name.clone() } else { show_token(&name) }}</span>
                    <span class="bar-track"><span class=cls style=style></span></span>
                    <span class="bar-value">{shown}</span>
                </li>
            }
        })
        .collect_view();
    view! { <ul class="bars" aria-label=label>{rows}</ul> }
}

#[component]
pub fn ModelCard() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let url_input = RwSignal::new(String::new());
    let kind = RwSignal::new("default".to_string());
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
    let loading = move || matches!(ctx.phase.get(), Phase::Downloading | Phase::Loading | Phase::Starting);
    let on_load = move |_| {
        let p = ctx.st.with_untracked(|s| s.precision);
        let src = match kind.get_untracked().as_str() {
            "gguf" => ModelSource::Gguf { url: url_input.get_untracked().trim().to_string() },
            "hf" => ModelSource::HfRepo { base: url_input.get_untracked().trim().to_string() },
            _ => ModelSource::Gguf { url: crate::DEFAULT_MODEL_URL.into() },
        };
        if let ModelSource::Gguf { url } | ModelSource::HfRepo { base: url } = &src {
            if url.is_empty() {
                ctx.error.set(Some("enter a URL first".into()));
                return;
            }
        }
        let shared = if kind.get_untracked() == "default" { None } else { Some(src.clone()) };
        ctx.st.update(|s| s.model = shared);
        ctx.load(src, p, None);
    };
    let load_file = move |file: web_sys::File| {
        let name = file.name();
        let p = ctx.st.with_untracked(|s| s.precision);
        ctx.status.set(format!("Reading {name}…"));
        wasm_bindgen_futures::spawn_local(async move {
            match JsFuture::from(file.array_buffer()).await {
                Ok(buf) => ctx.load(ModelSource::File { name }, p, Some(buf)),
                Err(e) => ctx.error.set(Some(format!("{name}: could not read the file: {}", crate::js::js_err(e)))),
            }
        });
    };
    let on_file = move |ev: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|l| l.get(0)) {
            load_file(f);
        }
    };
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|l| l.get(0)) {
            load_file(f);
        }
    };
    let on_precision = move |ev: web_sys::Event| {
        if let Some(p) = Precision::parse(&event_target_value(&ev)) {
            ctx.st.update(|s| s.precision = p);
            ctx.load(ctx.model_source(), p, None);
        }
    };
    view! {
        <section class="card model" aria-labelledby="model-h" on:dragover=|ev: web_sys::DragEvent| ev.prevent_default() on:drop=on_drop>
            <h2 id="model-h">"Model"</h2>
            <div class="row">
                <label>
                    "Source "
                    <select aria-label="Model source" on:change=move |ev| kind.set(event_target_value(&ev)) prop:value=move || kind.get()>
                        <option value="default">"SmolLM2-135M-Instruct (default)"</option>
                        <option value="gguf">"GGUF file by URL"</option>
                        <option value="hf">"Hugging Face repository (URL)"</option>
                    </select>
                </label>
                <Show when=move || kind.get() != "default">
                    <input
                        type="url"
                        class="wide"
                        aria-label="Model URL"
                        placeholder=move || if kind.get() == "hf" { "https://huggingface.co/ORG/REPO/resolve/main/" } else { "https://…/model.gguf" }
                        prop:value=move || url_input.get()
                        on:input=move |ev| url_input.set(event_target_value(&ev))
                    />
                </Show>
                <button on:click=on_load disabled=loading>"Load"</button>
                <label class="file">
                    "or open a GGUF file "
                    <input type="file" accept=".gguf" aria-label="Open a model file" on:change=on_file />
                </label>
            </div>
            <div class="row">
                <label>
                    "Precision "
                    <select aria-label="Precision" on:change=on_precision prop:value=move || ctx.st.with(|s| s.precision.as_str()) disabled=loading>
                        {Precision::ALL
                            .into_iter()
                            .map(|p| view! { <option value=p.as_str() selected=move || ctx.st.with(|s| s.precision) == p>{p.as_str()}</option> })
                            .collect_view()}
                    </select>
                </label>
                <Show when=move || ctx.st.with(|s| s.precision == Precision::Quantized)>
                    <label>
                        "Kernels "
                        <select aria-label="Kernels" on:change=move |ev| {
                            if let Some(k) = Kernels::parse(&event_target_value(&ev)) {
                                ctx.st.update(|s| s.kernels = k);
                                ctx.send(Request::SetKernels { kernels: k });
                            }
                        } disabled=loading>
                            {Kernels::ALL.into_iter().map(|k| view! { <option value=k.as_str() selected=move || ctx.st.with(|s| s.kernels) == k>{k.as_str()}</option> }).collect_view()}
                        </select>
                    </label>
                </Show>
                <span class="muted" aria-label="Backend">{move || ctx.info.get().map(|i| format!("backend: {} · 1 thread", i.backend)).unwrap_or_else(|| "backend: CPU wasm simd128 · 1 thread".into())}</span>
                <button class="secondary" on:click=move |_| ctx.send(Request::ClearCache) disabled=loading>"Clear cached models"</button>
            </div>
            <div class="row">
                <progress aria-label="Model download" max="100" value=move || percent().map(|p| format!("{p:.1}")).unwrap_or_default()></progress>
                <span class="progress-text" aria-label="Download progress">
                    {move || {
                        let (l, t, _) = ctx.progress.get();
                        let base = match (t, percent()) {
                            (Some(t), Some(p)) => format!("{} / {} ({p:.0}%)", fmt_mb(l), fmt_mb(t)),
                            _ => fmt_mb(l),
                        };
                        if loading() { format!("{base}{}", speed()) } else { base }
                    }}
                </span>
            </div>
            <p class="model-info" aria-label="Loaded model" data-precision=move || ctx.info.get().map(|i| i.precision.as_str()).unwrap_or_default() data-cached=move || ctx.info.get().map(|i| i.from_cache.to_string()).unwrap_or_default()>
                {move || match ctx.info.get() {
                    None => "No model loaded".to_string(),
                    Some(i) => format!(
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
                    ),
                }}
            </p>
            <GpuSection/>
            <details class="bench">
                <summary>"Benchmark"</summary>
                <div class="row">
                    <button on:click=move |_| { ctx.bench.set(None); ctx.send(Request::Bench { prompt_tokens: 64, decode_tokens: 64, rounds: 3 }) } disabled=move || !ctx.ready()>"Run benchmark"</button>
                    <span class="muted">"64-token prefill + 64 decode steps, median of 3, this tab"</span>
                </div>
                <p aria-label="Benchmark result" data-backend=move || ctx.bench.get().map(|b| b.backend).unwrap_or_default() data-prefill=move || ctx.bench.get().map(|b| b.prefill_tok_s.to_string()).unwrap_or_default() data-decode=move || ctx.bench.get().map(|b| b.decode_tok_s.to_string()).unwrap_or_default() data-decode-tokens=move || ctx.bench.get().map(|b| b.decode_tokens.to_string()).unwrap_or_default()>
                    {move || ctx.bench.get().map(|b| format!(
                        "{}: prefill {:.1} tok/s ({} tokens) · decode {:.1} tok/s ({} tokens) · median of {}",
                        b.backend, b.prefill_tok_s, b.prompt_tokens, b.decode_tok_s, b.decode_tokens, b.rounds
                    )).unwrap_or_default()}
                </p>
            </details>
        </section>
    }
}

#[component]
pub fn Presets() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <section class="card presets" aria-labelledby="presets-h">
            <h2 id="presets-h">"Worked examples"</h2>
            <ul class="preset-list">
                {presets()
                    .into_iter()
                    .map(|p| {
                        let st = p.state.clone();
                        view! {
                            <li>
                            <button
                                class="preset"
                                title=p.blurb
                                aria-label=format!("Preset: {}", p.title)
                                on:click=move |_| {
                                    let mut s = st.clone();
                                    // Keep the loaded model and precision.
                                    ctx.st.with_untracked(|cur| {
                                        s.model = cur.model.clone();
                                        s.precision = cur.precision;
                                    });
                                    let panel = s.panel;
                                    ctx.st.set(s);
                                    super::panels::run_panel(ctx, panel);
                                }
                            >
                                {p.title}
                            </button>
                            <span class="muted">{p.blurb}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        </section>
    }
}

#[component]
pub fn ShareBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let note = RwSignal::new(String::new());
    let snippet = RwSignal::new(String::new());
    let on_copy = move |_| {
        let link = ctx.st.with_untracked(|s| link_for(s, false));
        copy_text(&link);
        note.set("Link copied".into());
    };
    let on_embed = move |_| {
        let link = ctx.st.with_untracked(|s| link_for(s, true));
        let html = format!(
            "<iframe src=\"{}\" title=\"Scalpel: {}\" width=\"100%\" height=\"620\" style=\"border:1px solid #ddd;border-radius:8px\" loading=\"lazy\"></iframe>",
            link.replace('&', "&amp;").replace('"', "&quot;"),
            ctx.st.with_untracked(|s| s.panel.title())
        );
        copy_text(&html);
        snippet.set(html);
        note.set("Embed snippet copied".into());
    };
    view! {
        <div class="share">
            <button class="secondary" on:click=on_copy>"Copy link"</button>
            <button class="secondary" on:click=on_embed>"Embed"</button>
            <span class="muted" aria-live="polite">{move || note.get()}</span>
            <Show when=move || !snippet.get().is_empty()>
                <textarea class="snippet" aria-label="Embed snippet" readonly rows="3" prop:value=move || snippet.get()></textarea>
            </Show>
        </div>
    }
}

#[component]
pub fn EmbedHeader() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <header class="embed-header">
            <strong>"Scalpel"</strong>
            <span class="muted">{move || ctx.st.with(|s| s.panel.title())}</span>
            <a href=move || ctx.st.with(|s| link_for(s, false)) target="_blank" rel="noopener">"Open in Scalpel ↗"</a>
        </header>
    }
}

#[component]
pub fn EmbedStatus() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let percent = move || {
        let (l, t, _) = ctx.progress.get();
        t.filter(|t| *t > 0.0).map(|t| (100.0 * l / t).min(100.0))
    };
    view! {
        <Show when=move || ctx.info.get().is_none()>
            <div class="row">
                <progress aria-label="Model download" max="100" value=move || percent().map(|p| format!("{p:.1}")).unwrap_or_default()></progress>
                <span class="muted">{move || format!("{} {}", crate::protocol::ModelSource::label(&ctx.model_source()), percent().map(|p| format!("{p:.0}%")).unwrap_or_default())}</span>
            </div>
        </Show>
    }
}

pub fn event_target<T: JsCast>(ev: &web_sys::Event) -> T {
    ev.target().expect("event target").unchecked_into()
}

/// The WebGPU backend: start it on the loaded GGUF, run next tokens and a
/// greedy generation on it, benchmark it. Interventions and readouts run on
/// the CPU engine.
#[component]
fn GpuSection() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let allow_sw = RwSignal::new(false);
    let has_webgpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .ok()
        .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| !g.is_undefined());
    let gpu_ready = move || ctx.gpu.with(|g| g.is_some());
    let on_start = move |_| ctx.send(Request::GpuInit { allow_software: allow_sw.get_untracked() });
    let on_run = move |_| {
        let (prompt, max_new) = ctx.st.with_untracked(|s| (crate::protocol::Prompt { text: s.prompt.clone(), chat: s.chat }, s.sampling.max_new_tokens));
        ctx.gpu_result.set(None);
        ctx.send(Request::GpuRun { prompt, max_new_tokens: max_new, top_k: 5 });
    };
    let on_bench = move |_| {
        ctx.bench.set(None);
        // Up to 64 decode steps within a 3 s budget (a software adapter does 2).
        ctx.send(Request::GpuBench { prompt_tokens: 32, decode_tokens: 64, rounds: 1 });
    };
    view! {
        <details class="gpu">
            <summary>"WebGPU backend"</summary>
            <p class="muted">{if has_webgpu { "This browser offers WebGPU. Once started, the GPU runs comparisons (generation with the sampling settings; steer, scale, zero, mean over prompts, patch, project out and set a projection to a value, at residual, attention q/k/v/z and MLP hooks, applied on the GPU), next tokens and the benchmark, with the model's weights in the precision chosen above. Documents with other ops run on the CPU engine, with a note; so do patching sweeps and readouts." } else { "This browser does not offer WebGPU (navigator.gpu); the CPU engine runs everything." }}</p>
            <div class="row">
                <label class="check"><input type="checkbox" aria-label="Allow a software GPU adapter" prop:checked=move || allow_sw.get() on:change=move |ev| allow_sw.set(event_target_checked(&ev)) />"allow a software adapter (slow; for testing)"</label>
                <button class="secondary" on:click=on_start disabled=move || !ctx.ready() || !has_webgpu>"Start WebGPU"</button>
                <button class="secondary" on:click=on_run disabled=move || !ctx.ready() || !gpu_ready()>"Run on WebGPU"</button>
                <button class="secondary" on:click=on_bench disabled=move || !ctx.ready() || !gpu_ready()>"Benchmark WebGPU"</button>
            </div>
            <fieldset class="row" aria-label="Run comparisons on" disabled=move || !gpu_ready()>
                <legend>"Run comparisons on"</legend>
                <label class="check"><input type="radio" name="compare-backend" aria-label="CPU engine" prop:checked=move || !ctx.use_gpu.get() on:change=move |_| ctx.use_gpu.set(false) />"CPU engine (wasm)"</label>
                <label class="check"><input type="radio" name="compare-backend" aria-label="WebGPU" prop:checked=move || ctx.use_gpu.get() on:change=move |_| ctx.use_gpu.set(true) />"WebGPU"</label>
            </fieldset>
            <p aria-label="WebGPU adapter" data-software=move || ctx.gpu.with(|g| match g { Some(Response::GpuReady { software, .. }) => software.to_string(), _ => String::new() })>
                {move || ctx.gpu.with(|g| match g {
                    Some(Response::GpuReady { detail, load_ms, .. }) => format!("WebGPU: {detail} · weights uploaded in {:.1} s", load_ms / 1e3),
                    _ => "WebGPU: not started".to_string(),
                })}
            </p>
            {move || ctx.gpu_result.with(|r| match r {
                Some(Response::GpuResult { next, ids, text, first_token_ms, decode_tok_s }) => {
                    let items: Vec<(String, f32)> = next.iter().map(|t| (t.text.clone(), t.prob)).collect();
                    let next_ids = next.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(",");
                    let gen_ids = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                    Some(view! {
                        <div aria-label="WebGPU result" data-next-ids=next_ids data-ids=gen_ids>
                            <Bars label="WebGPU next-token probabilities".into() items=items percent=true/>
                            <p class="generation">{text.clone()}</p>
                            <p class="muted">{format!("first token after {first_token_ms:.0} ms · {decode_tok_s:.1} tokens/s")}</p>
                        </div>
                    })
                }
                _ => None,
            })}
        </details>
    }
}
