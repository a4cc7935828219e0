//! Test fixtures shared by every crate's tests and benches (dev-only): a
//! seeded PRNG, a GGUF writer that can also write hostile files, tiny models
//! in GGUF and Hugging Face layouts, the transformers-written architecture
//! fixtures, random quantized blocks, the default
//! model's location, and panics captured as values.

pub mod arch;
pub mod blocks;
pub mod default_model;
pub mod gguf;
pub mod hf;
pub mod panic;
pub mod rng;
pub mod tiny;
pub mod vocab;

pub use arch::{arch_fixture_dir, load_arch_fixture, ArchFiles};
pub use blocks::{ggml, random_blocks};
pub use default_model::{default_model_bytes, default_model_path};
pub use gguf::{Gguf, Meta, TensorSpec, Written};
pub use hf::{gpt2_config, gpt2_tensors, llama_hf_config, llama_hf_tensors, safetensors_bytes, tiny_gpt2, Gpt2Spec, HfFiles, StTensor, ST_NAME};
pub use panic::no_panic;
pub use rng::{f32_bytes, Rng};
pub use tiny::{load_gguf, tiny_llama, tiny_model, LlamaSpec, GGUF_NAME};
pub use vocab::{bytes_to_unicode, tokenizer_json, vocab, CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START, MERGES, VOCAB};
