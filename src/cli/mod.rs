//! Command-line interface: one clap struct of raw flags per subcommand (doc comments are the help),
//! resolved and validated before any work starts (ripgrep's two-stage arguments). Rendering and exit
//! codes live here, never in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ckpt::{Error, ErrorKind};

mod check;
mod convert;
mod detect;
mod diff;
mod families;
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
/// checkpoints.
///
/// Exit codes: 0 ok / equivalent / compatible, 1 findings (differs, incompatible, not equivalent),
/// 2 error (bad input, usage, I/O) or a verification that could not run (inconclusive).
#[derive(Parser, Debug)]
#[command(name = "ckpt", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show a checkpoint's files, tensors, dtypes, parameter count and config (headers only).
    Inspect(inspect::Args),
    /// Check that a checkpoint will load in LLaMA-compatible tooling (CI gate; exit 1 on findings).
    Check(check::Args),
    /// Compare two checkpoints tensor by tensor (aligned by family, bytes compared) and config key by
    /// key.
    Diff(diff::Args),
    /// Convert a checkpoint to another naming family as a Hub-ready directory (crash-safe).
    ///
    /// Only the checkpoint's weights are copied: other weight files (another layout, pickle or GGUF
    /// twins, stray safetensors) are listed as not copied, with the reason. To llama: config.json
    /// carries both RoPE spellings, max_position_embeddings and bos/eos, keys meaningless for LLaMA
    /// are dropped (listed), numbers keep their spelling; tokenizer_config.json is rewritten to a
    /// stock class when the tokenizer is a standard kind, else its remote code is kept (said so).
    Convert(convert::Args),
    /// Rename tensors (`--rename P=R`) into a new directory, or in place with --in-place.
    Rename(convert::RenameArgs),
    /// Detect a checkpoint's family (names, config, shapes) and say how to convert it.
    Detect(detect::Args),
    /// List the known family mapping files.
    Families(families::Args),
    /// Run the reference LLaMA forward pass on token ids; show the top next tokens or write logits
    /// (exit 1 with a warning when some logits are NaN or infinite).
    Logits(logits::Args),
    /// Prove two checkpoints compute the same thing: structure, bytes and logits of the reference
    /// forward pass. Exit 0 equivalent (or matching at every level asked), 1 a level found a
    /// difference, 2 inconclusive (a level could not run) or error.
    Verify(verify::Args),
}

/// What a command returns: an exit code, or an error to render.
pub type CmdResult = Result<u8, Error>;

/// Parse arguments, run the command, render errors, return the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let json = cli_wants_json(&cli.command);
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
        Err(e) => {
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
    }
}

fn cli_wants_json(cmd: &Command) -> bool {
    match cmd {
        Command::Inspect(a) => a.json,
        Command::Check(a) => check::wants_json(a),
        Command::Diff(a) => a.json,
        Command::Convert(_) | Command::Rename(_) => false,
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

/// Print a line to stdout, ignoring a closed pipe (`ckpt inspect ... | head`).
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

/// Parse a user-given regex with a size limit (patterns are input too).
pub fn user_regex(pattern: &str) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::new(ErrorKind::Usage, format!("invalid regex `{pattern}`: {e}")))
}
