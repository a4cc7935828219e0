//! Sharing: the link to the current state, and an iframe snippet that
//! embeds it in a blog post, with the controls its readers get.

use leptos::prelude::*;

use super::super::link::{copy_text, link_for};
use super::super::{panels, Ctx};
use crate::state::{EmbedControls, CONTROLS};

#[component]
pub fn ShareBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let note = RwSignal::new(String::new());
    let open = RwSignal::new(false);
    let controls = RwSignal::new(EmbedControls::default());
    let snippet = move || {
        let link = ctx.st.with(|s| link_for(s, Some(controls.get())));
        format!(
            "<iframe src=\"{}\" title=\"Scalpel: {}\" width=\"100%\" height=\"620\" style=\"border:1px solid #ddd;border-radius:8px\" loading=\"lazy\"></iframe>",
            link.replace('&', "&amp;").replace('"', "&quot;"),
            panels::title(ctx.st.with(|s| s.panel))
        )
    };
    let on_copy = move |_| {
        let link = ctx.st.with_untracked(|s| link_for(s, None));
        copy_text(&link);
        note.set("Link copied".into());
    };
    let on_embed = move |_| {
        copy_text(&untrack(snippet));
        open.set(true);
        note.set("Embed snippet copied".into());
    };
    let on_copy_snippet = move |_| {
        copy_text(&untrack(snippet));
        note.set("Embed snippet copied".into());
    };
    view! {
        <div class="share">
            <button class="secondary" on:click=on_copy>"Copy link"</button>
            <button class="secondary" on:click=on_embed>"Embed"</button>
            <button class="secondary" on:click=move |_| ctx.building.set(true)>"Make an exercise"</button>
            <span class="muted" aria-live="polite">{move || note.get()}</span>
            <Show when=move || open.get()>
                <fieldset class="embed-controls">
                    <legend>"Readers of the embed may change"</legend>
                    {CONTROLS
                        .into_iter()
                        .map(|(name, what)| {
                            view! {
                                <label class="check" title=what>
                                    <input
                                        type="checkbox"
                                        aria-label=format!("Embed control: {name}")
                                        prop:checked=move || controls.with(|c| c.get(name))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            controls.update(|c| c.set(name, on));
                                        }
                                    />
                                    {name}
                                </label>
                            }
                        })
                        .collect_view()}
                    <button class="secondary" on:click=on_copy_snippet>"Copy snippet"</button>
                </fieldset>
                <textarea class="snippet" aria-label="Embed snippet" readonly rows="3" prop:value=snippet></textarea>
            </Show>
        </div>
    }
}
