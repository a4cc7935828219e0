//! Steering-vector methods and their per-layer separation scores.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::options::ParseError;

/// Which token of each prompt a vector is read from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// A position; negative counts from the end (−1 = last token).
    At(i64),
    /// The mean over every token of the prompt.
    Mean,
}

/// How a direction is computed from the two sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One prompt pair: act(plus) − act(minus) (Turner et al.).
    Actadd,
    /// mean(positive) − mean(negative) (CAA, persona vectors).
    MeanDiff,
    /// First principal component of the paired differences pos[i] − neg[i] (RepE).
    Pca,
    /// Weight of a logistic-regression probe (L2, standardized features), in activation space.
    Probe,
}

/// How well a direction separates the sets at one hook point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerScore {
    pub hook: String,
    pub layer: Option<usize>,
    /// |vector| = mean(pos)·u − mean(neg)·u.
    pub norm: f64,
    /// Mean L2 norm of the examples' activations (to size a steering scale).
    pub act_norm: f64,
    /// (mean_pos − mean_neg) / pooled std of the projections on u (in-sample; null with < 3 examples).
    pub cohens_d: Option<f64>,
    /// Leave-one-out accuracy (one pair out for pca) of the direction as a
    /// classifier thresholded at the midpoint of the training class means;
    /// null when a set has fewer than 2 examples.
    pub loo_accuracy: Option<f64>,
    /// The same classifier on all examples (in-sample).
    pub accuracy: f64,
}

impl Pool {
    /// `-1`, `3`, or `mean`.
    pub fn parse(s: &str) -> Result<Pool, ParseError> {
        s.parse()
    }
}

impl FromStr for Pool {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Pool, ParseError> {
        if s == "mean" {
            return Ok(Pool::Mean);
        }
        s.trim()
            .parse::<i64>()
            .map(Pool::At)
            .map_err(|_| ParseError(format!("position '{s}' is neither an integer (e.g. -1 for the last token) nor 'mean'")))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::At(p) => write!(f, "{p}"),
            Pool::Mean => write!(f, "mean"),
        }
    }
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, ParseError> {
        s.parse()
    }
}

impl FromStr for Method {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Method, ParseError> {
        Ok(match s {
            "actadd" | "prompt_diff" => Method::Actadd,
            "mean_diff" | "caa" => Method::MeanDiff,
            "pca" | "repe" => Method::Pca,
            "probe" => Method::Probe,
            _ => return Err(ParseError(format!("method '{s}' is not one of: actadd, mean_diff, pca, probe"))),
        })
    }
}
