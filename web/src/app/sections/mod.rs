//! The page's sections around the panels: the model card (with its
//! benchmark and WebGPU controls), worked examples, sharing, and what an
//! embedded figure shows instead.

pub mod embed;
mod gpu;
pub mod model_card;
pub mod presets;
pub mod share;
