//! The quantized kernels (`matvec_q`, `matmul_q`, `embed_q`) on random GGUF
//! Q8_0 and Q4_1 blocks against a Rust reference that dequantizes the raw
//! GGUF bytes (f64 accumulation). Bound: max |Δ| / max |y| < 1e-4 for
//! `matvec_q`, 2e-6 for `matmul_q`.

mod common;

use common::*;
use scalpel_gpu::quant::{f16_to_f32, repack, FMT_Q4_1, FMT_Q8_0};
use scalpel_gpu::{block_on, params, Kernel};

/// A random f16 with magnitude in [2^-8, 2^-2), either sign when `signed`.
fn rand_f16(r: &mut Rng, signed: bool) -> [u8; 2] {
    let sign = if signed { (r.below(2) as u16) << 15 } else { 0 };
    let exp = (7 + r.below(6)) as u16; // 2^(7-15) .. 2^(12-15)
    let man = r.below(1024) as u16;
    (sign | (exp << 10) | man).to_le_bytes()
}

/// `n` rows of `k` values as raw GGUF blocks, and the dequantized matrix.
fn random_blocks(r: &mut Rng, fmt: u32, n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let mut raw = Vec::new();
    let mut deq = Vec::with_capacity(n * k);
    for _ in 0..n * k / 32 {
        if fmt == FMT_Q8_0 {
            let d = rand_f16(r, true);
            raw.extend(d);
            let df = f16_to_f32(u16::from_le_bytes(d));
            for _ in 0..32 {
                let q = r.below(256) as u8;
                raw.push(q);
                deq.push(q as i8 as f32 * df);
            }
        } else {
            let d = rand_f16(r, false);
            let m = rand_f16(r, true);
            raw.extend(d);
            raw.extend(m);
            let (df, mf) = (f16_to_f32(u16::from_le_bytes(d)), f16_to_f32(u16::from_le_bytes(m)));
            let qs: Vec<u8> = (0..16).map(|_| r.below(256) as u8).collect();
            raw.extend(&qs);
            let mut vals = [0f32; 32];
            for (i, q) in qs.iter().enumerate() {
                vals[i] = (q & 15) as f32 * df + mf;
                vals[i + 16] = (q >> 4) as f32 * df + mf;
            }
            deq.extend(vals);
        }
    }
    (raw, deq)
}

#[test]
fn f16_conversion() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
}

fn dot_ref(w: &[f32], x: &[f32], n: usize, k: usize) -> Vec<f32> {
    (0..n).map(|j| (0..k).map(|i| w[j * k + i] as f64 * x[i] as f64).sum::<f64>() as f32).collect()
}

fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_diff(got, want) / scale.max(1e-6)
}

#[test]
fn matvec_q_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(21);
    for (fmt, name) in [(FMT_Q8_0, "Q8_0"), (FMT_Q4_1, "Q4_1")] {
        // (n, k, mode, t): decode (z = 1), last row (mode 1), prefill (z = t).
        for &(n, k, mode, t) in &[(1000usize, 576usize, 0u32, 1usize), (37, 1536, 1, 3), (70, 192, 0, 5)] {
            let (raw, w) = random_blocks(&mut r, fmt, n, k);
            let x = r.vec(t * k, 1.0);
            let words = repack(fmt, &raw);
            let wbytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let z = if mode == 1 { 1 } else { t };
            let out = block_on(gpu.run_kernel(
                Kernel::MatvecQ,
                [0, t as u32, 0, 0],
                params(&[n as u32, k as u32, mode, fmt]),
                &[&bytes(&x), &wbytes, &[0u8; 16]],
                &[&vec![0u8; z * n * 4]],
                [(n as u32).div_ceil(8), 1, z as u32],
            ))
            .unwrap();
            let got = floats(&out[0]);
            let mut worst = 0f32;
            for row in 0..z {
                let xr = if mode == 1 { t - 1 } else { row };
                let want = dot_ref(&w, &x[xr * k..(xr + 1) * k], n, k);
                worst = worst.max(rel_diff(&got[row * n..(row + 1) * n], &want));
            }
            eprintln!("matvec_q {name} {n}x{k} mode {mode} t {t}: max |Δ| / max |y| = {worst:.2e}");
            assert!(worst < 1e-4, "matvec_q {name} {n}x{k}: {worst}");
        }
    }
}

#[test]
fn matmul_q_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(23);
    for (fmt, name) in [(FMT_Q8_0, "Q8_0"), (FMT_Q4_1, "Q4_1")] {
        // (m, n, k, mode): tile edges in M and N, one and many K blocks, and
        // mode 1 (only x row m-1 → y row 0).
        for &(m, n, k, mode) in &[
            (70usize, 130usize, 192usize, 0u32),
            (3, 64, 32, 0),
            (130, 65, 576, 0),
            (64, 200, 96, 0),
            (5, 70, 160, 1),
        ] {
            let (raw, w) = random_blocks(&mut r, fmt, n, k);
            let x = r.vec(m * k, 1.0);
            let words = repack(fmt, &raw);
            let wbytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let rows = if mode == 1 { 1 } else { m };
            let out = block_on(gpu.run_kernel(
                Kernel::MatmulQ,
                [0, m as u32, 0, 0],
                params(&[n as u32, k as u32, mode, fmt]),
                &[&bytes(&x), &wbytes, &[0u8; 16]],
                &[&vec![0u8; rows * n * 4]],
                [(n as u32).div_ceil(64), (rows as u32).div_ceil(64), 1],
            ))
            .unwrap();
            let got = floats(&out[0]);
            let mut want = Vec::with_capacity(rows * n);
            for row in 0..rows {
                let xr = if mode == 1 { m - 1 } else { row };
                want.extend(dot_ref(&w, &x[xr * k..(xr + 1) * k], n, k));
            }
            let rel = rel_diff(&got, &want);
            eprintln!("matmul_q {name} {m}x{n}x{k} mode {mode}: max |Δ| / max |y| = {rel:.2e} (max |Δ| {:.2e})", max_diff(&got, &want));
            assert!(rel < 2e-6, "matmul_q {name} {m}x{n}x{k} mode {mode}: {rel}");
        }
    }
}

/// x = identity (M = K) makes y = wᵀ: every dequantized weight must equal
/// the reference's f32 value exactly (only summation order may differ).
#[test]
fn matmul_q_dequantizes_exactly() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(24);
    for (fmt, name) in [(FMT_Q8_0, "Q8_0"), (FMT_Q4_1, "Q4_1")] {
        let (n, k) = (130usize, 96usize);
        let (raw, w) = random_blocks(&mut r, fmt, n, k);
        let eye: Vec<f32> = (0..k * k).map(|i| if i / k == i % k { 1.0 } else { 0.0 }).collect();
        let words = repack(fmt, &raw);
        let wbytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let out = block_on(gpu.run_kernel(
            Kernel::MatmulQ,
            [0, k as u32, 0, 0],
            params(&[n as u32, k as u32, 0, fmt]),
            &[&bytes(&eye), &wbytes, &[0u8; 16]],
            &[&vec![0u8; k * n * 4]],
            [(n as u32).div_ceil(64), (k as u32).div_ceil(64), 1],
        ))
        .unwrap();
        let got = floats(&out[0]);
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let dmax = max_diff(&got, &wt);
        eprintln!("matmul_q {name} identity {k}x{n}x{k}: max |Δ| = {dmax:.2e}");
        assert_eq!(dmax, 0.0, "matmul_q {name}: dequantized weights differ");
    }
}

#[test]
fn embed_q_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let mut r = Rng::new(22);
    for (fmt, name) in [(FMT_Q8_0, "Q8_0"), (FMT_Q4_1, "Q4_1")] {
        let (v, d) = (50usize, 96usize);
        let (raw, table) = random_blocks(&mut r, fmt, v, d);
        let ids = [3u32, 49, 0, 17];
        let words = repack(fmt, &raw);
        let wbytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let out = block_on(gpu.run_kernel(
            Kernel::EmbedQ,
            [0, ids.len() as u32, 0, 0],
            params(&[d as u32, fmt]),
            &[&u32_bytes(&ids), &wbytes],
            &[&vec![0u8; ids.len() * d * 4]],
            [(d as u32).div_ceil(256), ids.len() as u32, 1],
        ))
        .unwrap();
        let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
        let dmax = max_diff(&floats(&out[0]), &want);
        eprintln!("embed_q {name}: max |Δ| = {dmax:.2e}");
        assert!(dmax <= 1e-6 * want.iter().fold(0f32, |m, x| m.max(x.abs())), "embed_q {name}: {dmax}");
    }
}
