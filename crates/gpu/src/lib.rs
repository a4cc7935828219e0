//! Scalpel on the GPU: WGSL compute kernels run through `wgpu` (WebGPU in
//! the browser, Vulkan/Metal/DX12 natively) and a llama-family forward pass
//! that keeps everything on the device: weights, KV cache, activations,
//! hook edits and greedy or seeded sampling. Reading a hook copies only that tensor
//! back; a decode step reads back 4 bytes (the next token id).
//!
//! Every entry point that waits for the GPU is `async` (a Web Worker awaits
//! it); natively, wrap calls in [`block_on`]. See `docs/gpu.md`.

pub mod device;
pub mod interventions;
pub mod model;
pub mod quant;

pub use device::{params, Gpu, GpuInfo, GpuOptions, Kernel, Params};
pub use interventions::upload_edits;
pub use scalpel_types::{Edit, EditOp};
pub use model::{
    ForwardOutput, ForwardRequest, GenerateRequest, GpuEdit, GpuGeneration, GpuModel, GpuModelOptions, GpuTensor, HookValue, LogitsOut,
    SampleStep,
};

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    #[error("GPU device error: {0}")]
    Device(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Engine(#[from] scalpel_engine::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, GpuError>;

/// Runs a future to completion on the current thread (native only; in the
/// browser, `.await` the async API instead).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
