//! What running an intervention document reports: which interventions
//! applied where, what a conditional saw, and what happened while generating.

use serde::{Deserialize, Serialize};

/// What each intervention touched, for the user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemReport {
    pub index: usize,
    pub op: String,
    pub hooks: Vec<String>,
    /// Hook calls this intervention changed.
    pub applications: usize,
    /// For ops that edit the KV cache or the weights instead of a hook
    /// value: what they edited (once per item), e.g. "keys at 3 cached
    /// positions of layers 2, 3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<String>,
}

/// What a conditional intervention saw while generating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionalTrace {
    pub index: usize,
    /// (absolute position, projection) per monitored token.
    pub readings: Vec<(usize, f32)>,
    /// Positions where the condition turned on.
    pub fired: Vec<usize>,
    pub backtrack: usize,
}

/// Something that happened while generating, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GenEvent {
    /// A sampled token.
    Token { id: u32 },
    /// Tokens forced in by an `insert` intervention.
    Inserted { ids: Vec<u32>, index: usize },
    /// The last `removed` tokens were discarded (conditional backtracking).
    Backtrack { removed: usize, index_fired_at: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The final generated ids (inserted tokens included, discarded ones not).
    pub ids: Vec<u32>,
    pub events: Vec<GenEvent>,
}
