//! Dictionaries over a model's activations: sparse autoencoders (SAEs)
//! today, read from the files their trainers publish. Interventions clamp
//! and steer with their latents; readouts decode them.
//!
//! Like the engine, nothing here does I/O: callers hand over bytes.

pub mod sae;

pub use sae::{Sae, SaeArch, SaeNorm};
