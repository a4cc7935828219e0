//! The GPU forward pass against the CPU engine (`Precision::F32`): logits
//! (prefill and KV-cached decode), greedy generation, hook values, and hook
//! edits applied on the GPU vs the same edits as CPU hooks. On a tiny random
//! llama GGUF, and on the default model when it is present
//! (SCALPEL_REQUIRE_MODEL=1 makes its absence a failure).

mod common;

use std::sync::Arc;

use candle_core::Tensor;
use common::*;
use scalpel_engine::{FnHook, Hook, HookCtx, HookList, HookPoint, KvCache, Logits, Model, ModelSource, Precision, Site};
use scalpel_gpu::{block_on, EditOp, ForwardRequest, Gpu, GpuEdit, GpuModel, GpuModelOptions, LogitsOut};

fn top5(row: &[f32]) -> Vec<u32> {
    scalpel_engine::top_k(row, 5).into_iter().map(|(i, _)| i).collect()
}

fn tiny() -> (Vec<u8>, Model) {
    let bytes = tiny_llama(&LlamaSpec::default()).bytes();
    let cpu = Model::load("tiny.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    (bytes, cpu)
}

fn cpu_greedy(cpu: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = KvCache::new(&cpu.config);
    let mut out = Vec::new();
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let l = cpu.forward(&cpu.ids_tensor(&ids).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
        let row: Vec<f32> = l.flatten_all().unwrap().to_vec1().unwrap();
        let tok = scalpel_engine::argmax(&row);
        out.push(tok);
        ids = vec![tok];
    }
    out
}

/// Compares GPU and CPU on `prompt`: all-position logits, `decode` cached
/// steps, greedy generation of `greedy` tokens. Returns the worst |Δlogit|.
#[allow(clippy::too_many_arguments)]
fn compare_logits(gpu: Arc<Gpu>, name: &str, bytes: &[u8], cpu: &Model, prompt: &[u32], decode: usize, greedy: usize, bound: f32) -> f32 {
    let mut g = GpuModel::from_gguf(gpu, name, bytes, &GpuModelOptions { max_seq: 256, ..Default::default() }).unwrap();
    let v = cpu.config.d_vocab;
    let out = block_on(g.forward(prompt, &ForwardRequest { logits: LogitsOut::All, argmax: true, ..Default::default() })).unwrap();
    let gl = out.logits.unwrap();
    let cl: Vec<f32> = cpu.logits(prompt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = max_diff(&gl, &cl);
    for r in 0..prompt.len() {
        assert_eq!(top5(&gl[r * v..(r + 1) * v]), top5(&cl[r * v..(r + 1) * v]), "{name}: top-5 at position {r}");
    }
    let last = &cl[(prompt.len() - 1) * v..];
    assert_eq!(out.next_token, Some(scalpel_engine::argmax(last)), "{name}: GPU argmax");
    eprintln!("{name}: prefill of {} tokens: max |Δlogit| = {:.3e}", prompt.len(), worst);
    // KV-cached decode, one token at a time.
    let mut cache = KvCache::new(&cpu.config);
    cpu.forward(&cpu.ids_tensor(prompt).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
    let mut tok = scalpel_engine::argmax(last);
    let mut dworst = 0f32;
    for s in 0..decode {
        let out = block_on(g.forward(&[tok], &ForwardRequest { logits: LogitsOut::Last, argmax: true, ..Default::default() })).unwrap();
        let gl = out.logits.unwrap();
        let cl: Vec<f32> = cpu.forward(&cpu.ids_tensor(&[tok]).unwrap(), Some(&mut cache), None, Logits::Last).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        dworst = dworst.max(max_diff(&gl, &cl));
        assert_eq!(top5(&gl), top5(&cl), "{name}: top-5 at decode step {s}");
        tok = scalpel_engine::argmax(&cl);
        assert_eq!(out.next_token, Some(tok), "{name}: decode step {s}");
    }
    eprintln!("{name}: {decode} decode steps: max |Δlogit| = {dworst:.3e}");
    worst = worst.max(dworst);
    assert!(worst < bound, "{name}: max |Δlogit| {worst} exceeds {bound}");
    // Greedy generation, chained on the GPU 4 at a time.
    g.reset();
    let want = cpu_greedy(cpu, prompt, greedy);
    let got = block_on(g.generate_greedy(prompt, greedy, &[], 4, |_| true)).unwrap();
    assert_eq!(got, want, "{name}: greedy generation");
    eprintln!("{name}: greedy {greedy} tokens equal: {got:?}");
    worst
}

#[test]
fn tiny_llama_logits_decode_generation() {
    let Some(gpu) = gpu() else { return };
    let (bytes, cpu) = tiny();
    let prompt = [5u32, 200, 17, 33, 258, 99, 1, 64, 120];
    compare_logits(gpu, "tiny.gguf", &bytes, &cpu, &prompt, 6, 16, 1e-4);
}

fn block_points(cfg: &scalpel_engine::Config, layers: &[usize]) -> Vec<HookPoint> {
    // Every readable site that belongs to a block (ln_final has no layer).
    let sites: Vec<Site> = Site::gpu_readable().iter().copied().filter(|s| *s != Site::LnFinalNormalized).collect();
    let mut v: Vec<HookPoint> = layers.iter().flat_map(|&l| sites.iter().map(move |&s| HookPoint::block(l, s))).collect();
    v.push(HookPoint::global(Site::LnFinalNormalized));
    assert!(layers.iter().all(|&l| l < cfg.n_layers));
    v
}

/// Reads hooks on the GPU (prefill, then one decode step) and compares
/// them with the CPU engine's values. Returns the worst |Δ|.
fn compare_hooks(gpu: Arc<Gpu>, name: &str, bytes: &[u8], cpu: &Model, prompt: &[u32], layers: &[usize], bound: f32) -> f32 {
    let mut g = GpuModel::from_gguf(gpu, name, bytes, &GpuModelOptions { max_seq: 128, ..Default::default() }).unwrap();
    let points = block_points(&cpu.config, layers);
    let req = ForwardRequest { logits: LogitsOut::All, read: points.clone(), ..Default::default() };
    let out = block_on(g.forward(prompt, &req)).unwrap();
    let (_, cache) = cpu.run_with_cache(prompt, &points).unwrap();
    let mut worst = 0f32;
    let mut worst_rel = 0f32;
    for hv in &out.hooks {
        let c = cache.get(&hv.point).unwrap();
        assert_eq!(c.dims(), hv.shape.as_slice(), "{}", hv.point.name());
        let cv: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
        let d = max_diff(&hv.data, &cv);
        let scale = cv.iter().fold(0f32, |m, x| m.max(x.abs()));
        worst_rel = worst_rel.max(d / scale.max(1e-6));
        worst = worst.max(d);
        assert!(d < bound, "{name}: {}: max |Δ| {d}", hv.point.name());
    }
    assert_eq!(out.hooks.len(), points.len());
    // One cached decode step: the hook sees only the new position.
    let tok = 42u32;
    let req = ForwardRequest { logits: LogitsOut::Last, read: points[..points.len() - 1].to_vec(), ..Default::default() };
    let gout = block_on(g.forward(&[tok], &req)).unwrap();
    let mut kv = KvCache::new(&cpu.config);
    cpu.forward(&cpu.ids_tensor(prompt).unwrap(), Some(&mut kv), None, Logits::Last).unwrap();
    let mut ac = scalpel_engine::ActivationCache::new(points.iter().copied());
    cpu.forward(&cpu.ids_tensor(&[tok]).unwrap(), Some(&mut kv), Some(&mut ac), Logits::Last).unwrap();
    for hv in &gout.hooks {
        let cv: Vec<f32> = ac.get(&hv.point).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let d = max_diff(&hv.data, &cv);
        worst = worst.max(d);
        assert!(d < bound, "{name}: decode {}: max |Δ| {d}", hv.point.name());
    }
    eprintln!(
        "{name}: {} hook values (prefill + decode), max |Δ| = {worst:.3e}; prefill max |Δ| / max |value| per hook = {worst_rel:.3e}",
        out.hooks.len() + gout.hooks.len()
    );
    worst
}

#[test]
fn tiny_llama_hooks_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let (bytes, cpu) = tiny();
    compare_hooks(gpu, "tiny.gguf", &bytes, &cpu, &[3, 9, 27, 81, 243, 100, 7], &[0, 1], 1e-4);
}

/// The CPU version of a GPU edit, as an engine hook.
fn cpu_edit(e: &GpuEdit, patch: Option<(usize, Vec<f32>)>) -> impl Hook + '_ {
    FnHook::new([e.point], move |ctx: &HookCtx, x: &Tensor| {
        let dims = x.dims().to_vec();
        let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let t = ctx.seq_len;
        let w = v.len() / t;
        let cols = e.cols.clone().unwrap_or(0..w);
        for r in 0..t {
            let pos = ctx.start_pos + r;
            if let Some(p) = &e.positions {
                if !p.contains(&pos) {
                    continue;
                }
            }
            let row = &mut v[r * w..(r + 1) * w];
            match &e.op {
                EditOp::Add { v: a, alpha } => cols.clone().for_each(|c| row[c] += alpha * a[c - cols.start]),
                EditOp::Scale(f) => cols.clone().for_each(|c| row[c] *= f),
                EditOp::Zero => cols.clone().for_each(|c| row[c] = 0.0),
                EditOp::ProjectOut(dir) => {
                    let n = dir.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let dot: f32 = cols.clone().map(|c| row[c] * dir[c - cols.start] / n).sum();
                    cols.clone().for_each(|c| row[c] -= dot * dir[c - cols.start] / n);
                }
                EditOp::Patch(_) => {
                    let (p0, src) = patch.as_ref().unwrap();
                    cols.clone().for_each(|c| row[c] = src[(pos - p0) * w + c]);
                }
            }
        }
        Ok(Some(Tensor::from_vec(v, dims, x.device())?))
    })
}

#[test]
fn tiny_llama_edits_match_cpu_hooks() {
    let Some(gpu) = gpu() else { return };
    let (bytes, cpu) = tiny();
    let cfg = cpu.config.clone();
    let (d, dh) = (cfg.d_model, cfg.d_head);
    let mut rng = Rng::new(11);
    let mut g = GpuModel::from_gguf(gpu, "tiny.gguf", &bytes, &GpuModelOptions::default()).unwrap();
    let prompt = [10u32, 20, 30, 40, 50, 60];
    let edits = vec![
        GpuEdit { item: 0, point: HookPoint::block(0, Site::ResidPost), op: EditOp::Add { v: rng.vec(d, 1.0), alpha: 3.0 }, positions: Some(2..5), cols: None },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::ResidPre), op: EditOp::ProjectOut(rng.vec(d, 1.0)), positions: None, cols: None },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::AttnOut), op: EditOp::Scale(-2.0), positions: None, cols: None },
        GpuEdit { item: 0, point: HookPoint::block(0, Site::MlpOut), op: EditOp::Zero, positions: Some(0..3), cols: Some(0..16) },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::Z), op: EditOp::Zero, positions: None, cols: Some(dh..2 * dh) },
        // Sites that share buffers: q/k/v in the fused qkv rows, the gate and
        // up pre-activations in the gate/up rows.
        GpuEdit { item: 0, point: HookPoint::block(0, Site::Q), op: EditOp::Add { v: rng.vec(dh, 1.0), alpha: 2.0 }, positions: None, cols: Some(dh..2 * dh) },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::K), op: EditOp::Scale(1.7), positions: Some(1..4), cols: None },
        GpuEdit { item: 0, point: HookPoint::block(0, Site::V), op: EditOp::Zero, positions: None, cols: Some(0..dh) },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::RotQ), op: EditOp::ProjectOut(rng.vec(dh, 1.0)), positions: None, cols: Some(2 * dh..3 * dh) },
        GpuEdit { item: 0, point: HookPoint::block(0, Site::MlpPre), op: EditOp::Add { v: rng.vec(16, 1.0), alpha: 1.5 }, positions: None, cols: Some(8..24) },
        GpuEdit { item: 0, point: HookPoint::block(1, Site::MlpPreLinear), op: EditOp::Scale(0.25), positions: None, cols: Some(0..40) },
    ];
    // Prefill then 3 decode steps with the same edits; the CPU engine runs the
    // same edits as hooks, with its KV cache.
    let mut kv = KvCache::new(&cfg);
    let mut worst = 0f32;
    let mut ids = prompt.to_vec();
    for step in 0..4 {
        let req = ForwardRequest { logits: LogitsOut::Last, argmax: true, edits: edits.clone(), ..Default::default() };
        let out = block_on(g.forward(&ids, &req)).unwrap();
        let mut hooks = HookList::new();
        for e in &edits {
            hooks.push(cpu_edit(e, None));
        }
        let cl: Vec<f32> = cpu.forward(&cpu.ids_tensor(&ids).unwrap(), Some(&mut kv), Some(&mut hooks), Logits::Last).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let gl = out.logits.unwrap();
        worst = worst.max(max_diff(&gl, &cl));
        assert_eq!(top5(&gl), top5(&cl), "step {step}");
        ids = vec![out.next_token.unwrap()];
    }
    eprintln!("edits (add, project_out, scale, zero, z head zero; q, k, v, rot_q, mlp pre/pre_linear), prefill + 3 decode: max |Δlogit| = {worst:.3e}");
    assert!(worst < 1e-4, "{worst}");
    // The edits change the logits (they are applied at all).
    g.reset();
    let plain = block_on(g.forward(&prompt, &ForwardRequest::default())).unwrap().logits.unwrap();
    g.reset();
    let edited = block_on(g.forward(&prompt, &ForwardRequest { edits: edits.clone(), ..Default::default() })).unwrap().logits.unwrap();
    assert!(max_diff(&plain, &edited) > 1e-2);

    // Patching from a source kept on the GPU: run A keeping
    // blocks.1.hook_resid_pre, then run B with position 3 patched from A.
    let a = [7u32, 8, 9, 10, 11, 12];
    let point = HookPoint::block(1, Site::ResidPre);
    g.reset();
    let kept = block_on(g.forward(&a, &ForwardRequest { keep: vec![point], ..Default::default() })).unwrap().kept.remove(0).1;
    g.reset();
    let patch = GpuEdit { item: 0, point, op: EditOp::Patch(kept), positions: Some(3..4), cols: None };
    let gl = block_on(g.forward(&prompt, &ForwardRequest { logits: LogitsOut::All, edits: vec![patch.clone()], ..Default::default() })).unwrap().logits.unwrap();
    let (_, ca) = cpu.run_with_cache(&a, &[point]).unwrap();
    let src: Vec<f32> = ca.get(&point).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut h = cpu_edit(&patch, Some((0, src)));
    let cl: Vec<f32> = cpu.forward(&cpu.ids_tensor(&prompt).unwrap(), None, Some(&mut h), Logits::All).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let dp = max_diff(&gl, &cl);
    eprintln!("patch from a GPU-kept source: max |Δlogit| = {dp:.3e}");
    assert!(dp < 1e-4, "{dp}");
    // The same for hook_v (kept as whole qkv rows; one head patched), and
    // from a source uploaded at the hook's own width (as documents do).
    let point = HookPoint::block(0, Site::V);
    g.reset();
    let kept = block_on(g.forward(&a, &ForwardRequest { keep: vec![point], ..Default::default() })).unwrap().kept.remove(0).1;
    let (_, ca) = cpu.run_with_cache(&a, &[point]).unwrap();
    let src: Vec<f32> = ca.get(&point).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let uploaded = scalpel_gpu::GpuTensor { buffer: g.gpu.storage_f32("v source", &src), start: 0, rows: a.len(), width: cfg.n_kv_heads * dh };
    for (what, source) in [("kept", kept), ("uploaded", uploaded)] {
        g.reset();
        let patch = GpuEdit { item: 0, point, op: EditOp::Patch(source), positions: Some(2..5), cols: Some(dh..2 * dh) };
        let gl = block_on(g.forward(&prompt, &ForwardRequest { logits: LogitsOut::All, edits: vec![patch.clone()], ..Default::default() })).unwrap().logits.unwrap();
        let mut h = cpu_edit(&patch, Some((0, src.clone())));
        let cl: Vec<f32> = cpu.forward(&cpu.ids_tensor(&prompt).unwrap(), None, Some(&mut h), Logits::All).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let dp = max_diff(&gl, &cl);
        eprintln!("patch hook_v head 1 from a {what} source: max |Δlogit| = {dp:.3e}");
        assert!(dp < 1e-4, "{dp}");
    }
}

#[test]
fn default_model_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let Some(bytes) = default_model() else { return };
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let cpu = Model::load(name, ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let prompt = cpu.tokenizer().encode("The capital of France is").unwrap();
    // 8 greedy tokens (two chained batches of 4): the software adapter
    // (lavapipe) is slow on the default model, and CI has 2 cores.
    let worst = compare_logits(gpu.clone(), name, &bytes, &cpu, &prompt, 4, 8, 2e-2);
    eprintln!("default model: max |Δlogit| (prefill + decode) = {worst:.3e}");
    let hw = compare_hooks(gpu, name, &bytes, &cpu, &prompt, &[0, 14, 29], 2e-2);
    eprintln!("default model: hooks max |Δ| = {hw:.3e}");
}

/// The default model with `quantized: true` (Q4_1 matrices and the Q8_0 tied
/// embedding kept quantized, dequantized on the fly) against the CPU engine
/// at f32: the same weight values, only the summation order differs.
#[test]
fn default_model_quantized_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let Some(bytes) = default_model() else { return };
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let cpu = Model::load(name, ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let prompt = cpu.tokenizer().encode("The capital of France is").unwrap();
    // The f32 weights' size from the CPU engine's dequantized matrices (the
    // same tensors the GPU's f32 upload holds; default_model_matches_cpu
    // uploads them), not a second 538 MB upload to a software adapter.
    let f32_bytes = cpu.weight_bytes();
    let opts = GpuModelOptions { max_seq: 64, quantized: true };
    let mut g = GpuModel::from_gguf(gpu, name, &bytes, &opts).unwrap();
    assert!(g.is_quantized());
    let qb = g.weight_bytes();
    eprintln!("default model weight memory: f32 (dequantized) {f32_bytes} B ({:.1} MB), quantized {qb} B ({:.1} MB), {:.2}x smaller",
        f32_bytes as f64 / 1e6, qb as f64 / 1e6, f32_bytes as f64 / qb as f64);
    assert!(qb * 4 < f32_bytes);
    let v = cpu.config.d_vocab;
    // Prefill, all positions (matvec_q with z = t).
    let out = block_on(g.forward(&prompt, &ForwardRequest { logits: LogitsOut::All, argmax: true, ..Default::default() })).unwrap();
    let gl = out.logits.unwrap();
    let cl: Vec<f32> = cpu.logits(&prompt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = max_diff(&gl, &cl);
    for r in 0..prompt.len() {
        assert_eq!(top5(&gl[r * v..(r + 1) * v]), top5(&cl[r * v..(r + 1) * v]), "quantized: top-5 at position {r}");
    }
    eprintln!("quantized: prefill of {} tokens: max |Δlogit| = {worst:.3e}", prompt.len());
    // KV-cached decode (t = 1).
    let mut cache = KvCache::new(&cpu.config);
    let last = &cl[(prompt.len() - 1) * v..];
    assert_eq!(out.next_token, Some(scalpel_engine::argmax(last)));
    cpu.forward(&cpu.ids_tensor(&prompt).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
    let mut tok = scalpel_engine::argmax(last);
    for s in 0..4 {
        let out = block_on(g.forward(&[tok], &ForwardRequest { logits: LogitsOut::Last, argmax: true, ..Default::default() })).unwrap();
        let gl = out.logits.unwrap();
        let cl: Vec<f32> = cpu.forward(&cpu.ids_tensor(&[tok]).unwrap(), Some(&mut cache), None, Logits::Last).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        worst = worst.max(max_diff(&gl, &cl));
        assert_eq!(top5(&gl), top5(&cl), "quantized: top-5 at decode step {s}");
        tok = scalpel_engine::argmax(&cl);
        assert_eq!(out.next_token, Some(tok), "quantized: decode step {s}");
    }
    eprintln!("quantized: prefill + 4 decode steps: max |Δlogit| = {worst:.3e}");
    assert!(worst < 2e-2, "quantized: max |Δlogit| {worst}");
    // Greedy 8 tokens.
    g.reset();
    let want = cpu_greedy(&cpu, &prompt, 8);
    let got = block_on(g.generate_greedy(&prompt, 8, &[], 4, |_| true)).unwrap();
    assert_eq!(got, want, "quantized: greedy generation");
    eprintln!("quantized: greedy 8 tokens equal: {got:?}");
}

/// The architectures the GPU pass cannot run are refused at load with every
/// feature it lacks named; the HF llama checkpoint of the same fixtures runs.
#[test]
fn architectures_the_gpu_lacks_are_refused_by_name() {
    let Some(gpu) = gpu() else { return };
    let cases: [(&str, &[&str]); 6] = [
        ("llama", &[]),
        ("qwen2", &["attention biases"]),
        ("qwen3_bf16", &["query/key norms", "heads wider than d_model / n_heads"]),
        ("gpt_neox", &["LayerNorm", "an ungated MLP", "GELU", "parallel attention and MLP", "partial rotary"]),
        ("gemma2", &["post-attention and post-MLP norms", "scaled embeddings", "soft-capping", "sliding-window attention"]),
        ("gemma3", &["query/key norms", "sliding-window attention", "GELU"]),
    ];
    for (name, lacks) in cases {
        let files = scalpel_testkit::ArchFiles::read(name);
        let (cfg, _, parts) = scalpel_engine::read(name, files.source()).unwrap();
        match GpuModel::from_parts(gpu.clone(), name, &cfg, &parts, &GpuModelOptions::default()) {
            Ok(_) => assert!(lacks.is_empty(), "{name}: the GPU accepted it"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!lacks.is_empty(), "{name}: refused: {msg}");
                for l in lacks {
                    assert!(msg.contains(l), "{name}: '{msg}' does not name '{l}'");
                }
                assert!(msg.contains("the CPU engine runs it"), "{msg}");
            }
        }
    }
}
