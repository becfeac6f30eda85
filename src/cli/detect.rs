//! `ckpt detect PATH`: which family a checkpoint is, with the evidence, its hyperparameters, whether
//! it is LLaMA-exact and the command that converts it. Exit 0 when a family was detected, 1 when
//! nothing fits (or it is quantised / an adapter), 2 on error.

use std::path::PathBuf;

use ckpt::Checkpoint;
use ckpt::detect::{CheckpointKind, ConfigAgreement, Detection, detect_with};
use ckpt::report::{self, esc};

use super::args::{MappingArgs, OpenArgs, exit_codes};
use super::{CmdResult, EXIT_FINDINGS, EXIT_OK, JSON_SCHEMA_VERSION, out};

/// Detect a checkpoint's family from its tensor names, config, shipped remote code (read as text,
/// never run) and shapes (headers only), and say what it computes: config keys the family does not
/// model, an unknown `model_type` or look-alikes that cannot be told apart are named, never assumed.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::DETECT)]
pub struct Args {
    /// A `.safetensors` or PyTorch `.bin`/`.pth`/`.pt` file, a `*.index.json`, a checkpoint
    /// directory or a Hugging Face cache repository.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// Print JSON instead of text (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Run `detect`.
pub fn run(a: Args) -> CmdResult {
    let renames = a.mapping.rules()?;
    let reg = a.mapping.registry()?;
    let ck = super::args::open(&a.path, &a.open, a.json)?;
    super::args::require_matches(&[&ck], &renames, false)?;
    let d = detect_with(&ck, &reg, &renames)?;
    if a.json {
        out(&serde_json::to_string_pretty(&to_json(&ck, &d)).unwrap_or_default());
    } else {
        for line in text(&ck, &d) {
            out(&line);
        }
    }
    // Detected means: a family, (with a config) a computation ckpt knows, and every tensor that
    // computation needs.
    let known = d.math.as_ref().is_none_or(|m| {
        d.winner
            .as_deref()
            .is_some_and(|w| m.usable(w, false).is_ok() || ck.config.is_none())
    });
    Ok(if d.winner.is_some() && known && d.missing_required == 0 {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

fn text(ck: &Checkpoint, d: &Detection) -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!(
        "checkpoint  {}  ({}, {})",
        esc(&ck.path.display().to_string()),
        d.kind.describe(),
        report::count(ck.tensors.len(), "tensor")
    ));
    let class = d.to_llama.as_ref().map(|b| b.class());
    let unknown_math = d
        .math
        .as_ref()
        .zip(d.winner.as_deref())
        .is_some_and(|(m, w)| m.usable(w, false).is_err() && ck.config.is_some());
    match (&d.winner, d.exact) {
        (Some(w), _) if unknown_math => l.push(format!(
            "family      {}  by its names; what it computes is not known (see evidence)",
            esc(w)
        )),
        (Some(w), Some(true)) if d.missing_required > 0 => l.push(format!(
            "family      {}  (LLaMA-exact, but incomplete: see evidence)",
            esc(w)
        )),
        (Some(w), Some(true)) => l.push(format!("family      {}  (LLaMA-exact)", esc(w))),
        (Some(w), _) => l.push(format!(
            "family      {}  (not LLaMA-exact{})",
            esc(w),
            class
                .map(|c| {
                    let w = c.word();
                    let a = if w.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    format!(": {a} {w} conversion")
                })
                .unwrap_or_default()
        )),
        (None, _) => l.push("family      none detected".into()),
    }
    for (i, e) in d.evidence.iter().enumerate() {
        let head = if i == 0 {
            "evidence    "
        } else {
            "            "
        };
        l.extend(report::wrap(head, "            ", &esc(e)));
    }
    let runners: Vec<_> = d
        .ranked
        .iter()
        .filter(|s| Some(&s.family) != d.winner.as_ref())
        .take(3)
        .collect();
    for (i, s) in runners.iter().enumerate() {
        let head = if i == 0 {
            "runners-up  "
        } else {
            "            "
        };
        let head = format!("{head}{:.2}  ", s.score);
        l.extend(report::wrap(
            &head,
            "                  ",
            &esc(&s.summary()),
        ));
    }
    l.extend(report::wrap("dims        ", "            ", &dims_line(d)));
    let recognised_only = d
        .ranked
        .iter()
        .any(|s| Some(&s.family) == d.winner.as_ref() && s.detect_only);
    if let Some(w) = d.winner.as_deref().filter(|_| recognised_only) {
        l.extend(report::wrap(
            "math        ",
            "            ",
            &format!(
                "not modelled: `{}` is recognised by its names and config only, its config switches are not read, and logits, verify and convert refuse it",
                esc(w)
            ),
        ));
    }
    if let Some(c) = &d.convert_command {
        l.extend(report::wrap("convert     ", "            ", c));
    } else if d.winner.is_some() && d.missing_required > 0 {
        l.push(
            "convert     nothing to run until the missing tensors are there (see evidence)".into(),
        );
    } else if d.winner.as_deref() == Some("llama") {
        l.push("convert     not needed: the checkpoint is already LLaMA".into());
    } else if let Some(w) = &d.winner
        && d.exact != Some(true)
        && w != "llama"
    {
        use ckpt::mapping::math::ConversionClass as C;
        let path = esc(&ck.path.display().to_string());
        let line = match class {
            _ if unknown_math => format!(
                "convert     refused until its computation is known (or asserted: --from {})",
                esc(w)
            ),
            Some(C::Value) => format!(
                "convert     ckpt convert {path} OUT --to llama   (a value conversion: weights are rescaled, verified on logits)"
            ),
            Some(C::Lossy) => format!(
                "convert     ckpt convert {path} OUT --to llama --allow-lossy   (lossy: see evidence)"
            ),
            _ => format!(
                "convert     not convertible to llama: `{}` computes something LLaMA cannot express (see `ckpt families`)",
                esc(w)
            ),
        };
        let (head, rest) = line.split_at("convert     ".len());
        l.extend(report::wrap(head, "            ", rest));
    }
    l
}

fn dims_line(d: &Detection) -> String {
    let x = &d.dims;
    let mut parts = Vec::new();
    let mut push = |k: &str, v: Option<usize>, field: &str| {
        if let Some(v) = v {
            let mark = if x.from_shapes.contains(&field) {
                " (shapes)"
            } else {
                ""
            };
            parts.push(format!("{k}={v}{mark}"));
        }
    };
    push("vocab", x.vocab, "vocab");
    push("hidden", x.hidden, "hidden");
    push("layers", x.layers, "layers");
    push("heads", x.heads, "heads");
    push("kv_heads", x.kv_heads, "kv_heads");
    push("head_dim", x.head_dim, "head_dim");
    push("intermediate", x.intermediate, "intermediate");
    if x.kv_heads.is_none()
        && let Some(k) = x.k_rows
    {
        parts.push(format!("k_rows={k} (kv heads need head_dim from a config)"));
    }
    if let Some(t) = x.tied {
        parts.push(format!("tied={t}"));
    }
    if parts.is_empty() {
        "(unknown)".into()
    } else {
        parts.join(" ")
    }
}

fn to_json(ck: &Checkpoint, d: &Detection) -> serde_json::Value {
    use serde_json::json;
    let (kind, detail) = match &d.kind {
        CheckpointKind::Plain => ("plain", None),
        CheckpointKind::Quantized(m) => ("quantized", Some(m.clone())),
        CheckpointKind::Adapter(m) => ("adapter", Some(m.clone())),
    };
    let ranked: Vec<_> = d
        .ranked
        .iter()
        .map(|s| {
            json!({
                "family": s.family,
                "score": (s.score * 1000.0).round() / 1000.0,
                "matched": s.matched,
                "total": s.total,
                "required_present": s.required_present,
                "required_expected": s.required_expected,
                "config": match &s.config {
                    ConfigAgreement::Match(m) => json!({"agrees": true, "value": m}),
                    ConfigAgreement::Mismatch(m) => json!({"agrees": false, "value": m}),
                    ConfigAgreement::Unknown => serde_json::Value::Null,
                },
                "shapes_ok": s.shapes_ok,
                "shape_note": s.shape_note,
                "unmatched": s.unmatched,
                "missing": s.missing,
                "llama_exact": s.exact && !s.detect_only,
                "detect_only": s.detect_only,
            })
        })
        .collect();
    let x = &d.dims;
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "checkpoint": {"path": ck.path.display().to_string(), "family": d.winner},
        "kind": kind,
        "kind_detail": detail,
        "llama_exact": d.exact,
        "config_decided": d.config_decided,
        "indistinct": d.indistinct,
        "evidence": d.evidence,
        "dims": {
            "vocab": x.vocab, "hidden": x.hidden, "layers": x.layers, "heads": x.heads,
            "kv_heads": x.kv_heads, "head_dim": x.head_dim, "intermediate": x.intermediate,
            "k_rows": x.k_rows, "tied": x.tied, "from_shapes": x.from_shapes, "conflicts": x.conflicts,
        },
        "convert": d.convert_command,
        "ranked": ranked,
    })
}
