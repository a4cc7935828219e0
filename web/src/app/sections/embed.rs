//! What an embedded figure (`?embed=1`) shows instead of the page's header
//! and model card: the panel's name with a link to the full page, and the
//! download while the model loads.

use leptos::prelude::*;

use super::super::link::link_for;
use super::super::{panels, Ctx};

#[component]
pub fn EmbedHeader() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    view! {
        <header class="embed-header">
            <strong>"Scalpel"</strong>
            <span class="muted">{move || panels::title(ctx.st.with(|s| s.panel))}</span>
            <a href=move || ctx.st.with(|s| link_for(s, None)) target="_blank" rel="noopener">"Open in Scalpel ↗"</a>
        </header>
    }
}

#[component]
pub fn EmbedStatus() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let percent = move || {
        let (l, t, _) = ctx.progress.get();
        t.filter(|t| *t > 0.0).map(|t| (100.0 * l / t).min(100.0))
    };
    view! {
        <Show when=move || ctx.info.get().is_none()>
            <div class="row">
                <progress aria-label="Model download" max="100" value=move || percent().map(|p| format!("{p:.1}")).unwrap_or_default()></progress>
                <span class="muted">{move || format!("{} {}", ctx.model_source().label(), percent().map(|p| format!("{p:.0}%")).unwrap_or_default())}</span>
            </div>
        </Show>
    }
}
