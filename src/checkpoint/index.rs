//! `model.safetensors.index.json`: which shard holds which tensor.
//!
//! `weight_map` values are attacker-controlled paths (huggingface/transformers#47176 joined them
//! blindly): each must be one plain file-name component, and a shard that is a symlink must resolve
//! inside the checkpoint directory, or into the `blobs/` folder of a Hugging Face cache repository
//! when the directory is one of its `snapshots/<rev>/` folders.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::config::read_limited;
use crate::error::{Error, Result, escape};

/// Largest index file read, in bytes.
pub const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// A parsed shard index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `metadata.total_size`, if present.
    pub total_size: Option<u64>,
    /// The whole `metadata` object (key order preserved).
    pub metadata: serde_json::Map<String, Value>,
    /// Tensor name -> shard file name.
    pub weight_map: BTreeMap<String, String>,
    /// Shard file names, sorted (`model-00001-of-...` first).
    pub files: Vec<String>,
}

impl IndexFile {
    /// Read and validate an index file.
    pub fn load(path: &Path) -> Result<IndexFile> {
        let bytes = read_limited(path, MAX_INDEX_BYTES)?;
        Self::parse(&bytes).map_err(|e| e.file(path)).map(|mut i| {
            i.path = path.to_path_buf();
            i
        })
    }

    /// Parse index bytes.
    pub fn parse(bytes: &[u8]) -> Result<IndexFile> {
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            return Err(Error::bad_data(
                "the index starts with a UTF-8 byte-order mark (BOM), which JSON does not allow",
            )
            .hint("save the file as UTF-8 without BOM"));
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_data(format!("not valid JSON: {e}")))?;
        if let Some(k) = crate::json::first_duplicate_key(bytes) {
            return Err(Error::bad_data(format!(
                "the key \"{}\" appears twice",
                escape(&k)
            )));
        }
        let Value::Object(mut obj) = v else {
            return Err(Error::bad_data("the index must be a JSON object"));
        };
        let metadata = match obj.remove("metadata") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(Error::bad_data("key `metadata` must be an object")),
        };
        // The float branch casts only finite, non-negative integral values below 2^64: exact.
        #[allow(clippy::cast_possible_truncation)]
        let total_size = match metadata.get("total_size") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Some(v),
                // Some writers emit floats like 1234.0.
                None => n
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                    .map(|f| f as u64),
            },
            Some(_) => {
                return Err(Error::bad_data(
                    "key `metadata.total_size` must be a number",
                ));
            }
        };
        let Some(Value::Object(wm)) = obj.remove("weight_map") else {
            return Err(Error::bad_data(
                "key `weight_map` is missing or not an object",
            ));
        };
        let mut weight_map = BTreeMap::new();
        let mut files: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (name, file) in wm {
            super::header::validate_name(&name).map_err(Error::bad_data)?;
            let Value::String(file) = file else {
                return Err(Error::bad_data("`weight_map` values must be file names").tensor(name));
            };
            validate_shard_name(&file).map_err(|m| Error::bad_data(m).tensor(&name))?;
            if seen.insert(file.clone()) {
                files.push(file.clone());
            }
            weight_map.insert(name, file);
        }
        files.sort();
        Ok(IndexFile {
            path: PathBuf::new(),
            total_size,
            metadata,
            weight_map,
            files,
        })
    }
}

/// A shard name must be one normal path component: non-empty, no separators, not `.`/`..`, no NUL,
/// not absolute.
pub fn validate_shard_name(name: &str) -> std::result::Result<(), String> {
    let bad = || {
        format!(
            "shard name \"{}\" is not a plain file name in the checkpoint directory",
            escape(name)
        )
    };
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.contains(':') {
        return Err(bad());
    }
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) => Ok(()),
        _ => Err(bad()),
    }
}

/// A shard that is a symlink must stay inside the checkpoint directory, or point into the `blobs/`
/// of the Hugging Face cache repository the directory is a snapshot of.
pub fn check_shard_location(dir: &Path, shard: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(shard) else {
        return Ok(()); // missing: reported by the caller
    };
    if !meta.file_type().is_symlink() {
        return Ok(());
    }
    let (Ok(target), Ok(root)) = (shard.canonicalize(), dir.canonicalize()) else {
        return Ok(()); // dangling: reported as missing by the open
    };
    if target.starts_with(&root) {
        return Ok(());
    }
    // HF cache: <repo>/snapshots/<rev>/<file> -> <repo>/blobs/<hash>
    let repo_blobs = root
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
        .and_then(Path::parent)
        .map(|repo| repo.join("blobs"));
    if let Some(blobs) = repo_blobs
        && target.starts_with(&blobs)
    {
        return Ok(());
    }
    Err(Error::bad_data(format!(
        "shard `{}` is a symlink that leaves the checkpoint directory (to `{}`)",
        shard
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        target.display()
    ))
    .cause(crate::error::Cause::ExternalLink))
}

/// Whether a file name looks like a shard of a sharded save (`*-00001-of-00003.safetensors`).
pub fn looks_like_shard(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".safetensors") else {
        return false;
    };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    matches!(parts.as_slice(), [total, "of", idx, _]
        if !total.is_empty() && !idx.is_empty()
        && total.bytes().all(|b| b.is_ascii_digit()) && idx.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_must_be_plain() {
        for bad in [
            "../x.safetensors",
            "/abs.safetensors",
            "a/b.safetensors",
            "a\\b",
            "..",
            ".",
            "",
            "C:x",
            "a\0b",
        ] {
            assert!(validate_shard_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_shard_name("model-00001-of-00002.safetensors").is_ok());
    }

    #[test]
    fn index_errors() {
        let dup = br#"{"weight_map":{"a":"x.safetensors","a":"y.safetensors"}}"#;
        assert!(
            IndexFile::parse(dup)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let trav = br#"{"weight_map":{"a":"../../etc/passwd"}}"#;
        let e = IndexFile::parse(trav).unwrap_err().to_string();
        assert!(
            e.contains("tensor \"a\"") && e.contains("not a plain file name"),
            "{e}"
        );
        let ok = br#"{"metadata":{"total_size":16},"weight_map":{"b":"s2.safetensors","a":"s1.safetensors"}}"#;
        let i = IndexFile::parse(ok).unwrap();
        assert_eq!(i.total_size, Some(16));
        assert_eq!(i.files, ["s1.safetensors", "s2.safetensors"]);
    }

    #[test]
    fn shard_pattern() {
        assert!(looks_like_shard("model-00001-of-00002.safetensors"));
        assert!(!looks_like_shard("model.safetensors"));
        assert!(!looks_like_shard("consolidated.safetensors"));
    }
}
