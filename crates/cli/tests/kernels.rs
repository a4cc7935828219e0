//! The default model with Scalpel's kernels against candle's kernels (both
//! `quantized` precision): same top-5 next tokens on several prompts, logits
//! within float rounding (the kernels use candle's block order; only candle's
//! AVX2 Q8_0 unembedding sums in another order), on prefill and KV-cached decode.

use scalpel_engine::{Kernels, KvCache, Logits, Model, ModelSource, Precision};

#[test]
fn scalpel_kernels_match_candle_on_default_model() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let load = |k| Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::Quantized, k).unwrap();
    let (candle, scalpel) = (load(Kernels::Candle), load(Kernels::Scalpel));
    assert_eq!(scalpel.kernels(), Kernels::Scalpel);
    let prompts = [
        "The capital of France is",
        "<|im_start|>user\nWrite a haiku about rust.<|im_end|>\n<|im_start|>assistant\n",
        "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)  # 12345",
        "Le chat est sur la",
        "1, 2, 3, 5, 8, 13,",
    ];
    let mut worst = 0f32;
    for prompt in prompts {
        let ids = candle.tokenizer().encode(prompt).unwrap();
        let (mut cc, mut cs) = (KvCache::new(&candle.config), KvCache::new(&scalpel.config));
        let mut step_ids = ids.clone();
        for step in 0..4 {
            let run = |m: &Model, c: &mut KvCache| -> Vec<f32> {
                m.forward(&m.ids_tensor(&step_ids).unwrap(), Some(c), None, Logits::Last)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (a, b) = (run(&candle, &mut cc), run(&scalpel, &mut cs));
            let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            worst = worst.max(d);
            let (ta, tb) = (scalpel_engine::top_k(&a, 5), scalpel_engine::top_k(&b, 5));
            let ids_of = |t: &[(u32, f32)]| t.iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(ids_of(&ta), ids_of(&tb), "{prompt:?} step {step}: top-5 differ");
            println!("{:?} step {step}: max |Δlogit| = {d:.2e}, top-5 {:?}", &prompt[..prompt.len().min(16)], ids_of(&ta));
            step_ids = vec![ta[0].0];
        }
    }
    println!("worst max |Δlogit| scalpel vs candle kernels: {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
}

/// f32 precision on the default model: Scalpel's exact kernels over the
/// Q4_1/Q8_0 blocks against dequantize-all (candle's f32 matmul), prefill
/// and KV-cached steps: logits within 1e-4 and the same top-5, with the
/// weights holding under a third of the bytes.
#[test]
fn f32_over_blocks_matches_dequantize_all_on_default_model() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let load = |k| Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::F32, k).unwrap();
    let (all, exact) = (load(Kernels::Candle), load(Kernels::Scalpel));
    assert_eq!((all.kernels(), exact.kernels()), (Kernels::Candle, Kernels::Scalpel));
    let (wa, we) = (all.weight_bytes(), exact.weight_bytes());
    println!("weights: dequantize-all {:.1} MB, exact over blocks {:.1} MB ({:.3}x)", wa as f64 / 1e6, we as f64 / 1e6, we as f64 / wa as f64);
    assert!(we * 3 <= wa, "{we} vs {wa}");
    let mut worst = 0f32;
    for prompt in ["The capital of France is", "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)  # 12345", "Le chat est sur la", "1, 2, 3, 5, 8, 13,"] {
        let ids = all.tokenizer().encode(prompt).unwrap();
        let (mut ca, mut ce) = (KvCache::new(&all.config), KvCache::new(&exact.config));
        let mut step_ids = ids.clone();
        for step in 0..4 {
            let run = |m: &Model, c: &mut KvCache| -> Vec<f32> {
                m.forward(&m.ids_tensor(&step_ids).unwrap(), Some(c), None, Logits::All).unwrap().flatten_all().unwrap().to_vec1().unwrap()
            };
            let (a, b) = (run(&all, &mut ca), run(&exact, &mut ce));
            let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            worst = worst.max(d);
            let v = all.config.d_vocab;
            let top = |l: &[f32]| scalpel_engine::top_k(&l[l.len() - v..], 5).into_iter().map(|x| x.0).collect::<Vec<_>>();
            assert_eq!(top(&a), top(&b), "{prompt:?} step {step}: top-5 differ");
            step_ids = vec![top(&a)[0]];
        }
    }
    println!("worst max |Δlogit| f32 exact kernels vs dequantize-all, all positions: {worst:.2e}");
    assert!(worst <= 1e-4, "{worst}");
}

/// `run` on rayon pools of 1, 2 and 3 threads (the kernels' and passes'
/// threads natively): asserts all three give the same bits, naming `what`
/// when they differ; returns them.
fn same_bits_on_1_2_3_threads(what: &str, run: impl Fn() -> Vec<u32> + Send + Sync) -> Vec<u32> {
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            assert_eq!(scalpel_engine::kernel_threads(), threads);
            run()
        })
    };
    let one = on(1);
    for threads in [2, 3] {
        assert!(on(threads) == one, "{what} on {threads} threads differ from 1 thread");
    }
    one
}

/// Threads (feature `threads`; natively rayon's pool): the default model's
/// logits on 1, 2 and 3 threads are the same bits, in f32 over the blocks
/// (a 16-token prefill through dequantized slices, then a cached step
/// through the exact kernel) and quantized (Scalpel's int8 kernels).
#[test]
fn threads_give_the_same_logits_on_default_model() {
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    for precision in [Precision::F32, Precision::Quantized] {
        let m = Model::load_with("smollm2", ModelSource::Gguf(&bytes), precision, Kernels::Scalpel).unwrap();
        let ids = m.tokenizer().encode("The quick brown fox jumps over the lazy dog. In 1905, Einstein").unwrap();
        assert!(ids.len() >= 8, "a prefill long enough for the slices path");
        let one = same_bits_on_1_2_3_threads(&format!("{precision:?}: logits"), || {
            let mut kv = KvCache::new(&m.config);
            let pass = |ids: &[u32], kv: &mut KvCache, l| {
                m.forward(&m.ids_tensor(ids).unwrap(), Some(kv), None, l).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            };
            let mut out = pass(&ids, &mut kv, Logits::All);
            out.extend(pass(&[42], &mut kv, Logits::Last));
            out.iter().map(|x| x.to_bits()).collect()
        });
        println!("{precision:?}: {} logits, the same bits on 1, 2 and 3 threads", one.len());
    }
}

/// The patching sweep splits its layers over the threads (each layer's
/// reruns on one thread): the IOI sweep's 30 x 14 cells on the default model
/// are the same bits on 1, 2 and 3 threads, in f32 over the blocks and
/// quantized.
#[test]
fn threads_give_the_same_sweep_on_default_model() {
    use scalpel_experiments::patching::{sweep, Corruption, Direction, Metric, PatchRequest, PatchSite, Strategy};
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    for precision in [Precision::F32, Precision::Quantized] {
        let m = Model::load_with("smollm2", ModelSource::Gguf(&bytes), precision, Kernels::Scalpel).unwrap();
        let tok = m.tokenizer();
        let clean = tok.encode("When Mary and John went to the store, John gave a drink to").unwrap();
        let corrupt = tok.encode("When Mary and John went to the store, Mary gave a drink to").unwrap();
        assert_eq!(clean.len(), corrupt.len());
        let req = PatchRequest {
            clean,
            corruption: Corruption::Prompt(corrupt),
            answer: tok.encode(" Mary").unwrap()[0],
            wrong: tok.encode(" John").unwrap()[0],
            site: PatchSite::ResidPre,
            metric: Metric::LogitDiff,
            strategy: Strategy::Fast,
            direction: Direction::Denoise,
        };
        let one = same_bits_on_1_2_3_threads(&format!("{precision:?}: the sweep's cells"), || {
            let mut layers_seen = Vec::new();
            let r = sweep(&m, &req, &mut |done, _| {
                layers_seen.push(done);
                true
            })
            .unwrap();
            assert_eq!(layers_seen, (1..=m.config.n_layers).collect::<Vec<_>>(), "progress once per layer, in order");
            r.values.iter().flatten().map(|x| x.to_bits()).collect()
        });
        assert_eq!(one.len(), m.config.n_layers * req.clean.len());
        assert!(one.iter().any(|&b| f32::from_bits(b) != f32::from_bits(one[0])), "the sweep's cells differ");
        println!("{precision:?}: {} cells, the same bits on 1, 2 and 3 threads", one.len());
    }
}

/// A prompt set's runs (`mean_diff`, `pca`, probes, `mean` over prompts)
/// share the threads, one run per thread: the activations read from 5 + 5
/// prompts are the same bits on 1, 2 and 3 threads, in prompt order.
#[test]
fn threads_give_the_same_prompt_set_activations_on_default_model() {
    use scalpel_engine::{HookPoint, Site};
    use scalpel_interventions::vectors::{collect, Pool};
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let m = Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::F32, Kernels::Scalpel).unwrap();
    let pos: Vec<String> = ["I love this", "What a wonderful day", "This is great news", "She smiled warmly", "Best meal ever"].map(String::from).to_vec();
    let neg: Vec<String> = ["I hate this", "What a terrible day", "This is awful news", "She frowned coldly", "Worst meal ever"].map(String::from).to_vec();
    let points: Vec<HookPoint> = [3, 15, 29].map(|l| HookPoint::block(l, Site::ResidPost)).to_vec();
    let one = same_bits_on_1_2_3_threads("the prompt set's activations", || {
        let acts = collect(&m, &pos, &neg, &points, Pool::Mean, &scalpel_interventions::never).unwrap();
        acts.pos.iter().chain(&acts.neg).flatten().flatten().map(|x| x.to_bits()).collect()
    });
    assert_eq!(one.len(), 10 * 3 * m.config.d_model);
}
