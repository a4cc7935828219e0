//! Activation patching sweeps (interchange interventions).
//!
//! A run on a *base* input gets one activation replaced by its value on a
//! *source* input; a metric on the last position's logits says how much of
//! the clean behaviour that activation carries. Denoising patches clean into
//! corrupted; noising patches corrupted into clean.
//!
//! The fast strategy is exact and relies on causality: a patch at layer l,
//! position p changes nothing before layer l or before position p. So for
//! each layer it starts from the base run's residual stream at that layer,
//! reuses the base run's keys and values for the unchanged prefix, runs only
//! the positions from the first patched one on, and batches every cell of the
//! layer into one pass (cells sorted by their first differing position and
//! split into batches of at most `BATCH_TOKENS` rerun positions). A cell
//! whose source and base values are bitwise equal (e.g. positions before the
//! first differing token) is the base run itself and is not recomputed.
//! Families: a position of a residual-width hook (layer × position), a head
//! of `attn.hook_z` over all positions (layer × head), or a head at one
//! position (`head_z_pos`: rows layer × head, columns positions). The naive strategy runs one full forward per cell,
//! like TransformerLens's patching helpers; both give the same matrix.

mod attribution;
mod sweep;

pub use attribution::attribution;
pub use scalpel_types::patching::*;
pub use sweep::sweep;


use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use scalpel_engine::{log_softmax, 
    Error, Hook, HookCtx, HookList, HookPoint, KvCache, Logits, Model, Result, Site,
};



#[derive(Clone, Debug)]
pub struct PatchRequest {
    pub clean: Vec<u32>,
    pub corruption: Corruption,
    pub answer: u32,
    pub wrong: u32,
    pub site: PatchSite,
    pub metric: Metric,
    pub strategy: Strategy,
    pub direction: Direction,
}

/// Adds fixed noise to `hook_embed` at chosen positions.
struct EmbedNoise {
    noise: Tensor,
}

impl Hook for EmbedNoise {
    fn wants(&self, point: HookPoint) -> bool {
        point.site == Site::Embed
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let n = self.noise.narrow(0, ctx.start_pos, ctx.seq_len)?;
        Ok(Some(value.broadcast_add(&n)?))
    }
}

struct Run {
    ids: Vec<u32>,
    noise: Option<Tensor>,
}

impl Run {
    /// A forward pass on this run's ids, with its embedding noise, then `extra`;
    /// last-position logits.
    fn forward(&self, model: &Model, kv: Option<&mut KvCache>, extra: &mut dyn Hook) -> Result<Tensor> {
        let mut noise = self.noise.as_ref().map(|n| EmbedNoise { noise: n.clone() });
        let mut hooks = HookList::new();
        if let Some(n) = noise.as_mut() {
            hooks.push(n);
        }
        hooks.push(extra);
        model.forward(&model.ids_tensor(&self.ids)?, kv, Some(&mut hooks), Logits::Last)
    }
}

fn embed_std(model: &Model) -> Result<f32> {
    // The token embeddings are what `hook_embed` reads for every id; sample them.
    let vocab = model.config.d_vocab as u32;
    let ids: Vec<u32> = (0..vocab).step_by((vocab as usize / 2048).max(1)).collect();
    let (_, cache) = model.run_with_cache(&ids[..ids.len().min(model.config.n_ctx)], &[HookPoint::global(Site::Embed)])?;
    let e = cache.get(&HookPoint::global(Site::Embed)).expect("cached").flatten_all()?;
    let v: Vec<f32> = e.to_vec1()?;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
    Ok(var.sqrt() as f32)
}

fn gaussian_noise(t: usize, d: usize, positions: &[usize], std: f32, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0f32; t * d];
    for &p in positions {
        for x in &mut data[p * d..(p + 1) * d] {
            // Box–Muller: deterministic across platforms for a seed.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            *x = ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std;
        }
    }
    Ok(Tensor::from_vec(data, (t, d), &Device::Cpu)?)
}

/// Computes the metric for each row of last-position logits `[b, vocab]`.
struct Scorer {
    metric: Metric,
    answer: usize,
    wrong: usize,
    ld_clean: f32,
    ld_corrupt: f32,
    clean_logprobs: Vec<f32>,
}

impl Scorer {
    fn score(&self, row: &[f32]) -> f32 {
        let ld = row[self.answer] - row[self.wrong];
        match self.metric {
            Metric::LogitDiff => ld,
            Metric::LogitDiffNorm => (ld - self.ld_corrupt) / (self.ld_clean - self.ld_corrupt),
            Metric::Prob => log_softmax(row)[self.answer].exp(),
            Metric::Kl => scalpel_engine::kl_logprobs(&self.clean_logprobs, &log_softmax(row)) as f32,
        }
    }
}

fn last_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (b, t, v) = logits.dims3()?;
    Ok(logits.narrow(1, t - 1, 1)?.reshape((b, v))?.to_vec2()?)
}

/// Checks the request and builds the clean and corrupted runs.
fn prepare(model: &Model, req: &PatchRequest) -> Result<(Run, Run)> {
    let cfg = &model.config;
    let t = req.clean.len();
    if t == 0 {
        return Err(Error::input("empty clean prompt"));
    }
    for (name, id) in [("answer", req.answer), ("wrong", req.wrong)] {
        if id as usize >= cfg.d_vocab {
            return Err(Error::input(format!("{name} token id {id} is out of range (vocabulary {})", cfg.d_vocab)));
        }
    }
    if req.answer == req.wrong && matches!(req.metric, Metric::LogitDiff | Metric::LogitDiffNorm) {
        return Err(Error::input("answer and wrong are the same token: the logit difference is always 0"));
    }
    let clean = Run { ids: req.clean.clone(), noise: None };
    let corrupt = match &req.corruption {
        Corruption::Prompt(ids) => {
            if ids.len() != t {
                return Err(Error::input(format!(
                    "the corrupted prompt has {} tokens but the clean one has {t}; patching needs equal token lengths",
                    ids.len()
                )));
            }
            Run { ids: ids.clone(), noise: None }
        }
        Corruption::Noise { positions, std, seed } => {
            if positions.is_empty() {
                return Err(Error::input("noise corruption needs at least one position"));
            }
            if let Some(&p) = positions.iter().find(|&&p| p >= t) {
                return Err(Error::input(format!("noise position {p} is out of range for a {t}-token prompt")));
            }
            let std = match std {
                Some(s) if s.is_finite() && *s >= 0.0 => *s,
                Some(s) => return Err(Error::input(format!("noise std {s} must be a finite number >= 0"))),
                None => 3.0 * embed_std(model)?,
            };
            Run { ids: req.clean.clone(), noise: Some(gaussian_noise(t, cfg.d_model, positions, std, *seed)?) }
        }
    };
    Ok((clean, corrupt))
}
