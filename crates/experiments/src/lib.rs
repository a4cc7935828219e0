//! Experiments on a model, each returning plain data from `scalpel-types`
//! (the CLI prints it as JSON, the worker sends it to the page):
//!
//! - `readouts/`: logit lens, direct logit attribution, attention patterns,
//!   neuron → vocabulary, projection monitors;
//! - `patching/`: activation-patching sweeps (exact, batched and cached;
//!   naive; attribution patching);
//! - `probes`: linear probes per layer or head, and ITI documents from them;
//! - `features`: a dictionary spliced in, latent dashboards and search;
//! - `bench`: prefill and decode speed, measured one way for the CLI and the page.

pub mod bench;
pub mod features;
pub mod patching;
pub mod probes;
pub mod readouts;
