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

/// Counts the times compiling asks whether to stop; says stop from call `at` on.
struct CountingStop {
    calls: std::cell::Cell<usize>,
    at: usize,
}

impl CountingStop {
    fn new(at: usize) -> Self {
        CountingStop { calls: std::cell::Cell::new(0), at }
    }
    fn ask(&self) -> bool {
        self.calls.set(self.calls.get() + 1);
        self.calls.get() >= self.at
    }
}

fn doc_of(items: &[String]) -> scalpel_interventions::Document {
    let doc = format!(r#"{{"version":1,"interventions":[{}]}}"#, items.join(","));
    parse(&doc).unwrap_or_else(|e| panic!("does not parse: {e}"))
}

#[test]
fn compiling_runs_each_prompt_once_and_can_be_stopped() {
    let spec = LlamaSpec { n_layers: 3, ..LlamaSpec::default() };
    let model = load_gguf(&tiny_llama(&spec).bytes()).unwrap();
    let saes = Default::default();
    let prompts = r#"["a b c", "d e", "f g h i"]"#;
    let cases = [
        // A mean over 3 prompts at every layer: 3 forward passes, not 3 per layer.
        (format!(r#"{{"hook":"blocks.*.hook_resid_post","op":"mean","over":{prompts}}}"#), 3),
        (format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{{"from":"mean_diff","positive":{prompts},"negative":["x y"]}}}}"#), 4),
        (format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{{"from":"pca","positive":{prompts},"negative":["x y","z","w v"]}}}}"#), 6),
        (r#"{"hook":"blocks.*.hook_resid_post","op":"patch","source":"p q r s"}"#.to_string(), 1),
    ];
    // The running prompt has the patch source's length, so patching is legal.
    let prompt_len = model.tokenizer().encode("p q r s").unwrap().len();
    for (item, passes) in &cases {
        let doc = doc_of(std::slice::from_ref(item));
        // Never stopped: one question per item and one per forward pass.
        let never = CountingStop::new(usize::MAX);
        Interventions::compile_until(&model, &doc, prompt_len, &saes, &|| never.ask()).unwrap_or_else(|e| panic!("{item}: {e}"));
        assert_eq!(never.calls.get(), 1 + passes, "{item}: forward passes");
        // Stopped before the last pass: the error is exactly STOPPED, not a failure.
        let stop = CountingStop::new(*passes);
        let err = Interventions::compile_until(&model, &doc, prompt_len, &saes, &|| stop.ask()).err().expect("stopped");
        assert_eq!(err, scalpel_interventions::STOPPED, "{item}");
        assert!(stop.calls.get() <= passes + 1, "{item}: kept running after the stop ({} questions)", stop.calls.get());
    }
}

#[test]
fn prompt_sets_are_capped_when_parsed() {
    let set = |n: usize| serde_json::to_string(&(0..n).map(|i| format!("prompt {i}")).collect::<Vec<_>>()).unwrap();
    let big = format!(r#"{{"version":1,"interventions":[{{"hook":"blocks.0.hook_resid_post","op":"mean","over":{}}}]}}"#, set(257));
    let err = parse(&big).expect_err("257 prompts refused");
    assert!(err.contains("intervention 0") && err.contains("'over'") && err.contains("257") && err.contains("256"), "{err}");
    let nested = format!(
        r#"{{"version":1,"interventions":[{{"hook":"blocks.0.hook_resid_post","op":"conditional","direction":[1],"threshold":0,"then":[{{"hook":"blocks.0.hook_resid_post","op":"add","vector":{{"from":"mean_diff","positive":{},"negative":["a"]}}}}]}}]}}"#,
        set(300)
    );
    let err = parse(&nested).expect_err("300 prompts refused");
    assert!(err.contains("intervention 0.then.0") && err.contains("'vector.positive'"), "{err}");
    // Each set under the cap, but five of them ask for 5 × 256 runs.
    let item = format!(r#"{{"hook":"blocks.0.hook_resid_post","op":"add","vector":{{"from":"mean_diff","positive":{},"negative":{}}}}}"#, set(128), set(128));
    let many = format!(r#"{{"version":1,"interventions":[{}]}}"#, vec![item.clone(); 5].join(","));
    let err = parse(&many).expect_err("1280 runs refused");
    assert!(err.contains("1280 prompt runs") && err.contains("1024"), "{err}");
    let four = format!(r#"{{"version":1,"interventions":[{}]}}"#, vec![item; 4].join(","));
    parse(&four).expect("1024 runs are accepted");
}
