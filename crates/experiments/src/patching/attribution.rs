//! Attribution patching: the metric's gradient at every cell from one
//! backward pass, compared with the exact sweep.

use web_time::Instant;

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{
    ActivationCache, Hook, HookCtx, HookPoint, Model, Result,
};
use scalpel_types::patching::*;




use super::*;

/// Adds a zero `Var` at chosen points, so the backward pass yields the
/// metric's gradient with respect to each of those activations.
struct GradProbe {
    points: Vec<HookPoint>,
    taken: Vec<(HookPoint, candle_core::Var, Tensor)>,
}

impl Hook for GradProbe {
    fn wants(&self, point: HookPoint) -> bool {
        self.points.contains(&point)
    }
    fn call(&mut self, ctx: &HookCtx, x: &Tensor) -> Result<Option<Tensor>> {
        let zero = candle_core::Var::zeros(x.shape(), DType::F32, &Device::Cpu)?;
        let out = (x + zero.as_tensor())?;
        self.taken.push((ctx.point, zero, x.detach()));
        Ok(Some(out))
    }
}

/// Attribution patching (Nanda; Syed et al.): metric(patched) ≈
/// metric(base) + (source − base) · ∂metric/∂activation, with the gradient
/// from one backward pass through the base run. Needs f32 precision.
pub fn attribution(model: &mut Model, req: &PatchRequest) -> Result<AttributionResult> {
    let exact = sweep(model, &PatchRequest { strategy: Strategy::Fast, ..req.clone() }, &mut |_, _| true)?;
    let t0 = Instant::now();
    let (clean, corrupt) = prepare(model, req)?;
    let (base, source) = match req.direction {
        Direction::Denoise => (&corrupt, &clean),
        Direction::Noise => (&clean, &corrupt),
    };
    let cfg = model.config.clone();
    let points: Vec<HookPoint> = (0..cfg.n_layers).map(|l| HookPoint::block(l, req.site.site())).collect();
    // Source activations (no gradient needed).
    let mut acts = ActivationCache::new(points.iter().copied());
    source.forward(model, None, &mut acts)?;
    model.set_differentiable(true)?;
    let mut probe = GradProbe { points: points.clone(), taken: Vec::new() };
    let logits = base.forward(model, None, &mut probe);
    model.set_differentiable(false)?;
    let row = logits?.flatten_all()?;
    let (a, w) = (req.answer as usize, req.wrong as usize);
    let ld = (row.get(a)? - row.get(w)?)?;
    let metric = match req.metric {
        Metric::LogitDiff => ld,
        Metric::LogitDiffNorm => {
            let span = (exact.clean_ld - exact.corrupt_ld) as f64;
            ld.affine(1.0 / span, -(exact.corrupt_ld as f64) / span)?
        }
        Metric::Prob => candle_nn_softmax(&row)?.get(a)?,
        Metric::Kl => {
            let lp = log_softmax_t(&row)?;
            let clean_lp = Tensor::new(exact.clean_logprobs.as_slice(), &Device::Cpu)?;
            (clean_lp.exp()? * (clean_lp - lp)?)?.sum_all()?
        }
    };
    let base_value = metric.to_scalar::<f32>()?;
    let grads = metric.backward()?;
    let mut values = vec![vec![0f32; exact.cols]; exact.rows];
    for (point, var, base_val) in &probe.taken {
        let l = point.layer.expect("block point");
        let g = grads.get(var.as_tensor()).cloned().unwrap_or(var.as_tensor().zeros_like()?);
        let delta = (acts.get(point).expect("cached") - base_val)?;
        let prod = (g * delta)?.squeeze(0)?; // [t, ...] or [t, h, d]
        // (row within the layer, values along the columns)
        let per_row: Vec<Vec<f32>> = match req.site {
            PatchSite::HeadZ => vec![prod.sum(2)?.sum(0)?.to_vec1()?],
            PatchSite::HeadZPos => prod.sum(2)?.t()?.to_vec2()?, // [h, t]
            _ => vec![prod.flatten_from(1)?.sum(1)?.to_vec1()?],
        };
        let rows_per_layer = per_row.len();
        for (r, row) in per_row.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                values[l * rows_per_layer + r][c] = base_value + v;
            }
        }
    }
    let attribution_seconds = t0.elapsed().as_secs_f64();
    let correlation = pearson(values.iter().flatten().copied(), exact.values.iter().flatten().copied());
    let estimate = PatchResult { values, seconds: attribution_seconds, computed_cells: 0, ..exact.clone() };
    Ok(AttributionResult { estimate, exact, correlation, attribution_seconds })
}

fn candle_nn_softmax(x: &Tensor) -> Result<Tensor> {
    let lp = log_softmax_t(x)?;
    Ok(lp.exp()?)
}

fn log_softmax_t(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(0)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(0)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn pearson(a: impl Iterator<Item = f32>, b: impl Iterator<Item = f32>) -> f64 {
    let pairs: Vec<(f64, f64)> = a.zip(b).map(|(x, y)| (x as f64, y as f64)).collect();
    let n = pairs.len() as f64;
    let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
    let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
    let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return f64::NAN;
    }
    cov / (va * vb).sqrt()
}
