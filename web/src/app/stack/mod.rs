//! The intervention stack: add, reorder, toggle, delete; each item with the
//! controls its operation needs (`vector.rs`: where a steering vector comes
//! from). The stack is part of the link state and becomes the intervention
//! document the worker runs.

mod vector;

use leptos::prelude::*;
use scalpel_types::Site;

use self::vector::VectorBuilder;
use super::Ctx;
use crate::protocol::Response;
use crate::state::{StackItem, UiOp, VectorSpec, MAX_ITEMS};

/// Per-head hooks (heads can be selected).
fn per_head(site: &str) -> bool {
    Site::from_suffix(site, false).is_some_and(|s| s.head_axis().is_some())
}

fn update(ctx: Ctx, id: u32, f: impl FnOnce(&mut StackItem)) {
    ctx.st.update(|s| {
        if let Some(it) = s.stack.iter_mut().find(|i| i.id == id) {
            f(it);
        }
    });
}

/// An item's number in the stack as its labels show it (1-based; 0 once deleted).
fn number(ctx: Ctx, id: u32) -> usize {
    ctx.st.with(|s| s.stack.iter().position(|i| i.id == id).map_or(0, |p| p + 1))
}

/// The accessible name of one of an item's controls: "Intervention {n} {what}".
fn aria(ctx: Ctx, id: u32, what: &str) -> String {
    format!("Intervention {} {what}", number(ctx, id))
}

fn read<T: 'static>(ctx: Ctx, id: u32, f: impl Fn(&StackItem) -> T) -> Option<T> {
    ctx.st.with(|s| s.stack.iter().find(|i| i.id == id).map(f))
}

/// What a stack item asked the worker for: a control vector's directions,
/// or a layer scan.
pub fn on_response(ctx: Ctx, r: &Response) {
    let Some(id) = ctx.asking_item.get_untracked() else { return };
    match r {
        Response::ControlVector { name, directions, warnings } => {
            update(ctx, id, |it| it.vector = VectorSpec::Control { name: name.clone(), directions: directions.clone() });
            ctx.status.set(if warnings.is_empty() {
                format!("Control vector {name} imported")
            } else {
                format!("Control vector {name} imported: {}", warnings.join("; "))
            });
        }
        Response::Separation { .. } => {
            ctx.scan.set(Some((id, r.clone())));
            ctx.status.set("Layer scan finished".into());
        }
        _ => {}
    }
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
                <button
                    on:click=on_add
                    disabled=move || ctx.st.with(|s| s.stack.len() >= MAX_ITEMS)
                    title=move || ctx.st.with(|s| s.stack.len() >= MAX_ITEMS).then(|| format!("a link holds at most {MAX_ITEMS} interventions"))
                >
                    "Add intervention"
                </button>
            </div>
            <DocumentView/>
        </section>
    }
}

#[component]
fn Item(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let index = move || number(ctx, id);
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
    let label = move |what: &str| aria(ctx, id, what);
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
                            {Site::in_page().iter().map(|s| s.suffix()).map(|s| view! { <option value=s selected=move || read(ctx, id, |i| i.site == s).unwrap_or(false)>{s}</option> }).collect_view()}
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
                <Show when=move || op() == UiOp::SaeClamp>
                    <vector::LatentPick id=id/>
                </Show>
                <Show when=move || matches!(op(), UiOp::Add | UiOp::Scale | UiOp::SaeClamp)>
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

/// What an embed with `controls=strength` offers its reader: each
/// steering or scaling intervention's strength, and nothing else of the
/// stack (the link's interventions stay as the author made them).
#[component]
pub fn EmbedStrengths() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let items = move || ctx.st.with(|s| s.stack.iter().filter(|i| i.enabled && matches!(i.op, UiOp::Add | UiOp::Scale)).map(|i| i.id).collect::<Vec<_>>());
    let describe = move |id: u32| {
        read(ctx, id, |i| {
            let at = i.layer.map_or("every layer".to_string(), |l| format!("layer {l}"));
            format!("#{} {} at {at}, {}", number(ctx, id), i.op.label(), i.site)
        })
        .unwrap_or_default()
    };
    view! {
        <section class="stack embed-strengths" aria-label="Intervention strengths">
            <Show when=move || items().is_empty()>
                <p class="muted">"This figure has no steering or scaling intervention to adjust."</p>
            </Show>
            <For each=items key=|id| *id children=move |id| view! {
                <div class="item">
                    <span class="muted">{move || describe(id)}</span>
                    <Strength id=id/>
                </div>
            }/>
        </section>
    }
}

/// Strength: a log-scale slider (|s| from 0.01 to 100) and a numeric field.
#[component]
fn Strength(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let s = move || read(ctx, id, |i| i.strength).unwrap_or(1.0);
    let index = move || number(ctx, id);
    let op = move || read(ctx, id, |i| i.op).unwrap_or(UiOp::Add);
    view! {
        <div class="row">
            <label>{move || match op() { UiOp::Scale => "Factor ", UiOp::SaeClamp => "Clamp to (0: ablate) ", _ => "Strength " }}
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
        let room = MAX_ITEMS.saturating_sub(ctx.st.with_untracked(|s| s.stack.len()));
        if items.len() > room {
            ctx.error.set(Some(format!("imported document: it has {} interventions; the stack has room for {room} more (at most {MAX_ITEMS})", items.len())));
            return;
        }
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
            <pre role="group" aria-label="Intervention document" class="json">{doc}</pre>
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

