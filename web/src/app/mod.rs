//! The page. Owns no model: every model operation is a `Request` to the
//! worker (`client.rs`), and the results come back as typed `Response`s,
//! shown by the panels (`panels/`), the page's sections (`sections/`) and
//! the intervention stack (`stack/`), drawn with `widgets/`.

mod client;
mod ctx;
mod link;
mod panels;
mod sections;
mod stack;
mod threads;
mod widgets;

pub use ctx::{Ctx, Phase};

use leptos::prelude::*;

use crate::state::Panel;

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    let (initial, link_error) = link::initial_state();
    let (embed_controls, controls_error) = link::embed_controls();
    let link_error = link_error.or(controls_error);
    let embed = embed_controls.is_some();
    // The last valid state this browser kept, offered when the page opens on another one.
    let saved = RwSignal::new(if embed { None } else { link::saved_state().filter(|s| *s != initial) });
    let crashed_before = link::crashed_before(&initial);
    let ctx = Ctx::new(initial, embed_controls);
    provide_context(ctx);
    let panels = panels::Panels::new();
    panels.provide();
    if crashed_before {
        ctx.skip_first_run("The last time this state ran, the engine crashed: it is not run until you ask.".into());
    }
    // A bad link keeps its message visible even after the model loads.
    let bad_address = link_error.is_some();
    let link_error = RwSignal::new(link_error);
    // Why the current state cannot go into the link (it is then not written).
    let state_problem = RwSignal::new(None::<String>);
    Effect::new(move |prev: Option<()>| {
        ctx.st.with(|s| {
            // An address that failed to open stays as it was until the user changes something.
            if prev.is_some() || !bad_address {
                state_problem.set(link::remember(s, embed_controls).err());
            }
        })
    });
    let restore = move |_| {
        let Some(s) = saved.get_untracked() else { return };
        let (source, precision) = (s.model.clone(), s.precision);
        saved.set(None);
        let model_changes = source.clone().unwrap_or_else(ctx::default_model) != ctx.model_source();
        ctx.st.set(s);
        if model_changes {
            ctx.load(ctx.model_source(), precision, None);
        } else {
            panels.run(ctx, ctx.st.with_untracked(|s| s.panel));
        }
    };
    client::start(ctx, panels);
    panels.follow(ctx);
    // The open panel's first run as soon as a model is loaded (not when a
    // failed load hands the previous model back).
    Effect::new(move |_| {
        if ctx.loads.get() > 0 {
            panels.run(ctx, ctx.st.with_untracked(|s| s.panel));
        }
    });
    view! {
        <Show when=move || !embed fallback=|| view! { <sections::embed::EmbedHeader/> }>
            <header class="top">
                <div class="brand">
                    <h1>"Scalpel"</h1>
                    <p class="tagline">"Steer, ablate and patch a language model in your browser."</p>
                </div>
                <sections::share::ShareBar/>
            </header>
        </Show>
        <main
            class:embed=embed
            data-state=move || ctx.phase.get().as_str()
            aria-busy=move || (!matches!(ctx.phase.get(), Phase::Ready | Phase::Failed | Phase::Confirm)).to_string()
        >
            <Show when=move || link_error.with(|e| e.is_some())>
                <div class="notice" role="alert" aria-label="Link error">
                    <span>{move || link_error.get()}</span>
                    <button class="icon" aria-label="Dismiss the link error" on:click=move |_| link_error.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || state_problem.with(|e| e.is_some())>
                <div class="notice" role="alert" aria-label="State not saved">
                    <span>{move || state_problem.get().map(|e| format!("This state cannot go into a link: {e}. The address and the saved session keep the last valid state."))}</span>
                </div>
            </Show>
            <Show when=move || ctx.notice.with(|e| e.is_some())>
                <div class="notice info" role="note" aria-label="Notice">
                    <span>{move || ctx.notice.get()}</span>
                    <button class="icon" aria-label="Dismiss the notice" on:click=move |_| ctx.notice.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || saved.with(|s| s.is_some())>
                <div class="notice info" role="region" aria-label="Previous session">
                    <span>"This browser kept your previous session."</span>
                    <button class="secondary" on:click=restore>"Restore previous session"</button>
                    <button class="icon" aria-label="Dismiss the previous session" on:click=move |_| saved.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || ctx.confirm_model.with(|m| m.is_some())>
                <sections::confirm_model::ConfirmModel/>
            </Show>
            <Show when=move || !embed fallback=|| view! { <sections::embed::EmbedStatus/> }>
                <sections::model_card::ModelCard/>
                <sections::presets::Presets/>
                <Show when=move || ctx.building.get()>
                    <sections::exercise::ExerciseBuilder/>
                </Show>
            </Show>
            <Show when=move || !ctx.building.get() && ctx.st.with(|s| s.exercise.is_some())>
                <sections::exercise::ExerciseCard/>
            </Show>
            <Show when=move || !embed>
                <Tabs panels=panels/>
            </Show>
            <section class="panel" role="tabpanel" aria-label=move || panels::title(ctx.st.with(|s| s.panel))>
                {move || panels::view(ctx.st.with(|s| s.panel))}
            </section>
            <p role="status" class="status">{move || ctx.status.get()}</p>
            <p role="alert" class="error">{move || ctx.error.get()}</p>
        </main>
    }
}

#[component]
fn Tabs(panels: panels::Panels) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <nav class="tabs" role="tablist" aria-label="Panels">
            {Panel::ALL
                .into_iter()
                .map(|p| {
                    view! {
                        <button
                            role="tab"
                            id=format!("tab-{}", p.id())
                            aria-selected=move || (ctx.st.with(|s| s.panel) == p).to_string()
                            on:click=move |_| {
                                ctx.st.update(|s| s.panel = p);
                                panels.run(ctx, p);
                            }
                        >
                            {panels::title(p)}
                        </button>
                    }
                })
                .collect_view()}
        </nav>
    }
}
