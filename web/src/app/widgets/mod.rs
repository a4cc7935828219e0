//! Views the panels and sections draw with: a heatmap table, bars, the Stop
//! button, and how numbers, tokens and colours are shown.

mod bars;
mod heatmap;

pub use bars::Bars;
pub use heatmap::Heatmap;
pub use crate::colour::{css, diverging, ink, sequential};

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::Ctx;
use crate::js::cross_origin_isolated;

/// Why Stop is missing where the page is not cross-origin isolated.
const NO_STOP: &str = "Stop needs a cross-origin-isolated page (served with COOP/COEP headers, as `cargo xtask serve` does); this one is not, so running work cannot be stopped here.";

/// Stops the running work of kind `kind`. Without cross-origin isolation
/// there is no shared stop flag: the button is disabled and says why.
#[component]
pub fn StopButton(kind: &'static str) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let isolated = cross_origin_isolated();
    view! {
        <button on:click=move |_| ctx.stop() disabled=move || !isolated || !ctx.busy(kind) title=(!isolated).then_some(NO_STOP)>
            "Stop"
        </button>
        <Show when=move || !isolated && ctx.busy(kind)>
            <span role="group" class="muted" aria-label="Stop unavailable">{NO_STOP}</span>
        </Show>
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
