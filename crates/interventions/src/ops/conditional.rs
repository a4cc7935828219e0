//! `conditional`: apply `then` only while the projection of the newest
//! token's value at `hook` on `direction` is above (or below) `threshold`
//! (conditional steering). With `backtrack` > 0, the first time it fires
//! during generation the last `backtrack` tokens are discarded and
//! regenerated with `then` on; `run.rs` does the rollback.
//!
//! `then` is a list of ordinary items, so this op parses and compiles them
//! with the document's own parser and compiler: the one place where `ops/`
//! calls back into `parse.rs` and `compile.rs` (a recursive grammar, not a
//! layering loop).

use serde_json::{Map, Value};

use scalpel_engine::{Hook, HookCtx, Tensor};
use scalpel_types::document::{Document, Intervention, Op, When};
use scalpel_types::run::ConditionalTrace;

use super::{Compiled, OpDef};
use crate::compile::Interventions;
use crate::context::{check_finite, Cx};
use crate::Res;
use crate::vectors::sources::unit;

pub(crate) const DEF: OpDef =
    OpDef { name: "conditional", fields: &["direction", "threshold", "when", "then", "backtrack"], check, compile };

fn check(o: &Map<String, Value>, name: &str) -> Res<()> {
    let then = o
        .get("then")
        .and_then(|t| t.as_array())
        .ok_or(format!("intervention {name}: field 'then' must be a list of interventions"))?;
    crate::parse::parse_items(then, &format!("{name}.then."))?;
    Ok(())
}

/// A monitor and the interventions it switches on.
pub(crate) struct Conditional {
    direction: Tensor,
    threshold: f32,
    when: When,
    pub(crate) inner: Interventions,
    /// On for the current token (last monitor reading), or for good after a backtrack.
    active: bool,
    forced: bool,
    backtrack: usize,
    /// (absolute position, projection) of every monitored token.
    readings: Vec<(usize, f32)>,
    /// Absolute positions where the condition turned on.
    fired: Vec<usize>,
}

fn compile(cx: &mut Cx, i: usize, iv: &Intervention) -> Res<Compiled> {
    let Op::Conditional { direction, threshold, when, then, backtrack } = &iv.op else {
        unreachable!("registered for conditional")
    };
    let target = cx.target(i, iv)?;
    check_finite(i, "threshold", &[*threshold])?;
    let v = cx.vector(i, "direction", direction, &target.points)?;
    target.need_len("direction", &v)?;
    if target.points.len() != 1 {
        return Err(format!("intervention {i}: a conditional monitors one hook, not every layer"));
    }
    if target.site.head_axis().is_some() {
        return Err(format!(
            "intervention {i}: field 'hook': a conditional monitors a residual or MLP hook, not the per-head '{}'",
            target.hook
        ));
    }
    for (j, t) in then.iter().enumerate() {
        if matches!(t.op, Op::Insert { .. } | Op::LowRank { .. } | Op::KvAdd { .. } | Op::Conditional { .. }) {
            return Err(format!("intervention {i}.then.{j}: only hook interventions can be conditional"));
        }
    }
    let inner_doc = Document { version: scalpel_types::VERSION, interventions: then.clone() };
    let inner = Interventions::compile_until(cx.model, &inner_doc, cx.prompt_len, cx.saes, cx.stop)
        .map_err(|e| e.replacen("intervention ", &format!("intervention {i}.then."), 1))?;
    cx.warnings.extend(inner.warnings.iter().cloned());
    let c = Conditional {
        direction: unit(i, "direction", v)?,
        threshold: *threshold,
        when: *when,
        inner,
        active: false,
        forced: false,
        backtrack: *backtrack,
        readings: Vec::new(),
        fired: Vec::new(),
    };
    Ok(Compiled::Conditional(target, Box::new(c)))
}

impl Conditional {
    /// At a hook call: monitors the newest token if this is its hook
    /// (`at_point`), then runs the inner interventions while on.
    pub fn call(&mut self, at_point: bool, ctx: &HookCtx, x: &Tensor) -> scalpel_engine::Result<Option<Tensor>> {
        if at_point {
            // The newest token's projection (batch item 0).
            let t = x.dim(1)?;
            let last = x.narrow(1, t - 1, 1)?.get(0)?.flatten_all()?;
            let proj = (last * &self.direction)?.sum_all()?.to_scalar::<f32>()?;
            let abs = ctx.start_pos + t - 1;
            self.readings.push((abs, proj));
            let on = match self.when {
                When::Above => proj > self.threshold,
                When::Below => proj < self.threshold,
            };
            if on && !self.active {
                self.fired.push(abs);
            }
            self.active = self.forced || on;
        }
        if self.active && self.inner.wants(ctx.point) {
            return self.inner.call(ctx, x);
        }
        Ok(None)
    }

    pub fn trace(&self, index: usize) -> ConditionalTrace {
        ConditionalTrace { index, readings: self.readings.clone(), fired: self.fired.clone(), backtrack: self.backtrack }
    }

    /// (tokens to roll back, position where it fired) the first time it fires with a backtrack.
    pub fn take_backtrack(&mut self) -> Option<(usize, usize)> {
        if self.backtrack > 0 && !self.forced && !self.fired.is_empty() {
            self.forced = true;
            self.active = true;
            return Some((self.backtrack, self.fired[0]));
        }
        None
    }

    pub fn rollback_to(&mut self, len: usize) {
        self.readings.retain(|r| r.0 < len);
    }

    pub fn reset(&mut self) {
        self.active = false;
        self.forced = false;
        self.readings.clear();
        self.fired.clear();
        self.inner.reset();
    }
}
