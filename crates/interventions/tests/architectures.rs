//! Every intervention op on every architecture (the transformers-written
//! fixtures in `tests/fixtures/arch`): each document compiles against the
//! architecture's own hooks, runs, and moves the logits (finite), and an
//! identity edit leaves them bit-equal.

use scalpel_engine::Model;
use scalpel_interventions::{parse, run, Interventions};

fn load(name: &str) -> Model {
    scalpel_testkit::load_arch_fixture(name)
}

fn logits(model: &mut Model, ids: &[u32], items: &str) -> Result<Vec<f32>, String> {
    let doc = parse(&format!(r#"{{"version":1,"interventions":[{items}]}}"#)).map_err(|e| e.to_string())?;
    let mut iv = Interventions::compile(model, &doc, ids.len())?;
    Ok(run::logits(model, ids, &mut iv).map_err(|e| e.to_string())?.flatten_all().unwrap().to_vec1().unwrap())
}

#[test]
fn every_op_runs_on_every_architecture() {
    for name in ["llama", "qwen2", "qwen3_bf16", "gpt_neox", "gemma2", "gemma3"] {
        let mut model = load(name);
        let text = "The quick brown fox jumps over the dog.";
        let ids = model.tokenizer().encode(text).unwrap();
        let d = model.config.d_model;
        let v = |x: f32| format!("[{}]", (0..d).map(|i| format!("{}", x * ((i % 7) as f32 - 3.0))).collect::<Vec<_>>().join(","));
        let base = logits(&mut model, &ids, "").unwrap();
        // A source of the same token length (the tiny tokenizers differ).
        let src = ["The quick brown dog jumps over the fox.", "The quick brown fox jumps over the cat.", "The quick brown fox jumps under the dog.",
            "The quick brown fox jumps over the dot.", "A quick brown fox jumps over the dog.", "The quick brown fox jumps over the fog."]
        .into_iter()
        .find(|s| {
            let other = model.tokenizer().encode(s).unwrap();
            other.len() == ids.len() && other != ids
        })
        .unwrap_or_else(|| panic!("{name}: no same-length source"));
        let mut items = vec![
            format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{},"scale":4}}"#, v(0.5)),
            // Some neurons only: Gemma's post-MLP norm undoes a uniform scale.
            r#"{"hook":"blocks.0.mlp.hook_post","op":"scale","factor":0.2,"neurons":[0,1,2,3,4]}"#.to_string(),
            r#"{"hook":"blocks.1.attn.hook_z","op":"zero","heads":[0,1]}"#.to_string(),
            r#"{"hook":"blocks.0.hook_mlp_out","op":"mean"}"#.to_string(),
            format!(r#"{{"hook":"blocks.0.hook_resid_pre","op":"patch","source":"{src}"}}"#),
            format!(r#"{{"hook":"blocks.*.hook_resid_post","op":"project_out","direction":{}}}"#, v(1.0)),
            format!(r#"{{"hook":"blocks.1.hook_resid_pre","op":"set_projection","direction":{},"value":5}}"#, v(1.0)),
            // Recent keys: Gemma's sliding layers do not see the first ones.
            format!(r#"{{"hook":"blocks.1.attn.hook_attn_scores","op":"knockout","positions":[-1],"keys":[{},{}]}}"#, ids.len() - 2, ids.len() - 3),
            format!(r#"{{"hook":"blocks.1.attn.hook_pattern","op":"knockout","keys":[{}]}}"#, ids.len() - 2),
            r#"{"hook":"blocks.1","op":"low_rank","matrix":"o","rank":1}"#.to_string(),
            r#"{"hook":"blocks.0.attn.hook_v","op":"scale","factor":0.0}"#.to_string(),
        ];
        if model.config.extra.qk_norm {
            items.push(r#"{"hook":"blocks.0.attn.q_norm.hook_normalized","op":"scale","factor":3.0}"#.to_string());
        }
        if model.config.extra.post_norms {
            items.push(r#"{"hook":"blocks.0.ln1_post.hook_normalized","op":"zero"}"#.to_string());
            items.push(r#"{"hook":"blocks.1.ln2_post.hook_normalized","op":"scale","factor":2.0}"#.to_string());
        }
        if model.config.gated_mlp {
            items.push(r#"{"hook":"blocks.1","op":"low_rank","matrix":"gate","rank":1}"#.to_string());
        }
        for item in &items {
            let got = logits(&mut model, &ids, item).unwrap_or_else(|e| panic!("{name}: {item}: {e}"));
            assert!(got.iter().all(|x| x.is_finite()), "{name}: {item}: non-finite logits");
            let moved = got.iter().zip(&base).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(moved > 1e-4, "{name}: {item}: the logits did not move ({moved})");
        }
        // Identity edits, and a low-rank edit restores the weights after the run.
        for item in [format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{},"scale":1}}"#, v(0.0)),
                     r#"{"hook":"blocks.0.mlp.hook_post","op":"scale","factor":1.0}"#.to_string()] {
            assert_eq!(logits(&mut model, &ids, &item).unwrap(), base, "{name}: {item}");
        }
        assert_eq!(logits(&mut model, &ids, "").unwrap(), base, "{name}: the weights came back after low_rank");
        // A hook the architecture lacks is named.
        if name == "gpt_neox" {
            let e = logits(&mut model, &ids, r#"{"hook":"blocks.0.hook_resid_mid","op":"zero"}"#).err().unwrap();
            assert!(e.contains("resid_mid"), "{e}");
        }
    }
}

/// `mean` takes the mean over the prompt's positions: a pass over the
/// prompt and generated tokens together (a comparison's scoring pass)
/// gives the prompt positions the logits of the prompt alone, as
/// generation saw them.
#[test]
fn mean_over_the_prompt_in_a_longer_scoring_pass() {
    use scalpel_engine::Logits;
    let mut model = load("llama");
    let doc = parse(r#"{"version":1,"interventions":[{"hook":"blocks.1.hook_mlp_out","op":"mean"},{"hook":"blocks.0.attn.hook_z","op":"mean","heads":[1]}]}"#).unwrap();
    let prompt: Vec<u32> = vec![5, 17, 40, 9, 33];
    let full: Vec<u32> = [prompt.clone(), vec![61, 2, 70]].concat();
    let rows = |m: &mut Model, ids: &[u32]| -> Vec<Vec<f32>> {
        let mut iv = Interventions::compile(m, &doc, prompt.len()).unwrap();
        run::logit_rows(m, ids, &mut iv, Logits::All).unwrap().to_vec2().unwrap()
    };
    let alone = rows(&mut model, &prompt);
    let scored = rows(&mut model, &full);
    for p in 0..prompt.len() {
        let d = alone[p].iter().zip(&scored[p]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "position {p}: {d}");
    }
    // And the mean is not the one over all eight positions.
    let mut all = Interventions::compile(&model, &doc, full.len()).unwrap();
    let over_all: Vec<Vec<f32>> = run::logit_rows(&mut model, &full, &mut all, Logits::All).unwrap().to_vec2().unwrap();
    let d = over_all[0].iter().zip(&scored[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d > 1e-4, "the prompt's mean and the full pass's mean should differ: {d}");
}
