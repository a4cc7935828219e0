//! The kernels against candle (dequantization bit for bit, products to f32
//! summation order) and against an exact f64 product of the dequantized
//! weights with the unquantized activations, within a derived bound.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul};
use candle_core::{Device, Module, Tensor};
use half::f16;
use scalpel_kernels::{QActs, QMatrix, QType};

use scalpel_testkit::{ggml, random_blocks, Rng};

/// Activations with varied block magnitudes, an outlier and an all-zero block.
fn random_acts(n: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n * cols).map(|i| rng.sym(1.0 + (i / 32 % 5) as f32)).collect();
    if x.len() > 40 {
        x[7] = 30.0;
        let end = 64.min(x.len());
        x[32..end].iter_mut().for_each(|v| *v = 0.0);
    }
    x
}

const TYPES: [QType; 3] = [QType::Q4_0, QType::Q4_1, QType::Q8_0];
const SHAPES: [(usize, usize); 6] = [(1, 32), (3, 64), (7, 96), (5, 160), (64, 576), (9, 1536)];

#[test]
fn repack_roundtrip_and_dequantize_match_candle() {
    let mut rng = Rng(1);
    for ty in TYPES {
        for (rows, cols) in SHAPES {
            let bytes = random_blocks(ty, rows, cols, &mut rng);
            let m = QMatrix::from_gguf(ty, rows, cols, &bytes).unwrap();
            assert_eq!(m.to_gguf(), bytes, "{ty:?} roundtrip");
            let q = qtensor_from_ggml(ggml(ty), &bytes, vec![rows, cols], &Device::Cpu).unwrap();
            let want: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = m.dequantize();
            assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty:?} [{rows}, {cols}] dequantize");
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    assert!(QMatrix::from_gguf(QType::Q4_1, 2, 33, &[0; 40]).is_err());
    assert!(QMatrix::from_gguf(QType::Q4_1, 0, 32, &[]).is_err());
    assert!(QMatrix::from_gguf(QType::Q4_1, 2, 32, &[0; 39]).is_err());
    assert!(QMatrix::from_gguf(QType::Q8_0, usize::MAX, 64, &[0; 34]).is_err());
    let m = QMatrix::from_gguf(QType::Q8_0, 2, 32, &[0; 68]).unwrap();
    assert!(QActs::quantize(&[0.0; 48], 32).is_err());
    assert!(QActs::quantize(&[0.0; 48], 48).is_err());
    let a = QActs::quantize(&[0.0; 64], 32).unwrap();
    assert!(m.matmul(&a, &mut [0.0; 3]).is_err());
    let a = QActs::quantize(&[0.0; 64], 64).unwrap();
    assert!(m.matmul(&a, &mut [0.0; 2]).is_err());
    // Several matrices on one input: one output each, one width, each output its size.
    let w64 = QMatrix::from_gguf(QType::Q8_0, 2, 64, &[0; 136]).unwrap();
    let (x, mut o1, mut o2) = ([0f32; 64], [0f32; 2], [0f32; 2]);
    let says = |r: scalpel_kernels::Result<()>, what: &str| assert!(r.as_ref().is_err_and(|e| e.0.contains(what)), "{r:?}");
    says(scalpel_kernels::matmul_shared(&[&w64, &w64], &a, &mut [&mut o1]), "2 matrices but 1 outputs");
    says(scalpel_kernels::matmul_exact_shared(&[&w64, &m], &x, &mut [&mut o1, &mut o2]), "got 64 and 32 columns");
    says(scalpel_kernels::matmul_shared(&[&w64, &w64], &a, &mut [&mut o1, &mut [0f32; 3]]), "output holds 3 numbers");
    says(scalpel_kernels::matmul_exact_shared(&[&w64], &[0f32; 63], &mut [&mut o1]), "63 activations");
}

/// Against candle's QMatMul on the same blocks: candle quantizes the
/// activations identically and forms the same integer block dots and the
/// same per-block float terms. Its Q4_1 kernel is scalar, in our order:
/// bit-identical. For Q4_0 / Q8_0 candle may use AVX2 (other f32 order), so
/// |ours - candle| <= nb * 2^-23 * Σ|w·x| (we allow 1e-5 Σ|w·x|).
#[test]
fn matmul_matches_candle_qmatmul() {
    let mut rng = Rng(2);
    let mut worst = 0f64;
    for ty in TYPES {
        for (rows, cols) in SHAPES {
            for n in [1, 2, 5, 9] {
                let bytes = random_blocks(ty, rows, cols, &mut rng);
                let m = QMatrix::from_gguf(ty, rows, cols, &bytes).unwrap();
                let x = random_acts(n, cols, &mut rng);
                let mut got = vec![0f32; n * rows];
                m.matmul_f32(&x, &mut got).unwrap();
                let q = qtensor_from_ggml(ggml(ty), &bytes, vec![rows, cols], &Device::Cpu).unwrap();
                let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
                let want: Vec<f32> =
                    QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let w = m.dequantize();
                for t in 0..n {
                    for r in 0..rows {
                        let mag: f64 = (0..cols).map(|k| (w[r * cols + k] * x[t * cols + k]).abs() as f64).sum();
                        let d = (got[t * rows + r] - want[t * rows + r]).abs() as f64;
                        worst = worst.max(d / mag.max(1e-30));
                        if ty == QType::Q4_1 {
                            assert_eq!(got[t * rows + r].to_bits(), want[t * rows + r].to_bits(), "Q4_1 bitwise");
                        }
                        assert!(d <= 1e-5 * mag + 1e-6, "{ty:?} [{rows},{cols}] n={n} t={t} r={r}: {d} vs magnitude {mag}");
                    }
                }
            }
        }
    }
    println!("worst |ours - candle| / Σ|w·x| = {worst:.2e}");
}

/// Against exact f64 math on the dequantized weights and the f32 activations.
/// Activation rounding: q = round(x / d) with d = max|x|/127 (f32), then d is
/// stored as f16 (relative error <= 2^-11), so each x is represented with
/// error <= d/2 + 127 * d * 2^-11 < 0.563 d (we use 0.57 d for the f32
/// rounding of x / d). A weight row's error is then <= Σ_b 0.57 d_b Σ_k |w_k|,
/// plus, for Q4_1, |m_b| * |s_b| * 2^-10 (s = d·Σq rounded to f16 twice), plus
/// f32 accumulation (<= 1e-5 Σ|w·x|).
#[test]
fn matmul_within_derived_bound_of_exact() {
    let mut rng = Rng(3);
    let mut worst_ratio = 0f64;
    for ty in TYPES {
        for (rows, cols) in SHAPES {
            for n in [1, 4, 6] {
                let bytes = random_blocks(ty, rows, cols, &mut rng);
                let m = QMatrix::from_gguf(ty, rows, cols, &bytes).unwrap();
                let x = random_acts(n, cols, &mut rng);
                let mut got = vec![0f32; n * rows];
                m.matmul_f32(&x, &mut got).unwrap();
                let w = m.dequantize();
                let mins: Vec<f32> = match ty {
                    QType::Q4_1 => bytes.chunks_exact(20).map(|b| f16::from_le_bytes([b[2], b[3]]).to_f32()).collect(),
                    _ => vec![0.0; rows * cols / 32],
                };
                for t in 0..n {
                    let xs = &x[t * cols..(t + 1) * cols];
                    for r in 0..rows {
                        let ws = &w[r * cols..(r + 1) * cols];
                        let exact: f64 = ws.iter().zip(xs).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let mut bound = 1e-6;
                        for b in 0..cols / 32 {
                            let xb = &xs[b * 32..(b + 1) * 32];
                            let d = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                            let wsum: f64 = ws[b * 32..(b + 1) * 32].iter().map(|v| v.abs() as f64).sum();
                            let xsum: f64 = xb.iter().map(|v| v.abs() as f64).sum();
                            bound += 0.57 * d * wsum + (mins[r * cols / 32 + b].abs() as f64) * (xsum + 16.0 * d) * 2f64.powi(-10);
                            bound += 1e-5 * ws[b * 32..(b + 1) * 32].iter().zip(xb).map(|(a, c)| (a * c).abs() as f64).sum::<f64>();
                        }
                        let err = (got[t * rows + r] as f64 - exact).abs();
                        worst_ratio = worst_ratio.max(err / bound);
                        assert!(err <= bound, "{ty:?} [{rows},{cols}] t={t} r={r}: error {err} > bound {bound}");
                    }
                }
            }
        }
    }
    println!("worst error / derived bound = {worst_ratio:.3}");
}

/// Decode and prefill agree bit for bit: a row's result does not depend on
/// how many activation rows were multiplied together (tile or remainder).
#[test]
fn rows_independent_of_batch() {
    let mut rng = Rng(4);
    for ty in TYPES {
        let (rows, cols) = (13, 576);
        let m = QMatrix::from_gguf(ty, rows, cols, &random_blocks(ty, rows, cols, &mut rng)).unwrap();
        let x = random_acts(11, cols, &mut rng);
        let mut all = vec![0f32; 11 * rows];
        m.matmul_f32(&x, &mut all).unwrap();
        let mut port = vec![0f32; 11 * rows];
        m.matmul_portable(&QActs::quantize(&x, cols).unwrap(), &mut port).unwrap();
        assert_eq!(all, port);
        for t in 0..11 {
            let mut one = vec![0f32; rows];
            m.matmul_f32(&x[t * cols..(t + 1) * cols], &mut one).unwrap();
            assert!(one.iter().zip(&all[t * rows..]).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty:?} row {t}");
        }
    }
}

/// Split across threads (feature `threads`), both kernels give the bits of
/// one thread: pools of 1 to 3 threads, decode and prefill, row counts that
/// do and do not divide into pieces, every type.
#[cfg(feature = "threads")]
#[test]
fn threads_give_the_bits_of_one_thread() {
    let mut rng = Rng(5);
    let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    for ty in TYPES {
        for (rows, cols) in [(576, 576), (1539, 576), (250, 1536)] {
            let m = QMatrix::from_gguf(ty, rows, cols, &random_blocks(ty, rows, cols, &mut rng)).unwrap();
            for n in [1, 3, 9] {
                let x = random_acts(n, cols, &mut rng);
                let acts = QActs::quantize(&x, cols).unwrap();
                let mut want = vec![0f32; n * rows];
                m.matmul_portable(&acts, &mut want).unwrap();
                let mut want_exact = vec![0f32; n * rows];
                m.matmul_exact_portable(&x, &mut want_exact).unwrap();
                for threads in 1..=3 {
                    let (mut got, mut got_exact) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                    pool(threads).install(|| {
                        assert_eq!(scalpel_kernels::threads(), threads);
                        m.matmul(&acts, &mut got).unwrap();
                        m.matmul_exact(&x, &mut got_exact).unwrap();
                    });
                    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same(&got, &want), "{ty:?} [{rows}, {cols}] n={n} int8, {threads} threads");
                    assert!(same(&got_exact, &want_exact), "{ty:?} [{rows}, {cols}] n={n} exact, {threads} threads");
                }
            }
        }
    }
}

/// `on_one_thread` runs its work on one thread inside a pool of 3 (what the
/// benchmark's "against 1 thread" compares with) and gives the pool's
/// bits; afterwards the pool's threads are back.
#[cfg(feature = "threads")]
#[test]
fn on_one_thread_runs_alone_with_the_same_bits() {
    let mut rng = Rng(9);
    let m = QMatrix::from_gguf(QType::Q4_1, 1539, 576, &random_blocks(QType::Q4_1, 1539, 576, &mut rng)).unwrap();
    let x = random_acts(3, 576, &mut rng);
    let acts = QActs::quantize(&x, 576).unwrap();
    rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| {
        let (mut all, mut all_exact) = (vec![0f32; 3 * 1539], vec![0f32; 3 * 1539]);
        m.matmul(&acts, &mut all).unwrap();
        m.matmul_exact(&x, &mut all_exact).unwrap();
        let (threads, one, one_exact) = scalpel_kernels::on_one_thread(|| {
            let (mut one, mut one_exact) = (vec![0f32; 3 * 1539], vec![0f32; 3 * 1539]);
            m.matmul(&acts, &mut one).unwrap();
            m.matmul_exact(&x, &mut one_exact).unwrap();
            (scalpel_kernels::threads(), one, one_exact)
        });
        assert_eq!(threads, 1);
        assert_eq!(scalpel_kernels::threads(), 3);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same(&one, &all) && same(&one_exact, &all_exact));
    });
}

/// Several matrices on one input (`matmul_shared`, `matmul_exact_shared`,
/// as a layer's q, k and v share the threads) give each matrix's own
/// product bit for bit: types mixed, row counts that are and are not
/// multiples of the 4-row tile, decode and prefill, pools of 1 to 3 threads.
#[cfg(feature = "threads")]
#[test]
fn shared_products_give_each_matrix_its_own_bits() {
    let mut rng = Rng(11);
    let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let cols = 576;
    let ws: Vec<QMatrix> = [(QType::Q4_1, 576), (QType::Q4_0, 192), (QType::Q8_0, 190), (QType::Q4_1, 6)]
        .into_iter()
        .map(|(ty, rows)| QMatrix::from_gguf(ty, rows, cols, &random_blocks(ty, rows, cols, &mut rng)).unwrap())
        .collect();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
    for group in [&ws[..], &ws[1..3], &ws[3..]] {
        let refs: Vec<&QMatrix> = group.iter().collect();
        for n in [1, 3, 9] {
            let x = random_acts(n, cols, &mut rng);
            let acts = QActs::quantize(&x, cols).unwrap();
            let want: Vec<(Vec<f32>, Vec<f32>)> = group
                .iter()
                .map(|w| {
                    let (mut a, mut b) = (vec![0f32; n * w.rows()], vec![0f32; n * w.rows()]);
                    w.matmul_portable(&acts, &mut a).unwrap();
                    w.matmul_exact_portable(&x, &mut b).unwrap();
                    (a, b)
                })
                .collect();
            for threads in 1..=3 {
                let mut got: Vec<Vec<f32>> = group.iter().map(|w| vec![f32::NAN; n * w.rows()]).collect();
                let mut got_exact = got.clone();
                pool(threads).install(|| {
                    let mut views: Vec<&mut [f32]> = got.iter_mut().map(|o| o.as_mut_slice()).collect();
                    scalpel_kernels::matmul_shared(&refs, &acts, &mut views).unwrap();
                    let mut views: Vec<&mut [f32]> = got_exact.iter_mut().map(|o| o.as_mut_slice()).collect();
                    scalpel_kernels::matmul_exact_shared(&refs, &x, &mut views).unwrap();
                });
                for (i, (a, b)) in want.iter().enumerate() {
                    assert!(same(&got[i], a), "matrix {i} of {}, n={n}, int8, {threads} threads", group.len());
                    assert!(same(&got_exact[i], b), "matrix {i} of {}, n={n}, exact, {threads} threads", group.len());
                }
            }
        }
    }
}
