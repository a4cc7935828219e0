//! What the readouts return (logit lens, direct logit attribution,
//! attention patterns, neuron → vocabulary, projection monitors): the CLI
//! prints them as JSON and the worker sends them to the page.

use serde::{Deserialize, Serialize};

/// A token id with its text (the id decoded on its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRef {
    pub id: u32,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    pub id: u32,
    pub token: String,
    pub prob: f32,
    pub logit: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStat {
    pub prob: f32,
    pub logprob: f32,
    pub logit: f32,
    /// 1 = the most likely token (1 + the number of tokens with a higher logit).
    pub rank: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensCell {
    pub position: usize,
    pub top: Vec<TokenProb>,
    pub target: Option<TargetStat>,
    /// Entropy of the decoded distribution (nats).
    pub entropy: f32,
    /// KL(model's next-token distribution ‖ this decoded one) at this position (nats).
    pub kl_to_final: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensRow {
    /// "embed" or "L{layer}".
    pub label: String,
    /// The hook decoded: `blocks.0.hook_resid_pre` or `blocks.{l}.hook_resid_post`.
    pub hook: String,
    pub layer: Option<usize>,
    pub cells: Vec<LensCell>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LensResult {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub positions: Vec<usize>,
    pub target: Option<TokenRef>,
    pub rows: Vec<LensRow>,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Embed,
    PosEmbed,
    Head,
    AttnBias,
    Mlp,
    LnFinalBias,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlaComponent {
    /// "embed", "pos_embed", "L{l}H{h}", "L{l}.attn_bias", "L{l}.mlp", "ln_final.bias".
    pub name: String,
    pub kind: ComponentKind,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub value: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlaLayer {
    pub layer: usize,
    /// One value per query head.
    pub heads: Vec<f32>,
    /// The attention output bias (GPT-2), if the model has one.
    pub attn_bias: Option<f32>,
    /// `hook_attn_out` through the same linear map (= Σ heads + bias, up to
    /// rounding; in `quantized` precision the heads are computed from
    /// dequantized weights and differ slightly).
    pub attn_out: f32,
    /// `hook_mlp_out` through the linear map.
    pub mlp: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlaResult {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub position: usize,
    pub answer: TokenRef,
    pub wrong: Option<TokenRef>,
    /// "logit_diff" (with a wrong token) or "logit".
    pub metric: String,
    /// The metric from the model's real logits (before the final soft-cap,
    /// when the model has one: see `final_softcap`).
    pub total: f32,
    /// The model's final logit soft-cap (Gemma 2: logits = cap·tanh(x/cap)),
    /// if any. It is not linear, so `total` and the components are the
    /// logits before it, which the residual stream decomposes exactly.
    #[serde(default)]
    pub final_softcap: Option<f32>,
    /// Σ of every component below.
    pub sum_of_components: f32,
    /// total − sum_of_components: rounding, or whatever an intervention added
    /// directly to the residual stream.
    pub unexplained: f32,
    /// "rms" or "layer".
    pub norm: String,
    /// The frozen scale s of the final norm at `position`:
    /// sqrt(mean(x²) + eps) (RMSNorm) or sqrt(var(x) + eps) (LayerNorm),
    /// x = the final residual stream.
    pub norm_scale: f32,
    pub embed: f32,
    pub pos_embed: Option<f32>,
    pub ln_final_bias: Option<f32>,
    pub layers: Vec<DlaLayer>,
    /// Every component in forward order; they sum to `sum_of_components`.
    pub components: Vec<DlaComponent>,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionHead {
    pub head: usize,
    /// `[q][k]`: how much query position q attends to key position k (rows
    /// sum to 1; entries above the diagonal are 0).
    pub pattern: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionLayer {
    pub layer: usize,
    pub heads: Vec<AttentionHead>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionResult {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub layers: Vec<AttentionLayer>,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenScore {
    pub id: u32,
    pub token: String,
    /// W_U[id] · v, v = the neuron's output weights (optionally through the
    /// final norm weight): the logit change per unit of activation.
    pub score: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronActivations {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// `mlp.hook_post[:, neuron]`: the coefficient of the output weights.
    pub post: Vec<f32>,
    /// `mlp.hook_pre[:, neuron]` (gate pre-activation for gated MLPs).
    pub pre: Vec<f32>,
    /// `mlp.hook_pre_linear[:, neuron]` (gated MLPs only).
    pub pre_linear: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeuronResult {
    pub layer: usize,
    pub neuron: usize,
    /// The hook whose unit this is: `blocks.{l}.mlp.hook_post`.
    pub hook: String,
    pub through_final_norm: bool,
    /// L2 norm of the neuron's output weights W_down[:, neuron].
    pub output_norm: f32,
    /// Highest scores first.
    pub promoted: Vec<TokenScore>,
    /// Lowest (most negative) scores first.
    pub suppressed: Vec<TokenScore>,
    pub activations: Option<NeuronActivations>,
    pub seconds: f64,
}

/// One position's reading.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Absolute position.
    pub position: usize,
    /// value · direction / |direction|.
    pub projection: f32,
    /// |value|.
    pub norm: f32,
    /// projection / |value|.
    pub cosine: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorRow {
    pub position: usize,
    pub id: u32,
    pub token: String,
    /// Whether this token was generated (false: part of the prompt).
    pub generated: bool,
    /// The reading at this position, while the model reads this token.
    pub projection: f32,
    pub norm: f32,
    pub cosine: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorResult {
    pub hook: String,
    pub direction_norm: f32,
    pub prompt_len: usize,
    pub generated_ids: Vec<u32>,
    pub text: String,
    /// One row per token, prompt and generated.
    pub rows: Vec<MonitorRow>,
    pub mean_prompt: f32,
    /// Mean over generated tokens (null if none).
    pub mean_generated: Option<f32>,
    pub seconds: f64,
}
