//! The intervention document: plain, versioned JSON (docs/interventions.md).
//! Parsing with per-field messages and compiling against a model live in
//! `scalpel-interventions`; the page builds documents from these types.

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

/// A block's weight matrices, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matrix {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Matrix {
    pub const ALL: [Matrix; 7] = [Matrix::Q, Matrix::K, Matrix::V, Matrix::O, Matrix::Gate, Matrix::Up, Matrix::Down];
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub version: u32,
    #[serde(default)]
    pub interventions: Vec<Intervention>,
}

/// One intervention: where (hook + selection) and what (op).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Intervention {
    /// TransformerLens hook name; `blocks.*.…` means every layer. For
    /// `low_rank` a block (`blocks.5`, `blocks.*`); absent for `insert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(flatten)]
    pub op: Op,
    #[serde(default)]
    pub positions: Positions,
    /// Heads, for per-head hooks (q/k/v/z/scores/pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Vec<usize>>,
    /// Units of the last axis (MLP neurons, residual dimensions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neurons: Option<Vec<usize>>,
    /// Switch an intervention off without deleting it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// h += scale · v
    Add {
        vector: Vector,
        #[serde(default = "one")]
        scale: f32,
    },
    /// Multiply the selected units.
    Scale { factor: f32 },
    Zero,
    /// Replace by the mean over the prompt's positions, or over a set of prompts.
    Mean {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        over: Option<Vec<String>>,
    },
    /// Replace by the value in a run on `source` (interchange / resample).
    Patch { source: String },
    /// Remove the component along a direction.
    ProjectOut { direction: Vector },
    /// Set the component along a direction to `value`, cap it at `cap`, or
    /// set it to its value in a run on `source` at the same hook and position
    /// (1-D subspace patching; `source` as in `patch`).
    SetProjection {
        direction: Vector,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Block attention from query `positions` to `keys` (on hook_attn_scores:
    /// −∞ before the softmax; on hook_pattern: 0 after it).
    Knockout { keys: Positions },
    /// Add `scale · vector` to the cached keys (`attn.hook_rot_k`) or values
    /// (`attn.hook_v`) of the prompt, once, after the prompt is processed.
    KvAdd {
        vector: Vector,
        #[serde(default = "one")]
        scale: f32,
    },
    /// Replace a weight matrix of the block(s) by its rank-`rank` approximation (LASER).
    LowRank { matrix: Matrix, rank: usize },
    /// While generating: force `text` into the output at generation step
    /// `at_step`, or after each generated occurrence of `after` (at most `times`).
    Insert {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_step: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default = "one_usize")]
        times: usize,
    },
    /// Apply `then` only while the projection of the newest token's value at
    /// `hook` on `direction` is above (or below) `threshold`. With
    /// `backtrack` > 0, the first time it fires during generation the last
    /// `backtrack` tokens are discarded and regenerated with `then` on.
    Conditional {
        direction: Vector,
        threshold: f32,
        #[serde(default)]
        when: When,
        then: Vec<Intervention>,
        #[serde(default)]
        backtrack: usize,
    },
    /// Clamp latent `latent` of the SAE loaded for `hook` to `value`,
    /// through the error term: x' = x + decode(f with f_latent = value) − decode(f)
    /// (the SAE is given to the compiler beside the document).
    SaeClamp { latent: usize, value: f32 },
}

fn one_usize() -> usize {
    1
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    Above,
    Below,
}

fn one() -> f32 {
    1.0
}

/// A vector: literal numbers, or built from model runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Vector {
    Values(Vec<f32>),
    From(VectorSource),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum VectorSource {
    /// ActAdd: act(plus) − act(minus) at `hook`, `position`.
    PromptDiff {
        plus: String,
        minus: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
        #[serde(default = "last")]
        position: i64,
    },
    /// CAA: mean over `positive` − mean over `negative`.
    MeanDiff {
        positive: Vec<String>,
        negative: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
        #[serde(default = "last")]
        position: i64,
    },
    /// RepE: first principal component of the paired differences
    /// positive[i] − negative[i], sign-aligned, scaled to the mean gap
    /// (docs/vectors.md). `center`: subtract the mean difference first (repeng).
    Pca {
        positive: Vec<String>,
        negative: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
        #[serde(default = "last")]
        position: i64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        center: bool,
    },
    /// Decoder row `latent` of the SAE loaded for `hook` (or the intervention's hook).
    Sae {
        latent: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
    },
    /// A vector from a file: a control vector GGUF (`direction.{layer}`,
    /// `layer` defaulting from the hook) or JSON. Resolved by the caller,
    /// which reads the file (the CLI; the engine does no I/O).
    File {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<usize>,
    },
}

fn last() -> i64 {
    -1
}

/// Which token positions an intervention covers. Negative indices count
/// from the end of the prompt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Positions {
    Named(NamedPositions),
    List(Vec<i64>),
    Range { start: i64, end: i64 },
}

impl Default for Positions {
    fn default() -> Self {
        Positions::Named(NamedPositions::All)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NamedPositions {
    /// Every prompt token and every generated token.
    All,
    Prompt,
    Generated,
}
