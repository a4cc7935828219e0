//! The page's URL: the state it opens with (`#s=…`, plus `preset`,
//! `panel`, `precision`, `kernels` and `embed` query parameters), the link
//! for the current state, and copying it.

use crate::protocol::{Kernels, Precision};
use crate::state::{presets, Panel, Shared};

fn location_hash() -> String {
    web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default()
}

pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get(name)
}

/// The state in the link (`#s=…`), or the default with a message on a bad link.
pub fn initial_state() -> (Shared, Option<String>) {
    let hash = location_hash();
    let mut st = Shared::default();
    let mut err = None;
    if let Some(enc) = hash.strip_prefix("#s=") {
        match Shared::decode(enc) {
            Ok(s) => st = s,
            Err(e) => err = Some(format!("This link could not be opened: {e}. Showing the defaults instead.")),
        }
    } else if !hash.is_empty() && hash != "#" {
        err = Some("This link could not be opened: its fragment is not a Scalpel state (#s=…). Showing the defaults instead.".into());
    }
    if let Some(p) = query_param("precision").and_then(|p| p.parse::<Precision>().ok()) {
        st.precision = p;
    }
    if let Some(k) = query_param("kernels").and_then(|k| k.parse::<Kernels>().ok()) {
        st.kernels = k;
    }
    if let Some(p) = query_param("preset") {
        match presets().into_iter().find(|x| x.id == p) {
            Some(x) => st = x.state,
            None => err = Some(format!("There is no preset called '{}'.", p.chars().take(40).collect::<String>())),
        }
    }
    if let Some(panel) = query_param("panel").and_then(|p| Panel::ALL.into_iter().find(|x| x.id() == p)) {
        st.panel = panel;
    }
    (st, err)
}

/// The page's URL for `st` (embed adds `embed=1`).
pub fn link_for(st: &Shared, embed: bool) -> String {
    let loc = web_sys::window().map(|w| w.location());
    let origin = loc.as_ref().and_then(|l| l.origin().ok()).unwrap_or_default();
    let path = loc.as_ref().and_then(|l| l.pathname().ok()).unwrap_or_else(|| "/".into());
    let q = if embed { "?embed=1" } else { "" };
    format!("{origin}{path}{q}#s={}", st.encode())
}

/// Keeps the address bar on `st` without adding history entries; only
/// `embed` stays a query parameter (the others are folded into the state).
pub fn replace_url(st: &Shared, embed: bool) {
    let Some(w) = web_sys::window() else { return };
    if let Ok(h) = w.history() {
        let q = if embed { "?embed=1" } else { "" };
        let url = format!("{}{q}#s={}", w.location().pathname().unwrap_or_else(|_| "/".into()), st.encode());
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
    }
}

pub fn copy_text(text: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
}
