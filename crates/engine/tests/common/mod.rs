//! Test fixtures written by the tests themselves: a tiny GGUF writer (llama
//! family, F32 weights, GPT-2 byte-level BPE tokenizer in the metadata) and a
//! tiny Hugging Face GPT-2 checkpoint (config.json + tokenizer.json +
//! model.safetensors). Everything is deterministic (seeded PRNG).
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use scalpel_engine::{Model, ModelSource, Precision};
use serde_json::json;

pub const GGUF_NAME: &str = "tiny.gguf";
pub const ST_NAME: &str = "model.safetensors";

// ---------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough for weights and mutations.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-scale, scale).
    pub fn sym(&mut self, scale: f32) -> f32 {
        (self.unit() * 2.0 - 1.0) * scale
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym(scale)).collect()
    }
}

pub fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------
// Tokenizer vocabulary (GPT-2 byte-level BPE)
// ---------------------------------------------------------------------------

/// GPT-2's `bytes_to_unicode`: every byte to a printable char.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap();
    }
    out
}

pub const MERGES: [&str; 6] = ["Ġ t", "h e", "i n", "Ġt he", "e r", "Ġ a"];
pub const ENDOFTEXT: u32 = 262;
pub const IM_START: u32 = 263;
pub const IM_END: u32 = 264;
pub const VOCAB: usize = 265;
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// (tokens, token types) : 256 byte tokens (id = byte value), 6 merged tokens,
/// 3 control tokens.
pub fn vocab() -> (Vec<String>, Vec<i32>) {
    let b2u = bytes_to_unicode();
    let mut toks: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    for m in MERGES {
        toks.push(m.replace(' ', ""));
    }
    toks.push("<|endoftext|>".into());
    toks.push("<|im_start|>".into());
    toks.push("<|im_end|>".into());
    assert_eq!(toks.len(), VOCAB);
    let mut types = vec![1i32; VOCAB];
    for t in &mut types[ENDOFTEXT as usize..] {
        *t = 3;
    }
    (toks, types)
}

// ---------------------------------------------------------------------------
// GGUF writer
// ---------------------------------------------------------------------------

/// A GGUF metadata value. `Raw` writes its type id and then exactly the given
/// bytes, for hostile headers.
#[derive(Clone, Debug)]
pub enum Meta {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    /// Element type id and elements (written without their own type ids).
    Array(u32, Vec<Meta>),
    Raw(u32, Vec<u8>),
}

impl Meta {
    pub fn str(s: &str) -> Meta {
        Meta::Str(s.to_owned())
    }
    pub fn strs<S: AsRef<str>>(xs: &[S]) -> Meta {
        Meta::Array(8, xs.iter().map(|s| Meta::Str(s.as_ref().to_owned())).collect())
    }
    pub fn i32s(xs: &[i32]) -> Meta {
        Meta::Array(5, xs.iter().map(|&x| Meta::I32(x)).collect())
    }
    pub fn type_id(&self) -> u32 {
        match self {
            Meta::U8(_) => 0,
            Meta::I8(_) => 1,
            Meta::U16(_) => 2,
            Meta::I16(_) => 3,
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Array(..) => 9,
            Meta::U64(_) => 10,
            Meta::I64(_) => 11,
            Meta::F64(_) => 12,
            Meta::Raw(t, _) => *t,
        }
    }
    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U8(v) => out.push(*v),
            Meta::I8(v) => out.push(*v as u8),
            Meta::U16(v) => out.extend(v.to_le_bytes()),
            Meta::I16(v) => out.extend(v.to_le_bytes()),
            Meta::U32(v) => out.extend(v.to_le_bytes()),
            Meta::I32(v) => out.extend(v.to_le_bytes()),
            Meta::U64(v) => out.extend(v.to_le_bytes()),
            Meta::I64(v) => out.extend(v.to_le_bytes()),
            Meta::F32(v) => out.extend(v.to_le_bytes()),
            Meta::F64(v) => out.extend(v.to_le_bytes()),
            Meta::Bool(v) => out.push(*v as u8),
            Meta::Str(s) => write_str(out, s),
            Meta::Array(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for it in items {
                    it.write_payload(out);
                }
            }
            Meta::Raw(_, bytes) => out.extend_from_slice(bytes),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// GGUF order: ne0 (row width) first.
    pub ne: Vec<u64>,
    /// GGML type id (0 = F32).
    pub ty: u32,
    pub data: Vec<u8>,
    /// Override the data offset written in the tensor info.
    pub offset: Option<u64>,
}

impl TensorSpec {
    pub fn f32(name: &str, ne: &[u64], data: &[f32]) -> Self {
        assert_eq!(ne.iter().product::<u64>() as usize, data.len(), "{name}");
        TensorSpec { name: name.to_owned(), ne: ne.to_vec(), ty: 0, data: f32_bytes(data), offset: None }
    }
}

#[derive(Clone, Debug)]
pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    pub alignment: usize,
    pub meta: Vec<(String, Meta)>,
    pub tensors: Vec<TensorSpec>,
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
}

/// The written file plus where its parts start.
pub struct Written {
    pub bytes: Vec<u8>,
    /// First byte of the tensor-info table.
    pub infos_start: usize,
    /// First byte of the (aligned) data section.
    pub data_start: usize,
}

impl Gguf {
    pub fn new() -> Self {
        Gguf {
            magic: *b"GGUF",
            version: 3,
            alignment: 32,
            meta: Vec::new(),
            tensors: Vec::new(),
            tensor_count: None,
            kv_count: None,
        }
    }

    /// Sets (replacing) a metadata entry.
    pub fn set(&mut self, key: &str, v: Meta) -> &mut Self {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.meta.push((key.to_owned(), v)),
        }
        self
    }
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.meta.retain(|(k, _)| k != key);
        self
    }
    pub fn tensor_mut(&mut self, name: &str) -> &mut TensorSpec {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        let n = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        assert_eq!(self.tensors.len(), n - 1, "no tensor {name}");
        self
    }

    pub fn write(&self) -> Written {
        let align = self.alignment.max(1);
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        out.extend(self.version.to_le_bytes());
        out.extend(self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes());
        out.extend(self.kv_count.unwrap_or(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write_payload(&mut out);
        }
        let infos_start = out.len();
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.unwrap_or(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len()).div_ceil(align) * align;
        }
        let data_start = out.len().div_ceil(align) * align;
        out.resize(data_start, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(&t.data);
        }
        Written { bytes: out, infos_start, data_start }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.write().bytes
    }
}

impl Default for Gguf {
    fn default() -> Self {
        Self::new()
    }
}

/// Hyperparameters of the tiny llama.
#[derive(Clone, Debug)]
pub struct LlamaSpec {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_mlp: usize,
    pub n_ctx: u32,
    /// No `output.weight`: the unembedding is `token_embd.weight`.
    pub tied: bool,
    pub seed: u64,
}

impl Default for LlamaSpec {
    fn default() -> Self {
        LlamaSpec { n_layers: 2, d_model: 64, n_heads: 4, n_kv_heads: 2, d_mlp: 128, n_ctx: 64, tied: false, seed: 1 }
    }
}

impl LlamaSpec {
    /// An even smaller one (fast to load thousands of times).
    pub fn micro() -> Self {
        LlamaSpec { n_layers: 1, d_model: 16, n_heads: 2, n_kv_heads: 1, d_mlp: 32, n_ctx: 32, tied: true, seed: 7 }
    }
}

/// A llama-family GGUF as llama.cpp writes it, with random F32 weights.
pub fn tiny_llama(spec: &LlamaSpec) -> Gguf {
    let mut g = Gguf::new();
    let (toks, types) = vocab();
    let (d, m, v) = (spec.d_model as u64, spec.d_mlp as u64, VOCAB as u64);
    let dh = d / spec.n_heads as u64;
    let kv = dh * spec.n_kv_heads as u64;
    g.set("general.architecture", Meta::str("llama"))
        .set("general.name", Meta::str("tiny-llama"))
        .set("general.alignment", Meta::U32(32))
        .set("llama.block_count", Meta::U32(spec.n_layers as u32))
        .set("llama.context_length", Meta::U32(spec.n_ctx))
        .set("llama.embedding_length", Meta::U32(d as u32))
        .set("llama.feed_forward_length", Meta::U32(m as u32))
        .set("llama.attention.head_count", Meta::U32(spec.n_heads as u32))
        .set("llama.attention.head_count_kv", Meta::U32(spec.n_kv_heads as u32))
        .set("llama.rope.freq_base", Meta::F32(10000.0))
        .set("llama.rope.dimension_count", Meta::U32(dh as u32))
        .set("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .set("llama.vocab_size", Meta::U32(VOCAB as u32))
        .set("tokenizer.ggml.model", Meta::str("gpt2"))
        .set("tokenizer.ggml.pre", Meta::str("gpt2"))
        .set("tokenizer.ggml.tokens", Meta::strs(&toks))
        .set("tokenizer.ggml.token_type", Meta::i32s(&types))
        .set("tokenizer.ggml.merges", Meta::strs(&MERGES))
        .set("tokenizer.ggml.bos_token_id", Meta::U32(ENDOFTEXT))
        .set("tokenizer.ggml.eos_token_id", Meta::U32(IM_END))
        .set("tokenizer.ggml.add_bos_token", Meta::Bool(false))
        .set("tokenizer.chat_template", Meta::str(CHAT_TEMPLATE));
    let mut rng = Rng::new(spec.seed);
    let mat = |name: &str, cols: u64, rows: u64, rng: &mut Rng| {
        let scale = 1.0 / (cols as f32).sqrt() * 1.7;
        TensorSpec::f32(name, &[cols, rows], &rng.vec((cols * rows) as usize, scale))
    };
    let norm = |name: &str, n: u64, rng: &mut Rng| {
        let w: Vec<f32> = (0..n).map(|_| 1.0 + rng.sym(0.2)).collect();
        TensorSpec::f32(name, &[n], &w)
    };
    let mut ts = vec![TensorSpec::f32("token_embd.weight", &[d, v], &rng.vec((d * v) as usize, 1.0))];
    for l in 0..spec.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        ts.push(norm(&n("attn_norm"), d, &mut rng));
        ts.push(mat(&n("attn_q"), d, d, &mut rng));
        ts.push(mat(&n("attn_k"), d, kv, &mut rng));
        ts.push(mat(&n("attn_v"), d, kv, &mut rng));
        ts.push(mat(&n("attn_output"), d, d, &mut rng));
        ts.push(norm(&n("ffn_norm"), d, &mut rng));
        ts.push(mat(&n("ffn_gate"), d, m, &mut rng));
        ts.push(mat(&n("ffn_up"), d, m, &mut rng));
        ts.push(mat(&n("ffn_down"), m, d, &mut rng));
    }
    ts.push(norm("output_norm.weight", d, &mut rng));
    if !spec.tied {
        ts.push(mat("output.weight", d, v, &mut rng));
    }
    g.tensors = ts;
    g
}

pub fn load_gguf(bytes: Vec<u8>) -> scalpel_engine::Result<Model> {
    Model::load(GGUF_NAME, ModelSource::Gguf(bytes), Precision::F32)
}

pub fn tiny_model() -> Model {
    load_gguf(tiny_llama(&LlamaSpec::default()).bytes()).expect("the tiny llama loads")
}

// ---------------------------------------------------------------------------
// Hugging Face GPT-2 (safetensors)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Gpt2Spec {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_inner: usize,
    pub n_positions: usize,
    /// Prefix tensor names with "transformer." (GPT2LMHeadModel checkpoints).
    pub prefix: bool,
    pub seed: u64,
}

impl Default for Gpt2Spec {
    fn default() -> Self {
        Gpt2Spec { n_layer: 2, n_embd: 32, n_head: 4, n_inner: 64, n_positions: 32, prefix: false, seed: 3 }
    }
}

/// A tensor for the safetensors writer: name, shape, dtype, little-endian bytes.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: safetensors::Dtype,
    pub data: Vec<u8>,
}

pub fn gpt2_config(spec: &Gpt2Spec) -> serde_json::Value {
    json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": spec.n_layer,
        "n_embd": spec.n_embd,
        "n_head": spec.n_head,
        "n_inner": spec.n_inner,
        "n_positions": spec.n_positions,
        "n_ctx": spec.n_positions,
        "vocab_size": VOCAB,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": ENDOFTEXT,
        "eos_token_id": ENDOFTEXT,
    })
}

/// GPT-2 tensors in the published layout (Conv1D weights are `[in, out]`).
pub fn gpt2_tensors(spec: &Gpt2Spec) -> Vec<StTensor> {
    let mut rng = Rng::new(spec.seed);
    let (d, m, v, p) = (spec.n_embd, spec.n_inner, VOCAB, spec.n_positions);
    let pre = if spec.prefix { "transformer." } else { "" };
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        out.push(StTensor { name, shape, dtype: safetensors::Dtype::F32, data: f32_bytes(&data) });
    };
    push(format!("{pre}wte.weight"), vec![v, d], rng.vec(v * d, 0.5));
    push(format!("{pre}wpe.weight"), vec![p, d], rng.vec(p * d, 0.1));
    for l in 0..spec.n_layer {
        let h = format!("{pre}h.{l}");
        let ones = |rng: &mut Rng, n: usize| (0..n).map(|_| 1.0 + rng.sym(0.2)).collect::<Vec<_>>();
        push(format!("{h}.ln_1.weight"), vec![d], ones(&mut rng, d));
        push(format!("{h}.ln_1.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.attn.c_attn.weight"), vec![d, 3 * d], rng.vec(d * 3 * d, 0.3));
        push(format!("{h}.attn.c_attn.bias"), vec![3 * d], rng.vec(3 * d, 0.1));
        push(format!("{h}.attn.c_proj.weight"), vec![d, d], rng.vec(d * d, 0.3));
        push(format!("{h}.attn.c_proj.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.ln_2.weight"), vec![d], ones(&mut rng, d));
        push(format!("{h}.ln_2.bias"), vec![d], rng.vec(d, 0.1));
        push(format!("{h}.mlp.c_fc.weight"), vec![d, m], rng.vec(d * m, 0.3));
        push(format!("{h}.mlp.c_fc.bias"), vec![m], rng.vec(m, 0.1));
        push(format!("{h}.mlp.c_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{h}.mlp.c_proj.bias"), vec![d], rng.vec(d, 0.1));
    }
    let ones: Vec<f32> = (0..d).map(|_| 1.0 + rng.sym(0.2)).collect();
    push(format!("{pre}ln_f.weight"), vec![d], ones);
    push(format!("{pre}ln_f.bias"), vec![d], rng.vec(d, 0.1));
    out
}

/// Serializes with the `safetensors` crate (header padded as upstream does).
pub fn safetensors_bytes(tensors: &[StTensor]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|t| {
            (t.name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// A minimal GPT-2 style `tokenizer.json` over the same byte-level vocabulary.
pub fn tokenizer_json() -> Vec<u8> {
    let (toks, types) = vocab();
    let mut vocab = serde_json::Map::new();
    for (i, t) in toks.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
    }
    let added: Vec<_> = toks
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == 3)
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": MERGES},
    });
    serde_json::to_vec(&spec).unwrap()
}

pub struct HfFiles {
    pub config: Vec<u8>,
    pub tokenizer: Option<Vec<u8>>,
    pub tokenizer_config: Option<Vec<u8>>,
    pub weights: Vec<(String, Vec<u8>)>,
}

impl HfFiles {
    pub fn gpt2(spec: &Gpt2Spec) -> Self {
        HfFiles {
            config: serde_json::to_vec(&gpt2_config(spec)).unwrap(),
            tokenizer: Some(tokenizer_json()),
            tokenizer_config: Some(
                serde_json::to_vec(&json!({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})).unwrap(),
            ),
            weights: vec![(ST_NAME.to_owned(), safetensors_bytes(&gpt2_tensors(spec)))],
        }
    }
    pub fn source(self) -> ModelSource {
        ModelSource::HuggingFace {
            config: self.config,
            tokenizer: self.tokenizer,
            tokenizer_config: self.tokenizer_config,
            weights: self.weights,
        }
    }
    pub fn load(self) -> scalpel_engine::Result<Model> {
        Model::load("tiny-gpt2", self.source(), Precision::F32)
    }
}

/// Llama-family Hugging Face checkpoint (SmolLM2 layout), for config tests.
pub fn llama_hf_config(spec: &LlamaSpec) -> serde_json::Value {
    json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_mlp,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "max_position_embeddings": spec.n_ctx,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": spec.tied,
    })
}

pub fn llama_hf_tensors(spec: &LlamaSpec) -> Vec<StTensor> {
    let mut rng = Rng::new(spec.seed);
    let (d, m, v) = (spec.d_model, spec.d_mlp, VOCAB);
    let kv = d / spec.n_heads * spec.n_kv_heads;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        out.push(StTensor { name, shape, dtype: safetensors::Dtype::F32, data: f32_bytes(&data) });
    };
    push("model.embed_tokens.weight".into(), vec![v, d], rng.vec(v * d, 1.0));
    for l in 0..spec.n_layers {
        let p = format!("model.layers.{l}");
        push(format!("{p}.input_layernorm.weight"), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
        push(format!("{p}.self_attn.q_proj.weight"), vec![d, d], rng.vec(d * d, 0.2));
        push(format!("{p}.self_attn.k_proj.weight"), vec![kv, d], rng.vec(kv * d, 0.2));
        push(format!("{p}.self_attn.v_proj.weight"), vec![kv, d], rng.vec(kv * d, 0.2));
        push(format!("{p}.self_attn.o_proj.weight"), vec![d, d], rng.vec(d * d, 0.2));
        push(format!("{p}.post_attention_layernorm.weight"), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
        push(format!("{p}.mlp.gate_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{p}.mlp.up_proj.weight"), vec![m, d], rng.vec(m * d, 0.2));
        push(format!("{p}.mlp.down_proj.weight"), vec![d, m], rng.vec(d * m, 0.15));
    }
    push("model.norm.weight".into(), vec![d], rng.vec(d, 0.2).iter().map(|x| 1.0 + x).collect());
    if !spec.tied {
        push("lm_head.weight".into(), vec![v, d], rng.vec(v * d, 0.3));
    }
    out
}

impl HfFiles {
    pub fn llama(spec: &LlamaSpec) -> Self {
        HfFiles {
            config: serde_json::to_vec(&llama_hf_config(spec)).unwrap(),
            tokenizer: Some(tokenizer_json()),
            tokenizer_config: None,
            weights: vec![(ST_NAME.to_owned(), safetensors_bytes(&llama_hf_tensors(spec)))],
        }
    }
}

pub fn tiny_gpt2() -> Model {
    HfFiles::gpt2(&Gpt2Spec::default()).load().expect("the tiny gpt2 loads")
}

// ---------------------------------------------------------------------------
// Panic capture
// ---------------------------------------------------------------------------

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}
static INSTALL: std::sync::Once = std::sync::Once::new();

/// A panic hook that, on threads inside `no_panic`, records the message,
/// location and the engine frames of the backtrace instead of printing them.
fn install_hook() {
    INSTALL.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) {
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                let frames: Vec<&str> = bt
                    .lines()
                    .filter(|l| l.contains("scalpel_engine") || l.contains("candle") || l.contains("tokenizers"))
                    .take(12)
                    .map(str::trim)
                    .collect();
                let msg = format!("{info}\n  frames: {}", frames.join("\n          "));
                LAST_PANIC.with(|l| *l.borrow_mut() = Some(msg));
            } else {
                prev(info)
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(message with location and engine
/// frames)` so one bad case does not hide the others.
pub fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|_| LAST_PANIC.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "panic".into()))
}
