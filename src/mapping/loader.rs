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
    BiasSwitch, Biases, ConfigFormat, ConfigRules, DetectRules, Family, MAX_RULES, Quantity,
    Registry, Rule, RuleEntry,
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
    biases: BiasesSpec,
    #[serde(default)]
    math: MathFile,
}

/// `[biases]`: which bias tensors the family's own class computes. Not inherited from the base.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BiasesSpec {
    #[serde(default)]
    qkv: Option<SwitchSpec>,
    #[serde(default)]
    o: Option<SwitchSpec>,
    #[serde(default)]
    mlp: Option<SwitchSpec>,
}

/// `true` / `false`, `"stored"` (computed when the file has one), or the config key that
/// switches it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SwitchSpec {
    Fixed(bool),
    Key(String),
}

impl SwitchSpec {
    fn compile(s: &Option<SwitchSpec>) -> Option<BiasSwitch> {
        match s {
            None | Some(SwitchSpec::Fixed(false)) => None,
            Some(SwitchSpec::Fixed(true)) => Some(BiasSwitch::Always),
            Some(SwitchSpec::Key(k)) if k == "stored" => Some(BiasSwitch::Stored),
            Some(SwitchSpec::Key(k)) => Some(BiasSwitch::Key(k.clone())),
        }
    }
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
    #[serde(default)]
    rope_types: Vec<String>,
    #[serde(default)]
    square_o_proj: bool,
    #[serde(default)]
    head_dim_default: Option<usize>,
    #[serde(default)]
    remote_code_class: bool,
    #[serde(default)]
    llama_cpp_rope_types: Vec<String>,
    #[serde(default)]
    llama_cpp_square_attention: bool,
    #[serde(default)]
    not_null: Vec<String>,
    #[serde(default)]
    required: Vec<String>,
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

/// Compile one mapping file's spec into a family. `clash_check` runs the check that no two rules
/// match one name or write one target (`first_clash`); it is skipped only for the families embedded
/// in the binary, whose files are fixed at build time and checked by the test suite
/// (`builtin_families_pass_the_clash_check`), because it compiles every pattern into regex sets
/// again and took about a third of a command's start-up.
pub(crate) fn compile(
    spec: FileSpec,
    file: &str,
    reg: &Registry,
    clash_check: bool,
) -> Result<Family> {
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
        // Own rules whose source or target pattern overlaps one of the base rule's (one pass over
        // a regex set each way, not every pair).
        let overridden_base = cross_overlaps(&rules, &base.rules)?;
        let mut inherited = Vec::new();
        for (bi, br) in base.rules.iter().enumerate() {
            if !overridden_base.contains(&bi) {
                inherited.push(RuleEntry {
                    rule: br.rule.clone(),
                    origin: format!("{} (inherited from {})", br.origin, base.file),
                });
            }
        }
        rules.extend(inherited);
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
    let clash = if clash_check {
        first_clash(&rules)?
    } else {
        None
    };
    if let Some((a, b, from_clash)) = clash {
        let (Some(ra), Some(rb)) = (rules.get(a), rules.get(b)) else {
            return Err(Error::internal("rule index out of range"));
        };
        if from_clash {
            let x = ra.rule.from().map(Pattern::sample).unwrap_or_default();
            return Err(Error::bad_data(format!(
                "rule {}: the name `{}` is also matched by rule {}",
                ra.origin,
                escape(&x),
                rb.origin
            )));
        }
        let x = ra
            .rule
            .targets()
            .into_iter()
            .find(|x| rb.rule.targets().iter().any(|y| x.overlaps(y)))
            .map(|x| x.text().to_string())
            .unwrap_or_default();
        return Err(Error::bad_data(format!(
            "rule {}: two sources onto one target: `{}` is also produced by rule {}",
            ra.origin,
            escape(&x),
            rb.origin
        )));
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
            rope_types: spec.config.rope_types,
            square_o_proj: spec.config.square_o_proj,
            head_dim_default: spec.config.head_dim_default,
            remote_code_class: spec.config.remote_code_class,
            llama_cpp_rope_types: spec.config.llama_cpp_rope_types,
            llama_cpp_square_attention: spec.config.llama_cpp_square_attention,
            not_null: spec.config.not_null,
            required: spec.config.required,
        },
        detect: DetectRules {
            model_types: spec.detect.model_types,
            architectures: spec.detect.architectures,
            tensors: detect_tensors,
            required,
            remote_code: spec.detect.remote_code,
            not_remote_code: spec.detect.not_remote_code,
        },
        biases: Biases {
            qkv: SwitchSpec::compile(&spec.biases.qkv),
            o: SwitchSpec::compile(&spec.biases.o),
            mlp: SwitchSpec::compile(&spec.biases.mlp),
        },
        math,
    })
}

// ---------------------------------------------------------------------------------------------
// Overlap checks in near-linear time: every pattern of a rule list goes into one `RegexSet`, and
// each pattern's sample name is matched against the set once, so n rules cost n set scans instead
// of n^2 / 2 pairwise matches (a 4,000-rule file took 42 s; docs/RELIABILITY.md, complexity bounds).
// `Pattern::overlaps(a, b)` is `a` matching `b`'s sample or `b` matching `a`'s; scanning every
// sample against the set of every pattern finds both directions.
// ---------------------------------------------------------------------------------------------

/// Largest `patterns x samples` product matched pair by pair in [`set_hits`].
const PAIRWISE_MAX: usize = 1 << 14;

/// For each sample of `queries`, the indices of `set_pats` whose pattern matches it.
fn set_hits(set_pats: &[&Pattern], queries: &[&Pattern]) -> Result<Vec<Vec<usize>>> {
    if set_pats.is_empty() {
        return Ok(vec![Vec::new(); queries.len()]);
    }
    // Small lists (every embedded family's): matching each pair directly costs less than
    // compiling the set, and gives the same indices in the same order.
    if set_pats.len().saturating_mul(queries.len()) <= PAIRWISE_MAX {
        return Ok(queries
            .iter()
            .map(|q| {
                let sample = q.sample();
                (0..set_pats.len())
                    .filter(|&i| set_pats.get(i).is_some_and(|p| p.is_match(&sample)))
                    .collect()
            })
            .collect());
    }
    let set = regex::RegexSetBuilder::new(set_pats.iter().map(|p| p.regex_str()))
        .size_limit(256 << 20)
        .dfa_size_limit(256 << 20)
        .build()
        .map_err(|e| {
            Error::bad_data(format!(
                "the rules' patterns are too large together: {}",
                escape(&e.to_string())
            ))
        })?;
    Ok(queries
        .iter()
        .map(|q| set.matches(&q.sample()).into_iter().collect())
        .collect())
}

/// Pairs of rules `(a, b)`, `a < b`, that clash: their sources overlap (`true`) or a target of one
/// overlaps a target of the other (`false`). The first pair in `(a, b)` order, sources before
/// targets for the same pair, as the pairwise loop found it.
fn first_clash(rules: &[RuleEntry]) -> Result<Option<(usize, usize, bool)>> {
    let mut best: Option<(usize, usize, bool)> = None;
    let mut consider = |a: usize, b: usize, from: bool| {
        if a == b {
            return;
        }
        let (a, b) = (a.min(b), a.max(b));
        let better = match best {
            None => true,
            Some((x, y, f)) => (a, b, !from) < (x, y, !f),
        };
        if better {
            best = Some((a, b, from));
        }
    };
    let froms: Vec<(usize, &Pattern)> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.rule.from().map(|f| (i, f)))
        .collect();
    let pats: Vec<&Pattern> = froms.iter().map(|(_, p)| *p).collect();
    for (qi, hits) in set_hits(&pats, &pats)?.into_iter().enumerate() {
        for h in hits {
            if let (Some((a, _)), Some((b, _))) = (froms.get(qi), froms.get(h)) {
                consider(*a, *b, true);
            }
        }
    }
    let targets: Vec<(usize, &Pattern)> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.rule.targets().into_iter().map(move |t| (i, t)))
        .collect();
    let pats: Vec<&Pattern> = targets.iter().map(|(_, p)| *p).collect();
    for (qi, hits) in set_hits(&pats, &pats)?.into_iter().enumerate() {
        for h in hits {
            if let (Some((a, _)), Some((b, _))) = (targets.get(qi), targets.get(h)) {
                consider(*a, *b, false);
            }
        }
    }
    Ok(best)
}

/// Indices of `base` rules that an own rule overrides: a source of one overlaps a source of the
/// other, or a target of one a target of the other.
fn cross_overlaps(
    own_rules: &[RuleEntry],
    base_rules: &[RuleEntry],
) -> Result<std::collections::HashSet<usize>> {
    let mut out = std::collections::HashSet::new();
    let sides = |rules: &[RuleEntry], from: bool| -> Vec<(usize, Pattern)> {
        let mut v = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if from {
                if let Some(f) = r.rule.from() {
                    v.push((i, f.clone()));
                }
            } else {
                for t in r.rule.targets() {
                    v.push((i, t.clone()));
                }
            }
        }
        v
    };
    for from in [true, false] {
        let o = sides(own_rules, from);
        let b = sides(base_rules, from);
        let op: Vec<&Pattern> = o.iter().map(|(_, p)| p).collect();
        let bp: Vec<&Pattern> = b.iter().map(|(_, p)| p).collect();
        // Own patterns matching base samples.
        for (qi, hits) in set_hits(&op, &bp)?.into_iter().enumerate() {
            if !hits.is_empty()
                && let Some((bi, _)) = b.get(qi)
            {
                out.insert(*bi);
            }
        }
        // Base patterns matching own samples.
        for hits in set_hits(&bp, &op)? {
            for h in hits {
                if let Some((bi, _)) = b.get(h) {
                    out.insert(*bi);
                }
            }
        }
    }
    Ok(out)
}
