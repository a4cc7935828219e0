//! Bad input (issue 2, "Bad input"): every corrupt, truncated or hostile
//! model file and every bad prompt gives an `Err` whose message names the file
//! and the problem. Never a panic, a hang, or an allocation sized by an
//! unchecked header field.


use std::time::{Duration, Instant};

use scalpel_testkit::*;
use scalpel_engine::{
    generate, Device, GenerateOptions, KvCache, Logits, Model, ModelSource, Precision, Tensor, Tokenizer,
};

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Loads `bytes` as GGUF and returns the error message; fails the test on a
/// panic or on success.
fn gguf_err(case: &str, bytes: Vec<u8>) -> String {
    match no_panic(|| load_gguf(&bytes)) {
        Err(p) => panic!("{case}: Model::load PANICKED: {p}"),
        Ok(Ok(_)) => panic!("{case}: loaded, but it should have been rejected"),
        Ok(Err(e)) => e.to_string(),
    }
}

/// The message names the file and contains one of `keywords` (case-insensitive).
fn assert_msg(case: &str, msg: &str, file: &str, keywords: &[&str]) {
    assert!(msg.contains(file), "{case}: message does not name '{file}': {msg}");
    let low = msg.to_lowercase();
    assert!(
        keywords.iter().any(|k| low.contains(&k.to_lowercase())),
        "{case}: message does not say what is wrong (wanted one of {keywords:?}): {msg}"
    );
}

fn gguf_rejects(case: &str, g: &Gguf, keywords: &[&str]) -> String {
    let msg = gguf_err(case, g.bytes());
    assert_msg(case, &msg, GGUF_NAME, keywords);
    msg
}

fn base() -> Gguf {
    tiny_llama(&LlamaSpec::default())
}

/// Named cases, each a closure that must not panic.
type Cases<'a> = Vec<(&'a str, Box<dyn FnOnce()>)>;

/// Runs several independent cases, collecting every failure (panic or
/// assertion) before failing, so one bug does not hide the others.
fn cases(list: Cases) {
    let mut failures = Vec::new();
    for (name, f) in list {
        if let Err(p) = no_panic(f) {
            failures.push(format!("[{name}] {p}"));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

fn case(name: &'static str, f: impl FnOnce() + 'static) -> (&'static str, Box<dyn FnOnce()>) {
    (name, Box::new(f))
}

fn input_err(case: &str, r: scalpel_engine::Result<impl Sized>, keywords: &[&str]) -> String {
    let msg = match r {
        Ok(_) => panic!("{case}: accepted, but it should have been rejected"),
        Err(e) => e.to_string(),
    };
    let low = msg.to_lowercase();
    assert!(
        keywords.iter().any(|k| low.contains(&k.to_lowercase())),
        "{case}: message does not say what is wrong (wanted one of {keywords:?}): {msg}"
    );
    msg
}

// ---------------------------------------------------------------------------
// the good files work
// ---------------------------------------------------------------------------

#[test]
fn tiny_models_load_and_run() {
    let m = tiny_model();
    assert_eq!(m.config.n_layers, 2);
    assert_eq!(m.config.d_model, 64);
    assert_eq!(m.config.n_kv_heads, 2);
    assert_eq!(m.config.d_vocab, VOCAB);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let ids = m.tokenizer().encode("in the cat <|im_start|>").unwrap();
    assert!(ids.contains(&IM_START), "control token matched whole: {ids:?}");
    assert!(ids.contains(&259), "'Ġthe' merge used: {ids:?}");
    assert_eq!(m.tokenizer().decode(&ids), "in the cat <|im_start|>");
    let logits = m.logits(&ids).unwrap();
    assert_eq!(logits.dims(), &[ids.len(), VOCAB]);
    let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    let chat = m.tokenizer().apply_chat_template(&[("user", "hi")], true).unwrap();
    assert_eq!(chat, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    let out = generate(&m, &ids, &GenerateOptions { max_new_tokens: 4, ..Default::default() }, None, &mut |_| true)
        .unwrap();
    assert!(!out.is_empty() && out.len() <= 4);

    // Quantized precision and a tied unembedding load too.
    let spec = LlamaSpec { tied: true, ..Default::default() };
    let q = Model::load(GGUF_NAME, ModelSource::Gguf(&tiny_llama(&spec).bytes()), Precision::Quantized).unwrap();
    q.logits(&ids).unwrap();
    // GGUF v2 has the same layout.
    let mut g = base();
    g.version = 2;
    load_gguf(&g.bytes()).unwrap().logits(&[1, 2]).unwrap();

    // Hugging Face GPT-2 (with and without the "transformer." prefix) and llama.
    let g2 = tiny_gpt2();
    assert_eq!(g2.logits(&[1, 2, 3]).unwrap().dims(), &[3, VOCAB]);
    let p = HfFiles::gpt2(&Gpt2Spec { prefix: true, ..Default::default() }).load().unwrap();
    p.logits(&[1, 2, 3]).unwrap();
    HfFiles::llama(&LlamaSpec::default()).load().unwrap().logits(&[4, 5]).unwrap();
}

// ---------------------------------------------------------------------------
// GGUF: magic, version, truncation
// ---------------------------------------------------------------------------

#[test]
fn gguf_wrong_magic() {
    let mut g = base();
    g.magic = *b"GGUX";
    gguf_rejects("magic GGUX", &g, &["magic", "not a gguf"]);
    gguf_err("empty file", Vec::new());
    assert_msg("empty file", &gguf_err("empty file", Vec::new()), GGUF_NAME, &["truncated", "magic"]);
    let st = safetensors_bytes(&gpt2_tensors(&Gpt2Spec::default()));
    assert_msg("safetensors as gguf", &gguf_err("safetensors as gguf", st), GGUF_NAME, &["magic"]);
}

#[test]
fn gguf_bad_versions() {
    for v in [0, 1, 4, 99, u32::MAX] {
        let mut g = base();
        g.version = v;
        let msg = gguf_rejects(&format!("version {v}"), &g, &["version"]);
        assert!(msg.contains(&v.to_string()), "{msg}");
    }
}

#[test]
fn gguf_truncated_everywhere() {
    let w = base().write();
    let len = w.bytes.len();
    let mut cuts: Vec<usize> = (0..w.data_start).step_by(7).collect();
    cuts.extend([w.infos_start - 1, w.infos_start, w.infos_start + 1, w.data_start - 1, w.data_start, w.data_start + 1]);
    let mut rng = Rng::new(11);
    for _ in 0..60 {
        cuts.push(w.data_start + rng.below(len - w.data_start));
    }
    cuts.push(len - 1);
    let keywords = ["truncated", "exceeds", "more than the file can hold", "outside"];
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for &cut in &cuts {
        let case = format!("truncated at {cut} of {len}");
        match no_panic(|| load_gguf(&w.bytes[..cut])) {
            Err(p) => failures.push(format!("{case}: PANIC {p}")),
            Ok(Ok(_)) => failures.push(format!("{case}: loaded")),
            Ok(Err(e)) => {
                let msg = e.to_string();
                let low = msg.to_lowercase();
                if !msg.contains(GGUF_NAME) || !keywords.iter().any(|k| low.contains(k)) {
                    failures.push(format!("{case}: unclear message: {msg}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cuts failed:\n{}", failures.len(), cuts.len(), failures.join("\n"));
    eprintln!("{} truncations rejected in {:?}", cuts.len(), t0.elapsed());
}

// ---------------------------------------------------------------------------
// GGUF: absurd header fields
// ---------------------------------------------------------------------------

const HUGE: u64 = 1 << 60;

#[test]
fn gguf_absurd_counts_and_lengths() {
    cases(vec![
        case("tensor count 2^60", || {
            let mut g = base();
            g.tensor_count = Some(HUGE);
            gguf_rejects("tensor count", &g, &["tensors"]);
        }),
        case("tensor count u64::MAX", || {
            let mut g = base();
            g.tensor_count = Some(u64::MAX);
            gguf_rejects("tensor count", &g, &["tensors"]);
        }),
        case("metadata count 2^60", || {
            let mut g = base();
            g.kv_count = Some(HUGE);
            gguf_rejects("kv count", &g, &["metadata"]);
        }),
        case("metadata count one too many", || {
            let mut g = base();
            g.kv_count = Some(g.meta.len() as u64 + 1);
            gguf_err("kv count + 1", g.bytes());
        }),
        case("string value length 2^60", || {
            let mut g = base();
            let mut raw = HUGE.to_le_bytes().to_vec();
            raw.extend_from_slice(b"llama");
            g.set("general.architecture", Meta::Raw(8, raw));
            let msg = gguf_rejects("string length", &g, &["string length"]);
            assert!(msg.contains("general.architecture"), "{msg}");
        }),
        case("key length 2^60", || {
            let mut b = base().bytes();
            b[24..32].copy_from_slice(&HUGE.to_le_bytes());
            assert_msg("key length", &gguf_err("key length", b), GGUF_NAME, &["string length"]);
        }),
        case("tensor name length 2^60", || {
            let w = base().write();
            let mut b = w.bytes;
            b[w.infos_start..w.infos_start + 8].copy_from_slice(&HUGE.to_le_bytes());
            assert_msg("name length", &gguf_err("name length", b), GGUF_NAME, &["string length"]);
        }),
        case("string array count 2^60", || {
            let mut g = base();
            let mut raw = 8u32.to_le_bytes().to_vec();
            raw.extend(HUGE.to_le_bytes());
            g.set("tokenizer.ggml.tokens", Meta::Raw(9, raw));
            let msg = gguf_rejects("array count", &g, &["array claims"]);
            assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");
        }),
        case("u8 array count 2^60", || {
            let mut g = base();
            let mut raw = 0u32.to_le_bytes().to_vec();
            raw.extend(HUGE.to_le_bytes());
            g.set("x.bytes", Meta::Raw(9, raw));
            gguf_rejects("u8 array count", &g, &["array claims"]);
        }),
        case("nested array count 2^60", || {
            let mut g = base();
            let mut raw = 9u32.to_le_bytes().to_vec();
            raw.extend(1u64.to_le_bytes());
            raw.extend(4u32.to_le_bytes());
            raw.extend(HUGE.to_le_bytes());
            g.set("x.nested", Meta::Raw(9, raw));
            gguf_rejects("nested array count", &g, &["array claims"]);
        }),
        case("arrays nested 3 deep", || {
            let mut g = base();
            let inner = Meta::Array(9, vec![Meta::Array(4, vec![Meta::U32(1)])]);
            g.set("x.deep", Meta::Array(9, vec![inner]));
            gguf_rejects("deep arrays", &g, &["nested"]);
        }),
        case("unknown metadata type 13", || {
            let mut g = base();
            g.set("x.weird", Meta::Raw(13, vec![0; 8]));
            gguf_rejects("value type 13", &g, &["unknown value type 13"]);
        }),
        case("unknown array element type 77", || {
            let mut g = base();
            let mut raw = 77u32.to_le_bytes().to_vec();
            raw.extend(1u64.to_le_bytes());
            g.set("x.weird", Meta::Raw(9, raw));
            gguf_rejects("element type 77", &g, &["element type 77"]);
        }),
        case("bool byte 2", || {
            let mut g = base();
            g.set("tokenizer.ggml.add_bos_token", Meta::Raw(7, vec![2]));
            gguf_rejects("bool 2", &g, &["bool"]);
        }),
        case("invalid UTF-8 string", || {
            let mut g = base();
            let mut raw = 2u64.to_le_bytes().to_vec();
            raw.extend([0xff, 0xfe]);
            g.set("general.name", Meta::Raw(8, raw));
            gguf_rejects("utf8", &g, &["utf-8"]);
        }),
    ]);
}

#[test]
fn gguf_bad_tensor_infos() {
    const Q: &str = "blk.0.attn_q.weight";
    cases(vec![
        case("n_dims 9", || {
            let mut g = base();
            g.tensor_mut("output_norm.weight").ne = vec![1; 9];
            gguf_rejects("n_dims 9", &g, &["dimensions"]);
        }),
        case("n_dims 0", || {
            let mut g = base();
            g.tensor_mut("output_norm.weight").ne = vec![];
            gguf_rejects("n_dims 0", &g, &["dimensions"]);
        }),
        case("n_dims u32::MAX", || {
            let w = base().write();
            let mut b = w.bytes;
            // First tensor info: name (8 + len) then n_dims.
            let name_len = u64::from_le_bytes(b[w.infos_start..w.infos_start + 8].try_into().unwrap()) as usize;
            let p = w.infos_start + 8 + name_len;
            b[p..p + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_msg("n_dims max", &gguf_err("n_dims max", b), GGUF_NAME, &["dimensions"]);
        }),
        case("dims product overflows u64", || {
            let mut g = base();
            g.tensor_mut(Q).ne = vec![1 << 32, 1 << 32, 2];
            gguf_rejects("overflow", &g, &["absurd"]);
        }),
        case("dims product 2^40 (no overflow, absurd)", || {
            let mut g = base();
            g.tensor_mut(Q).ne = vec![64, 1 << 34];
            gguf_rejects("2^40 elems", &g, &["absurd", "outside"]);
        }),
        case("dim u64::MAX", || {
            let mut g = base();
            g.tensor_mut(Q).ne = vec![64, u64::MAX];
            gguf_rejects("u64::MAX dim", &g, &["absurd"]);
        }),
        case("unknown tensor type 99", || {
            let mut g = base();
            g.tensor_mut(Q).ty = 99;
            let msg = gguf_rejects("type 99", &g, &["unknown tensor type 99"]);
            assert!(msg.contains(Q), "{msg}");
        }),
        case("IQ type 16 (IQ2_XXS)", || {
            let mut g = base();
            g.tensor_mut(Q).ty = 16;
            let msg = gguf_rejects("type 16", &g, &["not supported"]);
            assert!(msg.contains("16") && msg.contains(Q), "{msg}");
        }),
        case("row width not a multiple of the block size", || {
            let mut g = base();
            let t = g.tensor_mut("output_norm.weight");
            t.ty = 8; // Q8_0, block 32
            t.ne = vec![48];
            gguf_rejects("block size", &g, &["block size"]);
        }),
        case("offset past the end", || {
            let mut g = base();
            g.tensor_mut(Q).offset = Some(1 << 40);
            gguf_rejects("offset 2^40", &g, &["outside"]);
        }),
        case("offset u64::MAX (aligned)", || {
            let mut g = base();
            g.tensor_mut(Q).offset = Some(!31);
            gguf_rejects("offset max", &g, &["outside"]);
        }),
        case("last tensor's data runs past the end", || {
            let mut g = base();
            let last = g.tensors.last().unwrap().name.clone();
            let t = g.tensor_mut(&last);
            t.data.truncate(t.data.len() - 4);
            gguf_rejects("short data", &g, &["outside"]);
        }),
        case("misaligned offset", || {
            let mut g = base();
            g.tensor_mut(Q).offset = Some(36);
            gguf_rejects("misaligned", &g, &["aligned"]);
        }),
        case("duplicate tensor", || {
            let mut g = base();
            let dup = g.tensor_mut("output_norm.weight").clone();
            g.tensors.push(dup);
            gguf_rejects("duplicate", &g, &["twice", "duplicate"]);
        }),
        case("missing tensor", || {
            let mut g = base();
            g.remove_tensor("blk.1.ffn_down.weight");
            let msg = gguf_rejects("missing", &g, &["missing tensor"]);
            assert!(msg.contains("blk.1.ffn_down.weight"), "{msg}");
        }),
        case("missing token_embd", || {
            let mut g = base();
            g.remove_tensor("token_embd.weight");
            gguf_rejects("missing token_embd", &g, &["missing tensor"]);
        }),
        case("alignment 3", || {
            let mut g = base();
            g.set("general.alignment", Meta::U32(3));
            gguf_rejects("alignment 3", &g, &["power of two"]);
        }),
        case("alignment 0", || {
            let mut g = base();
            g.set("general.alignment", Meta::U32(0));
            gguf_rejects("alignment 0", &g, &["power of two"]);
        }),
        case("alignment 2^40", || {
            let mut g = base();
            g.set("general.alignment", Meta::U64(1 << 40));
            gguf_rejects("alignment 2^40", &g, &["power of two"]);
        }),
    ]);
}

#[test]
fn gguf_shape_mismatch() {
    /// Gives tensor `name` GGUF dims `ne` with matching random data.
    fn reshape(name: &str, ne: &[u64]) -> Gguf {
        let mut g = base();
        let n: u64 = ne.iter().product();
        let t = g.tensor_mut(name);
        t.ne = ne.to_vec();
        t.data = f32_bytes(&Rng::new(5).vec(n as usize, 0.1));
        g
    }
    let one = |name: &'static str, ne: &'static [u64]| {
        (name, Box::new(move || {
            let msg = gguf_rejects(name, &reshape(name, ne), &["shape"]);
            assert!(msg.contains(name), "{msg}");
        }) as Box<dyn FnOnce()>)
    };
    cases(vec![
        one("blk.0.ffn_up.weight", &[64, 96]),
        one("blk.0.ffn_down.weight", &[64, 128]),
        one("token_embd.weight", &[32, VOCAB as u64]),
        one("output.weight", &[64, 100]),
        one("output_norm.weight", &[64, 2]),
        one("blk.1.attn_norm.weight", &[32]),
        // Q and K rows are reordered at load (RoPE un-permutation): the
        // reordering must not run on a tensor of the wrong shape.
        one("blk.0.attn_q.weight", &[64, 32]),
        one("blk.0.attn_q.weight", &[64, 128]),
        one("blk.0.attn_q.weight", &[4096]),
        one("blk.0.attn_q.weight", &[32, 64]),
        one("blk.0.attn_k.weight", &[64, 16]),
        one("blk.1.attn_k.weight", &[64, 64]),
        one("blk.0.attn_v.weight", &[64, 64]),
    ]);
}

// ---------------------------------------------------------------------------
// GGUF: unsupported or absurd configuration
// ---------------------------------------------------------------------------

#[test]
fn gguf_bad_config() {
    fn with(key: &'static str, v: Meta, keywords: &'static [&'static str]) -> (&'static str, Box<dyn FnOnce()>) {
        (key, Box::new(move || {
            let mut g = base();
            g.set(key, v);
            gguf_rejects(key, &g, keywords);
        }))
    }
    fn without(key: &'static str, keywords: &'static [&'static str]) -> (&'static str, Box<dyn FnOnce()>) {
        (key, Box::new(move || {
            let mut g = base();
            g.remove(key);
            let msg = gguf_rejects(key, &g, keywords);
            assert!(msg.contains(key) || keywords.iter().any(|k| msg.contains(k)), "{msg}");
        }))
    }
    cases(vec![
        with("general.architecture", Meta::str("bert"), &["architecture 'bert'"]),
        with("general.architecture", Meta::str("gpt2"), &["architecture 'gpt2'"]),
        with("general.architecture", Meta::U32(1), &["not a string"]),
        without("general.architecture", &["general.architecture"]),
        with("llama.block_count", Meta::U32(1_000_000_000), &["n_layers"]),
        with("llama.block_count", Meta::U64(u64::MAX), &["n_layers"]),
        with("llama.block_count", Meta::U32(0), &["n_layers"]),
        with("llama.block_count", Meta::str("two"), &["integer"]),
        with("llama.block_count", Meta::I32(-2), &["integer"]),
        without("llama.block_count", &["llama.block_count"]),
        with("llama.attention.head_count", Meta::U32(3), &["d_model", "rope", "grouped"]),
        with("llama.attention.head_count_kv", Meta::U32(3), &["grouped"]),
        with("llama.attention.head_count_kv", Meta::U32(0), &["grouped"]),
        with("llama.attention.head_count_kv", Meta::str("2"), &["integer"]),
        with("llama.rope.scaling.type", Meta::str("yarn"), &["rope scaling 'yarn' is not supported"]),
        with("llama.rope.scaling.type", Meta::U32(1), &["llama.rope.scaling.type is not a string"]),
        with("llama.feed_forward_length", Meta::U64(1 << 40), &["d_mlp"]),
        with("llama.context_length", Meta::U32(0), &["context length"]),
        with("llama.context_length", Meta::U64(1 << 50), &["context length"]),
        with("llama.vocab_size", Meta::U64(1 << 40), &["vocab"]),
        with("llama.vocab_size", Meta::U32(100), &["shape"]),
        with("llama.attention.layer_norm_rms_epsilon", Meta::F32(f32::NAN), &["epsilon"]),
        with("llama.attention.layer_norm_rms_epsilon", Meta::F32(-1.0), &["epsilon"]),
        with("llama.rope.freq_base", Meta::F32(f32::INFINITY), &["theta"]),
        with("llama.rope.freq_base", Meta::F64(1e300), &["theta"]),
        with("llama.rope.dimension_count", Meta::U32(8), &["partial rotary", "rope"]),
    ]);
}

/// The rope-dimension check runs before `Config::validate`, so an absurd
/// d_model or a zero head count is reported as "partial rotary embeddings
/// (rope dim 16 < head dim 0)". The message should name the real problem.
#[test]
fn gguf_config_errors_name_the_real_problem() {
    let mut failures = Vec::new();
    for (key, v, keywords) in [
        ("llama.embedding_length", Meta::U64(1 << 40), &["d_model"][..]),
        ("llama.embedding_length", Meta::U32(0), &["d_model"][..]),
        ("llama.attention.head_count", Meta::U32(0), &["n_heads", "head count", "heads"][..]),
    ] {
        let mut g = base();
        g.set(key, v.clone());
        let msg = gguf_err(key, g.bytes());
        let low = msg.to_lowercase();
        if !msg.contains(GGUF_NAME) || !keywords.iter().any(|k| low.contains(k)) || low.contains("partial rotary") {
            failures.push(format!("{key} = {v:?}: {msg}"));
        }
    }
    // A rope dimension larger than the head is not "rope dim 32 < head dim 16".
    let mut g = base();
    g.set("llama.rope.dimension_count", Meta::U32(32));
    let msg = gguf_err("rope dim 32", g.bytes());
    if msg.contains("32 < head dim 16") {
        failures.push(format!("llama.rope.dimension_count = 32: {msg}"));
    }
    assert!(failures.is_empty(), "misleading messages:\n{}", failures.join("\n"));
}

#[test]
fn gguf_tokenizer_problems() {
    fn tok(name: &'static str, f: fn(&mut Gguf), keywords: &'static [&'static str]) -> (&'static str, Box<dyn FnOnce()>) {
        (name, Box::new(move || {
            let mut g = base();
            f(&mut g);
            gguf_rejects(name, &g, keywords);
        }))
    }
    cases(vec![
        tok("no tokenizer at all", |g| {
            g.meta.retain(|(k, _)| !k.starts_with("tokenizer."));
        }, &["no tokenizer", "tokenizer"]),
        tok("missing tokenizer.ggml.model", |g| {
            g.remove("tokenizer.ggml.model");
        }, &["no tokenizer"]),
        // SentencePiece vocabularies need a score per piece.
        tok("sentencepiece without scores", |g| {
            g.set("tokenizer.ggml.model", Meta::str("llama"));
        }, &["missing metadata key 'tokenizer.ggml.scores'"]),
        tok("tokenizer model bert", |g| {
            g.set("tokenizer.ggml.model", Meta::str("bert"));
        }, &["tokenizer model 'bert'"]),
        tok("missing tokens", |g| {
            g.remove("tokenizer.ggml.tokens");
        }, &["tokenizer.ggml.tokens"]),
        tok("tokens not an array", |g| {
            g.set("tokenizer.ggml.tokens", Meta::str("a"));
        }, &["not an array"]),
        tok("tokens hold integers", |g| {
            g.set("tokenizer.ggml.tokens", Meta::i32s(&[1, 2, 3]));
        }, &["non-string"]),
        tok("token_type length mismatch", |g| {
            g.set("tokenizer.ggml.token_type", Meta::i32s(&[1, 1, 1]));
        }, &["token_type"]),
        tok("merge without a space", |g| {
            g.set("tokenizer.ggml.merges", Meta::strs(&["Ġt", "h e"]));
        }, &["tokenizer", "merge"]),
        tok("merge of unknown tokens", |g| {
            g.set("tokenizer.ggml.merges", Meta::strs(&["he llo"]));
        }, &["tokenizer", "merge"]),
    ]);
}

/// Odd but not invalid vocabularies must not panic or hang (whether they
/// load is up to the engine).
#[test]
fn gguf_odd_vocabularies_do_not_panic() {
    type Mutation = fn(&mut Gguf);
    let variants: Vec<(&str, Mutation)> = vec![
        ("empty control token", |g| {
            let (mut toks, types) = vocab();
            toks[ENDOFTEXT as usize] = String::new();
            g.set("tokenizer.ggml.tokens", Meta::strs(&toks));
            g.set("tokenizer.ggml.token_type", Meta::i32s(&types));
        }),
        ("duplicate tokens", |g| {
            let (mut toks, _) = vocab();
            toks[IM_END as usize] = "<|im_start|>".into();
            toks[100] = "a".into();
            g.set("tokenizer.ggml.tokens", Meta::strs(&toks));
        }),
        ("all tokens control", |g| {
            g.set("tokenizer.ggml.token_type", Meta::i32s(&[3; VOCAB]));
        }),
        ("empty vocabulary", |g| {
            g.set("tokenizer.ggml.tokens", Meta::strs::<&str>(&[]));
            g.set("tokenizer.ggml.token_type", Meta::i32s(&[]));
            g.set("tokenizer.ggml.merges", Meta::strs::<&str>(&[]));
        }),
        ("ids out of range", |g| {
            g.set("tokenizer.ggml.bos_token_id", Meta::U64(u64::MAX));
            g.set("tokenizer.ggml.eos_token_id", Meta::I32(-1));
            g.set("tokenizer.ggml.add_bos_token", Meta::Bool(true));
        }),
        ("unknown pre-tokenizer", |g| {
            g.set("tokenizer.ggml.pre", Meta::str("klingon"));
        }),
        ("chat template that does not parse", |g| {
            g.set("tokenizer.chat_template", Meta::str("{% for %}"));
        }),
    ];
    let mut failures = Vec::new();
    for (name, f) in variants {
        let mut g = base();
        f(&mut g);
        let bytes = g.bytes();
        let r = run_with_timeout(Duration::from_secs(20), move || {
            no_panic(|| {
                if let Ok(m) = load_gguf(&bytes) {
                    exercise(&m);
                }
            })
        });
        match r {
            None => failures.push(format!("[{name}] did not finish in 20 s")),
            Some(Err(p)) => failures.push(format!("[{name}] PANIC {p}")),
            Some(Ok(())) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Uses a loaded model the way the CLI does; errors are fine, panics are not.
fn exercise(m: &Model) {
    let tok = m.tokenizer();
    for text in ["", "the cat", "<|im_start|>user\nhi<|im_end|>", "ünïcödé 🦀 123"] {
        if let Ok(ids) = tok.encode(text) {
            let _ = tok.decode(&ids);
            let _ = tok.token_strings(&ids);
            let _ = m.logits(&ids);
        }
    }
    let _ = tok.apply_chat_template(&[("user", "hi")], true);
    let _ = tok.decode(&[0, 1, u32::MAX]);
    let _ = tok.id_to_token(u32::MAX);
    let _ = m.logits(&[0, 1, 2]);
    let _ = generate(m, &[1, 2], &GenerateOptions { max_new_tokens: 2, ..Default::default() }, None, &mut |_| true);
}

fn run_with_timeout<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A chat template comes from the file; rendering it must not hang the
/// process (a loop with 10^10 iterations, no output).
#[test]
fn gguf_hostile_chat_template_does_not_hang() {
    let mut g = base();
    g.set(
        "tokenizer.chat_template",
        Meta::str("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x"),
    );
    let m = load_gguf(&g.bytes()).unwrap();
    let r = run_with_timeout(Duration::from_secs(15), move || {
        no_panic(|| m.tokenizer().apply_chat_template(&[("user", "hi")], true).map(|s| s.len()))
    });
    match r {
        None => panic!("apply_chat_template on a hostile template did not return within 15 s (no fuel limit)"),
        Some(Err(p)) => panic!("PANIC {p}"),
        Some(Ok(_)) => {}
    }
}

/// A template that writes the prompt 100,000 times (2 GB for a 20,000-character
/// prompt) within its fuel, and one longer than any real template: refused
/// with a message, having written at most 1 MiB.
#[test]
fn gguf_chat_template_output_and_length_are_bounded() {
    cases(vec![
        case("repeats the prompt", || {
            let mut g = base();
            g.set(
                "tokenizer.chat_template",
                Meta::str("{% for i in range(100000) %}{{ messages[0]['content'] }}{% endfor %}"),
            );
            let m = load_gguf(&g.bytes()).unwrap();
            let prompt = "9".repeat(20_000);
            let err = no_panic(|| m.tokenizer().apply_chat_template(&[("user", &prompt)], true)).unwrap().unwrap_err();
            assert!(err.to_string().contains("exceeds 1048576 bytes"), "{err}");
        }),
        case("a 1 MB template", || {
            let mut g = base();
            g.set("tokenizer.chat_template", Meta::str(&"x".repeat(1 << 20)));
            let m = load_gguf(&g.bytes()).unwrap();
            let err = m.tokenizer().apply_chat_template(&[("user", "hi")], true).unwrap_err();
            assert!(err.to_string().contains("chat template is 1048576 bytes"), "{err}");
        }),
        case("an ordinary template still renders", || {
            let m = load_gguf(&base().bytes()).unwrap();
            let out = m.tokenizer().apply_chat_template(&[("user", "hi")], true).unwrap();
            assert!(out.contains("hi"), "{out}");
        }),
    ]);
}

// ---------------------------------------------------------------------------
// prompts
// ---------------------------------------------------------------------------

#[test]
fn bad_prompts() {
    let spec = LlamaSpec { n_ctx: 16, ..Default::default() };
    let m = load_gguf(&tiny_llama(&spec).bytes()).unwrap();
    assert_eq!(m.config.n_ctx, 16);
    let mut failures = Vec::new();
    let mut check = |name: &str, f: &mut dyn FnMut()| {
        if let Err(p) = no_panic(f) {
            failures.push(format!("[{name}] {p}"));
        }
    };
    check("empty prompt (ids_tensor)", &mut || {
        input_err("empty ids", m.ids_tensor(&[]), &["empty prompt"]);
    });
    check("empty logits", &mut || {
        input_err("empty logits", m.logits(&[]), &["empty prompt"]);
    });
    check("empty text", &mut || {
        let ids = m.tokenizer().encode("").unwrap();
        input_err("empty text", m.logits(&ids), &["empty prompt"]);
    });
    check("empty run_with_cache", &mut || {
        input_err("empty rwc", m.run_with_cache(&[], &[]), &["empty prompt"]);
    });
    check("empty next_token_top_k", &mut || {
        input_err("empty topk", m.next_token_top_k(&[], 5), &["empty prompt"]);
    });
    check("empty generate", &mut || {
        input_err("empty gen", generate(&m, &[], &GenerateOptions::default(), None, &mut |_| true), &["empty prompt"]);
    });
    check("empty batch", &mut || {
        input_err("empty batch", m.batch_tensor(&[]), &["empty prompt"]);
    });
    check("token id = vocab", &mut || {
        let msg = input_err("id = vocab", m.ids_tensor(&[1, VOCAB as u32]), &["out of range"]);
        assert!(msg.contains(&VOCAB.to_string()), "{msg}");
    });
    check("token id u32::MAX", &mut || {
        input_err("id max", m.logits(&[u32::MAX]), &["out of range"]);
    });
    check("unequal batch", &mut || {
        input_err("unequal batch", m.batch_tensor(&[&[1, 2], &[1]]), &["equal length"]);
    });
    check("prompt = context is fine for a forward pass", &mut || {
        m.logits(&[7; 16]).unwrap();
    });
    check("prompt longer than the context", &mut || {
        let msg = input_err("17 > 16", m.logits(&[7; 17]), &["context length"]);
        assert!(msg.contains("16") && msg.contains("17"), "{msg}");
    });
    check("long text prompt", &mut || {
        let ids = m.tokenizer().encode(&"x ".repeat(40)).unwrap();
        assert!(ids.len() > 16);
        input_err("long text", m.logits(&ids), &["context length"]);
    });
    check("generate with a full context", &mut || {
        input_err("gen 16", generate(&m, &[7; 16], &GenerateOptions::default(), None, &mut |_| true), &["context length"]);
    });
    check("generate stops at the context", &mut || {
        let opts = GenerateOptions { max_new_tokens: 100, stop_at_eos: false, ..Default::default() };
        let out = generate(&m, &[7; 10], &opts, None, &mut |_| true).unwrap();
        assert_eq!(out.len(), 6);
    });
    check("cache overflow", &mut || {
        let mut cache = KvCache::new(&m.config);
        m.forward(&m.ids_tensor(&[1; 10]).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
        let r = m.forward(&m.ids_tensor(&[1; 7]).unwrap(), Some(&mut cache), None, Logits::Last);
        let msg = input_err("cache overflow", r, &["context length"]);
        assert!(msg.contains("cached"), "{msg}");
        assert_eq!(cache.len(), 10, "a rejected pass must not grow the cache");
    });
    check("bad generate options", &mut || {
        for opts in [
            GenerateOptions { temperature: -1.0, ..Default::default() },
            GenerateOptions { temperature: f32::NAN, ..Default::default() },
            GenerateOptions { top_p: Some(0.0), ..Default::default() },
            GenerateOptions { top_p: Some(f32::NAN), ..Default::default() },
            GenerateOptions { top_k: Some(0), ..Default::default() },
        ] {
            input_err("opts", generate(&m, &[1], &opts, None, &mut |_| true), &["temperature", "top_p", "top_k"]);
        }
    });
    check("odd token tensors", &mut || {
        let dev = Device::Cpu;
        let odd = [
            Tensor::zeros((1, 3), candle_core::DType::F32, &dev).unwrap(),
            Tensor::zeros((1, 1, 3), candle_core::DType::U32, &dev).unwrap(),
            Tensor::zeros((0, 3), candle_core::DType::U32, &dev).unwrap(),
            Tensor::zeros((1, 0), candle_core::DType::U32, &dev).unwrap(),
            Tensor::new(&[[1u32, VOCAB as u32]], &dev).unwrap(),
            Tensor::zeros(3, candle_core::DType::U32, &dev).unwrap(),
        ];
        for t in &odd {
            // Errors or (for the empty batch) an empty result; never a panic.
            let _ = m.forward(t, None, None, Logits::All);
        }
        assert!(m.forward(&odd[4], None, None, Logits::All).is_err());
        assert!(m.forward(&odd[3], None, None, Logits::All).is_err());
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// safetensors / Hugging Face layout
// ---------------------------------------------------------------------------

fn hf_err(case: &str, files: HfFiles) -> String {
    match no_panic(|| files.load()) {
        Err(p) => panic!("{case}: Model::load PANICKED: {p}"),
        Ok(Ok(_)) => panic!("{case}: loaded, but it should have been rejected"),
        Ok(Err(e)) => e.to_string(),
    }
}

fn hf_rejects(case: &str, files: HfFiles, file: &str, keywords: &[&str]) -> String {
    let msg = hf_err(case, files);
    assert_msg(case, &msg, file, keywords);
    msg
}

fn gpt2_with(f: impl FnOnce(&mut Vec<StTensor>)) -> HfFiles {
    let spec = Gpt2Spec::default();
    let mut ts = gpt2_tensors(&spec);
    f(&mut ts);
    let mut files = HfFiles::gpt2(&spec);
    files.weights = vec![(ST_NAME.to_owned(), safetensors_bytes(&ts))];
    files
}

fn gpt2_config_with(f: impl FnOnce(&mut serde_json::Value)) -> HfFiles {
    let spec = Gpt2Spec::default();
    let mut c = gpt2_config(&spec);
    f(&mut c);
    let mut files = HfFiles::gpt2(&spec);
    files.config = serde_json::to_vec(&c).unwrap();
    files
}

fn raw_weights(bytes: Vec<u8>) -> HfFiles {
    let mut files = HfFiles::gpt2(&Gpt2Spec::default());
    files.weights = vec![(ST_NAME.to_owned(), bytes)];
    files
}

#[test]
fn safetensors_bad_files() {
    let good = safetensors_bytes(&gpt2_tensors(&Gpt2Spec::default()));
    let kw: &[&str] = &["safetensors"];
    cases(vec![
        case("garbage", || {
            let mut rng = Rng::new(3);
            let junk: Vec<u8> = (0..1000).map(|_| rng.next_u64() as u8).collect();
            hf_rejects("garbage", raw_weights(junk), ST_NAME, &["safetensors"]);
        }),
        case("empty file", || {
            hf_rejects("empty", raw_weights(Vec::new()), ST_NAME, &["safetensors"]);
        }),
        case("gguf as safetensors", || {
            hf_rejects("gguf", raw_weights(base().bytes()), ST_NAME, &["safetensors"]);
        }),
        case("length prefix larger than the file", {
            let good = good.clone();
            move || {
                let mut b = good.clone();
                let n = b.len() as u64 + 100;
                b[..8].copy_from_slice(&n.to_le_bytes());
                hf_rejects("prefix > file", raw_weights(b), ST_NAME, kw);
            }
        }),
        case("length prefix u64::MAX", {
            let good = good.clone();
            move || {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                hf_rejects("prefix max", raw_weights(b), ST_NAME, kw);
            }
        }),
        case("header not JSON", || {
            let mut b = 16u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{not json at all");
            hf_rejects("not json", raw_weights(b), ST_NAME, kw);
        }),
        case("header with an absurd shape", || {
            let h = br#"{"wte.weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend([0u8; 16]);
            hf_rejects("absurd shape", raw_weights(b), ST_NAME, kw);
        }),
        case("header with offsets past the end", || {
            let h = br#"{"wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,1099511627776]}}"#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend([0u8; 16]);
            hf_rejects("offsets", raw_weights(b), ST_NAME, kw);
        }),
        case("truncated data", {
            let good = good.clone();
            move || {
                for cut in [8, 9, 100, good.len() / 2, good.len() - 1] {
                    hf_rejects(&format!("cut {cut}"), raw_weights(good[..cut].to_vec()), ST_NAME, kw);
                }
            }
        }),
        case("no weights at all", || {
            let mut files = HfFiles::gpt2(&Gpt2Spec::default());
            files.weights.clear();
            let msg = hf_err("no weights", files);
            assert!(msg.contains("safetensors"), "{msg}");
        }),
        case("missing tensor", || {
            let files = gpt2_with(|ts| ts.retain(|t| t.name != "h.1.mlp.c_fc.bias"));
            let msg = hf_rejects("missing", files, ST_NAME, &["missing tensor"]);
            assert!(msg.contains("h.1.mlp.c_fc.bias"), "{msg}");
        }),
        case("missing wpe", || {
            let files = gpt2_with(|ts| ts.retain(|t| t.name != "wpe.weight"));
            hf_rejects("missing wpe", files, ST_NAME, &["missing tensor 'wpe.weight'"]);
        }),
        case("wrong dtype I32", || {
            let files = gpt2_with(|ts| {
                let t = ts.iter_mut().find(|t| t.name == "wte.weight").unwrap();
                t.dtype = safetensors::Dtype::I32;
            });
            let msg = hf_rejects("I32", files, ST_NAME, &["dtype"]);
            assert!(msg.contains("wte.weight") && msg.contains("I32"), "{msg}");
        }),
        case("wrong dtype U8 with matching byte count", || {
            let files = gpt2_with(|ts| {
                let t = ts.iter_mut().find(|t| t.name == "ln_f.bias").unwrap();
                t.dtype = safetensors::Dtype::U8;
                t.shape = vec![t.data.len()];
            });
            hf_rejects("U8", files, ST_NAME, &["shape", "dtype"]);
        }),
        case("shape mismatch (c_attn not 3*d)", || {
            let files = gpt2_with(|ts| {
                let t = ts.iter_mut().find(|t| t.name == "h.0.attn.c_attn.weight").unwrap();
                t.shape = vec![3 * 32, 32]; // transposed
            });
            let msg = hf_rejects("c_attn", files, ST_NAME, &["shape"]);
            assert!(msg.contains("h.0.attn.c_attn.weight"), "{msg}");
        }),
        case("F16 weights load", || {
            let files = gpt2_with(|ts| {
                for t in ts.iter_mut() {
                    let f: Vec<f32> =
                        t.data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    t.data = f.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect();
                    t.dtype = safetensors::Dtype::F16;
                }
            });
            files.load().unwrap().logits(&[1, 2]).unwrap();
        }),
        case("unaligned data section (odd header length)", || {
            // A hand-written header of odd length puts the data at an odd address.
            let d: Vec<f32> = (0..4).map(|i| i as f32).collect();
            let h = br#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}} "#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend(f32_bytes(&d));
            // Not a GPT-2, but must fail cleanly (missing tensor), never crash.
            hf_rejects("odd header", raw_weights(b), ST_NAME, &["missing tensor"]);
        }),
    ]);
}

#[test]
fn hf_bad_config_and_tokenizer() {
    cases(vec![
        case("config not JSON", || {
            let mut files = HfFiles::gpt2(&Gpt2Spec::default());
            files.config = b"{ nope".to_vec();
            hf_rejects("config json", files, "config.json", &["json"]);
        }),
        case("model_type unknown", || {
            let files = gpt2_config_with(|c| c["model_type"] = "bert".into());
            hf_rejects("bert", files, "config.json", &["model_type 'bert'"]);
        }),
        case("model_type missing", || {
            let files = gpt2_config_with(|c| {
                c.as_object_mut().unwrap().remove("model_type");
            });
            hf_rejects("no model_type", files, "config.json", &["model_type"]);
        }),
        case("n_layer 10^9", || {
            let files = gpt2_config_with(|c| c["n_layer"] = 1_000_000_000u64.into());
            hf_rejects("n_layer", files, "config.json", &["n_layers"]);
        }),
        case("vocab_size 2^40", || {
            let files = gpt2_config_with(|c| c["vocab_size"] = (1u64 << 40).into());
            hf_rejects("vocab", files, "config.json", &["vocab"]);
        }),
        case("n_positions 2^50", || {
            let files = gpt2_config_with(|c| c["n_positions"] = (1u64 << 50).into());
            hf_rejects("n_positions", files, "config.json", &["context length"]);
        }),
        case("n_embd 2^62 without n_inner (4*n_embd overflows)", || {
            let files = gpt2_config_with(|c| {
                c["n_embd"] = (1u64 << 62).into();
                c.as_object_mut().unwrap().remove("n_inner");
            });
            hf_rejects("n_embd", files, "config.json", &["d_model"]);
        }),
        case("n_layer negative", || {
            let files = gpt2_config_with(|c| c["n_layer"] = (-1).into());
            hf_rejects("n_layer -1", files, "config.json", &["n_layer"]);
        }),
        case("n_head string", || {
            let files = gpt2_config_with(|c| c["n_head"] = "4".into());
            hf_rejects("n_head str", files, "config.json", &["n_head"]);
        }),
        case("activation unknown", || {
            let files = gpt2_config_with(|c| c["activation_function"] = "swish".into());
            hf_rejects("act", files, "config.json", &["activation_function"]);
        }),
        case("llama head_dim 2^62+16 (head_dim*n_heads wraps to d_model)", || {
            let spec = LlamaSpec { n_kv_heads: 4, ..Default::default() };
            let mut files = HfFiles::llama(&spec);
            let mut c = llama_hf_config(&spec);
            c["head_dim"] = ((1u64 << 62) + 16).into();
            files.config = serde_json::to_vec(&c).unwrap();
            hf_rejects("head_dim", files, "config.json", &["d_head", "head"]);
        }),
        case("llama head_dim as a string (an error, not a default)", || {
            let spec = LlamaSpec::default();
            let mut files = HfFiles::llama(&spec);
            let mut c = llama_hf_config(&spec);
            c["head_dim"] = "16".into();
            c["num_key_value_heads"] = (-1).into();
            files.config = serde_json::to_vec(&c).unwrap();
            hf_rejects("head_dim string", files, "config.json", &["non-negative integer"]);
        }),
        case("llama head_dim 2^40", || {
            let spec = LlamaSpec::default();
            let mut files = HfFiles::llama(&spec);
            let mut c = llama_hf_config(&spec);
            c["head_dim"] = (1u64 << 40).into();
            files.config = serde_json::to_vec(&c).unwrap();
            hf_rejects("head_dim 2^40", files, "config.json", &["d_head", "head", "d_model"]);
        }),
        case("llama rope_scaling", || {
            let spec = LlamaSpec::default();
            let mut files = HfFiles::llama(&spec);
            let mut c = llama_hf_config(&spec);
            c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
            files.config = serde_json::to_vec(&c).unwrap();
            hf_rejects("rope_scaling", files, "config.json", &["rope_scaling"]);
        }),
        case("missing tokenizer", || {
            let mut files = HfFiles::gpt2(&Gpt2Spec::default());
            files.tokenizer = None;
            let msg = hf_err("no tokenizer", files);
            assert!(msg.contains("tiny-gpt2") && msg.contains("tokenizer.json"), "{msg}");
        }),
        case("tokenizer.json garbage", || {
            let mut files = HfFiles::gpt2(&Gpt2Spec::default());
            files.tokenizer = Some(b"\x00\x01garbage".to_vec());
            hf_rejects("tokenizer garbage", files, "tokenizer.json", &["tokenizer.json"]);
        }),
        case("tokenizer_config.json garbage", || {
            let mut files = HfFiles::gpt2(&Gpt2Spec::default());
            files.tokenizer_config = Some(b"[1,".to_vec());
            hf_rejects("tokenizer_config garbage", files, "tokenizer_config.json", &["json"]);
        }),
    ]);
}

// ---------------------------------------------------------------------------
// randomized corruption
// ---------------------------------------------------------------------------

/// Seeded mutations of a micro GGUF: none may panic or take long.
#[test]
fn gguf_random_corruption_never_panics() {
    let w = tiny_llama(&LlamaSpec::micro()).write();
    let good = w.bytes;
    let (infos, header) = (w.infos_start, w.data_start);
    let n_iter: usize = std::env::var("SCALPEL_CORRUPTION_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(6000);
    let interesting: [u64; 10] = [0, 1, 2, 3, 31, 32, 255, 1 << 32, 1 << 60, u64::MAX];
    let mut rng = Rng::new(0x05CA_19E1);
    let t0 = Instant::now();
    let (mut ok, mut err, mut slowest) = (0usize, 0usize, Duration::ZERO);
    let mut failures = Vec::new();
    for i in 0..n_iter {
        let mut b = good.clone();
        // Mostly in the header, where the structure is; the tensor-info
        // table is small, so it gets its own share.
        let pos = |rng: &mut Rng, len: usize| {
            let p = match rng.below(100) {
                0..=39 => infos + rng.below(header - infos),
                40..=84 => rng.below(infos),
                _ => rng.below(len.max(1)),
            };
            p.min(len.saturating_sub(1))
        };
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 => {
                    let p = pos(&mut rng, b.len());
                    let v = rng.next_u64() as u8;
                    what.push(format!("set byte {p} = {v}"));
                    b[p] = v;
                }
                1 => {
                    let p = pos(&mut rng, b.len());
                    let bit = rng.below(8);
                    what.push(format!("flip bit {bit} of byte {p}"));
                    b[p] ^= 1 << bit;
                }
                2 => {
                    let p = pos(&mut rng, b.len());
                    let n = 1 + rng.below(16);
                    what.push(format!("insert {n} bytes at {p}"));
                    for _ in 0..n {
                        b.insert(p, rng.next_u64() as u8);
                    }
                }
                3 => {
                    let p = pos(&mut rng, b.len());
                    let n = (1 + rng.below(16)).min(b.len() - p);
                    what.push(format!("delete {n} bytes at {p}"));
                    b.drain(p..p + n);
                }
                4 => {
                    let p = pos(&mut rng, b.len());
                    what.push(format!("truncate at {p}"));
                    b.truncate(p);
                }
                _ => {
                    let p = pos(&mut rng, b.len());
                    if p + 8 <= b.len() {
                        let v = interesting[rng.below(interesting.len())];
                        what.push(format!("write u64 {v} at {p}"));
                        b[p..p + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            if b.len() < 4 {
                break;
            }
        }
        let start = Instant::now();
        let precision = if i % 4 == 3 { Precision::Quantized } else { Precision::F32 };
        let r = no_panic(|| match Model::load(GGUF_NAME, ModelSource::Gguf(&b), precision) {
            Ok(m) => {
                exercise(&m);
                true
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(GGUF_NAME), "error does not name the file: {msg}");
                false
            }
        });
        let dt = start.elapsed();
        slowest = slowest.max(dt);
        match r {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(p) => {
                if failures.len() < 8 {
                    failures.push(format!("iteration {i} ({}): {p}", what.join(", ")));
                }
            }
        }
        if dt > Duration::from_secs(5) {
            failures.push(format!("iteration {i} ({}): took {dt:?}", what.join(", ")));
        }
    }
    eprintln!(
        "{n_iter} corruptions in {:?}: {ok} loaded, {err} rejected, slowest {slowest:?}",
        t0.elapsed()
    );
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n\n"));
}

fn random_meta(rng: &mut Rng) -> Meta {
    const INTS: [u64; 12] = [0, 1, 2, 3, 16, 64, 255, 1 << 31, 1 << 32, 1 << 60, u64::MAX, u64::MAX - 1];
    const FLOATS: [f64; 8] = [0.0, -1.0, 1e-30, 1e30, f64::NAN, f64::INFINITY, 1e-5, 10000.0];
    const STRS: [&str; 8] = ["", "llama", "gpt2", "bert", "mistral", "<|im_end|>", "Ġ t", "{{ x }}"];
    let int = |rng: &mut Rng| INTS[rng.below(INTS.len())];
    match rng.below(14) {
        0 => Meta::U8(int(rng) as u8),
        1 => Meta::I8(int(rng) as i8),
        2 => Meta::U16(int(rng) as u16),
        3 => Meta::I16(int(rng) as i16),
        4 => Meta::U32(int(rng) as u32),
        5 => Meta::I32(int(rng) as i32),
        6 => Meta::U64(int(rng)),
        7 => Meta::I64(int(rng) as i64),
        8 => Meta::F32(FLOATS[rng.below(8)] as f32),
        9 => Meta::F64(FLOATS[rng.below(8)]),
        10 => Meta::Bool(rng.below(2) == 1),
        11 => Meta::str(STRS[rng.below(8)]),
        12 => {
            let n = rng.below(6);
            Meta::strs(&(0..n).map(|_| STRS[rng.below(8)]).collect::<Vec<_>>())
        }
        _ => {
            let n = rng.below(6);
            Meta::i32s(&(0..n).map(|_| int(rng) as i32).collect::<Vec<_>>())
        }
    }
}

/// Structure-aware mutations (through the writer): metadata values of the
/// wrong type or absurd size, tensor dims/types/offsets/names changed,
/// tensors dropped or duplicated. None may panic or take long.
#[test]
fn gguf_random_semantic_mutations_never_panic() {
    // d_mlp 256 so K-quant types (block 256) fit ffn_down's rows.
    let spec = LlamaSpec { d_mlp: 256, ..LlamaSpec::micro() };
    let good = tiny_llama(&spec);
    let keys: Vec<String> = good.meta.iter().map(|(k, _)| k.clone()).collect();
    const DIMS: [u64; 10] = [0, 1, 2, 16, 32, 256, 265, 1 << 20, 1 << 32, u64::MAX];
    const TYPES: [u32; 16] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 30];
    let n_iter: usize = std::env::var("SCALPEL_CORRUPTION_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut rng = Rng::new(0xD1CE);
    let t0 = Instant::now();
    let (mut ok, mut slowest) = (0usize, Duration::ZERO);
    let mut failures = Vec::new();
    for i in 0..n_iter {
        let mut g = good.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let nt = g.tensors.len();
            match rng.below(9) {
                0 | 1 => {
                    let k = keys[rng.below(keys.len())].clone();
                    let v = random_meta(&mut rng);
                    what.push(format!("{k} = {v:?}"));
                    g.set(&k, v);
                }
                2 => {
                    let k = keys[rng.below(keys.len())].clone();
                    what.push(format!("remove {k}"));
                    g.remove(&k);
                }
                3 => {
                    let t = &mut g.tensors[rng.below(nt)];
                    let j = rng.below(t.ne.len());
                    let d = DIMS[rng.below(DIMS.len())];
                    what.push(format!("{}.ne[{j}] = {d}", t.name));
                    t.ne[j] = d;
                }
                4 => {
                    let t = &mut g.tensors[rng.below(nt)];
                    t.ne.reverse();
                    if rng.below(2) == 0 {
                        t.ne.push(1);
                    }
                    what.push(format!("{}.ne = {:?}", t.name, t.ne));
                }
                5 => {
                    let t = &mut g.tensors[rng.below(nt)];
                    t.ty = TYPES[rng.below(TYPES.len())];
                    what.push(format!("{}.ty = {}", t.name, t.ty));
                }
                6 => {
                    let t = &mut g.tensors[rng.below(nt)];
                    let o = [0u64, 32, 64, 1 << 40, !31][rng.below(5)];
                    what.push(format!("{}.offset = {o}", t.name));
                    t.offset = Some(o);
                }
                7 => {
                    let a = rng.below(nt);
                    let b = rng.below(nt);
                    let name = g.tensors[b].name.clone();
                    what.push(format!("rename {} -> {name}", g.tensors[a].name));
                    g.tensors[a].name = name;
                }
                _ => {
                    let a = rng.below(nt);
                    what.push(format!("remove tensor {}", g.tensors[a].name));
                    g.tensors.remove(a);
                }
            }
        }
        let bytes = g.bytes();
        let precision = if i % 3 == 2 { Precision::Quantized } else { Precision::F32 };
        let start = Instant::now();
        let r = no_panic(|| match Model::load(GGUF_NAME, ModelSource::Gguf(&bytes), precision) {
            Ok(m) => {
                exercise(&m);
                true
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(GGUF_NAME), "error does not name the file: {msg}");
                false
            }
        });
        let dt = start.elapsed();
        slowest = slowest.max(dt);
        match r {
            Ok(loaded) => ok += loaded as usize,
            Err(p) => {
                if failures.len() < 8 {
                    failures.push(format!("iteration {i} ({}): {p}", what.join("; ")));
                }
            }
        }
        if dt > Duration::from_secs(5) {
            failures.push(format!("iteration {i} ({}): took {dt:?}", what.join("; ")));
        }
    }
    eprintln!("{n_iter} semantic mutations in {:?}: {ok} loaded, slowest {slowest:?}", t0.elapsed());
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// sharded safetensors
// ---------------------------------------------------------------------------

#[test]
fn sharded_safetensors() {
    let spec = Gpt2Spec::default();
    let ts = gpt2_tensors(&spec);
    let (a, b) = ts.split_at(ts.len() / 2);
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let sharded = |second: Vec<u8>| {
        let mut files = HfFiles::gpt2(&spec);
        files.weights = vec![(names[0].into(), safetensors_bytes(a)), (names[1].into(), second)];
        files
    };
    // Split over two files: same logits as one file.
    let one = HfFiles::gpt2(&spec).load().unwrap().logits(&[1, 2, 3]).unwrap();
    let two = sharded(safetensors_bytes(b)).load().unwrap().logits(&[1, 2, 3]).unwrap();
    assert_eq!(one.flatten_all().unwrap().to_vec1::<f32>().unwrap(), two.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // A corrupt shard is named in the error.
    let mut bad = safetensors_bytes(b);
    bad.truncate(bad.len() / 2);
    assert_msg("bad shard", &hf_err("bad shard", sharded(bad)), names[1], &["safetensors"]);
    // A tensor missing from every shard.
    let msg = hf_err("missing in shards", sharded(safetensors_bytes(&b[1..])));
    assert!(msg.contains("missing tensor") && msg.contains(&b[0].name), "{msg}");

    // The index file.
    let index = |map: serde_json::Value| serde_json::to_vec(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap();
    let files = scalpel_engine::shard_files(&index(serde_json::json!({
        "wte.weight": names[0], "wpe.weight": names[0], "ln_f.bias": names[1]
    })))
    .unwrap();
    assert_eq!(files, names);
    for evil in ["../model.safetensors", "/etc/passwd", "sub/x.safetensors", "a\\b.safetensors", ".hidden"] {
        let r = scalpel_engine::shard_files(&index(serde_json::json!({ "wte.weight": evil })));
        let msg = r.err().unwrap_or_else(|| panic!("shard name '{evil}' accepted")).to_string();
        assert!(msg.contains("model.safetensors.index.json") && msg.contains("plain file name"), "{msg}");
    }
    for junk in [&b"not json"[..], b"{}", br#"{"weight_map": 3}"#, b""] {
        let msg = scalpel_engine::shard_files(junk).expect_err("rejected").to_string();
        assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    }
}

/// A zero-element tensor in a file whose data section would start past its
/// end (alignment 64 KiB, nothing after the tensor table), and tensors that
/// share bytes: rejected with a message, never a panic when a tensor's
/// bytes are read.
#[test]
fn gguf_tensor_data_outside_or_shared() {
    cases(vec![
        case("empty tensor, data section past the end of the file", || {
            let mut g = Gguf::new();
            g.alignment = 1; // the writer pads nothing: the file ends after the table
            g.set("general.alignment", Meta::U32(1 << 16));
            g.tensors.push(TensorSpec::f32("direction.1", &[0], &[]));
            let bytes = g.bytes();
            assert!(bytes.len() < 1 << 16);
            let parsed = no_panic(|| scalpel_engine::gguf::Gguf::parse(GGUF_NAME, &bytes).map(|p| {
                // The old path: reading the tensor's bytes sliced past the end.
                p.info("direction.1").map(|i| p.raw(i).len())
            }));
            let msg = match parsed {
                Err(p) => panic!("parse or raw() panicked: {p}"),
                Ok(Ok(n)) => panic!("accepted (tensor bytes {n:?})"),
                Ok(Err(e)) => e.to_string(),
            };
            assert_msg("data past the end", &msg, GGUF_NAME, &["past the end"]);
        }),
        case("two tensors share bytes", || {
            let mut g = base();
            g.tensor_mut("blk.0.attn_k.weight").offset = Some(0);
            gguf_rejects("shared bytes", &g, &["share bytes"]);
        }),
    ]);
}

/// Issue 11, defect 5: a model whose weights would not fit the memory
/// budget is refused before any weight is expanded, with the estimate, the
/// limit and the other precision's need. The estimate is computed here from
/// the shapes, independently of `Parts::built_bytes`.
#[test]
fn a_model_over_the_memory_budget_is_refused_with_the_estimate() {
    let spec = LlamaSpec::default();
    let (l, d, m, v) = (spec.n_layers as u64, spec.d_model as u64, spec.d_mlp as u64, VOCAB as u64);
    let kv = d / spec.n_heads as u64 * spec.n_kv_heads as u64;
    // q, k, v, o, gate, up, down per layer, and the untied output matrix.
    let matrices = l * (d * d + 2 * d * kv + d * d + 3 * d * m) + v * d;
    // Embeddings and norms stay f32 in both precisions.
    let always_f32 = 4 * (v * d + 2 * l * d + d);
    let f32_bytes = always_f32 + 4 * matrices;
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let load = |source: ModelSource, p: Precision, max: u64| {
        no_panic(|| Model::load_within("tiny", source, p, scalpel_engine::Kernels::Auto, Some(max))).expect("no panic")
    };

    // f32 safetensors: the quantized precision turns rows of whole blocks
    // (64 and 128 values) into Q8_0, 34 bytes per 32 values.
    let hf = HfFiles::llama(&spec);
    let q8_bytes = always_f32 + matrices / 32 * 34;
    assert!(load(hf.source(), Precision::F32, f32_bytes).is_ok(), "the estimate itself fits");
    let msg = load(hf.source(), Precision::F32, f32_bytes - 1).err().expect("one byte less is refused").to_string();
    assert!(msg.starts_with("tiny"), "{msg}");
    assert!(msg.contains(&format!("need about {} in f32 precision, more than the {} this build allows", mb(f32_bytes), mb(f32_bytes - 1))), "{msg}");
    assert!(msg.contains(&format!("the quantized precision needs about {}, which fits", mb(q8_bytes))), "{msg}");
    assert!(load(hf.source(), Precision::Quantized, q8_bytes).is_ok(), "the quantized estimate fits");
    let msg = load(hf.source(), Precision::Quantized, q8_bytes - 1).err().expect("refused").to_string();
    assert!(msg.contains("does not fit in either precision"), "{msg}");

    // An F32 GGUF keeps its blocks as stored in both precisions: the same need.
    let gguf = tiny_llama(&spec).bytes();
    assert!(load(ModelSource::Gguf(&gguf), Precision::Quantized, f32_bytes).is_ok());
    let msg = load(ModelSource::Gguf(&gguf), Precision::F32, f32_bytes - 1).err().expect("refused").to_string();
    assert!(msg.contains(&format!("need about {} in f32 precision", mb(f32_bytes))) && msg.contains("does not fit in either precision"), "{msg}");
    // Without a budget (the CLI) nothing is refused.
    assert!(Model::load_with("tiny", ModelSource::Gguf(&gguf), Precision::F32, scalpel_engine::Kernels::Auto).is_ok());
}

/// Issue 11, defect 5: a metadata byte array would take 32 bytes per byte
/// once parsed; the arrays of a file are capped in all (two arrays of 4.5
/// million bytes each: 9 MB on disk, ~290 MB parsed), before they are read.
#[test]
fn gguf_metadata_arrays_are_capped_in_all() {
    let bytes_array = |n: usize| {
        let mut raw = 0u32.to_le_bytes().to_vec(); // element type u8
        raw.extend((n as u64).to_le_bytes());
        raw.resize(raw.len() + n, 7);
        Meta::Raw(9, raw)
    };
    let mut g = tiny_llama(&LlamaSpec::micro());
    g.set("junk.a", bytes_array(4_500_000)).set("junk.b", bytes_array(4_500_000));
    let msg = gguf_rejects("two large byte arrays", &g, &["8000000 elements in all"]);
    assert!(msg.contains("junk."), "{msg}");
    // One of them alone is a legal (if odd) file.
    let mut g = tiny_llama(&LlamaSpec::micro());
    g.set("junk.a", bytes_array(4_500_000));
    load_gguf(&g.bytes()).expect("4.5 million metadata bytes load");
}

/// Issue 12: transformers 5 writes the rotary base as
/// `rope_parameters: {rope_theta, rope_type}`; it was ignored, and such a
/// checkpoint ran with the default base (10000) and wrong logits. Both
/// forms give the same model; a scaling that changes the numbers and is
/// not implemented is an error naming it; forms that disagree are errors.
#[test]
fn hf_rope_parameters_are_read_and_unknown_rope_types_refused() {
    let spec = LlamaSpec::default();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = llama_hf_config(&spec);
        f(&mut c);
        let mut files = HfFiles::llama(&spec);
        files.config = serde_json::to_vec(&c).unwrap();
        files
    };
    let logits = |files: HfFiles| -> Vec<f32> {
        let m = files.load().expect("loads");
        m.logits(&[5, 9, 30, 41, 7, 2, 60, 11]).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    };
    let top_level = logits(with(&|c| c["rope_theta"] = 500000.0.into()));
    let v5 = logits(with(&|c| {
        c.as_object_mut().unwrap().remove("rope_theta");
        c["rope_parameters"] = serde_json::json!({"rope_theta": 500000.0, "rope_type": "default"});
    }));
    assert_eq!(top_level, v5, "rope_parameters.rope_theta is the same base as rope_theta");
    let default_base = logits(with(&|c| {
        c.as_object_mut().unwrap().remove("rope_theta");
    }));
    let gap = top_level.iter().zip(&default_base).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(gap > 1e-3, "the base changes the logits (gap {gap}): the test would not see it ignored");
    // Both forms, agreeing, are fine; a transformers 4 `rope_scaling` of type default too.
    logits(with(&|c| c["rope_parameters"] = serde_json::json!({"rope_theta": 10000.0, "rope_type": "default"})));
    logits(with(&|c| c["rope_scaling"] = serde_json::json!({"type": "default"})));

    let cfg = "config.json";
    for (case, f, words) in [
        ("llama3 in rope_parameters", Box::new(|c: &mut serde_json::Value| c["rope_parameters"] = serde_json::json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0})) as Box<dyn Fn(&mut serde_json::Value)>, &["rope_parameters", "rope type 'llama3' is not supported"][..]),
        ("yarn in rope_scaling", Box::new(|c| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})), &["rope_scaling", "rope type 'yarn' is not supported"]),
        ("old-style linear", Box::new(|c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0})), &["rope type 'linear'"]),
        ("forms disagree", Box::new(|c| c["rope_parameters"] = serde_json::json!({"rope_theta": 500000.0, "rope_type": "default"})), &["rope_theta 10000 (top level) and rope_parameters.rope_theta 500000 disagree"]),
        ("theta not a number", Box::new(|c| c["rope_parameters"] = serde_json::json!({"rope_theta": "big"})), &["rope_parameters.rope_theta", "positive number"]),
        ("negative theta", Box::new(|c| c["rope_theta"] = (-1.0).into()), &["rope_theta", "positive number"]),
        ("partial rotary", Box::new(|c| c["rope_parameters"] = serde_json::json!({"rope_theta": 10000.0, "partial_rotary_factor": 0.5})), &["partial_rotary_factor"]),
        ("not an object", Box::new(|c| c["rope_parameters"] = serde_json::json!(5)), &["rope_parameters", "object"]),
    ] {
        hf_rejects(case, with(&*f), cfg, words);
    }
}

/// `tokenizers` panics (an `expect`) on a tokenizer.json whose syntax error
/// falls inside `decoder`, and on a `Precompiled` normalizer that does not
/// deserialize; both found by fuzzing (fuzz/regressions/tokenizer_json/).
/// Each must be an error naming the file.
#[test]
fn tokenizer_json_that_the_tokenizers_crate_panics_on_is_refused() {
    let good = String::from_utf8(tokenizer_json()).unwrap();
    let decoder = good.find("\"decoder\"").expect("the testkit tokenizer.json has a decoder");
    // A missing ':' inside the decoder object: `"add_prefix_space" true`.
    let broken_decoder = format!("{}{}", &good[..decoder], good[decoder..].replacen("\"add_prefix_space\":", "\"add_prefix_space\" ", 1));
    let precompiled = good.replacen("\"normalizer\":null", "\"normalizer\":{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"@@\"}", 1);
    assert_ne!(precompiled, good, "the testkit tokenizer.json has no normalizer");
    let nested = good.replacen(
        "\"normalizer\":null",
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Precompiled\",\"precompiled_charsmap\":7}]}",
        1,
    );
    for (what, json, want) in [
        ("a syntax error inside the decoder", &broken_decoder, "not valid JSON"),
        ("a Precompiled normalizer", &precompiled, "Precompiled normalizer"),
        ("a Precompiled normalizer in a Sequence", &nested, "Precompiled normalizer"),
    ] {
        let err = no_panic(|| Tokenizer::from_hf_json("tokenizer.json", json.as_bytes(), None).err())
            .unwrap_or_else(|p| panic!("{what}: panicked: {p}"))
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = err.to_string();
        assert!(msg.contains("tokenizer.json") && msg.contains(want), "{what}: {msg}");
    }
}
