//! llama.cpp control vectors: the GGUF layout (`direction.{k}` F32 tensors,
//! `general.architecture = controlvector`, `controlvector.model_hint`,
//! `controlvector.layer_count`) and its layer convention, and the export of
//! a pure residual-steering document as one.
//!
//! llama.cpp adds `direction.{k}` to the output of block `k` (its graph
//! calls `build_cvec(cur, il)` at the end of layer `il`), so `direction.{k}`
//! is `blocks.{k}.hook_resid_post` = `blocks.{k+1}.hook_resid_pre`; it
//! refuses `direction.0` (the loader starts at layer 1).

use scalpel_types::{HookPoint, Site};

use crate::plan::{Plan, Pos, StepOp};
use crate::ModelSpec;

/// A llama.cpp / repeng control vector: `direction.{k}` tensors, each added
/// to the output of block `k` (`blocks.{k}.hook_resid_post`).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlVector {
    pub model_hint: Option<String>,
    /// (k, values), sorted by k.
    pub directions: Vec<(usize, Vec<f32>)>,
}

/// The hook a control vector's `direction.{k}` is applied at.
pub fn control_hook(k: usize) -> String {
    format!("blocks.{k}.hook_resid_post")
}

/// The control-vector layer index `k` of a residual-stream hook point:
/// `blocks.{k}.hook_resid_post` → k, `blocks.{l}.hook_resid_pre` → l − 1.
pub fn control_layer(point: HookPoint) -> Result<usize, String> {
    match (point.site, point.layer) {
        (Site::ResidPost, Some(k)) => Ok(k),
        (Site::ResidPre, Some(l)) if l > 0 => Ok(l - 1),
        _ => Err(format!(
            "'{}' has no control-vector layer: control vectors are added to a block's output (blocks.K.hook_resid_post = blocks.K+1.hook_resid_pre)",
            point.name()
        )),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

const GGUF_ALIGN: usize = 32;

/// Writes a control vector as GGUF v3 (F32 tensors `direction.{k}`,
/// `general.architecture = controlvector`, `controlvector.model_hint`,
/// `controlvector.layer_count`), the layout repeng and llama.cpp write.
pub fn write_control_vector(cv: &ControlVector) -> Result<Vec<u8>, String> {
    if cv.directions.is_empty() {
        return Err("a control vector needs at least one direction".into());
    }
    let d = cv.directions[0].1.len();
    for (k, v) in &cv.directions {
        if v.is_empty() {
            return Err(format!("direction.{k} has no values"));
        }
        if v.len() != d {
            return Err(format!(
                "direction.{k} has {} values but direction.{} has {d}",
                v.len(),
                cv.directions[0].0
            ));
        }
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("direction.{k} has a non-finite value at index {j}"));
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(cv.directions.len() as u64).to_le_bytes());
    out.extend_from_slice(&3u64.to_le_bytes());
    put_str(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, "controlvector");
    put_str(&mut out, "controlvector.model_hint");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, cv.model_hint.as_deref().unwrap_or(""));
    put_str(&mut out, "controlvector.layer_count");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(cv.directions.len() as u32).to_le_bytes());
    let bytes_per = (d * 4).div_ceil(GGUF_ALIGN) * GGUF_ALIGN;
    for (i, (k, _)) in cv.directions.iter().enumerate() {
        put_str(&mut out, &format!("direction.{k}"));
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(d as u64).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend_from_slice(&((i * bytes_per) as u64).to_le_bytes());
    }
    out.resize(out.len().div_ceil(GGUF_ALIGN) * GGUF_ALIGN, 0);
    for (_, v) in &cv.directions {
        let start = out.len();
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.resize(start + bytes_per, 0);
    }
    Ok(out)
}

/// A pure residual-steering document: per block output `k` (sorted), the
/// vector to add, and one strength for all of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Steering {
    pub layers: Vec<(usize, Vec<f32>)>,
    pub scale: f32,
}

/// Checks that the document only adds vectors to the residual stream at
/// every position (what llama.cpp and vllm-lens can serve) and sums them per
/// block output. `target` names the target in errors. When every `add`
/// has the same scale it stays separate (the serving command carries it);
/// otherwise each vector is multiplied by its own and the scale is 1.
pub fn steering(plan: &Plan, target: &str) -> Result<Steering, String> {
    if plan.steps.is_empty() {
        return Err(format!("the document has no enabled intervention: nothing to export for {target}"));
    }
    let only = format!("{target} serves pure residual steering only ('add' at blocks.L.hook_resid_post or hook_resid_pre, positions \"all\", no heads or neurons)");
    let common = match &plan.steps[0].op {
        StepOp::Add { scale, .. } => *scale,
        _ => 1.0,
    };
    let same = plan
        .steps
        .iter()
        .all(|s| matches!(&s.op, StepOp::Add { scale, .. } if *scale == common))
        && common != 0.0;
    let mut layers: Vec<(usize, Vec<f32>)> = Vec::new();
    for st in &plan.steps {
        let at = |m: String| format!("intervention {} ({}) at '{}': {m}", st.index, st.op.name(), st.point.name());
        let StepOp::Add { vector, scale } = &st.op else {
            return Err(at(format!("'{}' is not an addition; {only}", st.op.name())));
        };
        if st.positions != Pos::All {
            return Err(at(format!("positions are not \"all\"; {only}")));
        }
        if st.heads.is_some() || st.neurons.is_some() {
            return Err(at(format!("it selects heads or neurons; {only}")));
        }
        if !matches!(st.point.site, Site::ResidPost | Site::ResidPre) {
            return Err(at(format!("not a residual-stream hook; {only}")));
        }
        let k = control_layer(st.point).map_err(at)?;
        let s = if same { 1.0 } else { *scale };
        match layers.iter_mut().find(|(kk, _)| *kk == k) {
            Some((_, acc)) => acc.iter_mut().zip(vector).for_each(|(a, b)| *a += s * b),
            None => layers.push((k, vector.iter().map(|b| s * b).collect())),
        }
    }
    layers.sort_by_key(|x| x.0);
    for (k, v) in &layers {
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "the vectors added at the output of block {k} sum to a non-finite value at index {j}"
            ));
        }
    }
    Ok(Steering {
        layers,
        scale: if same { common } else { 1.0 },
    })
}

/// llama.cpp's architecture names, for `controlvector.model_hint`.
pub fn model_hint(arch: &str) -> &str {
    match arch {
        "gpt_neox" => "gptneox",
        a => a,
    }
}

/// A control vector and how to serve it.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaCppExport {
    pub gguf: Vec<u8>,
    /// `llama-server -m MODEL --control-vector-scaled FILE SCALE`.
    pub command: String,
    /// What was left out (disabled interventions).
    pub notes: Vec<String>,
}

/// Exports a pure residual-steering document as a llama.cpp control vector.
/// `gguf_path` and `model_file` only go into the command line.
pub fn export(plan: &Plan, spec: &ModelSpec, gguf_path: &str, model_file: &str) -> Result<LlamaCppExport, String> {
    let st = steering(plan, "llama.cpp")?;
    if let Some((k, _)) = st.layers.iter().find(|(k, _)| *k == 0) {
        return Err(format!(
            "a vector is added at blocks.{k}.hook_resid_post (the output of block 0): llama.cpp rejects control-vector layer 0 (its loader starts at direction.1)"
        ));
    }
    let cv = ControlVector {
        model_hint: Some(model_hint(&spec.arch).to_owned()),
        directions: st.layers,
    };
    let gguf = write_control_vector(&cv)?;
    let command = format!(
        "llama-server -m {model_file} --control-vector-scaled {gguf_path} {}",
        crate::py::f(st.scale)
    );
    Ok(LlamaCppExport {
        gguf,
        command,
        notes: disabled_notes(plan),
    })
}

pub(crate) fn disabled_notes(plan: &Plan) -> Vec<String> {
    plan.disabled
        .iter()
        .map(|(i, op)| format!("intervention {i} ({op}) is disabled in the document and not exported"))
        .collect()
}
