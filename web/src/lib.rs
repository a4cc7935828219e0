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

/// URL of the default model, relative to the page (served by `cargo xtask serve`).
pub const DEFAULT_MODEL_URL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Most bytes one model may download, all its files together (wasm32
/// memory is 4 GiB, and the model needs room beside its file).
pub const MAX_DOWNLOAD_BYTES: f64 = 2.0e9;
/// The loader script Trunk generates for the worker binary (`data-loader-shim`).
pub const WORKER_SCRIPT: &str = "./worker_loader.js";
