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
    let embed = link::query_param("embed").as_deref() == Some("1");
    let ctx = Ctx::new(initial, embed);
    provide_context(ctx);
    let panels = panels::Panels::new();
    panels.provide();
    // A bad link keeps its message visible even after the model loads.
    let link_error = RwSignal::new(link_error);
    Effect::new(move |_| ctx.st.with(|s| link::replace_url(s, embed)));
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
            aria-busy=move || (!matches!(ctx.phase.get(), Phase::Ready | Phase::Failed)).to_string()
        >
            <Show when=move || link_error.with(|e| e.is_some())>
                <div class="notice" role="alert" aria-label="Link error">
                    <span>{move || link_error.get()}</span>
                    <button class="icon" aria-label="Dismiss the link error" on:click=move |_| link_error.set(None)>"✕"</button>
                </div>
            </Show>
            <Show when=move || !embed fallback=|| view! { <sections::embed::EmbedStatus/> }>
                <sections::model_card::ModelCard/>
                <sections::presets::Presets/>
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
