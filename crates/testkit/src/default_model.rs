//! The default model (SmolLM2-135M-Instruct Q4_1), which `cargo xtask
//! serve|test` fetches into `models/`. Tests that need it skip without it,
//! unless SCALPEL_REQUIRE_MODEL=1 (set by `cargo xtask test`) makes its
//! absence a failure.

use std::path::PathBuf;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Its path (`$SCALPEL_MODEL_DIR` or the checkout's `models/`), or `None`
/// with a message.
pub fn default_model_path() -> Option<PathBuf> {
    let p = std::env::var_os("SCALPEL_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
        .join(DEFAULT_MODEL_FILE);
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("SCALPEL_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!("default model missing at {} (run `cargo xtask fetch-model`)", p.display());
    }
    eprintln!("SKIPPED: default model not found at {}; run `cargo xtask fetch-model`", p.display());
    None
}

/// Its bytes, or `None` (see [`default_model_path`]).
pub fn default_model_bytes() -> Option<Vec<u8>> {
    let p = default_model_path()?;
    Some(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}
