//! Readouts on every architecture (the transformers-written fixtures in
//! `tests/fixtures/arch`): the logit lens's last row is the model's own
//! distribution (its final norm and soft-cap), and direct logit
//! attribution's components sum to the logit difference, through Gemma's
//! post-attention norms and GPT-NeoX's parallel blocks.

use scalpel_engine::Model;
use scalpel_experiments::readouts::{direct_logit_attribution, logit_lens, DlaRequest, LensOptions};

fn load(name: &str) -> Model {
    scalpel_testkit::load_arch_fixture(name)
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

/// Activation patching on every architecture: with one token changed at
/// position 1, patching the clean `hook_resid_pre` of layer 0 at that
/// position restores the clean run exactly (normalised logit difference
/// 1), and at any other position changes nothing (0); the last layer's
/// `hook_resid_post` at the last position restores it too. Sweeps of
/// attention and MLP outputs and of heads run; `hook_resid_mid` on
/// GPT-NeoX's parallel blocks is refused by name.
#[test]
fn patching_on_every_architecture() {
    use scalpel_experiments::patching::{sweep, Corruption, Direction, Metric, PatchRequest, PatchSite, Strategy};
    for name in ["llama", "qwen2", "qwen3_bf16", "gpt_neox", "gemma2", "gemma3"] {
        let model = load(name);
        let clean = model.tokenizer().encode("The quick brown fox jumps over the dog.").unwrap();
        let mut corrupt = clean.clone();
        corrupt[1] = (corrupt[1] + 7) % model.config.d_vocab as u32;
        let logits: Vec<f32> = model.logits(&clean).unwrap().to_vec2::<f32>().unwrap().pop().unwrap();
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let req = |site| PatchRequest {
            clean: clean.clone(),
            corruption: Corruption::Prompt(corrupt.clone()),
            answer: order[0],
            wrong: order[1],
            site,
            metric: Metric::LogitDiffNorm,
            strategy: Strategy::default(),
            direction: Direction::Denoise,
        };
        let r = sweep(&model, &req(PatchSite::ResidPre), &mut |_, _| true).unwrap();
        assert!((r.clean - r.corrupt).abs() > 1e-3, "{name}: the corruption changes nothing");
        let last = clean.len() - 1;
        assert!((r.values[0][1] - 1.0).abs() < 1e-3, "{name}: layer 0 at the changed position gives {}", r.values[0][1]);
        for p in (0..clean.len()).filter(|&p| p != 1) {
            assert!(r.values[0][p].abs() < 1e-3, "{name}: layer 0 position {p} gives {}", r.values[0][p]);
        }
        let post = sweep(&model, &req(PatchSite::ResidPost), &mut |_, _| true).unwrap();
        let l = post.values.len() - 1;
        assert!((post.values[l][last] - 1.0).abs() < 1e-3, "{name}: the last layer's output at the last position gives {}", post.values[l][last]);
        for site in [PatchSite::AttnOut, PatchSite::MlpOut, PatchSite::HeadZ] {
            let s = sweep(&model, &req(site), &mut |_, _| true).unwrap();
            assert!(s.values.iter().flatten().all(|v| v.is_finite()), "{name} {site:?}");
        }
        let mid = sweep(&model, &req(PatchSite::ResidMid), &mut |_, _| true);
        if name == "gpt_neox" {
            let Err(e) = mid else { panic!("resid_mid on a parallel block was accepted") };
            let e = e.to_string();
            assert!(e.contains("resid_mid"), "{e}");
        } else {
            mid.unwrap();
        }
    }
}
