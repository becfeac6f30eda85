//! Family mapping files: the compiled rules, families and the registry of known families.
//!
//! A family file (TOML, format in `mappings/README.md`) says how to recognise the family and how its
//! tensor names and config keys relate to the canonical Hugging Face LLaMA ones. Files are input: an
//! unknown key, a name two rules match, two sources mapped onto one target, placeholders that differ
//! between the two sides of a rule, or a transform with no inverse is an error naming the file and the
//! rule. The built-in files under `mappings/` are embedded in the binary.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::path::Path;

use serde_json::Value;

use super::pattern::Pattern;
use crate::error::{Error, Result, escape};

/// Largest mapping file read, in bytes.
pub const MAX_MAPPING_BYTES: u64 = 1 << 20;
/// Most rules one family may have (after inheriting from its base).
pub const MAX_RULES: usize = 4096;

/// The built-in family files, embedded at compile time (base families before their children).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "mappings/llama.toml",
        include_str!("../../mappings/llama.toml"),
    ),
    ("mappings/yi.toml", include_str!("../../mappings/yi.toml")),
    (
        "mappings/llama-meta.toml",
        include_str!("../../mappings/llama-meta.toml"),
    ),
    (
        "mappings/mistral.toml",
        include_str!("../../mappings/mistral.toml"),
    ),
    (
        "mappings/qwen2.toml",
        include_str!("../../mappings/qwen2.toml"),
    ),
    (
        "mappings/phi3.toml",
        include_str!("../../mappings/phi3.toml"),
    ),
    (
        "mappings/baichuan.toml",
        include_str!("../../mappings/baichuan.toml"),
    ),
    (
        "mappings/baichuan2.toml",
        include_str!("../../mappings/baichuan2.toml"),
    ),
    (
        "mappings/baichuan-alibi.toml",
        include_str!("../../mappings/baichuan-alibi.toml"),
    ),
    (
        "mappings/internlm2.toml",
        include_str!("../../mappings/internlm2.toml"),
    ),
    (
        "mappings/gemma.toml",
        include_str!("../../mappings/gemma.toml"),
    ),
    (
        "mappings/gemma2.toml",
        include_str!("../../mappings/gemma2.toml"),
    ),
    (
        "mappings/gemma3.toml",
        include_str!("../../mappings/gemma3.toml"),
    ),
    (
        "mappings/stablelm.toml",
        include_str!("../../mappings/stablelm.toml"),
    ),
    (
        "mappings/cohere.toml",
        include_str!("../../mappings/cohere.toml"),
    ),
    (
        "mappings/granite.toml",
        include_str!("../../mappings/granite.toml"),
    ),
    (
        "mappings/helium.toml",
        include_str!("../../mappings/helium.toml"),
    ),
    (
        "mappings/smollm3.toml",
        include_str!("../../mappings/smollm3.toml"),
    ),
    (
        "mappings/qwen3.toml",
        include_str!("../../mappings/qwen3.toml"),
    ),
    (
        "mappings/olmo2.toml",
        include_str!("../../mappings/olmo2.toml"),
    ),
    (
        "mappings/mixtral.toml",
        include_str!("../../mappings/mixtral.toml"),
    ),
    (
        "mappings/gpt2.toml",
        include_str!("../../mappings/gpt2.toml"),
    ),
    (
        "mappings/gpt-neox.toml",
        include_str!("../../mappings/gpt-neox.toml"),
    ),
    (
        "mappings/falcon.toml",
        include_str!("../../mappings/falcon.toml"),
    ),
    (
        "mappings/gguf-llama.toml",
        include_str!("../../mappings/gguf-llama.toml"),
    ),
    (
        "mappings/gguf-qwen2.toml",
        include_str!("../../mappings/gguf-qwen2.toml"),
    ),
    (
        "mappings/gguf-qwen3.toml",
        include_str!("../../mappings/gguf-qwen3.toml"),
    ),
    (
        "mappings/gguf-phi3.toml",
        include_str!("../../mappings/gguf-phi3.toml"),
    ),
];

// ---------------------------------------------------------------------------------------------
// Compiled rules.
// ---------------------------------------------------------------------------------------------

/// A size named by a config quantity (mapping files never hold numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// `hidden_size`.
    Hidden,
    /// `num_attention_heads`.
    Heads,
    /// `num_key_value_heads`.
    KvHeads,
    /// `head_dim`.
    HeadDim,
    /// `num_attention_heads * head_dim` (query rows).
    Q,
    /// `num_key_value_heads * head_dim` (key or value rows).
    Kv,
    /// `intermediate_size`.
    Intermediate,
    /// `vocab_size`.
    Vocab,
}

impl Quantity {
    /// Parse the name used in mapping files.
    pub fn parse(s: &str) -> Option<Quantity> {
        Some(match s {
            "hidden" => Quantity::Hidden,
            "heads" => Quantity::Heads,
            "kv_heads" => Quantity::KvHeads,
            "head_dim" => Quantity::HeadDim,
            "q" => Quantity::Q,
            "kv" => Quantity::Kv,
            "intermediate" => Quantity::Intermediate,
            "vocab" => Quantity::Vocab,
            _ => return None,
        })
    }

    /// The name used in mapping files.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::Hidden => "hidden",
            Quantity::Heads => "heads",
            Quantity::KvHeads => "kv_heads",
            Quantity::HeadDim => "head_dim",
            Quantity::Q => "q",
            Quantity::Kv => "kv",
            Quantity::Intermediate => "intermediate",
            Quantity::Vocab => "vocab",
        }
    }
}

/// One tensor rule of a family: how names (and rows) on the family's side relate to canonical ones.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Same bytes under another name.
    Rename {
        /// Family-side name.
        from: Pattern,
        /// Canonical name.
        to: Pattern,
    },
    /// Rotary row permutation: the family stores Q/K (and their biases) in Meta's interleaved
    /// layout, the canonical form is HF's half-split layout.
    Permute {
        /// Family-side name.
        from: Pattern,
        /// Canonical name.
        to: Pattern,
        /// Head count the rows are grouped by (`heads` for Q, `kv_heads` for K).
        heads: Quantity,
    },
    /// One fused family tensor is several canonical tensors' rows.
    Split {
        /// Family-side fused name.
        from: Pattern,
        /// Canonical parts, in row order.
        into: Vec<Pattern>,
        /// Row count of each part.
        rows: Vec<Quantity>,
        /// Grouped (InternLM2 `wqkv`: per KV group, its query heads, then one key and one value
        /// head) instead of contiguous blocks.
        grouped: bool,
    },
    /// A family tensor with no canonical counterpart that is deliberately not carried over.
    Drop {
        /// Family-side name.
        from: Pattern,
        /// Why, for reports.
        reason: String,
    },
    /// A canonical tensor the family does not store because it is all zeros (Qwen2's `o_proj`
    /// bias), added when `when` exists.
    Zeros {
        /// Canonical name of the zero tensor.
        to: Pattern,
        /// Its length (1-D).
        rows: Quantity,
        /// Canonical tensor whose presence (same placeholders) means the zero tensor is needed; its
        /// dtype is used.
        when: Pattern,
    },
}

impl Rule {
    /// The family-side name pattern, if the rule consumes a family tensor.
    pub fn from(&self) -> Option<&Pattern> {
        match self {
            Rule::Rename { from, .. }
            | Rule::Permute { from, .. }
            | Rule::Split { from, .. }
            | Rule::Drop { from, .. } => Some(from),
            Rule::Zeros { .. } => None,
        }
    }

    /// The canonical name patterns the rule produces.
    pub fn targets(&self) -> Vec<&Pattern> {
        match self {
            Rule::Rename { to, .. } | Rule::Permute { to, .. } | Rule::Zeros { to, .. } => {
                vec![to]
            }
            Rule::Split { into, .. } => into.iter().collect(),
            Rule::Drop { .. } => Vec::new(),
        }
    }

    /// Short transform name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Rename { from, to } if from == to => "same",
            Rule::Rename { .. } => "rename",
            Rule::Permute { .. } => "permute",
            Rule::Split { grouped: true, .. } => "grouped split",
            Rule::Split { .. } => "split",
            Rule::Drop { .. } => "drop",
            Rule::Zeros { .. } => "zeros",
        }
    }
}

/// A rule and where it was written (file and table), for error messages.
#[derive(Debug, Clone)]
pub struct RuleEntry {
    /// The rule.
    pub rule: Rule,
    /// `mappings/yi.toml [tensors] "model.layers.{i}.ln1.weight"`.
    pub origin: String,
}

/// Which config file a family ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// Hugging Face `config.json`.
    ConfigJson,
    /// Meta / mistral-inference `params.json`.
    ParamsJson,
}

/// How the family's config relates to a LLaMA `config.json`.
#[derive(Debug, Clone)]
pub struct ConfigRules {
    /// `model_type` the family writes (matched case-insensitively when detecting).
    pub model_type: Option<String>,
    /// `architectures` the family writes.
    pub architectures: Vec<String>,
    /// Which config file the family ships.
    pub format: ConfigFormat,
    /// Keys removed when converting to LLaMA (`auto_map` is always removed).
    pub drop: Vec<String>,
    /// Family key -> LLaMA key.
    pub rename: Vec<(String, String)>,
    /// LLaMA keys added (when absent) on the way to LLaMA, with the value the family implies.
    pub defaults: Vec<(String, Value)>,
    /// RoPE scaling types the family's config class accepts (`default` for none); empty: any.
    pub rope_types: Vec<String>,
    /// The class's o_proj is `hidden x hidden` (Helium): `heads x head_dim` must equal `hidden`.
    pub square_o_proj: bool,
    /// The class's `head_dim` when the config has none, if not `hidden / heads` (Helium: 128).
    pub head_dim_default: Option<usize>,
    /// The class the family's `architectures` names is not in transformers: it ships as the
    /// model's own code (`auto_map`, `trust_remote_code=True`), which a conversion does not write.
    pub remote_code_class: bool,
    /// RoPE scaling types (`default` for none) llama.cpp's converter carries over for the
    /// family's class; empty: not stated. Converting into the family with another one says that a
    /// GGUF made from the output computes other logits.
    pub llama_cpp_rope_types: Vec<String>,
    /// llama.cpp builds the class's q and o projections `hidden x hidden` (Qwen2, Phi-3,
    /// InternLM2, Baichuan): converting into the family a model whose `heads x head_dim` is not
    /// the hidden size says that a GGUF made from the output does not load there.
    pub llama_cpp_square_attention: bool,
    /// Config keys the class cannot read as null (its code computes with the value, and None
    /// raises): a checkpoint with one of them null is not computed.
    pub not_null: Vec<String>,
    /// Config keys a checkpoint must state (at the top level or in `rope_parameters`): the
    /// class's generations default them differently (Cohere's rotary base: 10000 in transformers
    /// 4, 500000 in 5), so a config without them computes one thing or another, and is refused.
    pub required: Vec<String>,
}

/// What detection looks for besides the tensor rules.
#[derive(Debug, Clone, Default)]
pub struct DetectRules {
    /// Other `model_type` spellings.
    pub model_types: Vec<String>,
    /// Other `architectures` values.
    pub architectures: Vec<String>,
    /// Extra family-side names (detect-only families list their tensors here).
    pub tensors: Vec<Pattern>,
    /// Family-side names that must be present (in every layer for `{i}` names) besides the
    /// non-optional rule sources.
    pub required: Vec<Pattern>,
    /// Text that the checkpoint's shipped remote code (`modeling_*.py`, read as text, never run)
    /// must contain for this family (Baichuan2's `class NormHead`).
    pub remote_code: Vec<String>,
    /// Text that the shipped remote code must not contain for this family.
    pub not_remote_code: Vec<String>,
}

/// A family: its identity, its rules (with the base's inherited) and its config mapping.
#[derive(Debug, Clone)]
pub struct Family {
    /// Short name (`yi`).
    pub name: String,
    /// One line about it.
    pub summary: String,
    /// Converts to LLaMA with no change to the numbers.
    pub exact: bool,
    /// Recognised only: no conversion (not LLaMA-equivalent).
    pub detect_only: bool,
    /// Where the names come from (model cards, upstream code, issues).
    pub sources: Vec<String>,
    /// Why it is not LLaMA-exact (or any other caveat).
    pub note: Option<String>,
    /// The family it inherits unlisted tensors from.
    pub base: Option<String>,
    /// Where the family was read from (`mappings/yi.toml` or a path).
    pub file: String,
    /// Tensor rules, own and inherited.
    pub rules: Vec<RuleEntry>,
    /// Family-side names that may be absent (tied `lm_head`, biases, buffers).
    pub optional: Vec<Pattern>,
    /// Config mapping.
    pub config: ConfigRules,
    /// Detection hints.
    pub detect: DetectRules,
    /// The bias tensors its own class computes (`[biases]`, not inherited).
    pub biases: Biases,
    /// The computation its checkpoints mean (`[math]`, inherited from the base).
    pub math: super::math::MathSpec,
}

/// When a family's class gives a group of projections a bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BiasSwitch {
    /// Always: the class has the parameter (Qwen2's q/k/v), so a converted checkpoint stores it
    /// (all zeros when the source has none).
    Always,
    /// When the file stores one (llama.cpp adds any bias present).
    Stored,
    /// When this config key is `true` (`attention_bias`); absent or `null` means `false`.
    Key(String),
}

/// The bias tensors a family's own class computes, by group; `None`: never. A bias tensor the
/// class does not compute is dropped by its loader (transformers reports it as unexpected), while
/// other loaders of the same names use it: a checkpoint carrying one means different things to
/// different tools, so it is refused, never computed one way silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Biases {
    /// `q_proj`, `k_proj`, `v_proj`.
    pub qkv: Option<BiasSwitch>,
    /// `o_proj`.
    pub o: Option<BiasSwitch>,
    /// `gate_proj`, `up_proj`, `down_proj`.
    pub mlp: Option<BiasSwitch>,
}

impl Biases {
    /// Which group a canonical (LLaMA) tensor name is the bias of, with the group's switch.
    fn group(&self, canonical: &str) -> Option<(&'static str, &Option<BiasSwitch>)> {
        let proj = canonical.strip_suffix(".bias")?.rsplit('.').next()?;
        Some(match proj {
            "q_proj" | "k_proj" | "v_proj" => ("q/k/v", &self.qkv),
            "o_proj" => ("o_proj", &self.o),
            "gate_proj" | "up_proj" | "down_proj" => ("MLP", &self.mlp),
            _ => return None,
        })
    }

    /// Whether the family's class always has the bias `canonical` (a `true` group).
    pub fn always(&self, canonical: &str) -> bool {
        self.group(canonical)
            .is_some_and(|(_, s)| *s == Some(BiasSwitch::Always))
    }

    /// `Ok` when the family's class computes the bias `canonical` under `config` (the
    /// family-side config, raw), or `canonical` is no projection bias; otherwise why not.
    pub fn check(
        &self,
        family: &str,
        canonical: &str,
        config: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> std::result::Result<(), String> {
        let Some((group, switch)) = self.group(canonical) else {
            return Ok(());
        };
        match switch {
            Some(BiasSwitch::Always | BiasSwitch::Stored) => Ok(()),
            Some(BiasSwitch::Key(k)) => match config.and_then(|c| c.get(k)) {
                Some(serde_json::Value::Bool(true)) => Ok(()),
                None | Some(serde_json::Value::Bool(false) | serde_json::Value::Null) => {
                    Err(format!(
                        "family `{family}` computes {group} biases only when the config's `{}` is true, and it is {}",
                        escape(k),
                        match config.and_then(|c| c.get(k)) {
                            None => "absent (false)".to_string(),
                            Some(v) => v.to_string(),
                        }
                    ))
                }
                Some(v) => Err(format!(
                    "family `{family}` switches {group} biases with the config's `{}`, which is {v}, not a boolean",
                    escape(k)
                )),
            },
            None => Err(format!(
                "family `{family}`'s own class has no {group} biases"
            )),
        }
    }
}

impl Family {
    /// The rule whose family-side pattern matches `name`: `Ok(None)` when none does, an error when
    /// two do (naming both rules).
    pub fn rule_for(&self, name: &str) -> Result<Option<&RuleEntry>> {
        let mut found: Option<&RuleEntry> = None;
        for r in &self.rules {
            if r.rule.from().is_some_and(|p| p.is_match(name)) {
                if let Some(f) = found {
                    return Err(Error::bad_data(format!(
                        "matched by two rules of family `{}`: {} and {}",
                        self.name, f.origin, r.origin
                    ))
                    .file(&self.file)
                    .tensor(name));
                }
                found = Some(r);
            }
        }
        Ok(found)
    }

    /// True when some rule or detection pattern of the family covers this family-side name.
    pub fn covers(&self, name: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.rule.from().is_some_and(|p| p.is_match(name)))
            || self.detect.tensors.iter().any(|p| p.is_match(name))
    }

    /// The family-side name a plain rename rule gives the canonical tensor `canonical` (one
    /// without placeholders: `model.embed_tokens.weight`, `lm_head.weight`), if there is one.
    pub fn source_of(&self, canonical: &str) -> Option<&Pattern> {
        self.rules.iter().find_map(|r| match &r.rule {
            Rule::Rename { from, to } if to.text() == canonical && to.placeholders().is_empty() => {
                Some(from)
            }
            _ => None,
        })
    }

    /// The family-side patterns that must be present: every rule source and detection tensor not
    /// listed as optional (drops excluded), plus `[detect] required`.
    pub fn required(&self) -> Vec<&Pattern> {
        let mut out: Vec<&Pattern> = Vec::new();
        let sources = self
            .rules
            .iter()
            .filter(|r| !matches!(r.rule, Rule::Drop { .. }))
            .filter_map(|r| r.rule.from())
            .chain(self.detect.tensors.iter());
        for p in sources {
            if !self.optional.iter().any(|o| o == p) && !out.contains(&p) {
                out.push(p);
            }
        }
        for p in &self.detect.required {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// The family-side name components that differ from the canonical names (`ln1`, `ln2` for Yi),
    /// for detection evidence.
    pub fn differing_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.rules {
            if matches!(r.rule, Rule::Drop { .. }) {
                continue;
            }
            let (Some(from), targets) = (r.rule.from(), r.rule.targets()) else {
                continue;
            };
            if let [only] = targets.as_slice()
                && *only == from
            {
                continue;
            }
            let to = targets.first().map(|t| t.text()).unwrap_or("");
            let tset: Vec<&str> = to.split('.').collect();
            let diff: Vec<&str> = from
                .text()
                .split('.')
                .filter(|c| !tset.contains(c) && *c != "weight" && *c != "bias")
                .collect();
            let s = if diff.is_empty() {
                from.text().to_string()
            } else {
                diff.join(".")
            };
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The matching `model_type` / `architectures` the family claims.
    pub fn claims_model_type(&self, mt: &str) -> bool {
        self.config
            .model_type
            .iter()
            .chain(self.detect.model_types.iter())
            .any(|m| m.eq_ignore_ascii_case(mt))
    }

    /// True when one of `archs` is an architecture the family claims.
    pub fn claims_architecture(&self, archs: &[String]) -> bool {
        archs.iter().any(|a| {
            self.config
                .architectures
                .iter()
                .chain(self.detect.architectures.iter())
                .any(|m| m == a)
        })
    }
}

/// The known families: the built-in ones plus any loaded from files.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    families: Vec<Family>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The families embedded in the binary (`mappings/*.toml`).
    pub fn builtin() -> Result<Registry> {
        let mut r = Registry::empty();
        for (file, text) in BUILTIN {
            // Debug builds (and so every test run) check the embedded files like any other.
            r.load_str_checked(text, file, cfg!(debug_assertions))?;
        }
        Ok(r)
    }

    /// Add a family from a file; returns its name.
    pub fn load_file(&mut self, path: &Path) -> Result<String> {
        let bytes = crate::checkpoint::config::read_limited(path, MAX_MAPPING_BYTES)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::bad_data("mapping file is not UTF-8").file(path))?;
        self.load_str(&text, &path.display().to_string())
    }

    /// Add a family from TOML text; `file` names it in errors. Returns the family's name.
    pub fn load_str(&mut self, text: &str, file: &str) -> Result<String> {
        self.load_str_checked(text, file, true)
    }

    /// [`Registry::load_str`], with the rule clash check on or off (off only for embedded files).
    pub(crate) fn load_str_checked(
        &mut self,
        text: &str,
        file: &str,
        clash_check: bool,
    ) -> Result<String> {
        let spec: super::loader::FileSpec = toml::from_str(text).map_err(|e| {
            // The toml crate's message is multi-line (the line, a caret, the reason); keep its lines,
            // escaping each.
            let text = e
                .to_string()
                .trim()
                .lines()
                .map(escape)
                .collect::<Vec<_>>()
                .join("\n");
            Error::bad_data(format!("invalid mapping file:\n{text}")).file(file)
        })?;
        let fam =
            super::loader::compile(spec, file, self, clash_check).map_err(|e| e.file(file))?;
        let name = fam.name.clone();
        self.families.push(fam);
        Ok(name)
    }

    /// A family by name.
    pub fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Look a family up by name; an unknown name is a usage error listing the known families.
    pub fn require(&self, name: &str) -> Result<&Family> {
        self.get(name).ok_or_else(|| {
            let known: Vec<String> = self.families.iter().map(|f| f.name.clone()).collect();
            Error::usage(format!("unknown family `{}`", escape(name)))
                .hint(format!("known families: {}", known.join(", ")))
                .cause(crate::error::Cause::UnknownFamily {
                    name: name.to_string(),
                    known,
                })
        })
    }

    /// Every family, built-in first, in load order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }
}
