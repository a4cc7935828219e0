//! Compiles an intervention document against a model and a prompt into a
//! `Hook` that the engine calls during the forward pass (and generation).

use std::collections::{BTreeSet, HashMap};

use scalpel_engine::{Hook, HookCtx, HookPoint, Model, Site, Tensor};
pub use scalpel_types::run::{ConditionalTrace, ItemReport};

use crate::spec::{Document, NamedPositions, Op, Positions, Vector, VectorSource, When};

pub mod lower;

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
    Conditional(Box<Conditional>),
    SaeClamp(crate::vectors::SaeClamp),
}

/// A monitor and the interventions it switches on.
struct Conditional {
    direction: Tensor,
    threshold: f32,
    when: When,
    inner: Interventions,
    /// On for the current token (last monitor reading), or for good after a backtrack.
    active: bool,
    forced: bool,
    backtrack: usize,
    /// (absolute position, projection) of every monitored token.
    readings: Vec<(usize, f32)>,
    /// Absolute positions where the condition turned on.
    fired: Vec<usize>,
}

/// A KV-cache edit applied once after the prompt.
#[derive(Clone, Debug)]
pub struct KvAdd {
    pub index: usize,
    pub layer: usize,
    pub values: bool,
    pub heads: Option<Vec<usize>>,
    pub positions: Vec<usize>,
    pub vector: Vec<f32>,
}

/// A rank reduction of one weight matrix (LASER).
#[derive(Clone, Debug)]
pub struct LowRank {
    pub index: usize,
    pub layer: usize,
    pub matrix: scalpel_engine::Matrix,
    pub rank: usize,
}

/// Text forced into the output while generating.
#[derive(Clone, Debug)]
pub struct Insert {
    pub index: usize,
    pub ids: Vec<u32>,
    pub at_step: Option<usize>,
    pub after: Option<Vec<u32>>,
    pub times: usize,
}

enum ProjMode {
    Value(f32),
    Cap(f32),
    /// The source run's projection ⟨h_src, û⟩ per point, `[1, t_src, (heads,) 1]`.
    Source(HashMap<HookPoint, Tensor>),
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

pub struct Interventions {
    items: Vec<Item>,
    ops: Vec<String>,
    pub kv_adds: Vec<KvAdd>,
    pub low_ranks: Vec<LowRank>,
    pub inserts: Vec<Insert>,
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
            let run = |text: &str, name: &str| {
                activation(model, text, p).map_err(|e| format!("intervention {i}: field '{field}.{name}': {e}"))
            };
            let a = at_position(i, &run(plus, "plus")?, *position, warnings, "'plus'")?;
            let b = at_position(i, &run(minus, "minus")?, *position, warnings, "'minus'")?;
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
                    let act = activation(model, s, p).map_err(|e| format!("intervention {i}: field '{field}.{}': {e}", name.trim_matches('\'')))?;
                    let v = at_position(i, &act, *position, warnings, name)?;
                    acc = Some(match acc { None => v, Some(a) => (a + v).map_err(|e| e.to_string())? });
                }
                (acc.expect("non-empty") / set.len() as f64).map_err(|e| e.to_string())
            };
            let pos = mean(positive, "'positive'")?;
            let neg = mean(negative, "'negative'")?;
            flat((pos - neg).map_err(|e| e.to_string())?)
        }
        Vector::From(VectorSource::Pca { positive, negative, hook: h, position, center }) => {
            let p = source_point(h)?;
            let opts = crate::vectors::MethodOptions { center: *center, ..Default::default() };
            let pool = crate::vectors::Pool::At(*position);
            let (v, w) = crate::vectors::vector_from_sets(model, crate::vectors::Method::Pca, &opts, positive, negative, p, pool)
                .map_err(|e| format!("intervention {i}: field '{field}': {e}"))?;
            warnings.extend(w.into_iter().map(|w| format!("intervention {i}: {w}")));
            Ok(v)
        }
        Vector::From(src @ (VectorSource::Sae { .. } | VectorSource::File { .. })) => Err(format!(
            "intervention {i}: field '{field}': vector source '{}' must be resolved first (vectors::resolve; the CLI does it, with --sae DIR for SAEs)",
            if matches!(src, VectorSource::Sae { .. }) { "sae" } else { "file" }
        )),
    }
}

/// The values at `points` in a run on `source`, which must have the prompt's
/// token length (`patch`, `set_projection` with `source`): `[1, t, ...]` each.
fn source_run(model: &Model, i: usize, source: &str, prompt_len: usize, points: &[HookPoint]) -> Res<HashMap<HookPoint, Tensor>> {
    let ids = model.tokenizer().encode(source).map_err(|e| e.to_string())?;
    if ids.len() != prompt_len {
        return Err(format!(
            "intervention {i}: field 'source' has {} tokens but the prompt has {prompt_len}; patching needs equal lengths",
            ids.len()
        ));
    }
    let (_, cache) = model.run_with_cache(&ids, points).map_err(|e| e.to_string())?;
    points
        .iter()
        .map(|p| Ok((*p, cache.get(p).expect("cached").unsqueeze(0).map_err(|e| e.to_string())?)))
        .collect()
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
        Self::compile_with(model, doc, prompt_len, &crate::vectors::SaeTable::new())
    }

    /// Compiles with the SAEs the document's `sae_clamp` ops read (from `vectors::resolve`).
    pub fn compile_with(model: &Model, doc: &Document, prompt_len: usize, saes: &crate::vectors::SaeTable) -> Res<Interventions> {
        let mut items = Vec::new();
        let mut ops = Vec::new();
        let mut warnings = Vec::new();
        let (mut kv_adds, mut low_ranks, mut inserts) = (Vec::new(), Vec::new(), Vec::new());
        for (i, iv) in doc.interventions.iter().enumerate() {
            if !iv.enabled {
                continue;
            }
            match &iv.op {
                Op::Insert { text, at_step, after, times } => {
                    if iv.hook.is_some() {
                        return Err(format!("intervention {i}: op 'insert' takes no 'hook'"));
                    }
                    let ids = model.tokenizer().encode(text).map_err(|e| e.to_string())?;
                    if ids.is_empty() {
                        return Err(format!("intervention {i}: field 'text' tokenizes to nothing"));
                    }
                    let after = match after {
                        Some(a) => {
                            let t = model.tokenizer().encode(a).map_err(|e| e.to_string())?;
                            if t.is_empty() {
                                return Err(format!("intervention {i}: field 'after' tokenizes to nothing"));
                            }
                            Some(t)
                        }
                        None => None,
                    };
                    if at_step.is_some() == after.is_some() {
                        return Err(format!("intervention {i}: give exactly one of 'at_step' or 'after'"));
                    }
                    inserts.push(Insert { index: i, ids, at_step: *at_step, after, times: *times });
                    continue;
                }
                Op::LowRank { matrix, rank } => {
                    let hook = iv.hook.as_deref().ok_or(format!("intervention {i}: missing field 'hook' (e.g. 'blocks.5' or 'blocks.*')"))?;
                    let layers: Vec<usize> = if hook == "blocks.*" {
                        (0..model.config.n_layers).collect()
                    } else {
                        let l = hook.strip_prefix("blocks.").and_then(|x| x.parse::<usize>().ok()).ok_or(format!(
                            "intervention {i}: field 'hook': op 'low_rank' names a block ('blocks.5' or 'blocks.*'), not '{hook}'"
                        ))?;
                        if l >= model.config.n_layers {
                            return Err(format!("intervention {i}: field 'hook': layer {l} is out of range (the model has {} layers)", model.config.n_layers));
                        }
                        vec![l]
                    };
                    if *rank == 0 {
                        return Err(format!("intervention {i}: field 'rank' must be at least 1"));
                    }
                    if *matrix == scalpel_engine::Matrix::Gate && !model.config.gated_mlp {
                        return Err(format!("intervention {i}: field 'matrix': this model's MLP has no gate matrix"));
                    }
                    for l in layers {
                        low_ranks.push(LowRank { index: i, layer: l, matrix: *matrix, rank: *rank });
                    }
                    continue;
                }
                _ => {}
            }
            let hook_name = iv.hook.as_deref().ok_or(format!("intervention {i}: missing field 'hook'"))?;
            let points = expand_hook(model, i, hook_name)?;
            let site = points[0].site;
            let (last, n_heads) = site_dims(model, site);
            if let Some(heads) = &iv.heads {
                let h = n_heads.ok_or(format!("intervention {i}: field 'heads': hook '{hook_name}' has no heads"))?;
                if let Some(&bad) = heads.iter().find(|&&x| x >= h) {
                    return Err(format!("intervention {i}: field 'heads': head {bad} is out of range (the hook has {h} heads)"));
                }
            }
            if let Some(ns) = &iv.neurons {
                let n = last.ok_or(format!("intervention {i}: field 'neurons' does not apply to '{hook_name}'"))?;
                if let Some(&bad) = ns.iter().find(|&&x| x >= n) {
                    return Err(format!("intervention {i}: field 'neurons': unit {bad} is out of range (the hook's last axis has {n})"));
                }
            }
            let positions = resolve_sel(i, "positions", &iv.positions, prompt_len)?;
            let need_len = |field: &str, v: &[f32]| -> Res<()> {
                match last {
                    Some(n) if v.len() != n => Err(format!(
                        "intervention {i}: field '{field}' has {} numbers but '{hook_name}' has {n} per position",
                        v.len()
                    )),
                    None => Err(format!("intervention {i}: field '{field}': '{hook_name}' takes no vectors")),
                    _ => Ok(()),
                }
            };
            let scores_like = matches!(site, Site::AttnScores | Site::Pattern);
            let (kind, op_name) = match &iv.op {
                Op::Add { vector, scale } => {
                    check_finite(i, "scale", &[*scale])?;
                    let v = build_vector(model, i, "vector", vector, &points, &mut warnings)?;
                    let v: Vec<f32> = v.iter().map(|x| x * scale).collect();
                    // On per-head hooks a vector may hold one d_head block per head.
                    let t = match (last, n_heads) {
                        (Some(d), Some(h)) if v.len() == d * h => Tensor::from_vec(v, (h, d), &scalpel_engine::Device::Cpu),
                        _ => {
                            need_len("vector", &v)?;
                            Tensor::new(v, &scalpel_engine::Device::Cpu)
                        }
                    };
                    (Kind::Add(t.map_err(|e| e.to_string())?), "add")
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
                    // The pooled mean over every token of every prompt.
                    let pos_axis = site_axes(site).0 - 1;
                    for &p in &points {
                        let mut acc: Option<Tensor> = None;
                        let mut tokens = 0usize;
                        for s in prompts {
                            let a = activation(model, s, p).map_err(|e| format!("intervention {i}: field 'over': {e}"))?;
                            tokens += a.dim(pos_axis).map_err(|e| e.to_string())?;
                            let m = a.sum_keepdim(pos_axis).map_err(|e| e.to_string())?;
                            acc = Some(match acc { None => m, Some(x) => (x + m).map_err(|e| e.to_string())? });
                        }
                        let m = (acc.expect("non-empty") / tokens as f64).map_err(|e| e.to_string())?;
                        means.insert(p, m.unsqueeze(0).map_err(|e| e.to_string())?);
                    }
                    (Kind::MeanOver(means), "mean")
                }
                Op::Patch { source } => (Kind::Patch(source_run(model, i, source, prompt_len, &points)?), "patch"),
                Op::ProjectOut { direction } => {
                    let v = build_vector(model, i, "direction", direction, &points, &mut warnings)?;
                    need_len("direction", &v)?;
                    (Kind::ProjectOut(unit(i, "direction", v)?), "project_out")
                }
                Op::SetProjection { direction, value, cap, source } => {
                    let v = build_vector(model, i, "direction", direction, &points, &mut warnings)?;
                    need_len("direction", &v)?;
                    let u = unit(i, "direction", v)?;
                    let mode = match (value, cap, source) {
                        (Some(x), None, None) => {
                            check_finite(i, "value", &[*x])?;
                            ProjMode::Value(*x)
                        }
                        (None, Some(c), None) => {
                            check_finite(i, "cap", &[*c])?;
                            ProjMode::Cap(*c)
                        }
                        (None, None, Some(s)) => {
                            let mut projs = source_run(model, i, s, prompt_len, &points)?;
                            for t in projs.values_mut() {
                                let last = t.rank() - 1;
                                *t = t.broadcast_mul(&u).and_then(|x| x.sum_keepdim(last)).map_err(|e| e.to_string())?;
                            }
                            ProjMode::Source(projs)
                        }
                        _ => return Err(format!("intervention {i}: give exactly one of 'value', 'cap' or 'source'")),
                    };
                    (Kind::SetProjection(u, mode), "set_projection")
                }
                Op::Knockout { keys } => {
                    if !scores_like {
                        return Err(format!(
                            "intervention {i}: op 'knockout' needs an attention hook ('blocks.L.attn.hook_attn_scores' or 'hook_pattern'), not '{hook_name}'"
                        ));
                    }
                    (Kind::Knockout(resolve_sel(i, "keys", keys, prompt_len)?), "knockout")
                }
                Op::KvAdd { vector, scale } => {
                    if !matches!(site, Site::RotK | Site::V) {
                        return Err(format!(
                            "intervention {i}: op 'kv_add' edits the KV cache: use 'blocks.L.attn.hook_rot_k' (keys as cached, after RoPE) or 'blocks.L.attn.hook_v', not '{hook_name}'"
                        ));
                    }
                    check_finite(i, "scale", &[*scale])?;
                    let v = build_vector(model, i, "vector", vector, &points, &mut warnings)?;
                    let v: Vec<f32> = v.iter().map(|x| x * scale).collect();
                    // One vector for every selected head, or one d_head block per KV head.
                    let d = model.config.d_head;
                    let per_head: Vec<(Option<Vec<usize>>, Vec<f32>)> = if v.len() == d * model.config.n_kv_heads {
                        (0..model.config.n_kv_heads)
                            .filter(|h| iv.heads.as_ref().is_none_or(|hs| hs.contains(h)))
                            .map(|h| (Some(vec![h]), v[h * d..(h + 1) * d].to_vec()))
                            .collect()
                    } else {
                        need_len("vector", &v)?;
                        vec![(iv.heads.clone(), v)]
                    };
                    let positions: Vec<usize> = match &positions {
                        Sel::All | Sel::Prompt(_) => (0..prompt_len).collect(),
                        Sel::Generated(_) => return Err(format!("intervention {i}: 'kv_add' edits the prompt's cache; positions 'generated' do not apply")),
                        Sel::Set(s) => {
                            if let Some(&p) = s.iter().find(|&&p| p >= prompt_len) {
                                return Err(format!("intervention {i}: field 'positions': {p} is not a prompt position (the prompt has {prompt_len} tokens)"));
                            }
                            s.iter().copied().collect()
                        }
                    };
                    for p in &points {
                        for (heads, vector) in &per_head {
                            kv_adds.push(KvAdd {
                                index: i,
                                layer: p.layer.expect("block hook"),
                                values: site == Site::V,
                                heads: heads.clone(),
                                positions: positions.clone(),
                                vector: vector.clone(),
                            });
                        }
                    }
                    continue;
                }
                Op::Conditional { direction, threshold, when, then, backtrack } => {
                    check_finite(i, "threshold", &[*threshold])?;
                    let v = build_vector(model, i, "direction", direction, &points, &mut warnings)?;
                    need_len("direction", &v)?;
                    if points.len() != 1 {
                        return Err(format!("intervention {i}: a conditional monitors one hook, not every layer"));
                    }
                    if site.head_axis().is_some() {
                        return Err(format!(
                            "intervention {i}: field 'hook': a conditional monitors a residual or MLP hook, not the per-head '{hook_name}'"
                        ));
                    }
                    for (j, t) in then.iter().enumerate() {
                        if matches!(t.op, Op::Insert { .. } | Op::LowRank { .. } | Op::KvAdd { .. } | Op::Conditional { .. }) {
                            return Err(format!("intervention {i}.then.{j}: only hook interventions can be conditional"));
                        }
                    }
                    let inner_doc = Document { version: doc.version, interventions: then.clone() };
                    let inner = Interventions::compile_with(model, &inner_doc, prompt_len, saes)
                        .map_err(|e| e.replacen("intervention ", &format!("intervention {i}.then."), 1))?;
                    warnings.extend(inner.warnings.iter().cloned());
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
                    (Kind::Conditional(Box::new(c)), "conditional")
                }
                Op::SaeClamp { latent, value } => {
                    check_finite(i, "value", &[*value])?;
                    let sae = points.first().and_then(|p| saes.get(p)).ok_or(format!(
                        "intervention {i}: op 'sae_clamp' needs the SAE for '{hook_name}' loaded (vectors::resolve; CLI: --sae DIR)"
                    ))?;
                    let at = sae.point(model).map_err(|e| format!("intervention {i}: {e}"))?;
                    if points != [at] {
                        return Err(format!("intervention {i}: field 'hook': the SAE reads '{}', not '{hook_name}'", at.name()));
                    }
                    if iv.heads.is_some() || iv.neurons.is_some() {
                        return Err(format!("intervention {i}: op 'sae_clamp' selects positions only (no 'heads' or 'neurons')"));
                    }
                    if *latent >= sae.d_sae {
                        return Err(format!("intervention {i}: field 'latent': {latent} is out of range (the SAE has {} latents)", sae.d_sae));
                    }
                    (Kind::SaeClamp(crate::vectors::SaeClamp { sae: sae.clone(), latent: *latent, value: *value }), "sae_clamp")
                }
                Op::Insert { .. } | Op::LowRank { .. } => unreachable!("handled above"),
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
        Ok(Interventions { items, ops, kv_adds, low_ranks, inserts, warnings })
    }

    pub fn report(&self) -> Vec<ItemReport> {
        self.items
            .iter()
            .zip(&self.ops)
            .map(|(it, op)| {
                let mut hooks: Vec<String> = it.points.iter().map(HookPoint::name).collect();
                let mut applications = it.applications;
                if let Kind::Conditional(c) = &it.kind {
                    for r in c.inner.report() {
                        hooks.extend(r.hooks);
                        applications += r.applications;
                    }
                }
                ItemReport { index: it.index, op: op.clone(), hooks, applications }
            })
            .chain(self.kv_adds.iter().map(|k| ItemReport {
                index: k.index,
                op: "kv_add".into(),
                hooks: vec![format!("blocks.{}.attn.{}", k.layer, if k.values { "hook_v" } else { "hook_rot_k" })],
                applications: 0,
            }))
            .chain(self.low_ranks.iter().map(|r| ItemReport {
                index: r.index,
                op: "low_rank".into(),
                hooks: vec![format!("blocks.{}", r.layer)],
                applications: 0,
            }))
            .collect()
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

    /// What each conditional intervention saw and did.
    pub fn conditional_traces(&self) -> Vec<ConditionalTrace> {
        self.items
            .iter()
            .filter_map(|it| match &it.kind {
                Kind::Conditional(c) => Some(ConditionalTrace {
                    index: it.index,
                    readings: c.readings.clone(),
                    fired: c.fired.clone(),
                    backtrack: c.backtrack,
                }),
                _ => None,
            })
            .collect()
    }

    /// Conditionals that fired for the first time since the last call and want
    /// to backtrack: (tokens to roll back, position where it fired).
    pub fn take_backtracks(&mut self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for it in self.items.iter_mut() {
            if let Kind::Conditional(c) = &mut it.kind {
                if c.backtrack > 0 && !c.forced && !c.fired.is_empty() {
                    c.forced = true;
                    c.active = true;
                    out.push((c.backtrack, c.fired[0]));
                }
            }
        }
        out
    }

    /// Forget monitor readings after `len` positions (after a rollback).
    pub fn rollback_to(&mut self, len: usize) {
        for it in self.items.iter_mut() {
            if let Kind::Conditional(c) = &mut it.kind {
                c.readings.retain(|r| r.0 < len);
            }
        }
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

/// `replacement` where the mask is on, `x` elsewhere. A select, not
/// x·(1−m) + r·m: attention scores hold −∞, and −∞·0 is NaN.
fn blend(x: &Tensor, m: &Tensor, replacement: &Tensor) -> candle_core::Result<Tensor> {
    let shape = x.shape();
    m.broadcast_as(shape)?.ne(0f32)?.where_cond(&replacement.broadcast_as(shape)?, x)
}

/// x scaled by `factor` where the mask is on. Masked attention scores (−∞)
/// stay −∞, so scaling or zeroing scores keeps the causal mask.
fn scale_masked(x: &Tensor, m: &Tensor, factor: f64) -> candle_core::Result<Tensor> {
    let scaled = x.affine(factor, 0.0)?;
    let scaled = x.ne(f32::NEG_INFINITY)?.where_cond(&scaled, x)?;
    blend(x, m, &scaled)
}

impl Hook for Interventions {
    fn wants(&self, point: HookPoint) -> bool {
        self.items.iter().any(|it| {
            it.points.contains(&point) || matches!(&it.kind, Kind::Conditional(c) if c.inner.wants(point))
        })
    }

    fn call(&mut self, ctx: &HookCtx, value: &Tensor) -> scalpel_engine::Result<Option<Tensor>> {
        let mut x = value.clone();
        let mut changed = false;
        for it in self.items.iter_mut() {
            if let Kind::Conditional(c) = &mut it.kind {
                if it.points.contains(&ctx.point) {
                    // Monitor: the newest token's projection (batch item 0).
                    let t = x.dim(1)?;
                    let last = x.narrow(1, t - 1, 1)?.get(0)?.flatten_all()?;
                    let proj = (last * &c.direction)?.sum_all()?.to_scalar::<f32>()?;
                    let abs = ctx.start_pos + t - 1;
                    c.readings.push((abs, proj));
                    let on = match c.when {
                        When::Above => proj > c.threshold,
                        When::Below => proj < c.threshold,
                    };
                    if on && !c.active {
                        c.fired.push(abs);
                    }
                    c.active = c.forced || on;
                }
                if c.active && c.inner.wants(ctx.point) {
                    if let Some(y) = c.inner.call(ctx, &x)? {
                        x = y;
                        changed = true;
                    }
                }
                continue;
            }
            if !it.points.contains(&ctx.point) {
                continue;
            }
            let shape = x.dims().to_vec();
            let Some(m) = mask(it, ctx, &shape)? else { continue };
            let (pos_axis, _) = site_axes(ctx.point.site);
            x = match &mut it.kind {
                Kind::Add(v) => x.broadcast_add(&m.broadcast_mul(v)?)?,
                Kind::Scale(f) => scale_masked(&x, &m, *f as f64)?,
                Kind::Zero => scale_masked(&x, &m, 0.0)?,
                Kind::MeanOfPrompt(means) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = means.entry(ctx.point) {
                        if ctx.start_pos != 0 {
                            return Err(scalpel_engine::Error::input(format!(
                                "intervention {}: 'mean' needs the whole prompt in one pass", it.index
                            )));
                        }
                        e.insert(x.mean_keepdim(pos_axis)?);
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
                    let target = match mode {
                        ProjMode::Value(c) => proj.ones_like()?.affine(*c as f64, 0.0)?,
                        ProjMode::Cap(c) => proj.clamp(f32::NEG_INFINITY, *c)?,
                        ProjMode::Source(src) => {
                            // Positions past the source's length (generated tokens)
                            // have no source value: their projection is kept.
                            let s = &src[&ctx.point];
                            let len = shape[pos_axis];
                            let have = s.dim(pos_axis)?.saturating_sub(ctx.start_pos).min(len);
                            if have == 0 {
                                continue;
                            }
                            let s = s.narrow(pos_axis, ctx.start_pos, have)?;
                            if have < len {
                                Tensor::cat(&[&s, &proj.narrow(pos_axis, have, len - have)?], pos_axis)?
                            } else {
                                s
                            }
                        }
                    };
                    x.broadcast_add(&target.broadcast_sub(&proj)?.broadcast_mul(u)?.broadcast_mul(&m)?)?
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
                Kind::SaeClamp(c) => c.apply(&x, &m)?,
                Kind::Conditional(_) => unreachable!("handled above"),
            };
            it.applications += 1;
            changed = true;
        }
        Ok(changed.then_some(x))
    }
}
