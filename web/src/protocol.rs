//! Typed messages between the page and the engine worker.
//!
//! Both sides serialize these with serde (serde-wasm-bindgen, so they travel
//! as structured-clone objects); what a readout or a sweep returns is the
//! engine's own result type (`scalpel_types`). One request is in flight at a
//! time; the worker answers with zero or more progress/stream messages and
//! then exactly one final message (see [`Response::is_final`]).
//!
//! Stopping long work cannot be a message (the worker is busy inside the
//! engine): the page shares an `Int32Array` over a `SharedArrayBuffer` (see
//! [`Envelope`]) and sets element 0 to 1; the worker polls it between tokens
//! and between sweep cells, and answers `Cancelled`. A page that is not
//! cross-origin isolated has no `SharedArrayBuffer`: it stops work by ending
//! the worker and starting a fresh one (`app/client.rs`).

use serde::{Deserialize, Serialize};

pub use scalpel_types::patching::{Metric, PatchResult, PatchSite};
pub use scalpel_types::readouts::{AttentionResult, DlaResult, LensResult, NeuronResult, TokenProb};
pub use scalpel_types::run::ItemReport;
pub use scalpel_types::vectors::LayerScore;
pub use scalpel_types::features::{CorpusStatus, DictionaryInfo, Features, LatentDashboard, LatentSearch};
pub use scalpel_types::{GenerateOptions, Kernels, Precision};

/// Where the model comes from (a link carries it; the worker fetches it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelLocation {
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

impl ModelLocation {
    /// Short name for the UI.
    pub fn label(&self) -> String {
        match self {
            ModelLocation::Gguf { url } => last_segment(url),
            ModelLocation::HfRepo { base } => {
                let t = base.trim_end_matches('/');
                let t = t.strip_suffix("/resolve/main").unwrap_or(t);
                let parts: Vec<&str> = t.rsplit('/').take(2).collect();
                parts.into_iter().rev().collect::<Vec<_>>().join("/")
            }
            ModelLocation::File { name } => name.clone(),
        }
    }
}

pub fn last_segment(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).to_string()
}

/// Where a dictionary (SAE or transcoder) comes from. A dictionary is a
/// folder (docs/features.md): SAELens `cfg.json` + `sae_weights.safetensors`,
/// sparsify `cfg.json` + `sae.safetensors` (the folder's name is the hook,
/// e.g. `layers.6.mlp`), or Gemma Scope `params.npz`/`params.safetensors`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DictLocation {
    /// The folder's URL (ending in `/`), e.g. a Hugging Face
    /// `…/resolve/main/layers.6.mlp/`; the worker fetches `cfg.json` and
    /// the first weights file that exists (browser cache first).
    Url {
        base: String,
        /// The input hook, for files that do not name it (Gemma Scope), or
        /// to override a sparsify folder name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
    },
    /// Files the user picked (their bytes travel in the envelope's `file`
    /// field as an array, in `names` order). Cannot be shared in a link.
    Files {
        folder: String,
        names: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
    },
}

impl DictLocation {
    pub fn label(&self) -> String {
        match self {
            DictLocation::Url { base, .. } => {
                let t = base.trim_end_matches('/');
                let t = t.strip_prefix("https://huggingface.co/").unwrap_or(t);
                t.replace("/resolve/main/", "/")
            }
            DictLocation::Files { folder, .. } => format!("{folder} (local files)"),
        }
    }
}

/// The default dictionary for the default model: EleutherAI's sparsify
/// TopK SAEs on SmolLM2-135M's MLP outputs (64× expansion: 36,864 latents),
/// one folder per layer.
pub const DEFAULT_DICTIONARY_REPO: &str = "EleutherAI/sae-SmolLM2-135M-64x";

pub fn default_dictionary(layer: u32) -> DictLocation {
    DictLocation::Url { base: format!("https://huggingface.co/{DEFAULT_DICTIONARY_REPO}/resolve/main/layers.{layer}.mlp/"), hook: None }
}

/// The corpus the page's dashboards read (public/corpus/README.md).
pub const CORPUS_URL: &str = "corpus/corpus-v1.txt";
/// Corpus windows are at most this many tokens (as `scalpel features --max-tokens`).
pub const CORPUS_WINDOW_TOKENS: u32 = 64;
/// Contexts kept per latent (as `scalpel features --contexts`).
pub const CORPUS_CONTEXTS: u32 = 10;

/// A prompt as the user typed it; `chat` wraps it in the model's chat
/// template as a user message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Prompt {
    pub text: String,
    #[serde(default)]
    pub chat: bool,
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
    /// Which hook family the sweep patches (rows × columns).
    pub family: PatchSite,
    pub metric: Metric,
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
    /// load it at `precision`. Answers: `Progress`*, `Loaded` | `LoadFailed`.
    Load {
        source: ModelLocation,
        precision: Precision,
        #[serde(default)]
        kernels: Kernels,
        /// A Hugging Face token for gated repositories (never part of the
        /// link state; the worker keeps it in memory only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Switch the quantized kernels in place (no reload). Answers: `KernelsSet` | `Error`.
    SetKernels { kernels: Kernels },
    /// Delete every cached model. Answers: `CacheCleared`.
    ClearCache,
    /// Baseline and intervened generation from the same prompt and sampling,
    /// then per-token probabilities and next-token top-k for both.
    /// `doc` is an intervention document (docs/interventions.md).
    /// Answers: `LaneText`*, `Compared` | `Cancelled` | `Error`.
    Compare {
        prompt: Prompt,
        sampling: GenerateOptions,
        doc: String,
        top_k: u32,
        /// Run on the WebGPU backend (when started; documents with an op
        /// that has no GPU form run on the CPU engine, with a note).
        #[serde(default)]
        gpu: bool,
    },
    /// A patching sweep. Answers: `Work`*, `Patched` | `Cancelled` | `Error`.
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
    /// Start the WebGPU backend on the loaded model (its weights on the
    /// GPU, f32 or quantized as the CPU model). `allow_software`: accept a
    /// software adapter (SwiftShader), which is never picked otherwise.
    /// Answers: `GpuReady` | `Error`.
    GpuInit { allow_software: bool },
    /// On the WebGPU backend: next-token distribution after `prompt`, then
    /// greedy generation (argmax on the GPU). Answers: `GpuResult` | `Error`.
    GpuRun { prompt: Prompt, max_new_tokens: u32, top_k: u32 },
    /// `Bench` on the WebGPU backend (greedy decode with GPU argmax).
    GpuBench { prompt_tokens: u32, decode_tokens: u32, rounds: u32 },
    /// Timing, measured exactly like `scalpel bench`
    /// (`scalpel_experiments::bench`): its seed text cycled to `prompt_tokens`, one prefill forward pass,
    /// then `decode_tokens` greedy KV-cached steps; median over `rounds`.
    /// Answers: `Bench` | `Error`.
    Bench { prompt_tokens: u32, decode_tokens: u32, rounds: u32 },
    /// The kernels' threads against this worker's thread alone, in one run
    /// (`scalpel_experiments::bench::thread_gain`): `runs` greedy runs of the
    /// `Bench` prompt and decode steps, the two sides alternating run by run
    /// (prefill) and every 8 decode steps. Polls the stop flag.
    /// Answers: `ThreadGain` | `Cancelled` | `Error`.
    BenchThreads { prompt_tokens: u32, decode_tokens: u32, runs: u32 },
    /// Read a dictionary and check it against the loaded model; it stays
    /// loaded (one at a time) for the requests below and for stack items
    /// that name its latents. Answers: `Progress`*, `DictionaryLoaded` | `Error`.
    LoadDictionary { source: DictLocation },
    /// The dictionary's latents on a prompt (top `top_k` per position, L0,
    /// reconstruction error) and what splicing it in does to the next-token
    /// distribution. Answers: `Features` | `Error`.
    Features { prompt: Prompt, top_k: u32 },
    /// One latent's dashboard (with the corpus pass's findings when it has
    /// run for this model and dictionary). Answers: `Dashboard` | `Error`.
    Dashboard { latent: u32 },
    /// Latents that write to `text`'s first token, and (after a corpus
    /// pass) that peak on it. Answers: `LatentSearch` | `Error`.
    SearchLatents { text: String },
    /// The corpus pass ([`CORPUS_URL`]): from the browser's IndexedDB when
    /// it holds this model's and dictionary's, else computed (resuming a
    /// stopped pass). Answers: `Work`*, `CorpusIndexed` (also when
    /// stopped: `complete` is false) | `Error`.
    CorpusPass,
    /// Evaluate the exercise `state` poses on the state itself (its
    /// prompt, sampling, stack, sweep settings and answer), running what
    /// each check needs. Answers: `Work`*, `Checked` | `Cancelled` | `Error`.
    Check { state: Box<crate::state::Shared> },
}

impl Request {
    /// A short name for status lines, and whether the work polls the stop flag.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping { .. } => "ping",
            Request::Load { .. } => "load",
            Request::SetKernels { .. } => "kernels",
            Request::ClearCache => "clear-cache",
            Request::Compare { .. } => "compare",
            Request::Patch { .. } => "patch",
            Request::Lens { .. } => "lens",
            Request::Attention { .. } => "attention",
            Request::Dla { .. } => "dla",
            Request::Neuron { .. } => "neuron",
            Request::Separation { .. } => "separation",
            Request::ImportControlVector { .. } => "control-vector",
            Request::Bench { .. } | Request::GpuBench { .. } => "bench",
            Request::BenchThreads { .. } => "bench-threads",
            Request::GpuInit { .. } => "gpu-init",
            Request::GpuRun { .. } => "gpu-run",
            Request::Check { .. } => "check",
            Request::LoadDictionary { .. } => "dictionary",
            Request::Features { .. } => "features",
            Request::Dashboard { .. } => "dashboard",
            Request::SearchLatents { .. } => "search",
            Request::CorpusPass => "corpus",
        }
    }

    /// Whether `self`, queued after `older`, makes `older` pointless: a
    /// newer view of the same panel replaces the older one (the page shows
    /// only the last), a newer load or kernel switch replaces the older one.
    /// Requests that change something the user asked for once (a control
    /// vector, a corpus pass, clearing the cache, starting the GPU) are
    /// never dropped.
    pub fn supersedes(&self, older: &Request) -> bool {
        use Request::*;
        let replaceable = matches!(
            older,
            Load { .. }
                | SetKernels { .. }
                | Compare { .. }
                | Patch { .. }
                | Lens { .. }
                | Attention { .. }
                | Dla { .. }
                | Neuron { .. }
                | Separation { .. }
                | Bench { .. }
                | BenchThreads { .. }
                | GpuRun { .. }
                | GpuBench { .. }
                | LoadDictionary { .. }
                | Features { .. }
                | Dashboard { .. }
                | SearchLatents { .. }
        );
        replaceable && std::mem::discriminant(self) == std::mem::discriminant(older)
    }

    /// Whether the worker polls the stop flag while doing it.
    pub fn stoppable(&self) -> bool {
        matches!(self, Request::Compare { .. } | Request::Patch { .. } | Request::GpuRun { .. } | Request::CorpusPass | Request::BenchThreads { .. })
    }
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

/// A model the worker loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    pub precision: Precision,
    pub bytes: f64,
    /// Time to download or read from the cache, then to build the model.
    pub fetch_ms: f64,
    pub load_ms: f64,
    pub from_cache: bool,
    pub summary: ModelSummary,
    /// What runs the matmuls: "f32 (candle)", or the quantized kernels in use.
    pub backend: String,
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

/// Both lanes of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub prompt_tokens: Vec<String>,
    pub baseline: LaneResult,
    /// None when the document has no enabled intervention.
    pub intervened: Option<LaneResult>,
    pub report: Vec<ItemReport>,
    pub warnings: Vec<String>,
    /// What ran both lanes: the CPU engine and its kernels, or WebGPU.
    pub backend: String,
}

/// Prefill and decode speed, measured like `scalpel bench`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub precision: Precision,
    pub backend: String,
    pub prompt_tokens: u32,
    pub decode_tokens: u32,
    pub rounds: u32,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Threads the CPU engine's kernels used (`None` on WebGPU).
    pub cpu_threads: Option<u32>,
    /// The prompt's tokens as text, for llama.cpp's side-by-side run (which
    /// tokenizes it itself; `bench::prompt_text`). Empty on WebGPU, which is
    /// not compared.
    pub prompt_text: String,
    /// The worker's `WebAssembly.Memory` size in bytes (it only grows:
    /// the high-water mark of this worker, the model's load included).
    pub wasm_memory_bytes: u64,
    /// Bytes the model's weights hold (`Model::weight_bytes`).
    pub weight_bytes: u64,
}

/// What the kernels' threads add to one thread, measured in one run
/// (`scalpel_experiments::bench::ThreadGain`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadGain {
    pub precision: Precision,
    pub threads: u32,
    /// Medians over pairs of (all threads' tok/s ÷ one thread's).
    pub prefill_gain: f64,
    pub decode_gain: f64,
    /// Each side's median tok/s.
    pub prefill_tok_s_one: f64,
    pub prefill_tok_s_all: f64,
    pub decode_tok_s_one: f64,
    pub decode_tok_s_all: f64,
    pub prefill_pairs: u32,
    pub decode_pairs: u32,
    /// Decode steps per window.
    pub window: u32,
}

/// Worker → page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The worker has started and can take requests.
    /// The worker is up: whether it has the engine, how many threads its
    /// kernels use, and why it runs one thread when more were asked for (the
    /// threaded build failed to start; `worker_loader.js` then started the
    /// one-thread build).
    Ready { engine: bool, threads: u32, threads_note: Option<String> },
    Pong { text: String },
    /// Download progress in bytes; `total` is None when the server sent no length.
    Progress { loaded: f64, total: Option<f64> },
    /// Progress of a sweep (cells done of total).
    Work { done: u32, total: u32 },
    Loaded(Box<LoadedModel>),
    KernelsSet { backend: String },
    CacheCleared { entries: u32 },
    /// A comparison lane's text so far (whole, since backtracking can remove tokens).
    LaneText { lane: Lane, ids: Vec<u32>, text: String, tok_s: f64 },
    Compared(Box<Comparison>),
    Patched(Box<PatchResult>),
    Lens(Box<LensResult>),
    Attention(Box<AttentionResult>),
    Dla(Box<DlaResult>),
    Neuron(Box<NeuronResult>),
    /// How well each layer separates the two sets, and the best one.
    Separation { site: String, method: String, scores: Vec<LayerScore>, best: Option<u32> },
    /// A control vector's directions: `(k, values)`, each added at `blocks.{k}.hook_resid_post`.
    ControlVector { name: String, directions: Vec<(u32, Vec<f32>)>, warnings: Vec<String> },
    Bench(Box<BenchResult>),
    ThreadGain(Box<ThreadGain>),
    DictionaryLoaded(Box<DictionaryInfo>),
    Features(Box<Features>),
    Dashboard(Box<LatentDashboard>),
    LatentSearch(Box<LatentSearch>),
    CorpusIndexed(Box<CorpusStatus>),
    /// An exercise's verdict, one per check in order.
    Checked { outcomes: Vec<crate::state::CheckOutcome> },
    /// Loading failed. `kept`: the previous model is still loaded and usable
    /// (the failure happened before it was replaced, e.g. a bad URL).
    LoadFailed { message: String, kept: bool },
    GpuReady { adapter: String, software: bool, detail: String, load_ms: f64 },
    GpuResult { next: Vec<TokenProb>, ids: Vec<u32>, text: String, first_token_ms: f64, decode_tok_s: f64 },
    /// Something the user should know that does not end the request (a
    /// model file that could not be cached).
    Notice { message: String },
    /// The work was stopped through the shared stop flag.
    Cancelled,
    Error { message: String },
    /// The worker's engine thread panicked (`message`: where and why); the
    /// trap that ends the worker follows, and its error event carries only
    /// "unreachable", so the page's crash notice quotes this instead.
    Panicked { message: String },
}

impl Response {
    /// Whether this message ends the current request.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Response::Ready { .. }
                | Response::Progress { .. }
                | Response::Work { .. }
                | Response::LaneText { .. }
                | Response::Notice { .. }
                | Response::Panicked { .. }
        )
    }
}

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

    fn spec() -> PatchSpec {
        PatchSpec {
            clean: "a".into(),
            corrupt: "b".into(),
            answer: " x".into(),
            wrong: " y".into(),
            family: PatchSite::ResidPre,
            metric: Metric::LogitDiffNorm,
            noising: false,
            noise: None,
            seed: 0,
        }
    }

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Ping { text: "hi".into() },
            Request::Load { source: ModelLocation::Gguf { url: "models/x.gguf".into() }, precision: Precision::F32, kernels: Kernels::Auto, token: None },
            Request::Load { source: ModelLocation::HfRepo { base: "https://h/gpt2/resolve/main/".into() }, precision: Precision::Quantized, kernels: Kernels::Scalpel, token: Some("hf_x".into()) },
            Request::SetKernels { kernels: Kernels::Candle },
            Request::Compare {
                prompt: Prompt { text: "I think".into(), chat: true },
                sampling: GenerateOptions::default(),
                doc: r#"{"version":1,"interventions":[]}"#.into(),
                top_k: 5,
                gpu: true,
            },
            Request::Patch { spec: spec() },
            Request::Bench { prompt_tokens: 64, decode_tokens: 64, rounds: 3 },
            Request::BenchThreads { prompt_tokens: 64, decode_tokens: 64, runs: 6 },
        ];
        for r in reqs {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let rs = vec![
            Response::Ready { engine: true, threads: 2, threads_note: Some("no SharedArrayBuffer".into()) },
            Response::Progress { loaded: 1.0, total: Some(2.0) },
            Response::GpuResult { next: vec![TokenProb { id: 3, token: " Paris".into(), prob: 0.5, logit: 17.5 }], ids: vec![3], text: " Paris".into(), first_token_ms: 1.0, decode_tok_s: 2.0 },
            Response::Error { message: "bad".into() },
            Response::ThreadGain(Box::new(ThreadGain {
                precision: Precision::F32,
                threads: 2,
                prefill_gain: 1.8,
                decode_gain: 1.6,
                prefill_tok_s_one: 90.0,
                prefill_tok_s_all: 162.0,
                decode_tok_s_one: 30.0,
                decode_tok_s_all: 48.0,
                prefill_pairs: 3,
                decode_pairs: 24,
                window: 8,
            })),
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
    fn only_requests_of_the_same_view_supersede_each_other() {
        let compare = |t: &str| Request::Compare {
            prompt: Prompt { text: t.into(), chat: false },
            sampling: GenerateOptions::default(),
            doc: String::new(),
            top_k: 5,
            gpu: false,
        };
        assert!(compare("b").supersedes(&compare("a")));
        assert!(Request::SetKernels { kernels: Kernels::Candle }.supersedes(&Request::SetKernels { kernels: Kernels::Scalpel }));
        // A queued import, corpus pass, cache clear or GPU start is never dropped.
        let once = [
            Request::ImportControlVector { name: "a.gguf".into() },
            Request::CorpusPass,
            Request::ClearCache,
            Request::GpuInit { allow_software: false },
        ];
        for r in &once {
            assert!(!r.clone().supersedes(r), "{r:?}");
            assert!(!compare("x").supersedes(r), "{r:?}");
        }
        assert!(!compare("x").supersedes(&Request::SetKernels { kernels: Kernels::Candle }));
        assert!(!Request::Patch { spec: spec() }.supersedes(&compare("x")));
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
        }
        assert!("f16".parse::<Precision>().is_err());
    }

    #[test]
    fn source_labels() {
        assert_eq!(ModelLocation::Gguf { url: "models/a.gguf?x=1".into() }.label(), "a.gguf");
        assert_eq!(ModelLocation::HfRepo { base: "https://huggingface.co/org/repo/resolve/main/".into() }.label(), "org/repo");
    }

    #[test]
    fn patch_spec_keeps_its_link_names() {
        let v = serde_json::to_value(spec()).unwrap();
        assert_eq!(v["family"], "resid_pre");
        assert_eq!(v["metric"], "logit_diff_norm");
    }
}
