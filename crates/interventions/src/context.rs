//! What compiling an item works with, shared by the compiler (`compile.rs`)
//! and every op (`ops/`): the compile context (`Cx`: model, prompt length,
//! the SAEs beside the document, warnings), an item's checked hook
//! (`Target`), and the checks every op uses.

use std::collections::HashMap;
use std::sync::Arc;

use scalpel_dictionaries::Sae;
use scalpel_engine::{HookPoint, Model, Site, SiteShape};
use scalpel_types::document::Intervention;

use crate::select::{resolve_sel, Selection};
use crate::Res;

/// The SAEs a document's `sae_clamp` items use, by hook point, loaded
/// beside the document (which stays plain data).
pub type SaeTable = HashMap<HookPoint, Arc<Sae>>;

/// Asked before each forward pass of work that can be long (compiling a
/// document, reading prompt sets): true when the user asked to stop.
pub type Stop<'a> = &'a dyn Fn() -> bool;

/// The error of work the user stopped: callers show it as cancelled, not as a failure.
pub const STOPPED: &str = "stopped";

/// For callers that never stop (tests, the CLI).
pub fn never() -> bool {
    false
}

/// `Err(STOPPED)` when `stop` says so.
pub(crate) fn check_stop(stop: Stop) -> Res<()> {
    if stop() {
        Err(STOPPED.to_owned())
    } else {
        Ok(())
    }
}

/// `f` of each item, in order, `pass_threads` at once, one per thread
/// (natively; each a forward pass whose products then stay on its thread);
/// `stop` is asked before each group. A prompt's numbers do not
/// depend on its thread, and callers fold the results in item order, so
/// they are those of one thread.
pub(crate) fn each_on_threads<I: Sync, T: Send + Sync>(stop: Stop, items: &[I], f: impl Fn(&I) -> T + Sync) -> Res<Vec<T>> {
    let group = scalpel_engine::pass_threads().max(1);
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(group) {
        check_stop(stop)?;
        out.extend(scalpel_engine::map_pieces(chunk.len(), |j| f(&chunk[j])));
    }
    Ok(out)
}

/// What an op's compile step reads: the model, the prompt length, the
/// SAEs beside the document, the stop flag, and where warnings go.
pub(crate) struct Cx<'a> {
    pub model: &'a Model,
    pub prompt_len: usize,
    pub saes: &'a SaeTable,
    pub stop: Stop<'a>,
    pub warnings: Vec<String>,
}

/// The checked hook of an item: its points (one, or one per layer for
/// `blocks.*.…`), their site's shape, and the selection.
pub(crate) struct Target {
    pub index: usize,
    pub hook: String,
    pub points: Vec<HookPoint>,
    pub site: Site,
    pub shape: SiteShape,
    pub select: Selection,
}

impl Target {
    /// An error unless `v` has one number per unit of the hook's last axis.
    pub fn need_len(&self, field: &str, v: &[f32]) -> Res<()> {
        let i = self.index;
        match self.shape.width {
            Some(n) if v.len() != n => Err(format!(
                "intervention {i}: field '{field}' has {} numbers but '{}' has {n} per position",
                v.len(),
                self.hook
            )),
            None => Err(format!("intervention {i}: field '{field}': '{}' takes no vectors", self.hook)),
            _ => Ok(()),
        }
    }

    /// Attention scores or patterns (`[b, head, q, k]`).
    pub fn is_scores(&self) -> bool {
        matches!(self.site, Site::AttnScores | Site::Pattern)
    }
}

impl Cx<'_> {
    /// Expands and checks an item's `hook`, `heads`, `neurons` and `positions`.
    pub fn target(&self, i: usize, iv: &Intervention) -> Res<Target> {
        let hook = iv.hook.as_deref().ok_or(format!("intervention {i}: missing field 'hook'"))?;
        let points = self.expand_hook(i, hook)?;
        let site = points[0].site;
        let shape = self.model.config.site_shape(site);
        if let Some(heads) = &iv.heads {
            let h = shape.heads.ok_or(format!("intervention {i}: field 'heads': hook '{hook}' has no heads"))?;
            if let Some(&bad) = heads.iter().find(|&&x| x >= h) {
                return Err(format!("intervention {i}: field 'heads': head {bad} is out of range (the hook has {h} heads)"));
            }
        }
        if let Some(ns) = &iv.neurons {
            let n = shape.width.ok_or(format!("intervention {i}: field 'neurons' does not apply to '{hook}'"))?;
            if let Some(&bad) = ns.iter().find(|&&x| x >= n) {
                return Err(format!(
                    "intervention {i}: field 'neurons': unit {bad} is out of range (the hook's last axis has {n})"
                ));
            }
        }
        let positions = resolve_sel(i, "positions", &iv.positions, self.prompt_len, self.model.config.n_ctx)?;
        let select = Selection { positions, heads: iv.heads.clone(), neurons: iv.neurons.clone() };
        Ok(Target { index: i, hook: hook.to_owned(), points, site, shape, select })
    }

    fn expand_hook(&self, i: usize, hook: &str) -> Res<Vec<HookPoint>> {
        let parse = |name: &str| self.model.hook_point(name).map_err(|e| format!("intervention {i}: field 'hook': {e}"));
        if let Some(rest) = hook.strip_prefix("blocks.*.") {
            return (0..self.model.config.n_layers).map(|l| parse(&format!("blocks.{l}.{rest}"))).collect();
        }
        if hook.contains('*') {
            return Err(format!(
                "intervention {i}: field 'hook': '*' is only allowed as the layer, as in 'blocks.*.hook_resid_post'"
            ));
        }
        Ok(vec![parse(hook)?])
    }
}

/// An error unless every number is finite.
pub(crate) fn check_finite(i: usize, field: &str, xs: &[f32]) -> Res<()> {
    if let Some(j) = xs.iter().position(|x| !x.is_finite()) {
        return Err(format!("intervention {i}: field '{field}' has a non-finite number at index {j}"));
    }
    Ok(())
}

