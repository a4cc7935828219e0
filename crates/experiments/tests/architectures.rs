//! Readouts on every architecture (the transformers-written fixtures in
//! `tests/fixtures/arch`): the logit lens's last row is the model's own
//! distribution (its final norm and soft-cap), and direct logit
//! attribution's components sum to the logit difference, through Gemma's
//! post-attention norms and GPT-NeoX's parallel blocks.

use std::path::Path;

use scalpel_engine::{Model, ModelSource, Precision};
use scalpel_experiments::readouts::{direct_logit_attribution, logit_lens, DlaRequest, LensOptions};

fn load(name: &str) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/arch").join(name);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (config, tokenizer, weights) = (read("config.json"), read("tokenizer.json"), read("model.safetensors"));
    let source = ModelSource::HuggingFace {
        config: &config,
        tokenizer: Some(&tokenizer),
        tokenizer_config: None,
        weights: vec![("model.safetensors".into(), &weights[..])],
    };
    Model::load(name, source, Precision::F32).unwrap()
}

#[test]
fn lens_and_dla_on_every_architecture() {
    for name in ["llama", "qwen2", "qwen3_bf16", "gpt_neox", "gemma2", "gemma3"] {
        let model = load(name);
        let ids = model.tokenizer().encode("The quick brown fox jumps over the dog.").unwrap();
        let logits: Vec<Vec<f32>> = model.logits(&ids).unwrap().to_vec2().unwrap();
        let last = logits.last().unwrap();

        let lens = logit_lens(&model, &ids, &LensOptions { top_k: 3, ..Default::default() }, None).unwrap();
        for cell in &lens.rows.last().unwrap().cells {
            assert!(cell.kl_to_final < 1e-5, "{name}: the last layer's lens is not the model's distribution (KL {})", cell.kl_to_final);
        }
        let top = lens.rows.last().unwrap().cells.last().unwrap().top[0].id;
        assert_eq!(top, scalpel_engine::argmax(last), "{name}: lens top-1");

        let answer = scalpel_engine::argmax(last);
        let wrong = (answer + 1) % model.config.d_vocab as u32;
        let dla = direct_logit_attribution(&model, &DlaRequest { ids: ids.clone(), answer, wrong: Some(wrong), position: -1 }, None).unwrap();
        assert!(dla.unexplained.abs() < 1e-3 * dla.total.abs().max(1.0), "{name}: components sum to {} of {}", dla.sum_of_components, dla.total);
        match model.config.extra.final_softcap {
            // The total is taken before the cap: capping it gives the real logit.
            Some(cap) => {
                assert_eq!(dla.final_softcap, Some(cap));
                let one = direct_logit_attribution(&model, &DlaRequest { ids: ids.clone(), answer, wrong: None, position: -1 }, None).unwrap();
                let capped = cap * (one.total / cap).tanh();
                assert!((capped - last[answer as usize]).abs() < 1e-4, "{name}: cap(total) {capped} vs logit {}", last[answer as usize]);
                assert!((one.total - last[answer as usize]).abs() > 1e-3, "{name}: the cap should change this logit");
            }
            None => {
                let real = last[answer as usize] - last[wrong as usize];
                assert!((dla.total - real).abs() < 1e-4, "{name}: total {} vs logits {real}", dla.total);
            }
        }
        // Heads carry the attention: per layer, the heads and the bias sum
        // to the layer's attention output (post-norm included).
        for l in &dla.layers {
            let heads: f32 = l.heads.iter().sum::<f32>() + l.attn_bias.unwrap_or(0.0);
            assert!((heads - l.attn_out).abs() < 1e-3 * l.attn_out.abs().max(1.0), "{name} layer {}: heads {heads} vs attn_out {}", l.layer, l.attn_out);
        }
    }
}
