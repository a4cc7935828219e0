//! Where a steering vector comes from: a prompt pair (ActAdd), two prompt
//! sets (CAA mean difference or RepE PCA, with a per-layer scan), a
//! control-vector file, or a latent of the loaded dictionary; and the layer
//! it is read at.

use leptos::prelude::*;
use wasm_bindgen_futures::JsFuture;

use super::super::widgets::{event_target, Bars};
use super::super::Ctx;
use super::{aria, read, update};
use crate::protocol::{Request, Response};
use crate::state::{lines, VectorSpec};

/// The vector's source picker and, below it, that source's inputs.
#[component]
pub fn VectorBuilder(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let kind = move || {
        read(ctx, id, |i| match &i.vector {
            VectorSpec::PromptPair { .. } => "pair",
            VectorSpec::Sets { pca: false, .. } => "mean_diff",
            VectorSpec::Sets { pca: true, .. } => "pca",
            VectorSpec::Control { .. } => "control",
            VectorSpec::Literal { .. } => "literal",
            VectorSpec::SaeLatent { .. } => "sae",
        })
        .unwrap_or("pair")
    };
    let on_kind = move |ev: web_sys::Event| {
        let k = event_target_value(&ev);
        update(ctx, id, |it| {
            // The prompts the user typed carry over between prompt sources.
            let (pos, neg) = match &it.vector {
                VectorSpec::Sets { positive, negative, .. } => (positive.clone(), negative.clone()),
                VectorSpec::PromptPair { plus, minus } => (plus.clone(), minus.clone()),
                _ => ("Love".into(), "Hate".into()),
            };
            it.vector = match k.as_str() {
                "mean_diff" => VectorSpec::Sets { positive: pos, negative: neg, pca: false },
                "pca" => VectorSpec::Sets { positive: pos, negative: neg, pca: true },
                "control" => VectorSpec::Control { name: String::new(), directions: vec![] },
                "sae" => VectorSpec::SaeLatent { latent: 0 },
                _ => VectorSpec::PromptPair { plus: lines(&pos).first().cloned().unwrap_or_default(), minus: lines(&neg).first().cloned().unwrap_or_default() },
            };
        });
    };
    view! {
        <div class="vector">
            <div class="row">
                <label>"Vector from "
                    <select aria-label=move || aria(ctx, id, "vector source") on:change=on_kind>
                        <option value="pair" selected=move || kind() == "pair">"a prompt pair (ActAdd)"</option>
                        <option value="mean_diff" selected=move || kind() == "mean_diff">"two prompt sets: mean difference (CAA)"</option>
                        <option value="pca" selected=move || kind() == "pca">"two prompt sets: PCA (RepE)"</option>
                        <option value="control" selected=move || kind() == "control">"a control vector file (GGUF)"</option>
                        <option value="sae" selected=move || kind() == "sae">"a latent of the loaded dictionary (Features)"</option>
                        <Show when=move || kind() == "literal">
                            <option value="literal" selected=true>"values (from the link)"</option>
                        </Show>
                    </select>
                </label>
            </div>
            {move || match kind() {
                "pair" => view! { <PromptPair id=id/> }.into_any(),
                "sae" => view! { <LatentPick id=id/> }.into_any(),
                "literal" => view! { <p class="muted">{move || read(ctx, id, |i| match &i.vector { VectorSpec::Literal { label, values } => format!("{label} ({} values)", values.len()), _ => String::new() }).unwrap_or_default()}</p> }.into_any(),
                "control" => view! { <ControlFile id=id/> }.into_any(),
                _ => view! { <PromptSets id=id/> }.into_any(),
            }}
        </div>
    }
}

/// One of the item's two prompt fields (0: plus / positive, 1: minus / negative).
fn prompt_text(ctx: Ctx, id: u32, which: u8) -> String {
    read(ctx, id, |i| match &i.vector {
        VectorSpec::PromptPair { plus, minus } => if which == 0 { plus.clone() } else { minus.clone() },
        VectorSpec::Sets { positive, negative, .. } => if which == 0 { positive.clone() } else { negative.clone() },
        VectorSpec::Control { .. } | VectorSpec::Literal { .. } | VectorSpec::SaeLatent { .. } => String::new(),
    })
    .unwrap_or_default()
}

fn set_prompt_text(ctx: Ctx, id: u32, which: u8, v: String) {
    update(ctx, id, |it| match &mut it.vector {
        VectorSpec::PromptPair { plus, minus } => *(if which == 0 { plus } else { minus }) = v,
        VectorSpec::Sets { positive, negative, .. } => *(if which == 0 { positive } else { negative }) = v,
        VectorSpec::Control { .. } | VectorSpec::Literal { .. } | VectorSpec::SaeLatent { .. } => {}
    })
}

/// ActAdd: act(plus) − act(minus).
#[component]
fn PromptPair(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <div class="row">
            <label>"Plus " <input type="text" aria-label=move || aria(ctx, id, "plus prompt") prop:value=move || prompt_text(ctx, id, 0) on:change=move |ev| set_prompt_text(ctx, id, 0, event_target_value(&ev)) /></label>
            <label>"Minus " <input type="text" aria-label=move || aria(ctx, id, "minus prompt") prop:value=move || prompt_text(ctx, id, 1) on:change=move |ev| set_prompt_text(ctx, id, 1, event_target_value(&ev)) /></label>
        </div>
        <ReadLayer id=id/>
    }
}

/// Two prompt sets (mean difference or PCA), with a per-layer separation scan.
#[component]
fn PromptSets(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let on_scan = move |_| {
        let Some((pos, neg, site, method)) = read(ctx, id, |i| match &i.vector {
            VectorSpec::Sets { positive, negative, pca } => Some((lines(positive), lines(negative), i.site.clone(), if *pca { "pca" } else { "mean_diff" }.to_string())),
            _ => None,
        })
        .flatten() else { return };
        ctx.asking_item.set(Some(id));
        ctx.scan.set(None);
        ctx.send(Request::Separation { positive: pos, negative: neg, site, method });
    };
    view! {
        <div class="sets">
            <label>"Positive prompts (one per line)" <textarea rows="3" aria-label=move || aria(ctx, id, "positive prompts") prop:value=move || prompt_text(ctx, id, 0) on:change=move |ev| set_prompt_text(ctx, id, 0, event_target_value(&ev))></textarea></label>
            <label>"Negative prompts (one per line)" <textarea rows="3" aria-label=move || aria(ctx, id, "negative prompts") prop:value=move || prompt_text(ctx, id, 1) on:change=move |ev| set_prompt_text(ctx, id, 1, event_target_value(&ev))></textarea></label>
        </div>
        <ReadLayer id=id/>
        <div class="row">
            <button class="secondary" on:click=on_scan disabled=move || !ctx.ready()>"Scan layers"</button>
            <span class="muted">"per-layer separation of the two sets at this hook"</span>
        </div>
        <LayerScan id=id/>
    }
}

/// The scan's result for this item: leave-one-out accuracy per layer, and
/// a button to read the vector at the best one.
#[component]
fn LayerScan(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        ctx.scan.with(|s| match s {
            Some((who, Response::Separation { scores, best, .. })) if *who == id => {
                let items: Vec<(String, f32)> = scores
                    .iter()
                    .enumerate()
                    .map(|(k, s)| {
                        let l = s.layer.unwrap_or(k) as u32;
                        let value = s.loo_accuracy.map(|a| a as f32).or(s.cohens_d.map(|d| d as f32 / 10.0)).unwrap_or(0.0);
                        (format!("L{l}{}", if Some(l) == *best { " ★" } else { "" }), value)
                    })
                    .collect();
                let best = *best;
                let use_best = move |b: u32| update(ctx, id, |it| if it.layer.is_none() { it.vector_layer = Some(b) } else { it.layer = Some(b); it.vector_layer = None });
                Some(view! {
                    <div class="scan">
                        <p class="muted">"Leave-one-out accuracy of the direction per layer (★ best). "
                            {best.map(|b| view! { <button class="secondary" on:click=move |_| use_best(b)>{format!("Use layer {b}")}</button> })}
                        </p>
                        <Bars label=aria(ctx, id, "layer separation") items=items percent=true names=true/>
                    </div>
                })
            }
            _ => None,
        })
    }
}

/// A llama.cpp / repeng control vector file: one direction per layer.
#[component]
fn ControlFile(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
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
    view! {
        <div class="row">
            <label class="file">"Control vector (.gguf) " <input type="file" accept=".gguf" aria-label=move || aria(ctx, id, "control vector file") on:change=on_file /></label>
            <span class="muted">{move || read(ctx, id, |i| match &i.vector {
                VectorSpec::Control { name, directions } if !directions.is_empty() => format!("{name}: {} layers; with “all layers” each direction is added at its own blocks.k.hook_resid_post", directions.len()),
                _ => "none loaded".to_string(),
            }).unwrap_or_default()}</span>
        </div>
    }
}

/// Which latent of the dictionary loaded in the Features panel: its decoder
/// row is the vector (`{"from": "sae"}`), or the latent a clamp sets.
#[component]
pub fn LatentPick(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let latent = move || read(ctx, id, |i| match i.vector { VectorSpec::SaeLatent { latent } => latent, _ => 0 }).unwrap_or(0);
    let dict = move || ctx.st.with(|s| s.features.dict.as_ref().map(|d| d.label()));
    view! {
        <div class="row">
            <label>"Latent "
                <input type="number" min="0" class="short" aria-label=move || aria(ctx, id, "latent") prop:value=move || latent().to_string()
                    on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u32>() { update(ctx, id, |it| it.vector = VectorSpec::SaeLatent { latent: v }) } } />
            </label>
            <span class="muted">{move || match dict() {
                Some(d) => format!("of {d} (Features panel); the item must sit at the dictionary's hook"),
                None => "load a dictionary in the Features panel first".to_string(),
            }}</span>
        </div>
    }
}

/// Which layer a prompt-built vector is read at (last token, the item's hook site).
#[component]
fn ReadLayer(id: u32) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <div class="row">
            <label>"Read at layer "
                <select aria-label=move || aria(ctx, id, "vector layer") on:change=move |ev| { let v = event_target_value(&ev); update(ctx, id, |it| it.vector_layer = v.parse().ok()) }>
                    <option value="same" selected=move || read(ctx, id, |i| i.vector_layer.is_none()).unwrap_or(true)>"the item's layer"</option>
                    {move || (0..ctx.n_layers()).map(|l| view! { <option value=l.to_string() selected=move || read(ctx, id, |i| i.vector_layer == Some(l)).unwrap_or(false)>{l}</option> }).collect_view()}
                </select>
            </label>
            <span class="muted">{move || read(ctx, id, |i| format!("last token, at {}", i.site)).unwrap_or_default()}</span>
        </div>
    }
}
