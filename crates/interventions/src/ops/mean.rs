//! `mean`: mean-ablation. Replaces the selected units by their mean over
//! the running prompt's positions, or over every token of a prompt set
//! (`over`).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use scalpel_engine::{HookCtx, HookPoint, Tensor};
use scalpel_types::document::{Intervention, Op};
use scalpel_types::EditOp;

use super::{no_check, Columns, Compiled, HookOp, OpDef};
use crate::context::Cx;
use crate::Res;
use crate::select::blend;
use crate::vectors::sources::run_prompts;

pub(crate) const DEF: OpDef = OpDef { name: "mean", fields: &["over"], check: no_check, compile };

enum Mean {
    /// Over this prompt's positions, filled on the first pass that sees
    /// them. A pass over the prompt and generated tokens together (a
    /// comparison's scoring pass) takes the mean over the first
    /// `prompt_len` positions only, as generation did: the same numbers
    /// either way.
    OfPrompt { index: usize, prompt_len: usize, means: HashMap<HookPoint, Tensor> },
    /// Over a prompt set, per point (`[1, 1, ...]`, broadcast over positions).
    Over(HashMap<HookPoint, Tensor>),
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Mean { over } = &iv.op else { unreachable!("registered for mean") };
    let target = cx.target(i, iv)?;
    let mean = match over {
        None => Mean::OfPrompt { index: i, prompt_len: cx.prompt_len, means: HashMap::new() },
        Some(prompts) => Mean::Over(over_prompts(cx, i, prompts, &target.points)?),
    };
    Ok(Compiled::Hook(target, Box::new(mean)))
}

/// The pooled mean over every token of every prompt, per point: one
/// forward pass per prompt reads every point (`blocks.*` included).
fn over_prompts(cx: &Cx, i: usize, prompts: &[String], points: &[HookPoint]) -> Res<HashMap<HookPoint, Tensor>> {
    if prompts.is_empty() {
        return Err(format!("intervention {i}: field 'over' is an empty prompt set"));
    }
    let err = |e: candle_core::Error| e.to_string();
    // Per point: the sum over tokens so far and the token count.
    let mut sums: HashMap<HookPoint, (Tensor, usize)> = HashMap::new();
    // Summed in prompt order, whatever ran where.
    for run in run_prompts(cx.model, cx.stop, prompts, points)? {
        let run = run.map_err(|e| format!("intervention {i}: field 'over': {e}"))?;
        for (p, a) in run {
            // The batch-free value: positions on axis pos_axis − 1.
            let pos_axis = p.site.pos_axis() - 1;
            let tokens = a.dim(pos_axis).map_err(err)?;
            let m = a.sum_keepdim(pos_axis).map_err(err)?;
            let next = match sums.remove(&p) {
                None => (m, tokens),
                Some((x, n)) => ((x + m).map_err(err)?, n + tokens),
            };
            sums.insert(p, next);
        }
    }
    let mut means = HashMap::new();
    for (p, (sum, tokens)) in sums {
        means.insert(p, (sum / tokens as f64).map_err(err)?.unsqueeze(0).map_err(err)?);
    }
    Ok(means)
}

impl HookOp for Mean {
    fn apply(&mut self, x: &Tensor, m: &Tensor, ctx: &HookCtx) -> scalpel_engine::Result<Option<Tensor>> {
        let mean = match self {
            Mean::Over(means) => &means[&ctx.point],
            Mean::OfPrompt { index, prompt_len, means } => {
                if let Entry::Vacant(e) = means.entry(ctx.point) {
                    if ctx.start_pos != 0 {
                        return Err(scalpel_engine::Error::input(format!(
                            "intervention {index}: 'mean' needs the whole prompt in one pass"
                        )));
                    }
                    let axis = ctx.point.site.pos_axis();
                    let seen = x.dim(axis)?;
                    let prompt = if *prompt_len > 0 { (*prompt_len).min(seen) } else { seen };
                    e.insert(x.narrow(axis, 0, prompt)?.mean_keepdim(axis)?);
                }
                &means[&ctx.point]
            }
        };
        Ok(Some(blend(x, m, mean)?))
    }

    fn reset(&mut self) {
        if let Mean::OfPrompt { means, .. } = self {
            means.clear();
        }
    }

    fn gpu_unsupported(&self) -> Option<&'static str> {
        matches!(self, Mean::OfPrompt { .. }).then_some("the mean is taken over the running prompt; 'over' a prompt set lowers")
    }

    fn lower(&self, point: HookPoint, cols: &[Columns], _: usize) -> Result<Vec<Vec<EditOp>>, String> {
        let Mean::Over(means) = self else { return Err(self.gpu_unsupported().unwrap_or_default().into()) };
        let mean: Vec<f32> = means[&point].flatten_all().and_then(|t| t.to_vec1()).map_err(|e| e.to_string())?;
        Ok(cols.iter().map(|c| vec![EditOp::Zero, EditOp::Add { v: mean[c.cols.clone()].to_vec(), alpha: 1.0 }]).collect())
    }
}
