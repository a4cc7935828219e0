//! A link that names its own model: where it would come from and how big
//! it is (asked with a HEAD request, or from a sharded checkpoint's
//! index), and nothing downloaded until the user clicks.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::super::widgets::{fmt_mb, TokenField};
use super::super::Ctx;
use crate::js::{content_length, js_err};
use crate::protocol::ModelLocation;
use crate::MAX_DOWNLOAD_BYTES;

/// What the page learned of the model's size.
#[derive(Clone, PartialEq)]
enum Size {
    Asking,
    Bytes(f64),
    /// The server answered but did not say.
    Unknown,
    /// The server could not be reached or refused.
    Unreachable(String),
}

#[component]
pub fn ConfirmModel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let Some(source) = ctx.confirm_model.get_untracked() else { return ().into_any() };
    let size = RwSignal::new(Size::Asking);
    let asked = source.clone();
    wasm_bindgen_futures::spawn_local(async move {
        size.set(match model_size(&asked).await {
            Ok(Some(b)) => Size::Bytes(b),
            Ok(None) => Size::Unknown,
            Err(e) => Size::Unreachable(e),
        });
    });
    let url = match &source {
        ModelLocation::Gguf { url } | ModelLocation::HfRepo { base: url } => url.clone(),
        ModelLocation::File { name } => name.clone(),
    };
    let host = host_of(&url);
    // The token field is offered where it may be sent (huggingface.co).
    let on_hub = host == "huggingface.co";
    let label = source.label();
    let too_big = move || matches!(size.get(), Size::Bytes(b) if b > MAX_DOWNLOAD_BYTES);
    let size_text = move || match size.get() {
        Size::Asking => "asking its size…".to_string(),
        Size::Bytes(b) if b > MAX_DOWNLOAD_BYTES => {
            format!("{}: more than the {} the browser build takes, so it cannot be loaded here", fmt_mb(b), fmt_mb(MAX_DOWNLOAD_BYTES))
        }
        Size::Bytes(b) => fmt_mb(b),
        Size::Unknown => "size unknown (the server did not say)".to_string(),
        Size::Unreachable(e) => format!("it could not be reached: {e}"),
    };
    let download = {
        let source = source.clone();
        move |_| ctx.load(source.clone(), ctx.st.with_untracked(|s| s.precision), None)
    };
    let use_default = move |_| {
        ctx.st.update(|s| s.model = None);
        ctx.load(ctx.model_source(), ctx.st.with_untracked(|s| s.precision), None);
    };
    view! {
        <section class="card confirm" role="region" aria-label="Model named by the link">
            <h2>"This link loads its own model"</h2>
            <p>
                <strong>{label}</strong>" from "<strong aria-label="Model host">{host}</strong>" · "
                <span role="group" aria-label="Model size">{size_text}</span>
            </p>
            <p class="muted">"Nothing is downloaded until you choose."</p>
            <Show when=move || on_hub>
                <div class="row"><TokenField label="Hugging Face token (gated models only) " placeholder="hf_…"/></div>
            </Show>
            <div class="row">
                <button on:click=download disabled=too_big>"Download and load it"</button>
                <button class="secondary" on:click=use_default>"Use the default model instead"</button>
            </div>
        </section>
    }
    .into_any()
}

/// The host `url` names, resolved against the page (a path is this site).
fn host_of(url: &str) -> String {
    let Some(loc) = web_sys::window().map(|w| w.location()) else { return url.to_string() };
    let page_host = loc.host().unwrap_or_default();
    match web_sys::Url::new_with_base(url, &loc.href().unwrap_or_default()) {
        Ok(u) if u.host() == page_host => format!("{} (this site)", u.host()),
        Ok(u) => u.host(),
        Err(_) => url.to_string(),
    }
}

/// The bytes the model's weights take, if the server says.
async fn model_size(source: &ModelLocation) -> Result<Option<f64>, String> {
    match source {
        ModelLocation::Gguf { url } => head_length(url).await,
        ModelLocation::HfRepo { base } => {
            let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
            match head_length(&format!("{base}model.safetensors")).await {
                Ok(n) => Ok(n),
                // Sharded: the index says the total.
                Err(_) => index_total(&format!("{base}model.safetensors.index.json")).await,
            }
        }
        ModelLocation::File { .. } => Ok(None),
    }
}

async fn request(url: &str, method: &str) -> Result<web_sys::Response, String> {
    let w = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let resp = JsFuture::from(w.fetch_with_str_and_init(url, &init)).await.map_err(|e| format!("network error ({})", js_err(e)))?;
    let resp: web_sys::Response = resp.unchecked_into();
    if !resp.ok() {
        return Err(format!("the server answered HTTP {}", resp.status()));
    }
    Ok(resp)
}

async fn head_length(url: &str) -> Result<Option<f64>, String> {
    Ok(content_length(&request(url, "HEAD").await?))
}

/// `metadata.total_size` of a shard index (read only if it is small).
async fn index_total(url: &str) -> Result<Option<f64>, String> {
    const MAX_INDEX: f64 = 16e6;
    let resp = request(url, "GET").await?;
    if content_length(&resp).is_none_or(|n| n > MAX_INDEX) {
        return Ok(None);
    }
    let text = JsFuture::from(resp.text().map_err(js_err)?).await.map_err(js_err)?.as_string().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("its shard index is not JSON ({e})"))?;
    Ok(v.pointer("/metadata/total_size").and_then(|t| t.as_f64()))
}
