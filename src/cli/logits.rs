//! `ckpt logits PATH --ids 1,15,72 [--ids ...]`: run the reference LLaMA forward pass and show the
//! top-K next tokens of each sequence's last position, or write every logit to a safetensors file.

use std::io::Write;
use std::path::PathBuf;

use ckpt::checkpoint::header::{Dtype, serialize_header};
use ckpt::detect::open_view;
use ckpt::kernels::{self, Isa};
use ckpt::mapping::{Registry, RenameRule};
use ckpt::reference::{self, Logits, Outputs};
use ckpt::report::esc;
use ckpt::write::guard::{self, OutputKind};
use ckpt::{Error, Result};

use super::args::{MappingArgs, OpenArgs, Unit, exit_codes, progress};
use super::{CmdResult, EXIT_FINDINGS, EXIT_OK, JSON_SCHEMA_VERSION, out};

/// Run the reference forward pass, in the checkpoint family's own math (refused when that math is not
/// known), on token ids and print the top next-token logits of each sequence's last position (or
/// write all logits with `--out`).
///
/// Exit 0; 1 when some logits are not finite (NaN or infinite: a warning says how many), 2 on
/// error.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::PLAIN)]
pub struct Args {
    /// A `.safetensors`, PyTorch `.bin`/`.pth`/`.pt` or `.gguf` file, a `*.index.json`, a
    /// checkpoint directory or a Hugging Face cache repository (with its config).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// One sequence of comma-separated token ids; repeat for a batch (equal lengths).
    #[arg(long, value_name = "IDS", required = true)]
    pub ids: Vec<String>,
    /// Write `input_ids` (I64 [batch, seq]) and `logits` (F32 [batch, seq, vocab]) to this
    /// safetensors file instead of printing the top tokens.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the `--out` file if it exists (only a regular file that is not an input).
    #[arg(long)]
    pub force: bool,
    /// How many of the highest logits to show per sequence.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub top: usize,
    /// Print JSON instead of tables (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    /// Read the checkpoint as this family instead of the detected one (`ckpt families` lists
    /// them).
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// No progress bar, and no `wrote logits` line with `--out`.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// The validated request.
struct Request {
    batch: Vec<Vec<u32>>,
    isa: Isa,
    registry: Registry,
    family: Option<String>,
    renames: Vec<RenameRule>,
}

fn resolve(a: &Args) -> Result<Request> {
    let batch = a
        .ids
        .iter()
        .map(|s| parse_ids(s))
        .collect::<Result<Vec<_>>>()?;
    let isa = match kernels::isa_from_env() {
        Ok(Some(isa)) => isa,
        Ok(None) => kernels::active_isa(),
        Err(m) => return Err(Error::usage(m)),
    };
    Ok(Request {
        batch,
        isa,
        registry: a.mapping.registry()?,
        family: a.family.clone(),
        renames: a.mapping.rules()?,
    })
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|t| {
            let t = t.trim();
            t.parse::<u32>().map_err(|_| {
                Error::usage(format!("`--ids`: `{}` is not a token id", esc(t)))
                    .hint("give comma-separated non-negative integers, e.g. --ids 1,15,72,203")
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(ids)
}

/// Run `logits`.
pub fn run(a: Args) -> CmdResult {
    let req = resolve(&a)?;
    let ck = super::args::open(&a.path, &a.open, a.quiet)?;
    super::args::require_matches(&[&ck], &req.renames, false)?;
    // The output-path guard runs before any work: never an input, a special file or an existing
    // file without --force.
    let dest = a
        .out
        .as_deref()
        .map(|p| guard::check_output(p, OutputKind::File, &guard::Inputs::of(&ck), a.force))
        .transpose()?;
    let (view, family) = open_view(&ck, &req.registry, req.family.as_deref(), &req.renames)?;
    let seq = req.batch.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(max) = view.config.as_ref().and_then(|c| c.max_position_embeddings)
        && seq > max
    {
        eprintln!(
            "warning: {seq} token ids but the model has `max_position_embeddings` {max}: positions beyond it were never trained (and cost time quadratic in the length)"
        );
    }
    // A refusal from the config (e.g. a sliding window shorter than the input) names the config.
    let config_file = view.config.as_ref().map(|c| c.path.clone());
    let bar = progress(a.quiet, Unit::Steps);
    bar.set_message("forward pass");
    // The top tokens need only each sequence's last position; `--out` writes every position.
    let outputs = match dest {
        Some(_) => Outputs::Every,
        None => Outputs::Last,
    };
    let logits = reference::forward_outputs(&view, &req.batch, req.isa, outputs, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| match &config_file {
        Some(p) if e.path().is_none() => e.file(p),
        _ => e,
    })?;
    bar.finish_and_clear();
    let nonfinite = logits.data.iter().filter(|x| !x.is_finite()).count();
    // The results are still shown (and written): they are what the weights compute.
    let code = if nonfinite > 0 {
        let nan = logits.data.iter().filter(|x| x.is_nan()).count();
        let which = match logits.outputs {
            Outputs::Every => "",
            Outputs::Last => "; computed after each sequence's last position",
        };
        eprintln!(
            "warning: {nonfinite} of {} logits are not finite ({nan} NaN, {} infinite{which}): the weights or the computation overflow or hold NaN/Inf (`ckpt check --scan-values` names the tensors)",
            logits.data.len(),
            nonfinite - nan
        );
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    if let Some(d) = &dest {
        write_logits(d, &req.batch, &logits)?;
    }
    if a.json {
        let mut v = to_json(&a, &ck.path.display().to_string(), &req, &family, &logits);
        v["nonfinite"] = nonfinite.into();
        out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(code);
    }
    if let Some(path) = &a.out {
        if a.quiet {
            return Ok(code);
        }
        out(&format!(
            "wrote logits [{}, {}, {}] to {}",
            logits.batch,
            logits.seq,
            logits.vocab,
            ckpt::error::escape_path(path)
        ));
        return Ok(code);
    }
    out(&format!(
        "checkpoint  {}  (family {}, isa {})",
        ck.path.display(),
        esc(&family),
        req.isa.name()
    ));
    for b in 0..logits.batch {
        out("");
        out(&format!(
            "sequence {b}: {} tokens, top {} after the last one",
            logits.seq, a.top
        ));
        let mut t = ckpt::report::table(&["rank", "token", "logit"]);
        for (rank, (id, logit)) in logits.top_k(b, logits.seq - 1, a.top).iter().enumerate() {
            t.add_row(vec![
                (rank + 1).to_string(),
                id.to_string(),
                format!("{logit:.4}"),
            ]);
        }
        out(&t.to_string());
    }
    Ok(code)
}

fn to_json(a: &Args, path: &str, req: &Request, family: &str, l: &Logits) -> serde_json::Value {
    let sequences: Vec<_> = (0..l.batch)
        .map(|b| {
            let top: Vec<_> = l
                .top_k(b, l.seq - 1, a.top)
                .into_iter()
                .map(|(id, logit)| {
                    serde_json::json!({"id": id, "logit": super::json_number(f64::from(logit))})
                })
                .collect();
            serde_json::json!({"ids": req.batch[b], "top": top})
        })
        .collect();
    serde_json::json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "checkpoint": {"path": path, "family": family},
        "isa": req.isa.name(),
        "batch": l.batch,
        "seq": l.seq,
        "vocab": l.vocab,
        "out": a.out.as_ref().map(|p| p.display().to_string()),
        "sequences": sequences,
    })
}

/// Write `input_ids` and `logits` as safetensors: into a temporary file in the same directory,
/// synced, then renamed over `path`, so a failure never leaves a partial file under that name.
fn write_logits(d: &guard::Output, batch: &[Vec<u32>], l: &Logits) -> Result<()> {
    let path = d.given.as_path();
    if l.outputs != Outputs::Every {
        return Err(Error::internal("`--out` needs every position's logits").file(path));
    }
    let ids_bytes = l.batch * l.seq * 8;
    let logit_bytes = l.data.len() * 4;
    let header = serialize_header(
        Some(&[("format".to_string(), "pt".to_string())]),
        &[
            (
                "input_ids".to_string(),
                Dtype::I64,
                vec![l.batch, l.seq],
                0,
                ids_bytes,
            ),
            (
                "logits".to_string(),
                Dtype::F32,
                vec![l.batch, l.seq, l.vocab],
                ids_bytes,
                ids_bytes + logit_bytes,
            ),
        ],
    )?;
    let dir = d.parent.as_path();
    // `.<name>.ckpt-tmp-<random>`: the name `ckpt convert --clean DIR` removes after a kill.
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(&d.name);
    prefix.push(".ckpt-tmp-");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempfile_in(dir)
        .map_err(|e| {
            // tempfile appends the temporary name to its errors; show only the OS error.
            let os = e.raw_os_error().map_or_else(
                || std::io::Error::from(e.kind()),
                std::io::Error::from_raw_os_error,
            );
            Error::io_write(path, "cannot create a temporary file next to it", os)
        })?;
    let write_err = |e| Error::io_write(path, "cannot write", e);
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        w.write_all(&header).map_err(write_err)?;
        for id in batch.iter().flatten() {
            w.write_all(&i64::from(*id).to_le_bytes())
                .map_err(write_err)?;
        }
        for x in &l.data {
            w.write_all(&x.to_le_bytes()).map_err(write_err)?;
        }
        w.flush().map_err(write_err)?;
    }
    tmp.as_file().sync_all().map_err(write_err)?;
    // Re-check just before the rename: only a regular file may be replaced, and only with --force
    // (then it was checked to be no input); otherwise the rename refuses to replace anything.
    let now = std::fs::symlink_metadata(&d.path).ok();
    if let Some(m) = &now
        && (!d.exists || !m.file_type().is_file())
    {
        return Err(Error::new(
            ckpt::ErrorKind::CannotCreate,
            format!(
                "the destination appeared while writing ({}); nothing was changed",
                guard::type_name(m)
            ),
        )
        .file(path));
    }
    let res = if now.is_some() {
        tmp.persist(&d.path).map(|_| ())
    } else {
        tmp.persist_noclobber(&d.path).map(|_| ())
    };
    res.map_err(|e| Error::io_write(path, "cannot rename into place", e.error))?;
    let _ = ckpt::write::fsio::sync_dir(&d.parent);
    Ok(())
}
