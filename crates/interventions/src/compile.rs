//! Compiling a document against a model and a prompt length into
//! `Interventions`: an engine `Hook` (plus the cache, weight and token-stream
//! edits of the generation-time ops), and running it as a hook.
//!
//! What is common to every op lives here: expanding `hook` to hook points,
//! checking `heads` and `neurons` against the hook, resolving `positions`.
//! What an op does lives in its file under `ops/`.

use scalpel_engine::{Hook, HookCtx, HookPoint, Model, Tensor};
pub use scalpel_types::run::{ConditionalTrace, ItemReport};
use scalpel_types::document::Document;

use crate::ops::conditional::Conditional;
use crate::ops::{Compiled, HookOp, Insert, KvAdd, LowRank};
use crate::context::{check_stop, never, Cx, SaeTable, Stop, STOPPED};
use crate::select::Selection;
use crate::Res;

/// What an item does at its hook points.
pub(crate) enum Action {
    Op(Box<dyn HookOp>),
    Conditional(Box<Conditional>),
}

/// One compiled hook intervention.
pub(crate) struct Item {
    pub index: usize,
    pub op: &'static str,
    pub points: Vec<HookPoint>,
    pub select: Selection,
    pub action: Action,
    /// Hook calls this item changed.
    pub applications: usize,
}

/// A compiled document: hook items, and the ops that edit the KV cache,
/// the weights or the token stream while generating.
pub struct Interventions {
    pub(crate) items: Vec<Item>,
    pub kv_adds: Vec<KvAdd>,
    pub low_ranks: Vec<LowRank>,
    pub inserts: Vec<Insert>,
    pub warnings: Vec<String>,
}

impl Interventions {
    /// Compiles `doc` for `model` and a prompt of `prompt_len` tokens.
    pub fn compile(model: &Model, doc: &Document, prompt_len: usize) -> Res<Interventions> {
        Self::compile_with(model, doc, prompt_len, &SaeTable::new())
    }

    /// Compiles with the SAEs the document's `sae_clamp` ops read (from `vectors::resolve`).
    pub fn compile_with(model: &Model, doc: &Document, prompt_len: usize, saes: &SaeTable) -> Res<Interventions> {
        Self::compile_until(model, doc, prompt_len, saes, &never)
    }

    /// Compiles, asking `stop` before each item and each forward pass the
    /// document's vectors, means and sources need; `Err(STOPPED)` if it says so.
    pub fn compile_until(model: &Model, doc: &Document, prompt_len: usize, saes: &SaeTable, stop: Stop) -> Res<Interventions> {
        let mut cx = Cx { model, prompt_len, saes, stop, warnings: Vec::new() };
        let mut out = Interventions { items: Vec::new(), kv_adds: Vec::new(), low_ranks: Vec::new(), inserts: Vec::new(), warnings: Vec::new() };
        for (i, iv) in doc.interventions.iter().enumerate() {
            if !iv.enabled {
                continue;
            }
            check_stop(stop)?;
            let def = crate::ops::def(&iv.op);
            // A stop inside an op comes back wrapped in the op's message.
            let compiled = (def.compile)(&mut cx, i, iv).map_err(|e| if stop() { STOPPED.to_owned() } else { e })?;
            match compiled {
                Compiled::Insert(x) => out.inserts.push(x),
                Compiled::LowRanks(x) => out.low_ranks.extend(x),
                Compiled::KvAdds(x) => out.kv_adds.extend(x),
                Compiled::Conditional(target, c) => out.items.push(Item {
                    index: i,
                    op: def.name,
                    points: target.points,
                    select: target.select,
                    action: Action::Conditional(c),
                    applications: 0,
                }),
                Compiled::Hook(target, op) => {
                    if target.is_scores() && !op.on_scores() {
                        return Err(format!("intervention {i}: op '{}' does not apply to attention scores/patterns", def.name));
                    }
                    if iv.neurons.is_some() && op.directional() {
                        return Err(format!(
                            "intervention {i}: 'neurons' cannot be combined with '{}' (a direction spans the whole axis)",
                            def.name
                        ));
                    }
                    out.items.push(Item { index: i, op: def.name, points: target.points, select: target.select, action: Action::Op(op), applications: 0 });
                }
            }
        }
        out.warnings = cx.warnings;
        Ok(out)
    }

    /// One line per item: the hooks it touched and how many hook calls it
    /// changed, or, for cache and weight edits, what it edited.
    pub fn report(&self) -> Vec<ItemReport> {
        let hooks = self.items.iter().map(|it| {
            let mut hooks: Vec<String> = it.points.iter().map(HookPoint::name).collect();
            let mut applications = it.applications;
            if let Action::Conditional(c) = &it.action {
                for r in c.inner.report() {
                    hooks.extend(r.hooks);
                    applications += r.applications;
                }
            }
            ItemReport { index: it.index, op: it.op.to_owned(), hooks, applications, edited: None }
        });
        let mut out: Vec<ItemReport> = hooks.collect();
        // An item's edits of one layer (one per head group of a per-head
        // vector) are one edit of that layer.
        let mut seen = std::collections::HashSet::new();
        let mut edit = |index: usize, op: &str, hook: String, layer: usize, what: String| {
            if !seen.insert((index, layer)) {
                return;
            }
            match out.iter_mut().find(|r| r.index == index) {
                Some(r) => {
                    if !r.hooks.contains(&hook) {
                        r.hooks.push(hook);
                    }
                    r.applications += 1;
                    r.edited = r.edited.take().map(|e| format!("{e}, {layer}"));
                }
                None => out.push(ItemReport { index, op: op.into(), hooks: vec![hook], applications: 1, edited: Some(format!("{what} of layer {layer}")) }),
            }
        };
        for k in &self.kv_adds {
            let site = if k.values { "hook_v" } else { "hook_rot_k" };
            let what = format!("{} at {} cached position(s)", if k.values { "values" } else { "keys" }, k.positions.len());
            edit(k.index, "kv_add", format!("blocks.{}.attn.{site}", k.layer), k.layer, what);
        }
        for r in &self.low_ranks {
            edit(r.index, "low_rank", format!("blocks.{}", r.layer), r.layer, format!("{:?} weight cut to rank {}", r.matrix, r.rank));
        }
        out.sort_by_key(|r| r.index);
        out
    }

    /// The compile warnings, and one for each item that (in the run so far)
    /// changed no hook value and edited nothing.
    pub fn run_warnings(&self) -> Vec<String> {
        let idle = self.report().into_iter().filter(|r| r.applications == 0 && r.edited.is_none());
        let idle = idle.map(|r| format!("intervention {}: '{}' changed nothing (its positions, heads or condition never matched)", r.index, r.op));
        self.warnings.iter().cloned().chain(idle).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.kv_adds.is_empty() && self.low_ranks.is_empty() && self.inserts.is_empty()
    }

    /// Errors if the document holds ops that only act while generating
    /// (`kv_add`, `insert`), for runs that are a single forward pass.
    pub fn check_single_pass(&self) -> scalpel_engine::Result<()> {
        let first = self
            .kv_adds
            .first()
            .map(|k| (k.index, "kv_add"))
            .into_iter()
            .chain(self.inserts.first().map(|k| (k.index, "insert")))
            .min();
        match first {
            Some((i, op)) => Err(scalpel_engine::Error::input(format!(
                "intervention {i}: op '{op}' acts only while generating; use `generate` (a single forward pass would ignore it)"
            ))),
            None => Ok(()),
        }
    }

    fn conditionals(&mut self) -> impl Iterator<Item = (usize, &mut Conditional)> {
        self.items.iter_mut().filter_map(|it| match &mut it.action {
            Action::Conditional(c) => Some((it.index, c.as_mut())),
            Action::Op(_) => None,
        })
    }

    /// What each conditional intervention saw and did.
    pub fn conditional_traces(&self) -> Vec<ConditionalTrace> {
        self.items
            .iter()
            .filter_map(|it| match &it.action {
                Action::Conditional(c) => Some(c.trace(it.index)),
                Action::Op(_) => None,
            })
            .collect()
    }

    /// Conditionals that fired for the first time since the last call and want
    /// to backtrack: (tokens to roll back, position where it fired).
    pub fn take_backtracks(&mut self) -> Vec<(usize, usize)> {
        self.conditionals().filter_map(|(_, c)| c.take_backtrack()).collect()
    }

    /// Forget monitor readings after `len` positions (after a rollback).
    pub fn rollback_to(&mut self, len: usize) {
        for (_, c) in self.conditionals() {
            c.rollback_to(len);
        }
    }

    /// Back to the state right after compiling: application counts, what
    /// ops learned from the run (a mean over the running prompt) and every
    /// conditional's readings cleared, so the same compiled document serves
    /// another run (e.g. scoring the text it generated) with the numbers a
    /// fresh compile would give.
    pub fn reset(&mut self) {
        for it in &mut self.items {
            it.applications = 0;
            match &mut it.action {
                Action::Conditional(c) => c.reset(),
                Action::Op(op) => op.reset(),
            }
        }
    }
}

impl Hook for Interventions {
    fn wants(&self, point: HookPoint) -> bool {
        self.items.iter().any(|it| {
            it.points.contains(&point) || matches!(&it.action, Action::Conditional(c) if c.inner.wants(point))
        })
    }

    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> scalpel_engine::Result<Option<Tensor>> {
        let mut x = value.clone();
        let mut changed = false;
        for it in self.items.iter_mut() {
            let at_point = it.points.contains(&ctx.point);
            let new = match &mut it.action {
                Action::Conditional(c) => c.call(at_point, ctx, &x)?,
                Action::Op(_) if !at_point => None,
                Action::Op(op) => match it.select.mask(ctx, x.dims())? {
                    None => None,
                    Some(m) => {
                        let y = op.apply(&x, &m, ctx)?;
                        if y.is_some() {
                            it.applications += 1;
                        }
                        y
                    }
                },
            };
            if let Some(y) = new {
                x = y;
                changed = true;
            }
        }
        Ok(changed.then_some(x))
    }
}
