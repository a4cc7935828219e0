//! Horizontal bars: next-token probabilities, top components, neuron scores.

use leptos::prelude::*;

use super::show_token;

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
    /// Values are counts: shown without decimals.
    #[prop(optional)]
    counts: bool,
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
            let shown = if percent {
                format!("{:.1}%", 100.0 * v)
            } else if counts {
                format!("{v:.0}")
            } else {
                format!("{v:.3}")
            };
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
