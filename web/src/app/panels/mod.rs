//! The panel registry. A panel is one file: its title, its state (what it
//! shows), `run` (the request it sends when it opens or re-runs),
//! `on_response` (what it takes from the worker) and its `View`.
//!
//! Adding a panel: its file here, its variant in `state::Panel` (the link
//! names it), its line in `panels!` below, and its request and response in
//! `protocol.rs` (answered in the worker).

mod attention;
mod attribution;
mod features;
mod lens;
mod patch;
mod steer;

use leptos::prelude::*;

use super::Ctx;
use crate::protocol::{Prompt, Response};
use crate::state::Panel;

macro_rules! panels {
    ($($module:ident => $variant:ident),* $(,)?) => {
        /// Every panel's state, created once for the page.
        #[derive(Clone, Copy)]
        pub struct Panels {
            $($module: $module::State,)*
        }

        impl Panels {
            pub fn new() -> Panels {
                Panels { $($module: $module::State::new(),)* }
            }

            /// Makes each state reachable from its panel's components.
            pub fn provide(self) {
                provide_context(self);
                $(provide_context(self.$module);)*
            }

            /// Sends what panel `p` shows when it opens (if a model is loaded).
            pub fn run(self, ctx: Ctx, p: Panel) {
                if ctx.info.get_untracked().is_none() {
                    return;
                }
                match p {
                    $(Panel::$variant => $module::run(ctx, self.$module),)*
                }
            }

            /// The last comparison's most likely next token (and whether
            /// it is the intervened column's), for the exercise builder.
            pub fn top_next(self) -> Option<(String, f32, bool)> {
                steer::top_next(self.steer)
            }

            /// The last patching sweep, for the exercise builder.
            pub fn sweep(self) -> Option<crate::protocol::PatchResult> {
                patch::result(self.patch)
            }

            /// Lets every panel take what it shows from a response.
            pub fn on_response(self, ctx: Ctx, r: &Response) {
                $($module::on_response(ctx, self.$module, r);)*
            }

            /// Re-runs panels that follow the state as it changes, and
            /// clears what a starting request replaces.
            pub fn follow(self, ctx: Ctx) {
                steer::rerun_on_change(ctx, self.steer);
                ctx.set_on_start(move |kind| steer::started(self.steer, kind));
            }
        }

        pub fn title(p: Panel) -> &'static str {
            match p {
                $(Panel::$variant => $module::TITLE,)*
            }
        }

        pub fn view(p: Panel) -> AnyView {
            match p {
                $(Panel::$variant => $module::View().into_any(),)*
            }
        }
    };
}

panels! {
    steer => Steer,
    patch => Patch,
    lens => Lens,
    attention => Attention,
    attribution => Attribution,
    features => Features,
}

/// The prompt the reading panels run on.
fn prompt(ctx: Ctx) -> Prompt {
    ctx.st.with_untracked(|s| Prompt { text: s.prompt.clone(), chat: s.chat })
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
                on:input=move |ev| {
                    let v = event_target_value(&ev);
                    ctx.st.update(|s| s.prompt = v)
                }
            ></textarea>
            <Show when=move || with_chat>
                <label class="check">
                    <input
                        type="checkbox"
                        aria-label="Chat mode"
                        prop:checked=move || ctx.st.with(|s| s.chat)
                        on:change=move |ev| {
                            let v = event_target_checked(&ev);
                            ctx.st.update(|s| s.chat = v)
                        }
                    />
                    "chat (wrap in the model's chat template)"
                </label>
            </Show>
        </div>
    }
}

/// A labelled number field that sets a value when it parses.
fn num_input<T: std::str::FromStr + ToString + Copy + 'static>(
    label: &'static str,
    (min, max, step): (&'static str, &'static str, &'static str),
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
