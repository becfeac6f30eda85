//! In-place header rewrite for pure renames (RELIABILITY.md B.4), under a rollback journal.
//!
//! A rename changes only the JSON header; the data section stays where it is as long as the header
//! length N stays identical. So the new header is padded with spaces to exactly the old N, and is
//! applied only when it fits. Because a one-page `pwrite` is not crash-atomic (SQLite's atomic-commit
//! notes do not assume sector writes are), a journal `.<dir>.ckpt-hdr-journal` holding every file's
//! identity (dev, ino, size), the old and the new header bytes, the old and new `config.json` /
//! index, and a SHA-256 of everything, is written and fsynced (file and directory) before the first
//! byte of any checkpoint file changes. It is removed (and the directory fsynced) only after every
//! header was written, fsynced and re-validated and the small files replaced atomically, so the
//! single `unlink` is the commit point. [`recover`] rolls an interrupted run back to the old state;
//! a journal whose identity does not match the file on disk is reported and never applied.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fsio;
use crate::checkpoint::INDEX_NAME;
use crate::checkpoint::header::{Dtype, parse_header, serialize_header};
use crate::error::{Error, ErrorKind, Result, escape, escape_path};
use crate::mapping::view::View;

const MAGIC: &[u8; 8] = b"CKPTJNL2";
/// Suffix of journal files.
pub use crate::checkpoint::JOURNAL_SUFFIX;

/// A header to replace in one shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    /// File name in the checkpoint directory.
    pub file: String,
    /// `(st_dev, st_ino)` when planned.
    pub dev_ino: (u64, u64),
    /// File size when planned.
    pub size: u64,
    /// Modification time `(seconds, nanoseconds)` when planned.
    pub mtime: (i64, i64),
    /// The old header bytes (`N` bytes after the 8-byte prefix).
    pub old: Vec<u8>,
    /// The new header bytes, padded with spaces to exactly `old.len()`.
    pub new: Vec<u8>,
}

/// A small file (config, index) replaced as a whole, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    /// File name in the checkpoint directory.
    pub file: String,
    /// Old contents (`None`: the file did not exist).
    pub old: Option<Vec<u8>>,
    /// New contents.
    pub new: Vec<u8>,
}

/// The complete in-place edit of a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlacePlan {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Header rewrites (shards whose names do not change are left out).
    pub headers: Vec<HeaderEdit>,
    /// Small files replaced.
    pub files: Vec<FileEdit>,
    /// Number of tensors whose name changes.
    pub renamed: usize,
}

/// The journal path for a checkpoint directory.
pub fn journal_path(dir: &Path) -> PathBuf {
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "checkpoint".into());
    dir.join(format!(".{name}{JOURNAL_SUFFIX}"))
}

fn not_pure(msg: String, name: &str) -> Error {
    Error::unsupported(format!("--in-place handles pure renames only: {msg}"))
        .tensor(name)
        .hint("run without --in-place to write a converted copy")
}

/// Plan an in-place rewrite of `view` (every view tensor one whole physical tensor, each used once,
/// shapes unchanged). Fails, naming the shard and how many bytes are missing, when a new header does
/// not fit the old one's space.
pub fn plan_in_place(view: &View) -> Result<InPlacePlan> {
    let ck = view.ckpt;
    // Only a safetensors header can be rewritten in place; a torch archive's names live in its pickle.
    if let Some(s) = ck.shards.iter().find(|s| s.torch().is_some()) {
        return Err(Error::unsupported(
            "--in-place rewrites safetensors headers; this is a PyTorch archive",
        )
        .file(&s.path)
        .hint("convert it to a new directory instead (without --in-place)"));
    }
    let mut new_name: Vec<Option<&str>> = vec![None; ck.tensors.len()];
    for vt in &view.tensors {
        let i = vt.is_whole_tensor(ck).ok_or_else(|| {
            not_pure(
                format!("the tensor is made by `{}`", vt.transform),
                &vt.name,
            )
        })?;
        let phys = ck
            .tensors
            .get(i)
            .ok_or_else(|| Error::internal("bad tensor index"))?;
        if phys.shape != vt.shape || phys.dtype != vt.dtype {
            return Err(not_pure("its shape or dtype changes".into(), &vt.name));
        }
        match new_name.get_mut(i) {
            Some(slot @ None) => *slot = Some(&vt.name),
            _ => return Err(not_pure(format!("`{}` is used twice", phys.name), &vt.name)),
        }
    }
    if let Some(i) = new_name.iter().position(|n| n.is_none()) {
        let name = ck.tensors.get(i).map(|t| t.name.as_str()).unwrap_or("?");
        return Err(not_pure(
            "the tensor would be dropped, which leaves a hole in the data section".into(),
            name,
        ));
    }
    let mut headers = Vec::new();
    let mut short = Vec::new();
    let mut renamed = 0usize;
    for (si, shard) in ck.shards.iter().enumerate() {
        let idx: Vec<usize> = (0..ck.tensors.len())
            .filter(|&i| ck.tensors.get(i).is_some_and(|t| t.shard == si))
            .collect();
        let changed = idx.iter().filter(|&&i| {
            ck.tensors.get(i).map(|t| t.name.as_str()) != new_name.get(i).copied().flatten()
        });
        let n_changed = changed.count();
        if n_changed == 0 {
            continue;
        }
        renamed += n_changed;
        check_file(&shard.path)?;
        if shard.path.file_name().and_then(|n| n.to_str()) != Some(shard.file_name.as_str()) {
            return Err(Error::unsupported(
                "--in-place needs shard file names that are valid UTF-8 (the journal records them as text)",
            )
            .file(&shard.path)
            .hint("run without --in-place to write a converted copy"));
        }
        let entries: Vec<(String, Dtype, Vec<usize>, usize, usize)> = idx
            .iter()
            .filter_map(|&i| {
                let t = ck.tensors.get(i)?;
                let n = new_name.get(i).copied().flatten()?;
                Some((n.to_string(), t.dtype, t.shape.clone(), t.begin, t.end))
            })
            .collect();
        let full = serialize_header(shard.header.metadata.as_deref(), &entries)?;
        let json = full.get(8..).unwrap_or_default();
        let trimmed_len = json.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        let old_n = shard.header.header_len;
        if trimmed_len > old_n {
            short.push(format!(
                "`{}` needs {} header bytes, has {} ({} bytes short)",
                shard.file_name,
                trimmed_len,
                old_n,
                trimmed_len - old_n
            ));
            continue;
        }
        let mut new = json.get(..trimmed_len).unwrap_or_default().to_vec();
        new.resize(old_n, b' ');
        let mut old = vec![0u8; old_n];
        shard
            .file()
            .read_exact_at(&mut old, 8)
            .map_err(|e| Error::io(&shard.path, "cannot read the header", e))?;
        headers.push(HeaderEdit {
            file: shard.file_name.clone(),
            dev_ino: shard.dev_ino,
            size: shard.size,
            mtime: file_mtime(&shard.path)?,
            old,
            new,
        });
    }
    if !short.is_empty() {
        return Err(Error::unsupported(format!(
            "the renamed header does not fit in the old header's space: {}",
            short.join("; ")
        ))
        .file(&ck.path)
        .hint("run without --in-place to write a converted copy (data is copied with copy_file_range)"));
    }
    // Only `model.safetensors.index.json` is rewritten: an index by another name, or one beside a
    // shard given on its own, would keep the old names and no longer match the renamed headers.
    if renamed > 0 {
        stale_index(ck)?;
    }
    let mut files = Vec::new();
    if let Some(index) = &ck.index
        && renamed > 0
    {
        let mut wm = std::collections::BTreeMap::new();
        for (i, t) in ck.tensors.iter().enumerate() {
            let file = ck
                .shards
                .get(t.shard)
                .map(|s| s.file_name.clone())
                .unwrap_or_default();
            wm.insert(
                new_name
                    .get(i)
                    .copied()
                    .flatten()
                    .unwrap_or(&t.name)
                    .to_string(),
                file,
            );
        }
        let v = json!({"metadata": Value::Object(index.metadata.clone()), "weight_map": wm});
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        files.push(file_edit(&ck.dir, INDEX_NAME, text.into_bytes())?);
    }
    if let (Some(vc), Some((name, text))) = (&view.config, super::config_output(view))
        && ck.config.as_ref().is_none_or(|c| c.raw != vc.raw)
    {
        files.push(file_edit(&ck.dir, name, text.into_bytes())?);
    }
    Ok(InPlacePlan {
        dir: ck.dir.clone(),
        headers,
        files,
        renamed,
    })
}

/// Refuse an in-place rename that would leave a safetensors index of the directory naming the old
/// tensor names: any `*.safetensors.index.json` there other than the checkpoint's own
/// `model.safetensors.index.json` (which is rewritten with the headers).
fn stale_index(ck: &crate::checkpoint::Checkpoint) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let own = ck.index.as_ref().and_then(|i| i.path.file_name());
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&ck.dir)
        .map_err(|e| Error::io(&ck.dir, "cannot list", e))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let b = n.as_bytes();
            b.ends_with(b".safetensors.index.json")
                && !b.starts_with(b".")
                && !(n == INDEX_NAME && own == Some(n.as_os_str()))
        })
        .collect();
    names.sort();
    let Some(n) = names.first() else {
        return Ok(());
    };
    let p = ck.dir.join(n);
    let why = if own.is_none() {
        "a shard given on its own is renamed without its directory's index"
    } else {
        "--in-place rewrites only the checkpoint's `model.safetensors.index.json`"
    };
    Err(Error::unsupported(format!(
        "{why}: the index `{}` lists these shards by tensor name and would keep the old names (nothing was changed)",
        escape_path(Path::new(n))
    ))
    .file(&p)
    .hint(if n == INDEX_NAME {
        "run it on the checkpoint directory (all shards and the index together), or without --in-place"
    } else {
        "run without --in-place to write a converted copy"
    }))
}

fn file_edit(dir: &Path, name: &str, new: Vec<u8>) -> Result<FileEdit> {
    let p = dir.join(name);
    let old = match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&p, "cannot read", e)),
    };
    Ok(FileEdit {
        file: name.to_string(),
        old,
        new,
    })
}

/// Refuse files that must not be edited in place: symlinks (HF cache snapshots point into
/// `blobs/`), files with other hard links, anything under a `blobs/` directory.
fn check_file(path: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "cannot stat", e))?;
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::CannotCreate,
            format!("refusing to edit in place: {why}"),
        )
        .file(path)
        .hint("run without --in-place to write a converted copy"))
    };
    if m.file_type().is_symlink() {
        return refuse("the file is a symlink (a Hugging Face cache snapshot?)");
    }
    if m.nlink() != 1 {
        return refuse("the file has other hard links that would change too");
    }
    if path.components().any(|c| c.as_os_str() == "blobs") {
        return refuse("the file is inside a `blobs/` directory of a Hugging Face cache");
    }
    Ok(())
}

fn file_mtime(path: &Path) -> Result<(i64, i64)> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "cannot stat", e))?;
    Ok((m.mtime(), m.mtime_nsec()))
}

/// The identity of a file a journal binds to: device, inode, size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// `(st_mtime, st_mtime_nsec)`.
    pub mtime: (i64, i64),
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// Names a journal may name: shard files (`*.safetensors`) for header entries, and only the
/// checkpoint's small files for whole-file entries.
const JOURNAL_FILES: [&str; 3] = ["config.json", "params.json", INDEX_NAME];

/// One entry of a journal's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum JournalEntry {
    /// A shard header rewritten in place at byte 8.
    Header {
        /// Shard file name (one component ending in `.safetensors`).
        file: String,
        /// The shard's identity before the run.
        id: FileId,
        /// Header length (the old and the new header blobs both have it).
        len: u64,
    },
    /// A small file replaced by renaming a temporary `.<file>.ckpt-tmp-<run>` over it.
    File {
        /// `config.json`, `params.json` or the index.
        file: String,
        /// Identity of the old file (`None`: it did not exist).
        old: Option<FileId>,
        /// Identity of the new file (the temporary written before the journal).
        new: FileId,
        /// Length of the old contents blob (0 when absent).
        old_len: u64,
        /// Length of the new contents blob.
        new_len: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalDesc {
    version: u32,
    run: String,
    dir: (u64, u64),
    stamp: (i64, i64),
    entries: Vec<JournalEntry>,
}

/// A parsed, checksummed journal (not yet checked against the files on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The run id (12 hex digits); temporaries of the run are `.<file>.ckpt-tmp-<run>`.
    pub run: String,
    /// `(st_dev, st_ino)` of the checkpoint directory the journal was written for.
    pub dir: (u64, u64),
    /// The modification time every rewritten shard is given after its header is written.
    pub stamp: (i64, i64),
    /// The entries with their blobs: `(entry, old bytes, new bytes)`.
    pub entries: Vec<(JournalEntry, Option<Vec<u8>>, Vec<u8>)>,
}

/// Largest journal read (headers are at most 100 MB each).
pub const MAX_JOURNAL_BYTES: u64 = 1 << 32;

fn check_run_id(run: &str) -> bool {
    run.len() == 12 && run.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse journal bytes: magic, description length, description (strict JSON: unknown fields,
/// names outside the allowed set, duplicate files and lengths that do not add up are refused),
/// blobs, SHA-256 of everything before it. Never panics; the error says what is wrong.
pub fn parse_journal(bytes: &[u8]) -> std::result::Result<Journal, String> {
    let body_len = bytes
        .len()
        .checked_sub(32)
        .ok_or("shorter than a checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if body.get(..8) != Some(MAGIC.as_slice()) {
        return Err("not a ckpt journal (bad magic)".into());
    }
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch (incomplete or damaged)".into());
    }
    let dlen = body
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("truncated description length")?;
    let dend = 16usize.checked_add(dlen).ok_or("description too long")?;
    let desc_bytes = body.get(16..dend).ok_or("truncated description")?;
    let desc: JournalDesc =
        serde_json::from_slice(desc_bytes).map_err(|e| format!("bad description: {e}"))?;
    if desc.version != 2 {
        return Err(format!("unknown journal version {}", desc.version));
    }
    if !check_run_id(&desc.run) {
        return Err("bad run id".into());
    }
    let mut pos = dend;
    let mut take = |n: u64| -> std::result::Result<Vec<u8>, String> {
        let n = usize::try_from(n).map_err(|_| "blob too long")?;
        let end = pos.checked_add(n).ok_or("blob too long")?;
        let b = body.get(pos..end).ok_or("truncated blob")?.to_vec();
        pos = end;
        Ok(b)
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut entries = Vec::with_capacity(desc.entries.len());
    for e in &desc.entries {
        let file = match e {
            JournalEntry::Header { file, .. } | JournalEntry::File { file, .. } => file.as_str(),
        };
        if seen.contains(&file) {
            return Err(format!("`{}` appears twice", escape(file)));
        }
        seen.push(file);
        let plain = crate::checkpoint::index::validate_shard_name(file).is_ok();
        match e {
            JournalEntry::Header { len, .. } => {
                if !plain || !file.ends_with(".safetensors") || file.starts_with('.') {
                    return Err(format!("header entry names `{}`", escape(file)));
                }
                let old = take(*len)?;
                let new = take(*len)?;
                entries.push((e.clone(), Some(old), new));
            }
            JournalEntry::File {
                old,
                new,
                old_len,
                new_len,
                ..
            } => {
                if !JOURNAL_FILES.contains(&file) {
                    return Err(format!("file entry names `{}`", escape(file)));
                }
                if new.size != *new_len || old.is_some_and(|o| o.size != *old_len) {
                    return Err(format!("sizes of `{}` disagree", escape(file)));
                }
                let o = match old {
                    Some(_) => Some(take(*old_len)?),
                    None if *old_len == 0 => None,
                    None => return Err("old length without an old file".into()),
                };
                let n = take(*new_len)?;
                entries.push((e.clone(), o, n));
            }
        }
    }
    if pos != body.len() {
        return Err("bytes after the last blob".into());
    }
    Ok(Journal {
        run: desc.run,
        dir: desc.dir,
        stamp: desc.stamp,
        entries,
    })
}

impl Journal {
    /// Serialise the journal as [`write_journal`] does (magic, description, blobs, SHA-256):
    /// `parse_journal(j.to_bytes()) == j` for every parsed journal.
    pub fn to_bytes(&self) -> Vec<u8> {
        let desc = JournalDesc {
            version: 2,
            run: self.run.clone(),
            dir: self.dir,
            stamp: self.stamp,
            entries: self.entries.iter().map(|(e, _, _)| e.clone()).collect(),
        };
        let mut blobs: Vec<&[u8]> = Vec::new();
        for (_, old, new) in &self.entries {
            if let Some(o) = old {
                blobs.push(o);
            }
            blobs.push(new);
        }
        journal_bytes(&desc, &blobs)
    }
}

/// Frame a journal description (JSON) and blobs with the magic, the length and the checksum, as
/// the writer does; for tests and the fuzz target, which must reach past the checksum.
pub fn frame_journal(desc_json: &[u8], blobs: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(desc_json.len() as u64).to_le_bytes());
    out.extend_from_slice(desc_json);
    out.extend_from_slice(blobs);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn journal_bytes(desc: &JournalDesc, blobs: &[&[u8]]) -> Vec<u8> {
    let d = serde_json::to_vec(desc).unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(d.len() as u64).to_le_bytes());
    out.extend_from_slice(&d);
    for b in blobs {
        out.extend_from_slice(b);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The temporary name of a small file replaced by run `run`: `.<file>.ckpt-tmp-<run>`.
fn temp_name(file: &str, run: &str) -> String {
    format!(".{file}.ckpt-tmp-{run}")
}

/// An exclusive `flock` on the checkpoint directory, held for a whole `--in-place` run or
/// recovery: a second run fails at once instead of interleaving (released on drop).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Lock `dir` (`flock(LOCK_EX | LOCK_NB)` on the directory itself, so nothing is created in it).
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| Error::io(dir, "cannot open the directory", e))?;
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(Error::new(
            ErrorKind::CannotCreate,
            "another ckpt run is editing this checkpoint directory (it is locked)",
        )
        .file(dir)
        .hint("wait for it to finish; nothing was changed"));
    }
    Ok(DirLock { _dir: f })
}

/// A journal written for a run, with what the run needs to apply it.
#[derive(Debug)]
pub struct JournalRun {
    /// The journal file.
    pub path: PathBuf,
    /// The run id.
    pub run: String,
    /// The modification time given to rewritten shards.
    pub stamp: (i64, i64),
}

/// Prepare a run and write its journal durably: the new small files are written to
/// `.<file>.ckpt-tmp-<run>` and fsynced first (their identities go into the journal), then the
/// journal (file fsync, directory fsync). Fails if a journal already exists. Nothing of the
/// checkpoint has changed when this returns. The caller holds the directory lock.
pub fn write_journal(plan: &InPlacePlan) -> Result<JournalRun> {
    let path = journal_path(&plan.dir);
    let run = fsio::random_suffix();
    let dm = std::fs::metadata(&plan.dir).map_err(|e| Error::io(&plan.dir, "cannot stat", e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = (
        i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        i64::from(now.subsec_nanos()),
    );
    let mut entries = Vec::new();
    let mut blobs: Vec<&[u8]> = Vec::new();
    for h in &plan.headers {
        entries.push(JournalEntry::Header {
            file: h.file.clone(),
            id: FileId {
                dev: h.dev_ino.0,
                ino: h.dev_ino.1,
                size: h.size,
                mtime: h.mtime,
            },
            len: h.old.len() as u64,
        });
        blobs.push(&h.old);
        blobs.push(&h.new);
    }
    let mut temps = Vec::new();
    let cleanup = |temps: &[PathBuf]| {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for f in &plan.files {
        let p = plan.dir.join(&f.file);
        let old = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Some(FileId::of(&m)),
            Ok(m) => {
                cleanup(&temps);
                return Err(Error::new(
                    ErrorKind::CannotCreate,
                    format!("refusing to replace {}", super::guard::type_name(&m)),
                )
                .file(&p));
            }
            Err(_) => None,
        };
        let tmp = plan.dir.join(temp_name(&f.file, &run));
        let written = (|| -> io::Result<FileId> {
            let t = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&tmp)?;
            kill_point();
            t.write_all_at(&f.new, 0)?;
            t.sync_all()?;
            Ok(FileId::of(&t.metadata()?))
        })();
        temps.push(tmp.clone());
        let new = match written {
            Ok(id) => id,
            Err(e) => {
                cleanup(&temps);
                return Err(Error::io_write(&p, "cannot write the new file", e));
            }
        };
        entries.push(JournalEntry::File {
            file: f.file.clone(),
            old,
            new,
            old_len: f.old.as_ref().map_or(0, |o| o.len() as u64),
            new_len: f.new.len() as u64,
        });
        if let Some(o) = &f.old {
            blobs.push(o);
        }
        blobs.push(&f.new);
    }
    let desc = JournalDesc {
        version: 2,
        run: run.clone(),
        dir: (dm.dev(), dm.ino()),
        stamp,
        entries,
    };
    let bytes = journal_bytes(&desc, &blobs);
    let w = |e| Error::io_write(&path, "cannot write the journal", e);
    // The journal is written and fsynced under a temporary name (`.ckpt-tmp-`: `--clean` removes
    // it, readers ignore it) and renamed into place, so a journal only ever exists complete: a run
    // killed between creating the journal and writing it must not leave an empty journal that
    // `--recover` cannot tell from a planted one (every command would refuse the checkpoint).
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".ckpt-tmp-{run}"));
    let tmp = plan.dir.join(tmp_name);
    let mut placed = false;
    let res = (|| -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        kill_point();
        f.write_all_at(&bytes, 0)?;
        f.sync_all()?;
        fsio::rename_noreplace(&tmp, &path)?;
        placed = true;
        fsio::sync_dir(&plan.dir)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        if placed {
            let _ = std::fs::remove_file(&path);
        }
        cleanup(&temps);
        return Err(w(e));
    }
    Ok(JournalRun { path, run, stamp })
}

/// Tests of crash safety (debug builds only): `CKPT_TEST_KILL_AT_STEP=N` makes the process
/// SIGKILL itself at the N-th step boundary of an in-place run (1-based), as a `kill -9` there would.
fn kill_point() {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static STEP: AtomicU64 = AtomicU64::new(0);
        let at = std::env::var("CKPT_TEST_KILL_AT_STEP")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(at) = at
            && STEP.fetch_add(1, Ordering::SeqCst) + 1 == at
        {
            // SAFETY: plain syscalls; the process ends here as it would under `kill -9`.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

fn set_mtime(f: &File, t: (i64, i64)) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: t.0 as libc::time_t,
            tv_nsec: t.1 as libc::c_long,
        },
    ];
    // SAFETY: plain syscall on an open fd with a live two-element array.
    let r = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pending journals of a directory (`.*.ckpt-hdr-journal`).
pub fn pending_journals(dir: &Path) -> Vec<PathBuf> {
    crate::checkpoint::pending_journals(dir)
}

/// Apply a plan: lock the directory for the whole run, refuse when a journal is pending (never
/// recovers implicitly), check every file is still what was planned, write the journal, rewrite
/// each header (pwrite + mtime stamp + fsync + re-validate), rename the new small files into
/// place, then remove the journal (the commit point). On any failure the files are rolled back
/// from the journal before the error is returned.
pub fn apply(plan: &InPlacePlan) -> Result<()> {
    let _lock = lock_dir(&plan.dir)?;
    if let Some(j) = pending_journals(&plan.dir).first() {
        return Err(pending_error(&plan.dir, j));
    }
    let mut opened = Vec::with_capacity(plan.headers.len());
    for h in &plan.headers {
        let p = plan.dir.join(&h.file);
        let f = open_rw(&p).map_err(|e| Error::io_write(&p, "cannot open for writing", e))?;
        let m = f.metadata().map_err(|e| Error::io(&p, "cannot stat", e))?;
        let mut cur = vec![0u8; h.old.len()];
        f.read_exact_at(&mut cur, 8)
            .map_err(|e| Error::io(&p, "cannot read the header", e))?;
        if (m.dev(), m.ino()) != h.dev_ino || m.len() != h.size || cur != h.old {
            return Err(Error::new(
                ErrorKind::BadData,
                "the file changed since it was read; nothing was changed",
            )
            .file(&p));
        }
        opened.push((f, p));
    }
    let journal = write_journal(plan)?;
    let result = apply_journaled(plan, &opened, &journal);
    drop(opened);
    match result {
        Ok(()) => {
            kill_point();
            std::fs::remove_file(&journal.path)
                .map_err(|e| Error::io_write(&journal.path, "cannot remove the journal", e))?;
            fsio::sync_dir(&plan.dir)
                .map_err(|e| Error::io_write(&plan.dir, "cannot sync the directory", e))?;
            Ok(())
        }
        Err(e) => {
            let _ = recover_journal(&plan.dir, &journal.path);
            Err(e)
        }
    }
}

fn apply_journaled(plan: &InPlacePlan, opened: &[(File, PathBuf)], j: &JournalRun) -> Result<()> {
    for (h, (f, p)) in plan.headers.iter().zip(opened) {
        kill_point();
        f.write_all_at(&h.new, 8)
            .map_err(|e| Error::io_write(p, "cannot write the new header", e))?;
        kill_point();
        set_mtime(f, j.stamp).map_err(|e| Error::io_write(p, "cannot set the time", e))?;
        f.sync_all()
            .map_err(|e| Error::io_write(p, "cannot sync the new header", e))?;
        let mut back = vec![0u8; h.new.len()];
        f.read_exact_at(&mut back, 8)
            .map_err(|e| Error::io(p, "cannot read the header back", e))?;
        let parsed = parse_header(&back, h.size).map_err(|e| e.file(p))?;
        let old = parse_header(&h.old, h.size).map_err(|e| e.file(p))?;
        let same_layout = parsed.tensors.len() == old.tensors.len()
            && parsed.tensors.iter().zip(&old.tensors).all(|(a, b)| {
                a.begin == b.begin && a.end == b.end && a.shape == b.shape && a.dtype == b.dtype
            });
        if back != h.new || !same_layout {
            return Err(
                Error::internal("the rewritten header does not read back as planned").file(p),
            );
        }
    }
    for fe in &plan.files {
        let dst = plan.dir.join(&fe.file);
        std::fs::rename(plan.dir.join(temp_name(&fe.file, &j.run)), &dst)
            .map_err(|e| Error::io_write(&dst, "cannot move the new file into place", e))?;
        kill_point();
    }
    fsio::sync_dir(&plan.dir).map_err(|e| Error::io_write(&plan.dir, "cannot sync", e))?;
    Ok(())
}

fn pending_error(dir: &Path, j: &Path) -> Error {
    crate::checkpoint::pending_journal_error(dir, j)
}

/// Replace `dir/name` with `bytes` atomically through `tmp` (write + fsync + rename + dir fsync).
fn replace_file(dir: &Path, name: &str, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let dst = dir.join(name);
    let w = |e| Error::io_write(&dst, "cannot write", e);
    let _ = std::fs::remove_file(tmp);
    let res = (|| -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
        std::fs::rename(tmp, &dst)?;
        fsio::sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    res.map_err(w)
}

/// Roll back every journal found in `dir` (`ckpt convert --recover DIR`; never run implicitly),
/// under the directory lock. Returns one line per action.
///
/// Trust model: a journal is applied only when it is bound to this directory and these files: the
/// directory's `(dev, ino)`, and for every entry the file's `(dev, ino, size)` and an mtime this
/// run can have given it; entries may name only `*.safetensors` shards (header entries) and
/// `config.json`/`params.json`/the index (file entries). Restoring writes only what the journal
/// recorded as displaced by this tool. Any mismatch refuses the whole journal (nothing is applied
/// and it is left in place). A journal with a bad checksum (the run was killed while writing it,
/// before any checkpoint file changed) is removed with the temporaries of its run.
pub fn recover(dir: &Path) -> Result<Vec<String>> {
    let _lock = lock_dir(dir)?;
    let mut log = Vec::new();
    for j in pending_journals(dir) {
        log.extend(recover_journal(dir, &j)?);
    }
    Ok(log)
}

fn read_journal(j: &Path, dir_id: &std::fs::Metadata) -> Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(j)
        .map_err(|e| Error::io(j, "cannot open the journal", e))?;
    let m = f.metadata().map_err(|e| Error::io(j, "cannot stat", e))?;
    if !m.is_file() || m.len() > MAX_JOURNAL_BYTES {
        return Err(Error::bad_data(format!(
            "the journal is {} of {} bytes; not applied",
            super::guard::type_name(&m),
            m.len()
        ))
        .file(j)
        .hint("ckpt did not write this; inspect it and delete it by hand"));
    }
    // Before reading the blobs (up to the size of every header), check that the description is
    // bound to this directory: a planted journal costs at most its description's bounded read.
    let refuse = |why: &str| {
        Error::bad_data(format!(
            "the journal does not belong to this checkpoint ({why}); it was not applied and nothing was changed"
        ))
        .file(j)
        .hint("ckpt did not write this journal for these files; inspect the checkpoint and delete the journal by hand")
    };
    let mut head = [0u8; 16];
    if m.len() >= 16
        && f.read_exact_at(&mut head, 0).is_ok()
        && head.starts_with(MAGIC)
        && let Ok(dlen) = <[u8; 8]>::try_from(&head[8..16]).map(u64::from_le_bytes)
    {
        if dlen > MAX_DESCRIPTION_BYTES || dlen.saturating_add(16) > m.len() {
            return Err(refuse("its description length is impossible"));
        }
        let mut desc = vec![0u8; usize::try_from(dlen).unwrap_or(0)];
        f.read_exact_at(&mut desc, 16)
            .map_err(|e| Error::io(j, "cannot read the journal", e))?;
        if let Ok(d) = serde_json::from_slice::<JournalDesc>(&desc)
            && (d.dir.0, d.dir.1) != (dir_id.dev(), dir_id.ino())
        {
            return Err(refuse("it was written for another directory"));
        }
    }
    let mut bytes = vec![0u8; usize::try_from(m.len()).unwrap_or(0)];
    f.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io(j, "cannot read the journal", e))?;
    Ok(bytes)
}

/// Largest journal description read before the directory binding is checked.
const MAX_DESCRIPTION_BYTES: u64 = 64 << 20;

fn recover_journal(dir: &Path, j: &Path) -> Result<Vec<String>> {
    let mut log = Vec::new();
    let dm = std::fs::metadata(dir).map_err(|e| Error::io(dir, "cannot stat", e))?;
    let bytes = read_journal(j, &dm)?;
    let refuse = |why: String| {
        Error::bad_data(format!(
            "the journal does not belong to this checkpoint ({why}); it was not applied and nothing was changed"
        ))
        .file(j)
        .hint("ckpt did not write this journal for these files; inspect the checkpoint and delete the journal by hand")
    };
    let journal = match parse_journal(&bytes) {
        Ok(jn) => jn,
        Err(why) if bytes.starts_with(MAGIC) && why.starts_with("checksum") => {
            // Killed while writing the journal: no checkpoint file changed yet.
            std::fs::remove_file(j).map_err(|e| Error::io_write(j, "cannot remove", e))?;
            fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync", e))?;
            log.push(format!(
                "removed incomplete journal `{}` (the run stopped before changing any file)",
                escape_path(j)
            ));
            return Ok(log);
        }
        Err(why) => return Err(refuse(why)),
    };
    if (dm.dev(), dm.ino()) != journal.dir {
        return Err(refuse("it was written for another directory".into()));
    }
    let jm = std::fs::symlink_metadata(j).map_err(|e| Error::io(j, "cannot stat", e))?;
    let journal_time = (jm.mtime(), jm.mtime_nsec());
    // Check everything first; apply nothing unless every entry is bound.
    enum Act {
        Header(PathBuf, Vec<u8>, u64, String),
        Restore(String, Vec<u8>),
        Remove(PathBuf, String),
    }
    let mut acts = Vec::new();
    let mut temps = Vec::new();
    for (e, old, new) in &journal.entries {
        match e {
            JournalEntry::Header { file, id, .. } => {
                let old = old.as_deref().unwrap_or_default();
                let p = dir.join(file);
                let m = std::fs::symlink_metadata(&p)
                    .map_err(|_| refuse(format!("`{}` is missing", escape(file))))?;
                let mut cur = vec![0u8; old.len()];
                if m.is_file() {
                    File::open(&p)
                        .and_then(|f| f.read_exact_at(&mut cur, 8))
                        .map_err(|e| Error::io(&p, "cannot read", e))?;
                }
                if m.is_file() && cur == old {
                    continue; // nothing of this file to restore
                }
                let t = (m.mtime(), m.mtime_nsec());
                let bound = m.is_file()
                    && m.nlink() == 1
                    && (m.dev(), m.ino(), m.len()) == (id.dev, id.ino, id.size)
                    && (t == id.mtime || t == journal.stamp || t >= journal_time)
                    && cur
                        .iter()
                        .zip(old)
                        .zip(new)
                        .all(|((c, o), n)| c == o || c == n);
                if !bound {
                    return Err(refuse(format!(
                        "`{}` is not the file it recorded (device, inode, size, time or header differ)",
                        escape(file)
                    )));
                }
                acts.push(Act::Header(p, old.to_vec(), id.size, file.clone()));
            }
            JournalEntry::File {
                file,
                old: old_id,
                new: new_id,
                ..
            } => {
                let p = dir.join(file);
                let tmp = dir.join(temp_name(file, &journal.run));
                if let Ok(tm) = std::fs::symlink_metadata(&tmp)
                    && tm.is_file()
                    && (tm.dev(), tm.ino()) == (new_id.dev, new_id.ino)
                {
                    temps.push(tmp);
                }
                let cur = std::fs::symlink_metadata(&p).ok();
                let cur_bytes = match &cur {
                    Some(m) if m.is_file() => std::fs::read(&p).ok(),
                    _ => None,
                };
                if cur.is_none() && old_id.is_none() || cur_bytes.is_some() && cur_bytes == *old {
                    continue; // already as before the run
                }
                let is_new = cur.as_ref().is_some_and(|m| {
                    m.is_file()
                        && (m.dev(), m.ino(), m.len()) == (new_id.dev, new_id.ino, new_id.size)
                });
                if !is_new {
                    return Err(refuse(format!(
                        "`{}` is neither the old nor the new file it recorded",
                        escape(file)
                    )));
                }
                match old {
                    Some(o) => acts.push(Act::Restore(file.clone(), o.clone())),
                    None => acts.push(Act::Remove(p, file.clone())),
                }
            }
        }
    }
    for a in acts {
        match a {
            Act::Header(p, old, size, file) => {
                let f = open_rw(&p).map_err(|e| Error::io_write(&p, "cannot open", e))?;
                f.write_all_at(&old, 8)
                    .map_err(|e| Error::io_write(&p, "cannot restore the header", e))?;
                f.sync_all()
                    .map_err(|e| Error::io_write(&p, "cannot sync", e))?;
                parse_header(&old, size).map_err(|e| e.file(&p))?;
                log.push(format!("restored the old header of `{}`", escape(&file)));
            }
            Act::Restore(file, old) => {
                let tmp = dir.join(format!(".{file}.ckpt-tmp-{}-r", journal.run));
                replace_file(dir, &file, &tmp, &old)?;
                log.push(format!("restored `{}`", escape(&file)));
            }
            Act::Remove(p, file) => {
                std::fs::remove_file(&p).map_err(|e| Error::io_write(&p, "cannot remove", e))?;
                log.push(format!("removed `{}` (created by the run)", escape(&file)));
            }
        }
    }
    for t in temps {
        let _ = std::fs::remove_file(&t);
    }
    // Temporaries of an interrupted restore of this run (names only this run uses).
    for (e, _, _) in &journal.entries {
        if let JournalEntry::File { file, .. } = e {
            let _ = std::fs::remove_file(dir.join(format!(".{file}.ckpt-tmp-{}-r", journal.run)));
        }
    }
    std::fs::remove_file(j).map_err(|e| Error::io_write(j, "cannot remove the journal", e))?;
    fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync", e))?;
    log.push(format!(
        "rolled back and removed journal `{}`",
        escape_path(j)
    ));
    Ok(log)
}
