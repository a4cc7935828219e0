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
