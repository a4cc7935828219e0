//! One dictionary type for every format: sparse autoencoders (input and
//! output at one hook) and transcoders (input at one hook, output at
//! another, optional skip connection). `load.rs` reads the formats into it;
//! this file encodes, decodes, checks against a model, folds decoder norms
//! and clamps one latent through the error term.
//!
//! The computation, in the formats' own terms (docs/features.md):
//!
//! ```text
//! x_n  = norm(x)                                   (SAELens normalize_activations)
//! pre  = (x_n − b_dec·[apply_b_dec_to_input]) W_enc + b_enc
//! pre *= |W_dec row|                               (SAELens topk, rescale_acts_by_decoder_norm)
//! f    = act(pre)     relu | relu·[pre > θ] | relu of the k largest | max of each of k groups
//! ŷ    = (f / |W_dec row| if rescaled) W_dec + b_dec, norm undone (SAEs only), + x W_skipᵀ
//! ```

use std::fmt;

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{HookPoint, Model};
use serde::Serialize;

pub(crate) type Res<T> = Result<T, String>;

pub(crate) fn ce(e: impl fmt::Display) -> String {
    e.to_string()
}

/// Where a dictionary came from (its semantics follow that format's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// SAELens `cfg.json` + `sae_weights.safetensors`.
    SaeLens,
    /// EleutherAI sparsify: a folder per hook, `cfg.json` + `sae.safetensors`.
    Sparsify,
    /// Gemma Scope / Gemma Scope 2: `params.npz` or `params.safetensors`.
    GemmaScope,
    /// circuit-tracer's per-layer transcoder sets: `config.yaml` +
    /// `layer_N.safetensors`.
    CircuitTracer,
}

/// A dictionary's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeArch {
    /// ReLU.
    Standard,
    /// ReLU(h)·[h > threshold] (h·[h > threshold] without `relu`).
    JumpRelu,
    /// The k largest pre-activations, ReLU'd (kept as they are without
    /// `relu`); the rest zero.
    TopK(usize),
    /// sparsify's `groupmax`: ReLU, then the largest of each of k equal,
    /// contiguous groups of latents; the rest zero.
    GroupMax(usize),
}

/// SAELens's run-time input normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeNorm {
    None,
    /// x · √d_in / |x| in, undone on the way out.
    ConstantNormRescale,
    /// (x − mean) / (std + 1e-5) with the unbiased std, undone on the way out.
    LayerNorm,
}

/// A sparse autoencoder or transcoder, in f32 on the CPU.
pub struct Sae {
    pub name: String,
    pub format: Format,
    /// The hook the dictionary reads (TransformerLens name).
    pub hook_name: String,
    /// A transcoder's output hook; `None` for an SAE (output = input hook).
    pub hook_name_out: Option<String>,
    pub d_in: usize,
    /// Width of the output (= `d_in` for an SAE).
    pub d_out: usize,
    pub d_sae: usize,
    pub arch: SaeArch,
    pub apply_b_dec_to_input: bool,
    pub norm: SaeNorm,
    /// Gated activations go through a ReLU too. True for every format but
    /// circuit-tracer's, whose TopK and JumpReLU gates keep a negative
    /// pre-activation that passes (TopK when fewer than k are positive,
    /// JumpReLU under a negative threshold).
    pub relu: bool,
    /// SAELens topk: pre-activations scaled by decoder row norms before the
    /// top k, activations divided by them before decoding.
    pub rescale_acts_by_decoder_norm: bool,
    /// For `attn.hook_z` SAEs of one head (`hook_head_index`).
    pub head_index: Option<usize>,
    /// The model the file says it was trained on, when it says.
    pub model_name: Option<String>,
    /// What loading did beyond reading (folded factors, defaults taken).
    pub notes: Vec<String>,
    pub(crate) w_enc: Tensor,
    pub(crate) w_dec: Tensor,
    pub(crate) b_enc: Tensor,
    pub(crate) b_dec: Tensor,
    pub(crate) threshold: Option<Tensor>,
    /// `[d_out, d_in]`: ŷ += x W_skipᵀ (SAELens skip_transcoder, sparsify skip_connection).
    pub(crate) w_skip: Option<Tensor>,
    /// `[1, d_sae]` decoder row norms, when `rescale_acts_by_decoder_norm`.
    pub(crate) dec_norms: Option<Tensor>,
}

impl fmt::Debug for Sae {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hook_name_out {
            None => write!(f, "Sae({} at {}, {:?}, {}→{})", self.name, self.hook_name, self.arch, self.d_in, self.d_sae),
            Some(out) => write!(
                f,
                "Transcoder({} {}→{}, {:?}, {}→{}→{})",
                self.name, self.hook_name, out, self.arch, self.d_in, self.d_sae, self.d_out
            ),
        }
    }
}

/// Per-row normalization constants, to undo on decode.
struct NormStats {
    scale: Option<Tensor>,
    shift: Option<Tensor>,
}

const NO_STATS: NormStats = NormStats { scale: None, shift: None };

impl Sae {
    /// A transcoder reads one hook and writes another.
    pub fn is_transcoder(&self) -> bool {
        self.hook_name_out.is_some()
    }

    /// Where the decoder writes: the output hook (transcoders) or the input hook.
    pub fn hook_out(&self) -> &str {
        self.hook_name_out.as_deref().unwrap_or(&self.hook_name)
    }

    /// Checks the dictionary against a model (hook names and layer count,
    /// widths against d_model / d_mlp / heads) and returns its input point.
    pub fn point(&self, model: &Model) -> Res<HookPoint> {
        let p = self.check_hook(model, &self.hook_name, "hook_name", self.d_in, "d_in", self.head_index)?;
        if let Some(out) = &self.hook_name_out {
            self.check_hook(model, out, "hook_name_out", self.d_out, "d_out", None)?;
        }
        if self.format == Format::Sparsify {
            self.check_sparsify_post_norms(model)?;
        }
        Ok(p)
    }

    /// The output point (transcoders), checked like `point`.
    pub fn point_out(&self, model: &Model) -> Res<HookPoint> {
        self.point(model)?;
        match &self.hook_name_out {
            Some(out) => model.hook_point(out).map_err(|e| format!("{}: hook_name_out: {e}", self.name)),
            None => self.point(model),
        }
    }

    fn check_hook(&self, model: &Model, hook: &str, field: &str, width: usize, wname: &str, head: Option<usize>) -> Res<HookPoint> {
        let p = model.hook_point(hook).map_err(|e| format!("{}: {field} '{hook}': {e}", self.name))?;
        let flat = model.config.flat_width(p.site).map_err(|e| format!("{}: {field}: {e}", self.name))?;
        let want = match head {
            Some(h) => {
                if p.site.head_axis().is_none() {
                    return Err(format!("{}: hook_head_index is set but '{hook}' has no heads", self.name));
                }
                let dh = model.config.d_head;
                let heads = flat / dh.max(1);
                if h >= heads {
                    return Err(format!("{}: hook_head_index {h} is out of range ({heads} heads)", self.name));
                }
                dh
            }
            None => flat,
        };
        if width != want {
            let what = if head.is_some() {
                " for one head".to_owned()
            } else if want == model.config.d_model {
                format!(" (the model's d_model is {})", model.config.d_model)
            } else {
                String::new()
            };
            return Err(format!("{}: {wname} is {width} but '{hook}' has {want} values per position{what}", self.name));
        }
        Ok(p)
    }

    /// sparsify hooks a Hugging Face module's output; with a norm after the
    /// MLP or attention (Gemma 2/3), that module's output is not
    /// TransformerLens's `hook_mlp_out` / `hook_attn_out`.
    fn check_sparsify_post_norms(&self, model: &Model) -> Res<()> {
        for hook in [Some(&self.hook_name), self.hook_name_out.as_ref()].into_iter().flatten() {
            let Ok(p) = model.hook_point(hook) else { continue };
            let after_mlp = match p.site {
                scalpel_engine::Site::MlpOut => true,
                scalpel_engine::Site::AttnOut => false,
                _ => continue,
            };
            if let Some(l) = p.layer {
                if model.post_norm_params(l, after_mlp).is_some() {
                    return Err(format!(
                        "{}: this model normalizes after the {} (a post-norm), so the sparsify module output is not '{hook}'; not supported",
                        self.name,
                        if after_mlp { "MLP" } else { "attention" }
                    ));
                }
            }
        }
        Ok(())
    }

    fn normalize(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        Ok(match self.norm {
            SaeNorm::None => (x.clone(), NO_STATS),
            SaeNorm::ConstantNormRescale => {
                let n = x.sqr()?.sum_keepdim(1)?.sqrt()?;
                let coeff = n.recip()?.affine((self.d_in as f64).sqrt(), 0.0)?;
                (x.broadcast_mul(&coeff)?, NormStats { scale: Some(coeff.recip()?), shift: None })
            }
            SaeNorm::LayerNorm => {
                let mu = x.mean_keepdim(1)?;
                let xc = x.broadcast_sub(&mu)?;
                let denom = (self.d_in.max(2) - 1) as f64;
                let std = (xc.sqr()?.sum_keepdim(1)? / denom)?.sqrt()?;
                (xc.broadcast_div(&(&std + 1e-5)?)?, NormStats { scale: Some(std), shift: Some(mu) })
            }
        })
    }

    /// Pre-activations `[n, d_sae]` (after the decoder-norm rescale, if any).
    fn pre_acts(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        let (xn, stats) = self.normalize(x)?;
        let sae_in = if self.apply_b_dec_to_input { xn.broadcast_sub(&self.b_dec)? } else { xn };
        let mut pre = sae_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?;
        if let Some(n) = &self.dec_norms {
            pre = pre.broadcast_mul(n)?;
        }
        Ok((pre, stats))
    }

    fn encode_stats(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        let (pre, stats) = self.pre_acts(x)?;
        let acts = match self.arch {
            SaeArch::Standard => pre.relu()?,
            SaeArch::JumpRelu => {
                let th = self.threshold.as_ref().expect("checked at load");
                let keep = pre.broadcast_gt(th)?.to_dtype(DType::F32)?;
                if self.relu { (pre.relu()? * keep)? } else { (pre * keep)? }
            }
            SaeArch::TopK(k) => sparse_rows(&pre, self.d_sae, self.relu, |row| scalpel_engine::top_k(row, k))?,
            SaeArch::GroupMax(k) => {
                let g = self.d_sae / k;
                sparse_rows(&pre, self.d_sae, true, |row| {
                    (0..k)
                        .map(|j| {
                            let mut best = j * g;
                            for i in j * g..(j + 1) * g {
                                if row[i] > row[best] {
                                    best = i;
                                }
                            }
                            (best as u32, row[best])
                        })
                        .collect()
                })?
            }
        };
        Ok((acts, stats))
    }

    fn decode_stats(&self, f: &Tensor, stats: &NormStats) -> candle_core::Result<Tensor> {
        let f = match &self.dec_norms {
            Some(n) => f.broadcast_div(n)?,
            None => f.clone(),
        };
        let mut out = f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?;
        // SAELens transcoders do not undo the input normalization.
        if !self.is_transcoder() {
            if let Some(s) = &stats.scale {
                out = out.broadcast_mul(s)?;
            }
            if let Some(m) = &stats.shift {
                out = out.broadcast_add(m)?;
            }
        }
        Ok(out)
    }

    fn check_input(&self, x: &Tensor) -> Res<()> {
        match x.dims() {
            [_, d] if *d == self.d_in => Ok(()),
            dims => Err(format!("{}: input has shape {dims:?}; expected [n, {}]", self.name, self.d_in)),
        }
    }

    fn check_latent(&self, latent: usize) -> Res<()> {
        if latent >= self.d_sae {
            return Err(format!("{}: latent {latent} is out of range (d_sae = {})", self.name, self.d_sae));
        }
        Ok(())
    }

    /// Latent activations `[n, d_sae]` of inputs `[n, d_in]`.
    pub fn encode(&self, x: &Tensor) -> Res<Tensor> {
        self.check_input(x)?;
        self.encode_stats(x).map(|r| r.0).map_err(ce)
    }

    /// Pre-activations `[n, d_sae]` (before the activation function).
    pub fn encode_pre(&self, x: &Tensor) -> Res<Tensor> {
        self.check_input(x)?;
        self.pre_acts(x).map(|r| r.0).map_err(ce)
    }

    /// `f W_dec + b_dec` of latents `[n, d_sae]` (no input normalization to
    /// undo and no skip connection; `reconstruct` has both).
    pub fn decode(&self, f: &Tensor) -> Res<Tensor> {
        match f.dims() {
            [_, d] if *d == self.d_sae => {}
            dims => return Err(format!("{}: latents have shape {dims:?}; expected [n, {}]", self.name, self.d_sae)),
        }
        self.decode_stats(f, &NO_STATS).map_err(ce)
    }

    /// (latents `[n, d_sae]`, output `[n, d_out]`) of inputs `[n, d_in]`:
    /// the reconstruction of an SAE, the predicted output of a transcoder.
    pub fn reconstruct(&self, x: &Tensor) -> Res<(Tensor, Tensor)> {
        self.check_input(x)?;
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let mut r = self.decode_stats(&f, &s).map_err(ce)?;
        if let Some(w) = &self.w_skip {
            r = (r + x.matmul(&w.t().map_err(ce)?).map_err(ce)?).map_err(ce)?;
        }
        Ok((f, r))
    }

    /// Decoder row `latent` (the latent's write direction at `hook_out()`), `[d_out]`.
    pub fn decoder_row(&self, latent: usize) -> Res<Vec<f32>> {
        self.check_latent(latent)?;
        self.w_dec.get(latent).and_then(|r| r.to_vec1()).map_err(ce)
    }

    /// W_dec · w for a column `w` (`[d_out, 1]`): every latent's decoder
    /// row dotted with one direction at the output hook, `[d_sae]`.
    pub fn decoder_times(&self, w: &Tensor) -> Res<Vec<f32>> {
        if w.dims() != [self.d_out, 1] {
            return Err(format!("{}: a direction of shape {:?} against decoder rows of width {}", self.name, w.dims(), self.d_out));
        }
        self.w_dec.matmul(w).and_then(|s| s.flatten_all()).and_then(|s| s.to_vec1()).map_err(ce)
    }

    /// decode(f with latent i set to `value`) − decode(f): the change that
    /// clamping makes, leaving the reconstruction error in place. SAEs only:
    /// a transcoder's latents write at another hook.
    pub fn clamp_delta(&self, x: &Tensor, latent: usize, value: f32) -> Res<Tensor> {
        self.check_input(x)?;
        self.check_latent(latent)?;
        if let Some(out) = &self.hook_name_out {
            return Err(format!(
                "{}: a transcoder ({} → {out}) cannot clamp through the error term at its input hook",
                self.name, self.hook_name
            ));
        }
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let mut onehot = vec![0f32; self.d_sae];
        onehot[latent] = 1.0;
        let m = Tensor::from_vec(onehot, (1, self.d_sae), &Device::Cpu).map_err(ce)?;
        // f' = f·(1 − e_i) + value·e_i
        let clamped = f
            .broadcast_mul(&m.affine(-1.0, 1.0).map_err(ce)?)
            .and_then(|a| a.broadcast_add(&(m.affine(value as f64, 0.0)?)))
            .map_err(ce)?;
        let a = self.decode_stats(&clamped, &s).map_err(ce)?;
        let b = self.decode_stats(&f, &s).map_err(ce)?;
        (a - b).map_err(ce)
    }

    /// Rows `[n, d_in]` of a hook value (batch axis included), for this dictionary.
    pub fn rows_of(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<usize>)> {
        let dims = x.dims().to_vec();
        let (b, t) = (dims[0], dims[1]);
        let rows = match self.head_index {
            Some(h) => x.narrow(2, h, 1)?.reshape((b * t, self.d_in))?,
            None => x.reshape((b * t, self.d_in))?,
        };
        Ok((rows, dims))
    }

    /// Rows `[n, d_out]` of the output hook's value (batch axis included).
    pub fn out_rows_of(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        if self.hook_name_out.is_none() {
            return self.rows_of(y).map(|r| r.0);
        }
        let dims = y.dims();
        y.reshape((dims[0] * dims[1], self.d_out))
    }

    /// Folds the decoder row norms into the encoder, as SAELens's
    /// `fold_W_dec_norm`: W_dec rows to unit norm, W_enc columns and b_enc
    /// (and a JumpReLU threshold) times the norms. The output is unchanged;
    /// activations are scaled by the norms. TopK only with
    /// `rescale_acts_by_decoder_norm` (otherwise the top k would change).
    pub fn fold_decoder_norms(&mut self) -> Res<()> {
        match self.arch {
            SaeArch::TopK(_) | SaeArch::GroupMax(_) if !self.rescale_acts_by_decoder_norm => {
                return Err(format!(
                    "{}: folding decoder norms into a {:?} dictionary without rescale_acts_by_decoder_norm would change which latents are active (SAELens refuses it too)",
                    self.name, self.arch
                ))
            }
            _ => {}
        }
        let norms: Vec<f32> = self.w_dec.sqr().and_then(|s| s.sum(1)).and_then(|s| s.sqrt()).and_then(|s| s.to_vec1()).map_err(ce)?;
        if let Some(i) = norms.iter().position(|n| n.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !n.is_finite()) {
            return Err(format!("{}: decoder row {i} has norm {}; cannot fold decoder norms", self.name, norms[i]));
        }
        let n = Tensor::from_vec(norms, (self.d_sae,), &Device::Cpu).map_err(ce)?;
        let col = n.unsqueeze(1).map_err(ce)?;
        let row = n.unsqueeze(0).map_err(ce)?;
        self.w_dec = self.w_dec.broadcast_div(&col).map_err(ce)?;
        self.w_enc = self.w_enc.broadcast_mul(&row).map_err(ce)?;
        self.b_enc = self.b_enc.broadcast_mul(&n).map_err(ce)?;
        if let Some(t) = &self.threshold {
            self.threshold = Some(t.broadcast_mul(&n).map_err(ce)?);
        }
        if self.dec_norms.is_some() {
            self.dec_norms = Some(Tensor::ones((1, self.d_sae), DType::F32, &Device::Cpu).map_err(ce)?);
        }
        self.notes.push("decoder norms folded into the encoder (SAELens fold_W_dec_norm)".into());
        Ok(())
    }
}

/// `[n, d]` rows with only the entries `pick(row)` returns kept (ReLU'd if `relu`).
fn sparse_rows(pre: &Tensor, d: usize, relu: bool, pick: impl Fn(&[f32]) -> Vec<(u32, f32)>) -> candle_core::Result<Tensor> {
    let rows: Vec<Vec<f32>> = pre.to_vec2()?;
    let n = rows.len();
    let mut out = vec![0f32; n * d];
    for (r, row) in rows.iter().enumerate() {
        for (i, v) in pick(row) {
            out[r * d + i as usize] = if relu { v.max(0.0) } else { v };
        }
    }
    Tensor::from_vec(out, (n, d), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::DictFiles;

    fn safetensors_of(tensors: &[(&str, Vec<f32>, Vec<usize>)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
            tensors.iter().map(|(n, d, s)| (n.to_string(), d.iter().flat_map(|v| v.to_le_bytes()).collect(), s.clone())).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn tiny_sae(arch: &str, extra: &str) -> Sae {
        let (d_in, d_sae) = (3usize, 4usize);
        let w_enc: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.5).collect();
        let w_dec: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.25).collect();
        let mut tensors: Vec<(&str, Vec<f32>, Vec<usize>)> = vec![
            ("W_enc", w_enc, vec![d_in, d_sae]),
            ("W_dec", w_dec, vec![d_sae, d_in]),
            ("b_enc", vec![0.1, -0.2, 0.0, 0.3], vec![d_sae]),
            ("b_dec", vec![0.05, 0.0, -0.1], vec![d_in]),
        ];
        if arch == "jumprelu" {
            tensors.push(("threshold", vec![0.2, 0.0, 0.5, 0.1], vec![d_sae]));
        }
        let cfg = format!(r#"{{"d_in": 3, "d_sae": 4, "architecture": "{arch}", "hook_name": "blocks.0.hook_resid_post"{extra}}}"#);
        Sae::load("tiny", cfg.as_bytes(), &safetensors_of(&tensors)).unwrap()
    }

    #[test]
    fn sae_encode_decode_by_hand() {
        let x = Tensor::new(&[[1.0f32, -0.5, 2.0], [0.0, 1.0, -1.0]], &Device::Cpu).unwrap();
        for (arch, extra) in [("standard", ""), ("jumprelu", ""), ("topk", r#", "k": 2"#), ("standard", r#", "apply_b_dec_to_input": false"#)] {
            let sae = tiny_sae(arch, extra);
            let f: Vec<Vec<f32>> = sae.encode(&x).unwrap().to_vec2().unwrap();
            let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
            let w_enc: Vec<Vec<f32>> = sae.w_enc.to_vec2().unwrap();
            let b_enc: Vec<f32> = sae.b_enc.to_vec1().unwrap();
            let b_dec: Vec<f32> = sae.b_dec.to_vec1().unwrap();
            for (r, row) in xs.iter().enumerate() {
                let inp: Vec<f32> =
                    row.iter().zip(&b_dec).map(|(a, b)| if sae.apply_b_dec_to_input { a - b } else { *a }).collect();
                let pre: Vec<f32> = (0..4).map(|j| (0..3).map(|i| inp[i] * w_enc[i][j]).sum::<f32>() + b_enc[j]).collect();
                let want: Vec<f32> = match sae.arch {
                    SaeArch::Standard => pre.iter().map(|v| v.max(0.0)).collect(),
                    SaeArch::JumpRelu => {
                        let th = [0.2f32, 0.0, 0.5, 0.1];
                        pre.iter().zip(th).map(|(v, t)| if *v > t { v.max(0.0) } else { 0.0 }).collect()
                    }
                    SaeArch::TopK(k) => {
                        let top = scalpel_engine::top_k(&pre, k);
                        (0..4).map(|j| top.iter().find(|x| x.0 as usize == j).map(|x| x.1.max(0.0)).unwrap_or(0.0)).collect()
                    }
                    SaeArch::GroupMax(_) => unreachable!("not a SAELens architecture"),
                };
                for (a, b) in f[r].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "{arch}: {:?} vs {want:?}", f[r]);
                }
            }
            // Clamping through the error term moves x by (v − f_i)·W_dec[i] exactly.
            let d: Vec<Vec<f32>> = sae.clamp_delta(&x, 2, 1.5).unwrap().to_vec2().unwrap();
            let row2 = sae.decoder_row(2).unwrap();
            for r in 0..2 {
                for c in 0..3 {
                    let want = (1.5 - f[r][2]) * row2[c];
                    assert!((d[r][c] - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn folding_decoder_norms_keeps_the_output() {
        let x = Tensor::new(&[[1.0f32, -0.5, 2.0], [0.3, 1.0, -1.0]], &Device::Cpu).unwrap();
        for arch in ["standard", "jumprelu"] {
            let mut sae = tiny_sae(arch, "");
            let (_, before) = sae.reconstruct(&x).unwrap();
            sae.fold_decoder_norms().unwrap();
            let (_, after) = sae.reconstruct(&x).unwrap();
            let diff: f32 = (before - after).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(diff < 1e-5, "{arch}: folding changed the output by {diff}");
        }
        let mut topk = tiny_sae("topk", r#", "k": 2"#);
        assert!(topk.fold_decoder_norms().unwrap_err().contains("rescale_acts_by_decoder_norm"));
    }

    #[test]
    fn sae_rejects_bad_configs() {
        let err = |cfg: &str| Sae::load("s", cfg.as_bytes(), b"").unwrap_err();
        assert!(err(r#"{"d_sae": 4, "hook_name": "x"}"#).contains("d_in"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "gated", "hook_name": "x"}"#).contains("not supported"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "topk", "hook_name": "x"}"#).contains("'k'"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "transcoder", "hook_name": "x"}"#).contains("hook_name_out"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "normalize_activations": "whiten", "hook_name": "x"}"#).contains("whiten"));
    }

    #[test]
    fn sparsify_and_gemma_scope_load_and_refuse_by_name() {
        let (d, n) = (3usize, 4usize);
        let enc: Vec<f32> = (0..n * d).map(|i| (i as f32 - 5.0) * 0.1).collect();
        let dec: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.7).sin()).collect();
        let st = safetensors_of(&[
            ("encoder.weight", enc.clone(), vec![n, d]),
            ("encoder.bias", vec![0.0; n], vec![n]),
            ("W_dec", dec.clone(), vec![n, d]),
            ("b_dec", vec![0.1; d], vec![d]),
        ]);
        let files = |folder: &'static str, cfg: &'static str| DictFiles {
            folder,
            cfg_json: Some(cfg.as_bytes()),
            sae_safetensors: Some(Box::leak(st.clone().into_boxed_slice())),
            ..Default::default()
        };
        let sae = Sae::load_files("sp", &files("layers.2.mlp", r#"{"d_in": 3, "num_latents": 4, "k": 2}"#)).unwrap();
        assert_eq!((sae.hook_name.as_str(), sae.hook_name_out.as_deref(), sae.arch), ("blocks.2.hook_mlp_out", None, SaeArch::TopK(2)));
        assert!(sae.apply_b_dec_to_input);
        let tc = Sae::load_files("tc", &files("model.layers.1", r#"{"d_in": 3, "num_latents": 4, "k": 2, "transcode": true}"#)).unwrap();
        assert_eq!((tc.hook_name.as_str(), tc.hook_out()), ("blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"));
        assert!(!tc.apply_b_dec_to_input);
        let x = Tensor::new(&[[1.0f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        assert!(tc.clamp_delta(&x, 0, 1.0).unwrap_err().contains("transcoder"));
        let e = Sae::load_files("sp", &files("layers.2.ffn", r#"{"d_in": 3, "num_latents": 4, "k": 2}"#)).unwrap_err();
        assert!(e.contains("sparsify folder 'layers.2.ffn'"), "{e}");
        let e = Sae::load_files("sp", &files("layers.2", r#"{"d_in": 3, "num_latents": 4, "k": 9}"#)).unwrap_err();
        assert!(e.contains("k = 9"), "{e}");
        let e = Sae::load_files("sp", &files("layers.2", r#"{"d_in": 3, "num_latents": 5, "k": 2}"#)).unwrap_err();
        assert!(e.contains("'encoder.weight' has shape [4, 3], expected [5, 3]"), "{e}");

        let th = vec![0.1f32; n];
        let (zn, zd) = (vec![0f32; n], vec![0f32; d]);
        let mut arrays: Vec<(&str, &[usize], &[f32])> =
            vec![("W_enc", &[3, 4], &enc), ("W_dec", &[4, 3], &dec), ("b_enc", &[4], &zn), ("b_dec", &[3], &zd)];
        let npz_bad = crate::npz::write_npz(&arrays);
        arrays.push(("threshold", &[4], &th));
        let npz = crate::npz::write_npz(&arrays);
        let gs = DictFiles { params_npz: Some(&npz), hook: Some("blocks.0.hook_resid_post"), ..Default::default() };
        let sae = Sae::load_files("gs", &gs).unwrap();
        assert_eq!((sae.arch, sae.format, sae.d_in, sae.d_sae), (SaeArch::JumpRelu, Format::GemmaScope, 3, 4));
        let e = Sae::load_files("gs", &DictFiles { params_npz: Some(&npz), ..Default::default() }).unwrap_err();
        assert!(e.contains("--hook"), "{e}");
        let e = Sae::load_files("gs", &DictFiles { params_npz: Some(&npz_bad), ..gs }).unwrap_err();
        assert!(e.contains("'threshold'"), "{e}");
        let both = DictFiles { params_npz: Some(&npz), sae_safetensors: Some(&st), ..gs };
        assert!(Sae::load_files("gs", &both).unwrap_err().contains("more than one weights file"));
    }

    /// circuit-tracer's layer files: `W_enc [d_sae, d_in]`, gates without a ReLU.
    fn circuit_tracer_file(threshold: Option<Vec<f32>>, skip: bool) -> Vec<u8> {
        let (d, n) = (3usize, 4usize);
        let mut t: Vec<(&str, Vec<f32>, Vec<usize>)> = vec![
            ("W_enc", (0..n * d).map(|i| (i as f32 - 5.0) * 0.3).collect(), vec![n, d]),
            ("W_dec", (0..n * d).map(|i| (i as f32 * 0.7).sin()).collect(), vec![n, d]),
            ("b_enc", vec![0.1, -0.2, 0.0, -3.0], vec![n]),
            ("b_dec", vec![0.1; d], vec![d]),
        ];
        if let Some(th) = threshold {
            t.push(("activation_function.threshold", th, vec![n]));
        }
        if skip {
            t.push(("W_skip", (0..d * d).map(|i| i as f32 * 0.01).collect(), vec![d, d]));
        }
        safetensors_of(&t)
    }

    const CT: &str = "model_name: tiny\nmodel_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n";

    #[test]
    fn circuit_tracer_sets_load_with_their_own_semantics() {
        let x = Tensor::new(&[[1.0f32, -0.5, 2.0], [-2.0, 1.0, -1.0]], &Device::Cpu).unwrap();
        let pre: Vec<Vec<f32>> = {
            let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.3).collect();
            let b = [0.1f32, -0.2, 0.0, -3.0];
            x.to_vec2::<f32>().unwrap().iter().map(|r| (0..4).map(|j| (0..3).map(|i| r[i] * w[j * 3 + i]).sum::<f32>() + b[j]).collect()).collect()
        };
        let check = |sae: &Sae, want: &dyn Fn(&[f32]) -> Vec<f32>| {
            let f: Vec<Vec<f32>> = sae.encode(&x).unwrap().to_vec2().unwrap();
            for (r, p) in pre.iter().enumerate() {
                let w = want(p);
                for (a, b) in f[r].iter().zip(&w) {
                    assert!((a - b).abs() < 1e-5, "{:?}: {:?} vs {w:?}", sae.arch, f[r]);
                }
            }
        };
        let files = |cfg: &'static str, file: &'static str, w: &'static [u8]| DictFiles { config_yaml: Some(cfg.as_bytes()), layer_file: Some((file, w)), ..Default::default() };
        let leak = |b: Vec<u8>| -> &'static [u8] { Box::leak(b.into_boxed_slice()) };
        // JumpReLU under a negative threshold keeps negative values (no ReLU).
        let jr = leak(circuit_tracer_file(Some(vec![0.2, -10.0, 0.5, -10.0]), true));
        let sae = Sae::load_files("ct", &files(CT, "layer_2.safetensors", jr)).unwrap();
        assert_eq!((sae.format, sae.arch, sae.hook_name.as_str(), sae.hook_out()), (Format::CircuitTracer, SaeArch::JumpRelu, "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"));
        assert!(!sae.apply_b_dec_to_input && !sae.relu && sae.w_skip.is_some());
        let th = [0.2f32, -10.0, 0.5, -10.0];
        check(&sae, &|p| p.iter().zip(th).map(|(v, t)| if *v > t { *v } else { 0.0 }).collect());
        assert!(pre.iter().any(|p| p[1] < 0.0 || p[3] < 0.0), "the test should exercise a negative activation");
        // The skip connection: ŷ = f W_dec + b_dec + x W_skipᵀ.
        let (f, y) = sae.reconstruct(&x).unwrap();
        let want = (f.matmul(&sae.w_dec).unwrap().broadcast_add(&sae.b_dec).unwrap() + x.matmul(&sae.w_skip.as_ref().unwrap().t().unwrap()).unwrap()).unwrap();
        let diff: f32 = (y - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(diff < 1e-6);
        // TopK keeps the k largest as they are, negative or not.
        let plain = leak(circuit_tracer_file(None, false));
        let topk = Sae::load_files("ct", &files("model_kind: transcoder_set\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\nactivation: topk\nk: 3\n", "layer_0.safetensors", plain)).unwrap();
        assert_eq!((topk.arch, topk.hook_name.as_str()), (SaeArch::TopK(3), "blocks.0.hook_resid_mid"));
        check(&topk, &|p| {
            let top = scalpel_engine::top_k(p, 3);
            (0..4).map(|j| top.iter().find(|t| t.0 as usize == j).map(|t| t.1).unwrap_or(0.0)).collect()
        });
        // No activation and no threshold: ReLU.
        let relu = Sae::load_files("ct", &files(CT, "layer_1.safetensors", plain)).unwrap();
        assert_eq!(relu.arch, SaeArch::Standard);
        check(&relu, &|p| p.iter().map(|v| v.max(0.0)).collect());
        // The layer from the `transcoders` list.
        let listed = "model_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\ntranscoders:\n  - hf://o/r/a.safetensors\n  - hf://o/r/b.safetensors?revision=x\n";
        assert_eq!(Sae::load_files("ct", &files(listed, "b.safetensors", plain)).unwrap().hook_name, "blocks.1.ln2.hook_normalized");
    }

    #[test]
    fn circuit_tracer_refuses_by_name() {
        let w = circuit_tracer_file(None, false);
        let err = |cfg: &str, file: &str, w: &[u8]| Sae::load_circuit_tracer("ct", cfg.as_bytes(), file, w).unwrap_err();
        let e = err(&CT.replace("transcoder_set", "cross_layer_transcoder"), "layer_0.safetensors", &w);
        assert!(e.contains("cross-layer"), "{e}");
        assert!(err(&CT.replace("mlp.hook_in", "ln2.hook_normalized"), "layer_0.safetensors", &w).contains("before the norm's weight"));
        assert!(err(&CT.replace("mlp.hook_in", "blocks.3.hook_resid_mid"), "layer_0.safetensors", &w).contains("not a hook of layer 0"));
        assert!(err(&CT.replace("mlp.hook_in", "\"<script>\""), "layer_0.safetensors", &w).contains("not a hook name"));
        assert!(err(CT, "weights.safetensors", &w).contains("which layer"));
        assert!(err(&format!("{CT}activation: topk\n"), "layer_0.safetensors", &w).contains("'k'"));
        assert!(err(&format!("{CT}activation: topk\nk: 9\n"), "layer_0.safetensors", &w).contains("k = 9"));
        assert!(err(&format!("{CT}activation: gelu\n"), "layer_0.safetensors", &w).contains("'gelu'"));
        assert!(err(&format!("{CT}transcoders: [a.safetensors]\n"), "layer_3.safetensors", &w).contains("lists 1 transcoders"));
        assert!(err("- a\n- b\n", "layer_0.safetensors", &w).contains("not a mapping"));
        assert!(err("key: [unclosed\n", "layer_0.safetensors", &w).contains("not valid YAML"));
        assert!(err(&"a".repeat(crate::load::MAX_CONFIG_YAML + 1), "layer_0.safetensors", &w).contains("bytes"));
        // A YAML alias bomb is refused by the parser, not expanded.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            bomb.push_str(&format!("{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n", (b'a' + i) as char, (b'a' + i) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char, (b'a' + i - 1) as char));
        }
        assert!(err(&bomb, "layer_0.safetensors", &w).contains("YAML"));
        let extra = safetensors_of(&[("W_enc", vec![0.0; 12], vec![4, 3]), ("w_dec", vec![0.0; 12], vec![4, 3])]);
        assert!(err(CT, "layer_0.safetensors", &extra).contains("does not define: w_dec"));
        let bad = safetensors_of(&[("W_enc", vec![0.0; 12], vec![3, 4]), ("W_dec", vec![0.0; 12], vec![4, 3]), ("b_enc", vec![0.0; 4], vec![4]), ("b_dec", vec![0.0; 3], vec![3])]);
        assert!(err(CT, "layer_0.safetensors", &bad).contains("[d_sae, d_in]"));
        let e = Sae::load_files("ct", &DictFiles { layer_file: Some(("layer_0.safetensors", &w)), ..Default::default() }).unwrap_err();
        assert!(e.contains("config.yaml"), "{e}");
        let e = Sae::load_files("ct", &DictFiles { config_yaml: Some(CT.as_bytes()), cfg_json: Some(b"{}"), layer_file: Some(("layer_0.safetensors", &w)), ..Default::default() }).unwrap_err();
        assert!(e.contains("mixed with cfg.json"), "{e}");
    }
}
