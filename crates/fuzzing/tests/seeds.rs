//! The seed generator (`scalpel_fuzzing::seeds`): each seed is an input its
//! target accepts all the way, so fuzzing starts from the deep paths. The
//! ignored test writes them to fuzz/seeds/:
//! `cargo test -p scalpel-fuzzing --release --test seeds -- --ignored`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use scalpel_dictionaries::Sae;
use scalpel_engine::{Model, ModelSource, Precision, Tokenizer};
use scalpel_fuzzing::fixtures::{self, document_model, split_at_ff, DOCUMENT_PROMPT};
use scalpel_fuzzing::seeds::{seeds, Seed};
use scalpel_interventions::{parse, run, vectors, Interventions};
use scalpel_web::state::Shared;

/// Why `seed` is not accepted all the way by its target, if it is not.
fn rejection(seed: &Seed) -> Option<String> {
    let bytes = &seed.bytes[..];
    let text = || String::from_utf8(bytes.to_vec()).expect("a text seed is UTF-8");
    let err = |e: &dyn std::fmt::Display| Some(e.to_string());
    let hf = |config: &[u8], tokenizer_config: Option<&[u8]>, weights: &[u8]| {
        Model::load(
            "seed",
            ModelSource::HuggingFace {
                config,
                tokenizer: Some(fixtures::fixed_tokenizer_json()),
                tokenizer_config,
                weights: vec![("model.safetensors".into(), weights)],
            },
            Precision::F32,
        )
    };
    let logits = |m: scalpel_engine::Result<Model>| m.and_then(|m| m.logits(&[1, 2])).err().map(|e| e.to_string());
    let model = || document_model();
    match seed.target {
        "gguf_load" => logits(Model::load("seed.gguf", ModelSource::Gguf(bytes), Precision::F32)),
        "safetensors_load" => {
            let config = if bytes[0] & 1 == 0 { fixtures::GPT2_CONFIG } else { fixtures::LLAMA_CONFIG };
            logits(hf(config.as_bytes(), None, &bytes[1..]))
        }
        "hf_config" => {
            let (config, tokenizer_config) = split_at_ff(bytes);
            let (gpt2, llama) = fixtures::hf_weights();
            let weights = if config.windows(7).any(|w| w == b"\"llama\"") { llama } else { gpt2 };
            logits(hf(config, tokenizer_config, weights))
        }
        "document" => {
            let doc = match parse(&text()) {
                Ok(doc) => doc,
                Err(e) => return Some(e),
            };
            let mut m = model();
            let ids = m.tokenizer().encode(DOCUMENT_PROMPT).expect("tokenizes");
            let mut iv = match Interventions::compile(&m, &doc, ids.len()) {
                Ok(iv) => iv,
                Err(e) => return Some(e),
            };
            let opts = scalpel_engine::GenerateOptions { max_new_tokens: 3, stop_at_eos: false, ..Default::default() };
            run::generate(&mut m, &ids, &opts, &mut iv, &mut |_| true).err().map(|e| e.to_string())
        }
        "link_state" => {
            let fragment = if seed.name.ends_with(".txt") { text() } else { base64_url(bytes) };
            Shared::decode(&fragment).and_then(|s| s.document()).and_then(|d| parse(&d).map(|_| ())).err()
        }
        "control_vector" => {
            let (cv, _) = match vectors::read_control_vector(seed.name, bytes) {
                Ok(read) => read,
                Err(e) => return Some(e),
            };
            let m = model();
            let doc = match vectors::control_vector_document(&m, &cv, 1.0) {
                Ok((doc, _)) => doc,
                Err(e) => return Some(e),
            };
            Interventions::compile(&m, &doc, 4).err()
        }
        "sae" => {
            let (cfg, weights) = split_at_ff(bytes);
            let sae = match Sae::load(seed.name, cfg, weights.unwrap_or_default()) {
                Ok(sae) => sae,
                Err(e) => return Some(e),
            };
            let m = model();
            let point = match sae.point(&m) {
                Ok(p) => p,
                Err(e) => return Some(e),
            };
            let hook = point.name();
            let doc = parse(&format!(r#"{{"version":1,"interventions":[{{"hook":"{hook}","op":"sae_clamp","latent":1,"value":2}}]}}"#))
                .expect("parses");
            let saes: vectors::SaeTable = HashMap::from([(point, Arc::new(sae))]);
            let n = m.tokenizer().encode(DOCUMENT_PROMPT).expect("tokenizes").len();
            Interventions::compile_with(&m, &doc, n, &saes).err()
        }
        "tokenizer_json" => {
            let (json, config) = split_at_ff(bytes);
            match Tokenizer::from_hf_json("tokenizer.json", json, config) {
                Ok(tok) if config.is_some() => tok.apply_chat_template(&[("user", "hi")], true).err().map(|e| e.to_string()),
                Ok(tok) => tok.encode("the cat").err().map(|e| e.to_string()),
                Err(e) => err(&e),
            }
        }
        "circuit_tracer" => {
            let (cfg, weights) = split_at_ff(bytes);
            let sae = match Sae::load_circuit_tracer(seed.name, cfg, "layer_1.safetensors", weights.unwrap_or_default()) {
                Ok(sae) => sae,
                Err(e) => return Some(e),
            };
            let m = model();
            match (sae.point(&m), sae.point_out(&m), sae.is_transcoder()) {
                (Ok(_), Ok(_), true) => None,
                (Ok(_), Ok(_), false) => Some("not a transcoder".into()),
                (Err(e), _, _) | (_, Err(e), _) => Some(e),
            }
        }
        "chat_template" => {
            let mut tok = fixtures::template_tokenizer().clone();
            tok.chat_template = Some(text());
            tok.apply_chat_template(&[("system", "s"), ("user", "hi"), ("assistant", "ok")], true).err().map(|e| e.to_string())
        }
        "hf_index" => match scalpel_engine::shard_files(bytes) {
            Ok(files) if files.len() == 2 => None,
            Ok(files) => Some(format!("expected two shards, got {files:?}")),
            Err(e) => err(&e),
        },
        other => Some(format!("no acceptance check for target '{other}'")),
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn every_seed_is_accepted_by_its_target() {
    let rejected: Vec<String> =
        seeds().iter().filter_map(|s| rejection(s).map(|why| format!("{}/{}: {why}", s.target, s.name))).collect();
    assert!(rejected.is_empty(), "seeds their target rejects:\n{}", rejected.join("\n"));
}

#[test]
fn seeds_stay_small() {
    let total: usize = seeds().iter().map(|s| s.bytes.len()).sum();
    assert!(total < 256 * 1024, "the seeds take {total} bytes");
}

#[test]
#[ignore = "writes fuzz/seeds/; run by hand after changing the generator"]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    for s in seeds() {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(s.name), &s.bytes).unwrap();
    }
}
