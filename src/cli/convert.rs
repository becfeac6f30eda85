//! `ckpt convert SRC DST` and `ckpt rename SRC DST --rename P=R`: write a checkpoint under another
//! family's names (or with renamed tensors) as a Hub-ready directory, crash-safely; `--in-place` for
//! pure renames whose headers fit; `--recover DIR` and `--clean DIR` for leftovers of killed runs.
//!
//! This file owns the flags, the view construction, the dry-run table, the progress bar and the
//! summary; the protocol itself is in `ckpt::write`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::{MappingArgs, OpenArgs, Unit, exit_codes, progress};
use super::{CmdResult, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, out};
use ckpt::Error;
use ckpt::checkpoint::Checkpoint;
use ckpt::detect::open_view;
use ckpt::mapping::{RenameRule, View, to_family};
use ckpt::report::{self, esc, human_bytes};
use ckpt::write::{self, Phase, WriteOptions, inplace, plan};

/// What `convert --verify` / `rename --verify` can do when the logits level could not run (they
/// have no --seq-len).
const CONVERT_HINT: &str = "write without --verify, then run `ckpt verify SRC DST` with \
     `--seq-len N` (an input within the model's window) or `--skip-logits` (structure and bytes \
     only)";

/// What `convert --verify` can do when the source cannot be read without the --rename rules.
const CONVERT_HINT_UNREADABLE: &str = "name a family that reads the source as it is stored \
     (`--from FAMILY`, `--mapping FILE`), or write without --verify and check the result with \
     `ckpt verify` against a copy a family reads, or with `ckpt check`";

/// The same for `rename --verify` (the source is read through its detected family).
const RENAME_HINT_UNREADABLE: &str = "`ckpt rename --verify` reads the source through its \
     detected family; write without --verify and check the result with `ckpt verify` against a \
     copy a family reads, or with `ckpt check`";

/// Convert a checkpoint to another naming family (default: LLaMA) as a Hub-ready directory.
///
/// The output is built in a hidden sibling directory, fsynced, checked against the source (every
/// tensor's bytes re-read and compared) and only then renamed to DST: an error, a full disk or
/// Ctrl-C leaves DST as it was. The source is never modified (except with --in-place).
///
/// Only the checkpoint's weights are copied: other weight files (another layout, pickle or GGUF
/// twins, stray safetensors) are listed as not copied, with the reason. To llama: config.json
/// carries both RoPE spellings, max_position_embeddings and bos/eos, keys meaningless for LLaMA are
/// dropped (listed), numbers keep their spelling; tokenizer_config.json is rewritten to a stock
/// class when the tokenizer is a standard kind, else its remote code is kept (said so).
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::CONVERT)]
pub struct Args {
    /// Source checkpoint: a directory, a `.safetensors` or PyTorch `.bin`/`.pth`/`.pt` file, a `*.index.json`, a Hugging Face
    /// cache repository or an F32/F16/BF16 `.gguf`.
    #[arg(value_name = "SRC")]
    pub src: Option<PathBuf>,
    /// Destination directory (must not exist unless --force).
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,
    /// Target family [default: llama] (`ckpt families` lists them).
    #[arg(long, value_name = "FAMILY")]
    pub to: Option<String>,
    /// Source family [default: detected].
    #[arg(long, value_name = "FAMILY", alias = "family")]
    pub from: Option<String>,
    #[command(flatten)]
    pub mapping: MappingArgs,
    #[command(flatten)]
    pub common: Common,
    /// Roll back an interrupted --in-place run in DIR (restores the old headers) and exit. Only a
    /// journal ckpt wrote for these very files is applied; any other is reported and left alone.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["src", "clean"])]
    pub recover: Option<PathBuf>,
    /// Remove leftovers of killed runs (`.*.ckpt-tmp-*`, `.*.ckpt-old-*`) in DIR and exit.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["src", "recover"])]
    pub clean: Option<PathBuf>,
}

/// Rename tensors with PATTERN=REPLACEMENT rules into a new directory, or in place with
/// --in-place. No family mapping is involved: the names are rewritten as the rules say and
/// everything else is copied as it is.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::CONVERT)]
pub struct RenameArgs {
    /// Source checkpoint: a directory, a `.safetensors` or PyTorch `.bin`/`.pth`/`.pt` file, a `*.index.json` or a Hugging Face
    /// cache repository.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Destination directory (omit with --in-place).
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,
    /// Rename rule: PATTERN is a regex matched against whole tensor names, REPLACEMENT may use `$1`
    /// groups (repeatable; at least one), e.g. '(.*)\.ln1\.(.*)=$1.input_layernorm.$2'. A rule
    /// that matches no tensor is an error (a warning with --dry-run).
    #[arg(long = "rename", value_name = "PATTERN=REPLACEMENT", required = true)]
    pub renames: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Flags shared by `convert` and `rename`.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Largest amount of tensor data per shard file (5GB, 500MB, 2GiB, 1e9). A renamed multi-file
    /// safetensors checkpoint also keeps its source's file boundaries
    #[arg(long, value_name = "SIZE", default_value = "5GB")]
    pub max_shard_size: String,
    /// Replace DST if it exists and is a checkpoint directory (safetensors with a config or index)
    /// or empty; the old copy is deleted only after the new one is in place.
    #[arg(long)]
    pub force: bool,
    /// Print the plan (tensors, files, config changes) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Skip re-reading every written tensor and comparing its bytes with the source.
    #[arg(long)]
    pub no_verify_bytes: bool,
    /// Before committing, run `ckpt verify` (structure, bytes and logits of the reference forward
    /// pass) between the source as it is on disk (its own family, without the --rename rules) and
    /// the staged output; nothing is written unless the verdict is `equivalent`: exit 1 when it is
    /// not equivalent, 2 when it is inconclusive (a forward pass could not run, or the source cannot
    /// be read without the --rename rules). Refused with --in-place (no separate output).
    #[arg(long)]
    pub verify: bool,
    /// Pure renames only: rewrite the headers of SRC in place (when they fit), under a journal, with
    /// the directory locked. A pending journal from an interrupted run is refused (see --recover).
    #[arg(long)]
    pub in_place: bool,
    /// Allow a lossy conversion: one whose target cannot express part of the source's computation
    /// (a sliding window, layers without rotary embeddings). What changes is printed; without this
    /// flag such a conversion is refused.
    #[arg(long)]
    pub allow_lossy: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// A value conversion changes bytes by design and may untie `lm_head` (so that it can be scaled
/// apart from the embeddings): judge it by its logits. The structure may differ only by that
/// untied `lm_head` and the `tie_word_embeddings` that says so; anything else still fails.
fn accept_value_structure(rep: &mut ckpt::verify::Report) {
    let st = &rep.structure;
    let untie_only = st.only_a.is_empty()
        && st.shape_differs.is_empty()
        && st.dtype_differs.is_empty()
        && st.only_b.iter().all(|p| p.canonical == "lm_head.weight")
        && st
            .config_differs
            .iter()
            .all(|(k, _, _)| k == "tie_word_embeddings");
    let logits_ok = matches!(&rep.logits, Some(Ok(l)) if l.pass);
    if untie_only && logits_ok {
        rep.structure.pass = true;
        rep.verdict = ckpt::verify::Verdict::Equivalent;
        rep.equivalent = true;
    }
}

/// What a family conversion is, once the two computations are compared.
struct Conversion {
    /// The value steps to apply to the staged output (empty for an exact conversion).
    plan: ckpt::write::value::ValuePlan,
    /// Sentences for the user: value steps and lossy changes.
    notes: Vec<String>,
    /// True when logits must be compared before the commit (a value conversion).
    must_verify: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; a second Ctrl-C then terminates at once.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

fn install_signal_handlers() {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic and resets the disposition.
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
}

/// Run `convert`.
pub fn run(a: Args) -> CmdResult {
    if let Some(dir) = &a.recover {
        return recover(dir, a.common.quiet);
    }
    if let Some(dir) = &a.clean {
        let done = write::clean(dir)?;
        if done == write::Cleaned::default() {
            out(&format!("nothing to clean in {}", dir.display()));
        }
        for (from, to) in &done.restored {
            out(&format!(
                "restored {} from {} (a --force run was interrupted before the new copy was in place)",
                to.display(),
                from.display()
            ));
        }
        for p in &done.removed {
            out(&format!("removed {}", p.display()));
        }
        for p in &done.kept {
            out(&format!(
                "kept {}: one of several old copies of a missing destination; rename the right one back by hand",
                p.display()
            ));
        }
        return Ok(EXIT_OK);
    }
    let src = a
        .src
        .ok_or_else(|| Error::usage("give SRC and DST (or --recover DIR / --clean DIR)"))?;
    let family = FamilyArgs {
        to: a.to,
        from: a.from,
        mapping: a.mapping.mappings,
        allow_lossy: a.common.allow_lossy,
    };
    convert(
        &src,
        a.dst.as_deref(),
        Some(&family),
        &a.mapping.renames,
        &a.common,
    )
}

/// Run `rename`.
pub fn run_rename(a: RenameArgs) -> CmdResult {
    if a.renames.is_empty() {
        return Err(Error::usage(
            "give at least one --rename 'PATTERN=REPLACEMENT'",
        ));
    }
    convert(&a.src, a.dst.as_deref(), None, &a.renames, &a.common)
}

/// Says so when detection does not read the written checkpoint back as the family it was written
/// in (Baichuan without its modeling code: names and config cannot tell its generations apart),
/// and how to name the family to the commands that read it.
fn read_back_note(dst: &Path, f: &FamilyArgs) -> Option<String> {
    let to = f.to.as_deref().unwrap_or("llama");
    let reg = super::families::registry(&f.mapping).ok()?;
    let ck = Checkpoint::open(dst).ok()?;
    let d = ckpt::detect::detect(&ck, &reg);
    if d.winner.as_deref() == Some(to) {
        return None;
    }
    let read = match &d.winner {
        Some(w) => format!("detection reads the output as `{}`, not `{to}`", esc(w)),
        None => format!("detection does not read the output back as `{to}`"),
    };
    let why = d
        .evidence
        .first()
        .map(|e| format!(": {}", esc(e)))
        .unwrap_or_default();
    Some(format!(
        "{read}{why}; name the family to the commands that read it (`--family {to}`, `--family-a`/`--family-b {to}`)"
    ))
}

struct FamilyArgs {
    to: Option<String>,
    from: Option<String>,
    mapping: Vec<PathBuf>,
    allow_lossy: bool,
}

fn recover(dir: &Path, quiet: bool) -> CmdResult {
    let log = inplace::recover(dir)?;
    if log.is_empty() && !quiet {
        out(&format!("nothing to recover in {}", dir.display()));
    }
    for l in log {
        out(&l);
    }
    Ok(EXIT_OK)
}

/// Build the view to write: a family conversion when `family` is given (`--from` or detected ->
/// canonical LLaMA -> `--to`), else the checkpoint as it is with the `--rename` rules applied.
/// Returns the view and whether remote code (`*.py`) should be dropped (the target is plain LLaMA,
/// which transformers runs without it).
fn build_view<'a>(
    ck: &'a Checkpoint,
    family: Option<&FamilyArgs>,
    renames: &[String],
) -> Result<(View<'a>, bool, Conversion), Error> {
    let rules = renames
        .iter()
        .map(|r| RenameRule::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(f) = family else {
        let v = ckpt::mapping::identity_renamed(ck, &rules)?;
        return Ok((
            v,
            false,
            Conversion {
                plan: Default::default(),
                notes: Vec::new(),
                must_verify: false,
            },
        ));
    };
    let reg = super::families::registry(&f.mapping)?;
    let to = f.to.as_deref().unwrap_or("llama");
    let target = reg.require(to)?;
    let (canonical, from) = open_view(ck, &reg, f.from.as_deref(), &rules)?;
    let drop_py = to == "llama";
    let (canonical, conv) = classify(canonical, &from, target, f.allow_lossy)?;
    if to == "llama" {
        // The canonical view is written as it is: every name must be one of LLaMA's (a mapping
        // whose target is misspelt would otherwise write that name into a "llama" checkpoint),
        // and every tensor LLaMA needs must be there.
        let source = reg.require(&from)?;
        for t in &canonical.tensors {
            if target.rules.iter().any(|r| {
                r.rule
                    .targets()
                    .iter()
                    .any(|p| p.matches(&t.name).is_some())
            }) {
                continue;
            }
            let rule = source
                .rules
                .iter()
                .find(|r| {
                    r.rule
                        .targets()
                        .iter()
                        .any(|p| p.matches(&t.name).is_some())
                })
                .map_or_else(
                    || format!("family `{from}` ({})", source.file),
                    |r| format!("rule {} of family `{from}` ({})", r.origin, source.file),
                );
            return Err(Error::bad_data(format!(
                "{rule} maps {} onto `{}`, which is not a tensor name of `llama` ({}); is the rule's target misspelt?",
                t.sources
                    .iter()
                    .map(|s| format!("`{}`", ckpt::error::escape(s)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ckpt::error::escape(&t.name),
                target.file
            ))
            .file(&ck.path)
            .tensor(&t.name));
        }
        to_family(&canonical, target)?;
        return Ok((canonical, drop_py, conv));
    }
    if !conv.plan.is_empty() {
        return Err(Error::unsupported(format!(
            "converting {from} to {to} needs arithmetic on the weights; value conversions are written to llama only"
        ))
        .file(&ck.path));
    }
    let v = to_family(&canonical, target)?;
    let mut conv = conv;
    // The class the written config names.
    let class = target
        .config
        .architectures
        .first()
        .map_or(to, String::as_str);
    if target.config.remote_code_class {
        // The written config names a class transformers does not have, and no code for it.
        conv.notes.push(format!(
            "`{class}` is not a transformers class: transformers loads the output only with the model's own modeling code (an `auto_map` and `trust_remote_code=True`), which ckpt does not write; `ckpt convert DST OUT --to llama` gives back a checkpoint transformers and llama.cpp load"
        ));
    }
    let rope_type = v.config.as_ref().map_or("default", |c| c.rope_type());
    let cpp = &target.config.llama_cpp_rope_types;
    if !cpp.is_empty() && !cpp.iter().any(|t| t == rope_type) {
        let kept: Vec<&str> = cpp
            .iter()
            .map(String::as_str)
            .filter(|t| *t != "default")
            .collect();
        conv.notes.push(format!(
            "llama.cpp's converter does not carry rope scaling `{}` over for `{}` (only {} there, and no `rope_freqs` for this class): a GGUF made from the output runs without it and computes other logits than the model; transformers' class computes it as written",
            ckpt::error::escape(rope_type),
            class,
            if kept.is_empty() { "none".to_string() } else { kept.join(" and ") }
        ));
    }
    if target.config.llama_cpp_square_attention
        && let Some(c) = v.config.as_ref()
        && let (Some(hidden), Some(heads), Some(hd)) =
            (c.hidden_size, c.num_attention_heads, c.head_dim)
        && heads.checked_mul(hd) != Some(hidden)
    {
        conv.notes.push(format!(
            "llama.cpp builds `{class}`'s q and o projections as hidden x hidden ({hidden}), but this model's attention is heads x head_dim = {heads} x {hd}: a GGUF made from the output does not load in llama.cpp; transformers' class computes it as written"
        ));
    }
    if target.config.model_type.is_none() {
        // Nothing in the written config names the target: it keeps the source's model_type (or
        // LLaMA's), and loaders and `ckpt detect` go by that.
        conv.notes.push(format!(
            "family `{to}` names no `model_type` ({}): the written config keeps `model_type` {}, so loaders and `ckpt detect` identify the output by that; read it back with `--family {to} --mapping {}`",
            target.file,
            v.config
                .as_ref()
                .and_then(|c| c.model_type.as_deref())
                .map_or_else(|| "absent".to_string(), |m| format!("`{}`", ckpt::error::escape(m))),
            target.file
        ));
    }
    Ok((v, drop_py, conv))
}

/// Compare the source's computation with the target's: exact conversions pass, value conversions
/// get their weights folded (and must be verified), lossy ones need `--allow-lossy`, impossible
/// ones are refused with what the target cannot express.
fn classify<'a>(
    canonical: View<'a>,
    from: &str,
    target: &ckpt::mapping::Family,
    allow_lossy: bool,
) -> Result<(View<'a>, Conversion), Error> {
    use ckpt::mapping::math::{ConversionClass, bridge, for_checkpoint};
    let mut conv = Conversion {
        plan: Default::default(),
        notes: canonical.notes.clone(),
        must_verify: false,
    };
    let path = canonical.ckpt.path.clone();
    let src = match &canonical.math {
        Some(Ok(m)) => m.clone(),
        Some(Err(why)) if canonical.ckpt.config.is_none() => {
            conv.notes.push(format!(
                "names only: {why}; the conversion moves tensors without checking what they compute"
            ));
            return Ok((canonical, conv));
        }
        Some(Err(why)) => {
            return Err(Error::unsupported(format!(
                "cannot convert family `{from}`: {why}"
            ))
            .file(&path)
            .hint(format!(
                "if you know it computes exactly what `{from}` computes, say so with --from {from}"
            )));
        }
        None => return Ok((canonical, conv)),
    };
    // The target's computation with the config the output will have (the target's spelling, the
    // LLaMA values its class would default otherwise written out).
    let written = canonical
        .config
        .as_ref()
        .map(|c| ckpt::mapping::configmap::from_llama(c, target))
        .transpose()?;
    let dst = for_checkpoint(target, written.as_ref())
        .math
        .map_err(|why| {
            Error::unsupported(format!("target `{}`: {why}", target.name)).file(&path)
        })?;
    let b = bridge(&src, &dst);
    match b.class() {
        ConversionClass::Exact => Ok((canonical, conv)),
        ConversionClass::Impossible => Err(Error::unsupported(format!(
            "`{from}` cannot be converted to `{}`: {}",
            target.name,
            b.impossible.join("; ")
        ))
        .file(&path)),
        ConversionClass::Lossy if !allow_lossy => Err(Error::unsupported(format!(
            "converting `{from}` to `{}` is lossy: {}",
            target.name,
            b.lossy.join("; ")
        ))
        .file(&path)
        .hint("pass --allow-lossy to convert anyway, accepting exactly that change")),
        class => {
            for l in &b.lossy {
                conv.notes.push(format!("lossy (allowed): {l}"));
            }
            if b.value.is_empty() {
                return Ok((canonical, conv));
            }
            let (v, plan) = ckpt::write::value::fold(canonical, &src, &dst)?;
            for s in &b.value {
                conv.notes
                    .push(format!("value conversion (not bit-exact): {s}"));
            }
            conv.plan = plan;
            conv.must_verify = class == ConversionClass::Value;
            Ok((v, conv))
        }
    }
}

fn convert(
    src: &Path,
    dst: Option<&Path>,
    family: Option<&FamilyArgs>,
    renames: &[String],
    c: &Common,
) -> CmdResult {
    let max = plan::parse_size(&c.max_shard_size)?;
    if c.in_place {
        return in_place(src, dst, family, renames, c);
    }
    let dst = dst.ok_or_else(|| Error::usage("give a destination directory DST"))?;
    let ck = super::args::open(src, &c.open, c.quiet)?;
    // The destination is judged first (its errors say more than a rule's), then the rules.
    write::check_destination(&ck, dst, c.force)?;
    let rules = super::args::parse_renames(renames)?;
    super::args::require_matches(&[&ck], &rules, c.dry_run)?;
    let (view, drop_py, conv) = build_view(&ck, family, renames)?;
    if !c.quiet {
        for n in &conv.notes {
            out(&format!("note: {n}"));
        }
    }
    if c.dry_run {
        dry_run(&view, max, drop_py);
        return Ok(EXIT_OK);
    }
    install_signal_handlers();
    let bar = progress(c.quiet, Unit::Bytes);
    let progress = |phase: Phase, done: u64, total: u64| {
        let msg = match phase {
            Phase::Write => "writing",
            Phase::Verify => "verifying",
        };
        if bar.message() != msg {
            bar.set_message(msg);
            bar.reset();
        }
        bar.set_length(total);
        bar.set_position(done);
    };
    let opts = WriteOptions {
        max_shard_size: max,
        force: c.force,
        verify_bytes: !c.no_verify_bytes,
        drop_remote_code: drop_py,
        cancel: Some(&INTERRUPTED),
        progress: Some(&progress),
        before_commit: None,
    };
    // --verify: compare the source as it is on disk (its own family, no --rename rules) with the
    // staged output (its target family) before it is committed.
    let verdict: std::cell::RefCell<Option<ckpt::verify::Report>> = std::cell::RefCell::new(None);
    let verify_logits = c.verify || conv.must_verify;
    let source_canonical = if verify_logits {
        match canonical_for_verify(&ck, family) {
            Ok(v) => Some(v),
            Err(e) => {
                if !c.quiet {
                    out(&format!(
                        "verdict: inconclusive (the source as it is on disk cannot be read by a family{}: {e})",
                        if renames.is_empty() {
                            ""
                        } else {
                            " without the --rename rules"
                        }
                    ));
                }
                eprintln!(
                    "error: --verify compares the output with the source as it is on disk, and the source cannot be read; nothing was written to {}",
                    dst.display()
                );
                let hint = if family.is_some() {
                    CONVERT_HINT_UNREADABLE
                } else {
                    RENAME_HINT_UNREADABLE
                };
                eprintln!("  hint: {hint}");
                return Ok(EXIT_ERROR);
            }
        }
    } else {
        None
    };
    // A value conversion is exact up to arithmetic rounding: f32 weights within 1e-4 of the
    // largest logit, 16-bit weights (rounded once more after the multiplication) within 2e-2.
    let value_rtol = if view
        .tensors
        .iter()
        .any(|t| !matches!(t.dtype, ckpt::checkpoint::Dtype::F32))
    {
        2e-2
    } else {
        1e-4
    };
    let check_staged = |staged: &Path| -> ckpt::Result<()> {
        if !conv.plan.is_empty() {
            bar.set_message("computing");
            ckpt::write::value::apply(staged, &conv.plan)?;
        }
        let Some(src_view) = &source_canonical else {
            return Ok(());
        };
        bar.set_message("verifying logits");
        let out_ck = Checkpoint::open(staged)?;
        let reg = super::families::registry(family.map(|f| f.mapping.as_slice()).unwrap_or(&[]))?;
        // The output is read as the family it was written in (`ckpt rename`: as detected).
        let target = family.map(|f| f.to.as_deref().unwrap_or("llama"));
        let (out_view, _) = open_view(&out_ck, &reg, target, &[])?;
        let vocab = src_view
            .get("model.embed_tokens.weight")
            .and_then(|t| t.shape.first().copied());
        let opts = ckpt::verify::Options {
            level: ckpt::verify::Level::Logits,
            atol: 0.0,
            rtol: if conv.must_verify { value_rtol } else { 0.0 },
            sequences: ckpt::verify::default_sequences(vocab.unwrap_or(1), 3, 16),
            isa: super::verify::isa()?,
        };
        let mut rep = ckpt::verify::verify(src_view, &out_view, &opts)?;
        if conv.must_verify {
            accept_value_structure(&mut rep);
        }
        let ok = rep.equivalent;
        *verdict.borrow_mut() = Some(rep);
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ckpt::ErrorKind::BadData,
                "the converted checkpoint was not proven equivalent to the source; nothing was written",
            ))
        }
    };
    let opts = WriteOptions {
        before_commit: (verify_logits || !conv.plan.is_empty())
            .then_some(&check_staged as &dyn Fn(&Path) -> ckpt::Result<()>),
        ..opts
    };
    let res = write::write_view(&view, dst, &opts);
    bar.finish_and_clear();
    let report = verdict.borrow_mut().take();
    if let Some(rep) = &report
        && !c.quiet
    {
        for line in super::verify::render(rep, src, dst, CONVERT_HINT) {
            super::out_fit(&line, 11);
        }
    }
    if let (Some(rep), Err(_)) = (&report, &res)
        && !rep.equivalent
    {
        let what = if rep.verdict == ckpt::verify::Verdict::Inconclusive {
            "could not be compared with the source"
        } else {
            "is not equivalent to the source"
        };
        eprintln!(
            "error: the converted checkpoint {what}; nothing was written to {}",
            dst.display()
        );
        return Ok(if rep.verdict == ckpt::verify::Verdict::Inconclusive {
            EXIT_ERROR
        } else {
            EXIT_FINDINGS
        });
    }
    let s = res?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    // Never dropped without a word, even with --quiet.
    if !s.skipped_files.is_empty() {
        let names: Vec<&str> = s.skipped_files.iter().map(String::as_str).collect();
        eprintln!(
            "warning: {} source entr{} not copied: {}",
            names.len(),
            if names.len() == 1 { "y" } else { "ies" },
            ckpt::checkpoint::capped_list_raw(&names, ckpt::checkpoint::MAX_LISTED)
        );
    }
    if c.quiet {
        return Ok(EXIT_OK);
    }
    if !s.leftovers.is_empty() {
        eprintln!(
            "note: leftovers of earlier killed runs next to the destination: {} (`ckpt convert --clean DIR` removes them)",
            s.leftovers.join(", ")
        );
    }
    if !s.dropped_files.is_empty() {
        out(&format!(
            "not copied (remote code, not needed by the target): {}",
            s.dropped_files.join(", ")
        ));
    }
    for (f, why) in &s.skipped_weights {
        out(&format!("not copied: {}: {why}", esc(f)));
    }
    for n in &s.notes {
        out(&format!("note: {n}"));
    }
    if let Some(n) = family.and_then(|f| read_back_note(&s.dst, f)) {
        out(&format!("note: {n}"));
    }
    for line in config_changes(&view) {
        out(&line);
    }
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    out(&format!(
        "wrote {} ({}) in {} file{} to {} in {:.2} s ({}/s){}{}",
        report::count(s.tensors, "tensor"),
        human_bytes(s.data_bytes),
        s.shard_files.len()
            + s.copied_files.len()
            + usize::from(s.config_file.is_some())
            + usize::from(s.shard_files.len() > 1),
        if s.shard_files.len() == 1 && s.copied_files.is_empty() && s.config_file.is_none() {
            ""
        } else {
            "s"
        },
        ckpt::error::escape_path(&s.dst),
        secs,
        human_bytes((s.total_bytes as f64 / secs) as u64),
        if s.verified_bytes {
            ", bytes verified"
        } else {
            ""
        },
        if s.replaced {
            ", replaced the old copy"
        } else {
            ""
        },
    ));
    Ok(EXIT_OK)
}

fn in_place(
    src: &Path,
    dst: Option<&Path>,
    family: Option<&FamilyArgs>,
    renames: &[String],
    c: &Common,
) -> CmdResult {
    if c.verify {
        // There is no separate output to compare with the source: refusing beats a silent "verified".
        return Err(Error::usage(
            "--verify compares the source with a new output; --in-place leaves no source to compare with",
        )
        .hint("write to a new directory with --verify, or run `ckpt verify` against a copy made before the in-place run"));
    }
    if let Some(d) = dst {
        let same = std::fs::canonicalize(d).ok() == std::fs::canonicalize(src).ok();
        if !same {
            return Err(Error::usage(
                "--in-place edits SRC itself; do not give a different DST",
            ));
        }
    }
    let meta = std::fs::metadata(src).map_err(|e| Error::io(src, "cannot open", e))?;
    let dir = if meta.is_dir() {
        src.to_path_buf()
    } else {
        match src.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    // Never recovers implicitly: a pending journal makes the open fail with the `--recover` hint.
    let ck = super::args::open(src, &c.open, c.quiet)?;
    let rules = super::args::parse_renames(renames)?;
    super::args::require_matches(&[&ck], &rules, c.dry_run)?;
    let (view, _, conv) = build_view(&ck, family, renames)?;
    if !conv.plan.is_empty() {
        return Err(Error::usage(
            "--in-place rewrites names only; this conversion changes values (drop --in-place)",
        ));
    }
    let p = inplace::plan_in_place(&view)?;
    drop(view);
    drop(ck);
    if c.dry_run {
        out(&format!(
            "in place: {} renamed; headers rewritten in {} file{} (each fits its old space); {} other file{} replaced",
            report::count(p.renamed, "tensor"),
            p.headers.len(),
            if p.headers.len() == 1 { "" } else { "s" },
            p.files.len(),
            if p.files.len() == 1 { "" } else { "s" },
        ));
        for h in &p.headers {
            out(&format!(
                "  {} ({} header bytes)",
                esc(&h.file),
                h.old.len()
            ));
        }
        for f in &p.files {
            out(&format!("  {}", esc(&f.file)));
        }
        return Ok(EXIT_OK);
    }
    inplace::apply(&p)?;
    if !c.quiet {
        out(&format!(
            "renamed {} in place in {} ({} header{} rewritten, data untouched)",
            report::count(p.renamed, "tensor"),
            dir.display(),
            p.headers.len(),
            if p.headers.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(EXIT_OK)
}

fn dry_run(view: &View, max: u64, drop_py: bool) {
    let ck = view.ckpt;
    let Ok(p) = plan::plan(view, max) else {
        return;
    };
    let names: Vec<String> = view.tensors.iter().map(|t| t.name.clone()).collect();
    let keys: Vec<(String, &str, String, String, String)> = view
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let srcs = t
                .sources
                .iter()
                .map(|s| report::layer_pattern(s).0)
                .collect::<Vec<_>>()
                .join(" + ");
            (
                srcs,
                t.transform,
                report::shape(&t.shape),
                t.dtype.to_string(),
                p.file_of(i).unwrap_or("?").to_string(),
            )
        })
        .collect();
    let mut table = report::table(&["source", "target", "transform", "shape", "dtype", "file"]);
    for row in report::collapse(&names, &keys) {
        let first = row.members.first().copied().unwrap_or(0);
        let src = if row.count > 1 {
            let layers: Vec<usize> = row
                .members
                .iter()
                .filter_map(|&m| names.get(m).and_then(|n| report::layer_pattern(n).1))
                .collect();
            row.key.0.replace("{i}", &report::format_layers(&layers))
        } else {
            view.tensors
                .get(first)
                .map(|t| t.sources.join(" + "))
                .unwrap_or_default()
        };
        let src = if src.is_empty() {
            "(zeros)".into()
        } else {
            src
        };
        table.add_row(vec![
            esc(&src),
            esc(&row.name),
            row.key.1.to_string(),
            row.key.2.clone(),
            row.key.3.clone(),
            esc(&row.key.4),
        ]);
    }
    out(&table.to_string());
    out(&format!(
        "{}, {} of data in {} file{}{}",
        report::count(view.tensors.len(), "tensor"),
        human_bytes(p.total_data),
        p.files.len(),
        if p.files.len() == 1 { "" } else { "s" },
        if p.index.is_some() {
            " + model.safetensors.index.json"
        } else {
            ""
        }
    ));
    for (name, why) in &view.dropped {
        out(&format!("dropped: {} ({})", esc(name), esc(why)));
    }
    if let Some((name, _)) = write::config_output(view) {
        out(&format!("{name}:"));
        let old = ck.config.as_ref().map(|c| &c.raw);
        let new = view.config.as_ref().map(|c| &c.raw);
        let empty = serde_json::Map::new();
        let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
        let mut any = false;
        for (k, v) in new {
            match old.get(k) {
                None => out(&format!("  + {}: {v}", esc(k))),
                Some(o) if o != v => out(&format!("  ~ {}: {o} -> {v}", esc(k))),
                _ => continue,
            }
            any = true;
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            out(&format!("  - {}", esc(k)));
            any = true;
        }
        if !any {
            out("  (unchanged)");
        }
    }
    for line in config_changes(view) {
        out(&line);
    }
    let sel = match write::select::select(view, drop_py) {
        Ok(s) => s,
        Err(e) => {
            out(&format!("file selection failed: {}", e.message()));
            write::select::Selection::default()
        }
    };
    let mut skipped = Vec::new();
    let (copied, dropped): (Vec<&String>, Vec<&String>) = ck
        .other_files
        .iter()
        .filter(|f| match write::select::weight_skip_reason(ck, f) {
            Some(why) => {
                skipped.push(format!("{}: {why}", esc(f)));
                false
            }
            None => true,
        })
        .partition(|f| sel.skip_reason(ck, f).is_none());
    for s in &skipped {
        out(&format!("not copied: {s}"));
    }
    for n in &sel.notes {
        out(&format!("note: {n}"));
    }
    if !copied.is_empty() {
        out(&format!(
            "copied: {}",
            copied.iter().map(|s| esc(s)).collect::<Vec<_>>().join(", ")
        ));
    }
    if !dropped.is_empty() {
        out(&format!(
            "not copied (remote code): {}",
            dropped
                .iter()
                .map(|s| esc(s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out("dry run: nothing was written");
}

/// What the conversion does to the config keys (dropped as meaningless for LLaMA, added for
/// portability), when the output config is a LLaMA `config.json`.
fn config_changes(view: &View) -> Vec<String> {
    let (Some(src), Some(new)) = (view.ckpt.config.as_ref(), view.config.as_ref()) else {
        return Vec::new();
    };
    if new.model_type.as_deref() != Some("llama") {
        return Vec::new();
    }
    ckpt::mapping::portable::describe(&src.raw, &new.raw)
}

/// The source as it is on disk, seen as canonical LLaMA through its own family (`--from` and
/// `--mapping`, else the detected one), for `--verify`. The `--rename` rules are deliberately not
/// applied: the output must be compared with what the source computes, not with the source as the
/// rules rewrote it (a rule that swaps two norms would otherwise verify as equivalent).
fn canonical_for_verify<'a>(
    ck: &'a Checkpoint,
    family: Option<&FamilyArgs>,
) -> Result<View<'a>, Error> {
    let mappings = family.map(|f| f.mapping.as_slice()).unwrap_or(&[]);
    let reg = super::families::registry(mappings)?;
    let from = family.and_then(|f| f.from.as_deref());
    Ok(open_view(ck, &reg, from, &[])?.0)
}
