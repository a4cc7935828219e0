//! Hook points with TransformerLens names, and the callbacks that read or
//! rewrite them during a forward pass.
//!
//! Every tensor a hook sees has a leading batch dimension:
//! resid-like `[batch, pos, d_model]`, q/k/v/z `[batch, pos, head, d_head]`,
//! scores/pattern `[batch, head, q_pos, k_pos]`, mlp `[batch, pos, d_mlp]`.
//! With a KV cache, `pos` covers only the new tokens; `HookCtx::start_pos`
//! gives the absolute position of the first one, and k_pos in scores/pattern
//! spans every cached position.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;

use crate::config::{Config, PosEmbedding};
use crate::error::Result;

pub use scalpel_types::hooks::{HookLayout, HookPoint, Site};

impl HookLayout for Config {
    fn n_layers(&self) -> usize {
        self.n_layers
    }
    /// Whether this model computes the site at all.
    fn has_site(&self, site: Site) -> bool {
        match site {
            Site::PosEmbed => self.pos_embedding == PosEmbedding::Learned,
            Site::RotQ | Site::RotK => self.pos_embedding == PosEmbedding::Rope,
            Site::MlpPreLinear => self.gated_mlp,
            Site::QNorm | Site::KNorm => self.extra.qk_norm,
            Site::Ln1Post | Site::Ln2Post => self.extra.post_norms,
            Site::ResidMid => !self.extra.parallel_residual,
            _ => true,
        }
    }
    fn arch_name(&self) -> &str {
        self.arch.name()
    }
}

/// What a hook callback knows about the value it is given.
#[derive(Clone, Copy, Debug)]
pub struct HookCtx {
    pub point: HookPoint,
    /// Absolute position of the first new token in this forward pass.
    pub start_pos: usize,
    /// Number of new tokens in this forward pass.
    pub seq_len: usize,
}

/// A callback at hook points. `wants` is asked before each site is visited,
/// so a hook that wants nothing costs one call per site and no tensor work.
pub trait Hook {
    fn wants(&self, point: HookPoint) -> bool;
    /// Read `value` and optionally return a replacement of the same shape.
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>>;
}

impl<H: Hook + ?Sized> Hook for &mut H {
    fn wants(&self, point: HookPoint) -> bool {
        (**self).wants(point)
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        (**self).call(ctx, value)
    }
}

/// Several hooks applied in order; each sees the previous one's output.
#[derive(Default)]
pub struct HookList<'a> {
    pub hooks: Vec<Box<dyn Hook + 'a>>,
}

impl<'a> HookList<'a> {
    pub fn new() -> Self {
        HookList { hooks: Vec::new() }
    }
    pub fn push(&mut self, h: impl Hook + 'a) {
        self.hooks.push(Box::new(h));
    }
}

impl Hook for HookList<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        self.hooks.iter().any(|h| h.wants(point))
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let mut current: Option<Tensor> = None;
        for h in self.hooks.iter_mut() {
            if !h.wants(ctx.point) {
                continue;
            }
            let v = current.as_ref().unwrap_or(value);
            if let Some(new) = h.call(ctx, v)? {
                current = Some(new);
            }
        }
        Ok(current)
    }
}

/// A closure at a fixed set of points.
pub struct FnHook<F> {
    points: HashSet<HookPoint>,
    f: F,
}

impl<F> FnHook<F>
where
    F: FnMut(&HookCtx, &Tensor) -> Result<Option<Tensor>>,
{
    pub fn new(points: impl IntoIterator<Item = HookPoint>, f: F) -> Self {
        FnHook { points: points.into_iter().collect(), f }
    }
}

impl<F> Hook for FnHook<F>
where
    F: FnMut(&HookCtx, &Tensor) -> Result<Option<Tensor>>,
{
    fn wants(&self, point: HookPoint) -> bool {
        self.points.contains(&point)
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        (self.f)(ctx, value)
    }
}

/// Records the values at chosen hook points (only those), like
/// TransformerLens's `run_with_cache(names_filter=...)`. With a KV cache the
/// pieces of successive forward passes are concatenated along `pos`
/// (along `q_pos` for scores/pattern, which then keep their last k width).
#[derive(Default)]
pub struct ActivationCache {
    wanted: HashSet<HookPoint>,
    pub values: HashMap<HookPoint, Tensor>,
}

impl ActivationCache {
    pub fn new(points: impl IntoIterator<Item = HookPoint>) -> Self {
        ActivationCache { wanted: points.into_iter().collect(), values: HashMap::new() }
    }
    pub fn get(&self, point: &HookPoint) -> Option<&Tensor> {
        self.values.get(point)
    }
}

impl Hook for ActivationCache {
    fn wants(&self, point: HookPoint) -> bool {
        self.wanted.contains(&point)
    }
    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> Result<Option<Tensor>> {
        let v = value.copy()?;
        let merged = match self.values.remove(&ctx.point) {
            None => v,
            Some(prev) => {
                let axis = if ctx.point.site.head_axis() == Some(1) { 2 } else { 1 };
                if ctx.point.site.head_axis() == Some(1) {
                    // scores/pattern grow along k too: pad the older rows.
                    let k_new = v.dim(3)?;
                    let k_old = prev.dim(3)?;
                    let fill = if ctx.point.site == Site::AttnScores { f32::NEG_INFINITY } else { 0.0 };
                    let prev = if k_new > k_old {
                        let (b, h, q, _) = prev.dims4()?;
                        let pad = Tensor::full(fill, (b, h, q, k_new - k_old), prev.device())?;
                        Tensor::cat(&[&prev, &pad], 3)?
                    } else {
                        prev
                    };
                    Tensor::cat(&[&prev, &v], axis)?
                } else {
                    Tensor::cat(&[&prev, &v], axis)?
                }
            }
        };
        self.values.insert(ctx.point, merged);
        Ok(None)
    }
}
