//! Dictionary features against the model, on the llama fixture with
//! dictionaries the test writes: the corpus index finds what the
//! one-latent search finds, reading only the blocks up to the hook gives
//! the full pass's values, an exact dictionary spliced in changes nothing,
//! and latent search ranks by the dashboard's own scores.

use scalpel_dictionaries::corpus::{corpus_windows, index_corpus, CorpusIndex};
use scalpel_dictionaries::features::top_contexts;
use scalpel_dictionaries::Sae;
use scalpel_engine::{ActivationCache, Model};
use scalpel_experiments::features::{dashboard, search_token, splice};
use scalpel_experiments::readouts::vocab_scores;
use scalpel_testkit::hf::{safetensors_bytes, StTensor};
use scalpel_testkit::rng::{f32_bytes, Rng};

const CORPUS: &str = "The dog sleeps in the warm sun.\nI love the warm sun today\n\nHello world! The cat is happy\n\
What a lovely day in the park, and the dog barks\nThe cake was sweet and soft\nfn main() { println!(\"hi\"); }\n";

fn safetensors_of(tensors: &[(&str, Vec<f32>, Vec<usize>)]) -> Vec<u8> {
    let st: Vec<StTensor> = tensors
        .iter()
        .map(|(n, d, s)| StTensor { name: n.to_string(), shape: s.clone(), dtype: safetensors::Dtype::F32, data: f32_bytes(d) })
        .collect();
    safetensors_bytes(&st)
}

/// A SAELens dictionary at `hook` with the given weights.
fn sae(hook: &str, arch: &str, d_in: usize, w_enc: Vec<f32>, w_dec: Vec<f32>, d_sae: usize) -> Sae {
    let st = safetensors_of(&[
        ("W_enc", w_enc, vec![d_in, d_sae]),
        ("W_dec", w_dec, vec![d_sae, d_in]),
        ("b_enc", vec![0.0; d_sae], vec![d_sae]),
        ("b_dec", vec![0.0; d_in], vec![d_in]),
    ]);
    let k = if arch == "topk" { r#", "k": 6"# } else { "" };
    let cfg = format!(r#"{{"d_in": {d_in}, "d_sae": {d_sae}, "architecture": "{arch}", "hook_name": "{hook}"{k}}}"#);
    Sae::load("test", cfg.as_bytes(), &st).unwrap()
}

fn random_sae(model: &Model, hook: &str, d_sae: usize, seed: u64) -> Sae {
    let d = model.config.d_model;
    let mut rng = Rng::new(seed);
    sae(hook, "topk", d, rng.vec(d * d_sae, 1.0), rng.vec(d_sae * d, 0.2), d_sae)
}

#[test]
fn corpus_index_finds_each_latents_top_contexts_like_the_one_latent_search() {
    let model = scalpel_testkit::load_arch_fixture("llama");
    let sae = random_sae(&model, "blocks.1.hook_resid_post", 48, 7);
    let windows = corpus_windows(&model, CORPUS, 5).unwrap();
    assert!(windows.len() > 10);
    let keep = 3;
    let mut index = CorpusIndex::new(sae.d_sae, keep, windows.len()).unwrap();
    // Stopped after four windows, then resumed: the same index as one pass.
    let mut stop_at_4 = |done: usize, _: usize| done < 4;
    assert!(!index_corpus(&model, &sae, &windows, &mut index, &mut stop_at_4).unwrap());
    assert_eq!(index.windows, 4);
    assert!(index_corpus(&model, &sae, &windows, &mut index, &mut |_, _| true).unwrap());
    let mut once = CorpusIndex::new(sae.d_sae, keep, windows.len()).unwrap();
    index_corpus(&model, &sae, &windows, &mut once, &mut |_, _| true).unwrap();
    assert_eq!(index, once);

    let mut checked = 0;
    for latent in 0..sae.d_sae {
        let one = top_contexts(&model, &sae, &windows, latent, keep, &mut |_, _| true).unwrap();
        let dash = dashboard(&model, &sae, latent, 5, Some((&windows, &index))).unwrap();
        let corpus = dash.corpus.unwrap();
        assert_eq!(corpus.contexts, one, "latent {latent}");
        assert_eq!(corpus.histogram.counts.iter().map(|&c| c as u64).sum::<u64>(), corpus.fires, "latent {latent}");
        checked += usize::from(!one.is_empty());
    }
    assert!(checked > 10, "only {checked} latents fired");
    let b = index.to_bytes();
    assert_eq!(CorpusIndex::from_bytes(&b).unwrap(), index);
}

#[test]
fn reading_only_the_blocks_up_to_a_hook_gives_the_full_passes_values() {
    let model = scalpel_testkit::load_arch_fixture("llama");
    let ids = model.tokenizer().encode("The quick brown fox jumps over the lazy dog").unwrap();
    let point = model.hook_point("blocks.1.hook_mlp_out").unwrap();
    let (_, full) = model.run_with_cache(&ids, &[point]).unwrap();
    let mut part = ActivationCache::new([point]);
    let tokens = model.ids_tensor(&ids).unwrap();
    model.forward_blocks(&tokens, 2, Some(&mut part)).unwrap();
    let a: Vec<f32> = full.get(&point).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = part.get(&point).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
    let e = model.forward_blocks(&tokens, model.config.n_layers + 1, None).unwrap_err().to_string();
    assert!(e.contains("blocks asked for"), "{e}");
}

#[test]
fn an_exact_dictionary_spliced_in_changes_nothing_and_a_random_one_does() {
    let model = scalpel_testkit::load_arch_fixture("llama");
    let d = model.config.d_model;
    let ids = model.tokenizer().encode("Hello world! The cat is happy").unwrap();
    // Latents [relu(x), relu(−x)], decoder [I; −I]: the reconstruction is x.
    let mut w_enc = vec![0f32; d * 2 * d];
    let mut w_dec = vec![0f32; 2 * d * d];
    for i in 0..d {
        w_enc[i * 2 * d + i] = 1.0;
        w_enc[i * 2 * d + d + i] = -1.0;
        w_dec[i * d + i] = 1.0;
        w_dec[(d + i) * d + i] = -1.0;
    }
    let exact = sae("blocks.1.hook_resid_post", "standard", d, w_enc, w_dec, 2 * d);
    let s = splice(&model, &exact, &ids).unwrap();
    assert_eq!(s.kl.len(), ids.len());
    assert!(s.kl.iter().all(|&k| k < 1e-6), "{:?}", s.kl);
    assert_eq!(s.top1_changed, 0);
    let noisy = random_sae(&model, "blocks.1.hook_resid_post", 48, 3);
    let s = splice(&model, &noisy, &ids).unwrap();
    assert!(s.kl.iter().any(|&k| k > 1e-3), "{:?}", s.kl);
}

#[test]
fn search_ranks_latents_by_the_dashboards_own_vocabulary_scores() {
    let model = scalpel_testkit::load_arch_fixture("llama");
    let sae = random_sae(&model, "blocks.1.hook_resid_post", 48, 11);
    let token = model.tokenizer().encode(" dog").unwrap()[0];
    let found = search_token(&model, &sae, token, 5, None).unwrap();
    let score = |j: usize| vocab_scores(&model, &sae.decoder_row(j).unwrap(), true).unwrap()[token as usize];
    let mut all: Vec<(usize, f32)> = (0..sae.d_sae).map(|j| (j, score(j))).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (m, (j, s)) in found.writes.iter().zip(&all) {
        assert_eq!(m.id as usize, *j);
        assert!((m.score - s).abs() < 1e-4 * s.abs().max(1.0), "{} vs {s}", m.score);
    }
    assert!(found.fires.is_empty());
    let e = search_token(&model, &sae, 1 << 30, 5, None).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn context_tokens_are_text_pieces_with_whole_characters() {
    let model = scalpel_testkit::load_arch_fixture("llama");
    let tok = model.tokenizer();
    let ids = tok.encode("Привет, 世界! café ünïcödé 🙂 ok").unwrap();
    let pieces = tok.text_pieces(&ids);
    assert_eq!(pieces.len(), ids.len());
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), tok.decode(&ids).trim_end_matches('\u{FFFD}'));
}
