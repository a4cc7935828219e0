//! Typed messages between the page and the engine worker.
//!
//! Both sides serialize these with serde (serde-wasm-bindgen, so they travel
//! as structured-clone objects). One request is in flight at a time; the
//! worker answers with zero or more progress/stream messages and then exactly
//! one final message (`Loaded`, `TopK`, `Done`, `Bench`, `Pong` or `Error`).
//!
//! Stopping a generation cannot be a message (the worker is busy inside the
//! engine): the page shares an `Int32Array` over a `SharedArrayBuffer` (see
//! [`Envelope`]) and sets element 0 to 1; the worker polls it between tokens.

use serde::{Deserialize, Serialize};

/// Engine precision as offered in the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// All weights dequantized to f32: exact arithmetic (interpretability).
    F32,
    /// Weights kept quantized: faster, small numeric differences.
    Quantized,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Quantized];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Quantized => "quantized",
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "quantized" => Some(Precision::Quantized),
            _ => None,
        }
    }
}

/// Sampling settings for `Generate`. `temperature == 0` is greedy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub max_new_tokens: u32,
    pub temperature: f32,
    pub top_k: Option<u32>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { max_new_tokens: 32, temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

/// Page → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Health check of the plumbing; answered with `Pong` carrying the same text.
    Ping { text: String },
    /// Fetch the model at `url` (unless these bytes are already held) and load
    /// it at `precision`. Answers: `Progress`*, `Loaded` | `Error`.
    Load { url: String, precision: Precision },
    /// Top-k next tokens after `prompt`. Answers: `TopK` | `Error`.
    TopK { prompt: String, k: u32 },
    /// Generate from `prompt`. Answers: `Token`*, `Done` | `Error`.
    Generate { prompt: String, sampling: Sampling },
    /// Timing, measured exactly like `scalpel bench` (crates/cli/src/bench.rs):
    /// [`BENCH_SEED_TEXT`] cycled to `prompt_tokens`, one prefill forward pass,
    /// then `decode_tokens` greedy KV-cached steps; median over `rounds`.
    /// Answers: `Bench` | `Error`.
    Bench { prompt_tokens: u32, decode_tokens: u32, rounds: u32 },
}

/// One entry of a top-k list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogit {
    pub id: u32,
    /// Decoded text of the single token.
    pub text: String,
    pub logit: f32,
}

/// Worker → page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The worker has started and can take requests.
    Ready { engine: bool },
    Pong { text: String },
    /// Download progress in bytes; `total` is None when the server sent no length.
    Progress { loaded: f64, total: Option<f64> },
    Loaded {
        name: String,
        precision: Precision,
        bytes: f64,
        /// Time to download (0 when the bytes were already held), then to build the model.
        fetch_ms: f64,
        load_ms: f64,
    },
    TopK { prompt_ids: Vec<u32>, top: Vec<TokenLogit> },
    /// One generated token. `text` is the decoded text of all tokens so far
    /// (decoding incrementally could split multi-byte characters).
    Token { id: u32, text: String, n: u32, tok_s: f64 },
    Done {
        prompt_ids: Vec<u32>,
        ids: Vec<u32>,
        text: String,
        stopped: bool,
        /// Time to the first new token (prefill + one sampling step).
        first_token_ms: f64,
        /// Tokens/s over the tokens after the first (decode speed).
        decode_tok_s: f64,
    },
    Bench {
        precision: Precision,
        prompt_tokens: u32,
        decode_tokens: u32,
        rounds: u32,
        prefill_tok_s: f64,
        decode_tok_s: f64,
    },
    Error { message: String },
}

/// The text `scalpel bench` cycles into its prompt (keep in step with crates/cli/src/bench.rs).
pub const BENCH_SEED_TEXT: &str =
    "The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers that changed physics. ";

/// Index in the shared `Int32Array` that requests a stop when non-zero.
pub const STOP_FLAG_INDEX: u32 = 0;

/// Name of the envelope fields: `{ req: <Request>, stop?: SharedArrayBuffer }`.
/// The first message may carry `stop`; the worker keeps it for later requests.
pub struct Envelope;
impl Envelope {
    pub const REQ: &'static str = "req";
    pub const STOP: &'static str = "stop";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Ping { text: "hi".into() },
            Request::Load { url: "models/x.gguf".into(), precision: Precision::F32 },
            Request::TopK { prompt: "The capital of France is".into(), k: 5 },
            Request::Generate { prompt: "a".into(), sampling: Sampling::default() },
            Request::Bench { prompt_tokens: 64, decode_tokens: 64, rounds: 3 },
        ];
        for r in reqs {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let rs = vec![
            Response::Ready { engine: true },
            Response::Progress { loaded: 1.0, total: Some(2.0) },
            Response::TopK { prompt_ids: vec![1, 2], top: vec![TokenLogit { id: 3, text: " Paris".into(), logit: 17.5 }] },
            Response::Error { message: "bad".into() },
        ];
        for r in rs {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        }
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.as_str()), Some(p));
        }
        assert_eq!(Precision::parse("f16"), None);
    }
}
