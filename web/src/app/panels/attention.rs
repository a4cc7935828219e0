//! "Attention": one head's pattern (query × key) of every layer and head
//! computed at once, picked by layer and head.

use leptos::prelude::*;

use super::super::widgets::Heatmap;
use super::super::Ctx;
use super::{prompt, PromptBox};
use crate::protocol::{AttentionResult, Request, Response};

pub const TITLE: &str = "Attention";

#[derive(Clone, Copy)]
pub struct State {
    result: RwSignal<Option<AttentionResult>>,
}

impl State {
    pub fn new() -> State {
        State { result: RwSignal::new(None) }
    }
}

pub fn run(ctx: Ctx, _: State) {
    ctx.send(Request::Attention { prompt: prompt(ctx), doc: String::new() });
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    if let Response::Attention(a) = r {
        state.result.set(Some((**a).clone()));
        ctx.status.set("Attention patterns computed".into());
    }
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let st = ctx.st;
    let n_heads = move || ctx.info.with(|i| i.as_ref().map(|i| i.summary.n_heads).unwrap_or(1));
    let map = move || {
        let (l, h) = st.with(|s| (s.attention_layer as usize, s.attention_head as usize));
        state.result.with(|r| {
            let r = r.as_ref()?;
            let values = r.layers.get(l)?.heads.get(h)?.pattern.clone();
            let tokens = r.tokens.clone();
            Some(view! { <Heatmap label=format!("Attention pattern L{l}H{h}") rows=tokens.clone() cols=tokens values=values diverging_scale=false fixed_max=1.0/> })
        })
    };
    view! {
        <div class="attention">
            <Show when=move || ctx.shows(|c| c.prompt)>
                <PromptBox/>
                <div class="row">
                    <button on:click=move |_| run(ctx, state) disabled=move || !ctx.ready()>"Compute patterns"</button>
                </div>
            </Show>
            <div class="row">
                <label>"Layer "
                    <select aria-label="Attention layer" on:change=move |ev| { let v: u32 = event_target_value(&ev).parse().unwrap_or(0); st.update(|s| s.attention_layer = v) }>
                        {move || (0..ctx.n_layers()).map(|l| view! { <option value=l.to_string() selected=move || st.with(|s| s.attention_layer == l)>{l}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Head "
                    <select aria-label="Attention head" on:change=move |ev| { let v: u32 = event_target_value(&ev).parse().unwrap_or(0); st.update(|s| s.attention_head = v) }>
                        {move || (0..n_heads()).map(|h| view! { <option value=h.to_string() selected=move || st.with(|s| s.attention_head == h)>{h}</option> }).collect_view()}
                    </select>
                </label>
                <span class="muted">"rows: query token · columns: key token"</span>
            </div>
            {map}
        </div>
    }
}
