//! The transformer: one forward pass for the llama family and GPT-2, with a
//! hook at every TransformerLens hook point.
//!
//! No hidden weight processing: no LayerNorm folding, no centering of the
//! unembedding, no merged biases. The numbers are the model's own.
//!
//! GGUF stores llama Q/K rows permuted for llama.cpp's interleaved RoPE. The
//! weights are used as stored (so `quantized` logits match llama.cpp-style
//! engines bit for bit), and only the values shown to q/k hooks are put in
//! Hugging Face head-dim order, as TransformerLens shows them.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::config::{Activation, Config, NormKind, PosEmbedding};
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::hooks::{ActivationCache, Hook, HookCtx, HookPoint, Site};
use crate::kernels::Kernels;
pub use scalpel_types::{Matrix, Precision};
use crate::tokenizer::Tokenizer;

/// Where the model's bytes come from. The engine does no I/O of its own.
pub enum ModelSource {
    /// A whole GGUF file.
    Gguf(Vec<u8>),
    /// A Hugging Face repository layout. `weights` holds every
    /// `.safetensors` file (one, or all shards) with its file name.
    HuggingFace {
        config: Vec<u8>,
        tokenizer: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        weights: Vec<(String, Vec<u8>)>,
    },
}

/// Which positions to compute logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
}

enum Linear {
    F32 { w: candle_nn::Linear },
    Quant { w: QMatMul, b: Option<Tensor> },
    /// Quantized, multiplied by Scalpel's kernels (`crate::kernels`).
    Scalpel { w: scalpel_kernels::QMatrix, b: Option<Tensor> },
}

impl Linear {
    fn new(w: Tensor, b: Option<Tensor>, precision: Precision) -> Result<Linear> {
        let in_dim = w.dim(1)?;
        if precision == Precision::Quantized && in_dim % GgmlDType::Q8_0.block_size() == 0 {
            // `quantize` reads the storage from its start, ignoring a view's
            // offset (e.g. the k and v slices of GPT-2's fused c_attn): copy.
            let q = QTensor::quantize(&w.force_contiguous()?, GgmlDType::Q8_0)?;
            return Ok(Linear::Quant { w: QMatMul::from_qtensor(q)?, b });
        }
        Ok(Linear::F32 { w: candle_nn::Linear::new(w, b) })
    }

    fn from_q(q: QTensor, precision: Precision) -> Result<Linear> {
        match precision {
            Precision::F32 => Ok(Linear::F32 { w: candle_nn::Linear::new(q.dequantize(&Device::Cpu)?, None) }),
            Precision::Quantized => Ok(Linear::Quant { w: QMatMul::from_qtensor(q)?, b: None }),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Linear::F32 { w } => w.forward(x)?,
            Linear::Quant { w, b } => {
                let y = w.forward(x)?;
                match b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
            Linear::Scalpel { w, b } => {
                let y = crate::kernels::forward(w, x)?;
                match b {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        })
    }

    /// Moves a quantized matrix to the given (resolved) kernels; F32 layers
    /// and types the Scalpel kernels do not handle are left as they are.
    fn set_kernels(&mut self, k: Kernels) -> Result<()> {
        let new = match (&*self, k) {
            (Linear::Quant { w: QMatMul::QTensor(q), b }, Kernels::Scalpel) => {
                crate::kernels::to_scalpel(q).map(|w| Linear::Scalpel { w, b: b.clone() })
            }
            (Linear::Scalpel { w, b }, Kernels::Candle) => {
                Some(Linear::Quant { w: QMatMul::from_qtensor(crate::kernels::to_candle(w)?)?, b: b.clone() })
            }
            _ => None,
        };
        if let Some(new) = new {
            *self = new;
        }
        Ok(())
    }
}

impl Linear {
    /// The weight as used, dequantized to f32, `[out, in]`.
    fn weight_f32(&self) -> Result<Tensor> {
        Ok(match self {
            Linear::F32 { w } => w.weight().clone(),
            Linear::Quant { w: QMatMul::QTensor(q), .. } => q.dequantize(&Device::Cpu)?,
            Linear::Quant { w: QMatMul::Tensor(t), .. } => t.clone(),
            Linear::Quant { w: QMatMul::TensorF16(t), .. } => t.to_dtype(DType::F32)?,
            Linear::Scalpel { w, .. } => crate::kernels::dequantize(w)?,
        })
    }
    fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::F32 { w } => w.bias(),
            Linear::Quant { b, .. } | Linear::Scalpel { b, .. } => b.as_ref(),
        }
    }
}

/// A weight taken out by `Model::replace_weight`, to put back with `restore_weight`.
pub struct SavedWeight {
    layer: usize,
    matrix: Matrix,
    linear: Linear,
}

struct Norm {
    kind: NormKind,
    w: Tensor,
    b: Option<Tensor>,
    eps: f32,
}

impl Norm {
    /// `differentiable` picks candle's composed ops, which have a backward pass.
    fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        Ok(match (self.kind, differentiable) {
            (NormKind::Rms, false) => candle_nn::ops::rms_norm(x, &self.w, self.eps)?,
            (NormKind::Rms, true) => candle_nn::ops::rms_norm_slow(x, &self.w, self.eps)?,
            (NormKind::Layer, d) => {
                let b = match &self.b {
                    Some(b) => b.clone(),
                    None => self.w.zeros_like()?,
                };
                if d {
                    candle_nn::ops::layer_norm_slow(x, &self.w, &b, self.eps)?
                } else {
                    candle_nn::ops::layer_norm(x, &self.w, &b, self.eps)?
                }
            }
        })
    }
}

struct Block {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: Norm,
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
}

/// Keys and values of every layer for the positions seen so far (after RoPE),
/// each `[batch, kv_head, pos, d_head]`.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(cfg: &Config) -> Self {
        KvCache { layers: vec![None; cfg.n_layers], len: 0 }
    }
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget everything after the first `n` positions (backtracking).
    pub fn truncate(&mut self, n: usize) -> Result<()> {
        if n >= self.len {
            return Ok(());
        }
        for kv in self.layers.iter_mut().flatten() {
            kv.0 = kv.0.narrow(2, 0, n)?;
            kv.1 = kv.1.narrow(2, 0, n)?;
        }
        self.len = n;
        Ok(())
    }
    /// The cached keys and values of one layer (for KV-cache interventions).
    pub fn layer(&self, l: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(l).and_then(|x| x.as_ref())
    }
    pub fn set_layer(&mut self, l: usize, k: Tensor, v: Tensor) -> Result<()> {
        match self.layers.get_mut(l) {
            Some(Some(kv)) if kv.0.shape() == k.shape() && kv.1.shape() == v.shape() => {
                *kv = (k, v);
                Ok(())
            }
            _ => Err(Error::input(format!("KV cache layer {l}: no entry of that shape to replace"))),
        }
    }
}

pub struct Model {
    pub name: String,
    pub config: Config,
    pub precision: Precision,
    /// Kernels of the quantized matmuls (always `Candle` in f32 precision).
    kernels: Kernels,
    /// Things the user should know about this model (unknown pre-tokenizer, ...).
    pub warnings: Vec<String>,
    tokenizer: Tokenizer,
    embed: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    ln_final: Norm,
    unembed: Linear,
    /// RoPE inverse frequencies, `[d_head / 2]`.
    inv_freq: Vec<f32>,
    /// For GGUF llama: head-dim gathers HF-order-from-stored and back, used
    /// only when a q/k hook is read. `None`: weights are in HF order.
    qk_perm: Option<(Tensor, Tensor)>,
    /// Use ops with a backward pass (gradients w.r.t. activations).
    differentiable: bool,
}

/// Applies the hook at `point` (if any hook wants it) and checks what it returns.
#[inline]
fn hook(hooks: &mut Option<&mut (dyn Hook + '_)>, point: HookPoint, start_pos: usize, seq_len: usize, x: Tensor) -> Result<Tensor> {
    let Some(h) = hooks.as_deref_mut() else { return Ok(x) };
    if !h.wants(point) {
        return Ok(x);
    }
    let ctx = HookCtx { point, start_pos, seq_len };
    match h.call(&ctx, &x)? {
        None => Ok(x),
        Some(new) => {
            if new.shape() != x.shape() || new.dtype() != DType::F32 {
                return Err(Error::input(format!(
                    "hook at '{}' returned a {:?} {:?} tensor; it must keep shape {:?} and dtype f32",
                    point.name(),
                    new.dtype(),
                    new.dims(),
                    x.dims()
                )));
            }
            Ok(new)
        }
    }
}

fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, n_kv, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n_rep], 2)?.reshape((b, n_kv * n_rep, t, d))?)
}

impl Model {
    /// Loads with `Kernels::Auto`.
    pub fn load(name: &str, source: ModelSource, precision: Precision) -> Result<Model> {
        Self::load_with(name, source, precision, Kernels::Auto)
    }

    /// Loads, multiplying quantized matrices with `kernels` (`Auto`: the
    /// faster on this target, see [`Kernels::resolve`]).
    pub fn load_with(name: &str, source: ModelSource, precision: Precision, kernels: Kernels) -> Result<Model> {
        let mut model = Self::load_candle(name, source, precision)?;
        model.set_kernels(kernels)?;
        Ok(model)
    }

    /// The kernels of the quantized matmuls: `Candle` or `Scalpel` (never
    /// `Auto`); `Candle` in f32 precision, where nothing is quantized.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Switches the quantized matmuls' kernels in place (repacking the
    /// blocks; no weight changes). A no-op in f32 precision. Matrices of a
    /// type the Scalpel kernels do not handle stay on candle.
    pub fn set_kernels(&mut self, kernels: Kernels) -> Result<()> {
        let k = if self.precision == Precision::Quantized { kernels.resolve() } else { Kernels::Candle };
        for blk in &mut self.blocks {
            for l in [&mut blk.q, &mut blk.k, &mut blk.v, &mut blk.o, &mut blk.up, &mut blk.down] {
                l.set_kernels(k)?;
            }
            if let Some(g) = &mut blk.gate {
                g.set_kernels(k)?;
            }
        }
        self.unembed.set_kernels(k)?;
        self.kernels = k;
        Ok(())
    }

    fn load_candle(name: &str, source: ModelSource, precision: Precision) -> Result<Model> {
        match source {
            ModelSource::Gguf(bytes) => Self::from_gguf(name, &bytes, precision),
            ModelSource::HuggingFace { config, tokenizer, tokenizer_config, weights } => {
                crate::loader::from_hf(name, &config, tokenizer.as_deref(), tokenizer_config.as_deref(), &weights, precision)
            }
        }
    }

    fn from_gguf(name: &str, bytes: &[u8], precision: Precision) -> Result<Model> {
        let g = Gguf::parse(name, bytes)?;
        let cfg = Config::from_gguf(&g)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        let file = name;
        let check = |t: &str, shape: &[usize], want: &[usize]| -> Result<()> {
            if shape != want {
                return Err(Error::load(file, format!("tensor '{t}' has shape {shape:?}, expected {want:?}")));
            }
            Ok(())
        };
        let qt = |t: &str, want: &[usize]| -> Result<QTensor> {
            let q = g.qtensor(t)?;
            check(t, q.shape().dims(), want)?;
            Ok(q)
        };
        let vec_f32 = |t: &str, n: usize| -> Result<Tensor> { Ok(qt(t, &[n])?.dequantize(&Device::Cpu)?) };
        let (d, v, m) = (cfg.d_model, cfg.d_vocab, cfg.d_mlp);
        let dh = cfg.d_head;
        let kv = cfg.n_kv_heads * dh;
        let embed_q = qt("token_embd.weight", &[v, d])?;
        let embed = embed_q.dequantize(&Device::Cpu)?;
        let unembed = match g.info("output.weight") {
            Some(_) => Linear::from_q(qt("output.weight", &[v, d])?, precision)?,
            None => match precision {
                Precision::F32 => Linear::F32 { w: candle_nn::Linear::new(embed.clone(), None) },
                Precision::Quantized => Linear::from_q(embed_q, precision)?,
            },
        };
        let eps = cfg.norm_eps as f32;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let lin = |s: &str, want: [usize; 2]| -> Result<Linear> { Linear::from_q(qt(&n(s), &want)?, precision) };
            blocks.push(Block {
                ln1: Norm { kind: NormKind::Rms, w: vec_f32(&n("attn_norm"), d)?, b: None, eps },
                q: lin("attn_q", [d, d])?,
                k: lin("attn_k", [kv, d])?,
                v: lin("attn_v", [kv, d])?,
                o: lin("attn_output", [d, d])?,
                ln2: Norm { kind: NormKind::Rms, w: vec_f32(&n("ffn_norm"), d)?, b: None, eps },
                gate: Some(lin("ffn_gate", [m, d])?),
                up: lin("ffn_up", [m, d])?,
                down: lin("ffn_down", [d, m])?,
            });
        }
        let ln_final = Norm { kind: NormKind::Rms, w: vec_f32("output_norm.weight", d)?, b: None, eps };
        let warnings = tokenizer.warnings.clone();
        let mut model = Model::assemble(name, cfg, precision, tokenizer, embed, None, blocks, ln_final, unembed, warnings);
        // Stored dim 2i+j of a head is HF dim j*dh/2 + i.
        let half = dh / 2;
        let to_hf: Vec<u32> = (0..dh).map(|r| (2 * (r % half) + r / half) as u32).collect();
        let to_stored: Vec<u32> = (0..dh).map(|s| ((s % 2) * half + s / 2) as u32).collect();
        model.qk_perm = Some((
            Tensor::new(to_hf.as_slice(), &Device::Cpu)?,
            Tensor::new(to_stored.as_slice(), &Device::Cpu)?,
        ));
        Ok(model)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        name: &str,
        config: Config,
        precision: Precision,
        tokenizer: Tokenizer,
        embed: Tensor,
        pos_embed: Option<Tensor>,
        blocks: Vec<Block>,
        ln_final: Norm,
        unembed: Linear,
        warnings: Vec<String>,
    ) -> Model {
        let dh = config.d_head;
        let theta = config.rope_theta;
        let inv_freq = (0..dh).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / dh as f32)).collect();
        Model {
            name: name.to_owned(),
            config,
            precision,
            kernels: Kernels::Candle,
            warnings,
            tokenizer,
            embed,
            pos_embed,
            blocks,
            ln_final,
            unembed,
            inv_freq,
            qk_perm: None,
            differentiable: false,
        }
    }

    fn linear(&self, layer: usize, m: Matrix) -> Result<&Linear> {
        let blk = self.blocks.get(layer).ok_or_else(|| {
            Error::input(format!("layer {layer} is out of range (the model has {} layers)", self.config.n_layers))
        })?;
        Ok(match m {
            Matrix::Q => &blk.q,
            Matrix::K => &blk.k,
            Matrix::V => &blk.v,
            Matrix::O => &blk.o,
            Matrix::Gate => blk.gate.as_ref().ok_or_else(|| Error::input("this model's MLP has no gate matrix"))?,
            Matrix::Up => &blk.up,
            Matrix::Down => &blk.down,
        })
    }

    /// A block weight as the model uses it, in f32, `[out, in]` (GGUF q/k
    /// rows in their stored, RoPE-interleaved order).
    pub fn weight(&self, layer: usize, m: Matrix) -> Result<Tensor> {
        self.linear(layer, m)?.weight_f32()
    }

    pub fn bias(&self, layer: usize, m: Matrix) -> Result<Option<Tensor>> {
        Ok(self.linear(layer, m)?.bias().cloned())
    }

    /// Replaces a block weight (`[out, in]`, f32; quantized to Q8_0 in
    /// `quantized` precision), keeping its bias. Returns the old one.
    pub fn replace_weight(&mut self, layer: usize, m: Matrix, w: Tensor) -> Result<SavedWeight> {
        let old = self.linear(layer, m)?;
        let want = old.weight_f32()?.dims().to_vec();
        if w.dims() != want.as_slice() {
            return Err(Error::input(format!("replacement for layer {layer} {m:?} has shape {:?}, expected {want:?}", w.dims())));
        }
        let mut new = Linear::new(w.to_dtype(DType::F32)?, old.bias().cloned(), self.precision)?;
        new.set_kernels(self.kernels)?;
        let blk = &mut self.blocks[layer];
        let slot = match m {
            Matrix::Q => &mut blk.q,
            Matrix::K => &mut blk.k,
            Matrix::V => &mut blk.v,
            Matrix::O => &mut blk.o,
            Matrix::Gate => blk.gate.as_mut().expect("checked by linear()"),
            Matrix::Up => &mut blk.up,
            Matrix::Down => &mut blk.down,
        };
        Ok(SavedWeight { layer, matrix: m, linear: std::mem::replace(slot, new) })
    }

    pub fn restore_weight(&mut self, saved: SavedWeight) {
        let blk = &mut self.blocks[saved.layer];
        let slot = match saved.matrix {
            Matrix::Q => &mut blk.q,
            Matrix::K => &mut blk.k,
            Matrix::V => &mut blk.v,
            Matrix::O => &mut blk.o,
            Matrix::Gate => blk.gate.as_mut().expect("saved from an existing gate"),
            Matrix::Up => &mut blk.up,
            Matrix::Down => &mut blk.down,
        };
        *slot = saved.linear;
    }

    /// Adds `vector` (`d_head` numbers, in the head-dim order hooks show) to
    /// the cached keys (post-RoPE, as `attn.hook_rot_k`) or values of `layer`
    /// at `positions`, for `heads` (KV heads; all if `None`). KV-cache steering.
    pub fn add_to_kv_cache(
        &self,
        cache: &mut KvCache,
        layer: usize,
        values: bool,
        heads: Option<&[usize]>,
        positions: &[usize],
        vector: &[f32],
    ) -> Result<()> {
        let cfg = &self.config;
        let (k, v) = cache
            .layer(layer)
            .cloned()
            .ok_or_else(|| Error::input(format!("the KV cache has nothing for layer {layer} yet")))?;
        let (b, nkv, t, dh) = k.dims4()?;
        if vector.len() != dh {
            return Err(Error::input(format!("KV vector has {} numbers; d_head is {dh}", vector.len())));
        }
        let mut vec_stored = vector.to_vec();
        if let (false, Some((_, to_stored))) = (values, &self.qk_perm) {
            let idx: Vec<u32> = to_stored.to_vec1()?;
            vec_stored = idx.iter().map(|&i| vector[i as usize]).collect();
        }
        let mut delta = vec![0f32; nkv * t * dh];
        for h in 0..nkv {
            if heads.is_some_and(|hs| !hs.contains(&h)) {
                continue;
            }
            for &p in positions {
                if p >= t {
                    return Err(Error::input(format!("KV position {p} is not cached (the cache holds {t})")));
                }
                delta[(h * t + p) * dh..(h * t + p + 1) * dh].copy_from_slice(&vec_stored);
            }
        }
        if let Some(&bad) = heads.and_then(|hs| hs.iter().find(|&&h| h >= cfg.n_kv_heads)) {
            return Err(Error::input(format!("KV head {bad} is out of range (the model has {} KV heads)", cfg.n_kv_heads)));
        }
        let delta = Tensor::from_vec(delta, (1, nkv, t, dh), &Device::Cpu)?.broadcast_as((b, nkv, t, dh))?;
        let (k, v) = if values { (k, (v + delta)?) } else { ((k + delta)?, v) };
        cache.set_layer(layer, k, v)
    }

    /// Switches to ops that have a backward pass, so a hook can add a zero
    /// `Var` and read the metric's gradient at any hook point (attribution
    /// patching). Slower; f32 precision only (quantized matmuls have no
    /// backward). Values agree with the fast ops to float rounding.
    pub fn set_differentiable(&mut self, on: bool) -> Result<()> {
        if on && self.precision == Precision::Quantized {
            return Err(Error::input("gradients need f32 precision (quantized matmuls have no backward pass)"));
        }
        self.differentiable = on;
        Ok(())
    }

    /// Token embedding matrix `[vocab, d_model]`.
    pub fn embedding_matrix(&self) -> &Tensor {
        &self.embed
    }

    /// Unembedding matrix `[vocab, d_model]` (f32).
    pub fn unembedding_matrix(&self) -> Result<Tensor> {
        self.unembed.weight_f32()
    }

    /// The final norm (`ln_final`) applied to residual-stream values `[.., d_model]`.
    pub fn final_norm(&self, resid: &Tensor) -> Result<Tensor> {
        self.ln_final.forward(resid, self.differentiable)
    }

    /// The final norm's parameters as stored: weight `[d_model]`, bias
    /// `[d_model]` (LayerNorm with a bias only) and epsilon.
    pub fn final_norm_params(&self) -> (&Tensor, Option<&Tensor>, f32) {
        (&self.ln_final.w, self.ln_final.b.as_ref(), self.ln_final.eps)
    }

    /// Logits from normalised residual values `[.., d_model]` (logit lens: apply
    /// `final_norm` first).
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        self.unembed.forward(x)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Every hook name of this model, in forward order.
    pub fn hook_names(&self) -> Vec<String> {
        HookPoint::all(&self.config).iter().map(HookPoint::name).collect()
    }

    pub fn hook_point(&self, name: &str) -> Result<HookPoint> {
        HookPoint::parse(name, &self.config).map_err(Error::Input)
    }

    /// Checks ids and makes a `[1, t]` tensor.
    pub fn ids_tensor(&self, ids: &[u32]) -> Result<Tensor> {
        self.batch_tensor(&[ids])
    }

    /// Checks a batch of equal-length id sequences and makes a `[b, t]` tensor.
    pub fn batch_tensor(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let t = batch.first().map(|s| s.len()).unwrap_or(0);
        if t == 0 {
            return Err(Error::input("empty prompt: there are no tokens to run"));
        }
        let mut flat = Vec::with_capacity(batch.len() * t);
        for (i, s) in batch.iter().enumerate() {
            if s.len() != t {
                return Err(Error::input(format!(
                    "batch item {i} has {} tokens but item 0 has {t}; sequences in a batch must have equal length",
                    s.len()
                )));
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= self.config.d_vocab) {
                return Err(Error::input(format!(
                    "token id {bad} is out of range: the vocabulary has {} tokens",
                    self.config.d_vocab
                )));
            }
            flat.extend_from_slice(s);
        }
        Ok(Tensor::from_vec(flat, (batch.len(), t), &Device::Cpu)?)
    }

    /// Hooks a per-head value. Hooks always see `[b, t, head, d_head]` in
    /// Hugging Face head-dim order; `x` may be `[b, head, t, d_head]`
    /// (`head_major`) and, for q/k of a GGUF model, in stored order (`qk`).
    #[allow(clippy::too_many_arguments)]
    fn hook_head_values(
        &self,
        h: &mut Option<&mut (dyn Hook + '_)>,
        point: HookPoint,
        start: usize,
        t: usize,
        x: Tensor,
        head_major: bool,
        qk: bool,
    ) -> Result<Tensor> {
        if !h.as_deref().is_some_and(|h| h.wants(point)) {
            return Ok(x);
        }
        let perm = if qk { self.qk_perm.as_ref() } else { None };
        let mut shown = if head_major { x.transpose(1, 2)?.contiguous()? } else { x.clone() };
        if let Some((to_hf, _)) = perm {
            shown = shown.index_select(to_hf, 3)?;
        }
        let before = shown.clone();
        let after = hook(h, point, start, t, shown)?;
        if after.id() == before.id() {
            return Ok(x);
        }
        let mut back = after;
        if let Some((_, to_stored)) = perm {
            back = back.index_select(to_stored, 3)?;
        }
        Ok(if head_major { back.transpose(1, 2)?.contiguous()? } else { back })
    }

    fn rope_tables(&self, start: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in start..start + t {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (t, half), &Device::Cpu)?,
        ))
    }

    /// Runs the model on `tokens` (`[batch, t]` u32), continuing from `cache`
    /// if given (and extending it). Returns logits `[batch, t | 1, vocab]`.
    pub fn forward(
        &self,
        tokens: &Tensor,
        cache: Option<&mut KvCache>,
        mut hooks: Option<&mut (dyn Hook + '_)>,
        logits: Logits,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t) = tokens.dims2()?;
        let start = cache.as_ref().map(|c| c.len).unwrap_or(0);
        self.check_span(start, t)?;
        let h = &mut hooks;
        let g = |site| HookPoint::global(site);
        let mut x = self.embed.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, cfg.d_model))?;
        x = hook(h, g(Site::Embed), start, t, x)?;
        if let Some(wpe) = &self.pos_embed {
            let pos = wpe.narrow(0, start, t)?.unsqueeze(0)?.broadcast_as((b, t, cfg.d_model))?.contiguous()?;
            let pos = hook(h, g(Site::PosEmbed), start, t, pos)?;
            x = (x + pos)?;
        }
        self.forward_from(0, x, start, cache, hooks, logits)
    }

    fn check_span(&self, start: usize, t: usize) -> Result<()> {
        if t == 0 {
            return Err(Error::input("empty prompt: there are no tokens to run"));
        }
        if start + t > self.config.n_ctx {
            return Err(Error::input(format!(
                "{} tokens ({t} new + {start} cached) exceed the model's context length of {}",
                start + t,
                self.config.n_ctx
            )));
        }
        Ok(())
    }

    /// Runs blocks `layer..` on `resid` (the `blocks.{layer}.hook_resid_pre`
    /// value, `[batch, t, d_model]`, for absolute positions `start..start+t`),
    /// then the final norm and unembedding. If `start > 0`, `cache` must hold
    /// keys and values for positions `0..start` of layers `layer..` (a
    /// prefix shared by the batch, or one per batch item). Patching sweeps use
    /// this to reuse everything a patch cannot change.
    pub fn forward_from(
        &self,
        layer: usize,
        resid: Tensor,
        start: usize,
        cache: Option<&mut KvCache>,
        mut hooks: Option<&mut (dyn Hook + '_)>,
        logits: Logits,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t, _) = resid.dims3()?;
        self.check_span(start, t)?;
        if layer > cfg.n_layers {
            return Err(Error::input(format!("layer {layer} is out of range (the model has {} layers)", cfg.n_layers)));
        }
        match cache.as_deref() {
            Some(c) if c.layers.len() != cfg.n_layers => {
                return Err(Error::input(format!(
                    "KV cache was made for a {}-layer model; this one has {} layers",
                    c.layers.len(),
                    cfg.n_layers
                )))
            }
            Some(c) if c.len != start => {
                return Err(Error::input(format!("KV cache holds {} positions but the input starts at {start}", c.len)))
            }
            None if start > 0 => return Err(Error::input("positions after 0 need a KV cache holding the prefix")),
            _ => {}
        }
        let h = &mut hooks;
        let g = |site| HookPoint::global(site);
        let (nh, nkv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let diff = self.differentiable;
        let mut x = resid;
        let rope = match cfg.pos_embedding {
            PosEmbedding::Rope => Some(self.rope_tables(start, t)?),
            PosEmbedding::Learned => None,
        };
        // Masked (future) keys: key j > query i in absolute positions.
        let mask = if t > 1 {
            let kv_len = start + t;
            let m: Vec<u8> =
                (0..t).flat_map(|i| (0..kv_len).map(move |j| u8::from(j > start + i))).collect();
            Some(Tensor::from_vec(m, (t, kv_len), &Device::Cpu)?)
        } else {
            None
        };
        let neg_inf = Tensor::new(f32::NEG_INFINITY, &Device::Cpu)?;
        let scale = (dh as f64).sqrt();
        let mut new_kv = Vec::new();

        for (l, blk) in self.blocks.iter().enumerate().skip(layer) {
            let p = |site| HookPoint::block(l, site);
            let resid = hook(h, p(Site::ResidPre), start, t, x)?;
            let xn = hook(h, p(Site::Ln1Normalized), start, t, blk.ln1.forward(&resid, diff)?)?;
            // q, k, v leave their projections as [b, t, head, d_head]; attention
            // runs on [b, head, t, d_head], the layout candle's kernels want.
            let q = blk.q.forward(&xn)?.reshape((b, t, nh, dh))?;
            let q = self.hook_head_values(h, p(Site::Q), start, t, q, false, true)?;
            let k = blk.k.forward(&xn)?.reshape((b, t, nkv, dh))?;
            let k = self.hook_head_values(h, p(Site::K), start, t, k, false, true)?;
            let v = blk.v.forward(&xn)?.reshape((b, t, nkv, dh))?;
            let v = self.hook_head_values(h, p(Site::V), start, t, v, false, false)?;
            let mut q = q.transpose(1, 2)?.contiguous()?;
            let mut k = k.transpose(1, 2)?.contiguous()?;
            let mut v = v.transpose(1, 2)?.contiguous()?;
            if let Some((cos, sin)) = &rope {
                let rot = |x: &Tensor| -> Result<Tensor> {
                    Ok(match (self.qk_perm.is_some(), diff) {
                        (true, false) => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
                        (true, true) => candle_nn::rotary_emb::rope_i_slow(x, cos, sin)?,
                        (false, false) => candle_nn::rotary_emb::rope(x, cos, sin)?,
                        (false, true) => candle_nn::rotary_emb::rope_slow(x, cos, sin)?,
                    })
                };
                q = self.hook_head_values(h, p(Site::RotQ), start, t, rot(&q)?, true, true)?;
                k = self.hook_head_values(h, p(Site::RotK), start, t, rot(&k)?, true, true)?;
            }
            if let Some(c) = cache.as_deref() {
                if start > 0 && c.layers[l].is_none() {
                    return Err(Error::input(format!("KV cache has no entry for layer {l} but the input starts at {start}")));
                }
                if let Some((pk, pv)) = &c.layers[l] {
                    // A prefix cached for one sequence serves a whole batch.
                    let (pk, pv) = if pk.dim(0)? != b {
                        (pk.broadcast_as((b, pk.dim(1)?, pk.dim(2)?, pk.dim(3)?))?.contiguous()?,
                         pv.broadcast_as((b, pv.dim(1)?, pv.dim(2)?, pv.dim(3)?))?.contiguous()?)
                    } else {
                        (pk.clone(), pv.clone())
                    };
                    k = Tensor::cat(&[&pk, &k], 2)?;
                    v = Tensor::cat(&[&pv, &v], 2)?;
                }
                // Written to the cache only once the whole pass succeeds, so a
                // failed or cancelled pass leaves it as it was.
                new_kv.push((l, k.clone(), v.clone()));
            }
            let k = repeat_kv(k, nh / nkv)?;
            let v = repeat_kv(v, nh / nkv)?;
            let mut scores = (q.matmul(&k.t()?)? / scale)?;
            if let Some(m) = &mask {
                let m = m.broadcast_as(scores.shape())?;
                scores = m.where_cond(&neg_inf.broadcast_as(scores.shape())?, &scores)?;
            }
            let scores = hook(h, p(Site::AttnScores), start, t, scores)?;
            let pattern = hook(h, p(Site::Pattern), start, t, if diff { candle_nn::ops::softmax(&scores, candle_core::D::Minus1)? } else { candle_nn::ops::softmax_last_dim(&scores)? })?;
            let z = pattern.matmul(&v)?.transpose(1, 2)?.contiguous()?;
            let z = hook(h, p(Site::Z), start, t, z)?;
            let attn_out = hook(h, p(Site::AttnOut), start, t, blk.o.forward(&z.reshape((b, t, nh * dh))?)?)?;
            let resid = hook(h, p(Site::ResidMid), start, t, (resid + attn_out)?)?;

            let xn = hook(h, p(Site::Ln2Normalized), start, t, blk.ln2.forward(&resid, diff)?)?;
            let post = match &blk.gate {
                Some(gate) => {
                    let pre = hook(h, p(Site::MlpPre), start, t, gate.forward(&xn)?)?;
                    let lin = hook(h, p(Site::MlpPreLinear), start, t, blk.up.forward(&xn)?)?;
                    (candle_nn::ops::silu(&pre)? * lin)?
                }
                None => {
                    let pre = hook(h, p(Site::MlpPre), start, t, blk.up.forward(&xn)?)?;
                    match cfg.act {
                        Activation::GeluTanh => pre.gelu()?,
                        Activation::Gelu => pre.gelu_erf()?,
                        Activation::Silu => candle_nn::ops::silu(&pre)?,
                    }
                }
            };
            let post = hook(h, p(Site::MlpPost), start, t, post)?;
            let mlp_out = hook(h, p(Site::MlpOut), start, t, blk.down.forward(&post)?)?;
            x = hook(h, p(Site::ResidPost), start, t, (resid + mlp_out)?)?;
        }
        let x = hook(h, g(Site::LnFinalNormalized), start, t, self.ln_final.forward(&x, diff)?)?;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(1, t - 1, 1)?,
        };
        let out = self.unembed.forward(&x)?;
        if let Some(c) = cache {
            for (l, k, v) in new_kv {
                c.layers[l] = Some((k, v));
            }
            c.len = start + t;
        }
        Ok(out)
    }

    /// Logits `[t, vocab]` for one sequence, no cache, no hooks.
    pub fn logits(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.forward(&self.ids_tensor(ids)?, None, None, Logits::All)?.squeeze(0)?)
    }

    /// Logits `[t, vocab]` and the values at `points` (batch axis removed).
    pub fn run_with_cache(&self, ids: &[u32], points: &[HookPoint]) -> Result<(Tensor, ActivationCache)> {
        let mut cache = ActivationCache::new(points.iter().copied());
        let logits = self.forward(&self.ids_tensor(ids)?, None, Some(&mut cache), Logits::All)?.squeeze(0)?;
        for v in cache.values.values_mut() {
            *v = v.squeeze(0)?;
        }
        Ok((logits, cache))
    }

    /// The `k` highest next-token logits after `ids`, highest first.
    pub fn next_token_top_k(&self, ids: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
        let logits = self.forward(&self.ids_tensor(ids)?, None, None, Logits::Last)?;
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        Ok(crate::top_k(&row, k))
    }

    pub(crate) fn from_parts(
        name: &str,
        config: Config,
        precision: Precision,
        tokenizer: Tokenizer,
        parts: crate::loader::Parts,
    ) -> Result<Model> {
        let eps = config.norm_eps as f32;
        let kind = config.norm;
        let norm = |(w, b): (Tensor, Option<Tensor>)| Norm { kind, w, b, eps };
        let mut blocks = Vec::with_capacity(parts.blocks.len());
        for pb in parts.blocks {
            blocks.push(Block {
                ln1: norm(pb.ln1),
                q: Linear::new(pb.q.0, pb.q.1, precision)?,
                k: Linear::new(pb.k.0, pb.k.1, precision)?,
                v: Linear::new(pb.v.0, pb.v.1, precision)?,
                o: Linear::new(pb.o.0, pb.o.1, precision)?,
                ln2: norm(pb.ln2),
                gate: match pb.gate {
                    Some((w, b)) => Some(Linear::new(w, b, precision)?),
                    None => None,
                },
                up: Linear::new(pb.up.0, pb.up.1, precision)?,
                down: Linear::new(pb.down.0, pb.down.1, precision)?,
            });
        }
        let unembed = Linear::new(parts.unembed, None, precision)?;
        let mut warnings = tokenizer.warnings.clone();
        warnings.extend(parts.warnings);
        let ln_final = norm(parts.ln_final);
        Ok(Model::assemble(name, config, precision, tokenizer, parts.embed, parts.pos_embed, blocks, ln_final, unembed, warnings))
    }
}
