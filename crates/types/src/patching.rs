//! Activation patching sweeps: what to patch, how to score it, and the result.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::hooks::Site;
use crate::options::ParseError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchSite {
    ResidPre,
    ResidMid,
    ResidPost,
    AttnOut,
    MlpOut,
    /// `attn.hook_z`, one cell per (layer, head), all positions.
    HeadZ,
    /// `attn.hook_z`, one cell per (layer, head, position).
    HeadZPos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// (LD − LD_corrupt) / (LD_clean − LD_corrupt), LD = logit[answer] − logit[wrong].
    LogitDiffNorm,
    LogitDiff,
    /// Probability of the answer token.
    Prob,
    /// KL(clean ‖ patched) of the next-token distribution.
    Kl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Fast,
    Naive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Patch clean activations into the corrupted run.
    #[default]
    Denoise,
    /// Patch corrupted activations into the clean run.
    Noise,
}

/// How the corrupted run differs from the clean one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// A minimal-pair prompt of the same token length (STR).
    Prompt(Vec<u32>),
    /// Seeded Gaussian noise added to the embeddings at `positions`;
    /// `std` defaults to 3× the embedding matrix's standard deviation (ROME).
    Noise { positions: Vec<usize>, std: Option<f32>, seed: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchResult {
    #[serde(rename = "hook")]
    pub site: PatchSite,
    pub metric: Metric,
    /// Layers, or layers × heads for `head_z_pos` (row r: layer r / heads_per_layer,
    /// head r % heads_per_layer).
    pub rows: usize,
    /// Positions, or heads for `head_z`.
    pub cols: usize,
    /// For `head_z_pos`: the heads per layer, to label row r `L{r / h}.H{r % h}`.
    pub heads_per_layer: Option<usize>,
    /// `L{l}` per row, or `L{l}.H{h}` when rows are layer × head.
    pub row_labels: Vec<String>,
    /// The clean prompt's tokens, or `H{h}` for `head_z`.
    pub col_labels: Vec<String>,
    pub values: Vec<Vec<f32>>,
    /// The metric on the unpatched clean and corrupted runs.
    pub clean: f32,
    pub corrupt: f32,
    /// Cells computed by a forward pass (the rest equal the base run exactly).
    pub computed_cells: usize,
    pub seconds: f64,
    /// Logit differences of the clean and corrupted runs.
    pub clean_ld: f32,
    pub corrupt_ld: f32,
    #[serde(skip)]
    pub clean_logprobs: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionResult {
    /// First-order estimates of the patched metric, same layout as the sweep.
    pub estimate: PatchResult,
    /// The exact sweep (fast strategy) the estimate is compared with.
    pub exact: PatchResult,
    /// Pearson correlation between estimate and exact over all cells.
    pub correlation: f64,
    /// Seconds for the gradient estimate alone (one forward + one backward).
    pub attribution_seconds: f64,
}

impl PatchSite {
    pub const ALL: [PatchSite; 7] = [
        PatchSite::ResidPre,
        PatchSite::ResidMid,
        PatchSite::ResidPost,
        PatchSite::AttnOut,
        PatchSite::MlpOut,
        PatchSite::HeadZ,
        PatchSite::HeadZPos,
    ];

    pub fn site(self) -> Site {
        match self {
            PatchSite::ResidPre => Site::ResidPre,
            PatchSite::ResidMid => Site::ResidMid,
            PatchSite::ResidPost => Site::ResidPost,
            PatchSite::AttnOut => Site::AttnOut,
            PatchSite::MlpOut => Site::MlpOut,
            PatchSite::HeadZ | PatchSite::HeadZPos => Site::Z,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatchSite::ResidPre => "resid_pre",
            PatchSite::ResidMid => "resid_mid",
            PatchSite::ResidPost => "resid_post",
            PatchSite::AttnOut => "attn_out",
            PatchSite::MlpOut => "mlp_out",
            PatchSite::HeadZ => "head_z",
            PatchSite::HeadZPos => "head_z_pos",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl FromStr for PatchSite {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        PatchSite::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            ParseError(format!(
                "hook family '{s}' is not one of: resid_pre, resid_mid, resid_post, attn_out, mlp_out, head_z, head_z_pos"
            ))
        })
    }
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::LogitDiffNorm, Metric::LogitDiff, Metric::Prob, Metric::Kl];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LogitDiffNorm => "logit_diff_norm",
            Metric::LogitDiff => "logit_diff",
            Metric::Prob => "prob",
            Metric::Kl => "kl",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl FromStr for Metric {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ParseError(format!("metric '{s}' is not one of: logit_diff_norm, logit_diff, prob, kl")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for p in PatchSite::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(PatchSite::parse(p.as_str()).unwrap(), p);
        }
        for m in Metric::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }
}
