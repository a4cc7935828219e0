//! Scalpel playground: the page (`app`) and the engine worker (`worker`),
//! talking through the typed messages in [`protocol`].

pub mod colour;
pub mod protocol;
pub mod state;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod js;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// Name of the `<meta>` in `index.html` whose `content` is the default
/// model's URL: the one place it is configured. The source `index.html`
/// points next to the page (`models/…`, where `cargo xtask serve` serves
/// it); `cargo xtask dist --model-url URL` writes another URL into the built
/// page. Read by the page once (`app::ctx::default_model`).
pub const MODEL_URL_META: &str = "scalpel-model-url";
/// Most bytes one model may download, all its files together (wasm32
/// memory is 4 GiB, and the model needs room beside its file).
pub const MAX_DOWNLOAD_BYTES: f64 = 2.0e9;
/// The loader script Trunk generates for the worker binary (`data-loader-shim`).
pub const WORKER_SCRIPT: &str = "./worker_loader.js";
