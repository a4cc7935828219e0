//! Our `f32` precision against candle-transformers' quantized llama with
//! every weight dequantized (CANDLE_DEQUANTIZE_ALL=1): the same f32 weights
//! through an independently written forward pass. Its own test binary because
//! candle reads that variable once per thread.

use std::io::Cursor;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use scalpel_engine::{Model, ModelSource, Precision};

#[test]
fn f32_logits_match_candle_dequantized() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let Some(path) = scalpel_testkit::default_model_path() else { return };
    let bytes = std::fs::read(&path).unwrap();
    let ours = Model::load("smollm2", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let mut worst = 0f32;
    for prompt in ["The capital of France is", "Alice and Bob went to the store. Bob gave a drink to"] {
        let ids = ours.tokenizer().encode(prompt).unwrap();
        let mut reader = Cursor::new(&bytes);
        let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
        let mut reference = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap();
        // candle returns the last position only: compare every prefix.
        let all: Vec<Vec<f32>> = ours.logits(&ids).unwrap().to_vec2().unwrap();
        for t in 1..=ids.len() {
            reference.clear_kv_cache();
            let x = Tensor::new(&ids[..t], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let want: Vec<f32> = reference.forward(&x, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let d = all[t - 1].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            worst = worst.max(d);
        }
    }
    println!("f32 vs candle dequantized: worst max |diff| = {worst:.2e}");
    assert!(worst < 1e-3, "f32 logits differ from candle's dequantized forward by {worst}");
}
