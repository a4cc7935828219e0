//! Reading the published formats into a `Sae` (docs/features.md has the
//! tables): SAELens (`cfg.json` + `sae_weights.safetensors`), EleutherAI
//! sparsify (a folder per hook: `cfg.json` + `sae.safetensors`), Gemma Scope
//! (`params.npz` / `params.safetensors`), circuit-tracer transcoder sets
//! (`config.yaml` + one `layer_N.safetensors` per layer). Every tensor is checked for shape,
//! dtype and finite values before use; tensors a format does not define are
//! refused by name, and so are config values this code does not implement.
//! Nothing allocates more than the bytes given (shapes are compared before
//! any conversion).

use candle_core::{DType, Device, Tensor};

use crate::npz::{read_npz, NpyArray};
use crate::sae::{ce, Format, Res, Sae, SaeArch, SaeNorm};

/// The files a dictionary folder may hold, by the names callers read (a
/// circuit-tracer set is `config.yaml` and a `layer_N.safetensors` instead).
pub const FILE_NAMES: [&str; 5] = ["cfg.json", "sae_weights.safetensors", "sae.safetensors", "params.npz", "params.safetensors"];

/// A dictionary folder's files (bytes), for `Sae::load_files`. Exactly one
/// weights file: `sae_weights` (SAELens), `sae` (sparsify; `folder` names
/// the hook, e.g. `layers.6.mlp`), or `params_*` (Gemma Scope; the hook
/// comes from `hook` or from `cfg.json`'s `hook_name`).
#[derive(Default, Clone, Copy)]
pub struct DictFiles<'a> {
    /// The folder's own name (its last path component).
    pub folder: &'a str,
    pub cfg_json: Option<&'a [u8]>,
    pub sae_weights_safetensors: Option<&'a [u8]>,
    pub sae_safetensors: Option<&'a [u8]>,
    pub params_npz: Option<&'a [u8]>,
    pub params_safetensors: Option<&'a [u8]>,
    /// The input hook, for formats whose files do not name it (Gemma Scope),
    /// or to override a sparsify folder name.
    pub hook: Option<&'a str>,
    /// The output hook of a transcoder given that way.
    pub hook_out: Option<&'a str>,
    /// A circuit-tracer transcoder set's `config.yaml`, with `layer_file`.
    pub config_yaml: Option<&'a [u8]>,
    /// One layer of a circuit-tracer set: its file name (`layer_6.safetensors`) and bytes.
    pub layer_file: Option<(&'a str, &'a [u8])>,
}

impl DictFiles<'_> {
    /// The names of the weights files given (at most one is allowed).
    fn weights_present(&self) -> Vec<&'static str> {
        [
            ("sae_weights.safetensors", self.sae_weights_safetensors.is_some()),
            ("sae.safetensors", self.sae_safetensors.is_some()),
            ("params.npz", self.params_npz.is_some()),
            ("params.safetensors", self.params_safetensors.is_some()),
        ]
        .iter()
        .filter(|p| p.1)
        .map(|p| p.0)
        .collect()
    }
}

/// Tensors by name from a safetensors file or an .npz archive.
enum Store<'a> {
    St(safetensors::SafeTensors<'a>),
    Npz(Vec<(String, NpyArray<'a>)>),
}

struct Raw<'a> {
    shape: Vec<usize>,
    dtype: DType,
    data: &'a [u8],
}

impl<'a> Store<'a> {
    fn safetensors(name: &str, file: &str, bytes: &'a [u8]) -> Res<Self> {
        safetensors::SafeTensors::deserialize(bytes).map(Store::St).map_err(|e| format!("{name}: {file}: {e}"))
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Store::St(st) => st.names().into_iter().map(|s| s.to_string()).collect(),
            Store::Npz(a) => a.iter().map(|(k, _)| k.clone()).collect(),
        }
    }

    fn raw(&self, name: &str, key: &str) -> Res<Option<Raw<'_>>> {
        match self {
            Store::St(st) => {
                let Ok(view) = st.tensor(key) else { return Ok(None) };
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    safetensors::Dtype::F64 => DType::F64,
                    other => return Err(format!("{name}: tensor '{key}' has dtype {other:?} (F32, F16, BF16, F64 supported)")),
                };
                Ok(Some(Raw { shape: view.shape().to_vec(), dtype, data: view.data() }))
            }
            Store::Npz(arrays) => Ok(arrays.iter().find(|(k, _)| k == key).map(|(_, a)| Raw {
                shape: a.shape.clone(),
                dtype: match a.dtype {
                    "f2" => DType::F16,
                    "f8" => DType::F64,
                    _ => DType::F32,
                },
                data: a.data,
            })),
        }
    }

    /// Tensor `key` in f32, checked to have `shape` and finite values; `None` if absent.
    fn get(&self, name: &str, key: &str, shape: &[usize]) -> Res<Option<Tensor>> {
        let Some(raw) = self.raw(name, key)? else { return Ok(None) };
        if raw.shape != shape {
            return Err(format!("{name}: tensor '{key}' has shape {:?}, expected {shape:?}", raw.shape));
        }
        let t = Tensor::from_raw_buffer(raw.data, raw.dtype, shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| format!("{name}: tensor '{key}': {e}"))?;
        let bad = t.flatten_all().and_then(|x| x.to_vec1::<f32>()).map_err(ce)?.iter().position(|x| !x.is_finite());
        if let Some(j) = bad {
            return Err(format!("{name}: tensor '{key}' has a non-finite value at flat index {j}"));
        }
        Ok(Some(t))
    }

    fn need(&self, name: &str, file: &str, key: &str, shape: &[usize]) -> Res<Tensor> {
        self.get(name, key, shape)?.ok_or_else(|| format!("{name}: {file} has no tensor '{key}'"))
    }

    fn shape_of(&self, name: &str, key: &str) -> Res<Option<Vec<usize>>> {
        Ok(self.raw(name, key)?.map(|r| r.shape))
    }

    /// Refuses tensors outside `known` (a format's full list).
    fn only(&self, name: &str, file: &str, known: &[&str]) -> Res<()> {
        let mut extra: Vec<String> = self.keys().into_iter().filter(|k| !known.contains(&k.as_str())).collect();
        extra.sort();
        if !extra.is_empty() {
            return Err(format!("{name}: {file} has tensors this format does not define: {} (expected {})", extra.join(", "), known.join(", ")));
        }
        Ok(())
    }

    /// SAELens and Gemma Scope's `scaling_factor`: dropped when all ones,
    /// refused otherwise (SAELens 6 has no use for it either).
    fn check_scaling_factor(&self, name: &str) -> Res<()> {
        let Some(shape) = self.shape_of(name, "scaling_factor")? else { return Ok(()) };
        let t = self.need(name, "weights", "scaling_factor", &shape)?;
        let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).map_err(ce)?;
        if v.iter().any(|x| *x != 1.0) {
            return Err(format!("{name}: a 'scaling_factor' other than 1 (finetuning_scaling_factor) is not supported"));
        }
        Ok(())
    }
}

fn cfg_get<'a>(cfg: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    cfg.get(key)
        .filter(|v| !v.is_null())
        .or_else(|| cfg.get("metadata").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
        .or_else(|| cfg.get("meta").and_then(|m| m.get(key)).filter(|v| !v.is_null()))
}

fn parse_cfg(name: &str, file: &str, bytes: &[u8]) -> Res<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("{name}: {file} is not valid JSON: {e}"))?;
    if !v.is_object() {
        return Err(format!("{name}: {file} is not a JSON object"));
    }
    Ok(v)
}

/// Dimensions are capped so that products stay far from overflow; real
/// dictionaries are well below (a 16M-latent dictionary is ~200 GB).
const MAX_DIM: u64 = 1 << 26;

fn dim(name: &str, cfg: &serde_json::Value, key: &str) -> Res<Option<usize>> {
    match cfg_get(cfg, key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(x) if x > 0 && x <= MAX_DIM => Ok(Some(x as usize)),
            _ => Err(format!("{name}: cfg.json '{key}' must be an integer in 1..={MAX_DIM}, not {v}")),
        },
    }
}

fn flag(name: &str, cfg: &serde_json::Value, key: &str, default: bool) -> Res<bool> {
    match cfg_get(cfg, key) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| format!("{name}: cfg.json '{key}' must be true or false, not {v}")),
    }
}

fn string(cfg: &serde_json::Value, key: &str) -> Option<String> {
    cfg_get(cfg, key).and_then(|v| v.as_str()).map(str::to_owned)
}

/// `sae_lens_version` (top level or metadata) is 6 or later.
fn saelens_v6(cfg: &serde_json::Value) -> bool {
    string(cfg, "sae_lens_version").and_then(|v| v.split('.').next().and_then(|m| m.parse::<u32>().ok())).is_some_and(|m| m >= 6)
}

impl Sae {
    /// Loads a SAELens dictionary: `cfg.json` and `sae_weights.safetensors`
    /// (bytes). `name` names it in errors. Architectures: standard,
    /// jumprelu, topk, transcoder, skip_transcoder, jumprelu_transcoder.
    pub fn load(name: &str, cfg_json: &[u8], weights: &[u8]) -> Res<Sae> {
        let cfg = parse_cfg(name, "cfg.json", cfg_json)?;
        let file = "sae_weights.safetensors";
        let (d_in, d_sae) = match (dim(name, &cfg, "d_in")?, dim(name, &cfg, "d_sae")?) {
            (Some(a), Some(b)) => (a, b),
            (None, _) => return Err(format!("{name}: cfg.json needs an integer 'd_in'")),
            (_, None) => return Err(format!("{name}: cfg.json needs an integer 'd_sae'")),
        };
        // Pre-6.0 names (SAELens handle_pre_6_0_config).
        let hook_name = string(&cfg, "hook_name")
            .or_else(|| string(&cfg, "hook_point"))
            .ok_or_else(|| format!("{name}: cfg.json has no 'hook_name' (top level or in 'metadata')"))?;
        let activation_fn = string(&cfg, "activation_fn").or_else(|| string(&cfg, "activation_fn_str"));
        let kwargs_k = cfg_get(&cfg, "activation_fn_kwargs").and_then(|a| a.get("k")).filter(|v| !v.is_null());
        let mut arch_s = string(&cfg, "architecture").unwrap_or_else(|| "standard".into());
        if !saelens_v6(&cfg) && activation_fn.as_deref() == Some("topk") && kwargs_k.is_some() {
            arch_s = "topk".into();
        }
        let transcoder = matches!(arch_s.as_str(), "transcoder" | "skip_transcoder" | "jumprelu_transcoder");
        let arch = match arch_s.as_str() {
            "standard" | "transcoder" | "skip_transcoder" => SaeArch::Standard,
            "jumprelu" | "jumprelu_transcoder" => SaeArch::JumpRelu,
            "topk" => {
                let k = cfg_get(&cfg, "k")
                    .or(kwargs_k)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| format!("{name}: a topk SAE needs an integer 'k' in cfg.json"))?;
                if k == 0 || k > d_sae as u64 {
                    return Err(format!("{name}: k = {k} must be in 1..={d_sae}"));
                }
                SaeArch::TopK(k as usize)
            }
            other => {
                return Err(format!(
                    "{name}: architecture '{other}' is not supported (supported: standard, jumprelu, topk, transcoder, skip_transcoder, jumprelu_transcoder)"
                ))
            }
        };
        if let Some(a) = &activation_fn {
            if a != "relu" && a != "topk" {
                return Err(format!("{name}: activation_fn '{a}' is not supported (SAELens 6 uses ReLU for '{arch_s}')"));
            }
        }
        let rescale = matches!(arch, SaeArch::TopK(_)) && flag(name, &cfg, "rescale_acts_by_decoder_norm", false)?;
        if let Some(r) = string(&cfg, "reshape_activations") {
            if r != "none" && r != "hook_z" {
                return Err(format!("{name}: reshape_activations '{r}' is not supported (none, hook_z)"));
            }
        }
        let mut notes = Vec::new();
        let norm_v = cfg_get(&cfg, "normalize_activations");
        let norm_s = match norm_v {
            None => "none".to_owned(),
            // Pre-6.0 booleans: true meant the April-update scaling.
            Some(serde_json::Value::Bool(b)) => if *b { "expected_average_only_in" } else { "none" }.to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => return Err(format!("{name}: normalize_activations {v} is not supported")),
        };
        let mut fold_factor = None;
        let norm = match norm_s.as_str() {
            "none" => SaeNorm::None,
            "constant_norm_rescale" => SaeNorm::ConstantNormRescale,
            "layer_norm" => SaeNorm::LayerNorm,
            "expected_average_only_in" => {
                // SAELens's from_pretrained folds a factor from its release
                // table (pretrained_saes.yaml); load_from_disk applies nothing.
                // A factor in cfg.json itself is folded; without one this
                // loads as load_from_disk does, and says so.
                match cfg_get(&cfg, "norm_scaling_factor") {
                    Some(v) => {
                        let s = v.as_f64().filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| format!("{name}: cfg.json 'norm_scaling_factor' must be a positive number, not {v}"))?;
                        fold_factor = Some(s);
                        notes.push(format!("norm_scaling_factor {s} folded in (SAELens fold_activation_norm_scaling_factor)"));
                    }
                    None => notes.push(
                        "normalize_activations is 'expected_average_only_in' but cfg.json has no norm_scaling_factor: nothing is applied at run time \
                         (as SAELens load_from_disk; its from_pretrained folds the release's factor from pretrained_saes.yaml — add \"norm_scaling_factor\" to cfg.json to match it)"
                            .into(),
                    ),
                }
                SaeNorm::None
            }
            other => return Err(format!("{name}: normalize_activations '{other}' is not supported (none, expected_average_only_in, constant_norm_rescale, layer_norm)")),
        };
        let head_index = match cfg_get(&cfg, "hook_head_index").or_else(|| cfg_get(&cfg, "hook_point_head_index")) {
            None => None,
            Some(v) => Some(v.as_u64().filter(|h| *h <= MAX_DIM).ok_or_else(|| format!("{name}: hook_head_index must be an integer"))? as usize),
        };
        let (hook_name_out, d_out, apply_b_dec_to_input) = if transcoder {
            let out = string(&cfg, "hook_name_out").ok_or_else(|| format!("{name}: a {arch_s} needs 'hook_name_out' in cfg.json (or its metadata)"))?;
            let d_out = dim(name, &cfg, "d_out")?.ok_or_else(|| format!("{name}: a {arch_s} needs an integer 'd_out' in cfg.json"))?;
            if flag(name, &cfg, "apply_b_dec_to_input", false)? {
                return Err(format!("{name}: apply_b_dec_to_input = true is not supported for transcoders (SAELens refuses it too)"));
            }
            if head_index.is_some() {
                return Err(format!("{name}: hook_head_index is not supported for transcoders"));
            }
            (Some(out), d_out, false)
        } else {
            (None, d_in, flag(name, &cfg, "apply_b_dec_to_input", true)?)
        };

        let st = Store::safetensors(name, file, weights)?;
        let mut known = vec!["W_enc", "W_dec", "b_enc", "b_dec", "scaling_factor"];
        if arch == SaeArch::JumpRelu {
            known.extend(["threshold", "log_threshold"]);
        }
        if arch_s == "skip_transcoder" {
            known.push("W_skip");
        }
        st.only(name, file, &known)?;
        st.check_scaling_factor(name)?;
        let mut w_enc = st.need(name, file, "W_enc", &[d_in, d_sae])?;
        let mut w_dec = st.need(name, file, "W_dec", &[d_sae, d_out])?;
        let mut b_dec = st.need(name, file, "b_dec", &[d_out])?;
        let b_enc = st.need(name, file, "b_enc", &[d_sae])?;
        let threshold = if arch == SaeArch::JumpRelu {
            match st.get(name, "threshold", &[d_sae])? {
                Some(t) => Some(t),
                None => match st.get(name, "log_threshold", &[d_sae])? {
                    Some(lt) => Some(lt.exp().map_err(ce)?),
                    None => return Err(format!("{name}: a jumprelu SAE needs a 'threshold' (or 'log_threshold') tensor")),
                },
            }
        } else {
            None
        };
        let w_skip = if arch_s == "skip_transcoder" { Some(st.need(name, file, "W_skip", &[d_out, d_in])?) } else { None };
        if let Some(s) = fold_factor {
            w_enc = w_enc.affine(s, 0.0).map_err(ce)?;
            w_dec = w_dec.affine(1.0 / s, 0.0).map_err(ce)?;
            b_dec = b_dec.affine(1.0 / s, 0.0).map_err(ce)?;
        }
        if let Some(d) = string(&cfg, "dtype").filter(|d| d != "float32") {
            notes.push(format!("computed in float32 (cfg.json dtype is {d})"));
        }
        let dec_norms = if rescale { Some(row_norms(&w_dec)?) } else { None };
        Ok(Sae {
            name: name.to_owned(),
            format: Format::SaeLens,
            hook_name,
            hook_name_out,
            d_in,
            d_out,
            d_sae,
            arch,
            apply_b_dec_to_input,
            norm,
            relu: true,
            rescale_acts_by_decoder_norm: rescale,
            head_index,
            model_name: string(&cfg, "model_name"),
            notes,
            w_enc,
            w_dec,
            b_enc,
            b_dec,
            threshold,
            w_skip,
            dec_norms,
        })
    }

    /// Loads an EleutherAI sparsify sparse coder: `cfg.json` + `sae.safetensors`
    /// of the folder `folder` (the Hugging Face module it hooks, e.g.
    /// `layers.6` or `layers.6.mlp`; `hooks` overrides the mapping).
    pub fn load_sparsify(name: &str, folder: &str, cfg_json: &[u8], weights: &[u8], hooks: Option<(&str, Option<&str>)>) -> Res<Sae> {
        let cfg = parse_cfg(name, "cfg.json", cfg_json)?;
        let file = "sae.safetensors";
        let d_in = dim(name, &cfg, "d_in")?.ok_or_else(|| format!("{name}: cfg.json needs an integer 'd_in'"))?;
        let int_or = |key: &str, default: u64| -> Res<u64> {
            match cfg.get(key).filter(|v| !v.is_null()) {
                None => Ok(default),
                Some(v) => v.as_u64().filter(|x| *x <= MAX_DIM).ok_or_else(|| format!("{name}: cfg.json '{key}' must be a non-negative integer, not {v}")),
            }
        };
        // sparsify's SparseCoderConfig defaults.
        let k = int_or("k", 32)?;
        let num_latents = int_or("num_latents", 0)?;
        let expansion = int_or("expansion_factor", 32)?;
        let d_sae = if num_latents > 0 { num_latents } else { (d_in as u64).saturating_mul(expansion) };
        if d_sae == 0 || d_sae > MAX_DIM {
            return Err(format!("{name}: the latent count (num_latents, or d_in × expansion_factor = {d_sae}) must be in 1..={MAX_DIM}"));
        }
        let d_sae = d_sae as usize;
        if k == 0 || k > d_sae as u64 {
            return Err(format!("{name}: k = {k} must be in 1..={d_sae}"));
        }
        let k = k as usize;
        let transcode = flag(name, &cfg, "transcode", false)?;
        let skip = flag(name, &cfg, "skip_connection", false)?;
        if flag(name, &cfg, "signed", false)? {
            return Err(format!("{name}: signed sparse coders (an early sparsify option) are not supported"));
        }
        let arch = match cfg.get("activation").and_then(|v| v.as_str()).unwrap_or("topk") {
            "topk" => SaeArch::TopK(k),
            "groupmax" => {
                if !d_sae.is_multiple_of(k) {
                    return Err(format!("{name}: groupmax needs the latent count {d_sae} to be a multiple of k = {k}"));
                }
                SaeArch::GroupMax(k)
            }
            other => return Err(format!("{name}: activation '{other}' is not supported (topk, groupmax)")),
        };
        let mut notes = Vec::new();
        if transcode && cfg.get("activation").is_none() {
            // Transcoders saved before sparsify had `activation` (Feb 2025)
            // may come from the versions that subtracted b_dec from the input.
            notes.push("transcoder without 'activation' in cfg.json: read with current sparsify semantics (no b_dec subtracted from the input)".into());
        }
        let (hook_name, hook_name_out) = match hooks {
            Some((h, out)) => (h.to_owned(), out.map(str::to_owned)),
            None => sparsify_hooks(name, folder, transcode)?,
        };
        if hook_name_out.is_some() != transcode {
            return Err(format!("{name}: cfg.json says transcode = {transcode}, but {} output hook was given", if transcode { "no" } else { "an" }));
        }

        let st = Store::safetensors(name, file, weights)?;
        let mut known = vec!["encoder.weight", "encoder.bias", "W_dec", "b_dec"];
        if skip {
            known.push("W_skip");
        }
        st.only(name, file, &known)?;
        let w_enc = st.need(name, file, "encoder.weight", &[d_sae, d_in])?.t().and_then(|t| t.contiguous()).map_err(ce)?;
        let b_enc = st.need(name, file, "encoder.bias", &[d_sae])?;
        let w_dec = st.need(name, file, "W_dec", &[d_sae, d_in])?;
        let b_dec = st.need(name, file, "b_dec", &[d_in])?;
        let w_skip = if skip { Some(st.need(name, file, "W_skip", &[d_in, d_in])?) } else { None };
        Ok(Sae {
            name: name.to_owned(),
            format: Format::Sparsify,
            hook_name,
            hook_name_out,
            d_in,
            d_out: d_in,
            d_sae,
            arch,
            // sparsify: x − b_dec for autoencoders, x for transcoders.
            apply_b_dec_to_input: !transcode,
            norm: SaeNorm::None,
            relu: true,
            rescale_acts_by_decoder_norm: false,
            head_index: None,
            model_name: None,
            notes,
            w_enc,
            w_dec,
            b_enc,
            b_dec,
            threshold: None,
            w_skip,
            dec_norms: None,
        })
    }

    /// Loads a Gemma Scope (1 or 2) JumpReLU dictionary from `params.npz` or
    /// `params.safetensors` (`npz` says which): `W_enc [d_in, d_sae]`,
    /// `W_dec [d_sae, d_out]`, `b_enc`, `b_dec`, `threshold` (lower-case
    /// `w_` accepted, as SAELens does), and Gemma Scope 2's affine
    /// transcoders' `affine_skip_connection [d_in, d_out]`. The files do not name the hook:
    /// `hook` is the input hook, `hook_out` makes it a transcoder.
    pub fn load_gemma_scope(name: &str, params: &[u8], npz: bool, hook: &str, hook_out: Option<&str>) -> Res<Sae> {
        let file = if npz { "params.npz" } else { "params.safetensors" };
        let store = if npz { Store::Npz(read_npz(&format!("{name}: {file}"), params)?) } else { Store::safetensors(name, file, params)? };
        // SAELens's loader maps w_enc → W_enc, w_dec → W_dec.
        let key = |k: &str| -> Res<String> {
            let lower = format!("w_{}", &k[2..]);
            match (store.raw(name, k)?.is_some(), store.raw(name, &lower)?.is_some()) {
                (true, true) => Err(format!("{name}: {file} has both '{k}' and '{lower}'")),
                (false, true) => Ok(lower),
                _ => Ok(k.to_owned()),
            }
        };
        let (k_enc, k_dec) = (key("W_enc")?, key("W_dec")?);
        store.only(name, file, &[&k_enc, &k_dec, "b_enc", "b_dec", "threshold", "scaling_factor", "affine_skip_connection"])?;
        store.check_scaling_factor(name)?;
        let enc_shape = store.shape_of(name, &k_enc)?.ok_or_else(|| format!("{name}: {file} has no tensor 'W_enc'"))?;
        let dec_shape = store.shape_of(name, &k_dec)?.ok_or_else(|| format!("{name}: {file} has no tensor 'W_dec'"))?;
        let (d_in, d_sae, d_out) = match (&enc_shape[..], &dec_shape[..]) {
            ([a, b], [c, d]) if b == c => (*a, *b, *d),
            _ => return Err(format!("{name}: W_enc {enc_shape:?} and W_dec {dec_shape:?} are not [d_in, d_sae] and [d_sae, d_out]")),
        };
        if d_in == 0 || d_sae == 0 || d_out == 0 {
            return Err(format!("{name}: zero-sized dictionary"));
        }
        if hook_out.is_none() && d_out != d_in {
            return Err(format!("{name}: W_dec writes {d_out} values but W_enc reads {d_in}: a transcoder needs its output hook"));
        }
        if hook == "hook_embed" {
            return Err(format!("{name}: Gemma Scope embedding SAEs are rescaled by √d_in in SAELens's loader; not supported"));
        }
        // Gemma Scope 2's affine transcoders: ŷ += x · affine_skip_connection ([d_in, d_out]).
        let w_skip = match store.get(name, "affine_skip_connection", &[d_in, d_out])? {
            Some(_) if hook_out.is_none() => {
                return Err(format!("{name}: {file} has an affine_skip_connection, which only a transcoder has: give its output hook"))
            }
            Some(a) => Some(a.t().and_then(|t| t.contiguous()).map_err(ce)?),
            None => None,
        };
        Ok(Sae {
            name: name.to_owned(),
            format: Format::GemmaScope,
            hook_name: hook.to_owned(),
            hook_name_out: hook_out.map(str::to_owned),
            d_in,
            d_out,
            d_sae,
            arch: SaeArch::JumpRelu,
            // SAELens's Gemma Scope config: no b_dec on the input, no normalization.
            apply_b_dec_to_input: false,
            norm: SaeNorm::None,
            relu: true,
            rescale_acts_by_decoder_norm: false,
            head_index: None,
            model_name: None,
            notes: Vec::new(),
            w_enc: store.need(name, file, &k_enc, &[d_in, d_sae])?,
            w_dec: store.need(name, file, &k_dec, &[d_sae, d_out])?,
            b_enc: store.need(name, file, "b_enc", &[d_sae])?,
            b_dec: store.need(name, file, "b_dec", &[d_out])?,
            threshold: Some(store.need(name, file, "threshold", &[d_sae])?),
            w_skip,
            dec_norms: None,
        })
    }

    /// Loads whichever format `files` holds (see `DictFiles`).
    pub fn load_files(name: &str, files: &DictFiles) -> Res<Sae> {
        if files.config_yaml.is_some() || files.layer_file.is_some() {
            return Sae::load_circuit_tracer_files(name, files);
        }
        let present = files.weights_present();
        let cfg = || files.cfg_json.ok_or_else(|| format!("{name}: cfg.json is missing (it comes with {})", present.join(", ")));
        match present[..] {
            ["sae_weights.safetensors"] => {
                if files.hook.is_some() || files.hook_out.is_some() {
                    return Err(format!("{name}: a SAELens cfg.json names its hooks; a hook given separately is not used"));
                }
                Sae::load(name, cfg()?, files.sae_weights_safetensors.unwrap_or_default())
            }
            ["sae.safetensors"] => {
                let hooks = files.hook.map(|h| (h, files.hook_out));
                if files.hook.is_none() && files.hook_out.is_some() {
                    return Err(format!("{name}: an output hook was given without an input hook"));
                }
                Sae::load_sparsify(name, files.folder, cfg()?, files.sae_safetensors.unwrap_or_default(), hooks)
            }
            ["params.npz"] | ["params.safetensors"] => {
                let from_cfg = match files.cfg_json {
                    Some(c) => {
                        let v = parse_cfg(name, "cfg.json", c)?;
                        (string(&v, "hook_name"), string(&v, "hook_name_out"))
                    }
                    None => (None, None),
                };
                let hook = files.hook.map(str::to_owned).or(from_cfg.0).ok_or_else(|| {
                    format!("{name}: Gemma Scope files do not name their hook: give it (CLI: --hook, e.g. blocks.12.hook_resid_post) or put \"hook_name\" in a cfg.json")
                })?;
                let hook_out = files.hook_out.map(str::to_owned).or(from_cfg.1);
                let npz = files.params_npz.is_some();
                let bytes = files.params_npz.or(files.params_safetensors).unwrap_or_default();
                Sae::load_gemma_scope(name, bytes, npz, &hook, hook_out.as_deref())
            }
            [] => Err(format!("{name}: no dictionary weights (expected one of sae_weights.safetensors, sae.safetensors, params.npz, params.safetensors)")),
            _ => Err(format!("{name}: more than one weights file ({}); keep one", present.join(", "))),
        }
    }
}

/// Largest circuit-tracer `config.yaml` read: real ones are a few hundred bytes
/// (a `transcoders` list of one URI per layer).
pub const MAX_CONFIG_YAML: usize = 1 << 20;

/// The layer of a circuit-tracer file name, `layer_N.safetensors` → N.
pub fn circuit_tracer_layer(file: &str) -> Option<usize> {
    let n = file.strip_prefix("layer_")?.strip_suffix(".safetensors")?;
    if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// A circuit-tracer hook (TransformerLens names relative to the block, as
/// its `ReplacementModel` hooks them) as Scalpel's full name for `layer`.
/// `mlp.hook_in` / `mlp.hook_out` are the MLP's input and output
/// (`ln2.hook_normalized`, `hook_mlp_out` here). TransformerLens's RMSNorm
/// `hook_normalized` is the value before the norm's weight, which Scalpel
/// does not hook (its `hook_normalized` is after it): refused by name.
pub fn circuit_tracer_hook(name: &str, field: &str, layer: usize, hook: &str) -> Res<String> {
    if hook.is_empty() || hook.len() > 128 || !hook.chars().all(|c| c.is_ascii_alphanumeric() || "._{}".contains(c)) {
        return Err(format!("{name}: config.yaml '{field}' is not a hook name: {hook:?}"));
    }
    let hook = hook.replace("{layer}", &layer.to_string());
    let rel = match hook.strip_prefix("blocks.") {
        Some(rest) => match rest.split_once('.') {
            Some((n, r)) if n == layer.to_string() => r.to_owned(),
            _ => return Err(format!("{name}: config.yaml '{field}' is '{hook}', not a hook of layer {layer}")),
        },
        None => hook.clone(),
    };
    let scalpel = match rel.as_str() {
        "mlp.hook_in" => "ln2.hook_normalized",
        "mlp.hook_out" => "hook_mlp_out",
        r if r.ends_with("hook_normalized") => {
            return Err(format!(
                "{name}: config.yaml '{field}' is '{r}': in TransformerLens (circuit-tracer's reference) an RMSNorm's hook_normalized is the value \
                 before the norm's weight, which Scalpel does not hook (its '{r}' is after the weight: the MLP's input is circuit-tracer's 'mlp.hook_in')"
            ))
        }
        r => r,
    };
    Ok(format!("blocks.{layer}.{scalpel}"))
}

fn yaml_str(name: &str, cfg: &serde_yaml_ng::Mapping, key: &str) -> Res<Option<String>> {
    match cfg.get(key) {
        None | Some(serde_yaml_ng::Value::Null) => Ok(None),
        Some(serde_yaml_ng::Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(format!("{name}: config.yaml '{key}' must be a string, not {}", yaml_kind(v))),
    }
}

fn yaml_kind(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Null => "null",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "a string",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

impl Sae {
    /// Loads one layer of a circuit-tracer transcoder set (`model_kind:
    /// transcoder_set`): `config.yaml` names the hooks (`feature_input_hook`,
    /// `feature_output_hook`) and the activation (`activation`: `relu`,
    /// `topk` with `k`, or absent: JumpReLU when the file has
    /// `activation_function.threshold`, else ReLU); `layer_N.safetensors`
    /// holds `W_enc [d_sae, d_in]`, `W_dec [d_sae, d_out]`, `b_enc`, `b_dec`
    /// and optionally `activation_function.threshold`, `W_skip [d_out, d_in]`
    /// and `k`. As circuit-tracer's `SingleLayerTranscoder`: nothing is
    /// subtracted from the input, and the TopK / JumpReLU gates have no ReLU.
    pub fn load_circuit_tracer(name: &str, config_yaml: &[u8], file: &str, weights: &[u8]) -> Res<Sae> {
        if config_yaml.len() > MAX_CONFIG_YAML {
            return Err(format!("{name}: config.yaml is {} bytes; a transcoder set's is a few hundred (at most {MAX_CONFIG_YAML} read)", config_yaml.len()));
        }
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_slice(config_yaml).map_err(|e| format!("{name}: config.yaml is not valid YAML: {e}"))?;
        let serde_yaml_ng::Value::Mapping(cfg) = doc else {
            return Err(format!("{name}: config.yaml is {}, not a mapping of settings", yaml_kind(&doc)));
        };
        match yaml_str(name, &cfg, "model_kind")?.as_deref() {
            Some("transcoder_set") => {}
            Some("cross_layer_transcoder") => {
                return Err(format!(
                    "{name}: config.yaml is a cross-layer transcoder (model_kind: cross_layer_transcoder), whose latents write to every later layer; \
                     Scalpel reads circuit-tracer's per-layer transcoder sets (model_kind: transcoder_set)"
                ))
            }
            Some(other) => return Err(format!("{name}: config.yaml model_kind '{other}' is not supported (transcoder_set)")),
            None => return Err(format!("{name}: config.yaml has no 'model_kind' (circuit-tracer's sets say transcoder_set)")),
        }
        // The layer: the file's name, or its place in the `transcoders` list.
        let base = |p: &str| p.split(['?', '#']).next().unwrap_or(p).rsplit('/').next().unwrap_or(p).to_owned();
        let listed = match cfg.get("transcoders") {
            None | Some(serde_yaml_ng::Value::Null) => None,
            Some(serde_yaml_ng::Value::Sequence(list)) => Some(
                list.iter()
                    .map(|v| v.as_str().map(base).ok_or_else(|| format!("{name}: config.yaml 'transcoders' must list file paths, not {}", yaml_kind(v))))
                    .collect::<Res<Vec<String>>>()?,
            ),
            Some(v) => return Err(format!("{name}: config.yaml 'transcoders' must be a list, not {}", yaml_kind(v))),
        };
        let layer = match (circuit_tracer_layer(file), &listed) {
            (Some(n), Some(list)) => match list.get(n) {
                Some(f) if *f == file => n,
                Some(f) => return Err(format!("{name}: config.yaml lists '{f}' for layer {n}, not {file}")),
                None => return Err(format!("{name}: config.yaml lists {} transcoders; {file} would be layer {n}", list.len())),
            },
            (Some(n), None) => n,
            (None, Some(list)) => list
                .iter()
                .position(|f| f == file)
                .ok_or_else(|| format!("{name}: {file} is not among config.yaml's transcoders ({})", list.join(", ")))?,
            (None, None) => return Err(format!("{name}: {file} is not named layer_N.safetensors and config.yaml lists no transcoders: which layer is it?")),
        };
        let field = |key: &str| -> Res<String> {
            yaml_str(name, &cfg, key)?.ok_or_else(|| format!("{name}: config.yaml has no '{key}'"))
        };
        let hook_name = circuit_tracer_hook(name, "feature_input_hook", layer, &field("feature_input_hook")?)?;
        let hook_out = circuit_tracer_hook(name, "feature_output_hook", layer, &field("feature_output_hook")?)?;

        let st = Store::safetensors(name, file, weights)?;
        st.only(name, file, &["W_enc", "W_dec", "b_enc", "b_dec", "activation_function.threshold", "W_skip", "k"])?;
        let shape = |key: &str| -> Res<Vec<usize>> { st.shape_of(name, key)?.ok_or_else(|| format!("{name}: {file} has no tensor '{key}'")) };
        let (enc, dec, b_enc_s, b_dec_s) = (shape("W_enc")?, shape("W_dec")?, shape("b_enc")?, shape("b_dec")?);
        let (d_sae, d_in, d_out) = match (&enc[..], &dec[..], &b_enc_s[..], &b_dec_s[..]) {
            ([s, i], [s2, o], [s3], [o2]) if s == s2 && s == s3 && o == o2 => (*s, *i, *o),
            _ => {
                return Err(format!(
                    "{name}: {file}: W_enc {enc:?}, W_dec {dec:?}, b_enc {b_enc_s:?}, b_dec {b_dec_s:?} are not [d_sae, d_in], [d_sae, d_out], [d_sae], [d_out]"
                ))
            }
        };
        if d_in == 0 || d_sae == 0 || d_out == 0 || [d_in, d_sae, d_out].iter().any(|d| *d as u64 > MAX_DIM) {
            return Err(format!("{name}: {file}: dimensions {d_in}, {d_sae}, {d_out} must be in 1..={MAX_DIM}"));
        }
        let k_file = match &st {
            Store::St(t) => match t.tensor("k") {
                Err(_) => None,
                Ok(v) => {
                    let n = v.shape().iter().product::<usize>();
                    let k = match (v.dtype(), n) {
                        (safetensors::Dtype::I64, 1) => i64::from_le_bytes(v.data()[..8].try_into().map_err(ce)?),
                        (safetensors::Dtype::I32, 1) => i32::from_le_bytes(v.data()[..4].try_into().map_err(ce)?) as i64,
                        (dt, _) => return Err(format!("{name}: {file}: tensor 'k' must be one integer, not {dt:?} of shape {:?}", v.shape())),
                    };
                    Some(k)
                }
            },
            Store::Npz(_) => None,
        };
        let threshold = st.get(name, "activation_function.threshold", &[d_sae])?;
        let arch = match yaml_str(name, &cfg, "activation")?.as_deref() {
            Some("topk") => {
                let k_cfg = match cfg.get("k") {
                    None | Some(serde_yaml_ng::Value::Null) => None,
                    Some(v) => Some(v.as_i64().ok_or_else(|| format!("{name}: config.yaml 'k' must be an integer, not {}", yaml_kind(v)))?),
                };
                let k = match (k_cfg, k_file) {
                    (Some(a), Some(b)) if a != b => return Err(format!("{name}: config.yaml says k = {a} but {file} says {b}")),
                    (Some(k), _) | (None, Some(k)) => k,
                    (None, None) => return Err(format!("{name}: activation topk needs 'k' in config.yaml")),
                };
                if k < 1 || k as u64 > d_sae as u64 {
                    return Err(format!("{name}: k = {k} must be in 1..={d_sae}"));
                }
                if threshold.is_some() {
                    return Err(format!("{name}: activation topk, but {file} has a JumpReLU threshold"));
                }
                SaeArch::TopK(k as usize)
            }
            Some("relu") if threshold.is_some() => return Err(format!("{name}: activation relu, but {file} has a JumpReLU threshold")),
            Some("relu") => SaeArch::Standard,
            Some("jumprelu") | Some("jump_relu") | None => match threshold {
                Some(_) => SaeArch::JumpRelu,
                None => SaeArch::Standard,
            },
            Some(other) => return Err(format!("{name}: config.yaml activation '{other}' is not supported (relu, topk, jumprelu, or none: JumpReLU with a threshold, else ReLU)")),
        };
        if k_file.is_some() && !matches!(arch, SaeArch::TopK(_)) {
            return Err(format!("{name}: {file} has a 'k' but config.yaml's activation is not topk"));
        }
        let w_skip = st.get(name, "W_skip", &[d_out, d_in])?;
        let mut notes = Vec::new();
        if let Some(model) = yaml_str(name, &cfg, "model_name").ok().flatten() {
            notes.push(format!("circuit-tracer set for {model}, layer {layer}"));
        }
        Ok(Sae {
            name: name.to_owned(),
            format: Format::CircuitTracer,
            hook_name_out: (hook_out != hook_name).then(|| hook_out.clone()),
            hook_name,
            d_in,
            d_out,
            d_sae,
            arch,
            apply_b_dec_to_input: false,
            norm: SaeNorm::None,
            relu: false,
            rescale_acts_by_decoder_norm: false,
            head_index: None,
            model_name: yaml_str(name, &cfg, "model_name").ok().flatten(),
            notes,
            w_enc: st.need(name, file, "W_enc", &[d_sae, d_in])?.t().and_then(|t| t.contiguous()).map_err(ce)?,
            w_dec: st.need(name, file, "W_dec", &[d_sae, d_out])?,
            b_enc: st.need(name, file, "b_enc", &[d_sae])?,
            b_dec: st.need(name, file, "b_dec", &[d_out])?,
            threshold,
            w_skip,
            dec_norms: None,
        })
    }

    fn load_circuit_tracer_files(name: &str, files: &DictFiles) -> Res<Sae> {
        let others: Vec<&str> = files.cfg_json.map(|_| "cfg.json").into_iter().chain(files.weights_present()).collect();
        if !others.is_empty() {
            return Err(format!("{name}: a circuit-tracer set (config.yaml + layer_N.safetensors) mixed with {}; keep one dictionary's files", others.join(", ")));
        }
        if files.hook.is_some() || files.hook_out.is_some() {
            return Err(format!("{name}: a circuit-tracer config.yaml names its hooks; a hook given separately is not used"));
        }
        match (files.config_yaml, files.layer_file) {
            (Some(c), Some((file, w))) => Sae::load_circuit_tracer(name, c, file, w),
            (Some(_), None) => Err(format!("{name}: config.yaml is a circuit-tracer transcoder set: give one layer's file too (layer_N.safetensors)")),
            (None, Some((file, _))) => Err(format!("{name}: {file} is a circuit-tracer layer file: it needs its set's config.yaml")),
            (None, None) => Err(format!("{name}: no circuit-tracer files")),
        }
    }
}

/// `[1, d_sae]` L2 norms of W_dec's rows.
fn row_norms(w_dec: &Tensor) -> Res<Tensor> {
    w_dec.sqr().and_then(|s| s.sum(1)).and_then(|s| s.sqrt()).and_then(|s| s.unsqueeze(0)).map_err(ce)
}

/// TransformerLens hook points of a sparsify folder (the Hugging Face
/// module path under the base model): `(input, output)` for a transcoder,
/// `(hook, None)` for an autoencoder, which reads the module's output.
///
/// | folder | autoencoder | transcoder in → out |
/// |---|---|---|
/// | `layers.N` / `h.N` | `blocks.N.hook_resid_post` | `blocks.N.hook_resid_pre` → `blocks.N.hook_resid_post` |
/// | `layers.N.mlp` / `h.N.mlp` | `blocks.N.hook_mlp_out` | `blocks.N.ln2.hook_normalized` → `blocks.N.hook_mlp_out` |
/// | `layers.N.self_attn` / `h.N.attn` | `blocks.N.hook_attn_out` | `blocks.N.ln1.hook_normalized` → `blocks.N.hook_attn_out` |
/// | `embed_tokens` / `wte` | `hook_embed` | — |
pub fn sparsify_hooks(name: &str, folder: &str, transcode: bool) -> Res<(String, Option<String>)> {
    let unknown = || {
        format!(
            "{name}: sparsify folder '{folder}' is not a known hook point (layers.N, layers.N.mlp, layers.N.self_attn, h.N, h.N.mlp, h.N.attn, embed_tokens; \
             or give the hook explicitly)"
        )
    };
    // Hookpoints named from the causal-LM wrapper rather than its base model.
    let folder = ["model.", "transformer."].iter().find_map(|p| folder.strip_prefix(p)).unwrap_or(folder);
    if folder == "embed_tokens" || folder == "wte" {
        if transcode {
            return Err(format!("{name}: a transcoder on '{folder}' has no input hook"));
        }
        return Ok(("hook_embed".into(), None));
    }
    let mut parts = folder.split('.');
    let (Some(base), Some(n)) = (parts.next(), parts.next()) else { return Err(unknown()) };
    if base != "layers" && base != "h" {
        return Err(unknown());
    }
    let n: usize = n.parse().map_err(|_| unknown())?;
    let module = parts.next();
    if parts.next().is_some() {
        return Err(unknown());
    }
    let (input, output) = match (base, module) {
        (_, None) => ("hook_resid_pre", "hook_resid_post"),
        (_, Some("mlp")) => ("ln2.hook_normalized", "hook_mlp_out"),
        ("layers", Some("self_attn")) | ("h", Some("attn")) => ("ln1.hook_normalized", "hook_attn_out"),
        _ => return Err(unknown()),
    };
    let b = |s: &str| format!("blocks.{n}.{s}");
    Ok(if transcode { (b(input), Some(b(output))) } else { (b(output), None) })
}
