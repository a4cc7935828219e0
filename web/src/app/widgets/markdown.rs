//! Exercise texts rendered from the safe Markdown subset of
//! `crate::markdown`: text nodes only, never HTML.

use leptos::prelude::*;

use crate::markdown::{parse, Block, Inline};

fn runs(r: Vec<Inline>) -> impl IntoView {
    r.into_iter()
        .map(|i| match i {
            Inline::Text(t) => t.into_any(),
            Inline::Bold(t) => view! { <strong>{t}</strong> }.into_any(),
            Inline::Italic(t) => view! { <em>{t}</em> }.into_any(),
            Inline::Code(t) => view! { <code>{t}</code> }.into_any(),
        })
        .collect_view()
}

/// `text` rendered (as text nodes only).
#[component]
pub fn Markdown(#[prop(into)] text: Signal<String>) -> impl IntoView {
    move || {
        parse(&text.get())
            .into_iter()
            .map(|b| match b {
                Block::Paragraph(r) => view! { <p>{runs(r)}</p> }.into_any(),
                Block::List(items) => view! { <ul>{items.into_iter().map(|r| view! { <li>{runs(r)}</li> }).collect_view()}</ul> }.into_any(),
            })
            .collect_view()
    }
}
