//! Writing a [`View`] as a Hub-ready checkpoint directory, crash-safely (DESIGN.md §5,
//! RELIABILITY.md B.1–B.6).
//!
//! Everything is decided before the first byte is written: the view was built from validated inputs,
//! [`plan::plan`] computes every header and offset with checked arithmetic, the destination is
//! checked (not a symlink, not inside or containing the source, not aliasing an input, not existing
//! unless `force`), and `statvfs` says the space is there. The output is then assembled in a sibling
//! staging directory `.<dst>.ckpt-tmp-<random>` (tensor data streamed with `copy_file_range` from the
//! source shards, memory bounded by one buffer, each output header padded so that data offsets stay
//! congruent mod 4096 with the source's: see [`plan`]), every tensor's bytes compared with the
//! source on a second thread as soon as it is written ([`verify::check_stream`]), every file
//! flushed and fsynced, re-opened and checked against the plan, and only then renamed into place,
//! followed by an fsync of the parent.
//! Any error or interrupt removes the staging directory and leaves the destination as it was.
//!
//! [`inplace`] rewrites headers of an existing checkpoint in place under a rollback journal when a
//! conversion is only renames and the new headers fit.

pub mod fsio;
pub mod guard;
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
use crate::error::{Error, ErrorKind, Result, escape_path};
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
    /// Final component, exactly as given (any bytes).
    pub name: std::ffi::OsString,
    /// `parent/name`.
    pub path: PathBuf,
    /// Whether something exists there now.
    pub exists: bool,
}

/// Check that `dst` can receive the output of a conversion of `ck` (RELIABILITY.md A39, A40, B.3)
/// through the output-path guard ([`guard::check_output`]): not a symlink, not equal to / inside
/// the source, not containing the source when it would be replaced, holding no input shard, not
/// existing unless `force`, and with `force` only a directory that is a checkpoint
/// ([`guard::replaceable_dir`]).
pub fn check_destination(ck: &Checkpoint, dst: &Path, force: bool) -> Result<Destination> {
    let inputs = guard::Inputs::of(ck);
    let out = guard::check_output(dst, guard::OutputKind::Dir, &inputs, force)?;
    let path = out.path;
    if out.exists {
        if let Some(hit) = find_alias(&path, &inputs.ids, 0) {
            return Err(Error::new(
                ErrorKind::CannotCreate,
                format!(
                    "`{}` in the destination is the same file as an input; replacing the destination would delete it",
                    escape_path(&hit)
                ),
            )
            .file(dst));
        }
        if let Err(why) = guard::replaceable_dir(&path) {
            return Err(Error::new(
                ErrorKind::CannotCreate,
                format!("--force replaces only a checkpoint directory, and this one is not: {why}"),
            )
            .file(dst)
            .hint("choose another destination, or empty the directory first"));
        }
    }
    Ok(Destination {
        given: dst.to_path_buf(),
        parent: out.parent,
        name: out.name,
        exists: out.exists,
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

/// Deepest level of auxiliary directories copied from a source directory.
pub const MAX_AUX_DEPTH: usize = 8;
/// Most bytes of auxiliary files copied (tokenizers, READMEs, ...); files beyond are skipped.
pub const MAX_AUX_BYTES: u64 = 16 << 30;
/// Most auxiliary files and directories copied; entries beyond are skipped.
pub const MAX_AUX_ENTRIES: usize = 10_000;

/// A file of the source directory to copy into the output: where it is read from (a regular file
/// inside the source directory, reached through at most a link that stays inside it) and the
/// identity it had when selected, re-checked when it is opened.
#[derive(Debug, Clone)]
struct Copy {
    rel: PathBuf,
    src: PathBuf,
    size: u64,
    dev_ino: (u64, u64),
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

/// Select the auxiliary files to copy: every entry of the source directory that is not a shard,
/// the index or a config file, walked without following links that leave the directory or point
/// at directories, with a depth, entry and byte budget; what is not copied is listed with why.
/// Which files belong to the output (weights of another layout are not copied, tokenizer configs
/// are rewritten, files are generated) is the `select::Selection`'s decision.
fn other_files(
    ck: &Checkpoint,
    sel: &select::Selection,
    config_name: Option<&str>,
    cancel: Option<&AtomicBool>,
) -> Result<OtherFiles> {
    let mut o = OtherFiles {
        copies: Vec::new(),
        dirs: Vec::new(),
        dropped: Vec::new(),
        skipped: Vec::new(),
        skipped_weights: Vec::new(),
        texts: Vec::new(),
    };
    // Only a checkpoint given as a directory brings its other files along.
    if ck.path.is_dir() {
        let root =
            std::fs::canonicalize(&ck.dir).map_err(|e| Error::io(&ck.dir, "cannot open", e))?;
        let mut walk = AuxWalk {
            root,
            visited: Vec::new(),
            bytes: 0,
            entries: 0,
            cancel,
            ck,
            sel,
        };
        let excluded = |name: &std::ffi::OsStr| {
            name == INDEX_NAME
                || name == "config.json"
                || name == "params.json"
                || Some(name) == config_name.map(std::ffi::OsStr::new)
                || ck.shards.iter().any(|s| {
                    s.path.file_name() == Some(name) && s.path.parent().is_some_and(|p| p == ck.dir)
                })
        };
        walk.dir(&ck.dir, Path::new(""), 0, &excluded, &mut o)?;
    }
    for (name, text) in &sel.generated {
        let rel = Path::new(name);
        if !o.copies.iter().any(|c| c.rel == rel) && !o.texts.iter().any(|(r, _)| r == rel) {
            o.texts.push((PathBuf::from(name), text.clone()));
        }
    }
    Ok(o)
}

struct AuxWalk<'a> {
    root: PathBuf,
    visited: Vec<(u64, u64)>,
    bytes: u64,
    entries: usize,
    cancel: Option<&'a AtomicBool>,
    ck: &'a Checkpoint,
    sel: &'a select::Selection,
}

impl AuxWalk<'_> {
    fn dir(
        &mut self,
        dir: &Path,
        rel: &Path,
        depth: usize,
        excluded: &dyn Fn(&std::ffi::OsStr) -> bool,
        o: &mut OtherFiles,
    ) -> Result<()> {
        let dm = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, "cannot read", e))?;
        if self.visited.contains(&(dm.dev(), dm.ino())) {
            o.skipped
                .push(format!("{} (a directory loop)", escape_path(rel)));
            return Ok(());
        }
        self.visited.push((dm.dev(), dm.ino()));
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list", e))?;
        let mut names: Vec<std::ffi::OsString> = rd.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            if self
                .cancel
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    "interrupted; nothing was written",
                ));
            }
            if depth == 0 && excluded(&name) {
                continue;
            }
            let r = rel.join(&name);
            let shown = escape_path(&r);
            let skip = |o: &mut OtherFiles, why: &str| o.skipped.push(format!("{shown} ({why})"));
            if crate::checkpoint::is_ckpt_temporary(&name)
                || name
                    .as_encoded_bytes()
                    .ends_with(crate::checkpoint::JOURNAL_SUFFIX.as_bytes())
            {
                skip(o, "a temporary of a ckpt run");
                continue;
            }
            let p = dir.join(&name);
            let Ok(lm) = std::fs::symlink_metadata(&p) else {
                skip(o, "vanished while listing");
                continue;
            };
            if self.entries >= MAX_AUX_ENTRIES {
                skip(o, "over the budget of 10,000 auxiliary entries");
                continue;
            }
            // Resolve a link: it must stay inside the source directory and name a regular file.
            let (src, m) = if lm.file_type().is_symlink() {
                let Ok(target) = std::fs::canonicalize(&p) else {
                    skip(o, "a dangling or looping link");
                    continue;
                };
                if !target.starts_with(&self.root) {
                    skip(o, "a link that leaves the source directory");
                    continue;
                }
                let Ok(tm) = std::fs::metadata(&target) else {
                    skip(o, "a dangling link");
                    continue;
                };
                if tm.is_dir() {
                    skip(o, "a link to a directory");
                    continue;
                }
                (target, tm)
            } else {
                (p.clone(), lm)
            };
            if m.is_dir() {
                if depth + 1 > MAX_AUX_DEPTH {
                    skip(o, "deeper than 8 levels");
                    continue;
                }
                self.entries += 1;
                o.dirs.push(r.clone());
                self.dir(&src, &r, depth + 1, excluded, o)?;
            } else if m.is_file() {
                // Which files belong to the output is the selection's call (UTF-8 names; ckpt
                // never decides about a name it cannot read, so those are copied as they are).
                if let Some(rel) = r.to_str() {
                    if let Some(reason) = self.sel.skip_reason(self.ck, rel) {
                        if rel.ends_with(".py") {
                            o.dropped.push(shown);
                        } else {
                            o.skipped_weights.push((shown, reason));
                        }
                        continue;
                    }
                    if let Some(text) = self.sel.rewritten(rel) {
                        o.texts.push((r.clone(), text.to_string()));
                        continue;
                    }
                }
                if self.bytes.saturating_add(m.len()) > MAX_AUX_BYTES {
                    skip(o, "over the 16 GiB budget for auxiliary files");
                    continue;
                }
                self.bytes = self.bytes.saturating_add(m.len());
                self.entries += 1;
                o.copies.push(Copy {
                    rel: r,
                    src,
                    size: m.len(),
                    dev_ino: (m.dev(), m.ino()),
                });
            } else {
                skip(o, guard::type_name(&m));
            }
        }
        Ok(())
    }
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

/// What [`clean`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Leftovers removed.
    pub removed: Vec<PathBuf>,
    /// `(leftover, destination)`: the old copy of a `--force` run killed after moving the old
    /// destination aside and before moving the new one in, renamed back (it was the only copy).
    pub restored: Vec<(PathBuf, PathBuf)>,
    /// Old copies of a missing destination left in place because there are several of them.
    pub kept: Vec<PathBuf>,
}

/// The destination name `.<name>.ckpt-old-<random>` was the old copy of.
fn old_copy_of(leftover: &Path) -> Option<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let b = leftover.file_name()?.as_bytes();
    let pat = b".ckpt-old-";
    let pos = b.windows(pat.len()).rposition(|w| w == pat)?;
    let name = b.get(1..pos).filter(|n| !n.is_empty())?;
    Some(std::ffi::OsStr::from_bytes(name).to_os_string())
}

/// Remove leftovers of killed runs in `dir` (`ckpt convert --clean DIR`). An old copy
/// (`.<name>.ckpt-old-*` directory) whose destination `<name>` is missing is the only copy of that
/// destination (a `--force` run was killed between moving it aside and moving the new one in): it
/// is renamed back to `<name>`, never deleted.
pub fn clean(dir: &Path) -> Result<Cleaned> {
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir, "cannot open", e))?;
    if !m.is_dir() {
        return Err(Error::usage("not a directory").file(dir));
    }
    let mut done = Cleaned::default();
    let found = leftovers(dir);
    let orphan = |p: &Path| -> Option<std::ffi::OsString> {
        let name = old_copy_of(p)?;
        // Only what `--force` could have moved aside: a directory that is a checkpoint or empty.
        let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        (is_dir
            && guard::replaceable_dir(p).is_ok()
            && std::fs::symlink_metadata(dir.join(&name)).is_err())
        .then_some(name)
    };
    for p in &found {
        let Some(name) = orphan(p) else { continue };
        let twins = found
            .iter()
            .filter(|q| orphan(q).as_ref() == Some(&name))
            .count();
        if twins > 1 {
            done.kept.push(p.clone());
            continue;
        }
        let to = dir.join(&name);
        fsio::rename_noreplace(p, &to)
            .map_err(|e| Error::io_write(&to, "cannot restore the old copy", e).file(p))?;
        done.restored.push((p.clone(), to));
    }
    for p in found {
        if done.kept.contains(&p) || done.restored.iter().any(|(q, _)| *q == p) {
            continue;
        }
        let lm = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "cannot stat", e))?;
        let r = if lm.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| Error::io_write(&p, "cannot remove", e))?;
        done.removed.push(p);
    }
    if !done.removed.is_empty() || !done.restored.is_empty() {
        fsio::sync_dir(dir).map_err(|e| Error::io_write(dir, "cannot sync directory", e))?;
    }
    Ok(done)
}

/// Write `view` as a checkpoint directory at `dst`. See the module documentation for the protocol.
pub fn write_view(view: &View, dst: &Path, opts: &WriteOptions) -> Result<WriteSummary> {
    let mut staged: Option<PathBuf> = None;
    let r = write_view_staged(view, dst, opts, &mut staged);
    // The staging directory is removed when the attempt fails (its guard drops). If that removal
    // failed too (e.g. EMFILE: the failure was running out of descriptors), try again now that the
    // attempt's own files are closed, and name the directory if it still cannot go.
    if let (Err(e), Some(sp)) = (&r, &staged)
        && std::fs::symlink_metadata(sp).is_ok()
        && e.kind() != ErrorKind::CannotCreate
        && std::fs::remove_dir_all(sp).is_err()
        && std::fs::symlink_metadata(sp).is_ok()
    {
        let parent = sp.parent().unwrap_or(Path::new("."));
        return Err(r.err().map_or_else(
            || Error::internal("lost error"),
            |e| {
                e.hint(format!(
                    "the staging directory `{}` could not be removed; `ckpt convert --clean {}` removes it",
                    escape_path(sp),
                    escape_path(parent)
                ))
            },
        ));
    }
    r
}

fn write_view_staged(
    view: &View,
    dst: &Path,
    opts: &WriteOptions,
    staged: &mut Option<PathBuf>,
) -> Result<WriteSummary> {
    let start = Instant::now();
    let ck = view.ckpt;
    let d = check_destination(ck, dst, opts.force)?;
    let plan = plan::plan(view, opts.max_shard_size)?;
    let config = config_output(view);
    let selection = select::select(view, opts.drop_remote_code)?;
    let others = other_files(ck, &selection, config.as_ref().map(|c| c.0), opts.cancel)
        .map_err(|e| e.file(&ck.dir))?;
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
        .prefix(&hidden_name(&d.name, ".ckpt-tmp-"))
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
    *staged = Some(sp.clone());
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
    // The byte check runs on a second thread one tensor behind the copy (verify::check_stream),
    // reading the just-written pages from the page cache while the disk is busy with the copy.
    let mut pending: Vec<(File, &str)> = Vec::with_capacity(plan.files.len());
    let checked = std::thread::scope(|scope| -> Result<Option<(usize, u64)>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (cancel, given) = (opts.cancel, &d.given);
        let checker = opts
            .verify_bytes
            .then(|| scope.spawn(move || verify::check_stream(view, rx, given, cancel)));
        let tx = checker.as_ref().map(|_| tx);
        let mut written = Ok(());
        for f in &plan.files {
            match write_shard(view, f, &sp.join(&f.name), &mut ctx, tx.as_ref()) {
                Ok(out) => {
                    fsio::start_writeback(&out);
                    pending.push((out, &f.name));
                }
                Err((e, t)) => {
                    written = Err(fail(e, &f.name, t.as_deref(), &ctx));
                    break;
                }
            }
        }
        // Hang up, so the checker finishes the tensors already reported and returns.
        drop(tx);
        let checked = checker
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("the byte check thread panicked")))
            })
            .transpose();
        // A difference found by the checker stopped the writer too: report the difference.
        let checked = checked?;
        written?;
        Ok(checked)
    })?;
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
        copy_file(c, &sp.join(&c.rel), &mut ctx)
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
    // Structure (every tensor's name, dtype, shape, file and data offsets as planned); the bytes
    // at those offsets were compared while writing.
    verify::check_output(&plan, &sp, &d.given)?;
    if let Some((n, bytes)) = checked {
        let planned: usize = plan.files.iter().map(|f| f.tensors.len()).sum();
        if n != planned || bytes != plan.total_data {
            return Err(Error::internal(format!(
                "the byte check saw {n} tensors ({bytes} bytes), planned {planned} ({} bytes)",
                plan.total_data
            ))
            .file(&d.given));
        }
        progress_verify(bytes);
    }
    ctx.check_cancel().map_err(|_| interrupted(&d.given))?;
    if let Some(hook) = opts.before_commit {
        hook(&sp)?;
        ctx.check_cancel().map_err(|_| interrupted(&d.given))?;
    }

    // Commit (B.3.1 / B.3.2).
    let mut warnings = Vec::new();
    if d.exists {
        let mut old = d.parent.join(hidden_name(
            &d.name,
            &format!(".ckpt-old-{}", fsio::random_suffix()),
        ));
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
        copied_files: others.copies.iter().map(|c| escape_path(&c.rel)).collect(),
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

/// `.<name><suffix>`, keeping `name`'s bytes exactly.
fn hidden_name(name: &std::ffi::OsStr, suffix: &str) -> std::ffi::OsString {
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(suffix);
    n
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
    let mut err = if e.raw_os_error() == Some(libc::EFBIG) {
        Error::new(
            ErrorKind::Io,
            "file too large for the destination filesystem or the process's file size limit (EFBIG); nothing was written",
        )
        .file(&shown)
        .hint("write to a filesystem that supports large files, or lower --max-shard-size")
        .with_source(e)
    } else if e.raw_os_error() == Some(libc::EDQUOT) {
        Error::new(
            ErrorKind::Io,
            format!(
                "disk quota exceeded (needs {} more); nothing was written",
                human_bytes(remaining)
            ),
        )
        .file(&shown)
        .with_source(e)
    } else if fsio::is_no_space(&e) {
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

/// A new file, opened for reading too (the byte check maps what was written).
fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Runs shorter than this are gathered into a buffer instead of one `copy_file_range` each.
const SMALL_RUN: usize = 64 * 1024;
/// Size at which the gathered buffer of short runs is written out.
const SMALL_BUF: usize = 1 << 20;

/// Write one shard: header, then every view tensor's segments at their planned offsets, then fsync.
/// The error carries the tensor being written.
fn write_shard(
    view: &View,
    f: &plan::PlannedFile,
    path: &Path,
    ctx: &mut CopyCtx,
    check: Option<&std::sync::mpsc::Sender<verify::Written>>,
) -> std::result::Result<File, (io::Error, Option<String>)> {
    let out = create_new(path).map_err(|e| (e, None))?;
    // The checker stopped (it found a difference, or was interrupted): stop too; its error is the
    // one reported.
    let hung_up = || io::Error::other("the byte check stopped");
    if let Some(tx) = check {
        let own = out.try_clone().map_err(|e| (e, None))?;
        tx.send(verify::Written::File(own, f.name.clone()))
            .map_err(|_| (hung_up(), None))?;
    }
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
                    // Long runs go through copy_file_range; short ones (a column-concatenated rank
                    // row, a strided element) are gathered from the mmaps into a bounded buffer.
                    let mut small: Vec<u8> = Vec::new();
                    let mut small_at = off;
                    let mut io_err: Option<io::Error> = None;
                    // Source byte ranges read through the mmaps since the last flush, per shard:
                    // released at each flush so the resident set stays at about one buffer.
                    let mut touched: Vec<(usize, usize, usize)> = Vec::new();
                    let release = |touched: &mut Vec<(usize, usize, usize)>| {
                        for (si, lo, hi) in touched.drain(..) {
                            if let Some(sh) = view.ckpt.shards.get(si) {
                                let ds = sh.data_start();
                                sh.release(lo.saturating_sub(ds), hi.saturating_sub(ds));
                            }
                        }
                    };
                    let res = view.segment_runs(seg, &mut |si, src_off, len| {
                        let shard = view
                            .ckpt
                            .shards
                            .get(si)
                            .ok_or_else(|| crate::error::Error::internal("bad shard index"))?;
                        let step = |e: io::Error| crate::error::Error::internal(e.to_string());
                        if len >= SMALL_RUN {
                            if !small.is_empty() {
                                ctx.write_at(&out, &small, small_at).map_err(|e| {
                                    let m = step(io::Error::new(e.kind(), e.to_string()));
                                    io_err = Some(e);
                                    m
                                })?;
                                small.clear();
                            }
                            ctx.copy(shard.file(), src_off, len as u64, &out, off)
                                .map_err(|e| {
                                    let m = step(io::Error::new(e.kind(), e.to_string()));
                                    io_err = Some(e);
                                    m
                                })?;
                            off = off.saturating_add(len as u64);
                            small_at = off;
                            return Ok(());
                        }
                        let bytes = usize::try_from(src_off)
                            .ok()
                            .and_then(|b| shard.bytes().get(b..b.checked_add(len)?))
                            .ok_or_else(|| {
                                crate::error::Error::internal("run outside the mapped file")
                            })?;
                        small.extend_from_slice(bytes);
                        let lo = src_off as usize;
                        let hi = lo.saturating_add(len);
                        match touched.iter_mut().find(|(s, _, _)| *s == si) {
                            Some((_, a, b)) => {
                                *a = (*a).min(lo);
                                *b = (*b).max(hi);
                            }
                            None => touched.push((si, lo, hi)),
                        }
                        off = off.saturating_add(len as u64);
                        if small.len() >= SMALL_BUF {
                            release(&mut touched);
                            ctx.write_at(&out, &small, small_at).map_err(|e| {
                                let m = step(io::Error::new(e.kind(), e.to_string()));
                                io_err = Some(e);
                                m
                            })?;
                            small.clear();
                            small_at = off;
                        }
                        Ok(())
                    });
                    if let Some(e) = io_err {
                        return Err(tag(e));
                    }
                    res.map_err(|e| tag(io::Error::other(e.to_string())))?;
                    release(&mut touched);
                    if !small.is_empty() {
                        ctx.write_at(&out, &small, small_at).map_err(tag)?;
                    }
                }
            }
        }
        // Start writeback of what was copied so far, so the disk writes while we copy on and the
        // final fsync has little left to do (the kernel would otherwise wait for its dirty limits).
        if off.saturating_sub(kicked) >= WRITEBACK_STEP {
            fsio::start_writeback_range(&out, kicked, off - kicked);
            kicked = off;
        }
        // Gathered runs were read through the source mmaps: drop those pages from this process
        // (they stay in the page cache) so the resident set stays near one tensor.
        view.release(vt);
        if off != data_start.saturating_add(t.end as u64) {
            return Err(tag(io::Error::other(
                "the tensor's parts do not add up to its planned size",
            )));
        }
        if let Some(tx) = check {
            tx.send(verify::Written::Tensor(
                t.view_index,
                data_start.saturating_add(t.begin as u64),
            ))
            .map_err(|_| tag(hung_up()))?;
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

/// Copy one selected auxiliary file: opened without following a link (`O_NOFOLLOW`; a validated
/// link was resolved when it was selected) and without blocking, re-checked to be the same regular
/// file of the same size it was when selected, then streamed through the writer's context (which
/// checks the cancel flag between chunks). Every auxiliary copy goes through here.
fn copy_file(c: &Copy, dst: &Path, ctx: &mut CopyCtx) -> std::result::Result<File, CopyErr> {
    let input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&c.src)
        .map_err(CopyErr::Read)?;
    let m = input.metadata().map_err(CopyErr::Read)?;
    if !m.is_file() || (m.dev(), m.ino()) != c.dev_ino || m.len() != c.size {
        return Err(CopyErr::Read(io::Error::other(
            "the file changed while converting",
        )));
    }
    let out = create_new(dst).map_err(CopyErr::Write)?;
    ctx.copy(&input, 0, c.size, &out, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            CopyErr::Read(e)
        } else {
            CopyErr::Write(e)
        }
    })?;
    Ok(out)
}
