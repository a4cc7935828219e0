//! Shared test helpers: the GPU (or a skip), a seeded PRNG, and a tiny GGUF
//! writer (copied from crates/engine/tests/common/mod.rs).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use scalpel_gpu::{block_on, Gpu, GpuOptions};

/// The shared test device (software adapters allowed). `None` means skip,
/// unless SCALPEL_REQUIRE_GPU=1, which turns a missing adapter into a failure.
pub fn gpu() -> Option<Arc<Gpu>> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    GPU.get_or_init(|| match block_on(Gpu::new(&GpuOptions::allow_software())) {
        Ok(g) => {
            eprintln!("GPU: {} ({}, {}, software: {}, shader-f16: {}, subgroups: {})",
                g.info.name, g.info.backend, g.info.device_type, g.info.software, g.info.shader_f16, g.info.subgroups);
            Some(Arc::new(g))
        }
        Err(e) => {
            if std::env::var("SCALPEL_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("SCALPEL_REQUIRE_GPU=1 but {e}");
            }
            eprintln!("SKIP: {e} (install mesa-vulkan-drivers for lavapipe; SCALPEL_REQUIRE_GPU=1 makes this a failure)");
            None
        }
    })
    .clone()
}

/// Max |a - b| over two equal-length slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn bytes(xs: &[f32]) -> Vec<u8> {
    bytemuck_free(xs)
}
fn bytemuck_free(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn u32_bytes(xs: &[u32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
pub fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

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

