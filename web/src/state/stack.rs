//! The intervention stack as the page edits it (operation, hook, selection,
//! strength, where its vector comes from), and the intervention document
//! (`scalpel_types::document`) each item stands for.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use scalpel_types::document::{Intervention, NamedPositions, Op, Positions, Vector, VectorSource};

/// The operation of a stack item, with the controls it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UiOp {
    /// Steering: h += strength · v.
    Add,
    /// Multiply the selected units by `strength`.
    Scale,
    Zero,
    Mean,
    /// Remove the component along the vector's direction.
    ProjectOut,
    /// Clamp one latent of the loaded dictionary to `strength` through its
    /// error term (0: ablate it); the latent is the item's `SaeLatent` vector.
    SaeClamp,
    /// Any intervention as raw JSON (every op of the document format).
    Json,
}

impl UiOp {
    pub const ALL: [UiOp; 7] = [UiOp::Add, UiOp::Scale, UiOp::Zero, UiOp::Mean, UiOp::ProjectOut, UiOp::SaeClamp, UiOp::Json];
    pub fn as_str(self) -> &'static str {
        match self {
            UiOp::Add => "add",
            UiOp::Scale => "scale",
            UiOp::Zero => "zero",
            UiOp::Mean => "mean",
            UiOp::ProjectOut => "project_out",
            UiOp::SaeClamp => "sae_clamp",
            UiOp::Json => "json",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            UiOp::Add => "Steer (add a vector)",
            UiOp::Scale => "Scale units",
            UiOp::Zero => "Zero-ablate",
            UiOp::Mean => "Mean-ablate",
            UiOp::ProjectOut => "Project out a direction",
            UiOp::SaeClamp => "Clamp a dictionary latent",
            UiOp::Json => "Custom (JSON)",
        }
    }
    pub fn parse(s: &str) -> Option<UiOp> {
        UiOp::ALL.into_iter().find(|o| o.as_str() == s)
    }
    pub fn needs_vector(self) -> bool {
        matches!(self, UiOp::Add | UiOp::ProjectOut)
    }
}

/// Where a vector comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum VectorSpec {
    /// ActAdd: act(plus) − act(minus) at the item's hook, last token.
    PromptPair { plus: String, minus: String },
    /// CAA (mean difference) or RepE (first principal component) of two prompt sets, one per line.
    Sets { positive: String, negative: String, pca: bool },
    /// A llama.cpp control vector (GGUF) read from a file: `(k, values)`,
    /// added at `blocks.{k}.hook_resid_post` (its own layers).
    Control { name: String, directions: Vec<(u32, Vec<f32>)> },
    /// Literal values, with where they came from.
    Literal { label: String, values: Vec<f32> },
    /// Decoder row `latent` of the dictionary loaded in the Features panel
    /// (the document's `{"from": "sae"}`; the CLI takes `--sae DIR`).
    SaeLatent { latent: u32 },
}

impl Default for VectorSpec {
    fn default() -> Self {
        VectorSpec::PromptPair { plus: "I love you".into(), minus: "I hate you".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackItem {
    pub id: u32,
    pub enabled: bool,
    pub op: UiOp,
    /// Hook site after `blocks.{l}.`, e.g. `hook_resid_pre`, `attn.hook_z`.
    pub site: String,
    /// A layer, or None for every layer (`blocks.*`).
    pub layer: Option<u32>,
    /// `all`, `prompt`, `generated`, a list `0, -1`, or a range `2..5`.
    pub positions: String,
    /// Comma-separated heads (per-head hooks), empty = all.
    pub heads: String,
    /// Comma-separated units of the last axis (neurons), empty = all.
    pub neurons: String,
    /// Scale for add, factor for scale.
    pub strength: f32,
    pub vector: VectorSpec,
    /// The layer a prompt-built vector is read at; None = the item's own
    /// layer. Needed when the item covers every layer (directional ablation:
    /// one direction, read at one layer, removed everywhere).
    #[serde(default)]
    pub vector_layer: Option<u32>,
    /// The intervention for `UiOp::Json`.
    pub json: String,
}

impl StackItem {
    pub fn new(id: u32, op: UiOp, n_layers: u32) -> StackItem {
        let mid = n_layers / 3;
        let (site, strength) = match op {
            UiOp::Add => ("hook_resid_pre", 4.0),
            UiOp::Scale => ("mlp.hook_post", 0.0),
            UiOp::Zero => ("attn.hook_z", 1.0),
            UiOp::Mean => ("mlp.hook_post", 1.0),
            UiOp::ProjectOut => ("hook_resid_post", 1.0),
            UiOp::SaeClamp => ("hook_mlp_out", 0.0),
            UiOp::Json => ("hook_resid_pre", 1.0),
        };
        StackItem {
            id,
            enabled: true,
            op,
            site: site.into(),
            layer: if op == UiOp::ProjectOut { None } else { Some(mid) },
            positions: "all".into(),
            heads: if op == UiOp::Zero { "0".into() } else { String::new() },
            neurons: String::new(),
            strength,
            vector: if op == UiOp::SaeClamp { VectorSpec::SaeLatent { latent: 0 } } else { VectorSpec::default() },
            vector_layer: None,
            json: format!(r#"{{"hook": "blocks.{mid}.hook_resid_pre", "op": "scale", "factor": 0.5}}"#),
        }
    }

    pub fn hook(&self) -> String {
        match self.layer {
            Some(l) => format!("blocks.{l}.{}", self.site),
            None => format!("blocks.*.{}", self.site),
        }
    }

    /// The interventions this item stands for (a control vector is one per
    /// layer), as JSON: typed ones serialized, a custom JSON item as written
    /// (the worker's parser names what is wrong with it).
    pub fn to_json(&self) -> Result<Vec<Value>, String> {
        if self.op == UiOp::Json {
            let mut v: Value = serde_json::from_str(&self.json).map_err(|e| format!("custom JSON: {e}"))?;
            if !v.is_object() {
                return Err("custom JSON must be one intervention object".into());
            }
            if !self.enabled {
                v["enabled"] = Value::Bool(false);
            }
            return Ok(vec![v]);
        }
        self.interventions()?.iter().map(|iv| serde_json::to_value(iv).map_err(|e| e.to_string())).collect()
    }

    /// The typed interventions of a stack item other than custom JSON.
    fn interventions(&self) -> Result<Vec<Intervention>, String> {
        let positions = parse_positions(&self.positions)?;
        let item = |hook: String, op: Op, units: bool| -> Result<Intervention, String> {
            Ok(Intervention {
                hook: Some(hook),
                op,
                positions: positions.clone(),
                heads: if units { parse_list("heads", &self.heads)? } else { None },
                neurons: if units { parse_list("neurons", &self.neurons)? } else { None },
                enabled: self.enabled,
            })
        };
        if let (UiOp::Add, VectorSpec::Control { directions, .. }) = (self.op, &self.vector) {
            return directions
                .iter()
                .map(|(k, values)| {
                    let op = Op::Add { vector: Vector::Values(values.clone()), scale: self.strength };
                    item(format!("blocks.{k}.hook_resid_post"), op, false)
                })
                .collect();
        }
        let op = match self.op {
            UiOp::Add => Op::Add { vector: self.vector()?, scale: self.strength },
            UiOp::Scale => Op::Scale { factor: self.strength },
            UiOp::Zero => Op::Zero,
            UiOp::Mean => Op::Mean { over: None },
            UiOp::ProjectOut => Op::ProjectOut { direction: self.vector()? },
            UiOp::SaeClamp => match self.vector {
                VectorSpec::SaeLatent { latent } => Op::SaeClamp { latent: latent as usize, value: self.strength },
                _ => return Err("a clamp needs a dictionary latent".into()),
            },
            UiOp::Json => unreachable!("custom JSON is passed through as written"),
        };
        let units = self.op != UiOp::SaeClamp;
        Ok(vec![item(self.hook(), op, units)?])
    }

    /// Where a prompt-built vector is read: the item's hook, or `vector_layer`.
    fn read_hook(&self) -> Result<Option<String>, String> {
        match (self.vector_layer, self.layer) {
            (Some(l), _) => Ok(Some(format!("blocks.{l}.{}", self.site))),
            (None, Some(_)) => Ok(None),
            (None, None) => Err("with “all layers”, choose the layer the vector is read at".into()),
        }
    }

    /// The item's vector as the document states it.
    fn vector(&self) -> Result<Vector, String> {
        Ok(match &self.vector {
            VectorSpec::PromptPair { plus, minus } => Vector::From(VectorSource::PromptDiff {
                plus: plus.clone(),
                minus: minus.clone(),
                hook: self.read_hook()?,
                position: -1,
            }),
            VectorSpec::Sets { positive, negative, pca } => {
                let (positive, negative) = (lines(positive), lines(negative));
                if positive.is_empty() || negative.is_empty() {
                    return Err("both prompt sets need at least one line".into());
                }
                let hook = self.read_hook()?;
                Vector::From(if *pca {
                    VectorSource::Pca { positive, negative, hook, position: -1, center: false }
                } else {
                    VectorSource::MeanDiff { positive, negative, hook, position: -1 }
                })
            }
            VectorSpec::Literal { values, .. } => {
                if values.is_empty() {
                    return Err("the vector is empty: load it first".into());
                }
                Vector::Values(values.clone())
            }
            VectorSpec::SaeLatent { latent } => Vector::From(VectorSource::Sae { latent: *latent as usize, hook: None }),
            VectorSpec::Control { directions, .. } => {
                // As a direction at this item's own hook: the layer's direction.
                let l = self.layer.ok_or("a control-vector direction needs one layer")?;
                let k = if self.site == "hook_resid_pre" { l.checked_sub(1) } else { Some(l) };
                let d = directions.iter().find(|(kk, _)| Some(*kk) == k).ok_or(format!("the control vector has no direction for layer {l}"))?;
                Vector::Values(d.1.clone())
            }
        })
    }
}

pub fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// `all` | `prompt` | `generated` | `0, 2, -1` | `2..5`.
pub fn parse_positions(s: &str) -> Result<Positions, String> {
    let t = s.trim();
    let named = match t {
        "" | "all" => Some(NamedPositions::All),
        "prompt" => Some(NamedPositions::Prompt),
        "generated" => Some(NamedPositions::Generated),
        _ => None,
    };
    if let Some(n) = named {
        return Ok(Positions::Named(n));
    }
    if let Some((a, b)) = t.split_once("..") {
        let a: i64 = a.trim().parse().map_err(|_| format!("positions: '{}' is not a number", a.trim()))?;
        let b: i64 = b.trim().parse().map_err(|_| format!("positions: '{}' is not a number", b.trim()))?;
        return Ok(Positions::Range { start: a, end: b });
    }
    let mut v = Vec::new();
    for p in t.split(',') {
        let p = p.trim();
        v.push(p.parse::<i64>().map_err(|_| format!("positions: '{p}' is not a number (use all, prompt, generated, a list like 0,-1 or a range like 2..5)"))?);
    }
    Ok(Positions::List(v))
}

fn parse_list(what: &str, s: &str) -> Result<Option<Vec<usize>>, String> {
    let t = s.trim();
    if t.is_empty() || t == "all" {
        return Ok(None);
    }
    t.split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|_| format!("{what}: '{}' is not a non-negative number", x.trim())))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

