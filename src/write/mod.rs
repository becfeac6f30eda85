//! Writing a [`View`] as a Hub-ready checkpoint directory, crash-safely (DESIGN.md §5,
//! RELIABILITY.md B.1–B.6).
//!
//! Everything is decided before the first byte is written: the view was built from validated inputs,
//! [`plan::plan`] computes every header and offset with checked arithmetic, the destination is
//! checked (not a symlink, not inside or containing the source, not aliasing an input, not existing
//! unless `force`), and `statvfs` says the space is there. The output is then assembled in a sibling
//! staging directory `.<dst>.ckpt-tmp-<random>` (tensor data streamed with `copy_file_range` from the
//! source shards, memory bounded by one buffer), every file flushed and fsynced, re-opened and
//! checked against the source, and only then renamed into place, followed by an fsync of the parent.
//! Any error or interrupt removes the staging directory and leaves the destination as it was.
//!
//! [`inplace`] rewrites headers of an existing checkpoint in place under a rollback journal when a
//! conversion is only renames and the new headers fit.

pub mod fsio;
pub mod inplace;
pub mod plan;
pub mod select;
pub mod value;
pub mod verify;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::checkpoint::config::ConfigSource;
use crate::checkpoint::{Checkpoint, INDEX_NAME};
use crate::error::{Error, ErrorKind, Result, escape};
use crate::mapping::view::{Segment, View};
use crate::report::human_bytes;

use fsio::CopyCtx;
pub use plan::{DEFAULT_MAX_SHARD_SIZE, Plan, parse_size};

/// Deepest directory level copied or walked below a checkpoint directory.
pub const MAX_DEPTH: usize = 16;
/// Amount of data copied between two writeback kicks (`sync_file_range`).
const WRITEBACK_STEP: u64 = 64 << 20;
/// Largest extra space (beyond the output's size, up to 1% of it, plus 64 KiB for directory
/// entries) the preflight check asks for.
pub const SPACE_MARGIN: u64 = 1 << 20;

/// Which part of the work a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the output files.
    Write,
    /// Reading the output back and comparing it with the source.
    Verify,
}

/// A check run on the staged output directory just before the commit.
pub type BeforeCommit<'a> = dyn Fn(&Path) -> Result<()> + 'a;

/// Options of [`write_view`].
#[derive(Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Largest amount of tensor data per shard file.
    pub max_shard_size: u64,
    /// Replace an existing destination directory (swapped only at the final step).
    pub force: bool,
    /// Compare every tensor's bytes with the source before committing.
    pub verify_bytes: bool,
    /// Do not copy `*.py` files (remote code of the source family).
    pub drop_remote_code: bool,
    /// Set from a signal handler to stop; checked between chunks.
    pub cancel: Option<&'a AtomicBool>,
    /// Called with (phase, bytes done, bytes total).
    pub progress: Option<&'a dyn Fn(Phase, u64, u64)>,
    /// Called with the staged output directory after it is written, fsynced and byte-checked, just
    /// before the commit; an error aborts the write (the staging directory is removed and the
    /// destination keeps what it had). `convert --verify` runs the logits comparison here.
    pub before_commit: Option<&'a BeforeCommit<'a>>,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            force: false,
            verify_bytes: true,
            drop_remote_code: false,
            cancel: None,
            progress: None,
            before_commit: None,
        }
    }
}

/// What [`write_view`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// The destination directory.
    pub dst: PathBuf,
    /// Number of tensors written.
    pub tensors: usize,
    /// Bytes of tensor data.
    pub data_bytes: u64,
    /// Bytes of all files written (shards, index, config, copies).
    pub total_bytes: u64,
    /// Safetensors files written.
    pub shard_files: Vec<String>,
    /// The config file written (`config.json` or `params.json`), if any.
    pub config_file: Option<String>,
    /// Other files copied from the source (relative paths).
    pub copied_files: Vec<String>,
    /// Source files deliberately not copied (remote code).
    pub dropped_files: Vec<String>,
    /// Source entries skipped because they are not regular files or directories.
    pub skipped_files: Vec<String>,
    /// Weight files of the source that are not part of the converted checkpoint, not copied:
    /// (relative path, reason).
    pub skipped_weights: Vec<(String, String)>,
    /// Files written from new text (a rewritten `tokenizer_config.json`, a generated
    /// `generation_config.json`) rather than copied.
    pub written_files: Vec<String>,
    /// What the file selection decided about the tokenizer and other files (see [`select`]).
    pub notes: Vec<String>,
    /// Whether an existing destination was replaced.
    pub replaced: bool,
    /// Whether tensor bytes were compared with the source.
    pub verified_bytes: bool,
    /// Bytes moved with `copy_file_range` (the rest went through the buffer).
    pub kernel_copy_bytes: u64,
    /// Leftover temporaries of earlier killed runs found next to the destination.
    pub leftovers: Vec<String>,
    /// Problems after the commit that did not undo it (e.g. the old copy could not be removed).
    pub warnings: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// A checked destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The path as given.
    pub given: PathBuf,
    /// Canonical parent directory.
    pub parent: PathBuf,
    /// Final component.
    pub name: String,
    /// `parent/name`.
    pub path: PathBuf,
    /// Whether something exists there now.
    pub exists: bool,
}

/// Check that `dst` can receive the output of a conversion of `ck` (RELIABILITY.md A39, A40, B.3):
/// not a symlink, not equal to / inside the source, not containing the source when it would be
/// replaced, holding no input shard, and not existing unless `force`.
pub fn check_destination(ck: &Checkpoint, dst: &Path, force: bool) -> Result<Destination> {
    let cannot = |msg: String| Error::new(ErrorKind::CannotCreate, msg).file(dst);
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .ok_or_else(|| cannot("the destination must end in a directory name".into()))?;
    let parent_given = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent_given).map_err(|e| {
        Error::io_write(
            &parent_given,
            "the destination's parent directory is not usable",
            e,
        )
        .file(dst)
    })?;
    if !parent.is_dir() {
        return Err(cannot(format!(
            "`{}` is not a directory",
            parent_given.display()
        )));
    }
    let path = parent.join(&name);
    let meta = std::fs::symlink_metadata(&path).ok();
    if let Some(m) = &meta {
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            return Err(cannot(format!(
                "the destination is a symlink (to `{}`); refusing to write through it",
                escape(&target)
            ))
            .hint("remove the link or choose another destination"));
        }
        if !force {
            return Err(cannot("the destination already exists".into())
                .hint("pass --force to replace it (the old copy is removed only after the new one is complete)"));
        }
        if !m.is_dir() {
            return Err(cannot(
                "the destination exists and is not a directory; refusing to replace it".into(),
            ));
        }
    }
    // Every place input data lives: the source directory and each shard's real location.
    let mut roots = vec![std::fs::canonicalize(&ck.dir).unwrap_or_else(|_| ck.dir.clone())];
    for s in &ck.shards {
        if let Ok(real) = std::fs::canonicalize(&s.path)
            && let Some(p) = real.parent()
        {
            roots.push(p.to_path_buf());
        }
    }
    for root in &roots {
        if path == *root || path.starts_with(root) {
            return Err(cannot(format!(
                "the destination is inside the source directory `{}`",
                root.display()
            ))
            .hint("write the converted checkpoint next to the source, not into it"));
        }
        if meta.is_some() && root.starts_with(&path) {
            return Err(cannot(format!(
                "the destination contains the source `{}`; replacing it would delete the source",
                root.display()
            )));
        }
    }
    if meta.is_some() {
        let inputs: Vec<(u64, u64)> = ck.shards.iter().map(|s| s.dev_ino).collect();
        if let Some(hit) = find_alias(&path, &inputs, 0) {
            return Err(cannot(format!(
                "`{}` in the destination is the same file as an input shard; replacing the destination would delete it",
                hit.display()
            )));
        }
    }
    Ok(Destination {
        given: dst.to_path_buf(),
        parent,
        name,
        exists: meta.is_some(),
        path,
    })
}

fn find_alias(dir: &Path, inputs: &[(u64, u64)], depth: usize) -> Option<PathBuf> {
    if depth > MAX_DEPTH {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            if let Some(p) = find_alias(&e.path(), inputs, depth + 1) {
                return Some(p);
            }
        } else if inputs.contains(&(m.dev(), m.ino())) {
            return Some(e.path());
        }
    }
    None
}

/// A file of the source directory to copy into the output.
#[derive(Debug, Clone)]
struct Copy {
    rel: PathBuf,
    src: PathBuf,
    size: u64,
}

struct OtherFiles {
    copies: Vec<Copy>,
    dirs: Vec<PathBuf>,
    dropped: Vec<String>,
    skipped: Vec<String>,
    /// Weight files that are not the checkpoint's: (relative path, reason).
    skipped_weights: Vec<(String, String)>,
    /// Files written from new text instead of copied: (relative path, text).
    texts: Vec<(PathBuf, String)>,
}

fn other_files(
    ck: &Checkpoint,
    sel: &select::Selection,
    config_name: Option<&str>,
) -> Result<OtherFiles> {
    let mut o = OtherFiles {
        copies: Vec::new(),
        dirs: Vec::new(),
        dropped: Vec::new(),
        skipped: Vec::new(),
        skipped_weights: Vec::new(),
        texts: Vec::new(),
    };
    for name in &ck.other_files {
        collect(ck, Path::new(name), sel, config_name, &mut o, 0)?;
    }
    for (name, text) in &sel.generated {
        if !o.copies.iter().any(|c| c.rel == Path::new(name)) {
            o.texts.push((PathBuf::from(name), text.clone()));
        }
    }
    Ok(o)
}

fn collect(
    ck: &Checkpoint,
    rel: &Path,
    sel: &select::Selection,
    config_name: Option<&str>,
    o: &mut OtherFiles,
    depth: usize,
) -> Result<()> {
    let src = ck.dir.join(rel);
    let shown = rel.display().to_string();
    if depth > MAX_DEPTH {
        o.skipped.push(shown);
        return Ok(());
    }
    if Some(shown.as_str()) == config_name || shown == INDEX_NAME {
        return Ok(());
    }
    let m = std::fs::metadata(&src).map_err(|e| Error::io(&src, "cannot read", e))?;
    if m.is_dir() {
        o.dirs.push(rel.to_path_buf());
        let rd = std::fs::read_dir(&src).map_err(|e| Error::io(&src, "cannot list", e))?;
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains(".ckpt-tmp-") && !n.contains(".ckpt-old-"))
            .collect();
        names.sort();
        for n in names {
            collect(ck, &rel.join(n), sel, None, o, depth + 1)?;
        }
    } else if m.is_file() {
        if let Some(reason) = sel.skip_reason(ck, &shown) {
            if shown.ends_with(".py") {
                o.dropped.push(shown);
            } else {
                o.skipped_weights.push((shown, reason));
            }
        } else if let Some(text) = sel.rewritten(&shown) {
            o.texts.push((rel.to_path_buf(), text.to_string()));
        } else {
            o.copies.push(Copy {
                rel: rel.to_path_buf(),
                src,
                size: m.len(),
            });
        }
    } else {
        o.skipped.push(shown);
    }
    Ok(())
}

/// The config file to write for a view and its text: `params.json` when the view's config is the
/// source's Meta `params.json` unchanged in spelling, `config.json` otherwise.
pub fn config_output(view: &View) -> Option<(&'static str, String)> {
    let cfg = view.config.as_ref()?;
    let name = if cfg.source == Some(ConfigSource::ParamsJson) {
        "params.json"
    } else {
        "config.json"
    };
    // Unchanged config: keep the file byte for byte (Python's `1e-05` spelling, its whitespace).
    if let Some(src) = &view.ckpt.config
        && src.raw == cfg.raw
        && src.source == cfg.source
        && let Ok(bytes) = crate::checkpoint::config::read_limited(
            &src.path,
            crate::checkpoint::config::MAX_CONFIG_BYTES,
        )
        && let Ok(text) = String::from_utf8(bytes)
    {
        return Some((name, text));
    }
    // Rewritten config: numbers keep the source's spelling (`1e-05` stays `1e-05`).
    let original = view
        .ckpt
        .config
        .as_ref()
        .and_then(|c| {
            crate::checkpoint::config::read_limited(
                &c.path,
                crate::checkpoint::config::MAX_CONFIG_BYTES,
            )
            .ok()
        })
        .unwrap_or_default();
    let mut text = crate::json::to_string_pretty_spelled(
        &serde_json::Value::Object(cfg.raw.clone()),
        &original,
    );
    text.push('\n');
    Some((name, text))
}

/// Leftover temporaries (`.<name>.ckpt-tmp-*`, `.<name>.ckpt-old-*`) in `dir`.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with('.') && (n.contains(".ckpt-tmp-") || n.contains(".ckpt-old-"))
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Remove leftovers of killed runs in `dir` (`ckpt convert --clean DIR`); returns what was removed.
pub fn clean(dir: &Path) -> Result<Vec<PathBuf>> {
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, "cannot open", e))?;
    if !m.is_dir() {
        return Err(Error::usage("not a directory").file(dir));
    }
    let mut removed = Vec::new();
    for p in leftovers(dir) {
        let lm = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "cannot stat", e))?;
        let r = if lm.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| Error::io_write(&p, "cannot remove", e))?;
        removed.push(p);
    }
    if !removed.is_empty() {
        fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync directory", e))?;
    }
    Ok(removed)
}

/// Write `view` as a checkpoint directory at `dst`. See the module documentation for the protocol.
pub fn write_view(view: &View, dst: &Path, opts: &WriteOptions) -> Result<WriteSummary> {
    let start = Instant::now();
    let ck = view.ckpt;
    let d = check_destination(ck, dst, opts.force)?;
    let plan = plan::plan(view, opts.max_shard_size)?;
    let config = config_output(view);
    let selection = select::select(view, opts.drop_remote_code)?;
    let others = other_files(ck, &selection, config.as_ref().map(|c| c.0))?;
    // Space preflight (B.2 step 2).
    let copies: u64 = others
        .copies
        .iter()
        .map(|c| c.size)
        .chain(others.texts.iter().map(|(_, t)| t.len() as u64))
        .sum();
    let needed = plan
        .total_file_bytes()
        .saturating_add(plan.index.as_ref().map_or(0, |s| s.len() as u64))
        .saturating_add(config.as_ref().map_or(0, |c| c.1.len() as u64))
        .saturating_add(copies);
    let free = fsio::free_space(&d.parent).unwrap_or(u64::MAX);
    // Tests exercise the kernel's own ENOSPC path by skipping the preflight (debug builds only).
    #[cfg(debug_assertions)]
    let free = if std::env::var_os("CKPT_TEST_SKIP_PREFLIGHT").is_some() {
        u64::MAX
    } else {
        free
    };
    let margin = SPACE_MARGIN.min(needed / 100).saturating_add(64 << 10);
    if free < needed.saturating_add(margin) {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "not enough space: the output needs {}, {} free on `{}`; nothing was written",
                human_bytes(needed),
                human_bytes(free),
                d.parent.display()
            ),
        )
        .file(&d.given));
    }
    let leftovers = leftovers(&d.parent)
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();

    // Staging directory (B.3.1), removed on drop unless committed.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.ckpt-tmp-", d.name))
        .tempdir_in(&d.parent)
        .map_err(|e| {
            // tempfile appends the temporary path to its errors; the user's path is DST, so keep
            // only the OS error.
            let os = match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::from(e.kind()),
            };
            Error::io_write(
                &d.given,
                "cannot create a staging directory next to the destination",
                os,
            )
        })?;
    let sp = staging.path().to_path_buf();
    let _ = std::fs::set_permissions(&sp, std::fs::Permissions::from_mode(0o755));

    let total_write = needed;
    let progress_write = |n: u64| {
        if let Some(p) = opts.progress {
            p(Phase::Write, n, total_write);
        }
    };
    let mut ctx = CopyCtx::new(opts.cancel, Some(&progress_write));
    for sh in &ck.shards {
        fsio::advise_sequential(sh.file());
    }
    let fail = |e: io::Error, file: &str, tensor: Option<&str>, ctx: &CopyCtx| {
        write_error(e, &d, file, tensor, needed.saturating_sub(ctx.done))
    };
    // Shards are fsynced after all of them are written: writeback of one overlaps the copy of the
    // next (started early with sync_file_range), and every fsync still precedes the commit.
    let mut pending: Vec<(File, &str)> = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let out = write_shard(view, f, &sp.join(&f.name), &mut ctx)
            .map_err(|(e, t)| fail(e, &f.name, t.as_deref(), &ctx))?;
        fsio::start_writeback(&out);
        pending.push((out, &f.name));
    }
    for (out, name) in pending {
        out.sync_all().map_err(|e| fail(e, name, None, &ctx))?;
    }
    if let Some(index) = &plan.index {
        write_small(&sp.join(INDEX_NAME), index.as_bytes(), &mut ctx)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail(e, INDEX_NAME, None, &ctx))?;
    }
    if let Some((name, text)) = &config {
        write_small(&sp.join(name), text.as_bytes(), &mut ctx)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail(e, name, None, &ctx))?;
    }
    for dir in &others.dirs {
        std::fs::create_dir(sp.join(dir))
            .map_err(|e| fail(e, &dir.display().to_string(), None, &ctx))?;
    }
    for c in &others.copies {
        let shown = c.rel.display().to_string();
        copy_file(&c.src, &sp.join(&c.rel), c.size, &mut ctx)
            .and_then(|f| f.sync_all().map_err(CopyErr::Write))
            .map_err(|e| match e {
                CopyErr::Read(e) => Error::io(&c.src, "cannot read", e),
                CopyErr::Write(e) => fail(e, &shown, None, &ctx),
            })?;
    }
    for (rel, text) in &others.texts {
        let shown = rel.display().to_string();
        write_small(&sp.join(rel), text.as_bytes(), &mut ctx)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail(e, &shown, None, &ctx))?;
    }
    for dir in others.dirs.iter().rev() {
        fsio::sync_dir(&sp.join(dir))
            .map_err(|e| fail(e, &dir.display().to_string(), None, &ctx))?;
    }
    fsio::sync_dir(&sp).map_err(|e| fail(e, ".", None, &ctx))?;

    // Check before commit (B.1.4).
    let total_verify = plan.total_data;
    let progress_verify = |n: u64| {
        if let Some(p) = opts.progress {
            p(Phase::Verify, n, total_verify);
        }
    };
    verify::check_output(
        view,
        &plan,
        &sp,
        &d.given,
        opts.verify_bytes,
        &ctx,
        Some(&progress_verify),
    )?;
    ctx.check_cancel().map_err(|_| interrupted(&d.given))?;
    if let Some(hook) = opts.before_commit {
        hook(&sp)?;
        ctx.check_cancel().map_err(|_| interrupted(&d.given))?;
    }

    // Commit (B.3.1 / B.3.2).
    let mut warnings = Vec::new();
    if d.exists {
        let mut old = d
            .parent
            .join(format!(".{}.ckpt-old-{}", d.name, fsio::random_suffix()));
        // Preferred: swap staging and destination atomically (renameat2 RENAME_EXCHANGE), so no
        // instant exists where the destination name is missing; the old tree then sits at the
        // staging name and is renamed to `.ckpt-old-` before it is deleted. Fallback (no exchange
        // support): move the old one aside, then the new one in.
        match fsio::exchange(&sp, &d.path) {
            Ok(()) => {
                let _ = fsio::sync_dir(&d.parent);
                if std::fs::rename(&sp, &old).is_err() {
                    // Delete it under the staging name (which `--clean` also knows).
                    old = sp.clone();
                }
            }
            Err(_) => {
                std::fs::rename(&d.path, &old).map_err(|e| {
                    Error::io_write(&d.given, "cannot move the old destination aside", e)
                })?;
                if let Err(e) = fsio::rename_noreplace(&sp, &d.path) {
                    let back = std::fs::rename(&old, &d.path);
                    let mut err =
                        Error::io_write(&d.given, "cannot move the new checkpoint into place", e);
                    if back.is_err() {
                        err = err.hint(format!(
                            "the old destination is at `{}`; rename it back",
                            old.display()
                        ));
                    }
                    return Err(err);
                }
            }
        }
        let _ = staging.keep();
        fsio::sync_dir(&d.parent).map_err(|e| {
            Error::io_write(
                &d.given,
                "written but not confirmed durable (directory fsync failed)",
                e,
            )
        })?;
        if let Err(e) = std::fs::remove_dir_all(&old) {
            warnings.push(format!(
                "could not remove the old copy `{}`: {e}; `ckpt convert --clean {}` removes it",
                old.display(),
                d.parent.display()
            ));
        }
        let _ = fsio::sync_dir(&d.parent);
    } else {
        fsio::rename_noreplace(&sp, &d.path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) || e.raw_os_error() == Some(libc::ENOTEMPTY) {
                Error::new(
                    ErrorKind::CannotCreate,
                    "the destination appeared while writing; nothing was changed",
                )
                .file(&d.given)
            } else {
                Error::io_write(&d.given, "cannot move the new checkpoint into place", e)
            }
        })?;
        let _ = staging.keep();
        fsio::sync_dir(&d.parent).map_err(|e| {
            Error::io_write(
                &d.given,
                "written but not confirmed durable (directory fsync failed)",
                e,
            )
        })?;
    }
    Ok(WriteSummary {
        dst: d.given.clone(),
        tensors: view.tensors.len(),
        data_bytes: plan.total_data,
        total_bytes: ctx.done,
        shard_files: plan.files.iter().map(|f| f.name.clone()).collect(),
        config_file: config.map(|c| c.0.to_string()),
        copied_files: others
            .copies
            .iter()
            .map(|c| c.rel.display().to_string())
            .collect(),
        dropped_files: others.dropped,
        skipped_files: others.skipped,
        skipped_weights: others.skipped_weights,
        written_files: others
            .texts
            .iter()
            .map(|(r, _)| r.display().to_string())
            .collect(),
        notes: selection.notes,
        replaced: d.exists,
        verified_bytes: opts.verify_bytes,
        kernel_copy_bytes: ctx.cfr_bytes,
        leftovers,
        warnings,
        elapsed: start.elapsed(),
    })
}

fn interrupted(dst: &Path) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        "interrupted; the destination was not created or changed",
    )
    .file(dst)
}

/// Turn a write-side I/O error into an error naming the destination file (never the staging path),
/// the tensor, and for a full disk the bytes still needed against the bytes free.
fn write_error(
    e: io::Error,
    d: &Destination,
    file: &str,
    tensor: Option<&str>,
    remaining: u64,
) -> Error {
    let shown = d.given.join(file);
    if e.kind() == io::ErrorKind::Interrupted {
        return interrupted(&d.given);
    }
    let mut err = if fsio::is_no_space(&e) {
        let free = fsio::free_space(&d.parent).unwrap_or(0);
        Error::new(
            ErrorKind::Io,
            format!(
                "no space left on device (needs {} more, {} free on `{}`); nothing was written",
                human_bytes(remaining),
                human_bytes(free),
                d.parent.display()
            ),
        )
        .file(&shown)
        .with_source(e)
    } else {
        Error::io_write(&shown, "cannot write; nothing was written", e)
    };
    if let Some(t) = tensor {
        err = err.tensor(t);
    }
    err
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Write one shard: header, then every view tensor's segments at their planned offsets, then fsync.
/// The error carries the tensor being written.
fn write_shard(
    view: &View,
    f: &plan::PlannedFile,
    path: &Path,
    ctx: &mut CopyCtx,
) -> std::result::Result<File, (io::Error, Option<String>)> {
    let out = create_new(path).map_err(|e| (e, None))?;
    fsio::reserve(&out, f.size).map_err(|e| (e, None))?;
    ctx.write_at(&out, &f.header, 0).map_err(|e| (e, None))?;
    let data_start = f.header.len() as u64;
    let mut kicked = 0u64;
    for t in &f.tensors {
        let tag = |e: io::Error| (e, Some(t.name.clone()));
        let vt = view
            .tensors
            .get(t.view_index)
            .ok_or_else(|| tag(io::Error::other("plan refers to a missing view tensor")))?;
        let mut off = data_start.saturating_add(t.begin as u64);
        for seg in &vt.segments {
            match seg {
                Segment::Zeros { bytes } => {
                    ctx.write_zeros(&out, *bytes as u64, off).map_err(tag)?;
                    off = off.saturating_add(*bytes as u64);
                }
                Segment::Rows { .. } => {
                    let (si, src_off, len) = view
                        .segment_location(seg)
                        .ok_or_else(|| tag(io::Error::other("segment has no location")))?;
                    let shard = view
                        .ckpt
                        .shards
                        .get(si)
                        .ok_or_else(|| tag(io::Error::other("bad shard index")))?;
                    ctx.copy(shard.file(), src_off, len as u64, &out, off)
                        .map_err(tag)?;
                    off = off.saturating_add(len as u64);
                }
            }
        }
        // Start writeback of what was copied so far, so the disk writes while we copy on and the
        // final fsync has little left to do (the kernel would otherwise wait for its dirty limits).
        if off.saturating_sub(kicked) >= WRITEBACK_STEP {
            fsio::start_writeback_range(&out, kicked, off - kicked);
            kicked = off;
        }
        if off != data_start.saturating_add(t.end as u64) {
            return Err(tag(io::Error::other(
                "the tensor's parts do not add up to its planned size",
            )));
        }
    }
    Ok(out)
}

fn write_small(path: &Path, bytes: &[u8], ctx: &mut CopyCtx) -> io::Result<File> {
    let out = create_new(path)?;
    ctx.write_at(&out, bytes, 0)?;
    Ok(out)
}

enum CopyErr {
    Read(io::Error),
    Write(io::Error),
}

fn copy_file(
    src: &Path,
    dst: &Path,
    size: u64,
    ctx: &mut CopyCtx,
) -> std::result::Result<File, CopyErr> {
    let input = File::open(src).map_err(CopyErr::Read)?;
    let len = input.metadata().map_err(CopyErr::Read)?.len();
    if len != size {
        return Err(CopyErr::Read(io::Error::other(
            "the file changed size while converting",
        )));
    }
    let out = create_new(dst).map_err(CopyErr::Write)?;
    ctx.copy(&input, 0, len, &out, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CopyErr::Read(e)
        } else {
            CopyErr::Write(e)
        }
    })?;
    Ok(out)
}
