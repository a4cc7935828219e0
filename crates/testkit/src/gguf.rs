//! A GGUF writer that can also write what no real writer would (wrong
//! counts, offsets, magic), for the loaders' hostile-input tests.

use crate::rng::f32_bytes;

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

