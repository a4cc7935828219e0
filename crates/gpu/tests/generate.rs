//! Generation on the GPU against the CPU engine: seeded sampling (the GPU
//! sampler draws the engine `Sampler`'s uniform numbers, so a seed gives the
//! same tokens) and intervention documents lowered to GPU edits against the
//! same documents run as engine hooks (`scalpel_interventions::run`): the
//! same tokens and the same per-intervention application counts. On a tiny
//! random llama GGUF, and on the default model when it is present.

mod common;

use common::*;
use scalpel_engine::{GenerateOptions, Model, ModelSource, Precision};
use scalpel_gpu::{block_on, upload_edits, GenerateRequest, GpuModel, GpuModelOptions};
use scalpel_interventions::{parse, run, Interventions};

fn tiny() -> (Vec<u8>, Model) {
    let bytes = tiny_llama(&LlamaSpec::default()).bytes();
    let cpu = Model::load(
        "tiny.gguf",
        ModelSource::Gguf(&bytes),
        Precision::F32,
    )
    .unwrap();
    (bytes, cpu)
}

/// (tokens, applications per reported item) on the CPU engine.
fn cpu_run(
    cpu: &mut Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    doc: &str,
) -> (Vec<u32>, Vec<usize>) {
    let mut iv = Interventions::compile(cpu, &parse(doc).unwrap(), prompt.len()).unwrap();
    let g = run::generate(cpu, prompt, opts, &mut iv, &mut |_| true).unwrap();
    (g.ids, iv.report().iter().map(|r| r.applications).collect())
}

/// The same on the GPU: compiled by the CPU engine, lowered, run as GPU edits.
fn gpu_run(
    g: &mut GpuModel,
    cpu: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    doc: &str,
) -> (Vec<u32>, Vec<usize>) {
    let mut iv = Interventions::compile(cpu, &parse(doc).unwrap(), prompt.len()).unwrap();
    let specs = iv.lower(cpu).unwrap();
    let edits = upload_edits(g, &specs);
    let req = GenerateRequest {
        opts,
        stop: &[],
        edits: &edits,
        ahead: 4,
    };
    let out = block_on(g.generate(prompt, &req, |_| true)).unwrap();
    for c in out.calls {
        iv.count_applications(&specs, c);
    }
    (
        out.ids,
        iv.report().iter().map(|r| r.applications).collect(),
    )
}

fn literal(n: usize, phase: f32, scale: f32) -> String {
    let v: Vec<String> = (0..n)
        .map(|i| format!("{:.5}", ((i as f32) * 0.37 + phase).sin() * scale))
        .collect();
    format!("[{}]", v.join(","))
}

fn samplings() -> Vec<GenerateOptions> {
    let base = GenerateOptions {
        max_new_tokens: 12,
        stop_at_eos: false,
        ..Default::default()
    };
    vec![
        base.clone(),
        GenerateOptions {
            temperature: 0.9,
            seed: 3,
            ..base.clone()
        },
        GenerateOptions {
            temperature: 1.2,
            top_k: Some(20),
            top_p: Some(0.9),
            seed: 11,
            ..base.clone()
        },
        GenerateOptions {
            temperature: 0.7,
            top_p: Some(0.5),
            seed: 12345,
            ..base
        },
    ]
}

#[test]
fn tiny_sampled_generation_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let (bytes, cpu) = tiny();
    let mut g = GpuModel::from_gguf(gpu, "tiny.gguf", &bytes, &GpuModelOptions::default()).unwrap();
    let prompt = [5u32, 200, 17, 33, 258, 99];
    for opts in samplings() {
        let want = scalpel_engine::generate(&cpu, &prompt, &opts, None, &mut |_| true).unwrap();
        for ahead in [1, 5] {
            let req = GenerateRequest {
                opts: &opts,
                stop: &[],
                edits: &[],
                ahead,
            };
            let got = block_on(g.generate(&prompt, &req, |_| true)).unwrap();
            assert_eq!(
                got.ids, want,
                "T {} top_k {:?} top_p {:?} seed {} ahead {ahead}",
                opts.temperature, opts.top_k, opts.top_p, opts.seed
            );
            assert_eq!(got.calls.len(), want.len());
        }
        eprintln!(
            "sampled T {} top_k {:?} top_p {:?} seed {}: {want:?} on both",
            opts.temperature, opts.top_k, opts.top_p, opts.seed
        );
    }
    // A stop id ends generation (kept, as on the CPU), mid-chain too.
    let opts = GenerateOptions {
        temperature: 0.9,
        seed: 3,
        max_new_tokens: 12,
        stop_at_eos: false,
        ..Default::default()
    };
    let full = scalpel_engine::generate(&cpu, &prompt, &opts, None, &mut |_| true).unwrap();
    let stop = [full[6]];
    let cut = full.iter().position(|t| *t == stop[0]).unwrap() + 1;
    let got = block_on(g.generate(
        &prompt,
        &GenerateRequest {
            opts: &opts,
            stop: &stop,
            edits: &[],
            ahead: 4,
        },
        |_| true,
    ))
    .unwrap();
    assert_eq!(got.ids, full[..cut].to_vec());
    assert_eq!(
        g.len(),
        prompt.len() + cut - 1,
        "cache rolled back to the inputs of the kept steps"
    );
}

#[test]
fn tiny_documents_on_gpu_match_engine_hooks() {
    let Some(gpu) = gpu() else { return };
    let (bytes, mut cpu) = tiny();
    let mut g = GpuModel::from_gguf(gpu, "tiny.gguf", &bytes, &GpuModelOptions::default()).unwrap();
    let tok = cpu.tokenizer().clone();
    let prompt = tok.encode("abcdefg").unwrap();
    let source = "gfedcba";
    assert_eq!(
        tok.encode(source).unwrap().len(),
        prompt.len(),
        "patch source and prompt need equal token counts"
    );
    let d = 64;
    let items = [
        format!(r#"{{"hook":"blocks.0.hook_resid_pre","op":"add","vector":{},"scale":3}}"#, literal(d, 0.0, 1.0)),
        r#"{"hook":"blocks.*.attn.hook_z","op":"scale","factor":0.3,"heads":[1,3]}"#.to_string(),
        r#"{"hook":"blocks.1.mlp.hook_post","op":"zero","neurons":[3,4,5,90]}"#.to_string(),
        format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"project_out","direction":{},"positions":"prompt"}}"#, literal(d, 1.0, 1.0)),
        r#"{"hook":"blocks.0.hook_resid_mid","op":"mean","over":["hello world","the cat"],"positions":[2,3,5]}"#.to_string(),
        format!(r#"{{"hook":"blocks.0.hook_attn_out","op":"patch","source":"{source}","positions":[1,2]}}"#),
        format!(r#"{{"hook":"blocks.1.ln2.hook_normalized","op":"set_projection","direction":{},"value":2.0,"positions":"generated"}}"#, literal(d, 2.0, 1.0)),
        format!(r#"{{"hook":"blocks.0.attn.hook_z","op":"add","vector":{},"heads":[0,2],"neurons":[0,1,2,9]}}"#, literal(d, 3.0, 2.0)),
        format!(r#"{{"hook":"blocks.1.attn.hook_z","op":"project_out","direction":{},"heads":[2]}}"#, literal(16, 0.5, 1.0)),
        format!(r#"{{"hook":"blocks.1.hook_mlp_out","op":"add","vector":{},"positions":{{"start":-2,"end":9}}}}"#, literal(d, 4.0, 2.0)),
        // q/k/v (shared qkv rows on the GPU), rot_q, the gate and up pre-activations.
        format!(r#"{{"hook":"blocks.0.attn.hook_q","op":"add","vector":{},"heads":[3]}}"#, literal(16, 1.5, 3.0)),
        r#"{"hook":"blocks.*.attn.hook_k","op":"scale","factor":2.5,"heads":[1]}"#.to_string(),
        format!(r#"{{"hook":"blocks.1.attn.hook_v","op":"patch","source":"{source}","heads":[0],"positions":[0,1,2,3]}}"#),
        format!(r#"{{"hook":"blocks.0.attn.hook_rot_q","op":"project_out","direction":{}}}"#, literal(16, 2.5, 1.0)),
        r#"{"hook":"blocks.1.mlp.hook_pre","op":"zero","neurons":[1,2,3,50,51]}"#.to_string(),
        format!(r#"{{"hook":"blocks.0.mlp.hook_pre_linear","op":"add","vector":{},"scale":2}}"#, literal(128, 0.7, 1.0)),
    ];
    let mut docs: Vec<String> = items
        .iter()
        .map(|it| format!(r#"{{"version":1,"interventions":[{it}]}}"#))
        .collect();
    docs.push(format!(
        r#"{{"version":1,"interventions":[{}]}}"#,
        items.join(",")
    ));
    for (i, doc) in docs.iter().enumerate() {
        for opts in samplings().into_iter().take(3) {
            let (want, want_apps) = cpu_run(&mut cpu, &prompt, &opts, doc);
            let (got, got_apps) = gpu_run(&mut g, &cpu, &prompt, &opts, doc);
            assert_eq!(got, want, "document {i}, T {}: {doc}", opts.temperature);
            assert_eq!(got_apps, want_apps, "document {i}: application counts");
        }
        eprintln!("document {i}: tokens and application counts equal (greedy and 2 samplings)");
    }
    // Ops with no in-place form are named, so the caller can run the CPU engine.
    for (doc, what) in [
        (
            r#"{"hook":"blocks.0.attn.hook_attn_scores","op":"knockout","keys":[0]}"#,
            "intervention 0: op 'knockout'",
        ),
        (
            r#"{"hook":"blocks.0.hook_resid_pre","op":"mean"}"#,
            "intervention 0: op 'mean'",
        ),
        (
            r#"{"hook":"blocks.0.attn.hook_v","op":"kv_add","vector":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}"#,
            "op 'kv_add'",
        ),
        (
            r#"{"hook":"blocks.0.attn.hook_rot_k","op":"scale","factor":2}"#,
            "hook 'blocks.0.attn.hook_rot_k' is not on the GPU path",
        ),
    ] {
        let doc = format!(r#"{{"version":1,"interventions":[{doc}]}}"#);
        let iv = Interventions::compile(&cpu, &parse(&doc).unwrap(), prompt.len()).unwrap();
        let err = iv.lower(&cpu).unwrap_err();
        assert!(err.contains(what), "{err}");
    }
}

#[test]
fn default_model_steering_on_gpu_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let Some(bytes) = default_model() else { return };
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let mut cpu = Model::load(name, ModelSource::Gguf(&bytes), Precision::F32).unwrap();
    let prompt = cpu.tokenizer().encode("I think that you are").unwrap();
    let doc = r#"{"version":1,"interventions":[{"hook":"blocks.4.hook_resid_pre","op":"add","scale":5,
        "vector":{"from":"prompt_diff","plus":"I love you","minus":"I hate you"}}]}"#;
    for quantized in [false, true] {
        let mut g = GpuModel::from_gguf(
            gpu.clone(),
            name,
            &bytes,
            &GpuModelOptions {
                max_seq: 256,
                quantized,
            },
        )
        .unwrap();
        let greedy = GenerateOptions {
            max_new_tokens: 8,
            stop_at_eos: false,
            ..Default::default()
        };
        let sampled = GenerateOptions {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: 7,
            ..greedy.clone()
        };
        // Sampling reads the logits the same way at either precision (the
        // tiny model covers its settings): sampled once, on the quantized
        // weights, to spare the software adapter a third default-model run.
        let runs = if quantized { vec![greedy, sampled] } else { vec![greedy] };
        for opts in runs {
            let (want, want_apps) = cpu_run(&mut cpu, &prompt, &opts, doc);
            let (got, got_apps) = gpu_run(&mut g, &cpu, &prompt, &opts, doc);
            let base = scalpel_engine::generate(&cpu, &prompt, &opts, None, &mut |_| true).unwrap();
            eprintln!(
                "default model, {} weights, T {}: steered {:?} (CPU {:?}), unsteered CPU {:?}",
                if quantized { "quantized" } else { "f32" },
                opts.temperature,
                cpu.tokenizer().decode(&got),
                cpu.tokenizer().decode(&want),
                cpu.tokenizer().decode(&base)
            );
            assert_eq!(got, want);
            assert_eq!(got_apps, want_apps);
            assert_ne!(want, base, "the steering changes the output");
        }
    }
}
