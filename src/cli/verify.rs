//! `ckpt verify A B`: are two checkpoints the same model? Structure, bytes and logits.

use std::path::{Path, PathBuf};

use ckpt::Error;
use ckpt::checkpoint::Checkpoint;
use ckpt::mapping::{Registry, View};
use ckpt::report::{self, esc};
use ckpt::verify::{self, Level, Options, Pair, Report};

use super::{CmdResult, EXIT_FINDINGS, EXIT_OK, out};

/// Prove two checkpoints compute the same thing: same canonical tensors and shapes (structure), same
/// bytes, and the same logits from the built-in reference LLaMA forward pass. Exit 0 equivalent,
/// 1 not equivalent, 2 error.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// First checkpoint (file, index or directory).
    pub a: PathBuf,
    /// Second checkpoint.
    pub b: PathBuf,
    /// Read A as this family instead of the detected one.
    #[arg(long, value_name = "FAMILY")]
    pub family_a: Option<String>,
    /// Read B as this family instead of the detected one.
    #[arg(long, value_name = "FAMILY")]
    pub family_b: Option<String>,
    /// Load an extra family mapping file (repeatable).
    #[arg(long, value_name = "FILE")]
    pub mapping: Vec<PathBuf>,
    /// Deepest level to run: structure, bytes or logits.
    #[arg(long, default_value = "logits")]
    pub level: String,
    /// Stop after the bytes level (for speed on huge models).
    #[arg(long)]
    pub skip_logits: bool,
    /// A token id sequence for the logits level, comma-separated (repeatable; equal lengths). Default:
    /// deterministic pseudo-random sequences across the vocabulary plus one of low ids.
    #[arg(long, value_name = "IDS")]
    pub ids: Vec<String>,
    /// Length of the default sequences.
    #[arg(long, default_value_t = 16)]
    pub seq_len: usize,
    /// Number of default sequences.
    #[arg(long, default_value_t = 3)]
    pub batch: usize,
    /// Absolute logits tolerance (default 0: exact, right when the bytes are identical). A dtype
    /// conversion is equivalent only within a tolerance you state.
    #[arg(long, default_value_t = 0.0)]
    pub atol: f64,
    /// Tolerance relative to the largest |logit| of A.
    #[arg(long, default_value_t = 0.0)]
    pub rtol: f64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Open a checkpoint through its detected (or given) family as a canonical view.
pub fn open_canonical<'a>(
    ck: &'a Checkpoint,
    reg: &Registry,
    family: Option<&str>,
) -> Result<View<'a>, Error> {
    let (view, _family) = ckpt::detect::open_view(ck, reg, family, &[])?;
    Ok(view)
}

/// The family registry with the built-in families plus `--mapping` files.
pub fn registry(mappings: &[PathBuf]) -> Result<Registry, Error> {
    let mut reg = Registry::builtin()?;
    for m in mappings {
        reg.load_file(m)?;
    }
    Ok(reg)
}

/// Parse `--ids 1,2,3` values into sequences of equal length, each id below `vocab`.
pub fn parse_ids(ids: &[String], vocab: Option<usize>) -> Result<Vec<Vec<u32>>, Error> {
    let mut seqs = Vec::new();
    for s in ids {
        let seq = s
            .split(',')
            .map(|t| {
                let t = t.trim();
                let id: u32 = t
                    .parse()
                    .map_err(|_| Error::usage(format!("`{t}` in --ids is not a token id")))?;
                if let Some(v) = vocab
                    && id as usize >= v
                {
                    return Err(Error::usage(format!(
                        "token id {id} is outside the vocabulary (size {v})"
                    )));
                }
                Ok(id)
            })
            .collect::<Result<Vec<u32>, Error>>()?;
        if seq.is_empty() {
            return Err(Error::usage("an --ids sequence is empty"));
        }
        seqs.push(seq);
    }
    if seqs.windows(2).any(|w| w[0].len() != w[1].len()) {
        return Err(Error::usage(
            "all --ids sequences must have the same length",
        ));
    }
    Ok(seqs)
}

/// Resolve the kernel path from `CKPT_ISA` (an unknown or unavailable name is a usage error).
pub fn isa() -> Result<ckpt::kernels::Isa, Error> {
    match ckpt::kernels::isa_from_env() {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Ok(ckpt::kernels::active_isa()),
        Err(e) => Err(Error::usage(e)),
    }
}

/// Build the options (shared with `convert --verify`).
pub fn options(a: &Args, vocab: Option<usize>) -> Result<Options, Error> {
    let mut level = verify::parse_level(&a.level)?;
    if a.skip_logits {
        level = level.min(Level::Bytes);
    }
    if !(a.atol >= 0.0 && a.rtol >= 0.0) {
        return Err(Error::usage("--atol and --rtol must be non-negative"));
    }
    if a.seq_len == 0 || a.batch == 0 {
        return Err(Error::usage("--seq-len and --batch must be at least 1"));
    }
    let sequences = if a.ids.is_empty() {
        verify::default_sequences(vocab.unwrap_or(1), a.batch, a.seq_len)
    } else {
        parse_ids(&a.ids, vocab)?
    };
    Ok(Options {
        level,
        atol: a.atol,
        rtol: a.rtol,
        sequences,
        isa: isa()?,
    })
}

/// Run `verify`.
pub fn run(a: Args) -> CmdResult {
    let reg = registry(&a.mapping)?;
    let cka = super::open_checkpoint(&a.a)?;
    let ckb = super::open_checkpoint(&a.b)?;
    let va = open_canonical(&cka, &reg, a.family_a.as_deref())?;
    let vb = open_canonical(&ckb, &reg, a.family_b.as_deref())?;
    let vocab = va
        .get("model.embed_tokens.weight")
        .and_then(|t| t.shape.first().copied());
    let opts = options(&a, vocab)?;
    let bar = progress_bar(a.json);
    let rep = verify::verify_with_progress(&va, &vb, &opts, &|stage, done, total| {
        bar.set_message(stage.to_string());
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    if a.json {
        out(&serde_json::to_string_pretty(&to_json(&rep, &a.a, &a.b)).unwrap_or_default());
    } else {
        for line in render(&rep, &a.a, &a.b) {
            out(&line);
        }
    }
    Ok(if rep.equivalent {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

/// A progress bar on stderr when it is a terminal (hidden otherwise): bytes compared, then layers of
/// each forward pass.
pub fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:9} [{bar:30}] {pos}/{len} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn pass(p: bool) -> &'static str {
    if p { "PASS" } else { "FAIL" }
}

/// Render the report as text.
pub fn render(rep: &Report, a: &Path, b: &Path) -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!(
        "A  {}  (read as {})",
        a.display(),
        esc(&rep.family_a)
    ));
    l.push(format!(
        "B  {}  (read as {})",
        b.display(),
        esc(&rep.family_b)
    ));
    l.push(String::new());
    let s = &rep.structure;
    l.push(format!(
        "structure  {}  {} canonical tensors in common, {} only in A, {} only in B, {} shapes differ, {} dtypes differ",
        pass(s.pass),
        s.common,
        s.only_a.len(),
        s.only_b.len(),
        s.shape_differs.len(),
        s.dtype_differs.len()
    ));
    let mut rows: Vec<(String, &Pair)> = Vec::new();
    rows.extend(s.only_a.iter().map(|p| ("only in A".to_string(), p)));
    rows.extend(s.only_b.iter().map(|p| ("only in B".to_string(), p)));
    rows.extend(
        s.shape_differs
            .iter()
            .map(|p| ("shape differs".to_string(), p)),
    );
    rows.extend(
        s.dtype_differs
            .iter()
            .map(|p| ("dtype differs".to_string(), p)),
    );
    if !rows.is_empty() {
        let mut t = report::table(&[
            "canonical tensor",
            "A",
            "B",
            "A shape/dtype",
            "B shape/dtype",
            "status",
        ]);
        for (status, p) in rows.iter().take(40) {
            let sd = |s: &[usize], d: Option<ckpt::checkpoint::Dtype>| {
                d.map(|d| format!("{} {d}", report::shape(s)))
                    .unwrap_or_else(|| "-".into())
            };
            t.add_row(vec![
                esc(&p.canonical),
                esc(&p.a_name),
                esc(&p.b_name),
                sd(&p.a_shape, p.a_dtype),
                sd(&p.b_shape, p.b_dtype),
                status.clone(),
            ]);
        }
        l.push(t.to_string());
        if rows.len() > 40 {
            l.push(format!(
                "... and {} more (use --json for all)",
                rows.len() - 40
            ));
        }
    }
    for (k, x, y) in &s.config_differs {
        l.push(format!("  config {k}: A {x}, B {y}"));
    }
    if let Some(bt) = &rep.bytes {
        l.push(format!(
            "bytes      {}  {}/{} tensors identical ({})",
            pass(bt.pass),
            bt.identical,
            bt.compared,
            report::human_bytes(bt.bytes)
        ));
        for (p, d) in bt.differing.iter().take(20) {
            l.push(format!(
                "  {} differs: max abs difference {d:.3e}",
                esc(&p.canonical)
            ));
        }
        if bt.differing.len() > 20 {
            l.push(format!("  ... and {} more", bt.differing.len() - 20));
        }
    }
    match &rep.logits {
        None => {}
        Some(Err(reason)) => l.push(format!("logits     FAIL  could not run: {reason}")),
        Some(Ok(g)) => {
            l.push(format!(
                "logits     {}  {} positions: max abs {:.3e} (tolerance {:.3e}), max rel {:.3e}, min cosine {:.6}, top-1 {:.1}%, top-5 {:.1}%, max KL {:.3e}",
                pass(g.pass),
                g.positions,
                g.max_abs,
                g.tolerance,
                g.max_rel,
                g.min_cosine,
                g.top1 * 100.0,
                g.top5 * 100.0,
                g.max_kl
            ));
        }
    }
    l.push(String::new());
    l.push(if rep.equivalent {
        "verdict: equivalent".into()
    } else {
        "verdict: NOT equivalent".into()
    });
    l
}

fn pair_json(p: &Pair) -> serde_json::Value {
    serde_json::json!({
        "canonical": p.canonical, "a_name": p.a_name, "b_name": p.b_name,
        "a_shape": p.a_shape, "b_shape": p.b_shape,
        "a_dtype": p.a_dtype.map(|d| d.to_string()), "b_dtype": p.b_dtype.map(|d| d.to_string()),
    })
}

/// The report as JSON (stable schema, documented in the README).
pub fn to_json(rep: &Report, a: &Path, b: &Path) -> serde_json::Value {
    use serde_json::json;
    let s = &rep.structure;
    let f = |v: f64| {
        if v.is_finite() {
            json!(v)
        } else {
            json!(v.to_string())
        }
    };
    json!({
        "a": a.display().to_string(),
        "b": b.display().to_string(),
        "family_a": rep.family_a,
        "family_b": rep.family_b,
        "equivalent": rep.equivalent,
        "structure": {
            "pass": s.pass, "common": s.common,
            "only_a": s.only_a.iter().map(pair_json).collect::<Vec<_>>(),
            "only_b": s.only_b.iter().map(pair_json).collect::<Vec<_>>(),
            "shape_differs": s.shape_differs.iter().map(pair_json).collect::<Vec<_>>(),
            "dtype_differs": s.dtype_differs.iter().map(pair_json).collect::<Vec<_>>(),
            "config_differs": s.config_differs.iter().map(|(k, x, y)| json!({"key": k, "a": x, "b": y})).collect::<Vec<_>>(),
        },
        "bytes": rep.bytes.as_ref().map(|b| json!({
            "pass": b.pass, "compared": b.compared, "identical": b.identical, "bytes": b.bytes,
            "differing": b.differing.iter().map(|(p, d)| json!({"tensor": pair_json(p), "max_abs": f(*d)})).collect::<Vec<_>>(),
        })),
        "logits": rep.logits.as_ref().map(|l| match l {
            Err(reason) => json!({"pass": false, "error": reason}),
            Ok(g) => json!({
                "pass": g.pass, "tolerance": f(g.tolerance), "max_abs": f(g.max_abs), "max_rel": f(g.max_rel),
                "min_cosine": f(g.min_cosine), "top1": g.top1, "top5": g.top5, "max_kl": f(g.max_kl),
                "positions": g.positions, "scale": f(g.scale),
            }),
        }),
    })
}
