//! Our `quantized` precision must reproduce candle-transformers' quantized
//! llama on the same GGUF: the same QMatMul kernels on the same blocks, so
//! the logits agree to float rounding (max abs diff < 1e-3), on a prefill and
//! on every step of KV-cached decoding.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use scalpel_engine::{KvCache, Logits, Model, ModelSource, Precision};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn quantized_logits_match_candle_transformers() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let ours = Model::load("smollm2", ModelSource::Gguf(&bytes), Precision::Quantized).unwrap();
    let prompts = [
        "The capital of France is",
        "<|im_start|>user\nWrite a haiku about rust.<|im_end|>\n<|im_start|>assistant\n",
        "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)  # 12345",
    ];
    let mut worst = 0f32;
    for prompt in prompts {
        let ids = ours.tokenizer().encode(prompt).unwrap();
        let mut reader = Cursor::new(&bytes);
        let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
        let mut reference = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap();

        // Prefill: last-position logits.
        let x = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let want: Vec<f32> = reference.forward(&x, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut cache = KvCache::new(&ours.config);
        let got: Vec<f32> = ours
            .forward(&ours.ids_tensor(&ids).unwrap(), Some(&mut cache), None, Logits::Last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let d = max_abs_diff(&got, &want);
        println!("prefill {:?} ({} tokens): max |diff| = {d:.2e}", &prompt[..12], ids.len());
        worst = worst.max(d);

        // Decode 8 greedy steps with both caches.
        let mut next = scalpel_engine::argmax(&want);
        for step in 0..8 {
            let x = Tensor::new(&[next], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let want: Vec<f32> =
                reference.forward(&x, ids.len() + step).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f32> = ours
                .forward(&ours.ids_tensor(&[next]).unwrap(), Some(&mut cache), None, Logits::Last)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&got, &want);
            worst = worst.max(d);
            assert_eq!(scalpel_engine::argmax(&got), scalpel_engine::argmax(&want), "step {step}");
            next = scalpel_engine::argmax(&want);
        }
    }
    println!("worst max |diff| over prefill and decode: {worst:.2e}");
    assert!(worst < 1e-3, "quantized logits differ from candle-transformers by {worst}");
}
