//! GGUF (llama.cpp's container, versions 2 and 3): a hardened parser of the header, the metadata
//! key/values and the tensor infos, and the facts a LLaMA forward needs, turned into a Hugging Face
//! `config.json`.
//!
//! GGUF parsers have a history of integer-overflow CVEs (docs/RELIABILITY.md and
//! shared/RELIABILITY.md §2.1: `n_kv`, `ne` products, `GGML_PAD` wrapping, unbounded strings and
//! alignment). This one reads from a byte slice (the mmapped file) and checks **before allocating**:
//! every count, string length and array length against the bytes that remain and a named limit;
//! every dimension product, padding and offset with checked arithmetic; tensors inside the file,
//! aligned, and not overlapping. Every error names the key or the tensor and the absolute file
//! offset, so `xxd -s` finds it.
//!
//! Dimensions: GGUF stores `ne[0]` first, the innermost (fastest-varying) dimension. Shapes are
//! presented row-major like safetensors (`ne` reversed), so a `[vocab, hidden]` embedding reads as
//! `[vocab, hidden]` here and `ne = [hidden, vocab]` in the file.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use serde_json::{Map, Value as Json};

use super::header::{Dtype, MAX_NAME_BYTES, checked_nbytes, validate_name};
use crate::error::{Error, ErrorKind, Result, escape};

/// The four magic bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Most metadata key/values accepted.
pub const MAX_KV: u64 = 1 << 16;
/// Most tensors accepted.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Longest metadata key, in bytes (the spec's limit is 65535).
pub const MAX_KEY_BYTES: u64 = 65_535;
/// Longest string value, in bytes (chat templates are tens of KB).
pub const MAX_STRING_BYTES: u64 = 16 << 20;
/// Most elements in one metadata array (vocabularies and merges are a few hundred thousand).
pub const MAX_ARRAY_LEN: u64 = 1 << 22;
/// Most array elements in all the metadata together (bounds the memory the metadata can take,
/// whatever the file size: a small integer is stored wider than its bytes in the file).
pub const MAX_METADATA_ELEMENTS: u64 = 1 << 24;
/// Deepest nesting of arrays in arrays.
pub const MAX_ARRAY_DEPTH: usize = 3;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 16;
/// The alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// uint8
    U8(u8),
    /// int8
    I8(i8),
    /// uint16
    U16(u16),
    /// int16
    I16(i16),
    /// uint32
    U32(u32),
    /// int32
    I32(i32),
    /// float32
    F32(f32),
    /// bool (a byte that is 0 or 1)
    Bool(bool),
    /// UTF-8 string
    Str(String),
    /// array
    Array(Array),
    /// uint64
    U64(u64),
    /// int64
    I64(i64),
    /// float64
    F64(f64),
}

/// A metadata array, stored by element type (a vocabulary of 150k strings is one `Vec<String>`).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Integers of any width, widened.
    Int(Vec<i128>),
    /// float32 / float64, widened.
    Float(Vec<f64>),
    /// bools.
    Bool(Vec<bool>),
    /// strings.
    Str(Vec<String>),
    /// arrays of arrays.
    Nested(Vec<Array>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::Int(v) => v.len(),
            Array::Float(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Nested(v) => v.len(),
        }
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Value {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(u64::from(v)),
            Value::U16(v) => Some(u64::from(v)),
            Value::U32(v) => Some(u64::from(v)),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The GGUF type's name as llama.cpp prints it (`u32`, `f32`, `arr`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::Array(_) => "arr",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// The value as a float, when it is a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(f64::from(v)),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short rendering for reports (arrays as their type and length).
    pub fn display(&self) -> String {
        match self {
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) => {
                let short: String = s.chars().take(80).collect();
                if short.len() < s.len() {
                    format!("\"{}\"... ({} bytes)", escape(&short), s.len())
                } else {
                    format!("\"{}\"", escape(s))
                }
            }
            Value::Array(a) => {
                let kind = match a {
                    Array::Int(_) => "int",
                    Array::Float(_) => "float",
                    Array::Bool(_) => "bool",
                    Array::Str(_) => "string",
                    Array::Nested(_) => "array",
                };
                format!("[{} x {kind}]", a.len())
            }
        }
    }
}

/// One tensor as the file declares it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// ggml's type id as stored.
    pub type_id: u32,
    /// Shape, row-major (the file's `ne` reversed).
    pub shape: Vec<usize>,
    /// Start of the data, relative to the data section.
    pub begin: usize,
    /// End of the data (exclusive), relative to the data section.
    pub end: usize,
}

/// A parsed and validated GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor>,
    /// Data alignment in bytes.
    pub alignment: usize,
    /// Absolute file offset of the data section.
    pub data_start: usize,
    /// Bytes from `data_start` to the end of the last tensor.
    pub data_len: usize,
}

impl GgufFile {
    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }
}

/// The ggml type for a type id, or `None` for ids this version does not know.
pub fn dtype_of(id: u32) -> Option<Dtype> {
    Some(match id {
        0 => Dtype::F32,
        1 => Dtype::F16,
        2 => Dtype::Q4_0,
        3 => Dtype::Q4_1,
        6 => Dtype::Q5_0,
        7 => Dtype::Q5_1,
        8 => Dtype::Q8_0,
        9 => Dtype::Q8_1,
        10 => Dtype::Q2_K,
        11 => Dtype::Q3_K,
        12 => Dtype::Q4_K,
        13 => Dtype::Q5_K,
        14 => Dtype::Q6_K,
        15 => Dtype::Q8_K,
        16 => Dtype::IQ2_XXS,
        17 => Dtype::IQ2_XS,
        18 => Dtype::IQ3_XXS,
        19 => Dtype::IQ1_S,
        20 => Dtype::IQ4_NL,
        21 => Dtype::IQ3_S,
        22 => Dtype::IQ2_S,
        23 => Dtype::IQ4_XS,
        24 => Dtype::I8,
        25 => Dtype::I16,
        26 => Dtype::I32,
        27 => Dtype::I64,
        28 => Dtype::F64,
        29 => Dtype::IQ1_M,
        30 => Dtype::BF16,
        34 => Dtype::TQ1_0,
        35 => Dtype::TQ2_0,
        39 => Dtype::MXFP4,
        _ => return None,
    })
}

/// A cursor over the file bytes; every read is bounds-checked and names what it was reading.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Array elements read so far (against [`MAX_METADATA_ELEMENTS`]).
    elements: u64,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos = self.pos.saturating_add(n);
                Ok(s)
            }
            None => Err(Error::bad_data(format!(
                "{}: needs {n} bytes at file offset {} but the file ends at {}; the file is truncated",
                what(),
                self.pos,
                self.buf.len()
            ))
            .hint("re-download the file")),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        s.try_into()
            .map_err(|_| Error::internal("short read in the GGUF reader"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_item` bytes long: bounded by `limit` and by what the
    /// remaining bytes can hold, before anything is allocated for it.
    fn count(&mut self, limit: u64, min_item: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > limit {
            return Err(Error::bad_data(format!(
                "{}: count {n} at file offset {at} is over the limit of {limit}",
                what()
            )));
        }
        let fits = (self.remaining() as u64)
            .checked_div(min_item as u64)
            .unwrap_or(u64::MAX);
        if n > fits {
            return Err(Error::bad_data(format!(
                "{}: count {n} at file offset {at} cannot fit in the {} bytes that remain; the file is truncated or corrupt",
                what(),
                self.remaining()
            )));
        }
        usize::try_from(n).map_err(|_| Error::bad_data(format!("{}: count {n} too large", what())))
    }

    /// A length-prefixed string, bounded by `limit`; invalid UTF-8 is an error when `strict`, else
    /// replaced (vocabulary entries of real files are not always valid UTF-8).
    fn string(&mut self, limit: u64, strict: bool, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > limit {
            return Err(Error::bad_data(format!(
                "{}: string length {n} at file offset {at} is over the limit of {limit} bytes",
                what()
            )));
        }
        let len = usize::try_from(n)
            .map_err(|_| Error::bad_data(format!("{}: string length {n} too large", what())))?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) if !strict => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Err(e) => Err(Error::bad_data(format!(
                "{}: not UTF-8 (invalid byte at file offset {})",
                what(),
                at.saturating_add(8).saturating_add(e.valid_up_to())
            ))),
        }
    }
}

/// Minimum encoded size of a value of a type (for count bounds), `None` for an unknown type.
fn min_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

fn read_value(r: &mut Reader<'_>, ty: u32, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("metadata key \"{}\"", escape(key));
    Ok(match ty {
        0 => Value::U8(u8::from_le_bytes(r.array(&what)?)),
        1 => Value::I8(i8::from_le_bytes(r.array(&what)?)),
        2 => Value::U16(u16::from_le_bytes(r.array(&what)?)),
        3 => Value::I16(i16::from_le_bytes(r.array(&what)?)),
        4 => Value::U32(u32::from_le_bytes(r.array(&what)?)),
        5 => Value::I32(i32::from_le_bytes(r.array(&what)?)),
        6 => Value::F32(f32::from_le_bytes(r.array(&what)?)),
        7 => {
            let at = r.pos;
            match r.array::<1>(&what)? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                [b] => {
                    return Err(Error::bad_data(format!(
                        "{}: bool byte {b} at file offset {at} is neither 0 nor 1",
                        what()
                    )));
                }
            }
        }
        8 => Value::Str(r.string(MAX_STRING_BYTES, false, &what)?),
        9 => Value::Array(read_array(r, key, depth)?),
        10 => Value::U64(u64::from_le_bytes(r.array(&what)?)),
        11 => Value::I64(i64::from_le_bytes(r.array(&what)?)),
        12 => Value::F64(f64::from_le_bytes(r.array(&what)?)),
        other => {
            return Err(Error::bad_data(format!(
                "{}: unknown value type {other} at file offset {}",
                what(),
                r.pos.saturating_sub(4)
            )));
        }
    })
}

fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<Array> {
    let what = || format!("metadata key \"{}\" (array)", escape(key));
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::bad_data(format!(
            "{}: arrays nested deeper than {MAX_ARRAY_DEPTH}",
            what()
        )));
    }
    let at = r.pos;
    let ty = r.u32(&what)?;
    let Some(min) = min_size(ty) else {
        return Err(Error::bad_data(format!(
            "{}: unknown element type {ty} at file offset {at}",
            what()
        )));
    };
    let n = r.count(MAX_ARRAY_LEN, min, &what)?;
    r.elements = r.elements.saturating_add(n as u64);
    if r.elements > MAX_METADATA_ELEMENTS {
        return Err(Error::bad_data(format!(
            "{}: the metadata arrays hold more than {MAX_METADATA_ELEMENTS} elements in all",
            what()
        )));
    }
    let next = depth.saturating_add(1);
    let mut ints = Vec::new();
    let mut floats = Vec::new();
    let mut bools = Vec::new();
    let mut strs = Vec::new();
    let mut nested = Vec::new();
    match ty {
        0..=5 | 10 | 11 => ints.reserve_exact(n),
        6 | 12 => floats.reserve_exact(n),
        7 => bools.reserve_exact(n),
        8 => strs.reserve_exact(n),
        _ => nested.reserve_exact(n),
    }
    for _ in 0..n {
        if ty == 9 {
            nested.push(read_array(r, key, next)?);
            continue;
        }
        match read_value(r, ty, key, next)? {
            Value::U8(v) => ints.push(i128::from(v)),
            Value::I8(v) => ints.push(i128::from(v)),
            Value::U16(v) => ints.push(i128::from(v)),
            Value::I16(v) => ints.push(i128::from(v)),
            Value::U32(v) => ints.push(i128::from(v)),
            Value::I32(v) => ints.push(i128::from(v)),
            Value::U64(v) => ints.push(i128::from(v)),
            Value::I64(v) => ints.push(i128::from(v)),
            Value::F32(v) => floats.push(f64::from(v)),
            Value::F64(v) => floats.push(v),
            Value::Bool(v) => bools.push(v),
            Value::Str(v) => strs.push(v),
            Value::Array(a) => nested.push(a),
        }
    }
    Ok(match ty {
        0..=5 | 10 | 11 => Array::Int(ints),
        6 | 12 => Array::Float(floats),
        7 => Array::Bool(bools),
        8 => Array::Str(strs),
        _ => Array::Nested(nested),
    })
}

/// Whether the bytes start with the GGUF magic.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Parse and validate a whole GGUF file (`bytes` is the entire file, typically its mmap). Nothing is
/// allocated for a count, string or array before it has been checked against the bytes that remain.
pub fn parse(bytes: &[u8]) -> Result<GgufFile> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        elements: 0,
    };
    let head = || "GGUF header".to_string();
    let magic = r.take(4, &head)?;
    if magic != MAGIC {
        return Err(Error::new(
            ErrorKind::WrongFormat,
            format!(
                "not a GGUF file: the magic is {:?}, expected \"GGUF\"",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = r.u32(&head)?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::unsupported(
                "GGUF version 1 (32-bit counts, 2023) is not read; versions 2 and 3 are",
            )
            .hint("re-convert the model with a current llama.cpp"));
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::unsupported(format!(
                "big-endian GGUF (version {}) is not read; little-endian files are",
                v.swap_bytes()
            )));
        }
        v => {
            return Err(Error::bad_data(format!(
                "GGUF version {v} is unknown (versions 2 and 3 are read)"
            )));
        }
    }
    let what_t = || "GGUF header: tensor count".to_string();
    // A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = r.count(MAX_TENSORS, 24, &what_t)?;
    let what_kv = || "GGUF header: metadata count".to_string();
    // A key/value is at least 8 (key length) + 4 (type) + 1 byte.
    let n_kv = r.count(MAX_KV, 13, &what_kv)?;

    let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::with_capacity(n_kv);
    for i in 0..n_kv {
        let what = || format!("metadata key #{i}");
        let key = r.string(MAX_KEY_BYTES, true, &what)?;
        if key.is_empty() {
            return Err(Error::bad_data(format!("metadata key #{i} is empty")));
        }
        if !seen.insert(key.clone()) {
            return Err(Error::bad_data(format!(
                "metadata key \"{}\" appears twice",
                escape(&key)
            )));
        }
        let what = || format!("metadata key \"{}\"", escape(&key));
        let ty = r.u32(&what)?;
        let value = read_value(&mut r, ty, &key, 0)?;
        kv.push((key, value));
    }

    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) => {
            let a = u64::from(*a);
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(Error::bad_data(format!(
                    "metadata key \"general.alignment\": {a} is not a power of two between 1 and {MAX_ALIGNMENT}"
                )));
            }
            a
        }
        Some((_, v)) => {
            return Err(Error::bad_data(format!(
                "metadata key \"general.alignment\" must be a uint32, found {}",
                v.display()
            )));
        }
    };
    let alignment = usize::try_from(alignment)
        .map_err(|_| Error::bad_data("general.alignment does not fit in memory"))?;

    let mut tensors: Vec<GgufTensor> = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let what = || format!("tensor info #{i}");
        let name = r.string(MAX_NAME_BYTES as u64, true, &what)?;
        validate_name(&name).map_err(|m| Error::bad_data(format!("tensor info #{i}: {m}")))?;
        if !names.insert(name.clone()) {
            return Err(Error::bad_data("two tensors have this name").tensor(&name));
        }
        let what = || format!("tensor \"{}\"", escape(&name));
        let bad = |m: String| Error::bad_data(m).tensor(&name);
        let at = r.pos;
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!(
                "n_dims {n_dims} at file offset {at}: expected 1 to {MAX_DIMS}"
            )));
        }
        let mut ne: Vec<usize> = Vec::with_capacity(4);
        for _ in 0..n_dims {
            let at = r.pos;
            let d = r.u64(&what)?;
            // ggml keeps dimensions in int64_t: anything above i64::MAX is negative there.
            if d > i64::MAX as u64 {
                return Err(bad(format!(
                    "dimension {d} at file offset {at} is over the int64 range"
                )));
            }
            let d = usize::try_from(d)
                .map_err(|_| bad(format!("dimension {d} does not fit in memory")))?;
            ne.push(d);
        }
        let at = r.pos;
        let type_id = r.u32(&what)?;
        let dtype = dtype_of(type_id).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("unknown ggml type id {type_id} at file offset {at}"),
            )
            .tensor(&name)
        })?;
        let at = r.pos;
        let offset = r.u64(&what)?;
        let shape: Vec<usize> = ne.iter().rev().copied().collect();
        // Element count within int64 (ggml_nelements), then bytes with checked arithmetic.
        ne.iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                bad(format!(
                    "dimensions {ne:?} (ne order) overflow the element count"
                ))
            })?;
        let nbytes = checked_nbytes(dtype, &shape).map_err(&bad)?;
        let begin = usize::try_from(offset)
            .map_err(|_| bad(format!("offset {offset} does not fit in memory")))?;
        if !begin.is_multiple_of(alignment) {
            return Err(bad(format!(
                "data offset {offset} (file offset {at}) is not a multiple of the alignment {alignment}"
            )));
        }
        let end = begin
            .checked_add(nbytes)
            .ok_or_else(|| bad(format!("data offset {offset} + {nbytes} bytes overflows")))?;
        tensors.push(GgufTensor {
            name,
            dtype,
            type_id,
            shape,
            begin,
            end,
        });
    }

    // The data section starts at the end of the tensor infos, padded to the alignment.
    let header_end = r.pos;
    let data_start = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| Error::bad_data("padding of the data section overflows"))?;
    let file_len = bytes.len();
    // Without tensor bytes the padding need not be there (a metadata-only file).
    let no_data = tensors.iter().all(|t| t.end == t.begin);
    let data_start = if no_data {
        data_start.min(file_len)
    } else {
        data_start
    };
    if data_start > file_len {
        return Err(Error::bad_data(format!(
            "the data section starts at file offset {data_start} but the file is {file_len} bytes; the file is truncated"
        ))
        .hint("re-download the file"));
    }
    let available = file_len.saturating_sub(data_start);

    // Inside the file and not overlapping (sorted by offset; zero-size tensors may share one).
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors.get(i).map(|t| (t.begin, t.end)));
    let mut cursor = 0usize;
    let mut prev: Option<&GgufTensor> = None;
    for &i in &order {
        let Some(t) = tensors.get(i) else { continue };
        if t.end > available {
            return Err(Error::bad_data(format!(
                "data range [{}, {}) ends past the end of the file (the data section holds {available} bytes from file offset {data_start}); the file is truncated",
                t.begin, t.end
            ))
            .tensor(&t.name)
            .hint("re-download the file"));
        }
        if t.begin < cursor && t.end > t.begin {
            let other = prev.map(|p| p.name.as_str()).unwrap_or("");
            return Err(Error::bad_data(format!(
                "data range [{}, {}) overlaps tensor \"{}\" (which ends at {cursor})",
                t.begin,
                t.end,
                escape(other)
            ))
            .tensor(&t.name));
        }
        if t.end > cursor {
            cursor = t.end;
            prev = Some(t);
        }
    }
    Ok(GgufFile {
        version,
        kv,
        tensors,
        alignment,
        data_start,
        data_len: cursor,
    })
}

/// The GGUF architectures ckpt computes, with the `model_type` and class their config is written
/// as: `llama` (llama.cpp's `llama` graph; mappings/gguf-llama.toml), `qwen2` (its `qwen2`
/// graph, `src/models/qwen2.cpp`: LLaMA's with optional q/k/v biases and half-split rotary;
/// mappings/gguf-qwen2.toml), `qwen3` (`src/models/qwen3.cpp`: half-split rotary after a
/// per-head RMSNorm of q and k; mappings/gguf-qwen3.toml) and `phi3` (`src/models/phi3.cpp`:
/// fused `attn_qkv` and gate/up `ffn_up`, half-split and maybe partial rotary, no sliding window;
/// mappings/gguf-phi3.toml).
pub const COMPUTED_ARCHITECTURES: &[(&str, &str, &str)] = &[
    ("llama", "llama", "LlamaForCausalLM"),
    ("qwen2", "qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "qwen3", "Qwen3ForCausalLM"),
    ("phi3", "phi3", "Phi3ForCausalLM"),
];

/// The config of a GGUF of an architecture ckpt does not compute (`gemma`, `phi3`, ...): only its
/// `model_type`, `gguf-ARCH`, which no family claims. The file is listed, inspected and diffed like
/// any other; detection names the architecture and every command that computes or converts
/// refuses it (the `blk.N` names are shared by every architecture, the math is not), never reads it
/// as LLaMA.
fn other_architecture_config(arch: &str) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("model_type".into(), Json::from(format!("gguf-{arch}")));
    m
}

/// Most layers accepted from `block_count` (llama.cpp's `LLAMA_MAX_LAYERS`).
pub const MAX_LAYERS: u64 = 512;

/// The Hugging Face `config.json` a GGUF of one of the [`COMPUTED_ARCHITECTURES`] implies, from
/// its metadata and (for the vocabulary size and the FFN width when metadata lacks them) its
/// tensor shapes. Other architectures are refused with the reason (a file of one is opened with
/// `other_architecture_config` instead).
pub fn llama_config(g: &GgufFile, file: &[u8]) -> Result<Map<String, Json>> {
    config_with(g, &|t| rope_freq_factors(g, t, file))
}

/// [`llama_config`] with the data of the `rope_freqs` tensor read by `rope_freqs` (from the file,
/// or from the part of a split GGUF that holds it).
fn config_with(
    g: &GgufFile,
    rope_freqs: &dyn Fn(&GgufTensor) -> Result<Vec<f32>>,
) -> Result<Map<String, Json>> {
    let arch = g.architecture().ok_or_else(|| {
        Error::bad_data("metadata key \"general.architecture\" is missing or not a string")
    })?;
    let Some(&(_, model_type, class)) = COMPUTED_ARCHITECTURES.iter().find(|(a, ..)| *a == arch)
    else {
        let known: Vec<String> = COMPUTED_ARCHITECTURES
            .iter()
            .map(|(a, ..)| format!("`{a}`"))
            .collect();
        return Err(Error::unsupported(format!(
            "GGUF architecture \"{}\": ckpt computes the {} architectures only (other architectures share the `blk.N` tensor names but not the math)",
            escape(arch),
            known.join(", ")
        ))
        .hint("use the original Hugging Face checkpoint of this model"));
    };
    let key = |k: &str| format!("{arch}.{k}");
    // llama.cpp's loader reads each of these keys as one GGUF type and refuses the file when it
    // is stored as another ("key ... has wrong type"), even a wider integer.
    let uint = |k: &str| -> Result<Option<u64>> {
        match g.get(&key(k)) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(u64::from(*v))),
            Some(v) => Err(wrong_type(&key(k), "u32", v)),
        }
    };
    let float = |k: &str| -> Result<Option<f64>> {
        match g.get(&key(k)) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(f64::from(*v))),
            Some(v) => Err(wrong_type(&key(k), "f32", v)),
        }
    };
    let need = |k: &str, v: Option<u64>| -> Result<u64> {
        v.ok_or_else(|| Error::bad_data(format!("metadata key \"{}\" is missing", key(k))))
    };
    let hidden = need("embedding_length", uint("embedding_length")?)?;
    let layers = need("block_count", uint("block_count")?)?;
    if layers > MAX_LAYERS {
        return Err(Error::bad_data(format!(
            "metadata key \"{}\": {layers} layers is over the limit of {MAX_LAYERS}",
            key("block_count")
        )));
    }
    let heads = need("attention.head_count", uint("attention.head_count")?)?;
    if heads == 0 {
        return Err(Error::bad_data(format!(
            "metadata key \"{}\" is 0",
            key("attention.head_count")
        )));
    }
    let kv_heads = uint("attention.head_count_kv")?.unwrap_or(heads);
    let eps = float("attention.layer_norm_rms_epsilon")?;
    let theta = float("rope.freq_base")?;
    let ctx = uint("context_length")?;
    let key_len = uint("attention.key_length")?;
    let value_len = uint("attention.value_length")?;
    if let (Some(k), Some(v)) = (key_len, value_len)
        && k != v
    {
        return Err(Error::unsupported(format!(
            "key_length {k} differs from value_length {v}: LLaMA attention has one head size"
        )));
    }
    let tensor_shape = |n: &str| g.tensors.iter().find(|t| t.name == n).map(|t| &t.shape);
    let vocab = match uint("vocab_size")? {
        Some(v) => Some(v),
        None => match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a.len() as u64),
            _ => tensor_shape("token_embd.weight")
                .and_then(|s| s.first())
                .map(|&v| v as u64),
        },
    };
    let ffn = match uint("feed_forward_length")? {
        Some(v) => Some(v),
        None => tensor_shape("blk.0.ffn_gate.weight")
            .and_then(|s| s.first())
            .map(|&v| v as u64),
    };
    let mut m = Map::new();
    m.insert("architectures".into(), Json::from(vec![class]));
    m.insert("model_type".into(), Json::from(model_type));
    m.insert("hidden_size".into(), Json::from(hidden));
    if let Some(f) = ffn {
        m.insert("intermediate_size".into(), Json::from(f));
    }
    m.insert("num_hidden_layers".into(), Json::from(layers));
    m.insert("num_attention_heads".into(), Json::from(heads));
    m.insert("num_key_value_heads".into(), Json::from(kv_heads));
    // Only when it is not the default hidden / heads (transformers derives it otherwise), except
    // for Qwen3, whose class reads 128 when `head_dim` is absent: llama.cpp takes hidden / heads
    // there too, so the config says so.
    let head_dim = key_len.or_else(|| hidden.checked_div(heads));
    if let Some(k) = head_dim
        && (arch == "qwen3" || Some(k) != hidden.checked_div(heads))
    {
        m.insert("head_dim".into(), Json::from(k));
    }
    if let Some(c) = ctx {
        m.insert("max_position_embeddings".into(), Json::from(c));
    }
    if let Some(e) = eps {
        m.insert("rms_norm_eps".into(), float_json(e));
    }
    m.insert("rope_theta".into(), float_json(theta.unwrap_or(10000.0)));
    // llama.cpp's qwen2 and phi3 graphs build q and o as n_embd x n_embd (`src/models/qwen2.cpp`,
    // `phi3.cpp`): a file whose heads x head size is another width does not load there.
    if (arch == "qwen2" || arch == "phi3")
        && let Some(hd) = head_dim
        && heads.checked_mul(hd) != Some(hidden)
    {
        return Err(Error::unsupported(format!(
            "{heads} heads of {hd} is not the embedding length {hidden}: llama.cpp's {arch} graph builds its q and o projections {hidden} x {hidden}, so the file does not load there"
        )));
    }
    if let (Some(rd), Some(hd)) = (uint("rope.dimension_count")?, head_dim)
        && rd != hd
    {
        // Phi-3's rotary may cover part of each head (`partial_rotary_factor`; the converter
        // writes `rope.dimension_count` = factor x head size): the config says the factor, when
        // transformers' `int(head_dim * factor)` gives that dimension back.
        let factor = rd as f64 / hd as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let back = (hd as f64 * factor) as u64;
        if arch != "phi3" || rd == 0 || rd > hd || rd % 2 != 0 || back != rd {
            return Err(Error::unsupported(format!(
                "metadata key \"{}\": rotary dimension {rd} differs from the head size {hd} (partial rotary is computed for the `phi3` architecture only, as an even part of the head)",
                key("rope.dimension_count")
            )));
        }
        m.insert("partial_rotary_factor".into(), Json::from(factor));
    }
    // llama.cpp's llama graph reads llama3 scaling from `rope_freqs`; its qwen2 and qwen3 graphs
    // read no such tensor (a file with one is refused by the family: no rule maps it).
    let llama3 = match (
        g.tensors
            .iter()
            .find(|t| t.name == "rope_freqs.weight")
            .filter(|_| arch == "llama"),
        head_dim,
    ) {
        (Some(t), Some(hd)) => {
            let factors = rope_freqs(t)?;
            llama3_from_factors(&factors, theta.unwrap_or(10000.0), hd)
                .map_err(|m| Error::unsupported(m).tensor(&t.name))?
        }
        _ => None,
    };
    match (rope_scaling(g, arch)?, llama3) {
        (Some(_), Some(_)) => {
            return Err(Error::unsupported(
                "both rope.scaling metadata and llama3 rope_freqs factors: the two scalings would compound",
            )
            .tensor("rope_freqs.weight"));
        }
        (Some(s), None) | (None, Some(s)) => {
            m.insert("rope_scaling".into(), s);
        }
        (None, None) => {}
    }
    if let Some(v) = vocab {
        m.insert("vocab_size".into(), Json::from(v));
    }
    // Every other `llama.*` key is one llama.cpp may compute with (`attention.causal` false, a
    // rotary `attn_factor` that scales q and k, experts) and ckpt does not model: it goes into the
    // config under its own name, `gguf.llama.KEY`, which the family does not understand, so that
    // every command that computes refuses it by name (as for an unmodelled `config.json` key).
    let prefix = format!("{arch}.");
    for (k, v) in &g.kv {
        if let Some(rest) = k.strip_prefix(&prefix)
            && !READ_KEYS.contains(&rest)
            && !at_default(rest, v, hidden)
            // llama.cpp's phi3 graph reads the window and disables it ("Phi SWA is currently
            // disabled", `src/models/phi3.cpp`): every layer attends to every earlier position.
            && !(arch == "phi3" && rest == "attention.sliding_window")
        {
            // Numbers as numbers; anything else (a `false` would read as "switched off") as text.
            let shown = match (v.as_u64(), v.as_f64(), v.as_str()) {
                (Some(n), _, _) => Json::from(n),
                (None, Some(f), _) => float_json(f),
                (None, None, Some(text)) => Json::from(text),
                _ => Json::from(v.display()),
            };
            m.insert(format!("gguf.{k}"), shown);
        }
    }
    m.insert("hidden_act".into(), Json::from("silu"));
    m.insert("attention_bias".into(), Json::from(false));
    m.insert("mlp_bias".into(), Json::from(false));
    let tied = tensor_shape("output.weight").is_none();
    m.insert("tie_word_embeddings".into(), Json::from(tied));
    if let Some(dt) = float_dtype(g) {
        m.insert("torch_dtype".into(), Json::from(dt));
    }
    for (k, t) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        // informational for the forward pass, but a class builds its embedding with it (a
        // Phi-3 config without one reads 32000)
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(v) = g.get(t).and_then(Value::as_u64) {
            m.insert(k.into(), Json::from(v));
        }
    }
    Ok(m)
}

/// A metadata key stored as another GGUF type than the one llama.cpp's loader reads it as: bad
/// data, as llama.cpp refuses the file.
fn wrong_type(key: &str, want: &str, v: &Value) -> Error {
    Error::bad_data(format!(
        "metadata key \"{}\" is {} {}, where llama.cpp reads {want} only and refuses the file (\"key has wrong type\")",
        escape(key),
        v.type_name(),
        v.display()
    ))
}

/// An f32 metadata value as the shortest decimal that reads back to the same f32 (`1e-5`, not
/// `9.999999747378752e-6`): GGUF stores f32 where `config.json` had a decimal.
fn float_json(v: f64) -> Json {
    #[allow(clippy::cast_possible_truncation)]
    let f = v as f32;
    if f64::from(f) == v {
        let s = f.to_string();
        if let Ok(d) = s.parse::<f64>() {
            return Json::from(d);
        }
    }
    Json::from(v)
}

/// `rope_scaling` from `{arch}.rope.scaling.*`, read as llama.cpp's `load_hparams` reads it: the
/// type defaults to `linear`; the factor is `rope.scaling.factor`, else the older
/// `rope.scale_linear`, and 0 or absent means 1 (no scaling); type `none` never scales. So a factor
/// without a type is linear scaling (llama.cpp applies it), a linear type without a factor is
/// none. `yarn` is passed on for the reference to refuse by name. A key of the wrong type is bad
/// data (llama.cpp refuses to load it), never skipped.
fn rope_scaling(g: &GgufFile, arch: &str) -> Result<Option<Json>> {
    let wrong = |k: &str, want: &str, v: &Value| wrong_type(&format!("{arch}.{k}"), want, v);
    let ty = match g.get(&format!("{arch}.rope.scaling.type")) {
        None => "linear",
        Some(v) => v
            .as_str()
            .ok_or_else(|| wrong("rope.scaling.type", "str", v))?,
    };
    let mut factor = None;
    for k in ["rope.scaling.factor", "rope.scale_linear"] {
        if let Some(v) = g.get(&format!("{arch}.{k}")) {
            let Value::F32(f) = v else {
                return Err(wrong(k, "f32", v));
            };
            let f = f64::from(*f);
            if !f.is_finite() || f < 0.0 {
                return Err(Error::bad_data(format!(
                    "metadata key \"{arch}.{k}\" must be a finite non-negative float, found {f}"
                )));
            }
            factor = Some(f);
            break;
        }
    }
    let factor = factor.filter(|&f| f != 0.0);
    let orig = match g.get(&format!("{arch}.rope.scaling.original_context_length")) {
        None => None,
        Some(Value::U32(v)) => Some(u64::from(*v)),
        Some(v) => return Err(wrong("rope.scaling.original_context_length", "u32", v)),
    };
    match ty {
        "none" => Ok(None),
        "linear" if factor.is_none_or(|f| f == 1.0) => Ok(None),
        t @ ("linear" | "yarn") => {
            let mut s = Map::new();
            s.insert("rope_type".into(), Json::from(t));
            if let Some(f) = factor {
                s.insert("factor".into(), float_json(f));
            }
            if let Some(o) = orig {
                s.insert("original_max_position_embeddings".into(), Json::from(o));
            }
            Ok(Some(Json::Object(s)))
        }
        other => Err(Error::unsupported(format!(
            "metadata key \"{arch}.rope.scaling.type\": rope scaling \"{}\" is not supported",
            escape(other)
        ))),
    }
}

/// The `{arch}.*` metadata keys [`llama_config`] reads into the config.
const READ_KEYS: &[&str] = &[
    "embedding_length",
    "block_count",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "context_length",
    "attention.key_length",
    "attention.value_length",
    "vocab_size",
    "feed_forward_length",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scale_linear",
    "rope.scaling.original_context_length",
    // Whether the model was fine-tuned with its scaling: llama.cpp reads it and computes nothing
    // differently.
    "rope.scaling.finetuned",
    // Keys llama.cpp does not read for the llama architecture (`load_hparams` and
    // `llama_model_llama::load_arch_hparams`): the old converter's layout label ("Meta AI original
    // pth"), and the LayerNorm epsilon (the llama graph normalises with RMSNorm and its own
    // epsilon) that llama.cpp's own model saver writes.
    "tensor_data_layout",
    "attention.layer_norm_epsilon",
];

/// Whether an `{arch}.*` key that [`llama_config`] does not read holds the value llama.cpp assumes
/// when it is absent, so that it changes nothing (`attention.causal` true, no experts, no
/// next-token-prediction layers, a rotary attention factor of 1, ...).
fn at_default(key: &str, v: &Value, hidden: u64) -> bool {
    match key {
        "attention.causal" => matches!(v, Value::Bool(true)),
        "expert_count"
        | "expert_used_count"
        | "expert_group_count"
        | "expert_group_used_count"
        | "nextn_predict_layers"
        | "pooling_type" => v.as_u64() == Some(0),
        "embedding_length_out" => matches!(v.as_u64(), Some(0)) || v.as_u64() == Some(hidden),
        "rope.scaling.attn_factor" => v.as_f64() == Some(1.0),
        "attention.sliding_window" => v.as_u64() == Some(0),
        "rope.scaling.yarn_log_multiplier" => v.as_f64() == Some(0.0),
        "rope.scaling.alpha" => v.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The f32 values of the `rope_freqs` tensor (one factor per rotary frequency).
fn rope_freq_factors(g: &GgufFile, t: &GgufTensor, file: &[u8]) -> Result<Vec<f32>> {
    if t.dtype != Dtype::F32 || t.shape.len() != 1 {
        return Err(Error::unsupported(format!(
            "rope_freqs must be a 1-D F32 tensor, found {} {:?}",
            t.dtype, t.shape
        ))
        .tensor(&t.name));
    }
    let range = g
        .data_start
        .checked_add(t.begin)
        .zip(g.data_start.checked_add(t.end));
    let bytes = range
        .and_then(|(b, e)| file.get(b..e))
        .ok_or_else(|| Error::bad_data("data range outside the file").tensor(&t.name))?;
    Ok(bytes
        .chunks_exact(4)
        .filter_map(|c| c.try_into().ok().map(f32::from_le_bytes))
        .collect())
}

/// The llama3 factors llama.cpp's converter writes for `(factor, low_freq_factor,
/// high_freq_factor, original_max_position_embeddings)` (`LlamaModel.generate_extra_tensors`:
/// f32 frequencies, then f64 arithmetic per frequency).
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
fn llama3_factors(theta: f64, head_dim: u64, p: (f64, f64, f64, f64)) -> Vec<f64> {
    let (factor, low, high, old) = p;
    let dim = head_dim as f32;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim);
            let wavelen = 2.0 * std::f64::consts::PI / f64::from(freq);
            if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Llama 3 rope scaling parameters that reproduce a `rope_freqs` tensor, as a transformers
/// `rope_scaling` object; `None` when every factor is 1. The factors fix the parameters only up to
/// a common scale of `(low, high, original_max_position_embeddings)`, which leaves the rotary
/// frequencies unchanged; `low_freq_factor = 1` is taken (as every published Llama 3.x has), the
/// others solved from the interpolated frequencies, and the result accepted only when it
/// reproduces every factor. Factors that follow no llama3 parameters are refused.
#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
fn llama3_from_factors(
    f: &[f32],
    theta: f64,
    head_dim: u64,
) -> std::result::Result<Option<Json>, String> {
    if f.len() as u64 != head_dim / 2 {
        return Err(format!(
            "rope_freqs has {} factors, expected head_dim / 2 = {}",
            f.len(),
            head_dim / 2
        ));
    }
    if f.iter().any(|v| !v.is_finite() || *v < 1.0) {
        return Err("rope_freqs factors must be finite and at least 1".into());
    }
    let factor = f64::from(f.iter().copied().fold(1.0f32, f32::max));
    if factor == 1.0 {
        return Ok(None);
    }
    let dim = head_dim as f32;
    let wl = |i: usize| {
        let freq = 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim);
        2.0 * std::f64::consts::PI / f64::from(freq)
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    let medium: Vec<(f64, f64)> = f
        .iter()
        .enumerate()
        .filter(|(_, v)| !close(f64::from(**v), 1.0) && !close(f64::from(**v), factor))
        .map(|(i, v)| {
            let inv = 1.0 / f64::from(*v);
            (wl(i), (inv - 1.0 / factor) / (1.0 - 1.0 / factor))
        })
        .collect();
    let low = 1.0;
    let (high, old) = match medium.as_slice() {
        [(w1, s1), .., (w2, s2)] => {
            // s = old / (high - low) / w - low / (high - low)
            let a = (s1 - s2) / (1.0 / w1 - 1.0 / w2);
            let b = a / w1 - s1;
            if b <= 0.0 || !b.is_finite() {
                return Err("rope_freqs factors do not follow llama3's interpolation".into());
            }
            let high = ((1.0 + 1.0 / b) * 1e4).round() / 1e4;
            (high, (a / b).round())
        }
        [(w, s)] => (4.0, (w * (3.0 * s + 1.0)).round()),
        [] => {
            // No interpolated frequency: any `old` between the two groups' wavelengths.
            let max_high = f
                .iter()
                .enumerate()
                .filter(|(_, v)| close(f64::from(**v), 1.0))
                .map(|(i, _)| wl(i))
                .fold(0.0, f64::max);
            let min_low = f
                .iter()
                .enumerate()
                .filter(|(_, v)| close(f64::from(**v), factor))
                .map(|(i, _)| wl(i))
                .fold(f64::INFINITY, f64::min);
            let old = min_low.ceil() - 1.0;
            if old <= 4.0 * max_high {
                return Err("rope_freqs factors do not follow llama3's interpolation".into());
            }
            (4.0, old)
        }
    };
    let again = llama3_factors(theta, head_dim, (factor, low, high, old));
    if !again
        .iter()
        .zip(f)
        .all(|(x, y)| ((*x as f32) - y).abs() <= 1e-6 * y.abs())
    {
        return Err(format!(
            "rope_freqs factors do not follow llama3's formula (best fit: factor {factor}, high_freq_factor {high}, original_max_position_embeddings {old})"
        ));
    }
    let mut s = Map::new();
    s.insert("rope_type".into(), Json::from("llama3"));
    s.insert("factor".into(), float_json(factor));
    s.insert("low_freq_factor".into(), float_json(low));
    s.insert("high_freq_factor".into(), float_json(high));
    s.insert(
        "original_max_position_embeddings".into(),
        Json::from(old as u64),
    );
    Ok(Some(Json::Object(s)))
}

/// `float32` / `float16` / `bfloat16` when every 2-D weight has that one float dtype.
fn float_dtype(g: &GgufFile) -> Option<&'static str> {
    let mut found = None;
    for t in g.tensors.iter().filter(|t| t.shape.len() == 2) {
        let d = match t.dtype {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
            _ => return None,
        };
        if found.is_some_and(|f| f != d) {
            return None;
        }
        found = Some(d);
    }
    found
}

/// Whether the file at `path` starts with the GGUF magic (false when it cannot be read: the
/// regular open then reports why).
pub fn sniff(path: &std::path::Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = [0u8; 4];
    f.read_exact(&mut head).is_ok() && &head == MAGIC
}

/// The [`Header`](super::header::Header) of a parsed GGUF: its tensors in data order, the data
/// section located.
fn header_of(g: &GgufFile) -> Result<super::header::Header> {
    use super::header::{Header, HeaderTensor};
    let mut tensors: Vec<HeaderTensor> = g
        .tensors
        .iter()
        .map(|t| HeaderTensor::located(&t.name, t.dtype, &t.shape, t.begin, t.end))
        .collect();
    tensors.sort_by_key(|t| (t.begin, t.end));
    Ok(Header {
        // The data section starts at `header_len + 8`: GGUF's aligned data offset.
        header_len: g
            .data_start
            .checked_sub(8)
            .ok_or_else(|| Error::internal("GGUF data section inside the magic"))?,
        tensors,
        metadata: None,
        data_len: g.data_len,
    })
}

/// Map and parse one GGUF file: its shard and its parsed header.
fn open_part(path: &std::path::Path) -> Result<(super::Shard, GgufFile)> {
    let mut parsed = None;
    let shard = super::Shard::open_mapped(path, |bytes| {
        let g = parse(bytes)?;
        let h = header_of(&g)?;
        parsed = Some(g);
        Ok(h)
    })?;
    let g = parsed.ok_or_else(|| Error::internal("GGUF header not kept").file(path))?;
    Ok((shard, g))
}

/// Most parts of a split GGUF (the five digits of llama.cpp's part names).
pub const MAX_SPLIT_PARTS: u64 = 99_999;

/// `split.count` of a GGUF when it says the file is one part of several (`gguf-split`, or the
/// converter's `--split-max-*`); `None` for a whole file: `split.count` absent, 1, or 0 (what
/// `llama-gguf-split --merge` writes into the merged file; llama.cpp's loader treats a count
/// below 2 as one file).
fn split_count(g: &GgufFile) -> Result<Option<u64>> {
    match g.get("split.count") {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            None => Err(Error::bad_data(format!(
                "metadata key \"split.count\" must be a non-negative integer, found {}",
                v.display()
            ))),
            Some(0 | 1) => Ok(None),
            Some(n) if n > MAX_SPLIT_PARTS => Err(Error::bad_data(format!(
                "metadata key \"split.count\": {n} parts is over the limit of {MAX_SPLIT_PARTS}"
            ))),
            Some(n) => Ok(Some(n)),
        },
    }
}

/// The file-name ending of part `i` (from 0) of `n`: llama.cpp's `llama_split_path` format,
/// `PREFIX-%05d-of-%05d.gguf`, counting from 1.
fn part_suffix(i: u64, n: u64) -> String {
    format!("-{:05}-of-{n:05}.gguf", i.saturating_add(1))
}

/// Whether `name` is llama.cpp's name for the first part of a split GGUF,
/// `PREFIX-00001-of-NNNNN.gguf` (the suffix `part_suffix` gives part 0 of some count).
pub fn is_first_part_name(name: &str) -> bool {
    name.strip_suffix(".gguf")
        .and_then(|n| n.len().checked_sub(15).and_then(|i| n.get(i..)))
        .and_then(|tail| tail.strip_prefix("-00001-of-"))
        .and_then(|count| count.parse::<u64>().ok())
        .is_some_and(|n| n >= 1 && name.ends_with(&part_suffix(0, n)))
}

/// Every part of a split GGUF whose first part, `first` (parsed as `g`, `split.count` = `n`), is
/// at `path`, in order, as llama.cpp's loader finds them: the metadata is the first part's; the
/// others are named `PREFIX-0000K-of-0000N.gguf` beside it (`llama_split_prefix` /
/// `llama_split_path`) and each must say it is part `K - 1` of `n`. When the first part records
/// `split.tensors.count`, the parts must hold that many tensors together. A part given in place of
/// the first is refused, naming the first (llama.cpp refuses it too).
fn open_split(
    path: &std::path::Path,
    dir: &std::path::Path,
    first: super::Shard,
    g: GgufFile,
    n: u64,
) -> Result<(Vec<super::Shard>, Vec<GgufFile>)> {
    let merge = "or merge the parts into one file: llama-gguf-split --merge FIRST-PART OUT.gguf";
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let no = g.get("split.no");
    match no.and_then(Value::as_u64) {
        Some(0) => {}
        Some(k) if k < n => {
            let first_name = name
                .strip_suffix(&part_suffix(k, n))
                .map(|prefix| format!("{prefix}{}", part_suffix(0, n)));
            return Err(Error::unsupported(format!(
                "this file is part {} of {n} of a split GGUF: a split GGUF is read from its first part, which holds the model's metadata (llama.cpp loads it from there too)",
                k.saturating_add(1)
            ))
            .hint(match first_name {
                Some(f) => format!("open the first part, `{}`", escape(&f)),
                None => format!("open the first part; {merge}"),
            }));
        }
        _ => {
            return Err(Error::bad_data(format!(
                "metadata key \"split.no\" must be an integer below split.count = {n}, found {}",
                no.map_or_else(|| "nothing".to_string(), Value::display)
            )));
        }
    }
    let prefix = name.strip_suffix(&part_suffix(0, n)).ok_or_else(|| {
        Error::unsupported(format!(
            "this file is the first of {n} parts of a split GGUF, but its name does not end in `{}`: the other parts are found by that name (llama.cpp's `llama_split_prefix`)",
            part_suffix(0, n)
        ))
        .hint(format!("rename the parts as llama-gguf-split names them, {merge}"))
    })?;
    let mut shards = vec![first];
    let mut parts = vec![g];
    for i in 1..n {
        let p = dir.join(format!("{prefix}{}", part_suffix(i, n)));
        let (shard, pg) = open_part(&p).map_err(|e| {
            e.hint(format!(
                "part {} of {n} of the split GGUF `{}`; the parts are read from beside the first, by name",
                i.saturating_add(1),
                escape(name)
            ))
        })?;
        let (count, part_no) = (split_count(&pg), pg.get("split.no").and_then(Value::as_u64));
        if !matches!(count, Ok(Some(c)) if c == n) || part_no != Some(i) {
            return Err(Error::bad_data(format!(
                "this file should be part {} of {n} of a split GGUF (split.no = {i}, split.count = {n}) but its metadata says split.no = {}, split.count = {}",
                i.saturating_add(1),
                pg.get("split.no").map_or_else(|| "nothing".to_string(), Value::display),
                pg.get("split.count").map_or_else(|| "nothing".to_string(), Value::display)
            ))
            .file(&p));
        }
        shards.push(shard);
        parts.push(pg);
    }
    let total: usize = parts.iter().map(|p| p.tensors.len()).sum();
    if let Some(v) = parts.first().and_then(|p| p.get("split.tensors.count"))
        && v.as_u64() != u64::try_from(total).ok()
    {
        return Err(Error::bad_data(format!(
            "metadata key \"split.tensors.count\" is {} but the {n} parts hold {total} tensors",
            v.display()
        ))
        .file(path));
    }
    Ok((shards, parts))
}

/// Open a GGUF file as a [`Checkpoint`]: one mapped file (or, for the first part of a split GGUF,
/// every part, one shard each) whose tensors carry GGUF's types and row-major shapes, and a
/// `config.json` built from the (first part's) metadata ([`llama_config`]).
pub(super) fn open_checkpoint(path: &std::path::Path) -> Result<super::Checkpoint> {
    let (shard, g) = open_part(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let (shards, parts) = match split_count(&g).map_err(|e| e.file(path))? {
        None => (vec![shard], vec![g]),
        Some(n) => open_split(path, &dir, shard, g, n).map_err(|e| e.file(path))?,
    };
    let first = parts
        .first()
        .ok_or_else(|| Error::internal("a GGUF without parts"))?;
    let map = match first.architecture() {
        Some(arch) if !COMPUTED_ARCHITECTURES.iter().any(|(a, ..)| *a == arch) => {
            Ok(other_architecture_config(arch))
        }
        _ if parts.len() == 1 => llama_config(first, shards.first().map_or(&[], |s| s.bytes())),
        _ => {
            // The first part's metadata with every part's tensors (for the shapes the config
            // reads); `rope_freqs` is read from the part that holds it.
            let mut all = first.clone();
            all.tensors = parts
                .iter()
                .flat_map(|p| p.tensors.iter().cloned())
                .collect();
            config_with(&all, &|t| {
                parts
                    .iter()
                    .zip(&shards)
                    .find_map(|(p, s)| {
                        let pt = p.tensors.iter().find(|x| x.name == t.name)?;
                        Some(rope_freq_factors(p, pt, s.bytes()))
                    })
                    .unwrap_or_else(|| Err(Error::internal("rope_freqs in no part")))
            })
        }
    }
    .map_err(|e| e.file(path))?;
    let bytes = serde_json::to_vec(&Json::Object(map))
        .map_err(|e| Error::internal(format!("cannot serialise the GGUF config: {e}")))?;
    let mut cfg = super::ModelConfig::parse(&bytes, super::ConfigSource::ConfigJson)
        .map_err(|e| e.file(path))?;
    cfg.path = path.to_path_buf();
    super::Checkpoint::assemble(
        path,
        &dir,
        super::Layout::File,
        shards,
        Some(cfg),
        None,
        Vec::new(),
    )
}

/// The parsed GGUF of an opened checkpoint's first file, when it is one (metadata for reports).
pub fn of_checkpoint(ck: &super::Checkpoint) -> Option<GgufFile> {
    let s = ck.shards.first()?;
    if !is_gguf(s.bytes()) {
        return None;
    }
    parse(s.bytes()).ok()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;

    /// A tiny GGUF writer for tests.
    #[derive(Default)]
    struct W {
        kv: Vec<u8>,
        n_kv: u64,
        ti: Vec<u8>,
        n_t: u64,
    }

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    impl W {
        fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
            s(&mut self.kv, k);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
            s(&mut self.kv, k);
            self.kv.extend(8u32.to_le_bytes());
            s(&mut self.kv, v);
            self.n_kv += 1;
            self
        }
        fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, off: u64) -> &mut Self {
            s(&mut self.ti, name);
            self.ti.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                self.ti.extend(d.to_le_bytes());
            }
            self.ti.extend(ty.to_le_bytes());
            self.ti.extend(off.to_le_bytes());
            self.n_t += 1;
            self
        }
        fn build(&self, data: usize) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_t.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kv);
            out.extend(&self.ti);
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            out.extend(std::iter::repeat_n(0u8, data));
            out
        }
    }

    #[test]
    fn parses_and_reverses_dims() {
        let mut w = W::default();
        w.kv_str("general.architecture", "llama")
            .tensor("a", &[4, 2], 0, 0)
            .tensor("b", &[32, 2], 8, 32);
        let g = parse(&w.build(32 + 68)).unwrap();
        assert_eq!(g.tensors[0].shape, vec![2, 4]);
        assert_eq!(g.tensors[1].dtype, Dtype::Q8_0);
        assert_eq!((g.tensors[1].begin, g.tensors[1].end), (32, 100));
        assert_eq!(g.architecture(), Some("llama"));
    }

    #[test]
    fn hostile_inputs_are_refused_with_the_reason() {
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut w = W::default();
        w.tensor("a", &[4], 0, 0);
        let mut b = w.build(16);
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push((b, "over the limit"));
        let mut b = w.build(16);
        b[16..24].copy_from_slice(&1000u64.to_le_bytes());
        cases.push((b, "cannot fit"));
        let mut w = W::default();
        w.tensor("a", &[1 << 62, 1 << 3], 0, 0);
        cases.push((w.build(0), "overflow"));
        let mut w = W::default();
        w.tensor("a", &[u64::MAX], 0, 0);
        cases.push((w.build(0), "int64"));
        let mut w = W::default();
        w.tensor("a", &[4], 0, 1 << 40);
        cases.push((w.build(16), "past the end"));
        let mut w = W::default();
        w.tensor("a", &[4], 0, 3);
        cases.push((w.build(16), "multiple of the alignment"));
        let mut w = W::default();
        w.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 0);
        cases.push((w.build(64), "overlaps"));
        let mut w = W::default();
        w.tensor("a", &[4, 1, 1, 1, 1], 0, 0);
        cases.push((w.build(16), "n_dims 5"));
        let mut w = W::default();
        w.tensor("a", &[33], 8, 0);
        cases.push((w.build(64), "not a multiple of the 32-element block"));
        let mut w = W::default();
        w.tensor("a", &[4], 99, 0);
        cases.push((w.build(16), "unknown ggml type id 99"));
        let mut w = W::default();
        w.kv_u32("general.alignment", 48);
        cases.push((w.build(0), "power of two"));
        let mut w = W::default();
        w.kv_str("k", "v").kv_str("k", "v");
        cases.push((w.build(0), "appears twice"));
        let mut w = W::default();
        w.kv_str("k", "v");
        let mut b = w.build(0);
        // The string length of the value: after magic, version, counts, key (8 + 1), type (4).
        b[24 + 9 + 4..24 + 9 + 4 + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        cases.push((b, "over the limit"));
        let mut b = W::default().build(0);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        cases.push((b, "version 1"));
        cases.push((b"GGUF\x03\0\0".to_vec(), "truncated"));
        for (bytes, want) in cases {
            let e = parse(&bytes).unwrap_err();
            assert!(e.to_string().contains(want), "want {want}, got {e}");
        }
    }

    #[test]
    fn llama3_parameters_are_recovered_from_rope_freqs() {
        // Llama 3.1 8B: head_dim 128, theta 5e5, factor 8, low 1, high 4, original 8192.
        for (theta, hd, p) in [
            (500000.0, 128, (8.0, 1.0, 4.0, 8192.0)),
            (500000.0, 64, (32.0, 1.0, 4.0, 8192.0)),
            (500000.0, 16, (8.0, 1.0, 4.0, 32.0)),
        ] {
            let f: Vec<f32> = llama3_factors(theta, hd, p)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let s = llama3_from_factors(&f, theta, hd).unwrap().unwrap();
            let again: Vec<f32> = llama3_factors(
                theta,
                hd,
                (
                    s["factor"].as_f64().unwrap(),
                    s["low_freq_factor"].as_f64().unwrap(),
                    s["high_freq_factor"].as_f64().unwrap(),
                    s["original_max_position_embeddings"].as_f64().unwrap(),
                ),
            )
            .iter()
            .map(|&v| v as f32)
            .collect();
            assert_eq!(f, again, "{s}");
            if hd == 128 {
                assert_eq!(s["high_freq_factor"], 4.0);
                assert_eq!(s["original_max_position_embeddings"], 8192);
            }
        }
        assert_eq!(llama3_from_factors(&[1.0; 8], 1e4, 16), Ok(None));
        let mut bad: Vec<f32> = llama3_factors(5e5, 128, (8.0, 1.0, 4.0, 8192.0))
            .iter()
            .map(|&v| v as f32)
            .collect();
        bad[40] = 2.5;
        assert!(llama3_from_factors(&bad, 5e5, 128).is_err());
        assert!(llama3_from_factors(&[1.0; 3], 1e4, 16).is_err());
    }

    /// A one-layer file of `arch`, width 64, `heads` heads, and a token embedding.
    fn one_layer(arch: &str, heads: u32) -> W {
        let mut w = W::default();
        w.kv_str("general.architecture", arch)
            .kv_u32(&format!("{arch}.block_count"), 1)
            .kv_u32(&format!("{arch}.embedding_length"), 64)
            .kv_u32(&format!("{arch}.attention.head_count"), heads)
            .tensor("token_embd.weight", &[64, 8], 0, 0);
        w
    }

    /// The `qwen2` architecture: its config is a Qwen2 one from the `qwen2.*` keys; heads x head
    /// size other than the embedding length is refused (llama.cpp's qwen2 graph builds q and o
    /// square); a `rope_freqs` tensor is not read as llama3 scaling (that graph reads none).
    #[test]
    fn qwen2_metadata_is_read_as_llama_cpp_s_qwen2_graph() {
        let file = |key_len: Option<u32>, rope_freqs: bool| {
            let mut w = one_layer("qwen2", 4);
            if let Some(k) = key_len {
                w.kv_u32("qwen2.attention.key_length", k)
                    .kv_u32("qwen2.attention.value_length", k);
            }
            if rope_freqs {
                w.tensor("rope_freqs.weight", &[8], 0, 2048);
            }
            let g = parse(&w.build(2048 + 32)).unwrap();
            llama_config(&g, &[])
        };
        let c = file(None, false).unwrap();
        assert_eq!(c["model_type"], "qwen2");
        assert_eq!(c["architectures"][0], "Qwen2ForCausalLM");
        assert_eq!(c["hidden_size"], 64);
        assert!(file(Some(16), false).is_ok());
        let e = file(Some(8), false).unwrap_err();
        assert!(e.to_string().contains("does not load there"), "{e}");
        let c = file(None, true).unwrap();
        assert!(!c.contains_key("rope_scaling"), "{c:?}");
    }

    /// The `qwen3` architecture: a Qwen3 config that always names its head size (the class reads
    /// 128 without one, llama.cpp hidden / heads), a wider one (heads x head size over the
    /// embedding length, as Qwen3-0.6B) included.
    #[test]
    fn qwen3_metadata_always_names_the_head_size() {
        let file = |key_len: Option<u32>| {
            let mut w = one_layer("qwen3", 4);
            if let Some(k) = key_len {
                w.kv_u32("qwen3.attention.key_length", k)
                    .kv_u32("qwen3.attention.value_length", k);
            }
            let g = parse(&w.build(2048)).unwrap();
            llama_config(&g, &[]).unwrap()
        };
        let c = file(None);
        assert_eq!(c["model_type"], "qwen3");
        assert_eq!(c["architectures"][0], "Qwen3ForCausalLM");
        assert_eq!(c["head_dim"], 16);
        assert_eq!(file(Some(16))["head_dim"], 16);
        assert_eq!(file(Some(32))["head_dim"], 32);
    }

    /// The `phi3` architecture: `rope.dimension_count` below the head size is Phi-3's partial
    /// rotary (an even part that transformers' `int(head_dim * factor)` gives back; another
    /// architecture, an odd part or more than the head is refused), and the sliding window
    /// llama.cpp reads and disables leaves no trace in the config.
    #[test]
    fn phi3_metadata_is_read_as_llama_cpp_s_phi3_graph() {
        let file = |arch: &str, heads: u32, rot: u32, window: u32| {
            let mut w = one_layer(arch, heads);
            w.kv_u32(&format!("{arch}.rope.dimension_count"), rot)
                .kv_u32(&format!("{arch}.attention.sliding_window"), window);
            let g = parse(&w.build(2048)).unwrap();
            llama_config(&g, &[])
        };
        let c = file("phi3", 4, 8, 2047).unwrap();
        assert_eq!(c["model_type"], "phi3");
        assert_eq!(c["partial_rotary_factor"], 0.5);
        assert!(c.keys().all(|k| !k.contains("sliding")), "{c:?}");
        assert!(
            !file("phi3", 4, 16, 0)
                .unwrap()
                .contains_key("partial_rotary_factor")
        );
        for (arch, heads, rot) in [("phi3", 4, 7), ("phi3", 4, 32), ("llama", 4, 8)] {
            assert!(file(arch, heads, rot, 0).is_err(), "{arch} {heads} {rot}");
        }
        // Another architecture's window is not ignored: it goes into the config by name.
        let c = file("llama", 4, 16, 2047).unwrap();
        assert!(
            c.contains_key("gguf.llama.attention.sliding_window"),
            "{c:?}"
        );
    }

    /// Every single-byte mutation of a small valid file (four values per byte) parses or is refused,
    /// never panics, and an accepted file keeps the invariants: tensors aligned, inside the data
    /// section, disjoint, exactly the size their type and shape imply.
    #[test]
    fn single_byte_mutations_never_panic_and_accepted_files_are_valid() {
        let mut w = W::default();
        w.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_u32("llama.embedding_length", 32)
            .kv_u32("llama.attention.head_count", 2)
            .kv_u32("general.alignment", 32)
            .tensor("token_embd.weight", &[32, 2], 8, 0)
            .tensor("output_norm.weight", &[32], 0, 96)
            .tensor("rope_freqs.weight", &[8], 0, 224);
        let full = w.build(256);
        assert!(parse(&full).is_ok());
        let mut accepted = 0;
        for i in 0..full.len() {
            for v in [0u8, 0xFF, 0x80, full[i].wrapping_add(1)] {
                let mut b = full.clone();
                b[i] = v;
                let Ok(g) = parse(&b) else { continue };
                accepted += 1;
                let _ = llama_config(&g, &b);
                assert!(
                    g.data_start % g.alignment == 0 || g.tensors.iter().all(|t| t.end == t.begin)
                );
                let mut spans: Vec<(usize, usize)> = Vec::new();
                for t in &g.tensors {
                    assert_eq!(t.begin % g.alignment, 0);
                    assert_eq!(checked_nbytes(t.dtype, &t.shape), Ok(t.end - t.begin));
                    assert!(g.data_start + t.end <= b.len());
                    if t.end > t.begin {
                        spans.push((t.begin, t.end));
                    }
                }
                spans.sort();
                for s in spans.windows(2) {
                    assert!(s[0].1 <= s[1].0, "overlap at byte {i} = {v}");
                }
            }
        }
        assert!(accepted > 0);
    }

    #[test]
    fn first_part_names_are_llama_cpp_s() {
        assert!(is_first_part_name("m-00001-of-00002.gguf"));
        assert!(is_first_part_name("-00001-of-00001.gguf"));
        for n in [
            "m-00002-of-00002.gguf",
            "m-00001-of-0002.gguf",
            "m-00001-of-00000.gguf",
            "m-00001-of-00002.gguf.part",
            "m-00001-of-0000x.gguf",
            "00001-of-00002.gguf",
            "model.gguf",
            "",
        ] {
            assert!(!is_first_part_name(n), "{n}");
        }
    }

    #[test]
    fn every_prefix_of_a_valid_file_is_refused_or_parsed_without_panic() {
        let mut w = W::default();
        w.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .tensor("a", &[4, 2], 0, 0)
            .tensor("b", &[32, 2], 8, 32);
        let full = w.build(100);
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
        assert!(parse(&full).is_ok());
    }
}
