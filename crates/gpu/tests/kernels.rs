//! Every kernel against a plain Rust reference (f32, f64 where it matters).
//! Tolerances are absolute, on inputs of order 1:
//! - matmul / matvec (K ≤ 600): 1e-4 (different summation order);
//! - norms, attention: 1e-5; elementwise (exp/tanh): 1e-5;
//! - RoPE, embedding, add, argmax, edits (except project_out): exact or 1e-6;
//! - sample: the exact (f64, sorted) pick and the CPU sampler's.

mod common;

use common::*;
use scalpel_gpu::{block_on, params, Kernel};

fn matmul_ref(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for t in 0..k {
                s += x[i * k + t] as f64 * w[j * k + t] as f64;
            }
            y[i * n + j] = s as f32 + b.map(|b| b[j]).unwrap_or(0.0);
        }
    }
    y
}

#[test]
fn matmul_tiled_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(1);
    for &(m, n, k, bias) in &[(70usize, 130usize, 200usize, true), (3, 64, 16, false), (130, 65, 580, false)] {
        let x = r.vec(m * k, 1.0);
        let w = r.vec(n * k, 1.0);
        let b = r.vec(n, 1.0);
        let out = block_on(gpu.run_kernel(
            Kernel::Matmul,
            [0, m as u32, 0, 0],
            params(&[n as u32, k as u32, 0, bias as u32]),
            &[&bytes(&x), &bytes(&w), &bytes(&b)],
            &[&vec![0u8; m * n * 4]],
            [(n as u32).div_ceil(64), (m as u32).div_ceil(64), 1],
        ))
        .unwrap();
        let want = matmul_ref(&x, &w, bias.then_some(&b[..]), m, n, k);
        let d = max_diff(&floats(&out[0])[..m * n], &want);
        eprintln!("matmul {m}x{n}x{k}: max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "matmul {m}x{n}x{k}: {d}");
    }
}

#[test]
fn matvec_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(2);
    for &(n, k, bias, mode, t) in &[(1000usize, 576usize, false, 0u32, 1usize), (37, 1536, true, 1, 3)] {
        let x = r.vec(t * k, 1.0);
        let w = r.vec(n * k, 1.0);
        let b = r.vec(n, 1.0);
        let out = block_on(gpu.run_kernel(
            Kernel::Matvec,
            [0, t as u32, 0, 0],
            params(&[n as u32, k as u32, mode, bias as u32]),
            &[&bytes(&x), &bytes(&w), &bytes(&b)],
            &[&vec![0u8; n * 4]],
            [(n as u32).div_ceil(8), 1, 1],
        ))
        .unwrap();
        let row = if mode == 1 { t - 1 } else { 0 };
        let want = matmul_ref(&x[row * k..(row + 1) * k], &w, bias.then_some(&b[..]), 1, n, k);
        let d = max_diff(&floats(&out[0])[..n], &want);
        eprintln!("matvec {n}x{k}: max |Δ| = {d:.2e}");
        assert!(d < 1e-4, "matvec {n}x{k}: {d}");
    }
}

#[test]
fn norms_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(3);
    let (t, d, eps) = (5usize, 576usize, 1e-5f32);
    let x: Vec<f32> = r.vec(t * d, 2.0);
    let w: Vec<f32> = (0..d).map(|_| 1.0 + r.sym(0.3)).collect();
    let b = r.vec(d, 0.5);
    for kind in [0u32, 1] {
        for mode in [0u32, 1] {
            let rows = if mode == 1 { 1 } else { t };
            let out = block_on(gpu.run_kernel(
                Kernel::Norm,
                [0, t as u32, 0, 0],
                params(&[d as u32, mode, kind, eps.to_bits()]),
                &[&bytes(&x), &bytes(&w), &bytes(&b)],
                &[&vec![0u8; t * d * 4]],
                [1, rows as u32, 1],
            ))
            .unwrap();
            let mut want = Vec::new();
            for i in 0..rows {
                let src = if mode == 1 { t - 1 } else { i };
                let row = &x[src * d..(src + 1) * d];
                if kind == 0 {
                    let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
                    let s = (ms + eps as f64).sqrt();
                    want.extend(row.iter().zip(&w).map(|(v, w)| (*v as f64 / s * *w as f64) as f32));
                } else {
                    let mean = row.iter().map(|v| *v as f64).sum::<f64>() / d as f64;
                    let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                    let s = (var + eps as f64).sqrt();
                    want.extend(row.iter().zip(&w).zip(&b).map(|((v, w), b)| ((*v as f64 - mean) / s * *w as f64 + *b as f64) as f32));
                }
            }
            let got = floats(&out[0]);
            let dd = max_diff(&got[..rows * d], &want);
            eprintln!("norm kind {kind} mode {mode}: max |Δ| = {dd:.2e}");
            assert!(dd < 1e-5, "norm kind {kind} mode {mode}: {dd}");
        }
    }
}

#[test]
fn rope_kv_matches_reference_rope() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(4);
    let (nh, nkv, dh, max_seq, start, t) = (3usize, 1usize, 8usize, 16usize, 5usize, 3usize);
    let width = (nh + 2 * nkv) * dh;
    let qkv = r.vec(t * width, 1.0);
    let half = dh / 2;
    let inv: Vec<f32> = (0..dh).step_by(2).map(|i| 1f32 / 10000f32.powf(i as f32 / dh as f32)).collect();
    let (mut cos, mut sin) = (vec![], vec![]);
    for p in 0..max_seq {
        for f in &inv {
            cos.push((p as f32 * f).cos());
            sin.push((p as f32 * f).sin());
        }
    }
    let out = block_on(gpu.run_kernel(
        Kernel::RopeKv,
        [start as u32, t as u32, 0, 0],
        params(&[nh as u32, nkv as u32, dh as u32, max_seq as u32]),
        &[&bytes(&qkv), &bytes(&cos), &bytes(&sin)],
        &[&vec![0u8; t * nh * dh * 4], &vec![0u8; nkv * max_seq * dh * 4], &vec![0u8; nkv * max_seq * dh * 4]],
        [((nh + 2 * nkv) * half).div_ceil(64) as u32, t as u32, 1],
    ))
    .unwrap();
    let (q, kc, vc) = (floats(&out[0]), floats(&out[1]), floats(&out[2]));
    let rot = |x: &[f32], pos: usize| -> Vec<f32> {
        let mut o = vec![0f32; dh];
        for i in 0..half {
            let (c, s) = (cos[pos * half + i], sin[pos * half + i]);
            // Hugging Face order: pairs (i, i + dh/2).
            o[i] = x[i] * c - x[i + half] * s;
            o[i + half] = x[i] * s + x[i + half] * c;
        }
        o
    };
    let mut worst = 0f32;
    for ti in 0..t {
        let pos = start + ti;
        let row = &qkv[ti * width..(ti + 1) * width];
        for h in 0..nh {
            worst = worst.max(max_diff(&q[(ti * nh + h) * dh..][..dh], &rot(&row[h * dh..(h + 1) * dh], pos)));
        }
        for h in 0..nkv {
            let kk = &row[(nh + h) * dh..(nh + h + 1) * dh];
            let vv = &row[(nh + nkv + h) * dh..(nh + nkv + h + 1) * dh];
            worst = worst.max(max_diff(&kc[(h * max_seq + pos) * dh..][..dh], &rot(kk, pos)));
            worst = worst.max(max_diff(&vc[(h * max_seq + pos) * dh..][..dh], vv));
        }
    }
    eprintln!("rope_kv: max |Δ| = {worst:.2e}");
    assert!(worst < 1e-6, "{worst}");
    // Untouched cache positions stay zero.
    assert!(kc[..start * dh].iter().all(|v| *v == 0.0));
}

#[test]
fn attention_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(5);
    for &(nh, nkv, dh, start, t) in &[(4usize, 2usize, 16usize, 70usize, 3usize), (9, 3, 64, 0, 5), (2, 1, 8, 130, 1)] {
        let max_seq = 200;
        let q = r.vec(t * nh * dh, 1.0);
        let kc = r.vec(nkv * max_seq * dh, 1.0);
        let vc = r.vec(nkv * max_seq * dh, 1.0);
        let out = block_on(gpu.run_kernel(
            Kernel::Attention,
            [start as u32, t as u32, 0, 0],
            params(&[nh as u32, nkv as u32, dh as u32, max_seq as u32, (dh as f32).sqrt().to_bits()]),
            &[&bytes(&q), &bytes(&kc), &bytes(&vc)],
            &[&vec![0u8; t * nh * dh * 4]],
            [nh as u32, t as u32, 1],
        ))
        .unwrap();
        let z = floats(&out[0]);
        let mut want = vec![0f32; t * nh * dh];
        for ti in 0..t {
            for h in 0..nh {
                let g = h / (nh / nkv);
                let qq = &q[(ti * nh + h) * dh..][..dh];
                let n = start + ti + 1;
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        let kk = &kc[(g * max_seq + j) * dh..][..dh];
                        qq.iter().zip(kk).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let sum: f64 = e.iter().sum();
                for dd in 0..dh {
                    let v: f64 = (0..n).map(|j| e[j] / sum * vc[(g * max_seq + j) * dh + dd] as f64).sum();
                    want[(ti * nh + h) * dh + dd] = v as f32;
                }
            }
        }
        let d = max_diff(&z, &want);
        eprintln!("attention nh {nh} nkv {nkv} dh {dh} start {start} t {t}: max |Δ| = {d:.2e}");
        assert!(d < 1e-5, "{d}");
    }
}

#[test]
fn elementwise_kernels_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(6);
    let (t, m) = (3usize, 300usize);
    // SiLU·mul
    let gu = r.vec(t * 2 * m, 6.0);
    let out = block_on(gpu.run_kernel(Kernel::SiluMul, [0, t as u32, 0, 0], params(&[m as u32]), &[&bytes(&gu)], &[&vec![0u8; t * m * 4]], [(m as u32).div_ceil(256), t as u32, 1])).unwrap();
    let mut want = vec![];
    for ti in 0..t {
        for i in 0..m {
            let g = gu[ti * 2 * m + i] as f64;
            want.push((g / (1.0 + (-g).exp()) * gu[ti * 2 * m + m + i] as f64) as f32);
        }
    }
    let d = max_diff(&floats(&out[0]), &want);
    eprintln!("silu_mul: max |Δ| = {d:.2e}");
    assert!(d < 1e-5, "silu_mul {d}");
    // GELU (tanh and erf)
    let a = r.vec(t * m, 5.0);
    for kind in [0u32, 1] {
        let out = block_on(gpu.run_kernel(Kernel::Gelu, [0, t as u32, 0, 0], params(&[m as u32, kind]), &[&bytes(&a)], &[&vec![0u8; t * m * 4]], [(m as u32).div_ceil(256), t as u32, 1])).unwrap();
        let want: Vec<f32> = a
            .iter()
            .map(|&x| {
                let x = x as f64;
                (if kind == 0 {
                    0.5 * x * (1.0 + (0.7978845608028654 * (x + 0.044715 * x * x * x)).tanh())
                } else {
                    0.5 * x * (1.0 + erf(x / 2f64.sqrt()))
                }) as f32
            })
            .collect();
        let d = max_diff(&floats(&out[0]), &want);
        eprintln!("gelu kind {kind}: max |Δ| = {d:.2e}");
        assert!(d < 2e-6 * 5.0, "gelu {kind}: {d}");
    }
    // add
    let b = r.vec(t * m, 1.0);
    let out = block_on(gpu.run_kernel(Kernel::Add, [0, t as u32, 0, 0], params(&[m as u32]), &[&bytes(&a), &bytes(&b)], &[&vec![0u8; t * m * 4]], [(m as u32).div_ceil(256), t as u32, 1])).unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(floats(&out[0]), want);
    // embedding lookup
    let (v, d) = (50usize, 40usize);
    let table = r.vec(v * d, 1.0);
    let ids = [7u32, 0, 49, 7];
    let out = block_on(gpu.run_kernel(Kernel::Embed, [0, 4, 0, 0], params(&[d as u32]), &[&u32_bytes(&ids), &bytes(&table)], &[&vec![0u8; 4 * d * 4]], [1, 4, 1])).unwrap();
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
    assert_eq!(floats(&out[0]), want);
}

/// erf to ~1e-12 (series for |x| < 3, else ±1 within 2e-5·… — fine at f32).
fn erf(x: f64) -> f64 {
    if x.abs() > 5.0 {
        return x.signum();
    }
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0.0;
    while n < 200.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn argmax_matches_reference_with_ties() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(7);
    let v = 49152usize;
    let mut logits = r.vec(2 * v, 10.0);
    // Row 1: a tie between 40000 and 123 at the max; lowest id wins.
    logits[v + 40000] = 50.0;
    logits[v + 123] = 50.0;
    logits[v + 5] = f32::NAN;
    for (mode, want) in [(0u32, {
        let row = &logits[..v];
        scalpel_engine::argmax(row)
    }), (1, 123)] {
        let out = block_on(gpu.run_kernel(Kernel::Argmax, [0, 2, 0, 0], params(&[v as u32, mode]), &[&bytes(&logits)], &[&[0u8; 16]], [1, 1, 1])).unwrap();
        assert_eq!(u32s(&out[0])[0], want, "mode {mode}");
    }
}

#[test]
fn edits_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(8);
    let (t, w, start) = (4usize, 300usize, 10usize);
    let x = r.vec(t * w, 1.0);
    let v = r.vec(w, 1.0);
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let u: Vec<f32> = v.iter().map(|a| a / n).collect();
    let src = r.vec(6 * w, 1.0); // a kept activation for positions 9..15
    // The same, uploaded at a hook's own width: columns 50..150 of the row
    // (as hook_k within the fused qkv rows).
    let narrow: Vec<f32> = (0..6).flat_map(|r| src[r * w + 50..r * w + 150].to_vec()).collect();
    // (mode, alpha, src, pos range, col range, src width and column offset)
    type Case = (u32, f32, Vec<f32>, (u32, u32), (u32, u32), (u32, u32));
    let cases: Vec<Case> = vec![
        (0, 2.5, v[..100].to_vec(), (11, 13), (50, 150), (w as u32, 0)),
        (1, -0.5, vec![0.0], (0, u32::MAX), (0, w as u32), (w as u32, 0)),
        (2, 0.0, vec![0.0], (12, 14), (64, 128), (w as u32, 0)),
        (3, 0.0, u.clone(), (0, u32::MAX), (0, w as u32), (w as u32, 0)),
        (4, 0.0, src.clone(), (10, 12), (0, w as u32), (w as u32, 0)),
        (4, 0.0, narrow, (10, 13), (70, 150), (100, 50)),
    ];
    for (mode, alpha, s, (plo, phi), (clo, chi), (sw, soff)) in cases {
        let out = block_on(gpu.run_kernel(
            Kernel::Edit,
            [start as u32, t as u32, 0, 0],
            params(&[w as u32, mode, plo, phi, clo, chi, 9, 6, alpha.to_bits(), sw, soff]),
            &[&bytes(&s)],
            &[&bytes(&x)],
            [1, t as u32, 1],
        ))
        .unwrap();
        let got = floats(&out[0]);
        let mut want = x.clone();
        for ti in 0..t {
            let pos = (start + ti) as u32;
            if pos < plo || pos >= phi {
                continue;
            }
            let row = &mut want[ti * w..(ti + 1) * w];
            let dot: f32 = (clo..chi).map(|c| row[c as usize] * s.get((c - clo) as usize).copied().unwrap_or(0.0)).sum();
            for c in clo..chi {
                let c = c as usize;
                row[c] = match mode {
                    0 => row[c] + alpha * s[c - clo as usize],
                    1 => row[c] * alpha,
                    2 => 0.0,
                    3 => row[c] - dot * s[c],
                    _ => src[(pos as usize - 9) * w + c],
                };
            }
        }
        let d = max_diff(&got, &want);
        eprintln!("edit mode {mode} (source width {sw}, offset {soff}): max |Δ| = {d:.2e}");
        assert!(d < 1e-5, "edit mode {mode}: {d}");
        if mode == 3 {
            // The projection is gone.
            for ti in 0..t {
                let dot: f32 = got[ti * w..(ti + 1) * w].iter().zip(&u).map(|(a, b)| a * b).sum();
                assert!(dot.abs() < 1e-4, "{dot}");
            }
        }
    }
}

#[test]
fn software_adapter_is_not_chosen_by_default() {
    let Some(gpu) = gpu() else { return };
    if !gpu.info.software {
        eprintln!("hardware adapter present ({}): nothing to check", gpu.info.name);
        return;
    }
    // Only software adapters here (lavapipe): the default options refuse them.
    match block_on(scalpel_gpu::Gpu::new(&scalpel_gpu::GpuOptions::default())) {
        Ok(g) => assert!(!g.info.software, "picked software adapter {}", g.info.name),
        Err(e) => {
            eprintln!("default options: {e}");
            assert!(e.to_string().contains("software"), "{e}");
        }
    }
    let forced = block_on(scalpel_gpu::Gpu::new(&scalpel_gpu::GpuOptions { allow_software: false, force_software: true })).unwrap();
    assert!(forced.info.software);
}

/// Runs the `sample` kernel on one row (mode 0) with uniform number `u`.
fn gpu_sample(
    gpu: &scalpel_gpu::Gpu,
    row: &[f32],
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    u: f32,
) -> u32 {
    let v = row.len();
    // The row sampled is at absolute position start + t - 1 = 5: slot 5.
    let mut rnd = vec![0f32; 64];
    rnd[5] = u;
    let p = params(&[
        v as u32,
        0,
        temperature.to_bits(),
        top_k.map_or(v, |k| k.min(v)) as u32,
        top_p.unwrap_or(1.0).to_bits(),
    ]);
    let out = block_on(gpu.run_kernel(
        Kernel::Sample,
        [5, 1, 0, 0],
        p,
        &[&bytes(row), &bytes(&rnd)],
        &[&[0u8; 16], &vec![0u8; v * 4]],
        [1, 1, 1],
    ))
    .unwrap();
    u32::from_le_bytes(out[0][..4].try_into().unwrap())
}

/// The exact pick in f64 (highest first, ties by id; top-k, then top-p),
/// and the distance from `u` to the nearest cumulative-probability boundary.
fn sample_ref(
    row: &[f32],
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    u: f32,
) -> (u32, f64) {
    let mut c: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l / temperature))
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k {
        c.truncate(k);
    }
    let e: Vec<f64> = c.iter().map(|x| ((x.1 - c[0].1) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    let mut keep = e.len();
    let mut margin = f64::INFINITY;
    if let Some(p) = top_p {
        let mut acc = 0.0;
        for (i, x) in e.iter().enumerate() {
            acc += x / z;
            margin = margin.min((acc - p as f64).abs());
            if acc >= p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    let z2: f64 = e[..keep].iter().sum();
    let mut acc = 0.0;
    for i in 0..keep {
        acc += e[i] / z2;
        margin = margin.min((acc - u as f64).abs());
        if (u as f64) < acc {
            return (c[i].0, margin);
        }
    }
    (c[keep - 1].0, margin)
}

/// The GPU sampler against the exact inverse CDF (f64, sorted) on flat and
/// peaked rows of 4999 and 49152 (the default model's vocabulary) logits,
/// every combination of temperature / top-k / top-p; and against the CPU
/// engine's `Sampler` for the same seed (its first uniform number is the one
/// `Sampler::sample` draws) on peaked rows, like a language model's. On flat
/// rows the CPU's sequential f32 cumulative sum over thousands of tokens
/// drifts by more than one token's probability, so only the exact
/// reference is asserted there; draws within 1e-5 of a boundary are skipped.
#[test]
fn sample_matches_exact_and_cpu_sampler() {
    use scalpel_engine::{GenerateOptions, Sampler};
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(21);
    let settings: [(f32, Option<usize>, Option<f32>); 6] = [
        (1.0, None, None),
        (0.7, None, None),
        (1.0, Some(40), None),
        (1.3, None, Some(0.9)),
        (0.8, Some(50), Some(0.8)),
        (1.0, Some(1), None),
    ];
    let (mut exact, mut same_as_cpu, mut skipped) = (0, 0, 0);
    for v in [4999usize, 49152] {
        for row_seed in 0..4u64 {
            let peaked = row_seed % 2 == 1;
            let mut row = r.vec(v, 3.0);
            if peaked {
                // A handful of likely tokens over a long tail.
                for j in 0..12 {
                    row[(j * 7919 + row_seed as usize * 131) % v] += 9.0 + j as f32 * 0.5;
                }
            }
            for &(temperature, top_k, top_p) in &settings {
                for seed in [row_seed, 100 + row_seed, 7777] {
                    let o = GenerateOptions {
                        temperature,
                        top_k,
                        top_p,
                        seed,
                        ..Default::default()
                    };
                    let u = Sampler::new(&o).next_uniform();
                    let (want, margin) = sample_ref(&row, temperature, top_k, top_p, u);
                    if margin < 1e-5 {
                        skipped += 1;
                        continue;
                    }
                    let got = gpu_sample(&gpu, &row, temperature, top_k, top_p, u);
                    let what = format!("v {v}, peaked {peaked}, T {temperature}, top_k {top_k:?}, top_p {top_p:?}, seed {seed}, u {u}");
                    assert_eq!(got, want, "exact: {what}");
                    exact += 1;
                    if peaked {
                        assert_eq!(got, Sampler::new(&o).sample(&row), "CPU sampler: {what}");
                        same_as_cpu += 1;
                    }
                }
            }
        }
    }
    eprintln!("sample: {exact} draws equal to the exact pick, {same_as_cpu} of them also checked equal to the CPU sampler's, {skipped} skipped (within 1e-5 of a boundary)");
    assert!(
        exact >= 100 && same_as_cpu >= 60,
        "too few draws checked: {exact} exact, {same_as_cpu} vs the CPU"
    );
}

/// Inverse-CDF exactness: with N uniform numbers on a grid, each token is
/// picked round(N·p) ± 1 times; ties are walked in id order; NaN is never
/// picked; top_k = 1 is the argmax.
#[test]
fn sample_distribution_ties_and_nan() {
    let Some(gpu) = gpu() else { return };
    let row = [0.5f32, -1.0, 2.0, 0.0, 1.5, -3.0, 0.25, 1.0, -0.5, 0.75];
    let t = 1.5f32;
    let e: Vec<f64> = row.iter().map(|&x| ((x / t) as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    let n = 500;
    let mut counts = [0usize; 10];
    for i in 0..n {
        let u = (i as f32 + 0.5) / n as f32;
        counts[gpu_sample(&gpu, &row, t, None, None, u) as usize] += 1;
    }
    for (j, c) in counts.iter().enumerate() {
        let want = e[j] / z * n as f64;
        assert!(
            (*c as f64 - want).abs() <= 1.0 + 1e-9,
            "token {j}: {c} picks, expected {want:.1}"
        );
    }
    eprintln!("sample: {n} grid draws, counts {counts:?}");
    // Four tokens tied at the top: u in quarter i picks the i-th tie by id.
    let tied = [1.0f32, 3.0, 0.0, 3.0, 3.0, -2.0, 3.0];
    let picks: Vec<u32> = [0.05f32, 0.3, 0.55, 0.8]
        .iter()
        .map(|&u| gpu_sample(&gpu, &tied, 1e-3, None, None, u))
        .collect();
    assert_eq!(picks, vec![1, 3, 4, 6]);
    // NaN never wins; top_k = 1 is the argmax (lowest id on ties).
    let nan = [f32::NAN, 0.1, f32::NAN, 0.3, 0.2];
    for u in [0.0f32, 0.5, 0.999] {
        assert_ne!(gpu_sample(&gpu, &nan, 1.0, None, None, u), 0);
        assert_ne!(gpu_sample(&gpu, &nan, 1.0, None, None, u), 2);
        assert_eq!(gpu_sample(&gpu, &nan, 1.0, Some(1), None, u), 3);
    }
}
