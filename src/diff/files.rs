//! The files loaders read beside the weights: `generation_config.json`, the tokenizer files
//! (`tokenizer.json`, `tokenizer.model`, `tokenizer_config.json`, the legacy
//! `special_tokens_map.json` / `added_tokens.json`, `vocab.json` + `merges.txt`, ...) and the chat
//! template. Two releases with equal tensors and configs still generate differently when one stops
//! on another eos id or numbers its vocabulary otherwise, so `diff` compares these too.
//!
//! The files are taken from the directory listing the checkpoint was opened with
//! ([`Checkpoint::other_files`]), by the names in [`COMPARED_FILES`]. Each pair is compared by its
//! bytes first, streamed in chunks (the same file on both sides is equal without being read); a
//! JSON file whose bytes differ is then parsed (up to the tokenizer module's size caps) and its
//! top-level keys compared, so the differing keys are named as config keys are. A side given as a
//! single file (a `.gguf`, a lone `.safetensors`) has no such files: the comparison is then not
//! made, and says so, rather than finding them equal.

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

use crate::checkpoint::Checkpoint;
use crate::checkpoint::config::read_limited;
use crate::checkpoint::shard::open_regular;
use crate::error::{Error, Result};
use crate::tokenizer::{
    ADDED_FILE, CONFIG_FILE, GENERATION_FILE, JSON_FILE, MAX_SMALL_JSON_BYTES,
    MAX_TOKENIZER_JSON_BYTES, SP_FILE, SPECIAL_MAP_FILE,
};

use super::INFORMATIONAL_KEYS;

/// The files compared beside the weights, besides the tokenizer module's other tokenizer files
/// (`vocab.json`, `merges.txt`, `vocab.txt`, `spiece.model`, `*.tiktoken`:
/// [`crate::tokenizer::is_other_tokenizer_file`]): what transformers, vLLM, candle and llama.cpp's
/// converter read from a checkpoint directory to build the tokenizer, the chat template and the
/// generation defaults.
pub const COMPARED_FILES: &[&str] = &[
    GENERATION_FILE,
    JSON_FILE,
    SP_FILE,
    CONFIG_FILE,
    SPECIAL_MAP_FILE,
    ADDED_FILE,
    "chat_template.jinja",
    "chat_template.json",
];

/// Keys transformers 5 writes into `tokenizer_config.json` from how the tokenizer was loaded, not
/// from the tokenizer (`from_pretrained(..., local_files_only=True)` saves `local_files_only: true`):
/// the same tokenizer loaded two ways must not differ.
pub const SAVE_CONTEXT_KEYS: &[&str] = &["is_local", "local_files_only"];

/// Most differing keys of one JSON file kept as rows (a permuted `vocab.json` differs in every
/// token); [`FileRow::keys_differing`] has the full count.
pub const MAX_KEY_ROWS: usize = 20;

/// Largest JSON text of a key's value kept in a [`KeyRow`]; a larger value (`tokenizer.json`'s
/// `model`, the whole vocabulary) keeps only its first bytes, for display.
pub const MAX_KEPT_VALUE: usize = 4096;

/// Whether a file name is one [`COMPARED_FILES`] names, or another tokenizer file.
pub fn is_compared(name: &str) -> bool {
    COMPARED_FILES.contains(&name) || crate::tokenizer::is_other_tokenizer_file(name)
}

/// How a file beside the weights compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Equal bytes, or (JSON) equal values apart from informational keys.
    Same,
    /// Present on both sides, different.
    Differs,
    /// Only in A.
    OnlyA,
    /// Only in B.
    OnlyB,
}

impl FileStatus {
    /// Lower-case name (`same`, `differs`, `only in A`, `only in B`).
    pub fn name(self) -> &'static str {
        match self {
            FileStatus::Same => "same",
            FileStatus::Differs => "differs",
            FileStatus::OnlyA => "only in A",
            FileStatus::OnlyB => "only in B",
        }
    }
}

/// One side of a differing top-level key of a JSON file.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    /// The side's file does not have the key.
    Absent,
    /// The value (its JSON text is at most [`MAX_KEPT_VALUE`] bytes).
    Value(Value),
    /// A larger value: the first [`MAX_KEPT_VALUE`] bytes of its JSON text.
    Large(String),
}

/// A top-level key of a JSON file that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    /// The key.
    pub key: String,
    /// A's value.
    pub a: KeyValue,
    /// B's value.
    pub b: KeyValue,
    /// Why the difference does not count (`informational`: `transformers_version`), if it does
    /// not.
    pub ignored: Option<&'static str>,
    /// When both values are objects, their keys that differ (the first [`MAX_KEY_ROWS`]), so a
    /// large value says where it differs: `tokenizer.json`'s `model` in `vocab`, not `merges`.
    pub inner: Vec<String>,
}

/// One file beside the weights, present on at least one side.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRow {
    /// The file name (relative to the checkpoint directory).
    pub name: String,
    /// A's size in bytes (`None`: absent).
    pub a: Option<u64>,
    /// B's size in bytes.
    pub b: Option<u64>,
    /// Status.
    pub status: FileStatus,
    /// Differing top-level keys, when both sides parsed as JSON objects: the first
    /// [`MAX_KEY_ROWS`], in A's key order then B's.
    pub keys: Vec<KeyRow>,
    /// How many top-level keys differ in all (counted ones and ignored ones).
    pub keys_differing: usize,
    /// How the bytes or values compared, when the key rows do not say it all (`same JSON values
    /// in other bytes`, `not valid JSON on B: the bytes differ`, ...).
    pub note: Option<String>,
}

/// The comparison of the files beside the weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilesDiff {
    /// Why nothing was compared (a side given as a single file), or `None` when both sides are
    /// directories and their files were compared.
    pub not_compared: Option<String>,
    /// The files present on either side, by name.
    pub rows: Vec<FileRow>,
}

impl FilesDiff {
    /// Whether the files were compared and none differs.
    pub fn all_same(&self) -> bool {
        self.not_compared.is_none() && self.rows.iter().all(|r| r.status == FileStatus::Same)
    }

    /// Number of rows with a status.
    pub fn count(&self, s: FileStatus) -> usize {
        self.rows.iter().filter(|r| r.status == s).count()
    }
}

/// Whether the checkpoint was opened from a directory (its files beside the weights are then the
/// directory's); a checkpoint given as one file has none.
fn is_directory(ck: &Checkpoint) -> bool {
    std::fs::metadata(&ck.path).is_ok_and(|m| m.is_dir())
}

/// Compare the files beside the weights of two checkpoints.
pub fn files_diff(a: &Checkpoint, b: &Checkpoint) -> Result<FilesDiff> {
    let (da, db) = (is_directory(a), is_directory(b));
    if !(da && db) {
        let why = match (da, db) {
            (false, false) => "A and B were given as files, not directories",
            (false, true) => "A was given as a file, not a directory",
            _ => "B was given as a file, not a directory",
        };
        return Ok(FilesDiff {
            not_compared: Some(why.to_string()),
            rows: Vec::new(),
        });
    }
    let listed = |ck: &Checkpoint| -> Vec<String> {
        ck.other_files
            .iter()
            .filter(|f| is_compared(f))
            .cloned()
            .collect()
    };
    let (la, lb) = (listed(a), listed(b));
    let mut names: Vec<&String> = la.iter().chain(lb.iter()).collect();
    names.sort();
    names.dedup();
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        let (pa, pb) = (a.dir.join(name), b.dir.join(name));
        let row = match (la.contains(name), lb.contains(name)) {
            (true, true) => compare(name, &pa, &pb)?,
            (true, false) => one_side(name, &pa, FileStatus::OnlyA)?,
            _ => one_side(name, &pb, FileStatus::OnlyB)?,
        };
        rows.push(row);
    }
    Ok(FilesDiff {
        not_compared: None,
        rows,
    })
}

fn one_side(name: &str, path: &Path, status: FileStatus) -> Result<FileRow> {
    let (_, meta) = open_regular(path)?;
    let size = Some(meta.len());
    let (a, b) = if status == FileStatus::OnlyA {
        (size, None)
    } else {
        (None, size)
    };
    Ok(FileRow {
        name: name.to_string(),
        a,
        b,
        status,
        keys: Vec::new(),
        keys_differing: 0,
        note: None,
    })
}

/// Whether two regular files hold the same bytes: the same file is equal unread, files of other
/// sizes are not equal unread, and otherwise both are streamed in chunks and compared.
fn same_bytes(pa: &Path, pb: &Path) -> Result<(bool, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut fa, ma) = open_regular(pa)?;
    let (mut fb, mb) = open_regular(pb)?;
    let sizes = (ma.len(), mb.len());
    if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
        return Ok((true, sizes.0, sizes.1));
    }
    if sizes.0 != sizes.1 {
        return Ok((false, sizes.0, sizes.1));
    }
    const CHUNK: usize = 1 << 20;
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut left = sizes.0;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        let (Some(xa), Some(xb)) = (ba.get_mut(..n), bb.get_mut(..n)) else {
            break;
        };
        fa.read_exact(xa)
            .map_err(|e| Error::io(pa, "cannot read", e))?;
        fb.read_exact(xb)
            .map_err(|e| Error::io(pb, "cannot read", e))?;
        if xa != xb {
            return Ok((false, sizes.0, sizes.1));
        }
        left -= n as u64;
    }
    Ok((true, sizes.0, sizes.1))
}

/// Parse a JSON file beside the weights, `Err` with why it was not (too large, not JSON).
fn parse_json(name: &str, path: &Path, size: u64) -> Result<std::result::Result<Value, String>> {
    let limit = if name == JSON_FILE {
        MAX_TOKENIZER_JSON_BYTES
    } else {
        MAX_SMALL_JSON_BYTES
    };
    if size > limit {
        return Ok(Err(format!("over {limit} bytes, not parsed")));
    }
    let bytes = read_limited(path, limit)?;
    Ok(crate::json::from_slice_nonfinite(&bytes).map_err(|_| "not valid JSON".to_string()))
}

fn compare(name: &str, pa: &Path, pb: &Path) -> Result<FileRow> {
    let (equal, sa, sb) = same_bytes(pa, pb)?;
    let mut row = FileRow {
        name: name.to_string(),
        a: Some(sa),
        b: Some(sb),
        status: if equal {
            FileStatus::Same
        } else {
            FileStatus::Differs
        },
        keys: Vec::new(),
        keys_differing: 0,
        note: None,
    };
    if equal || !name.ends_with(".json") {
        return Ok(row);
    }
    let (ja, jb) = (parse_json(name, pa, sa)?, parse_json(name, pb, sb)?);
    let (va, vb) = match (ja, jb) {
        (Ok(va), Ok(vb)) => (va, vb),
        (ja, jb) => {
            let why = match (ja.err(), jb.err()) {
                (Some(x), Some(y)) if x == y => format!("{x} on A and B"),
                (Some(x), Some(y)) => format!("{x} on A, {y} on B"),
                (Some(x), None) => format!("{x} on A"),
                (None, Some(y)) => format!("{y} on B"),
                (None, None) => String::new(),
            };
            row.note = Some(format!("{why}: the bytes differ"));
            return Ok(row);
        }
    };
    match (va, vb) {
        (Value::Object(oa), Value::Object(ob)) => {
            let (keys, n) = key_rows(oa, ob);
            row.keys_differing = n;
            if keys.iter().all(|k| k.ignored.is_some()) && n <= keys.len() {
                row.status = FileStatus::Same;
                row.note = Some(if n == 0 {
                    "same JSON values in other bytes".into()
                } else {
                    "only informational keys differ".into()
                });
            }
            row.keys = keys;
        }
        (va, vb) if va == vb => {
            row.status = FileStatus::Same;
            row.note = Some("same JSON values in other bytes".into());
        }
        _ => row.note = Some("the JSON values differ (not objects)".into()),
    }
    Ok(row)
}

/// The differing top-level keys of two JSON objects (the first [`MAX_KEY_ROWS`], values moved out
/// of the maps, large ones cut), and how many differ in all.
fn key_rows(mut oa: Map<String, Value>, mut ob: Map<String, Value>) -> (Vec<KeyRow>, usize) {
    let mut keys: Vec<String> = oa.keys().cloned().collect();
    keys.extend(ob.keys().filter(|k| !oa.contains_key(*k)).cloned());
    let mut rows = Vec::new();
    let mut n = 0;
    for k in keys {
        if oa.get(&k) == ob.get(&k) {
            continue;
        }
        n += 1;
        if rows.len() >= MAX_KEY_ROWS {
            continue;
        }
        let ignored = (INFORMATIONAL_KEYS.contains(&k.as_str())
            || SAVE_CONTEXT_KEYS.contains(&k.as_str()))
        .then_some("informational");
        let inner = match (oa.get(&k), ob.get(&k)) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => x
                .keys()
                .chain(y.keys().filter(|j| !x.contains_key(*j)))
                .filter(|j| x.get(*j) != y.get(*j))
                .take(MAX_KEY_ROWS)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        rows.push(KeyRow {
            inner,
            a: kept(oa.remove(&k)),
            b: kept(ob.remove(&k)),
            key: k,
            ignored,
        });
    }
    (rows, n)
}

/// A value as kept in a [`KeyRow`]: whole when its JSON text is short, else its first bytes.
fn kept(v: Option<Value>) -> KeyValue {
    /// A writer that keeps the first [`MAX_KEPT_VALUE`] bytes and then refuses more, so a
    /// multi-megabyte value is not serialised in full only to be cut.
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = MAX_KEPT_VALUE.saturating_sub(self.0.len());
            if room == 0 {
                return Err(std::io::Error::other("long value"));
            }
            let n = buf.len().min(room);
            self.0.extend_from_slice(buf.get(..n).unwrap_or_default());
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let Some(v) = v else {
        return KeyValue::Absent;
    };
    let mut w = Capped(Vec::new());
    match serde_json::to_writer(&mut w, &v) {
        Ok(()) => KeyValue::Value(v),
        Err(_) => KeyValue::Large(String::from_utf8_lossy(&w.0).into_owned()),
    }
}
