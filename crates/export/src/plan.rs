//! The document lowered to what every exporter shares: one step per
//! (intervention, hook point), `blocks.*` expanded, vectors literal, each
//! op either kept or refused by name.

use scalpel_types::{Document, HookLayout, HookPoint, Intervention, NamedPositions, Op, Positions, Site, Vector};

use crate::ModelSpec;

/// Positions as the document gives them; negative indices count from the
/// end of the prompt (the scripts resolve them against its length).
#[derive(Clone, Debug, PartialEq)]
pub enum Pos {
    All,
    Prompt,
    Generated,
    List(Vec<i64>),
    Range(i64, i64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepOp {
    Add {
        vector: Vec<f32>,
        scale: f32,
    },
    Scale {
        factor: f32,
    },
    Zero,
    Mean {
        over: Option<Vec<String>>,
    },
    Patch {
        source: String,
    },
    ProjectOut {
        direction: Vec<f32>,
    },
    SetProjection {
        direction: Vec<f32>,
        value: Option<f32>,
        cap: Option<f32>,
        source: Option<String>,
    },
    Knockout {
        keys: Pos,
    },
}

impl StepOp {
    pub fn name(&self) -> &'static str {
        match self {
            StepOp::Add { .. } => "add",
            StepOp::Scale { .. } => "scale",
            StepOp::Zero => "zero",
            StepOp::Mean { .. } => "mean",
            StepOp::Patch { .. } => "patch",
            StepOp::ProjectOut { .. } => "project_out",
            StepOp::SetProjection { .. } => "set_projection",
            StepOp::Knockout { .. } => "knockout",
        }
    }
}

/// One intervention at one hook point.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The intervention's index in the document.
    pub index: usize,
    pub point: HookPoint,
    pub positions: Pos,
    pub heads: Option<Vec<usize>>,
    pub neurons: Option<Vec<usize>>,
    pub op: StepOp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// In document order (within an intervention, layer order).
    pub steps: Vec<Step>,
    /// Disabled interventions: `(index, op)`; exporters list them.
    pub disabled: Vec<(usize, String)>,
}

pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Add { .. } => "add",
        Op::Scale { .. } => "scale",
        Op::Zero => "zero",
        Op::Mean { .. } => "mean",
        Op::Patch { .. } => "patch",
        Op::ProjectOut { .. } => "project_out",
        Op::SetProjection { .. } => "set_projection",
        Op::Knockout { .. } => "knockout",
        Op::KvAdd { .. } => "kv_add",
        Op::LowRank { .. } => "low_rank",
        Op::Insert { .. } => "insert",
        Op::Conditional { .. } => "conditional",
        Op::SaeClamp { .. } => "sae_clamp",
    }
}

struct Layout<'a>(&'a ModelSpec);

impl HookLayout for Layout<'_> {
    fn n_layers(&self) -> usize {
        self.0.n_layers
    }
    fn has_site(&self, site: Site) -> bool {
        let arch = self.0.arch.as_str();
        let gemma = arch.starts_with("gemma");
        match site {
            Site::PosEmbed => arch == "gpt2",
            Site::RotQ | Site::RotK => arch != "gpt2",
            Site::ResidMid => arch != "gpt_neox",
            Site::QNorm | Site::KNorm => matches!(arch, "qwen3" | "gemma3"),
            Site::Ln1Post | Site::Ln2Post => gemma,
            Site::MlpPreLinear => !matches!(arch, "gpt2" | "gpt_neox"),
            _ => true,
        }
    }
    fn arch_name(&self) -> &str {
        &self.0.arch
    }
}

fn pos(p: &Positions) -> Pos {
    match p {
        Positions::Named(NamedPositions::All) => Pos::All,
        Positions::Named(NamedPositions::Prompt) => Pos::Prompt,
        Positions::Named(NamedPositions::Generated) => Pos::Generated,
        Positions::List(v) => Pos::List(v.clone()),
        Positions::Range { start, end } => Pos::Range(*start, *end),
    }
}

/// The last-axis size of a hook point's values.
fn width(spec: &ModelSpec, site: Site) -> Option<usize> {
    match site {
        Site::Q | Site::K | Site::V | Site::QNorm | Site::KNorm | Site::RotQ | Site::RotK | Site::Z => Some(spec.d_head),
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => Some(spec.d_mlp),
        Site::AttnScores | Site::Pattern => None,
        _ => Some(spec.d_model),
    }
}

/// Lowers a document for export. Errors name the intervention and its op.
pub fn plan(doc: &Document, spec: &ModelSpec) -> Result<Plan, String> {
    if doc.version != scalpel_types::VERSION {
        return Err(format!(
            "document version {} is not one this exporter knows ({})",
            doc.version,
            scalpel_types::VERSION
        ));
    }
    let mut steps = Vec::new();
    let mut disabled = Vec::new();
    for (i, iv) in doc.interventions.iter().enumerate() {
        let name = op_name(&iv.op);
        if !iv.enabled {
            disabled.push((i, name.to_owned()));
            continue;
        }
        let at = |m: String| format!("intervention {i} ({name}): {m}");
        let op = step_op(iv).map_err(at)?;
        let hook = iv.hook.as_deref().ok_or_else(|| at("no 'hook'".into()))?;
        for point in points(hook, spec).map_err(at)? {
            check_sizes(&op, point, spec).map_err(at)?;
            if let Some(heads) = &iv.heads {
                let n = match point.site {
                    Site::K | Site::V | Site::RotK | Site::KNorm => spec.n_kv_heads,
                    s if s.head_axis().is_some() => spec.n_heads,
                    _ => return Err(at(format!("'heads' is given but '{}' is not a per-head hook", point.name()))),
                };
                if let Some(h) = heads.iter().find(|&&h| h >= n) {
                    return Err(at(format!("head {h} is out of range: '{}' has {n} heads", point.name())));
                }
            }
            if let (Some(neurons), Some(w)) = (&iv.neurons, width(spec, point.site)) {
                if let Some(u) = neurons.iter().find(|&&u| u >= w) {
                    return Err(at(format!("neuron {u} is out of range: '{}' has {w} units", point.name())));
                }
            }
            if matches!(op, StepOp::Knockout { .. }) && !matches!(point.site, Site::AttnScores | Site::Pattern) {
                return Err(at(format!(
                    "knockout applies to attn.hook_attn_scores or attn.hook_pattern, not '{}'",
                    point.name()
                )));
            }
            steps.push(Step {
                index: i,
                point,
                positions: pos(&iv.positions),
                heads: iv.heads.clone(),
                neurons: iv.neurons.clone(),
                op: op.clone(),
            });
        }
    }
    Ok(Plan { steps, disabled })
}

fn points(hook: &str, spec: &ModelSpec) -> Result<Vec<HookPoint>, String> {
    let layout = Layout(spec);
    if let Some(suffix) = hook.strip_prefix("blocks.*.") {
        (0..spec.n_layers)
            .map(|l| HookPoint::parse(&format!("blocks.{l}.{suffix}"), &layout))
            .collect()
    } else {
        Ok(vec![HookPoint::parse(hook, &layout)?])
    }
}

fn literal<'a>(v: &'a Vector, field: &str) -> Result<&'a [f32], String> {
    match v {
        Vector::Values(x) => Ok(x),
        Vector::From(_) => Err(format!(
            "field '{field}' is computed from model runs; resolve it first (`scalpel export --model ...` computes it with the engine)"
        )),
    }
}

fn step_op(iv: &Intervention) -> Result<StepOp, String> {
    Ok(match &iv.op {
        Op::Add { vector, scale } => StepOp::Add { vector: literal(vector, "vector")?.to_vec(), scale: *scale },
        Op::Scale { factor } => StepOp::Scale { factor: *factor },
        Op::Zero => StepOp::Zero,
        Op::Mean { over } => StepOp::Mean { over: over.clone() },
        Op::Patch { source } => StepOp::Patch { source: source.clone() },
        Op::ProjectOut { direction } => StepOp::ProjectOut { direction: literal(direction, "direction")?.to_vec() },
        Op::SetProjection { direction, value, cap, source } => {
            let n = [value.is_some(), cap.is_some(), source.is_some()].iter().filter(|x| **x).count();
            if n != 1 {
                return Err("give exactly one of 'value', 'cap', 'source'".into());
            }
            StepOp::SetProjection {
                direction: literal(direction, "direction")?.to_vec(),
                value: *value,
                cap: *cap,
                source: source.clone(),
            }
        }
        Op::Knockout { keys } => StepOp::Knockout { keys: pos(keys) },
        Op::KvAdd { .. } => {
            return Err("has no export: it edits the KV cache once, between the prompt's last two passes, which a hook on a forward pass cannot express".into())
        }
        Op::LowRank { .. } => return Err("has no export: it edits the weights (rank-k SVD), not an activation".into()),
        Op::Insert { .. } => return Err("has no export: it forces text into the generation loop".into()),
        Op::Conditional { .. } => {
            return Err("has no export: it monitors a projection token by token and can backtrack the generation".into())
        }
        Op::SaeClamp { .. } => return Err("has no export: it needs the SAE loaded beside the document".into()),
    })
}

fn check_sizes(op: &StepOp, point: HookPoint, spec: &ModelSpec) -> Result<(), String> {
    let v = match op {
        StepOp::Add { vector, .. } => vector,
        StepOp::ProjectOut { direction } | StepOp::SetProjection { direction, .. } => direction,
        _ => return Ok(()),
    };
    let Some(w) = width(spec, point.site) else {
        return Err(format!("'{}' takes no vector or direction", point.name()));
    };
    if v.len() != w {
        return Err(format!("the vector has {} values; '{}' has {w}", v.len(), point.name()));
    }
    if let Some(j) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("the vector has a non-finite value at index {j}"));
    }
    Ok(())
}
