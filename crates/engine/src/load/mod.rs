//! The file formats (GGUF, safetensors) and the shared parts layout every
//! architecture's tensors are put in (`parts.rs`). `arch::read` takes a
//! file through them: bytes → config, tokenizer and parts, which the CPU
//! model (`Model::load`) and the GPU model build from.

pub mod estimate;
pub mod gguf;
pub mod parts;
pub mod safetensors;

