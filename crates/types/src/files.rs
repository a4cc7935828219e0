//! A model's files as bytes: what the engine loads from, whoever fetched
//! them (the CLI from disk, the worker over HTTP or the Cache API).

/// A model's files: a GGUF file, or a Hugging Face repository layout
/// (`weights` holds every `.safetensors` file, one or all shards, with its
/// name). `B` owns or borrows the bytes; the engine does no I/O of its own.
#[derive(Clone)]
pub enum ModelFiles<B> {
    Gguf(B),
    HuggingFace { config: B, tokenizer: Option<B>, tokenizer_config: Option<B>, weights: Vec<(String, B)> },
}

/// Files the engine reads from the caller's bytes, keeping no copy of them.
pub type ModelSource<'a> = ModelFiles<&'a [u8]>;

impl<B: AsRef<[u8]>> ModelFiles<B> {
    /// The same files, borrowed.
    pub fn source(&self) -> ModelSource<'_> {
        match self {
            ModelFiles::Gguf(b) => ModelFiles::Gguf(b.as_ref()),
            ModelFiles::HuggingFace { config, tokenizer, tokenizer_config, weights } => ModelFiles::HuggingFace {
                config: config.as_ref(),
                tokenizer: tokenizer.as_ref().map(AsRef::as_ref),
                tokenizer_config: tokenizer_config.as_ref().map(AsRef::as_ref),
                weights: weights.iter().map(|(n, w)| (n.clone(), w.as_ref())).collect(),
            },
        }
    }

    /// Bytes in every file.
    pub fn byte_len(&self) -> usize {
        match self {
            ModelFiles::Gguf(b) => b.as_ref().len(),
            ModelFiles::HuggingFace { config, tokenizer, tokenizer_config, weights } => {
                let opt = |b: &Option<B>| b.as_ref().map_or(0, |b| b.as_ref().len());
                config.as_ref().len() + opt(tokenizer) + opt(tokenizer_config) + weights.iter().map(|(_, w)| w.as_ref().len()).sum::<usize>()
            }
        }
    }
}

