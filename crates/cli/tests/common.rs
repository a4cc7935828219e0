//! Shared by the CLI crate's integration tests: finding the default model.

use std::path::PathBuf;

/// The default model, or `None` (with a message) when it is absent and the
/// run does not require it. `cargo xtask test` sets SCALPEL_REQUIRE_MODEL=1.
pub fn default_model() -> Option<PathBuf> {
    let p = std::env::var_os("SCALPEL_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("SCALPEL_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!("default model missing at {} (run `cargo xtask fetch-model`)", p.display());
    }
    eprintln!("SKIPPED: default model not found at {}; run `cargo xtask fetch-model`", p.display());
    None
}
