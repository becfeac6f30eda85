//! A family's `[math]` table: the computation its checkpoints mean, beyond their names, and which
//! config keys that computation reads. Resolving it against a checkpoint's config gives the
//! [`Math`] switches the reference forward pass runs with.
//!
//! The principle is "never assume": a config key that no family-independent list calls neutral and
//! that the family does not model (Granite's multipliers read as LLaMA, SmolLM3's `no_rope_layers`,
//! a `partial_rotary_factor`, ...) is an [`Unmodelled`] key, and every command that relies on the
//! family's math refuses while one remains, naming the key, unless the user asserts the family.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use serde::Deserialize;
use serde_json::Value;

use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result, escape};
use crate::reference::math::{Activation, Math, NormKind, NormPlacement, QkNorm, RopeLayout};

/// A number in a `[math]` table: a literal, `"sqrt_hidden"`, or read from a config key.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A fixed value.
    Literal(f64),
    /// `sqrt(hidden_size)` (Gemma's embedding normaliser).
    SqrtHidden,
    /// The config's `key`, or `default` when absent or null (no default: the family's fallback).
    Key {
        /// Config key.
        key: String,
        /// Value when the key is absent or null.
        default: Option<f64>,
        /// The value used is `value ^ power` (Gemma 2's attention scale is
        /// `query_pre_attn_scalar ^ -0.5`); 1 when absent.
        power: Option<f64>,
    },
}

/// A string in a `[math]` table: a literal or read from a config key.
#[derive(Debug, Clone, PartialEq)]
pub enum Word {
    /// A fixed value.
    Literal(String),
    /// The config's `key`, or `default` when absent or null.
    Key {
        /// Config key.
        key: String,
        /// Value when the key is absent or null.
        default: String,
        /// A key another generation of the class's code reads instead (absent or null: the same
        /// `default`): when the two name different values, loaders disagree and nothing computes.
        other_key: Option<String>,
        /// Values of `key` that generations of the class's code read as different functions
        /// (Gemma's legacy `"gelu"`): refused, naming the value.
        ambiguous: Vec<String>,
    },
}

/// How the family turns sliding-window keys into per-layer windows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowSpec {
    /// Key holding the window span (`sliding_window`).
    pub key: String,
    /// Boolean key that switches the window off when false (`use_sliding_window`).
    pub switch: Option<String>,
    /// Per-layer list key (`layer_types`: `"sliding_attention"` / `"full_attention"`).
    pub layer_types: Option<String>,
    /// Qwen2's `max_window_layers`: layers at or above it use the window.
    pub max_window_layers: Option<String>,
    /// Without a `layer_types` list (absent or null), even layers (0, 2, ...) use the window and
    /// odd ones attend fully: Gemma 2's class default (`is_sliding = not layer_idx % 2` in
    /// transformers 4.44, the default `layer_types` since).
    pub alternate: bool,
}

/// Which layers apply rotary embeddings: a per-layer list in the config (1 = rotary, 0 = none), or,
/// when the list is absent, every layer but each `interval`-th (SmolLM3's rule).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeLayersSpec {
    /// Config key of the per-layer list.
    pub key: String,
    /// Config key of the interval used when the list is absent.
    pub interval_key: Option<String>,
    /// The interval when that key is absent too.
    pub interval_default: Option<usize>,
}

/// A part of the computation a boolean config key switches on (StableLM's `qk_layernorm`,
/// `use_parallel_residual`; Cohere's `use_qk_norm`): absent or false, the table's own value holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WhenSpec {
    /// The boolean config key (false when the config leaves it out, as every class defaults it).
    pub key: String,
    /// The q/k norms when the key is true.
    pub qk_norm: Option<QkNorm>,
    /// The norm placement when the key is true.
    pub placement: Option<NormPlacement>,
}

/// A family's compiled `[math]` table (inherited field by field from its base).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MathSpec {
    /// Rotary layout of the canonical q/k rows (`half` when absent).
    pub rope: Option<RopeLayout>,
    /// Which layers apply the rotary embedding (SmolLM3 `no_rope_layers`).
    pub rope_layers: Option<RopeLayersSpec>,
    /// Fraction of each head that rotates.
    pub partial_rotary: Option<Scalar>,
    /// Norm kind.
    pub norm: Option<NormKind>,
    /// Norm weight offset.
    pub norm_offset: Option<f64>,
    /// LayerNorm weights come with biases.
    pub norm_bias: Option<bool>,
    /// Attention-score soft-cap (Gemma 2 `attn_logit_softcapping`).
    pub attn_softcap: Option<Scalar>,
    /// Final-logit soft-cap (Gemma 2 `final_logit_softcapping`).
    pub final_softcap: Option<Scalar>,
    /// Norm placement.
    pub placement: Option<NormPlacement>,
    /// Query/key norms.
    pub qk_norm: Option<QkNorm>,
    /// Activation name (an `ACT2FN` name).
    pub activation: Option<Word>,
    /// Embedding multiplier.
    pub embedding_scale: Option<Scalar>,
    /// Residual multiplier.
    pub residual_scale: Option<Scalar>,
    /// Attention scale (replaces `head_dim ** -0.5`).
    pub attention_scale: Option<Scalar>,
    /// Logits divisor.
    pub logits_divisor: Option<Scalar>,
    /// NormHead.
    pub norm_head: Option<bool>,
    /// Sliding window.
    pub sliding_window: Option<WindowSpec>,
    /// Parts switched on by boolean config keys, applied in order after the fields above.
    pub when: Vec<WhenSpec>,
    /// Other config keys the family reads or knows to be neutral for its computation.
    pub keys: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The TOML as written.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MathFile {
    #[serde(default)]
    rope: Option<String>,
    #[serde(default)]
    rope_layers: Option<RopeLayersFile>,
    #[serde(default)]
    partial_rotary: Option<ScalarFile>,
    #[serde(default)]
    norm: Option<String>,
    #[serde(default)]
    norm_offset: Option<f64>,
    #[serde(default)]
    norm_bias: Option<bool>,
    #[serde(default)]
    attn_softcap: Option<ScalarFile>,
    #[serde(default)]
    final_softcap: Option<ScalarFile>,
    #[serde(default)]
    placement: Option<String>,
    #[serde(default)]
    qk_norm: Option<String>,
    #[serde(default)]
    activation: Option<WordFile>,
    #[serde(default)]
    embedding_scale: Option<ScalarFile>,
    #[serde(default)]
    residual_scale: Option<ScalarFile>,
    #[serde(default)]
    attention_scale: Option<ScalarFile>,
    #[serde(default)]
    logits_divisor: Option<ScalarFile>,
    #[serde(default)]
    norm_head: Option<bool>,
    #[serde(default)]
    sliding_window: Option<WindowFile>,
    #[serde(default)]
    when: Vec<WhenFile>,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenFile {
    key: String,
    #[serde(default)]
    qk_norm: Option<String>,
    #[serde(default)]
    placement: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RopeLayersFile {
    key: String,
    #[serde(default)]
    interval_key: Option<String>,
    #[serde(default)]
    interval_default: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScalarFile {
    Number(f64),
    Word(String),
    Key {
        key: String,
        #[serde(default)]
        default: Option<f64>,
        #[serde(default)]
        power: Option<f64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WordFile {
    Word(String),
    Key {
        key: String,
        default: String,
        #[serde(default)]
        other_key: Option<String>,
        #[serde(default)]
        ambiguous: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    key: String,
    #[serde(default)]
    switch: Option<String>,
    #[serde(default)]
    layer_types: Option<String>,
    #[serde(default)]
    max_window_layers: Option<String>,
    #[serde(default)]
    alternate: bool,
}

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::bad_data(format!("[math] {field}: {msg}"))
}

fn scalar(field: &str, s: ScalarFile) -> Result<Scalar> {
    Ok(match s {
        ScalarFile::Number(n) if n.is_finite() => Scalar::Literal(n),
        ScalarFile::Number(n) => return Err(bad(field, format!("{n} is not a finite number"))),
        ScalarFile::Word(w) if w == "sqrt_hidden" => Scalar::SqrtHidden,
        ScalarFile::Word(w) => {
            return Err(bad(
                field,
                format!(
                    "`{}`: use a number, \"sqrt_hidden\" or {{ key = \"config_key\", default = number }}",
                    escape(&w)
                ),
            ));
        }
        ScalarFile::Key {
            key,
            default,
            power,
        } => Scalar::Key {
            key,
            default,
            power,
        },
    })
}

fn one_of<T: Copy>(field: &str, value: &str, options: &[(&str, T)]) -> Result<T> {
    options
        .iter()
        .find(|(n, _)| *n == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            bad(
                field,
                format!("`{}` is not one of {}", escape(value), names.join(", ")),
            )
        })
}

impl MathFile {
    pub(crate) fn compile(self) -> Result<MathSpec> {
        let rope = self
            .rope
            .map(|r| {
                one_of(
                    "rope",
                    &r,
                    &[
                        ("half", RopeLayout::Half),
                        ("interleaved", RopeLayout::Interleaved),
                    ],
                )
            })
            .transpose()?;
        let norm = self
            .norm
            .map(|n| {
                one_of(
                    "norm",
                    &n,
                    &[("rms", NormKind::Rms), ("layernorm", NormKind::LayerNorm)],
                )
            })
            .transpose()?;
        let placement = |p: Option<String>| {
            p.map(|p| {
                one_of(
                    "placement",
                    &p,
                    &[
                        ("pre", NormPlacement::Pre),
                        ("post", NormPlacement::Post),
                        ("sandwich", NormPlacement::Sandwich),
                        ("parallel", NormPlacement::Parallel),
                    ],
                )
            })
            .transpose()
        };
        let qk_norm = |q: Option<String>| {
            q.map(|q| {
                one_of(
                    "qk_norm",
                    &q,
                    &[
                        ("none", QkNorm::None),
                        ("head", QkNorm::PerHead),
                        ("heads", QkNorm::Heads),
                        ("full", QkNorm::Full),
                    ],
                )
            })
            .transpose()
        };
        let when = self
            .when
            .into_iter()
            .map(|w| {
                if w.qk_norm.is_none() && w.placement.is_none() {
                    return Err(bad(
                        "when",
                        format!("`{}` switches nothing on", escape(&w.key)),
                    ));
                }
                Ok(WhenSpec {
                    key: w.key,
                    qk_norm: qk_norm(w.qk_norm)?,
                    placement: placement(w.placement)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let placement = placement(self.placement)?;
        let qk_norm = qk_norm(self.qk_norm)?;
        let activation = match self.activation {
            None => None,
            Some(WordFile::Word(w)) => {
                if Activation::parse(&w).is_none() {
                    return Err(bad(
                        "activation",
                        format!(
                            "`{}` is not an activation the reference implements (silu, gelu_pytorch_tanh, gelu)",
                            escape(&w)
                        ),
                    ));
                }
                Some(Word::Literal(w))
            }
            Some(WordFile::Key {
                key,
                default,
                other_key,
                ambiguous,
            }) => Some(Word::Key {
                key,
                default,
                other_key,
                ambiguous,
            }),
        };
        if let Some(o) = self.norm_offset
            && !o.is_finite()
        {
            return Err(bad("norm_offset", "must be a finite number"));
        }
        Ok(MathSpec {
            rope,
            rope_layers: self.rope_layers.map(|r| RopeLayersSpec {
                key: r.key,
                interval_key: r.interval_key,
                interval_default: r.interval_default,
            }),
            partial_rotary: self
                .partial_rotary
                .map(|s| scalar("partial_rotary", s))
                .transpose()?,
            norm,
            norm_offset: self.norm_offset,
            norm_bias: self.norm_bias,
            attn_softcap: self
                .attn_softcap
                .map(|s| scalar("attn_softcap", s))
                .transpose()?,
            final_softcap: self
                .final_softcap
                .map(|s| scalar("final_softcap", s))
                .transpose()?,
            placement,
            qk_norm,
            activation,
            embedding_scale: self
                .embedding_scale
                .map(|s| scalar("embedding_scale", s))
                .transpose()?,
            residual_scale: self
                .residual_scale
                .map(|s| scalar("residual_scale", s))
                .transpose()?,
            attention_scale: self
                .attention_scale
                .map(|s| scalar("attention_scale", s))
                .transpose()?,
            logits_divisor: self
                .logits_divisor
                .map(|s| scalar("logits_divisor", s))
                .transpose()?,
            norm_head: self.norm_head,
            sliding_window: self.sliding_window.map(|w| WindowSpec {
                key: w.key,
                switch: w.switch,
                layer_types: w.layer_types,
                max_window_layers: w.max_window_layers,
                alternate: w.alternate,
            }),
            when,
            keys: self.keys,
        })
    }
}

impl MathSpec {
    /// Fill every field this table leaves unset from `base` (a child family inherits its base's
    /// computation unless it says otherwise); `keys` are merged.
    pub fn inherit(&mut self, base: &MathSpec) {
        macro_rules! take {
            ($($f:ident),*) => {$( if self.$f.is_none() { self.$f = base.$f.clone(); } )*};
        }
        take!(
            rope,
            rope_layers,
            partial_rotary,
            norm,
            norm_offset,
            norm_bias,
            attn_softcap,
            final_softcap,
            placement,
            qk_norm,
            activation,
            embedding_scale,
            residual_scale,
            attention_scale,
            logits_divisor,
            norm_head,
            sliding_window
        );
        if self.when.is_empty() {
            self.when = base.when.clone();
        }
        for k in &base.keys {
            if !self.keys.contains(k) {
                self.keys.push(k.clone());
            }
        }
    }

    /// Every config key this table reads.
    pub fn read_keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        if let Some(r) = &self.rope_layers {
            out.push(&r.key);
            out.extend(r.interval_key.as_deref());
        }
        for s in [
            &self.partial_rotary,
            &self.attn_softcap,
            &self.final_softcap,
            &self.embedding_scale,
            &self.residual_scale,
            &self.attention_scale,
            &self.logits_divisor,
        ]
        .into_iter()
        .flatten()
        {
            if let Scalar::Key { key, .. } = s {
                out.push(key);
            }
        }
        if let Some(Word::Key { key, other_key, .. }) = &self.activation {
            out.push(key);
            out.extend(other_key.as_deref());
        }
        if let Some(w) = &self.sliding_window {
            out.push(&w.key);
            out.extend(w.switch.as_deref());
            out.extend(w.layer_types.as_deref());
            out.extend(w.max_window_layers.as_deref());
        }
        out.extend(self.when.iter().map(|w| w.key.as_str()));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Keys every family may carry without changing the computation.
// ---------------------------------------------------------------------------------------------

/// Config keys that never change what a causal LM computes at inference in f32: identity and
/// bookkeeping, token ids, generation defaults, training-only settings (dropout, initialisation),
/// and the hyperparameters the reference reads for every family (sizes, eps, rotary settings, which
/// the reference itself validates and refuses when it cannot run them).
pub const NEUTRAL_KEYS: &[&str] = &[
    // identity and bookkeeping
    "model_type",
    "architectures",
    "auto_map",
    "_name_or_path",
    "transformers_version",
    // the weights file `from_pretrained` reads (check's W002 judges the name)
    "transformers_weights",
    "torch_dtype",
    "dtype",
    "use_bfloat16",
    "torchscript",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "use_return_dict",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "cross_attention_hidden_size",
    "chunk_size_feed_forward",
    "pruned_heads",
    "tf_legacy_loss",
    "finetuning_task",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "prefix",
    "task_specific_params",
    "tokenizer_class",
    "_attn_implementation_autoset",
    "attn_implementation",
    "use_cache",
    "use_flash_attn",
    "_flash_attn_2_enabled",
    "gradient_checkpointing",
    // token ids
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    // generation defaults (they choose tokens, they do not change logits)
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    // training only (losses, initialisation) and length hints that do not change a logit
    "z_loss_weight",
    "model_max_length",
    "max_sequence_length",
    "initializer_range",
    "initializer_factor",
    "pretraining_tp",
    // sizes and settings the reference reads (and validates) for every family
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "hidden_act",
];

/// True when `key` cannot change the computation whatever its value: listed in [`NEUTRAL_KEYS`], a
/// dropout probability (a no-op at inference), or a token id.
pub fn is_neutral_key(key: &str) -> bool {
    NEUTRAL_KEYS.contains(&key)
        || key.ends_with("dropout")
        || key.ends_with("_pdrop")
        || key.ends_with("dropout_prob")
        || key.ends_with("_token_id")
        || key.ends_with("_token_ids")
}

/// True when a value of an unknown key switches nothing on: `null`, `false`, an empty list or map.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A config key present in the checkpoint that the family does not model: the family's math may
/// not be what the checkpoint computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmodelled {
    /// The key.
    pub key: String,
    /// Its value, as compact JSON (escaped, truncated).
    pub value: String,
}

impl std::fmt::Display for Unmodelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` = {}", escape(&self.key), self.value)
    }
}

/// The keys of `cfg` that neither [`is_neutral_key`] nor the family (`understood`: the keys its
/// `[math]` reads, its `keys` list, its `[config]` renames, drops and defaults) accounts for, with a
/// value that switches something on.
pub fn unmodelled_keys(cfg: &ModelConfig, understood: &[&str]) -> Vec<Unmodelled> {
    // transformers 5 writes `partial_rotary_factor` inside `rope_parameters` (which every family
    // reads for its rotary base and scaling): it is judged as the top-level key is. At either
    // place 1.0 (Phi-3's default, written by every save of transformers 4 at the top level and of
    // 5 in `rope_parameters`) rotates whole heads, which every family does: it changes nothing.
    let whole_heads = |k: &str, v: &Value| k == "partial_rotary_factor" && v.as_f64() == Some(1.0);
    let nested = cfg
        .get("rope_parameters")
        .and_then(|p| p.get("partial_rotary_factor"))
        .filter(|v| !understood.contains(&"partial_rotary_factor") && !is_off(v))
        .filter(|v| !whole_heads("partial_rotary_factor", v))
        .map(|v| ("rope_parameters.partial_rotary_factor".to_string(), v));
    // Rotary parameters per layer type (`{"full_attention": {...}, "sliding_attention": {...}}`, as
    // Gemma 3 saves them): no family reads that shape, and read flat it would give every layer the
    // default base. Each such entry is named so that nothing computes with it.
    let per_layer_type = cfg
        .get("rope_parameters")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_object())
        .map(|(k, v)| (format!("rope_parameters.{k}"), v));
    cfg.raw
        .iter()
        .filter(|(k, v)| {
            !is_neutral_key(k)
                && !understood.contains(&k.as_str())
                && !is_off(v)
                && !whole_heads(k, v)
        })
        .map(|(k, v)| (k.clone(), v))
        .chain(nested)
        .chain(per_layer_type)
        .map(|(k, v)| {
            // Compact JSON, with non-finite tokens shown as the file spelled them.
            let mut value = compact_json(&crate::json::to_string_pretty_nonfinite(v));
            if value.chars().count() > 60 {
                value = value.chars().take(57).collect::<String>() + "...";
            }
            Unmodelled {
                key: k,
                value: crate::error::escape_json_text(&value),
            }
        })
        .collect()
}

/// JSON text without the whitespace between tokens; the spaces inside strings are kept.
fn compact_json(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::with_capacity(text.len()), false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Resolution.
// ---------------------------------------------------------------------------------------------

/// A config key at the top level, else, for the rotary keys transformers 5 moves into
/// `rope_parameters` (`rope_theta`, `partial_rotary_factor`), there; a top-level null gives way to
/// a value there, as transformers 5 reads it (two values that differ are refused before this:
/// `ModelConfig::rope_conflict`). Other keys in `rope_parameters` (a multiplier) are read by no
/// class, which warns about them and computes without.
pub(crate) fn lookup<'c>(cfg: &'c ModelConfig, key: &str) -> Option<&'c Value> {
    let nested = cfg
        .get("rope_parameters")
        .filter(|_| matches!(key, "rope_theta" | "partial_rotary_factor"))
        .and_then(|p| p.get(key))
        .filter(|v| !v.is_null());
    match cfg.get(key) {
        Some(Value::Null) => nested.or(Some(&Value::Null)),
        Some(v) => Some(v),
        None => nested,
    }
}

fn key_number(cfg: &ModelConfig, key: &str) -> Result<Option<f64>> {
    match lookup(cfg, key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| {
                Error::bad_data(format!(
                    "config key `{}` must be a finite number, found {}",
                    escape(key),
                    crate::error::escape_value(v)
                ))
            }),
    }
}

fn number(cfg: &ModelConfig, s: &Scalar, hidden: usize, fallback: f64) -> Result<f64> {
    match s {
        Scalar::Literal(x) => Ok(*x),
        #[allow(clippy::cast_precision_loss)]
        Scalar::SqrtHidden => Ok((hidden as f64).sqrt()),
        // Not a switch that null turns off (soft-caps read null as off before this): a
        // multiplier, scale or rotary fraction the class multiplies by, which None breaks.
        Scalar::Key { key, .. } if matches!(lookup(cfg, key), Some(Value::Null)) => {
            Err(crate::reference::config::null_key(key))
        }
        Scalar::Key {
            key,
            default,
            power,
        } => match (key_number(cfg, key)?, power) {
            (Some(v), Some(p)) => Ok(v.powf(*p)),
            (Some(v), None) => Ok(v),
            (None, _) => Ok(default.unwrap_or(fallback)),
        },
    }
}

fn key_usize(cfg: &ModelConfig, key: &str) -> Result<Option<usize>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::bad_data(format!(
                    "config key `{}` must be a non-negative integer, found {}",
                    escape(key),
                    crate::error::escape_value(v)
                ))
            }),
    }
}

/// Most decoder layers a config may claim: the per-layer switches are sized by it before any
/// tensor is checked, so a config claiming 10^9 layers must not allocate gigabytes (the largest
/// published models have a few hundred).
pub const MAX_LAYERS: usize = 1 << 14;

/// The dimensions the resolution needs.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// `hidden_size`.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `head_dim`.
    pub head_dim: usize,
}

/// Resolve a family's `[math]` against a checkpoint's own (family-side) config.
pub fn resolve(spec: &MathSpec, cfg: &ModelConfig, d: Dims) -> Result<Math> {
    if d.layers > MAX_LAYERS {
        return Err(Error::bad_data(format!(
            "`num_hidden_layers` is {}, over the limit of {MAX_LAYERS}",
            d.layers
        )));
    }
    let mut m = Math::llama(d.layers, d.head_dim);
    if let Some(r) = spec.rope {
        m.rope = r;
    }
    if let Some(RopeLayersSpec {
        key,
        interval_key,
        interval_default,
    }) = &spec.rope_layers
    {
        match cfg.get(key) {
            None | Some(Value::Null) => {
                let interval = match interval_key {
                    Some(k) => key_usize(cfg, k)?.or(*interval_default),
                    None => *interval_default,
                };
                if let Some(n) = interval {
                    if n == 0 {
                        return Err(Error::bad_data("the no-rotary layer interval is 0"));
                    }
                    for (i, slot) in m.rope_layers.iter_mut().enumerate() {
                        *slot = i.checked_add(1).is_none_or(|x| !x.is_multiple_of(n));
                    }
                }
            }
            Some(Value::Array(list)) => {
                if list.len() != d.layers {
                    return Err(Error::bad_data(format!(
                        "config key `{}` lists {} layers but the model has {}",
                        escape(key),
                        list.len(),
                        d.layers
                    )));
                }
                for (slot, v) in m.rope_layers.iter_mut().zip(list) {
                    *slot = match v.as_u64() {
                        Some(1) => true,
                        Some(0) => false,
                        _ => {
                            return Err(Error::bad_data(format!(
                                "config key `{}` must list 0 (no rotary) or 1 (rotary) per layer, found {}",
                                escape(key),
                                crate::error::escape_value(v)
                            )));
                        }
                    };
                }
            }
            Some(other) => {
                return Err(Error::bad_data(format!(
                    "config key `{}` must be a list, found {}",
                    escape(key),
                    crate::error::escape_value(other)
                )));
            }
        }
    }
    if let Some(p) = &spec.partial_rotary {
        let f = number(cfg, p, d.hidden, 1.0)?;
        if !(f > 0.0 && f <= 1.0) {
            return Err(Error::bad_data(format!(
                "partial rotary factor {f} must be in (0, 1]"
            )));
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let dim = (d.head_dim as f64 * f) as usize;
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(Error::unsupported(format!(
                "partial rotary factor {f} gives {dim} rotary dimensions of {}; the reference needs an even, non-zero number",
                d.head_dim
            )));
        }
        m.rotary_dim = dim;
    }
    if let Some(n) = spec.norm {
        m.norm = n;
    }
    if let Some(o) = spec.norm_offset {
        #[allow(clippy::cast_possible_truncation)]
        {
            m.norm_offset = o as f32;
        }
    }
    if let Some(b) = spec.norm_bias {
        m.norm_bias = b;
    }
    if let Some(p) = spec.placement {
        m.placement = p;
    }
    #[allow(clippy::cast_possible_truncation)]
    let cap = |s: &Option<Scalar>| -> Result<Option<f32>> {
        match s {
            None => Ok(None),
            Some(Scalar::Key { key, .. }) if key_number(cfg, key)?.is_none() => Ok(None),
            Some(s) => {
                let v = number(cfg, s, d.hidden, 0.0)?;
                if v <= 0.0 {
                    return Err(Error::bad_data(format!(
                        "a soft-cap must be positive, found {v}"
                    )));
                }
                Ok(Some(v as f32))
            }
        }
    };
    m.attn_logit_softcap = cap(&spec.attn_softcap)?;
    m.final_logit_softcap = cap(&spec.final_softcap)?;
    if let Some(q) = spec.qk_norm {
        m.qk_norm = q;
    }
    for w in &spec.when {
        let on = match cfg.get(&w.key) {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(Value::Null) => return Err(null_switch(&w.key)),
            Some(other) => {
                return Err(Error::bad_data(format!(
                    "config key `{}` must be true or false, found {}",
                    escape(&w.key),
                    crate::error::escape_value(other)
                )));
            }
        };
        if on {
            m.qk_norm = w.qk_norm.unwrap_or(m.qk_norm);
            m.placement = w.placement.unwrap_or(m.placement);
        }
    }
    // A family that says nothing reads `hidden_act` like every transformers class does.
    let default_act = Word::Key {
        key: "hidden_act".into(),
        default: "silu".into(),
        other_key: None,
        ambiguous: Vec::new(),
    };
    {
        let a = spec.activation.as_ref().unwrap_or(&default_act);
        let read = |key: &String, default: &String| match cfg.get(key) {
            None | Some(Value::Null) => Ok(default.clone()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(Error::bad_data(format!(
                "config key `{}` must be an activation name, found {}",
                escape(key),
                crate::error::escape_value(other)
            ))),
        };
        let (name, key) = match a {
            Word::Literal(w) => (w.clone(), None),
            Word::Key {
                key,
                default,
                other_key,
                ambiguous,
            } => {
                // The class's own activation key set to null: ACT2FN[None] raises.
                if matches!(cfg.get(key), Some(Value::Null)) {
                    return Err(crate::reference::config::null_key(key));
                }
                let name = read(key, default)?;
                if ambiguous.contains(&name) {
                    return Err(Error::unsupported(format!(
                        "config key `{}` is `{}`, which generations of the class's transformers code read as different activations; the loaders disagree, so ckpt does not pick one (write the one meant under a name all read alike, such as `gelu_pytorch_tanh`)",
                        escape(key),
                        escape(&name)
                    )));
                }
                if let Some(o) = other_key {
                    let theirs = read(o, default)?;
                    if Activation::parse(&theirs) != Activation::parse(&name) {
                        return Err(Error::unsupported(format!(
                            "config keys `{}` (`{}`) and `{}` (`{}`) name different activations, and generations of the class's transformers code read different ones of the two; the loaders disagree, so ckpt does not pick one",
                            escape(key),
                            escape(&name),
                            escape(o),
                            escape(&theirs)
                        )));
                    }
                }
                (name, Some(key))
            }
        };
        m.activation = Activation::parse(&name).ok_or_else(|| {
            Error::unsupported(format!(
                "{} is `{}`: the reference implements silu, gelu_pytorch_tanh (gelu_new, gelu_fast) and gelu",
                key.map(|k| format!("config key `{}`", escape(k)))
                    .unwrap_or_else(|| "the family's activation".into()),
                escape(&name)
            ))
        })?;
    }
    #[allow(clippy::cast_possible_truncation)]
    let f32_of = |x: f64| x as f32;
    if let Some(s) = &spec.embedding_scale {
        m.embedding_scale = f32_of(number(cfg, s, d.hidden, 1.0)?);
    }
    if let Some(s) = &spec.residual_scale {
        m.residual_scale = f32_of(number(cfg, s, d.hidden, 1.0)?);
    }
    if let Some(s) = &spec.attention_scale {
        let llama = f64::from(m.attention_scale);
        m.attention_scale = f32_of(number(cfg, s, d.hidden, llama)?);
    }
    if let Some(s) = &spec.logits_divisor {
        let x = number(cfg, s, d.hidden, 1.0)?;
        if x == 0.0 {
            return Err(Error::bad_data(
                "the logits divisor (`logits_scaling`) is 0",
            ));
        }
        m.logits_divisor = f32_of(x);
    }
    if let Some(n) = spec.norm_head {
        m.norm_head = n;
    }
    if let Some(w) = &spec.sliding_window {
        m.sliding_window = windows(cfg, w, d.layers)?;
    }
    Ok(m)
}

fn windows(cfg: &ModelConfig, w: &WindowSpec, layers: usize) -> Result<Vec<Option<usize>>> {
    let none = vec![None; layers];
    let Some(span) = key_usize(cfg, &w.key)? else {
        // A null span with layers that slide (listed, or Gemma 2's alternating default):
        // transformers computes the window with None and raises.
        let listed = w
            .layer_types
            .as_deref()
            .and_then(|lt| cfg.get(lt))
            .filter(|v| !v.is_null());
        let slides = match listed {
            Some(v) => v
                .as_array()
                .is_some_and(|l| l.iter().any(|t| t.as_str() == Some("sliding_attention"))),
            None => w.alternate,
        };
        if matches!(cfg.get(&w.key), Some(Value::Null)) && slides {
            return Err(crate::reference::config::null_key(&w.key));
        }
        return Ok(none);
    };
    if span == 0 {
        return Err(Error::bad_data(format!(
            "config key `{}` is 0: a window must hold at least one token",
            escape(&w.key)
        )));
    }
    if let Some(s) = &w.switch
        && matches!(cfg.get(s), Some(Value::Bool(false)))
    {
        // The window is off, yet the per-layer list names sliding layers: transformers since 4.57
        // builds those layers' masks with no window and raises (4.44 ignored the list).
        if let Some(lt) = &w.layer_types
            && cfg
                .get(lt)
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|t| t.as_str() == Some("sliding_attention")))
        {
            return Err(Error::unsupported(format!(
                "config key `{}` lists sliding_attention layers while `{}` is false (or absent: its class's default), so they have no window: transformers cannot build their masks; make the two agree",
                escape(lt),
                escape(s)
            )));
        }
        return Ok(none);
    }
    if let Some(lt) = &w.layer_types
        && let Some(v) = cfg.get(lt)
        && !v.is_null()
    {
        let list = v.as_array().filter(|l| l.len() == layers).ok_or_else(|| {
            Error::bad_data(format!(
                "config key `{}` must list one attention type per layer ({layers})",
                escape(lt)
            ))
        })?;
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(Some(span)),
                Some("full_attention") => Ok(None),
                _ => Err(Error::unsupported(format!(
                    "config key `{}` names attention type {}; the reference knows full_attention and sliding_attention",
                    escape(lt),
                    crate::error::escape_value(t)
                ))),
            })
            .collect();
    }
    if w.alternate {
        return Ok((0..layers).map(|i| (i % 2 == 0).then_some(span)).collect());
    }
    if let Some(mk) = &w.max_window_layers
        && let Some(first) = key_usize(cfg, mk)?
    {
        // Qwen2 (transformers 4): layers with index >= max_window_layers use the window.
        return Ok((0..layers).map(|i| (i >= first).then_some(span)).collect());
    }
    Ok(vec![Some(span); layers])
}

/// What a conversion from one computation to another needs, in three lists of plain sentences.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bridge {
    /// Arithmetic on weights that reproduces the source's computation in the target's (not
    /// bit-exact; the result is verified on logits under a stated tolerance).
    pub value: Vec<String>,
    /// Behaviour the target loses, stated exactly (a sliding window, NoPE layers): done only when
    /// the user allows it.
    pub lossy: Vec<String>,
    /// Computation the target cannot express at all (q/k norms, another activation, norms that
    /// sit elsewhere): never converted.
    pub impossible: Vec<String>,
}

/// The class of a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversionClass {
    /// Gathers only: bit-identical.
    Exact,
    /// Arithmetic on weights: announced and logits-verified.
    Value,
    /// Loses behaviour: refused unless allowed.
    Lossy,
    /// Cannot be expressed: refused.
    Impossible,
}

impl ConversionClass {
    /// Lower-case word for reports.
    pub fn word(self) -> &'static str {
        match self {
            ConversionClass::Exact => "exact",
            ConversionClass::Value => "value",
            ConversionClass::Lossy => "lossy",
            ConversionClass::Impossible => "impossible",
        }
    }
}

impl Bridge {
    /// The worst class among the steps.
    pub fn class(&self) -> ConversionClass {
        if !self.impossible.is_empty() {
            ConversionClass::Impossible
        } else if !self.lossy.is_empty() {
            ConversionClass::Lossy
        } else if !self.value.is_empty() {
            ConversionClass::Value
        } else {
            ConversionClass::Exact
        }
    }
}

/// Compare a source computation with a target's and say what a conversion needs. Value steps are
/// the ones `mapping::fold` applies: embedding, residual, attention and logits multipliers, and
/// NormHead (towards a target without them).
pub fn bridge(from: &Math, to: &Math) -> Bridge {
    let mut b = Bridge::default();
    if from.rope != to.rope {
        b.impossible.push(format!(
            "rotary pairs are laid out {:?} in the source and {:?} in the target, and the family's rules do not permute them",
            from.rope, to.rope
        ));
    }
    let nope: Vec<usize> = from
        .rope_layers
        .iter()
        .zip(&to.rope_layers)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    if !nope.is_empty() {
        b.lossy.push(format!(
            "layers {nope:?} apply no rotary embedding (NoPE) in the source; the target rotates every layer, so every output changes"
        ));
    }
    if from.rotary_dim != to.rotary_dim {
        b.impossible.push(format!(
            "{} dimensions of each head rotate in the source, {} in the target",
            from.rotary_dim, to.rotary_dim
        ));
    }
    if from.norm != to.norm || from.placement != to.placement {
        b.impossible
            .push("the norms are of another kind or sit elsewhere in the block".into());
    }
    if from.norm_offset != to.norm_offset {
        b.impossible.push(format!(
            "norms multiply by ({} + w) in the source and ({} + w) in the target",
            from.norm_offset, to.norm_offset
        ));
    }
    if from.norm_bias != to.norm_bias {
        b.impossible
            .push("norms carry biases in one and not the other".into());
    }
    if from.attn_logit_softcap != to.attn_logit_softcap
        || from.final_logit_softcap != to.final_logit_softcap
    {
        b.impossible
            .push("attention scores or logits are soft-capped (cap * tanh(x / cap))".into());
    }
    if from.qk_norm != to.qk_norm {
        b.impossible
            .push("queries and keys are normalised differently (q_norm / k_norm)".into());
    }
    if from.activation != to.activation {
        b.impossible.push(format!(
            "the MLP activation is {:?} in the source and {:?} in the target",
            from.activation, to.activation
        ));
    }
    let windows: Vec<String> = from
        .sliding_window
        .iter()
        .zip(&to.sliding_window)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, _))| match a {
            Some(w) => format!("layer {i}: window {w}"),
            None => format!("layer {i}: full attention"),
        })
        .collect();
    if !windows.is_empty() {
        let narrowest = from
            .sliding_window
            .iter()
            .chain(&to.sliding_window)
            .flatten()
            .min();
        b.lossy.push(match narrowest {
            Some(w) => format!(
                "the source's attention windows ({}) are not the target's: the two agree exactly only for inputs of up to {w} tokens",
                windows.join(", ")
            ),
            None => format!("attention windows differ ({})", windows.join(", ")),
        });
    }
    if from.embedding_scale != to.embedding_scale {
        b.value.push(format!(
            "token embeddings multiplied by {}",
            from.embedding_scale / to.embedding_scale
        ));
    }
    if from.residual_scale != to.residual_scale {
        b.value.push(format!(
            "o_proj and down_proj multiplied by {} (residual multiplier)",
            from.residual_scale / to.residual_scale
        ));
    }
    if from.attention_scale != to.attention_scale {
        b.value.push(format!(
            "q_proj multiplied by {} (attention scale {} instead of {})",
            from.attention_scale / to.attention_scale,
            from.attention_scale,
            to.attention_scale
        ));
    }
    if from.logits_divisor != to.logits_divisor {
        b.value.push(format!(
            "lm_head divided by {} (logits divisor)",
            from.logits_divisor / to.logits_divisor
        ));
    }
    if from.norm_head && !to.norm_head {
        b.value
            .push("lm_head rows L2-normalised (NormHead folded into the weights)".into());
    }
    if !from.norm_head && to.norm_head {
        b.impossible
            .push("the target normalises lm_head rows (NormHead); the source does not".into());
    }
    b
}

/// A family's computation for one checkpoint: the resolved switches, or why they cannot be known,
/// and the config keys the family does not model.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The switches, or the reason they cannot be resolved (no config, a bad value, an
    /// activation the reference does not implement, ...).
    pub math: std::result::Result<Math, String>,
    /// Config keys that may change the computation and that the family does not model.
    pub unmodelled: Vec<Unmodelled>,
}

impl Resolved {
    /// The math when it is known and nothing in the config is left unmodelled (or the user
    /// asserted the family); otherwise the reason, ready for an error message.
    pub fn usable(&self, family: &str, asserted: bool) -> std::result::Result<&Math, String> {
        let m = self.math.as_ref().map_err(Clone::clone)?;
        if !asserted && !self.unmodelled.is_empty() {
            return Err(format!(
                "the config has {} that family `{family}` does not model, so its computation is not known: {}",
                if self.unmodelled.len() == 1 {
                    "a key"
                } else {
                    "keys"
                },
                self.unmodelled
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(m)
    }
}

/// Every config key a family accounts for: the keys its `[math]` reads or lists, and the keys its
/// `[config]` table renames, drops or defaults.
pub fn understood_keys(fam: &crate::mapping::Family) -> Vec<&str> {
    let mut keys = fam.math.read_keys();
    for (k, v) in &fam.config.rename {
        keys.push(k);
        keys.push(v);
    }
    keys.extend(fam.config.drop.iter().map(String::as_str));
    keys.extend(fam.config.defaults.iter().map(|(k, _)| k.as_str()));
    keys
}

/// The boolean and integer keys every class of transformers 5 types strictly and the computation
/// reads: the family's bias switches, `tie_word_embeddings`, and the context sizes (which rotary
/// scalings read). transformers 5 refuses a null in any of them; transformers 4 reads it as false
/// or absent by Python's truthiness, which for a config in transformers 5's format
/// (`rope_parameters`, which transformers 4 does not read) is a computation of neither.
fn typed_switches<'f>(fam: &'f crate::mapping::Family, cfg: &ModelConfig) -> Vec<&'f str> {
    use crate::mapping::family::BiasSwitch;
    let b = &fam.biases;
    let mut keys: Vec<&str> = [&b.qkv, &b.o, &b.mlp]
        .into_iter()
        .filter_map(|s| match s {
            Some(BiasSwitch::Key(k)) => Some(k.as_str()),
            _ => None,
        })
        .collect();
    keys.extend(fam.math.when.iter().map(|w| w.key.as_str()));
    keys.extend(["tie_word_embeddings", "max_position_embeddings"]);
    if cfg.rope_scaling.is_some() {
        keys.push("original_max_position_embeddings");
    }
    keys
}

fn null_switch(key: &str) -> Error {
    Error::unsupported(format!(
        "config key `{}` is null: transformers 5 refuses the file, and transformers 4 reads None as false or absent, so its computation is not known; give it a value, or leave the key out for its class's default",
        escape(key)
    ))
}

/// Resolve `fam`'s computation for a checkpoint whose own config is `cfg`.
pub fn for_checkpoint(fam: &crate::mapping::Family, cfg: Option<&ModelConfig>) -> Resolved {
    let Some(cfg) = cfg else {
        return Resolved {
            math: Err("the checkpoint has no config.json, so its computation (sizes, rotary settings, the family's switches) is not known".into()),
            unmodelled: Vec::new(),
        };
    };
    let unmodelled = unmodelled_keys(cfg, &understood_keys(fam));
    let math = (|| -> Result<Math> {
        if let Some(k) = fam
            .config
            .not_null
            .iter()
            .find(|k| matches!(cfg.get(k), Some(Value::Null)))
        {
            return Err(crate::reference::config::null_key(k));
        }
        if let Some(k) = typed_switches(fam, cfg)
            .into_iter()
            .find(|k| matches!(cfg.get(k), Some(Value::Null)))
        {
            return Err(null_switch(k));
        }
        if let Some(k) = fam.config.required.iter().find(|k| lookup(cfg, k).is_none()) {
            return Err(Error::unsupported(format!(
                "the config has no `{}`, and transformers generations give family `{}`'s class different defaults for it, so its computation is not known: state the value",
                escape(k),
                fam.name
            )));
        }
        let pad_stated = cfg.raw.contains_key("pad_token_id");
        // What the family's class reads: its own defaults where the file leaves keys out.
        let cfg = &crate::mapping::configmap::with_class_defaults(cfg, fam)?;
        let named = crate::mapping::configmap::renamed(cfg, fam)?;
        // Every class ckpt computes builds its embedding with `pad_token_id` as the padding
        // index, which torch refuses outside the table (a class default of 32000 in a small
        // vocabulary included).
        if let (Some(pad), Some(vocab)) = (
            cfg.get("pad_token_id").and_then(Value::as_i64),
            named.vocab_size.and_then(|v| i64::try_from(v).ok()),
        ) && !(vocab.checked_neg().unwrap_or(i64::MIN)..vocab).contains(&pad)
        {
            return Err(Error::unsupported(format!(
                "`pad_token_id` {pad}{} is outside the vocabulary of {vocab}: transformers' class builds its embedding with it as the padding index, which torch refuses (\"Padding_idx must be within num_embeddings\"), so the model cannot be built",
                if pad_stated {
                    ""
                } else {
                    " (its class's default)"
                }
            )));
        }
        // The reference's own resolution names the precise problem (heads that do not divide, an
        // overflow) before any family switch is read; a Meta `params.json` lacks the FFN size (it
        // comes from the shapes), which the switches do not need.
        let (hidden, layers, head_dim) = match crate::reference::Config::resolve(&named) {
            Ok(c) => (c.hidden, c.layers, c.head_dim),
            Err(e) => match (
                named.hidden_size,
                named.num_hidden_layers,
                named.resolved_head_dim(),
            ) {
                (Some(h), Some(l), Some(d)) if named.intermediate_size.is_none() => (h, l, d),
                _ => return Err(e),
            },
        };
        resolve(
            &fam.math,
            cfg,
            Dims {
                hidden,
                layers,
                head_dim,
            },
        )
    })()
    .map_err(|e| e.message().to_string());
    Resolved { math, unmodelled }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn unmodelled_values_print_as_compact_json_with_their_strings_intact() {
        let cfg = ModelConfig::parse(
            br#"{"layout": "Meta AI original pth", "list": [1, 2], "obj": {"a b": "c d"}}"#,
            crate::checkpoint::ConfigSource::ConfigJson,
        )
        .unwrap();
        let shown: Vec<String> = unmodelled_keys(&cfg, &[])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                r#"`layout` = "Meta AI original pth""#,
                "`list` = [1,2]",
                r#"`obj` = {"a b":"c d"}"#
            ]
        );
    }
}
