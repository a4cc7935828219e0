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

use rand::seq::SliceRandom;
use rand::SeedableRng;
use scalpel_engine::{HookPoint, Site};
use serde::{Deserialize, Serialize};

pub use scalpel_interventions::vectors::logreg::DEFAULT_L2;
use scalpel_interventions::vectors::logreg::LogReg;
use scalpel_interventions::vectors::Acts;
use scalpel_types::{Document, Intervention, Op, Positions, Vector};

type Res<T> = Result<T, String>;

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
    Ok((Document { version: scalpel_types::VERSION, interventions }, heads))
}

#[cfg(test)]
mod tests {
    use super::*;

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
