//! The intervention stack: add, reorder, toggle, delete; each item with the
//! controls its operation needs. The stack is part of the shared state and
//! becomes the intervention document the worker runs.

use super::widgets::{event_target, Bars};
use super::Ctx;
use crate::protocol::{Request, Response};
use crate::state::{lines, StackItem, UiOp, VectorSpec};
use leptos::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Hook sites offered in the picker (TransformerLens names after `blocks.{l}.`).
pub const SITES: [&str; 14] = [
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_z",
    "attn.hook_pattern",
    "mlp.hook_pre",
    "mlp.hook_post",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
];

fn per_head(site: &str) -> bool {
    site.starts_with("attn.")
}

fn update(ctx: Ctx, id: u32, f: impl FnOnce(&mut StackItem)) {
    ctx.st.update(|s| {
        if let Some(it) = s.stack.iter_mut().find(|i| i.id == id) {
            f(it);
        }
    });
}

fn read<T: 'static>(ctx: Ctx, id: u32, f: impl Fn(&StackItem) -> T) -> Option<T> {
    ctx.st.with(|s| s.stack.iter().find(|i| i.id == id).map(f))
}

#[component]
pub fn Stack() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let add_op = RwSignal::new(UiOp::Add);
    let on_add = move |_| {
        let n = ctx.n_layers();
        ctx.st.update(|s| {
            let id = s.next_item_id();
            s.stack.push(StackItem::new(id, add_op.get_untracked(), n));
        });
    };
    view! {
        <section class="stack" aria-labelledby="stack-h">
            <h3 id="stack-h">"Interventions"</h3>
            <Show when=move || ctx.st.with(|s| s.stack.is_empty())>
                <p class="muted">"No interventions: the intervened column is the baseline. Add one below or pick a worked example."</p>
            </Show>
            <ol class="items">
                <For each=move || ctx.st.with(|s| s.stack.iter().map(|i| i.id).collect::<Vec<_>>()) key=|id| *id children=move |id| view! { <Item id=id/> }/>
            </ol>
            <div class="row">
                <label>
                    "New "
                    <select aria-label="New intervention type" on:change=move |ev| { if let Some(o) = UiOp::parse(&event_target_value(&ev)) { add_op.set(o) } }>
                        {UiOp::ALL.into_iter().map(|o| view! { <option value=o.as_str()>{o.label()}</option> }).collect_view()}
                    </select>
                </label>
                <button on:click=on_add>"Add intervention"</button>
            </div>
            <DocumentView/>
        </section>
    }
}

#[component]
fn Item(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let index = move || ctx.st.with(|s| s.stack.iter().position(|i| i.id == id).map(|p| p + 1).unwrap_or(0));
    let op = move || read(ctx, id, |i| i.op).unwrap_or(UiOp::Add);
    let field = move |f: fn(&StackItem) -> String| move || read(ctx, id, f).unwrap_or_default();
    let mv = move |delta: i32| {
        ctx.st.update(|s| {
            if let Some(p) = s.stack.iter().position(|i| i.id == id) {
                let q = p as i32 + delta;
                if q >= 0 && (q as usize) < s.stack.len() {
                    s.stack.swap(p, q as usize);
                }
            }
        })
    };
    let n_layers = move || ctx.n_layers();
    let label = move |what: &str| format!("Intervention {} {what}", index());
    view! {
        <li class="item" class:off=move || !read(ctx, id, |i| i.enabled).unwrap_or(true) aria-label=move || format!("Intervention {}", index())>
            <div class="row item-head">
                <strong>{move || format!("#{}", index())}</strong>
                <select aria-label=move || label("operation") on:change=move |ev| {
                    if let Some(o) = UiOp::parse(&event_target_value(&ev)) {
                        let n = ctx.n_layers();
                        update(ctx, id, |it| { let keep = it.clone(); *it = StackItem::new(id, o, n); it.enabled = keep.enabled; if o.needs_vector() && keep.op.needs_vector() { it.vector = keep.vector; } });
                    }
                }>
                    {UiOp::ALL.into_iter().map(|o| view! { <option value=o.as_str() selected=move || op() == o>{o.label()}</option> }).collect_view()}
                </select>
                <label class="check">
                    <input type="checkbox" aria-label=move || label("enabled") prop:checked=move || read(ctx, id, |i| i.enabled).unwrap_or(true) on:change=move |ev| { let v = event_target_checked(&ev); update(ctx, id, |it| it.enabled = v) } />
                    "on"
                </label>
                <span class="spacer"></span>
                <button class="icon" aria-label=move || label("move up") on:click=move |_| mv(-1)>"↑"</button>
                <button class="icon" aria-label=move || label("move down") on:click=move |_| mv(1)>"↓"</button>
                <button class="icon danger" aria-label=move || label("delete") on:click=move |_| ctx.st.update(|s| s.stack.retain(|i| i.id != id))>"✕"</button>
            </div>
            <Show when=move || op() == UiOp::Json fallback=move || view! {
                <div class="row">
                    <label>"Layer "
                        <select aria-label=move || label("layer") on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.layer = v.parse().ok()) }>
                            <option value="all" selected=move || read(ctx, id, |i| i.layer.is_none()).unwrap_or(false)>"all layers"</option>
                            {move || (0..n_layers()).map(|l| view! { <option value=l.to_string() selected=move || read(ctx, id, |i| i.layer == Some(l)).unwrap_or(false)>{l}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>"Hook "
                        <select aria-label=move || label("hook") on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.site = v) }>
                            {SITES.into_iter().map(|s| view! { <option value=s selected=move || read(ctx, id, |i| i.site == s).unwrap_or(false)>{s}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>"Positions "
                        <input type="text" class="short" aria-label=move || label("positions") title="all, prompt, generated, a list like 0,-1 or a range like 2..5" prop:value=field(|i| i.positions.clone()) on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.positions = v) } />
                    </label>
                    <Show when=move || read(ctx, id, |i| per_head(&i.site)).unwrap_or(false)>
                        <label>"Heads "
                            <input type="text" class="short" placeholder="all" aria-label=move || label("heads") prop:value=field(|i| i.heads.clone()) on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.heads = v) } />
                        </label>
                    </Show>
                    <Show when=move || matches!(op(), UiOp::Scale | UiOp::Zero | UiOp::Mean)>
                        <label>"Units "
                            <input type="text" class="short" placeholder="all" title="neuron / dimension indices of the last axis" aria-label=move || label("neurons") prop:value=field(|i| i.neurons.clone()) on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.neurons = v) } />
                        </label>
                    </Show>
                </div>
                <Show when=move || matches!(op(), UiOp::Add | UiOp::Scale)>
                    <Strength id=id/>
                </Show>
                <Show when=move || op().needs_vector()>
                    <VectorBuilder id=id/>
                </Show>
            }>
                <textarea class="json" rows="4" aria-label=move || label("JSON") prop:value=field(|i| i.json.clone()) on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.json = v) }></textarea>
                <p class="muted">"Any intervention of the document format (docs/interventions.md): patch, set_projection, knockout, kv_add, low_rank, insert, conditional…"</p>
            </Show>
        </li>
    }
}

/// Strength: a log-scale slider (|s| from 0.01 to 100) and a numeric field.
#[component]
fn Strength(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = move || read(ctx, id, |i| i.strength).unwrap_or(1.0);
    let index = move || ctx.st.with(|st| st.stack.iter().position(|i| i.id == id).map(|p| p + 1).unwrap_or(0));
    let is_scale = move || read(ctx, id, |i| i.op == UiOp::Scale).unwrap_or(false);
    view! {
        <div class="row">
            <label>{move || if is_scale() { "Factor " } else { "Strength " }}
                <input
                    type="range"
                    min="-2"
                    max="2"
                    step="0.01"
                    aria-label=move || format!("Intervention {} strength slider (log scale)", index())
                    prop:value=move || format!("{:.2}", s().abs().max(0.01).log10())
                    on:input=move |ev| {
                        if let Ok(x) = event_target_value(&ev).parse::<f32>() {
                            update(ctx, id, |it| {
                                let sign = if it.strength < 0.0 { -1.0 } else { 1.0 };
                                it.strength = sign * (10f32.powf(x) * 100.0).round() / 100.0;
                            })
                        }
                    }
                />
            </label>
            <input
                type="number"
                step="0.1"
                class="short"
                aria-label=move || format!("Intervention {} strength", index())
                prop:value=move || s().to_string()
                on:change=move |ev| {
                    if let Ok(x) = event_target_value(&ev).parse::<f32>() {
                        if x.is_finite() {
                            update(ctx, id, |it| it.strength = x)
                        }
                    }
                }
            />
        </div>
    }
}

#[component]
fn VectorBuilder(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let index = move || ctx.st.with(|st| st.stack.iter().position(|i| i.id == id).map(|p| p + 1).unwrap_or(0));
    let kind = move || {
        read(ctx, id, |i| match &i.vector {
            VectorSpec::PromptPair { .. } => "pair",
            VectorSpec::Sets { pca: false, .. } => "mean_diff",
            VectorSpec::Sets { pca: true, .. } => "pca",
            VectorSpec::Control { .. } => "control",
            VectorSpec::Literal { .. } => "sae",
        })
        .unwrap_or("pair")
    };
    let label = move |what: &str| format!("Intervention {} {what}", index());
    let on_kind = move |ev: web_sys::Event| {
        let k = event_target_value(&ev);
        update(ctx, id, |it| {
            let (pos, neg) = match &it.vector {
                VectorSpec::Sets { positive, negative, .. } => (positive.clone(), negative.clone()),
                VectorSpec::PromptPair { plus, minus } => (plus.clone(), minus.clone()),
                _ => ("Love".into(), "Hate".into()),
            };
            it.vector = match k.as_str() {
                "mean_diff" => VectorSpec::Sets { positive: pos, negative: neg, pca: false },
                "pca" => VectorSpec::Sets { positive: pos, negative: neg, pca: true },
                "control" => VectorSpec::Control { name: String::new(), directions: vec![] },
                "sae" => VectorSpec::Literal { label: String::new(), values: vec![] },
                _ => VectorSpec::PromptPair { plus: lines(&pos).first().cloned().unwrap_or_default(), minus: lines(&neg).first().cloned().unwrap_or_default() },
            };
        });
    };
    let text = move |f: fn(&VectorSpec) -> Option<String>| move || read(ctx, id, |i| f(&i.vector)).flatten().unwrap_or_default();
    let set_text = move |which: u8, v: String| {
        update(ctx, id, |it| match &mut it.vector {
            VectorSpec::PromptPair { plus, minus } => {
                if which == 0 { *plus = v } else { *minus = v }
            }
            VectorSpec::Sets { positive, negative, .. } => {
                if which == 0 { *positive = v } else { *negative = v }
            }
            VectorSpec::Control { .. } | VectorSpec::Literal { .. } => {}
        })
    };
    let on_scan = move |_| {
        let Some((pos, neg, site, method)) = read(ctx, id, |i| match &i.vector {
            VectorSpec::Sets { positive, negative, pca } => Some((lines(positive), lines(negative), i.site.clone(), if *pca { "pca" } else { "mean_diff" }.to_string())),
            _ => None,
        })
        .flatten() else { return };
        ctx.asking_item.set(Some(id));
        ctx.separation.set(None);
        ctx.send(Request::Separation { positive: pos, negative: neg, site, method });
    };
    let on_file = move |ev: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(file) = input.files().and_then(|l| l.get(0)) else { return };
        let name = file.name();
        wasm_bindgen_futures::spawn_local(async move {
            match JsFuture::from(file.array_buffer()).await {
                Ok(buf) => {
                    ctx.asking_item.set(Some(id));
                    ctx.send_with(Request::ImportControlVector { name }, Some(buf));
                }
                Err(e) => ctx.error.set(Some(format!("{name}: could not read the file: {}", crate::js::js_err(e)))),
            }
        });
    };
    let scan = move || {
        ctx.separation.with(|s| match s {
            Some((who, Response::Separation { layers, accuracy, cohens_d, best, .. })) if *who == id => {
                let items: Vec<(String, f32)> = layers
                    .iter()
                    .zip(accuracy.iter().zip(cohens_d))
                    .map(|(l, (a, d))| (format!("L{l}{}", if Some(*l) == *best { " ★" } else { "" }), a.or(d.map(|d| d / 10.0)).unwrap_or(0.0)))
                    .collect();
                let best = *best;
                Some(view! {
                    <div class="scan">
                        <p class="muted">"Leave-one-out accuracy of the direction per layer (★ best). "
                            {best.map(|b| view! { <button class="secondary" on:click=move |_| update(ctx, id, |it| if it.layer.is_none() { it.vector_layer = Some(b) } else { it.layer = Some(b); it.vector_layer = None })>{format!("Use layer {b}")}</button> })}
                        </p>
                        <Bars label=format!("Intervention {} layer separation", index()) items=items percent=true names=true/>
                    </div>
                })
            }
            _ => None,
        })
    };
    view! {
        <div class="vector">
            <div class="row">
                <label>"Vector from "
                    <select aria-label=move || label("vector source") on:change=on_kind>
                        <option value="pair" selected=move || kind() == "pair">"a prompt pair (ActAdd)"</option>
                        <option value="mean_diff" selected=move || kind() == "mean_diff">"two prompt sets: mean difference (CAA)"</option>
                        <option value="pca" selected=move || kind() == "pca">"two prompt sets: PCA (RepE)"</option>
                        <option value="control" selected=move || kind() == "control">"a control vector file (GGUF)"</option>
                        <option value="sae" selected=move || kind() == "sae">"an SAE latent (SAELens files)"</option>
                    </select>
                </label>
            </div>
            {move || match kind() {
                "pair" => view! {
                    <div class="row">
                        <label>"Plus " <input type="text" aria-label=move || label("plus prompt") prop:value=text(|v| match v { VectorSpec::PromptPair { plus, .. } => Some(plus.clone()), _ => None }) on:change=move |ev| set_text(0, event_target_value(&ev)) /></label>
                        <label>"Minus " <input type="text" aria-label=move || label("minus prompt") prop:value=text(|v| match v { VectorSpec::PromptPair { minus, .. } => Some(minus.clone()), _ => None }) on:change=move |ev| set_text(1, event_target_value(&ev)) /></label>
                    </div>
                    <ReadLayer id=id/>
                }.into_any(),
                "sae" => view! { <SaeLoader id=id/> }.into_any(),
                "control" => view! {
                    <div class="row">
                        <label class="file">"Control vector (.gguf) " <input type="file" accept=".gguf" aria-label=move || label("control vector file") on:change=on_file /></label>
                        <span class="muted">{move || read(ctx, id, |i| match &i.vector {
                            VectorSpec::Control { name, directions } if !directions.is_empty() => format!("{name}: {} layers; with “all layers” each direction is added at its own blocks.k.hook_resid_post", directions.len()),
                            _ => "none loaded".to_string(),
                        }).unwrap_or_default()}</span>
                    </div>
                }.into_any(),
                _ => view! {
                    <div class="sets">
                        <label>"Positive prompts (one per line)" <textarea rows="3" aria-label=move || label("positive prompts") prop:value=text(|v| match v { VectorSpec::Sets { positive, .. } => Some(positive.clone()), _ => None }) on:change=move |ev| set_text(0, event_target_value(&ev))></textarea></label>
                        <label>"Negative prompts (one per line)" <textarea rows="3" aria-label=move || label("negative prompts") prop:value=text(|v| match v { VectorSpec::Sets { negative, .. } => Some(negative.clone()), _ => None }) on:change=move |ev| set_text(1, event_target_value(&ev))></textarea></label>
                    </div>
                    <ReadLayer id=id/>
                    <div class="row">
                        <button class="secondary" on:click=on_scan disabled=move || !ctx.ready()>"Scan layers"</button>
                        <span class="muted">"per-layer separation of the two sets at this hook"</span>
                    </div>
                    {scan}
                }.into_any(),
            }}
        </div>
    }
}

/// The document the stack compiles to, and a way to paste one in.
#[component]
fn DocumentView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let import = RwSignal::new(String::new());
    let doc = move || ctx.st.with(|s| s.document()).map(|d| pretty(&d)).unwrap_or_else(|e| format!("(invalid: {e})"));
    let on_import = move |_| {
        let text = import.get_untracked();
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                ctx.error.set(Some(format!("imported document: not valid JSON: {e}")));
                return;
            }
        };
        let Some(items) = v.get("interventions").and_then(|x| x.as_array()).cloned() else {
            ctx.error.set(Some("imported document: it has no 'interventions' list".into()));
            return;
        };
        if v.get("version").and_then(|x| x.as_u64()) != Some(1) {
            ctx.error.set(Some("imported document: 'version' must be 1".into()));
            return;
        }
        let n = ctx.n_layers();
        ctx.st.update(|s| {
            for it in items {
                let id = s.next_item_id();
                let mut item = StackItem::new(id, UiOp::Json, n);
                item.json = it.to_string();
                s.stack.push(item);
            }
        });
        import.set(String::new());
    };
    view! {
        <details class="doc">
            <summary>"Intervention document (JSON)"</summary>
            <pre aria-label="Intervention document" class="json">{doc}</pre>
            <label>"Paste a document to add its interventions"
                <textarea rows="3" aria-label="Document to import" prop:value=move || import.get() on:input=move |ev| import.set(event_target_value(&ev))></textarea>
            </label>
            <button class="secondary" on:click=on_import>"Import"</button>
        </details>
    }
}

fn pretty(d: &str) -> String {
    serde_json::from_str::<serde_json::Value>(d).ok().and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or_else(|| d.to_string())
}

/// An SAE decoder row: pick cfg.json and sae_weights.safetensors, choose a latent.
#[component]
fn SaeLoader(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let index = move || ctx.st.with(|st| st.stack.iter().position(|i| i.id == id).map(|p| p + 1).unwrap_or(0));
    let label = move |what: &str| format!("Intervention {} {what}", index());
    let cfg = StoredValue::new_local(None::<web_sys::File>);
    let weights = StoredValue::new_local(None::<web_sys::File>);
    let latent = RwSignal::new(0u32);
    let pick = move |slot: StoredValue<Option<web_sys::File>, LocalStorage>| {
        move |ev: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&ev);
            slot.set_value(input.files().and_then(|l| l.get(0)));
        }
    };
    let on_load = move |_| {
        let (Some(c), Some(w)) = (cfg.get_value(), weights.get_value()) else {
            ctx.error.set(Some("pick both cfg.json and sae_weights.safetensors".into()));
            return;
        };
        let l = latent.get_untracked();
        wasm_bindgen_futures::spawn_local(async move {
            let text = match JsFuture::from(c.text()).await {
                Ok(t) => t.as_string().unwrap_or_default(),
                Err(e) => return ctx.error.set(Some(format!("cfg.json: {}", crate::js::js_err(e)))),
            };
            match JsFuture::from(w.array_buffer()).await {
                Ok(buf) => {
                    ctx.asking_item.set(Some(id));
                    ctx.send_with(Request::SaeLatent { name: w.name(), cfg_json: text, latent: l }, Some(buf));
                }
                Err(e) => ctx.error.set(Some(format!("{}: {}", w.name(), crate::js::js_err(e)))),
            }
        });
    };
    view! {
        <div class="row">
            <label class="file">"cfg.json " <input type="file" accept=".json" aria-label=move || label("SAE cfg.json") on:change=pick(cfg) /></label>
            <label class="file">"sae_weights.safetensors " <input type="file" accept=".safetensors" aria-label=move || label("SAE weights") on:change=pick(weights) /></label>
            <label>"Latent " <input type="number" min="0" class="short" aria-label=move || label("SAE latent") prop:value=move || latent.get().to_string() on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse() { latent.set(v) } } /></label>
            <button class="secondary" on:click=on_load disabled=move || !ctx.ready()>"Load latent"</button>
        </div>
        <p class="muted">{move || read(ctx, id, |i| match &i.vector {
            VectorSpec::Literal { label, values } if !values.is_empty() => format!("{label} ({} values); the item moved to the SAE's hook", values.len()),
            _ => "no latent loaded".to_string(),
        }).unwrap_or_default()}</p>
    }
}

/// Which layer a prompt-built vector is read at (last token, the item's hook site).
#[component]
fn ReadLayer(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let index = move || ctx.st.with(|st| st.stack.iter().position(|i| i.id == id).map(|p| p + 1).unwrap_or(0));
    view! {
        <div class="row">
            <label>"Read at layer "
                <select aria-label=move || format!("Intervention {} vector layer", index()) on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.vector_layer = v.parse().ok()) }>
                    <option value="same" selected=move || read(ctx, id, |i| i.vector_layer.is_none()).unwrap_or(true)>"the item's layer"</option>
                    {move || (0..ctx.n_layers()).map(|l| view! { <option value=l.to_string() selected=move || read(ctx, id, |i| i.vector_layer == Some(l)).unwrap_or(false)>{l}</option> }).collect_view()}
                </select>
            </label>
            <span class="muted">{move || read(ctx, id, |i| format!("last token, at {}", i.site)).unwrap_or_default()}</span>
        </div>
    }
}
