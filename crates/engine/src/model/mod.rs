//! The transformer: one forward pass for every architecture the engine
//! reads (`arch/`), with a hook at every TransformerLens hook point.
//!
//! No hidden weight processing: no LayerNorm folding, no centering of the
//! unembedding, no merged biases. The numbers are the model's own.
//!
//! - `forward.rs`: the pass and its blocks; `attention.rs`, `mlp.rs`,
//!   `rotary.rs`: the pieces of a block; `linear.rs`: linear layers at a
//!   precision, and norms.

mod attention;
mod budget;
mod forward;
mod linear;
mod mlp;
pub mod rotary;

use candle_core::{DType, Device, Tensor};

use self::attention::Attention;
use self::linear::{Linear, Norm};
use self::mlp::Mlp;
use crate::config::{Config, NormKind};
use crate::error::{Error, Result};
use crate::hooks::{ActivationCache, HookPoint};
use crate::kernels::Kernels;
use crate::load::parts::{NormParts, Parts, QkLayout, Weight};
use crate::tokenizer::Tokenizer;
pub use scalpel_types::{Matrix, ModelFiles, ModelSource, Precision};

pub use budget::PassSize;

/// Which positions of a pass to compute logits for (full-vocabulary rows
/// are the largest thing a long pass makes: compute only the rows used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
    /// Positions `p..` of the pass (relative to its first new position).
    From(usize),
}

/// A weight taken out by `Model::replace_weight`, to put back with `restore_weight`.
pub struct SavedWeight {
    layer: usize,
    matrix: Matrix,
    linear: Linear,
}

pub(crate) struct Block {
    ln1: Norm,
    attn: Attention,
    /// Gemma's norm of the attention output (`ln1_post`).
    ln1_post: Option<Norm>,
    ln2: Norm,
    mlp: Mlp,
    /// Gemma's norm of the MLP output (`ln2_post`).
    ln2_post: Option<Norm>,
}

impl Block {
    fn linear_mut(&mut self, m: Matrix) -> Option<&mut Linear> {
        Some(match m {
            Matrix::Q => &mut self.attn.q,
            Matrix::K => &mut self.attn.k,
            Matrix::V => &mut self.attn.v,
            Matrix::O => &mut self.attn.o,
            Matrix::Gate => self.mlp.gate.as_mut()?,
            Matrix::Up => &mut self.mlp.up,
            Matrix::Down => &mut self.mlp.down,
        })
    }

    fn linears(&self) -> impl Iterator<Item = &Linear> {
        [&self.attn.q, &self.attn.k, &self.attn.v, &self.attn.o, &self.mlp.up, &self.mlp.down].into_iter().chain(self.mlp.gate.as_ref())
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        let Block { attn, mlp, .. } = self;
        [&mut attn.q, &mut attn.k, &mut attn.v, &mut attn.o, &mut mlp.up, &mut mlp.down].into_iter().chain(mlp.gate.as_mut())
    }
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
    /// Kernels of the stored blocks' matmuls: `Scalpel` or `Candle`
    /// (`Model::kernels`).
    kernels: Kernels,
    /// Whether the file stored any matrix as blocks (what `Kernels` chooses
    /// between; f32 checkpoints have none).
    has_blocks: bool,
    /// Whether the unembedding is the embedding matrix (tied).
    tied: bool,
    /// Things the user should know about this model (unknown pre-tokenizer, ...).
    pub warnings: Vec<String>,
    tokenizer: Tokenizer,
    /// Token embeddings in f32; `None` when tied to an unembedding held as
    /// blocks with Scalpel's kernels: a token's row is then dequantized from
    /// those blocks (the same values, without a second f32 copy).
    embed: Option<Tensor>,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    ln_final: Norm,
    unembed: Linear,
    /// RoPE inverse frequencies, `[rotary_dim / 2]`.
    inv_freq: Vec<f32>,
    /// Those of sliding-window layers, when their base differs (Gemma 3).
    inv_freq_local: Option<Vec<f32>>,
    /// The order of query and key rows within a head, as the file stored them.
    qk_layout: QkLayout,
    /// For `QkLayout::Interleaved`: head-dimension gathers (u32 index
    /// tensors) from stored to Hugging Face order and back.
    qk_perm: Option<(Tensor, Tensor)>,
    /// Use ops with a backward pass (gradients w.r.t. activations).
    differentiable: bool,
    /// Most bytes one forward pass may take (`budget.rs`); None: no limit.
    activation_budget: Option<u64>,
}

impl Model {
    /// Loads with `Kernels::Auto`.
    pub fn load(name: &str, source: ModelSource, precision: Precision) -> Result<Model> {
        Self::load_with(name, source, precision, Kernels::Auto)
    }

    /// Loads, multiplying quantized matrices with `kernels` (`Auto`: the
    /// faster on this target, see [`Kernels::resolve`]).
    pub fn load_with(name: &str, source: ModelSource, precision: Precision, kernels: Kernels) -> Result<Model> {
        Self::load_within(name, source, precision, kernels, None)
    }

    /// As [`Model::load_with`], but a model whose weights would take more
    /// than `max_bytes` at `precision` is refused before any weight is
    /// expanded (the browser's wasm32 memory is 4 GiB, and a failed
    /// allocation there aborts instead of returning an error). The message
    /// gives the estimate, the limit and what the other precision needs.
    pub fn load_within(name: &str, source: ModelSource, precision: Precision, kernels: Kernels, max_bytes: Option<u64>) -> Result<Model> {
        Self::build_within(name, crate::arch::read(name, source)?, precision, kernels, max_bytes)
    }

    /// As [`Model::load_within`], for a GGUF file read a range at a time
    /// (the browser's file stays in a JS array; wasm memory holds only the
    /// header and one tensor's bytes at a time besides the weights).
    pub fn load_gguf_source(name: &str, source: &dyn crate::gguf::ByteSource, precision: Precision, kernels: Kernels, max_bytes: Option<u64>) -> Result<Model> {
        Self::build_within(name, crate::arch::read_gguf_source(name, source)?, precision, kernels, max_bytes)
    }

    fn build_within(name: &str, read: (Config, Tokenizer, Parts), precision: Precision, kernels: Kernels, max_bytes: Option<u64>) -> Result<Model> {
        let (config, tokenizer, parts) = read;
        if let Some(max) = max_bytes {
            let need = parts.built_bytes_with(precision, kernels);
            if need > max {
                let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
                let hint = match precision {
                    Precision::F32 if parts.built_bytes_with(Precision::Quantized, kernels) <= max => {
                        format!("; the quantized precision needs about {}, which fits", mb(parts.built_bytes_with(Precision::Quantized, kernels)))
                    }
                    _ => "; it does not fit in either precision".to_string(),
                };
                return Err(Error::load(
                    name,
                    format!("its weights need about {} in {} precision, more than the {} this build allows{hint}", mb(need), precision.as_str(), mb(max)),
                ));
            }
        }
        let mut model = Self::build(name, config, tokenizer, parts, precision, kernels.resolve(precision))?;
        model.set_kernels(kernels)?;
        Ok(model)
    }

    /// The model at `precision` from what `arch::read` found.
    fn build(name: &str, config: Config, tokenizer: Tokenizer, parts: Parts, precision: Precision, kernels: Kernels) -> Result<Model> {
        let has_blocks = parts.has_blocks();
        let (kind, eps) = (config.norm, config.norm_eps as f32);
        let mut blocks = Vec::with_capacity(parts.blocks.len());
        for pb in parts.blocks {
            let lin = |p| Linear::from_parts(p, precision, kernels);
            // q/k norms are RMSNorms whatever the block's norm kind.
            let rms = |p: NormParts| Norm::new(p, NormKind::Rms, eps);
            let norm = |p: NormParts| Norm::new(p, kind, eps);
            blocks.push(Block {
                ln1: norm(pb.ln1),
                attn: Attention {
                    q: lin(pb.q)?,
                    k: lin(pb.k)?,
                    v: lin(pb.v)?,
                    o: lin(pb.o)?,
                    q_norm: pb.q_norm.map(rms),
                    k_norm: pb.k_norm.map(rms),
                },
                ln1_post: pb.ln1_post.map(norm),
                ln2: norm(pb.ln2),
                mlp: Mlp { gate: pb.gate.map(lin).transpose()?, up: lin(pb.up)?, down: lin(pb.down)? },
                ln2_post: pb.ln2_post.map(norm),
            });
        }
        let tied = parts.unembed.is_none();
        let (embed, mut unembed) = match (parts.unembed, parts.embed) {
            (Some(w), e) => (Some(e.to_f32()?), Linear::from_parts(crate::load::parts::LinearParts { w, b: None }, precision, kernels)?),
            // Tied: f32 weights share the embedding's storage; stored blocks
            // are multiplied as blocks (exactly in f32 precision), or f32
            // embeddings quantized to Q8_0 in quantized precision.
            (None, Weight::F32(w)) => {
                let e = w.to_dtype(candle_core::DType::F32)?;
                (Some(e.clone()), Linear::from_f32(e, None, precision)?)
            }
            (None, w) => (None, Linear::from_parts(crate::load::parts::LinearParts { w, b: None }, precision, kernels)?),
        };
        // Put a quantized unembedding on its kernels now, so that the
        // embedding is expanded only when its blocks cannot serve it (wasm
        // memory never shrinks: a transient copy would stay).
        unembed.set_kernels(kernels)?;
        let embed = match embed {
            Some(e) => Some(e),
            None if unembed.serves_rows() => None,
            None => Some(unembed.weight_f32()?),
        };
        let inv_freq = rotary::inv_freq(config.rotary_dim(), config.rope_theta);
        let inv_freq_local = config.extra.rope_local_theta.map(|theta| rotary::inv_freq(config.rotary_dim(), theta));
        let qk_layout = parts.qk_layout;
        let qk_perm = match qk_layout {
            QkLayout::Halves => None,
            QkLayout::Interleaved => {
                let index = |v: Vec<usize>| Tensor::from_vec(v.into_iter().map(|i| i as u32).collect::<Vec<_>>(), config.d_head, &Device::Cpu);
                Some((index(qk_layout.to_hf(config.d_head))?, index(qk_layout.to_stored(config.d_head))?))
            }
        };
        Ok(Model {
            name: name.to_owned(),
            ln_final: Norm::new(parts.ln_final, kind, eps),
            warnings: tokenizer.warnings.clone(),
            config,
            precision,
            kernels: if has_blocks { kernels } else { Kernels::Candle },
            has_blocks,
            tied,
            tokenizer,
            embed,
            pos_embed: parts.pos_embed,
            blocks,
            unembed,
            inv_freq,
            inv_freq_local,
            qk_layout,
            qk_perm,
            differentiable: false,
            activation_budget: None,
        })
    }

    /// Bytes the matrices of one decode step read: every block's
    /// projections and the unembedding, as held (blocks or f32). With the
    /// machine's streaming-read rate this bounds decode speed (`scalpel bench`).
    pub fn matrix_bytes(&self) -> u64 {
        self.blocks.iter().flat_map(Block::linears).map(Linear::bytes).sum::<u64>() + self.unembed.bytes()
    }

    /// Bytes the weights hold: the matrices as held (`matrix_bytes`), the
    /// embeddings unless they share the unembedding's storage or blocks,
    /// learned positions. Norms are left out (under 0.1% of a model).
    pub fn weight_bytes(&self) -> u64 {
        let f32_bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let shared = self.tied && matches!(self.unembed, Linear::F32 { .. });
        let embed = match &self.embed {
            Some(e) if !shared => f32_bytes(e),
            _ => 0,
        };
        self.matrix_bytes() + embed + self.pos_embed.as_ref().map_or(0, f32_bytes)
    }

    /// The kernels of the stored blocks' matmuls: `Candle` or `Scalpel`
    /// (never `Auto`). In f32 precision `Scalpel` means f32 products over
    /// the blocks (exact kernels) and `Candle` the dequantize-all path; a
    /// model without stored blocks reports `Candle`.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Switches the stored blocks' kernels in place (no weight changes).
    /// Quantized precision: repacks the blocks for the other kernels. f32
    /// precision: `Candle` dequantizes the exactly-multiplied blocks; going
    /// back to `Scalpel` needs the blocks, so it is refused (reload the
    /// model with those kernels). Matrices of a type the Scalpel kernels do
    /// not handle stay on candle.
    pub fn set_kernels(&mut self, kernels: Kernels) -> Result<()> {
        let k = if self.has_blocks { kernels.resolve(self.precision) } else { Kernels::Candle };
        if self.precision == Precision::F32 && k == Kernels::Scalpel && self.kernels == Kernels::Candle {
            return Err(Error::input(
                "in f32 precision the Scalpel kernels multiply the file's blocks, which the candle (dequantize-all) path has expanded: reload the model with the Scalpel kernels",
            ));
        }
        for blk in &mut self.blocks {
            for l in blk.linears_mut() {
                l.set_kernels(k)?;
            }
        }
        self.unembed.set_kernels(k)?;
        if self.tied {
            self.embed = match self.embed.take() {
                _ if self.unembed.serves_rows() => None,
                Some(e) => Some(e),
                None => Some(self.unembed.weight_f32()?),
            };
        }
        self.kernels = k;
        Ok(())
    }

    fn linear(&self, layer: usize, m: Matrix) -> Result<&Linear> {
        let blk = self.blocks.get(layer).ok_or_else(|| {
            Error::input(format!("layer {layer} is out of range (the model has {} layers)", self.config.n_layers))
        })?;
        Ok(match m {
            Matrix::Q => &blk.attn.q,
            Matrix::K => &blk.attn.k,
            Matrix::V => &blk.attn.v,
            Matrix::O => &blk.attn.o,
            Matrix::Gate => blk.mlp.gate.as_ref().ok_or_else(|| Error::input("this model's MLP has no gate matrix"))?,
            Matrix::Up => &blk.mlp.up,
            Matrix::Down => &blk.mlp.down,
        })
    }

    /// A block weight as the model uses it, in f32, `[out, in]` (query and
    /// key rows in the order the file stored them: GGUF llama files
    /// interleave them for llama.cpp's rotary embedding, see `QkLayout`).
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
        let mut new = Linear::from_f32(w.to_dtype(DType::F32)?, old.bias().cloned(), self.precision)?;
        new.set_kernels(self.kernels)?;
        let slot = self.blocks[layer].linear_mut(m).expect("checked by linear()");
        Ok(SavedWeight { layer, matrix: m, linear: std::mem::replace(slot, new) })
    }

    pub fn restore_weight(&mut self, saved: SavedWeight) {
        let slot = self.blocks[saved.layer].linear_mut(saved.matrix).expect("saved from an existing matrix");
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
        // Keys are cached in the stored head-dimension order.
        let stored: Vec<f32> = match values {
            true => vector.to_vec(),
            false => self.qk_layout.to_stored(dh).into_iter().map(|hf| vector[hf]).collect(),
        };
        let mut delta = vec![0f32; nkv * t * dh];
        for h in 0..nkv {
            if heads.is_some_and(|hs| !hs.contains(&h)) {
                continue;
            }
            for &p in positions {
                if p >= t {
                    return Err(Error::input(format!("KV position {p} is not cached (the cache holds {t})")));
                }
                delta[(h * t + p) * dh..(h * t + p + 1) * dh].copy_from_slice(&stored);
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

    /// Token embedding rows (token ids) in f32, `[ids.len(), d_model]`.
    pub fn embedding_rows(&self, ids: &[u32]) -> Result<Tensor> {
        match &self.embed {
            Some(e) => {
                let n = e.dim(0)?;
                if let Some(&bad) = ids.iter().find(|&&i| i as usize >= n) {
                    return Err(Error::input(format!("token id {bad} is out of range (the vocabulary has {n})")));
                }
                Ok(e.index_select(&Tensor::new(ids, &Device::Cpu)?, 0)?)
            }
            None => self.unembed.rows_f32(ids),
        }
    }

    /// Unembedding matrix `[vocab, d_model]` (f32).
    pub fn unembedding_matrix(&self) -> Result<Tensor> {
        self.unembed.weight_f32()
    }

    /// Rows (token ids) of the unembedding in f32, `[ids.len(), d_model]`,
    /// without expanding the rest (see `Linear::rows_f32`).
    pub fn unembedding_rows(&self, ids: &[u32]) -> Result<Tensor> {
        self.unembed.rows_f32(ids)
    }

    /// `W_U · v` for directions `v` of shape `[d_model, k]`: `[d_vocab, k]`,
    /// exact f32 products with the unembedding's f32 values. A quantized
    /// unembedding is dequantized a slice of rows at a time, so a 262k-token
    /// vocabulary never stands expanded in memory.
    pub fn unembedding_times(&self, v: &Tensor) -> Result<Tensor> {
        const ROWS: u32 = 8192;
        if let Linear::F32 { w } = &self.unembed {
            return Ok(w.weight().matmul(v)?);
        }
        let n = self.config.d_vocab as u32;
        let mut parts = Vec::with_capacity(n.div_ceil(ROWS) as usize);
        for start in (0..n).step_by(ROWS as usize) {
            let ids: Vec<u32> = (start..(start + ROWS).min(n)).collect();
            parts.push(self.unembed.rows_f32(&ids)?.matmul(v)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
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
    /// `final_norm` first), soft-capped as the model caps its own (Gemma 2).
    pub fn unembed(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.unembed.forward(x)?;
        match self.config.extra.final_softcap {
            Some(cap) => Ok(((logits / cap as f64)?.tanh()? * cap as f64)?),
            None => Ok(logits),
        }
    }

    /// Logits before any final soft-cap: the unembedding alone, which is
    /// linear in its input (direct logit attribution decomposes these).
    pub fn unembed_uncapped(&self, x: &Tensor) -> Result<Tensor> {
        self.unembed.forward(x)
    }

    /// A block's extra norm (`ln1_post`, `ln2_post`) as stored: the scale it
    /// applies `[d_model]` (Gemma's `1 + w`) and epsilon; `None` if the
    /// model has none.
    pub fn post_norm_params(&self, layer: usize, after_mlp: bool) -> Option<(&Tensor, f32)> {
        let blk = self.blocks.get(layer)?;
        let n = if after_mlp { blk.ln2_post.as_ref() } else { blk.ln1_post.as_ref() }?;
        Some((&n.w, n.eps))
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
}
