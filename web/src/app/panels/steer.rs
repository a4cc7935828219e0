//! "Generate & intervene": the baseline and intervened generations side by
//! side as they stream, then scored (differing tokens, probabilities, the
//! next-token distributions), the intervention report, and the stack. Every
//! change of the prompt, sampling or stack re-runs the comparison.

use std::time::Duration;

use leptos::prelude::*;

use super::super::stack::{EmbedStrengths, Stack};
use super::super::widgets::{show_token, Bars, StopButton};
use super::super::Ctx;
use super::{num_input, PromptBox};
use crate::js::now_ms;
use crate::protocol::{ItemReport, Lane, LaneResult, Prompt, Request, Response};
use crate::state::Panel;

pub const TITLE: &str = "Generate & intervene";

/// A lane while it streams.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Stream {
    pub ids: Vec<u32>,
    pub text: String,
    pub tok_s: f64,
}

/// The comparison as the page shows it: streamed lanes, then the scored results.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Comparison {
    pub baseline: Stream,
    pub intervened: Stream,
    pub prompt_tokens: Vec<String>,
    pub result_baseline: Option<LaneResult>,
    pub result_intervened: Option<LaneResult>,
    pub report: Vec<ItemReport>,
    pub warnings: Vec<String>,
    /// What ran it (CPU engine and kernels, or WebGPU and its adapter).
    pub backend: String,
    pub done: bool,
    pub stopped: bool,
    /// performance.now() when the first token of this comparison arrived.
    pub first_token_at: Option<f64>,
}

#[derive(Clone, Copy)]
pub struct State {
    comparison: RwSignal<Comparison>,
    /// The last comparison request sent, so an unchanged state is not re-run.
    last_sent: StoredValue<String>,
    /// Re-run the comparison when the state changes.
    auto_run: RwSignal<bool>,
}

impl State {
    pub fn new() -> State {
        State { comparison: RwSignal::new(Comparison::default()), last_sent: StoredValue::new(String::new()), auto_run: RwSignal::new(true) }
    }
}

/// The most likely next token after the prompt in the last comparison:
/// the intervened column's when there is one (`true`), else the baseline's.
pub fn top_next(state: State) -> Option<(String, f32, bool)> {
    state.comparison.with_untracked(|c| {
        let pick = |r: &Option<LaneResult>| r.as_ref().and_then(|r| r.next.first().map(|t| (t.token.clone(), t.prob)));
        pick(&c.result_intervened).map(|(t, p)| (t, p, true)).or_else(|| pick(&c.result_baseline).map(|(t, p)| (t, p, false)))
    })
}

/// The comparison request for the current state (its document may be invalid).
fn request(ctx: Ctx) -> Result<Request, String> {
    let doc = ctx.st.with_untracked(|s| s.document())?;
    let (prompt, sampling) = ctx.st.with_untracked(|s| (Prompt { text: s.prompt.clone(), chat: s.chat }, s.sampling.clone()));
    let gpu = ctx.use_gpu.get_untracked() && ctx.gpu.with_untracked(|g| g.is_some());
    Ok(Request::Compare { prompt, sampling, doc, top_k: 8, gpu })
}

fn key(r: &Request) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

fn send(ctx: Ctx, state: State, req: Request) {
    state.last_sent.set_value(key(&req));
    ctx.send(req);
}

/// A comparison starts: the previous one's lanes go.
pub fn started(state: State, kind: &str) {
    if kind == "compare" {
        state.comparison.set(Comparison::default());
    }
}

pub fn run(ctx: Ctx, state: State) {
    match request(ctx) {
        Ok(req) => send(ctx, state, req),
        Err(e) => ctx.error.set(Some(e)),
    }
}

/// Re-runs the comparison shortly after the prompt, sampling or stack
/// change (debounced), once a model is loaded, if its inputs really changed.
pub fn rerun_on_change(ctx: Ctx, state: State) {
    let tick = StoredValue::new(0u64);
    Effect::new(move |prev: Option<()>| {
        ctx.st.track();
        // Not tracked: a model (re)load runs the panel through `Ctx::loads`,
        // or deliberately not at all after a crash.
        let loaded = ctx.info.with_untracked(|i| i.is_some());
        if prev.is_none() || !loaded || !state.auto_run.get_untracked() || ctx.st.with_untracked(|s| s.panel) != Panel::Steer {
            return;
        }
        tick.update_value(|t| *t += 1);
        let mine = tick.get_value();
        set_timeout(
            move || {
                if tick.get_value() != mine || ctx.info.get_untracked().is_none() {
                    return;
                }
                if let Ok(req) = request(ctx) {
                    if key(&req) != state.last_sent.get_value() {
                        send(ctx, state, req);
                    }
                }
            },
            Duration::from_millis(450),
        );
    });
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    let c = state.comparison;
    match r {
        Response::LaneText { lane, ids, text, tok_s } => {
            let now = now_ms();
            // "Time to first token" is about page open: only the page's first token counts.
            let first_of_page = ctx.first_token_page.get_untracked().is_none();
            if first_of_page {
                ctx.first_token_page.set(Some(now));
            }
            c.update(|c| {
                if first_of_page {
                    c.first_token_at = Some(now);
                }
                let s = Stream { ids: ids.clone(), text: text.clone(), tok_s: *tok_s };
                match lane {
                    Lane::Baseline => c.baseline = s,
                    Lane::Intervened => c.intervened = s,
                }
            });
        }
        Response::Compared(cmp) => {
            c.update(|c| {
                let stream = |r: &LaneResult| Stream { ids: r.ids.clone(), text: r.text.clone(), tok_s: r.decode_tok_s };
                c.baseline = stream(&cmp.baseline);
                if let Some(i) = &cmp.intervened {
                    c.intervened = stream(i);
                }
                c.prompt_tokens = cmp.prompt_tokens.clone();
                c.result_baseline = Some(cmp.baseline.clone());
                c.result_intervened = cmp.intervened.clone();
                c.report = cmp.report.clone();
                c.warnings = cmp.warnings.clone();
                c.backend = cmp.backend.clone();
                c.done = true;
            });
            ctx.status.set("Comparison finished".into());
        }
        // Only a stopped comparison is this panel's: a stopped sweep or
        // thread comparison leaves the finished output unmarked.
        Response::Cancelled if ctx.busy_with.get_untracked() == Some("compare") => c.update(|c| (c.stopped, c.done) = (true, true)),
        Response::Error { .. } => c.update(|c| c.done = true),
        Response::Loaded(_) => c.set(Comparison::default()),
        _ => {}
    }
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let st = ctx.st;
    view! {
        <div class="steer">
            <Show when=move || ctx.shows(|c| c.prompt)>
                <PromptBox with_chat=!ctx.embed/>
            </Show>
            // An embed's reader runs what they change (it re-runs on change too).
            <Show when=move || ctx.shows(|c| c.any())>
                <div class="row controls">
                    <button on:click=move |_| run(ctx, state) disabled=move || !ctx.ready()>"Run"</button>
                    <StopButton kind="compare"/>
                    <Show when=move || !ctx.embed>
                        <label class="check">
                            <input type="checkbox" aria-label="Re-run on change" prop:checked=move || state.auto_run.get() on:change=move |ev| state.auto_run.set(event_target_checked(&ev)) />
                            "re-run on change"
                        </label>
                    </Show>
                </div>
            </Show>
            // Above the results, where a reader of a figure looks for them.
            <Show when=move || ctx.embed && ctx.controls.strength && !ctx.controls.stack>
                <EmbedStrengths/>
            </Show>
            <Show when=move || ctx.shows(|c| c.sampling)>
                <div class="row controls" role="group" aria-label="Sampling">
                    {num_input("Max new tokens", ("1", "1024", "1"), move || st.with(|s| s.sampling.max_new_tokens), move |v: usize| st.update(|s| s.sampling.max_new_tokens = v.clamp(1, 1024)))}
                    {num_input("Temperature", ("0", "5", "0.1"), move || st.with(|s| s.sampling.temperature), move |v: f32| st.update(|s| s.sampling.temperature = if v.is_finite() { v.clamp(0.0, 5.0) } else { 0.0 }))}
                    {num_input("Top-k", ("0", "1000", "1"), move || st.with(|s| s.sampling.top_k.unwrap_or(0)), move |v: usize| st.update(|s| s.sampling.top_k = (v > 0).then_some(v)))}
                    {num_input("Top-p", ("0", "1", "0.05"), move || st.with(|s| s.sampling.top_p.unwrap_or(1.0)), move |v: f32| st.update(|s| s.sampling.top_p = (v > 0.0 && v < 1.0).then_some(v)))}
                    {num_input("Seed", ("0", "4294967295", "1"), move || st.with(|s| s.sampling.seed), move |v: u64| st.update(|s| s.sampling.seed = v))}
                </div>
            </Show>
            <div class="compare">
                <Lane which=false/>
                <Lane which=true/>
            </div>
            <p role="group" class="speed" aria-label="Tokens per second">{move || speed_line(&state.comparison.get())}</p>
            <Report/>
            <Show when=move || ctx.shows(|c| c.stack)>
                <Stack/>
            </Show>
        </div>
    }
}

fn speed_line(c: &Comparison) -> String {
    let mut parts = Vec::new();
    match &c.result_baseline {
        Some(b) if b.reused => parts.push("baseline reused".to_string()),
        Some(b) => parts.push(format!("baseline {:.1} tokens/s, first token after {:.0} ms", b.decode_tok_s, b.first_token_ms)),
        None if c.baseline.tok_s > 0.0 => parts.push(format!("{:.1} tokens/s", c.baseline.tok_s)),
        None => {}
    }
    match &c.result_intervened {
        Some(i) => parts.push(format!("intervened {:.1} tokens/s", i.decode_tok_s)),
        None if c.intervened.tok_s > 0.0 => parts.push(format!("intervened {:.1} tokens/s", c.intervened.tok_s)),
        None => {}
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
    let state = expect_context::<State>();
    let title = if which { "Intervened" } else { "Baseline" };
    let mine = move |c: &Comparison| if which { c.result_intervened.clone() } else { c.result_baseline.clone() };
    let other = move |c: &Comparison| if which { c.result_baseline.clone() } else { c.result_intervened.clone() };
    let streamed = move |c: Comparison| if which { c.intervened } else { c.baseline };
    let has_stack = move || ctx.st.with(|s| s.stack.iter().any(|i| i.enabled));
    let detail = RwSignal::new(String::new());
    let body = move || {
        let c = state.comparison.get();
        match mine(&c) {
            Some(r) => scored(&r, other(&c).as_ref(), detail).into_any(),
            None if which && c.done && c.result_baseline.is_some() => {
                view! { <span class="muted">"(no enabled interventions: same as the baseline)"</span> }.into_any()
            }
            None => view! { <span class="generated">{streamed(c).text}</span> }.into_any(),
        }
    };
    let ids = move || {
        let c = state.comparison.get();
        let ids = match mine(&c) {
            Some(r) => r.ids,
            None => streamed(c).ids,
        };
        ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    };
    let done = move || {
        let c = state.comparison.get();
        (c.done && (mine(&c).is_some() || c.stopped || (which && c.result_baseline.is_some()))).to_string()
    };
    let next = move || {
        mine(&state.comparison.get()).map(|r| {
            let items: Vec<(String, f32)> = r.next.iter().map(|t| (t.token.clone(), t.prob)).collect();
            let ids = r.next.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(",");
            view! { <div role="group" aria-label=format!("{title} next tokens") data-ids=ids><Bars label=format!("{title} next-token probabilities") items=items percent=true/></div> }
        })
    };
    view! {
        <div class="lane" class:muted-lane=move || which && !has_stack()>
            <h3>{title}</h3>
            <div class="generation" role="log" aria-label=format!("{title} output") data-ids=ids data-done=done>
                <span class="prompt-echo">{move || ctx.st.with(|s| prompt_echo(&s.prompt))}</span>
                {body}
            </div>
            <p role="group" class="tokinfo muted" aria-live="polite" aria-label=format!("{title} token details")>{move || detail.get()}</p>
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
            let alts = r
                .alternatives
                .get(k)
                .map(|a| a.iter().map(|t| format!("{} {:.1}%", show_token(&t.token), 100.0 * t.prob)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let inserted = r.inserted.get(k).copied().unwrap_or(false);
            let title = format!("{} · p = {:.1}%{} · top: {alts}", show_token(piece), 100.0 * p, if inserted { " · inserted" } else { "" });
            let (shown, shown2) = (title.clone(), title.clone());
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
    let state = expect_context::<State>();
    let c = state.comparison;
    let line = |r: ItemReport| {
        let hooks = if r.hooks.len() > 3 {
            format!("{} … {} ({} hooks)", r.hooks[0], r.hooks[r.hooks.len() - 1], r.hooks.len())
        } else {
            r.hooks.join(", ")
        };
        match &r.edited {
            Some(what) => format!("#{} {}: edited {what} ({hooks})", r.index + 1, r.op),
            None => format!("#{} {}: {} hook call(s) changed at {hooks}", r.index + 1, r.op, r.applications),
        }
    };
    view! {
        <Show when=move || c.with(|c| !c.report.is_empty() || !c.warnings.is_empty())>
            <div role="group" class="report" aria-label="Intervention report">
                <ul>
                    {move || c.get().report.into_iter().map(|r| view! { <li>{line(r)}</li> }).collect_view()}
                    {move || c.get().warnings.into_iter().map(|w| view! { <li class="warn">{format!("warning: {w}")}</li> }).collect_view()}
                </ul>
            </div>
        </Show>
    }
}

/// Most characters of the prompt shown before the output (its end: what
/// the output continues).
const ECHO_CHARS: usize = 400;

/// The prompt as echoed before the output: a long one cut to its last
/// `ECHO_CHARS` characters after an ellipsis.
fn prompt_echo(prompt: &str) -> String {
    let n = prompt.chars().count();
    if n <= ECHO_CHARS {
        return prompt.to_string();
    }
    let tail: String = prompt.chars().skip(n - ECHO_CHARS).collect();
    format!("… {tail}")
}
