//! Steering vectors and directions: extraction from prompt sets (ActAdd,
//! CAA mean difference, RepE principal component, probe weight) with a
//! per-layer separation score (this file), the vectors a document's
//! sources ask for (`sources.rs`), llama.cpp / repeng control vectors
//! (`control.rs`), resolving file and SAE sources (`resolve.rs`), and the
//! logistic regression behind probe directions (`logreg.rs`).
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

pub mod control;
pub mod logreg;
pub mod resolve;
pub(crate) mod sources;

use std::fmt;

use scalpel_engine::{ActivationCache, HookPoint, Logits, Model};
pub use scalpel_types::vectors::{LayerScore, Method, Pool};
use scalpel_types::document::{Document, Intervention, Op, Positions, Vector};

pub use control::{control_hook, control_layer, control_vector_document, read_control_vector, to_control_vector, write_control_vector, ControlVector};
pub use sources::literal_vectors;
pub use resolve::{resolve, vector_from_file, FileReader, Resources, SaeTable};

use crate::context::{each_on_threads, Stop};
use crate::Res;

fn ce(e: impl fmt::Display) -> String {
    e.to_string()
}

/// The warning every reader of position 0 gets.
pub fn sink_warning(what: &str) -> String {
    format!(
        "{what} is read at position 0, usually the attention sink (its norm can be 10x the others'); prefer position -1"
    )
}

/// Runs `prompt` once and reads every point at the pooled position (each
/// flattened per position). Returns the values and the token count.
pub fn read_points(model: &Model, prompt: &str, points: &[HookPoint], pool: Pool) -> Res<(Vec<Vec<f32>>, usize)> {
    for p in points {
        model.config.flat_width(p.site).map_err(ce)?;
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

/// One forward pass per prompt, reading every point; `stop` is asked
/// before each (`Err(STOPPED)`).
pub fn collect(model: &Model, positive: &[String], negative: &[String], points: &[HookPoint], pool: Pool, stop: Stop) -> Res<Acts> {
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
        each_on_threads(stop, set, |s| read_points(model, s, points, pool))?
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map(|x| x.0).map_err(|e| format!("{name} prompt {i}: {e}")))
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
        MethodOptions { center: false, l2: logreg::DEFAULT_L2 }
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
            logreg::LogReg::fit(&xs, &ys, opts.l2)?.direction()
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

/// An intervention document adding `scale · vector` at each point.
pub fn steering_document(points: &[HookPoint], vectors: &[Vec<f32>], scale: f32) -> Document {
    Document {
        version: scalpel_types::VERSION,
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
}
