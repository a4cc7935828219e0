//! `scalpel patch` scores the answer's first real token even when the
//! tokenizer prepends a BOS (`tokenizer.ggml.add_bos_token = true`): the
//! sweep's clean and corrupted logit differences equal logit[answer] −
//! logit[wrong] computed directly, with the answer and wrong tokens taken
//! after the BOS.

use std::process::Command;

use scalpel_engine::{Model, ModelSource, Precision};
use scalpel_testkit::{tiny_llama, LlamaSpec, Meta};

#[test]
fn patch_answer_skips_the_bos_the_tokenizer_adds() {
    let mut g = tiny_llama(&LlamaSpec::default());
    g.set("tokenizer.ggml.add_bos_token", Meta::Bool(true));
    let bytes = g.bytes();
    let dir = std::env::temp_dir().join(format!("scalpel-bos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-bos.gguf");
    std::fs::write(&path, &bytes).unwrap();

    let model = Model::load("tiny-bos.gguf", ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let tok = model.tokenizer();
    let (clean, corrupt) = ("in the cat", "in the hat");
    let first = |text: &str| {
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids[0], tok.bos_id.unwrap(), "the tokenizer prepends its BOS");
        ids[1]
    };
    let (answer, wrong) = (first(" the"), first(" a"));
    let diff = |text: &str| {
        let logits: Vec<Vec<f32>> = model.logits(&tok.encode(text).unwrap()).unwrap().to_vec2().unwrap();
        let last = logits.last().unwrap();
        last[answer as usize] - last[wrong as usize]
    };

    let out = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["patch", "--model", path.to_str().unwrap(), "--clean", clean, "--corrupt", corrupt])
        .args(["--answer", " the", "--wrong", " a", "--hook", "resid_pre", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = |k: &str| v[k].as_f64().unwrap() as f32;
    assert_eq!(v["answer"], " the");
    assert_eq!(v["wrong"], " a");
    assert!((got("clean_ld") - diff(clean)).abs() < 1e-5, "clean: {} vs {}", got("clean_ld"), diff(clean));
    assert!((got("corrupt_ld") - diff(corrupt)).abs() < 1e-5, "corrupt: {} vs {}", got("corrupt_ld"), diff(corrupt));
    std::fs::remove_dir_all(&dir).ok();
}
