//! Directories of PyTorch weights, and Meta's tensor-parallel ranks merged into one checkpoint.
//!
//! Meta's LLaMA downloads are `consolidated.00.pth` ... `consolidated.NN.pth`, one file per
//! model-parallel rank (fairscale's `ColumnParallelLinear` / `RowParallelLinear` /
//! `ParallelEmbedding` in `meta-llama/llama*/model.py`): `wq wk wv w1 w3 output` are split along their
//! output rows, `wo w2` along their input columns, the norms (and `rope.freqs`) are replicated,
//! and `tok_embeddings` is split along columns (LLaMA 1/2, `ParallelEmbedding`) or rows (LLaMA 3,
//! `VocabParallelEmbedding`). Merging is what transformers' `convert_llama_weights_to_hf.py` does
//! with `torch.cat` in memory; here it is a [`Placement::Concat`] over the ranks' byte ranges, so the
//! merged tensors stream like any other. Replicated tensors are checked to be byte-equal across ranks
//! (they are 1-D and small); rank 0's copy is used.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::HashMap;
use std::path::Path;

use super::extent::{Part, Placement};
use super::{Checkpoint, Layout, ModelConfig, OpenOptions, Shard, TORCH_INDEX_NAME, TensorInfo};
use crate::error::{Error, ErrorKind, Result, escape};

/// Most tensor-parallel ranks accepted.
pub const MAX_RANKS: usize = 256;

/// How Meta ranks were merged, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeInfo {
    /// Number of ranks.
    pub ranks: usize,
    /// How `tok_embeddings` was split: `columns` (LLaMA 1/2) or `rows` (LLaMA 3); `None` when absent.
    pub embedding_split: Option<&'static str>,
    /// Replicated tensors checked byte-equal across ranks.
    pub replicated: usize,
}

/// Names that are PyTorch weight files of a checkpoint (not trainer state such as `optimizer.pt`).
pub fn torch_weight_files(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .filter(|f| {
            let f = f.as_str();
            let trainer = [
                "optimizer",
                "scheduler",
                "rng_state",
                "training_args",
                "scaler",
            ]
            .iter()
            .any(|p| f.starts_with(p));
            f == TORCH_INDEX_NAME
                || f == "pytorch_model.bin"
                || looks_like_torch_shard(f)
                || consolidated_rank(f).is_some()
                || (!trainer && (f.ends_with(".pth") || f.ends_with(".pt")))
        })
        .cloned()
        .collect()
}

/// `pytorch_model-0000K-of-0000N.bin`.
pub fn looks_like_torch_shard(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".bin") else {
        return false;
    };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    matches!(parts.as_slice(), [total, "of", idx, _]
        if !total.is_empty() && !idx.is_empty()
        && total.bytes().all(|b| b.is_ascii_digit()) && idx.bytes().all(|b| b.is_ascii_digit()))
}

/// The rank of `consolidated.NN.pth`.
pub fn consolidated_rank(name: &str) -> Option<usize> {
    let n = name.strip_prefix("consolidated.")?.strip_suffix(".pth")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

impl Checkpoint {
    pub(super) fn open_torch_dir(
        dir: &Path,
        listing: &[String],
        raw_listing: &[std::ffi::OsString],
        key: Option<&str>,
    ) -> Result<Checkpoint> {
        let has = |n: &str| listing.iter().any(|f| f == n);
        let config_path = if has("config.json") {
            Some(dir.join("config.json"))
        } else if has("params.json") {
            Some(dir.join("params.json"))
        } else {
            None
        };
        let config = config_path.as_deref().map(ModelConfig::load).transpose()?;
        let opts = OpenOptions {
            state_dict_key: key.map(str::to_string),
            ..OpenOptions::default()
        };
        let mut ck = if has(TORCH_INDEX_NAME) {
            let mut ck = Self::open_indexed(&dir.join(TORCH_INDEX_NAME), dir, dir, &opts)?;
            ck.config = config;
            ck
        } else if has("pytorch_model.bin") {
            let s = Shard::open_with(&dir.join("pytorch_model.bin"), key)?;
            Self::assemble(dir, dir, Layout::Single, vec![s], config, None, Vec::new())?
        } else {
            let mut ranks: Vec<(usize, &String)> = listing
                .iter()
                .filter_map(|f| consolidated_rank(f).map(|r| (r, f)))
                .collect();
            ranks.sort();
            if !ranks.is_empty() {
                if ranks.len() > MAX_RANKS {
                    return Err(Error::unsupported(format!(
                        "{} ranks (limit {MAX_RANKS})",
                        ranks.len()
                    ))
                    .file(dir));
                }
                for (i, (r, f)) in ranks.iter().enumerate() {
                    if *r != i {
                        return Err(Error::new(
                            ErrorKind::MissingInput,
                            format!(
                                "rank {i} is missing: the ranks present are numbered up to `{}`",
                                escape(f)
                            ),
                        )
                        .file(dir)
                        .hint("download every consolidated.NN.pth file"));
                    }
                }
                let shards = ranks
                    .iter()
                    .map(|(_, f)| Shard::open_with(&dir.join(f), key))
                    .collect::<Result<Vec<_>>>()?;
                if shards.len() == 1 {
                    Self::assemble(dir, dir, Layout::Meta, shards, config, None, Vec::new())?
                } else {
                    merge_ranks(dir, shards, config)?
                }
            } else {
                let files: Vec<&String> = listing
                    .iter()
                    .filter(|f| f.ends_with(".pth") || f.ends_with(".pt"))
                    .filter(|f| torch_weight_files(std::slice::from_ref(*f)).len() == 1)
                    .collect();
                match files.as_slice() {
                    [one] => {
                        let s = Shard::open_with(&dir.join(one), key)?;
                        Self::assemble(dir, dir, Layout::Single, vec![s], config, None, Vec::new())?
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::WrongFormat,
                            format!(
                                "several PyTorch files and no index: {}; which one is the checkpoint is ambiguous",
                                files.iter().map(|f| format!("`{}`", escape(f))).collect::<Vec<_>>().join(", ")
                            ),
                        )
                        .file(dir)
                        .hint("give the file you mean directly"));
                    }
                }
            }
        };
        ck.other_files = super::others(raw_listing, &ck);
        Ok(ck)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Merge {
    Rows,
    Columns,
    Replicated,
}

/// How a Meta tensor is split across ranks, from its name (and, for the embedding, its shape).
fn merge_kind(name: &str, rank_shape: &[usize], dim: Option<usize>, ranks: usize) -> Result<Merge> {
    let last = |s: &str| name == s || name.ends_with(&format!(".{s}"));
    if [
        "attention.wq.weight",
        "attention.wk.weight",
        "attention.wv.weight",
        "feed_forward.w1.weight",
        "feed_forward.w3.weight",
        "output.weight",
    ]
    .iter()
    .any(|s| last(s))
    {
        return Ok(Merge::Rows);
    }
    if ["attention.wo.weight", "feed_forward.w2.weight"]
        .iter()
        .any(|s| last(s))
    {
        return Ok(Merge::Columns);
    }
    if name == "tok_embeddings.weight" {
        let cols = rank_shape.get(1).copied();
        let dim = dim.ok_or_else(|| {
            Error::bad_data("cannot tell how the embedding is split: no `norm.weight` and no `dim` in params.json")
                .tensor(name)
        })?;
        return match cols {
            Some(c) if c == dim => Ok(Merge::Rows),
            Some(c) if c.checked_mul(ranks) == Some(dim) => Ok(Merge::Columns),
            _ => Err(Error::bad_data(format!(
                "each rank holds {rank_shape:?}, which is neither all {dim} columns (LLaMA 3 row split) nor {dim}/{ranks} columns (LLaMA 1/2 column split)"
            ))
            .tensor(name)),
        };
    }
    if rank_shape.len() <= 1 {
        return Ok(Merge::Replicated);
    }
    Err(Error::unsupported(format!(
        "a {}-D tensor ckpt does not know how Meta's model parallelism splits; cannot merge the ranks",
        rank_shape.len()
    ))
    .tensor(name))
}

fn merge_ranks(dir: &Path, shards: Vec<Shard>, config: Option<ModelConfig>) -> Result<Checkpoint> {
    let ranks = shards.len();
    let first = shards.first().ok_or_else(|| Error::internal("no ranks"))?;
    let maps: Vec<HashMap<&str, &super::header::HeaderTensor>> = shards
        .iter()
        .map(|s| {
            s.header
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect()
        })
        .collect();
    // Every rank holds the same names.
    for (r, s) in shards.iter().enumerate() {
        if s.header.tensors.len() != first.header.tensors.len() {
            let missing = first.header.tensors.iter().find(|t| {
                maps.get(r)
                    .is_some_and(|m| !m.contains_key(t.name.as_str()))
            });
            let msg = match missing {
                Some(_) => format!(
                    "rank {r} (`{}`) does not hold this tensor, rank 0 does",
                    escape(&s.file_name)
                ),
                None => format!(
                    "rank {r} (`{}`) holds tensors rank 0 does not",
                    escape(&s.file_name)
                ),
            };
            let mut e = Error::bad_data(msg).file(&s.path);
            if let Some(t) = missing {
                e = e.tensor(&t.name);
            }
            return Err(e);
        }
    }
    let strided = |s: &Shard, n: &str| {
        s.torch()
            .is_some_and(|a| a.tensors.iter().any(|t| t.name == n && t.strides.is_some()))
    };
    let dim = maps
        .first()
        .and_then(|m| m.get("norm.weight"))
        .and_then(|t| t.shape.first().copied())
        .or_else(|| config.as_ref().and_then(|c| c.hidden_size));
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(first.header.tensors.len());
    let mut embedding_split = None;
    let mut replicated = 0usize;
    for t0 in &first.header.tensors {
        let name = t0.name.as_str();
        let kind = merge_kind(name, &t0.shape, dim, ranks).map_err(|e| e.file(&first.path))?;
        let mut parts = Vec::with_capacity(ranks);
        for (r, (s, m)) in shards.iter().zip(&maps).enumerate() {
            let t = m.get(name).ok_or_else(|| {
                Error::bad_data(format!("rank {r} does not hold this tensor, rank 0 does"))
                    .file(&s.path)
                    .tensor(name)
            })?;
            if t.dtype != t0.dtype || t.shape != t0.shape {
                return Err(Error::bad_data(format!(
                    "rank {r} holds it as {} {:?}, rank 0 as {} {:?}",
                    t.dtype, t.shape, t0.dtype, t0.shape
                ))
                .file(&s.path)
                .tensor(name));
            }
            if strided(s, name) {
                return Err(Error::unsupported(
                    "a rank's slice is stored non-contiguously; cannot concatenate it",
                )
                .file(&s.path)
                .tensor(name));
            }
            parts.push(Part {
                shard: r,
                begin: t.begin,
                end: t.end,
                len: match kind {
                    Merge::Columns => t.shape.get(1).copied().unwrap_or(0),
                    _ => t.shape.first().copied().unwrap_or(1),
                },
            });
        }
        let (shape, placement) = match kind {
            Merge::Replicated => {
                let want = first.data(t0.begin, t0.end)?;
                for (r, (s, p)) in shards.iter().zip(&parts).enumerate().skip(1) {
                    if s.data(p.begin, p.end)? != want {
                        return Err(Error::bad_data(format!(
                            "a replicated tensor differs between rank 0 and rank {r} (`{}`); the ranks are not from one model",
                            escape(&s.file_name)
                        ))
                        .file(&s.path)
                        .tensor(name));
                    }
                }
                replicated = replicated.saturating_add(1);
                (t0.shape.clone(), Placement::Contiguous)
            }
            Merge::Rows | Merge::Columns => {
                let axis = usize::from(kind == Merge::Columns);
                let mut shape = t0.shape.clone();
                let total = parts.iter().try_fold(0usize, |a, p| a.checked_add(p.len));
                match (shape.get_mut(axis), total) {
                    (Some(d), Some(n)) => *d = n,
                    _ => {
                        return Err(
                            Error::bad_data("cannot concatenate this tensor's ranks").tensor(name)
                        );
                    }
                }
                if name == "tok_embeddings.weight" {
                    embedding_split = Some(if axis == 0 { "rows" } else { "columns" });
                }
                (shape, Placement::Concat { axis, parts })
            }
        };
        tensors.push(TensorInfo {
            name: name.to_string(),
            dtype: t0.dtype,
            shape,
            shard: 0,
            begin: t0.begin,
            end: t0.end,
            placement,
        });
    }
    Ok(Checkpoint {
        notes: Vec::new(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        layout: Layout::Meta,
        shards,
        by_name: tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect(),
        tensors,
        config,
        index: None,
        other_files: Vec::new(),
        warnings: Vec::new(),
        merge: Some(MergeInfo {
            ranks,
            embedding_split,
            replicated,
        }),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(looks_like_torch_shard("pytorch_model-00001-of-00002.bin"));
        assert!(!looks_like_torch_shard("training_args.bin"));
        assert_eq!(consolidated_rank("consolidated.07.pth"), Some(7));
        assert_eq!(consolidated_rank("consolidated.pth"), None);
        let l: Vec<String> = [
            "optimizer.pt",
            "rng_state_0.pth",
            "model.pth",
            "training_args.bin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(torch_weight_files(&l), vec!["model.pth".to_string()]);
    }

    #[test]
    fn embedding_split_from_shapes() {
        let k = |s: &[usize]| merge_kind("tok_embeddings.weight", s, Some(64), 2).ok();
        assert!(k(&[256, 32]) == Some(Merge::Columns));
        assert!(k(&[128, 64]) == Some(Merge::Rows));
        assert!(k(&[128, 48]).is_none());
        assert!(
            merge_kind("layers.0.attention.wo.weight", &[64, 32], Some(64), 2).ok()
                == Some(Merge::Columns)
        );
        assert!(
            merge_kind("layers.0.attention_norm.weight", &[64], Some(64), 2).ok()
                == Some(Merge::Replicated)
        );
    }
}
