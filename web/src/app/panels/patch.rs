//! "Activation patching": a sweep over layers × positions (or heads) of one
//! hook family, with progress and Stop, shown as a heatmap.

use leptos::prelude::*;

use super::super::widgets::{Heatmap, StopButton};
use super::super::Ctx;
use crate::protocol::{Metric, PatchResult, PatchSite, Request, Response};
use crate::state::Shared;

pub const TITLE: &str = "Activation patching";

#[derive(Clone, Copy)]
pub struct State {
    result: RwSignal<Option<PatchResult>>,
}

impl State {
    pub fn new() -> State {
        State { result: RwSignal::new(None) }
    }
}

/// Opening the panel runs nothing: a sweep waits for "Run sweep".
pub fn run(_: Ctx, _: State) {}

fn sweep(ctx: Ctx, state: State) {
    state.result.set(None);
    ctx.send(Request::Patch { spec: ctx.st.with_untracked(|s| s.patch.clone()) });
}

/// The last sweep the panel shows.
pub fn result(state: State) -> Option<PatchResult> {
    state.result.get_untracked()
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    match r {
        Response::Patched(o) => {
            ctx.status.set(format!("Patching sweep finished in {:.1} s", o.seconds));
            state.result.set(Some((**o).clone()));
        }
        Response::Loaded(_) => state.result.set(None),
        _ => {}
    }
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let running = move || ctx.busy("patch");
    let heat = move || {
        state.result.get().map(|o| {
            let title = format!(
                "{} · {} · clean {:.3} · corrupted {:.3} · {:.1} s",
                o.site.as_str(),
                o.metric.as_str(),
                o.clean,
                o.corrupt,
                o.seconds
            );
            view! {
                <p role="group" class="muted" aria-label="Patching summary">{title}</p>
                <Heatmap label="Patching heatmap".into() rows=o.row_labels cols=o.col_labels values=o.values diverging_scale=true/>
            }
        })
    };
    view! {
        <div class="patch">
            <Show when=move || ctx.shows(|c| c.prompt)>
                <Inputs/>
                <div class="row">
                    <Choices/>
                    <button on:click=move |_| sweep(ctx, state) disabled=move || !ctx.ready()>"Run sweep"</button>
                    <StopButton kind="patch"/>
                </div>
                <NoisePositions/>
            </Show>
            <Show when=running>
                <div class="row">
                    <progress aria-label="Sweep progress" max=move || ctx.work.get().1.max(1).to_string() value=move || ctx.work.get().0.to_string()></progress>
                    <span class="muted">{move || { let (d, t) = ctx.work.get(); format!("layer {d} of {t}") }}</span>
                </div>
            </Show>
            {heat}
        </div>
    }
}

/// The prompts and the two answers.
#[component]
fn Inputs() -> impl IntoView {
    let st = expect_context::<Ctx>().st;
    let text = move |label: &'static str, get: fn(&Shared) -> String, set: fn(&mut Shared, String)| {
        view! {
            <label>{label} " "
                <input type="text" aria-label=label prop:value=move || st.with(get) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| set(s, v)) } />
            </label>
        }
    };
    view! {
        <div class="grid2">
            {text("Clean prompt", |s| s.patch.clean.clone(), |s, v| s.patch.clean = v)}
            {text("Corrupted prompt", |s| s.patch.corrupt.clone(), |s, v| s.patch.corrupt = v)}
            {text("Answer", |s| s.patch.answer.clone(), |s, v| s.patch.answer = v)}
            {text("Wrong answer", |s| s.patch.wrong.clone(), |s, v| s.patch.wrong = v)}
        </div>
    }
}

/// Hook family, metric and direction.
#[component]
fn Choices() -> impl IntoView {
    let st = expect_context::<Ctx>().st;
    view! {
        <label>"Hook "
            <select aria-label="Hook family" on:change=move |ev| { if let Ok(f) = event_target_value(&ev).parse::<PatchSite>() { st.update(|s| s.patch.family = f) } }>
                {PatchSite::ALL.into_iter().map(|f| view! { <option value=f.as_str() selected=move || st.with(|s| s.patch.family == f)>{f.as_str()}</option> }).collect_view()}
            </select>
        </label>
        <label>"Metric "
            <select aria-label="Metric" on:change=move |ev| { if let Ok(m) = event_target_value(&ev).parse::<Metric>() { st.update(|s| s.patch.metric = m) } }>
                {Metric::ALL.into_iter().map(|m| view! { <option value=m.as_str() selected=move || st.with(|s| s.patch.metric == m)>{m.as_str()}</option> }).collect_view()}
            </select>
        </label>
        <label class="check">
            <input type="checkbox" aria-label="Noising" prop:checked=move || st.with(|s| s.patch.noising) on:change=move |ev| { let v = event_target_checked(&ev); st.update(|s| s.patch.noising = v) } />
            "noising (patch corrupted into clean)"
        </label>
    }
}

/// Corruption by noise on the embeddings instead of a second prompt.
#[component]
fn NoisePositions() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let shown = move || st.with(|s| s.patch.noise.as_ref().map(|n| n.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default());
    let on_change = move |ev| {
        let v = event_target_value(&ev);
        let parsed: Result<Vec<usize>, _> = v.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::parse).collect();
        match parsed {
            Ok(p) => st.update(|s| s.patch.noise = (!p.is_empty()).then_some(p)),
            Err(_) => ctx.error.set(Some(format!("noise positions: '{v}' is not a list of token positions"))),
        }
    };
    view! {
        <p class="muted">"Leave the corrupted prompt empty and give noise positions to corrupt with Gaussian noise on the embeddings: "
            <input type="text" class="short" aria-label="Noise positions" placeholder="e.g. 0,1,2" prop:value=shown on:change=on_change />
        </p>
    }
}
