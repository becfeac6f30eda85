//! `check`: will this checkpoint load in LLaMA-compatible tooling, as it is stored?
//!
//! Every rule runs and every finding is reported (a CI gate that stops at the first problem makes
//! people re-upload once per problem). Each finding carries a stable id (documented with the reason
//! it matters in `docs/CHECKS.md`), a severity, and the file and tensor it is about. The rules work on
//! the names as stored, because that is what a loader sees: a Yi checkpoint *is* incompatible until
//! it is converted, even though `ckpt` can read it through its family mapping.
//!
//! The order of work: [`files`] reads the index and shard headers itself before the checkpoint is
//! opened (so a missing or stray shard becomes a finding rather than only an open error), then the
//! opened checkpoint goes through [`rules`] (config identity, expected tensor set and shapes,
//! embeddings, dtypes) and, when asked, [`scan`] (NaN / Inf / all-zero values over the mmap).

pub mod files;
pub mod loaders;
pub mod rules;
pub mod scan;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The checkpoint will not load, or will load and compute something else.
    Error,
    /// Likely harmless or cosmetic, but worth a look before upload.
    Warning,
}

impl Severity {
    /// `error` / `warning`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One finding of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Stable id, e.g. `C002-model-type` (see `docs/CHECKS.md`).
    pub id: &'static str,
    /// Severity.
    pub severity: Severity,
    /// The file it is about (as a path under the checkpoint directory), if any.
    pub file: Option<PathBuf>,
    /// The tensor it is about, if any.
    pub tensor: Option<String>,
    /// What is wrong, lower case, names in backticks. Never repeats the tensor name, so findings of
    /// the same rule on different layers read the same and can be collapsed.
    pub message: String,
    /// The loaders the finding affects ([`Loaders::ALL`] for the rules every LLaMA loader shares).
    pub loaders: Loaders,
}

/// A set of loaders a finding affects (bit set over [`Loaders::LIST`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loaders(pub u8);

impl Loaders {
    /// Hugging Face transformers (`AutoModelForCausalLM` / `AutoTokenizer`, no remote code).
    pub const TRANSFORMERS: Loaders = Loaders(1);
    /// llama.cpp (`convert_hf_to_gguf.py`, then its runtime).
    pub const LLAMA_CPP: Loaders = Loaders(2);
    /// candle-transformers' `llama` model.
    pub const CANDLE: Loaders = Loaders(4);
    /// vLLM.
    pub const VLLM: Loaders = Loaders(8);
    /// Every loader.
    pub const ALL: Loaders = Loaders(15);
    /// Each loader with its name, in output order.
    pub const LIST: [(Loaders, &'static str); 4] = [
        (Loaders::TRANSFORMERS, "transformers"),
        (Loaders::LLAMA_CPP, "llama.cpp"),
        (Loaders::CANDLE, "candle"),
        (Loaders::VLLM, "vllm"),
    ];

    /// The union of two sets.
    pub const fn or(self, o: Loaders) -> Loaders {
        Loaders(self.0 | o.0)
    }

    /// Whether the two sets share a loader.
    pub fn intersects(self, o: Loaders) -> bool {
        self.0 & o.0 != 0
    }

    /// The loader names in the set.
    pub fn names(self) -> Vec<&'static str> {
        Self::LIST
            .iter()
            .filter(|(l, _)| self.intersects(*l))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Finding {
    /// An error finding.
    pub fn error(id: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            id,
            severity: Severity::Error,
            file: None,
            tensor: None,
            message: message.into(),
            loaders: Loaders::ALL,
        }
    }

    /// A warning finding.
    pub fn warning(id: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(id, message)
        }
    }

    /// Set the file.
    pub fn file(mut self, p: impl Into<PathBuf>) -> Finding {
        self.file = Some(p.into());
        self
    }

    /// Set the tensor.
    pub fn tensor(mut self, t: impl Into<String>) -> Finding {
        self.tensor = Some(t.into());
        self
    }

    /// Set the loaders the finding affects.
    pub fn loaders(mut self, l: Loaders) -> Finding {
        self.loaders = l;
        self
    }
}

/// The tooling a checkpoint is checked against. Every target is LLaMA (`model_type` `llama`,
/// `LlamaForCausalLM`); they differ in which loaders' rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The union a "loads in LLaMA tooling" claim needs: every loader's rules (the default).
    Llama,
    /// Hugging Face transformers only.
    Transformers,
    /// llama.cpp (`convert_hf_to_gguf.py`) only.
    LlamaCpp,
    /// candle-transformers' `llama` model only.
    Candle,
    /// vLLM only.
    Vllm,
}

impl Target {
    /// Parse a `--target` value.
    pub fn parse(s: &str) -> Result<Target> {
        match s {
            "llama" | "all" => Ok(Target::Llama),
            "transformers" => Ok(Target::Transformers),
            "llama.cpp" | "llamacpp" | "llama-cpp" => Ok(Target::LlamaCpp),
            "candle" => Ok(Target::Candle),
            "vllm" => Ok(Target::Vllm),
            _ => Err(Error::usage(format!(
                "unknown target `{}`; supported: llama (every loader), transformers, llama.cpp, candle, vllm",
                crate::error::escape(s)
            ))),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Llama => "llama",
            Target::Transformers => "transformers",
            Target::LlamaCpp => "llama.cpp",
            Target::Candle => "candle",
            Target::Vllm => "vllm",
        }
    }

    /// What "will load as ..." says: `llama`, or `llama in candle`.
    pub fn describe(self) -> String {
        match self {
            Target::Llama => "llama".into(),
            t => format!("llama in {}", t.name()),
        }
    }

    /// The loaders whose rules apply.
    pub fn loaders(self) -> Loaders {
        match self {
            Target::Llama => Loaders::ALL,
            Target::Transformers => Loaders::TRANSFORMERS,
            Target::LlamaCpp => Loaders::LLAMA_CPP,
            Target::Candle => Loaders::CANDLE,
            Target::Vllm => Loaders::VLLM,
        }
    }

    /// The `model_type` the target's loaders dispatch on.
    pub fn model_type(self) -> &'static str {
        "llama"
    }

    /// The architecture class name.
    pub fn architecture(self) -> &'static str {
        "LlamaForCausalLM"
    }
}

/// What to check and how.
#[derive(Clone, Copy)]
pub struct Options<'p> {
    /// The target tooling.
    pub target: Target,
    /// Also read every float tensor and look for NaN, Inf and all-zero weights.
    pub scan_values: bool,
    /// Called with (bytes just scanned, total bytes to scan) during `scan_values`, from several threads.
    pub progress: Option<&'p (dyn Fn(u64, u64) + Sync)>,
    /// The families the conversion hint is detected among (`None`: the built-in ones).
    pub registry: Option<&'p crate::mapping::Registry>,
    /// Renames applied to the names before the detection behind the conversion hint (the rules
    /// themselves always judge the names as stored).
    pub renames: &'p [crate::mapping::RenameRule],
    /// Accept shard symlinks that leave the checkpoint directory.
    pub allow_external_links: bool,
    /// Which state dict of a PyTorch file to read when it holds several (`--state-dict-key`).
    pub state_dict_key: Option<&'p str>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            target: Target::Llama,
            scan_values: false,
            progress: None,
            registry: None,
            renames: &[],
            allow_external_links: false,
            state_dict_key: None,
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target checked against.
    pub target: Target,
    /// The path that was checked.
    pub path: PathBuf,
    /// Every finding, in rule order (files, config, tensors, values).
    pub findings: Vec<Finding>,
    /// Whether the checkpoint could be opened (when not, the findings say why).
    pub opened: bool,
    /// When the checkpoint fails but is a known LLaMA-equivalent family: what it is and the command
    /// that converts it ("this looks like yi: run `ckpt convert ...`").
    pub hint: Option<String>,
}

impl Report {
    /// Number of error findings.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Number of warning findings.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// No errors (and, with `deny_warnings`, no warnings either).
    pub fn ok(&self, deny_warnings: bool) -> bool {
        self.errors() == 0 && (!deny_warnings || self.warnings() == 0)
    }

    /// Whether any finding has this id.
    pub fn has(&self, id: &str) -> bool {
        self.findings.iter().any(|f| f.id == id)
    }
}

/// Check the checkpoint at `path` (a directory, a `.safetensors` file or an index).
///
/// Returns `Err` only when the check could not run: the checkpoint cannot be opened and the
/// pre-open file checks found nothing that explains why.
pub fn run(path: &Path, opts: &Options) -> Result<Report> {
    let mut findings = Vec::new();
    files::preflight(path, &mut findings);
    let open_opts = crate::checkpoint::OpenOptions {
        revision: None,
        allow_external_links: opts.allow_external_links,
        state_dict_key: opts.state_dict_key.map(str::to_string),
    };
    let ck = match Checkpoint::open_with(path, &open_opts) {
        Ok(ck) => ck,
        Err(e) => {
            // Weights under names no loader looks for (a lone `model.bin`) are a finding, not
            // only an open error.
            if let Some(dir) = loaders_dir(path, &open_opts) {
                loaders::weight_files(&dir, None, &mut findings);
            }
            findings.retain(|f| f.loaders.intersects(opts.target.loaders()));
            if findings.iter().any(|f| f.severity == Severity::Error) {
                let mut f = Finding::error(
                    files::ids::UNOPENABLE,
                    format!("the checkpoint cannot be opened: {}", e.message()),
                );
                if let Some(p) = e.path() {
                    f = f.file(p);
                }
                if let Some(t) = e.tensor_name() {
                    f = f.tensor(t);
                }
                findings.push(f);
                return Ok(Report {
                    target: opts.target,
                    path: path.to_path_buf(),
                    findings,
                    opened: false,
                    hint: None,
                });
            }
            return Err(e);
        }
    };
    // The rules judge a Hugging Face / Meta / PyTorch release against the loaders of LLaMA
    // checkpoints (llama.cpp through its converter). A GGUF file is llama.cpp's own runtime format,
    // which no rule models: "will not load in llama.cpp" would be false for the converter's output.
    if crate::checkpoint::gguf::of_checkpoint(&ck).is_some() {
        return Err(Error::unsupported(
            "a GGUF file is llama.cpp's runtime format, not a release the loaders' rules describe: `check` does not judge GGUF files",
        )
        .file(&ck.path)
        .hint("`ckpt verify SOURCE FILE` compares it with its source; `ckpt convert FILE OUT --to llama` (F32/F16/BF16 files) writes a directory `ckpt check` judges"));
    }
    findings.extend(check_opened(&ck, opts)?);
    findings.retain(|f| f.loaders.intersects(opts.target.loaders()));
    let hint = if findings.iter().any(|f| f.severity == Severity::Error) {
        match opts.registry {
            Some(reg) => convert_hint_with(&ck, opts.target, reg, opts.renames),
            None => convert_hint(&ck, opts.target),
        }
    } else {
        None
    };
    Ok(Report {
        target: opts.target,
        path: path.to_path_buf(),
        findings,
        opened: true,
        hint,
    })
}

/// The directory loaders would be given for `path` (a directory, a cache repository's snapshot, an
/// index's directory); `None` for a single weights file given directly.
fn loaders_dir(path: &Path, opts: &crate::checkpoint::OpenOptions) -> Option<PathBuf> {
    let r = crate::checkpoint::resolve::resolve(path, opts).ok()?;
    if r.path.is_dir() {
        return Some(r.path);
    }
    let name = r.path.file_name()?.to_string_lossy().into_owned();
    if !name.ends_with(".index.json") {
        return None;
    }
    match r.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
        _ => Some(PathBuf::from(".")),
    }
}

/// "this looks like yi (LLaMA-exact): run `ckpt convert ...`", when detection finds a family other
/// than the target that converts to it exactly.
pub fn convert_hint(ck: &Checkpoint, target: Target) -> Option<String> {
    let reg = crate::mapping::Registry::builtin().ok()?;
    convert_hint_with(ck, target, &reg, &[])
}

/// [`convert_hint`] with the families of `reg` and the names renamed by `renames` first.
pub fn convert_hint_with(
    ck: &Checkpoint,
    target: Target,
    reg: &crate::mapping::Registry,
    renames: &[crate::mapping::RenameRule],
) -> Option<String> {
    let d = crate::detect::detect_with(ck, reg, renames).ok()?;
    let w = d.winner.as_deref().filter(|w| *w != target.model_type())?;
    let cmd = d.convert_command?;
    Some(format!(
        "this looks like a `{}` checkpoint, which converts to {} exactly: run `{cmd}`",
        crate::error::escape(w),
        target.model_type()
    ))
}

/// The rules that need an opened checkpoint (everything but the pre-open file checks).
pub fn check_opened(ck: &Checkpoint, opts: &Options) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    files::check_opened(ck, &mut out);
    let read: Vec<String> = ck.shards.iter().map(|s| s.file_name.clone()).collect();
    match read.as_slice() {
        [file] if ck.layout == crate::checkpoint::Layout::File => {
            loaders::file_given(&ck.dir, file, &mut out)
        }
        _ => loaders::weight_files(&ck.dir, Some(&read), &mut out),
    }
    loaders::extra_weights(ck, &mut out);
    rules::config_identity(ck, opts.target, &mut out);
    rules::tensor_set(ck, &mut out)?;
    rules::dtypes(ck, &mut out);
    tokenizer::rules(ck, &mut out);
    loaders::config_rules(ck, &mut out);
    if opts.scan_values {
        out.extend(scan::scan(ck, opts.progress)?);
    }
    out.retain(|f| f.loaders.intersects(opts.target.loaders()));
    Ok(out)
}
