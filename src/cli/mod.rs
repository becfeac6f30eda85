//! Command-line interface: one clap struct of raw flags per subcommand (doc comments are the help),
//! resolved and validated before any work starts (ripgrep's two-stage arguments). Rendering and exit
//! codes live here, never in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ckpt::{Error, ErrorKind};

mod args;
mod check;
mod convert;
mod detect;
mod diff;
mod families;
mod hints;
mod inspect;
mod logits;
mod verify;

/// Exit code: success, equivalent, compatible.
pub const EXIT_OK: u8 = 0;
/// Exit code: the check ran and found something (differs, incompatible, not equivalent).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: an error (bad input, usage, I/O), or a verification that could not run (inconclusive).
pub const EXIT_ERROR: u8 = 2;

/// LLM checkpoint compatibility: inspect, detect, convert, verify, check and diff safetensors
/// checkpoints and PyTorch `torch.save` archives (read without unpickling).
///
/// Exit codes: 0 ok / equivalent / compatible, 1 findings (differs, incompatible, not equivalent),
/// 2 error (bad input, usage, I/O) or a verification that could not run (inconclusive).
#[derive(Parser, Debug)]
#[command(
    name = "ckpt",
    version,
    about,
    long_about = None,
    max_term_width = 100,
    after_help = "Exit codes: 0 ok / equivalent / compatible / identical, 1 findings (not equivalent, incompatible, differs), 2 error (bad input, usage, I/O).\nThe flags every command shares are described in docs/CLI.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// For a PyTorch file holding several dicts of tensors (`{"model": ..., "ema": ...}`): the key of
    /// the one to read (nested keys joined with `/`). Not needed when only one dict holds tensors.
    #[arg(long, global = true, value_name = "KEY")]
    state_dict_key: Option<String>,
}

/// Options for opening every checkpoint of this run (set once from the global flags).
static OPEN_OPTIONS: std::sync::OnceLock<ckpt::checkpoint::OpenOptions> =
    std::sync::OnceLock::new();

/// The open options of this run (the global `--state-dict-key`).
pub fn open_options() -> ckpt::checkpoint::OpenOptions {
    OPEN_OPTIONS.get().cloned().unwrap_or_default()
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a checkpoint's files, tensors, dtypes, parameter count and config (headers only).
    Inspect(inspect::Args),
    /// Check that a checkpoint will load in LLaMA-compatible tooling (CI gate; exit 1 on findings).
    Check(check::Args),
    /// Compare two checkpoints tensor by tensor (aligned by family, bytes compared), config key by
    /// key, and the tokenizer, chat template and generation config files beside the weights.
    Diff(diff::Args),
    /// Convert a checkpoint to another naming family as a Hub-ready directory (crash-safe).
    ///
    /// Only the checkpoint's weights are copied: other weight files (another layout, pickle or GGUF
    /// twins, stray safetensors) are listed as not copied, with the reason. To llama: config.json
    /// carries both RoPE spellings, max_position_embeddings and bos/eos, keys meaningless for LLaMA
    /// are dropped (listed), numbers keep their spelling; tokenizer_config.json is rewritten to a
    /// stock class when the tokenizer is a standard kind, else its remote code is kept (said so).
    Convert(convert::Args),
    /// Rename tensors with PATTERN=REPLACEMENT rules into a new directory (or in place); no family
    /// mapping is involved.
    Rename(convert::RenameArgs),
    /// Detect a checkpoint's family (names, config, shipped remote code, shapes) and what it computes; say how to convert it.
    Detect(detect::Args),
    /// List the known family mapping files.
    Families(families::Args),
    /// Run the reference forward pass, in the checkpoint family's own math, on token ids; show the top next tokens or write logits
    /// (exit 1 with a warning when some logits are NaN or infinite).
    Logits(logits::Args),
    /// Prove two checkpoints compute the same thing: structure, bytes and logits of the reference
    /// forward pass.
    Verify(verify::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = args::exit_codes::PLAIN)]
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page of ckpt (or of one command) in roff to stdout.
    #[command(after_help = args::exit_codes::PLAIN)]
    Man {
        /// A command to print the page of (`ckpt-convert(1)`); default: ckpt(1).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
}

impl Command {
    /// The subcommand's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Inspect(_) => "inspect",
            Command::Check(_) => "check",
            Command::Diff(_) => "diff",
            Command::Convert(_) => "convert",
            Command::Rename(_) => "rename",
            Command::Detect(_) => "detect",
            Command::Families(_) => "families",
            Command::Logits(_) => "logits",
            Command::Verify(_) => "verify",
            Command::Completions { .. } => "completions",
            Command::Man { .. } => "man",
        }
    }
}

/// The `schema_version` of every JSON document ckpt prints (docs/JSON.md).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What a command returns: an exit code, or an error to render.
pub type CmdResult = Result<u8, Error>;

/// Parse arguments, run the command, render errors, return the exit code.
pub fn main() -> ExitCode {
    ckpt::write::fsio::raise_fd_limit();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = OPEN_OPTIONS.set(ckpt::checkpoint::OpenOptions {
        state_dict_key: cli.state_dict_key.clone(),
        ..Default::default()
    });
    let json = cli_wants_json(&cli.command);
    let name = cli.command.name();
    let outcome = std::panic::catch_unwind(|| run(cli.command));
    let result = match outcome {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::internal(format!(
                "ckpt crashed: {msg}; this is a bug, please report it"
            )))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(mut e) => {
            hints::advise(&mut e, name);
            report_error(&e, json);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cmd: Command) -> CmdResult {
    match cmd {
        Command::Inspect(a) => inspect::run(a),
        Command::Check(a) => check::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Rename(a) => convert::run_rename(a),
        Command::Detect(a) => detect::run(a),
        Command::Families(a) => families::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ckpt", &mut std::io::stdout());
            Ok(EXIT_OK)
        }
        Command::Man { command } => man(command.as_deref()),
    }
}

fn man(command: Option<&str>) -> CmdResult {
    let root = <Cli as clap::CommandFactory>::command();
    let page = match command {
        None => root,
        Some(name) => {
            let sub = root
                .find_subcommand(name)
                .cloned()
                .ok_or_else(|| Error::usage(format!("no command `{}`", ckpt::report::esc(name))))?;
            // One page per process: leaking the name is how clap takes a runtime name.
            let full: &'static str = format!("ckpt-{name}").leak();
            sub.name(full).bin_name(full)
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .map_err(|e| Error::io("stdout", "cannot render the man page", e))?;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(&buf);
    Ok(EXIT_OK)
}

fn cli_wants_json(cmd: &Command) -> bool {
    match cmd {
        Command::Inspect(a) => a.json,
        Command::Check(a) => check::wants_json(a),
        Command::Diff(a) => a.json,
        Command::Convert(_)
        | Command::Rename(_)
        | Command::Completions { .. }
        | Command::Man { .. } => false,
        Command::Detect(a) => a.json,
        Command::Families(a) => a.json,
        Command::Logits(a) => a.json,
        Command::Verify(a) => a.json,
    }
}

/// Print an error: `error[kind]: message` on stderr, and with `--json` also a JSON object on stdout.
pub fn report_error(e: &Error, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error[{}]: {e}", e.kind().id());
    if json {
        let v = serde_json::json!({
            "schema_version": JSON_SCHEMA_VERSION,
            "error": {
                "kind": e.kind().id(),
                "file": e.path().map(|p| p.display().to_string()),
                "tensor": e.tensor_name(),
                "message": e.message(),
                "hint": e.hint_text(),
            }
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
}

/// A number for JSON output: finite numbers as numbers; NaN and infinities, which JSON cannot hold,
/// as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (docs/JSON.md).
pub fn json_number(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else if v.is_nan() {
        serde_json::json!("NaN")
    } else if v > 0.0 {
        serde_json::json!("Infinity")
    } else {
        serde_json::json!("-Infinity")
    }
}

/// A config value for output: the internal marker of a non-finite number read from a config
/// (`Infinity`, `-Infinity`, `NaN` tokens) becomes the token's text, recursively.
pub fn public_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => match s.strip_prefix(ckpt::json::NONFINITE_SENTINEL) {
            Some(tok) => Value::String(tok.to_string()),
            None => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(public_value).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), public_value(x)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// Print a line to stdout, ignoring a closed pipe (`ckpt inspect ... | head`).
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// Print a report line fitted to the terminal width: a line that fits (or output that is not a
/// terminal, or a pre-rendered table) is printed as it is; a longer one is wrapped at words with
/// the continuation lines indented by `indent` spaces.
pub fn out_fit(line: &str, indent: usize) {
    let width = ckpt::report::terminal_width();
    match width {
        Some(w) if !line.contains('\n') && line.chars().count() > w => {
            let lead: String = line.chars().take_while(|c| *c == ' ').collect();
            let rest = " ".repeat(indent.max(lead.len()));
            for l in ckpt::report::wrap_to(Some(w), &lead, &rest, &line[lead.len()..]) {
                out(&l);
            }
        }
        _ => out(line),
    }
}

/// Parse a user-given regex with a size limit (patterns are input too).
pub fn user_regex(pattern: &str) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::new(ErrorKind::Usage, format!("invalid regex `{pattern}`: {e}")))
}
