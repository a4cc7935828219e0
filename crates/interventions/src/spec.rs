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
    LowRank { matrix: scalpel_engine::Matrix, rank: usize },
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
    /// (see `vectors::resolve`, which attaches the SAE).
    SaeClamp {
        latent: usize,
        value: f32,
        #[serde(skip)]
        sae: Option<crate::vectors::SaeHandle>,
    },
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
        "set_projection" => &["direction", "value", "cap", "source"],
        "knockout" => &["keys"],
        "kv_add" => &["vector", "scale"],
        "low_rank" => &["matrix", "rank"],
        "insert" => &["text", "at_step", "after", "times"],
        "conditional" => &["direction", "threshold", "when", "then", "backtrack"],
        "sae_clamp" => &["latent", "value"],
        _ => return None,
    })
}

const COMMON_FIELDS: [&str; 6] = ["hook", "op", "positions", "heads", "neurons", "enabled"];

/// Parses a document, naming the intervention (index and field) on any error.
pub fn parse(json: &str) -> Result<Document, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        let at = match locate_item(json, e.line(), e.column()) {
            Some((i, Some(field))) => format!("intervention {i}: field '{field}': "),
            Some((i, None)) => format!("intervention {i}: "),
            None => String::new(),
        };
        let hint = if e.to_string().contains("number out of range") || json.contains("NaN") || json.contains("Infinity") {
            " (numbers must be finite: JSON has no NaN or Infinity, and values like 1e999 overflow)"
        } else {
            ""
        };
        format!("{at}not valid JSON: {e}{hint}")
    })?;
    parse_value(&v)
}

/// Which element of the top-level "interventions" array holds `line:column`
/// (1-based), found by scanning brackets outside strings.
fn locate_item(json: &str, line: usize, column: usize) -> Option<(usize, Option<String>)> {
    let mut offset = 0;
    for (n, l) in json.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            offset += column.saturating_sub(1).min(l.len());
            break;
        }
        offset += l.len();
    }
    let start = json.find("\"interventions\"")?;
    let bytes = json.as_bytes();
    let mut i = start + json[start..].find('[')? + 1;
    let (mut depth, mut item, mut in_str, mut esc) = (0i32, 0usize, false, false);
    // The last string seen and the last key of the item's own object.
    let (mut str_start, mut last_str, mut key): (usize, Option<String>, Option<String>) = (0, None, None);
    while i < bytes.len() && i < offset {
        let c = bytes[i];
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => {
                    in_str = false;
                    last_str = Some(json[str_start..i].to_owned());
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => {
                    in_str = true;
                    str_start = i + 1;
                }
                b':' if depth == 1 => key = last_str.take(),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    if depth == 0 {
                        return None;
                    }
                    depth -= 1
                }
                b',' if depth == 0 => {
                    item += 1;
                    key = None;
                }
                _ => {}
            }
        }
        i += 1;
    }
    Some((item, key))
}

/// Checks a `positions`/`keys` value so a typo gets a message naming it.
fn check_positions(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) if ["all", "prompt", "generated"].contains(&s.as_str()) => Ok(()),
        serde_json::Value::String(s) => Err(format!("'{s}' is not one of: all, prompt, generated, a list of positions, {{\"start\", \"end\"}}")),
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_i64()) => Ok(()),
        serde_json::Value::Array(_) => Err("a position list must hold integers".into()),
        serde_json::Value::Object(o) => {
            for k in o.keys() {
                if k != "start" && k != "end" {
                    return Err(format!("unknown field '{k}' in a range (a range has 'start' and 'end')"));
                }
            }
            if o.get("start").is_some_and(|x| x.is_i64()) && o.get("end").is_some_and(|x| x.is_i64()) {
                Ok(())
            } else {
                Err("a range needs integer 'start' and 'end'".into())
            }
        }
        _ => Err("must be 'all', 'prompt', 'generated', a list of positions or {\"start\", \"end\"}".into()),
    }
}

/// Checks a `vector`/`direction` value: numbers, or a known source object.
fn check_vector(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::Array(a) if a.iter().all(|x| x.is_number()) => Ok(()),
        serde_json::Value::Array(_) => Err("a literal vector must hold only numbers".into()),
        serde_json::Value::Object(_) => serde_json::from_value::<VectorSource>(v.clone()).map(|_| ()).map_err(|e| e.to_string()),
        _ => Err("must be a list of numbers or an object with 'from'".into()),
    }
}

/// Checks one list of interventions; `path` prefixes messages for nested lists.
fn parse_items(items: &[serde_json::Value], path: &str) -> Result<Vec<Intervention>, String> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = format!("{path}{i}");
        let o = item.as_object().ok_or(format!("intervention {name}: must be an object"))?;
        let op = o.get("op").and_then(|x| x.as_str()).ok_or(format!("intervention {name}: missing field 'op'"))?;
        let fields = op_fields(op).ok_or(format!(
            "intervention {name}: unknown op '{op}' (add, scale, zero, mean, patch, project_out, set_projection, knockout, kv_add, low_rank, insert, conditional, sae_clamp)"
        ))?;
        for k in o.keys() {
            if !COMMON_FIELDS.contains(&k.as_str()) && !fields.contains(&k.as_str()) {
                return Err(format!("intervention {name} (op '{op}'): unknown field '{k}'"));
            }
        }
        for f in ["positions", "keys"] {
            if let Some(v) = o.get(f) {
                check_positions(v).map_err(|e| format!("intervention {name} (op '{op}'): field '{f}': {e}"))?;
            }
        }
        for f in ["vector", "direction"] {
            if let Some(v) = o.get(f) {
                check_vector(v).map_err(|e| format!("intervention {name} (op '{op}'): field '{f}': {e}"))?;
            }
        }
        if op == "set_projection" {
            let given: Vec<&str> = ["value", "cap", "source"].into_iter().filter(|f| o.contains_key(*f)).collect();
            if given.len() != 1 {
                let what = if given.is_empty() { "none".to_owned() } else { format!("'{}'", given.join("' and '")) };
                return Err(format!(
                    "intervention {name} (op 'set_projection'): give exactly one of 'value' (a constant), 'cap' (an upper bound) or 'source' (a prompt whose run gives the value), not {what}"
                ));
            }
            if let Some(src) = o.get("source") {
                if !src.is_string() {
                    return Err(format!("intervention {name} (op 'set_projection'): field 'source' must be a prompt (a string)"));
                }
            }
        }
        if op == "conditional" {
            let then = o.get("then").and_then(|t| t.as_array()).ok_or(format!("intervention {name}: field 'then' must be a list of interventions"))?;
            parse_items(then, &format!("{name}.then."))?;
        }
        let parsed: Intervention = serde_json::from_value(item.clone()).map_err(|e| {
            // serde's message names the bad value but not where it is: find the field.
            let msg = e.to_string();
            let field = o.iter().find(|(_, v)| match v {
                serde_json::Value::String(x) => msg.contains(&format!("`{x}`")),
                serde_json::Value::Number(n) => msg.contains(&n.to_string()),
                _ => false,
            });
            match field {
                Some((k, _)) => format!("intervention {name} (op '{op}'): field '{k}': {msg}"),
                None => format!("intervention {name} (op '{op}'): {msg}"),
            }
        })?;
        out.push(parsed);
    }
    Ok(out)
}

/// Parses an already-decoded JSON document.
pub fn parse_value(v: &serde_json::Value) -> Result<Document, String> {
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
    let out = parse_items(items, "")?;
    Ok(Document { version: VERSION, interventions: out })
}
