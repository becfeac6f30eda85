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

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fsio;
use crate::checkpoint::INDEX_NAME;
use crate::checkpoint::header::{Dtype, parse_header, serialize_header};
use crate::error::{Error, ErrorKind, Result, escape};
use crate::mapping::view::View;

const MAGIC: &[u8; 8] = b"CKPTJNL1";
/// Suffix of journal files.
pub const JOURNAL_SUFFIX: &str = ".ckpt-hdr-journal";

/// A header to replace in one shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    /// File name in the checkpoint directory.
    pub file: String,
    /// `(st_dev, st_ino)` when planned.
    pub dev_ino: (u64, u64),
    /// File size when planned.
    pub size: u64,
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

/// Serialise the journal: magic, JSON description, the blobs, then a SHA-256 of all of it.
pub fn journal_bytes(plan: &InPlacePlan) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut blobs: Vec<&[u8]> = Vec::new();
    for h in &plan.headers {
        entries.push(
            json!({"kind": "header", "file": h.file, "dev": h.dev_ino.0, "ino": h.dev_ino.1,
            "size": h.size, "offset": 8, "len": h.old.len()}),
        );
        blobs.push(&h.old);
        blobs.push(&h.new);
    }
    for f in &plan.files {
        entries.push(json!({"kind": "file", "file": f.file,
            "old_len": f.old.as_ref().map(|o| o.len()), "new_len": f.new.len()}));
        if let Some(o) = &f.old {
            blobs.push(o);
        }
        blobs.push(&f.new);
    }
    let desc = serde_json::to_vec(&json!({"version": 1, "entries": entries})).unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(desc.len() as u64).to_le_bytes());
    out.extend_from_slice(&desc);
    for b in blobs {
        out.extend_from_slice(b);
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Write the journal durably (file fsync, then directory fsync). Fails if one already exists.
pub fn write_journal(plan: &InPlacePlan) -> Result<PathBuf> {
    let path = journal_path(&plan.dir);
    let bytes = journal_bytes(plan);
    let w = |e| Error::io_write(&path, "cannot write the journal", e);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(w)?;
    f.write_all_at(&bytes, 0).map_err(w)?;
    f.sync_all().map_err(w)?;
    fsio::sync_dir(&plan.dir).map_err(w)?;
    Ok(path)
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

fn lock(f: &File, path: &Path) -> Result<()> {
    // SAFETY: plain syscall on an open fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(Error::new(
            ErrorKind::CannotCreate,
            "another process holds a lock on the file",
        )
        .file(path));
    }
    Ok(())
}

/// Apply a plan: recover leftovers, write the journal, rewrite each header (pwrite + fsync +
/// re-validate), replace the small files atomically, then remove the journal. On any failure the
/// files are rolled back from the journal before the error is returned.
pub fn apply(plan: &InPlacePlan) -> Result<()> {
    let mut opened = Vec::with_capacity(plan.headers.len());
    for h in &plan.headers {
        let p = plan.dir.join(&h.file);
        let f = open_rw(&p).map_err(|e| Error::io_write(&p, "cannot open for writing", e))?;
        lock(&f, &p)?;
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
    let result = apply_journaled(plan, &opened);
    drop(opened);
    match result {
        Ok(()) => {
            std::fs::remove_file(&journal)
                .map_err(|e| Error::io_write(&journal, "cannot remove the journal", e))?;
            fsio::sync_dir(&plan.dir)
                .map_err(|e| Error::io_write(&plan.dir, "cannot sync the directory", e))?;
            Ok(())
        }
        Err(e) => {
            let _ = recover(&plan.dir);
            Err(e)
        }
    }
}

fn apply_journaled(plan: &InPlacePlan, opened: &[(File, PathBuf)]) -> Result<()> {
    for (h, (f, p)) in plan.headers.iter().zip(opened) {
        f.write_all_at(&h.new, 8)
            .map_err(|e| Error::io_write(p, "cannot write the new header", e))?;
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
        replace_file(&plan.dir, &fe.file, &fe.new)?;
    }
    Ok(())
}

/// Replace `dir/name` with `bytes` atomically (temp + fsync + rename + dir fsync).
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let dst = dir.join(name);
    let w = |e| Error::io_write(&dst, "cannot write", e);
    let tmp = dir.join(format!(".{name}.ckpt-tmp-{}", fsio::random_suffix()));
    let res = (|| -> io::Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dst)?;
        fsio::sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(w)
}

/// A parsed journal entry.
enum Entry {
    Header {
        file: String,
        dev_ino: (u64, u64),
        size: u64,
        old: Vec<u8>,
    },
    File {
        file: String,
        old: Option<Vec<u8>>,
    },
}

fn parse_journal(bytes: &[u8]) -> Option<Vec<Entry>> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum || body.get(..8)? != MAGIC {
        return None;
    }
    let dlen = usize::try_from(u64::from_le_bytes(body.get(8..16)?.try_into().ok()?)).ok()?;
    let desc: Value = serde_json::from_slice(body.get(16..16usize.checked_add(dlen)?)?).ok()?;
    let mut pos = 16usize.checked_add(dlen)?;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let b = body.get(pos..pos.checked_add(n)?)?.to_vec();
        pos += n;
        Some(b)
    };
    let mut out = Vec::new();
    for e in desc.get("entries")?.as_array()? {
        let file = e.get("file")?.as_str()?.to_string();
        if file.contains('/') || file == ".." || file.is_empty() {
            return None;
        }
        match e.get("kind")?.as_str()? {
            "header" => {
                let len = usize::try_from(e.get("len")?.as_u64()?).ok()?;
                let old = take(len)?;
                let _new = take(len)?;
                out.push(Entry::Header {
                    file,
                    dev_ino: (e.get("dev")?.as_u64()?, e.get("ino")?.as_u64()?),
                    size: e.get("size")?.as_u64()?,
                    old,
                });
            }
            "file" => {
                let old = match e.get("old_len")? {
                    Value::Null => None,
                    v => Some(take(usize::try_from(v.as_u64()?).ok()?)?),
                };
                let _new = take(usize::try_from(e.get("new_len")?.as_u64()?).ok()?)?;
                out.push(Entry::File { file, old });
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Roll back every journal found in `dir` (restoring old headers and files), then remove it.
/// Returns one line per action. A journal whose file identity does not match is an error and is
/// left in place; an incomplete journal (the run died while writing it, before any file changed)
/// is removed.
pub fn recover(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list directory", e))?;
    let mut journals: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && n.ends_with(JOURNAL_SUFFIX)
        })
        .map(|e| e.path())
        .collect();
    journals.sort();
    let mut log = Vec::new();
    for j in journals {
        let bytes = std::fs::read(&j).map_err(|e| Error::io(&j, "cannot read the journal", e))?;
        let Some(entries) = parse_journal(&bytes) else {
            std::fs::remove_file(&j).map_err(|e| Error::io_write(&j, "cannot remove", e))?;
            fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync", e))?;
            log.push(format!(
                "removed incomplete journal `{}` (the run stopped before changing any file)",
                j.display()
            ));
            continue;
        };
        for e in &entries {
            if let Entry::Header {
                file,
                dev_ino,
                size,
                ..
            } = e
            {
                let p = dir.join(file);
                let m =
                    std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "cannot stat", e))?;
                if (m.dev(), m.ino()) != *dev_ino || m.len() != *size || !m.is_file() {
                    return Err(Error::bad_data(format!(
                        "the journal `{}` does not match this file (identity or size changed); not applied",
                        j.display()
                    ))
                    .file(&p)
                    .hint("inspect the file; delete the journal by hand once it is known to be good"));
                }
            }
        }
        for e in entries {
            match e {
                Entry::Header {
                    file, old, size, ..
                } => {
                    let p = dir.join(&file);
                    let f = open_rw(&p).map_err(|e| Error::io_write(&p, "cannot open", e))?;
                    let mut cur = vec![0u8; old.len()];
                    f.read_exact_at(&mut cur, 8)
                        .map_err(|e| Error::io(&p, "cannot read", e))?;
                    if cur != old {
                        f.write_all_at(&old, 8)
                            .map_err(|e| Error::io_write(&p, "cannot restore the header", e))?;
                        f.sync_all()
                            .map_err(|e| Error::io_write(&p, "cannot sync", e))?;
                        parse_header(&old, size).map_err(|e| e.file(&p))?;
                        log.push(format!("restored the old header of `{}`", escape(&file)));
                    }
                }
                Entry::File { file, old } => {
                    let p = dir.join(&file);
                    let cur = std::fs::read(&p).ok();
                    if cur != old {
                        match &old {
                            Some(o) => replace_file(dir, &file, o)?,
                            None => {
                                std::fs::remove_file(&p)
                                    .map_err(|e| Error::io_write(&p, "cannot remove", e))?;
                            }
                        }
                        log.push(format!("restored `{}`", escape(&file)));
                    }
                }
            }
        }
        std::fs::remove_file(&j)
            .map_err(|e| Error::io_write(&j, "cannot remove the journal", e))?;
        fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync", e))?;
        log.push(format!("rolled back and removed journal `{}`", j.display()));
    }
    Ok(log)
}
