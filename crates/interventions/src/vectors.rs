//! Steering vectors and directions: extraction from prompt sets (ActAdd,
//! CAA mean difference, RepE principal component, probe weight) with a
//! per-layer separation score, llama.cpp / repeng control vectors (GGUF
//! import and export), and SAELens sparse autoencoders (encode, decode,
//! decoder rows, clamping a latent through the error term).
//!
//! Like the rest of the crate this module does no I/O: callers hand it bytes
//! (the CLI reads files, the browser passes `ArrayBuffer`s).
//!
//! Conventions (docs/vectors.md):
//! - A vector read "at a position" is the hook's value for that token,
//!   flattened per position (`d_model`, `d_mlp`, or `n_heads·d_head` for
//!   `attn.hook_z`); `Pool::Mean` averages over the prompt's tokens.
//! - Every method yields a unit direction `u`, sign-aligned so the positive
//!   examples project higher, and the vector `gap · u` where
//!   `gap = (mean(pos) − mean(neg)) · u`. For ActAdd and mean difference
//!   this is exactly the difference vector; for PCA and probes it gives the
//!   unit direction the magnitude of the concept's separation.
//! - Control vector `direction.{k}` is added to the output of block `k`
//!   (0-based), i.e. `blocks.{k}.hook_resid_post` (= `blocks.{k+1}.hook_resid_pre`),
//!   as llama.cpp's loader and repeng apply it.

use std::fmt;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{ActivationCache, HookPoint, Logits, Model, Site};
use serde::Serialize;
pub use scalpel_types::vectors::{LayerScore, Method, Pool};

use crate::spec::{Document, Intervention, Op, Positions, Vector, VectorSource};

type Res<T> = Result<T, String>;

fn ce(e: impl fmt::Display) -> String {
    e.to_string()
}

// ------------------------------------------------------------------ reading



/// The warning every reader of position 0 gets.
pub fn sink_warning(what: &str) -> String {
    format!(
        "{what} is read at position 0, usually the attention sink (its norm can be 10x the others'); prefer position -1"
    )
}

/// Per-position length of a hook's value when flattened.
pub fn flat_width(model: &Model, site: Site) -> Res<usize> {
    let c = &model.config;
    Ok(match site {
        Site::AttnScores | Site::Pattern => {
            return Err(format!(
                "'{}' is an attention pattern (query × key): vectors and probes read per-position values (residual stream, MLP, attention output, q/k/v/z)",
                site.suffix()
            ))
        }
        Site::Q | Site::RotQ | Site::Z => c.n_heads * c.d_head,
        Site::K | Site::V | Site::RotK => c.n_kv_heads * c.d_head,
        Site::MlpPre | Site::MlpPreLinear | Site::MlpPost => c.d_mlp,
        _ => c.d_model,
    })
}

/// Runs `prompt` once and reads every point at the pooled position (each
/// flattened per position). Returns the values and the token count.
pub fn read_points(model: &Model, prompt: &str, points: &[HookPoint], pool: Pool) -> Res<(Vec<Vec<f32>>, usize)> {
    for p in points {
        flat_width(model, p.site)?;
    }
    let ids = model.tokenizer().encode(prompt).map_err(ce)?;
    if ids.is_empty() {
        return Err(format!("prompt {prompt:?} tokenizes to nothing"));
    }
    let mut cache = ActivationCache::new(points.iter().copied());
    model.forward(&model.ids_tensor(&ids).map_err(ce)?, None, Some(&mut cache), Logits::Last).map_err(ce)?;
    let t = ids.len();
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        let v = cache.get(p).ok_or_else(|| format!("hook '{}' was not reached", p.name()))?.squeeze(0).map_err(ce)?;
        let row = match pool {
            Pool::At(pos) => {
                let abs = if pos < 0 { t as i64 + pos } else { pos };
                if abs < 0 || abs >= t as i64 {
                    return Err(format!("position {pos} is outside prompt {prompt:?} ({t} tokens)"));
                }
                v.get(abs as usize).map_err(ce)?
            }
            Pool::Mean => v.mean(0).map_err(ce)?,
        };
        out.push(row.flatten_all().and_then(|r| r.to_vec1::<f32>()).map_err(ce)?);
    }
    Ok((out, t))
}

/// Activations of a positive and a negative prompt set at a list of points.
#[derive(Clone, Debug)]
pub struct Acts {
    pub points: Vec<HookPoint>,
    pub pool: Pool,
    /// `[prompt][point][unit]`
    pub pos: Vec<Vec<Vec<f32>>>,
    pub neg: Vec<Vec<Vec<f32>>>,
    pub warnings: Vec<String>,
}

impl Acts {
    /// The examples of one point (optionally a slice `range` of each row).
    pub fn at(&self, point: usize, range: Option<(usize, usize)>) -> (Vec<&[f32]>, Vec<&[f32]>) {
        fn cut(r: &[Vec<f32>], point: usize, range: Option<(usize, usize)>) -> &[f32] {
            match range {
                Some((a, b)) => &r[point][a..b],
                None => &r[point],
            }
        }
        (
            self.pos.iter().map(|r| cut(r, point, range)).collect(),
            self.neg.iter().map(|r| cut(r, point, range)).collect(),
        )
    }
}

/// One forward pass per prompt, reading every point.
pub fn collect(model: &Model, positive: &[String], negative: &[String], points: &[HookPoint], pool: Pool) -> Res<Acts> {
    if positive.is_empty() || negative.is_empty() {
        return Err(format!(
            "the positive set has {} prompts and the negative set {}: each needs at least one",
            positive.len(),
            negative.len()
        ));
    }
    if points.is_empty() {
        return Err("no hook points to read".into());
    }
    let mut warnings = Vec::new();
    if pool == Pool::At(0) {
        warnings.push(sink_warning("the vector"));
    }
    let read = |set: &[String], name: &str| -> Res<Vec<Vec<Vec<f32>>>> {
        set.iter()
            .enumerate()
            .map(|(i, s)| read_points(model, s, points, pool).map(|x| x.0).map_err(|e| format!("{name} prompt {i}: {e}")))
            .collect()
    };
    let pos = read(positive, "positive")?;
    let neg = read(negative, "negative")?;
    Ok(Acts { points: points.to_vec(), pool, pos, neg, warnings })
}

/// The points a hook name sweeps: `blocks.L.x` and `blocks.*.x` both sweep
/// every layer of site `x`; the index of `L` is returned as the chosen one.
pub fn sweep_points(model: &Model, hook: &str) -> Res<(Vec<HookPoint>, Option<usize>)> {
    if let Some(rest) = hook.strip_prefix("blocks.*.") {
        let pts = (0..model.config.n_layers)
            .map(|l| model.hook_point(&format!("blocks.{l}.{rest}")).map_err(ce))
            .collect::<Res<Vec<_>>>()?;
        return Ok((pts, None));
    }
    let p = model.hook_point(hook).map_err(ce)?;
    match p.layer {
        None => Ok((vec![p], Some(0))),
        Some(l) => Ok(((0..model.config.n_layers).map(|k| HookPoint::block(k, p.site)).collect(), Some(l))),
    }
}

// ------------------------------------------------------------------ methods


#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodOptions {
    /// PCA: subtract the mean difference before the SVD (repeng's `pca_diff`,
    /// sklearn `PCA`). Off: the uncentered first singular vector (RepE with
    /// random pair flipping, llama.cpp's cvector-generator).
    pub center: bool,
    /// Probe: L2 strength on standardized features (mean loss + l2/2·|w|²).
    pub l2: f64,
}

impl Default for MethodOptions {
    fn default() -> Self {
        MethodOptions { center: false, l2: crate::probes::DEFAULT_L2 }
    }
}

fn mean_of(xs: &[&[f32]]) -> Vec<f64> {
    let d = xs[0].len();
    let mut m = vec![0f64; d];
    for x in xs {
        for (a, &v) in m.iter_mut().zip(x.iter()) {
            *a += v as f64;
        }
    }
    let n = xs.len() as f64;
    m.iter_mut().for_each(|a| *a /= n);
    m
}

fn dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, &y)| x * y as f64).sum()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// First principal component (unit) of the rows of `rows` (m × d).
pub fn first_pc(rows: &[Vec<f64>], center: bool) -> Res<Vec<f64>> {
    let m = rows.len();
    if m == 0 {
        return Err("PCA needs at least one pair".into());
    }
    let d = rows[0].len();
    let mut data: Vec<Vec<f64>> = rows.to_vec();
    if center {
        if m < 2 {
            return Err("centered PCA needs at least two pairs (one centered difference is zero)".into());
        }
        let mut mu = vec![0f64; d];
        for r in &data {
            for (a, b) in mu.iter_mut().zip(r) {
                *a += b / m as f64;
            }
        }
        for r in data.iter_mut() {
            for (a, b) in r.iter_mut().zip(&mu) {
                *a -= b;
            }
        }
    }
    // Top eigenvector of the m×m Gram matrix, mapped back: u ∝ Dᵀe.
    let g = nalgebra::DMatrix::<f64>::from_fn(m, m, |i, j| data[i].iter().zip(&data[j]).map(|(a, b)| a * b).sum());
    let eig = nalgebra::SymmetricEigen::new(g);
    let (mut best, mut best_val) = (0usize, f64::NEG_INFINITY);
    for (i, &v) in eig.eigenvalues.iter().enumerate() {
        if v > best_val {
            best = i;
            best_val = v;
        }
    }
    let e = eig.eigenvectors.column(best);
    let mut u = vec![0f64; d];
    for (i, r) in data.iter().enumerate() {
        for (a, b) in u.iter_mut().zip(r) {
            *a += e[i] * b;
        }
    }
    let n = norm(&u);
    if n.is_nan() || n <= 0.0 || n.is_infinite() {
        return Err("the differences have no variance to take a principal component of (all zero?)".into());
    }
    u.iter_mut().for_each(|x| *x /= n);
    Ok(u)
}

/// The unit direction of `method` for these examples, sign-aligned so the
/// positive mean projects higher.
pub fn unit_direction(method: Method, pos: &[&[f32]], neg: &[&[f32]], opts: &MethodOptions) -> Res<Vec<f64>> {
    unit_direction_opt(method, pos, neg, opts)?
        .ok_or_else(|| "the direction is zero: the positive and negative activations are identical".into())
}

/// `unit_direction`, with `None` when the sets do not differ at all.
fn unit_direction_opt(method: Method, pos: &[&[f32]], neg: &[&[f32]], opts: &MethodOptions) -> Res<Option<Vec<f64>>> {
    if pos.is_empty() || neg.is_empty() {
        return Err("each set needs at least one example".into());
    }
    let (mp, mn) = (mean_of(pos), mean_of(neg));
    let diff: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
    let mut u = match method {
        Method::Actadd => {
            if pos.len() != 1 || neg.len() != 1 {
                return Err(format!(
                    "actadd takes one prompt pair ({} positive, {} negative given); use mean_diff or pca for sets",
                    pos.len(),
                    neg.len()
                ));
            }
            diff.clone()
        }
        Method::MeanDiff => diff.clone(),
        Method::Pca => {
            if pos.len() != neg.len() {
                return Err(format!(
                    "pca pairs pos[i] with neg[i]: the sets must have the same size ({} vs {})",
                    pos.len(),
                    neg.len()
                ));
            }
            let rows: Vec<Vec<f64>> = pos
                .iter()
                .zip(neg)
                .map(|(p, n)| p.iter().zip(n.iter()).map(|(&a, &b)| a as f64 - b as f64).collect())
                .collect();
            if rows.iter().all(|r| r.iter().all(|&x| x == 0.0)) {
                return Ok(None);
            }
            first_pc(&rows, opts.center)?
        }
        Method::Probe => {
            let xs: Vec<&[f32]> = pos.iter().chain(neg).copied().collect();
            let ys: Vec<bool> = (0..xs.len()).map(|i| i < pos.len()).collect();
            crate::probes::LogReg::fit(&xs, &ys, opts.l2)?.direction()
        }
    };
    let n = norm(&u);
    if !n.is_finite() {
        return Err("the direction is not finite".into());
    }
    if n <= 0.0 {
        return Ok(None);
    }
    u.iter_mut().for_each(|x| *x /= n);
    if u.iter().zip(&diff).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
        u.iter_mut().for_each(|x| *x = -*x);
    }
    Ok(Some(u))
}

fn projections(u: &[f64], xs: &[&[f32]]) -> Vec<f64> {
    xs.iter().map(|x| dot(u, x)).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Cohen's d with the pooled (ddof = 1) standard deviation.
pub fn cohens_d(a: &[f64], b: &[f64]) -> Option<f64> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    if na + nb < 3.0 {
        return None;
    }
    let (ma, mb) = (mean(a), mean(b));
    let ss = a.iter().map(|x| (x - ma).powi(2)).sum::<f64>() + b.iter().map(|x| (x - mb).powi(2)).sum::<f64>();
    let s = (ss / (na + nb - 2.0)).sqrt();
    if s > 0.0 {
        Some((ma - mb) / s)
    } else if ma != mb {
        Some(f64::INFINITY.copysign(ma - mb))
    } else {
        Some(0.0)
    }
}

fn classify(u: &[f64], train_pos: &[&[f32]], train_neg: &[&[f32]]) -> impl Fn(&[f32]) -> bool {
    let t = (mean(&projections(u, train_pos)) + mean(&projections(u, train_neg))) / 2.0;
    let u = u.to_vec();
    move |x: &[f32]| dot(&u, x) > t
}

fn loo_accuracy(method: Method, pos: &[&[f32]], neg: &[&[f32]], opts: &MethodOptions) -> Res<Option<f64>> {
    let (np, nn) = (pos.len(), neg.len());
    if np < 2 || nn < 2 || method == Method::Actadd {
        return Ok(None);
    }
    let mut correct = 0usize;
    let mut total = 0usize;
    if method == Method::Pca {
        for j in 0..np {
            let tp: Vec<&[f32]> = pos.iter().enumerate().filter(|&(i, _)| i != j).map(|x| *x.1).collect();
            let tn: Vec<&[f32]> = neg.iter().enumerate().filter(|&(i, _)| i != j).map(|x| *x.1).collect();
            let u = match unit_direction_opt(method, &tp, &tn, opts) {
                Ok(u) => u.unwrap_or_else(|| vec![0.0; pos[j].len()]),
                // centered PCA with one remaining pair is undefined
                Err(_) if opts.center && tp.len() < 2 => return Ok(None),
                Err(e) => return Err(e),
            };
            let f = classify(&u, &tp, &tn);
            correct += f(pos[j]) as usize + (!f(neg[j])) as usize;
            total += 2;
        }
    } else {
        for j in 0..np + nn {
            let (tp, tn): (Vec<&[f32]>, Vec<&[f32]>) = if j < np {
                (pos.iter().enumerate().filter(|&(i, _)| i != j).map(|x| *x.1).collect(), neg.to_vec())
            } else {
                (pos.to_vec(), neg.iter().enumerate().filter(|&(i, _)| i != j - np).map(|x| *x.1).collect())
            };
            let u = unit_direction_opt(method, &tp, &tn, opts)?.unwrap_or_else(|| vec![0.0; pos[0].len()]);
            let f = classify(&u, &tp, &tn);
            let ok = if j < np { f(pos[j]) } else { !f(neg[j - np]) };
            correct += ok as usize;
            total += 1;
        }
    }
    Ok(Some(correct as f64 / total as f64))
}

fn act_norm(pos: &[&[f32]], neg: &[&[f32]]) -> f64 {
    pos.iter().chain(neg).map(|x| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()).sum::<f64>()
        / (pos.len() + neg.len()) as f64
}

/// Direction (as `gap · u`) and separation score for one point.
pub fn extract_at(method: Method, pos: &[&[f32]], neg: &[&[f32]], opts: &MethodOptions) -> Res<(Vec<f32>, LayerScore)> {
    let Some(u) = unit_direction_opt(method, pos, neg, opts)? else {
        // The sets do not differ here (e.g. resid_pre of block 0 when both
        // prompts end in the same token): a zero vector, nothing separated.
        return Ok((
            vec![0.0; pos[0].len()],
            LayerScore {
                hook: String::new(),
                layer: None,
                norm: 0.0,
                act_norm: act_norm(pos, neg),
                cohens_d: None,
                loo_accuracy: None,
                accuracy: 0.5,
            },
        ));
    };
    let (pp, pn) = (projections(&u, pos), projections(&u, neg));
    let gap = mean(&pp) - mean(&pn);
    let f = classify(&u, pos, neg);
    let correct = pos.iter().filter(|x| f(x)).count() + neg.iter().filter(|x| !f(x)).count();
    let act_norm = act_norm(pos, neg);
    let score = LayerScore {
        hook: String::new(),
        layer: None,
        norm: gap,
        act_norm,
        cohens_d: cohens_d(&pp, &pn),
        loo_accuracy: loo_accuracy(method, pos, neg, opts)?,
        accuracy: correct as f64 / (pos.len() + neg.len()) as f64,
    };
    Ok((u.iter().map(|x| (x * gap) as f32).collect(), score))
}

/// Vectors and scores at every point of a sweep.
#[derive(Clone, Debug)]
pub struct Extraction {
    pub method: Method,
    pub points: Vec<HookPoint>,
    pub vectors: Vec<Vec<f32>>,
    pub scores: Vec<LayerScore>,
    pub warnings: Vec<String>,
}

impl Extraction {
    /// Index of the point with the best leave-one-out accuracy, then Cohen's d
    /// (`None` when nothing is scored, e.g. a single ActAdd pair).
    pub fn best(&self) -> Option<usize> {
        let key = |s: &LayerScore| (s.loo_accuracy.unwrap_or(-1.0), s.cohens_d.unwrap_or(f64::NEG_INFINITY));
        let scored = |k: &usize| self.scores[*k].loo_accuracy.is_some() || self.scores[*k].cohens_d.is_some();
        (0..self.scores.len()).filter(scored).max_by(|&a, &b| {
            let (ka, kb) = (key(&self.scores[a]), key(&self.scores[b]));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(b.cmp(&a))
        })
    }
}

/// Extracts a vector at every point from already collected activations.
pub fn extract(acts: &Acts, method: Method, opts: &MethodOptions) -> Res<Extraction> {
    let mut vectors = Vec::new();
    let mut scores = Vec::new();
    for (k, p) in acts.points.iter().enumerate() {
        let (pos, neg) = acts.at(k, None);
        let (v, mut s) = extract_at(method, &pos, &neg, opts).map_err(|e| format!("{}: {e}", p.name()))?;
        s.hook = p.name();
        s.layer = p.layer;
        vectors.push(v);
        scores.push(s);
    }
    Ok(Extraction { method, points: acts.points.clone(), vectors, scores, warnings: acts.warnings.clone() })
}

/// A vector source of the intervention document computed from prompt sets
/// at one point (`{"from": "pca"}`): returns `gap · u` and warnings.
pub fn vector_from_sets(
    model: &Model,
    method: Method,
    opts: &MethodOptions,
    positive: &[String],
    negative: &[String],
    point: HookPoint,
    pool: Pool,
) -> Res<(Vec<f32>, Vec<String>)> {
    let acts = collect(model, positive, negative, &[point], pool)?;
    let (pos, neg) = acts.at(0, None);
    let (v, _) = extract_at(method, &pos, &neg, opts)?;
    Ok((v, acts.warnings))
}

/// An intervention document adding `scale · vector` at each point.
pub fn steering_document(points: &[HookPoint], vectors: &[Vec<f32>], scale: f32) -> Document {
    Document {
        version: crate::spec::VERSION,
        interventions: points
            .iter()
            .zip(vectors)
            .map(|(p, v)| Intervention {
                hook: Some(p.name()),
                op: Op::Add { vector: Vector::Values(v.clone()), scale },
                positions: Positions::default(),
                heads: None,
                neurons: None,
                enabled: true,
            })
            .collect(),
    }
}

// ------------------------------------------------------------------ control vectors (GGUF)

/// A llama.cpp / repeng control vector: `direction.{k}` tensors, each added
/// to the output of block `k` (`blocks.{k}.hook_resid_post`).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlVector {
    pub model_hint: Option<String>,
    /// (k, values), sorted by k.
    pub directions: Vec<(usize, Vec<f32>)>,
}

/// The hook a control vector's `direction.{k}` is applied at.
pub fn control_hook(k: usize) -> String {
    format!("blocks.{k}.hook_resid_post")
}

/// The control-vector layer index `k` of a residual-stream hook point:
/// `blocks.{k}.hook_resid_post` → k, `blocks.{l}.hook_resid_pre` → l − 1.
pub fn control_layer(point: HookPoint) -> Res<usize> {
    match (point.site, point.layer) {
        (Site::ResidPost, Some(k)) => Ok(k),
        (Site::ResidPre, Some(l)) if l > 0 => Ok(l - 1),
        _ => Err(format!(
            "'{}' has no control-vector layer: control vectors are added to a block's output (blocks.K.hook_resid_post = blocks.K+1.hook_resid_pre)",
            point.name()
        )),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

const GGUF_ALIGN: usize = 32;

/// Writes a control vector as GGUF v3 (F32 tensors `direction.{k}`,
/// `general.architecture = controlvector`, `controlvector.model_hint`,
/// `controlvector.layer_count`), the layout repeng and llama.cpp write.
pub fn write_control_vector(cv: &ControlVector) -> Res<Vec<u8>> {
    if cv.directions.is_empty() {
        return Err("a control vector needs at least one direction".into());
    }
    let d = cv.directions[0].1.len();
    for (k, v) in &cv.directions {
        if v.len() != d || d == 0 {
            return Err(format!("direction.{k} has {} values but direction.{} has {d}", v.len(), cv.directions[0].0));
        }
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("direction.{k} has a non-finite value at index {j}"));
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(cv.directions.len() as u64).to_le_bytes());
    out.extend_from_slice(&3u64.to_le_bytes());
    put_str(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, "controlvector");
    put_str(&mut out, "controlvector.model_hint");
    out.extend_from_slice(&8u32.to_le_bytes());
    put_str(&mut out, cv.model_hint.as_deref().unwrap_or(""));
    put_str(&mut out, "controlvector.layer_count");
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(cv.directions.len() as u32).to_le_bytes());
    let bytes_per = (d * 4).div_ceil(GGUF_ALIGN) * GGUF_ALIGN;
    for (i, (k, _)) in cv.directions.iter().enumerate() {
        put_str(&mut out, &format!("direction.{k}"));
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(d as u64).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend_from_slice(&((i * bytes_per) as u64).to_le_bytes());
    }
    out.resize(out.len().div_ceil(GGUF_ALIGN) * GGUF_ALIGN, 0);
    for (_, v) in &cv.directions {
        let start = out.len();
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.resize(start + bytes_per, 0);
    }
    Ok(out)
}

/// Reads a control vector with the validating GGUF reader. `name` names the
/// file in errors. Returns the vector and warnings.
pub fn read_control_vector(name: &str, bytes: &[u8]) -> Res<(ControlVector, Vec<String>)> {
    let g = scalpel_engine::gguf::Gguf::parse(name, bytes).map_err(ce)?;
    let mut warnings = Vec::new();
    match g.get("general.architecture").map(|v| v.as_str()) {
        Some(Some("controlvector")) => {}
        Some(Some(other)) => {
            return Err(format!(
                "{name}: general.architecture is '{other}', not 'controlvector': this is not a control vector file"
            ))
        }
        Some(None) => return Err(format!("{name}: general.architecture is not a string")),
        None => warnings.push(format!("{name}: no general.architecture key (expected 'controlvector'); reading the direction.* tensors anyway")),
    }
    let model_hint = g.get("controlvector.model_hint").and_then(|v| v.as_str()).map(str::to_owned);
    let mut dirs: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut d: Option<usize> = None;
    for t in &g.tensors {
        let k = t
            .name
            .strip_prefix("direction.")
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("{name}: tensor '{}' is not named direction.<layer>", t.name))?;
        if t.shape.len() != 1 {
            return Err(format!("{name}: tensor '{}' has shape {:?}; a direction is one-dimensional", t.name, t.shape));
        }
        match d {
            None => d = Some(t.shape[0]),
            Some(d0) if d0 != t.shape[0] => {
                return Err(format!("{name}: tensor '{}' has {} values but the others have {d0}", t.name, t.shape[0]))
            }
            _ => {}
        }
        let v: Vec<f32> = g
            .qtensor(&t.name)
            .and_then(|q| Ok(q.dequantize(&Device::Cpu)?))
            .map_err(ce)?
            .to_vec1()
            .map_err(ce)?;
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!("{name}: tensor '{}' has a non-finite value at index {j}", t.name));
        }
        // llama.cpp sums repeated layers of one file.
        match dirs.iter_mut().find(|(kk, _)| *kk == k) {
            Some((_, acc)) => acc.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            None => dirs.push((k, v)),
        }
    }
    if dirs.is_empty() {
        return Err(format!("{name}: no direction.* tensors"));
    }
    dirs.sort_by_key(|x| x.0);
    if let Some(n) = g.get("controlvector.layer_count").and_then(|v| v.as_u64()) {
        if n as usize != dirs.len() {
            warnings.push(format!("{name}: controlvector.layer_count is {n} but the file has {} directions", dirs.len()));
        }
    }
    Ok((ControlVector { model_hint, directions: dirs }, warnings))
}

/// Turns a control vector into an intervention document for `model`: one
/// `add` at `blocks.{k}.hook_resid_post` per direction, at every position
/// (llama.cpp's behaviour, prompt included), times `scale` (its strength).
pub fn control_vector_document(model: &Model, cv: &ControlVector, scale: f32) -> Res<(Document, Vec<String>)> {
    let mut warnings = Vec::new();
    let arch = model.config.arch.name();
    if let Some(h) = &cv.model_hint {
        if !h.is_empty() && h != arch {
            warnings.push(format!("the control vector was made for a '{h}' model; this model is '{arch}'"));
        }
    }
    let (n, d) = (model.config.n_layers, model.config.d_model);
    let mut points = Vec::new();
    let mut vectors = Vec::new();
    for (k, v) in &cv.directions {
        if v.len() != d {
            return Err(format!("direction.{k} has {} values; this model's d_model is {d}", v.len()));
        }
        if *k >= n {
            return Err(format!(
                "direction.{k} is past the model's last block ({}): it would be added to the output of block {k}",
                n - 1
            ));
        }
        if *k == 0 {
            warnings.push("direction.0 (block 0's output) is applied here, but llama.cpp rejects layer index 0".into());
        }
        points.push(HookPoint::block(*k, Site::ResidPost));
        vectors.push(v.clone());
    }
    Ok((steering_document(&points, &vectors, scale), warnings))
}

/// A control vector from extracted vectors at residual-stream points.
/// Layer 0 (block 0's output) is left out: llama.cpp refuses the whole file
/// if it has `direction.0`.
pub fn to_control_vector(model: &Model, points: &[HookPoint], vectors: &[Vec<f32>], normalize: bool) -> Res<(ControlVector, Vec<String>)> {
    let mut dirs = Vec::new();
    let mut warnings = Vec::new();
    for (p, v) in points.iter().zip(vectors) {
        if p.site == Site::ResidPre && p.layer == Some(0) {
            warnings.push(format!("{}: left out of the control vector (the embeddings are no block's output)", p.name()));
            continue;
        }
        let k = control_layer(*p)?;
        if k == 0 {
            warnings.push(format!("{}: left out of the control vector (llama.cpp rejects direction.0)", p.name()));
            continue;
        }
        let mut v = v.clone();
        if normalize {
            let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            if n > 0.0 {
                v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
            }
        }
        dirs.push((k, v));
    }
    if dirs.is_empty() {
        return Err("no layer can be written as a control vector".into());
    }
    dirs.sort_by_key(|x| x.0);
    Ok((ControlVector { model_hint: Some(model.config.arch.name().to_owned()), directions: dirs }, warnings))
}

// ------------------------------------------------------------------ SAEs

/// A SAELens SAE's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeArch {
    /// ReLU.
    Standard,
    /// ReLU(h)·[h > threshold].
    JumpRelu,
    /// The k largest pre-activations, ReLU'd; the rest zero.
    TopK(usize),
}

/// SAELens's run-time input normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeNorm {
    None,
    /// x · √d_in / |x| in, undone on the way out.
    ConstantNormRescale,
    /// (x − mean) / (std + 1e-5) with the unbiased std, undone on the way out.
    LayerNorm,
}

/// A sparse autoencoder in SAELens's format.
pub struct Sae {
    pub name: String,
    pub hook_name: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub arch: SaeArch,
    pub apply_b_dec_to_input: bool,
    pub norm: SaeNorm,
    /// For `attn.hook_z` SAEs of one head (`hook_head_index`).
    pub head_index: Option<usize>,
    w_enc: Tensor,
    w_dec: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
    threshold: Option<Tensor>,
}

impl fmt::Debug for Sae {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sae({} at {}, {:?}, {}→{})", self.name, self.hook_name, self.arch, self.d_in, self.d_sae)
    }
}

/// Per-row normalization constants, to undo on decode.
struct NormStats {
    scale: Option<Tensor>,
    shift: Option<Tensor>,
}

fn cfg_get<'a>(cfg: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    cfg.get(key)
        .filter(|v| !v.is_null())
        .or_else(|| cfg.get("metadata").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
        .or_else(|| cfg.get("meta").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
}

impl Sae {
    /// Loads `cfg.json` and `sae_weights.safetensors` (bytes). `name` names
    /// the SAE in errors.
    pub fn load(name: &str, cfg_json: &[u8], weights: &[u8]) -> Res<Sae> {
        let cfg: serde_json::Value =
            serde_json::from_slice(cfg_json).map_err(|e| format!("{name}: cfg.json is not valid JSON: {e}"))?;
        let int = |k: &str| -> Res<usize> {
            cfg_get(&cfg, k)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| format!("{name}: cfg.json needs an integer '{k}'"))
        };
        let (d_in, d_sae) = (int("d_in")?, int("d_sae")?);
        if d_in == 0 || d_sae == 0 {
            return Err(format!("{name}: d_in and d_sae must be positive"));
        }
        let hook_name = cfg_get(&cfg, "hook_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{name}: cfg.json has no 'hook_name' (top level or in 'metadata')"))?
            .to_owned();
        let arch_s = cfg_get(&cfg, "architecture").and_then(|v| v.as_str()).unwrap_or("standard");
        let arch = match arch_s {
            "standard" => SaeArch::Standard,
            "jumprelu" => SaeArch::JumpRelu,
            "topk" => {
                let k = cfg_get(&cfg, "k")
                    .or_else(|| cfg_get(&cfg, "activation_fn_kwargs").and_then(|a| a.get("k")))
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| format!("{name}: a topk SAE needs an integer 'k' in cfg.json"))? as usize;
                if k == 0 || k > d_sae {
                    return Err(format!("{name}: k = {k} must be in 1..={d_sae}"));
                }
                SaeArch::TopK(k)
            }
            other => {
                return Err(format!(
                    "{name}: architecture '{other}' is not supported (supported: standard, jumprelu, topk)"
                ))
            }
        };
        if cfg_get(&cfg, "rescale_acts_by_decoder_norm").and_then(|v| v.as_bool()) == Some(true) {
            return Err(format!("{name}: rescale_acts_by_decoder_norm = true is not supported"));
        }
        if let Some(r) = cfg_get(&cfg, "reshape_activations").and_then(|v| v.as_str()) {
            if r != "none" && r != "hook_z" {
                return Err(format!("{name}: reshape_activations '{r}' is not supported (none, hook_z)"));
            }
        }
        let norm = match cfg_get(&cfg, "normalize_activations").and_then(|v| v.as_str()).unwrap_or("none") {
            // SAELens itself applies nothing at run time for this one when
            // loading from disk (the factor is folded in at from_pretrained).
            "none" | "expected_average_only_in" => SaeNorm::None,
            "constant_norm_rescale" => SaeNorm::ConstantNormRescale,
            "layer_norm" => SaeNorm::LayerNorm,
            other => return Err(format!("{name}: normalize_activations '{other}' is not supported")),
        };
        let apply_b_dec_to_input = cfg_get(&cfg, "apply_b_dec_to_input").and_then(|v| v.as_bool()).unwrap_or(true);
        let head_index = cfg_get(&cfg, "hook_head_index").and_then(|v| v.as_u64()).map(|x| x as usize);

        let st = safetensors::SafeTensors::deserialize(weights)
            .map_err(|e| format!("{name}: sae_weights.safetensors: {e}"))?;
        let tensor = |key: &str, shape: &[usize]| -> Res<Option<Tensor>> {
            let Ok(view) = st.tensor(key) else { return Ok(None) };
            if view.shape() != shape {
                return Err(format!("{name}: tensor '{key}' has shape {:?}, expected {shape:?}", view.shape()));
            }
            let dt = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F64 => DType::F64,
                other => return Err(format!("{name}: tensor '{key}' has dtype {other:?} (F32, F16, BF16, F64 supported)")),
            };
            let t = Tensor::from_raw_buffer(view.data(), dt, shape, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| format!("{name}: tensor '{key}': {e}"))?;
            let bad = t.flatten_all().and_then(|x| x.to_vec1::<f32>()).map_err(ce)?.iter().position(|x| !x.is_finite());
            if let Some(j) = bad {
                return Err(format!("{name}: tensor '{key}' has a non-finite value at flat index {j}"));
            }
            Ok(Some(t))
        };
        let need = |key: &str, shape: &[usize]| -> Res<Tensor> {
            tensor(key, shape)?.ok_or_else(|| format!("{name}: sae_weights.safetensors has no tensor '{key}'"))
        };
        let w_enc = need("W_enc", &[d_in, d_sae])?;
        let w_dec = need("W_dec", &[d_sae, d_in])?;
        let b_dec = need("b_dec", &[d_in])?;
        let b_enc = match tensor("b_enc", &[d_sae])? {
            Some(b) => b,
            None => return Err(format!("{name}: sae_weights.safetensors has no tensor 'b_enc'")),
        };
        let threshold = if arch == SaeArch::JumpRelu {
            match tensor("threshold", &[d_sae])? {
                Some(t) => Some(t),
                None => match tensor("log_threshold", &[d_sae])? {
                    Some(lt) => Some(lt.exp().map_err(ce)?),
                    None => return Err(format!("{name}: a jumprelu SAE needs a 'threshold' (or 'log_threshold') tensor")),
                },
            }
        } else {
            None
        };
        Ok(Sae {
            name: name.to_owned(),
            hook_name,
            d_in,
            d_sae,
            arch,
            apply_b_dec_to_input,
            norm,
            head_index,
            w_enc,
            w_dec,
            b_enc,
            b_dec,
            threshold,
        })
    }

    /// Checks the SAE against a model and returns its hook point.
    pub fn point(&self, model: &Model) -> Res<HookPoint> {
        let p = model.hook_point(&self.hook_name).map_err(|e| format!("{}: hook_name: {e}", self.name))?;
        let width = flat_width(model, p.site).map_err(|e| format!("{}: {e}", self.name))?;
        let want = match self.head_index {
            Some(h) => {
                if p.site.head_axis().is_none() {
                    return Err(format!("{}: hook_head_index is set but '{}' has no heads", self.name, self.hook_name));
                }
                let dh = model.config.d_head;
                let heads = width / dh;
                if h >= heads {
                    return Err(format!("{}: hook_head_index {h} is out of range ({heads} heads)", self.name));
                }
                dh
            }
            None => width,
        };
        if self.d_in != want {
            return Err(format!(
                "{}: d_in is {} but '{}' has {want} values per position{}",
                self.name,
                self.d_in,
                self.hook_name,
                if self.head_index.is_some() { " for one head" } else { "" }
            ));
        }
        Ok(p)
    }

    fn normalize(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        Ok(match self.norm {
            SaeNorm::None => (x.clone(), NormStats { scale: None, shift: None }),
            SaeNorm::ConstantNormRescale => {
                let n = x.sqr()?.sum_keepdim(1)?.sqrt()?;
                let coeff = n.recip()?.affine((self.d_in as f64).sqrt(), 0.0)?;
                (x.broadcast_mul(&coeff)?, NormStats { scale: Some(coeff.recip()?), shift: None })
            }
            SaeNorm::LayerNorm => {
                let mu = x.mean_keepdim(1)?;
                let xc = x.broadcast_sub(&mu)?;
                let denom = (self.d_in.max(2) - 1) as f64;
                let std = (xc.sqr()?.sum_keepdim(1)? / denom)?.sqrt()?;
                (xc.broadcast_div(&(&std + 1e-5)?)?, NormStats { scale: Some(std), shift: Some(mu) })
            }
        })
    }

    fn encode_stats(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        let (xn, stats) = self.normalize(x)?;
        let sae_in = if self.apply_b_dec_to_input { xn.broadcast_sub(&self.b_dec)? } else { xn };
        let pre = sae_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?;
        let acts = match self.arch {
            SaeArch::Standard => pre.relu()?,
            SaeArch::JumpRelu => {
                let th = self.threshold.as_ref().expect("checked at load");
                let keep = pre.broadcast_gt(th)?.to_dtype(DType::F32)?;
                (pre.relu()? * keep)?
            }
            SaeArch::TopK(k) => {
                let rows: Vec<Vec<f32>> = pre.to_vec2()?;
                let n = rows.len();
                let mut out = vec![0f32; n * self.d_sae];
                for (r, row) in rows.iter().enumerate() {
                    for (i, v) in scalpel_engine::top_k(row, k) {
                        out[r * self.d_sae + i as usize] = v.max(0.0);
                    }
                }
                Tensor::from_vec(out, (n, self.d_sae), &Device::Cpu)?
            }
        };
        Ok((acts, stats))
    }

    fn decode_stats(&self, f: &Tensor, stats: &NormStats) -> candle_core::Result<Tensor> {
        let mut out = f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?;
        if let Some(s) = &stats.scale {
            out = out.broadcast_mul(s)?;
        }
        if let Some(m) = &stats.shift {
            out = out.broadcast_add(m)?;
        }
        Ok(out)
    }

    fn check_input(&self, x: &Tensor) -> Res<()> {
        match x.dims() {
            [_, d] if *d == self.d_in => Ok(()),
            dims => Err(format!("{}: input has shape {dims:?}; expected [n, {}]", self.name, self.d_in)),
        }
    }

    /// Latent activations `[n, d_sae]` of inputs `[n, d_in]`.
    pub fn encode(&self, x: &Tensor) -> Res<Tensor> {
        self.check_input(x)?;
        self.encode_stats(x).map(|r| r.0).map_err(ce)
    }

    /// Reconstruction `[n, d_in]` of latents `[n, d_sae]` (with no input
    /// normalization to undo; see `reconstruct` for that).
    pub fn decode(&self, f: &Tensor) -> Res<Tensor> {
        self.decode_stats(f, &NormStats { scale: None, shift: None }).map_err(ce)
    }

    /// (latents, reconstruction) of inputs `[n, d_in]`.
    pub fn reconstruct(&self, x: &Tensor) -> Res<(Tensor, Tensor)> {
        self.check_input(x)?;
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let r = self.decode_stats(&f, &s).map_err(ce)?;
        Ok((f, r))
    }

    /// Decoder row `latent` (the latent's write direction), `[d_in]`.
    pub fn decoder_row(&self, latent: usize) -> Res<Vec<f32>> {
        if latent >= self.d_sae {
            return Err(format!("{}: latent {latent} is out of range (d_sae = {})", self.name, self.d_sae));
        }
        self.w_dec.get(latent).and_then(|r| r.to_vec1()).map_err(ce)
    }

    /// decode(f with latent i set to `value`) − decode(f): the change that
    /// clamping makes, leaving the reconstruction error in place.
    pub fn clamp_delta(&self, x: &Tensor, latent: usize, value: f32) -> Res<Tensor> {
        self.check_input(x)?;
        if latent >= self.d_sae {
            return Err(format!("{}: latent {latent} is out of range (d_sae = {})", self.name, self.d_sae));
        }
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let n = f.dim(0).map_err(ce)?;
        let mut onehot = vec![0f32; self.d_sae];
        onehot[latent] = 1.0;
        let m = Tensor::from_vec(onehot, (1, self.d_sae), &Device::Cpu).map_err(ce)?;
        // f' = f·(1 − e_i) + value·e_i
        let clamped = f
            .broadcast_mul(&m.affine(-1.0, 1.0).map_err(ce)?)
            .and_then(|a| a.broadcast_add(&(m.affine(value as f64, 0.0)?)))
            .map_err(ce)?;
        let a = self.decode_stats(&clamped, &s).map_err(ce)?;
        let b = self.decode_stats(&f, &s).map_err(ce)?;
        let d = (a - b).map_err(ce)?;
        debug_assert_eq!(d.dim(0).unwrap_or(n), n);
        Ok(d)
    }

    /// Rows `[n, d_in]` of a hook value (batch axis included), for this SAE.
    fn rows_of(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<usize>)> {
        let dims = x.dims().to_vec();
        let (b, t) = (dims[0], dims[1]);
        let rows = match self.head_index {
            Some(h) => x.narrow(2, h, 1)?.reshape((b * t, self.d_in))?,
            None => x.reshape((b * t, self.d_in))?,
        };
        Ok((rows, dims))
    }
}

/// The `sae_clamp` op compiled: x' = x + decode(f with f_i = v) − decode(f)
/// at the selected positions.
pub struct SaeClamp {
    pub sae: Arc<Sae>,
    pub latent: usize,
    pub value: f32,
}

impl SaeClamp {
    /// `x` is the hook value with its batch axis; `pos_mask` a 0/1 tensor
    /// broadcastable to it that selects positions.
    pub fn apply(&self, x: &Tensor, pos_mask: &Tensor) -> scalpel_engine::Result<Tensor> {
        let (rows, dims) = self.sae.rows_of(x)?;
        let delta = self.sae.clamp_delta(&rows, self.latent, self.value).map_err(scalpel_engine::Error::input)?;
        let delta = match self.sae.head_index {
            Some(h) => {
                let (b, t, nh, dh) = (dims[0], dims[1], dims[2], dims[3]);
                let d = delta.reshape((b, t, 1, dh))?;
                let mut parts = Vec::new();
                if h > 0 {
                    parts.push(Tensor::zeros((b, t, h, dh), DType::F32, &Device::Cpu)?);
                }
                parts.push(d);
                if h + 1 < nh {
                    parts.push(Tensor::zeros((b, t, nh - h - 1, dh), DType::F32, &Device::Cpu)?);
                }
                Tensor::cat(&parts, 2)?
            }
            None => delta.reshape(dims.as_slice())?,
        };
        Ok(x.broadcast_add(&delta.broadcast_mul(pos_mask)?)?)
    }
}

// ------------------------------------------------------------------ resolving sources

/// Reads a file named in a document, by path.
pub type FileReader<'a> = &'a dyn Fn(&str) -> Res<Vec<u8>>;

/// What a document may refer to beyond the model: loaded SAEs and files.
#[derive(Default)]
pub struct Resources<'a> {
    pub saes: Vec<Arc<Sae>>,
    /// Reads a file named in `{"from": "file"}` (the CLI reads the disk; the
    /// browser can serve bytes the user picked). `None`: files are an error.
    pub read_file: Option<FileReader<'a>>,
}

fn sae_at<'r>(model: &Model, res: &'r Resources, point: HookPoint, what: &str) -> Res<&'r Arc<Sae>> {
    let mut found: Option<&Arc<Sae>> = None;
    for s in &res.saes {
        if s.point(model)? == point {
            if found.is_some() {
                return Err(format!("{what}: two loaded SAEs read '{}'; load only one", point.name()));
            }
            found = Some(s);
        }
    }
    found.ok_or_else(|| {
        let loaded: Vec<&str> = res.saes.iter().map(|s| s.hook_name.as_str()).collect();
        format!(
            "{what}: no SAE is loaded for '{}' (loaded: {}); load one with --sae DIR",
            point.name(),
            if loaded.is_empty() { "none".to_owned() } else { loaded.join(", ") }
        )
    })
}

/// A vector from a file's bytes: a control vector GGUF (`direction.{layer}`)
/// or JSON (a list of numbers, `{"vector": [...]}`, or an intervention
/// document with a literal vector at `hook`).
pub fn vector_from_file(name: &str, bytes: &[u8], layer: Option<usize>, hook: Option<HookPoint>) -> Res<Vec<f32>> {
    if bytes.starts_with(b"GGUF") {
        let (cv, _) = read_control_vector(name, bytes)?;
        let k = match (layer, hook) {
            (Some(k), _) => k,
            (None, Some(p)) => control_layer(p).map_err(|e| format!("{name}: give 'layer' ({e})"))?,
            (None, None) => return Err(format!("{name}: give 'layer' to pick a direction")),
        };
        return cv
            .directions
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                let have: Vec<String> = cv.directions.iter().map(|(k, _)| k.to_string()).collect();
                format!("{name}: no direction.{k} (the file has layers {})", have.join(", "))
            });
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{name}: neither a GGUF control vector nor JSON: {e}"))?;
    let numbers = |v: &serde_json::Value| -> Option<Vec<f32>> {
        v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
    };
    if let Some(xs) = numbers(&v) {
        return Ok(xs);
    }
    if let Some(xs) = v.get("vector").and_then(numbers) {
        return Ok(xs);
    }
    if v.get("interventions").is_some() {
        let doc = crate::spec::parse_value(&v).map_err(|e| format!("{name}: {e}"))?;
        let literal = |iv: &Intervention| -> Option<Vec<f32>> {
            match &iv.op {
                Op::Add { vector: Vector::Values(x), .. }
                | Op::KvAdd { vector: Vector::Values(x), .. }
                | Op::ProjectOut { direction: Vector::Values(x) }
                | Op::SetProjection { direction: Vector::Values(x), .. }
                | Op::Conditional { direction: Vector::Values(x), .. } => Some(x.clone()),
                _ => None,
            }
        };
        let with: Vec<&Intervention> = doc.interventions.iter().filter(|iv| literal(iv).is_some()).collect();
        let pick = match hook {
            Some(p) => with.iter().find(|iv| iv.hook.as_deref() == Some(p.name().as_str())).copied(),
            None => None,
        }
        .or(if with.len() == 1 { Some(with[0]) } else { None });
        return pick.and_then(literal).ok_or_else(|| {
            format!("{name}: the document has {} literal vectors and none at the intervention's hook", with.len())
        });
    }
    Err(format!("{name}: JSON holds no vector (expected a list of numbers, {{\"vector\": [...]}}, or an intervention document)"))
}

fn resolve_vector(model: &Model, res: &Resources, v: &mut Vector, hook: Option<&str>, what: &str) -> Res<()> {
    let Vector::From(src) = v else { return Ok(()) };
    let point_of = |h: &Option<String>| -> Res<Option<HookPoint>> {
        match h.as_deref().or(hook) {
            Some(name) if !name.contains('*') => model.hook_point(name).map(Some).map_err(|e| format!("{what}: {e}")),
            _ => Ok(None),
        }
    };
    let values = match src {
        VectorSource::Sae { latent, hook: h } => {
            let p = point_of(h)?.ok_or_else(|| format!("{what}: 'sae' vectors need one hook (give 'hook')"))?;
            sae_at(model, res, p, what)?.decoder_row(*latent).map_err(|e| format!("{what}: {e}"))?
        }
        VectorSource::File { path, layer } => {
            let read = res.read_file.ok_or_else(|| format!("{what}: vectors from files need a file reader (the CLI provides one)"))?;
            let bytes = read(path).map_err(|e| format!("{what}: {e}"))?;
            vector_from_file(path, &bytes, *layer, point_of(&None)?).map_err(|e| format!("{what}: {e}"))?
        }
        _ => return Ok(()),
    };
    *v = Vector::Values(values);
    Ok(())
}

/// The SAEs a document's `sae_clamp` ops use, by the hook each reads: kept
/// beside the document (which stays plain data) and given to the compiler.
pub type SaeTable = std::collections::HashMap<HookPoint, Arc<Sae>>;

fn resolve_items(model: &Model, res: &Resources, items: &mut [Intervention], saes: &mut SaeTable, path: &str) -> Res<()> {
    for (i, iv) in items.iter_mut().enumerate() {
        let what = format!("intervention {path}{i}");
        let hook = iv.hook.clone();
        match &mut iv.op {
            Op::Add { vector, .. } | Op::KvAdd { vector, .. } => {
                resolve_vector(model, res, vector, hook.as_deref(), &format!("{what}: field 'vector'"))?
            }
            Op::ProjectOut { direction } | Op::SetProjection { direction, .. } => {
                resolve_vector(model, res, direction, hook.as_deref(), &format!("{what}: field 'direction'"))?
            }
            Op::Conditional { direction, then, .. } => {
                resolve_vector(model, res, direction, hook.as_deref(), &format!("{what}: field 'direction'"))?;
                resolve_items(model, res, then, saes, &format!("{path}{i}.then."))?;
            }
            Op::SaeClamp { .. } => {
                let h = hook.as_deref().ok_or(format!("{what}: missing field 'hook'"))?;
                if h.contains('*') {
                    return Err(format!("{what}: 'sae_clamp' works at one hook (an SAE reads one layer), not '{h}'"));
                }
                let p = model.hook_point(h).map_err(|e| format!("{what}: field 'hook': {e}"))?;
                saes.insert(p, sae_at(model, res, p, &what)?.clone());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Replaces the vector sources that need resources (`sae`, `file`) by their
/// values, and finds the SAEs of `sae_clamp` ops. Run before
/// `Interventions::compile_with`, which takes the SAE table.
pub fn resolve(model: &Model, doc: &Document, res: &Resources) -> Res<(Document, SaeTable)> {
    let mut out = doc.clone();
    let mut saes = SaeTable::new();
    resolve_items(model, res, &mut out.interventions, &mut saes, "")?;
    Ok((out, saes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(|x| x.as_slice()).collect()
    }

    #[test]
    fn mean_diff_vector_is_the_difference_of_means() {
        let pos = vec![vec![1.0, 2.0, 0.0], vec![3.0, 2.0, 1.0]];
        let neg = vec![vec![0.0, 0.0, 0.0], vec![0.0, 2.0, 1.0]];
        let (v, s) = extract_at(Method::MeanDiff, &rows(&pos), &rows(&neg), &MethodOptions::default()).unwrap();
        let want = [2.0f32, 1.0, 0.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        assert!((s.norm - 5f64.sqrt()).abs() < 1e-9);
        assert_eq!(s.accuracy, 1.0);
        assert!(s.cohens_d.unwrap() > 0.0);
    }

    #[test]
    fn pca_finds_the_dominant_direction_with_sign() {
        // Differences along -x with noise along y: PC1 is ±x, aligned to
        // the sign where positives project higher (here -x).
        let pos: Vec<Vec<f32>> = (0..6).map(|i| vec![-(i as f32 + 1.0), 0.1 * (i % 2) as f32]).collect();
        let neg: Vec<Vec<f32>> = (0..6).map(|_| vec![0.0, 0.0]).collect();
        let u = unit_direction(Method::Pca, &rows(&pos), &rows(&neg), &MethodOptions::default()).unwrap();
        assert!(u[0] < -0.99, "{u:?}");
        let uc = unit_direction(Method::Pca, &rows(&pos), &rows(&neg), &MethodOptions { center: true, ..Default::default() }).unwrap();
        assert!(uc[0] < -0.9, "{uc:?}");
    }

    #[test]
    fn loo_accuracy_counts_held_out_errors() {
        // An outlier positive that sits with the negatives is misclassified when held out.
        let pos = vec![vec![2.0], vec![2.2], vec![1.8], vec![-1.0]];
        let neg = vec![vec![-2.0], vec![-2.1], vec![-1.9]];
        let (_, s) = extract_at(Method::MeanDiff, &rows(&pos), &rows(&neg), &MethodOptions::default()).unwrap();
        assert_eq!(s.loo_accuracy, Some(6.0 / 7.0));
    }

    #[test]
    fn actadd_needs_one_pair() {
        let a = vec![vec![1.0f32], vec![2.0]];
        let b = vec![vec![0.0f32]];
        assert!(unit_direction(Method::Actadd, &rows(&a), &rows(&b), &MethodOptions::default()).is_err());
    }

    #[test]
    fn control_vector_round_trip() {
        let cv = ControlVector {
            model_hint: Some("llama".into()),
            directions: vec![(1, vec![0.5, -1.0, 2.0]), (3, vec![1e-3, 0.0, -7.25])],
        };
        let bytes = write_control_vector(&cv).unwrap();
        let (back, warnings) = read_control_vector("t.gguf", &bytes).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(back, cv);
    }

    #[test]
    fn control_vector_rejects_model_files_and_bad_names() {
        let cv = ControlVector { model_hint: None, directions: vec![(2, vec![1.0; 4])] };
        let good = write_control_vector(&cv).unwrap();
        // The first 'controlvector' is general.architecture's value: make it 'controlvectoX'.
        let mut bytes = good.clone();
        let pos = bytes.windows(13).position(|w| w == b"controlvector").unwrap();
        bytes[pos + 12] = b'X';
        assert!(read_control_vector("t.gguf", &bytes).unwrap_err().contains("not a control vector"));
        let mut bytes = good;
        let pos = bytes.windows(9).position(|w| w == b"direction").unwrap();
        bytes[pos + 8] = b'X';
        assert!(read_control_vector("t.gguf", &bytes).unwrap_err().contains("not named direction.<layer>"));
    }

    #[test]
    fn control_layers_map_to_resid_post() {
        assert_eq!(control_layer(HookPoint::block(5, Site::ResidPost)), Ok(5));
        assert_eq!(control_layer(HookPoint::block(5, Site::ResidPre)), Ok(4));
        assert!(control_layer(HookPoint::block(0, Site::ResidPre)).is_err());
        assert!(control_layer(HookPoint::block(3, Site::MlpOut)).is_err());
    }

    fn tiny_sae(arch: &str, extra: &str) -> Sae {
        let (d_in, d_sae) = (3usize, 4usize);
        let w_enc: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.5).collect();
        let w_dec: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.25).collect();
        let b_enc = vec![0.1f32, -0.2, 0.0, 0.3];
        let b_dec = vec![0.05f32, 0.0, -0.1];
        let th = vec![0.2f32, 0.0, 0.5, 0.1];
        let mut tensors: Vec<(&str, Vec<f32>, Vec<usize>)> = vec![
            ("W_enc", w_enc, vec![d_in, d_sae]),
            ("W_dec", w_dec, vec![d_sae, d_in]),
            ("b_enc", b_enc, vec![d_sae]),
            ("b_dec", b_dec, vec![d_in]),
        ];
        if arch == "jumprelu" {
            tensors.push(("threshold", th, vec![d_sae]));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, d, s)| {
                let bytes: &[u8] = unsafe { std::slice::from_raw_parts(d.as_ptr() as *const u8, d.len() * 4) };
                (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytes).unwrap())
            })
            .collect();
        let st = safetensors::serialize(views, None).unwrap();
        let cfg = format!(r#"{{"d_in": 3, "d_sae": 4, "architecture": "{arch}", "hook_name": "blocks.0.hook_resid_post"{extra}}}"#);
        Sae::load("tiny", cfg.as_bytes(), &st).unwrap()
    }

    #[test]
    fn sae_encode_decode_by_hand() {
        let x = Tensor::new(&[[1.0f32, -0.5, 2.0], [0.0, 1.0, -1.0]], &Device::Cpu).unwrap();
        for (arch, extra) in [("standard", ""), ("jumprelu", ""), ("topk", r#", "k": 2"#), ("standard", r#", "apply_b_dec_to_input": false"#)] {
            let sae = tiny_sae(arch, extra);
            let f: Vec<Vec<f32>> = sae.encode(&x).unwrap().to_vec2().unwrap();
            let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
            let w_enc: Vec<Vec<f32>> = sae.w_enc.to_vec2().unwrap();
            let b_enc: Vec<f32> = sae.b_enc.to_vec1().unwrap();
            let b_dec: Vec<f32> = sae.b_dec.to_vec1().unwrap();
            for (r, row) in xs.iter().enumerate() {
                let inp: Vec<f32> =
                    row.iter().zip(&b_dec).map(|(a, b)| if sae.apply_b_dec_to_input { a - b } else { *a }).collect();
                let pre: Vec<f32> = (0..4).map(|j| (0..3).map(|i| inp[i] * w_enc[i][j]).sum::<f32>() + b_enc[j]).collect();
                let want: Vec<f32> = match sae.arch {
                    SaeArch::Standard => pre.iter().map(|v| v.max(0.0)).collect(),
                    SaeArch::JumpRelu => {
                        let th = [0.2f32, 0.0, 0.5, 0.1];
                        pre.iter().zip(th).map(|(v, t)| if *v > t { v.max(0.0) } else { 0.0 }).collect()
                    }
                    SaeArch::TopK(k) => {
                        let top = scalpel_engine::top_k(&pre, k);
                        (0..4).map(|j| top.iter().find(|x| x.0 as usize == j).map(|x| x.1.max(0.0)).unwrap_or(0.0)).collect()
                    }
                };
                for (a, b) in f[r].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{arch}: {:?} vs {want:?}", f[r]);
                }
            }
            // Clamping through the error term moves x by (v − f_i)·W_dec[i] exactly.
            let d: Vec<Vec<f32>> = sae.clamp_delta(&x, 2, 1.5).unwrap().to_vec2().unwrap();
            let row2 = sae.decoder_row(2).unwrap();
            for r in 0..2 {
                for c in 0..3 {
                    let want = (1.5 - f[r][2]) * row2[c];
                    assert!((d[r][c] - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn sae_rejects_bad_configs() {
        let err = |cfg: &str| Sae::load("s", cfg.as_bytes(), b"").unwrap_err();
        assert!(err(r#"{"d_sae": 4, "hook_name": "x"}"#).contains("d_in"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "gated", "hook_name": "x"}"#).contains("not supported"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "topk", "hook_name": "x"}"#).contains("'k'"));
    }
}
