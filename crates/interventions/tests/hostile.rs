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
    // Each item's prompt sets, by size: every prompt runs once (a mean over
    // 3 prompts at every layer is 3 forward passes, not 3 per layer).
    let cases = [
        (format!(r#"{{"hook":"blocks.*.hook_resid_post","op":"mean","over":{prompts}}}"#), vec![3]),
        (format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{{"from":"mean_diff","positive":{prompts},"negative":["x y"]}}}}"#), vec![3, 1]),
        (format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{{"from":"pca","positive":{prompts},"negative":["x y","z","w v"]}}}}"#), vec![3, 3]),
        (r#"{"hook":"blocks.*.hook_resid_post","op":"patch","source":"p q r s"}"#.to_string(), vec![1]),
    ];
    // The running prompt has the patch source's length, so patching is legal.
    let prompt_len = model.tokenizer().encode("p q r s").unwrap().len();
    // A set's prompts run `pass_threads` at once (natively, one per
    // thread); `stop` is asked before each such group.
    let group = scalpel_engine::pass_threads();
    for (item, sets) in &cases {
        let groups: usize = sets.iter().map(|&n: &usize| n.div_ceil(group)).sum();
        let doc = doc_of(std::slice::from_ref(item));
        // Never stopped: one question per item and one per group of passes.
        let never = CountingStop::new(usize::MAX);
        Interventions::compile_until(&model, &doc, prompt_len, &saes, &|| never.ask()).unwrap_or_else(|e| panic!("{item}: {e}"));
        assert_eq!(never.calls.get(), 1 + groups, "{item}: questions ({group} passes at once)");
        // Stopped before the last group: the error is exactly STOPPED, not a failure.
        let stop = CountingStop::new(groups);
        let err = Interventions::compile_until(&model, &doc, prompt_len, &saes, &|| stop.ask()).err().expect("stopped");
        assert_eq!(err, scalpel_interventions::STOPPED, "{item}");
        assert!(stop.calls.get() <= groups + 1, "{item}: kept running after the stop ({} questions)", stop.calls.get());
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

/// Issue 11, reports: a cache edit and a weight edit are reported once per
/// item, as what they edited (they change no hook value, so a count of hook
/// calls would say 0); hook edits are counted; an item that changed
/// nothing is a warning.
#[test]
fn reports_say_what_each_item_did() {
    let bytes = tiny_llama(&LlamaSpec::default()).bytes();
    let mut model = load_gguf(&bytes).unwrap();
    let d = model.config.d_model;
    let v = format!("[{}]", vec!["0.5"; d / model.config.n_heads * model.config.n_kv_heads].join(","));
    let r = format!("[{}]", vec!["0.25"; d].join(","));
    let doc = format!(
        r#"{{"version":1,"interventions":[
        {{"hook":"blocks.*.attn.hook_rot_k","op":"kv_add","vector":{v},"scale":1.0,"positions":[0,1,2]}},
        {{"hook":"blocks.1","op":"low_rank","matrix":"up","rank":2}},
        {{"hook":"blocks.0.hook_resid_post","op":"add","vector":{r},"scale":2.0,"positions":"all"}},
        {{"hook":"blocks.0.hook_resid_post","op":"add","vector":{r},"scale":2.0,"positions":[60]}}]}}"#
    );
    let prompt = [1u32, 2, 3, 4];
    let mut iv = Interventions::compile(&model, &parse(&doc).unwrap(), prompt.len()).unwrap();
    let opts = scalpel_engine::GenerateOptions { max_new_tokens: 3, stop_at_eos: false, ..Default::default() };
    scalpel_interventions::run::generate(&mut model, &prompt, &opts, &mut iv, &mut |_| true).unwrap();
    let report = iv.report();
    assert_eq!(report.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2, 3], "one line per item: {report:?}");
    let kv = &report[0];
    assert_eq!(kv.op, "kv_add");
    assert_eq!(kv.edited.as_deref(), Some("keys at 3 cached position(s) of layer 0, 1"), "{kv:?}");
    assert_eq!(kv.hooks, ["blocks.0.attn.hook_rot_k", "blocks.1.attn.hook_rot_k"]);
    assert_eq!(kv.applications, 2, "one edit per layer");
    let lr = &report[1];
    assert_eq!((lr.op.as_str(), lr.edited.as_deref()), ("low_rank", Some("Up weight cut to rank 2 of layer 1")), "{lr:?}");
    // The prompt runs as two passes (kv_add edits the prefix's cache before
    // the last prompt token runs), then 2 decode passes (the last sampled
    // token is not run): 4 hook calls changed.
    assert_eq!((report[2].applications, report[2].edited.as_deref()), (4, None), "{:?}", report[2]);
    assert_eq!(report[3].applications, 0);
    let warnings = iv.run_warnings();
    assert_eq!(
        warnings,
        ["intervention 3: 'add' changed nothing (its positions, heads or condition never matched)"],
        "only the idle item warns"
    );
}
