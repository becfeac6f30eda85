//! `ckpt logits PATH --ids 1,15,72 [--ids ...]`: run the reference LLaMA forward pass and show the
//! top-K next tokens of each sequence's last position, or write every logit to a safetensors file.

use std::io::Write;
use std::path::{Path, PathBuf};

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::{Dtype, serialize_header};
use ckpt::detect::open_view;
use ckpt::kernels::{self, Isa};
use ckpt::mapping::{Registry, RenameRule};
use ckpt::reference::{self, Logits};
use ckpt::report::esc;
use ckpt::{Error, Result};

use super::{CmdResult, EXIT_FINDINGS, EXIT_OK, out};

/// Run the reference LLaMA forward pass on token ids and print the top next-token logits of each
/// sequence's last position (or write all logits with `--out`).
///
/// Exit 0; 1 when some logits are not finite (NaN or infinite: a warning says how many), 2 on
/// error.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `.safetensors` file, a `*.index.json`, or a checkpoint directory (with its config).
    pub path: PathBuf,
    /// One sequence of comma-separated token ids; repeat for a batch (equal lengths).
    #[arg(long, value_name = "IDS", required = true)]
    pub ids: Vec<String>,
    /// Write `input_ids` (I64 [batch, seq]) and `logits` (F32 [batch, seq, vocab]) to this
    /// safetensors file instead of printing the top tokens.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How many of the highest logits to show per sequence.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub top: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Read the checkpoint as this family (default: detected; `ckpt families` lists them).
    #[arg(long, value_name = "F")]
    pub family: Option<String>,
    /// Load this family mapping file and read the checkpoint through it (unless `--family` names
    /// another family).
    #[arg(long, value_name = "FILE")]
    pub mapping: Option<PathBuf>,
    /// Rename physical tensors before matching (e.g. strip a prefix), like `ckpt detect`.
    #[arg(long = "rename", value_name = "PATTERN=REPLACEMENT")]
    pub renames: Vec<String>,
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
    let renames = a
        .renames
        .iter()
        .map(|r| RenameRule::parse(r))
        .collect::<Result<Vec<_>>>()?;
    let mut registry = Registry::builtin()?;
    let mut family = a.family.clone();
    if let Some(m) = &a.mapping {
        let loaded = registry.load_file(m)?;
        family.get_or_insert(loaded);
    }
    Ok(Request {
        batch,
        isa,
        registry,
        family,
        renames,
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
    let ck = Checkpoint::open(&a.path)?;
    let (view, family) = open_view(&ck, &req.registry, req.family.as_deref(), &req.renames)?;
    let logits = reference::forward(&view, &req.batch, req.isa)?;
    let nonfinite = logits.data.iter().filter(|x| !x.is_finite()).count();
    // The results are still shown (and written): they are what the weights compute.
    let code = if nonfinite > 0 {
        let nan = logits.data.iter().filter(|x| x.is_nan()).count();
        eprintln!(
            "warning: {nonfinite} of {} logits are not finite ({nan} NaN, {} infinite): the weights or the computation overflow or hold NaN/Inf (`ckpt check --scan-values` names the tensors)",
            logits.data.len(),
            nonfinite - nan
        );
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    if let Some(path) = &a.out {
        write_logits(path, &req.batch, &logits)?;
    }
    if a.json {
        let mut v = to_json(&a, &req, &family, &logits);
        v["nonfinite"] = nonfinite.into();
        out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(code);
    }
    if let Some(path) = &a.out {
        out(&format!(
            "wrote logits [{}, {}, {}] to {}",
            logits.batch,
            logits.seq,
            logits.vocab,
            path.display()
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

fn to_json(a: &Args, req: &Request, family: &str, l: &Logits) -> serde_json::Value {
    let sequences: Vec<_> = (0..l.batch)
        .map(|b| {
            let top: Vec<_> = l
                .top_k(b, l.seq - 1, a.top)
                .into_iter()
                .map(|(id, logit)| serde_json::json!({"id": id, "logit": logit}))
                .collect();
            serde_json::json!({"ids": req.batch[b], "top": top})
        })
        .collect();
    serde_json::json!({
        "checkpoint": a.path.display().to_string(),
        "family": family,
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
fn write_logits(path: &Path, batch: &[Vec<u32>], l: &Logits) -> Result<()> {
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ckpt-logits-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io_write(dir, "cannot create a temporary file", e))?;
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
    tmp.persist(path)
        .map_err(|e| Error::io_write(path, "cannot rename into place", e.error))?;
    Ok(())
}
