use web_time::Instant;

use candle_core::Tensor;
use scalpel_engine::{
    Error, GenerateOptions, Hook, HookCtx, HookList, HookPoint, KvCache, Logits, Model, Result, Sampler, Site,
};
use scalpel_types::readouts::*;

use super::*;

/// The width of the last axis of a hook's value, for hooks whose value is
/// `[batch, pos, n]`; `None` for per-head hooks and attention scores/patterns.
pub fn hook_width(model: &Model, point: HookPoint) -> Option<usize> {
    let cfg = &model.config;
    match point.site {
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => Some(cfg.d_mlp),
        s if s.head_axis().is_some() => None,
        _ => Some(cfg.d_model),
    }
}

/// A hook that records each position's projection onto a direction at one
/// hook point (batch item 0), during a forward pass or KV-cached generation
/// (positions come from `HookCtx::start_pos`). When a position is seen again
/// (after a rollback of the KV cache) the readings from it on are replaced.
pub struct ProjectionMonitor {
    point: HookPoint,
    unit: Vec<f64>,
    pub direction_norm: f32,
    pub readings: Vec<Projection>,
}

impl ProjectionMonitor {
    pub fn new(model: &Model, point: HookPoint, direction: &[f32]) -> Result<Self> {
        let width = hook_width(model, point).ok_or_else(|| {
            Error::input(format!(
                "hook '{}' is per head or per key; monitor a [pos, d] hook such as blocks.L.hook_resid_post, \
                 blocks.L.hook_attn_out or blocks.L.mlp.hook_post",
                point.name()
            ))
        })?;
        if direction.len() != width {
            return Err(Error::input(format!(
                "the direction has {} numbers but '{}' has width {width}",
                direction.len(),
                point.name()
            )));
        }
        if let Some(i) = direction.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!("the direction's entry {i} is {} (not a finite number)", direction[i])));
        }
        let norm = direction.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::input("the direction is all zeros"));
        }
        Ok(ProjectionMonitor {
            point,
            unit: direction.iter().map(|&x| x as f64 / norm).collect(),
            direction_norm: norm as f32,
            readings: Vec::new(),
        })
    }
}

impl Hook for ProjectionMonitor {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let v: Vec<Vec<f32>> = value.get(0)?.to_vec2()?;
        self.readings.retain(|r| r.position < ctx.start_pos);
        for (i, row) in v.iter().enumerate() {
            let projection = dot(row, &self.unit);
            let norm = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            self.readings.push(Projection {
                position: ctx.start_pos + i,
                projection: projection as f32,
                norm: norm as f32,
                cosine: if norm > 0.0 { (projection / norm) as f32 } else { 0.0 },
            });
        }
        Ok(None)
    }
}

/// Generates from `prompt` (KV cache; the engine's sampler, so the same ids as
/// `scalpel_engine::generate` for the same options) and reports every
/// token's projection onto `direction` at `hook`. The last generated token is
/// run through the model once more (its logits unused) so it has a reading
/// too. `extra` hooks (e.g. steering) run before the reading.
pub fn monitor(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    hook: &str,
    direction: &[f32],
    extra: Option<&mut dyn Hook>,
) -> Result<MonitorResult> {
    let t0 = Instant::now();
    check_ids(model, prompt)?;
    opts.validate().map_err(Error::Input)?;
    let point = model.hook_point(hook)?;
    let mut mon = ProjectionMonitor::new(model, point, direction)?;
    let n_ctx = model.config.n_ctx;
    if prompt.len() > n_ctx {
        return Err(Error::input(format!("the prompt has {} tokens; the context length is {n_ctx}", prompt.len())));
    }
    let mut generated = Vec::new();
    {
        let mut list = HookList::new();
        if let Some(e) = extra {
            list.push(e);
        }
        list.push(&mut mon);
        let mut cache = KvCache::new(&model.config);
        let mut sampler = Sampler::new(opts);
        let budget = opts.max_new_tokens.min(n_ctx - prompt.len());
        let mut input = prompt.to_vec();
        loop {
            let logits = model.forward(&model.ids_tensor(&input)?, Some(&mut cache), Some(&mut list), Logits::Last)?;
            if generated.len() >= budget || generated.last().is_some_and(|&id| opts.stop_at_eos && model.tokenizer().is_eos(id)) {
                break;
            }
            let next = sampler.sample(&logits.flatten_all()?.to_vec1()?);
            generated.push(next);
            if cache.len() + 1 > n_ctx {
                break; // no room to read the last token
            }
            input = vec![next];
        }
    }
    let all: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
    let tok = model.tokenizer();
    let rows: Vec<MonitorRow> = mon
        .readings
        .iter()
        .filter(|r| r.position < all.len())
        .map(|r| MonitorRow {
            position: r.position,
            id: all[r.position],
            token: tok.decode(&[all[r.position]]),
            generated: r.position >= prompt.len(),
            projection: r.projection,
            norm: r.norm,
            cosine: r.cosine,
        })
        .collect();
    let mean = |gen: bool| -> Option<f32> {
        let v: Vec<f64> = rows.iter().filter(|r| r.generated == gen).map(|r| r.projection as f64).collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64) as f32)
    };
    Ok(MonitorResult {
        hook: point.name(),
        direction_norm: mon.direction_norm,
        prompt_len: prompt.len(),
        text: tok.decode(&generated),
        generated_ids: generated,
        mean_prompt: mean(false).unwrap_or(0.0),
        mean_generated: mean(true),
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The value of a `[pos, d]` hook at one position of a prompt (for building a
/// direction from a prompt pair: `read_vector(plus) − read_vector(minus)`).
pub fn read_vector(model: &Model, ids: &[u32], hook: &str, position: i64) -> Result<Vec<f32>> {
    let point = model.hook_point(hook)?;
    if hook_width(model, point).is_none() {
        return Err(Error::input(format!("hook '{hook}' is per head or per key; read a [pos, d] hook")));
    }
    let pos = resolve_position(position, ids.len())?;
    let (_, cache) = run_cached(model, ids, &[point], None, Logits::Last)?;
    row_of(cached(&cache, point)?, pos)
}
