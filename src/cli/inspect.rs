//! `ckpt inspect PATH`: files, tensors, dtypes, parameter count, metadata and config at a glance.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ckpt::checkpoint::{Checkpoint, ModelConfig};
use ckpt::report::{self, esc, human_bytes, human_count, thousands};

use super::args::{OpenArgs, exit_codes};
use super::{CmdResult, EXIT_OK, JSON_SCHEMA_VERSION, out, user_regex};

/// Show a checkpoint's files, tensors, dtypes, parameter count and config. Reads headers only.
#[derive(clap::Args, Debug)]
#[command(after_help = exit_codes::PLAIN)]
pub struct Args {
    /// A `.safetensors`, PyTorch `.bin`/`.pth`/`.pt` or `.gguf` file, a `*.index.json`, a
    /// checkpoint directory or a Hugging Face cache repository.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// List every tensor instead of collapsing per-layer repetition.
    #[arg(long)]
    pub all: bool,
    /// Only tensors whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
    /// Print JSON (every tensor with name, shape, dtype, file and byte offsets) instead of tables
    /// (schema: docs/JSON.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub open: OpenArgs,
}

/// Run `inspect`.
pub fn run(a: Args) -> CmdResult {
    let re = a.grep.as_deref().map(user_regex).transpose()?;
    let ck = super::args::open(&a.path, &a.open, a.json)?;
    let selected: Vec<usize> = (0..ck.tensors.len())
        .filter(|&i| re.as_ref().is_none_or(|r| r.is_match(&ck.tensors[i].name)))
        .collect();
    if a.json {
        out(&serde_json::to_string_pretty(&to_json(&ck, &selected)).unwrap_or_default());
        return Ok(EXIT_OK);
    }
    for line in summary(&ck) {
        out(&line);
    }
    out("");
    out(&tensor_table(&ck, &selected, a.all).to_string());
    if selected.len() != ck.tensors.len() {
        out(&format!(
            "{} of {} tensors match",
            selected.len(),
            ck.tensors.len()
        ));
    }
    for w in &ck.warnings {
        out(&format!("warning: {}", esc(w)));
    }
    Ok(EXIT_OK)
}

fn summary(ck: &Checkpoint) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "checkpoint  {}  ({}, {} file{}, {})",
        ck.path.display(),
        ck.layout.name(),
        ck.shards.len(),
        if ck.shards.len() == 1 { "" } else { "s" },
        ck.container()
    ));
    if let Some(m) = &ck.merge {
        let emb = match m.embedding_split {
            Some("columns") => "; tok_embeddings split by columns (LLaMA 1/2 layout)",
            Some(_) => "; tok_embeddings split by rows (LLaMA 3 layout)",
            None => "",
        };
        lines.push(format!(
            "ranks       {} tensor-parallel ranks merged{emb}; {} replicated tensors checked equal",
            m.ranks, m.replicated
        ));
    }
    for s in &ck.shards {
        if let Some(a) = s.torch() {
            let key = a
                .key
                .as_deref()
                .map(|k| format!(", state dict under `{}`", esc(k)));
            let strided = a.tensors.iter().filter(|t| t.strides.is_some()).count();
            let what = if a.root.is_empty() {
                "legacy non-zip file (PyTorch < 1.6)".to_string()
            } else {
                format!(
                    "archive `{}`, format version {}",
                    esc(&a.root),
                    a.version.as_deref().map(esc).unwrap_or_else(|| "?".into())
                )
            };
            lines.push(format!(
                "torch       {}: {what}, {} storages for {} tensors{}{}",
                esc(&s.file_name),
                a.storages,
                a.tensors.len(),
                if strided > 0 {
                    format!(", {strided} non-contiguous")
                } else {
                    String::new()
                },
                key.unwrap_or_default()
            ));
        }
    }
    for s in &ck.shards {
        lines.push(format!(
            "  {:<40} {:>12}  {}",
            esc(&s.file_name),
            human_bytes(s.size),
            report::count(s.header.tensors.len(), "tensor")
        ));
    }
    let params = ck.parameter_count();
    let aliases = ck.aliases();
    lines.push(format!(
        "tensors     {}    parameters {} ({}){}",
        ck.tensors.len(),
        thousands(params),
        human_count(params),
        shared_clause(&aliases)
    ));
    let by_dtype: BTreeMap<String, (u64, usize)> = ck.data_bytes_by_dtype();
    let dt: Vec<String> = by_dtype
        .iter()
        .map(|(d, (b, n))| format!("{d} {} ({})", human_bytes(*b), report::count(*n, "tensor")))
        .collect();
    lines.push(format!("dtypes      {}", dt.join(", ")));
    let mut metas: Vec<String> = Vec::new();
    for s in &ck.shards {
        let m = match &s.header.metadata {
            Some(m) => m
                .iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
                .collect::<Vec<_>>()
                .join(" "),
            None => "(none)".into(),
        };
        if !metas.contains(&m) {
            metas.push(m);
        }
    }
    lines.push(format!("metadata    {}", metas.join(" | ")));
    if let Some(c) = &ck.config {
        lines.push(format!("config      {}", config_line(c)));
        if ck.notes.iter().any(|n| n.contains("config")) {
            lines.push("            (read from the directory of the given file)".into());
        }
    } else {
        lines.push("config      (no config.json or params.json)".into());
    }
    lines
}

/// The key hyperparameters of a config on one line.
pub fn config_line(c: &ModelConfig) -> String {
    let mut parts = Vec::new();
    let file = c
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(m) = &c.model_type {
        parts.push(format!("model_type={}", esc(m)));
    }
    if !c.architectures.is_empty() {
        parts.push(format!("architectures={}", esc(&c.architectures.join(","))));
    }
    let nums = [
        ("hidden", c.hidden_size),
        ("layers", c.num_hidden_layers),
        ("heads", c.num_attention_heads),
        ("kv_heads", c.num_key_value_heads),
        ("head_dim", c.resolved_head_dim()),
        ("intermediate", c.intermediate_size),
        ("vocab", c.vocab_size),
    ];
    for (k, v) in nums {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    if let Some(t) = c.rope_theta {
        parts.push(format!("rope_theta={t}"));
    }
    if let Some(s) = &c.rope_scaling {
        parts.push(format!("rope_scaling={}", esc(&s.rope_type)));
    }
    if let Some(t) = c.tie_word_embeddings {
        parts.push(format!("tie={t}"));
    }
    if let Some(d) = &c.dtype {
        parts.push(format!("dtype={}", esc(d)));
    }
    format!("{}  ({file})", parts.join(" "))
}

fn tensor_table(ck: &Checkpoint, selected: &[usize], all: bool) -> comfy_table::Table {
    // Merged Meta ranks: every tensor spans (or is replicated in) all the rank files.
    let multi = ck.shards.len() > 1 && ck.merge.is_none();
    let mut header = vec!["tensor", "shape", "dtype", "count"];
    if multi {
        header.push("file");
    }
    let mut t = report::table(&header);
    let names: Vec<String> = selected
        .iter()
        .map(|&i| ck.tensors[i].name.clone())
        .collect();
    let keys: Vec<(Vec<usize>, String)> = selected
        .iter()
        .map(|&i| (ck.tensors[i].shape.clone(), ck.tensors[i].dtype.to_string()))
        .collect();
    if all {
        for &i in selected {
            let ti = &ck.tensors[i];
            let mut row = vec![
                esc(&ti.name),
                report::shape(&ti.shape),
                ti.dtype.to_string(),
                "1".into(),
            ];
            if multi {
                row.push(esc(&ck.shards[ti.shard].file_name));
            }
            t.add_row(row);
        }
        return t;
    }
    for row in report::collapse(&names, &keys) {
        let mut r = vec![
            esc(&row.name),
            report::shape(&row.key.0),
            row.key.1.clone(),
            format!("{}", row.count),
        ];
        if multi {
            let mut files: Vec<&str> = row
                .members
                .iter()
                .map(|&m| ck.shards[ck.tensors[selected[m]].shard].file_name.as_str())
                .collect();
            files.dedup();
            files.sort_unstable();
            files.dedup();
            r.push(if files.len() == 1 {
                esc(files[0])
            } else {
                format!("{} files", files.len())
            });
        }
        t.add_row(r);
    }
    t
}

/// `; N tensors share an earlier tensor's bytes (tied), counted once` when some do.
fn shared_clause(aliases: &[Option<usize>]) -> String {
    match aliases.iter().filter(|a| a.is_some()).count() {
        0 => String::new(),
        n => format!(
            "; {} the bytes of another (tied), counted once in parameters and bytes",
            if n == 1 {
                "1 tensor shares".to_string()
            } else {
                format!("{n} tensors share")
            }
        ),
    }
}

/// One note per tensor stored as the same bytes as an earlier one.
fn alias_notes(ck: &Checkpoint, aliases: &[Option<usize>]) -> Vec<String> {
    aliases
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.map(|j| {
                format!(
                    "{} is stored as the same bytes as {} (a tied weight); counted once in parameters and data_bytes",
                    ck.tensors[i].name, ck.tensors[j].name
                )
            })
        })
        .collect()
}

fn to_json(ck: &Checkpoint, selected: &[usize]) -> serde_json::Value {
    use serde_json::json;
    let aliases = ck.aliases();
    let dtype_bytes = ck.data_bytes_by_dtype();
    // `Checkpoint::data_bytes` is this sum; taken here so the shared-byte union runs once.
    let data_bytes: u64 = dtype_bytes.values().map(|&(b, _)| b).sum();
    let by_dtype: serde_json::Map<String, serde_json::Value> = dtype_bytes
        .into_iter()
        .map(|(d, (b, n))| (d, json!({"bytes": b, "tensors": n})))
        .collect();
    let files: Vec<_> = ck
        .shards
        .iter()
        .map(|s| {
            json!({
                "name": s.file_name,
                "path": s.path.display().to_string(),
                "size": s.size,
                "container": s.container.name(),
                "torch": s.torch().map(|a| json!({
                    "archive": a.root,
                    "version": a.version,
                    "storages": a.storages,
                    "state_dict_key": a.key,
                    "skipped": a.skipped.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                })),
                "header_bytes": s.header.header_len,
                "tensors": s.header.tensors.len(),
                "metadata": s.header.metadata.as_ref().map(|m| m.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect::<serde_json::Map<_, _>>()),
            })
        })
        .collect();
    let tensors: Vec<_> = selected
        .iter()
        .map(|&i| {
            let t = &ck.tensors[i];
            let s = &ck.shards[t.shard];
            let start = s.data_start() as u64;
            // Offsets describe one byte range; a strided or rank-merged tensor has none.
            let contiguous = t.is_contiguous();
            json!({
                "name": t.name,
                "shape": t.shape,
                "dtype": t.dtype.to_string(),
                "file": s.file_name,
                "data_offsets": contiguous.then(|| json!([t.begin, t.end])),
                "file_offsets": contiguous.then(|| json!([start + t.begin as u64, start + t.end as u64])),
                "placement": placement_json(t),
            })
        })
        .collect();
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "path": ck.path.display().to_string(),
        "layout": ck.layout.name(),
        "container": ck.container(),
        "ranks": ck.merge.as_ref().map(|m| json!({
            "count": m.ranks,
            "embedding_split": m.embedding_split,
            "replicated_checked": m.replicated,
        })),
        "files": files,
        "tensor_count": ck.tensors.len(),
        "parameters": ck.parameter_count() as u64,
        "data_bytes": data_bytes,
        "dtypes": by_dtype,
        "config": ck.config.as_ref().map(config_json),
        "tensors": tensors,
        "warnings": ck.warnings,
        "notes": ck.notes.iter().cloned().chain(alias_notes(ck, &aliases)).collect::<Vec<_>>(),
    })
}

/// How a tensor's bytes are laid out, for `--json`: `contiguous`, `strided` (with strides) or
/// `concat` (axis and the rank files).
fn placement_json(t: &ckpt::TensorInfo) -> serde_json::Value {
    use ckpt::checkpoint::Placement;
    use serde_json::json;
    match &t.placement {
        Placement::Contiguous => json!("contiguous"),
        Placement::Strided { strides } => json!({"strided": strides}),
        Placement::Concat { axis, parts } => json!({
            "concat_axis": axis,
            "parts": parts.len(),
        }),
    }
}

/// The typed hyperparameters of a config as JSON (used by several commands).
pub fn config_json(c: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "file": c.path.display().to_string(),
        "model_type": c.model_type,
        "architectures": c.architectures,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.resolved_head_dim(),
        "intermediate_size": c.intermediate_size,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": c.rope_scaling.as_ref().map(|s| serde_json::json!({
            "rope_type": s.rope_type, "factor": s.factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
            "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor})),
        "tie_word_embeddings": c.tie_word_embeddings,
        "dtype": c.dtype,
    })
}
