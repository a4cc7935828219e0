//! The vectors and source runs a document asks for, computed with the
//! model: literal numbers, `prompt_diff` (ActAdd), `mean_diff` (CAA), `pca`
//! (RepE), and the activations of a `source` prompt (patching).

use std::collections::HashMap;

use scalpel_engine::{HookPoint, Model, Tensor};
use scalpel_types::document::{Document, Intervention, Op, Vector, VectorSource};

use crate::context::{check_finite, check_stop, each_on_threads, never, Cx, Stop};
use crate::Res;
use crate::select::resolve_pos;

/// Runs `prompt` once (after asking `stop`) and returns the value at each
/// point, batch axis removed: one forward pass however many points.
pub(crate) fn run_prompt(model: &Model, stop: Stop, prompt: &str, points: &[HookPoint]) -> Res<HashMap<HookPoint, Tensor>> {
    check_stop(stop)?;
    forward_prompt(model, prompt, points)
}

/// `run_prompt` of each prompt, in order, several at once
/// ([`each_on_threads`]; `stop` asked before each group).
pub(crate) fn run_prompts<S: AsRef<str> + Sync>(model: &Model, stop: Stop, prompts: &[S], points: &[HookPoint]) -> Res<Vec<Res<HashMap<HookPoint, Tensor>>>> {
    each_on_threads(stop, prompts, |s| forward_prompt(model, s.as_ref(), points))
}

fn forward_prompt(model: &Model, prompt: &str, points: &[HookPoint]) -> Res<HashMap<HookPoint, Tensor>> {
    let ids = model.tokenizer().encode(prompt).map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err(format!("prompt {prompt:?} tokenizes to nothing"));
    }
    let (_, cache) = model.run_with_cache(&ids, points).map_err(|e| e.to_string())?;
    Ok(points.iter().map(|p| (*p, cache.get(p).expect("requested point is cached").clone())).collect())
}

/// The value at `point` (batch axis removed) in a run on each prompt, in order.
fn activations<S: AsRef<str> + Sync>(model: &Model, stop: Stop, prompts: &[S], point: HookPoint) -> Res<Vec<Res<Tensor>>> {
    Ok(run_prompts(model, stop, prompts, &[point])?.into_iter().map(|r| r.map(|mut m| m.remove(&point).expect("one point"))).collect())
}

fn at_position(i: usize, act: &Tensor, pos: i64, warnings: &mut Vec<String>, what: &str) -> Res<Tensor> {
    let len = act.dim(0).map_err(|e| e.to_string())?;
    let p = resolve_pos(i, "position", pos, len)?;
    if p >= len {
        return Err(format!("intervention {i}: position {pos} is past the end of {what} ({len} tokens)"));
    }
    if p == 0 {
        warnings.push(format!(
            "intervention {i}: the vector is read at position 0, usually the attention sink (its norm can be 10x the others'); prefer position -1"
        ));
    }
    act.get(p).map_err(|e| e.to_string())
}

impl Cx<'_> {
    /// The numbers of `v` (field `field` of intervention `i`), read at the
    /// item's hook unless the source names its own.
    pub(crate) fn vector(&mut self, i: usize, field: &str, v: &Vector, hook: &[HookPoint]) -> Res<Vec<f32>> {
        build_vector(self.model, self.stop, i, field, v, hook, &mut self.warnings)
    }

    /// The values at `points` in a run on `source`, which must have the prompt's
    /// token length (`patch`, `set_projection` with `source`): `[1, t, ...]` each.
    pub(crate) fn source_run(&self, i: usize, source: &str, points: &[HookPoint]) -> Res<HashMap<HookPoint, Tensor>> {
        let ids = self.model.tokenizer().encode(source).map_err(|e| e.to_string())?;
        if ids.len() != self.prompt_len {
            return Err(format!(
                "intervention {i}: field 'source' has {} tokens but the prompt has {}; patching needs equal lengths",
                ids.len(),
                self.prompt_len
            ));
        }
        let run = run_prompt(self.model, self.stop, source, points)?;
        run.into_iter().map(|(p, t)| Ok((p, t.unsqueeze(0).map_err(|e| e.to_string())?))).collect()
    }
}

fn build_vector(model: &Model, stop: Stop, i: usize, field: &str, v: &Vector, hook: &[HookPoint], warnings: &mut Vec<String>) -> Res<Vec<f32>> {
    let source_point = |h: &Option<String>| -> Res<HookPoint> {
        match h {
            Some(name) => model.hook_point(name).map_err(|e| format!("intervention {i}: field '{field}.hook': {e}")),
            None if hook.len() == 1 => Ok(hook[0]),
            None => Err(format!("intervention {i}: field '{field}.hook' is required when 'hook' names every layer")),
        }
    };
    let flat = |t: Tensor| -> Res<Vec<f32>> { t.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string()) };
    match v {
        Vector::Values(x) => {
            check_finite(i, field, x)?;
            Ok(x.clone())
        }
        Vector::From(VectorSource::PromptDiff { plus, minus, hook: h, position }) => {
            let p = source_point(h)?;
            let mut runs = activations(model, stop, &[plus, minus], p)?.into_iter();
            let mut next = |name: &str| runs.next().expect("two runs").map_err(|e| format!("intervention {i}: field '{field}.{name}': {e}"));
            let (plus, minus) = (next("plus")?, next("minus")?);
            let a = at_position(i, &plus, *position, warnings, "'plus'")?;
            let b = at_position(i, &minus, *position, warnings, "'minus'")?;
            flat((a - b).map_err(|e| e.to_string())?)
        }
        Vector::From(VectorSource::MeanDiff { positive, negative, hook: h, position }) => {
            let p = source_point(h)?;
            if positive.is_empty() || negative.is_empty() {
                return Err(format!("intervention {i}: field '{field}': 'positive' and 'negative' must each hold at least one prompt"));
            }
            let mut mean = |set: &[String], name: &str| -> Res<Tensor> {
                let mut acc: Option<Tensor> = None;
                // Summed in prompt order, whatever ran where.
                for act in activations(model, stop, set, p)? {
                    let act = act.map_err(|e| format!("intervention {i}: field '{field}.{}': {e}", name.trim_matches('\'')))?;
                    let v = at_position(i, &act, *position, warnings, name)?;
                    acc = Some(match acc { None => v, Some(a) => (a + v).map_err(|e| e.to_string())? });
                }
                (acc.expect("non-empty") / set.len() as f64).map_err(|e| e.to_string())
            };
            let pos = mean(positive, "'positive'")?;
            let neg = mean(negative, "'negative'")?;
            flat((pos - neg).map_err(|e| e.to_string())?)
        }
        Vector::From(VectorSource::Pca { positive, negative, hook: h, position, center }) => {
            let p = source_point(h)?;
            let opts = super::MethodOptions { center: *center, ..Default::default() };
            let acts = super::collect(model, positive, negative, &[p], super::Pool::At(*position), stop)
                .map_err(|e| format!("intervention {i}: field '{field}': {e}"))?;
            let (pos, neg) = acts.at(0, None);
            let (v, _) = super::extract_at(super::Method::Pca, &pos, &neg, &opts).map_err(|e| format!("intervention {i}: field '{field}': {e}"))?;
            let w = acts.warnings;
            warnings.extend(w.into_iter().map(|w| format!("intervention {i}: {w}")));
            Ok(v)
        }
        Vector::From(src @ (VectorSource::Sae { .. } | VectorSource::File { .. })) => Err(format!(
            "intervention {i}: field '{field}': vector source '{}' must be resolved first (vectors::resolve; the CLI does it, with --sae DIR for SAEs)",
            if matches!(src, VectorSource::Sae { .. }) { "sae" } else { "file" }
        )),
    }
}

/// `v` scaled to unit length, as a tensor.
pub(crate) fn unit(i: usize, field: &str, v: Vec<f32>) -> Res<Tensor> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 {
        return Err(format!("intervention {i}: field '{field}' is the zero vector; a direction needs a non-zero norm"));
    }
    Tensor::new(v.iter().map(|x| (*x as f64 / n) as f32).collect::<Vec<_>>(), &scalpel_engine::Device::Cpu).map_err(|e| e.to_string())
}


/// The document with every vector and direction computed from prompts
/// (`prompt_diff`, `mean_diff`, `pca`) replaced by its numbers, as
/// compiling would compute them: for exporting the document to an engine
/// that cannot run these (`scalpel export`). `sae` and `file` sources must
/// be resolved first ([`super::resolve`]). Returns the warnings too.
pub fn literal_vectors(model: &Model, doc: &Document) -> Res<(Document, Vec<String>)> {
    fn walk(model: &Model, items: &mut [Intervention], prefix: &str, warnings: &mut Vec<String>) -> Res<()> {
        for (j, iv) in items.iter_mut().enumerate() {
            let points: Vec<HookPoint> = match iv.hook.as_deref() {
                Some(h) if h.starts_with("blocks.*.") => {
                    let suffix = &h["blocks.*.".len()..];
                    (0..model.config.n_layers).map(|l| model.hook_point(&format!("blocks.{l}.{suffix}"))).collect::<Result<_, _>>().map_err(|e| e.to_string())?
                }
                Some(h) => vec![model.hook_point(h).map_err(|e| format!("intervention {prefix}{j}: {e}"))?],
                None => Vec::new(),
            };
            let fix = |field: &str, v: &mut Vector, warnings: &mut Vec<String>| -> Res<()> {
                if matches!(v, Vector::From(_)) {
                    *v = Vector::Values(build_vector(model, &never, j, field, v, &points, warnings)?);
                }
                Ok(())
            };
            match &mut iv.op {
                Op::Add { vector, .. } | Op::KvAdd { vector, .. } => fix("vector", vector, warnings)?,
                Op::ProjectOut { direction } | Op::SetProjection { direction, .. } => fix("direction", direction, warnings)?,
                Op::Conditional { direction, then, .. } => {
                    fix("direction", direction, warnings)?;
                    walk(model, then, &format!("{prefix}{j}.then."), warnings)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
    let mut out = doc.clone();
    let mut warnings = Vec::new();
    walk(model, &mut out.interventions, "", &mut warnings)?;
    Ok((out, warnings))
}
