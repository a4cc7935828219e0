//! `scalpel precision-gap`: how far `quantized` is from `f32` on a fixed
//! prompt set (KL and top-1 agreement).

use anyhow::Result;
use serde_json::json;

use scalpel_engine::{kl_logprobs, log_softmax, Model, Precision};

use crate::args::{print_json, set_threads, ModelArgs};
use crate::source;

/// Prompts for the precision gap: prose, a fact, code, digits, chat, other languages.
const GAP_PROMPTS: [&str; 8] = [
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The year 1969 was followed by 1970, 1971, and",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "Il était une fois une petite fille qui",
    "Photosynthesis converts light energy into chemical energy stored in",
    "I love sunny days because they make me feel",
];

pub fn run(m: &ModelArgs) -> Result<()> {
    set_threads(m.threads);
    let (name, files) = source::resolve(&m.model)?;
    let load_as = |p: Precision| -> Result<Model> { Ok(Model::load(&name, files.source(), p)?) };
    let exact = load_as(Precision::F32)?;
    let quant = load_as(Precision::Quantized)?;
    let (mut positions, mut agree, mut kl_sum, mut kl_max, mut diff_max) = (0usize, 0usize, 0f64, 0f64, 0f32);
    let mut per_prompt = Vec::new();
    for prompt in GAP_PROMPTS {
        let ids = exact.tokenizer().encode(prompt)?;
        let a: Vec<Vec<f32>> = exact.logits(&ids)?.to_vec2()?;
        let b: Vec<Vec<f32>> = quant.logits(&ids)?.to_vec2()?;
        let (mut p_agree, mut p_kl) = (0usize, 0f64);
        for (ra, rb) in a.iter().zip(&b) {
            // KL(exact || quantized) of the next-token distributions.
            let kl = kl_logprobs(&log_softmax(ra), &log_softmax(rb));
            let same = scalpel_engine::argmax(ra) == scalpel_engine::argmax(rb);
            p_agree += same as usize;
            p_kl += kl;
            kl_max = kl_max.max(kl);
            diff_max = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(diff_max, f32::max);
        }
        positions += a.len();
        agree += p_agree;
        kl_sum += p_kl;
        per_prompt.push(json!({"prompt": prompt, "tokens": a.len(), "top1_agreement": p_agree as f64 / a.len() as f64,
            "mean_kl": p_kl / a.len() as f64}));
    }
    let v = json!({"model": name, "prompts": GAP_PROMPTS.len(), "positions": positions,
        "top1_agreement": agree as f64 / positions as f64, "mean_kl": kl_sum / positions as f64,
        "max_kl": kl_max, "max_abs_logit_diff": diff_max, "per_prompt": per_prompt});
    if m.json {
        print_json(&v)?;
    } else {
        println!("quantized vs f32 on {} prompts ({positions} positions) of {name}:", GAP_PROMPTS.len());
        println!("  top-1 agreement  {:.4}", agree as f64 / positions as f64);
        println!("  mean KL (nats)   {:.5}", kl_sum / positions as f64);
        println!("  max KL (nats)    {kl_max:.5}");
        println!("  max |logit diff| {diff_max:.4}");
    }
    Ok(())
}
