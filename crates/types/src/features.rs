//! What dictionary features return (`scalpel features`, the page's Features
//! panel): a prompt's active latents, what splicing the dictionary in does
//! to the next-token distribution, a latent's dashboard (decoder →
//! vocabulary, activation histogram, top contexts over a corpus) and latent
//! search. Computed by `scalpel_dictionaries`; docs/features.md.

use serde::{Deserialize, Serialize};

use crate::readouts::TokenScore;

/// One active latent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latent {
    pub id: u32,
    pub activation: f32,
}

/// One position's features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionFeatures {
    pub position: usize,
    /// The token id and its string.
    pub id: u32,
    pub token: String,
    /// The `top_k` largest positive activations, highest first (ties: lower id first).
    pub latents: Vec<Latent>,
    /// How many latents are non-zero.
    pub l0: usize,
    /// ‖y − ŷ‖² / ‖y‖²: y is the hook value (an SAE's input, a transcoder's
    /// output hook), ŷ the dictionary's output.
    pub reconstruction_error: f32,
}

/// A prompt's features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub hook: String,
    /// A transcoder's output hook.
    pub hook_out: Option<String>,
    pub d_sae: usize,
    pub positions: Vec<PositionFeatures>,
    /// What replacing the hook value by the dictionary's output does to the
    /// model's next-token distribution (None when not asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splice: Option<Splice>,
}

/// The model with the dictionary spliced in (its output replaces the value
/// at the output hook, every position) against the model itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Splice {
    /// KL(model ‖ spliced model) of the next-token distribution, nats, per position.
    pub kl: Vec<f32>,
    /// The most likely next token at each position: the model's, and with the dictionary spliced in.
    pub top_model: Vec<String>,
    pub top_spliced: Vec<String>,
    /// Positions where the two differ.
    pub top1_changed: usize,
}

/// What a dictionary is, for labels and checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DictionaryInfo {
    pub name: String,
    /// `sae_lens`, `sparsify` or `gemma_scope`.
    pub format: String,
    /// `standard`, `jump_relu`, `top_k 32`, `group_max 32`.
    pub architecture: String,
    pub hook: String,
    pub hook_out: Option<String>,
    pub d_in: usize,
    pub d_out: usize,
    pub d_sae: usize,
    /// How the files were read (defaults taken, conventions followed).
    pub notes: Vec<String>,
}

/// One context of a corpus where a latent fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Which window of the corpus (numbered in corpus order from 0).
    pub window: usize,
    pub ids: Vec<u32>,
    /// The text each id adds after the ones before it (`Tokenizer::text_pieces`:
    /// a multi-byte character is whole on the token that completes it).
    pub tokens: Vec<String>,
    /// The position of the highest activation (the first, on ties).
    pub position: usize,
    pub activation: f32,
    /// The latent's activation at every position of the window.
    pub activations: Vec<f32>,
}

/// Counts of positive activations in fixed log-spaced bins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `counts.len() + 1` bin edges; the first bin also counts values below
    /// `edges[0]`, the last values above the last edge.
    pub edges: Vec<f32>,
    pub counts: Vec<u32>,
}

/// What a corpus pass found for one latent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentCorpus {
    /// Windows (and their tokens) the pass has read; `complete` when all.
    pub windows: usize,
    pub windows_total: usize,
    pub tokens: u64,
    pub complete: bool,
    /// Token positions where the latent is positive.
    pub fires: u64,
    pub max: f32,
    pub histogram: Histogram,
    /// Highest activation first; ties keep corpus order.
    pub contexts: Vec<Context>,
}

/// A latent's dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentDashboard {
    pub latent: u32,
    /// Where its decoder row writes.
    pub hook_out: String,
    /// ‖W_dec row‖.
    pub decoder_norm: f32,
    /// Decoder row through the final norm's weight and the unembedding:
    /// the logits it promotes (highest first) and suppresses (lowest first).
    pub promoted: Vec<TokenScore>,
    pub suppressed: Vec<TokenScore>,
    /// The corpus pass's findings, once a pass has run.
    pub corpus: Option<LatentCorpus>,
}

/// A latent found by a search, with the score it was ranked by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentMatch {
    pub id: u32,
    pub score: f32,
}

/// Latents related to one token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentSearch {
    pub id: u32,
    pub token: String,
    /// Latents whose decoder row raises this token's logit most (the
    /// dashboard's score), highest first.
    pub writes: Vec<LatentMatch>,
    /// Latents whose top corpus contexts peak on this token, by their
    /// activation there, highest first (empty before a corpus pass).
    pub fires: Vec<LatentMatch>,
}

/// Where a corpus pass stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusStatus {
    pub windows: usize,
    pub windows_total: usize,
    pub tokens: u64,
    pub complete: bool,
    /// Read from the browser's cache rather than computed.
    pub cached: bool,
    /// Time this pass spent computing (0 when cached), and its speed.
    pub seconds: f64,
    pub tokens_per_second: f64,
}
