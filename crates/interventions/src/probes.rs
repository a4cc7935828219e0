//! Linear probes per layer and per attention head, with held-out accuracy,
//! and Inference-Time Intervention (Li et al.) built from them as an
//! ordinary intervention document.
//!
//! A probe is L2-regularized logistic regression on standardized features
//! (z-scored with the training split's mean and population std), fitted to
//! the unique optimum by Newton's method (in the primal when there are no
//! more features than examples, otherwise in the span of the examples). It
//! is deterministic; the only randomness is the stratified train/held-out
//! split, drawn from a seeded ChaCha RNG (the same split on every platform).

use nalgebra::DVector;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use scalpel_engine::{HookPoint, Site};
use serde::{Deserialize, Serialize};

use crate::spec::{Document, Intervention, Op, Positions, Vector};
use crate::vectors::Acts;

type Res<T> = Result<T, String>;

/// Default L2 strength: objective = mean log-loss + l2/2 · |w|² (standardized features).
pub const DEFAULT_L2: f64 = 1e-2;

fn sigmoid(s: f64) -> f64 {
    if s >= 0.0 {
        1.0 / (1.0 + (-s).exp())
    } else {
        let e = s.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^s)
fn softplus(s: f64) -> f64 {
    s.max(0.0) + (-s.abs()).exp().ln_1p()
}

/// A fitted logistic-regression probe.
#[derive(Clone, Debug, Serialize)]
pub struct LogReg {
    /// Per-feature mean and scale used to standardize.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// Weights on standardized features, and the intercept.
    pub w: Vec<f64>,
    pub b: f64,
    pub iterations: usize,
}

fn solve(a: nalgebra::DMatrix<f64>, rhs: nalgebra::DVector<f64>) -> Res<nalgebra::DVector<f64>> {
    if let Some(ch) = a.clone().cholesky() {
        return Ok(ch.solve(&rhs));
    }
    a.lu().solve(&rhs).ok_or_else(|| "the probe's Newton system is singular".to_owned())
}

/// Damped Newton's method, shared by the primal and the dual fit: at most
/// 100 iterations of x ← x − t·step, t halved from 1 until `obj` decreases
/// enough (Armijo, 1e-4) or t < 1e-10. `newton_step(x)` gives the Newton
/// step and the slope g·step, or None once the gradient vanishes. Returns x
/// and the iteration count.
fn newton(
    mut x: DVector<f64>,
    obj: impl Fn(&DVector<f64>) -> f64,
    mut newton_step: impl FnMut(&DVector<f64>) -> Res<Option<(DVector<f64>, f64)>>,
) -> Res<(DVector<f64>, usize)> {
    let mut it = 0;
    while it < 100 {
        let Some((step, slope)) = newton_step(&x)? else { break };
        let f0 = obj(&x);
        let mut tt = 1.0;
        loop {
            let nx = &x - tt * &step;
            if obj(&nx) <= f0 - 1e-4 * tt * slope || tt < 1e-10 {
                x = nx;
                break;
            }
            tt *= 0.5;
        }
        it += 1;
        if tt * step.norm() < 1e-12 {
            break;
        }
    }
    Ok((x, it))
}

impl LogReg {
    /// Fits on examples `xs` (all the same length) with labels `ys`.
    pub fn fit(xs: &[&[f32]], ys: &[bool], l2: f64) -> Res<LogReg> {
        let n = xs.len();
        if n == 0 || n != ys.len() {
            return Err(format!("a probe needs examples with one label each ({} examples, {} labels)", n, ys.len()));
        }
        if !ys.iter().any(|&y| y) || ys.iter().all(|&y| y) {
            return Err("a probe needs examples of both classes".into());
        }
        if l2.is_nan() || l2 <= 0.0 || l2.is_infinite() {
            return Err(format!("the L2 strength must be a positive number, not {l2}"));
        }
        let d = xs[0].len();
        if xs.iter().any(|x| x.len() != d) {
            return Err("probe examples have different lengths".into());
        }
        let mut mean = vec![0f64; d];
        for x in xs {
            for (m, &v) in mean.iter_mut().zip(x.iter()) {
                *m += v as f64 / n as f64;
            }
        }
        let mut var = vec![0f64; d];
        for x in xs {
            for ((s, &v), m) in var.iter_mut().zip(x.iter()).zip(&mean) {
                *s += (v as f64 - m).powi(2) / n as f64;
            }
        }
        let scale: Vec<f64> =
            var.iter().zip(&mean).map(|(v, m)| if v.sqrt() > 1e-12 * (1.0 + m.abs()) { v.sqrt() } else { 1.0 }).collect();
        let z: Vec<Vec<f64>> =
            xs.iter().map(|x| x.iter().zip(&mean).zip(&scale).map(|((&v, m), s)| (v as f64 - m) / s).collect()).collect();
        let t: Vec<f64> = ys.iter().map(|&y| y as u8 as f64).collect();
        let nf = n as f64;
        let loss = |s: &[f64]| -> f64 { s.iter().zip(&t).map(|(&s, &y)| softplus(s) - y * s).sum::<f64>() / nf };
        let (w, b, iterations) = if d <= n {
            // Primal Newton on x = (w, b).
            let scores = |x: &DVector<f64>| -> Vec<f64> {
                z.iter().map(|zi| zi.iter().zip(x.iter()).map(|(a, c)| a * c).sum::<f64>() + x[d]).collect()
            };
            let obj = |x: &DVector<f64>| -> f64 { loss(&scores(x)) + 0.5 * l2 * x.rows(0, d).iter().map(|v| v * v).sum::<f64>() };
            let (x, it) = newton(DVector::zeros(d + 1), obj, |x| {
                let s = scores(x);
                let p: Vec<f64> = s.iter().map(|&v| sigmoid(v)).collect();
                let r: Vec<f64> = p.iter().zip(&t).map(|(p, y)| (p - y) / nf).collect();
                let wt: Vec<f64> = p.iter().map(|p| p * (1.0 - p) / nf).collect();
                let mut g = DVector::<f64>::zeros(d + 1);
                for (zi, ri) in z.iter().zip(&r) {
                    for j in 0..d {
                        g[j] += zi[j] * ri;
                    }
                    g[d] += ri;
                }
                for j in 0..d {
                    g[j] += l2 * x[j];
                }
                if g.norm() < 1e-10 {
                    return Ok(None);
                }
                let mut h = nalgebra::DMatrix::<f64>::zeros(d + 1, d + 1);
                for (zi, wi) in z.iter().zip(&wt) {
                    for j in 0..d {
                        let a = wi * zi[j];
                        for k in j..d {
                            h[(j, k)] += a * zi[k];
                        }
                        h[(j, d)] += a;
                    }
                    h[(d, d)] += wi;
                }
                for j in 0..=d {
                    for k in 0..j {
                        h[(j, k)] = h[(k, j)];
                    }
                }
                for j in 0..d {
                    h[(j, j)] += l2;
                }
                h[(d, d)] += 1e-12;
                let step = solve(h, g.clone())?;
                let slope = g.dot(&step);
                Ok(Some((step, slope)))
            })?;
            (x.rows(0, d).iter().copied().collect(), x[d], it)
        } else {
            // Newton in the span of the examples: x = (a, b), w = Zᵀa, scores = K a + b.
            let k = nalgebra::DMatrix::<f64>::from_fn(n, n, |i, j| z[i].iter().zip(&z[j]).map(|(a, c)| a * c).sum());
            let obj = |x: &DVector<f64>| -> f64 {
                let a = x.rows(0, n);
                let ka = &k * a;
                let s: Vec<f64> = ka.iter().map(|v| v + x[n]).collect();
                loss(&s) + 0.5 * l2 * a.dot(&ka)
            };
            let (x, it) = newton(DVector::zeros(n + 1), obj, |x| {
                let (a, b) = (x.rows(0, n), x[n]);
                let ka = &k * a;
                let p: Vec<f64> = ka.iter().map(|v| sigmoid(v + b)).collect();
                let r = DVector::<f64>::from_iterator(n, p.iter().zip(&t).map(|(p, y)| (p - y) / nf));
                let wt: Vec<f64> = p.iter().map(|p| p * (1.0 - p) / nf).collect();
                let v = &r + l2 * a;
                let rsum = r.sum();
                let kv = &k * &v;
                let gnorm2 = v.dot(&kv) + rsum * rsum;
                if gnorm2.sqrt() < 1e-10 {
                    return Ok(None);
                }
                let mut m = nalgebra::DMatrix::<f64>::zeros(n + 1, n + 1);
                for i in 0..n {
                    for j in 0..n {
                        m[(i, j)] = wt[i] * k[(i, j)];
                        m[(n, j)] += wt[i] * k[(i, j)];
                    }
                    m[(i, i)] += l2;
                    m[(i, n)] = wt[i];
                }
                m[(n, n)] = wt.iter().sum::<f64>() + 1e-12;
                let mut rhs = DVector::<f64>::zeros(n + 1);
                rhs.rows_mut(0, n).copy_from(&v);
                rhs[n] = rsum;
                let step = m.lu().solve(&rhs).ok_or("the probe's Newton system is singular")?;
                let slope = kv.dot(&step.rows(0, n)) + rsum * step[n];
                Ok(Some((step, slope)))
            })?;
            let mut w = vec![0f64; d];
            for (zi, ai) in z.iter().zip(x.rows(0, n).iter()) {
                for (wj, zj) in w.iter_mut().zip(zi) {
                    *wj += ai * zj;
                }
            }
            (w, x[n], it)
        };
        Ok(LogReg { mean, scale, w, b, iterations })
    }

    /// The score w·z(x) + b (positive → class `true`).
    pub fn decision(&self, x: &[f32]) -> f64 {
        x.iter().zip(&self.mean).zip(&self.scale).zip(&self.w).map(|(((&v, m), s), w)| w * (v as f64 - m) / s).sum::<f64>() + self.b
    }

    pub fn accuracy(&self, xs: &[&[f32]], ys: &[bool]) -> f64 {
        let ok = xs.iter().zip(ys).filter(|(x, &y)| (self.decision(x) > 0.0) == y).count();
        ok as f64 / xs.len().max(1) as f64
    }

    /// Mean log-loss.
    pub fn loss(&self, xs: &[&[f32]], ys: &[bool]) -> f64 {
        xs.iter().zip(ys).map(|(x, &y)| {
            let s = self.decision(x);
            softplus(s) - (y as u8 as f64) * s
        }).sum::<f64>() / xs.len().max(1) as f64
    }

    /// The probe's direction in activation space (w / scale), unit norm.
    pub fn direction(&self) -> Vec<f64> {
        let v: Vec<f64> = self.w.iter().zip(&self.scale).map(|(w, s)| w / s).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter().map(|x| x / n).collect()
        } else {
            v
        }
    }
}

/// Which examples train a probe and which measure it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// A stratified split: in each class, `round(n · test_fraction)` examples
/// (at least one, leaving at least one) go to the held-out set, drawn by a
/// ChaCha RNG seeded with `seed` (positives first, then negatives).
pub fn split(labels: &[bool], test_fraction: f64, seed: u64) -> Res<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(format!("the held-out fraction must be between 0 and 1, not {test_fraction}"));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        if idx.len() < 2 {
            return Err(format!(
                "the {} set has {} example(s): a train/held-out split needs at least 2 per class",
                if class { "positive" } else { "negative" },
                idx.len()
            ));
        }
        idx.shuffle(&mut rng);
        let k = ((idx.len() as f64 * test_fraction).round() as usize).clamp(1, idx.len() - 1);
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeOptions {
    pub l2: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { l2: DEFAULT_L2, test_fraction: 0.25, seed: 0 }
    }
}

/// One probe: a layer (and head, for per-head hooks).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeCell {
    pub hook: String,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// Held-out mean log-loss (ranks ties in accuracy).
    pub test_loss: f64,
    #[serde(skip)]
    pub probe: LogReg,
}

/// Probes at every point (rows) and head (columns; 1 column for non-head hooks).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub rows: usize,
    pub cols: usize,
    /// Row-major.
    pub cells: Vec<ProbeCell>,
    pub split: Split,
    pub n_positive: usize,
    pub n_negative: usize,
}

impl ProbeReport {
    pub fn matrix(&self, f: impl Fn(&ProbeCell) -> f64) -> Vec<Vec<f64>> {
        self.cells.chunks(self.cols).map(|r| r.iter().map(&f).collect()).collect()
    }
}

/// Example `i` of the labelled set (positives first): (row, label).
fn example(acts: &Acts, point: usize, i: usize, range: Option<(usize, usize)>) -> &[f32] {
    let np = acts.pos.len();
    let row = if i < np { &acts.pos[i][point] } else { &acts.neg[i - np][point] };
    match range {
        Some((a, b)) => &row[a..b],
        None => row,
    }
}

/// Fits a probe at every point, or at every head of each point when
/// `d_head` is given (per-head hooks such as `attn.hook_z`).
pub fn probe_all(acts: &Acts, d_head: Option<usize>, opts: &ProbeOptions) -> Res<ProbeReport> {
    let (np, nn) = (acts.pos.len(), acts.neg.len());
    let labels: Vec<bool> = (0..np + nn).map(|i| i < np).collect();
    let sp = split(&labels, opts.test_fraction, opts.seed)?;
    let width = acts.pos[0].first().map(|r| r.len()).unwrap_or(0);
    let cols = match d_head {
        Some(dh) if dh > 0 && width.is_multiple_of(dh) => width / dh,
        Some(dh) => return Err(format!("values of width {width} do not split into heads of {dh}")),
        None => 1,
    };
    let mut cells = Vec::with_capacity(acts.points.len() * cols);
    for (k, p) in acts.points.iter().enumerate() {
        for c in 0..cols {
            let range = d_head.map(|dh| (c * dh, (c + 1) * dh));
            let take = |idx: &[usize]| -> (Vec<&[f32]>, Vec<bool>) {
                (idx.iter().map(|&i| example(acts, k, i, range)).collect(), idx.iter().map(|&i| labels[i]).collect())
            };
            let (xtr, ytr) = take(&sp.train);
            let (xte, yte) = take(&sp.test);
            let probe = LogReg::fit(&xtr, &ytr, opts.l2).map_err(|e| format!("{}: {e}", p.name()))?;
            cells.push(ProbeCell {
                hook: p.name(),
                layer: p.layer,
                head: d_head.map(|_| c),
                train_accuracy: probe.accuracy(&xtr, &ytr),
                test_accuracy: probe.accuracy(&xte, &yte),
                test_loss: probe.loss(&xte, &yte),
                probe,
            });
        }
    }
    Ok(ProbeReport { rows: acts.points.len(), cols, cells, split: sp, n_positive: np, n_negative: nn })
}

/// The ITI shift direction of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItiDirection {
    /// mean(positive) − mean(negative) of the training split (Li et al.'s best).
    MassMean,
    /// The probe's weight direction.
    Probe,
}

impl ItiDirection {
    pub fn parse(s: &str) -> Res<ItiDirection> {
        match s {
            "mass_mean" => Ok(ItiDirection::MassMean),
            "probe" => Ok(ItiDirection::Probe),
            _ => Err(format!("ITI direction '{s}' is not one of: mass_mean, probe")),
        }
    }
}

/// A head ITI shifts.
#[derive(Clone, Debug, Serialize)]
pub struct ItiHead {
    pub hook: String,
    pub layer: usize,
    pub head: usize,
    pub test_accuracy: f64,
    /// Std of the training activations along the direction.
    pub sigma: f64,
}

/// Inference-Time Intervention: the `top_k` heads by held-out accuracy
/// (ties: lower held-out loss, then lower layer and head), each shifted by
/// `alpha · sigma · u` at `attn.hook_z` at every position. Returned as a
/// document (one `add` per head, vector `sigma · u` of length d_head, scale
/// `alpha`).
pub fn iti(acts: &Acts, report: &ProbeReport, top_k: usize, alpha: f32, dir: ItiDirection) -> Res<(Document, Vec<ItiHead>)> {
    if top_k == 0 {
        return Err("ITI needs --iti-top-k of at least 1".into());
    }
    if !alpha.is_finite() {
        return Err(format!("alpha must be a finite number, not {alpha}"));
    }
    if acts.points.iter().any(|p| p.site != Site::Z) || report.cells.iter().any(|c| c.head.is_none()) {
        return Err("ITI shifts attention heads: probe 'blocks.*.attn.hook_z' per head".into());
    }
    let mut order: Vec<usize> = (0..report.cells.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&report.cells[a], &report.cells[b]);
        y.test_accuracy.total_cmp(&x.test_accuracy).then(x.test_loss.total_cmp(&y.test_loss)).then(a.cmp(&b))
    });
    let np = acts.pos.len();
    let dh = acts.pos[0][0].len() / report.cols;
    let mut heads = Vec::new();
    let mut interventions = Vec::new();
    for &ci in order.iter().take(top_k) {
        let cell = &report.cells[ci];
        let (row, col) = (ci / report.cols, ci % report.cols);
        let range = Some((col * dh, (col + 1) * dh));
        let train: Vec<&[f32]> = report.split.train.iter().map(|&i| example(acts, row, i, range)).collect();
        let is_pos: Vec<bool> = report.split.train.iter().map(|&i| i < np).collect();
        let mean_of = |want: bool| -> Vec<f64> {
            let xs: Vec<&&[f32]> = train.iter().zip(&is_pos).filter(|(_, &p)| p == want).map(|(x, _)| x).collect();
            let mut m = vec![0f64; dh];
            for x in &xs {
                for (a, &v) in m.iter_mut().zip(x.iter()) {
                    *a += v as f64 / xs.len() as f64;
                }
            }
            m
        };
        let (mp, mn) = (mean_of(true), mean_of(false));
        let diff: Vec<f64> = mp.iter().zip(&mn).map(|(a, b)| a - b).collect();
        let mut u = match dir {
            ItiDirection::MassMean => diff.clone(),
            ItiDirection::Probe => cell.probe.direction(),
        };
        let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n.is_nan() || n <= 0.0 {
            return Err(format!("{} head {col}: the direction is zero", cell.hook));
        }
        u.iter_mut().for_each(|x| *x /= n);
        if u.iter().zip(&diff).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
            u.iter_mut().for_each(|x| *x = -*x);
        }
        let proj: Vec<f64> = train.iter().map(|x| x.iter().zip(&u).map(|(&a, b)| a as f64 * b).sum()).collect();
        let m = proj.iter().sum::<f64>() / proj.len() as f64;
        let sigma = (proj.iter().map(|p| (p - m).powi(2)).sum::<f64>() / proj.len() as f64).sqrt();
        let layer = cell.layer.expect("hook_z is a block hook");
        heads.push(ItiHead { hook: cell.hook.clone(), layer, head: col, test_accuracy: cell.test_accuracy, sigma });
        interventions.push(Intervention {
            hook: Some(HookPoint::block(layer, Site::Z).name()),
            op: Op::Add { vector: Vector::Values(u.iter().map(|x| (x * sigma) as f32).collect()), scale: alpha },
            positions: Positions::default(),
            heads: Some(vec![col]),
            neurons: None,
            enabled: true,
        });
    }
    Ok((Document { version: crate::spec::VERSION, interventions }, heads))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers for tests.
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn data(n: usize, d: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut s = seed;
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..n {
            let y = i % 2 == 0;
            let x: Vec<f32> = (0..d).map(|j| (lcg(&mut s) + if j == 0 { if y { 0.8 } else { -0.8 } } else { 0.0 }) as f32).collect();
            xs.push(x);
            ys.push(y);
        }
        (xs, ys)
    }

    #[allow(clippy::needless_range_loop)]
    fn gradient_norm(p: &LogReg, xs: &[&[f32]], ys: &[bool], l2: f64) -> f64 {
        let n = xs.len() as f64;
        let d = p.w.len();
        let mut g = vec![0f64; d + 1];
        for (x, &y) in xs.iter().zip(ys) {
            let r = (sigmoid(p.decision(x)) - y as u8 as f64) / n;
            for j in 0..d {
                g[j] += r * (x[j] as f64 - p.mean[j]) / p.scale[j];
            }
            g[d] += r;
        }
        for j in 0..d {
            g[j] += l2 * p.w[j];
        }
        g.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    #[test]
    fn primal_and_kernel_newton_reach_the_optimum() {
        for (n, d) in [(40, 5), (12, 30)] {
            let (xs, ys) = data(n, d, 7);
            let xr: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
            let p = LogReg::fit(&xr, &ys, 0.05).unwrap();
            let g = gradient_norm(&p, &xr, &ys, 0.05);
            assert!(g < 1e-8, "n={n} d={d}: gradient norm {g}");
            assert!(p.accuracy(&xr, &ys) > 0.7);
        }
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let labels: Vec<bool> = (0..20).map(|i| i < 12).collect();
        let a = split(&labels, 0.25, 3).unwrap();
        let b = split(&labels, 0.25, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.test.iter().filter(|&&i| i < 12).count(), 3);
        assert_eq!(a.test.iter().filter(|&&i| i >= 12).count(), 2);
        assert_eq!(a.train.len() + a.test.len(), 20);
        assert!(split(&[true, false, false], 0.25, 0).is_err());
    }
}
