//! Documents a hostile link can carry: each is refused at compile time with
//! a message naming the item and field, quickly and without allocating in
//! proportion to the numbers it names.

use std::time::Instant;

use scalpel_interventions::{parse, Interventions};
use scalpel_testkit::{load_gguf, tiny_llama, LlamaSpec};

fn compile_err(doc: &str, prompt_len: usize) -> String {
    let bytes = tiny_llama(&LlamaSpec::default()).bytes();
    let model = load_gguf(&bytes).unwrap();
    let doc = parse(doc).unwrap_or_else(|e| panic!("{doc}: does not parse: {e}"));
    let t = Instant::now();
    let err = match Interventions::compile(&model, &doc, prompt_len) {
        Ok(_) => panic!("{doc:?}: compiled, but it names positions outside the context"),
        Err(e) => e,
    };
    // Not a timing test: a range expanded to 4e9 entries would take minutes
    // and 32+ GB, so finishing at all is the assertion; the bound is loose.
    assert!(t.elapsed().as_secs() < 30, "compiling took {:?}", t.elapsed());
    err
}

#[test]
fn position_ranges_past_the_context_are_refused_not_expanded() {
    let cases = [
        (r#"{"hook":"blocks.0.hook_resid_post","op":"zero","positions":{"start":0,"end":4000000000}}"#, "range end 4000000000"),
        (r#"{"hook":"blocks.0.hook_resid_post","op":"zero","positions":{"start":3999999999,"end":4000000000}}"#, "position 3999999999"),
        (r#"{"hook":"blocks.0.hook_resid_post","op":"zero","positions":[0, 5000]}"#, "position 5000"),
        (r#"{"hook":"blocks.0.attn.hook_attn_scores","op":"knockout","keys":{"start":0,"end":4000000000}}"#, "range end 4000000000"),
        (r#"{"hook":"blocks.0.hook_resid_post","op":"zero","positions":{"start":-9223372036854775807,"end":1}}"#, "before the start"),
    ];
    for (item, want) in cases {
        let doc = format!(r#"{{"version":1,"interventions":[{item}]}}"#);
        let err = compile_err(&doc, 4);
        assert!(err.contains("intervention 0") && err.contains(want), "{item}: {err}");
    }
}

#[test]
fn a_range_inside_the_context_still_selects_every_position() {
    let bytes = tiny_llama(&LlamaSpec::default()).bytes();
    let model = load_gguf(&bytes).unwrap();
    let n_ctx = model.config.n_ctx;
    // The whole context, as a range: accepted, and (zeroing the residual
    // stream everywhere) it changes the logits like `positions: "all"`.
    let ranged = format!(r#"{{"version":1,"interventions":[{{"hook":"blocks.0.hook_resid_post","op":"zero","positions":{{"start":0,"end":{n_ctx}}}}}]}}"#);
    let all = r#"{"version":1,"interventions":[{"hook":"blocks.0.hook_resid_post","op":"zero"}]}"#;
    let ids = [1u32, 2, 3, 4];
    let logits = |doc: &str| -> Vec<f32> {
        let mut m = load_gguf(&bytes).unwrap();
        let mut iv = Interventions::compile(&m, &parse(doc).unwrap(), ids.len()).unwrap();
        scalpel_interventions::run::logits(&mut m, &ids, &mut iv).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    };
    assert_eq!(logits(&ranged), logits(all));
}
