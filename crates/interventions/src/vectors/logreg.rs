//! L2-regularized logistic regression on standardized features (z-scored
//! with the training examples' mean and population std), fitted to the
//! unique optimum by Newton's method: in the primal when there are no more
//! features than examples, otherwise in the span of the examples. Probes
//! (scalpel-experiments) and probe-weight steering directions use it.

use nalgebra::DVector;
use serde::Serialize;

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
        let (mean, scale, z) = standardize(xs);
        let data = Data { z, t: ys.iter().map(|&y| y as u8 as f64).collect(), l2 };
        let (w, b, iterations) = if d <= n { data.fit_primal()? } else { data.fit_dual()? };
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


/// Per-feature mean and scale (population std; 1 for constant features),
/// and the examples standardized with them.
fn standardize(xs: &[&[f32]]) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let (n, d) = (xs.len() as f64, xs[0].len());
    let mut mean = vec![0f64; d];
    for x in xs {
        for (m, &v) in mean.iter_mut().zip(x.iter()) {
            *m += v as f64 / n;
        }
    }
    let mut var = vec![0f64; d];
    for x in xs {
        for ((s, &v), m) in var.iter_mut().zip(x.iter()).zip(&mean) {
            *s += (v as f64 - m).powi(2) / n;
        }
    }
    let scale: Vec<f64> =
        var.iter().zip(&mean).map(|(v, m)| if v.sqrt() > 1e-12 * (1.0 + m.abs()) { v.sqrt() } else { 1.0 }).collect();
    let z = xs.iter().map(|x| x.iter().zip(&mean).zip(&scale).map(|((&v, m), s)| (v as f64 - m) / s).collect()).collect();
    (mean, scale, z)
}

/// Standardized examples `z`, their 0/1 targets and the L2 strength.
struct Data {
    z: Vec<Vec<f64>>,
    t: Vec<f64>,
    l2: f64,
}

impl Data {
    /// Mean log-loss of the scores.
    fn loss(&self, s: &[f64]) -> f64 {
        s.iter().zip(&self.t).map(|(&s, &y)| softplus(s) - y * s).sum::<f64>() / self.t.len() as f64
    }

    /// Newton on x = (w, b); returns (w, b, iterations).
    fn fit_primal(&self) -> Res<(Vec<f64>, f64, usize)> {
        let (z, t, l2) = (&self.z, &self.t, self.l2);
        let (n, d) = (z.len() as f64, z[0].len());
        let scores = |x: &DVector<f64>| -> Vec<f64> {
            z.iter().map(|zi| zi.iter().zip(x.iter()).map(|(a, c)| a * c).sum::<f64>() + x[d]).collect()
        };
        let obj = |x: &DVector<f64>| -> f64 { self.loss(&scores(x)) + 0.5 * l2 * x.rows(0, d).iter().map(|v| v * v).sum::<f64>() };
        let (x, it) = newton(DVector::zeros(d + 1), obj, |x| {
            let p: Vec<f64> = scores(x).iter().map(|&v| sigmoid(v)).collect();
            let r: Vec<f64> = p.iter().zip(t).map(|(p, y)| (p - y) / n).collect();
            let wt: Vec<f64> = p.iter().map(|p| p * (1.0 - p) / n).collect();
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
            let step = solve(self.primal_hessian(&wt), g.clone())?;
            let slope = g.dot(&step);
            Ok(Some((step, slope)))
        })?;
        Ok((x.rows(0, d).iter().copied().collect(), x[d], it))
    }

    /// The primal objective's Hessian for per-example weights `wt`.
    fn primal_hessian(&self, wt: &[f64]) -> nalgebra::DMatrix<f64> {
        let d = self.z[0].len();
        let mut h = nalgebra::DMatrix::<f64>::zeros(d + 1, d + 1);
        for (zi, wi) in self.z.iter().zip(wt) {
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
            h[(j, j)] += self.l2;
        }
        h[(d, d)] += 1e-12;
        h
    }

    /// Newton in the span of the examples: x = (a, b), w = Zᵀa, scores = K a + b.
    fn fit_dual(&self) -> Res<(Vec<f64>, f64, usize)> {
        let (z, t, l2) = (&self.z, &self.t, self.l2);
        let (n, d) = (z.len(), z[0].len());
        let nf = n as f64;
        let k = nalgebra::DMatrix::<f64>::from_fn(n, n, |i, j| z[i].iter().zip(&z[j]).map(|(a, c)| a * c).sum());
        let obj = |x: &DVector<f64>| -> f64 {
            let a = x.rows(0, n);
            let ka = &k * a;
            let s: Vec<f64> = ka.iter().map(|v| v + x[n]).collect();
            self.loss(&s) + 0.5 * l2 * a.dot(&ka)
        };
        let (x, it) = newton(DVector::zeros(n + 1), obj, |x| {
            let (a, b) = (x.rows(0, n), x[n]);
            let ka = &k * a;
            let p: Vec<f64> = ka.iter().map(|v| sigmoid(v + b)).collect();
            let r = DVector::<f64>::from_iterator(n, p.iter().zip(t).map(|(p, y)| (p - y) / nf));
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
        Ok((w, x[n], it))
    }
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
}
