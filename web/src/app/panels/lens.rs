//! "Logit lens": every layer's residual stream decoded through the final
//! norm and unembedding, optionally under the intervention stack.

use leptos::prelude::*;

use super::super::widgets::{show_token, Heatmap};
use super::super::Ctx;
use super::{prompt, PromptBox};
use crate::protocol::{LensResult, Request, Response};

pub const TITLE: &str = "Logit lens";

#[derive(Clone, Copy)]
pub struct State {
    result: RwSignal<Option<LensResult>>,
}

impl State {
    pub fn new() -> State {
        State { result: RwSignal::new(None) }
    }
}

pub fn run(ctx: Ctx, _: State) {
    let (target, intervened) = ctx.st.with_untracked(|s| (s.lens.target.clone(), s.lens.intervened));
    let doc = if intervened { ctx.document() } else { Some(String::new()) };
    if let Some(doc) = doc {
        ctx.send(Request::Lens { prompt: prompt(ctx), doc, target });
    }
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    if let Response::Lens(l) = r {
        state.result.set(Some((**l).clone()));
        ctx.status.set("Logit lens computed".into());
    }
}

/// The grid: last layer on top, embeddings at the bottom; each cell the
/// top token, coloured by the target's (or the top token's) probability.
fn grid(r: LensResult) -> impl IntoView {
    let target = r.target.map(|t| t.token);
    // The worker decodes at most the last `LENS_POSITIONS` positions of a long prompt.
    let cols: Vec<String> = r.positions.iter().map(|&p| r.tokens.get(p).cloned().unwrap_or_default()).collect();
    let shown = if r.positions.len() < r.tokens.len() {
        format!("the last {} of {} positions; ", r.positions.len(), r.tokens.len())
    } else {
        String::new()
    };
    let rows: Vec<_> = r.rows.into_iter().rev().collect();
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let prob = |c: &scalpel_types::readouts::LensCell| match &c.target {
        Some(t) => t.prob,
        None => c.top.first().map(|t| t.prob).unwrap_or(0.0),
    };
    let values: Vec<Vec<f32>> = rows.iter().map(|r| r.cells.iter().map(prob).collect()).collect();
    let text: Vec<Vec<String>> = rows.iter().map(|r| r.cells.iter().map(|c| c.top.first().map(|t| t.token.clone()).unwrap_or_default()).collect()).collect();
    let titles: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.cells
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    let tops = c.top.iter().map(|t| format!("{} {:.1}%", show_token(&t.token), 100.0 * t.prob)).collect::<Vec<_>>().join(", ");
                    let tgt = match (&target, &c.target) {
                        (Some(t), Some(s)) => format!(" · {} {:.2}% (rank {})", show_token(t), 100.0 * s.prob, s.rank),
                        _ => String::new(),
                    };
                    format!("{} · {} : {tops}{tgt}", row.label, show_token(cols.get(p).map(String::as_str).unwrap_or("")))
                })
                .collect()
        })
        .collect();
    let what = match &target {
        Some(t) => format!("{shown}colour: probability of {}", show_token(t)),
        None => format!("{shown}colour: probability of the top token"),
    };
    view! {
        <p class="muted">{what}</p>
        <Heatmap label="Logit lens".into() rows=labels cols=cols values=values diverging_scale=false cell_text=text cell_titles=titles fixed_max=1.0/>
    }
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let st = ctx.st;
    view! {
        <div class="lens">
            <Show when=move || ctx.shows(|c| c.prompt)>
                <PromptBox/>
                <div class="row">
                    <label>"Target token " <input type="text" class="short" aria-label="Target token" placeholder=" Paris" prop:value=move || st.with(|s| s.lens.target.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.lens.target = v) } /></label>
                    <label class="check"><input type="checkbox" aria-label="Apply interventions" prop:checked=move || st.with(|s| s.lens.intervened) on:change=move |ev| { let v = event_target_checked(&ev); st.update(|s| s.lens.intervened = v) } />"under the intervention stack"</label>
                    <button on:click=move |_| run(ctx, state) disabled=move || !ctx.ready()>"Run lens"</button>
                </div>
            </Show>
            {move || state.result.get().map(grid)}
        </div>
    }
}
