//! Sharing: the link to the current state, and an iframe snippet that
//! embeds it in a blog post.

use leptos::prelude::*;

use super::super::link::{copy_text, link_for};
use super::super::{panels, Ctx};

#[component]
pub fn ShareBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let note = RwSignal::new(String::new());
    let snippet = RwSignal::new(String::new());
    let on_copy = move |_| {
        let link = ctx.st.with_untracked(|s| link_for(s, false));
        copy_text(&link);
        note.set("Link copied".into());
    };
    let on_embed = move |_| {
        let link = ctx.st.with_untracked(|s| link_for(s, true));
        let html = format!(
            "<iframe src=\"{}\" title=\"Scalpel: {}\" width=\"100%\" height=\"620\" style=\"border:1px solid #ddd;border-radius:8px\" loading=\"lazy\"></iframe>",
            link.replace('&', "&amp;").replace('"', "&quot;"),
            panels::title(ctx.st.with_untracked(|s| s.panel))
        );
        copy_text(&html);
        snippet.set(html);
        note.set("Embed snippet copied".into());
    };
    view! {
        <div class="share">
            <button class="secondary" on:click=on_copy>"Copy link"</button>
            <button class="secondary" on:click=on_embed>"Embed"</button>
            <span class="muted" aria-live="polite">{move || note.get()}</span>
            <Show when=move || !snippet.get().is_empty()>
                <textarea class="snippet" aria-label="Embed snippet" readonly rows="3" prop:value=move || snippet.get()></textarea>
            </Show>
        </div>
    }
}
