//! wasm entry points for `run.sh` (Node, `wasm-bindgen --target nodejs`):
//! the simd128 kernel against the portable one (bit for bit), attention's
//! grouped values and decode's attention over slices against candle's ops
//! (bit for bit), kernel GFLOP/s against candle's QMatMul, and model
//! decode/prefill tok/s with candle's and Scalpel's kernels in one run.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul};
use candle_core::{Device, Module, Tensor};
use scalpel_engine::{argmax, Kernels, KvCache, Logits, Model, ModelSource, Precision};
use scalpel_kernels::{QActs, QMatrix, QType};
use serde_json::json;
use wasm_bindgen::prelude::*;

fn now_ms() -> f64 {
    js_sys::Date::now()
}

use scalpel_testkit::{ggml, random_blocks, Rng};

fn random_acts(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|i| (rng.unit() * 2.0 - 1.0) * (1 + i / 32 % 5) as f32).collect()
}

/// simd128 against portable, on random matrices of every type (`matmul`,
/// the exact kernel, dequantization) and on activations (quantization):
/// JSON with the number of cases and of outputs whose bits differ.
#[wasm_bindgen]
pub fn self_test() -> String {
    let mut rng = Rng(7);
    let (mut cases, mut outputs, mut differing) = (0, 0, 0);
    for ty in [QType::Q4_0, QType::Q4_1, QType::Q8_0] {
        for (rows, cols) in [(1, 32), (3, 64), (7, 96), (5, 160), (64, 576), (9, 1536), (33, 576)] {
            for n in [1, 2, 3, 4, 5, 9, 17] {
                let m = QMatrix::from_gguf(ty, rows, cols, &random_blocks(ty, rows, cols, &mut rng)).unwrap();
                let a = QActs::quantize(&random_acts(n * cols, &mut rng), cols).unwrap();
                let (mut x, mut y) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                m.matmul(&a, &mut x).unwrap();
                m.matmul_portable(&a, &mut y).unwrap();
                cases += 1;
                outputs += x.len();
                differing += x.iter().zip(&y).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                // The exact (f32-activation) kernel, simd128 against portable.
                let xf = random_acts(n * cols, &mut rng);
                m.matmul_exact(&xf, &mut x).unwrap();
                m.matmul_exact_portable(&xf, &mut y).unwrap();
                cases += 1;
                outputs += x.len();
                differing += x.iter().zip(&y).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                if n == 1 {
                    // Dequantization (the f32 path's slices), simd128 against portable.
                    let (x, y) = (m.dequantize(), m.dequantize_portable());
                    cases += 1;
                    outputs += x.len();
                    differing += x.iter().zip(&y).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                }
            }
        }
    }
    // Quantizing activations, simd128 against portable: random rows, and
    // blocks made to hit the edges (exact halves after scaling, NaN and
    // infinities, subnormal maxima whose inverse scale overflows, signed
    // zeros, all-zero blocks). A differing case counts all its inputs.
    let mut edge: Vec<f32> = Vec::new();
    for b in 0..64 {
        let amax = [127.0, 254.0, 1.0, 1e-38, 1e-40, 3e38, 0.0][b % 7];
        edge.extend((0..32).map(|k| match (b + k) % 11 {
            0 => amax,
            1 => -(k as f32 + 0.5) * amax / 127.0,
            2 => (k as f32 * 3.0 + 0.5) * amax / 127.0,
            3 if b % 5 == 0 => f32::NAN,
            4 if b % 6 == 1 => f32::INFINITY,
            5 if b % 6 == 2 => f32::NEG_INFINITY,
            6 => -0.0,
            _ => (rng.unit() * 2.0 - 1.0) * amax,
        }));
    }
    for (cols, x) in [(32, edge.clone()), (64, edge), (576, random_acts(5 * 576, &mut rng)), (1536, random_acts(3 * 1536, &mut rng))] {
        let (a, b) = (QActs::quantize(&x, cols).unwrap(), QActs::quantize_portable(&x, cols).unwrap());
        cases += 1;
        outputs += x.len();
        differing += if a.same_bits(&b) { 0 } else { x.len() };
    }
    // SwiGLU's gate (`silu_mul`, its exp four lanes at a time) against the
    // scalar formula: every 97th f32 bit pattern as the gate (NaNs,
    // infinities, subnormals, both signs among them) and the patterns
    // around the edges of libm's ranges (2^-14, 0.5 ln 2, 1.5 ln 2,
    // 87.34, 88.72, 103.97), times a linear input in ±[0.5, 4).
    let mut gate: Vec<f32> = (0..=u32::MAX / 97).map(|i| f32::from_bits(i * 97)).collect();
    for edge in [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592, 0x42ae_ac50, 0x42b1_7218, 0x42cf_f1b5] {
        for sign in [0, 1u32 << 31] {
            gate.extend((edge - 64..edge + 64).map(|b| f32::from_bits(b | sign)));
        }
    }
    let lin: Vec<f32> = (0..gate.len()).map(|i| (0.5 + (i % 7) as f32 * 0.5) * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
    for (v, l) in gate.chunks(1 << 20).zip(lin.chunks(1 << 20)) {
        let (a, b) = (scalpel_kernels::silu_mul(v, l), scalpel_kernels::silu_mul_portable(v, l));
        cases += 1;
        outputs += a.len();
        differing += a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan())).count();
    }
    // Softmax's `exp(x − shift)` against the scalar formula: every 97th bit
    // pattern with no shift (`gate` above), and rows of scores with their
    // maximum as the shift (differences from 0 down past libm's −87.34 and
    // −103.97, where it underflows), some with NaN or ±∞.
    let mut rows: Vec<(Vec<f32>, f32)> = gate.chunks(1 << 20).map(|c| (c.to_vec(), 0.0)).collect();
    for n in [1usize, 3, 4, 5, 17, 96, 300, 1024] {
        for spread in [0.5f32, 20.0, 150.0] {
            let mut r: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.8) * spread).collect();
            if n > 16 && spread > 100.0 {
                (r[3], r[7], r[11]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
            }
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            rows.push((r, max));
        }
    }
    for (r, shift) in rows {
        let (mut a, mut b) = (r.clone(), r);
        scalpel_kernels::exp_shifted(&mut a, shift);
        scalpel_kernels::exp_shifted_portable(&mut b, shift);
        cases += 1;
        outputs += a.len();
        differing += a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan())).count();
    }
    json!({"implementation": scalpel_kernels::implementation(), "cases": cases, "outputs": outputs, "bitwise_differing": differing})
        .to_string()
}

fn time_per_call(mut f: impl FnMut(), budget_ms: f64) -> f64 {
    f();
    let (t0, mut calls) = (now_ms(), 0u32);
    while now_ms() - t0 < budget_ms || calls < 3 {
        f();
        calls += 1;
    }
    (now_ms() - t0) / calls as f64
}

/// GFLOP/s (2·rows·cols·n / time) of candle's QMatMul and ours, the default
/// model's shapes, decode (n = 1) and prefill (n = 64). Ours includes
/// quantizing the activations, like candle's. Also f32 precision's two
/// paths: candle's f32 matmul over dequantized weights and the exact kernel
/// over the blocks.
#[wasm_bindgen]
pub fn kernel_bench(budget_ms: f64) -> String {
    let mut rng = Rng(9);
    let mut rows_out = Vec::new();
    for (ty, rows, cols) in
        [(QType::Q4_1, 576, 576), (QType::Q4_1, 1536, 576), (QType::Q4_1, 576, 1536), (QType::Q8_0, 49152, 576)]
    {
        let bytes = random_blocks(ty, rows, cols, &mut rng);
        let ours = QMatrix::from_gguf(ty, rows, cols, &bytes).unwrap();
        let q = QMatMul::from_qtensor(qtensor_from_ggml(ggml(ty), &bytes, vec![rows, cols], &Device::Cpu).unwrap()).unwrap();
        for n in [1usize, 64] {
            let x = random_acts(n * cols, &mut rng);
            let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
            let mut out = vec![0f32; n * rows];
            let flop = 2.0 * (rows * cols * n) as f64;
            let tc = time_per_call(|| drop(q.forward(&xt).unwrap()), budget_ms);
            let ts = time_per_call(|| ours.matmul_f32(&x, &mut out).unwrap(), budget_ms);
            let wt = Tensor::from_vec(ours.dequantize(), (rows, cols), &Device::Cpu).unwrap().t().unwrap();
            let tf = time_per_call(|| drop(xt.matmul(&wt).unwrap()), budget_ms);
            let te = time_per_call(|| ours.matmul_exact(&x, &mut out).unwrap(), budget_ms);
            // Dequantizing the whole matrix (what the f32 path does a slice
            // at a time for 8 or more rows), simd128 and portable; once per
            // matrix (printed on its n = 1 line).
            let (tdq, tdp) = match n {
                1 => (time_per_call(|| drop(ours.dequantize()), budget_ms), time_per_call(|| drop(ours.dequantize_portable()), budget_ms)),
                _ => (f64::NAN, f64::NAN),
            };
            rows_out.push(json!({"type": ty.name(), "rows": rows, "cols": cols, "n": n,
                "candle_gflops": flop / tc / 1e6, "scalpel_gflops": flop / ts / 1e6, "ratio": tc / ts,
                "f32_dequantized_gflops": flop / tf / 1e6, "exact_gflops": flop / te / 1e6, "exact_over_f32": tf / te,
                "dequantize_ms": tdq, "dequantize_portable_ms": tdp}));
        }
    }
    serde_json::Value::Array(rows_out).to_string()
}

struct Speeds {
    prefill: f64,
    decode: f64,
}

fn run(model: &Model, prompt: &[u32], decode: usize) -> Speeds {
    let t0 = now_ms();
    let mut cache = KvCache::new(&model.config);
    let logits = model.forward(&model.ids_tensor(prompt).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
    let mut next = argmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let prefill = prompt.len() as f64 * 1e3 / (now_ms() - t0);
    let t1 = now_ms();
    for _ in 0..decode {
        let logits = model.forward(&model.ids_tensor(&[next]).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
        next = argmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    Speeds { prefill, decode: decode as f64 * 1e3 / (now_ms() - t1) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The model in f32 precision, dequantize-all (candle) against the exact
/// kernels over the blocks, alternating rounds; medians, the weights' bytes
/// and the max |Δlogit| on a prompt.
#[wasm_bindgen]
pub fn model_bench_f32(bytes: &[u8], prompt_tokens: usize, decode_tokens: usize, rounds: usize) -> Result<String, JsError> {
    let load = |k| Model::load_with("model.gguf", ModelSource::Gguf(bytes), Precision::F32, k);
    let (all, exact) = (load(Kernels::Candle)?, load(Kernels::Auto)?);
    let base = all.tokenizer().encode("The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers that changed physics. ")?;
    let prompt: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens).collect();
    let (mut ap, mut ad, mut ep, mut ed) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds.max(1) {
        let s = run(&all, &prompt, decode_tokens);
        ap.push(s.prefill);
        ad.push(s.decode);
        let s = run(&exact, &prompt, decode_tokens);
        ep.push(s.prefill);
        ed.push(s.decode);
    }
    let (ap, ad, ep, ed) = (median(ap), median(ad), median(ep), median(ed));
    let ids = all.tokenizer().encode("The capital of France is")?;
    let la: Vec<f32> = all.logits(&ids)?.flatten_all()?.to_vec1()?;
    let le: Vec<f32> = exact.logits(&ids)?.flatten_all()?.to_vec1()?;
    let max_diff = la.iter().zip(&le).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    Ok(json!({
        "dequantize_all": {"prefill_tok_s": ap, "decode_tok_s": ad, "weight_bytes": all.weight_bytes()},
        "exact_over_blocks": {"prefill_tok_s": ep, "decode_tok_s": ed, "weight_bytes": exact.weight_bytes()},
        "ratio_exact_over_dequantize_all": {"prefill": ep / ap, "decode": ed / ad, "weight_bytes": exact.weight_bytes() as f64 / all.weight_bytes() as f64},
        "capital_of_france_max_abs_logit_diff_all_positions": max_diff,
        "settings": {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "rounds": rounds, "statistic": "median", "threads": 1},
    })
    .to_string())
}

/// The model (quantized precision) with candle's and with Scalpel's kernels,
/// alternating rounds; medians. Also top-5 next-token ids of both on a prompt
/// and the max |Δlogit| there.
#[wasm_bindgen]
pub fn model_bench(bytes: &[u8], prompt_tokens: usize, decode_tokens: usize, rounds: usize) -> Result<String, JsError> {
    let load = |k| Model::load_with("model.gguf", ModelSource::Gguf(bytes), Precision::Quantized, k);
    let candle = load(Kernels::Candle)?;
    let scalpel = load(Kernels::Auto)?;
    let base = candle.tokenizer().encode(
        "The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers that changed physics. ",
    )?;
    let prompt: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens).collect();
    let (mut cp, mut cd, mut sp, mut sd) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds.max(1) {
        let s = run(&candle, &prompt, decode_tokens);
        cp.push(s.prefill);
        cd.push(s.decode);
        let s = run(&scalpel, &prompt, decode_tokens);
        sp.push(s.prefill);
        sd.push(s.decode);
    }
    let (cp, cd, sp, sd) = (median(cp), median(cd), median(sp), median(sd));
    let ids = candle.tokenizer().encode("The capital of France is")?;
    let lc: Vec<f32> = candle.logits(&ids)?.flatten_all()?.to_vec1()?;
    let ls: Vec<f32> = scalpel.logits(&ids)?.flatten_all()?.to_vec1()?;
    let max_diff = lc.iter().zip(&ls).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let v = lc.len() / ids.len();
    let top = |l: &[f32]| scalpel_engine::top_k(&l[l.len() - v..], 5).into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    Ok(json!({
        "implementation": scalpel_kernels::implementation(),
        "auto_resolves_to": scalpel.kernels().to_string(),
        "candle": {"prefill_tok_s": cp, "decode_tok_s": cd},
        "scalpel": {"prefill_tok_s": sp, "decode_tok_s": sd},
        "ratio_scalpel_over_candle": {"prefill": sp / cp, "decode": sd / cd},
        "capital_of_france": {"max_abs_logit_diff_all_positions": max_diff, "top5_candle": top(&lc), "top5_scalpel": top(&ls)},
        "settings": {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "rounds": rounds, "statistic": "median", "threads": 1},
    })
    .to_string())
}

/// This instance's linear memory in bytes (it only grows: a high-water mark).
#[cfg(target_arch = "wasm32")]
fn memory_bytes() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65536
}

/// The memory a fresh instance reaches loading the model in f32 precision
/// with `kernels` ("candle": dequantize-all, "auto": the page's default)
/// and running a prompt + decode, the file kept in JS and read a range at a
/// time (as the page does): JSON of the high-water marks after loading and
/// after the run. Run each in its own process (memory never shrinks). wasm
/// only: a JS array is a file source there (`gguf::ByteSource`).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub fn load_memory(file: &js_sys::Uint8Array, kernels: &str, prompt_tokens: usize, decode_tokens: usize) -> Result<String, JsError> {
    let before = memory_bytes();
    let k: Kernels = kernels.parse().map_err(|e| JsError::new(&format!("{e}")))?;
    let model = Model::load_gguf_source("model.gguf", file, Precision::F32, k, None)?;
    let loaded = memory_bytes();
    let base = model.tokenizer().encode("The quick brown fox jumps over the lazy dog. ")?;
    let prompt: Vec<u32> = base.iter().copied().cycle().take(prompt_tokens).collect();
    run(&model, &prompt, decode_tokens);
    Ok(json!({
        "kernels": kernels, "file_bytes": file.length(), "weight_bytes": model.weight_bytes(),
        "memory_before": before, "memory_after_load": loaded, "memory_after_run": memory_bytes(),
    })
    .to_string())
}

/// The engine's attention multiplies a group's pattern rows by their value
/// head as one product (`model/attention.rs` `grouped`) where candle's
/// llamas repeat the value heads: candle's matmul must give the same bits
/// both ways in wasm too (its gemm takes other paths here than natively).
/// Shapes of SmolLM2's 9 query and 3 value heads, prompts of 1–35 tokens,
/// caches up to 300 positions: JSON with outputs and differing ones.
#[wasm_bindgen]
pub fn grouped_values_self_test() -> String {
    use candle_core::{Device, Tensor};
    let mut rng = Rng(3);
    let (mut outputs, mut differing) = (0, 0);
    for t in [1usize, 2, 3, 5, 15, 16, 17, 35] {
        for tt in (0..300).step_by(23).map(|cached| t + cached) {
            let pattern: Vec<f32> = (0..9 * t * tt).map(|_| rng.unit()).collect();
            let v: Vec<f32> = (0..3 * tt * 64).map(|_| rng.unit() - 0.5).collect();
            let pattern = Tensor::from_vec(pattern, (1, 9, t, tt), &Device::Cpu).unwrap();
            let v = Tensor::from_vec(v, (1, 3, tt, 64), &Device::Cpu).unwrap();
            let repeated = Tensor::cat(&[&v, &v, &v], 2).unwrap().reshape((1, 9, tt, 64)).unwrap();
            let want: Vec<f32> = pattern.matmul(&repeated).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let grouped = pattern.reshape((1, 3, 3 * t, tt)).unwrap().matmul(&v).unwrap();
            let got: Vec<f32> = grouped.reshape((1, 9, t, 64)).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            outputs += want.len();
            differing += want.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        }
    }
    json!({"outputs": outputs, "bitwise_differing": differing}).to_string()
}

/// Decode's attention without candle's ops (`model/attention.rs`
/// `attend_one_position`, taken when nothing reads the scores or the
/// pattern) must give the bits of the candle path in wasm too, where
/// candle's gemm and reductions take other paths than natively: a random
/// llama with SmolLM2's heads (9 query, 3 key/value, 64 wide), 600 cached
/// steps with and without a hook reading the pattern. JSON with the logits
/// compared and the differing ones.
#[wasm_bindgen]
pub fn one_position_attention_self_test() -> String {
    use scalpel_engine::{FnHook, Hook, HookPoint, Site};
    use scalpel_testkit::{load_gguf, tiny_llama, LlamaSpec};
    let spec = LlamaSpec { n_layers: 2, d_model: 576, n_heads: 9, n_kv_heads: 3, d_mlp: 64, n_ctx: 1024, tied: true, seed: 5 };
    let model = load_gguf(&tiny_llama(&spec).bytes()).unwrap();
    let points: Vec<HookPoint> = (0..spec.n_layers).map(|l| HookPoint::block(l, Site::Pattern)).collect();
    let ids: Vec<u32> = (0..600u32).map(|i| (i * 7919 + 3) % model.config.d_vocab as u32).collect();
    let steps = |hooked: bool| -> Vec<u32> {
        let mut cache = KvCache::new(&model.config);
        let mut read = FnHook::new(points.clone(), |_, _| Ok(None));
        let mut bits = Vec::new();
        for &id in &ids {
            let hooks: Option<&mut dyn Hook> = if hooked { Some(&mut read) } else { None };
            let logits = model.forward(&model.ids_tensor(&[id]).unwrap(), Some(&mut cache), hooks, Logits::Last).unwrap();
            bits.extend(logits.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()));
        }
        bits
    };
    let (plain, hooked) = (steps(false), steps(true));
    let differing = plain.iter().zip(&hooked).filter(|(a, b)| a != b).count();
    json!({"outputs": plain.len(), "bitwise_differing": differing}).to_string()
}
