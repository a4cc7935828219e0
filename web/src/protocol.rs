//! Typed messages between the page and the engine worker.
//!
//! Both sides serialize these with serde (serde-wasm-bindgen, so they travel
//! as structured-clone objects). One request is in flight at a time; the
//! worker answers with zero or more progress/stream messages and then exactly
//! one final message (see [`Response::is_final`]).
//!
//! Stopping long work cannot be a message (the worker is busy inside the
//! engine): the page shares an `Int32Array` over a `SharedArrayBuffer` (see
//! [`Envelope`]) and sets element 0 to 1; the worker polls it between tokens
//! and between sweep cells, and answers `Cancelled`.

use serde::{Deserialize, Serialize};

/// Engine precision as offered in the UI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// All weights dequantized to f32: exact arithmetic (interpretability).
    F32,
    /// Weights kept quantized: less memory, small numeric differences.
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

/// Which CPU kernels run the quantized matmuls (docs/kernels.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// Scalpel's where they measured faster (in wasm: Scalpel's).
    #[default]
    Auto,
    /// candle's quantized matmul.
    Candle,
    /// Scalpel's int8 simd128 kernels (Q4_0, Q4_1, Q8_0).
    Scalpel,
}

impl Kernels {
    pub const ALL: [Kernels; 3] = [Kernels::Auto, Kernels::Candle, Kernels::Scalpel];
    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::Auto => "auto",
            Kernels::Candle => "candle",
            Kernels::Scalpel => "scalpel",
        }
    }
    pub fn parse(s: &str) -> Option<Kernels> {
        Kernels::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A GGUF file at a URL (relative URLs are served next to the page).
    Gguf { url: String },
    /// A Hugging Face repository: `base` is the folder URL the files resolve
    /// under (e.g. `https://huggingface.co/gpt2/resolve/main/`); the worker
    /// fetches `config.json`, `tokenizer.json`, `tokenizer_config.json` (if
    /// present) and `model.safetensors` or the shards listed in
    /// `model.safetensors.index.json`.
    HfRepo { base: String },
    /// A GGUF file the user picked or dropped; its bytes travel in the
    /// envelope's `file` field. Cannot be shared in a link.
    File { name: String },
}

impl ModelSource {
    /// Short name for the UI.
    pub fn label(&self) -> String {
        match self {
            ModelSource::Gguf { url } => last_segment(url),
            ModelSource::HfRepo { base } => {
                let t = base.trim_end_matches('/');
                let t = t.strip_suffix("/resolve/main").unwrap_or(t);
                let parts: Vec<&str> = t.rsplit('/').take(2).collect();
                parts.into_iter().rev().collect::<Vec<_>>().join("/")
            }
            ModelSource::File { name } => name.clone(),
        }
    }
}

pub fn last_segment(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).to_string()
}

/// A prompt as the user typed it; `chat` wraps it in the model's chat
/// template as a user message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Prompt {
    pub text: String,
    #[serde(default)]
    pub chat: bool,
}

/// Sampling settings. `temperature == 0` is greedy.
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

/// Which run a streamed token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Baseline,
    Intervened,
}

/// A patching sweep, in the terms of `scalpel patch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchSpec {
    pub clean: String,
    /// The corrupted prompt (same token length). Empty with `noise` set:
    /// Gaussian noise on the embeddings of the positions in `noise`.
    pub corrupt: String,
    pub answer: String,
    pub wrong: String,
    /// resid_pre | resid_mid | resid_post | attn_out | mlp_out | head_z
    /// (layer × head) | head_z_pos (layer·head × position).
    pub family: String,
    /// logit_diff_norm | logit_diff | prob | kl.
    pub metric: String,
    /// Patch corrupted activations into the clean run instead (noising).
    #[serde(default)]
    pub noising: bool,
    /// Positions to corrupt with noise (when `corrupt` is empty).
    #[serde(default)]
    pub noise: Option<Vec<usize>>,
    #[serde(default)]
    pub seed: u64,
}

/// Page → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Health check of the plumbing; answered with `Pong` carrying the same text.
    Ping { text: String },
    /// Fetch the model (from the browser's model cache when it is there) and
    /// load it at `precision`. Answers: `Progress`*, `Loaded` | `Error`.
    Load {
        source: ModelSource,
        precision: Precision,
        #[serde(default)]
        kernels: Kernels,
    },
    /// Switch the quantized kernels in place (no reload). Answers: `KernelsSet` | `Error`.
    SetKernels { kernels: Kernels },
    /// Delete every cached model. Answers: `CacheCleared`.
    ClearCache,
    /// Top-k next tokens after `prompt`. Answers: `TopK` | `Error`.
    TopK { prompt: String, k: u32 },
    /// Generate from `prompt` without interventions. Answers: `Token`*, `Done` | `Error`.
    Generate { prompt: String, sampling: Sampling },
    /// Baseline and intervened generation from the same prompt and sampling,
    /// then per-token probabilities and next-token top-k for both.
    /// `doc` is an intervention document (docs/interventions.md).
    /// Answers: `LaneText`*, `Compared` | `Cancelled` | `Error`.
    Compare {
        prompt: Prompt,
        sampling: Sampling,
        doc: String,
        top_k: u32,
        /// Run on the WebGPU backend (when started; documents with an op
        /// that has no GPU form run on the CPU engine, with a note).
        #[serde(default)]
        gpu: bool,
    },
    /// A patching sweep. Answers: `Progress`*, `Patched` | `Cancelled` | `Error`.
    Patch { spec: PatchSpec },
    /// Logit lens, under the document's interventions. Answers: `Lens` | `Error`.
    Lens { prompt: Prompt, doc: String, target: String },
    /// Attention patterns of every layer and head. Answers: `Attention` | `Error`.
    Attention { prompt: Prompt, doc: String },
    /// Direct logit attribution at the last position. Answers: `Dla` | `Error`.
    Dla { prompt: Prompt, doc: String, answer: String, wrong: String },
    /// Neuron → vocabulary, plus its activation on `prompt`. Answers: `Neuron` | `Error`.
    Neuron { layer: u32, neuron: u32, top_k: u32, prompt: Prompt },
    /// Per-layer separation of two prompt sets at a residual-stream site, to
    /// pick a layer for a vector. Answers: `Separation` | `Error`.
    Separation { positive: Vec<String>, negative: Vec<String>, site: String, method: String },
    /// Read a llama.cpp / repeng control vector (GGUF); its bytes travel in
    /// the envelope's `file` field. Answers: `ControlVector` | `Error`.
    ImportControlVector { name: String },
    /// Decoder row `latent` of a SAELens SAE: `cfg_json` is its cfg.json; the
    /// bytes of sae_weights.safetensors travel in the envelope's `file` field.
    /// Answers: `SaeLatent` | `Error`.
    SaeLatent { name: String, cfg_json: String, latent: u32 },
    /// Start the WebGPU backend on the loaded GGUF (f32 weights on the GPU).
    /// `allow_software`: accept a software adapter (SwiftShader), which is
    /// never picked otherwise. Answers: `GpuReady` | `Error`.
    GpuInit { allow_software: bool },
    /// On the WebGPU backend: next-token distribution after `prompt`, then
    /// greedy generation (argmax on the GPU). Answers: `GpuResult` | `Error`.
    GpuRun { prompt: Prompt, max_new_tokens: u32, top_k: u32 },
    /// `Bench` on the WebGPU backend (greedy decode with GPU argmax).
    GpuBench { prompt_tokens: u32, decode_tokens: u32, rounds: u32 },
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

/// A token with its probability (softmax at temperature 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    pub id: u32,
    pub text: String,
    pub prob: f32,
}

/// What the model is, for pickers and labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelSummary {
    pub arch: String,
    pub n_layers: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub d_model: u32,
    pub d_mlp: u32,
    pub vocab: u32,
    pub n_ctx: u32,
    pub chat_template: bool,
}

/// One generation (baseline or intervened), scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct LaneResult {
    pub ids: Vec<u32>,
    /// Text each generated token adds (decoded with its prefix, so
    /// multi-byte characters are not split).
    pub pieces: Vec<String>,
    /// The model's probability of each generated token where it was chosen.
    pub probs: Vec<f32>,
    /// The top alternatives at each generated token's position.
    pub alternatives: Vec<Vec<TokenProb>>,
    /// Tokens forced in by an `insert` intervention.
    pub inserted: Vec<bool>,
    /// Next-token distribution right after the prompt.
    pub next: Vec<TokenProb>,
    pub text: String,
    /// Tokens discarded by conditional backtracking.
    pub backtracked: u32,
    pub first_token_ms: f64,
    pub decode_tok_s: f64,
    /// Reused from the previous comparison (same prompt and sampling).
    pub reused: bool,
}

/// What one intervention touched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemSummary {
    pub index: u32,
    pub op: String,
    pub hooks: Vec<String>,
    pub applications: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchOutcome {
    pub family: String,
    pub metric: String,
    pub rows: u32,
    pub cols: u32,
    /// `values[row][col]`; rows are layers (layer·head for head_z_pos);
    /// cols positions (heads for head_z).
    pub values: Vec<Vec<f32>>,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    /// The metric on the unpatched clean and corrupted runs.
    pub clean: f32,
    pub corrupt: f32,
    pub computed_cells: u32,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensRow {
    pub label: String,
    /// Per position: top tokens, and the target's probability if a target was given.
    pub cells: Vec<LensCell>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensCell {
    pub top: Vec<TokenProb>,
    pub target_prob: Option<f32>,
    pub target_rank: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlaItem {
    pub name: String,
    pub value: f32,
}

/// Worker → page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The worker has started and can take requests.
    Ready { engine: bool },
    Pong { text: String },
    /// Download progress in bytes; `total` is None when the server sent no length.
    Progress { loaded: f64, total: Option<f64> },
    /// Progress of a sweep (cells done of total).
    Work { done: u32, total: u32 },
    Loaded {
        name: String,
        precision: Precision,
        bytes: f64,
        /// Time to download or read from the cache, then to build the model.
        fetch_ms: f64,
        load_ms: f64,
        from_cache: bool,
        summary: ModelSummary,
        /// What runs the matmuls: "f32 (candle)", or the quantized kernels in use.
        backend: String,
    },
    KernelsSet { backend: String },
    CacheCleared { entries: u32 },
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
    /// A comparison lane's text so far (whole, since backtracking can remove tokens).
    LaneText { lane: Lane, ids: Vec<u32>, text: String, tok_s: f64 },
    Compared {
        prompt_tokens: Vec<String>,
        baseline: LaneResult,
        /// None when the document has no enabled intervention.
        intervened: Option<LaneResult>,
        report: Vec<ItemSummary>,
        warnings: Vec<String>,
        /// What ran both lanes: the CPU engine and its kernels, or WebGPU.
        backend: String,
    },
    Patched { outcome: PatchOutcome },
    Lens { tokens: Vec<String>, target: Option<String>, rows: Vec<LensRow> },
    /// `patterns[layer][head]` is the q × k matrix flattened row-major.
    Attention { tokens: Vec<String>, patterns: Vec<Vec<Vec<f32>>> },
    Dla {
        tokens: Vec<String>,
        metric: String,
        answer: String,
        wrong: Option<String>,
        total: f32,
        /// `heads[layer][head]`.
        heads: Vec<Vec<f32>>,
        mlps: Vec<f32>,
        embed: f32,
        unexplained: f32,
        top: Vec<DlaItem>,
    },
    Neuron {
        layer: u32,
        neuron: u32,
        promoted: Vec<(String, f32)>,
        suppressed: Vec<(String, f32)>,
        tokens: Vec<String>,
        activations: Vec<f32>,
        output_norm: f32,
    },
    Separation { site: String, method: String, layers: Vec<u32>, accuracy: Vec<Option<f32>>, cohens_d: Vec<Option<f32>>, best: Option<u32> },
    /// A control vector's directions: `(k, values)`, each added at `blocks.{k}.hook_resid_post`.
    ControlVector { name: String, directions: Vec<(u32, Vec<f32>)>, warnings: Vec<String> },
    /// An SAE decoder row and the hook the SAE reads (`blocks.{l}.{site}`).
    SaeLatent { name: String, hook: String, latent: u32, d_sae: u32, values: Vec<f32> },
    Bench {
        precision: Precision,
        backend: String,
        prompt_tokens: u32,
        decode_tokens: u32,
        rounds: u32,
        prefill_tok_s: f64,
        decode_tok_s: f64,
    },
    /// Loading failed. `kept`: the previous model is still loaded and usable
    /// (the failure happened before it was replaced, e.g. a bad URL).
    LoadFailed { message: String, kept: bool },
    GpuReady { adapter: String, software: bool, detail: String, load_ms: f64 },
    GpuResult { next: Vec<TokenProb>, ids: Vec<u32>, text: String, first_token_ms: f64, decode_tok_s: f64 },
    /// The work was stopped through the shared stop flag.
    Cancelled,
    Error { message: String },
}

impl Response {
    /// Whether this message ends the current request.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Response::Ready { .. } | Response::Progress { .. } | Response::Work { .. } | Response::Token { .. } | Response::LaneText { .. }
        )
    }
}

/// The text `scalpel bench` cycles into its prompt (keep in step with crates/cli/src/bench.rs).
pub const BENCH_SEED_TEXT: &str =
    "The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers that changed physics. ";

/// Index in the shared `Int32Array` that requests a stop when non-zero.
pub const STOP_FLAG_INDEX: u32 = 0;

/// Name of the envelope fields: `{ req: <Request>, stop?: SharedArrayBuffer, file?: ArrayBuffer }`.
/// The first message may carry `stop`; the worker keeps it for later requests.
pub struct Envelope;
impl Envelope {
    pub const REQ: &'static str = "req";
    pub const STOP: &'static str = "stop";
    pub const FILE: &'static str = "file";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Ping { text: "hi".into() },
            Request::Load { source: ModelSource::Gguf { url: "models/x.gguf".into() }, precision: Precision::F32, kernels: Kernels::Auto },
            Request::Load { source: ModelSource::HfRepo { base: "https://h/gpt2/resolve/main/".into() }, precision: Precision::Quantized, kernels: Kernels::Scalpel },
            Request::SetKernels { kernels: Kernels::Candle },
            Request::TopK { prompt: "The capital of France is".into(), k: 5 },
            Request::Generate { prompt: "a".into(), sampling: Sampling::default() },
            Request::Compare {
                prompt: Prompt { text: "I think".into(), chat: true },
                sampling: Sampling::default(),
                doc: r#"{"version":1,"interventions":[]}"#.into(),
                top_k: 5,
                gpu: true,
            },
            Request::Patch {
                spec: PatchSpec {
                    clean: "a".into(),
                    corrupt: "b".into(),
                    answer: " x".into(),
                    wrong: " y".into(),
                    family: "resid_pre".into(),
                    metric: "logit_diff_norm".into(),
                    noising: false,
                    noise: None,
                    seed: 0,
                },
            },
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
            Response::Cancelled,
        ];
        for r in rs {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        }
        assert!(!Response::Work { done: 1, total: 2 }.is_final());
        assert!(Response::Cancelled.is_final());
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.as_str()), Some(p));
        }
        assert_eq!(Precision::parse("f16"), None);
    }

    #[test]
    fn source_labels() {
        assert_eq!(ModelSource::Gguf { url: "models/a.gguf?x=1".into() }.label(), "a.gguf");
        assert_eq!(ModelSource::HfRepo { base: "https://huggingface.co/org/repo/resolve/main/".into() }.label(), "org/repo");
    }
}
