//! A labelled heatmap table (patching sweeps, the logit lens, attention
//! patterns, attribution per head).

use leptos::prelude::*;

use super::{css, diverging, ink, sequential, show_token};

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
                            style=format!("background:{};color:{}", css(bg), ink(bg))
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
                        // The corner names nothing: a data cell, not an empty header.
                        <td></td>
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
