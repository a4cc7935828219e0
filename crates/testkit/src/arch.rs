//! The tiny checkpoints transformers wrote for every architecture
//! (`tests/fixtures/arch`, made by `tests/reference/make_arch_fixtures.py`).

use std::path::PathBuf;

use scalpel_engine::{Model, ModelSource, Precision};

/// `tests/fixtures/arch/<name>`.
pub fn arch_fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/arch").join(name)
}

/// A fixture's Hugging Face files, read.
pub struct ArchFiles {
    pub config: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub tokenizer_config: Option<Vec<u8>>,
    pub weights: Vec<u8>,
}

impl ArchFiles {
    pub fn read(name: &str) -> ArchFiles {
        let dir = arch_fixture_dir(name);
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()));
        ArchFiles {
            config: read("config.json"),
            tokenizer: read("tokenizer.json"),
            tokenizer_config: std::fs::read(dir.join("tokenizer_config.json")).ok(),
            weights: read("model.safetensors"),
        }
    }

    pub fn source(&self) -> ModelSource<'_> {
        ModelSource::HuggingFace {
            config: &self.config,
            tokenizer: Some(&self.tokenizer),
            tokenizer_config: self.tokenizer_config.as_deref(),
            weights: vec![("model.safetensors".to_owned(), &self.weights[..])],
        }
    }
}

/// The fixture `name` as a model (f32).
pub fn load_arch_fixture(name: &str) -> Model {
    Model::load(name, ArchFiles::read(name).source(), Precision::F32).unwrap_or_else(|e| panic!("{name}: {e}"))
}
