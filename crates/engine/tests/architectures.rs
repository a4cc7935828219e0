//! Every architecture against transformers itself: tiny random checkpoints
//! written by `tests/reference/make_arch_fixtures.py` (transformers'
//! `save_pretrained`, some in bf16) with transformers' float32 logits and
//! hook values on two prompts each, committed under `tests/fixtures/arch`.
//! Scalpel's f32 logits must equal them within 1e-4 with the same argmax at
//! every position, and its hook values (resid_post, attention pattern, z,
//! MLP post) likewise.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{HookPoint, Model, ModelSource, Precision, Site};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/arch")
}

struct Expected {
    prompts: Vec<(String, Vec<u32>)>,
    tensors: std::collections::HashMap<String, Tensor>,
}

fn expected(dir: &Path) -> Expected {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let prompts = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            (p["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    let tensors = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    Expected { prompts, tensors }
}

fn load(dir: &Path) -> Model {
    let name = dir.file_name().unwrap().to_string_lossy();
    Model::load(&name, scalpel_testkit::ArchFiles::read(&name).source(), Precision::F32).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

const ARCHS: [(&str, &str); 6] =
    [("llama", "llama"), ("qwen2", "qwen2"), ("qwen3_bf16", "qwen3"), ("gpt_neox", "gpt_neox"), ("gemma2", "gemma2"), ("gemma3", "gemma3")];

#[test]
fn every_architecture_matches_transformers() {
    let mut report = Vec::new();
    for (dir_name, arch) in ARCHS {
        let dir = fixtures().join(dir_name);
        let exp = expected(&dir);
        let model = load(&dir);
        assert_eq!(model.config.arch.name(), arch);
        let n = model.config.n_layers;
        let mut points = Vec::new();
        for l in 0..n {
            points.extend([Site::ResidPost, Site::Pattern, Site::Z, Site::MlpPost].map(|s| HookPoint::block(l, s)));
        }
        let mut worst = 0f32;
        for (i, (text, ids)) in exp.prompts.iter().enumerate() {
            // The model's own tokenizer gives transformers' ids.
            assert_eq!(&model.tokenizer().encode(text).unwrap(), ids, "{dir_name}: ids of {text:?}");
            let (logits, cache) = model.run_with_cache(ids, &points).unwrap();
            let want = &exp.tensors[&format!("p{i}.logits")];
            let d = max_abs_diff(&logits, want);
            assert!(d < 1e-4, "{dir_name} prompt {i}: logits differ by {d}");
            worst = worst.max(d);
            let am = |t: &Tensor| t.argmax(1).unwrap().to_vec1::<u32>().unwrap();
            assert_eq!(am(&logits), am(want), "{dir_name} prompt {i}: argmax");
            for p in &points {
                let got = cache.get(p).unwrap();
                let want = &exp.tensors[&format!("p{i}.{}", p.name())].to_dtype(DType::F32).unwrap();
                let got = got.reshape(want.dims()).unwrap();
                let d = max_abs_diff(&got, want);
                assert!(d < 1e-4, "{dir_name} prompt {i}: {} differs by {d}", p.name());
                worst = worst.max(d);
            }
        }
        report.push(format!("{dir_name}: {} prompts, worst |Δ| {worst:.2e}", exp.prompts.len()));
    }
    eprintln!("{}", report.join("\n"));
}

/// `load` with `edit` applied to config.json.
fn load_edited(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> Result<Model, String> {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&read("config.json")).unwrap();
    edit(&mut cfg);
    let config = serde_json::to_vec(&cfg).unwrap();
    let (tokenizer, weights) = (read("tokenizer.json"), read("model.safetensors"));
    let source = ModelSource::HuggingFace {
        config: &config,
        tokenizer: Some(&tokenizer),
        tokenizer_config: None,
        weights: vec![("model.safetensors".to_owned(), &weights[..])],
    };
    Model::load("edited", source, Precision::F32).map_err(|e| e.to_string())
}

/// Each feature the fixtures stand for changes their numbers: with it
/// turned off (in config.json) the logits move far beyond the tolerance,
/// so the comparison above really checks it.
#[test]
fn the_fixtures_exercise_each_feature() {
    use serde_json::json;
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, &str, Edit); 7] = [
        ("gemma2", "sliding window", |c| c["sliding_window"] = json!(4096)),
        ("gemma2", "attention soft-cap", |c| c["attn_logit_softcapping"] = json!(null)),
        ("gemma2", "final soft-cap", |c| c["final_logit_softcapping"] = json!(null)),
        ("gemma2", "query_pre_attn_scalar", |c| c["query_pre_attn_scalar"] = json!(8)),
        ("gemma3", "local rope base", |c| c["rope_parameters"]["sliding_attention"]["rope_theta"] = json!(1000000.0)),
        ("gpt_neox", "partial rotary", |c| c["rope_parameters"]["partial_rotary_factor"] = json!(0.5)),
        ("gpt_neox", "parallel residual", |c| c["use_parallel_residual"] = json!(false)),
    ];
    for (dir_name, feature, edit) in cases {
        let dir = fixtures().join(dir_name);
        let exp = expected(&dir);
        let model = load_edited(&dir, edit).unwrap();
        let logits = model.logits(&exp.prompts[0].1).unwrap();
        let d = max_abs_diff(&logits, &exp.tensors["p0.logits"]);
        assert!(d > 1e-2, "{dir_name}: without its {feature} the logits move only {d}");
    }
}

/// Generation's cached passes (one token at a time, sliding-window masks
/// and all) give the logits of one full pass.
#[test]
fn cached_decoding_equals_the_full_pass() {
    for (dir_name, _) in ARCHS {
        let dir = fixtures().join(dir_name);
        let exp = expected(&dir);
        let model = load(&dir);
        let ids = &exp.prompts[0].1;
        let full = model.logits(ids).unwrap();
        let mut cache = scalpel_engine::KvCache::new(&model.config);
        let split = 3;
        let mut rows = vec![model
            .forward(&model.ids_tensor(&ids[..split]).unwrap(), Some(&mut cache), None, scalpel_engine::Logits::All)
            .unwrap()
            .squeeze(0)
            .unwrap()];
        for &id in &ids[split..] {
            rows.push(
                model.forward(&model.ids_tensor(&[id]).unwrap(), Some(&mut cache), None, scalpel_engine::Logits::All).unwrap().squeeze(0).unwrap(),
            );
        }
        let cached = Tensor::cat(&rows, 0).unwrap();
        let d = max_abs_diff(&cached, &full);
        assert!(d < 1e-4, "{dir_name}: cached decoding differs from the full pass by {d}");
    }
}

/// Decoding one position with nothing reading the scores or the pattern
/// (`attend_one_position` in `model/attention.rs`) gives the bits of the
/// candle path a hook on the pattern takes, on every architecture (grouped
/// and ungrouped heads, `attn_scale`, soft-capping, sliding windows, partial
/// rotary): each cached step's logits, the same `f32` bits.
#[test]
fn decoding_without_pattern_hooks_gives_the_bits_of_the_hooked_path() {
    use scalpel_engine::{FnHook, KvCache, Logits};
    for (dir_name, _) in ARCHS {
        let dir = fixtures().join(dir_name);
        let exp = expected(&dir);
        let model = load(&dir);
        let ids = &exp.prompts[0].1;
        let points: Vec<HookPoint> = (0..model.config.n_layers).map(|l| HookPoint::block(l, Site::Pattern)).collect();
        let steps = |hooked: bool| -> Vec<Vec<u32>> {
            let mut cache = KvCache::new(&model.config);
            let mut read = FnHook::new(points.clone(), |_, _| Ok(None));
            let mut out = Vec::new();
            for &id in ids {
                let hooks: Option<&mut dyn scalpel_engine::Hook> = if hooked { Some(&mut read) } else { None };
                let logits = model.forward(&model.ids_tensor(&[id]).unwrap(), Some(&mut cache), hooks, Logits::All).unwrap();
                out.push(logits.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect());
            }
            out
        };
        let (plain, hooked) = (steps(false), steps(true));
        assert_eq!(plain.len(), ids.len());
        for (i, (a, b)) in plain.iter().zip(&hooked).enumerate() {
            assert!(a == b, "{dir_name}: step {i}'s logits differ between the fused and the hooked attention");
        }
    }
}

/// Each architecture has the hook points it computes, under
/// TransformerLens' names, and refuses the ones it does not.
#[test]
fn hook_points_per_architecture() {
    let has = |dir: &str, name: &str| load(&fixtures().join(dir)).hook_point(name).is_ok();
    for dir in ["qwen3_bf16", "gemma3"] {
        assert!(has(dir, "blocks.0.attn.q_norm.hook_normalized") && has(dir, "blocks.2.attn.k_norm.hook_normalized"), "{dir}");
    }
    for dir in ["gemma2", "gemma3"] {
        assert!(has(dir, "blocks.1.ln1_post.hook_normalized") && has(dir, "blocks.1.ln2_post.hook_normalized"), "{dir}");
    }
    for dir in ["llama", "qwen2", "gpt_neox"] {
        assert!(!has(dir, "blocks.0.attn.q_norm.hook_normalized") && !has(dir, "blocks.0.ln1_post.hook_normalized"), "{dir}");
    }
    assert!(!has("gpt_neox", "blocks.0.hook_resid_mid"), "a parallel block has no resid_mid");
    let err = load(&fixtures().join("gpt_neox")).hook_point("blocks.0.hook_resid_mid").unwrap_err().to_string();
    assert!(err.contains("does not exist in this gpt_neox model"), "{err}");

    // Hooks can rewrite the new sites: zeroing Gemma 3's normalised queries
    // makes every attention pattern uniform over the visible keys.
    let model = load(&fixtures().join("gemma3"));
    let ids = &expected(&fixtures().join("gemma3")).prompts[0].1;
    let q = HookPoint::block(2, Site::QNorm);
    let pat = HookPoint::block(2, Site::Pattern);
    let mut zero = scalpel_engine::FnHook::new([q], |_, x: &Tensor| Ok(Some(x.zeros_like()?)));
    let mut cache = scalpel_engine::ActivationCache::new([pat]);
    let mut list = scalpel_engine::HookList::new();
    list.push(&mut zero);
    list.push(&mut cache);
    model.forward(&model.ids_tensor(ids).unwrap(), None, Some(&mut list), scalpel_engine::Logits::Last).unwrap();
    drop(list);
    let p: Vec<Vec<Vec<f32>>> = cache.get(&pat).unwrap().squeeze(0).unwrap().to_vec3().unwrap();
    for (i, row) in p[0].iter().enumerate() {
        assert!((row[0] - 1.0 / (i + 1) as f32).abs() < 1e-6, "layer 2 is global: query {i} sees {} keys", i + 1);
    }
}

/// Configs that would change the numbers in ways not implemented are
/// refused with a message naming what, never run with a default.
#[test]
fn unimplemented_config_values_are_refused() {
    use serde_json::json;
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 7] = [
        ("gemma3", |c| c["model_type"] = json!("gemma3"), "multimodal"),
        ("gemma3", |c| c["rope_parameters"]["full_attention"]["rope_type"] = json!("linear"), "rope type 'linear'"),
        ("gemma2", |c| c["layer_types"][0] = json!("chunked_attention"), "chunked_attention"),
        ("gemma2", |c| c["layer_types"] = json!(["full_attention"]), "lists 1 layers"),
        ("qwen2", |c| { c["use_sliding_window"] = json!(true); c.as_object_mut().unwrap().remove("layer_types"); }, "use_sliding_window"),
        ("qwen3_bf16", |c| c["rope_parameters"]["rope_type"] = json!("yarn"), "rope type 'yarn'"),
        ("gpt_neox", |c| c["rotary_pct"] = json!(0.5), "both 'rotary_pct'"),
    ];
    for (dir, edit, want) in cases {
        let err = load_edited(&fixtures().join(dir), edit).err().unwrap_or_else(|| panic!("{dir}: accepted (wanted '{want}')"));
        assert!(err.contains(want), "{dir}: {err}");
    }
    // Older configs without layer_types get the architecture's pattern.
    let old = load_edited(&fixtures().join("gemma2"), |c| {
        c.as_object_mut().unwrap().remove("layer_types");
    })
    .unwrap();
    assert_eq!(old.config.extra.sliding_layers, [true, false, true]);
}

/// A GGUF with a SentencePiece vocabulary (`tokenizer.ggml.model = llama`,
/// as llama.cpp's converter writes Llama 2 / TinyLlama / Gemma files):
/// its ids equal sentencepiece's own on varied text (byte fallback for
/// characters outside the vocabulary, spaces, tabs, newlines, digits).
#[test]
fn sentencepiece_gguf_ids_equal_sentencepiece() {
    let dir = fixtures().join("spm_gguf");
    let bytes = std::fs::read(dir.join("tiny-spm.gguf")).unwrap();
    let model = Model::load("tiny-spm.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let exp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let cases = exp["cases"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        let got = model.tokenizer().encode(text).unwrap();
        assert_eq!(got, want, "ids of {text:?}");
        // Decoding gives the text back (after the BOS and the prefix space).
        assert_eq!(model.tokenizer().decode(&got[1..]), format!(" {text}"), "decode of {text:?}");
    }
}

/// Qwen2, Qwen3, GPT-NeoX, Gemma 2 and Gemma 3 GGUF files written by
/// llama.cpp's own converter (`tests/reference/make_arch_gguf.py`, f32)
/// from the same checkpoints: the same ids (llama.cpp's `qwen2` and `gpt-2`
/// pre-tokenizers) and logits within 1e-4 of transformers', with no
/// tokenizer warning. (GPT-NeoX: with the model's exact GELU, where
/// llama.cpp approximates it.)
#[test]
fn gguf_files_match_transformers() {
    for dir_name in ["qwen2", "qwen3_bf16", "gpt_neox", "gemma2_gguf", "gemma3_gguf"] {
        let dir = fixtures().join(dir_name);
        let exp = expected(&dir);
        let bytes = std::fs::read(dir.join("model-f32.gguf")).unwrap();
        let model = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
        assert!(model.warnings.is_empty(), "{dir_name}: {:?}", model.warnings);
        for (i, (text, ids)) in exp.prompts.iter().enumerate() {
            // The tiny Gemma tokenizer is not one llama.cpp names (real
            // Gemma GGUFs carry SentencePiece vocabularies: spm_gguf):
            // its logits are compared on transformers' ids.
            if !dir_name.starts_with("gemma") {
                assert_eq!(&model.tokenizer().encode(text).unwrap(), ids, "{dir_name}: ids of {text:?}");
            }
            let got = model.logits(ids).unwrap();
            let want = &exp.tensors[&format!("p{i}.logits")];
            let d = max_abs_diff(&got, want);
            eprintln!("{dir_name} GGUF prompt {i}: max |Δlogit| {d:.2e}");
            assert!(d < 1e-4, "{dir_name} GGUF prompt {i}: logits differ by {d}");
            assert_eq!(got.argmax(1).unwrap().to_vec1::<u32>().unwrap(), want.argmax(1).unwrap().to_vec1::<u32>().unwrap(), "{dir_name} argmax");
        }
        // And the quantized precision runs it (Q8_0 of the f32 weights).
        let q = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), Precision::Quantized).unwrap();
        let ids = &exp.prompts[0].1;
        let d = max_abs_diff(&q.logits(ids).unwrap(), &exp.tensors["p0.logits"]);
        assert!(d < 0.5, "{dir_name} quantized: logits differ by {d}");
    }
}

/// A Gemma 3 GGUF as llama.cpp reads it: the sliding pattern, the local
/// RoPE base and the score scale it fixes are the model's.
#[test]
fn gemma3_gguf_reads_llama_cpps_fixed_values() {
    let bytes = std::fs::read(fixtures().join("gemma3_gguf/model-f32.gguf")).unwrap();
    let model = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let c = &model.config;
    assert_eq!(c.arch, scalpel_engine::Arch::Gemma3);
    assert_eq!(c.extra.sliding_layers, [true, true, true, true, true, false]);
    assert_eq!((c.extra.sliding_window, c.extra.rope_local_theta, c.rope_theta), (Some(4), Some(10000.0), 1e6));
    assert_eq!(c.extra.attn_scale, Some(8f32.powf(-0.5)));
    assert!(c.extra.qk_norm && c.extra.post_norms && c.tied_embeddings);
}

/// A Gemma 2 GGUF as llama.cpp reads it: even layers slide, scores scale
/// by head_dim^-½, the soft-caps and window come from the file.
#[test]
fn gemma2_gguf_reads_llama_cpps_fixed_values() {
    let bytes = std::fs::read(fixtures().join("gemma2_gguf/model-f32.gguf")).unwrap();
    let model = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let c = &model.config;
    assert_eq!(c.arch, scalpel_engine::Arch::Gemma2);
    assert_eq!(c.extra.sliding_layers, [true, false, true, false]);
    assert_eq!((c.extra.sliding_window, c.extra.rope_local_theta), (Some(4), None));
    assert_eq!((c.extra.attn_softcap, c.extra.final_softcap), (Some(4.0), Some(6.0)));
    assert_eq!(c.extra.attn_scale, Some(8f32.powf(-0.5)));
    assert!(!c.extra.qk_norm && c.extra.post_norms && c.tied_embeddings);
}

/// A GPT-NeoX GGUF: partial rotary from `rope.dimension_count`, parallel
/// blocks, LayerNorm, an untied unembedding, the exact GELU.
#[test]
fn gpt_neox_gguf_reads_partial_rotary_and_parallel_blocks() {
    let bytes = std::fs::read(fixtures().join("gpt_neox/model-f32.gguf")).unwrap();
    let model = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let c = &model.config;
    assert_eq!(c.arch, scalpel_engine::Arch::GptNeox);
    assert_eq!((c.extra.rotary_dim, c.extra.parallel_residual, c.tied_embeddings), (Some(2), true, false));
    assert_eq!((c.act, c.norm), (scalpel_engine::config::Activation::Gelu, scalpel_engine::config::NormKind::Layer));
}

/// The fused query/key/value of a quantized GPT-NeoX GGUF is split into
/// roles by rows of blocks (`Gguf::weight_rows`), never dequantized whole:
/// a Q8_0 copy of the fixture, built in f32 precision, equals an f32 copy
/// holding exactly its dequantized values.
#[test]
fn gpt_neox_q8_gguf_splits_the_fused_matrix_by_block_rows() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let path = fixtures().join("gpt_neox/model-f32.gguf");
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let write = |quantize: bool| -> Vec<u8> {
        let mut tensors = Vec::new();
        for name in content.tensor_infos.keys() {
            let t = content.tensor(&mut f.try_clone().unwrap(), name, &Device::Cpu).unwrap();
            let q = if t.shape().dims().len() == 2 && name != "token_embd.weight" {
                let q8 = QTensor::quantize(&t.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
                if quantize { q8 } else { QTensor::quantize(&q8.dequantize(&Device::Cpu).unwrap(), GgmlDType::F32).unwrap() }
            } else {
                t
            };
            tensors.push((name.clone(), q));
        }
        let meta: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &meta, &refs).unwrap();
        out.into_inner()
    };
    let (q8, f32) = (write(true), write(false));
    let q8_model = Model::load("q8.gguf", ModelSource::Gguf(&q8), Precision::F32).unwrap();
    let f32_model = Model::load("f32.gguf", ModelSource::Gguf(&f32), Precision::F32).unwrap();
    let ids = &expected(&fixtures().join("gpt_neox")).prompts[0].1;
    let d = max_abs_diff(&q8_model.logits(ids).unwrap(), &f32_model.logits(ids).unwrap());
    assert!(d < 1e-5, "Q8_0 GGUF vs its dequantized values: logits differ by {d}");
    // And the quantized precision multiplies the split blocks as they are
    // (int8 activations: the tolerance of `gguf_files_match_transformers`).
    let q = Model::load("q8.gguf", ModelSource::Gguf(&q8), Precision::Quantized).unwrap();
    let d = max_abs_diff(&q.logits(ids).unwrap(), &f32_model.logits(ids).unwrap());
    assert!(d < 0.5, "Q8_0 GGUF in quantized precision: logits differ by {d}");
}

/// Every metadata value of every architecture's GGUF fixture, removed or
/// replaced by a hostile one (zero, the largest integer, NaN, a string
/// where a number belongs): the load gives a model or an error naming the
/// file, never a panic, and never takes long (no allocation sized by a
/// claimed value before the tensors confirm it).
#[test]
fn gguf_metadata_of_every_architecture_tampered_never_panics() {
    use candle_core::quantized::{gguf_file, QTensor};
    use gguf_file::Value;
    let mut cases = 0;
    for dir_name in ["qwen2", "qwen3_bf16", "gpt_neox", "gemma2_gguf", "gemma3_gguf"] {
        let path = fixtures().join(dir_name).join("model-f32.gguf");
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let tensors: Vec<(String, QTensor)> =
            content.tensor_infos.keys().map(|n| (n.clone(), content.tensor(&mut f.try_clone().unwrap(), n, &Device::Cpu).unwrap())).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let hostile = [None, Some(Value::U32(0)), Some(Value::U32(u32::MAX)), Some(Value::U64(u64::MAX)), Some(Value::F32(f32::NAN)), Some(Value::String("x".into()))];
        for key in content.metadata.keys().filter(|k| !k.starts_with("tokenizer.ggml.")) {
            for v in &hostile {
                let meta: Vec<(&str, &Value)> = content
                    .metadata
                    .iter()
                    .filter_map(|(k, old)| if k == key { v.as_ref().map(|v| (k.as_str(), v)) } else { Some((k.as_str(), old)) })
                    .collect();
                let mut out = std::io::Cursor::new(Vec::new());
                gguf_file::write(&mut out, &meta, &refs).unwrap();
                let bytes = out.into_inner();
                let t0 = std::time::Instant::now();
                let what = format!("{dir_name}: {key} = {v:?}");
                match scalpel_testkit::panic::no_panic(|| Model::load("model.gguf", ModelSource::Gguf(&bytes), Precision::F32).map(|m| m.logits(&[1, 2]).map(|_| ()))) {
                    Err(p) => panic!("{what}: panicked: {p}"),
                    Ok(Err(e)) | Ok(Ok(Err(e))) => assert!(e.to_string().contains("model.gguf") || e.to_string().contains(key.as_str()), "{what}: {e}"),
                    Ok(Ok(Ok(()))) => {}
                }
                assert!(t0.elapsed().as_secs_f64() < 10.0, "{what}: took {:?}", t0.elapsed());
                cases += 1;
            }
        }
    }
    assert!(cases > 100, "{cases} cases");
}

/// The parameter count read from config.json alone (the page's estimate
/// before a download) is the checkpoint's own, up to biases it lacks.
#[test]
fn weight_count_from_config_matches_the_checkpoint() {
    for (dir_name, _) in ARCHS {
        let dir = fixtures().join(dir_name);
        let cfg = scalpel_engine::hf_config("config.json", &std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let st = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let stored: u64 = st.values().map(|t| t.elem_count() as u64).sum();
        let est = cfg.weight_count();
        assert!(est >= stored && (est - stored) as f64 <= 0.05 * stored as f64, "{dir_name}: estimate {est}, checkpoint {stored}");
    }
}

/// Within this fraction of the built model's bytes: what the page's
/// estimate before a download must meet.
const ESTIMATE_TOLERANCE: f64 = 0.05;

fn assert_close_estimate(what: &str, precision: Precision, estimate: u64, built: u64) {
    let rel = (estimate as f64 - built as f64).abs() / built as f64;
    assert!(rel <= ESTIMATE_TOLERANCE, "{what} {}: estimate {estimate} bytes, built {built} (off by {:.1}%)", precision.as_str(), 100.0 * rel);
}

/// The estimate made before a download (from config.json, or a GGUF
/// file's first bytes) agrees with what the model built from the whole
/// files holds, in both precisions, and the download size is the files'.
#[test]
fn memory_estimate_before_download_matches_the_built_model() {
    for (dir_name, _) in ARCHS {
        let dir = fixtures().join(dir_name);
        let config = std::fs::read(dir.join("config.json")).unwrap();
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let est = scalpel_engine::WeightEstimate::from_hf_config("config.json", &config).unwrap();
        let source = ModelSource::HuggingFace { config: &config, tokenizer: Some(&tokenizer), tokenizer_config: None, weights: vec![("model.safetensors".to_owned(), &weights[..])] };
        let (_, _, parts) = scalpel_engine::read(dir_name, source).unwrap();
        for p in Precision::ALL {
            assert_close_estimate(dir_name, p, est.built_bytes(p), parts.built_bytes(p));
        }
        let file = weights.len() as f64;
        assert!((est.file_bytes as f64 - file).abs() / file < ESTIMATE_TOLERANCE, "{dir_name}: file estimate {} vs {file}", est.file_bytes);
    }
    let mut ggufs: Vec<(String, Vec<u8>)> = ["qwen2", "qwen3_bf16"]
        .iter()
        .map(|d| (format!("{d}/model-f32.gguf"), std::fs::read(fixtures().join(d).join("model-f32.gguf")).unwrap()))
        .collect();
    ggufs.extend(scalpel_testkit::default_model_bytes().map(|b| ("default model (Q4_1)".to_owned(), b)));
    for (name, bytes) in ggufs {
        // The header alone: the tensor table ends well before the data.
        let header_len = bytes.len().min(8 << 20);
        let est = scalpel_engine::WeightEstimate::from_gguf_header(&name, &bytes[..header_len], bytes.len()).unwrap().unwrap();
        let (_, _, parts) = scalpel_engine::read(&name, ModelSource::Gguf(&bytes)).unwrap();
        for p in Precision::ALL {
            assert_close_estimate(&name, p, est.built_bytes(p), parts.built_bytes(p));
        }
        assert_eq!(est.file_bytes, bytes.len() as u64);
    }
    // A prefix that stops inside the header says so (the page fetches
    // more); a whole file that is not GGUF is an error.
    let bytes = std::fs::read(fixtures().join("qwen2/model-f32.gguf")).unwrap();
    assert!(scalpel_engine::WeightEstimate::from_gguf_header("x.gguf", &bytes[..1000], bytes.len()).unwrap().is_none());
    let e = scalpel_engine::WeightEstimate::from_gguf_header("x.gguf", b"<html>not found</html>", 22).err().unwrap().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
}

/// The unembedding's rows and products, read without expanding the whole
/// matrix, equal the expanded matrix's in every precision and kernel.
#[test]
fn unembedding_rows_and_products_equal_the_expanded_matrix() {
    let bytes = std::fs::read(fixtures().join("qwen2/model-f32.gguf")).unwrap();
    for (precision, kernels) in
        [(Precision::F32, scalpel_engine::Kernels::Auto), (Precision::Quantized, scalpel_engine::Kernels::Candle), (Precision::Quantized, scalpel_engine::Kernels::Scalpel)]
    {
        let mut model = Model::load("model-f32.gguf", ModelSource::Gguf(&bytes), precision).unwrap();
        model.set_kernels(kernels).unwrap();
        let full = model.unembedding_matrix().unwrap();
        let v = model.config.d_vocab as u32;
        let ids = [v - 1, 0, 7, 7];
        let rows = model.unembedding_rows(&ids).unwrap();
        let want = full.index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0).unwrap();
        assert_eq!(max_abs_diff(&rows, &want), 0.0, "{precision:?} {kernels:?}");
        assert!(model.unembedding_rows(&[v]).is_err());
        let dirs = Tensor::randn(0f32, 1.0, (model.config.d_model, 3), &Device::Cpu).unwrap();
        let got = model.unembedding_times(&dirs).unwrap();
        let d = max_abs_diff(&got, &full.matmul(&dirs).unwrap());
        assert!(d < 1e-5, "{precision:?} {kernels:?}: {d}");
    }
}

/// A config.json without `tie_word_embeddings` (as the hub's Gemma 3
/// configs are: transformers omits defaults) means transformers' default
/// for its class: tied for Gemma 2/3, untied for llama and GPT-NeoX.
#[test]
fn absent_tie_word_embeddings_means_the_class_default() {
    for dir_name in ["gemma2", "gemma3", "llama", "gpt_neox"] {
        let dir = fixtures().join(dir_name);
        let with = load(&dir);
        let without = load_edited(&dir, |c| {
            c.as_object_mut().unwrap().remove("tie_word_embeddings");
        })
        .unwrap_or_else(|e| panic!("{dir_name}: {e}"));
        assert_eq!(with.config.tied_embeddings, without.config.tied_embeddings, "{dir_name}");
        let ids = [1u32, 5, 9];
        let a = with.forward(&with.ids_tensor(&ids).unwrap(), None, None, scalpel_engine::Logits::All).unwrap();
        let b = without.forward(&without.ids_tensor(&ids).unwrap(), None, None, scalpel_engine::Logits::All).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{dir_name}");
    }
}
