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
//!
//! Each file's JSON header is padded with spaces (the format's padding byte) so that its tensor data
//! sits at offsets congruent mod [`ALIGN`] (4096) with where it is read from in the source: then
//! `copy_file_range` copies whole pages, and on XFS and btrfs can share extents instead of copying.
//! In a rename that is every tensor; when a file gathers several source files or reorders them, the
//! residue covering the most bytes is kept; below [`MIN_ALIGNED_BYTES`] the header is padded to 8
//! bytes only, as the reference writer does. The padding depends only on the source layout, so the
//! output stays deterministic.

use std::collections::BTreeMap;

use crate::checkpoint::config::ConfigSource;
use crate::checkpoint::header::MAX_HEADER_BYTES;
use crate::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use crate::error::{Error, Result};
use crate::mapping::view::{Segment, View};

/// Default `--max-shard-size`: 5 GB (transformers' default since 4.45 is 5GB too).
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// File name of a checkpoint that fits in one file.
pub const SINGLE_NAME: &str = "model.safetensors";
/// The same for the Meta / mistral-inference layout (written with a `params.json`).
pub const META_SINGLE_NAME: &str = "consolidated.safetensors";

/// Page size the output's data offsets are kept congruent to (modulo) with the source's, so that
/// `copy_file_range` can share extents (reflink on XFS / btrfs) and copies whole pages elsewhere.
/// 4 KiB is the block size of every common Linux filesystem and the x86-64 page size.
pub const ALIGN: u64 = 4096;
/// Least amount of tensor data that must share one residue with the source before an output header
/// is padded for it: below this, sharing extents saves nothing worth a padded header, and small
/// outputs keep the reference writer's layout (header padded to 8 bytes only).
pub const MIN_ALIGNED_BYTES: u64 = 1 << 20;
/// Most source runs looked at per output file when choosing the padding (a strided PyTorch tensor
/// can be millions of element runs; the choice needs only the big ones, which come first).
const MAX_ALIGN_RUNS: usize = 1 << 16;

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
    let source_shards = source_shard_of_each(view);
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
        // A new source file starts a new output file when the output keeps the source's files.
        let new_source = source_shards
            .as_ref()
            .is_some_and(|s| i > 0 && s.get(i) != s.get(i.saturating_sub(1)));
        if !current.is_empty() && (new_source || current_bytes.saturating_add(n64) > max_shard_size)
        {
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
        let header = match source_residue(view, &tensors) {
            Some(r) => pad_header(header, r),
            None => header,
        };
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

/// The source shard of each view tensor, when the output can keep the source's files as they are:
/// the source is more than one safetensors file, every view tensor reads rows of one contiguous
/// physical tensor, and the tensors come in order of source file. (PyTorch shards are gathered
/// as before: converting them is a change of format, and their data is not page-aligned.) A renamed checkpoint then keeps its shard
/// boundaries (as a user renaming before an upload expects, with the transformers file names),
/// and each output file is one run of one source file, so every tensor's data stays at an offset
/// congruent mod [`ALIGN`] with its source and the copy can share or page-align extents.
/// `--max-shard-size` still splits a source file larger than it.
fn source_shard_of_each(view: &View) -> Option<Vec<usize>> {
    if view.ckpt.shards.len() < 2 || view.ckpt.container() != "safetensors" {
        return None;
    }
    let mut out = Vec::with_capacity(view.tensors.len());
    for t in &view.tensors {
        let mut shard = None;
        for seg in &t.segments {
            let Segment::Rows { tensor, .. } = seg else {
                return None;
            };
            let info = view.ckpt.tensors.get(*tensor)?;
            if !matches!(
                info.placement,
                crate::checkpoint::extent::Placement::Contiguous
            ) || shard.is_some_and(|s| s != info.shard)
            {
                return None;
            }
            shard = Some(info.shard);
        }
        let shard = shard?;
        if out.last().is_some_and(|&last| last > shard) {
            return None;
        }
        out.push(shard);
    }
    Some(out)
}

/// The header length (mod [`ALIGN`]) that puts the most tensor data of this output file at an
/// offset congruent mod [`ALIGN`] with where it is read from in its source file, if that is at least
/// [`MIN_ALIGNED_BYTES`] and 8-byte aligned. In the common rename case (an output file that is one
/// contiguous run of one source file, in the same order) every byte then shares one residue; when an
/// output file gathers several source files (or reorders, concatenates, adds zeros), the residue
/// covering the most bytes wins (ties: the smallest), which keeps the choice deterministic.
fn source_residue(view: &View, tensors: &[PlannedTensor]) -> Option<u64> {
    let mut by_residue: BTreeMap<u64, u64> = BTreeMap::new();
    let mut runs = 0usize;
    'tensors: for t in tensors {
        let vt = view.tensors.get(t.view_index)?;
        let mut out = t.begin as u64;
        for seg in &vt.segments {
            match seg {
                Segment::Zeros { bytes } => out = out.saturating_add(*bytes as u64),
                Segment::Rows { .. } => {
                    let walked = view.segment_runs(seg, &mut |_, src_off, len| {
                        runs += 1;
                        if runs > MAX_ALIGN_RUNS {
                            return Err(Error::internal("enough runs"));
                        }
                        // 2^64 is a multiple of ALIGN, so wrapping arithmetic keeps the residue.
                        let r = src_off.wrapping_sub(out) % ALIGN;
                        let e = by_residue.entry(r).or_default();
                        *e = e.saturating_add(len as u64);
                        out = out.saturating_add(len as u64);
                        Ok(())
                    });
                    if walked.is_err() {
                        break 'tensors;
                    }
                }
            }
        }
    }
    let (r, bytes) = by_residue
        .into_iter()
        .max_by_key(|&(r, b)| (b, std::cmp::Reverse(r)))?;
    (bytes >= MIN_ALIGNED_BYTES && r.is_multiple_of(8)).then_some(r)
}

/// Pad a serialised header (8-byte length + JSON padded with spaces) with more trailing spaces so
/// that its total length is congruent to `residue` mod [`ALIGN`] (the safetensors format pads the
/// header with 0x20; JSON allows trailing whitespace). Adds less than [`ALIGN`] bytes; a header
/// that would then exceed [`MAX_HEADER_BYTES`] is left as it was.
pub fn pad_header(mut header: Vec<u8>, residue: u64) -> Vec<u8> {
    let len = header.len() as u64;
    let pad = residue.wrapping_sub(len) % ALIGN;
    let json_len = len.saturating_sub(8).saturating_add(pad);
    if pad == 0 || !pad.is_multiple_of(8) || json_len > MAX_HEADER_BYTES || header.len() < 8 {
        return header;
    }
    header.resize(header.len().saturating_add(pad as usize), b' ');
    if let Some(prefix) = header.get_mut(..8) {
        prefix.copy_from_slice(&json_len.to_le_bytes());
    }
    header
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
    fn header_padding_reaches_the_residue_with_spaces() {
        let h = serialize_header(None, &[("a".into(), Dtype::F32, vec![2], 0, 8)]).unwrap();
        let n = h.len() as u64;
        // Already there, or not 8-aligned: unchanged.
        assert_eq!(pad_header(h.clone(), n % ALIGN), h);
        assert_eq!(pad_header(h.clone(), 12), h);
        for r in [0u64, 8, 72, 4088] {
            assert_ne!(r, n % ALIGN);
            let p = pad_header(h.clone(), r);
            assert_eq!(p.len() as u64 % ALIGN, r, "{r}");
            assert!(p.len() > h.len() && p.len() < h.len() + ALIGN as usize);
            assert!(p[h.len()..].iter().all(|&b| b == b' '));
            let json_len = u64::from_le_bytes(p[..8].try_into().unwrap());
            assert_eq!(json_len, p.len() as u64 - 8);
            assert_eq!(json_len % 8, 0);
            let parsed = crate::checkpoint::header::parse_header(&p[8..], p.len() as u64 + 8);
            assert!(parsed.is_ok(), "{r}");
            assert!(safetensors::SafeTensors::read_metadata(&[&p[..], &[0u8; 8]].concat()).is_ok());
        }
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
