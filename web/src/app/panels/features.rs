//! "Features (SAEs)": a dictionary (SAE or transcoder) over one hook; each
//! prompt token's top latents, the reconstruction error, L0 and what
//! splicing the dictionary in does to the next-token distribution; a
//! latent's dashboard (decoder row → vocabulary, activation histogram, top
//! contexts over the project's corpus); latent search; and one click from a
//! latent to a steer / clamp / ablate item in the stack.

use leptos::prelude::*;

use super::super::widgets::{event_target, show_token, Bars, Heatmap, StopButton};
use super::super::Ctx;
use super::{num_input, prompt, PromptBox};
use crate::colour::{css, ink, sequential};
use crate::protocol::{
    default_dictionary, CorpusStatus, DictLocation, DictionaryInfo, Features, LatentDashboard, LatentSearch, Request, Response,
    DEFAULT_DICTIONARY_REPO,
};
use crate::state::{StackItem, UiOp, VectorSpec, MAX_ITEMS};

pub const TITLE: &str = "Features (SAEs)";

/// Latents the heatmap shows at most (the union of each position's top 3).
const HEATMAP_LATENTS: usize = 24;

#[derive(Clone, Copy)]
pub struct State {
    /// The dictionary the worker holds (None after a model load until it is checked again).
    info: RwSignal<Option<DictionaryInfo>>,
    features: RwSignal<Option<Features>>,
    dashboard: RwSignal<Option<LatentDashboard>>,
    search: RwSignal<Option<LatentSearch>>,
    corpus: RwSignal<Option<CorpusStatus>>,
    /// How the dictionary is picked: `default`, `hf`, `url` or `files`.
    source: RwSignal<&'static str>,
    layer: RwSignal<u32>,
    url: RwSignal<String>,
    /// A Hugging Face repository and the folder in it (`hf`).
    repo: RwSignal<String>,
    folder: RwSignal<String>,
    hook: RwSignal<String>,
    /// Picked files (kept so a restarted worker can be sent them again).
    files: StoredValue<Option<(String, Vec<String>, js_sys::Array)>, LocalStorage>,
    /// The dictionary was loaded this visit: a fresh worker loads it again.
    chosen: StoredValue<bool>,
    steer: RwSignal<f32>,
    clamp: RwSignal<f32>,
}

impl State {
    pub fn new() -> State {
        State {
            info: RwSignal::new(None),
            features: RwSignal::new(None),
            dashboard: RwSignal::new(None),
            search: RwSignal::new(None),
            corpus: RwSignal::new(None),
            source: RwSignal::new("default"),
            layer: RwSignal::new(6),
            url: RwSignal::new(String::new()),
            repo: RwSignal::new(String::new()),
            folder: RwSignal::new(String::new()),
            hook: RwSignal::new(String::new()),
            files: StoredValue::new_local(None),
            chosen: StoredValue::new(false),
            steer: RwSignal::new(8.0),
            clamp: RwSignal::new(10.0),
        }
    }
}

/// Sends the link's (or the user's) dictionary to the worker.
fn load_dict(ctx: Ctx, state: State, loc: DictLocation) {
    state.info.set(None);
    state.corpus.set(None);
    let file = match &loc {
        DictLocation::Files { .. } => state.files.get_value().map(|f| f.2.into()),
        DictLocation::Url { .. } => None,
    };
    ctx.st.update(|s| s.features.dict = Some(loc.clone()));
    ctx.send_with(Request::LoadDictionary { source: loc }, file);
}

pub fn run(ctx: Ctx, state: State) {
    let (dict, latent) = ctx.st.with_untracked(|s| (s.features.dict.clone(), s.features.latent));
    if state.info.get_untracked().is_none() {
        // A link's dictionary: loaded when its panel opens.
        match dict {
            // (Unless a model load has just asked for it.)
            Some(d) if !ctx.busy("dictionary") => load_dict(ctx, state, d),
            Some(_) => {}
            None => return,
        }
    }
    let top_k = ctx.st.with_untracked(|s| s.features.top_k);
    ctx.send(Request::Features { prompt: prompt(ctx), top_k });
    if let Some(l) = latent {
        ctx.send(Request::Dashboard { latent: l });
    }
}

pub fn on_response(ctx: Ctx, state: State, r: &Response) {
    match r {
        Response::Loaded(_) => {
            // A new model (or a fresh worker): the dictionary is checked again.
            let had = state.info.get_untracked().is_some() || state.chosen.get_value();
            state.info.set(None);
            state.corpus.set(None);
            let dict = ctx.st.with_untracked(|s| s.features.dict.clone());
            let used = ctx.st.with_untracked(|s| s.stack.iter().any(|i| i.enabled && matches!(i.vector, VectorSpec::SaeLatent { .. })));
            if let Some(d) = dict.filter(|_| had || used) {
                load_dict(ctx, state, d);
            }
        }
        Response::DictionaryLoaded(info) => {
            ctx.status.set(format!("Dictionary {} loaded: {} latents at {}", info.name, info.d_sae, info.hook));
            state.chosen.set_value(true);
            state.info.set(Some((**info).clone()));
            state.features.set(None);
            state.dashboard.set(None);
            state.search.set(None);
        }
        Response::Features(f) => {
            state.features.set(Some((**f).clone()));
            ctx.status.set("Features computed".into());
        }
        Response::Dashboard(d) => {
            state.dashboard.set(Some((**d).clone()));
            ctx.status.set(format!("Latent {} dashboard", d.latent));
        }
        Response::LatentSearch(s) => {
            state.search.set(Some((**s).clone()));
            ctx.status.set(format!("Latents for {}", show_token(&s.token)));
        }
        Response::CorpusIndexed(c) => {
            ctx.status.set(if c.complete { "Corpus pass done".into() } else { format!("Corpus pass stopped at window {} of {}", c.windows, c.windows_total) });
            state.corpus.set(Some((**c).clone()));
            // The open dashboard gains (or updates) its corpus findings.
            if let Some(l) = ctx.st.with_untracked(|s| s.features.latent) {
                ctx.send(Request::Dashboard { latent: l });
            }
        }
        _ => {}
    }
}

/// `blocks.{l}.{site}` as a stack item's layer and site.
fn block_site(hook: &str) -> Option<(u32, String)> {
    let (l, site) = hook.strip_prefix("blocks.")?.split_once('.')?;
    Some((l.parse().ok()?, site.to_string()))
}

/// Adds a stack item for `latent`: steer with its decoder row, or clamp it
/// through the dictionary (value 0: ablate).
fn add_item(ctx: Ctx, info: &DictionaryInfo, latent: u32, op: UiOp, strength: f32) {
    if ctx.st.with_untracked(|s| s.stack.len()) >= MAX_ITEMS {
        ctx.error.set(Some(format!("the stack holds at most {MAX_ITEMS} interventions")));
        return;
    }
    // A decoder row writes at the output hook; a clamp reads and writes the SAE's own hook.
    let hook = if op == UiOp::Add { info.hook_out.clone().unwrap_or_else(|| info.hook.clone()) } else { info.hook.clone() };
    let n = ctx.n_layers();
    let what = match (op, strength) {
        (UiOp::Add, _) => format!("steer with latent {latent} × {strength}"),
        (_, 0.0) => format!("ablate latent {latent}"),
        _ => format!("clamp latent {latent} to {strength}"),
    };
    ctx.st.update(|s| {
        let id = s.next_item_id();
        let mut it = StackItem::new(id, op, n);
        match block_site(&hook) {
            Some((l, site)) => {
                it.layer = Some(l);
                it.site = site;
                it.vector = VectorSpec::SaeLatent { latent };
                it.strength = strength;
            }
            // A hook outside the blocks (hook_embed): written as JSON.
            None => {
                it = StackItem::new(id, UiOp::Json, n);
                it.json = if op == UiOp::Add {
                    serde_json::json!({"hook": hook, "op": "add", "vector": {"from": "sae", "latent": latent}, "scale": strength})
                } else {
                    serde_json::json!({"hook": hook, "op": "sae_clamp", "latent": latent, "value": strength})
                }
                .to_string();
            }
        }
        s.stack.push(it);
    });
    let n = ctx.st.with_untracked(|s| s.stack.len());
    ctx.status.set(format!("Added intervention #{n}: {what} at {hook} (see Generate & intervene)"));
}

fn open_latent(ctx: Ctx, latent: u32) {
    ctx.st.update(|s| s.features.latent = Some(latent));
    ctx.send(Request::Dashboard { latent });
}

/// A latent as a button that opens its dashboard.
fn latent_button(ctx: Ctx, id: u32, text: String) -> impl IntoView {
    // The accessible name contains the visible text (WCAG 2.5.3).
    let name = format!("Latent {id}: {text}");
    view! { <button class="chip" aria-label=name title=format!("open latent {id}'s dashboard") on:click=move |_| open_latent(ctx, id)>{text}</button> }
}

fn dict_line(info: DictionaryInfo) -> impl IntoView {
    let hooks = match &info.hook_out {
        Some(o) => format!("transcoder {} → {o}", info.hook),
        None => format!("SAE at {}", info.hook),
    };
    let notes = (!info.notes.is_empty()).then(|| view! { <p class="muted">{info.notes.join(" · ")}</p> });
    view! {
        <p role="group" aria-label="Loaded dictionary">{format!("{} · {} · {} · {hooks} · {} latents (d_in {})", info.name, info.format, info.architecture, info.d_sae, info.d_in)}</p>
        {notes}
    }
}

fn features_view(ctx: Ctx, f: Features) -> impl IntoView {
    let n = f.positions.len().max(1) as f32;
    let mean = |g: &dyn Fn(usize) -> f32| (0..f.positions.len()).map(g).sum::<f32>() / n;
    let l0 = mean(&|p| f.positions[p].l0 as f32);
    let err = mean(&|p| f.positions[p].reconstruction_error);
    let splice = f.splice.clone();
    let summary = match &splice {
        Some(s) => format!(
            "mean L0 {l0:.1} · mean reconstruction error {:.1}% · dictionary spliced in: mean KL {:.4} nats, top-1 changed at {} of {} positions",
            100.0 * err,
            s.kl.iter().sum::<f32>() / n,
            s.top1_changed,
            s.kl.len()
        ),
        None => format!("mean L0 {l0:.1} · mean reconstruction error {:.1}%", 100.0 * err),
    };
    // Heatmap columns: each position's top 3, first seen first.
    let mut cols: Vec<u32> = Vec::new();
    for p in &f.positions {
        for l in p.latents.iter().take(3) {
            if !cols.contains(&l.id) && cols.len() < HEATMAP_LATENTS {
                cols.push(l.id);
            }
        }
    }
    let rows: Vec<String> = f.positions.iter().map(|p| format!("{} {}", p.position, show_token(&p.token))).collect();
    let values: Vec<Vec<f32>> = f.positions.iter().map(|p| cols.iter().map(|c| p.latents.iter().find(|l| l.id == *c).map_or(0.0, |l| l.activation)).collect()).collect();
    let col_names: Vec<String> = cols.iter().map(|c| format!("#{c}")).collect();
    let table = f
        .positions
        .iter()
        .map(|p| {
            let kl = splice.as_ref().and_then(|s| s.kl.get(p.position)).map(|k| format!("{k:.4}")).unwrap_or_default();
            let top = splice
                .as_ref()
                .and_then(|s| Some((s.top_model.get(p.position)?, s.top_spliced.get(p.position)?)))
                .map(|(a, b)| if a == b { show_token(a) } else { format!("{} → {}", show_token(a), show_token(b)) })
                .unwrap_or_default();
            let chips = p.latents.iter().map(|l| latent_button(ctx, l.id, format!("#{} {:.2}", l.id, l.activation))).collect_view();
            // Full precision for tests and copying: "id:activation,…".
            let exact = p.latents.iter().map(|l| format!("{}:{}", l.id, l.activation)).collect::<Vec<_>>().join(",");
            view! {
                <tr data-latents=exact>
                    <td>{p.position}</td>
                    <td class="token">{show_token(&p.token)}</td>
                    <td>{p.l0}</td>
                    <td data-value=p.reconstruction_error.to_string()>{format!("{:.1}%", 100.0 * p.reconstruction_error)}</td>
                    <td>{kl}</td>
                    <td class="token">{top}</td>
                    <td class="chips">{chips}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p role="group" aria-label="Features summary">{summary}</p>
        <div class="scroll">
            <table class="features-table" aria-label="Features per position">
                <thead><tr>
                    <th scope="col">"pos"</th><th scope="col">"token"</th><th scope="col">"L0"</th>
                    <th scope="col" title="‖y − ŷ‖² / ‖y‖²">"recon. error"</th>
                    <th scope="col" title="KL(model ‖ model with the dictionary spliced in), next token">"KL"</th>
                    <th scope="col">"top-1 (spliced)"</th><th scope="col">"top latents (activation)"</th>
                </tr></thead>
                <tbody>{table}</tbody>
            </table>
        </div>
        <Show when=move || !cols.is_empty()>
            <p class="muted">"Heatmap: each position's top latents (blank: not among that position's top k)."</p>
            <Heatmap label="Latent activations".into() rows=rows.clone() cols=col_names.clone() values=values.clone() diverging_scale=false/>
        </Show>
    }
}

fn search_view(ctx: Ctx, s: LatentSearch) -> impl IntoView {
    let list = |v: &[scalpel_types::features::LatentMatch]| v.iter().map(|m| latent_button(ctx, m.id, format!("#{} {:.3}", m.id, m.score))).collect_view();
    let fires = if s.fires.is_empty() {
        view! { <span class="muted">"none yet (needs the corpus pass)"</span> }.into_any()
    } else {
        list(&s.fires).into_any()
    };
    view! {
        <div role="group" aria-label="Search results">
            <p>{format!("Token {} (id {}).", show_token(&s.token), s.id)}</p>
            <p>"Write to it (decoder row · its unembedding): " <span class="chips">{list(&s.writes)}</span></p>
            <p>"Peak on it in the corpus (activation): " <span class="chips">{fires}</span></p>
        </div>
    }
}

/// One context: its tokens, each shaded by the latent's activation there.
fn context_view(c: scalpel_types::features::Context, max: f32) -> impl IntoView {
    let spans = c
        .tokens
        .iter()
        .zip(&c.activations)
        .enumerate()
        .map(|(i, (t, &a))| {
            let bg = sequential(if max > 0.0 { a / max } else { 0.0 });
            let style = format!("background:{};color:{}", css(bg), ink(bg));
            // A byte token that only starts a character adds no text of its own.
            let text = if t.is_empty() { "·".to_string() } else { t.replace('\n', "⏎") };
            view! { <span class="ctx-tok" class:peak=i == c.position style=style title=format!("{} · {a:.3}", show_token(t)) data-value=a.to_string()>{text}</span> }
        })
        .collect_view();
    view! {
        <li data-window=c.window.to_string() data-position=c.position.to_string() data-activation=c.activation.to_string()>
            <span class="ctx-act">{format!("{:.3}", c.activation)}</span>
            <span class="ctx-text">{spans}</span>
        </li>
    }
}

fn dashboard_view(ctx: Ctx, state: State, d: LatentDashboard) -> impl IntoView {
    let scores = |ts: &[scalpel_types::readouts::TokenScore]| ts.iter().map(|t| (t.token.clone(), t.score)).collect::<Vec<_>>();
    let latent = d.latent;
    let vocab = if d.promoted.is_empty() {
        view! { <p class="muted">"This dictionary does not write to a d_model-wide hook, so its decoder rows are not read through the unembedding."</p> }.into_any()
    } else {
        view! {
            <div class="grid2">
                <div><h4>"Promotes"</h4><Bars label=format!("Latent {latent} promoted tokens") items=scores(&d.promoted)/></div>
                <div><h4>"Suppresses"</h4><Bars label=format!("Latent {latent} suppressed tokens") items=scores(&d.suppressed) signed=true/></div>
            </div>
        }
        .into_any()
    };
    let corpus = match d.corpus.clone() {
        None => view! { <p class="muted">"Top contexts and the histogram need the corpus pass (above)."</p> }.into_any(),
        Some(c) => {
            let partial = if c.complete { String::new() } else { format!(" (partial: {} of {} windows)", c.windows, c.windows_total) };
            let freq = if c.tokens > 0 { 100.0 * c.fires as f64 / c.tokens as f64 } else { 0.0 };
            let hist: Vec<(String, f32)> = c
                .histogram
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| (format!("{:.3}–{:.3}", c.histogram.edges[i], c.histogram.edges[i + 1]), n as f32))
                .collect();
            let max = c.max;
            let contexts = c.contexts.into_iter().map(|x| context_view(x, max)).collect_view();
            view! {
                <p role="group" aria-label="Latent corpus summary">{format!("Fires at {} of {} corpus tokens ({freq:.3}%), max activation {max:.3}{partial}", c.fires, c.tokens)}</p>
                <div class="grid2">
                    <div>
                        <h4>"Activation histogram (positive values, log bins)"</h4>
                        <Bars label=format!("Latent {latent} activation histogram") items=hist names=true counts=true/>
                    </div>
                    <div>
                        <h4>"Top contexts"</h4>
                        <ol class="contexts" aria-label=format!("Latent {latent} top contexts")>{contexts}</ol>
                    </div>
                </div>
            }
            .into_any()
        }
    };
    let info = state.info.get_untracked();
    let can_clamp = info.as_ref().is_some_and(|i| i.hook_out.is_none());
    let act = move |op: UiOp, v: f32| {
        if let Some(i) = state.info.get_untracked() {
            add_item(ctx, &i, latent, op, v)
        }
    };
    view! {
        <section class="dashboard" aria-label=format!("Latent {latent} dashboard")>
            <h3>{format!("Latent {latent}")}</h3>
            <p class="muted">{format!("writes at {} · ‖decoder row‖ = {:.3} · scores: logit change per unit of activation (through the final norm's weight)", d.hook_out, d.decoder_norm)}</p>
            <div class="row" role="group" aria-label="Latent actions">
                {num_input("Steering strength", ("-1000", "1000", "0.5"), move || state.steer.get(), move |v: f32| state.steer.set(v))}
                <button on:click=move |_| act(UiOp::Add, state.steer.get_untracked())>"Steer with this latent"</button>
                <Show when=move || can_clamp>
                    {num_input("Clamp value", ("-1000", "1000", "0.5"), move || state.clamp.get(), move |v: f32| state.clamp.set(v))}
                    <button on:click=move |_| act(UiOp::SaeClamp, state.clamp.get_untracked())>"Clamp this latent"</button>
                    <button on:click=move |_| act(UiOp::SaeClamp, 0.0)>"Ablate this latent"</button>
                </Show>
            </div>
            {vocab}
            {corpus}
        </section>
    }
}

fn corpus_line(c: CorpusStatus) -> String {
    let how = if c.cached {
        "read from this browser's IndexedDB".to_string()
    } else {
        format!("computed in {:.1} s, {:.0} tokens/s", c.seconds, c.tokens_per_second)
    };
    let done = if c.complete { String::new() } else { " — stopped; press the button to continue".to_string() };
    format!("{} of {} windows, {} tokens: {how}{done}", c.windows, c.windows_total, c.tokens)
}

#[component]
pub fn View() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = expect_context::<State>();
    let st = ctx.st;
    let on_files = move |ev: web_sys::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let Some(list) = input.files() else { return };
        let arr = js_sys::Array::new();
        let mut names = Vec::new();
        for i in 0..list.length() {
            if let Some(f) = list.get(i) {
                names.push(f.name());
                arr.push(&f);
            }
        }
        // The folder's name names a sparsify hook (`layers.6.mlp`): taken from the hook field or the file's path.
        let folder = state.hook.get_untracked();
        state.files.set_value(Some((folder, names, arr)));
    };
    let on_load = move |_| {
        let hook = Some(state.hook.get_untracked().trim().to_string()).filter(|h| !h.is_empty());
        let loc = match state.source.get_untracked() {
            "url" => DictLocation::Url { base: state.url.get_untracked().trim().to_string(), hook },
            "hf" => {
                let (repo, folder) = (state.repo.get_untracked(), state.folder.get_untracked());
                let (repo, folder) = (repo.trim().trim_matches('/'), folder.trim().trim_matches('/'));
                if repo.split('/').count() != 2 || repo.chars().any(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(c))) {
                    ctx.error.set(Some(format!("'{repo}' is not a Hugging Face repository name (owner/name)")));
                    return;
                }
                let folder = if folder.is_empty() { String::new() } else { format!("{folder}/") };
                DictLocation::Url { base: format!("https://huggingface.co/{repo}/resolve/main/{folder}"), hook }
            }
            "files" => match state.files.get_value() {
                Some((_, names, _)) => DictLocation::Files { folder: hook.clone().unwrap_or_default(), names, hook: hook.filter(|h| h.starts_with("blocks.") || h.starts_with("hook_")) },
                None => {
                    ctx.error.set(Some("pick the dictionary's files first (cfg.json and its weights file, or config.yaml and a layer_N.safetensors)".into()));
                    return;
                }
            },
            _ => default_dictionary(state.layer.get_untracked()),
        };
        load_dict(ctx, state, loc);
    };
    let encode = move |_| {
        let top_k = st.with_untracked(|s| s.features.top_k);
        ctx.send(Request::Features { prompt: prompt(ctx), top_k });
    };
    let search = move |_| {
        let text = st.with_untracked(|s| s.features.search.clone());
        ctx.send(Request::SearchLatents { text });
    };
    let loaded = move || state.info.with(|i| i.is_some());
    let can = move || ctx.ready() && loaded();
    view! {
        <div class="features">
            <h3>"Dictionary"</h3>
            <div class="row">
                <label>"From "
                    <select aria-label="Dictionary source" on:change=move |ev| state.source.set(match event_target_value(&ev).as_str() { "hf" => "hf", "url" => "url", "files" => "files", _ => "default" })>
                        <option value="default" selected=move || state.source.get() == "default">{format!("{DEFAULT_DICTIONARY_REPO} (Hugging Face)")}</option>
                        <option value="hf" selected=move || state.source.get() == "hf">"a Hugging Face repository"</option>
                        <option value="url" selected=move || state.source.get() == "url">"a folder URL"</option>
                        <option value="files" selected=move || state.source.get() == "files">"files on this computer"</option>
                    </select>
                </label>
                {move || match state.source.get() {
                    "url" => view! {
                        <label>"Folder URL " <input type="url" aria-label="Dictionary folder URL" placeholder="https://huggingface.co/…/resolve/main/layers.6.mlp/" prop:value=move || state.url.get() on:input=move |ev| state.url.set(event_target_value(&ev)) /></label>
                    }.into_any(),
                    "hf" => view! {
                        <label>"Repository " <input type="text" aria-label="Dictionary repository" placeholder="EleutherAI/sae-SmolLM2-135M-64x" prop:value=move || state.repo.get() on:input=move |ev| state.repo.set(event_target_value(&ev)) /></label>
                        <label>"Folder " <input type="text" class="short" aria-label="Dictionary folder" placeholder="layers.6.mlp" prop:value=move || state.folder.get() on:input=move |ev| state.folder.set(event_target_value(&ev)) /></label>
                    }.into_any(),
                    "files" => view! {
                        <label class="file">"cfg.json + weights (or config.yaml + layer_N.safetensors) " <input type="file" multiple=true accept=".json,.yaml,.safetensors,.npz" aria-label="Dictionary files" on:change=on_files /></label>
                    }.into_any(),
                    _ => view! {
                        <label>"Layer "
                            <select aria-label="Dictionary layer" on:change=move |ev| { if let Ok(l) = event_target_value(&ev).parse() { state.layer.set(l) } }>
                                {move || (0..ctx.n_layers()).map(|l| view! { <option value=l.to_string() selected=move || state.layer.get() == l>{l}</option> }).collect_view()}
                            </select>
                        </label>
                        <span class="muted">"TopK SAE on the MLP output · 36,864 latents · about 170 MB"</span>
                    }.into_any(),
                }}
                <Show when=move || state.source.get() != "default">
                    <label title="The hook of a Gemma Scope file, a sparsify folder name, or a circuit-tracer set's layer file">"Hook / folder / layer file " <input type="text" class="short" aria-label="Dictionary hook" placeholder="layers.6.mlp, blocks.6.hook_resid_post or layer_6.safetensors" prop:value=move || state.hook.get() on:input=move |ev| state.hook.set(event_target_value(&ev)) /></label>
                </Show>
                <button on:click=on_load disabled=move || !ctx.ready()>"Load dictionary"</button>
            </div>
            {move || match state.info.get() {
                Some(i) => dict_line(i).into_any(),
                None => view! { <p class="muted">{move || match st.with(|s| s.features.dict.clone()) {
                    Some(d) => format!("{} is not loaded: press Load dictionary.", d.label()),
                    None => "No dictionary loaded. SAELens, sparsify and Gemma Scope folders and circuit-tracer transcoder sets are read (docs/features.md).".to_string(),
                }}</p> }.into_any(),
            }}

            <h3>"Latents on the prompt"</h3>
            <PromptBox with_chat=true/>
            <div class="row">
                {num_input("Latents per position", ("1", "64", "1"), move || st.with(|s| s.features.top_k), move |v: u32| st.update(|s| s.features.top_k = v.clamp(1, 64)))}
                <button on:click=encode disabled=move || !can()>"Encode prompt"</button>
            </div>
            {move || state.features.get().map(|f| features_view(ctx, f))}

            <h3>"Search latents"</h3>
            <div class="row">
                <label>"Token " <input type="text" class="short" aria-label="Search token" placeholder=" Paris" prop:value=move || st.with(|s| s.features.search.clone()) on:input=move |ev| { let v = event_target_value(&ev); st.update(|s| s.features.search = v) } /></label>
                <button on:click=search disabled=move || !can()>"Search latents"</button>
                <label>"Latent # " <input type="number" min="0" class="short" aria-label="Open latent" on:change=move |ev| { if let Ok(l) = event_target_value(&ev).parse::<u32>() { open_latent(ctx, l) } } /></label>
            </div>
            {move || state.search.get().map(|s| search_view(ctx, s))}

            <h3>"Corpus"</h3>
            <div class="row">
                <button on:click=move |_| ctx.send(Request::CorpusPass) disabled=move || !can()>
                    {move || if state.corpus.with(|c| c.as_ref().is_some_and(|c| !c.complete)) { "Continue the corpus pass" } else { "Run the corpus pass" }}
                </button>
                <StopButton kind="corpus"/>
                <Show when=move || ctx.busy("corpus")>
                    <progress aria-label="Corpus pass progress" max=move || ctx.work.get().1.max(1) value=move || ctx.work.get().0></progress>
                    <span class="muted">{move || { let (d, t) = ctx.work.get(); format!("window {d} of {t}") }}</span>
                </Show>
            </div>
            <p class="muted" role="group" aria-label="Corpus status">{move || match state.corpus.get() {
                Some(c) => corpus_line(c),
                None => "One pass over the project's corpus (691 documents in 18 languages, code and numbers; public/corpus) finds every latent's top contexts and histogram. It runs in the worker, is kept in this browser's IndexedDB, and can be stopped and continued.".to_string(),
            }}</p>

            {move || state.dashboard.get().map(|d| dashboard_view(ctx, state, d))}
        </div>
    }
}
