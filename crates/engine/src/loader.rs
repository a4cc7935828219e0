//! Hugging Face layout: `config.json` + `*.safetensors` + `tokenizer.json`,
//! for GPT-2 (Conv1D weights, fused `c_attn`) and the llama family.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::model::{Model, Precision};
use crate::tokenizer::Tokenizer;

type Lin = (Tensor, Option<Tensor>);

pub(crate) struct BlockParts {
    pub ln1: (Tensor, Option<Tensor>),
    pub q: Lin,
    pub k: Lin,
    pub v: Lin,
    pub o: Lin,
    pub ln2: (Tensor, Option<Tensor>),
    pub gate: Option<Lin>,
    pub up: Lin,
    pub down: Lin,
}

/// Weights in f32, `[out, in]` matrices, named by role.
pub(crate) struct Parts {
    pub embed: Tensor,
    pub pos_embed: Option<Tensor>,
    pub blocks: Vec<BlockParts>,
    pub ln_final: (Tensor, Option<Tensor>),
    pub unembed: Tensor,
    pub warnings: Vec<String>,
}

/// The shard file names listed by a `model.safetensors.index.json`.
pub fn shard_files(index_json: &[u8]) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(index_json)
        .map_err(|e| Error::load("model.safetensors.index.json", format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::load("model.safetensors.index.json", "missing object 'weight_map'"))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_owned)).collect();
    files.sort();
    files.dedup();
    for f in &files {
        if f.is_empty() || f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(Error::load("model.safetensors.index.json", format!("shard name '{f}' is not a plain file name")));
        }
    }
    Ok(files)
}

struct Store<'a> {
    files: Vec<(&'a str, SafeTensors<'a>)>,
    index: HashMap<String, usize>,
}

impl<'a> Store<'a> {
    fn new(weights: &'a [(String, Vec<u8>)]) -> Result<Self> {
        if weights.is_empty() {
            return Err(Error::load("model", "no .safetensors weights were given"));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, (name, bytes)) in weights.iter().enumerate() {
            let st = SafeTensors::deserialize(bytes)
                .map_err(|e| Error::load(name, format!("not a valid safetensors file: {e}")))?;
            for n in st.names() {
                index.insert(n.to_owned(), i);
            }
            files.push((name.as_str(), st));
        }
        Ok(Store { files, index })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let &i = self.index.get(name).ok_or_else(|| {
            Error::load(self.files.first().map(|f| f.0).unwrap_or("model"), format!("missing tensor '{name}'"))
        })?;
        let (file, st) = &self.files[i];
        let view = st.tensor(name).map_err(|e| Error::load(*file, format!("tensor '{name}': {e}")))?;
        if view.shape() != shape {
            return Err(Error::load(
                *file,
                format!("tensor '{name}' has shape {:?}, expected {shape:?}", view.shape()),
            ));
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::load(*file, format!("tensor '{name}': dtype {other:?} is not supported (F32, F16, BF16)")))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, shape, &Device::Cpu)
            .map_err(|e| Error::load(*file, format!("tensor '{name}': {e}")))?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

pub(crate) fn from_hf(
    name: &str,
    config: &[u8],
    tokenizer: Option<&[u8]>,
    tokenizer_config: Option<&[u8]>,
    weights: &[(String, Vec<u8>)],
    precision: Precision,
) -> Result<Model> {
    let cfg = Config::from_hf_json("config.json", config)?;
    let tokenizer = tokenizer.ok_or_else(|| {
        Error::load(name, "missing tokenizer.json: a Hugging Face model directory needs config.json, tokenizer.json and *.safetensors")
    })?;
    let tokenizer = Tokenizer::from_hf_json("tokenizer.json", tokenizer, tokenizer_config)?;
    let store = Store::new(weights)?;
    let parts = match cfg.arch {
        Arch::Gpt2 => gpt2_parts(&cfg, &store)?,
        Arch::Llama => llama_parts(&cfg, &store)?,
    };
    Model::from_parts(name, cfg, precision, tokenizer, parts)
}

fn gpt2_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    // GPT2LMHeadModel checkpoints prefix the body with "transformer.".
    let pre = if st.has("transformer.wte.weight") { "transformer." } else { "" };
    let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
    let get = |n: &str, shape: &[usize]| st.get(&format!("{pre}{n}"), shape);
    // Conv1D stores [in, out]; our matrices are [out, in].
    let conv = |n: &str, d_in: usize, d_out: usize| -> Result<Lin> {
        let w = get(&format!("{n}.weight"), &[d_in, d_out])?.t()?.contiguous()?;
        let b = get(&format!("{n}.bias"), &[d_out])?;
        Ok((w, Some(b)))
    };
    let ln = |n: &str| -> Result<(Tensor, Option<Tensor>)> {
        Ok((get(&format!("{n}.weight"), &[d])?, Some(get(&format!("{n}.bias"), &[d])?)))
    };
    let embed = get("wte.weight", &[v, d])?;
    let pos_embed = Some(get("wpe.weight", &[cfg.n_ctx, d])?);
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("h.{l}");
        let (qkv_w, qkv_b) = conv(&format!("{p}.attn.c_attn"), d, 3 * d)?;
        let qkv_b = qkv_b.expect("conv has a bias");
        let part = |i: usize| -> Result<Lin> {
            Ok((qkv_w.narrow(0, i * d, d)?.contiguous()?, Some(qkv_b.narrow(0, i * d, d)?.contiguous()?)))
        };
        blocks.push(BlockParts {
            ln1: ln(&format!("{p}.ln_1"))?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            o: conv(&format!("{p}.attn.c_proj"), d, d)?,
            ln2: ln(&format!("{p}.ln_2"))?,
            gate: None,
            up: conv(&format!("{p}.mlp.c_fc"), d, m)?,
            down: conv(&format!("{p}.mlp.c_proj"), m, d)?,
        });
    }
    let unembed = if st.has("lm_head.weight") { st.get("lm_head.weight", &[v, d])? } else { embed.clone() };
    Ok(Parts { embed, pos_embed, blocks, ln_final: ln("ln_f")?, unembed, warnings: Vec::new() })
}

fn llama_parts(cfg: &Config, st: &Store) -> Result<Parts> {
    let (d, m, v) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab);
    let kv = cfg.n_kv_heads * cfg.d_head;
    let lin = |n: &str, out: usize, inp: usize| -> Result<Lin> {
        let w = st.get(&format!("{n}.weight"), &[out, inp])?;
        let b_name = format!("{n}.bias");
        let b = if st.has(&b_name) { Some(st.get(&b_name, &[out])?) } else { None };
        Ok((w, b))
    };
    let norm = |n: &str| -> Result<(Tensor, Option<Tensor>)> { Ok((st.get(&format!("{n}.weight"), &[d])?, None)) };
    let embed = st.get("model.embed_tokens.weight", &[v, d])?;
    let mut blocks = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        blocks.push(BlockParts {
            ln1: norm(&format!("{p}.input_layernorm"))?,
            q: lin(&format!("{p}.self_attn.q_proj"), d, d)?,
            k: lin(&format!("{p}.self_attn.k_proj"), kv, d)?,
            v: lin(&format!("{p}.self_attn.v_proj"), kv, d)?,
            o: lin(&format!("{p}.self_attn.o_proj"), d, d)?,
            ln2: norm(&format!("{p}.post_attention_layernorm"))?,
            gate: Some(lin(&format!("{p}.mlp.gate_proj"), m, d)?),
            up: lin(&format!("{p}.mlp.up_proj"), m, d)?,
            down: lin(&format!("{p}.mlp.down_proj"), d, m)?,
        });
    }
    let unembed = if cfg.tied_embeddings { embed.clone() } else { st.get("lm_head.weight", &[v, d])? };
    Ok(Parts { embed, pos_embed: None, blocks, ln_final: norm("model.norm")?, unembed, warnings: Vec::new() })
}
