//! Safetensors files (one, or every shard of a Hugging Face checkpoint),
//! read by tensor name with shape checks; F32, F16 and BF16 become f32.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::error::{Error, Result};

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

/// Every tensor of a checkpoint's files, by name.
pub struct Store<'a> {
    files: Vec<(String, SafeTensors<'a>)>,
    index: HashMap<String, usize>,
}

impl<'a> Store<'a> {
    pub fn new(weights: &[(String, &'a [u8])]) -> Result<Self> {
        if weights.is_empty() {
            return Err(Error::load("model", "no .safetensors weights were given"));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, (name, bytes)) in weights.iter().enumerate() {
            let st = SafeTensors::deserialize(bytes)
                .map_err(|e| Error::load(name.as_str(), format!("not a valid safetensors file: {e}")))?;
            for n in st.names() {
                index.insert(n.to_owned(), i);
            }
            files.push((name.clone(), st));
        }
        Ok(Store { files, index })
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` in f32, checked to have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let &i = self.index.get(name).ok_or_else(|| {
            Error::load(self.files.first().map(|f| f.0.as_str()).unwrap_or("model"), format!("missing tensor '{name}'"))
        })?;
        let (file, st) = &self.files[i];
        let view = st.tensor(name).map_err(|e| Error::load(file.as_str(), format!("tensor '{name}': {e}")))?;
        if view.shape() != shape {
            return Err(Error::load(file.as_str(), format!("tensor '{name}' has shape {:?}, expected {shape:?}", view.shape())));
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::load(file.as_str(), format!("tensor '{name}': dtype {other:?} is not supported (F32, F16, BF16)")))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, shape, &Device::Cpu)
            .map_err(|e| Error::load(file.as_str(), format!("tensor '{name}': {e}")))?;
        Ok(t.to_dtype(DType::F32)?)
    }

    /// `name` if the checkpoint has it.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.has(name) {
            self.get(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
