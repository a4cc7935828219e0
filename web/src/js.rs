//! Small JS helpers shared by the page and the worker.

use wasm_bindgen::{JsCast, JsValue};

/// `performance.now()` in the page or a worker.
pub fn now_ms() -> f64 {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Text of a thrown JS value.
pub fn js_err(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

pub fn get(obj: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// The `Content-Length` a response declares, if any.
pub fn content_length(resp: &web_sys::Response) -> Option<f64> {
    resp.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<f64>().ok())
}

/// Whether SharedArrayBuffer is usable (page served with COOP/COEP).
pub fn cross_origin_isolated() -> bool {
    get(&js_sys::global(), "crossOriginIsolated").as_bool() == Some(true)
}
