//! File-level rules: the shard index against the shards on disk (both ways), missing and stray
//! shards, shard naming, duplicate tensors across files, `total_size`, and `__metadata__`.
//!
//! [`preflight`] reads the index and each shard's header itself, before [`Checkpoint::open`], because
//! the open rejects most of these problems with a single hard error: here each one becomes its own
//! finding, all of them reported at once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::Finding;
use crate::checkpoint::index::{IndexFile, looks_like_shard};
use crate::checkpoint::{Checkpoint, INDEX_NAME, Shard};
use crate::error::escape;

/// Finding ids of this module.
pub mod ids {
    /// The index lists a shard that is not on disk.
    pub const MISSING_SHARD: &str = "F001-missing-shard";
    /// A shard-named file on disk that the index does not list.
    pub const STRAY_SHARD: &str = "F002-stray-shard";
    /// The index places a tensor in a shard that does not hold it.
    pub const INDEX_WRONG_SHARD: &str = "F003-index-wrong-shard";
    /// A shard holds a tensor the index does not list.
    pub const NOT_IN_INDEX: &str = "F004-not-in-index";
    /// The same tensor name in two files.
    pub const DUPLICATE_TENSOR: &str = "F005-duplicate-tensor";
    /// `metadata.total_size` disagrees with the shards.
    pub const TOTAL_SIZE: &str = "F006-total-size";
    /// Shard names do not follow `model-0000K-of-0000N.safetensors` consistently.
    pub const SHARD_NAMING: &str = "F007-shard-naming";
    /// `__metadata__` missing or its `format` is not `pt`.
    pub const METADATA_FORMAT: &str = "F008-metadata-format";
    /// The checkpoint cannot be opened (after the findings above explain why).
    pub const UNOPENABLE: &str = "F009-unopenable";
    /// Several shard files and no index.
    pub const NO_INDEX: &str = "F010-no-index";
    /// The weights are PyTorch pickle archives, not safetensors.
    pub const PICKLE_WEIGHTS: &str = "F011-pickle-weights";
}

/// Pre-open checks of the index and shard files. Problems that stop the checks themselves (an
/// unreadable index) are left to the open, which reports them as errors.
pub fn preflight(path: &Path, out: &mut Vec<Finding>) {
    let (dir, index_path) = if path.is_dir() {
        let ip = path.join(INDEX_NAME);
        (path.to_path_buf(), ip.exists().then_some(ip))
    } else if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, Some(path.to_path_buf()))
    } else {
        return; // a single file: nothing to cross-check before opening
    };
    let listing = list(&dir);
    match index_path {
        Some(ip) => indexed(&dir, &ip, &listing, out),
        None => unindexed(&dir, &listing, out),
    }
}

/// The file names of a directory, sorted, without ckpt's temporaries.
pub(super) fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.contains(".ckpt-tmp-") && !n.contains(".ckpt-old-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn indexed(dir: &Path, ip: &Path, listing: &[String], out: &mut Vec<Finding>) {
    let Ok(index) = IndexFile::load(ip) else {
        return;
    };
    // Hash lookups only: linear in tensors and shards (docs/RELIABILITY.md, complexity bounds).
    let mut per_file: HashMap<&str, usize> = HashMap::new();
    for v in index.weight_map.values() {
        *per_file.entry(v.as_str()).or_insert(0) += 1;
    }
    let listed: std::collections::HashSet<&str> = index.files.iter().map(String::as_str).collect();
    let mut shards: Vec<Shard> = Vec::new();
    let mut missing = 0usize;
    for f in &index.files {
        let p = dir.join(f);
        if !p.exists() {
            missing += 1;
            let n = per_file.get(f.as_str()).copied().unwrap_or(0);
            out.push(
                Finding::error(
                    ids::MISSING_SHARD,
                    format!("the index lists this shard ({n} tensors) but it is not on disk"),
                )
                .file(p),
            );
            continue;
        }
        if let Ok(s) = Shard::open(&p) {
            shards.push(s);
        }
    }
    for f in listing {
        if looks_like_shard(f) && !listed.contains(f.as_str()) {
            out.push(
                Finding::error(
                    ids::STRAY_SHARD,
                    "a shard file on disk that the index does not list (left from an earlier save?)",
                )
                .file(dir.join(f)),
            );
        }
    }
    naming(dir, &index.files, out);
    // Tensors as the shard headers hold them.
    let mut holder: HashMap<&str, &str> = HashMap::new();
    let mut held: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    let mut dups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in &shards {
        for t in &s.header.tensors {
            held.insert((&t.name, &s.file_name));
            if let Some(prev) = holder.insert(&t.name, &s.file_name) {
                dups.entry(&t.name)
                    .or_insert_with(|| vec![prev])
                    .push(&s.file_name);
            }
            if !index.weight_map.contains_key(&t.name) {
                out.push(
                    Finding::error(
                        ids::NOT_IN_INDEX,
                        "the shard holds this tensor but the index does not list it; loaders will not load it",
                    )
                    .file(&s.path)
                    .tensor(&t.name),
                );
            }
        }
    }
    for (name, files) in dups {
        let list: Vec<String> = files.iter().map(|f| format!("`{}`", escape(f))).collect();
        out.push(
            Finding::error(
                ids::DUPLICATE_TENSOR,
                format!("the tensor is stored in several files: {}", list.join(", ")),
            )
            .file(ip)
            .tensor(name),
        );
    }
    let opened_files: std::collections::HashSet<&str> =
        shards.iter().map(|s| s.file_name.as_str()).collect();
    for (name, file) in &index.weight_map {
        if !opened_files.contains(file.as_str()) {
            continue; // missing shard: reported above
        }
        if !held.contains(&(name.as_str(), file.as_str())) {
            let actual = holder
                .get(name.as_str())
                .map(|f| format!("; it is in `{}`", escape(f)))
                .unwrap_or_else(|| "; no shard holds it".into());
            out.push(
                Finding::error(
                    ids::INDEX_WRONG_SHARD,
                    format!(
                        "the index places this tensor in `{}`, which does not hold it{actual}",
                        escape(file)
                    ),
                )
                .file(ip)
                .tensor(name),
            );
        }
    }
    if missing == 0
        && let Some(ts) = index.total_size
    {
        let real: u64 = shards.iter().map(|s| s.header.data_len as u64).sum();
        if ts != real {
            out.push(
                Finding::warning(
                    ids::TOTAL_SIZE,
                    format!("`metadata.total_size` is {ts} but the shards hold {real} bytes of tensor data"),
                )
                .file(ip),
            );
        }
    }
}

/// `model-0000K-of-0000N.safetensors`: every N the same and equal to the number of shards, every K in
/// `1..=N` and distinct.
fn naming(dir: &Path, files: &[String], out: &mut Vec<Finding>) {
    if files.len() < 2 {
        return;
    }
    let mut ks = std::collections::HashSet::new();
    for f in files {
        let Some((k, n)) = shard_numbers(f) else {
            out.push(
                Finding::warning(
                    ids::SHARD_NAMING,
                    "shard name does not follow `model-0000K-of-0000N.safetensors`",
                )
                .file(dir.join(f)),
            );
            continue;
        };
        let dup = !ks.insert(k);
        let msg = if n != files.len() {
            Some(format!(
                "the name says {n} shards but the index lists {}",
                files.len()
            ))
        } else if k == 0 || k > n {
            Some(format!("shard number {k} is outside 1..={n}"))
        } else if dup {
            Some(format!("shard number {k} appears twice"))
        } else {
            None
        };
        if let Some(m) = msg {
            out.push(Finding::warning(ids::SHARD_NAMING, m).file(dir.join(f)));
        }
    }
}

/// `(K, N)` from a `...-0000K-of-0000N.safetensors` name.
pub fn shard_numbers(name: &str) -> Option<(usize, usize)> {
    let stem = name.strip_suffix(".safetensors")?;
    let mut parts = stem.rsplitn(4, '-');
    let n = parts.next()?.parse().ok()?;
    (parts.next()? == "of").then_some(())?;
    let k = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((k, n))
}

fn unindexed(dir: &Path, listing: &[String], out: &mut Vec<Finding>) {
    let shardlike: Vec<&String> = listing.iter().filter(|f| looks_like_shard(f)).collect();
    if !shardlike.is_empty() && !listing.iter().any(|f| f == "model.safetensors") {
        out.push(
            Finding::error(
                ids::NO_INDEX,
                format!(
                    "{} shard files but no `{INDEX_NAME}`: loaders cannot find the tensors",
                    shardlike.len()
                ),
            )
            .file(dir),
        );
    }
    // Duplicates across the files the open would read together.
    let files: Vec<&String> = if listing.iter().any(|f| f == "model.safetensors")
        || listing.iter().any(|f| f == "consolidated.safetensors")
    {
        return;
    } else {
        listing
            .iter()
            .filter(|f| f.ends_with(".safetensors"))
            .collect()
    };
    let mut holder: HashMap<String, String> = HashMap::new();
    for f in files {
        let Ok(s) = Shard::open(&dir.join(f)) else {
            continue;
        };
        for t in &s.header.tensors {
            if let Some(prev) = holder.insert(t.name.clone(), f.clone()) {
                out.push(
                    Finding::error(
                        ids::DUPLICATE_TENSOR,
                        format!(
                            "the tensor is stored in two files: `{}` and `{}`",
                            escape(&prev),
                            escape(f)
                        ),
                    )
                    .file(dir.join(f))
                    .tensor(&t.name),
                );
            }
        }
    }
}

/// File rules on an opened checkpoint: `__metadata__` of every shard.
pub fn check_opened(ck: &Checkpoint, out: &mut Vec<Finding>) {
    for s in &ck.shards {
        if s.torch().is_some() {
            out.push(
                Finding::warning(
                    ids::PICKLE_WEIGHTS,
                    "the weights are a PyTorch pickle archive: loaders read it with torch.load, which runs code from the file unless weights_only=True (ckpt read it without unpickling); publish safetensors (`ckpt convert`)",
                )
                .file(&s.path),
            );
            continue;
        }
        let format = s
            .header
            .metadata
            .as_ref()
            .and_then(|m| m.iter().find(|(k, _)| k == "format").map(|(_, v)| v));
        let msg = match format {
            Some(f) if f == "pt" => continue,
            Some(f) => format!(
                "`__metadata__.format` is \"{}\", not \"pt\" (transformers refuses formats other than pt, tf, flax, mlx)",
                escape(f)
            ),
            None => "no `__metadata__.format`: some loaders (older transformers) expect {\"format\": \"pt\"}".into(),
        };
        out.push(Finding::warning(ids::METADATA_FORMAT, msg).file(&s.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_number_parsing() {
        assert_eq!(
            shard_numbers("model-00002-of-00003.safetensors"),
            Some((2, 3))
        );
        assert_eq!(shard_numbers("model.safetensors"), None);
        assert_eq!(shard_numbers("00002-of-00003.safetensors"), None);
    }
}
