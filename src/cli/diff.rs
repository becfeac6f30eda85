//! `ckpt diff A B`: two checkpoints aligned through their families, one row per canonical tensor
//! (per-layer rows collapsed unless `--all`), a config table, a table of the files beside the
//! weights (generation config, tokenizer, chat template), optional value differences.

use std::path::PathBuf;

use ckpt::Result;
use ckpt::checkpoint::Checkpoint;
use ckpt::diff::files::KeyValue;
use ckpt::diff::{self, DiffReport, FileStatus, Options, Side, Status, TensorRow, ValueDiff};
use ckpt::mapping::{Registry, RenameRule, View};
use ckpt::report::{self, esc, format_layers, layer_pattern};

use super::args::{MappingArgs, OpenArgs, Unit, exit_codes, progress};
use super::{
    CmdResult, EXIT_FINDINGS, EXIT_OK, JSON_SCHEMA_VERSION, json_number, out, public_value,
};

/// Compare two checkpoints tensor by tensor (aligned by canonical name), config key by key, and
/// the files loaders read beside the weights (generation_config.json, tokenizer files, chat
/// template) file by file.
///
/// Every pair of tensors with the same shape and dtype has its bytes compared (zero-copy over the
/// mmaps): `same` / `renamed` mean equal bytes, `values differ` means the bytes differ. Exit 0 when
/// identical (same canonical tensors, shapes, dtypes and bytes; configs equal apart from keys the
/// family mapping rewrites; the same files beside the weights, when both sides are directories),
/// 1 when they differ, 2 on error.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::DIFF)]
pub struct Args {
    /// First checkpoint (directory, `.safetensors`, PyTorch `.bin`/`.pth`/`.pt` or `.gguf` file,
    /// `*.index.json`, or Hugging Face cache repository).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Second checkpoint.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// List every tensor instead of collapsing per-layer repetition.
    #[arg(long)]
    pub all: bool,
    /// Also compare values of same-shape float tensors: max abs difference, relative L2, cosine
    /// (over finite pairs) and the count of non-finite values on each side.
    #[arg(long)]
    pub values: bool,
    /// Print JSON instead of tables (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    /// Read A as this family instead of the detected one (`identity`: the names as stored).
    #[arg(long, value_name = "FAMILY")]
    pub family_a: Option<String>,
    /// Read B as this family instead of the detected one.
    #[arg(long, value_name = "FAMILY")]
    pub family_b: Option<String>,
    #[command(flatten)]
    pub mapping: MappingArgs,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Open a checkpoint's canonical view and the family it was read through: the named family, else
/// the detected one. When no family is named and none is detected (GPT-2, an unknown layout), the
/// checkpoint is compared as it is stored (`identity`, with the renames applied); `--family-a
/// identity` asks for that explicitly.
fn open_view<'a>(
    ck: &'a Checkpoint,
    reg: &Registry,
    family: Option<&str>,
    rules: &[RenameRule],
) -> Result<(View<'a>, String)> {
    let identity = || -> Result<(View<'a>, String)> {
        Ok((
            ckpt::mapping::identity_renamed(ck, rules)?,
            "identity".into(),
        ))
    };
    match family {
        Some("identity") => identity(),
        Some(f) => ckpt::detect::open_view(ck, reg, Some(f), rules),
        None => match ckpt::detect::open_view(ck, reg, None, rules) {
            Ok(v) => Ok(v),
            Err(_) => identity(),
        },
    }
}

/// Run `diff`.
pub fn run(a: Args) -> CmdResult {
    let quiet = a.quiet || a.json;
    let cka = super::args::open(&a.a, &a.open, quiet)?;
    let ckb = super::args::open(&a.b, &a.open, quiet)?;
    let reg = a.mapping.registry()?;
    let rules = a.mapping.rules()?;
    super::args::require_matches(&[&cka, &ckb], &rules, false)?;
    let (va, _) = open_view(&cka, &reg, a.family_a.as_deref(), &rules)?;
    let (vb, _) = open_view(&ckb, &reg, a.family_b.as_deref(), &rules)?;
    let bar = progress(quiet, Unit::Bytes);
    bar.set_message("comparing values");
    let cb = |n: u64, total: u64| {
        if bar.length() != Some(total) {
            bar.set_length(total);
        }
        bar.inc(n);
    };
    let rep = diff::diff(
        &va,
        &vb,
        &Options {
            values: a.values,
            progress: Some(&cb),
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        out(&serde_json::to_string_pretty(&to_json(&rep)).unwrap_or_default());
    } else {
        render(&rep, a.all);
    }
    Ok(if rep.identical() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    })
}

/// `[64, 64]`, or `[64, 64] -> [32, 64]` when the sides differ.
fn pair(a: Option<String>, b: Option<String>) -> String {
    match (a, b) {
        (Some(x), Some(y)) if x == y => x,
        (Some(x), Some(y)) => format!("{x} -> {y}"),
        (Some(x), None) => x,
        (None, Some(y)) => y,
        (None, None) => String::new(),
    }
}

type Key = (
    Status,
    Option<String>,
    Option<String>,
    Option<Vec<usize>>,
    Option<Vec<usize>>,
    Option<String>,
    Option<String>,
);

fn side_name(s: &Option<Side>) -> Option<String> {
    s.as_ref().map(|s| {
        let n = layer_pattern(&s.name).0;
        if matches!(s.transform, "same" | "rename") {
            n
        } else {
            format!("{n} [{}]", s.transform)
        }
    })
}

fn key(r: &TensorRow) -> Key {
    (
        r.status,
        side_name(&r.a),
        side_name(&r.b),
        r.a.as_ref().map(|s| s.shape.clone()),
        r.b.as_ref().map(|s| s.shape.clone()),
        r.a.as_ref().map(|s| s.dtype.to_string()),
        r.b.as_ref().map(|s| s.dtype.to_string()),
    )
}

fn aggregate(rows: &[&TensorRow]) -> Option<ValueDiff> {
    let vs: Vec<&ValueDiff> = rows.iter().filter_map(|r| r.values.as_ref()).collect();
    let first = **vs.first()?;
    Some(vs.iter().skip(1).fold(first, |acc, v| ValueDiff {
        max_abs: acc.max_abs.max(v.max_abs),
        rel_l2: acc.rel_l2.max(v.rel_l2),
        cosine: acc.cosine.min(v.cosine),
        differing: acc.differing + v.differing,
        elements: acc.elements + v.elements,
        nonfinite_a: acc.nonfinite_a + v.nonfinite_a,
        nonfinite_b: acc.nonfinite_b + v.nonfinite_b,
    }))
}

fn render(rep: &DiffReport, all: bool) {
    out(&format!(
        "A  {}  (read as {})",
        esc(&rep.a_path),
        rep.a_family
    ));
    out(&format!(
        "B  {}  (read as {})",
        esc(&rep.b_path),
        rep.b_family
    ));
    out("");
    let mut table_rows: Vec<Vec<String>> = Vec::new();
    let groups: Vec<(String, Vec<&TensorRow>)> = if all {
        rep.tensors
            .iter()
            .map(|r| (r.name.clone(), vec![r]))
            .collect()
    } else {
        let names: Vec<String> = rep.tensors.iter().map(|r| r.name.clone()).collect();
        let keys: Vec<Key> = rep.tensors.iter().map(key).collect();
        report::collapse(&names, &keys)
            .into_iter()
            .map(|c| (c.name, c.members.iter().map(|&i| &rep.tensors[i]).collect()))
            .collect()
    };
    for (name, rows) in &groups {
        let r = rows[0];
        let layers: Vec<usize> = rows
            .iter()
            .filter_map(|r| layer_pattern(&r.name).1)
            .collect();
        let shown = |s: &Option<Side>| -> String {
            let Some(s) = s else {
                return "-".into();
            };
            let label = if rows.len() > 1 && !layers.is_empty() {
                layer_pattern(&s.name)
                    .0
                    .replacen("{i}", &format_layers(&layers), 1)
            } else {
                s.name.clone()
            };
            let label = if label == *name {
                "=".into()
            } else {
                esc(&label)
            };
            if matches!(s.transform, "same" | "rename") {
                label
            } else {
                format!("{label} [{}]", s.transform)
            }
        };
        let mut row = vec![
            esc(name),
            shown(&r.a),
            shown(&r.b),
            pair(
                r.a.as_ref().map(|s| report::shape(&s.shape)),
                r.b.as_ref().map(|s| report::shape(&s.shape)),
            ),
            pair(
                r.a.as_ref().map(|s| s.dtype.to_string()),
                r.b.as_ref().map(|s| s.dtype.to_string()),
            ),
            r.status.name().to_string(),
        ];
        if rep.values {
            match aggregate(rows) {
                Some(v) => row.extend([
                    format!("{:.3e}", v.max_abs),
                    format!("{:.3e}", v.rel_l2),
                    format!("{:.6}", v.cosine),
                    format!("{}/{}", v.nonfinite_a, v.nonfinite_b),
                ]),
                None => row.extend(["-".to_string(), "-".into(), "-".into(), "-".into()]),
            }
        }
        table_rows.push(row);
    }
    // The A / B name columns only matter when some stored name differs from the canonical one.
    let names_differ = table_rows.iter().any(|r| r[1] != "=" || r[2] != "=");
    let mut header = vec!["tensor", "A", "B", "shape", "dtype", "status"];
    if rep.values {
        header.extend(["max abs diff", "rel L2", "cosine", "non-finite A/B"]);
    }
    if !names_differ {
        header.drain(1..3);
        for r in &mut table_rows {
            r.drain(1..3);
        }
    }
    let mut t = report::table(&header);
    for r in table_rows {
        t.add_row(r);
    }
    out(&t.to_string());
    out("");
    let c = &rep.config;
    match c.present {
        (false, false) => out("config: neither side has a config"),
        (true, false) => out("config: only A has a config"),
        (false, true) => out("config: only B has a config"),
        _ => {}
    }
    if !c.rows.is_empty() {
        let mut ct = report::table(&["config key", "A", "B", "note"]);
        for r in &c.rows {
            ct.add_row(vec![
                esc(&r.key),
                value(&r.a),
                value(&r.b),
                r.ignored
                    .map(|why| format!("ignored: {why}"))
                    .or_else(|| r.note.as_ref().map(|n| esc(n)))
                    .unwrap_or_default(),
            ]);
        }
        out(&ct.to_string());
    }
    out(&format!(
        "config: {} key{} differ{}, {} equal",
        c.rows.len(),
        if c.rows.len() == 1 { "" } else { "s" },
        if c.rows.len() == 1 { "s" } else { "" },
        c.equal
    ));
    render_files(&rep.files);
    out(&summary(rep));
}

/// `1,234 B`, or `-` for a file a side does not have.
fn file_size(n: Option<u64>) -> String {
    n.map_or_else(
        || "-".into(),
        |n| format!("{} B", report::thousands(n.into())),
    )
}

/// A JSON file's differing key as shown in the key table.
fn key_value(v: &KeyValue) -> String {
    match v {
        KeyValue::Absent => "(absent)".into(),
        KeyValue::Value(v) => value(&Some(v.clone())),
        // The start of the JSON text (control characters already escaped), cut like `value`.
        KeyValue::Large(head) => format!("{}...", head.chars().take(60).collect::<String>()),
    }
}

/// The files beside the weights: one row per file present on either side, the differing top-level
/// keys of JSON files (like config keys), and a count line.
fn render_files(f: &diff::FilesDiff) {
    const WHAT: &str = "files beside the weights";
    if let Some(why) = &f.not_compared {
        out(&format!("{WHAT}: not compared ({why})"));
        return;
    }
    if f.rows.is_empty() {
        out(&format!("{WHAT}: none on either side"));
        return;
    }
    let mut t = report::table(&["file", "A", "B", "status"]);
    let mut keys: Vec<Vec<String>> = Vec::new();
    for r in &f.rows {
        let named: Vec<String> = r
            .keys
            .iter()
            .filter(|k| k.ignored.is_none())
            .map(|k| esc(&k.key))
            .collect();
        let more = r.keys_differing.saturating_sub(r.keys.len());
        let status = match r.status {
            FileStatus::Differs if !named.is_empty() => format!(
                "differs: {}{}",
                named.join(", "),
                if more > 0 {
                    format!(", ... and {more} more")
                } else {
                    String::new()
                }
            ),
            s => match &r.note {
                Some(n) => format!("{} ({n})", s.name()),
                None => s.name().to_string(),
            },
        };
        t.add_row(vec![esc(&r.name), file_size(r.a), file_size(r.b), status]);
        for k in &r.keys {
            keys.push(vec![
                format!("{}: {}", esc(&r.name), esc(&k.key)),
                key_value(&k.a),
                key_value(&k.b),
                match (k.ignored, k.inner.as_slice()) {
                    (Some(why), _) => format!("ignored: {why}"),
                    (None, []) => String::new(),
                    (None, inner) => format!(
                        "differs in: {}",
                        inner.iter().map(|i| esc(i)).collect::<Vec<_>>().join(", ")
                    ),
                },
            ]);
        }
    }
    out(&t.to_string());
    if !keys.is_empty() {
        let mut kt = report::table(&["file: key", "A", "B", "note"]);
        for k in keys {
            kt.add_row(k);
        }
        out(&kt.to_string());
    }
    let parts: Vec<String> = [
        (FileStatus::Differs, "differ"),
        (FileStatus::OnlyA, "only in A"),
        (FileStatus::OnlyB, "only in B"),
        (FileStatus::Same, "same"),
    ]
    .iter()
    .map(|(s, word)| (f.count(*s), word))
    .filter(|(n, _)| *n > 0)
    .map(|(n, word)| {
        if *word == "differ" && n == 1 {
            "1 differs".to_string()
        } else {
            format!("{n} {word}")
        }
    })
    .collect();
    out(&format!("{WHAT}: {}", parts.join(", ")));
}

fn value(v: &Option<serde_json::Value>) -> String {
    const MAX: usize = 60;
    match v {
        None => "(absent)".into(),
        Some(v) => {
            // JSON text: control characters are already escaped; a non-finite number shows as the
            // token transformers writes (`Infinity`), never as ckpt's internal marker.
            let s = match public_value(v) {
                serde_json::Value::String(t)
                    if v.as_str()
                        .is_some_and(|x| x.starts_with(ckpt::json::NONFINITE_SENTINEL)) =>
                {
                    t
                }
                other => other.to_string(),
            };
            if s.chars().count() > MAX {
                format!("{}...", s.chars().take(MAX).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn summary(rep: &DiffReport) -> String {
    let statuses = [
        Status::Same,
        Status::Renamed,
        Status::ValuesDiffer,
        Status::Reshaped,
        Status::DtypeChanged,
        Status::OnlyA,
        Status::OnlyB,
    ];
    let parts: Vec<String> = statuses
        .iter()
        .map(|s| (s, rep.count(*s)))
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {}", s.name()))
        .collect();
    let valdiff = rep
        .tensors
        .iter()
        .filter(|r| r.values.is_some_and(|v| v.differing > 0))
        .count();
    // Same-dtype tensors whose bytes differ while every value decodes equal: for the float dtypes
    // that is only -0 against +0 or NaNs with other payloads (distinct bit patterns of f32, f16
    // and bf16 are otherwise distinct numbers).
    // (A GGUF block type can also encode equal values in other bytes.)
    let bytes_only: Vec<&ckpt::diff::TensorRow> = rep
        .tensors
        .iter()
        .filter(|r| r.status == Status::ValuesDiffer && r.values.is_some_and(|v| v.differing == 0))
        .collect();
    let floats = bytes_only.iter().all(|r| {
        r.a.as_ref()
            .is_some_and(|s| ckpt::check::scan::is_float(s.dtype))
    });
    // Pairs --values could not compare (a block type ckpt does not decode, a non-float dtype):
    // said, so that the count of differing values is not read as "the rest agree".
    let unvalued = rep
        .tensors
        .iter()
        .filter(|r| r.a.is_some() && r.b.is_some() && !r.status.is_equal() && r.values.is_none())
        .count();
    let not_compared = if rep.values && unvalued > 0 {
        format!("; {unvalued} not compared by value (a dtype --values does not decode)")
    } else {
        String::new()
    };
    let vals = match (rep.values, bytes_only.len()) {
        (false, _) => String::new(),
        (true, 0) => format!("; {valdiff} with different values{not_compared}"),
        (true, n) => format!(
            "; {valdiff} with different values, {n} with the same values in other bytes ({}){not_compared}",
            if floats {
                "-0 against +0, or NaNs with other payloads"
            } else {
                "equal once decoded"
            }
        ),
    };
    format!(
        "{}: {} tensors ({}){vals}",
        if rep.identical() {
            "identical"
        } else {
            "differ"
        },
        rep.tensors.len(),
        parts.join(", ")
    )
}

fn side_json(s: &Option<Side>) -> serde_json::Value {
    match s {
        None => serde_json::Value::Null,
        Some(s) => serde_json::json!({
            "name": s.name, "shape": s.shape, "dtype": s.dtype.to_string(), "transform": s.transform,
        }),
    }
}

fn to_json(rep: &DiffReport) -> serde_json::Value {
    use serde_json::json;
    let tensors: Vec<_> = rep
        .tensors
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "a": side_json(&r.a),
                "b": side_json(&r.b),
                "status": r.status.name(),
                "values": r.values.map(|v| json!({
                    "max_abs": json_number(v.max_abs), "rel_l2": json_number(v.rel_l2),
                    "cosine": json_number(v.cosine),
                    "differing": v.differing, "elements": v.elements,
                    "nonfinite_a": v.nonfinite_a, "nonfinite_b": v.nonfinite_b,
                })),
            })
        })
        .collect();
    let config: Vec<_> = rep
        .config
        .rows
        .iter()
        .map(|r| {
            // A key a side does not have is absent from the row; a key set to null is `null`.
            let mut row = serde_json::Map::new();
            row.insert("key".into(), json!(r.key));
            if let Some(v) = &r.a {
                row.insert("a".into(), public_value(v));
            }
            if let Some(v) = &r.b {
                row.insert("b".into(), public_value(v));
            }
            row.insert("ignored".into(), json!(r.ignored.is_some()));
            row.insert("reason".into(), json!(r.ignored));
            row.insert("note".into(), json!(r.note));
            serde_json::Value::Object(row)
        })
        .collect();
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "a": {"path": rep.a_path, "family": rep.a_family},
        "b": {"path": rep.b_path, "family": rep.b_family},
        "tensors": tensors,
        "config": {
            "present_a": rep.config.present.0,
            "present_b": rep.config.present.1,
            "differing": config,
            "equal": rep.config.equal,
        },
        "values": rep.values,
        "files": files_json(&rep.files),
        "identical": rep.identical(),
    })
}

/// `files` of the JSON: whether the files beside the weights were compared (and why not), and one
/// row per file present on either side.
fn files_json(f: &diff::FilesDiff) -> serde_json::Value {
    use serde_json::json;
    let rows: Vec<_> = f
        .rows
        .iter()
        .map(|r| {
            let keys: Vec<_> = r
                .keys
                .iter()
                .map(|k| {
                    // As in `config.differing`: a member is absent when that side does not have
                    // the key; a value whose JSON text is over 4 KiB is left out too (`in_a` /
                    // `in_b` say whether the key is there).
                    let mut row = serde_json::Map::new();
                    row.insert("key".into(), json!(k.key));
                    row.insert("in_a".into(), json!(k.a != KeyValue::Absent));
                    row.insert("in_b".into(), json!(k.b != KeyValue::Absent));
                    if let KeyValue::Value(v) = &k.a {
                        row.insert("a".into(), public_value(v));
                    }
                    if let KeyValue::Value(v) = &k.b {
                        row.insert("b".into(), public_value(v));
                    }
                    row.insert("inner_keys".into(), json!(k.inner));
                    row.insert("ignored".into(), json!(k.ignored.is_some()));
                    row.insert("reason".into(), json!(k.ignored));
                    serde_json::Value::Object(row)
                })
                .collect();
            json!({
                "name": r.name,
                "size_a": r.a,
                "size_b": r.b,
                "status": r.status.name(),
                "keys_differing": r.keys_differing,
                "keys": keys,
                "note": r.note,
            })
        })
        .collect();
    json!({
        "compared": f.not_compared.is_none(),
        "reason": f.not_compared,
        "rows": rows,
    })
}
