//! The page's sections around the panels: the model card (with its
//! benchmark, llama.cpp side by side with it, and WebGPU controls), worked
//! examples, sharing, and what an embedded figure shows instead, and the
//! confirmation a link's own model waits for.

pub mod confirm_model;
pub mod embed;
pub mod exercise;
mod gpu;
mod llama_cpp;
pub mod model_card;
pub mod presets;
pub mod share;
