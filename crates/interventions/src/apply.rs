//! Compiles an intervention document against a model and a prompt into a
//! `Hook` that the engine calls during the forward pass (and generation).

use std::collections::{BTreeSet, HashMap};

use scalpel_engine::{Hook, HookCtx, HookPoint, Model, Site, Tensor};
use serde::Serialize;

use crate::spec::{Document, NamedPositions, Op, Positions, Vector, VectorSource};

type Res<T> = Result<T, String>;

/// Absolute positions an item covers.
#[derive(Clone, Debug)]
enum Sel {
    All,
    Prompt(usize),
    Generated(usize),
    Set(BTreeSet<usize>),
}

impl Sel {
    fn contains(&self, abs: usize) -> bool {
        match self {
            Sel::All => true,
            Sel::Prompt(n) => abs < *n,
            Sel::Generated(n) => abs >= *n,
            Sel::Set(s) => s.contains(&abs),
        }
    }
}

enum Kind {
    Add(Tensor),
    Scale(f32),
    Zero,
    /// Mean over this prompt's positions, filled on the first pass that sees them.
    MeanOfPrompt(HashMap<HookPoint, Tensor>),
    /// Mean over a prompt set, per point.
    MeanOver(HashMap<HookPoint, Tensor>),
    Patch(HashMap<HookPoint, Tensor>),
    ProjectOut(Tensor),
    SetProjection(Tensor, ProjMode),
    Knockout(Sel),
}

#[derive(Clone, Copy)]
enum ProjMode {
    Value(f32),
    Cap(f32),
}

struct Item {
    index: usize,
    points: Vec<HookPoint>,
    positions: Sel,
    heads: Option<Vec<usize>>,
    neurons: Option<Vec<usize>>,
    kind: Kind,
    applications: usize,
}

/// What each intervention touched, for the user.
#[derive(Clone, Debug, Serialize)]
pub struct ItemReport {
    pub index: usize,
    pub op: String,
    pub hooks: Vec<String>,
    /// Hook calls this intervention changed.
    pub applications: usize,
}

pub struct Interventions {
    items: Vec<Item>,
    ops: Vec<String>,
    pub warnings: Vec<String>,
}

fn site_axes(site: Site) -> (usize, Option<usize>) {
    // (position axis, head axis) in the hook's layout.
    match site {
        Site::AttnScores | Site::Pattern => (2, Some(1)),
        s => (1, s.head_axis()),
    }
}

/// The length of a hook's last axis and its head count, for validation.
fn site_dims(model: &Model, site: Site) -> (Option<usize>, Option<usize>) {
    let c = &model.config;
    match site {
        Site::Q | Site::RotQ | Site::Z => (Some(c.d_head), Some(c.n_heads)),
        Site::K | Site::V | Site::RotK => (Some(c.d_head), Some(c.n_kv_heads)),
        Site::AttnScores | Site::Pattern => (None, Some(c.n_heads)),
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => (Some(c.d_mlp), None),
        _ => (Some(c.d_model), None),
    }
}

fn check_finite(i: usize, field: &str, xs: &[f32]) -> Res<()> {
    if let Some(j) = xs.iter().position(|x| !x.is_finite()) {
        return Err(format!("intervention {i}: field '{field}' has a non-finite number at index {j}"));
    }
    Ok(())
}

fn expand_hook(model: &Model, i: usize, hook: &str) -> Res<Vec<HookPoint>> {
    let parse = |name: &str| model.hook_point(name).map_err(|e| format!("intervention {i}: field 'hook': {e}"));
    if let Some(rest) = hook.strip_prefix("blocks.*.") {
        return (0..model.config.n_layers).map(|l| parse(&format!("blocks.{l}.{rest}"))).collect();
    }
    if hook.contains('*') {
        return Err(format!("intervention {i}: field 'hook': '*' is only allowed as the layer, as in 'blocks.*.hook_resid_post'"));
    }
    Ok(vec![parse(hook)?])
}

/// Resolves a position index (negative = from the end of `len`).
fn resolve_pos(i: usize, field: &str, p: i64, len: usize) -> Res<usize> {
    let abs = if p < 0 { len as i64 + p } else { p };
    if abs < 0 {
        return Err(format!("intervention {i}: field '{field}': position {p} is before the start of a {len}-token prompt"));
    }
    Ok(abs as usize)
}

fn resolve_sel(i: usize, field: &str, p: &Positions, prompt_len: usize) -> Res<Sel> {
    Ok(match p {
        Positions::Named(NamedPositions::All) => Sel::All,
        Positions::Named(NamedPositions::Prompt) => Sel::Prompt(prompt_len),
        Positions::Named(NamedPositions::Generated) => Sel::Generated(prompt_len),
        Positions::List(v) => {
            if v.is_empty() {
                return Err(format!("intervention {i}: field '{field}' is an empty list"));
            }
            Sel::Set(v.iter().map(|&x| resolve_pos(i, field, x, prompt_len)).collect::<Res<_>>()?)
        }
        Positions::Range { start, end } => {
            let (a, b) = (resolve_pos(i, field, *start, prompt_len)?, resolve_pos(i, field, *end, prompt_len)?);
            if a >= b {
                return Err(format!("intervention {i}: field '{field}': empty range {start}..{end}"));
            }
            Sel::Set((a..b).collect())
        }
    })
}

/// Runs `prompt` and returns the value at `point` (batch axis removed).
fn activation(model: &Model, prompt: &str, point: HookPoint) -> Res<Tensor> {
    let ids = model.tokenizer().encode(prompt).map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Err(format!("prompt {prompt:?} tokenizes to nothing"));
    }
    let (_, cache) = model.run_with_cache(&ids, &[point]).map_err(|e| e.to_string())?;
    Ok(cache.get(&point).expect("requested point is cached").clone())
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

fn build_vector(model: &Model, i: usize, field: &str, v: &Vector, hook: &[HookPoint], warnings: &mut Vec<String>) -> Res<Vec<f32>> {
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
            let a = at_position(i, &activation(model, plus, p)?, *position, warnings, "'plus'")?;
            let b = at_position(i, &activation(model, minus, p)?, *position, warnings, "'minus'")?;
            flat((a - b).map_err(|e| e.to_string())?)
        }
        Vector::From(VectorSource::MeanDiff { positive, negative, hook: h, position }) => {
            let p = source_point(h)?;
            if positive.is_empty() || negative.is_empty() {
                return Err(format!("intervention {i}: field '{field}': 'positive' and 'negative' must each hold at least one prompt"));
            }
            let mut mean = |set: &[String], name: &str| -> Res<Tensor> {
                let mut acc: Option<Tensor> = None;
                for s in set {
                    let v = at_position(i, &activation(model, s, p)?, *position, warnings, name)?;
                    acc = Some(match acc { None => v, Some(a) => (a + v).map_err(|e| e.to_string())? });
                }
                (acc.expect("non-empty") / set.len() as f64).map_err(|e| e.to_string())
            };
            let pos = mean(positive, "'positive'")?;
            let neg = mean(negative, "'negative'")?;
            flat((pos - neg).map_err(|e| e.to_string())?)
        }
    }
}

fn unit(i: usize, field: &str, v: Vec<f32>) -> Res<Tensor> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 {
        return Err(format!("intervention {i}: field '{field}' is the zero vector; a direction needs a non-zero norm"));
    }
    Tensor::new(v.iter().map(|x| (*x as f64 / n) as f32).collect::<Vec<_>>(), &scalpel_engine::Device::Cpu).map_err(|e| e.to_string())
}

impl Interventions {
    /// Compiles `doc` for `model` and a prompt of `prompt_len` tokens.
    pub fn compile(model: &Model, doc: &Document, prompt_len: usize) -> Res<Interventions> {
        let mut items = Vec::new();
        let mut ops = Vec::new();
        let mut warnings = Vec::new();
        for (i, iv) in doc.interventions.iter().enumerate() {
            if !iv.enabled {
                continue;
            }
            let points = expand_hook(model, i, &iv.hook)?;
            let site = points[0].site;
            let (last, n_heads) = site_dims(model, site);
            if let Some(heads) = &iv.heads {
                let h = n_heads.ok_or(format!("intervention {i}: field 'heads': hook '{}' has no heads", iv.hook))?;
                if let Some(&bad) = heads.iter().find(|&&x| x >= h) {
                    return Err(format!("intervention {i}: field 'heads': head {bad} is out of range (the hook has {h} heads)"));
                }
            }
            if let Some(ns) = &iv.neurons {
                let n = last.ok_or(format!("intervention {i}: field 'neurons' does not apply to '{}'", iv.hook))?;
                if let Some(&bad) = ns.iter().find(|&&x| x >= n) {
                    return Err(format!("intervention {i}: field 'neurons': unit {bad} is out of range (the hook's last axis has {n})"));
                }
            }
            let positions = resolve_sel(i, "positions", &iv.positions, prompt_len)?;
            let need_len = |field: &str, v: &[f32]| -> Res<()> {
                match last {
                    Some(n) if v.len() != n => Err(format!(
                        "intervention {i}: field '{field}' has {} numbers but '{}' has {n} per position",
                        v.len(), iv.hook
                    )),
                    None => Err(format!("intervention {i}: field '{field}': '{}' takes no vectors", iv.hook)),
                    _ => Ok(()),
                }
            };
            let scores_like = matches!(site, Site::AttnScores | Site::Pattern);
            let (kind, op_name) = match &iv.op {
                Op::Add { vector, scale } => {
                    check_finite(i, "scale", &[*scale])?;
                    let v = build_vector(model, i, "vector", vector, &points, &mut warnings)?;
                    need_len("vector", &v)?;
                    let v: Vec<f32> = v.iter().map(|x| x * scale).collect();
                    (Kind::Add(Tensor::new(v, &scalpel_engine::Device::Cpu).map_err(|e| e.to_string())?), "add")
                }
                Op::Scale { factor } => {
                    check_finite(i, "factor", &[*factor])?;
                    (Kind::Scale(*factor), "scale")
                }
                Op::Zero => (Kind::Zero, "zero"),
                Op::Mean { over: None } => (Kind::MeanOfPrompt(HashMap::new()), "mean"),
                Op::Mean { over: Some(prompts) } => {
                    if prompts.is_empty() {
                        return Err(format!("intervention {i}: field 'over' is an empty prompt set"));
                    }
                    let mut means = HashMap::new();
                    for &p in &points {
                        let mut acc: Option<Tensor> = None;
                        for s in prompts {
                            let a = activation(model, s, p).map_err(|e| format!("intervention {i}: field 'over': {e}"))?;
                            let m = a.mean_keepdim(site_axes(site).0 - 1).map_err(|e| e.to_string())?;
                            acc = Some(match acc { None => m, Some(x) => (x + m).map_err(|e| e.to_string())? });
                        }
                        let m = (acc.expect("non-empty") / prompts.len() as f64).map_err(|e| e.to_string())?;
                        means.insert(p, m.unsqueeze(0).map_err(|e| e.to_string())?);
                    }
                    (Kind::MeanOver(means), "mean")
                }
                Op::Patch { source } => {
                    let ids = model.tokenizer().encode(source).map_err(|e| e.to_string())?;
                    if ids.len() != prompt_len {
                        return Err(format!(
                            "intervention {i}: field 'source' has {} tokens but the prompt has {prompt_len}; patching needs equal lengths",
                            ids.len()
                        ));
                    }
                    let (_, cache) = model.run_with_cache(&ids, &points).map_err(|e| e.to_string())?;
                    let vals = points.iter().map(|p| (*p, cache.get(p).expect("cached").unsqueeze(0).expect("unsqueeze"))).collect();
                    (Kind::Patch(vals), "patch")
                }
                Op::ProjectOut { direction } => {
                    let v = build_vector(model, i, "direction", direction, &points, &mut warnings)?;
                    need_len("direction", &v)?;
                    (Kind::ProjectOut(unit(i, "direction", v)?), "project_out")
                }
                Op::SetProjection { direction, value, cap } => {
                    let v = build_vector(model, i, "direction", direction, &points, &mut warnings)?;
                    need_len("direction", &v)?;
                    let mode = match (value, cap) {
                        (Some(x), None) => ProjMode::Value(*x),
                        (None, Some(c)) => ProjMode::Cap(*c),
                        _ => return Err(format!("intervention {i}: give exactly one of 'value' or 'cap'")),
                    };
                    let (ProjMode::Value(x) | ProjMode::Cap(x)) = mode;
                    check_finite(i, "value/cap", &[x])?;
                    (Kind::SetProjection(unit(i, "direction", v)?, mode), "set_projection")
                }
                Op::Knockout { keys } => {
                    if !scores_like {
                        return Err(format!(
                            "intervention {i}: op 'knockout' needs an attention hook ('blocks.L.attn.hook_attn_scores' or 'hook_pattern'), not '{}'",
                            iv.hook
                        ));
                    }
                    (Kind::Knockout(resolve_sel(i, "keys", keys, prompt_len)?), "knockout")
                }
            };
            if scores_like && !matches!(kind, Kind::Knockout(_) | Kind::Scale(_) | Kind::Zero | Kind::Patch(_)) {
                return Err(format!("intervention {i}: op '{op_name}' does not apply to attention scores/patterns"));
            }
            if iv.neurons.is_some() && matches!(kind, Kind::ProjectOut(_) | Kind::SetProjection(..)) {
                return Err(format!("intervention {i}: 'neurons' cannot be combined with '{op_name}' (a direction spans the whole axis)"));
            }
            ops.push(op_name.to_owned());
            items.push(Item {
                index: i,
                points,
                positions,
                heads: iv.heads.clone(),
                neurons: iv.neurons.clone(),
                kind,
                applications: 0,
            });
        }
        Ok(Interventions { items, ops, warnings })
    }

    pub fn report(&self) -> Vec<ItemReport> {
        self.items
            .iter()
            .zip(&self.ops)
            .map(|(it, op)| ItemReport {
                index: it.index,
                op: op.clone(),
                hooks: it.points.iter().map(HookPoint::name).collect(),
                applications: it.applications,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A 0/1 mask broadcastable to `shape` selecting the item's positions, heads
/// and units; `None` if nothing in this chunk is selected.
fn mask(it: &Item, ctx: &HookCtx, shape: &[usize]) -> candle_core::Result<Option<Tensor>> {
    let (pos_axis, head_axis) = site_axes(ctx.point.site);
    let rank = shape.len();
    let mut dims = vec![1usize; rank];
    dims[pos_axis] = shape[pos_axis];
    let pos_on: Vec<bool> = (0..shape[pos_axis]).map(|p| it.positions.contains(ctx.start_pos + p)).collect();
    if !pos_on.iter().any(|&b| b) {
        return Ok(None);
    }
    let mut head_on: Option<Vec<bool>> = None;
    if let (Some(hs), Some(ha)) = (&it.heads, head_axis) {
        dims[ha] = shape[ha];
        head_on = Some((0..shape[ha]).map(|h| hs.contains(&h)).collect());
    }
    let mut unit_on: Option<Vec<bool>> = None;
    if let Some(ns) = &it.neurons {
        dims[rank - 1] = shape[rank - 1];
        unit_on = Some((0..shape[rank - 1]).map(|u| ns.contains(&u)).collect());
    }
    let n: usize = dims.iter().product();
    let mut data = vec![0f32; n];
    let mut idx = vec![0usize; rank];
    for slot in data.iter_mut() {
        let on = pos_on[idx[pos_axis]]
            && head_on.as_ref().is_none_or(|h| h[idx[head_axis.unwrap_or(0)]])
            && unit_on.as_ref().is_none_or(|u| u[idx[rank - 1]]);
        *slot = on as u8 as f32;
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    Ok(Some(Tensor::from_vec(data, dims, &candle_core::Device::Cpu)?))
}

fn blend(x: &Tensor, m: &Tensor, replacement: &Tensor) -> candle_core::Result<Tensor> {
    // x·(1−m) + replacement·m
    x.broadcast_mul(&m.affine(-1.0, 1.0)?)?.broadcast_add(&replacement.broadcast_mul(m)?)
}

impl Hook for Interventions {
    fn wants(&self, point: HookPoint) -> bool {
        self.items.iter().any(|it| it.points.contains(&point))
    }

    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> scalpel_engine::Result<Option<Tensor>> {
        let mut x = value.clone();
        let mut changed = false;
        for it in self.items.iter_mut() {
            if !it.points.contains(&ctx.point) {
                continue;
            }
            let shape = x.dims().to_vec();
            let Some(m) = mask(it, ctx, &shape)? else { continue };
            let (pos_axis, _) = site_axes(ctx.point.site);
            x = match &mut it.kind {
                Kind::Add(v) => x.broadcast_add(&m.broadcast_mul(v)?)?,
                Kind::Scale(f) => x.broadcast_mul(&m.affine(*f as f64 - 1.0, 1.0)?)?,
                Kind::Zero => x.broadcast_mul(&m.affine(-1.0, 1.0)?)?,
                Kind::MeanOfPrompt(means) => {
                    if !means.contains_key(&ctx.point) {
                        if ctx.start_pos != 0 {
                            return Err(scalpel_engine::Error::input(format!(
                                "intervention {}: 'mean' needs the whole prompt in one pass", it.index
                            )));
                        }
                        means.insert(ctx.point, x.mean_keepdim(pos_axis)?);
                    }
                    blend(&x, &m, &means[&ctx.point])?
                }
                Kind::MeanOver(means) => blend(&x, &m, &means[&ctx.point])?,
                Kind::Patch(src) => {
                    let s = &src[&ctx.point];
                    let len = shape[pos_axis];
                    if ctx.start_pos + len > s.dim(pos_axis)? {
                        // Generated positions have no source value (the source
                        // has the prompt's length): they are left alone.
                        continue;
                    }
                    let s = s.narrow(pos_axis, ctx.start_pos, len)?;
                    let s = if matches!(ctx.point.site, Site::AttnScores | Site::Pattern) { s.narrow(3, 0, shape[3])? } else { s };
                    blend(&x, &m, &s)?
                }
                Kind::ProjectOut(u) => {
                    let proj = x.broadcast_mul(u)?.sum_keepdim(shape.len() - 1)?;
                    x.broadcast_sub(&proj.broadcast_mul(u)?.broadcast_mul(&m)?)?
                }
                Kind::SetProjection(u, mode) => {
                    let proj = x.broadcast_mul(u)?.sum_keepdim(shape.len() - 1)?;
                    let target = match *mode {
                        ProjMode::Value(c) => proj.ones_like()?.affine(c as f64, 0.0)?,
                        ProjMode::Cap(c) => proj.clamp(f32::NEG_INFINITY, c)?,
                    };
                    x.broadcast_add(&(target - proj)?.broadcast_mul(u)?.broadcast_mul(&m)?)?
                }
                Kind::Knockout(keys) => {
                    let kv_len = shape[3];
                    let key_on: Vec<f32> = (0..kv_len).map(|k| keys.contains(k) as u8 as f32).collect();
                    let km = Tensor::from_vec(key_on, (1, 1, 1, kv_len), &candle_core::Device::Cpu)?;
                    let full = m.broadcast_mul(&km)?.broadcast_as(shape.as_slice())?;
                    let fill = if ctx.point.site == Site::AttnScores { f32::NEG_INFINITY } else { 0.0 };
                    let fill = Tensor::full(fill, shape.as_slice(), &candle_core::Device::Cpu)?;
                    full.ne(0f32)?.where_cond(&fill, &x)?
                }
            };
            it.applications += 1;
            changed = true;
        }
        Ok(changed.then_some(x))
    }
}
