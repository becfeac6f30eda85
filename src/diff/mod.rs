//! `diff`: two checkpoints side by side, aligned through their families.
//!
//! Both sides are [`View`]s, so tensors are matched by their canonical names: a Yi checkpoint and its
//! LLaMA-named copy line up tensor for tensor and show as `renamed`, not as 42 tensors only in A and
//! 42 only in B. Every pair of the same shape and dtype has its bytes compared (zero-copy over the
//! mmaps, with verify's [`crate::verify::tensor_bytes_equal`]), so `same` and `renamed` mean equal
//! bytes and `values differ` means they are not; the configs are compared key by key, and with
//! `values` every pair of same-shape float tensors is also compared element by element ([`values`]).
//! The files loaders read beside the weights (`generation_config.json`, the tokenizer files, the
//! chat template) are compared too, when both sides are directories ([`files`]).
//!
//! Only data is produced here; `ckpt diff` renders it (collapsing layers with
//! [`crate::report::collapse`]).

pub mod files;
pub mod values;

use serde_json::Value;

use crate::checkpoint::header::Dtype;
use crate::error::Result;
use crate::mapping::{View, ViewTensor};

pub use files::{FileRow, FileStatus, FilesDiff};
pub use values::ValueDiff;

/// How a canonical tensor compares between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Same stored name, shape and dtype, and the bytes compared equal.
    Same,
    /// Same canonical tensor, shape and dtype, stored under different names; the bytes compared
    /// equal.
    Renamed,
    /// Same canonical tensor, shape and dtype; the bytes were compared and differ.
    ValuesDiffer,
    /// Different shapes.
    Reshaped,
    /// Same shape, different dtype.
    DtypeChanged,
    /// Only in A.
    OnlyA,
    /// Only in B.
    OnlyB,
}

impl Status {
    /// Lower-case name (`dtype changed`, `only in A`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Status::Same => "same",
            Status::Renamed => "renamed",
            Status::ValuesDiffer => "values differ",
            Status::Reshaped => "reshaped",
            Status::DtypeChanged => "dtype changed",
            Status::OnlyA => "only in A",
            Status::OnlyB => "only in B",
        }
    }

    /// Whether the tensor's bytes were compared and are equal on both sides.
    pub fn is_equal(self) -> bool {
        matches!(self, Status::Same | Status::Renamed)
    }
}

/// One side of a tensor row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// Stored name(s) it is made from, joined with `+` when several.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Dtype.
    pub dtype: Dtype,
    /// The view transform (`same`, `rename`, `split`, ...).
    pub transform: &'static str,
}

impl Side {
    fn of(t: &ViewTensor) -> Side {
        Side {
            name: if t.sources.is_empty() {
                "(zeros)".into()
            } else {
                t.sources.join("+")
            },
            shape: t.shape.clone(),
            dtype: t.dtype,
            transform: t.transform,
        }
    }
}

/// One canonical tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRow {
    /// The canonical name.
    pub name: String,
    /// A's side.
    pub a: Option<Side>,
    /// B's side.
    pub b: Option<Side>,
    /// Status.
    pub status: Status,
    /// Value comparison (with `values`, for tensors of the same shape and a float dtype).
    pub values: Option<ValueDiff>,
}

/// One config key that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRow {
    /// The key.
    pub key: String,
    /// A's value (`None`: absent).
    pub a: Option<Value>,
    /// B's value.
    pub b: Option<Value>,
    /// Why this difference does not make the checkpoints differ, if it does not: the mapping
    /// rewrites the key, the key is informational (`transformers_version`), or both sides say the
    /// same thing in two spellings (`torch_dtype` / `dtype`, top-level `rope_theta` /
    /// `rope_parameters`).
    pub ignored: Option<&'static str>,
    /// What else a reader should know about a difference that counts: for a RoPE key, that a
    /// side spells RoPE both ways and the spellings disagree (so the key is not merely another
    /// spelling of the other side's setting).
    pub note: Option<String>,
}

/// The config comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigDiff {
    /// Whether each side has a config.
    pub present: (bool, bool),
    /// Keys whose values differ (raw configs), in A's key order then B's.
    pub rows: Vec<ConfigRow>,
    /// Keys present on both sides with equal values.
    pub equal: usize,
}

/// Options for [`diff`].
#[derive(Clone, Copy, Default)]
pub struct Options<'p> {
    /// Also compare values of same-shape float tensors (the bytes of same-shape, same-dtype pairs
    /// are always compared).
    pub values: bool,
    /// Called with (bytes of A just compared, total bytes to compare), from several threads; the
    /// total covers the byte comparison and, with `values`, the value comparison.
    pub progress: Option<&'p (dyn Fn(u64, u64) + Sync)>,
}

/// The result of a diff.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffReport {
    /// A's path.
    pub a_path: String,
    /// B's path.
    pub b_path: String,
    /// The family A was read as.
    pub a_family: String,
    /// The family B was read as.
    pub b_family: String,
    /// Per canonical tensor, A's order then B-only tensors in B's order.
    pub tensors: Vec<TensorRow>,
    /// Config comparison.
    pub config: ConfigDiff,
    /// Whether values were compared.
    pub values: bool,
    /// The files beside the weights (generation config, tokenizer, chat template).
    pub files: FilesDiff,
}

/// Config keys that describe the file rather than the model.
pub const INFORMATIONAL_KEYS: &[&str] = &["transformers_version", "_name_or_path"];

impl DiffReport {
    /// Same canonical tensors, shapes, dtypes and bytes (every pair's bytes compared), equal values
    /// (when compared), configs equal apart from ignored keys, and no file beside the weights that
    /// differs or is on one side only (when they were compared: see [`FilesDiff::not_compared`]).
    pub fn identical(&self) -> bool {
        self.tensors
            .iter()
            .all(|r| r.status.is_equal() && r.values.as_ref().is_none_or(|v| v.differing == 0))
            && self.config.rows.iter().all(|r| r.ignored.is_some())
            && self.config.present.0 == self.config.present.1
            && self.files.rows.iter().all(|r| r.status == FileStatus::Same)
    }

    /// Number of rows with each status.
    pub fn count(&self, s: Status) -> usize {
        self.tensors.iter().filter(|r| r.status == s).count()
    }
}

/// Compare two views.
pub fn diff(a: &View, b: &View, opts: &Options) -> Result<DiffReport> {
    let mut rows = Vec::with_capacity(a.tensors.len().max(b.tensors.len()));
    let mut pairs: Vec<(usize, &ViewTensor, &ViewTensor)> = Vec::new();
    let byte_total: u64 = a
        .tensors
        .iter()
        .filter(|ta| {
            b.get(&ta.name)
                .is_some_and(|tb| tb.shape == ta.shape && tb.dtype == ta.dtype)
        })
        .map(|ta| ta.nbytes() as u64)
        .sum();
    let total = byte_total
        + if opts.values {
            values::value_bytes(a, b)
        } else {
            0
        };
    let report = |n: u64| {
        if let Some(p) = opts.progress {
            p(n, total)
        }
    };
    for ta in &a.tensors {
        let row = match b.get(&ta.name) {
            Some(tb) => {
                let (sa, sb) = (Side::of(ta), Side::of(tb));
                let status = if sa.shape != sb.shape {
                    Status::Reshaped
                } else if sa.dtype != sb.dtype {
                    Status::DtypeChanged
                } else {
                    let equal = crate::verify::tensor_bytes_equal(a, ta, b, tb)?;
                    report(ta.nbytes() as u64);
                    if !equal {
                        Status::ValuesDiffer
                    } else if sa.name != sb.name {
                        Status::Renamed
                    } else {
                        Status::Same
                    }
                };
                if opts.values && ta.shape == tb.shape {
                    pairs.push((rows.len(), ta, tb));
                }
                TensorRow {
                    name: ta.name.clone(),
                    a: Some(sa),
                    b: Some(sb),
                    status,
                    values: None,
                }
            }
            None => TensorRow {
                name: ta.name.clone(),
                a: Some(Side::of(ta)),
                b: None,
                status: Status::OnlyA,
                values: None,
            },
        };
        rows.push(row);
    }
    for tb in &b.tensors {
        if a.get(&tb.name).is_none() {
            rows.push(TensorRow {
                name: tb.name.clone(),
                a: None,
                b: Some(Side::of(tb)),
                status: Status::OnlyB,
                values: None,
            });
        }
    }
    if opts.values {
        let inner = |n: u64| report(n);
        for (i, v) in values::compare_pairs(a, b, &pairs, Some(&inner))? {
            if let Some(r) = rows.get_mut(i) {
                r.values = v;
            }
        }
    }
    Ok(DiffReport {
        a_path: a.ckpt.path.display().to_string(),
        b_path: b.ckpt.path.display().to_string(),
        a_family: a.family.clone(),
        b_family: b.family.clone(),
        tensors: rows,
        config: config_diff(a, b),
        values: opts.values,
        files: files::files_diff(a.ckpt, b.ckpt)?,
    })
}

/// Keys that are two spellings of one setting (transformers 4 / 5); a difference in them is ignored
/// when the parsed settings agree.
const SPELLINGS: &[&str] = &[
    "torch_dtype",
    "dtype",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
];

/// Every rotary field a raw config states, whichever spelling it uses (top-level `rope_theta` and
/// `rope_scaling` of transformers 4, `rope_parameters` of transformers 5; `type` read as
/// `rope_type`, a `default` rope type as no type, numbers as f64), with `theta` (the parsed value,
/// which may be a family default) when no rope_theta is written. Two spellings say the same thing
/// only when these agree: the parsed settings alone do not carry every field (yarn's
/// `attention_factor`, `beta_fast`, ...).
fn rope_fields(
    raw: &serde_json::Map<String, Value>,
    theta: Option<f64>,
) -> std::collections::BTreeMap<String, Value> {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Number(n) => n.as_f64().map_or_else(|| v.clone(), Value::from),
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            _ => v.clone(),
        }
    }
    let mut m = std::collections::BTreeMap::new();
    if let Some(t) = raw.get("rope_theta").filter(|t| !t.is_null()) {
        m.insert("rope_theta".to_string(), norm(t));
    }
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(Value::Object(o)) = raw.get(key) {
            for (k, v) in o {
                let k = if k == "type" { "rope_type" } else { k.as_str() };
                m.insert(k.to_string(), norm(v));
            }
        }
    }
    if m.get("rope_type").and_then(Value::as_str) == Some("default") {
        m.remove("rope_type");
    }
    if let Some(t) = theta {
        m.entry("rope_theta".to_string()).or_insert(Value::from(t));
    }
    m
}

/// The RoPE keys: two spellings of one setting only while each side's spellings agree.
const ROPE_KEYS: &[&str] = &["rope_theta", "rope_scaling", "rope_parameters"];

/// How a side's config contradicts itself on RoPE ([`crate::checkpoint::ModelConfig::rope_conflict`]:
/// both spellings, disagreeing), read from the file as stored.
fn rope_conflict<'v>(v: &'v View) -> Option<&'v str> {
    v.ckpt
        .config
        .as_ref()
        .and_then(|c| c.rope_conflict.as_deref())
}

/// The note of a differing RoPE key when a side's two spellings disagree: that side's settings
/// mean different things to different loaders, so the key is a difference, not another spelling.
fn rope_conflict_note(a: Option<&str>, b: Option<&str>) -> Option<String> {
    let side = |s: &str, why: &str| format!("{s}'s two RoPE spellings disagree: {why}");
    let what = match (a, b) {
        (None, None) => return None,
        (Some(x), None) => side("A", x),
        (None, Some(y)) => side("B", y),
        (Some(x), Some(y)) => format!("{}; {}", side("A", x), side("B", y)),
    };
    Some(format!(
        "{what} (transformers 4, candle and vLLM read the top-level keys, transformers 5 merges them)"
    ))
}

/// Compare the raw configs key by key; a differing key is ignored when the views' (mapping-rewritten)
/// configs agree on it, it is informational, or it is a spelling of a setting both sides agree on
/// (for the RoPE keys, only while neither side's two RoPE spellings disagree).
pub fn config_diff(a: &View, b: &View) -> ConfigDiff {
    let raw = |v: &View| v.ckpt.config.as_ref().map(|c| c.raw.clone());
    let (ra, rb) = (raw(a), raw(b));
    let mut out = ConfigDiff {
        present: (ra.is_some(), rb.is_some()),
        ..Default::default()
    };
    let (ra, rb) = (ra.unwrap_or_default(), rb.unwrap_or_default());
    let (ca, cb) = (a.config.as_ref(), b.config.as_ref());
    let conflicts = (rope_conflict(a), rope_conflict(b));
    let same_setting = |k: &str| -> bool {
        let (Some(x), Some(y)) = (ca, cb) else {
            return false;
        };
        match k {
            "torch_dtype" | "dtype" => x.dtype == y.dtype,
            // A side whose two spellings disagree has no one setting to be the same as.
            _ if conflicts.0.is_some() || conflicts.1.is_some() => false,
            _ => {
                x.rope_theta == y.rope_theta
                    && x.rope_scaling == y.rope_scaling
                    && rope_fields(&ra, x.rope_theta) == rope_fields(&rb, y.rope_theta)
            }
        }
    };
    let mut keys: Vec<&String> = ra.keys().collect();
    keys.extend(rb.keys().filter(|k| !ra.contains_key(*k)));
    // Canonical keys that differ and that neither raw config has: what the mapping made of
    // renamed or dropped keys (params.json `norm_eps` -> `rms_norm_eps`, `use_scaled_rope` ->
    // `rope_scaling`). A raw key the mapping renamed or dropped can only be ignored when these
    // agree.
    let empty = serde_json::Map::new();
    let (na, nb) = (ca.map_or(&empty, |c| &c.raw), cb.map_or(&empty, |c| &c.raw));
    let mut rewritten: Vec<&String> = na.keys().collect();
    rewritten.extend(nb.keys().filter(|k| !na.contains_key(*k)));
    rewritten.retain(|k| {
        let spelled_alike = SPELLINGS.contains(&k.as_str()) && same_setting(k);
        na.get(*k) != nb.get(*k)
            && !(ra.contains_key(*k)
                || rb.contains_key(*k)
                || INFORMATIONAL_KEYS.contains(&k.as_str())
                || spelled_alike)
    });
    for k in keys {
        let (va, vb) = (ra.get(k), rb.get(k));
        if va == vb {
            out.equal += 1;
            continue;
        }
        let canon =
            |c: Option<&crate::checkpoint::ModelConfig>| c.and_then(|c| c.raw.get(k)).cloned();
        let ignored = if INFORMATIONAL_KEYS.contains(&k.as_str()) {
            Some("informational")
        } else if SPELLINGS.contains(&k.as_str()) && same_setting(k) {
            Some("same setting, other spelling")
        } else if ROPE_KEYS.contains(&k.as_str())
            && (conflicts.0.is_some() || conflicts.1.is_some())
        {
            None
        } else if a.family != b.family
            && canon(ca) == canon(cb)
            && (canon(ca).is_some() || rewritten.is_empty())
        {
            // Identity views show the raw config, so this only happens through a mapping. A key
            // the mapping renamed or dropped (absent from both canonical configs) is ignored only
            // when the keys the mapping wrote agree. Two sides read through the same mapping say
            // the same thing in the same words: a raw difference there is one the mapping
            // discarded (an `attention_bias` the tensors override, a dropped `multiple_of`), not
            // another spelling.
            Some("rewritten by the family mapping")
        } else {
            None
        };
        let note = if ignored.is_none() && ROPE_KEYS.contains(&k.as_str()) {
            rope_conflict_note(conflicts.0, conflicts.1)
        } else {
            None
        };
        out.rows.push(ConfigRow {
            key: k.clone(),
            a: va.cloned(),
            b: vb.cloned(),
            ignored,
            note,
        });
    }
    if out.rows.iter().all(|r| r.ignored.is_some()) {
        // Every raw difference was ignored but the canonical configs still differ (a value the
        // mapping derived): show those keys as read.
        for k in rewritten {
            out.rows.push(ConfigRow {
                key: k.clone(),
                a: na.get(k).cloned(),
                b: nb.get(k).cloned(),
                ignored: None,
                note: None,
            });
        }
    }
    out
}
