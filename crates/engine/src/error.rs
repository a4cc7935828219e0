//! One error type for the engine: every message names what was wrong and where.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file (or one of its parts) could not be used.
    #[error("{file}: {msg}")]
    Load { file: String, msg: String },
    /// Bad input from the caller: prompt, ids, hook name, options.
    #[error("{0}")]
    Input(String),
    /// A tensor operation failed; this is an engine bug or a shape mismatch
    /// introduced by a hook.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The caller asked to stop (e.g. a cancelled generation).
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub fn load(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Load { file: file.into(), msg: msg.into() }
    }
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<scalpel_types::ParseError> for Error {
    fn from(e: scalpel_types::ParseError) -> Self {
        Error::Input(e.0)
    }
}
