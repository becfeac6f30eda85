//! The flag vocabulary shared by every command (docs/CLI.md is its user-facing description): flag
//! groups that commands flatten in, so one idea has one flag name, one value name and one help text
//! everywhere, and the helpers that turn those flags into library values.

use std::io::IsTerminal;
use std::path::PathBuf;

use ckpt::Result;
use ckpt::checkpoint::{Checkpoint, OpenOptions};
use ckpt::mapping::pattern::{require_renames_match, unmatched_error};
use ckpt::mapping::{Registry, RenameRule};

/// How a checkpoint path is opened: a revision of a Hugging Face cache repository, and whether shard
/// links may leave the checkpoint directory. Every command that reads a checkpoint has these.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpenArgs {
    /// In a Hugging Face cache repository (`models--org--name/`), read this snapshot: a ref under
    /// `refs/` or a snapshot's commit hash [default: the one refs/main names, else the newest].
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Accept shard symlinks that leave the checkpoint directory (links into a cache repository's
    /// `blobs/` are always accepted).
    #[arg(long)]
    pub allow_external_links: bool,
}

impl OpenArgs {
    /// The library's open options.
    pub fn options(&self) -> OpenOptions {
        OpenOptions {
            revision: self.revision.clone(),
            allow_external_links: self.allow_external_links,
            state_dict_key: super::open_options().state_dict_key,
        }
    }
}

/// How a checkpoint is read through a family: extra mapping files and ad-hoc renames. Every command
/// that reads a checkpoint through a family has these (the family itself is chosen by `--family`,
/// `--family-a`/`--family-b` or `--from`/`--to`, depending on how many checkpoints it reads).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MappingArgs {
    /// Also load the family defined in this mapping file (TOML, see mappings/README.md;
    /// repeatable).
    #[arg(long = "mapping", value_name = "FILE")]
    pub mappings: Vec<PathBuf>,
    /// Rename tensors before the family mapping: PATTERN is a regex matched against whole tensor
    /// names, REPLACEMENT may use `$1` groups (repeatable), e.g. 'base_model\.model\.(.*)=$1'. A
    /// rule that matches no tensor is an error.
    #[arg(long = "rename", value_name = "PATTERN=REPLACEMENT")]
    pub renames: Vec<String>,
}

impl MappingArgs {
    /// The built-in families plus the `--mapping` files.
    pub fn registry(&self) -> Result<Registry> {
        registry(&self.mappings)
    }

    /// The parsed `--rename` rules.
    pub fn rules(&self) -> Result<Vec<RenameRule>> {
        parse_renames(&self.renames)
    }
}

/// The built-in families plus the given mapping files.
pub fn registry(mappings: &[PathBuf]) -> Result<Registry> {
    let mut reg = Registry::builtin()?;
    for m in mappings {
        reg.load_file(m)?;
    }
    Ok(reg)
}

/// Parse `--rename` values.
pub fn parse_renames(specs: &[String]) -> Result<Vec<RenameRule>> {
    specs.iter().map(|r| RenameRule::parse(r)).collect()
}

/// Refuse rename rules that match none of the tensors of `checkpoints` (all of them together), or,
/// with `warn_only` (`--dry-run`), print a warning for each.
pub fn require_matches(
    checkpoints: &[&Checkpoint],
    rules: &[RenameRule],
    warn_only: bool,
) -> Result<()> {
    let names: Vec<String> = checkpoints
        .iter()
        .flat_map(|c| c.tensors.iter().map(|t| t.name.clone()))
        .collect();
    if warn_only {
        for r in ckpt::mapping::pattern::unmatched_renames(&names, rules) {
            eprintln!("warning: {}", unmatched_error(r).message());
        }
        return Ok(());
    }
    let path = checkpoints.first().map(|c| c.path.clone());
    require_renames_match(&names, rules).map_err(|e| match path {
        Some(p) if checkpoints.len() == 1 => e.file(p),
        _ => e,
    })
}

/// Open a checkpoint with the `OpenArgs`; the notes on how its path was resolved go to stderr
/// (unless `quiet`).
pub fn open(path: &std::path::Path, o: &OpenArgs, quiet: bool) -> Result<Checkpoint> {
    let ck = Checkpoint::open_with(path, &o.options())?;
    if !quiet {
        for n in &ck.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(ck)
}

/// What a progress bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (shown in decimal units, like every size ckpt prints).
    Bytes,
    /// Steps (layers, tensors).
    Steps,
}

/// The one progress bar style of every command: on stderr, only when stderr is a terminal and the
/// command is not quiet; otherwise hidden.
pub fn progress(quiet: bool, unit: Unit) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    let counts = match unit {
        Unit::Bytes => "{decimal_bytes}/{decimal_total_bytes} ({decimal_bytes_per_sec})",
        Unit::Steps => "{pos}/{len}",
    };
    let template = format!("{{msg:<16}} [{{bar:30}}] {counts} eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Help text appended to every command: its exit codes.
pub mod exit_codes {
    /// Commands that only report (inspect, families, logits, completions, man).
    pub const PLAIN: &str = "Exit codes: 0 ok, 2 error (bad input, usage, I/O).";
    /// `detect`.
    pub const DETECT: &str = "Exit codes: 0 a family was detected and, unless it is one ckpt only recognises (its `math` line says so), its computation is known, 1 no family fits, look-alikes are undecided, the config has keys the family does not model, required tensors are missing, or the checkpoint is quantised or an adapter, 2 error.";
    /// `convert` and `rename`.
    pub const CONVERT: &str = "Exit codes: 0 written (or planned, with --dry-run), 1 --verify found the result not equivalent (nothing written), 2 error.";
    /// `verify`.
    pub const VERIFY: &str = "Exit codes: 0 equivalent, 1 not equivalent, 2 error.";
    /// `check`.
    pub const CHECK: &str = "Exit codes: 0 no errors (and no warnings with --deny warnings), 1 findings, 2 the check could not run.";
    /// `diff`.
    pub const DIFF: &str = "Exit codes: 0 identical, 1 the checkpoints differ, 2 error.";
}
