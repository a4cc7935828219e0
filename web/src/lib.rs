//! Scalpel playground: the page (`app`) and the engine worker (`worker`),
//! talking through the typed messages in [`protocol`].

pub mod colour;
pub mod markdown;
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
/// wasm32 memory a model's built weights may take, given the bytes of its
/// files: 3 of the 4 GiB, less the files as fetched and the engine's copy
/// of their tensors while it builds (the last GiB holds a prompt's
/// activations). The worker checks it before a download (an estimate from
/// config.json or the GGUF header) and before the build (the exact size);
/// the model menu names the precision it lets through.
pub fn weight_budget(file_bytes: u64) -> u64 {
    (3u64 << 30).saturating_sub(2 * file_bytes)
}
/// The loader script Trunk generates for the worker binary (`data-loader-shim`).
pub const WORKER_SCRIPT: &str = "./worker_loader.js";
