//! Views the panels and sections draw with: a heatmap table, bars, the Stop
//! button, and how numbers, tokens and colours are shown.

mod bars;
mod heatmap;

pub use bars::Bars;
pub use heatmap::Heatmap;

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
            <span class="muted" aria-label="Stop unavailable">{NO_STOP}</span>
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

/// The element an event happened on, as its DOM type.
pub fn event_target<T: JsCast>(ev: &web_sys::Event) -> T {
    ev.target().expect("event target").unchecked_into()
}
