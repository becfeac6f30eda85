//! Rules that differ between loaders, each tagged with the loaders it affects (the sources are cited
//! per rule in `docs/CHECKS.md`):
//!
//! * weights under a file name the loaders do not look for (transformers'
//!   `_get_resolved_checkpoint_files` in `modeling_utils.py`; llama.cpp's `ModelBase.index_tensors`
//!   in `conversion/base.py`), and two sets of weights that transformers and llama.cpp choose
//!   between differently (`model.safetensors` before the index, the index before the glob);
//! * a second set of weights beside the checkpoint (vLLM loads every `*.safetensors` when there is
//!   no index; llama.cpp's converter every `model*.safetensors`);
//! * RoPE written only in transformers 5's `rope_parameters` (candle, and transformers 4 under vLLM,
//!   read `rope_theta` / `rope_scaling` and fall back to theta 10000 without scaling);
//! * `max_position_embeddings` (a required field of candle's `LlamaConfig`; llama.cpp's GGUF context
//!   length);
//! * what candle's `llama` cannot express: biases, `head_dim != hidden / heads`, RoPE scaling other
//!   than llama3; RoPE scaling types llama.cpp's converter does not carry over;
//! * what each loader does with a config key LLaMA's math does not model (C011's message).

use std::path::Path;

use serde_json::{Map, Value};

use super::files::list as listing;
use super::{Finding, Loaders};
use crate::checkpoint::header::Dtype;
use crate::checkpoint::{Checkpoint, INDEX_NAME, IndexFile, ModelConfig, Shard, TORCH_INDEX_NAME};
use crate::error::escape;
use crate::write::select::weight_skip_reason;

/// Finding ids of this module.
pub mod ids {
    /// A second set of weights beside the checkpoint.
    pub const EXTRA_WEIGHTS: &str = "W001-extra-weights";
    /// Weights under file names a loader does not look for.
    pub const WEIGHTS_NAME: &str = "W002-weights-name";
    /// A single-file checkpoint and an index beside it: loaders read different weights.
    pub const TWO_WEIGHT_SETS: &str = "W003-two-weight-sets";
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
    // The single file of two sets is W003's finding, not an extra file.
    let two = two_sets(&ck.dir);
    for f in &ck.other_files {
        if TRAINER_FILES.iter().any(|t| f.starts_with(t))
            || two.as_ref().is_some_and(|t| f.as_str() == t.single)
        {
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

/// The files transformers 5.23's `from_pretrained(dir)` looks for, in its order
/// (`_get_resolved_checkpoint_files` in `modeling_utils.py`: `SAFE_WEIGHTS_NAME`,
/// `SAFE_WEIGHTS_INDEX_NAME`, `WEIGHTS_NAME`, `WEIGHTS_INDEX_NAME`); the first one present wins
/// and nothing else is read. (5.23 looks for no TF or Flax names in a local directory.)
const TRANSFORMERS_NAMES: [&str; 4] = [
    "model.safetensors",
    INDEX_NAME,
    "pytorch_model.bin",
    TORCH_INDEX_NAME,
];

/// Extensions of files that hold weights a loader could be meant to read.
const WEIGHT_EXT: &[&str] = &[".safetensors", ".bin", ".pth", ".pt"];

/// What transformers reads: `transformers_weights` from `config.json` when it names a file of the
/// directory (`from_pretrained` passes it as the explicit file name), else the first of
/// [`TRANSFORMERS_NAMES`] that is a file.
fn transformers_reads(dir: &Path) -> Option<String> {
    let explicit = ModelConfig::load(&dir.join("config.json"))
        .ok()
        .and_then(|c| {
            c.raw
                .get("transformers_weights")?
                .as_str()
                .map(str::to_string)
        });
    if let Some(f) = explicit.filter(|f| dir.join(f).is_file()) {
        return Some(f);
    }
    TRANSFORMERS_NAMES
        .iter()
        .find(|n| dir.join(n).is_file())
        .map(|n| (*n).to_string())
}

/// The files llama.cpp's converter reads from a Hugging Face directory (`ModelBase.index_tensors`
/// in `conversion/base.py`, without `--mistral-format`): the files `model.safetensors.index.json`
/// lists, else every `model*.safetensors` (`get_model_part_names`); with neither, the files of
/// `pytorch_model.bin.index.json`, else every `pytorch_model*.bin`. Empty: it finds no weights and
/// writes a GGUF without tensors.
fn llama_cpp_reads(dir: &Path, names: &[String]) -> Vec<String> {
    let glob = |prefix: &str, suffix: &str| -> Vec<String> {
        names
            .iter()
            .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
            .cloned()
            .collect()
    };
    let indexed = |index: &str, parts: Vec<String>| match IndexFile::load(&dir.join(index)) {
        Ok(i) => i.files,
        Err(_) => parts, // an unreadable index is the open's error
    };
    let st = glob("model", ".safetensors");
    if dir.join(INDEX_NAME).is_file() {
        return indexed(INDEX_NAME, st);
    }
    if !st.is_empty() {
        return st;
    }
    let bin = glob("pytorch_model", ".bin");
    if dir.join(TORCH_INDEX_NAME).is_file() {
        return indexed(TORCH_INDEX_NAME, bin);
    }
    bin
}

/// A single-file checkpoint and an index of other files in one directory: transformers reads the
/// single file (it looks for it before the index), llama.cpp's converter the indexed files.
struct TwoSets {
    /// `model.safetensors` or `pytorch_model.bin`.
    single: &'static str,
    /// The index beside it.
    index: &'static str,
    /// The files the index lists.
    indexed: Vec<String>,
}

/// [`TwoSets`] of `dir`, if it has two. The PyTorch pair counts only when llama.cpp's converter
/// takes the PyTorch path (no `model*.safetensors` and no safetensors index).
fn two_sets(dir: &Path) -> Option<TwoSets> {
    let pair = |single: &'static str, index: &'static str| {
        if !dir.join(single).is_file() || !dir.join(index).is_file() {
            return None;
        }
        let files = IndexFile::load(&dir.join(index)).ok()?.files;
        (files.iter().any(|f| f != single)).then_some(TwoSets {
            single,
            index,
            indexed: files,
        })
    };
    pair("model.safetensors", INDEX_NAME).or_else(|| {
        let st = listing(dir)
            .iter()
            .any(|n| n.starts_with("model") && n.ends_with(".safetensors"));
        if st || dir.join(INDEX_NAME).is_file() {
            return None;
        }
        pair("pytorch_model.bin", TORCH_INDEX_NAME)
    })
}

/// At most three names in backticks, then how many more.
fn some_names(names: &[String]) -> String {
    let mut s: Vec<String> = names
        .iter()
        .take(3)
        .map(|n| format!("`{}`", escape(n)))
        .collect();
    if names.len() > 3 {
        s.push(format!("and {} more", names.len() - 3));
    }
    s.join(", ")
}

/// W002 and W003 on the directory a loader is given: weights under names transformers or
/// llama.cpp's converter do not look for, and two sets of weights they choose between
/// differently. Judged from the directory listing, so it also explains a directory ckpt cannot
/// open (a lone `model.bin`). `read`: the files ckpt opened as the checkpoint, named in the
/// finding (`None` when it could not open it: then every file that looks like weights is named).
pub fn weight_files(dir: &Path, read: Option<&[String]>, out: &mut Vec<Finding>) {
    let names = listing(dir);
    let has = |n: &str| names.iter().any(|f| f == n);
    if let Some(t) = two_sets(dir) {
        out.push(
            Finding::error(
                ids::TWO_WEIGHT_SETS,
                format!(
                    "two sets of weights, `{}` and `{}` (listing {}), and the loaders read different ones: transformers' `from_pretrained` reads `{}` (`_get_resolved_checkpoint_files` looks for it before the index), llama.cpp's converter the files the index lists (`ModelBase.index_tensors`); the other rules judged the indexed files; remove the set that is not the model",
                    t.single,
                    t.index,
                    some_names(&t.indexed),
                    t.single
                ),
            )
            .file(dir.join(t.single))
            .loaders(Loaders::TRANSFORMERS.or(Loaders::LLAMA_CPP)),
        );
    }
    // Meta / mistral-inference layout (`params.json`, no `config.json`): C001's finding, and
    // llama.cpp's `--mistral-format` reads `consolidated*.safetensors`. A PEFT adapter is loaded
    // through its base model.
    if (!has("config.json") && has("params.json")) || has("adapter_config.json") {
        return;
    }
    let candidates: Vec<String> = match read {
        Some(files) => files.to_vec(),
        None => names
            .iter()
            .filter(|n| WEIGHT_EXT.iter().any(|e| n.ends_with(e)))
            .filter(|n| !TRAINER_FILES.iter().any(|t| n.starts_with(t)))
            .filter(|n| dir.join(n.as_str()).is_file())
            .cloned()
            .collect(),
    };
    if candidates.is_empty() {
        return; // nothing that looks like weights: the open says what is missing
    }
    // Shards without an index are F010's finding.
    if !has(INDEX_NAME)
        && !has("model.safetensors")
        && candidates
            .iter()
            .any(|n| crate::checkpoint::index::looks_like_shard(n))
    {
        return;
    }
    let mut broken = Loaders(0);
    let mut why = Vec::new();
    if transformers_reads(dir).is_none() {
        broken = broken.or(Loaders::TRANSFORMERS);
        why.push(
            "transformers' `from_pretrained` looks only for `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin` and `pytorch_model.bin.index.json` (`_get_resolved_checkpoint_files`) and fails (`OSError: Error no file named model.safetensors, or pytorch_model.bin`)"
                .to_string(),
        );
    }
    if llama_cpp_reads(dir, &names).is_empty() {
        broken = broken.or(Loaders::LLAMA_CPP);
        let mistral = if has("params.json")
            && candidates.iter().any(|n| n.starts_with("consolidated"))
        {
            " (only with `--mistral-format` does it read `consolidated*.safetensors`, with `params.json`)"
        } else {
            ""
        };
        why.push(format!(
            "llama.cpp's converter reads only `model*.safetensors` or `pytorch_model*.bin` (or the files their index lists; `ModelBase.index_tensors`, `get_model_part_names`) and writes a GGUF without tensors, which does not load{mistral}"
        ));
    }
    if broken.0 == 0 {
        return;
    }
    let fix = if candidates.iter().any(|n| n.ends_with(".safetensors")) {
        "name the file `model.safetensors` (or shards `model-0000K-of-0000N.safetensors` with `model.safetensors.index.json`)"
    } else {
        "name the file `pytorch_model.bin`, or publish safetensors (`ckpt convert`)"
    };
    let file = match candidates.as_slice() {
        [one] => dir.join(one),
        _ => dir.to_path_buf(),
    };
    out.push(
        Finding::error(
            ids::WEIGHTS_NAME,
            format!(
                "the weights ({}) are under a file name the loaders do not look for: {}; {fix}",
                some_names(&candidates),
                why.join("; ")
            ),
        )
        .file(file)
        .loaders(broken),
    );
}

/// W002 for a weights file given to `check` on its own: its directory is what a loader is given
/// (the config and tokenizer are read from there too), so the file's name is judged as in a
/// directory ([`weight_files`]), and a file the loaders pass over for other weights in that
/// directory (`other.safetensors` beside a `model.safetensors`) is named as such: the verdict
/// would otherwise be about a file no loader reads.
pub fn file_given(dir: &Path, file: &str, out: &mut Vec<Finding>) {
    let before = out.len();
    weight_files(dir, Some(&[file.to_string()]), out);
    if out[before..]
        .iter()
        .any(|f| f.id == ids::WEIGHTS_NAME || f.id == ids::TWO_WEIGHT_SETS)
    {
        return; // the name, or the two sets the loaders choose between, is already the finding
    }
    let names = listing(dir);
    let has = |n: &str| names.iter().any(|f| f == n);
    // As in `weight_files`: a Meta layout and a PEFT adapter are loaded otherwise.
    if (!has("config.json") && has("params.json")) || has("adapter_config.json") {
        return;
    }
    let listed_by = |index: &str| {
        IndexFile::load(&dir.join(index)).is_ok_and(|i| i.files.iter().any(|f| f == file))
    };
    let mut others = Vec::new();
    let mut broken = Loaders(0);
    if let Some(t) = transformers_reads(dir)
        && t != file
        && !((t == INDEX_NAME || t == TORCH_INDEX_NAME) && listed_by(&t))
    {
        broken = broken.or(Loaders::TRANSFORMERS);
        others.push(format!(
            "transformers' `from_pretrained` reads `{}`",
            escape(&t)
        ));
    }
    let cpp = llama_cpp_reads(dir, &names);
    if !cpp.is_empty() && !cpp.iter().any(|f| f == file) {
        broken = broken.or(Loaders::LLAMA_CPP);
        others.push(format!("llama.cpp's converter reads {}", some_names(&cpp)));
    }
    if broken.0 == 0 {
        return;
    }
    out.push(
        Finding::error(
            ids::WEIGHTS_NAME,
            format!(
                "`{}` is not the file the loaders read from its directory: {}; the verdict below is about this file, which they would not load: check the directory, or remove the other weights and name this file `model.safetensors`",
                escape(file),
                others.join(", ")
            ),
        )
        .file(dir.join(file))
        .loaders(broken),
    );
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

/// Keys measured to be ignored by transformers 5.23's `LlamaForCausalLM` and by llama.cpp (logits
/// unchanged from plain LLaMA; docs/CHECKS.md, judgement calls).
const MEASURED_IGNORED: &[&str] = &[
    "logits_scaling",
    "embedding_multiplier",
    "sliding_window",
    "rope_parameters.partial_rotary_factor",
];

/// The RoPE types for which transformers 5.23 moves a top-level `original_max_position_embeddings`
/// into `rope_parameters`, over the value there (`standardize_rope_params`).
const ORIGINAL_MAX_TYPES: &[&str] = &["llama3", "yarn", "longrope"];

/// C011: what loaders do with the config key `key` that LLaMA's math does not model, as far as it
/// is known (each claim is cited in docs/CHECKS.md); `None` when the key changes
/// nothing after all (a top-level `original_max_position_embeddings` equal to the scaling's own).
pub fn unmodelled_message(ck: &Checkpoint, c: &ModelConfig, key: &str) -> Option<String> {
    const GENERIC: &str = "it may change what the model computes, and loaders differ: some ignore it, some use it or refuse the config";
    if MEASURED_IGNORED.contains(&key) {
        return Some(
            "the model was trained with it, but transformers' `LlamaForCausalLM` and llama.cpp ignore it (measured) and compute something else"
                .into(),
        );
    }
    match key {
        "original_max_position_embeddings" => Some(original_max_message(c)?),
        "quantization_config" => {
            let plain = ck
                .tensors
                .iter()
                .all(|t| matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16));
            let method = c
                .raw
                .get("quantization_config")
                .and_then(|q| q.get("quant_method"))
                .and_then(serde_json::Value::as_str);
            let Some(method) = method.filter(|_| plain) else {
                return Some(GENERIC.into());
            };
            // `ModelBase.dequant_model` (conversion/base.py) handles these methods and raises
            // `NotImplementedError` for any other; for bitnet, fp8 and gptq it looks only for
            // the method's own tensors (`*.weight_scale`, `*_scale_inv`, `*.qweight`).
            let llama_cpp = if matches!(method, "bitnet" | "fp8" | "gptq") {
                "llama.cpp's converter looks for the method's own scale tensors (`ModelBase.dequant_model`), which plain weights do not have".to_string()
            } else if LLAMA_CPP_QUANT.contains(&method) {
                "llama.cpp's converter applies the method's own handling (`ModelBase.dequant_model`)".to_string()
            } else {
                format!(
                    "llama.cpp's converter raises `NotImplementedError` (\"Quant method is not yet supported: '{}'\", `ModelBase.dequant_model`)",
                    escape(method)
                )
            };
            Some(format!(
                "the weights are plain floats but the config declares `quant_method` \"{}\": transformers 5 hands the model to that method's quantizer (`get_hf_quantizer`, which expects that method's weights and library; for fp8 and bitsandbytes, `from_pretrained` raised `ImportError` where the library was not installed, measured), and {llama_cpp}; remove the key or ship the quantized weights",
                escape(method)
            ))
        }
        _ => Some(GENERIC.into()),
    }
}

/// The `quant_method`s llama.cpp's converter handles (`ModelBase.dequant_model`).
const LLAMA_CPP_QUANT: &[&str] = &["bitnet", "fp8", "gptq", "compressed-tensors", "modelopt"];

/// C011's message for a top-level `original_max_position_embeddings`.
fn original_max_message(c: &ModelConfig) -> Option<String> {
    use serde_json::Value;
    let top = c.raw.get("original_max_position_embeddings")?;
    // The scaling as transformers 5 reads it (`rope_parameters`, else the legacy `rope_scaling`).
    let scaling = ["rope_parameters", "rope_scaling"]
        .iter()
        .find_map(|k| c.raw.get(*k).filter(|v| v.is_object()));
    let kind = scaling
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let nested = scaling.and_then(|s| s.get("original_max_position_embeddings"));
    if !ORIGINAL_MAX_TYPES.contains(&kind) {
        return Some(format!(
            "with RoPE type `{}` it may change nothing, but loaders differ: transformers 5 moves the key into its RoPE parameters only for llama3, yarn and longrope scaling (`standardize_rope_params`), llama.cpp's converter copies it into its own for any type (`ModelBase.__init__`)",
            escape(kind)
        ));
    }
    match nested {
        Some(n) if n.as_f64() == top.as_f64() => None,
        Some(n) => Some(format!(
            "transformers 5 uses it for the `{}` scaling, over the scaling's own value {} (`standardize_rope_params` gives the top-level key priority), while llama.cpp's converter keeps the scaling's value (`ModelBase.__init__` copies the top-level key only when the scaling has none): the loaders compute different rotary frequencies; keep one value, in the scaling",
            escape(kind),
            crate::error::escape_value(n)
        )),
        None => Some(format!(
            "transformers 5 and llama.cpp's converter use it for the `{}` scaling, which has no value of its own, while readers of the scaling alone do not (candle's `Llama3RopeConfig` requires it inside `rope_scaling`); move it into the scaling",
            escape(kind)
        )),
    }
}
