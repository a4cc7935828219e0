//! Sparse autoencoders in SAELens's format (standard ReLU, JumpReLU, TopK;
//! run-time input normalisation): loading, encoding, decoding, decoder
//! rows, and clamping one latent through the error term.

use std::fmt;

use candle_core::{DType, Device, Tensor};
use scalpel_engine::{HookPoint, Model};
use serde::Serialize;

type Res<T> = Result<T, String>;

fn ce(e: impl fmt::Display) -> String {
    e.to_string()
}

/// A SAELens SAE's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeArch {
    /// ReLU.
    Standard,
    /// ReLU(h)·[h > threshold].
    JumpRelu,
    /// The k largest pre-activations, ReLU'd; the rest zero.
    TopK(usize),
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

/// A sparse autoencoder in SAELens's format.
pub struct Sae {
    pub name: String,
    pub hook_name: String,
    pub d_in: usize,
    pub d_sae: usize,
    pub arch: SaeArch,
    pub apply_b_dec_to_input: bool,
    pub norm: SaeNorm,
    /// For `attn.hook_z` SAEs of one head (`hook_head_index`).
    pub head_index: Option<usize>,
    w_enc: Tensor,
    w_dec: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
    threshold: Option<Tensor>,
}

impl fmt::Debug for Sae {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sae({} at {}, {:?}, {}→{})", self.name, self.hook_name, self.arch, self.d_in, self.d_sae)
    }
}

/// Per-row normalization constants, to undo on decode.
struct NormStats {
    scale: Option<Tensor>,
    shift: Option<Tensor>,
}

fn cfg_get<'a>(cfg: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    cfg.get(key)
        .filter(|v| !v.is_null())
        .or_else(|| cfg.get("metadata").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
        .or_else(|| cfg.get("meta").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
}

impl Sae {
    /// Loads `cfg.json` and `sae_weights.safetensors` (bytes). `name` names
    /// the SAE in errors.
    pub fn load(name: &str, cfg_json: &[u8], weights: &[u8]) -> Res<Sae> {
        let c = read_config(name, cfg_json)?;
        let (d_in, d_sae) = (c.d_in, c.d_sae);
        let st = safetensors::SafeTensors::deserialize(weights).map_err(|e| format!("{name}: sae_weights.safetensors: {e}"))?;
        let tensor = |key: &str, shape: &[usize]| read_tensor(name, &st, key, shape);
        let need = |key: &str, shape: &[usize]| -> Res<Tensor> {
            tensor(key, shape)?.ok_or_else(|| format!("{name}: sae_weights.safetensors has no tensor '{key}'"))
        };
        let w_enc = need("W_enc", &[d_in, d_sae])?;
        let w_dec = need("W_dec", &[d_sae, d_in])?;
        let b_dec = need("b_dec", &[d_in])?;
        let b_enc = need("b_enc", &[d_sae])?;
        let threshold = if c.arch == SaeArch::JumpRelu {
            match tensor("threshold", &[d_sae])? {
                Some(t) => Some(t),
                None => match tensor("log_threshold", &[d_sae])? {
                    Some(lt) => Some(lt.exp().map_err(ce)?),
                    None => return Err(format!("{name}: a jumprelu SAE needs a 'threshold' (or 'log_threshold') tensor")),
                },
            }
        } else {
            None
        };
        Ok(Sae {
            name: name.to_owned(),
            hook_name: c.hook_name,
            d_in,
            d_sae,
            arch: c.arch,
            apply_b_dec_to_input: c.apply_b_dec_to_input,
            norm: c.norm,
            head_index: c.head_index,
            w_enc,
            w_dec,
            b_enc,
            b_dec,
            threshold,
        })
    }

    /// Checks the SAE against a model and returns its hook point.
    pub fn point(&self, model: &Model) -> Res<HookPoint> {
        let p = model.hook_point(&self.hook_name).map_err(|e| format!("{}: hook_name: {e}", self.name))?;
        let width = model.config.flat_width(p.site).map_err(|e| format!("{}: {e}", self.name))?;
        let want = match self.head_index {
            Some(h) => {
                if p.site.head_axis().is_none() {
                    return Err(format!("{}: hook_head_index is set but '{}' has no heads", self.name, self.hook_name));
                }
                let dh = model.config.d_head;
                let heads = width / dh;
                if h >= heads {
                    return Err(format!("{}: hook_head_index {h} is out of range ({heads} heads)", self.name));
                }
                dh
            }
            None => width,
        };
        if self.d_in != want {
            return Err(format!(
                "{}: d_in is {} but '{}' has {want} values per position{}",
                self.name,
                self.d_in,
                self.hook_name,
                if self.head_index.is_some() { " for one head" } else { "" }
            ));
        }
        Ok(p)
    }

    fn normalize(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        Ok(match self.norm {
            SaeNorm::None => (x.clone(), NormStats { scale: None, shift: None }),
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

    fn encode_stats(&self, x: &Tensor) -> candle_core::Result<(Tensor, NormStats)> {
        let (xn, stats) = self.normalize(x)?;
        let sae_in = if self.apply_b_dec_to_input { xn.broadcast_sub(&self.b_dec)? } else { xn };
        let pre = sae_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?;
        let acts = match self.arch {
            SaeArch::Standard => pre.relu()?,
            SaeArch::JumpRelu => {
                let th = self.threshold.as_ref().expect("checked at load");
                let keep = pre.broadcast_gt(th)?.to_dtype(DType::F32)?;
                (pre.relu()? * keep)?
            }
            SaeArch::TopK(k) => {
                let rows: Vec<Vec<f32>> = pre.to_vec2()?;
                let n = rows.len();
                let mut out = vec![0f32; n * self.d_sae];
                for (r, row) in rows.iter().enumerate() {
                    for (i, v) in scalpel_engine::top_k(row, k) {
                        out[r * self.d_sae + i as usize] = v.max(0.0);
                    }
                }
                Tensor::from_vec(out, (n, self.d_sae), &Device::Cpu)?
            }
        };
        Ok((acts, stats))
    }

    fn decode_stats(&self, f: &Tensor, stats: &NormStats) -> candle_core::Result<Tensor> {
        let mut out = f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?;
        if let Some(s) = &stats.scale {
            out = out.broadcast_mul(s)?;
        }
        if let Some(m) = &stats.shift {
            out = out.broadcast_add(m)?;
        }
        Ok(out)
    }

    fn check_input(&self, x: &Tensor) -> Res<()> {
        match x.dims() {
            [_, d] if *d == self.d_in => Ok(()),
            dims => Err(format!("{}: input has shape {dims:?}; expected [n, {}]", self.name, self.d_in)),
        }
    }

    /// Latent activations `[n, d_sae]` of inputs `[n, d_in]`.
    pub fn encode(&self, x: &Tensor) -> Res<Tensor> {
        self.check_input(x)?;
        self.encode_stats(x).map(|r| r.0).map_err(ce)
    }

    /// Reconstruction `[n, d_in]` of latents `[n, d_sae]` (with no input
    /// normalization to undo; see `reconstruct` for that).
    pub fn decode(&self, f: &Tensor) -> Res<Tensor> {
        self.decode_stats(f, &NormStats { scale: None, shift: None }).map_err(ce)
    }

    /// (latents, reconstruction) of inputs `[n, d_in]`.
    pub fn reconstruct(&self, x: &Tensor) -> Res<(Tensor, Tensor)> {
        self.check_input(x)?;
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let r = self.decode_stats(&f, &s).map_err(ce)?;
        Ok((f, r))
    }

    /// Decoder row `latent` (the latent's write direction), `[d_in]`.
    pub fn decoder_row(&self, latent: usize) -> Res<Vec<f32>> {
        if latent >= self.d_sae {
            return Err(format!("{}: latent {latent} is out of range (d_sae = {})", self.name, self.d_sae));
        }
        self.w_dec.get(latent).and_then(|r| r.to_vec1()).map_err(ce)
    }

    /// decode(f with latent i set to `value`) − decode(f): the change that
    /// clamping makes, leaving the reconstruction error in place.
    pub fn clamp_delta(&self, x: &Tensor, latent: usize, value: f32) -> Res<Tensor> {
        self.check_input(x)?;
        if latent >= self.d_sae {
            return Err(format!("{}: latent {latent} is out of range (d_sae = {})", self.name, self.d_sae));
        }
        let (f, s) = self.encode_stats(x).map_err(ce)?;
        let n = f.dim(0).map_err(ce)?;
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
        let d = (a - b).map_err(ce)?;
        debug_assert_eq!(d.dim(0).unwrap_or(n), n);
        Ok(d)
    }

    /// Rows `[n, d_in]` of a hook value (batch axis included), for this SAE.
    pub fn rows_of(&self, x: &Tensor) -> candle_core::Result<(Tensor, Vec<usize>)> {
        let dims = x.dims().to_vec();
        let (b, t) = (dims[0], dims[1]);
        let rows = match self.head_index {
            Some(h) => x.narrow(2, h, 1)?.reshape((b * t, self.d_in))?,
            None => x.reshape((b * t, self.d_in))?,
        };
        Ok((rows, dims))
    }
}

/// What a SAELens `cfg.json` says (top level, or under `metadata` / `meta`).
struct SaeConfig {
    hook_name: String,
    d_in: usize,
    d_sae: usize,
    arch: SaeArch,
    apply_b_dec_to_input: bool,
    norm: SaeNorm,
    head_index: Option<usize>,
}

fn read_config(name: &str, cfg_json: &[u8]) -> Res<SaeConfig> {
    let cfg: serde_json::Value =
        serde_json::from_slice(cfg_json).map_err(|e| format!("{name}: cfg.json is not valid JSON: {e}"))?;
    let int = |k: &str| -> Res<usize> {
        cfg_get(&cfg, k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| format!("{name}: cfg.json needs an integer '{k}'"))
    };
    let (d_in, d_sae) = (int("d_in")?, int("d_sae")?);
    if d_in == 0 || d_sae == 0 {
        return Err(format!("{name}: d_in and d_sae must be positive"));
    }
    let hook_name = cfg_get(&cfg, "hook_name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{name}: cfg.json has no 'hook_name' (top level or in 'metadata')"))?
        .to_owned();
    let arch_s = cfg_get(&cfg, "architecture").and_then(|v| v.as_str()).unwrap_or("standard");
    let arch = match arch_s {
        "standard" => SaeArch::Standard,
        "jumprelu" => SaeArch::JumpRelu,
        "topk" => {
            let k = cfg_get(&cfg, "k")
                .or_else(|| cfg_get(&cfg, "activation_fn_kwargs").and_then(|a| a.get("k")))
                .and_then(|v| v.as_u64())
                .ok_or_else(|| format!("{name}: a topk SAE needs an integer 'k' in cfg.json"))? as usize;
            if k == 0 || k > d_sae {
                return Err(format!("{name}: k = {k} must be in 1..={d_sae}"));
            }
            SaeArch::TopK(k)
        }
        other => return Err(format!("{name}: architecture '{other}' is not supported (supported: standard, jumprelu, topk)")),
    };
    if cfg_get(&cfg, "rescale_acts_by_decoder_norm").and_then(|v| v.as_bool()) == Some(true) {
        return Err(format!("{name}: rescale_acts_by_decoder_norm = true is not supported"));
    }
    if let Some(r) = cfg_get(&cfg, "reshape_activations").and_then(|v| v.as_str()) {
        if r != "none" && r != "hook_z" {
            return Err(format!("{name}: reshape_activations '{r}' is not supported (none, hook_z)"));
        }
    }
    let norm = match cfg_get(&cfg, "normalize_activations").and_then(|v| v.as_str()).unwrap_or("none") {
        // SAELens itself applies nothing at run time for this one when
        // loading from disk (the factor is folded in at from_pretrained).
        "none" | "expected_average_only_in" => SaeNorm::None,
        "constant_norm_rescale" => SaeNorm::ConstantNormRescale,
        "layer_norm" => SaeNorm::LayerNorm,
        other => return Err(format!("{name}: normalize_activations '{other}' is not supported")),
    };
    let apply_b_dec_to_input = cfg_get(&cfg, "apply_b_dec_to_input").and_then(|v| v.as_bool()).unwrap_or(true);
    let head_index = cfg_get(&cfg, "hook_head_index").and_then(|v| v.as_u64()).map(|x| x as usize);

    Ok(SaeConfig { hook_name, d_in, d_sae, arch, apply_b_dec_to_input, norm, head_index })
}

/// Tensor `key` of the weights in f32, checked to have `shape` and finite values; `None` if absent.
fn read_tensor(name: &str, st: &safetensors::SafeTensors, key: &str, shape: &[usize]) -> Res<Option<Tensor>> {
    let Ok(view) = st.tensor(key) else { return Ok(None) };
    if view.shape() != shape {
        return Err(format!("{name}: tensor '{key}' has shape {:?}, expected {shape:?}", view.shape()));
    }
    let dt = match view.dtype() {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F64 => DType::F64,
        other => return Err(format!("{name}: tensor '{key}' has dtype {other:?} (F32, F16, BF16, F64 supported)")),
    };
    let t = Tensor::from_raw_buffer(view.data(), dt, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(|e| format!("{name}: tensor '{key}': {e}"))?;
    let bad = t.flatten_all().and_then(|x| x.to_vec1::<f32>()).map_err(ce)?.iter().position(|x| !x.is_finite());
    if let Some(j) = bad {
        return Err(format!("{name}: tensor '{key}' has a non-finite value at flat index {j}"));
    }
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_sae(arch: &str, extra: &str) -> Sae {
        let (d_in, d_sae) = (3usize, 4usize);
        let w_enc: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.5).collect();
        let w_dec: Vec<f32> = (0..d_in * d_sae).map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.25).collect();
        let b_enc = vec![0.1f32, -0.2, 0.0, 0.3];
        let b_dec = vec![0.05f32, 0.0, -0.1];
        let th = vec![0.2f32, 0.0, 0.5, 0.1];
        let mut tensors: Vec<(&str, Vec<f32>, Vec<usize>)> = vec![
            ("W_enc", w_enc, vec![d_in, d_sae]),
            ("W_dec", w_dec, vec![d_sae, d_in]),
            ("b_enc", b_enc, vec![d_sae]),
            ("b_dec", b_dec, vec![d_in]),
        ];
        if arch == "jumprelu" {
            tensors.push(("threshold", th, vec![d_sae]));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, d, s)| {
                let bytes: &[u8] = unsafe { std::slice::from_raw_parts(d.as_ptr() as *const u8, d.len() * 4) };
                (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytes).unwrap())
            })
            .collect();
        let st = safetensors::serialize(views, None).unwrap();
        let cfg = format!(r#"{{"d_in": 3, "d_sae": 4, "architecture": "{arch}", "hook_name": "blocks.0.hook_resid_post"{extra}}}"#);
        Sae::load("tiny", cfg.as_bytes(), &st).unwrap()
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
    fn sae_rejects_bad_configs() {
        let err = |cfg: &str| Sae::load("s", cfg.as_bytes(), b"").unwrap_err();
        assert!(err(r#"{"d_sae": 4, "hook_name": "x"}"#).contains("d_in"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "gated", "hook_name": "x"}"#).contains("not supported"));
        assert!(err(r#"{"d_in": 3, "d_sae": 4, "architecture": "topk", "hook_name": "x"}"#).contains("'k'"));
    }
}
