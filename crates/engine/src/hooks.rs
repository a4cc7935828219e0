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
use crate::error::{Error, Result};

/// Where in a block (or outside the blocks) a hook sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    Embed,
    PosEmbed,
    ResidPre,
    Ln1Normalized,
    Q,
    K,
    V,
    RotQ,
    RotK,
    AttnScores,
    Pattern,
    Z,
    AttnOut,
    ResidMid,
    Ln2Normalized,
    MlpPre,
    MlpPreLinear,
    MlpPost,
    MlpOut,
    ResidPost,
    LnFinalNormalized,
}

impl Site {
    pub const ALL: [Site; 21] = [
        Site::Embed,
        Site::PosEmbed,
        Site::ResidPre,
        Site::Ln1Normalized,
        Site::Q,
        Site::K,
        Site::V,
        Site::RotQ,
        Site::RotK,
        Site::AttnScores,
        Site::Pattern,
        Site::Z,
        Site::AttnOut,
        Site::ResidMid,
        Site::Ln2Normalized,
        Site::MlpPre,
        Site::MlpPreLinear,
        Site::MlpPost,
        Site::MlpOut,
        Site::ResidPost,
        Site::LnFinalNormalized,
    ];

    /// The name inside `blocks.{l}.` (or the whole name for global sites).
    pub fn suffix(self) -> &'static str {
        match self {
            Site::Embed => "hook_embed",
            Site::PosEmbed => "hook_pos_embed",
            Site::ResidPre => "hook_resid_pre",
            Site::Ln1Normalized => "ln1.hook_normalized",
            Site::Q => "attn.hook_q",
            Site::K => "attn.hook_k",
            Site::V => "attn.hook_v",
            Site::RotQ => "attn.hook_rot_q",
            Site::RotK => "attn.hook_rot_k",
            Site::AttnScores => "attn.hook_attn_scores",
            Site::Pattern => "attn.hook_pattern",
            Site::Z => "attn.hook_z",
            Site::AttnOut => "hook_attn_out",
            Site::ResidMid => "hook_resid_mid",
            Site::Ln2Normalized => "ln2.hook_normalized",
            Site::MlpPre => "mlp.hook_pre",
            Site::MlpPreLinear => "mlp.hook_pre_linear",
            Site::MlpPost => "mlp.hook_post",
            Site::MlpOut => "hook_mlp_out",
            Site::ResidPost => "hook_resid_post",
            Site::LnFinalNormalized => "ln_final.hook_normalized",
        }
    }

    pub fn is_global(self) -> bool {
        matches!(self, Site::Embed | Site::PosEmbed | Site::LnFinalNormalized)
    }

    /// Per-head hooks: the axis that indexes heads (with the batch axis).
    pub fn head_axis(self) -> Option<usize> {
        match self {
            Site::Q | Site::K | Site::V | Site::RotQ | Site::RotK | Site::Z => Some(2),
            Site::AttnScores | Site::Pattern => Some(1),
            _ => None,
        }
    }

    /// Whether this model computes the site at all.
    pub fn exists_in(self, cfg: &Config) -> bool {
        match self {
            Site::PosEmbed => cfg.pos_embedding == PosEmbedding::Learned,
            Site::RotQ | Site::RotK => cfg.pos_embedding == PosEmbedding::Rope,
            Site::MlpPreLinear => cfg.gated_mlp,
            _ => true,
        }
    }
}

/// A hook point: a site, in a block unless the site is global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookPoint {
    pub layer: Option<usize>,
    pub site: Site,
}

impl HookPoint {
    pub fn global(site: Site) -> Self {
        HookPoint { layer: None, site }
    }
    pub fn block(layer: usize, site: Site) -> Self {
        HookPoint { layer: Some(layer), site }
    }

    pub fn name(&self) -> String {
        match self.layer {
            None => self.site.suffix().to_owned(),
            Some(l) => format!("blocks.{l}.{}", self.site.suffix()),
        }
    }

    /// Parses a TransformerLens hook name and checks it against the model.
    pub fn parse(name: &str, cfg: &Config) -> Result<HookPoint> {
        let unknown = || {
            Error::input(format!(
                "unknown hook '{name}': expected e.g. 'blocks.0.hook_resid_pre', 'blocks.3.attn.hook_z', \
                 'hook_embed' or 'ln_final.hook_normalized' (see `hook_names()` / `scalpel hooks`)"
            ))
        };
        let point = if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
            let layer: usize = layer
                .parse()
                .ok()
                .filter(|l: &usize| l.to_string() == layer)
                .ok_or_else(|| Error::input(format!("hook '{name}': '{layer}' is not a layer number")))?;
            let site = Site::ALL
                .iter()
                .copied()
                .find(|s| !s.is_global() && s.suffix() == suffix)
                .ok_or_else(unknown)?;
            if layer >= cfg.n_layers {
                return Err(Error::input(format!(
                    "hook '{name}': layer {layer} is out of range; the model has {} layers (0..={})",
                    cfg.n_layers,
                    cfg.n_layers - 1
                )));
            }
            HookPoint::block(layer, site)
        } else {
            let site = Site::ALL
                .iter()
                .copied()
                .find(|s| s.is_global() && s.suffix() == name)
                .ok_or_else(unknown)?;
            HookPoint::global(site)
        };
        if !point.site.exists_in(cfg) {
            return Err(Error::input(format!(
                "hook '{name}' does not exist in this {} model",
                cfg.arch.name()
            )));
        }
        Ok(point)
    }

    /// Every hook point of a model, in forward order.
    pub fn all(cfg: &Config) -> Vec<HookPoint> {
        let mut v = Vec::new();
        for s in [Site::Embed, Site::PosEmbed] {
            if s.exists_in(cfg) {
                v.push(HookPoint::global(s));
            }
        }
        for l in 0..cfg.n_layers {
            for s in Site::ALL {
                if !s.is_global() && s.exists_in(cfg) {
                    v.push(HookPoint::block(l, s));
                }
            }
        }
        v.push(HookPoint::global(Site::LnFinalNormalized));
        v
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
