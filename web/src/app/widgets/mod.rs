//! Views the panels and sections draw with: a heatmap table, bars, the Stop
//! button, and how numbers, tokens and colours are shown.

mod bars;
mod heatmap;
mod markdown;

pub use bars::Bars;
pub use heatmap::Heatmap;
pub use markdown::Markdown;
pub use crate::colour::{css, diverging, ink, sequential};

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::Ctx;
use crate::js::cross_origin_isolated;

/// How Stop works where the page is not cross-origin isolated.
const STOP_RESTARTS: &str = "This page is not cross-origin isolated (its host sends no COOP/COEP headers), so Stop ends the engine worker and a fresh one reloads the model from the browser cache (a few seconds).";

/// Stops the running work of kind `kind`. Where the page is not
/// cross-origin isolated there is no shared stop flag: Stop then restarts
/// the engine worker (`Ctx::stop`), and says so while the work runs.
#[component]
pub fn StopButton(kind: &'static str) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<super::panels::Panels>();
    let isolated = cross_origin_isolated();
    view! {
        <button on:click=move |_| ctx.stop(panels) disabled=move || !ctx.busy(kind) title=(!isolated).then_some(STOP_RESTARTS)>
            "Stop"
        </button>
        <Show when=move || !isolated && ctx.busy(kind)>
            <span role="note" class="muted" aria-label="How Stop works here">{STOP_RESTARTS}</span>
        </Show>
    }
}

/// The Hugging Face token field (gated repositories): bound to the page's
/// in-memory `Ctx::hf_token`, never stored.
#[component]
pub fn TokenField(label: &'static str, placeholder: &'static str) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <label>
            {label}
            <input
                type="password"
                autocomplete="off"
                aria-label="Hugging Face token"
                placeholder=placeholder
                prop:value=move || ctx.hf_token.get()
                on:input=move |ev| ctx.hf_token.set(event_target_value(&ev))
            />
        </label>
    }
}

pub fn fmt_mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

/// A token made visible: quotes, escaped whitespace.
pub fn show_token(t: &str) -> String {
    format!("{t:?}")
}


/// The element an event happened on, as its DOM type.
pub fn event_target<T: JsCast>(ev: &web_sys::Event) -> T {
    ev.target().expect("event target").unchecked_into()
}
