//! The five panels. Each sends requests through [`Ctx`] and renders the
//! typed results; none computes anything about the model itself.

use super::stack::Stack;
use super::widgets::{show_token, Bars, Heatmap};
use super::{Comparison, Ctx};
use crate::protocol::{LaneResult, Prompt, Request, Response};
use crate::state::Panel;
use leptos::prelude::*;

/// Runs what a panel shows when it opens (if a model is loaded).
pub fn run_panel(ctx: Ctx, p: Panel) {
    if ctx.info.get_untracked().is_none() {
        return;
    }
    match p {
        Panel::Steer => ctx.run_compare(),
        Panel::Patch => {}
        Panel::Lens => run_lens(ctx),
        Panel::Attention => run_attention(ctx),
        Panel::Attribution => run_dla(ctx),
    }
}

fn prompt(ctx: Ctx) -> Prompt {
    ctx.st.with_untracked(|s| Prompt { text: s.prompt.clone(), chat: s.chat })
}

fn run_lens(ctx: Ctx) {
    let (target, intervened) = ctx.st.with_untracked(|s| (s.lens.target.clone(), s.lens.intervened));
    let doc = if intervened { ctx.document() } else { Some(String::new()) };
    let Some(doc) = doc else { return };
    ctx.send(Request::Lens { prompt: prompt(ctx), doc, target });
}

fn run_attention(ctx: Ctx) {
    ctx.send(Request::Attention { prompt: prompt(ctx), doc: String::new() });
}

fn run_dla(ctx: Ctx) {
    let (answer, wrong) = ctx.st.with_untracked(|s| (s.attribution.answer.clone(), s.attribution.wrong.clone()));
    ctx.send(Request::Dla { prompt: prompt(ctx), doc: String::new(), answer, wrong });
}

/// The prompt box shared by the panels that read one prompt.
#[component]
fn PromptBox(#[prop(optional)] with_chat: bool) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <div class="prompt">
            <textarea
                aria-label="Prompt"
                rows="2"
                prop:value=move || ctx.st.with(|s| s.prompt.clone())
                on:input=move |ev| { let v = event_target_value(&ev); ctx.st.update(|s| s.prompt = v) }
            ></textarea>
            <Show when=move || with_chat>
                <label class="check">
                    <input type="checkbox" aria-label="Chat mode" prop:checked=move || ctx.st.with(|s| s.chat) on:change=move |ev| { let v = event_target_checked(&ev); ctx.st.update(|s| s.chat = v) } />
                    "chat (wrap in the model's chat template)"
                </label>
            </Show>
        </div>
    }
}

fn num_input<T: std::str::FromStr + ToString + Copy + 'static>(
    label: &'static str,
    min: &'static str,
    max: &'static str,
    step: &'static str,
    get: impl Fn() -> T + Send + Sync + 'static,
    set: impl Fn(T) + 'static,
) -> impl IntoView {
    view! {
        <label>
            {label} " "
            <input
                type="number"
                class="short"
                aria-label=label
                min=min
                max=max
                step=step
                prop:value=move || get().to_string()
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<T>() {
                        set(v)
                    }
                }
            />
        </label>
    }
}

#[component]
pub fn SteerPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let running = move || ctx.busy("compare");
    view! {
        <div class="steer">
            <Show when=move || !ctx.embed>
                <PromptBox with_chat=true/>
                <div class="row controls">
                    <button on:click=move |_| ctx.run_compare() disabled=move || !ctx.ready()>"Run"</button>
                    <button on:click=move |_| ctx.stop() disabled=move || !running()>"Stop"</button>
                    <label class="check">
                        <input type="checkbox" aria-label="Re-run on change" prop:checked=move || ctx.auto_run.get() on:change=move |ev| ctx.auto_run.set(event_target_checked(&ev)) />
                        "re-run on change"
                    </label>
                    {num_input("Max new tokens", "1", "1024", "1", move || st.with(|s| s.sampling.max_new_tokens), move |v: u32| st.update(|s| s.sampling.max_new_tokens = v.clamp(1, 1024)))}
                    {num_input("Temperature", "0", "5", "0.1", move || st.with(|s| s.sampling.temperature), move |v: f32| st.update(|s| s.sampling.temperature = if v.is_finite() { v.clamp(0.0, 5.0) } else { 0.0 }))}
                    {num_input("Top-k", "0", "1000", "1", move || st.with(|s| s.sampling.top_k.unwrap_or(0)), move |v: u32| st.update(|s| s.sampling.top_k = (v > 0).then_some(v)))}
                    {num_input("Top-p", "0", "1", "0.05", move || st.with(|s| s.sampling.top_p.unwrap_or(1.0)), move |v: f32| st.update(|s| s.sampling.top_p = (v > 0.0 && v < 1.0).then_some(v)))}
                    {num_input("Seed", "0", "4294967295", "1", move || st.with(|s| s.sampling.seed), move |v: u64| st.update(|s| s.sampling.seed = v))}
                </div>
            </Show>
            <div class="compare">
                <Lane which=false/>
                <Lane which=true/>
            </div>
            <p class="speed" aria-label="Tokens per second">{move || speed_line(&ctx.comparison.get())}</p>
            <Report/>
            <Show when=move || !ctx.embed>
                <Stack/>
            </Show>
        </div>
    }
}

fn speed_line(c: &Comparison) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &c.result_baseline {
        if b.reused {
            parts.push("baseline reused".to_string());
        } else {
            parts.push(format!("baseline {:.1} tokens/s, first token after {:.0} ms", b.decode_tok_s, b.first_token_ms));
        }
    } else if c.baseline.tok_s > 0.0 {
        parts.push(format!("{:.1} tokens/s", c.baseline.tok_s));
    }
    if let Some(i) = &c.result_intervened {
        parts.push(format!("intervened {:.1} tokens/s", i.decode_tok_s));
    } else if c.intervened.tok_s > 0.0 {
        parts.push(format!("intervened {:.1} tokens/s", c.intervened.tok_s));
    }
    // performance.now() counts from the navigation start: page open.
    if let Some(t) = c.first_token_at {
        parts.push(format!("first token {t:.0} ms after page open"));
    }
    if c.stopped {
        parts.push("stopped".into());
    }
    if !c.backend.is_empty() {
        parts.push(format!("on {}", c.backend));
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(" · ")
    }
}

/// One column of the comparison: streamed text, then scored tokens.
#[component]
fn Lane(which: bool) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let title = if which { "Intervened" } else { "Baseline" };
    let mine = move |c: &Comparison| if which { c.result_intervened.clone() } else { c.result_baseline.clone() };
    let other = move |c: &Comparison| if which { c.result_baseline.clone() } else { c.result_intervened.clone() };
    let has_stack = move || ctx.st.with(|s| s.stack.iter().any(|i| i.enabled));
    let detail = RwSignal::new(String::new());
    let body = move || {
        let c = ctx.comparison.get();
        match mine(&c) {
            Some(r) => scored(&r, other(&c).as_ref(), detail).into_any(),
            None if which && c.done && c.result_baseline.is_some() => view! { <span class="muted">"(no enabled interventions: same as the baseline)"</span> }.into_any(),
            None => {
                let s = if which { c.intervened } else { c.baseline };
                view! { <span class="generated">{s.text}</span> }.into_any()
            }
        }
    };
    let ids = move || {
        let c = ctx.comparison.get();
        match mine(&c) {
            Some(r) => r.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            None => (if which { c.intervened.ids } else { c.baseline.ids }).iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
        }
    };
    let next = move || {
        let c = ctx.comparison.get();
        mine(&c).map(|r| {
            let items: Vec<(String, f32)> = r.next.iter().map(|t| (t.text.clone(), t.prob)).collect();
            let ids = r.next.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(",");
            view! { <div aria-label=format!("{title} next tokens") data-ids=ids><Bars label=format!("{title} next-token probabilities") items=items percent=true/></div> }
        })
    };
    view! {
        <div class="lane" class:muted-lane=move || which && !has_stack()>
            <h3>{title}</h3>
            <div
                class="generation"
                role="log"
                aria-label=format!("{title} output")
                data-ids=ids
                data-done=move || { let c = ctx.comparison.get(); (c.done && (mine(&c).is_some() || c.stopped || (which && c.result_baseline.is_some()))).to_string() }
            >
                <span class="prompt-echo">{move || ctx.st.with(|s| s.prompt.clone())}</span>
                {body}
            </div>
            <p class="tokinfo muted" aria-live="polite" aria-label=format!("{title} token details")>{move || detail.get()}</p>
            <h4>"Next token after the prompt"</h4>
            {next}
        </div>
    }
}

/// The generated tokens as spans: differing ones highlighted, probability on hover.
/// Keyboard users get the same details as the hover title: focusing a token
/// shows them in a live line under the column.
fn scored(r: &LaneResult, other: Option<&LaneResult>, detail: RwSignal<String>) -> impl IntoView {
    r.pieces
        .iter()
        .enumerate()
        .map(|(k, piece)| {
            let id = r.ids[k];
            let differs = other.is_some_and(|o| o.ids.get(k) != Some(&id));
            let p = r.probs.get(k).copied().unwrap_or(0.0);
            let alts = r.alternatives.get(k).map(|a| a.iter().map(|t| format!("{} {:.1}%", show_token(&t.text), 100.0 * t.prob)).collect::<Vec<_>>().join(", ")).unwrap_or_default();
            let inserted = r.inserted.get(k).copied().unwrap_or(false);
            let title = format!("{} · p = {:.1}%{} · top: {alts}", show_token(piece), 100.0 * p, if inserted { " · inserted" } else { "" });
            let shown = title.clone();
            let shown2 = title.clone();
            view! {
                <span
                    class="tok"
                    class:diff=differs
                    class:inserted=inserted
                    data-prob=p.to_string()
                    title=title
                    tabindex="0"
                    on:focus=move |_| detail.set(shown.clone())
                    on:mouseenter=move |_| detail.set(shown2.clone())
                >
                    {piece.clone()}
                </span>
            }
        })
        .collect_view()
}

#[component]
fn Report() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <Show when=move || ctx.comparison.with(|c| !c.report.is_empty() || !c.warnings.is_empty())>
            <div class="report" aria-label="Intervention report">
                <ul>
                    {move || ctx.comparison.get().report.into_iter().map(|r| view! {
                        <li>{format!("#{} {}: {} hook call(s) changed at {}", r.index + 1, r.op, r.applications, if r.hooks.len() > 3 { format!("{} … {} ({} hooks)", r.hooks[0], r.hooks[r.hooks.len() - 1], r.hooks.len()) } else { r.hooks.join(", ") })}</li>
                    }).collect_view()}
                    {move || ctx.comparison.get().warnings.into_iter().map(|w| view! { <li class="warn">{format!("warning: {w}")}</li> }).collect_view()}
                </ul>
            </div>
        </Show>
    }
}

#[component]
pub fn PatchPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let running = move || ctx.busy("patch");
    let text = move |label: &'static str, get: fn(&crate::state::Shared) -> String, set: fn(&mut crate::state::Shared, String)| {
        view! {
            <label>{label} " "
                <input type="text" aria-label=label prop:value=move || st.with(get) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| set(s, v)) } />
            </label>
        }
    };
    let on_run = move |_| {
        let spec = st.with_untracked(|s| s.patch.clone());
        ctx.patch.set(None);
        ctx.send(Request::Patch { spec });
    };
    let heat = move || {
        ctx.patch.get().map(|o| {
            let title = format!("{} · {} · clean {:.3} · corrupted {:.3} · {:.1} s", o.family, o.metric, o.clean, o.corrupt, o.seconds);
            view! {
                <p class="muted" aria-label="Patching summary">{title}</p>
                <Heatmap label="Patching heatmap".into() rows=o.row_labels.clone() cols=o.col_labels.clone() values=o.values.clone() diverging_scale=true/>
            }
        })
    };
    view! {
        <div class="patch">
            <Show when=move || !ctx.embed>
                <div class="grid2">
                    {text("Clean prompt", |s| s.patch.clean.clone(), |s, v| s.patch.clean = v)}
                    {text("Corrupted prompt", |s| s.patch.corrupt.clone(), |s, v| s.patch.corrupt = v)}
                    {text("Answer", |s| s.patch.answer.clone(), |s, v| s.patch.answer = v)}
                    {text("Wrong answer", |s| s.patch.wrong.clone(), |s, v| s.patch.wrong = v)}
                </div>
                <div class="row">
                    <label>"Hook "
                        <select aria-label="Hook family" on:change=move |ev| { let v = event_target_value(&ev); st.update(|s| s.patch.family = v) }>
                            {["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_z", "head_z_pos"].into_iter().map(|f| view! { <option value=f selected=move || st.with(|s| s.patch.family == f)>{f}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>"Metric "
                        <select aria-label="Metric" on:change=move |ev| { let v = event_target_value(&ev); st.update(|s| s.patch.metric = v) }>
                            {["logit_diff_norm", "logit_diff", "prob", "kl"].into_iter().map(|f| view! { <option value=f selected=move || st.with(|s| s.patch.metric == f)>{f}</option> }).collect_view()}
                        </select>
                    </label>
                    <label class="check">
                        <input type="checkbox" aria-label="Noising" prop:checked=move || st.with(|s| s.patch.noising) on:change=move |ev| { let v = event_target_checked(&ev); st.update(|s| s.patch.noising = v) } />
                        "noising (patch corrupted into clean)"
                    </label>
                    <button on:click=on_run disabled=move || !ctx.ready()>"Run sweep"</button>
                    <button on:click=move |_| ctx.stop() disabled=move || !running()>"Stop"</button>
                </div>
                <p class="muted">"Leave the corrupted prompt empty and give noise positions to corrupt with Gaussian noise on the embeddings: "
                    <input type="text" class="short" aria-label="Noise positions" placeholder="e.g. 0,1,2" prop:value=move || st.with(|s| s.patch.noise.as_ref().map(|n| n.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default()) on:change=move |ev| {
                        let v = event_target_value(&ev);
                        let parsed: Result<Vec<usize>, _> = v.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::parse).collect();
                        match parsed {
                            Ok(p) => st.update(|s| s.patch.noise = (!p.is_empty()).then_some(p)),
                            Err(_) => ctx.error.set(Some(format!("noise positions: '{v}' is not a list of token positions"))),
                        }
                    } />
                </p>
            </Show>
            <Show when=move || running()>
                <div class="row">
                    <progress aria-label="Sweep progress" max=move || ctx.work.get().1.max(1).to_string() value=move || ctx.work.get().0.to_string()></progress>
                    <span class="muted">{move || { let (d, t) = ctx.work.get(); format!("layer {d} of {t}") }}</span>
                </div>
            </Show>
            {heat}
        </div>
    }
}

#[component]
pub fn LensPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let grid = move || {
        ctx.lens.get().and_then(|r| match r {
            Response::Lens { tokens, target, rows } => {
                // Last layer on top, embeddings at the bottom.
                let rows: Vec<_> = rows.into_iter().rev().collect();
                let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
                let values: Vec<Vec<f32>> = rows.iter().map(|r| r.cells.iter().map(|c| c.target_prob.unwrap_or_else(|| c.top.first().map(|t| t.prob).unwrap_or(0.0))).collect()).collect();
                let text: Vec<Vec<String>> = rows.iter().map(|r| r.cells.iter().map(|c| c.top.first().map(|t| t.text.clone()).unwrap_or_default()).collect()).collect();
                let titles: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        r.cells
                            .iter()
                            .enumerate()
                            .map(|(p, c)| {
                                let tops = c.top.iter().map(|t| format!("{} {:.1}%", show_token(&t.text), 100.0 * t.prob)).collect::<Vec<_>>().join(", ");
                                let tgt = match (&target, c.target_prob, c.target_rank) {
                                    (Some(t), Some(pr), Some(rank)) => format!(" · {} {:.2}% (rank {rank})", show_token(t), 100.0 * pr),
                                    _ => String::new(),
                                };
                                format!("{} · {} : {tops}{tgt}", r.label, show_token(tokens.get(p).map(String::as_str).unwrap_or("")))
                            })
                            .collect()
                    })
                    .collect();
                let what = match &target { Some(t) => format!("colour: probability of {}", show_token(t)), None => "colour: probability of the top token".into() };
                Some(view! {
                    <p class="muted">{what}</p>
                    <Heatmap label="Logit lens".into() rows=labels cols=tokens values=values diverging_scale=false cell_text=text cell_titles=titles fixed_max=1.0/>
                })
            }
            _ => None,
        })
    };
    view! {
        <div class="lens">
            <Show when=move || !ctx.embed>
                <PromptBox/>
                <div class="row">
                    <label>"Target token " <input type="text" class="short" aria-label="Target token" placeholder=" Paris" prop:value=move || st.with(|s| s.lens.target.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.lens.target = v) } /></label>
                    <label class="check"><input type="checkbox" aria-label="Apply interventions" prop:checked=move || st.with(|s| s.lens.intervened) on:change=move |ev| { let v = event_target_checked(&ev); st.update(|s| s.lens.intervened = v) } />"under the intervention stack"</label>
                    <button on:click=move |_| run_lens(ctx) disabled=move || !ctx.ready()>"Run lens"</button>
                </div>
            </Show>
            {grid}
        </div>
    }
}

#[component]
pub fn AttentionPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let n_heads = move || ctx.info.with(|i| i.as_ref().map(|i| i.summary.n_heads).unwrap_or(1));
    let map = move || {
        let (l, h) = st.with(|s| (s.attention_layer as usize, s.attention_head as usize));
        ctx.attention.get().and_then(|r| match r {
            Response::Attention { tokens, patterns } => {
                let flat = patterns.get(l)?.get(h)?.clone();
                let n = tokens.len();
                let values: Vec<Vec<f32>> = flat.chunks(n).map(|c| c.to_vec()).collect();
                Some(view! { <Heatmap label=format!("Attention pattern L{l}H{h}") rows=tokens.clone() cols=tokens values=values diverging_scale=false fixed_max=1.0/> })
            }
            _ => None,
        })
    };
    view! {
        <div class="attention">
            <Show when=move || !ctx.embed>
                <PromptBox/>
                <div class="row">
                    <button on:click=move |_| run_attention(ctx) disabled=move || !ctx.ready()>"Compute patterns"</button>
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

#[component]
pub fn AttributionPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.st;
    let dla = move || {
        ctx.dla.get().and_then(|r| match r {
            Response::Dla { metric, answer, wrong, total, heads, mlps, unexplained, top, .. } => {
                let n_heads = heads.first().map(|h| h.len()).unwrap_or(0);
                let rows: Vec<String> = (0..heads.len()).map(|l| format!("L{l}")).collect();
                let mut cols: Vec<String> = (0..n_heads).map(|h| format!("H{h}")).collect();
                cols.push("MLP".into());
                let values: Vec<Vec<f32>> = heads.iter().zip(&mlps).map(|(h, m)| h.iter().copied().chain(std::iter::once(*m)).collect()).collect();
                let what = match &wrong {
                    Some(w) => format!("{metric}: logit[{}] − logit[{}] = {total:.3} (unexplained {unexplained:.2e})", show_token(&answer), show_token(w)),
                    None => format!("{metric}: logit[{}] = {total:.3} (unexplained {unexplained:.2e})", show_token(&answer)),
                };
                let items: Vec<(String, f32)> = top.into_iter().map(|d| (d.name, d.value)).collect();
                Some(view! {
                    <p aria-label="Attribution total">{what}</p>
                    <div class="grid2">
                        <div>
                            <h4>"Largest components"</h4>
                            <Bars label="Top components".into() items=items signed=true names=true/>
                        </div>
                        <Heatmap label="Direct logit attribution per head and MLP".into() rows=rows cols=cols values=values diverging_scale=true/>
                    </div>
                })
            }
            _ => None,
        })
    };
    let neuron = move || {
        ctx.neuron.get().and_then(|r| match r {
            Response::Neuron { layer, neuron, promoted, suppressed, tokens, activations, output_norm } => {
                let acts: Vec<(String, f32)> = tokens.into_iter().zip(activations).collect();
                Some(view! {
                    <p class="muted">{format!("blocks.{layer}.mlp.hook_post[{neuron}] · |W_out| = {output_norm:.3} · scores: logit change per unit of activation (through the final norm's weight)")}</p>
                    <div class="grid3">
                        <div><h4>"Promotes"</h4><Bars label="Promoted tokens".into() items=promoted/></div>
                        <div><h4>"Suppresses"</h4><Bars label="Suppressed tokens".into() items=suppressed signed=true/></div>
                        <div><h4>"Activation on the prompt"</h4><Bars label="Neuron activation".into() items=acts signed=true/></div>
                    </div>
                })
            }
            _ => None,
        })
    };
    let on_neuron = move |_| {
        let (layer, neuron) = st.with_untracked(|s| (s.attribution.layer, s.attribution.neuron));
        ctx.send(Request::Neuron { layer, neuron, top_k: 12, prompt: prompt(ctx) });
    };
    view! {
        <div class="attribution">
            <Show when=move || !ctx.embed>
                <PromptBox/>
                <div class="row">
                    <label>"Answer " <input type="text" class="short" aria-label="DLA answer" prop:value=move || st.with(|s| s.attribution.answer.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.attribution.answer = v) } /></label>
                    <label>"Wrong (optional) " <input type="text" class="short" aria-label="DLA wrong answer" prop:value=move || st.with(|s| s.attribution.wrong.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.attribution.wrong = v) } /></label>
                    <button on:click=move |_| run_dla(ctx) disabled=move || !ctx.ready()>"Attribute"</button>
                </div>
            </Show>
            {dla}
            <h3>"Neuron → vocabulary"</h3>
            <div class="row">
                {num_input("Neuron layer", "0", "1000", "1", move || st.with(|s| s.attribution.layer), move |v: u32| st.update(|s| s.attribution.layer = v))}
                {num_input("Neuron index", "0", "100000", "1", move || st.with(|s| s.attribution.neuron), move |v: u32| st.update(|s| s.attribution.neuron = v))}
                <button on:click=on_neuron disabled=move || !ctx.ready()>"Show neuron"</button>
            </div>
            {neuron}
        </div>
    }
}
