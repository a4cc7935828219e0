//! The fuzz targets of `fuzz/`, one function per target: what an input is,
//! what is called with it, and what must hold. `fuzz/fuzz_targets/<t>.rs`
//! wraps `<t>` in libFuzzer; `tests/replay.rs` runs every committed seed and
//! regression input through the same function in an ordinary `cargo test`.
//!
//! Every target fails on a panic or a hang; most also check that an error
//! names the file (or says what is wrong), and that what was accepted can be
//! used. Work per input is bounded by tiny fixed models and caps, so one
//! execution takes milliseconds.

pub mod fixtures;
pub mod seeds;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use candle_core::{Device, Tensor};
use scalpel_dictionaries::Sae;
use scalpel_engine::tokenizer::MAX_TEMPLATE_OUTPUT;
use scalpel_engine::{GenerateOptions, Model, ModelSource, Precision, Tokenizer};
use scalpel_interventions::{run, vectors, Interventions};
use scalpel_web::state::Shared;

use fixtures::{document_model, exercise, fixed_tokenizer_json, hf_weights, split_at_ff, DOCUMENT_PROMPT, GPT2_CONFIG, LLAMA_CONFIG};

/// A target: its name (the `[[bin]]` in fuzz/Cargo.toml and the directory
/// under fuzz/seeds and fuzz/regressions) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order fuzz/README.md lists them.
pub const TARGETS: &[Target] = &[
    ("gguf_load", gguf_load),
    ("safetensors_load", safetensors_load),
    ("hf_config", hf_config),
    ("document", document),
    ("link_state", link_state),
    ("control_vector", control_vector),
    ("sae", sae),
    ("circuit_tracer", circuit_tracer),
    ("tokenizer_json", tokenizer_json),
    ("chat_template", chat_template),
    ("hf_index", hf_index),
];

/// The questions compiling one document may ask its stop callback (one per
/// item and one per forward pass building its vectors) before it is
/// stopped: keeps a document naming 1024 prompt runs to a few milliseconds.
const MAX_COMPILE_STEPS: usize = 48;

fn assert_names(msg: &str, names: &[&str]) {
    assert!(names.iter().any(|n| msg.contains(n)), "the error names none of {names:?}: {msg}");
}

/// The whole input as a GGUF file; the last byte's bit 0 picks f32 or
/// quantized weights. `Model::load` returns Ok or an error naming the file,
/// and reading the file a range at a time (the browser's path,
/// `Model::load_gguf_source`) gives the same outcome: the same logits or
/// the same message.
pub fn gguf_load(data: &[u8]) {
    let precision = if data.last().is_some_and(|b| b & 1 == 1) { Precision::Quantized } else { Precision::F32 };
    let whole = Model::load("fuzz.gguf", ModelSource::Gguf(data), precision);
    let ranged = Model::load_gguf_source("fuzz.gguf", &data, precision, scalpel_engine::Kernels::Auto, None);
    match (whole, ranged) {
        (Ok(m), Ok(r)) => {
            let ids = [1u32, 2];
            let bits = |m: &Model| m.logits(&ids).and_then(|l| Ok(l.flatten_all()?.to_vec1::<f32>()?)).map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).map_err(|e| e.to_string());
            assert_eq!(bits(&m), bits(&r), "the file read a range at a time gives other logits");
            exercise(&m)
        }
        (Err(e), Err(r)) => {
            assert_eq!(e.to_string(), r.to_string(), "the file read a range at a time gives another message");
            assert_names(&e.to_string(), &["fuzz.gguf"])
        }
        (w, r) => panic!("in memory: {:?}; a range at a time: {:?}", w.err().map(|e| e.to_string()), r.err().map(|e| e.to_string())),
    }
}

/// First byte: bit 0 picks GPT-2 or llama `config.json`, bit 1 f32 or
/// quantized; the rest is `model.safetensors`. Errors name that file.
pub fn safetensors_load(data: &[u8]) {
    let Some((&select, weights)) = data.split_first() else { return };
    let config = if select & 1 == 0 { GPT2_CONFIG } else { LLAMA_CONFIG };
    let precision = if select & 2 == 0 { Precision::F32 } else { Precision::Quantized };
    let source = ModelSource::HuggingFace {
        config: config.as_bytes(),
        tokenizer: Some(fixed_tokenizer_json()),
        tokenizer_config: None,
        weights: vec![("model.safetensors".to_owned(), weights)],
    };
    match Model::load("fuzz-hf", source, precision) {
        Ok(m) => exercise(&m),
        Err(e) => assert_names(&e.to_string(), &["model.safetensors"]),
    }
}

/// `config.json`, then optionally 0xFF and `tokenizer_config.json`, with
/// fixed tiny weights of the family the config names: finds arithmetic on
/// unchecked config fields.
pub fn hf_config(data: &[u8]) {
    let (gpt2, llama) = hf_weights();
    let (config, tokenizer_config) = split_at_ff(data);
    let weights = if config.windows(7).any(|w| w == b"\"llama\"") { llama } else { gpt2 };
    let source = ModelSource::HuggingFace {
        config,
        tokenizer: Some(fixed_tokenizer_json()),
        tokenizer_config,
        weights: vec![("model.safetensors".to_owned(), weights.as_slice())],
    };
    if let Ok(m) = Model::load("fuzz-hf", source, Precision::F32) {
        exercise(&m);
    }
}

/// The input (lossily UTF-8) as an intervention document: parsed, compiled
/// for the two-block document model and [`DOCUMENT_PROMPT`], then lowered to
/// GPU edits, run for logits and for four generated tokens. Every failure
/// is a message; compiling is stopped after [`MAX_COMPILE_STEPS`] steps.
pub fn document(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let doc = match scalpel_interventions::parse(&text) {
        Ok(doc) => doc,
        Err(msg) => return assert!(!msg.is_empty(), "an empty parse error"),
    };
    let mut model = document_model();
    let ids = model.tokenizer().encode(DOCUMENT_PROMPT).expect("the document prompt tokenizes");
    run_document(&mut model, &doc, &ids, &HashMap::new());
}

/// Compiles `doc` (with `saes`) and, if it compiles, uses it every way the
/// CLI and the page do.
fn run_document(model: &mut Model, doc: &scalpel_interventions::Document, ids: &[u32], saes: &vectors::SaeTable) {
    let steps = Cell::new(0usize);
    let budget = || {
        steps.set(steps.get() + 1);
        steps.get() > MAX_COMPILE_STEPS
    };
    let mut iv = match Interventions::compile_until(model, doc, ids.len(), saes, &budget) {
        Ok(iv) => iv,
        Err(msg) => return assert!(!msg.is_empty(), "an empty compile error"),
    };
    let _ = iv.report();
    let _ = iv.lower(model);
    if let Ok(logits) = run::logits(model, ids, &mut iv) {
        assert_eq!(logits.dims()[0], ids.len(), "one row of logits per prompt token");
    }
    iv.reset();
    let opts = GenerateOptions { max_new_tokens: 4, stop_at_eos: false, ..Default::default() };
    let _ = run::generate(model, ids, &opts, &mut iv, &mut |_| true);
    let _ = iv.conditional_traces();
}

/// The input as a share link's state, twice: as the fragment text itself
/// (lossily UTF-8), and base64url-encoded (so the fuzzer writes the JSON).
/// A state that decodes re-encodes to one that decodes to the same state
/// (the page rewrites the address from it), and gives a document or a message.
pub fn link_state(data: &[u8]) {
    decode_link(&String::from_utf8_lossy(data));
    decode_link(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data));
}

fn decode_link(fragment: &str) {
    let state = match Shared::decode(fragment) {
        Ok(state) => state,
        Err(msg) => return assert!(!msg.is_empty(), "an empty decode error"),
    };
    let again = Shared::decode(&state.encode()).unwrap_or_else(|e| panic!("a decoded state, encoded again, does not decode: {e}"));
    assert_eq!(again, state, "a decoded state, encoded again, decodes to another state");
    if let Ok(doc) = state.document() {
        let _ = scalpel_interventions::parse(&doc);
    }
}

/// The input as a llama.cpp control-vector GGUF. Errors name the file; a
/// vector that reads writes back to a file that reads the same, and turns
/// into a document for the document model (or a message) that compiles.
pub fn control_vector(data: &[u8]) {
    let (cv, _warnings) = match vectors::read_control_vector("fuzz.gguf", data) {
        Ok(read) => read,
        Err(msg) => return assert_names(&msg, &["fuzz.gguf"]),
    };
    let written = vectors::write_control_vector(&cv).unwrap_or_else(|e| panic!("a control vector that read does not write: {e}"));
    let (back, _) = vectors::read_control_vector("rewritten.gguf", &written)
        .unwrap_or_else(|e| panic!("a control vector that read, written again, does not read: {e}"));
    assert_eq!(back.directions, cv.directions, "a control vector changed when written and read again");
    let model = document_model();
    if let Ok((doc, _)) = vectors::control_vector_document(&model, &cv, 1.0) {
        let ids = model.tokenizer().encode(DOCUMENT_PROMPT).expect("the document prompt tokenizes");
        Interventions::compile(&model, &doc, ids.len()).unwrap_or_else(|e| panic!("a control vector's document does not compile: {e}"));
    }
}

/// Encodes, decodes and reconstructs two rows (values `i % period`,
/// centred) with a dictionary that loaded, and checks that decoder row
/// `d_sae` is refused; returns the rows.
fn encode_decode(sae: &Sae, period: usize) -> Tensor {
    let half = (period / 2) as f32;
    let x = Tensor::from_vec((0..2 * sae.d_in).map(|i| (i % period) as f32 - half).collect::<Vec<f32>>(), (2, sae.d_in), &Device::Cpu)
        .expect("a [2, d_in] input");
    if let Ok(f) = sae.encode(&x) {
        let _ = sae.decode(&f);
    }
    let _ = sae.reconstruct(&x);
    assert!(sae.decoder_row(sae.d_sae).is_err(), "decoder row d_sae is out of range");
    x
}

/// `cfg.json`, 0xFF, then `sae_weights.safetensors`. Errors name the SAE;
/// an SAE that loads encodes, decodes and clamps inputs of its width, and
/// one that fits the document model clamps a latent in a document run.
pub fn sae(data: &[u8]) {
    let (cfg, weights) = split_at_ff(data);
    let sae = match Sae::load("fuzz-sae", cfg, weights.unwrap_or_default()) {
        Ok(sae) => sae,
        Err(msg) => return assert_names(&msg, &["fuzz-sae"]),
    };
    let x = encode_decode(&sae, 7);
    let _ = sae.clamp_delta(&x, 0, 1.0);
    let _ = sae.decoder_row(0);
    let mut model = document_model();
    let Ok(point) = sae.point(&model) else { return };
    let doc = scalpel_interventions::parse(&format!(
        r#"{{"version":1,"interventions":[{{"hook":"{}","op":"sae_clamp","latent":0,"value":2}}]}}"#,
        point.name()
    ))
    .expect("an sae_clamp document parses");
    let saes: vectors::SaeTable = HashMap::from([(point, Arc::new(sae))]);
    let ids = model.tokenizer().encode(DOCUMENT_PROMPT).expect("the document prompt tokenizes");
    run_document(&mut model, &doc, &ids, &saes);
}

/// circuit-tracer's `config.yaml`, `0xFF`, then the set's `layer_1.safetensors`.
/// Errors name the set; a transcoder that loads encodes, decodes and
/// reconstructs, refuses an out-of-range decoder row, and (if it fits the
/// tiny llama) steers with its first decoder row at its output hook.
pub fn circuit_tracer(data: &[u8]) {
    let (cfg, weights) = split_at_ff(data);
    let sae = match Sae::load_circuit_tracer("fuzz-ct", cfg, "layer_1.safetensors", weights.unwrap_or_default()) {
        Ok(sae) => sae,
        Err(msg) => return assert_names(&msg, &["fuzz-ct"]),
    };
    encode_decode(&sae, 5);
    let mut model = document_model();
    let (Ok(_), Ok(out)) = (sae.point(&model), sae.point_out(&model)) else { return };
    let row = sae.decoder_row(0).expect("latent 0 exists");
    let doc = scalpel_interventions::parse(&format!(
        r#"{{"version":1,"interventions":[{{"hook":"{}","op":"add","scale":2,"vector":{}}}]}}"#,
        out.name(),
        serde_json::to_string(&row).expect("a row serializes")
    ))
    .expect("a steering document parses");
    let ids = model.tokenizer().encode(DOCUMENT_PROMPT).expect("the document prompt tokenizes");
    run_document(&mut model, &doc, &ids, &HashMap::new());
}

/// Texts every tokenizer that loads encodes and decodes: plain, spaced,
/// special tokens, non-ASCII, control characters, empty.
const TOKENIZER_TEXTS: [&str; 5] = ["the cat in a hat", "  <|im_start|>user\nhi<|im_end|>", "héllo 世界 🙂", "\0\t\r\n", ""];

/// `tokenizer.json`, then optionally 0xFF and `tokenizer_config.json`, as
/// the engine's `Tokenizer`. Errors name the file; a tokenizer that loads
/// encodes, decodes (ids in and out of range) and renders its chat template.
pub fn tokenizer_json(data: &[u8]) {
    let (json, config) = split_at_ff(data);
    let tok = match Tokenizer::from_hf_json("tokenizer.json", json, config) {
        Ok(tok) => tok,
        Err(e) => return assert_names(&e.to_string(), &["tokenizer.json", "tokenizer_config.json"]),
    };
    for text in TOKENIZER_TEXTS {
        if let Ok(ids) = tok.encode(text) {
            let _ = tok.decode(&ids);
            let _ = tok.token_strings(&ids);
        }
    }
    let _ = tok.vocab_size();
    let _ = tok.decode(&[0, 1, u32::MAX]);
    let _ = tok.id_to_token(u32::MAX);
    let _ = tok.apply_chat_template(&[("user", "hi")], true);
}

/// The input (lossily UTF-8) as a model's chat template, rendered for a
/// three-message chat. Output stays within `MAX_TEMPLATE_OUTPUT`; fuel
/// bounds the work; every error is a message about the chat template.
pub fn chat_template(data: &[u8]) {
    let mut tok = fixtures::template_tokenizer().clone();
    tok.chat_template = Some(String::from_utf8_lossy(data).into_owned());
    let chat = [("system", "be brief"), ("user", "hi <|im_end|>"), ("assistant", "hello")];
    match tok.apply_chat_template(&chat, true) {
        Ok(out) => assert!(out.len() <= MAX_TEMPLATE_OUTPUT, "the rendered template has {} bytes", out.len()),
        Err(e) => assert_names(&e.to_string(), &["chat template"]),
    }
}

/// The input as `model.safetensors.index.json`: the shard names it gives
/// are sorted, distinct, plain file names; errors name the index file.
pub fn hf_index(data: &[u8]) {
    match scalpel_engine::shard_files(data) {
        Ok(files) => {
            assert!(files.windows(2).all(|w| w[0] < w[1]), "shard names not sorted and distinct: {files:?}");
            for f in &files {
                let plain = !f.is_empty() && !f.contains('/') && !f.contains('\\') && !f.starts_with('.');
                assert!(plain, "shard name {f:?} is not a plain file name");
            }
        }
        Err(e) => assert_names(&e.to_string(), &["model.safetensors.index.json"]),
    }
}
