//! The seed inputs of every target, written in the real formats at tiny
//! sizes: `fuzz/seeds/<target>/<name>`. Each is an input the target accepts
//! all the way (a model that loads, a document that compiles, …), so the
//! fuzzer starts from the deep paths; `tests/seeds.rs` checks that and writes
//! them (`cargo test -p scalpel-fuzzing --release --test seeds -- --ignored`).

use base64::Engine as _;
use scalpel_interventions::vectors::{write_control_vector, ControlVector};
use scalpel_testkit::{f32_bytes, safetensors_bytes, tiny_llama, vocab, Rng, StTensor, CHAT_TEMPLATE, ENDOFTEXT, IM_END};
use scalpel_web::state::{presets, Shared, StackItem, UiOp, VectorSpec};
use serde_json::json;

use crate::fixtures::{document_spec, hf_weights, llama_spec, GPT2_CONFIG, LLAMA_CONFIG};

/// One seed file.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: &'static str, bytes: impl Into<Vec<u8>>) -> Seed {
    Seed { target, name, bytes: bytes.into() }
}

/// `first`, 0xFF, `second`: the two-file input of `hf_config`, `sae` and `tokenizer_json`.
fn two_files(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = first.to_vec();
    out.push(0xFF);
    out.extend_from_slice(second);
    out
}

/// Every seed of every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = loader_seeds();
    out.extend(document_seeds());
    out.extend(link_state_seeds());
    out.extend(control_vector_seeds());
    out.extend(sae_seeds());
    out.extend(circuit_tracer_seeds());
    out.extend(tokenizer_seeds());
    out.extend(chat_template_seeds());
    out.extend(hf_index_seeds());
    out
}

fn loader_seeds() -> Vec<Seed> {
    let (gpt2, llama) = hf_weights();
    let select = |bit: u8, weights: &[u8]| [&[bit][..], weights].concat();
    vec![
        seed("gguf_load", "tiny.gguf", tiny_llama(&llama_spec()).bytes()),
        seed("safetensors_load", "gpt2.bin", select(0, gpt2)),
        seed("safetensors_load", "llama.bin", select(1, llama)),
        seed("hf_config", "gpt2.json", GPT2_CONFIG),
        seed("hf_config", "llama.json", LLAMA_CONFIG),
        seed(
            "hf_config",
            "gpt2_tokcfg.bin",
            two_files(GPT2_CONFIG.as_bytes(), br#"{"eos_token":"<|endoftext|>","chat_template":"{{ messages[0]['content'] }}"}"#),
        ),
    ]
}

/// A residual-stream vector of the document model (d_model values).
fn resid_vector(seed: u64) -> Vec<f32> {
    let d = document_spec().d_model;
    Rng::new(seed).vec(d, 1.0).iter().map(|x| (x * 100.0).round() / 100.0).collect()
}

/// One document per op (and the position, head and neuron selections),
/// each compiling for the document model and its prompt.
fn document_seeds() -> Vec<Seed> {
    let v = serde_json::to_string(&resid_vector(1)).expect("a vector serializes");
    let kv = serde_json::to_string(&Rng::new(2).vec(8, 0.5)).expect("a vector serializes");
    let doc = |items: &str| format!(r#"{{"version":1,"interventions":[{items}]}}"#);
    let docs: [(&str, String); 13] = [
        ("add_values.json", doc(&format!(r#"{{"hook":"blocks.1.hook_resid_pre","op":"add","vector":{v},"scale":2,"positions":[0,-1]}}"#))),
        ("add_prompt_diff.json", doc(r#"{"hook":"blocks.*.hook_resid_post","op":"add","vector":{"from":"prompt_diff","plus":"the cat","minus":"a hat","hook":"blocks.0.hook_resid_post"},"positions":"prompt"}"#)),
        ("add_mean_diff.json", doc(r#"{"hook":"blocks.0.hook_resid_mid","op":"add","vector":{"from":"mean_diff","positive":["in the","the cat"],"negative":["a hat"]},"positions":{"start":1,"end":3}}"#)),
        ("project_out_pca.json", doc(r#"{"hook":"blocks.1.hook_resid_post","op":"project_out","direction":{"from":"pca","positive":["the cat","in a"],"negative":["a hat","the er"],"center":true}}"#)),
        ("scale_neurons.json", doc(r#"{"hook":"blocks.0.mlp.hook_post","op":"scale","factor":0.5,"neurons":[0,3,31]}"#)),
        ("zero_heads.json", doc(r#"{"hook":"blocks.1.attn.hook_z","op":"zero","heads":[1],"positions":"generated"}"#)),
        ("mean_over.json", doc(r#"{"hook":"blocks.0.hook_attn_out","op":"mean","over":["in the","a cat"]},{"hook":"blocks.1.hook_mlp_out","op":"mean","enabled":false}"#)),
        ("patch.json", doc(r#"{"hook":"blocks.*.hook_resid_pre","op":"patch","source":"the hat in a","positions":[-1]}"#)),
        ("set_projection.json", doc(&format!(r#"{{"hook":"blocks.0.hook_resid_post","op":"set_projection","direction":{v},"value":1.5}},{{"hook":"blocks.1.hook_resid_post","op":"set_projection","direction":{v},"cap":0.5}}"#))),
        ("knockout.json", doc(r#"{"hook":"blocks.*.attn.hook_attn_scores","op":"knockout","positions":[-1],"keys":[1]},{"hook":"blocks.0.attn.hook_pattern","op":"knockout","heads":[0],"keys":"prompt"}"#)),
        ("kv_add_low_rank.json", doc(&format!(r#"{{"hook":"blocks.0.attn.hook_v","op":"kv_add","vector":{kv},"scale":0.5}},{{"hook":"blocks.1","op":"low_rank","matrix":"down","rank":2}}"#))),
        ("insert.json", doc(r#"{"op":"insert","text":" the","at_step":1},{"op":"insert","text":"er","after":" the","times":2}"#)),
        ("conditional.json", doc(&format!(r#"{{"hook":"blocks.1.hook_resid_post","op":"conditional","direction":{v},"threshold":0.1,"when":"below","backtrack":1,"then":[{{"hook":"blocks.1.hook_resid_post","op":"add","vector":{v},"scale":-1}}]}}"#))),
    ];
    docs.into_iter().map(|(name, json)| seed("document", name, json)).collect()
}

/// Link states as JSON (the target base64url-encodes its input for one of
/// its two decodes) and one as the fragment text itself.
fn link_state_seeds() -> Vec<Seed> {
    let json = |s: &Shared| serde_json::to_vec(s).expect("a state serializes");
    let mut stacked = Shared::default();
    let mut control = StackItem::new(1, UiOp::Add, 2);
    control.vector = VectorSpec::Control { name: "cv.gguf".into(), directions: vec![(0, vec![0.5, -1.0]), (1, vec![0.25, 2.0])] };
    let mut custom = StackItem::new(2, UiOp::Json, 2);
    custom.json = r#"{"hook":"blocks.0.hook_resid_pre","op":"zero"}"#.into();
    let mut sets = StackItem::new(3, UiOp::ProjectOut, 2);
    sets.vector = VectorSpec::Sets { positive: "good\nfine".into(), negative: "bad".into(), pca: true };
    sets.vector_layer = Some(1);
    let mut literal = StackItem::new(4, UiOp::Add, 2);
    literal.vector = VectorSpec::Literal { label: "sae 3".into(), values: vec![1.0, 0.0, -2.5] };
    literal.positions = "0, -1".into();
    stacked.stack = vec![control, custom, sets, literal, StackItem::new(5, UiOp::Zero, 2), StackItem::new(6, UiOp::Mean, 2)];
    stacked.model = Some(scalpel_web::protocol::ModelLocation::HfRepo { base: "https://huggingface.co/x/y/resolve/main/".into() });
    let presets = presets();
    let preset = |id: &str| &presets.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("preset '{id}'")).state;
    let fragment = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json(&Shared::default()));
    vec![
        seed("link_state", "default.json", json(&Shared::default())),
        seed("link_state", "stack.json", json(&stacked)),
        seed("link_state", "preset_love_hate.json", json(preset("love-hate"))),
        seed("link_state", "default_fragment.txt", fragment),
    ]
}

/// Control vectors for the document model: one direction per block, and a
/// file as repeng writes it with the layer count off by one (a warning).
fn control_vector_seeds() -> Vec<Seed> {
    let cv = |directions: Vec<(usize, Vec<f32>)>| {
        write_control_vector(&ControlVector { model_hint: Some("llama".into()), directions }).expect("a control vector writes")
    };
    vec![
        seed("control_vector", "two_layers.gguf", cv(vec![(0, resid_vector(3)), (1, resid_vector(4))])),
        seed("control_vector", "last_layer.gguf", cv(vec![(1, resid_vector(5))])),
    ]
}

/// SAELens SAEs for the document model: standard on the residual stream,
/// jumprelu on MLP neurons, topk on one head's `hook_z` (F16 weights).
fn sae_seeds() -> Vec<Seed> {
    let spec = document_spec();
    let d_head = spec.d_model / spec.n_heads;
    let file = |seed: u64, d_in: usize, d_sae: usize, jump: bool, f16: bool| {
        let mut rng = Rng::new(seed);
        let mut tensor = |name: &str, shape: Vec<usize>| {
            let values = rng.vec(shape.iter().product(), 0.5);
            let (dtype, data) = if f16 {
                let halves: Vec<u8> = values.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
                (safetensors::Dtype::F16, halves)
            } else {
                (safetensors::Dtype::F32, f32_bytes(&values))
            };
            StTensor { name: name.into(), shape, dtype, data }
        };
        let mut ts = vec![
            tensor("W_enc", vec![d_in, d_sae]),
            tensor("W_dec", vec![d_sae, d_in]),
            tensor("b_enc", vec![d_sae]),
            tensor("b_dec", vec![d_in]),
        ];
        if jump {
            ts.push(tensor("log_threshold", vec![d_sae]));
        }
        safetensors_bytes(&ts)
    };
    let standard = json!({"d_in": spec.d_model, "d_sae": 8, "hook_name": "blocks.1.hook_resid_post", "architecture": "standard",
        "normalize_activations": "constant_norm_rescale"});
    let jumprelu = json!({"metadata": {"hook_name": "blocks.0.mlp.hook_post"}, "d_in": spec.d_mlp, "d_sae": 8,
        "architecture": "jumprelu", "apply_b_dec_to_input": false, "normalize_activations": "layer_norm"});
    let topk = json!({"d_in": d_head, "d_sae": 4, "hook_name": "blocks.0.attn.hook_z", "hook_head_index": 1,
        "architecture": "topk", "activation_fn_kwargs": {"k": 2}});
    let cfg = |v: serde_json::Value| serde_json::to_vec(&v).expect("a cfg serializes");
    vec![
        seed("sae", "standard.bin", two_files(&cfg(standard), &file(11, spec.d_model, 8, false, false))),
        seed("sae", "jumprelu.bin", two_files(&cfg(jumprelu), &file(12, spec.d_mlp, 8, true, false))),
        seed("sae", "topk_head_f16.bin", two_files(&cfg(topk), &file(13, d_head, 4, false, true))),
    ]
}

/// circuit-tracer transcoders for the document model's layer 1 (its files'
/// layout, `W_enc [d_sae, d_in]`): a JumpReLU skip transcoder on the MLP
/// (`mlp.hook_in` -> `mlp.hook_out`), and a TopK one from `hook_resid_mid`
/// with `k` in config and file.
fn circuit_tracer_seeds() -> Vec<Seed> {
    let d = document_spec().d_model;
    let n = 8;
    let file = |seed: u64, jump: bool, skip: bool, k: Option<i64>| {
        let mut rng = Rng::new(seed);
        let mut tensor = |name: &str, shape: Vec<usize>| StTensor { name: name.into(), data: f32_bytes(&rng.vec(shape.iter().product(), 0.5)), shape, dtype: safetensors::Dtype::F32 };
        let mut ts = vec![tensor("W_enc", vec![n, d]), tensor("W_dec", vec![n, d]), tensor("b_enc", vec![n]), tensor("b_dec", vec![d])];
        if jump {
            ts.push(tensor("activation_function.threshold", vec![n]));
        }
        if skip {
            ts.push(tensor("W_skip", vec![d, d]));
        }
        if let Some(k) = k {
            ts.push(StTensor { name: "k".into(), shape: vec![], dtype: safetensors::Dtype::I64, data: k.to_le_bytes().to_vec() });
        }
        safetensors_bytes(&ts)
    };
    let mlp = "model_name: tiny\nmodel_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n";
    let topk = "model_kind: transcoder_set\nfeature_input_hook: \"hook_resid_mid\"\nfeature_output_hook: \"hook_mlp_out\"\nactivation: topk\nk: 3\ntranscoders:\n  - hf://o/r/layer_0.safetensors\n  - hf://o/r/layer_1.safetensors\n";
    vec![
        seed("circuit_tracer", "jumprelu_skip.bin", two_files(mlp.as_bytes(), &file(21, true, true, None))),
        seed("circuit_tracer", "topk_listed.bin", two_files(topk.as_bytes(), &file(22, false, false, Some(3)))),
    ]
}

/// The testkit's byte-level BPE `tokenizer.json`, alone and with a
/// `tokenizer_config.json` naming special tokens and a chat template.
fn tokenizer_seeds() -> Vec<Seed> {
    let json = scalpel_testkit::tokenizer_json();
    let (tokens, _) = vocab();
    let config = json!({"bos_token": tokens[ENDOFTEXT as usize], "eos_token": {"content": tokens[IM_END as usize]},
        "chat_template": CHAT_TEMPLATE});
    vec![
        seed("tokenizer_json", "bytelevel.json", json.clone()),
        seed("tokenizer_json", "bytelevel_config.bin", two_files(&json, &serde_json::to_vec(&config).expect("serializes"))),
    ]
}

/// Chat templates in the styles models ship: ChatML, one with a system
/// default and `raise_exception`, and one using namespaces and filters.
fn chat_template_seeds() -> Vec<Seed> {
    let checked = "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set system = 'You are helpful.' %}{% set rest = messages %}{% endif %}{{ bos_token }}<<SYS>>{{ system | trim }}<</SYS>>\n{% for m in rest %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] | trim }}{{ eos_token }}{% endif %}{% endfor %}";
    let namespaced = "{%- set ns = namespace(n=0) -%}{%- for m in messages -%}{%- set ns.n = ns.n + m.content | length -%}<|{{ m.role | upper }}|>{{ m.content | replace('<', '&lt;') }}{{ '\\n' if not loop.last }}{%- endfor -%}{%- if add_generation_prompt %}<|ASSISTANT|>{{ ns.n }}{% endif -%}";
    vec![
        seed("chat_template", "chatml.jinja", CHAT_TEMPLATE),
        seed("chat_template", "system_alternate.jinja", checked),
        seed("chat_template", "namespace_filters.jinja", namespaced),
    ]
}

/// A sharded checkpoint's index, as `transformers` writes it.
fn hf_index_seeds() -> Vec<Seed> {
    let index = json!({
        "metadata": {"total_size": 1234},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"
        }
    });
    vec![seed("hf_index", "two_shards.json", serde_json::to_vec_pretty(&index).expect("serializes"))]
}
