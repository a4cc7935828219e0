//! Dictionaries over a model's activations: sparse autoencoders and
//! transcoders, read from the files their trainers publish (SAELens,
//! EleutherAI sparsify, Gemma Scope, circuit-tracer; docs/features.md). Interventions clamp
//! and steer with their latents; `features` encodes a prompt and finds a
//! latent's top contexts.
//!
//! Like the engine, nothing here does I/O: callers hand over bytes.

pub mod corpus;
pub mod features;
pub mod load;
pub mod npz;
pub mod sae;

pub use load::{circuit_tracer_hook, circuit_tracer_layer, sparsify_hooks, DictFiles, FILE_NAMES, MAX_CONFIG_YAML};
pub use sae::{Format, Sae, SaeArch, SaeNorm};
