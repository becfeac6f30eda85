//! Family detection: which family file describes a checkpoint, with the evidence in words.
//!
//! Every family is scored on name coverage (the share of tensors its rules match), required tensors
//! (the share of the names it needs, per layer, that are present), config agreement (`model_type` /
//! `architectures`) and shape consistency (the canonical view builds and agrees with the config).
//! Names alone cannot tell LLaMA from Mistral or a renamed Yi: then the config decides and the
//! evidence says so. Quantised (GPTQ/AWQ, FP8, bitsandbytes) and adapter (LoRA, PEFT-prefixed)
//! checkpoints are recognised and named as such instead of being mis-detected as a family.

use std::collections::BTreeSet;

use crate::checkpoint::header::dtype_name;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::{Error, ErrorKind, Result, escape};
use crate::mapping::apply::match_tensors;
use crate::mapping::family::Registry;
use crate::mapping::pattern::apply_renames;
use crate::mapping::{Family, RenameRule, Rule, View, canonical_view};

/// Minimum share of tensors a family's rules must match to be detected.
pub const MIN_NAME_SHARE: f64 = 0.9;
/// Minimum share of a family's required tensors that must be present to be detected.
pub const MIN_REQUIRED_SHARE: f64 = 0.9;
/// How many example names evidence lists.
const EXAMPLES: usize = 4;

/// What kind of checkpoint it is, before any family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Full-precision weights of a model.
    Plain,
    /// Quantised weights (the method, e.g. `GPTQ`, `AWQ`, `FP8`): not convertible as plain tensors.
    Quantized(String),
    /// An adapter or a PEFT-wrapped save (`LoRA`, `PEFT-prefixed`).
    Adapter(String),
}

impl CheckpointKind {
    /// Short description for reports.
    pub fn describe(&self) -> String {
        match self {
            CheckpointKind::Plain => "plain weights".into(),
            CheckpointKind::Quantized(m) => format!("quantised ({m})"),
            CheckpointKind::Adapter(m) => format!("adapter ({m})"),
        }
    }
}

/// How the config relates to a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAgreement {
    /// `model_type` or `architectures` is the family's (which one, e.g. `model_type=Yi`).
    Match(String),
    /// The config names another model type.
    Mismatch(String),
    /// No config, or it names no model type.
    Unknown,
}

/// How the remote code a checkpoint ships (`modeling_*.py`, read as text, never run) relates to
/// a family's `[detect] remote_code` / `not_remote_code` markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeAgreement {
    /// The code has every required marker and none of the forbidden ones (which, e.g.
    /// `NormHead`).
    Match(String),
    /// The code contradicts the family (a forbidden marker, or a required one missing).
    Mismatch(String),
    /// The family has no markers, or the checkpoint ships no code to read.
    Unknown,
}

/// One family's score against the checkpoint.
#[derive(Debug, Clone)]
pub struct FamilyScore {
    /// Family name.
    pub family: String,
    /// Overall score in [0, 1] (higher is better).
    pub score: f64,
    /// Tensors the family's rules match.
    pub matched: usize,
    /// Tensors in the checkpoint.
    pub total: usize,
    /// Required names present (per layer).
    pub required_present: usize,
    /// Required names expected for the layer count.
    pub required_expected: usize,
    /// Config agreement.
    pub config: ConfigAgreement,
    /// Remote-code agreement.
    pub code: CodeAgreement,
    /// `Some(true)` when the canonical view builds and its shapes agree with the config,
    /// `Some(false)` with the reason in `shape_note` otherwise, `None` when not checked.
    pub shapes_ok: Option<bool>,
    /// Why shapes disagree.
    pub shape_note: Option<String>,
    /// The kind of error the family's refusal ([`FamilyScore::refusal`]) was: bad data (RoPE
    /// spelled two ways that disagree) or unsupported (a bias its class does not compute).
    pub refusal_kind: Option<ErrorKind>,
    /// A few tensors no rule of the family matches.
    pub unmatched: Vec<String>,
    /// Why the first unmatched tensor that is a projection bias the family's class does not have
    /// (Qwen2's o_proj) rules the family out, if there is one.
    pub unexpected_bias: Option<String>,
    /// A few required names that are missing.
    pub missing: Vec<String>,
    /// LLaMA-exact.
    pub exact: bool,
    /// Recognised only.
    pub detect_only: bool,
}

impl FamilyScore {
    /// Why the family could not read the checkpoint at all (`cannot be read as ...`: its view
    /// failed to build, or a bias its class does not have), as opposed to shapes that disagree
    /// with the config.
    pub fn refusal(&self) -> Option<&str> {
        self.shape_note
            .as_deref()
            .filter(|n| self.shapes_ok == Some(false) && n.starts_with("cannot be read"))
    }

    /// Share of tensors matched.
    pub fn name_share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.matched as f64 / self.total as f64
        }
    }

    /// Share of required names present.
    pub fn required_share(&self) -> f64 {
        if self.required_expected == 0 {
            1.0
        } else {
            self.required_present as f64 / self.required_expected as f64
        }
    }

    /// True when the family fits well enough to be named.
    pub fn fits(&self) -> bool {
        self.name_share() >= MIN_NAME_SHARE
            && self.required_share() >= MIN_REQUIRED_SHARE
            && self.shapes_ok != Some(false)
            && !matches!(self.code, CodeAgreement::Mismatch(_))
    }

    /// The evidence in one line: `yi: 21/21 tensors match; 18/18 required present; config model_type=Yi`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {}/{} tensors match; {}/{} required present",
            self.family, self.matched, self.total, self.required_present, self.required_expected
        );
        match &self.config {
            ConfigAgreement::Match(m) => s.push_str(&format!("; config {}", escape(m))),
            ConfigAgreement::Mismatch(m) => s.push_str(&format!("; config says {}", escape(m))),
            ConfigAgreement::Unknown => {}
        }
        match &self.code {
            CodeAgreement::Match(m) => s.push_str(&format!("; remote code {m}")),
            CodeAgreement::Mismatch(m) => s.push_str(&format!("; remote code {m}")),
            CodeAgreement::Unknown => {}
        }
        if let Some(n) = &self.shape_note {
            s.push_str(&format!("; {n}"));
        }
        s
    }
}

/// Hyperparameters, from the config or inferred from shapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferredDims {
    /// Vocabulary size (embedding rows).
    pub vocab: Option<usize>,
    /// Hidden size (embedding columns).
    pub hidden: Option<usize>,
    /// Transformer layers.
    pub layers: Option<usize>,
    /// Attention heads (config only: shapes cannot tell).
    pub heads: Option<usize>,
    /// Key/value heads (config, or k rows / head_dim).
    pub kv_heads: Option<usize>,
    /// Head dimension (config only).
    pub head_dim: Option<usize>,
    /// FFN size (gate rows).
    pub intermediate: Option<usize>,
    /// Rows of the key projection (shapes).
    pub k_rows: Option<usize>,
    /// Tied embeddings (no lm_head).
    pub tied: Option<bool>,
    /// Fields read from shapes rather than the config.
    pub from_shapes: Vec<&'static str>,
    /// Disagreements between config and shapes.
    pub conflicts: Vec<String>,
}

/// The result of [`detect`].
#[derive(Debug, Clone)]
pub struct Detection {
    /// The detected family, when one fits.
    pub winner: Option<String>,
    /// Every family that matched anything, best first.
    pub ranked: Vec<FamilyScore>,
    /// Plain, quantised or adapter.
    pub kind: CheckpointKind,
    /// The evidence in words.
    pub evidence: Vec<String>,
    /// Hyperparameters.
    pub dims: InferredDims,
    /// Whether the winner is LLaMA-exact.
    pub exact: Option<bool>,
    /// True when names could not tell the winner from other families and the config decided (or
    /// would have to: see `evidence`).
    pub config_decided: bool,
    /// The family names could not tell apart from the winner.
    pub indistinct: Vec<String>,
    /// The command that converts it to LLaMA, when it can be converted.
    pub convert_command: Option<String>,
    /// The winner's computation for this checkpoint (`None` without a winner).
    pub math: Option<crate::mapping::math::Resolved>,
    /// What converting the winner to LLaMA needs (`None` when its math is not known).
    pub to_llama: Option<crate::mapping::math::Bridge>,
    /// Without a winner: a first name component every tensor shares (`module.`) whose removal
    /// lets detection find a family (`--rename` with [`strip_rule`] removes it).
    pub wrapper_prefix: Option<String>,
    /// Without a winner: why the family the config names refused the checkpoint (its config
    /// sets what the family does not model, or the checkpoint cannot be read as it). Commands
    /// report this rather than "cannot tell which family": the config told, and the family
    /// refused for a reason no other family would answer.
    pub config_refusal: Option<ConfigRefusal>,
    /// Required names of the winner that a plain checkpoint lacks (per layer): such a checkpoint
    /// has the family's names but not every tensor its computation needs (ckpt does not run it;
    /// which loaders refuse it is `check`'s to say).
    pub missing_required: usize,
}

/// Why the family a checkpoint's config names refused it ([`Detection::config_refusal`]).
#[derive(Debug, Clone)]
pub struct ConfigRefusal {
    /// The family the config names.
    pub family: String,
    /// The kind of the refusal: bad data or unsupported.
    pub kind: ErrorKind,
    /// The reasons, each in words that continue "the config names FAMILY" (", which cannot be
    /// read as ...", " and sets what ... does not model: ...").
    pub reasons: Vec<String>,
}

/// Detect the family of a checkpoint.
pub fn detect(ck: &Checkpoint, reg: &Registry) -> Detection {
    match detect_with(ck, reg, &[]) {
        Ok(d) => d,
        // Without renames nothing in detection can fail; keep the signature total anyway.
        Err(e) => Detection {
            winner: None,
            ranked: Vec::new(),
            kind: CheckpointKind::Plain,
            evidence: vec![e.to_string()],
            dims: InferredDims::default(),
            exact: None,
            config_decided: false,
            indistinct: Vec::new(),
            convert_command: None,
            math: None,
            to_llama: None,
            missing_required: 0,
            wrapper_prefix: None,
            config_refusal: None,
        },
    }
}

/// Detect with ad-hoc renames applied to the names first (`--rename`).
pub fn detect_with(ck: &Checkpoint, reg: &Registry, renames: &[RenameRule]) -> Result<Detection> {
    let raw: Vec<String> = ck.tensors.iter().map(|t| t.name.clone()).collect();
    let names = apply_renames(&raw, renames).map_err(|e| e.file(&ck.path))?;
    let kind = classify(ck, &names);
    let mut evidence = Vec::new();
    let mut config_refusal: Option<ConfigRefusal> = None;
    // For quantised and adapter checkpoints, score the underlying model's names.
    let scored_names: Vec<String> = match &kind {
        CheckpointKind::Plain => names.clone(),
        _ => underlying_names(&names),
    };
    let cfg = ck.config.as_ref();
    let code = remote_code_text(ck);
    let layers = cfg
        .and_then(|c| c.num_hidden_layers)
        .or_else(|| layer_count(&scored_names));
    let mut ranked: Vec<FamilyScore> = reg
        .families()
        .iter()
        .map(|f| score(f, &scored_names, cfg, layers, code.as_deref()))
        .filter(|s| s.matched > 0)
        .collect();
    if kind == CheckpointKind::Plain {
        for s in ranked.iter_mut() {
            if !s.detect_only
                && s.matched == s.total
                && let Some(f) = reg.get(&s.family)
            {
                check_shapes(ck, f, s, renames);
            }
            // An unmatched name that is a projection bias the family's class does not have
            // (Qwen2's o_proj) rules the family out for that reason, not as a name to map.
            if !s.detect_only
                && let Some(note) = s.unexpected_bias.clone()
            {
                s.shapes_ok = Some(false);
                s.shape_note = Some(note);
                s.refusal_kind = Some(ErrorKind::Unsupported);
            }
        }
        // A shape conflict between the tensors and config.json belongs to the checkpoint, not to one
        // family: a detect-only family that reads the same names (gemma's are llama's) shares it, or
        // it would outrank the family the config actually names.
        let conflict = ranked
            .iter()
            .find(|s| {
                !s.detect_only
                    && s.shapes_ok == Some(false)
                    && s.matched == s.total
                    && s.shape_note.is_some()
                    && s.refusal().is_none()
            })
            .map(|s| (s.family.clone(), s.shape_note.clone()));
        if let Some((fam, note)) = conflict {
            for s in ranked.iter_mut() {
                if s.detect_only && s.shapes_ok.is_none() && s.matched == s.total {
                    s.shapes_ok = Some(false);
                    s.shape_note = note.as_ref().map(|n| format!("{n} (same names as {fam})"));
                }
            }
        }
    }
    for s in ranked.iter_mut() {
        let cfg_term = match s.config {
            ConfigAgreement::Match(_) => 1.0,
            ConfigAgreement::Unknown => 0.5,
            ConfigAgreement::Mismatch(_) => 0.0,
        };
        let shape_pen = if s.shapes_ok == Some(false) { 0.3 } else { 0.0 };
        // Shipped code that contradicts the family rules it out.
        let code_pen = if matches!(s.code, CodeAgreement::Mismatch(_)) {
            0.5
        } else {
            0.0
        };
        s.score =
            0.5 * s.name_share() + 0.3 * s.required_share() + 0.2 * cfg_term - shape_pen - code_pen;
    }
    let order_key = |s: &FamilyScore| {
        (
            (s.score * 1e6).round() as i64,
            s.required_expected,
            !s.detect_only,
            reg.get(&s.family).is_some_and(|f| f.base.is_none()),
        )
    };
    ranked.sort_by_key(|s| std::cmp::Reverse(order_key(s)));
    let best = ranked.first().filter(|s| s.fits()).cloned();
    // Families the names cannot tell from the best one.
    let indistinct: Vec<String> = match &best {
        Some(b) => ranked
            .iter()
            .skip(1)
            .filter(|s| {
                s.matched == b.matched
                    && s.required_present == b.required_present
                    && s.required_expected == b.required_expected
                    && s.fits()
            })
            .map(|s| s.family.clone())
            .collect(),
        None => Vec::new(),
    };
    // Never assume. A config that names a model type no family claims is not silently the family
    // whose names fit; and families that names, config and shipped code cannot tell apart must
    // compute the same, or nothing is chosen.
    let mut undecided: Option<String> = None;
    if let (Some(b), Some(c)) = (&best, cfg) {
        // transformers dispatches on `model_type`; `architectures` speaks only when it is absent.
        let claimed = reg
            .families()
            .iter()
            .any(|f| match c.model_type.as_deref() {
                Some(m) => f.claims_model_type(m),
                None => f.claims_architecture(&c.architectures),
            });
        let named = c.model_type.is_some() || !c.architectures.is_empty();
        if named && !claimed {
            let what = match &c.model_type {
                Some(m) => format!("model_type={}", escape(m)),
                None => format!("architectures={}", escape(&c.architectures.join(","))),
            };
            undecided = Some(format!(
                "config says {what}, which no known family claims: the names fit {}, but ckpt does not assume it computes what {} computes",
                b.family, b.family
            ));
        } else {
            let rivals: Vec<&FamilyScore> = ranked
                .iter()
                .filter(|s| indistinct.contains(&s.family))
                .filter(|s| s.config == b.config && s.code == b.code)
                .collect();
            let bf = reg.get(&b.family);
            let differ: Vec<String> = rivals
                .iter()
                .filter(|r| {
                    let (Some(x), Some(y)) = (bf, reg.get(&r.family)) else {
                        return true;
                    };
                    crate::mapping::math::for_checkpoint(x, Some(c)).math
                        != crate::mapping::math::for_checkpoint(y, Some(c)).math
                        || x.detect_only != y.detect_only
                        || !read_alike(ck, x, y, renames)
                })
                .map(|r| r.family.clone())
                .collect();
            if !differ.is_empty() {
                let code_hint = reg
                    .families()
                    .iter()
                    .filter(|f| f.name == b.family || differ.contains(&f.name))
                    .any(|f| {
                        !f.detect.remote_code.is_empty() || !f.detect.not_remote_code.is_empty()
                    });
                undecided = Some(format!(
                    "names and config cannot tell {} from {}, which compute differently{}",
                    b.family,
                    differ.join(", "),
                    if code_hint && code.is_none() {
                        " (the remote code that would tell them apart, modeling_*.py, is not in the directory)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    // The family the config names could not read the checkpoint (a bias its class does not
    // compute, a split that does not fit): a family whose names merely fit is not chosen instead.
    if undecided.is_none()
        && let Some(b) = best
            .as_ref()
            .filter(|b| matches!(b.config, ConfigAgreement::Mismatch(_)))
        && let Some((named, why)) = ranked.iter().find_map(|s| {
            let why = s.refusal()?;
            matches!(s.config, ConfigAgreement::Match(_)).then_some((s, why))
        })
    {
        undecided = Some(format!(
            "the config names {}, which {why}; the names also fit {}, but ckpt does not assume the checkpoint computes what {} computes",
            named.family, b.family, b.family
        ));
        config_refusal = Some(ConfigRefusal {
            family: named.family.clone(),
            kind: named.refusal_kind.unwrap_or(ErrorKind::Unsupported),
            reasons: vec![format!(", which {why}")],
        });
    }
    if let Some(why) = &undecided {
        evidence.push(why.clone());
    }
    // The family the config names did not fit the tensors' shapes (its class's `head_dim`
    // default where the config has none, ...): say so, or the evidence names only the look-alikes.
    if best
        .as_ref()
        .is_none_or(|b| !matches!(b.config, ConfigAgreement::Match(_)))
        && let Some((named, note)) = ranked.iter().find_map(|s| {
            let note = s
                .shape_note
                .as_ref()
                .filter(|_| s.shapes_ok == Some(false))?;
            matches!(s.config, ConfigAgreement::Match(_)).then_some((s, note))
        })
    {
        evidence.push(format!(
            "the config names {}, whose shapes do not fit: {note}",
            named.family
        ));
        // A family whose names merely fit is not chosen instead (a Qwen 3 without `head_dim`
        // has every name Cohere's rules allow; Cohere computes something else).
        if undecided.is_none()
            && let Some(b) = best
                .as_ref()
                .filter(|b| matches!(b.config, ConfigAgreement::Mismatch(_)))
        {
            let why = format!(
                "the names also fit {}, but ckpt does not assume the checkpoint computes what {} computes",
                b.family, b.family
            );
            evidence.push(why.clone());
            undecided = Some(why);
        }
        if config_refusal.is_none() {
            config_refusal = Some(ConfigRefusal {
                family: named.family.clone(),
                kind: ErrorKind::BadData,
                reasons: vec![format!(", whose shapes do not fit: {note}")],
            });
        }
    }
    let mut config_decided = false;
    let mut missing_required = 0;
    if let Some(b) = &best {
        evidence.push(b.summary());
        if matches!(kind, CheckpointKind::Plain) && b.required_present < b.required_expected {
            missing_required = b.required_expected - b.required_present;
            evidence.push(format!(
                "incomplete: {missing_required} required tensor{} missing (e.g. {}): the checkpoint has {}'s names but not every tensor its computation needs (`ckpt check` says which loaders refuse it)",
                if missing_required == 1 { "" } else { "s" },
                b.missing
                    .iter()
                    .map(|n| escape(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                b.family
            ));
        }
        if let Some(f) = reg.get(&b.family) {
            let diff = f.differing_names();
            if !diff.is_empty() && f.name != "llama" {
                let shown: Vec<&str> = diff.iter().take(6).map(|s| s.as_str()).collect();
                evidence.push(format!(
                    "differs from llama in {} name{}: {}{}",
                    diff.len(),
                    if diff.len() == 1 { "" } else { "s" },
                    shown.join(", "),
                    if diff.len() > 6 { ", ..." } else { "" }
                ));
            }
        }
        if !indistinct.is_empty() && undecided.is_none() {
            config_decided = true;
            let mt = cfg.and_then(|c| c.model_type.clone());
            evidence.push(match (&b.config, mt) {
                (ConfigAgreement::Match(_), Some(mt)) => format!(
                    "names alone cannot tell {} from {}: config model_type={} decides",
                    b.family,
                    indistinct.join(", "),
                    escape(&mt)
                ),
                (ConfigAgreement::Match(_), None) => format!(
                    "names alone cannot tell {} from {}: config architectures decide",
                    b.family,
                    indistinct.join(", ")
                ),
                _ => format!(
                    "names alone cannot tell {} from {} and the config does not say: assuming {}",
                    b.family,
                    indistinct.join(", "),
                    b.family
                ),
            });
        }
        if !b.unmatched.is_empty() {
            evidence.push(format!(
                "no rule maps {} tensor{} (e.g. {}): conversion would fail",
                b.total - b.matched,
                if b.total - b.matched == 1 { "" } else { "s" },
                b.unmatched
                    .iter()
                    .map(|n| escape(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    } else if let Some(top) = ranked.first() {
        // The family the config names, refused for a reason of its own, says the most; so do
        // the switches it sets that the family does not model (StableLM's parallel residual
        // leaves a norm out, its q/k LayerNorms add tensors: the names then do not fit).
        if undecided.is_none()
            && let Some(named) = ranked
                .iter()
                .find(|s| matches!(s.config, ConfigAgreement::Match(_)))
        {
            let mut reasons = Vec::new();
            let mut kind = ErrorKind::Unsupported;
            if let Some(note) = named.refusal() {
                reasons.push(format!(", which {note}"));
                kind = named.refusal_kind.unwrap_or(ErrorKind::Unsupported);
            }
            let unmodelled = reg
                .get(&named.family)
                .map(|f| crate::mapping::math::for_checkpoint(f, cfg).unmodelled)
                .unwrap_or_default();
            if !unmodelled.is_empty() {
                reasons.push(format!(
                    " and sets what {} does not model: {}",
                    named.family,
                    unmodelled
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !reasons.is_empty() {
                evidence.push(format!(
                    "the config names {}{}",
                    named.family,
                    reasons.concat()
                ));
                config_refusal = Some(ConfigRefusal {
                    family: named.family.clone(),
                    kind,
                    reasons,
                });
            }
        }
        // Another family that happens to come closest on names says nothing once the family the
        // config names has refused (a LLaMA whose RoPE keys disagree is no Gemma3 "missing" its
        // q_norm); the named family's own unmatched and missing names still explain it.
        let named_refused = config_refusal.as_ref().map(|r| r.family.as_str());
        if named_refused.is_none() {
            evidence.push(format!("no family fits well; closest {}", top.summary()));
        }
        let about_top = named_refused.is_none_or(|f| f == top.family);
        if about_top && !top.unmatched.is_empty() {
            evidence.push(format!(
                "unmatched names, e.g. {}",
                top.unmatched
                    .iter()
                    .map(|n| escape(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if about_top && !top.missing.is_empty() {
            evidence.push(format!(
                "missing, e.g. {}",
                top.missing
                    .iter()
                    .map(|n| escape(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    } else if ck.tensors.is_empty() {
        evidence.push(no_tensors(ck));
    } else {
        evidence.push("no family's rules match any tensor name".into());
    }
    // Computed once, for the evidence (nothing fits) and for the error `open_view` gives a plain
    // checkpoint without a winner (nothing fits, or look-alikes undecided).
    let wrapper = (config_refusal.is_none()
        && (best.is_none() || (matches!(kind, CheckpointKind::Plain) && undecided.is_some())))
    .then(|| strippable_prefix(ck, reg, renames))
    .flatten();
    if best.is_none()
        && let Some((prefix, family)) = &wrapper
    {
        evidence.push(format!(
            "every tensor name starts with `{}` (a wrapper's prefix, e.g. DistributedDataParallel's `module.`); without it the names fit {family}: --rename '{}'",
            escape(prefix),
            strip_rule(prefix)
        ));
    }
    let fam = best.as_ref().and_then(|b| reg.get(&b.family));
    let dims_cfg = match (fam, cfg) {
        (Some(f), Some(c)) => crate::mapping::configmap::renamed(c, f).ok(),
        _ => cfg.cloned(),
    };
    let dims = infer_dims(ck, fam, renames, dims_cfg.as_ref(), layers);
    for c in &dims.conflicts {
        evidence.push(c.clone());
    }
    let mut winner = best
        .as_ref()
        .filter(|_| undecided.is_none())
        .map(|b| b.family.clone());
    match &kind {
        CheckpointKind::Plain => {}
        CheckpointKind::Quantized(m) => {
            evidence.insert(
                0,
                format!(
                    "quantised checkpoint ({m}): its weights are packed integers or scaled floats, not plain tensors; ckpt converts full-precision checkpoints only"
                ),
            );
            if let Some(w) = &winner {
                evidence.insert(1, format!("the underlying model looks like {w}"));
            }
            winner = None;
        }
        CheckpointKind::Adapter(m) => {
            let hint = if m.starts_with("PEFT") {
                "; strip the prefix with --rename 'base_model\\.model\\.(.*)=$1'"
            } else {
                "; merge it into its base model first"
            };
            evidence.insert(
                0,
                format!("adapter checkpoint ({m}), not a full model{hint}"),
            );
            if let Some(w) = &winner {
                evidence.insert(1, format!("the base model looks like {w}"));
            }
            winner = None;
        }
    }
    let win_fam = winner.as_ref().and_then(|w| reg.get(w));
    let math = win_fam
        .filter(|f| !f.detect_only)
        .map(|f| crate::mapping::math::for_checkpoint(f, cfg));
    let to_llama = match (&math, win_fam, reg.get("llama"), cfg) {
        (Some(m), Some(f), Some(llama), Some(c)) => m
            .usable(&f.name, false)
            .ok()
            .and_then(|src| Some((src, llama_math(llama, f, c)?)))
            .map(|(src, dst)| crate::mapping::math::bridge(src, &dst)),
        _ => None,
    };
    if let Some(m) = &math {
        let fam = m_family(&winner);
        if !m.unmodelled.is_empty() {
            evidence.push(format!(
                "config keys that family {fam} does not model: {}; ckpt does not know what this checkpoint computes (assert the family to run or convert it anyway)",
                m.unmodelled
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else if let Err(why) = &m.math {
            evidence.push(format!("its computation cannot be resolved: {why}"));
        }
    }
    if let Some(b) = &to_llama {
        let class = b.class();
        if class != crate::mapping::math::ConversionClass::Exact && m_family(&winner) != "llama" {
            let steps: Vec<&String> = b
                .impossible
                .iter()
                .chain(&b.lossy)
                .chain(&b.value)
                .collect();
            evidence.push(format!(
                "to llama: {} conversion ({})",
                class.word(),
                steps
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    let exact = win_fam.map(|f| {
        f.exact
            && !f.detect_only
            && match &to_llama {
                Some(b) => b.class() == crate::mapping::math::ConversionClass::Exact,
                // Without a config only the names can be judged (and the evidence says so).
                None => cfg.is_none(),
            }
    });
    // A LLaMA checkpoint needs no conversion. The command carries the renames and the mapping file
    // the detection needed, so it runs as printed.
    let convert_command = match (&winner, exact) {
        (Some(w), Some(true)) if w != "llama" && missing_required == 0 => {
            let mut cmd = format!(
                "ckpt convert {} OUT --to llama",
                shell_quote(&ck.path.display().to_string())
            );
            if let Some(f) = reg.get(w)
                && !crate::mapping::family::BUILTIN
                    .iter()
                    .any(|(file, _)| *file == f.file)
            {
                cmd.push_str(&format!(" --mapping {}", shell_quote(&f.file)));
            }
            for r in renames {
                cmd.push_str(&format!(" --rename {}", shell_quote(&r.spec)));
            }
            Some(cmd)
        }
        _ => None,
    };
    Ok(Detection {
        winner,
        ranked,
        kind,
        evidence,
        dims,
        exact,
        config_decided,
        indistinct,
        convert_command,
        missing_required,
        math,
        to_llama,
        wrapper_prefix: wrapper.map(|(p, _)| p),
        config_refusal,
    })
}

/// What LlamaForCausalLM computes with a checkpoint of `fam`'s config once its keys are spelled as
/// LLaMA's (the target of a conversion to llama).
pub fn llama_math(
    llama: &Family,
    fam: &Family,
    cfg: &ModelConfig,
) -> Option<crate::reference::Math> {
    let named = crate::mapping::configmap::renamed(cfg, fam).ok()?;
    crate::mapping::math::for_checkpoint(llama, Some(&named))
        .math
        .ok()
}

/// The rename rule that removes `prefix` from every name (`module[.](.*)=$1`: dots as `[.]`, so
/// the rule prints the same escaped or not).
pub fn strip_rule(prefix: &str) -> String {
    format!("{}(.*)=$1", regex::escape(prefix).replace("\\.", "[.]"))
}

/// A first name component every tensor shares (`module.` from `DistributedDataParallel`,
/// `_orig_mod.` from `torch.compile`) that no family's names start with, when detection finds a
/// family once it is removed: the advice for a checkpoint no family fits as it is.
fn strippable_prefix(
    ck: &Checkpoint,
    reg: &Registry,
    renames: &[RenameRule],
) -> Option<(String, String)> {
    if !renames.is_empty() {
        return None;
    }
    let first = ck.tensors.first()?.name.split_once('.')?.0;
    if ck
        .tensors
        .iter()
        .any(|t| t.name.split_once('.').map(|(p, _)| p) != Some(first))
    {
        return None;
    }
    let prefix = format!("{first}.");
    let rule = RenameRule::parse(&strip_rule(&prefix)).ok()?;
    detect_with(ck, reg, std::slice::from_ref(&rule))
        .ok()?
        .winner
        .map(|w| (prefix, w))
}

fn m_family(winner: &Option<String>) -> String {
    winner.clone().unwrap_or_default()
}

/// Why a checkpoint without tensors is no model: it has no weights (a GGUF written with
/// `convert_hf_to_gguf.py --vocab-only` carries only the vocabulary).
fn no_tensors(ck: &Checkpoint) -> String {
    if ck.container() == "gguf" {
        "the checkpoint holds no tensors: a GGUF without tensors (as `convert_hf_to_gguf.py --vocab-only` writes) carries only metadata and the vocabulary, no weights".to_string()
    } else {
        "the checkpoint holds no tensors: there are no weights to read as a model".to_string()
    }
}

/// A view of the checkpoint under canonical names: through `family` when given, else through the
/// detected one. Errors (usage / unsupported) when nothing fits, the checkpoint is quantised or an
/// adapter, or the family is detect-only; missing-input when it holds no tensors.
pub fn open_view<'a>(
    ck: &'a Checkpoint,
    reg: &Registry,
    family: Option<&str>,
    renames: &[RenameRule],
) -> Result<(View<'a>, String)> {
    if ck.tensors.is_empty() {
        return Err(Error::new(ErrorKind::MissingInput, no_tensors(ck)).file(&ck.path));
    }
    let asserted = family.is_some();
    let fam = match family {
        Some(name) => reg.require(name)?,
        None => {
            let d = detect_with(ck, reg, renames)?;
            if d.kind != CheckpointKind::Plain {
                let kind = d.kind.describe();
                let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return Err(Error::unsupported(format!(
                    "this is {article} {kind} checkpoint: {}",
                    d.evidence.first().cloned().unwrap_or_default()
                ))
                .file(&ck.path));
            }
            // A family whose names fit but which lacks tensors it needs (Qwen 3 saved without
            // `head_dim` reads as an incomplete OLMo 2) is no way out of that refusal either.
            if (d.winner.is_none() || d.missing_required > 0)
                && let Some(r) = &d.config_refusal
            {
                // The config told the family and the family refused: naming another family or
                // renaming tensors is no way out, so no hint offers one.
                return Err(Error::new(
                    r.kind,
                    format!("the config names {}{}", r.family, r.reasons.concat()),
                )
                .file(&ck.path));
            }
            let Some(w) = d.winner else {
                return Err(Error::usage(format!(
                    "cannot tell which family this checkpoint is: {}",
                    d.evidence.join("; ")
                ))
                .file(&ck.path)
                .cause(crate::error::Cause::FamilyUndetected {
                    strip: d.wrapper_prefix.clone(),
                }));
            };
            reg.get(&w)
                .ok_or_else(|| Error::internal("detected family vanished"))?
        }
    };
    if let Some(t) = sub_byte_tensor(ck) {
        let file = ck
            .shard_of(t)
            .map(|sh| sh.path.clone())
            .unwrap_or_else(|| ck.path.clone());
        return Err(Error::unsupported(format!(
            "dtype {} ({} bits per element) is not supported: ckpt reads and converts dtypes of whole bytes (detected family `{}`)",
            t.dtype,
            crate::checkpoint::header::dtype_bits(t.dtype),
            fam.name
        ))
        .file(file)
        .tensor(&t.name));
    }
    let mut v = canonical_view(ck, fam, renames)?;
    attach_math(&mut v, fam, asserted);
    Ok((v, fam.name.clone()))
}

/// Resolve `fam`'s computation for the view's checkpoint and attach it (or the reason it is not
/// known). When the user named the family (`asserted`), config keys the family does not model are
/// ignored on the user's word and listed in `view.notes`; otherwise they make the math unknown.
pub fn attach_math(v: &mut View<'_>, fam: &Family, asserted: bool) {
    let r = crate::mapping::math::for_checkpoint(fam, v.ckpt.config.as_ref());
    if asserted && !r.unmodelled.is_empty() {
        v.notes.push(format!(
            "read as {} on your word: config keys it does not model are ignored: {}",
            fam.name,
            r.unmodelled
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    v.math = Some(r.usable(&fam.name, asserted).cloned());
}

/// Whether two families read the checkpoint's tensors as the same canonical tensors (same names,
/// same bytes): a family that claims the same config and names but maps them elsewhere (a user
/// mapping that swaps gate and up) computes something else on the same file. A view that does not
/// build is judged elsewhere (shapes, unmatched names).
fn read_alike(ck: &Checkpoint, x: &Family, y: &Family, renames: &[RenameRule]) -> bool {
    let (Ok(a), Ok(b)) = (
        canonical_view(ck, x, renames),
        canonical_view(ck, y, renames),
    ) else {
        return true;
    };
    a.tensors.len() == b.tensors.len()
        && a.tensors.iter().all(|t| {
            b.get(&t.name)
                .is_some_and(|u| u.shape == t.shape && u.segments == t.segments)
        })
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Plain, quantised or adapter, from names, dtypes and the config.
fn classify(ck: &Checkpoint, names: &[String]) -> CheckpointKind {
    let has = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    let qmethod = ck
        .config
        .as_ref()
        .and_then(|c| c.raw.get("quantization_config"))
        .and_then(|q| q.get("quant_method"))
        .and_then(|m| m.as_str())
        .map(|m| m.to_ascii_uppercase());
    if names
        .iter()
        .any(|n| n.contains("lora_A") || n.contains("lora_B") || n.contains("lora_embedding_"))
        || ck.other_files.iter().any(|f| f == "adapter_config.json")
    {
        return CheckpointKind::Adapter("LoRA".into());
    }
    if has(".qweight") || has(".qzeros") {
        let m = qmethod.unwrap_or_else(|| {
            if has(".g_idx") {
                "GPTQ".into()
            } else {
                "GPTQ or AWQ".into()
            }
        });
        return CheckpointKind::Quantized(format!("{m}: qweight/qzeros/scales"));
    }
    if has(".weight_scale") || has(".weight_scale_inv") || has(".input_scale") {
        return CheckpointKind::Quantized(format!(
            "{}: weight_scale tensors",
            qmethod.unwrap_or_else(|| "FP8".into())
        ));
    }
    if has(".weight.absmax") || has(".weight.quant_map") || has(".SCB") {
        return CheckpointKind::Quantized("bitsandbytes".into());
    }
    if ck
        .tensors
        .iter()
        .any(|t| dtype_name(t.dtype).starts_with("F8"))
    {
        return CheckpointKind::Quantized(qmethod.unwrap_or_else(|| "FP8".into()));
    }
    if let Some(m) = qmethod {
        return CheckpointKind::Quantized(m);
    }
    let prefixed = names
        .iter()
        .filter(|n| n.starts_with("base_model.model."))
        .count();
    if prefixed > 0 && prefixed * 2 >= names.len() {
        return CheckpointKind::Adapter("PEFT-prefixed: base_model.model.".into());
    }
    CheckpointKind::Plain
}

/// Names with quantisation and adapter decorations removed, to guess the underlying family.
fn underlying_names(names: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for n in names {
        let mut s = n.strip_prefix("base_model.model.").unwrap_or(n).to_string();
        if s.contains("lora_") {
            continue;
        }
        for aux in [
            ".qzeros",
            ".scales",
            ".g_idx",
            ".weight_scale",
            ".weight_scale_inv",
            ".input_scale",
            ".SCB",
        ] {
            if s.ends_with(aux) {
                s.clear();
            }
        }
        if s.contains(".weight.absmax")
            || s.contains(".weight.quant")
            || s.contains(".weight.nested")
        {
            continue;
        }
        if let Some(b) = s.strip_suffix(".qweight") {
            s = format!("{b}.weight");
        }
        if let Some(b) = s.strip_suffix(".base_layer.weight") {
            s = format!("{b}.weight");
        }
        if !s.is_empty() {
            out.insert(s);
        }
    }
    out.into_iter().collect()
}

fn layer_count(names: &[String]) -> Option<usize> {
    names
        .iter()
        .filter_map(|n| crate::checkpoint::layer_index(n))
        .max()
        .map(|m| m + 1)
}

fn score(
    f: &Family,
    names: &[String],
    cfg: Option<&ModelConfig>,
    layers: Option<usize>,
    code: Option<&str>,
) -> FamilyScore {
    let mut matched = 0;
    let mut unmatched = Vec::new();
    let mut unexpected_bias = None;
    for n in names {
        if f.covers(n) {
            matched += 1;
            continue;
        }
        if unmatched.len() < EXAMPLES {
            unmatched.push(n.clone());
        }
        if unexpected_bias.is_none()
            && let Err(why) = f.biases.check(&f.name, n, cfg.map(|c| &c.raw))
        {
            unexpected_bias = Some(format!(
                "cannot be read as {}: `{}`: {why}",
                f.name,
                escape(n)
            ));
        }
    }
    let (mut present, mut expected, mut missing) = (0usize, 0usize, Vec::new());
    for p in f.required() {
        if p.placeholders().contains(&"i") {
            let n_layers = layers.unwrap_or(0);
            let seen: BTreeSet<usize> = names
                .iter()
                .filter_map(|n| p.index_of(n, "i"))
                .filter(|&i| i < n_layers)
                .collect();
            expected += n_layers;
            present += seen.len();
            if seen.len() < n_layers && missing.len() < EXAMPLES {
                let first = (0..n_layers).find(|i| !seen.contains(i)).unwrap_or(0);
                let mut b = crate::mapping::pattern::Bindings::new();
                b.insert("i".into(), first.to_string());
                missing.push(p.render(&b));
            }
        } else {
            expected += 1;
            if names.iter().any(|n| p.is_match(n)) || head_is_the_tied_embeddings(f, p, names, cfg)
            {
                present += 1;
            } else if missing.len() < EXAMPLES {
                missing.push(p.text().to_string());
            }
        }
    }
    let config = match cfg {
        None => ConfigAgreement::Unknown,
        Some(c) => {
            // transformers dispatches on `model_type`; `architectures` speaks only when it is
            // absent (a family whose architecture is listed under another family's model_type is
            // not the one the config names).
            if let Some(m) = c.model_type.as_deref().filter(|m| f.claims_model_type(m)) {
                ConfigAgreement::Match(format!("model_type={m}"))
            } else if c.model_type.is_none() && f.claims_architecture(&c.architectures) {
                ConfigAgreement::Match(format!("architectures={}", c.architectures.join(",")))
            } else if let Some(m) = &c.model_type {
                ConfigAgreement::Mismatch(format!("model_type={m}"))
            } else if let Some(a) = c.architectures.first() {
                ConfigAgreement::Mismatch(format!("architectures={a}"))
            } else {
                ConfigAgreement::Unknown
            }
        }
    };
    let code = code_agreement(f, code);
    FamilyScore {
        family: f.name.clone(),
        score: 0.0,
        matched,
        total: names.len(),
        required_present: present,
        required_expected: expected,
        config,
        code,
        shapes_ok: None,
        shape_note: None,
        refusal_kind: None,
        unmatched,
        unexpected_bias,
        missing,
        exact: f.exact,
        detect_only: f.detect_only,
    }
}

/// Whether the missing required tensor `p` is the embeddings of a tied model stored as its output
/// layer only (`safetensors.torch.save_model`'s choice of name), which the canonical view reads as
/// the embeddings (`tied_head_as_embeddings` in `mapping::apply`).
fn head_is_the_tied_embeddings(
    f: &Family,
    p: &crate::mapping::pattern::Pattern,
    names: &[String],
    cfg: Option<&ModelConfig>,
) -> bool {
    cfg.and_then(|c| c.tie_word_embeddings) == Some(true)
        && f.source_of("model.embed_tokens.weight") == Some(p)
        && f.source_of("lm_head.weight")
            .is_some_and(|h| names.iter().any(|n| h.is_match(n)))
}

fn code_agreement(f: &Family, code: Option<&str>) -> CodeAgreement {
    let (need, forbid) = (&f.detect.remote_code, &f.detect.not_remote_code);
    if need.is_empty() && forbid.is_empty() {
        return CodeAgreement::Unknown;
    }
    let Some(code) = code else {
        return CodeAgreement::Unknown;
    };
    if let Some(m) = forbid.iter().find(|m| code.contains(m.as_str())) {
        return CodeAgreement::Mismatch(format!("has `{}`", escape(m)));
    }
    if let Some(m) = need.iter().find(|m| !code.contains(m.as_str())) {
        return CodeAgreement::Mismatch(format!("lacks `{}`", escape(m)));
    }
    match need.first() {
        Some(m) => CodeAgreement::Match(format!("has `{}`", escape(m))),
        None => CodeAgreement::Match(format!(
            "has none of {}",
            forbid
                .iter()
                .map(|m| format!("`{}`", escape(m)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Most remote-code files read, and bytes read from each: evidence, not a program.
const MAX_CODE_FILES: usize = 16;
const MAX_CODE_BYTES: u64 = 4 << 20;

/// The text of the `modeling_*.py` / `configuration_*.py` files shipped beside the weights,
/// concatenated (read as text with a size cap, never run); `None` when there are none.
pub fn remote_code_text(ck: &Checkpoint) -> Option<String> {
    let mut text = String::new();
    let mut any = false;
    for f in ck
        .other_files
        .iter()
        .filter(|f| {
            !f.contains('/')
                && f.ends_with(".py")
                && (f.starts_with("modeling_") || f.starts_with("configuration_"))
        })
        .take(MAX_CODE_FILES)
    {
        if let Ok(bytes) = crate::checkpoint::config::read_limited(&ck.dir.join(f), MAX_CODE_BYTES)
        {
            text.push_str(&String::from_utf8_lossy(&bytes));
            text.push('\n');
            any = true;
        }
    }
    any.then_some(text)
}

/// The first tensor stored in a sub-byte dtype (F4, F6_*): such a checkpoint cannot be sliced into
/// rows, which says nothing about its family.
pub fn sub_byte_tensor(ck: &Checkpoint) -> Option<&crate::checkpoint::TensorInfo> {
    ck.tensors
        .iter()
        .find(|t| !t.dtype.is_block() && crate::checkpoint::header::dtype_bits(t.dtype) < 8)
}

/// Whether a view whose config ties the embeddings also stores an `lm_head.weight` that is not
/// them: another shape or dtype, or bytes that differ in its first, middle or last row. Detection
/// samples three rows (an 8B model's head is 1 GB); a head that passes is compared in full where
/// logits are computed (`reference::Model`), and `ckpt check` compares it too (T007).
fn tied_head_differs(v: &View<'_>) -> bool {
    let (Some(h), Some(e)) = (v.get("lm_head.weight"), v.get("model.embed_tokens.weight")) else {
        return false;
    };
    if h.shape != e.shape || h.dtype != e.dtype {
        return true;
    }
    let rows = h.shape.first().copied().unwrap_or(0);
    let row = |t: &crate::mapping::ViewTensor, r: usize| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for seg in v.resolve_rows(t, r, 1).ok()? {
            out.extend_from_slice(&v.segment_bytes(&seg).ok()?);
        }
        Some(out)
    };
    [0, rows / 2, rows.saturating_sub(1)]
        .into_iter()
        .filter(|&r| r < rows)
        .any(|r| row(h, r) != row(e, r))
}

fn check_shapes(ck: &Checkpoint, f: &Family, s: &mut FamilyScore, renames: &[RenameRule]) {
    let v = match canonical_view(ck, f, renames) {
        Ok(v) => v,
        // A sub-byte dtype is not a shape conflict: it is reported by name where it matters.
        Err(_) if sub_byte_tensor(ck).is_some() => return,
        Err(e) => {
            // Without a config, sizes of splits and permutations are unknown: not a shape conflict.
            if ck.config.is_none() {
                return;
            }
            s.shapes_ok = Some(false);
            s.shape_note = Some(format!("cannot be read as {}: {}", f.name, e.message()));
            s.refusal_kind = Some(e.kind());
            return;
        }
    };
    let Some(c) = &v.config else {
        s.shapes_ok = Some(true);
        return;
    };
    if c.tie_word_embeddings == Some(true) && tied_head_differs(&v) {
        s.shapes_ok = Some(false);
        s.shape_note = Some(format!(
            "cannot be read as {}: `tie_word_embeddings` is true but the stored `lm_head.weight` differs from the embeddings (transformers 5 and llama.cpp compute with the stored one, transformers 4 and candle with the embeddings; `ckpt check` reports it as T007)",
            f.name
        ));
        s.refusal_kind = Some(ErrorKind::Unsupported);
        return;
    }
    let mut problems = Vec::new();
    let mut want = |name: &str, dim: usize, expect: Option<usize>| {
        if let (Some(t), Some(e)) = (v.get(name), expect)
            && t.shape.get(dim) != Some(&e)
        {
            problems.push(format!(
                "`{name}` has shape {:?} but the config implies {e} at dim {dim}",
                t.shape
            ));
        }
    };
    let hd = c.resolved_head_dim();
    want("model.embed_tokens.weight", 1, c.hidden_size);
    want(
        "model.layers.0.self_attn.q_proj.weight",
        0,
        c.num_attention_heads.zip(hd).map(|(a, b)| a * b),
    );
    want(
        "model.layers.0.self_attn.k_proj.weight",
        0,
        c.resolved_kv_heads().zip(hd).map(|(a, b)| a * b),
    );
    want(
        "model.layers.0.mlp.gate_proj.weight",
        0,
        c.intermediate_size,
    );
    if problems.is_empty() {
        s.shapes_ok = Some(true);
    } else {
        s.shapes_ok = Some(false);
        s.shape_note = Some(problems.join("; "));
    }
}

/// Hyperparameters: config first, shapes (through the family's whole-tensor rules) for the rest, and
/// the disagreements between the two.
fn infer_dims(
    ck: &Checkpoint,
    fam: Option<&Family>,
    renames: &[RenameRule],
    cfg: Option<&ModelConfig>,
    layers: Option<usize>,
) -> InferredDims {
    let mut d = InferredDims::default();
    // Canonical name -> shape, for tensors a rename or permutation maps whole.
    let mut shape_of = std::collections::HashMap::new();
    if let Some(f) = fam
        && let Ok(m) = match_tensors(ck, f, renames)
    {
        for (i, (_, r, b)) in m.entries.iter().enumerate() {
            if let Rule::Rename { to, .. } | Rule::Permute { to, .. } = &r.rule {
                shape_of.insert(to.render(b), ck.tensors[i].shape.clone());
            }
        }
    }
    // A tied model stored as its head only (`safetensors.torch.save_model`): the canonical view
    // reads it as the embeddings (`tied_head_as_embeddings` in `mapping::apply`), and so do the
    // dimensions.
    if cfg.and_then(|c| c.tie_word_embeddings) == Some(true)
        && !shape_of.contains_key("model.embed_tokens.weight")
        && let Some(s) = shape_of.remove("lm_head.weight")
    {
        shape_of.insert("model.embed_tokens.weight".to_string(), s);
    }
    let dim = |name: &str, k: usize| {
        shape_of
            .get(name)
            .and_then(|s: &Vec<usize>| s.get(k).copied())
    };
    let s_vocab = dim("model.embed_tokens.weight", 0);
    let s_hidden = dim("model.embed_tokens.weight", 1);
    let s_inter = dim("model.layers.0.mlp.gate_proj.weight", 0);
    let s_k = dim("model.layers.0.self_attn.k_proj.weight", 0);
    d.k_rows = s_k;
    if fam.is_some() && !shape_of.is_empty() {
        d.tied = Some(!shape_of.contains_key("lm_head.weight"));
    }
    let c = cfg;
    let mut pick = |field: &'static str, from_cfg: Option<usize>, from_shape: Option<usize>| {
        if let (Some(a), Some(b)) = (from_cfg, from_shape)
            && a != b
        {
            d.conflicts
                .push(format!("config says {field}={a} but the shapes say {b}"));
        }
        match from_cfg {
            Some(v) => Some(v),
            None => {
                if from_shape.is_some() {
                    d.from_shapes.push(field);
                }
                from_shape
            }
        }
    };
    let vocab = pick("vocab", c.and_then(|c| c.vocab_size), s_vocab);
    let hidden = pick("hidden", c.and_then(|c| c.hidden_size), s_hidden);
    let inter = pick("intermediate", c.and_then(|c| c.intermediate_size), s_inter);
    let names_layers = layer_count(
        &ck.tensors
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>(),
    );
    let layers_v = pick("layers", c.and_then(|c| c.num_hidden_layers), names_layers);
    let heads = c.and_then(|c| c.num_attention_heads);
    let head_dim = c.and_then(|c| c.resolved_head_dim());
    let kv_from_shape = s_k
        .zip(head_dim)
        .and_then(|(k, h)| (h > 0 && k % h == 0).then(|| k / h));
    let kv = pick(
        "kv_heads",
        c.and_then(|c| c.num_key_value_heads.or(c.num_attention_heads)),
        kv_from_shape,
    );
    d.vocab = vocab;
    d.hidden = hidden;
    d.intermediate = inter;
    d.layers = layers_v.or(layers);
    d.heads = heads;
    d.head_dim = head_dim;
    d.kv_heads = kv;
    d
}
