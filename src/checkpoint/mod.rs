//! A checkpoint on disk: one `.safetensors` file, or a directory with `config.json` and one or more
//! shards (with `model.safetensors.index.json`), or Meta's `consolidated.safetensors` + `params.json`;
//! and the same layouts in PyTorch's `torch.save` container (`pytorch_model.bin`,
//! `pytorch_model-0000K-of-0000N.bin` + `pytorch_model.bin.index.json`, a `.pth`/`.pt` file, Meta's
//! `consolidated.NN.pth` tensor-parallel ranks, merged into one checkpoint by [`meta`]).
//!
//! Opening reads headers only (`pread` of the header, then a read-only mmap that is not touched) and
//! validates everything the safetensors crate does not: duplicate names within and across shards,
//! index entries pointing outside the directory or at missing files, shards on disk the index does not
//! list, and tensors the index and the shards disagree about. Tensor data is read lazily through
//! [`Checkpoint::data`].

pub mod config;
pub mod extent;
pub mod gguf;
pub mod header;
pub mod index;
pub mod meta;
pub mod pickle;
pub mod resolve;
pub mod shard;
pub mod torch;
pub mod zip;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use config::{ConfigSource, ModelConfig, RopeScaling};
pub use extent::{Part, Placement};
pub use header::Dtype;
pub use index::IndexFile;
pub use resolve::OpenOptions;
pub use shard::{Container, Shard};

use crate::error::{Error, ErrorKind, Result, escape};

/// What to give instead of a directory that holds GGUF files: the file, or the first part of a
/// split GGUF (`-00001-of-0000N.gguf`), named when there is one.
fn gguf_in_dir_hint(listing: &[OsString]) -> String {
    let names: Vec<String> = listing
        .iter()
        .filter_map(|f| f.to_str())
        .filter(|f| f.ends_with(".gguf"))
        .map(str::to_string)
        .collect();
    let firsts: Vec<&String> = names
        .iter()
        .filter(|f| gguf::is_first_part_name(f))
        .collect();
    match (firsts.as_slice(), names.as_slice()) {
        ([first], _) => format!(
            "this directory holds a split GGUF: give its first part, `{}` (the other parts are read from beside it)",
            escape(first)
        ),
        (_, [one]) => format!("this directory holds a GGUF file: give the file, `{}`", escape(one)),
        _ => "this directory holds GGUF files: give the `.gguf` file itself (for a split GGUF, its first part, `...-00001-of-0000N.gguf`)".to_string(),
    }
}

/// How the checkpoint is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A single `.safetensors` file given directly.
    File,
    /// A directory with one `model.safetensors` (or one other `.safetensors` file).
    Single,
    /// A directory with shards listed by `model.safetensors.index.json`.
    Sharded,
    /// Meta / mistral-inference: `consolidated.safetensors` (+ `params.json`).
    Meta,
    /// A directory with several `.safetensors` files and no index.
    Unindexed,
}

impl Layout {
    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::File => "file",
            Layout::Single => "single",
            Layout::Sharded => "sharded",
            Layout::Meta => "meta",
            Layout::Unindexed => "unindexed",
        }
    }
}

/// One tensor of the checkpoint: where it lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Index into [`Checkpoint::shards`].
    pub shard: usize,
    /// Start of the data relative to the shard's data section.
    pub begin: usize,
    /// End of the data (exclusive).
    pub end: usize,
    /// How the bytes are laid out: contiguous `[begin, end)` for every safetensors tensor; strided
    /// or concatenated from ranks for some torch tensors (then `shard`/`begin` locate the first byte
    /// and readers go through [`Checkpoint::for_each_run`]).
    pub placement: Placement,
}

impl TensorInfo {
    /// Byte length of the tensor's data.
    pub fn nbytes(&self) -> usize {
        match self.placement {
            Placement::Contiguous => self.end.saturating_sub(self.begin),
            _ => header::checked_nbytes(self.dtype, &self.shape).unwrap_or(0),
        }
    }

    /// True when the tensor is one contiguous byte range of one file.
    pub fn is_contiguous(&self) -> bool {
        self.placement == Placement::Contiguous
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        header::checked_numel(&self.shape).unwrap_or(0)
    }
}

/// An opened checkpoint (headers only).
#[derive(Debug)]
pub struct Checkpoint {
    /// The path the user gave.
    pub path: PathBuf,
    /// The directory holding the checkpoint's files (the parent for a single file).
    pub dir: PathBuf,
    /// The layout.
    pub layout: Layout,
    /// The safetensors files, in order (index order for sharded checkpoints).
    pub shards: Vec<Shard>,
    /// Every tensor, shard by shard in data order.
    pub tensors: Vec<TensorInfo>,
    /// The parsed `config.json` / `params.json`, if present.
    pub config: Option<ModelConfig>,
    /// The parsed index, if sharded.
    pub index: Option<IndexFile>,
    /// Other files of the directory (tokenizer, README, ...), relative names, sorted.
    pub other_files: Vec<String>,
    /// Notes that are not errors (e.g. `total_size` disagreeing with the shards).
    pub warnings: Vec<String>,
    /// How the given path was resolved (the snapshot of a cache repository, a config read from
    /// beside a file); empty when it was taken as given.
    pub notes: Vec<String>,
    /// How Meta tensor-parallel ranks were merged, when the checkpoint is several
    /// `consolidated.NN.pth` ranks.
    pub merge: Option<meta::MergeInfo>,
    by_name: HashMap<String, usize>,
}

/// Suffix of the rollback journal of an `--in-place` run (`.<dir>.ckpt-hdr-journal`).
pub const JOURNAL_SUFFIX: &str = ".ckpt-hdr-journal";

/// The pending `--in-place` journals in `dir` (`.*.ckpt-hdr-journal`), sorted.
pub fn pending_journals(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let b = n.as_bytes();
            b.starts_with(b".") && b.ends_with(JOURNAL_SUFFIX.as_bytes())
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The error every reading command gives for a directory with a pending journal: its files may be
/// half-renamed, so they are not read.
pub fn pending_journal_error(dir: &Path, journal: &Path) -> Error {
    Error::new(
        ErrorKind::BadData,
        format!(
            "an interrupted `--in-place` run left the journal `{}`: the files may be half-renamed, so they are not read",
            crate::error::escape_path(journal.file_name().map(Path::new).unwrap_or(journal))
        ),
    )
    .file(dir)
    .hint(format!(
        "run `ckpt convert --recover {}` to roll the run back (a journal ckpt did not write is refused and reported)",
        crate::error::escape_path(dir)
    ))
}

/// Most names an error message lists before saying how many more there are.
pub const MAX_LISTED: usize = 20;

/// `a, b, c` for at most `max` names (escaped), then `... and N more`.
pub fn capped_list(names: &[&str], max: usize) -> String {
    let shown: Vec<String> = names
        .iter()
        .map(|n| crate::error::escape(n))
        .take(max)
        .collect();
    let mut s = shown.join(", ");
    if names.len() > max {
        s.push_str(&format!(", ... and {} more", names.len() - max));
    }
    s
}

/// [`capped_list`] for names that are already escaped.
pub fn capped_list_raw(names: &[&str], max: usize) -> String {
    let mut s = names
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        s.push_str(&format!(", ... and {} more", names.len() - max));
    }
    s
}

/// File name of the Hugging Face shard index.
pub const INDEX_NAME: &str = "model.safetensors.index.json";
/// File name of the Hugging Face shard index for PyTorch `.bin` shards.
pub const TORCH_INDEX_NAME: &str = "pytorch_model.bin.index.json";

impl Checkpoint {
    /// Open a checkpoint: a `.safetensors` file, a torch archive (`.bin`, `.pth`, `.pt`), a `.gguf`
    /// file, a `*.index.json`, or a directory (including a Hugging Face cache repository root),
    /// with the default [`OpenOptions`].
    ///
    /// ```
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi");
    /// let ck = ckpt::Checkpoint::open(dir)?;
    /// assert!(ck.get("model.layers.0.ln1.weight").is_some());
    /// assert_eq!(ck.config.as_ref().and_then(|c| c.model_type.as_deref()), Some("Yi"));
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// Open a checkpoint after resolving its path ([`resolve::resolve`]): a cache repository root
    /// becomes its snapshot, and a file inside a directory gets the directory's config; what was
    /// done is recorded in [`Checkpoint::notes`].
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Checkpoint> {
        let r = resolve::resolve(path.as_ref(), opts)?;
        let mut ck = Self::open_path(&r.path, opts)?;
        if ck.config.is_none()
            && let Some(cfg) = &r.config_beside
        {
            ck.config = Some(ModelConfig::load(cfg)?);
            ck.notes.extend(r.notes);
        } else if r.config_beside.is_none() {
            ck.notes.extend(r.notes);
        }
        Ok(ck)
    }

    fn open_path(path: &Path, opts: &OpenOptions) -> Result<Checkpoint> {
        let key = opts.state_dict_key.as_deref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, "cannot open", e))?;
        let holder = if meta.is_dir() {
            path.to_path_buf()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if let Some(j) = pending_journals(&holder).first() {
            return Err(pending_journal_error(&holder, j));
        }
        if meta.is_dir() {
            return Self::open_dir(path, opts);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if name.ends_with(".index.json") {
            let mut ck = Self::open_indexed(path, &dir, path, opts)?;
            ck.path = path.to_path_buf();
            return Ok(ck);
        }
        // A GGUF by name, or by its magic when the name claims no other format (a `.safetensors`
        // holding GGUF bytes is diagnosed as the wrong format by `Shard::open`).
        if name.ends_with(".gguf") || (!name.ends_with(".safetensors") && gguf::sniff(path)) {
            return gguf::open_checkpoint(path);
        }
        let shard = Shard::open_with(path, key)?;
        Self::assemble(
            path,
            &dir,
            Layout::File,
            vec![shard],
            None,
            None,
            Vec::new(),
        )
    }

    fn open_dir(dir: &Path, opts: &OpenOptions) -> Result<Checkpoint> {
        let key = opts.state_dict_key.as_deref();
        let listing = list_dir(dir)?;
        let has = |n: &str| listing.iter().any(|f| f == n);
        // The PyTorch layouts are matched on names that are valid UTF-8 (ckpt never writes others).
        let names: Vec<String> = listing
            .iter()
            .filter_map(|f| f.to_str().map(str::to_string))
            .collect();
        let torch_files = meta::torch_weight_files(&names);
        let st_files: Vec<&String> = names
            .iter()
            .filter(|f| {
                // The names a safetensors checkpoint is opened by; a stray `.safetensors` file
                // beside PyTorch weights (an adapter, test data) does not make them ambiguous.
                matches!(
                    f.as_str(),
                    INDEX_NAME | "model.safetensors" | "consolidated.safetensors"
                ) || index::looks_like_shard(f)
                    || (torch_files.is_empty() && f.ends_with(".safetensors"))
            })
            .collect();
        if !torch_files.is_empty() && st_files.is_empty() {
            return Self::open_torch_dir(dir, &names, &listing, key);
        }
        // Both formats: read the safetensors, as transformers does (`use_safetensors` when
        // available), and say so; the PyTorch files are then extra weights that `check` reports
        // and `convert` does not copy.
        let twins = (!torch_files.is_empty()).then(|| {
            format!(
                "the directory also holds PyTorch weights ({}); the safetensors files are read, as transformers does; give a `.bin`/`.pth` file directly to read that one",
                torch_files
                    .iter()
                    .take(3)
                    .map(|s| format!("`{}`", escape(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let mut ck = Self::open_safetensors_dir(dir, opts, &listing, has)?;
        ck.warnings.extend(twins);
        Ok(ck)
    }

    fn open_safetensors_dir(
        dir: &Path,
        opts: &OpenOptions,
        listing: &[std::ffi::OsString],
        has: impl Fn(&str) -> bool,
    ) -> Result<Checkpoint> {
        let config_path = if has("config.json") {
            Some(dir.join("config.json"))
        } else if has("params.json") {
            Some(dir.join("params.json"))
        } else {
            None
        };
        let config = config_path.as_deref().map(ModelConfig::load).transpose()?;
        if has(INDEX_NAME) {
            let mut ck = Self::open_indexed(&dir.join(INDEX_NAME), dir, dir, opts)?;
            ck.config = config;
            ck.other_files = others(listing, &ck);
            return Ok(ck);
        }
        let st: Vec<&OsString> = listing
            .iter()
            .filter(|f| f.as_bytes().ends_with(b".safetensors"))
            .collect();
        let ends = |suffix: &str| {
            listing
                .iter()
                .any(|f| f.as_bytes().ends_with(suffix.as_bytes()))
        };
        let (layout, files): (Layout, Vec<OsString>) = if has("model.safetensors") {
            (Layout::Single, vec!["model.safetensors".into()])
        } else if has("consolidated.safetensors") {
            (Layout::Meta, vec!["consolidated.safetensors".into()])
        } else if st.len() == 1 {
            (Layout::Single, st.iter().map(|s| (*s).clone()).collect())
        } else if st.is_empty() {
            let hint = if ends(".bin") || ends(".pth") || ends(".pt") {
                "ckpt reads PyTorch weights named pytorch_model.bin, pytorch_model-0000K-of-0000N.bin with pytorch_model.bin.index.json, consolidated.NN.pth, or a single .pth/.pt file; give another file directly".to_string()
            } else if ends(".gguf") {
                gguf_in_dir_hint(listing)
            } else {
                "give a directory with model.safetensors or shards and model.safetensors.index.json"
                    .to_string()
            };
            return Err(Error::new(
                ErrorKind::MissingInput,
                "no .safetensors files in the directory",
            )
            .file(dir)
            .hint(hint));
        } else {
            (Layout::Unindexed, st.iter().map(|s| (*s).clone()).collect())
        };
        let shards = files
            .iter()
            .map(|f| {
                let p = dir.join(f);
                if !opts.allow_external_links {
                    index::check_shard_location(dir, &p)?;
                }
                Shard::open(&p)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ck = Self::assemble(dir, dir, layout, shards, config, None, Vec::new())?;
        ck.other_files = others(listing, &ck);
        Ok(ck)
    }

    fn open_indexed(
        index_path: &Path,
        dir: &Path,
        user_path: &Path,
        opts: &OpenOptions,
    ) -> Result<Checkpoint> {
        let index = IndexFile::load(index_path)?;
        let index_name = index_path.file_name().unwrap_or_default();
        // Every check below is a hash lookup: linear in tensors and shards (docs/RELIABILITY.md,
        // "Complexity bounds").
        for f in &index.files {
            let own = std::ffi::OsStr::new(f) == index_name || f == INDEX_NAME;
            if own || f == "config.json" || f == "params.json" {
                let tensor = index
                    .weight_map
                    .iter()
                    .find(|(_, v)| *v == f)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default();
                return Err(Error::bad_data(format!(
                    "the index names {} as a shard; shards are .safetensors files",
                    if own {
                        "itself".to_string()
                    } else {
                        format!("`{f}`")
                    }
                ))
                .file(index_path)
                .tensor(tensor));
            }
        }
        let key = opts.state_dict_key.as_deref();
        let torch_index = index_path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".bin.index.json"));
        let mut shards = Vec::with_capacity(index.files.len());
        let mut missing = Vec::new();
        for f in &index.files {
            let p = dir.join(f);
            if !opts.allow_external_links {
                index::check_shard_location(dir, &p).map_err(|e| e.file(index_path))?;
            }
            if std::fs::symlink_metadata(&p).is_err() || !p.exists() {
                missing.push(f.as_str());
                continue;
            }
            if missing.is_empty() {
                shards.push(Shard::open_with(&p, key)?);
            }
        }
        if !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::MissingInput,
                format!(
                    "the index lists {} shard{} that do not exist: {}",
                    missing.len(),
                    if missing.len() == 1 { "" } else { "s" },
                    capped_list(&missing, MAX_LISTED)
                ),
            )
            .file(index_path)
            .hint("download the missing shards"));
        }
        // Shards on disk that the index does not list.
        if let Ok(listing) = list_dir(dir) {
            let listed: std::collections::HashSet<&str> =
                index.files.iter().map(String::as_str).collect();
            let stray: Vec<String> = listing
                .iter()
                .map(|f| f.to_string_lossy().into_owned())
                .filter(|f| {
                    let like = if torch_index {
                        meta::looks_like_torch_shard(f)
                    } else {
                        index::looks_like_shard(f)
                    };
                    like && !listed.contains(f.as_str())
                })
                .collect();
            if !stray.is_empty() {
                let names: Vec<&str> = stray.iter().map(String::as_str).collect();
                return Err(Error::bad_data(format!(
                    "shard files on disk that the index does not list: {}",
                    capped_list(&names, MAX_LISTED)
                ))
                .file(index_path)
                .hint("remove stale shards from an earlier save, or regenerate the index"));
            }
        }
        let mut warnings = Vec::new();
        // Index <-> shard agreement, both ways.
        let shard_of_file: HashMap<&str, usize> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.file_name.as_str(), i))
            .collect();
        let mut shard_of_tensor: HashMap<&str, usize> = HashMap::new();
        let mut held: std::collections::HashSet<(&str, usize)> = std::collections::HashSet::new();
        for (i, s) in shards.iter().enumerate() {
            for t in &s.header.tensors {
                shard_of_tensor.entry(t.name.as_str()).or_insert(i);
                held.insert((t.name.as_str(), i));
            }
        }
        for (name, file) in &index.weight_map {
            let Some(&si) = shard_of_file.get(file.as_str()) else {
                continue;
            };
            if !held.contains(&(name.as_str(), si)) {
                let actual = shard_of_tensor
                    .get(name.as_str())
                    .and_then(|&i| shards.get(i))
                    .map(|s| format!("; it is in `{}`", s.file_name))
                    .unwrap_or_default();
                return Err(Error::bad_data(format!(
                    "the index places this tensor in `{file}`, which does not hold it{actual}"
                ))
                .file(index_path)
                .tensor(name));
            }
        }
        for s in &shards {
            for t in &s.header.tensors {
                if !index.weight_map.contains_key(&t.name) {
                    return Err(Error::bad_data(format!(
                        "the tensor is in `{}` but the index does not list it",
                        s.file_name
                    ))
                    .file(index_path)
                    .tensor(&t.name));
                }
            }
        }
        let data_total: u64 = shards.iter().map(|s| s.header.data_len as u64).sum();
        if let Some(ts) = index.total_size
            && ts != data_total
        {
            warnings.push(format!(
                "{}: metadata.total_size is {ts} but the shards hold {data_total} bytes of tensor data",
                index_path.display()
            ));
        }
        Self::assemble(
            user_path,
            dir,
            Layout::Sharded,
            shards,
            None,
            Some(index),
            warnings,
        )
    }

    fn assemble(
        path: &Path,
        dir: &Path,
        layout: Layout,
        shards: Vec<Shard>,
        config: Option<ModelConfig>,
        index: Option<IndexFile>,
        mut warnings: Vec<String>,
    ) -> Result<Checkpoint> {
        // Entries of a PyTorch file that are not tensors (`epoch: int 3`, a list) are skipped,
        // and said so, whatever the layout the file came in.
        for s in &shards {
            if let Some(a) = s.torch() {
                for (name, what) in &a.skipped {
                    warnings.push(format!(
                        "{}: `{}` is not a tensor ({what}); skipped",
                        s.file_name,
                        escape(name)
                    ));
                }
            }
        }
        let mut tensors = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (si, s) in shards.iter().enumerate() {
            let strides: HashMap<&str, &Vec<usize>> = s
                .torch()
                .map(|a| {
                    a.tensors
                        .iter()
                        .filter_map(|t| t.strides.as_ref().map(|st| (t.name.as_str(), st)))
                        .collect()
                })
                .unwrap_or_default();
            for t in &s.header.tensors {
                if let Some(&prev) = by_name.get(&t.name) {
                    let first = tensors
                        .get(prev)
                        .and_then(|p: &TensorInfo| shards.get(p.shard))
                        .map(|s| s.file_name.clone())
                        .unwrap_or_default();
                    return Err(Error::bad_data(format!(
                        "the tensor is in two files: `{first}` and `{}`",
                        s.file_name
                    ))
                    .file(&s.path)
                    .tensor(&t.name));
                }
                by_name.insert(t.name.clone(), tensors.len());
                tensors.push(TensorInfo {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    shard: si,
                    begin: t.begin,
                    end: t.end,
                    placement: match strides.get(t.name.as_str()) {
                        Some(st) => Placement::Strided {
                            strides: st.to_vec(),
                        },
                        None => Placement::Contiguous,
                    },
                });
            }
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            layout,
            shards,
            tensors,
            config,
            index,
            other_files: Vec::new(),
            warnings,
            notes: Vec::new(),
            merge: None,
            by_name,
        })
    }

    /// Look a tensor up by its stored name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The position of a tensor in [`Checkpoint::tensors`].
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The raw bytes of a contiguous tensor (little-endian, as stored; any alignment), borrowed from
    /// the mmap. A tensor that is not one byte range (a strided torch view, merged Meta ranks) is an
    /// error here: read it with [`Checkpoint::read`].
    pub fn data(&self, t: &TensorInfo) -> Result<&[u8]> {
        if !t.is_contiguous() {
            return Err(Error::internal(
                "the tensor is not one contiguous byte range; read it with Checkpoint::read",
            )
            .tensor(&t.name));
        }
        let shard = self
            .shards
            .get(t.shard)
            .ok_or_else(|| Error::internal("tensor refers to a missing shard").tensor(&t.name))?;
        shard.data(t.begin, t.end).map_err(|e| e.tensor(&t.name))
    }

    /// The bytes of any tensor in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn read(&self, t: &TensorInfo) -> Result<std::borrow::Cow<'_, [u8]>> {
        self.read_rows(t, 0, t.shape.first().copied().unwrap_or(1))
    }

    /// Drop a tensor's pages from this process's resident set once it has been read (see
    /// [`Shard::release`]).
    pub fn release(&self, t: &TensorInfo) {
        match &t.placement {
            Placement::Concat { parts, .. } => {
                for p in parts {
                    if let Some(s) = self.shards.get(p.shard) {
                        s.release(p.begin, p.end);
                    }
                }
            }
            _ => {
                if let Some(s) = self.shards.get(t.shard) {
                    s.release(t.begin, t.end);
                }
            }
        }
    }

    /// The container of the checkpoint's weight files (`safetensors` or `torch`).
    pub fn container(&self) -> &'static str {
        self.shards
            .first()
            .map(|s| s.container.name())
            .unwrap_or("safetensors")
    }

    /// The shard holding a tensor.
    pub fn shard_of(&self, t: &TensorInfo) -> Option<&Shard> {
        self.shards.get(t.shard)
    }

    /// For each tensor, the index of an earlier tensor stored as the very same bytes (same file,
    /// same byte range, dtype, shape and layout), if any: a tied weight that `torch.save` wrote
    /// once under two names (`lm_head.weight` and `model.embed_tokens.weight` of a tied model's
    /// `pytorch_model.bin`). Rank-merged tensors are never aliases.
    pub fn aliases(&self) -> Vec<Option<usize>> {
        type Key<'a> = (usize, usize, usize, Dtype, &'a [usize], Option<&'a [usize]>);
        let mut seen: HashMap<Key, usize> = HashMap::new();
        self.tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let strides = match &t.placement {
                    Placement::Contiguous => None,
                    Placement::Strided { strides } => Some(strides.as_slice()),
                    Placement::Concat { .. } => return None,
                };
                let key = (
                    t.shard,
                    t.begin,
                    t.end,
                    t.dtype,
                    t.shape.as_slice(),
                    strides,
                );
                match seen.get(&key) {
                    Some(&j) => Some(j),
                    None => {
                        seen.insert(key, i);
                        None
                    }
                }
            })
            .collect()
    }

    /// Total number of parameters: elements over all tensors, a tensor stored as the same bytes
    /// as an earlier one ([`Checkpoint::aliases`], a tied weight) counted once, as
    /// transformers' `num_parameters()` counts a tied weight once.
    pub fn parameter_count(&self) -> u128 {
        self.tensors
            .iter()
            .zip(self.aliases())
            .filter(|(_, a)| a.is_none())
            .map(|(t, _)| t.numel() as u128)
            .sum()
    }

    /// Total bytes of tensor data the files hold: bytes two tensors share (a tied weight pickled
    /// once, a view of another tensor's storage) counted once. The sum of
    /// [`Checkpoint::data_bytes_by_dtype`].
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes_by_dtype().values().map(|&(b, _)| b).sum()
    }

    /// Per dtype: the bytes of tensor data the files hold (bytes two tensors share counted once)
    /// and the number of tensors.
    pub fn data_bytes_by_dtype(&self) -> std::collections::BTreeMap<String, (u64, usize)> {
        let mut groups: std::collections::BTreeMap<String, Vec<&TensorInfo>> = Default::default();
        for t in &self.tensors {
            groups.entry(t.dtype.to_string()).or_default().push(t);
        }
        groups
            .into_iter()
            .map(|(d, ts)| (d, (self.distinct_bytes(&ts), ts.len())))
            .collect()
    }

    /// The bytes a set of tensors covers, each byte once. A tensor whose extent overlaps no
    /// other's counts its own bytes; overlapping ones count the union of their byte runs.
    fn distinct_bytes(&self, ts: &[&TensorInfo]) -> u64 {
        // (shard, begin, end, index) of every extent: one per part of a rank-merged tensor.
        let mut ext: Vec<(usize, usize, usize, usize)> = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            match &t.placement {
                Placement::Concat { parts, .. } => {
                    ext.extend(parts.iter().map(|p| (p.shard, p.begin, p.end, i)))
                }
                _ => ext.push((t.shard, t.begin, t.end, i)),
            }
        }
        ext.retain(|e| e.2 > e.1);
        ext.sort_unstable();
        let mut overlapping = vec![false; ts.len()];
        let mut reach: Option<(usize, usize, usize)> = None; // (shard, end, index) reaching furthest
        for &(shard, begin, end, i) in &ext {
            match reach {
                Some((s, e, j)) if s == shard && begin < e => {
                    overlapping[i] = true;
                    overlapping[j] = true;
                    if end > e {
                        reach = Some((shard, end, i));
                    }
                }
                _ => reach = Some((shard, end, i)),
            }
        }
        let mut total: u64 = 0;
        let mut runs: Vec<(usize, u64, u64)> = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            if !overlapping[i] {
                total = total.saturating_add(t.nbytes() as u64);
                continue;
            }
            let rows = t.shape.first().copied().unwrap_or(1);
            let ok = self.for_each_run(t, 0, rows, &mut |shard, off, len| {
                runs.push((shard, off, off.saturating_add(len as u64)));
                Ok(())
            });
            if ok.is_err() {
                // Unreachable for an opened checkpoint; its extent stands in.
                let start = self.shards.get(t.shard).map_or(0, |s| s.data_start()) as u64;
                runs.push((
                    t.shard,
                    start.saturating_add(t.begin as u64),
                    start.saturating_add(t.end as u64),
                ));
            }
        }
        runs.sort_unstable();
        let mut cur: Option<(usize, u64, u64)> = None;
        for (shard, b, e) in runs {
            match cur {
                Some((s, cb, ce)) if s == shard && b <= ce => cur = Some((s, cb, ce.max(e))),
                _ => {
                    if let Some((_, cb, ce)) = cur {
                        total = total.saturating_add(ce - cb);
                    }
                    cur = Some((shard, b, e));
                }
            }
        }
        if let Some((_, cb, ce)) = cur {
            total = total.saturating_add(ce - cb);
        }
        total
    }

    /// Number of transformer layers, from the highest `layers.{i}` index in tensor names.
    pub fn layer_count_from_names(&self) -> Option<usize> {
        let mut max: Option<usize> = None;
        for t in &self.tensors {
            if let Some(i) = layer_index(&t.name) {
                max = Some(max.map_or(i, |m| m.max(i)));
            }
        }
        max.map(|m| m.saturating_add(1))
    }
}

/// The layer index in a name like `model.layers.12.mlp.up_proj.weight` (also `layers.12.`, `h.12.`,
/// `blocks.12.`).
pub fn layer_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| match w {
        [a, b] if matches!(*a, "layers" | "h" | "blocks" | "layer" | "blk") => b.parse().ok(),
        _ => None,
    })
}

/// The entries of a directory, names exactly as stored (any bytes), sorted, without the
/// temporaries of ckpt runs.
fn list_dir(dir: &Path) -> Result<Vec<OsString>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list directory", e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, "cannot list directory", e))?;
        let name = entry.file_name();
        // Temporaries of an interrupted ckpt run are never part of a checkpoint.
        if is_ckpt_temporary(&name) {
            continue;
        }
        out.push(name);
    }
    out.sort();
    Ok(out)
}

/// Whether a directory entry is a temporary of a ckpt run (`*.ckpt-tmp-*`, `*.ckpt-old-*`).
pub fn is_ckpt_temporary(name: &std::ffi::OsStr) -> bool {
    let b = name.as_bytes();
    let has = |pat: &[u8]| b.windows(pat.len()).any(|w| w == pat);
    has(b".ckpt-tmp-") || has(b".ckpt-old-")
}

fn others(listing: &[OsString], ck: &Checkpoint) -> Vec<String> {
    listing
        .iter()
        .filter(|f| {
            f.as_os_str() != INDEX_NAME
                && f.as_os_str() != TORCH_INDEX_NAME
                && !ck
                    .shards
                    .iter()
                    .any(|s| s.path.file_name() == Some(f.as_os_str()))
                && f.as_os_str() != "config.json"
                && f.as_os_str() != "params.json"
        })
        .map(|f| f.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_index_parses_common_spellings() {
        assert_eq!(layer_index("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_index("layers.3.attention.wq.weight"), Some(3));
        assert_eq!(layer_index("transformer.h.0.attn.c_attn.weight"), Some(0));
        assert_eq!(layer_index("model.norm.weight"), None);
    }
}
