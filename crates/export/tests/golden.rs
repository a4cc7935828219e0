//! The exports of committed documents must equal committed text (CI has no
//! torch; tests/reference/verify_exports.py runs the scripts themselves).
//! `UPDATE_GOLDEN=1 cargo test -p scalpel-export` rewrites the golden files.
//! The documents are for tests/fixtures/arch/llama.

use std::path::PathBuf;

use scalpel_export::{llama_cpp, nnsight, plan, transformer_lens, vllm_lens, ModelSpec, ScriptOptions};
use scalpel_types::Document;

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(sub)
}

fn spec() -> ModelSpec {
    ModelSpec {
        arch: "llama".into(),
        name: "tests/fixtures/arch/llama".into(),
        n_layers: 3,
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 2,
        d_head: 8,
        d_mlp: 64,
    }
}

fn opts() -> ScriptOptions {
    ScriptOptions {
        prompt: "The cat sat on the mat and".into(),
        max_new_tokens: 0,
    }
}

fn doc(name: &str) -> Document {
    let text = std::fs::read_to_string(dir("docs").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn golden(file: &str, got: &[u8]) {
    let path = dir("golden").join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want.as_slice(),
        "{file} differs from the golden file (UPDATE_GOLDEN=1 rewrites it after review)"
    );
}

#[test]
fn scripts_equal_the_golden_files() {
    for name in ["steer", "ablate", "patch"] {
        let p = plan(&doc(name), &spec()).unwrap();
        golden(
            &format!("{name}.nnsight.py"),
            nnsight::script(&p, &spec(), &opts()).unwrap().as_bytes(),
        );
        golden(
            &format!("{name}.transformer_lens.py"),
            transformer_lens::script(&p, &spec(), &opts()).unwrap().as_bytes(),
        );
    }
    let p = plan(&doc("knockout"), &spec()).unwrap();
    golden(
        "knockout.transformer_lens.py",
        transformer_lens::script(&p, &spec(), &opts()).unwrap().as_bytes(),
    );
}

#[test]
fn serving_exports_equal_the_golden_files() {
    let p = plan(&doc("steer"), &spec()).unwrap();
    let e = llama_cpp::export(&p, &spec(), "steer.gguf", "model.gguf").unwrap();
    golden("steer.llama_cpp.gguf", &e.gguf);
    assert_eq!(e.command, "llama-server -m model.gguf --control-vector-scaled steer.gguf 4.0");
    let (body, notes) = vllm_lens::request(&p, &spec(), &opts()).unwrap();
    assert!(notes.is_empty());
    golden("steer.vllm_lens.json", serde_json::to_string_pretty(&body).unwrap().as_bytes());
    // blocks.1.hook_resid_post -> direction.1; blocks.2.hook_resid_pre -> direction.1 too: summed.
    let st = llama_cpp::steering(&p, "x").unwrap();
    assert_eq!(st.layers.iter().map(|l| l.0).collect::<Vec<_>>(), [1]);
    assert_eq!(st.scale, 4.0);
}

#[test]
fn the_disabled_intervention_is_listed() {
    let p = plan(&doc("ablate"), &spec()).unwrap();
    let s = nnsight::script(&p, &spec(), &opts()).unwrap();
    assert!(s.contains("NOT EXPORTED:\n  - intervention 6 (zero): disabled"), "{s}");
}

fn err_of(json: &str) -> String {
    let d: Document = serde_json::from_str(json).unwrap();
    match plan(&d, &spec()) {
        Err(e) => e,
        Ok(p) => match nnsight::script(&p, &spec(), &opts()) {
            Err(e) => e,
            Ok(_) => transformer_lens::script(&p, &spec(), &opts()).err().unwrap_or_default(),
        },
    }
}

#[test]
fn what_has_no_counterpart_is_refused_by_name() {
    let ko = plan(&doc("knockout"), &spec()).unwrap();
    let e = nnsight::script(&ko, &spec(), &opts()).unwrap_err();
    assert!(
        e.starts_with("intervention 0 (knockout): 'blocks.1.attn.hook_attn_scores' has no nnsight counterpart"),
        "{e}"
    );
    let v = ["0.5"; 8].join(",");
    for (json, want) in [
        (format!(r#"{{"version":1,"interventions":[{{"hook":"blocks.1.attn.hook_v","op":"kv_add","vector":[{v}]}}]}}"#), "intervention 0 (kv_add): has no export"),
        (r#"{"version":1,"interventions":[{"hook":"blocks.1","op":"low_rank","matrix":"q","rank":2}]}"#.into(), "intervention 0 (low_rank): has no export"),
        (r#"{"version":1,"interventions":[{"op":"insert","text":"x","at_step":1}]}"#.into(), "intervention 0 (insert): has no export"),
        (r#"{"version":1,"interventions":[{"hook":"blocks.1.hook_resid_mid","op":"zero"}]}"#.into(), "intervention 0 (zero): 'blocks.1.hook_resid_mid' has no nnsight counterpart"),
        (r#"{"version":1,"interventions":[{"hook":"blocks.1.hook_resid_post","op":"add","vector":{"from":"prompt_diff","plus":"a","minus":"b"}}]}"#.into(), "intervention 0 (add): field 'vector' is computed"),
        (r#"{"version":1,"interventions":[{"hook":"blocks.1.hook_resid_post","op":"add","vector":[1.0]}]}"#.into(), "intervention 0 (add): the vector has 1 values; 'blocks.1.hook_resid_post' has 32"),
        (r#"{"version":1,"interventions":[{"hook":"blocks.1.attn.hook_z","op":"zero","heads":[4]}]}"#.into(), "intervention 0 (zero): head 4 is out of range"),
    ] {
        let e = err_of(&json);
        assert!(e.starts_with(want), "{json}\n  gave: {e}");
    }
}

#[test]
fn serving_refuses_anything_but_residual_steering() {
    let e = llama_cpp::export(&plan(&doc("ablate"), &spec()).unwrap(), &spec(), "a.gguf", "m.gguf").unwrap_err();
    assert!(
        e.starts_with("intervention 0 (zero) at 'blocks.0.attn.hook_z': 'zero' is not an addition"),
        "{e}"
    );
    let at0: Document = serde_json::from_str(&format!(
        r#"{{"version":1,"interventions":[{{"hook":"blocks.0.hook_resid_post","op":"add","vector":[{}]}}]}}"#,
        ["0.5"; 32].join(",")
    ))
    .unwrap();
    let p = plan(&at0, &spec()).unwrap();
    assert!(llama_cpp::export(&p, &spec(), "a.gguf", "m.gguf")
        .unwrap_err()
        .contains("llama.cpp rejects control-vector layer 0"));
    // vllm-lens hooks the output of layer 0 fine.
    let (body, _) = vllm_lens::request(&p, &spec(), &opts()).unwrap();
    assert!(body["vllm_xargs"]["apply_steering_vectors"]
        .as_str()
        .unwrap()
        .contains("\"layer_indices\":[0]"));
    let mut prompt_only = at0.clone();
    prompt_only.interventions[0].positions = scalpel_types::Positions::Named(scalpel_types::NamedPositions::Prompt);
    let e = vllm_lens::request(&plan(&prompt_only, &spec()).unwrap(), &spec(), &opts()).unwrap_err();
    assert!(e.contains("positions are not \"all\""), "{e}");
}
