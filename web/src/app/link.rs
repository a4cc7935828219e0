//! The page's URL: the state it opens with (`#s=…`, plus `preset`,
//! `panel`, `precision`, `kernels`, `embed` and `controls` query
//! parameters), the link
//! for the current state, copying it, and the copies kept in the browser
//! (the last valid state, and a state that crashed the engine).

use gloo_storage::{LocalStorage, Storage};

use crate::protocol::{Kernels, Precision};
use crate::state::{presets, EmbedControls, Panel, Shared, MAX_LINK_CHARS};

/// localStorage key of the last valid state (the "restore previous session" offer).
const LAST_STATE_KEY: &str = "scalpel.last_state";
/// localStorage key of the state that was running when the engine crashed.
const CRASHED_STATE_KEY: &str = "scalpel.crashed_state";

fn location_hash() -> String {
    web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default()
}

/// Whether the page is an embed (`embed=1`), and the controls its reader
/// gets (`controls=`; an unknown one is an error for the link notice, and
/// the embed then offers none).
pub fn embed_controls() -> (Option<EmbedControls>, Option<String>) {
    if query_param("embed").as_deref() != Some("1") {
        return (None, None);
    }
    match query_param("controls").map(|v| EmbedControls::parse(&v)) {
        None => (Some(EmbedControls::default()), None),
        Some(Ok(c)) => (Some(c), None),
        Some(Err(e)) => (Some(EmbedControls::default()), Some(e)),
    }
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

/// The query of a page's URL: none, or an embed with the reader's controls.
fn query(embed: Option<EmbedControls>) -> String {
    match embed {
        None => String::new(),
        Some(c) if !c.any() => "?embed=1".into(),
        Some(c) => format!("?embed=1&controls={}", c.to_param()),
    }
}

/// The page's URL for `st`; an embed's adds `embed=1` and its controls.
pub fn link_for(st: &Shared, embed: Option<EmbedControls>) -> String {
    let loc = web_sys::window().map(|w| w.location());
    let origin = loc.as_ref().and_then(|l| l.origin().ok()).unwrap_or_default();
    let path = loc.as_ref().and_then(|l| l.pathname().ok()).unwrap_or_else(|| "/".into());
    format!("{origin}{path}{}#s={}", query(embed), st.encode())
}

/// Keeps the address bar and the browser's saved copy on `st`, if it is
/// valid (a state the next visit would reject is never written; the
/// problem is returned). No history entries are added; only `embed` and
/// `controls` stay query parameters (the others are folded into the state).
pub fn remember(st: &Shared, embed: Option<EmbedControls>) -> Result<(), String> {
    st.validate()?;
    let enc = st.encode();
    if enc.len() > MAX_LINK_CHARS {
        return Err(format!("the state is {} characters encoded; a link holds at most {MAX_LINK_CHARS}", enc.len()));
    }
    let Some(w) = web_sys::window() else { return Ok(()) };
    if let Ok(h) = w.history() {
        let url = format!("{}{}#s={enc}", w.location().pathname().unwrap_or_else(|_| "/".into()), query(embed));
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
    }
    // Private windows and full storage refuse: the address still holds the state.
    let _ = LocalStorage::set(LAST_STATE_KEY, &enc);
    Ok(())
}

/// The last valid state this browser kept, if it still opens (one that no
/// longer does is dropped).
pub fn saved_state() -> Option<Shared> {
    let enc: String = LocalStorage::get(LAST_STATE_KEY).ok()?;
    match Shared::decode(&enc) {
        Ok(s) => Some(s),
        Err(_) => {
            LocalStorage::delete(LAST_STATE_KEY);
            None
        }
    }
}

/// Marks `st` as the state that was running when the engine crashed, so a
/// reload does not run it again by itself.
pub fn mark_crashed(st: &Shared) {
    let _ = LocalStorage::set(CRASHED_STATE_KEY, st.encode());
}

/// Whether `st` is the state marked by [`mark_crashed`].
pub fn crashed_before(st: &Shared) -> bool {
    LocalStorage::get::<String>(CRASHED_STATE_KEY).is_ok_and(|enc| enc == st.encode())
}

/// Something ran to its end: no state is marked as crashing any more.
pub fn clear_crashed() {
    LocalStorage::delete(CRASHED_STATE_KEY);
}

pub fn copy_text(text: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
}
