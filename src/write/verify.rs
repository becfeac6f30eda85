//! Check the staged output before it is committed (RELIABILITY.md B.1.4): re-open it with the same
//! validator used for inputs, compare its tensor table with the plan, and (unless disabled) compare
//! every tensor's bytes with the source view's through a streamed SHA-256 of both.
//!
//! Both sides are read with `pread` through fixed buffers rather than through the mmaps, so checking
//! a 70 GB model does not grow the process's resident set; the two hashes run on two threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::fsio::CopyCtx;
use super::plan::Plan;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::view::{Segment, View};

const BUF: usize = 4 << 20;

/// Re-open the staged directory and compare it with the plan (structure) and, when `bytes` is set,
/// with the source view (content). `dst` is the name used in errors; `progress` gets bytes checked.
pub fn check_output(
    view: &View,
    plan: &Plan,
    staged: &Path,
    dst: &Path,
    bytes: bool,
    ctx: &CopyCtx,
    progress: Option<&dyn Fn(u64)>,
) -> Result<()> {
    let out = Checkpoint::open(staged).map_err(|e| {
        Error::internal(format!(
            "the written checkpoint does not re-open: {}",
            e.message()
        ))
        .file(dst)
    })?;
    let planned = plan
        .files
        .iter()
        .flat_map(|f| f.tensors.iter().map(move |t| (f.name.as_str(), t)));
    let mut n = 0usize;
    for (file, t) in planned {
        n += 1;
        let got = out.get(&t.name).ok_or_else(|| {
            Error::internal("the tensor is missing from the written checkpoint")
                .file(dst.join(file))
                .tensor(&t.name)
        })?;
        let shard = out.shards.get(got.shard).map(|s| s.file_name.as_str());
        if got.dtype != t.dtype || got.shape != t.shape || shard != Some(file) {
            return Err(Error::internal(format!(
                "written as {} {:?} in `{}`, planned {} {:?} in `{file}`",
                got.dtype,
                got.shape,
                shard.unwrap_or("?"),
                t.dtype,
                t.shape
            ))
            .file(dst.join(file))
            .tensor(&t.name));
        }
    }
    if n != out.tensors.len() {
        return Err(Error::internal(format!(
            "the written checkpoint has {} tensors, planned {n}",
            out.tensors.len()
        ))
        .file(dst));
    }
    if !bytes {
        return Ok(());
    }
    let mut done = 0u64;
    for vt in &view.tensors {
        ctx.check_cancel().map_err(|_| interrupted(dst))?;
        let got = out
            .get(&vt.name)
            .ok_or_else(|| Error::internal("missing after writing").tensor(&vt.name))?;
        let shard = out
            .shards
            .get(got.shard)
            .ok_or_else(|| Error::internal("bad shard index"))?;
        let off = (shard.data_start() as u64).saturating_add(got.begin as u64);
        let (a, b) = rayon::join(
            || hash_view_tensor(view, vt),
            || hash_range(shard.file(), off, got.nbytes() as u64),
        );
        let file = dst.join(&shard.file_name);
        let a = a.map_err(|e| e.tensor(&vt.name))?;
        let b = b.map_err(|e| Error::io(&file, "cannot read back", e).tensor(&vt.name))?;
        if a != b {
            return Err(Error::new(
                ErrorKind::Io,
                "the bytes written differ from the source (SHA-256 mismatch); nothing was committed",
            )
            .file(file)
            .tensor(&vt.name)
            .hint("check the disk (dmesg) and run again"));
        }
        done = done.saturating_add(got.nbytes() as u64);
        if let Some(p) = progress {
            p(done);
        }
    }
    Ok(())
}

fn interrupted(dst: &Path) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        "interrupted; the destination was not created or changed",
    )
    .file(dst)
}

/// SHA-256 of a view tensor's bytes, read with `pread` from the source shards.
pub fn hash_view_tensor(view: &View, vt: &crate::mapping::view::ViewTensor) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    for seg in &vt.segments {
        match seg {
            Segment::Zeros { bytes } => {
                let mut left = *bytes;
                let zeros = vec![0u8; BUF.min(*bytes)];
                while left > 0 {
                    let k = left.min(zeros.len());
                    h.update(zeros.get(..k).unwrap_or_default());
                    left -= k;
                }
            }
            Segment::Rows { .. } => {
                let (si, off, len) = view
                    .segment_location(seg)
                    .ok_or_else(|| Error::internal("segment has no location"))?;
                let shard = view
                    .ckpt
                    .shards
                    .get(si)
                    .ok_or_else(|| Error::internal("bad shard index"))?;
                feed(&mut h, shard.file(), off, len as u64, &mut buf)
                    .map_err(|e| Error::io(&shard.path, "cannot read", e))?;
            }
        }
    }
    Ok(h.finalize().into())
}

/// SHA-256 of `len` bytes of `file` at `off`.
pub fn hash_range(file: &File, off: u64, len: u64) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    feed(&mut h, file, off, len, &mut buf)?;
    Ok(h.finalize().into())
}

fn feed(h: &mut Sha256, file: &File, off: u64, len: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let k = ((len - done) as usize).min(buf.len());
        let b = buf.get_mut(..k).unwrap_or_default();
        file.read_exact_at(b, off.saturating_add(done))?;
        h.update(&*b);
        done = done.saturating_add(k as u64);
    }
    Ok(())
}
