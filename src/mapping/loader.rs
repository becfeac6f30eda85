//! Loading a family file: the TOML as written (every table closed to unknown keys) compiled into a
//! validated [`Family`]: patterns parsed, sizes resolved to [`Quantity`]s, the base's rules inherited
//! unless overridden, and every rule checked (a name two rules match, two sources onto one target,
//! placeholders that differ between sides, transforms with no inverse), each error naming the rule.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;

use serde::Deserialize;

use super::family::{
    ConfigFormat, ConfigRules, DetectRules, Family, MAX_RULES, Quantity, Registry, Rule, RuleEntry,
};
use super::math::MathFile;
use super::pattern::Pattern;
use crate::error::{Error, Result, escape};

// ---------------------------------------------------------------------------------------------
// The file as written (serde), every table closed to unknown keys.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    name: String,
    summary: String,
    #[serde(default)]
    base: Option<String>,
    exact: bool,
    #[serde(default)]
    detect_only: bool,
    #[serde(default)]
    note: Option<String>,
    sources: Vec<String>,
    #[serde(default)]
    optional: Vec<String>,
    #[serde(default)]
    config: ConfigSpec,
    #[serde(default)]
    detect: DetectSpec,
    #[serde(default)]
    tensors: BTreeMap<String, String>,
    #[serde(default)]
    split: Vec<SplitSpec>,
    #[serde(default)]
    permute: Vec<PermuteSpec>,
    #[serde(default)]
    drop: Vec<DropSpec>,
    #[serde(default)]
    zeros: Vec<ZerosSpec>,
    #[serde(default)]
    math: MathFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    defaults: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectSpec {
    #[serde(default)]
    model_types: Vec<String>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    tensors: Vec<String>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    remote_code: Vec<String>,
    #[serde(default)]
    not_remote_code: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitSpec {
    from: String,
    into: Vec<String>,
    rows: Vec<String>,
    #[serde(default)]
    layout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermuteSpec {
    from: String,
    to: String,
    rope: String,
    heads: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropSpec {
    tensor: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZerosSpec {
    tensor: String,
    rows: String,
    when: String,
}

fn err(origin: &str, msg: impl std::fmt::Display) -> Error {
    Error::bad_data(format!("rule {origin}: {msg}"))
}

fn pattern(text: &str, origin: &str) -> Result<Pattern> {
    Pattern::parse(text).map_err(|e| err(origin, e.message()))
}

fn quantity(s: &str, origin: &str) -> Result<Quantity> {
    Quantity::parse(s).ok_or_else(|| {
        err(
            origin,
            format!(
                "unknown size `{}`; use hidden, heads, kv_heads, head_dim, q, kv, intermediate or vocab",
                escape(s)
            ),
        )
    })
}

fn same_placeholders(a: &Pattern, b: &Pattern, origin: &str) -> Result<()> {
    let (mut x, mut y) = (a.placeholders(), b.placeholders());
    x.sort_unstable();
    y.sort_unstable();
    if x != y {
        return Err(err(
            origin,
            format!(
                "placeholders differ between the two sides: `{}` has {{{}}}, `{}` has {{{}}}",
                escape(a.text()),
                x.join("},{"),
                escape(b.text()),
                y.join("},{")
            ),
        ));
    }
    Ok(())
}

pub(crate) fn compile(spec: FileSpec, file: &str, reg: &Registry) -> Result<Family> {
    let name = spec.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(Error::bad_data(format!(
            "family name `{}` must be 1-64 characters of a-z, 0-9, `-`, `_`",
            escape(&spec.name)
        )));
    }
    if reg.get(&name).is_some() {
        return Err(Error::bad_data(format!(
            "family `{name}` is already defined; give the file another `name`"
        )));
    }
    if spec.exact && spec.detect_only {
        return Err(Error::bad_data(
            "`exact = true` and `detect_only = true` contradict each other",
        ));
    }
    if !spec.exact && spec.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(Error::bad_data(
            "a family that is not LLaMA-exact must say why in `note`",
        ));
    }
    if spec.sources.is_empty() {
        return Err(Error::bad_data(
            "`sources` must cite where the names come from",
        ));
    }
    let mut rules: Vec<RuleEntry> = Vec::new();
    for (from, to) in &spec.tensors {
        let origin = format!("[tensors] \"{}\"", escape(from));
        let (f, t) = (pattern(from, &origin)?, pattern(to, &origin)?);
        same_placeholders(&f, &t, &origin)?;
        rules.push(RuleEntry {
            rule: Rule::Rename { from: f, to: t },
            origin,
        });
    }
    for (k, s) in spec.split.iter().enumerate() {
        let origin = format!(
            "[[split]] #{} (from \"{}\")",
            k.saturating_add(1),
            escape(&s.from)
        );
        let from = pattern(&s.from, &origin)?;
        let into = s
            .into
            .iter()
            .map(|t| pattern(t, &origin))
            .collect::<Result<Vec<_>>>()?;
        for t in &into {
            same_placeholders(&from, t, &origin)?;
        }
        let rows = s
            .rows
            .iter()
            .map(|q| quantity(q, &origin))
            .collect::<Result<Vec<_>>>()?;
        if into.len() < 2 {
            return Err(err(
                &origin,
                "a split needs at least two parts (one part is a rename)",
            ));
        }
        if rows.len() != into.len() {
            return Err(err(
                &origin,
                format!(
                    "{} parts but {} row sizes: the fused rows cannot be told apart",
                    into.len(),
                    rows.len()
                ),
            ));
        }
        for (a, x) in into.iter().enumerate() {
            if into.iter().skip(a.saturating_add(1)).any(|y| y == x) {
                return Err(err(
                    &origin,
                    format!("has no inverse: two parts go to `{}`", escape(x.text())),
                ));
            }
        }
        let grouped = match s.layout.as_deref() {
            None | Some("contiguous") => false,
            Some("grouped") => true,
            Some(other) => {
                return Err(err(
                    &origin,
                    format!(
                        "unknown layout `{}`; use contiguous or grouped",
                        escape(other)
                    ),
                ));
            }
        };
        if grouped && rows != [Quantity::Q, Quantity::Kv, Quantity::Kv] {
            return Err(err(
                &origin,
                "a grouped split is defined for query, key and value parts only: rows = [\"q\", \"kv\", \"kv\"]",
            ));
        }
        rules.push(RuleEntry {
            rule: Rule::Split {
                from,
                into,
                rows,
                grouped,
            },
            origin,
        });
    }
    for (k, p) in spec.permute.iter().enumerate() {
        let origin = format!(
            "[[permute]] #{} (from \"{}\")",
            k.saturating_add(1),
            escape(&p.from)
        );
        let (from, to) = (pattern(&p.from, &origin)?, pattern(&p.to, &origin)?);
        same_placeholders(&from, &to, &origin)?;
        if p.rope != "interleaved" {
            return Err(err(
                &origin,
                format!(
                    "unknown rotary layout `{}`: the only permutation with a known inverse is `interleaved` (Meta) <-> half-split (HF)",
                    escape(&p.rope)
                ),
            ));
        }
        let heads = quantity(&p.heads, &origin)?;
        if !matches!(heads, Quantity::Heads | Quantity::KvHeads) {
            return Err(err(&origin, "`heads` must be `heads` or `kv_heads`"));
        }
        rules.push(RuleEntry {
            rule: Rule::Permute { from, to, heads },
            origin,
        });
    }
    for (k, d) in spec.drop.iter().enumerate() {
        let origin = format!(
            "[[drop]] #{} (\"{}\")",
            k.saturating_add(1),
            escape(&d.tensor)
        );
        rules.push(RuleEntry {
            rule: Rule::Drop {
                from: pattern(&d.tensor, &origin)?,
                reason: d.reason.clone(),
            },
            origin,
        });
    }
    for (k, z) in spec.zeros.iter().enumerate() {
        let origin = format!(
            "[[zeros]] #{} (\"{}\")",
            k.saturating_add(1),
            escape(&z.tensor)
        );
        let (to, when) = (pattern(&z.tensor, &origin)?, pattern(&z.when, &origin)?);
        same_placeholders(&to, &when, &origin)?;
        rules.push(RuleEntry {
            rule: Rule::Zeros {
                to,
                rows: quantity(&z.rows, &origin)?,
                when,
            },
            origin,
        });
    }
    let mut optional = spec
        .optional
        .iter()
        .map(|o| pattern(o, &format!("optional \"{}\"", escape(o))))
        .collect::<Result<Vec<_>>>()?;
    let mut config_drop = spec.config.drop.clone();
    let mut math = spec.math.compile().map_err(|e| {
        let m = e.message().to_string();
        Error::bad_data(m)
    })?;
    let mut detect_tensors = spec
        .detect
        .tensors
        .iter()
        .map(|o| pattern(o, &format!("[detect] tensors \"{}\"", escape(o))))
        .collect::<Result<Vec<_>>>()?;
    // Inherit what the family does not override.
    if let Some(b) = &spec.base {
        let base = reg.get(b).ok_or_else(|| {
            Error::bad_data(format!(
                "base family `{}` is not known (built-in families load first; load a custom base before its children)",
                escape(b)
            ))
        })?;
        for br in &base.rules {
            let overridden = rules.iter().any(|own| {
                let from_clash = match (own.rule.from(), br.rule.from()) {
                    (Some(a), Some(b)) => a.overlaps(b),
                    _ => false,
                };
                let target_clash = own
                    .rule
                    .targets()
                    .iter()
                    .any(|a| br.rule.targets().iter().any(|b| a.overlaps(b)));
                from_clash || target_clash
            });
            if !overridden {
                rules.push(RuleEntry {
                    rule: br.rule.clone(),
                    origin: format!("{} (inherited from {})", br.origin, base.file),
                });
            }
        }
        for o in &base.optional {
            if !optional.contains(o) {
                optional.push(o.clone());
            }
        }
        for d in &base.config.drop {
            if !config_drop.contains(d) {
                config_drop.push(d.clone());
            }
        }
        for t in &base.detect.tensors {
            if !detect_tensors.contains(t) {
                detect_tensors.push(t.clone());
            }
        }
        math.inherit(&base.math);
    }
    if rules.len() > MAX_RULES {
        return Err(Error::bad_data(format!(
            "{} rules, over the limit of {MAX_RULES}",
            rules.len()
        )));
    }
    if !spec.detect_only && rules.is_empty() {
        return Err(Error::bad_data(
            "a family that converts needs tensor rules ([tensors], [[split]], [[permute]] or a `base`)",
        ));
    }
    if spec.detect_only && rules.is_empty() && detect_tensors.is_empty() {
        return Err(Error::bad_data(
            "a detect-only family needs `[detect] tensors` patterns to be recognised by",
        ));
    }
    // A name matched by two rules; two sources onto one target.
    for (a, ra) in rules.iter().enumerate() {
        for rb in rules.iter().skip(a.saturating_add(1)) {
            if let (Some(x), Some(y)) = (ra.rule.from(), rb.rule.from())
                && x.overlaps(y)
            {
                return Err(Error::bad_data(format!(
                    "rule {}: the name `{}` is also matched by rule {}",
                    ra.origin,
                    escape(&x.sample()),
                    rb.origin
                )));
            }
            for x in ra.rule.targets() {
                for y in rb.rule.targets() {
                    if x.overlaps(y) {
                        return Err(Error::bad_data(format!(
                            "rule {}: two sources onto one target: `{}` is also produced by rule {}",
                            ra.origin,
                            escape(x.text()),
                            rb.origin
                        )));
                    }
                }
            }
        }
    }
    let format = match spec.config.format.as_deref() {
        None | Some("config.json") => ConfigFormat::ConfigJson,
        Some("params.json") => ConfigFormat::ParamsJson,
        Some(other) => {
            return Err(Error::bad_data(format!(
                "[config] format `{}` is unknown; use config.json or params.json",
                escape(other)
            )));
        }
    };
    let mut rename: Vec<(String, String)> = Vec::new();
    for (k, v) in &spec.config.rename {
        if rename.iter().any(|(_, t)| t == v) {
            return Err(Error::bad_data(format!(
                "[config] rename: two keys are renamed to `{}`",
                escape(v)
            )));
        }
        rename.push((k.clone(), v.clone()));
    }
    let defaults = spec
        .config
        .defaults
        .iter()
        .map(|(k, v)| {
            serde_json::to_value(v)
                .map(|j| (k.clone(), j))
                .map_err(|e| Error::bad_data(format!("[config] defaults `{}`: {e}", escape(k))))
        })
        .collect::<Result<Vec<_>>>()?;
    let required = spec
        .detect
        .required
        .iter()
        .map(|o| pattern(o, &format!("[detect] required \"{}\"", escape(o))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Family {
        name,
        summary: spec.summary,
        exact: spec.exact,
        detect_only: spec.detect_only,
        sources: spec.sources,
        note: spec.note,
        base: spec.base,
        file: file.to_string(),
        rules,
        optional,
        config: ConfigRules {
            model_type: spec.config.model_type,
            architectures: spec.config.architectures,
            format,
            drop: config_drop,
            rename,
            defaults,
        },
        detect: DetectRules {
            model_types: spec.detect.model_types,
            architectures: spec.detect.architectures,
            tensors: detect_tensors,
            required,
            remote_code: spec.detect.remote_code,
            not_remote_code: spec.detect.not_remote_code,
        },
        math,
    })
}
