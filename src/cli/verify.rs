//! `ckpt verify A B`: are two checkpoints the same model? Structure, bytes and logits.

use std::path::{Path, PathBuf};

use ckpt::Error;
use ckpt::checkpoint::Checkpoint;
use ckpt::mapping::{Registry, RenameRule, View};
use ckpt::report::{self, esc};
use ckpt::verify::{self, Level, Options, Pair, Report, Verdict};

use super::args::{MappingArgs, OpenArgs, Unit, exit_codes, progress};
use super::{CmdResult, JSON_SCHEMA_VERSION, out};

/// Prove two checkpoints compute the same thing: same canonical tensors and shapes (structure), same
/// bytes, and the same logits from the built-in reference forward pass, each side in its own family.
///
/// Verdicts: `equivalent` (logits compared and within the tolerance, structure agrees), `NOT
/// equivalent`, and for runs limited by --level or --skip-logits `same structure` / `structure
/// differs` / `identical bytes` / `bytes differ`, each naming the levels not compared;
/// `inconclusive` when a level could not run.
/// A GGUF with quantized weights is judged against per-type bands (weight and logits NMSE,
/// docs/GGUF.md) unless a tolerance is stated; one that stores the source's floats in F16 or BF16
/// passes when every such value is exactly the source's rounded and the logits are within that
/// type's band.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::VERIFY)]
pub struct Args {
    /// First checkpoint (file, index, directory, Hugging Face cache repository or `.gguf`).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Second checkpoint.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Read A as this family instead of the detected one (`ckpt families` lists them).
    #[arg(long, value_name = "FAMILY")]
    pub family_a: Option<String>,
    /// Read B as this family instead of the detected one.
    #[arg(long, value_name = "FAMILY")]
    pub family_b: Option<String>,
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// Deepest level to run: structure, bytes or logits. Below logits the verdict is never
    /// `equivalent`: it says which levels it compared.
    #[arg(long, value_name = "LEVEL", default_value = "logits")]
    pub level: String,
    /// Stop after the bytes level (for speed on huge models); same as --level bytes.
    #[arg(long)]
    pub skip_logits: bool,
    /// A token id sequence for the logits level, comma-separated (repeatable; equal lengths). Default:
    /// deterministic pseudo-random sequences across the vocabulary plus one of low ids. Either way,
    /// up to 64 tokens whose embedding rows differ are run too, in extra sequences.
    #[arg(long, value_name = "IDS")]
    pub ids: Vec<String>,
    /// Length of the default sequences.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub seq_len: usize,
    /// Number of default sequences.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub batch: usize,
    /// Absolute logits tolerance (default 0: exact, right when the bytes are identical). A dtype
    /// conversion is equivalent only within a tolerance you state (in a GGUF, floats exactly
    /// rounded to F16/BF16 are judged by that type's band instead). Stating one switches the
    /// quantization and rounding bands of a GGUF off.
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub atol: f64,
    /// Tolerance relative to the largest |logit| of A.
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub rtol: f64,
    /// Print JSON instead of tables (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Open a checkpoint through its detected (or given) family as a canonical view.
pub fn open_canonical<'a>(
    ck: &'a Checkpoint,
    reg: &Registry,
    family: Option<&str>,
    renames: &[RenameRule],
) -> Result<(View<'a>, String), Error> {
    ckpt::detect::open_view(ck, reg, family, renames)
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
    let reg = a.mapping.registry()?;
    let rules = a.mapping.rules()?;
    let quiet = a.quiet || a.json;
    let cka = super::args::open(&a.a, &a.open, quiet)?;
    let ckb = super::args::open(&a.b, &a.open, quiet)?;
    super::args::require_matches(&[&cka, &ckb], &rules, false)?;
    let (va, fa) = open_canonical(&cka, &reg, a.family_a.as_deref(), &rules)?;
    let (vb, fb) = open_canonical(&ckb, &reg, a.family_b.as_deref(), &rules)?;
    let vocab = va
        .get("model.embed_tokens.weight")
        .and_then(|t| t.shape.first().copied());
    let opts = options(&a, vocab)?;
    let bar = progress(quiet, Unit::Steps);
    let rep = verify::verify_with_progress(&va, &vb, &opts, &|stage, done, total| {
        bar.set_message(stage.to_string());
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let (pa, pb) = (cka.path.clone(), ckb.path.clone());
    if a.json {
        let sides = [(pa.as_path(), fa.as_str()), (pb.as_path(), fb.as_str())];
        out(&serde_json::to_string_pretty(&to_json(&rep, sides, VERIFY_HINT)).unwrap_or_default());
    } else {
        for line in render(&rep, &pa, &pb, VERIFY_HINT) {
            super::out_fit(&line, 11);
        }
    }
    Ok(rep.verdict.exit_code())
}

/// What `ckpt verify` can do when the logits level could not run (flags it really has).
pub const VERIFY_HINT: &str = "if the input is longer than the model allows (a sliding window, a \
     position limit), shorten it with `--seq-len N` (or shorter `--ids`); to compare without the \
     forward pass, use `--skip-logits` or `--level bytes` (that verdict then names the levels it did \
     not compare)";

fn pass(p: bool) -> &'static str {
    if p { "PASS" } else { "FAIL" }
}

/// Render the report as text; `hint` says what the command can do when a level could not run.
pub fn render(rep: &Report, a: &Path, b: &Path, hint: &str) -> Vec<String> {
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
        let shown = |v: &serde_json::Value| {
            if v.is_null() {
                "(not set)".to_string()
            } else {
                ckpt::error::escape_value(v)
            }
        };
        l.push(format!("  config {k}: A {}, B {}", shown(x), shown(y)));
    }
    if s.configs != (true, true) {
        let missing: Vec<&str> = [("A", s.configs.0), ("B", s.configs.1)]
            .into_iter()
            .filter(|(_, has)| !has)
            .map(|(n, _)| n)
            .collect();
        l.push(format!(
            "  hyperparameters not compared: no config.json for {}",
            missing.join(" and ")
        ));
    }
    match &rep.bytes {
        None => l.push("bytes      not compared (--level structure)".into()),
        Some(bt) => {
            l.push(format!(
                "bytes      {}  {}/{} tensors identical ({})",
                pass(bt.pass),
                bt.identical,
                bt.compared,
                report::human_bytes(bt.bytes)
            ));
            for (p, d) in bt.differing.iter().take(20) {
                l.push(format!(
                    "  {} differs: {}",
                    esc(&p.canonical),
                    value_text(d)
                ));
            }
            if bt.differing.len() > 20 {
                l.push(format!("  ... and {} more", bt.differing.len() - 20));
            }
        }
    }
    if let Some(q) = &rep.quant {
        let not_rounded = &q.not_rounded;
        if !q.rounded.is_empty() || !not_rounded.is_empty() {
            let mut types: Vec<String> = q.rounded.iter().map(|(_, d)| d.to_string()).collect();
            types.sort();
            types.dedup();
            let shown: Vec<String> = not_rounded.iter().take(5).map(|n| esc(n)).collect();
            let names = format!(
                "{}{}",
                shown.join(", "),
                if not_rounded.len() > 5 { ", ..." } else { "" }
            );
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            let mut line = format!("rounded    {}  ", pass(not_rounded.is_empty()));
            if q.rounded.is_empty() {
                line.push_str(&format!(
                    "{} float tensor{} in another float type, not the other side's values rounded to it: {names}",
                    not_rounded.len(),
                    plural(not_rounded.len())
                ));
            } else {
                line.push_str(&format!(
                    "{} float tensor{} stored as {}: every value exactly the other side's rounded to nearest even",
                    q.rounded.len(),
                    plural(q.rounded.len()),
                    types.join(", ")
                ));
                if !not_rounded.is_empty() {
                    line.push_str(&format!(
                        "; {} not (values changed beyond the rounding): {names}",
                        not_rounded.len()
                    ));
                }
            }
            l.push(line);
        }
    }
    if let Some(q) = &rep.quant
        && !q.tensors.is_empty()
    {
        let mut types: Vec<String> = q.tensors.iter().map(|t| t.dtype.to_string()).collect();
        types.sort();
        types.dedup();
        l.push(format!(
            "quantized  {}  {} tensors quantized ({}): weight NMSE max {:.3e}; {} over their band",
            pass(q.weights_pass()),
            q.tensors.len(),
            types.join(", "),
            q.max_nmse(),
            q.over
        ));
        for t in q
            .tensors
            .iter()
            .filter(|t| t.nmse.is_nan() || t.nmse > t.band)
            .take(20)
        {
            l.push(format!(
                "  {} ({}): weight NMSE {:.3e} over the band {:.1e}",
                esc(&t.name),
                t.dtype,
                t.nmse,
                t.band
            ));
        }
    }
    match &rep.logits {
        None => l.push(format!(
            "logits     not compared (--level {}{})",
            rep.level.name(),
            if rep.level == Level::Bytes {
                " or --skip-logits"
            } else {
                ""
            }
        )),
        Some(Err(n)) => l.push(format!("logits     COULD NOT RUN  {}", n.reason)),
        Some(Ok(g)) if rep.quant.is_some() => {
            let q = rep.quant.as_ref().map(|q| (q.coarsest, q.logits_band));
            let (ty, band) = q.unwrap_or((ckpt::checkpoint::Dtype::F32, 0.0));
            l.push(format!(
                "logits     {}  {} positions: NMSE {:.3e} (band {:.1e} for {ty}), max abs {:.3e}, max rel {:.3e}, min cosine {:.6}, top-1 {:.1}%, top-5 {:.1}%, max KL {:.3e}",
                pass(g.pass),
                g.positions,
                g.nmse,
                band,
                g.max_abs,
                g.max_rel,
                g.min_cosine,
                g.top1 * 100.0,
                g.top5 * 100.0,
                g.max_kl
            ));
        }
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
            if g.nonfinite_a + g.nonfinite_b > 0 {
                l.push(format!(
                    "  non-finite logits: {} in A, {} in B, {} where the two sides disagree{}",
                    g.nonfinite_a,
                    g.nonfinite_b,
                    g.nonfinite_differ,
                    if g.kl_skipped > 0 {
                        format!(" ({} positions without KL)", g.kl_skipped)
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    if let Some(e) = &rep.embedding_rows {
        l.push(format!(
            "  embedding rows that differ: {}; the logits level ran {} of their tokens{}",
            e.differing,
            e.exercised,
            if e.added > 0 {
                format!(" ({} of them added in extra sequences)", e.added)
            } else {
                String::new()
            }
        ));
    }
    l.push(String::new());
    l.push(format!("verdict: {}", verdict_text(rep)));
    if let Some(n) = rep.not_run() {
        if let Some(h) = &n.hint {
            l.push(format!("hint: {h}"));
        }
        l.push(format!("hint: {hint}"));
    }
    l
}

/// How a differing tensor's values differ.
fn value_text(d: &Option<ckpt::diff::ValueDiff>) -> String {
    match d {
        None => "bytes differ (not a float dtype)".into(),
        Some(v) => {
            let mut t = format!(
                "max abs difference {:.3e}, {} of {} elements differ",
                v.max_abs, v.differing, v.elements
            );
            if v.nonfinite_a + v.nonfinite_b > 0 {
                t.push_str(&format!(
                    ", non-finite values: {} in A, {} in B",
                    v.nonfinite_a, v.nonfinite_b
                ));
            }
            if v.differing == 0 {
                t.push_str(" (the same numbers in other bytes, e.g. -0 and +0)");
            }
            t
        }
    }
}

/// The verdict with what backs it: `equivalent`, `NOT equivalent (logits differ)`, `identical
/// bytes (logits not compared)`, `inconclusive (logits could not run; ...)`.
pub fn verdict_text(rep: &Report) -> String {
    let word = rep.verdict.word();
    let not_compared = |levels: &[Level]| {
        let names: Vec<&str> = levels.iter().map(|l| l.name()).collect();
        format!("{} not compared", names.join(" and "))
    };
    let bytes_note = match &rep.bytes {
        Some(b) if b.pass => "bytes identical",
        Some(_) => "bytes differ",
        None => "bytes not compared",
    };
    match rep.verdict {
        // A GGUF judged by its bands: quantized tensors within their weight band, narrowed floats
        // exactly the source's rounded, logits within the coarsest type's band.
        Verdict::Equivalent if rep.quant.is_some() => match &rep.quant {
            Some(q) if q.tensors.is_empty() => {
                format!("{word} up to the rounding to {} (docs/GGUF.md)", q.coarsest)
            }
            _ => format!("{word} within the quantization bands (docs/GGUF.md)"),
        },
        Verdict::Equivalent => match &rep.bytes {
            Some(b) if !b.pass && b.values_equal() => {
                // Why the bytes differ: the same values in another float dtype (a bf16 source in
                // an f32 GGUF), or other encodings of the same numbers.
                let n = b.differing.len();
                let widened = b
                    .differing
                    .iter()
                    .filter(|(p, _)| p.a_dtype != p.b_dtype)
                    .count();
                let why = match widened {
                    0 => "-0 and +0, NaN payloads".to_string(),
                    w if w == n => "the same values stored in another dtype".to_string(),
                    w => format!(
                        "{w} store the same values in another dtype, the others differ as -0 and +0 or NaN payloads"
                    ),
                };
                format!("{word} ({n} tensors differ in bytes only, not in value: {why})")
            }
            Some(b) if !b.pass => format!(
                "{word} (logits agree within {}, on the sequences run; {} tensors' values differ{})",
                match &rep.logits {
                    Some(Ok(g)) => format!("the tolerance applied, {:.3e}", g.tolerance),
                    _ => "the tolerance applied".to_string(),
                },
                b.differing.len(),
                rep.embedding_rows
                    .map(|e| format!(
                        "; {} of {} differing embedding rows run",
                        e.exercised, e.differing
                    ))
                    .unwrap_or_default()
            ),
            _ => word.to_string(),
        },
        Verdict::NotEquivalent => {
            let mut why = Vec::new();
            if !rep.structure.pass {
                why.push("structure differs".to_string());
            }
            let logits_ok = matches!(&rep.logits, Some(Ok(g)) if g.pass);
            match &rep.logits {
                Some(Ok(g)) if !g.pass => why.push("logits differ".into()),
                Some(Err(_)) => why.push("logits could not run".into()),
                _ => {}
            }
            if let Some(q) = &rep.quant
                && rep.structure.pass
            {
                // Quantized: the bands decided, not exactness.
                if q.over > 0 {
                    why.push(format!(
                        "{} quantized tensor{} over {} band",
                        q.over,
                        if q.over == 1 { "" } else { "s" },
                        if q.over == 1 { "its" } else { "their" }
                    ));
                } else if logits_ok {
                    why.push("a tensor that is not quantized differs from the source by more than a change of float type".into());
                }
            } else if let Some(b) = &rep.bytes
                && !b.values_equal()
                && (logits_ok || rep.logits.as_ref().is_some_and(|l| l.is_err()))
                && rep.structure.pass
            {
                why.push(format!(
                    "the values of {} tensors differ at the exact default tolerance{}",
                    b.differing.len(),
                    if logits_ok {
                        ", although the sampled logits agree"
                    } else {
                        ""
                    }
                ));
            }
            format!("{word} ({})", why.join("; "))
        }
        Verdict::SameStructure | Verdict::IdenticalBytes => {
            let mut t = format!("{word} ({})", not_compared(&rep.not_checked()));
            if rep.structure.configs != (true, true) {
                t.insert_str(t.len() - 1, "; hyperparameters not compared");
            }
            t
        }
        Verdict::StructureDiffers | Verdict::BytesDiffer => {
            format!("{word} ({})", not_compared(&rep.not_checked()))
        }
        Verdict::Inconclusive => format!(
            "{word} (logits could not run; structure agrees{}, {bytes_note})",
            if rep.structure.configs == (true, true) {
                ""
            } else {
                " (hyperparameters not compared)"
            }
        ),
    }
}

fn pair_json(p: &Pair) -> serde_json::Value {
    serde_json::json!({
        "canonical": p.canonical, "a_name": p.a_name, "b_name": p.b_name,
        "a_shape": p.a_shape, "b_shape": p.b_shape,
        "a_dtype": p.a_dtype.map(|d| d.to_string()), "b_dtype": p.b_dtype.map(|d| d.to_string()),
    })
}

/// The report as JSON (schema: docs/JSON.md); `sides` are each checkpoint's path and family;
/// `hint` as for [`render`].
pub fn to_json(rep: &Report, sides: [(&Path, &str); 2], hint: &str) -> serde_json::Value {
    use serde_json::json;
    let s = &rep.structure;
    let f = super::json_number;
    let side = |(p, f): (&Path, &str)| json!({"path": p.display().to_string(), "family": f});
    let names = |v: Vec<Level>| v.into_iter().map(|l| l.name()).collect::<Vec<_>>();
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "a": side(sides[0]),
        "b": side(sides[1]),
        "verdict": rep.verdict.word(),
        "verdict_text": verdict_text(rep),
        "equivalent": rep.equivalent,
        "checked": names(rep.checked()),
        "embedding_rows": rep.embedding_rows.map(|e| json!({"differing": e.differing, "exercised": e.exercised, "added": e.added})),
        "not_checked": names(rep.not_checked()),
        "structure": {
            "pass": s.pass, "common": s.common,
            "only_a": s.only_a.iter().map(pair_json).collect::<Vec<_>>(),
            "only_b": s.only_b.iter().map(pair_json).collect::<Vec<_>>(),
            "shape_differs": s.shape_differs.iter().map(pair_json).collect::<Vec<_>>(),
            "dtype_differs": s.dtype_differs.iter().map(pair_json).collect::<Vec<_>>(),
            "config_differs": s.config_differs.iter().map(|(k, x, y)| json!({"key": k, "a": x, "b": y})).collect::<Vec<_>>(),
            "config_a": s.configs.0, "config_b": s.configs.1,
        },
        "bytes": rep.bytes.as_ref().map(|b| json!({
            "pass": b.pass, "compared": b.compared, "identical": b.identical, "bytes": b.bytes,
            "differing": b.differing.iter().map(|(p, d)| json!({
                "tensor": pair_json(p),
                "max_abs": d.map(|v| f(v.max_abs)),
                "differing_elements": d.map(|v| v.differing),
                "elements": d.map(|v| v.elements),
                "nonfinite_a": d.map(|v| v.nonfinite_a),
                "nonfinite_b": d.map(|v| v.nonfinite_b),
            })).collect::<Vec<_>>(),
        })),
        "logits": rep.logits.as_ref().map(|l| match l {
            Err(n) => json!({
                "ran": false, "pass": null, "kind": n.kind.id(), "reason": n.reason,
                "hint": hint, "error_hint": n.hint,
            }),
            Ok(g) => json!({
                "ran": true,
                "pass": g.pass, "tolerance": f(g.tolerance), "max_abs": f(g.max_abs), "max_rel": f(g.max_rel),
                "min_cosine": f(g.min_cosine), "top1": g.top1, "top5": g.top5, "max_kl": f(g.max_kl),
                "positions": g.positions, "scale": f(g.scale), "nmse": f(g.nmse),
                "nonfinite_a": g.nonfinite_a, "nonfinite_b": g.nonfinite_b,
                "nonfinite_differ": g.nonfinite_differ, "kl_skipped": g.kl_skipped,
            }),
        }),
        "quant": rep.quant.as_ref().map(|q| json!({
            "pass": q.weights_pass(), "coarsest": q.coarsest.to_string(), "logits_band": f(q.logits_band),
            "over": q.over,
            "rounded": q.rounded.iter().map(|(n, d)| json!({"tensor": n, "dtype": d.to_string()})).collect::<Vec<_>>(),
            "tensors": q.tensors.iter().map(|t| json!({
                "tensor": t.name, "dtype": t.dtype.to_string(), "nmse": f(t.nmse), "band": f(t.band),
            })).collect::<Vec<_>>(),
        })),
    })
}
