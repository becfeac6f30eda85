//! `ckpt check PATH`: will this release load in LLaMA-compatible tooling? Renders the library's
//! findings as text (per-layer findings collapsed), JSON (every finding, stable schema) or GitHub
//! Actions annotations, and turns them into the exit code.

use std::path::{Path, PathBuf};

use ckpt::check::{self, Finding, Loaders, Options, Report, Severity, Target};
use ckpt::report::{self, esc};

use super::args::{MappingArgs, OpenArgs, Unit, exit_codes, progress};
use super::{CmdResult, EXIT_FINDINGS, EXIT_OK, JSON_SCHEMA_VERSION, out};

/// Check that a checkpoint will load in LLaMA-compatible tooling (names as stored).
///
/// Runs every rule and reports every finding with a stable id (see docs/CHECKS.md). The rules judge
/// the names as stored; `--mapping` and `--rename` only feed the family detection behind the
/// "converts exactly" hint.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::CHECK)]
pub struct Args {
    /// A checkpoint directory, a `.safetensors` or PyTorch `.bin`/`.pth`/`.pt` file, a
    /// `*.index.json` or a Hugging Face cache repository.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The loaders to check against: `llama` (every loader: the union a "loads in LLaMA tooling"
    /// claim needs), `transformers`, `llama.cpp`, `candle` or `vllm`.
    #[arg(long, default_value = "llama", value_name = "TARGET")]
    pub target: String,
    /// Output format: text, json (the same as --json) or github (workflow annotations).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Text)]
    pub format: Format,
    /// Print JSON instead of text (schema: docs/JSON.md); the same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Also fail on warnings (`--deny warnings`).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub deny: Option<Deny>,
    /// Read every float tensor and report NaN, Inf and all-zero weights.
    #[arg(long)]
    pub scan_values: bool,
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable findings, per-layer repetition collapsed.
    Text,
    /// One JSON object with every finding.
    Json,
    /// GitHub Actions workflow commands (`::error file=...,title=...::...`).
    Github,
}

/// What `--deny` turns into failures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deny {
    /// Warnings fail the check too.
    Warnings,
}

/// Whether this invocation prints JSON (errors are then also printed as JSON).
pub fn wants_json(a: &Args) -> bool {
    a.json || a.format == Format::Json
}

/// Run `check`.
pub fn run(a: Args) -> CmdResult {
    let format = if a.json { Format::Json } else { a.format };
    let result = check(&a, format);
    // In GitHub format a check that could not run is an annotation too, so the failure shows on the
    // pull request and not only in the log.
    if let (Err(e), Format::Github) = (&result, format) {
        let mut props = Vec::new();
        if let Some(p) = e.path() {
            props.push(format!("file={}", gh_prop(&p.display().to_string())));
        }
        props.push(format!(
            "title={}",
            gh_prop(&format!("ckpt error[{}]", e.kind().id()))
        ));
        let mut msg = e.message().to_string();
        if let Some(t) = e.tensor_name() {
            msg = format!("tensor `{}`: {msg}", esc(t));
        }
        out(&format!("::error {}::{}", props.join(","), gh_data(&msg)));
    }
    result
}

fn check(a: &Args, format: Format) -> CmdResult {
    let target = Target::parse(&a.target)?;
    let reg = a.mapping.registry()?;
    let renames = a.mapping.rules()?;
    let quiet = a.quiet || format != Format::Text;
    // A cache repository root becomes its snapshot here; the library opens what it is given.
    let resolved = ckpt::checkpoint::resolve::resolve(&a.path, &a.open.options())?;
    if !quiet {
        for n in &resolved.notes {
            eprintln!("note: {n}");
        }
    }
    if !renames.is_empty() {
        let ck = super::args::open(&resolved.path, &a.open, true)?;
        super::args::require_matches(&[&ck], &renames, false)?;
    }
    let bar = progress(quiet || !a.scan_values, Unit::Bytes);
    bar.set_message("scanning values");
    let cb = |n: u64, total: u64| {
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        bar.inc(n);
    };
    let key = super::open_options().state_dict_key;
    let opts = Options {
        target,
        scan_values: a.scan_values,
        progress: Some(&cb),
        registry: Some(&reg),
        renames: &renames,
        allow_external_links: a.open.allow_external_links,
        state_dict_key: key.as_deref(),
    };
    let report = check::run(&resolved.path, &opts)?;
    bar.finish_and_clear();
    let deny = a.deny == Some(Deny::Warnings);
    match format {
        Format::Json => {
            out(&serde_json::to_string_pretty(&to_json(&report, deny)).unwrap_or_default())
        }
        Format::Github => {
            for line in github(&report) {
                out(&line);
            }
            if let Some(h) = &report.hint {
                out(&format!("::notice title=ckpt convert::{}", gh_data(h)));
            }
            out(&summary(&report, deny));
        }
        Format::Text => {
            for line in text(&report) {
                super::out_fit(&line, 2);
            }
            super::out_fit(&summary(&report, deny), 2);
            if let Some(h) = &report.hint {
                for l in report::wrap("hint: ", "      ", h) {
                    out(&l);
                }
            }
        }
    }
    Ok(if report.ok(deny) {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

/// A group of findings that differ only in the layer index of their tensor.
struct Group<'a> {
    first: &'a Finding,
    tensor: Option<String>,
    count: usize,
    /// The distinct files of the merged findings (a per-layer finding spans shards).
    files: Vec<&'a Path>,
}

impl Group<'_> {
    /// The file, or the common directory with a count when the findings span several files.
    fn file(&self) -> Option<String> {
        match self.files.as_slice() {
            [] => None,
            [one] => Some(one.display().to_string()),
            many => {
                let dir = many[0].parent().unwrap_or(Path::new("."));
                Some(format!("{} ({} files)", dir.display(), many.len()))
            }
        }
    }
}

/// Collapse per-layer findings: same id, severity and message, tensors differing only in the layer
/// index (`model.layers.{0..59}.ln1.weight`). Findings without a tensor also keep their file apart.
fn groups(r: &Report) -> Vec<Group<'_>> {
    let names: Vec<String> = r
        .findings
        .iter()
        .map(|f| f.tensor.clone().unwrap_or_default())
        .collect();
    let keys: Vec<(&str, Severity, &str, String)> = r
        .findings
        .iter()
        .map(|f| {
            (
                f.id,
                f.severity,
                f.message.as_str(),
                match &f.tensor {
                    Some(_) => String::new(),
                    None => f
                        .file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                },
            )
        })
        .collect();
    report::collapse(&names, &keys)
        .into_iter()
        .map(|c| {
            let first = &r.findings[c.members[0]];
            let mut files: Vec<&Path> = Vec::new();
            for &m in &c.members {
                if let Some(f) = r.findings[m].file.as_deref()
                    && !files.contains(&f)
                {
                    files.push(f);
                }
            }
            Group {
                first,
                tensor: first.tensor.as_ref().map(|_| c.name.clone()),
                count: c.count,
                files,
            }
        })
        .collect()
}

fn display_file(p: &Path) -> String {
    esc(&p.display().to_string())
}

fn text(r: &Report) -> Vec<String> {
    let mut lines = vec![format!(
        "checking {} against {}",
        display_file(&r.path),
        r.target.architecture(),
    )];
    if r.target != Target::Llama {
        lines[0].push_str(&format!(" ({} rules only)", r.target.name()));
    }
    if r.findings.is_empty() {
        return lines;
    }
    lines.push(String::new());
    for g in groups(r) {
        let f = g.first;
        let tensor = g
            .tensor
            .as_ref()
            .map(|t| {
                let n = if g.count > 1 {
                    format!(" ({} tensors)", g.count)
                } else {
                    String::new()
                };
                format!("`{}`{n}: ", esc(t))
            })
            .unwrap_or_default();
        lines.push(format!(
            "{}[{}]{}: {tensor}{}",
            f.severity.name(),
            f.id,
            tags(f.loaders),
            f.message
        ));
        if let Some(file) = g.file() {
            lines.push(format!("  --> {}", esc(&file)));
        }
    }
    lines.push(String::new());
    lines
}

/// ` (candle, vllm)` for a finding that affects some loaders only; empty for every loader.
fn tags(l: Loaders) -> String {
    if l == Loaders::ALL {
        String::new()
    } else {
        format!(" ({})", l.names().join(", "))
    }
}

fn summary(r: &Report, deny: bool) -> String {
    let (e, w) = (r.errors(), r.warnings());
    let counts = format!(
        "{e} error{}, {w} warning{}",
        if e == 1 { "" } else { "s" },
        if w == 1 { "" } else { "s" }
    );
    if r.ok(deny) {
        format!(
            "ok: {} will load as {} ({counts})",
            display_file(&r.path),
            r.target.describe()
        )
    } else if e == 0 {
        format!("failed: {counts} (warnings denied)")
    } else {
        format!(
            "failed: {counts}: {} will not load as {} as it is",
            display_file(&r.path),
            r.target.describe()
        )
    }
}

/// Escape a GitHub workflow-command message.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a GitHub workflow-command property value.
fn gh_prop(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github(r: &Report) -> Vec<String> {
    groups(r)
        .into_iter()
        .map(|g| {
            let f = g.first;
            let cmd = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut props = Vec::new();
            // An annotation points at one file: the first of a group spanning shards.
            if let Some(file) = g.files.first() {
                props.push(format!("file={}", gh_prop(&file.display().to_string())));
            }
            props.push(format!(
                "title={}{}",
                gh_prop(f.id),
                gh_prop(&tags(f.loaders))
            ));
            let msg = match &g.tensor {
                Some(t) => format!("`{}`: {}", esc(t), f.message),
                None => f.message.clone(),
            };
            format!("::{cmd} {}::{}", props.join(","), gh_data(&msg))
        })
        .collect()
}

fn to_json(r: &Report, deny: bool) -> serde_json::Value {
    let findings: Vec<_> = r
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "id": f.id,
                "severity": f.severity.name(),
                "file": f.file.as_ref().map(|p| p.display().to_string()),
                "tensor": f.tensor,
                "message": f.message,
                "loaders": f.loaders.names(),
            })
        })
        .collect();
    serde_json::json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "target": r.target.name(),
        "path": r.path.display().to_string(),
        "findings": findings,
        "errors": r.errors(),
        "warnings": r.warnings(),
        "ok": r.ok(deny),
        "hint": r.hint,
    })
}
