//! Parsing and validating one safetensors header, before any tensor data is touched.
//!
//! Mirrors the checks of `safetensors::SafeTensors::read_metadata` (huggingface/safetensors
//! `src/tensor.rs`) and adds what that crate does not check: duplicate tensor names (it keeps the last
//! silently), empty names or names with control characters, a tensor named `__metadata__`, rank and
//! count limits, unknown per-tensor fields (reported), and overflow-safe arithmetic on every offset
//! (the crate's `8 + n + buffer_end` can overflow, RELIABILITY.md A28). Errors name the tensor and say
//! which of the many ways a file can be broken this one is (truncated, trailing bytes, gap, overlap).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::error::{Error, ErrorKind, Result, escape};

/// A tensor's element type: the safetensors dtypes (same variant names and spellings as
/// `safetensors::Dtype`, so code written against that enum keeps compiling) plus ggml's types that
/// GGUF files use, most of them block-quantized (a block of 32 or 256 elements stored as a fixed
/// number of bytes: scales and packed integers). Safetensors headers only ever yield the former
/// ([`parse_dtype`]); the GGUF reader yields both ([`crate::checkpoint::gguf`]).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// Boolean.
    BOOL,
    /// MXF4 (safetensors).
    F4,
    /// MXF6 E2M3.
    F6_E2M3,
    /// MXF6 E3M2.
    F6_E3M2,
    /// Unsigned byte.
    U8,
    /// Signed byte.
    I8,
    /// FP8 E5M2.
    F8_E5M2,
    /// FP8 E4M3.
    F8_E4M3,
    /// FP8 E8M0.
    F8_E8M0,
    /// FP8 E4M3 FNUZ.
    F8_E4M3FNUZ,
    /// FP8 E5M2 FNUZ.
    F8_E5M2FNUZ,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 16-bit integer.
    U16,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer.
    U32,
    /// IEEE binary32.
    F32,
    /// Complex with f32 parts.
    C64,
    /// IEEE binary64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 64-bit integer.
    U64,
    /// ggml Q4_0: 32 elements, f16 scale + 16 bytes of 4-bit values (offset 8).
    Q4_0,
    /// ggml Q4_1: 32 elements, f16 scale and minimum + 16 bytes of 4-bit values.
    Q4_1,
    /// ggml Q5_0: 32 elements, f16 scale, 32 high bits, 16 bytes of low nibbles (offset 16).
    Q5_0,
    /// ggml Q5_1: 32 elements, f16 scale and minimum, 32 high bits, 16 bytes of low nibbles.
    Q5_1,
    /// ggml Q8_0: 32 elements, f16 scale + 32 signed bytes.
    Q8_0,
    /// ggml Q8_1: 32 elements, f32 scale and sum + 32 signed bytes.
    Q8_1,
    /// ggml Q2_K: 256-element super-block.
    Q2_K,
    /// ggml Q3_K: 256-element super-block.
    Q3_K,
    /// ggml Q4_K: 256-element super-block.
    Q4_K,
    /// ggml Q5_K: 256-element super-block.
    Q5_K,
    /// ggml Q6_K: 256-element super-block.
    Q6_K,
    /// ggml Q8_K: 256-element super-block (an intermediate type, rare in files).
    Q8_K,
    /// ggml IQ2_XXS.
    IQ2_XXS,
    /// ggml IQ2_XS.
    IQ2_XS,
    /// ggml IQ3_XXS.
    IQ3_XXS,
    /// ggml IQ1_S.
    IQ1_S,
    /// ggml IQ4_NL.
    IQ4_NL,
    /// ggml IQ3_S.
    IQ3_S,
    /// ggml IQ2_S.
    IQ2_S,
    /// ggml IQ4_XS.
    IQ4_XS,
    /// ggml IQ1_M.
    IQ1_M,
    /// ggml TQ1_0.
    TQ1_0,
    /// ggml TQ2_0.
    TQ2_0,
    /// ggml MXFP4 (GGUF's block layout, not safetensors' `F4`).
    MXFP4,
}

impl Dtype {
    /// `(elements, bytes)` of one block for block-quantized types, `None` for element types.
    pub fn block(&self) -> Option<(usize, usize)> {
        const K: usize = 256;
        Some(match self {
            Dtype::Q4_0 => (32, 18),
            Dtype::Q4_1 => (32, 20),
            Dtype::Q5_0 => (32, 22),
            Dtype::Q5_1 => (32, 24),
            Dtype::Q8_0 => (32, 34),
            Dtype::Q8_1 => (32, 40),
            Dtype::Q2_K => (K, 84),
            Dtype::Q3_K => (K, 110),
            Dtype::Q4_K => (K, 144),
            Dtype::Q5_K => (K, 176),
            Dtype::Q6_K => (K, 210),
            Dtype::Q8_K => (K, 292),
            Dtype::IQ2_XXS => (K, 66),
            Dtype::IQ2_XS => (K, 74),
            Dtype::IQ3_XXS => (K, 98),
            Dtype::IQ1_S => (K, 50),
            Dtype::IQ4_NL => (32, 18),
            Dtype::IQ3_S => (K, 110),
            Dtype::IQ2_S => (K, 82),
            Dtype::IQ4_XS => (K, 136),
            Dtype::IQ1_M => (K, 56),
            Dtype::TQ1_0 => (K, 54),
            Dtype::TQ2_0 => (K, 66),
            Dtype::MXFP4 => (32, 17),
            _ => return None,
        })
    }

    /// Whether this is a block-quantized (GGUF) type.
    pub fn is_block(&self) -> bool {
        self.block().is_some()
    }

    /// Size in bits of one element. For block types, the bits of a block divided by its elements,
    /// rounded down (a block type has no whole-element size: use [`checked_nbytes`]).
    pub fn bitsize(&self) -> usize {
        if let Some((n, b)) = self.block() {
            return b.saturating_mul(8).checked_div(n).unwrap_or(0);
        }
        match self {
            Dtype::F4 => 4,
            Dtype::F6_E3M2 | Dtype::F6_E2M3 => 6,
            Dtype::BOOL | Dtype::U8 | Dtype::I8 => 8,
            Dtype::F8_E5M2 | Dtype::F8_E4M3 | Dtype::F8_E8M0 => 8,
            Dtype::F8_E4M3FNUZ | Dtype::F8_E5M2FNUZ => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
            _ => 0,
        }
    }

    /// The name as written in headers and reports (`F32`, `BF16`, `Q4_K`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6_E2M3 => "F6_E2M3",
            Dtype::F6_E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::F8_E8M0 => "F8_E8M0",
            Dtype::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            Dtype::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
            Dtype::Q4_0 => "Q4_0",
            Dtype::Q4_1 => "Q4_1",
            Dtype::Q5_0 => "Q5_0",
            Dtype::Q5_1 => "Q5_1",
            Dtype::Q8_0 => "Q8_0",
            Dtype::Q8_1 => "Q8_1",
            Dtype::Q2_K => "Q2_K",
            Dtype::Q3_K => "Q3_K",
            Dtype::Q4_K => "Q4_K",
            Dtype::Q5_K => "Q5_K",
            Dtype::Q6_K => "Q6_K",
            Dtype::Q8_K => "Q8_K",
            Dtype::IQ2_XXS => "IQ2_XXS",
            Dtype::IQ2_XS => "IQ2_XS",
            Dtype::IQ3_XXS => "IQ3_XXS",
            Dtype::IQ1_S => "IQ1_S",
            Dtype::IQ4_NL => "IQ4_NL",
            Dtype::IQ3_S => "IQ3_S",
            Dtype::IQ2_S => "IQ2_S",
            Dtype::IQ4_XS => "IQ4_XS",
            Dtype::IQ1_M => "IQ1_M",
            Dtype::TQ1_0 => "TQ1_0",
            Dtype::TQ2_0 => "TQ2_0",
            Dtype::MXFP4 => "MXFP4",
        }
    }

    /// Whether safetensors can store this dtype (every type but ggml's).
    pub fn in_safetensors(&self) -> bool {
        DTYPE_NAMES.contains(&self.name())
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<safetensors::Dtype> for Dtype {
    fn from(d: safetensors::Dtype) -> Dtype {
        parse_dtype(&d.to_string()).unwrap_or(Dtype::U8)
    }
}

/// Largest header accepted, in bytes (the safetensors crate's own cap).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most tensors accepted in one file.
pub const MAX_TENSORS: usize = 1_000_000;
/// Longest tensor name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Highest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Most `__metadata__` entries accepted.
pub const MAX_METADATA_ENTRIES: usize = 10_000;

/// One tensor as declared by a header, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTensor {
    /// The tensor's name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Byte range relative to the start of the data section: `[begin, end)`.
    pub begin: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    /// Fields of the entry other than dtype/shape/data_offsets (ignored, reported by inspect).
    pub unknown_fields: Vec<String>,
}

impl HeaderTensor {
    /// A tensor of another container (GGUF, a PyTorch archive) at `[begin, end)` of its data
    /// section: no safetensors fields of its own.
    pub fn located(name: &str, dtype: Dtype, shape: &[usize], begin: usize, end: usize) -> Self {
        HeaderTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            begin,
            end,
            unknown_fields: Vec::new(),
        }
    }
}

/// A parsed and validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Length of the JSON header in bytes (the 8-byte prefix's value).
    pub header_len: usize,
    /// Tensors in data order (sorted by `begin`).
    pub tensors: Vec<HeaderTensor>,
    /// `__metadata__` entries in file order (`None` when absent or `null`).
    pub metadata: Option<Vec<(String, String)>>,
    /// Size of the data section in bytes.
    pub data_len: usize,
}

impl Header {
    /// Offset of the data section from the start of the file (`8 + header_len`).
    pub fn data_start(&self) -> usize {
        // header_len <= MAX_HEADER_BYTES, so this cannot overflow.
        self.header_len.saturating_add(8)
    }
}

/// Size in bits of one element of `dtype`.
pub fn dtype_bits(dtype: Dtype) -> usize {
    dtype.bitsize()
}

/// The dtype's name as written in headers (`F32`, `BF16`, ...).
pub fn dtype_name(dtype: Dtype) -> String {
    format!("{dtype}")
}

/// All dtype names the format defines, for error messages.
pub const DTYPE_NAMES: &[&str] = &[
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

/// Parse a dtype name exactly as headers spell it.
pub fn parse_dtype(s: &str) -> Option<Dtype> {
    if !DTYPE_NAMES.contains(&s) {
        return None;
    }
    ALL_DTYPES.iter().copied().find(|d| d.name() == s)
}

/// Every dtype, safetensors' first.
pub const ALL_DTYPES: &[Dtype] = &[
    Dtype::BOOL,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
    Dtype::Q4_0,
    Dtype::Q4_1,
    Dtype::Q5_0,
    Dtype::Q5_1,
    Dtype::Q8_0,
    Dtype::Q8_1,
    Dtype::Q2_K,
    Dtype::Q3_K,
    Dtype::Q4_K,
    Dtype::Q5_K,
    Dtype::Q6_K,
    Dtype::Q8_K,
    Dtype::IQ2_XXS,
    Dtype::IQ2_XS,
    Dtype::IQ3_XXS,
    Dtype::IQ1_S,
    Dtype::IQ4_NL,
    Dtype::IQ3_S,
    Dtype::IQ2_S,
    Dtype::IQ4_XS,
    Dtype::IQ1_M,
    Dtype::TQ1_0,
    Dtype::TQ2_0,
    Dtype::MXFP4,
];

/// Number of elements of a shape, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Bytes a tensor of `shape` and `dtype` occupies; an error message on overflow or a sub-byte dtype
/// whose element count does not end on a byte boundary.
pub fn checked_nbytes(dtype: Dtype, shape: &[usize]) -> std::result::Result<usize, String> {
    let n = checked_numel(shape)
        .ok_or_else(|| format!("shape {shape:?} overflows the element count"))?;
    if let Some((elems, bytes)) = dtype.block() {
        // Rows are whole blocks: the innermost dimension is a multiple of the block.
        let inner = shape.last().copied().unwrap_or(1);
        if !inner.is_multiple_of(elems) {
            return Err(format!(
                "shape {shape:?} of {dtype}: the innermost dimension {inner} is not a multiple of the {elems}-element block"
            ));
        }
        return n
            .checked_div(elems)
            .and_then(|blocks| blocks.checked_mul(bytes))
            .ok_or_else(|| format!("shape {shape:?} of {dtype} overflows the byte count"));
    }
    let bits = n
        .checked_mul(dtype_bits(dtype))
        .ok_or_else(|| format!("shape {shape:?} of {dtype} overflows the byte count"))?;
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of {dtype} is {bits} bits, which does not end on a byte boundary"
        ));
    }
    Ok(bits / 8)
}

/// Check a tensor name taken from a file: non-empty, bounded, no control characters.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty tensor name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "tensor name is {} bytes, over the limit of {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "tensor name \"{}\" contains control characters",
            escape(name)
        ));
    }
    Ok(())
}

/// Read the 8-byte length prefix and check it against the file size before anything is allocated.
/// `file_len` is the whole file's size. Returns the header length.
pub fn check_prefix(prefix: &[u8], file_len: u64) -> Result<usize> {
    let bytes: [u8; 8] = match prefix.get(..8).and_then(|s| s.try_into().ok()) {
        Some(b) => b,
        None => {
            return Err(Error::bad_data(format!(
                "file is {file_len} bytes; a safetensors file starts with an 8-byte header length"
            )));
        }
    };
    let n = u64::from_le_bytes(bytes);
    let available = file_len.saturating_sub(8);
    if n > MAX_HEADER_BYTES {
        return Err(Error::bad_data(format!(
            "header length {n} is over the limit of {MAX_HEADER_BYTES} bytes (file is {file_len} bytes)"
        )));
    }
    if n > available {
        return Err(Error::bad_data(format!(
            "header claims {n} bytes but only {available} follow; the file is truncated"
        ))
        .hint("re-download the file"));
    }
    if n < 2 {
        return Err(Error::bad_data(format!(
            "header length {n} is too small for a JSON object"
        )));
    }
    usize::try_from(n)
        .map_err(|_| Error::bad_data(format!("header length {n} does not fit in memory")))
}

/// Parse and validate the header bytes (`header` = the `n` bytes after the prefix), given the total
/// file length. Every tensor's byte range is checked to lie inside the file and the ranges to tile the
/// data section exactly.
pub fn parse_header(header: &[u8], file_len: u64) -> Result<Header> {
    let header_len = header.len();
    if header.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(Error::bad_data("header starts with a UTF-8 BOM before '{'"));
    }
    let text = std::str::from_utf8(header).map_err(|e| {
        Error::bad_data(format!(
            "header is not UTF-8 (invalid byte at file offset {})",
            e.valid_up_to().saturating_add(8)
        ))
    })?;
    // NUL padding is a known real-world defect (RELIABILITY.md A6): name it rather than report a
    // generic "trailing characters".
    let trimmed = text.trim_end_matches('\0');
    if trimmed.len() != text.len() {
        let pad = text.len().saturating_sub(trimmed.len());
        return Err(Error::bad_data(format!(
            "header padded with {pad} NUL bytes at file offset {}; the format allows spaces (0x20) only",
            trimmed.len().saturating_add(8)
        )));
    }
    if !text.trim_start().starts_with('{') {
        return Err(Error::bad_data("header must be a JSON object"));
    }
    let raw: RawHeader = serde_json::from_str(text)
        .map_err(|e| Error::bad_data(format!("header is not valid: {e}")).with_source(e))?;

    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, entry) in raw.tensors {
        validate_name(&name).map_err(Error::bad_data)?;
        let dtype = parse_dtype(&entry.dtype).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "unsupported dtype \"{}\" (the format defines: {})",
                    escape(&entry.dtype),
                    DTYPE_NAMES.join(", ")
                ),
            )
            .tensor(&name)
        })?;
        if entry.shape.len() > MAX_RANK {
            return Err(Error::bad_data(format!(
                "rank {} is over the limit of {MAX_RANK}",
                entry.shape.len()
            ))
            .tensor(&name));
        }
        let shape = entry
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Error::bad_data("a dimension does not fit in memory").tensor(&name))?;
        let [begin, end] = match entry.data_offsets.as_slice() {
            [b, e] => [*b, *e],
            other => {
                return Err(Error::bad_data(format!(
                    "field `data_offsets` must hold 2 numbers, found {}",
                    other.len()
                ))
                .tensor(&name));
            }
        };
        if end < begin {
            return Err(Error::bad_data(format!(
                "data_offsets [{begin}, {end}] end before they begin"
            ))
            .tensor(&name));
        }
        let (begin, end) = match (usize::try_from(begin), usize::try_from(end)) {
            (Ok(b), Ok(e)) => (b, e),
            _ => {
                return Err(Error::bad_data(format!(
                    "data_offsets [{begin}, {end}] do not fit in memory"
                ))
                .tensor(&name));
            }
        };
        let nbytes = checked_nbytes(dtype, &shape).map_err(|m| Error::bad_data(m).tensor(&name))?;
        let span = end.saturating_sub(begin);
        if nbytes != span {
            return Err(Error::bad_data(format!(
                "shape {shape:?} x {dtype} = {nbytes} bytes but data_offsets [{begin}, {end}] span {span}"
            ))
            .tensor(&name));
        }
        tensors.push(HeaderTensor {
            name,
            dtype,
            shape,
            begin,
            end,
            unknown_fields: entry.unknown,
        });
    }

    // Tile check: sorted by (begin, end), each begins where the previous ended. Zero-size tensors may
    // share an offset.
    tensors.sort_by_key(|t| (t.begin, t.end));
    let mut cursor = 0usize;
    let mut prev: Option<&HeaderTensor> = None;
    for t in &tensors {
        if t.begin > cursor {
            let gap = t.begin.saturating_sub(cursor);
            return Err(Error::bad_data(format!(
                "{gap} unreferenced bytes at data offset {cursor} (before this tensor)"
            ))
            .tensor(&t.name));
        }
        if t.begin < cursor {
            let other = prev.map(|p| p.name.as_str()).unwrap_or("");
            return Err(Error::bad_data(format!(
                "byte range [{}, {}) overlaps tensor \"{}\" (which ends at {cursor})",
                t.begin,
                t.end,
                escape(other)
            ))
            .tensor(&t.name));
        }
        cursor = t.end;
        prev = Some(t);
    }
    let data_len = cursor;

    // Exact end of file, with checked arithmetic (A28: the reference's unchecked sum panics).
    let expected = (data_len as u64)
        .checked_add(header_len as u64)
        .and_then(|v| v.checked_add(8));
    match expected {
        Some(exp) if exp == file_len => {}
        Some(exp) if exp < file_len => {
            return Err(Error::bad_data(format!(
                "{} unexpected bytes after the last tensor (data ends at file offset {exp}, file is {file_len} bytes)",
                file_len.saturating_sub(exp)
            )));
        }
        _ => {
            let data_start = (header_len as u64).saturating_add(8);
            let cut = tensors
                .iter()
                .find(|t| data_start.saturating_add(t.end as u64) > file_len);
            let need = expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string());
            let mut err = Error::bad_data(format!(
                "the data section needs the file to be {need} bytes but it is {file_len}; the file is truncated"
            ))
            .hint("re-download the file");
            if let Some(t) = cut {
                err = err.tensor(&t.name);
            }
            return Err(err);
        }
    }
    Ok(Header {
        header_len,
        tensors,
        metadata: raw.metadata,
        data_len,
    })
}

/// Serialise a header for writing: `__metadata__` first, then tensors in the given order, padded with
/// spaces so that the data section starts at a multiple of 8. Returns the full prefix + header bytes.
pub fn serialize_header(
    metadata: Option<&[(String, String)]>,
    tensors: &[(String, Dtype, Vec<usize>, usize, usize)],
) -> Result<Vec<u8>> {
    let mut obj = serde_json::Map::new();
    if let Some(meta) = metadata {
        let mut m = serde_json::Map::new();
        for (k, v) in meta {
            m.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        obj.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    for (name, dtype, shape, begin, end) in tensors {
        if name == "__metadata__" {
            return Err(Error::bad_data("a tensor cannot be named `__metadata__`").tensor(name));
        }
        if obj.contains_key(name) {
            return Err(Error::bad_data("duplicate tensor name in output").tensor(name));
        }
        obj.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype_name(*dtype), "shape": shape, "data_offsets": [begin, end]}),
        );
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(obj))
        .map_err(|e| Error::internal(format!("cannot serialise header: {e}")))?;
    let pad = json.len().next_multiple_of(8).saturating_sub(json.len());
    json.resize(json.len().saturating_add(pad), b' ');
    let mut out = Vec::with_capacity(json.len().saturating_add(8));
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

struct RawHeader {
    tensors: Vec<(String, RawEntry)>,
    metadata: Option<Vec<(String, String)>>,
}

struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: Vec<u64>,
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
        let mut tensors: Vec<(String, RawEntry)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut metadata = None;
        let mut metadata_seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                if metadata_seen {
                    return Err(de::Error::custom("`__metadata__` appears twice"));
                }
                metadata_seen = true;
                let m: Option<MetadataMap> = map.next_value()?;
                metadata = m.map(|m| m.0);
                continue;
            }
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "duplicate tensor name \"{}\"",
                    escape(&key)
                )));
            }
            if tensors.len() >= MAX_TENSORS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_TENSORS} tensors in one header"
                )));
            }
            let entry: EntryWrap = map
                .next_value_seed(EntrySeed(&key))
                .map_err(|e| de::Error::custom(format!("tensor \"{}\": {e}", escape(&key))))?;
            tensors.push((key, entry.0));
        }
        Ok(RawHeader { tensors, metadata })
    }
}

struct MetadataMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for MetadataMap {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`__metadata__` as an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<MetadataMap, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(x, _)| *x == k) {
                        return Err(de::Error::custom(format!(
                            "`__metadata__` has the key \"{}\" twice",
                            escape(&k)
                        )));
                    }
                    if out.len() >= MAX_METADATA_ENTRIES {
                        return Err(de::Error::custom(format!(
                            "`__metadata__` has more than {MAX_METADATA_ENTRIES} entries"
                        )));
                    }
                    let v: String = map.next_value().map_err(|_| {
                        de::Error::custom(format!(
                            "`__metadata__` value of \"{}\" must be a string",
                            escape(&k)
                        ))
                    })?;
                    out.push((k, v));
                }
                Ok(MetadataMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct EntryWrap(RawEntry);
struct EntrySeed<'a>(#[allow(dead_code)] &'a str);

impl<'de> de::DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = EntryWrap;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<EntryWrap, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EntryWrap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object {dtype, shape, data_offsets}")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<EntryWrap, A::Error> {
                let mut dtype = None;
                let mut shape = None;
                let mut offsets = None;
                let mut unknown = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "dtype" if dtype.is_none() => {
                            dtype =
                                Some(map.next_value::<String>().map_err(|_| {
                                    de::Error::custom("field `dtype` must be a string")
                                })?)
                        }
                        "shape" if shape.is_none() => {
                            shape = Some(map.next_value::<Vec<u64>>().map_err(|_| {
                                de::Error::custom(
                                    "field `shape` must be an array of unsigned integers",
                                )
                            })?)
                        }
                        "data_offsets" if offsets.is_none() => {
                            offsets = Some(map.next_value::<Vec<u64>>().map_err(|_| {
                                de::Error::custom(
                                    "field `data_offsets` must be an array of unsigned integers",
                                )
                            })?)
                        }
                        "dtype" | "shape" | "data_offsets" => {
                            return Err(de::Error::custom(format!("field `{k}` appears twice")));
                        }
                        _ => {
                            // Parsed (not skipped with `IgnoredAny`, which serde_json skips
                            // iteratively at any depth) so the recursion limit applies as in the
                            // reference reader: 10,000 nested `[` are rejected (A17).
                            map.next_value::<serde_json::Value>()?;
                            if unknown.len() < 16 {
                                unknown.push(k);
                            }
                        }
                    }
                }
                Ok(EntryWrap(RawEntry {
                    dtype: dtype.ok_or_else(|| de::Error::missing_field("dtype"))?,
                    shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
                    data_offsets: offsets
                        .ok_or_else(|| de::Error::missing_field("data_offsets"))?,
                    unknown,
                }))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn parse(bytes: &[u8]) -> Result<Header> {
        let n = check_prefix(bytes, bytes.len() as u64)?;
        parse_header(&bytes[8..8 + n], bytes.len() as u64)
    }

    #[test]
    fn valid_header_parses() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
        let hdr = parse(&file(h, 16)).unwrap();
        assert_eq!(hdr.tensors[0].name, "a");
        assert_eq!(hdr.tensors[1].name, "b");
        assert_eq!(hdr.metadata, Some(vec![("format".into(), "pt".into())]));
        assert_eq!(hdr.data_len, 16);
    }

    #[test]
    fn each_error_kind_is_named() {
        let cases: &[(&str, usize, &str)] = &[
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "duplicate tensor name \"a\"",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                8,
                "= 12 bytes but data_offsets",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                12,
                "unreferenced bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                4,
                "end before they begin",
            ),
            (
                r#"{"a":{"dtype":"Q4_0","shape":[1],"data_offsets":[0,4]}}"#,
                4,
                "unsupported dtype \"Q4_0\"",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,4]}}"#,
                4,
                "field `shape` must be",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1]}}"#,
                0,
                "missing field `data_offsets`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,5]}}"#,
                4,
                "must hold 2 numbers",
            ),
            (
                r#"{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
                "empty tensor name",
            ),
            (
                r#"{"a\u0007":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                4,
                "control characters",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
                "overflows",
            ),
            (
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                1,
                "byte boundary",
            ),
            (r#"{"__metadata__":{"format":1}}"#, 0, "must be a string"),
            (r#"[]"#, 0, "JSON object"),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                5,
                "1 unexpected bytes after the last tensor",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                7,
                "truncated",
            ),
        ];
        for (h, len, want) in cases {
            let err = parse(&file(h, *len)).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{h}: got {err}, want {want}"
            );
        }
    }

    #[test]
    fn offsets_near_u64_max_do_not_overflow() {
        // RELIABILITY.md A28: contiguous tensors whose ends sum to 2^64-1.
        let big = (1u64 << 61) - 1;
        let mut parts = Vec::new();
        let mut begin = 0u64;
        for i in 0..9 {
            let len = if i < 8 { big } else { u64::MAX - 8 * big };
            let end = begin.wrapping_add(len);
            parts.push(format!(
                r#""t{i}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{begin},{end}]}}"#
            ));
            begin = end;
        }
        let h = format!("{{{}}}", parts.join(","));
        let err = parse(&file(&h, 0)).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn prefix_errors() {
        assert!(
            check_prefix(&[1, 2, 3], 3)
                .unwrap_err()
                .to_string()
                .contains("8-byte header length")
        );
        let huge = u64::MAX.to_le_bytes();
        assert!(
            check_prefix(&huge, 100)
                .unwrap_err()
                .to_string()
                .contains("over the limit")
        );
        let n = 1000u64.to_le_bytes();
        assert!(
            check_prefix(&n, 16)
                .unwrap_err()
                .to_string()
                .contains("only 8 follow")
        );
    }

    #[test]
    fn nul_padding_and_bom_are_named() {
        let mut h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_string();
        h.push_str("\0\0\0");
        assert!(
            parse(&file(&h, 4))
                .unwrap_err()
                .to_string()
                .contains("3 NUL bytes")
        );
        let bom = format!(
            "\u{feff}{}",
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        );
        assert!(
            parse(&file(&bom, 4))
                .unwrap_err()
                .to_string()
                .contains("BOM")
        );
    }

    #[test]
    fn padding_zero_size_and_scalars_are_accepted() {
        let h = r#"  {"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"z":{"dtype":"F16","shape":[2,0],"data_offsets":[4,4]},"y":{"dtype":"F16","shape":[0],"data_offsets":[4,4]}}    "#;
        let hdr = parse(&file(h, 4)).unwrap();
        assert_eq!(hdr.tensors.len(), 3);
    }

    #[test]
    fn serialize_round_trips_and_aligns() {
        let t = vec![
            ("w".to_string(), Dtype::F32, vec![2usize], 0usize, 8usize),
            ("b".to_string(), Dtype::BF16, vec![3], 8, 14),
        ];
        let meta = vec![("format".to_string(), "pt".to_string())];
        let bytes = serialize_header(Some(&meta), &t).unwrap();
        assert_eq!(bytes.len() % 8, 0);
        let mut f = bytes.clone();
        f.extend(std::iter::repeat_n(0u8, 14));
        let hdr = parse(&f).unwrap();
        assert_eq!(hdr.tensors.len(), 2);
        assert_eq!(hdr.metadata, Some(meta));
        // Same validation as the reference crate accepts it.
        assert!(safetensors::SafeTensors::read_metadata(&f).is_ok());
    }
}
