//! The output layout of a conversion, computed completely in memory before the first byte is
//! written: which view tensor goes to which shard file at which offset, every shard's header bytes,
//! the index JSON and the total size, all with checked arithmetic.
//!
//! Sharding follows transformers' `save_pretrained` rule (huggingface/transformers
//! `modeling_utils.py`, `shard_checkpoint`/`split_torch_state_dict_into_shards`): tensors are taken
//! in order and a new shard starts when the next tensor would push the current one over the limit;
//! a tensor larger than the limit gets a shard of its own. Names are `model-0000K-of-0000N.safetensors`,
//! or a single `model.safetensors` when everything fits (`consolidated.safetensors` for the Meta
//! layout, whose config is a `params.json`).

use std::collections::BTreeMap;

use crate::checkpoint::config::ConfigSource;
use crate::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use crate::error::{Error, Result};
use crate::mapping::view::View;

/// Default `--max-shard-size`: 5 GB (transformers' default since 4.45 is 5GB too).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// File name of a checkpoint that fits in one file.
pub const SINGLE_NAME: &str = "model.safetensors";
/// The same for the Meta / mistral-inference layout (written with a `params.json`).
pub const META_SINGLE_NAME: &str = "consolidated.safetensors";

/// One tensor placed in an output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTensor {
    /// Index into `view.tensors`.
    pub view_index: usize,
    /// Output name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Start of the data relative to the data section.
    pub begin: usize,
    /// End of the data (exclusive).
    pub end: usize,
}

/// One output safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// File name (one path component).
    pub name: String,
    /// The 8-byte length prefix followed by the padded JSON header.
    pub header: Vec<u8>,
    /// Tensors in data order.
    pub tensors: Vec<PlannedTensor>,
    /// Total file size (`header.len()` + data).
    pub size: u64,
}

/// The complete output layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The safetensors files in order.
    pub files: Vec<PlannedFile>,
    /// `model.safetensors.index.json` text when there is more than one file.
    pub index: Option<String>,
    /// Bytes of tensor data over all files (`metadata.total_size`).
    pub total_data: u64,
    /// The `__metadata__` written into every file.
    pub metadata: Vec<(String, String)>,
}

impl Plan {
    /// Sum of the safetensors file sizes (headers included).
    pub fn total_file_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.size)
            .fold(0u64, u64::saturating_add)
    }

    /// The file holding a view tensor (by view index).
    pub fn file_of(&self, view_index: usize) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.tensors.iter().any(|t| t.view_index == view_index))
            .map(|f| f.name.as_str())
    }
}

/// The `__metadata__` to write: the source's first shard's metadata, with `format: pt` added when
/// it has none.
pub fn output_metadata(view: &View) -> Vec<(String, String)> {
    let mut meta = view
        .ckpt
        .shards
        .first()
        .and_then(|s| s.header.metadata.clone())
        .unwrap_or_default();
    if !meta.iter().any(|(k, _)| k == "format") {
        meta.insert(0, ("format".into(), "pt".into()));
    }
    meta
}

/// Compute the output layout of `view` with shards of at most `max_shard_size` bytes of data.
pub fn plan(view: &View, max_shard_size: u64) -> Result<Plan> {
    if max_shard_size == 0 {
        return Err(Error::usage("--max-shard-size must be larger than 0"));
    }
    let metadata = output_metadata(view);
    // Group view tensors into shards.
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new(); // (view index, nbytes)
    let mut current: Vec<(usize, usize)> = Vec::new();
    let mut current_bytes = 0u64;
    let mut total_data = 0u64;
    for (i, t) in view.tensors.iter().enumerate() {
        if !t.dtype.in_safetensors() {
            return Err(Error::unsupported(format!(
                "{} is a GGUF block-quantized type, which safetensors cannot store; ckpt converts F32, F16 and BF16 GGUF files (dequantizing would not give back the original weights)",
                t.dtype
            ))
            .tensor(&t.name)
            .file(&view.ckpt.path)
            .hint("convert an F32, F16 or BF16 GGUF, or use the original safetensors release"));
        }
        let n =
            checked_nbytes(t.dtype, &t.shape).map_err(|m| Error::bad_data(m).tensor(&t.name))?;
        let n64 = n as u64;
        total_data = total_data
            .checked_add(n64)
            .ok_or_else(|| Error::bad_data("total size overflows").tensor(&t.name))?;
        if !current.is_empty() && current_bytes.saturating_add(n64) > max_shard_size {
            groups.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push((i, n));
        current_bytes = current_bytes.saturating_add(n64);
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let count = groups.len();
    let mut files = Vec::with_capacity(count);
    let mut weight_map = BTreeMap::new();
    for (k, group) in groups.into_iter().enumerate() {
        let meta_layout = view
            .config
            .as_ref()
            .is_some_and(|c| c.source == Some(ConfigSource::ParamsJson));
        let name = if count == 1 && meta_layout {
            META_SINGLE_NAME.to_string()
        } else if count == 1 {
            SINGLE_NAME.to_string()
        } else {
            format!(
                "model-{:05}-of-{:05}.safetensors",
                k.saturating_add(1),
                count
            )
        };
        let mut tensors = Vec::with_capacity(group.len());
        let mut off = 0usize;
        for (vi, n) in group {
            let t = view
                .tensors
                .get(vi)
                .ok_or_else(|| Error::internal("plan refers to a missing view tensor"))?;
            let end = off
                .checked_add(n)
                .ok_or_else(|| Error::bad_data("shard size overflows").tensor(&t.name))?;
            tensors.push(PlannedTensor {
                view_index: vi,
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                begin: off,
                end,
            });
            weight_map.insert(t.name.clone(), name.clone());
            off = end;
        }
        let entries: Vec<(String, Dtype, Vec<usize>, usize, usize)> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.begin, t.end))
            .collect();
        let header = serialize_header(Some(&metadata), &entries)?;
        let size = (header.len() as u64)
            .checked_add(off as u64)
            .ok_or_else(|| Error::bad_data("file size overflows"))?;
        files.push(PlannedFile {
            name,
            header,
            tensors,
            size,
        });
    }
    let index = (count > 1).then(|| index_json(total_data, &weight_map));
    Ok(Plan {
        files,
        index,
        total_data,
        metadata,
    })
}

/// The index as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
pub fn index_json(total_size: u64, weight_map: &BTreeMap<String, String>) -> String {
    let mut wm = serde_json::Map::new();
    for (k, v) in weight_map {
        wm.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let v = serde_json::json!({
        "metadata": {"total_size": total_size},
        "weight_map": serde_json::Value::Object(wm),
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Parse a human size: `5GB`, `500MB`, `2GiB`, `1e9`, `123` (bytes). Decimal units are powers of
/// 1000, binary units (`KiB`, `MiB`, `GiB`, `TiB`) powers of 1024, as transformers reads them.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let bad = || {
        Error::usage(format!(
            "invalid size `{}`: use a number of bytes or a unit like 500MB, 5GB, 2GiB",
            crate::error::escape(s)
        ))
    };
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.trim();
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = v * mult;
    if !bytes.is_finite() || !(1.0..=1.8e19).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB").ok(), Some(5_000_000_000));
        assert_eq!(parse_size("500MB").ok(), Some(500_000_000));
        assert_eq!(parse_size("2GiB").ok(), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1e9").ok(), Some(1_000_000_000));
        assert_eq!(parse_size("1.5e3kb").ok(), Some(1_500_000));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-3MB").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn index_is_sorted_with_two_space_indent() {
        let mut wm = BTreeMap::new();
        wm.insert("b".to_string(), "f2".to_string());
        wm.insert("a".to_string(), "f1".to_string());
        let s = index_json(10, &wm);
        assert_eq!(
            s,
            "{\n  \"metadata\": {\n    \"total_size\": 10\n  },\n  \"weight_map\": {\n    \"a\": \"f1\",\n    \"b\": \"f2\"\n  }\n}\n"
        );
    }
}
