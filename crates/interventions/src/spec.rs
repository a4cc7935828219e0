//! The intervention document: plain, versioned JSON (see docs/interventions.md).

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

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
    /// TransformerLens hook name; `blocks.*.…` means every layer.
    pub hook: String,
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
    /// Set the component along a direction to `value`, or cap it at `cap`.
    SetProjection {
        direction: Vector,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<f32>,
    },
    /// Block attention from query `positions` to `keys` (on hook_attn_scores:
    /// −∞ before the softmax; on hook_pattern: 0 after it).
    Knockout { keys: Positions },
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

/// Fields each op accepts besides the common ones (checked by `parse`,
/// because serde cannot deny unknown fields through `flatten`).
fn op_fields(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "add" => &["vector", "scale"],
        "scale" => &["factor"],
        "zero" => &[],
        "mean" => &["over"],
        "patch" => &["source"],
        "project_out" => &["direction"],
        "set_projection" => &["direction", "value", "cap"],
        "knockout" => &["keys"],
        _ => return None,
    })
}

const COMMON_FIELDS: [&str; 6] = ["hook", "op", "positions", "heads", "neurons", "enabled"];

/// Parses a document, naming the intervention (index and field) on any error.
pub fn parse(json: &str) -> Result<Document, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("the document must be a JSON object with 'version' and 'interventions'")?;
    for k in obj.keys() {
        if k != "version" && k != "interventions" {
            return Err(format!("unknown top-level field '{k}' (expected 'version', 'interventions')"));
        }
    }
    let version = obj.get("version").and_then(|x| x.as_u64()).ok_or("missing or non-integer 'version'")?;
    if version != VERSION as u64 {
        return Err(format!("schema version {version} is not supported (this Scalpel reads version {VERSION})"));
    }
    let items = match obj.get("interventions") {
        None => return Ok(Document { version: VERSION, interventions: Vec::new() }),
        Some(x) => x.as_array().ok_or("'interventions' must be an array")?,
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let o = item.as_object().ok_or(format!("intervention {i}: must be an object"))?;
        let op = o.get("op").and_then(|x| x.as_str()).ok_or(format!("intervention {i}: missing field 'op'"))?;
        let fields = op_fields(op).ok_or(format!(
            "intervention {i}: unknown op '{op}' (add, scale, zero, mean, patch, project_out, set_projection, knockout)"
        ))?;
        for k in o.keys() {
            if !COMMON_FIELDS.contains(&k.as_str()) && !fields.contains(&k.as_str()) {
                return Err(format!("intervention {i} (op '{op}'): unknown field '{k}'"));
            }
        }
        let parsed: Intervention = serde_json::from_value(item.clone())
            .map_err(|e| format!("intervention {i} (op '{op}'): {e}"))?;
        out.push(parsed);
    }
    Ok(Document { version: VERSION, interventions: out })
}
