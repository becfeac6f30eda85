//! Rules that differ between loaders, each tagged with the loaders it affects (the sources are cited
//! per rule in `docs/CHECKS.md`):
//!
//! * a second set of weights beside the checkpoint (vLLM loads every `*.safetensors` when there is
//!   no index; llama.cpp's converter every `model*.safetensors`);
//! * RoPE written only in transformers 5's `rope_parameters` (candle, and transformers 4 under vLLM,
//!   read `rope_theta` / `rope_scaling` and fall back to theta 10000 without scaling);
//! * `max_position_embeddings` (a required field of candle's `LlamaConfig`; llama.cpp's GGUF context
//!   length);
//! * what candle's `llama` cannot express: biases, `head_dim != hidden / heads`, RoPE scaling other
//!   than llama3; RoPE scaling types llama.cpp's converter does not carry over.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Finding, Loaders};
use crate::checkpoint::{Checkpoint, INDEX_NAME, Shard};
use crate::write::select::weight_skip_reason;

/// Finding ids of this module.
pub mod ids {
    /// A second set of weights beside the checkpoint.
    pub const EXTRA_WEIGHTS: &str = "W001-extra-weights";
    /// RoPE only in the transformers 5 spelling, with values a legacy reader gets wrong.
    pub const ROPE_SPELLING: &str = "L001-rope-spelling";
    /// No `max_position_embeddings`.
    pub const MAX_POSITIONS: &str = "L002-max-position-embeddings";
    /// Biases candle's llama does not load.
    pub const BIASES: &str = "L003-biases";
    /// `head_dim` that is not `hidden_size / num_attention_heads`.
    pub const HEAD_DIM: &str = "L004-head-dim";
    /// A RoPE scaling type a loader does not implement.
    pub const ROPE_SCALING: &str = "L005-rope-scaling";
}

/// Trainer state files that vLLM filters out and no loader reads as weights.
const TRAINER_FILES: &[&str] = &[
    "training_args",
    "optimizer",
    "scheduler",
    "rng_state",
    "scaler",
];

/// W001: weight files that are not part of the checkpoint.
pub fn extra_weights(ck: &Checkpoint, out: &mut Vec<Finding>) {
    let indexed = ck.dir.join(INDEX_NAME).is_file();
    for f in &ck.other_files {
        if TRAINER_FILES.iter().any(|t| f.starts_with(t)) {
            continue;
        }
        let Some(reason) = weight_skip_reason(ck, f) else {
            continue;
        };
        let path = ck.dir.join(f);
        if f.ends_with(".safetensors") {
            let weights = holds_weights(&path);
            let mut hit = Loaders(0);
            if !indexed {
                hit = hit.or(Loaders::VLLM);
                if f.starts_with("model") {
                    hit = hit.or(Loaders::LLAMA_CPP);
                }
            }
            if hit.0 != 0 {
                let what = if weights {
                    "it holds a second set of weights"
                } else {
                    "it holds no model weights"
                };
                out.push(
                    Finding::error(
                        ids::EXTRA_WEIGHTS,
                        format!(
                            "{reason}, and {what}: without an index, vLLM loads every `*.safetensors` (llama.cpp's converter every `model*.safetensors`), so its tensors load too or the load fails on their names; remove it"
                        ),
                    )
                    .file(&path)
                    .loaders(hit),
                );
            } else if weights {
                out.push(
                    Finding::warning(
                        ids::EXTRA_WEIGHTS,
                        format!(
                            "a second set of weights beside the checkpoint ({reason}): index-driven loaders ignore it, but the release ships the model twice"
                        ),
                    )
                    .file(&path),
                );
            }
        } else if !f.ends_with(".index.json") {
            out.push(
                Finding::warning(
                    ids::EXTRA_WEIGHTS,
                    format!(
                        "a second set of weights ({reason}): loaders choose between formats by their own preference (transformers and vLLM take safetensors, older tools the pickle), so two sets can load different weights"
                    ),
                )
                .file(&path),
            );
        }
    }
}

/// Whether a safetensors file holds model-weight-like tensors (`*.weight` names).
fn holds_weights(path: &Path) -> bool {
    match Shard::open(path) {
        Ok(s) => s
            .header
            .tensors
            .iter()
            .any(|t| t.name.ends_with(".weight") || t.name.ends_with(".bias")),
        Err(_) => true,
    }
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// L001-L005 on `config.json`.
pub fn config_rules(ck: &Checkpoint, out: &mut Vec<Finding>) {
    let Some(c) = &ck.config else { return };
    if c.source != Some(crate::checkpoint::ConfigSource::ConfigJson)
        || c.model_type.as_deref() != Some("llama")
    {
        return;
    }
    let file = c.path.clone();
    let raw = &c.raw;
    rope_spelling(raw, &file, out);
    typed_nulls(raw, &file, out);
    match raw.get("max_position_embeddings") {
        None => {
            out.push(
                Finding::error(
                    ids::MAX_POSITIONS,
                    "no `max_position_embeddings`: candle's `LlamaConfig` requires it (the load fails)",
                )
                .file(&file)
                .loaders(Loaders::CANDLE),
            );
            out.push(
                Finding::warning(
                    ids::MAX_POSITIONS,
                    "no `max_position_embeddings`: llama.cpp's converter reads the config through transformers' `AutoConfig` and writes its default, 2048, as the GGUF context length, whatever the model was trained with",
                )
                .file(&file)
                .loaders(Loaders::LLAMA_CPP),
            );
        }
        Some(Value::Null) => out.push(
            Finding::error(
                ids::MAX_POSITIONS,
                "`max_position_embeddings` is null: transformers' `LlamaConfig` (strict validation) and candle's require an integer and refuse the config; llama.cpp's converter then falls back to the raw JSON and writes no context length, and the GGUF does not load",
            )
            .file(&file)
            .loaders(Loaders::TRANSFORMERS.or(Loaders::CANDLE).or(Loaders::LLAMA_CPP)),
        ),
        Some(_) => {}
    }
    let bias_tensor = ck
        .tensors
        .iter()
        .any(|t| t.name.starts_with("model.layers.") && t.name.ends_with(".bias"));
    if c.attention_bias == Some(true) || c.mlp_bias == Some(true) || bias_tensor {
        out.push(
            Finding::error(
                ids::BIASES,
                "attention or MLP biases: candle's llama builds every projection without bias and ignores the stored ones (wrong outputs)",
            )
            .file(&file)
            .loaders(Loaders::CANDLE),
        );
    }
    if let (Some(hd), Some(h), Some(n)) = (c.head_dim, c.hidden_size, c.num_attention_heads)
        && n != 0
        && h.checked_div(n) != Some(hd)
    {
        out.push(
            Finding::error(
                ids::HEAD_DIM,
                format!(
                    "`head_dim` {hd} is not `hidden_size / num_attention_heads` ({h} / {n}): candle's llama computes the head size from the two and cannot load the projections"
                ),
            )
            .file(&file)
            .loaders(Loaders::CANDLE),
        );
    }
    if let Some(s) = &c.rope_scaling {
        let t = s.rope_type.as_str();
        if !ROPE_TYPES.contains(&t) {
            out.push(
                Finding::error(
                    ids::ROPE_SCALING,
                    format!(
                        "RoPE scaling `{}` is not a type transformers implements ({}): `from_pretrained` fails (no such rotary initialisation), and no other LLaMA loader computes it",
                        crate::error::escape(t),
                        ROPE_TYPES.join(", ")
                    ),
                )
                .file(&file),
            );
        } else if t != "llama3" {
            out.push(
                Finding::error(
                    ids::ROPE_SCALING,
                    format!(
                        "RoPE scaling `{}`: candle's llama implements only `llama3` scaling (its `rope_scaling` must carry factor, low/high_freq_factor and original_max_position_embeddings)",
                        crate::error::escape(t)
                    ),
                )
                .file(&file)
                .loaders(Loaders::CANDLE),
            );
        } else if s.low_freq_factor.is_none()
            || s.high_freq_factor.is_none()
            || s.factor.is_none()
            || s.original_max_position_embeddings.is_none()
        {
            out.push(
                Finding::error(
                    ids::ROPE_SCALING,
                    "llama3 RoPE scaling without all of factor, low_freq_factor, high_freq_factor and original_max_position_embeddings: candle's `Llama3RopeConfig` requires each (transformers and llama.cpp fill defaults)",
                )
                .file(&file)
                .loaders(Loaders::CANDLE),
            );
        }
        if t == "dynamic" {
            out.push(
                Finding::warning(
                    ids::ROPE_SCALING,
                    "RoPE scaling `dynamic`: llama.cpp's converter carries over only linear, yarn and llama3 scaling; the GGUF runs unscaled, which transformers' dynamic scaling equals only up to `max_position_embeddings` tokens",
                )
                .file(&file)
                .loaders(Loaders::LLAMA_CPP),
            );
        } else if ROPE_TYPES.contains(&t) && !matches!(t, "linear" | "yarn" | "llama3") {
            out.push(
                Finding::error(
                    ids::ROPE_SCALING,
                    format!(
                        "RoPE scaling `{}`: llama.cpp's converter carries over only linear, yarn and llama3 scaling; the GGUF runs unscaled and computes other logits than the model at every length",
                        crate::error::escape(t)
                    ),
                )
                .file(&file)
                .loaders(Loaders::LLAMA_CPP),
            );
        }
    }
}

/// The RoPE types transformers 5.23 implements (`ROPE_INIT_FUNCTIONS` in
/// `modeling_rope_utils.py`, plus `default`); any other makes `from_pretrained` fail.
const ROPE_TYPES: &[&str] = &[
    "default",
    "linear",
    "dynamic",
    "yarn",
    "longrope",
    "llama3",
    "proportional",
];

/// `LlamaConfig` fields transformers 5.23 types without `None` (its `@strict` dataclass validation
/// refuses `null` there; `max_position_embeddings` is L002's), with the type and the loaders a
/// `null` breaks (transformers refuses the config; llama.cpp's converter then reads the raw JSON
/// and writes a GGUF without an RMSNorm epsilon, which does not load).
const TYPED_FIELDS: &[(&str, &str, Loaders)] = &[
    (
        "rms_norm_eps",
        "a float",
        Loaders(Loaders::TRANSFORMERS.0 | Loaders::LLAMA_CPP.0),
    ),
    ("hidden_act", "a string", Loaders::TRANSFORMERS),
    ("tie_word_embeddings", "a bool", Loaders::TRANSFORMERS),
    ("attention_bias", "a bool", Loaders::TRANSFORMERS),
    ("mlp_bias", "a bool", Loaders::TRANSFORMERS),
    ("use_cache", "a bool", Loaders::TRANSFORMERS),
];

/// C006 for a `null` in a field `LlamaConfig` types strictly.
fn typed_nulls(raw: &Map<String, Value>, file: &Path, out: &mut Vec<Finding>) {
    for (key, ty, loaders) in TYPED_FIELDS {
        if raw.get(*key).is_some_and(Value::is_null) {
            out.push(
                Finding::error(
                    super::rules::ids::CONFIG_FIELD,
                    format!(
                        "`{key}` is null: transformers' `LlamaConfig` (strict validation) requires {ty} and refuses the config; set the value"
                    ),
                )
                .file(file)
                .loaders(*loaders),
            );
        }
    }
}

/// L001: values only in `rope_parameters` that a legacy reader (top-level `rope_theta` /
/// `rope_scaling`, default theta 10000 and no scaling) reads differently.
fn rope_spelling(raw: &Map<String, Value>, file: &Path, out: &mut Vec<Finding>) {
    let Some(Value::Object(p)) = raw.get("rope_parameters") else {
        return;
    };
    let theta5 = num(p.get("rope_theta"));
    let theta4 = num(raw.get("rope_theta")).unwrap_or(10000.0);
    let type5 = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let type4 = raw
        .get("rope_scaling")
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut wrong = Vec::new();
    if let Some(t5) = theta5
        && t5 != theta4
    {
        wrong.push(if raw.contains_key("rope_theta") {
            format!(
                "top-level `rope_theta` {theta4} disagrees with `rope_parameters.rope_theta` {t5}"
            )
        } else {
            format!("`rope_theta` {t5} is only in `rope_parameters` (legacy readers use 10000)")
        });
    }
    if type5 != type4 {
        wrong.push(if raw.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            format!("`rope_scaling` type `{type4}` disagrees with `rope_parameters` type `{type5}`")
        } else {
            format!(
                "RoPE scaling `{type5}` is only in `rope_parameters` (legacy readers run unscaled)"
            )
        });
    }
    if wrong.is_empty() {
        return;
    }
    out.push(
        Finding::error(
            ids::ROPE_SPELLING,
            format!(
                "{}: candle and transformers 4 (which vLLM runs on) read only the top-level keys and compute silently wrong logits; write both spellings (`ckpt convert` does)",
                crate::error::escape(&wrong.join("; "))
            ),
        )
        .file(file)
        .loaders(Loaders::CANDLE.or(Loaders::VLLM)),
    );
}
