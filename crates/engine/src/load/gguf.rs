//! A GGUF reader that trusts nothing in the file.
//!
//! candle's own reader sizes allocations from header fields before checking
//! them against the file, so a corrupt header can abort the process. This one
//! parses a byte slice and checks every count, length and offset against the
//! bytes that are actually there; tensors are handed to candle only once their
//! bounds, alignment and block layout are proven.

use std::collections::HashMap;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{Error, Result};
use crate::load::parts::Weight;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal GGUF but nothing we read uses more than one level.
const MAX_ARRAY_DEPTH: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
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
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type that fits a u64 (GGUF writers disagree on widths).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: GgmlDType,
    /// Row-major shape (outermost first), i.e. GGUF's `ne` reversed.
    pub shape: Vec<usize>,
    /// Absolute byte range of the data inside the file.
    pub start: usize,
    pub len: usize,
}

/// A file's bytes, read a range at a time: a file held outside this
/// process's memory. The browser keeps a downloaded model in a JS array and
/// copies each tensor into wasm memory as it is built; wasm memory never
/// shrinks, so holding the whole file there would keep its size for good.
pub trait ByteSource {
    /// The file's size in bytes.
    fn len(&self) -> usize;
    /// Fills `dst` with the bytes from `start` (the caller checked that
    /// `start + dst.len() <= len()`).
    fn read_into(&self, start: usize, dst: &mut [u8]);
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file in memory as a source (tests and fuzzing read it the browser's way).
impl ByteSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn read_into(&self, start: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self[start..start + dst.len()]);
    }
}

/// A file kept in JS memory, read a range at a time: how the page's worker
/// holds a downloaded model (and the wasm bench, to measure it that way).
#[cfg(target_arch = "wasm32")]
impl ByteSource for js_sys::Uint8Array {
    fn len(&self) -> usize {
        self.length() as usize
    }
    fn read_into(&self, start: usize, dst: &mut [u8]) {
        self.subarray(start as u32, (start + dst.len()) as u32).copy_to(dst);
    }
}

/// Where a parsed file's tensor bytes are.
#[derive(Clone, Copy)]
enum Data<'a> {
    Slice(&'a [u8]),
    Source(&'a dyn ByteSource),
}

/// A parsed GGUF file borrowing its tensor data from the caller's bytes.
pub struct Gguf<'a> {
    pub file: String,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    data: Data<'a>,
}

/// The first header read from a [`ByteSource`]; it doubles (up to the
/// whole file) while the metadata and tensor table go on past it.
const FIRST_HEADER_READ: usize = 4 << 20;

struct Reader<'a> {
    file: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Metadata array elements read so far (each becomes a 32-byte `Value`,
    /// so a byte array would otherwise take 32× its size in memory).
    array_items: u64,
    /// The whole file's size: `bytes` is only its start when the header
    /// is read before a download (`Gguf::header`).
    file_len: usize,
    /// Set when a read failed at the end of `bytes` while the file goes on
    /// (a longer prefix may succeed).
    ran_out: bool,
}

/// Most metadata array elements a file may hold: the largest vocabularies
/// (~262k tokens, with scores, types and merges) need about a million.
const MAX_ARRAY_ITEMS: u64 = 8_000_000;

impl<'a> Reader<'a> {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::load(self.file, format!("{what} (at byte {})", self.pos))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.bytes.len() - self.pos;
        if n > remaining {
            self.ran_out = self.bytes.len() < self.file_len;
            return Err(self.err(format!(
                "truncated file: {what} needs {n} bytes but only {remaining} remain"
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            self.ran_out = self.bytes.len() < self.file_len;
            return Err(self.err(format!(
                "{what}: string length {len} exceeds the {} bytes left in the file",
                self.remaining()
            )));
        }
        let raw = self.take(len as usize, what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err(format!("{what}: string is not valid UTF-8"))),
        }
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(key)?),
            1 => Value::I8(self.u8(key)? as i8),
            2 => Value::U16(self.u16(key)?),
            3 => Value::I16(self.u16(key)? as i16),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("metadata '{key}': invalid bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata '{key}': arrays nested too deeply")));
                }
                let elem_ty = self.u32(key)?;
                let count = self.u64(key)?;
                let min_elem = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,  // a string is at least its u64 length
                    9 => 12, // an array is at least its type and count
                    t => {
                        return Err(self.err(format!(
                            "metadata '{key}': unknown array element type {t}"
                        )))
                    }
                };
                // Bound the element count by the bytes left before allocating.
                if count > (self.remaining() / min_elem) as u64 {
                    self.ran_out = self.bytes.len() < self.file_len;
                    return Err(self.err(format!(
                        "metadata '{key}': array claims {count} elements, more than the file can hold"
                    )));
                }
                self.array_items += count;
                if self.array_items > MAX_ARRAY_ITEMS {
                    return Err(self.err(format!(
                        "metadata '{key}': the metadata arrays hold more than {MAX_ARRAY_ITEMS} elements in all"
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(self.err(format!("metadata '{key}': unknown value type {t}"))),
        })
    }
}

/// A tensor-table entry before its data is placed in the file.
struct RawInfo {
    name: String,
    dtype: GgmlDType,
    shape: Vec<usize>,
    offset: u64,
    len: usize,
}

impl Reader<'_> {
    /// Magic, version, tensor count and metadata count, with the counts
    /// bounded by the bytes left.
    fn header(&mut self) -> Result<(u32, u64, u64)> {
        let file = self.file;
        let magic = self.take(4, "magic")?;
        if magic != MAGIC {
            return Err(Error::load(
                file,
                format!("not a GGUF file: magic is {:?}, expected \"GGUF\"", String::from_utf8_lossy(magic)),
            ));
        }
        let version = self.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::load(file, format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        let tensor_count = self.u64("tensor count")?;
        let kv_count = self.u64("metadata count")?;
        // Each metadata entry takes >= 13 bytes, each tensor entry >= 24.
        let remaining = self.file_len.saturating_sub(self.pos);
        if kv_count > (remaining / 13) as u64 {
            return Err(self.err(format!("header claims {kv_count} metadata entries, more than the file can hold")));
        }
        if tensor_count > (remaining / 24) as u64 {
            return Err(self.err(format!("header claims {tensor_count} tensors, more than the file can hold")));
        }
        Ok((version, tensor_count, kv_count))
    }

    /// Tensor-table entry `i`, its size checked against the file's.
    fn tensor_info(&mut self, i: u64) -> Result<RawInfo> {
        let file_len = self.file_len;
        let name = self.string(&format!("tensor #{i} name"))?;
        let n_dims = self.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.err(format!("tensor '{name}': {n_dims} dimensions (1..=4 allowed)")));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(self.u64(&name)?);
        }
        let ty = self.u32(&name)?;
        let offset = self.u64(&name)?;
        let dtype = dtype_from_u32(ty).map_err(|m| self.err(format!("tensor '{name}': {m}")))?;
        let mut elems: u64 = 1;
        for &d in &ne {
            elems = elems.checked_mul(d).filter(|&e| e <= file_len as u64 * 64).ok_or_else(|| {
                self.err(format!("tensor '{name}': dimensions {ne:?} are absurd for a {file_len}-byte file"))
            })?;
        }
        let block = dtype.block_size() as u64;
        if ne[0] % block != 0 {
            return Err(self.err(format!(
                "tensor '{name}': row width {} is not a multiple of the {dtype:?} block size {block}",
                ne[0]
            )));
        }
        let len = elems / block * dtype.type_size() as u64;
        let too_big = || self.err(format!("tensor '{name}': {len} bytes do not fit this platform's address space"));
        let len = usize::try_from(len).map_err(|_| too_big())?;
        let shape = ne.iter().map(|&d| usize::try_from(d).map_err(|_| too_big())).rev().collect::<Result<Vec<_>>>()?;
        Ok(RawInfo { name, dtype, shape, offset, len })
    }
}

/// Tensors whose bytes overlap would be one memory region read as two
/// weights; llama.cpp never writes them, so such a file is crafted.
fn check_no_overlap(file: &str, tensors: &[TensorInfo]) -> Result<()> {
    let mut by_start: Vec<&TensorInfo> = tensors.iter().filter(|t| t.len > 0).collect();
    by_start.sort_by_key(|t| t.start);
    for w in by_start.windows(2) {
        if w[0].start + w[0].len > w[1].start {
            return Err(Error::load(file, format!("tensors '{}' and '{}' share bytes of the file", w[0].name, w[1].name)));
        }
    }
    Ok(())
}

/// `general.alignment` (32 when absent): a power of two up to 64 KiB.
fn alignment(file: &str, metadata: &HashMap<String, Value>) -> Result<usize> {
    match metadata.get("general.alignment") {
        None => Ok(32),
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 16 => Ok(a as usize),
            _ => Err(Error::load(file, format!("general.alignment {v:?} is not a power of two <= 65536"))),
        },
    }
}

/// The header, metadata and tensor table of a file of `file_len` bytes
/// whose first bytes are `bytes`: version, metadata, tensor entries, where
/// the data section starts, and its alignment.
/// Version, metadata, tensor entries, data start, alignment.
type Table = (u32, HashMap<String, Value>, Vec<RawInfo>, usize, usize);

fn read_table(file: &str, bytes: &[u8], file_len: usize) -> Result<Table> {
    read_prefix(file, bytes, file_len).map_err(|(e, _)| e)
}

/// As [`read_table`]; an error says whether it came from reaching the end
/// of `bytes` before the end of the file (a longer prefix may succeed).
fn read_prefix(file: &str, bytes: &[u8], file_len: usize) -> std::result::Result<Table, (Error, bool)> {
    let mut r = Reader { file, bytes, pos: 0, array_items: 0, file_len, ran_out: false };
    let table = r.table();
    table.map_err(|e| (e, r.ran_out))
}

impl Reader<'_> {
    /// The header, metadata and tensor table from the start of the file.
    fn table(&mut self) -> Result<Table> {
        let (version, tensor_count, kv_count) = self.header()?;
        let mut metadata = HashMap::new();
        for i in 0..kv_count {
            let key = self.string(&format!("metadata key #{i}"))?;
            let ty = self.u32(&key)?;
            let value = self.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = alignment(self.file, &metadata)?;
        let raw = (0..tensor_count).map(|i| self.tensor_info(i)).collect::<Result<Vec<_>>>()?;
        let data_start = self.pos.div_ceil(alignment) * alignment;
        Ok((version, metadata, raw, data_start, alignment))
    }
}

/// What a GGUF file's header says, read from its first bytes before the
/// rest is downloaded (the page's memory estimate).
pub struct GgufHeader {
    pub metadata: HashMap<String, Value>,
    /// Each tensor's name, type, row-major shape and stored bytes.
    pub tensors: Vec<(String, GgmlDType, Vec<usize>, usize)>,
}

/// Reads the header of a `file_len`-byte GGUF file from its first bytes
/// `prefix`. `None` when the prefix could not be read but the file goes on
/// (the header may lie past it: fetch more, or the whole file, whose full
/// parse names any fault).
pub fn header(file: &str, prefix: &[u8], file_len: usize) -> Result<Option<GgufHeader>> {
    let (_, metadata, raw, data_start, _) = match read_table(file, prefix, file_len.max(prefix.len())) {
        Ok(t) => t,
        Err(_) if prefix.len() < file_len => return Ok(None),
        Err(e) => return Err(e),
    };
    let data_len = file_len.saturating_sub(data_start) as u64;
    if let Some(t) = raw.iter().find(|t| t.offset > data_len || t.len as u64 > data_len - t.offset) {
        return Err(Error::load(file, format!("tensor '{}' lies outside the {file_len}-byte file", t.name)));
    }
    Ok(Some(GgufHeader { metadata, tensors: raw.into_iter().map(|t| (t.name, t.dtype, t.shape, t.len)).collect() }))
}

pub fn dtype_from_u32(t: u32) -> std::result::Result<GgmlDType, String> {
    Ok(match t {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        16..=23 | 29 | 34 | 35 | 39 => {
            return Err(format!(
                "tensor type {t} (an IQ/ternary quantization) is not supported; \
                 supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K"
            ))
        }
        t => return Err(format!("unknown tensor type {t}")),
    })
}

impl<'a> Gguf<'a> {
    /// Parses the header and tensor table of `bytes`; `file` names it in errors.
    pub fn parse(file: &str, bytes: &'a [u8]) -> Result<Self> {
        Self::from_table(file, read_table(file, bytes, bytes.len())?, bytes.len(), Data::Slice(bytes))
    }

    /// As [`Gguf::parse`], for a file read a range at a time: the header is
    /// read from a prefix that grows until the tensor table fits, and each
    /// tensor's bytes only when it is built.
    pub fn parse_source(file: &str, source: &'a dyn ByteSource) -> Result<Self> {
        let len = source.len();
        let mut n = FIRST_HEADER_READ.min(len);
        let table = loop {
            let mut prefix = vec![0u8; n];
            source.read_into(0, &mut prefix);
            match read_prefix(file, &prefix, len) {
                Ok(t) => break t,
                Err((_, true)) => n = n.saturating_mul(2).min(len),
                Err((e, _)) => return Err(e),
            }
        };
        Self::from_table(file, table, len, Data::Source(source))
    }

    fn from_table(file: &str, table: Table, file_len: usize, data: Data<'a>) -> Result<Self> {
        let (version, metadata, raw, data_start, alignment) = table;
        // Even an empty tensor's data must start inside the file: its slice
        // is taken at `data_start`.
        if data_start > file_len && !raw.is_empty() {
            return Err(Error::load(
                file,
                format!("the tensor data section starts at byte {data_start}, past the end of the {file_len}-byte file (truncated file?)"),
            ));
        }
        let data_len = file_len.saturating_sub(data_start);
        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::new();
        for t in raw {
            if t.offset % alignment as u64 != 0 {
                return Err(Error::load(
                    file,
                    format!("tensor '{}': data offset {} is not {alignment}-byte aligned", t.name, t.offset),
                ));
            }
            if t.offset > data_len as u64 || t.len as u64 > data_len as u64 - t.offset {
                return Err(Error::load(
                    file,
                    format!(
                        "tensor '{}': data [{}, +{}) lies outside the file's {data_len}-byte data section (truncated file?)",
                        t.name, t.offset, t.len
                    ),
                ));
            }
            if index.insert(t.name.clone(), tensors.len()).is_some() {
                return Err(Error::load(file, format!("tensor '{}' appears twice", t.name)));
            }
            tensors.push(TensorInfo {
                name: t.name,
                dtype: t.dtype,
                shape: t.shape,
                start: data_start + t.offset as usize,
                len: t.len,
            });
        }
        check_no_overlap(file, &tensors)?;
        Ok(Gguf { file: file.to_owned(), version, metadata, tensors, index, data })
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn require(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::load(&self.file, format!("missing metadata key '{key}'")))
    }

    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            Error::load(&self.file, format!("metadata '{key}' should be an integer, found {}", v.type_name()))
        })
    }

    /// An optional number from the metadata: absent is `None`; a value of
    /// another type is an error, never a default.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::load(&self.file, format!("metadata '{key}' should be a number, found {}", v.type_name()))),
        }
    }

    /// llama.cpp's rotary scalings change the numbers; only `none` is
    /// implemented: any other `{arch}.rope.scaling.type` is an error naming it.
    pub fn check_no_rope_scaling(&self, arch: &str) -> Result<()> {
        let key = format!("{arch}.rope.scaling.type");
        match self.get(&key).map(|v| v.as_str()) {
            None | Some(Some("none")) => Ok(()),
            Some(Some(other)) => Err(Error::load(&self.file, format!("{key}: rope scaling '{other}' is not supported"))),
            Some(None) => Err(Error::load(&self.file, format!("{key} is not a string"))),
        }
    }

    /// A tensor's bytes: borrowed from an in-memory file, read from a
    /// [`ByteSource`] (a copy) otherwise.
    pub fn raw(&self, info: &TensorInfo) -> std::borrow::Cow<'a, [u8]> {
        match self.data {
            Data::Slice(b) => std::borrow::Cow::Borrowed(&b[info.start..info.start + info.len]),
            Data::Source(src) => {
                let mut v = vec![0u8; info.len];
                src.read_into(info.start, &mut v);
                std::borrow::Cow::Owned(v)
            }
        }
    }

    /// Copies a tensor's bytes into `dst` (`info.len` bytes).
    fn read_raw(&self, info: &TensorInfo, dst: &mut [u8]) {
        match self.data {
            Data::Slice(b) => dst.copy_from_slice(&b[info.start..info.start + info.len]),
            Data::Source(src) => src.read_into(info.start, dst),
        }
    }

    fn find(&self, name: &str) -> Result<&TensorInfo> {
        self.info(name).ok_or_else(|| Error::load(&self.file, format!("missing tensor '{name}'")))
    }

    /// Builds a candle `QTensor` from a tensor's bytes.
    pub fn qtensor(&self, name: &str) -> Result<QTensor> {
        let info = self.find(name)?;
        self.blocks_to_qtensor(info, |dst| self.read_raw(info, dst))
    }

    /// A weight as stored: a Q4_0 / Q4_1 / Q8_0 matrix is read from the
    /// file's bytes straight into Scalpel's layout (`Weight::Blocks`, no
    /// candle copy in between); anything else becomes a candle `QTensor`.
    pub fn weight(&self, name: &str) -> Result<Weight> {
        let info = self.find(name)?;
        self.weight_of(info)
    }

    /// Rows `start..start + n` of a matrix tensor as a weight of their own,
    /// still in the stored blocks (a row is whole blocks): a fused matrix
    /// (GPT-NeoX's query/key/value) split by role without dequantizing.
    pub fn weight_rows(&self, name: &str, start: usize, n: usize) -> Result<Weight> {
        let part = self.rows_info(name, start, n)?;
        self.weight_of(&part)
    }

    fn weight_of(&self, info: &TensorInfo) -> Result<Weight> {
        match (crate::kernels::qtype(info.dtype), info.shape.as_slice()) {
            (Some(ty), &[rows, cols]) => scalpel_kernels::QMatrix::from_gguf(ty, rows, cols, &self.raw(info))
                .map(Weight::Blocks)
                .map_err(|e| Error::load(&self.file, format!("tensor '{}': {}", info.name, e.0))),
            _ => Ok(Weight::Quant(self.blocks_to_qtensor(info, |dst| self.read_raw(info, dst))?)),
        }
    }

    /// Where rows `start..start + n` of a matrix tensor lie in the file.
    fn rows_info(&self, name: &str, start: usize, n: usize) -> Result<TensorInfo> {
        let info = self.find(name)?;
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(Error::load(&self.file, format!("tensor '{name}' has shape {:?}, expected a matrix", info.shape)));
        };
        if start.checked_add(n).is_none_or(|end| end > rows) {
            return Err(Error::load(&self.file, format!("tensor '{name}' has {rows} rows; rows {start}..{} were asked for", start.saturating_add(n))));
        }
        if cols % info.dtype.block_size() != 0 {
            return Err(Error::load(&self.file, format!("tensor '{name}': rows of {cols} values are not whole {:?} blocks", info.dtype)));
        }
        let row_bytes = cols / info.dtype.block_size() * info.dtype.type_size();
        Ok(TensorInfo { name: name.to_owned(), dtype: info.dtype, shape: vec![n, cols], start: info.start + start * row_bytes, len: n * row_bytes })
    }

    /// Fills a 4-byte aligned buffer of the tensor's size with `fill` and
    /// hands it to candle, which reads the blocks in place (they hold f32 or
    /// f16 fields, so the bytes must be aligned) and checks nothing itself.
    fn blocks_to_qtensor(&self, info: &TensorInfo, fill: impl FnOnce(&mut [u8])) -> Result<QTensor> {
        let name = &info.name;
        // candle reads by shape: the data must hold exactly what the shape needs.
        let elems: usize = info.shape.iter().product();
        if info.len != elems / info.dtype.block_size() * info.dtype.type_size() {
            return Err(Error::load(&self.file, format!("tensor '{name}': data size does not match its shape")));
        }
        let mut words = vec![0u32; info.len.div_ceil(4)];
        // SAFETY: a u32 buffer viewed as bytes; `info.len` <= its byte length.
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, info.len) };
        fill(bytes);
        qtensor_from_ggml(info.dtype, bytes, info.shape.clone(), &Device::Cpu)
            .map_err(|e| Error::load(&self.file, format!("tensor '{name}': {e}")))
    }
}
