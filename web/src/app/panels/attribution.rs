//! "Logit attribution & neurons": direct logit attribution of the last
//! position to every head and MLP, and an MLP neuron's output weights
//! projected onto the vocabulary.

use leptos::prelude::*;

use super::super::widgets::{show_token, Bars, Heatmap};
use super::super::Ctx;
use super::{num_input, prompt, PromptBox};
use crate::protocol::{DlaResult, NeuronResult, Request, Response};

pub const TITLE: &str = "Logit attribution & neurons";

/// Components listed beside the heatmap, largest |value| first.
const TOP_COMPONENTS: usize = 12;

#[derive(Clone, Copy)]
pub struct State {
    dla: RwSignal<Option<DlaResult>>,
    neuron: RwSignal<Option<NeuronResult>>,
}

impl State {
    pub fn new() -> State {
        State { dla: RwSignal::new(None), neuron: RwSignal::new(None) }
    }
}

pub fn run(ctx: Ctx, _: State) {
    let (answer, wrong) = ctx.st.with_untracked(|s| (s.attribution.answer.clone(), s.attribution.wrong.clone()));
    ctx.send(Request::Dla { prompt: prompt(ctx), doc: String::new(), answer, wrong });
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    match r {
        Response::Dla(d) => {
            state.dla.set(Some((**d).clone()));
            ctx.status.set("Direct logit attribution computed".into());
        }
        Response::Neuron(n) => {
            state.neuron.set(Some((**n).clone()));
            ctx.status.set("Neuron view computed".into());
        }
        _ => {}
    }
}

fn dla_view(r: DlaResult) -> impl IntoView {
    let n_heads = r.layers.first().map(|l| l.heads.len()).unwrap_or(0);
    let rows: Vec<String> = r.layers.iter().map(|l| format!("L{}", l.layer)).collect();
    let mut cols: Vec<String> = (0..n_heads).map(|h| format!("H{h}")).collect();
    cols.push("MLP".into());
    let values: Vec<Vec<f32>> = r.layers.iter().map(|l| l.heads.iter().copied().chain([l.mlp]).collect()).collect();
    let what = match &r.wrong {
        Some(w) => format!(
            "{}: logit[{}] − logit[{}] = {:.3} (unexplained {:.2e})",
            r.metric,
            show_token(&r.answer.token),
            show_token(&w.token),
            r.total,
            r.unexplained
        ),
        None => format!("{}: logit[{}] = {:.3} (unexplained {:.2e})", r.metric, show_token(&r.answer.token), r.total, r.unexplained),
    };
    let mut top: Vec<(String, f32)> = r.components.iter().map(|c| (c.name.clone(), c.value)).collect();
    top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    top.truncate(TOP_COMPONENTS);
    view! {
        <p role="group" aria-label="Attribution total">{what}</p>
        <div class="grid2">
            <div>
                <h4>"Largest components"</h4>
                <Bars label="Top components".into() items=top signed=true names=true/>
            </div>
            <Heatmap label="Direct logit attribution per head and MLP".into() rows=rows cols=cols values=values diverging_scale=true/>
        </div>
    }
}

fn neuron_view(r: NeuronResult) -> impl IntoView {
    let scores = |ts: Vec<scalpel_types::readouts::TokenScore>| ts.into_iter().map(|t| (t.token, t.score)).collect::<Vec<_>>();
    let acts: Vec<(String, f32)> = r.activations.map(|a| a.tokens.into_iter().zip(a.post).collect()).unwrap_or_default();
    view! {
        <p class="muted">{format!("blocks.{}.mlp.hook_post[{}] · |W_out| = {:.3} · scores: logit change per unit of activation (through the final norm's weight)", r.layer, r.neuron, r.output_norm)}</p>
        <div class="grid3">
            <div><h4>"Promotes"</h4><Bars label="Promoted tokens".into() items=scores(r.promoted)/></div>
            <div><h4>"Suppresses"</h4><Bars label="Suppressed tokens".into() items=scores(r.suppressed) signed=true/></div>
            <div><h4>"Activation on the prompt"</h4><Bars label="Neuron activation".into() items=acts signed=true/></div>
        </div>
    }
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let st = ctx.st;
    let on_neuron = move |_| {
        let (layer, neuron) = st.with_untracked(|s| (s.attribution.layer, s.attribution.neuron));
        ctx.send(Request::Neuron { layer, neuron, top_k: 12, prompt: prompt(ctx) });
    };
    view! {
        <div class="attribution">
            <h3>"Direct logit attribution"</h3>
            <Show when=move || ctx.shows(|c| c.prompt)>
                <PromptBox/>
                <div class="row">
                    <label>"Answer " <input type="text" class="short" aria-label="DLA answer" prop:value=move || st.with(|s| s.attribution.answer.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.attribution.answer = v) } /></label>
                    <label>"Wrong (optional) " <input type="text" class="short" aria-label="DLA wrong answer" prop:value=move || st.with(|s| s.attribution.wrong.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.attribution.wrong = v) } /></label>
                    <button on:click=move |_| run(ctx, state) disabled=move || !ctx.ready()>"Attribute"</button>
                </div>
            </Show>
            {move || state.dla.get().map(dla_view)}
            <h3>"Neuron → vocabulary"</h3>
            <div class="row">
                {num_input("Neuron layer", ("0", "1000", "1"), move || st.with(|s| s.attribution.layer), move |v: u32| st.update(|s| s.attribution.layer = v))}
                {num_input("Neuron index", ("0", "100000", "1"), move || st.with(|s| s.attribution.neuron), move |v: u32| st.update(|s| s.attribution.neuron = v))}
                <button on:click=on_neuron disabled=move || !ctx.ready()>"Show neuron"</button>
            </div>
            {move || state.neuron.get().map(neuron_view)}
        </div>
    }
}
