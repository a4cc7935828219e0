//! Worked examples: each loads a whole state in one click and runs its panel.

use leptos::prelude::*;

use super::super::panels::Panels;
use super::super::Ctx;
use crate::state::presets;

#[component]
pub fn Presets() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let panels = expect_context::<Panels>();
    view! {
        <section class="card presets" aria-labelledby="presets-h">
            <h2 id="presets-h">"Worked examples"</h2>
            <ul class="preset-list">
                {presets()
                    .into_iter()
                    .map(|p| {
                        let st = p.state.clone();
                        view! {
                            <li>
                            <button
                                class="preset"
                                title=p.blurb
                                aria-label=format!("Preset: {}", p.title)
                                on:click=move |_| {
                                    let mut s = st.clone();
                                    // Keep the loaded model and precision.
                                    ctx.st.with_untracked(|cur| {
                                        s.model = cur.model.clone();
                                        s.precision = cur.precision;
                                    });
                                    let panel = s.panel;
                                    ctx.st.set(s);
                                    panels.run(ctx, panel);
                                }
                            >
                                {p.title}
                            </button>
                            <span class="muted">{p.blurb}</span>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
            <super::exercise::Course/>
        </section>
    }
}
