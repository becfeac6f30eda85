//! The output-path guard: every path any command writes goes through [`check_output`] first
//! (`convert`/`rename` DST, `logits --out`, and any future output).
//!
//! Refused, before anything is created:
//! * a final component that is empty, `.` or `..`, or a parent directory that does not exist or is
//!   not a directory (the error names the destination, never a temporary name);
//! * an existing target that is a symlink (ckpt never writes through one);
//! * an existing target of the wrong type: a device, FIFO or socket (`/dev/null` is never renamed
//!   over), a directory where a file is expected or a file where a directory is expected;
//! * a target that *is* an input: same `(st_dev, st_ino)` as any input file, however it is spelled
//!   (hard links, symlinked parents, `..`), or, for a directory, one that is, contains or lies
//!   inside an input's directory;
//! * an existing target without `force`.
//!
//! Paths stay [`Path`]/[`std::ffi::OsStr`] throughout: a non-UTF-8 name is written exactly there.

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, ErrorKind, Result, escape_path};

/// What the command writes at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One regular file (written to a sibling temporary, then renamed).
    File,
    /// A directory tree (built in a sibling staging directory, then renamed).
    Dir,
}

/// The inputs of a command, as the guard compares them: file identities and the directories
/// holding them.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `(st_dev, st_ino)` of every input file.
    pub ids: Vec<(u64, u64)>,
    /// Canonical directories input data lives in (the checkpoint directory, each shard's real
    /// parent). An output directory must neither be inside one nor contain one.
    pub dirs: Vec<PathBuf>,
    /// Canonical checkpoint directories given as inputs: a file output is not written into one
    /// (it would become part of that checkpoint, e.g. an extra shard).
    pub ckpt_dirs: Vec<PathBuf>,
    /// Canonical directories holding a checkpoint given as one file (`model.gguf`, `ckpt.pth`):
    /// nothing else in them is read, so an output directory may be created inside one (next to
    /// the file), but must not be or contain one.
    pub file_dirs: Vec<PathBuf>,
}

impl Inputs {
    /// Every file of `ck` that a command reads: shards, config, index; and its directories.
    pub fn of(ck: &Checkpoint) -> Inputs {
        let mut i = Inputs::default();
        i.add_checkpoint(ck);
        i
    }

    /// Add the files and directories of another checkpoint.
    pub fn add_checkpoint(&mut self, ck: &Checkpoint) {
        let single_file = !ck.path.is_dir();
        for s in &ck.shards {
            self.ids.push(s.dev_ino);
            if let Ok(real) = std::fs::canonicalize(&s.path)
                && let Some(p) = real.parent()
            {
                match single_file {
                    true => self.file_dirs.push(p.to_path_buf()),
                    false => self.dirs.push(p.to_path_buf()),
                }
            }
        }
        let small = [
            ck.config.as_ref().map(|c| c.path.clone()),
            ck.index.as_ref().map(|i| i.path.clone()),
        ];
        for p in small.into_iter().flatten() {
            self.add_file(&p);
        }
        if ck.path.is_dir()
            && let Ok(d) = std::fs::canonicalize(&ck.dir)
        {
            self.dirs.push(d.clone());
            self.ckpt_dirs.push(d);
        }
    }

    /// Add one input file by path (ignored when it cannot be stat'ed).
    pub fn add_file(&mut self, p: &Path) {
        if let Ok(m) = std::fs::metadata(p) {
            self.ids.push((m.dev(), m.ino()));
        }
    }
}

/// A checked output path.
#[derive(Debug, Clone)]
pub struct Output {
    /// The path as given (what messages show).
    pub given: PathBuf,
    /// Canonical parent directory.
    pub parent: PathBuf,
    /// Final component, exactly as given (any bytes).
    pub name: OsString,
    /// `parent/name`.
    pub path: PathBuf,
    /// Whether something exists there now (only possible with `force`).
    pub exists: bool,
}

/// A word for a file type, for messages.
pub fn type_name(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Check an output path against the rules in the module documentation.
pub fn check_output(dst: &Path, kind: OutputKind, inputs: &Inputs, force: bool) -> Result<Output> {
    let cannot = |msg: String| Error::new(ErrorKind::CannotCreate, msg).file(dst);
    let name = match dst.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => {
            return Err(cannot(format!(
                "the destination must end in a {} name (not `.`, `..` or `/`)",
                if kind == OutputKind::Dir {
                    "directory"
                } else {
                    "file"
                }
            )));
        }
    };
    let parent_given = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = match std::fs::canonicalize(&parent_given) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(cannot(format!(
                "the parent directory `{}` does not exist",
                escape_path(&parent_given)
            ))
            .hint("create it first, or choose another destination"));
        }
        Err(e) => {
            return Err(Error::io_write(
                &parent_given,
                "the destination's parent directory is not usable",
                e,
            )
            .file(dst));
        }
    };
    if !parent.is_dir() {
        return Err(cannot(format!(
            "`{}` is not a directory",
            escape_path(&parent_given)
        )));
    }
    let path = parent.join(&name);
    let meta = std::fs::symlink_metadata(&path).ok();
    if let Some(m) = &meta {
        let ft = m.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            return Err(cannot(format!(
                "the destination is a symlink (to `{}`); refusing to write through it",
                escape_path(&target)
            ))
            .hint("remove the link or choose another destination"));
        }
        let wrong_type = match kind {
            OutputKind::File => !ft.is_file(),
            OutputKind::Dir => !ft.is_dir(),
        };
        if wrong_type {
            return Err(cannot(format!(
                "the destination exists and is {}, not {}; refusing to replace it",
                type_name(m),
                if kind == OutputKind::Dir {
                    "a directory"
                } else {
                    "a regular file"
                }
            )));
        }
        if inputs.ids.contains(&(m.dev(), m.ino())) {
            return Err(cannot(
                "the destination is an input of this command (the same file); refusing to overwrite it"
                    .into(),
            ));
        }
    }
    if kind == OutputKind::File && inputs.ckpt_dirs.contains(&parent) {
        return Err(cannot(
            "the destination is inside the input checkpoint directory; writing there would change the checkpoint"
                .into(),
        )
        .hint("write the output outside the checkpoint directory"));
    }
    if kind == OutputKind::Dir {
        for root in &inputs.dirs {
            if path == *root || path.starts_with(root) {
                return Err(cannot(format!(
                    "the destination is inside the source directory `{}`",
                    escape_path(root)
                ))
                .hint("write the output next to the source, not into it"));
            }
            if meta.is_some() && root.starts_with(&path) {
                return Err(cannot(format!(
                    "the destination contains the source `{}`; replacing it would delete the source",
                    escape_path(root)
                )));
            }
        }
        for root in &inputs.file_dirs {
            if meta.is_some() && root.starts_with(&path) {
                return Err(cannot(format!(
                    "the destination contains the source `{}`; replacing it would delete the source",
                    escape_path(root)
                )));
            }
        }
    }
    if meta.is_some() && !force {
        return Err(cannot("the destination already exists".into()).hint(
            "pass --force to replace it (the old copy is removed only after the new one is complete)",
        ));
    }
    Ok(Output {
        given: dst.to_path_buf(),
        parent,
        name,
        exists: meta.is_some(),
        path,
    })
}

/// Whether an existing directory may be replaced by `--force`: it is empty, or it looks like a
/// checkpoint (a `.safetensors` file together with `config.json`, `params.json` or an index, or
/// nothing but `.safetensors` files). Returns why not otherwise.
pub fn replaceable_dir(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let rd = std::fs::read_dir(dir).map_err(|e| format!("it cannot be listed ({e})"))?;
    let mut safetensors = false;
    let mut companion = false;
    let mut others = 0usize;
    let mut example: Option<OsString> = None;
    for e in rd.flatten() {
        let n = e.file_name();
        let b = n.as_bytes();
        if b.ends_with(b".safetensors") {
            safetensors = true;
        } else if matches!(
            b,
            b"config.json" | b"params.json" | b"model.safetensors.index.json"
        ) {
            companion = true;
        } else {
            others += 1;
            if example.is_none() {
                example = Some(n);
            }
        }
    }
    if !safetensors && !companion && others == 0 {
        return Ok(());
    }
    if safetensors && (companion || others == 0) {
        return Ok(());
    }
    Err(format!(
        "it is not a checkpoint (no .safetensors file with a config.json, params.json or index{})",
        example
            .map(|n| format!("; it holds e.g. `{}`", escape_path(Path::new(&n))))
            .unwrap_or_default()
    ))
}
