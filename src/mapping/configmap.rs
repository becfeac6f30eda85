//! Config mapping: a family's `config.json` (or Meta's `params.json`) rewritten as a LLaMA
//! `config.json`, and back.
//!
//! Towards LLaMA: keys the family names differently are renamed in place (InternLM2 `bias` ->
//! `attention_bias`), `model_type` / `architectures` become LLaMA's, `auto_map` and the family's
//! remote-code keys are dropped, values the family implies are added (Baichuan's rope_theta 10000),
//! `attention_bias` / `mlp_bias` follow the tensors, and every other key stays where it was. From
//! `params.json` a whole `config.json` is generated, with vocab and FFN sizes read from the shapes.
//! Away from LLaMA the inverse is applied.

use serde_json::{Map, Value};

use super::family::{ConfigFormat, Family};
use crate::checkpoint::header::Dtype;
use crate::checkpoint::{ConfigSource, ModelConfig};
use crate::error::{Error, Result, escape};

/// Keys always removed when converting to LLaMA: they point transformers at remote code.
pub const REMOTE_CODE_KEYS: &[&str] = &["auto_map"];

/// Facts about the canonical tensors the config must agree with.
#[derive(Debug, Clone, Default)]
pub struct TensorFacts {
    /// Rows of `model.embed_tokens.weight`.
    pub vocab: Option<usize>,
    /// Rows of `model.layers.0.mlp.gate_proj.weight`.
    pub intermediate: Option<usize>,
    /// Attention biases exist (q/k/v, o added when missing).
    pub attention_bias: bool,
    /// MLP biases exist.
    pub mlp_bias: bool,
    /// `lm_head.weight` exists.
    pub lm_head: bool,
    /// Element type of the embedding.
    pub dtype: Option<Dtype>,
}

fn torch_dtype_name(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        _ => return None,
    })
}

/// Set a key in place when present, else append it.
fn set(map: &mut Map<String, Value>, key: &str, v: Value) {
    if let Some(slot) = map.get_mut(key) {
        *slot = v;
    } else {
        map.insert(key.to_string(), v);
    }
}

/// Rename keys in place, keeping their position. A key renamed onto a key the config already has
/// (or two keys landing on one name) is an error unless both values are equal, or the key already
/// in the target spelling is null (the renamed key, the one the class reads, is kept): one value
/// would otherwise be dropped without a word.
fn rename_keys(
    map: Map<String, Value>,
    pairs: &[(String, String)],
    forward: bool,
    cfg: &ModelConfig,
) -> Result<Map<String, Value>> {
    let mut out = Map::with_capacity(map.len());
    let mut origin: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (k, v) in map {
        let new = pairs
            .iter()
            .find(|(a, b)| if forward { a == &k } else { b == &k })
            .map(|(a, b)| if forward { b.clone() } else { a.clone() })
            .unwrap_or_else(|| k.clone());
        if let Some(prev) = out.get(&new) {
            // The class reads the key in its own spelling (the renamed one); a null beside it in
            // the other spelling is an attribute nothing reads, not a second value.
            let prev_renamed = origin.get(&new).is_some_and(|o| *o != new);
            if prev_renamed && k == new && v.is_null() {
                continue;
            }
            if !prev_renamed && k != new && prev.is_null() {
                origin.insert(new.clone(), k);
                out.insert(new, v);
                continue;
            }
            if *prev != v {
                let first = origin.get(&new).cloned().unwrap_or_else(|| new.clone());
                return Err(Error::bad_data(format!(
                    "config keys `{}` and `{}` both become `{}` with different values ({} and {}); refusing to drop one",
                    crate::error::escape(&first),
                    crate::error::escape(&k),
                    crate::error::escape(&new),
                    crate::error::escape_value(prev),
                    crate::error::escape_value(&v),
                ))
                .file(&cfg.path)
                .hint("remove one of the two keys from the config"));
            }
            continue;
        }
        origin.insert(new.clone(), k);
        out.insert(new, v);
    }
    Ok(out)
}

fn reparse(
    map: Map<String, Value>,
    source: ConfigSource,
    like: &ModelConfig,
) -> Result<ModelConfig> {
    // Through the same writer and reader as the file itself, so sentinels round-trip exactly.
    let text = crate::json::to_string_pretty_nonfinite(&Value::Object(map));
    let mut c = ModelConfig::parse(text.as_bytes(), source).map_err(|e| e.file(&like.path))?;
    c.path = like.path.clone();
    Ok(c)
}

/// The config with the family's `[config.defaults]` (its class's defaults, in LLaMA's spelling)
/// written in wherever the file leaves the key out, under the name the file would use (the
/// source side of a `[config.rename]` pair): what the family's class reads. A key present as
/// `null` stays null (the class reads null, not its default); a `rope_theta` given in
/// `rope_parameters` is present.
pub fn with_class_defaults(cfg: &ModelConfig, family: &Family) -> Result<ModelConfig> {
    if family.config.defaults.is_empty() || cfg.source == Some(ConfigSource::ParamsJson) {
        return Ok(cfg.clone());
    }
    let mut raw = cfg.raw.clone();
    let mut added = false;
    for (k, v) in &family.config.defaults {
        let spelled = family
            .config
            .rename
            .iter()
            .find(|(_, llama)| llama == k)
            .map_or(k.as_str(), |(theirs, _)| theirs.as_str());
        let theta_elsewhere = theta_in_parameters(&raw, k);
        if !raw.contains_key(spelled) && !raw.contains_key(k) && !theta_elsewhere {
            raw.insert(spelled.to_string(), v.clone());
            added = true;
        }
    }
    if !added {
        return Ok(cfg.clone());
    }
    reparse(raw, ConfigSource::ConfigJson, cfg)
}

/// `key` is `rope_theta` and the config gives it in transformers 5's `rope_parameters`.
fn theta_in_parameters(map: &Map<String, Value>, key: &str) -> bool {
    key == "rope_theta"
        && map
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .is_some()
}

/// LLaMA's class default of a key (`LlamaConfig()` in transformers 4.57 and 5.24), for the keys
/// other families default differently.
fn llama_default(key: &str) -> Option<Value> {
    Some(match key {
        "rms_norm_eps" => Value::from(1e-6),
        "rope_theta" => Value::from(10000.0),
        "tie_word_embeddings" | "attention_bias" | "mlp_bias" => Value::from(false),
        "hidden_act" => Value::from("silu"),
        "sliding_window" => Value::Null,
        _ => return None,
    })
}

/// The config with only the family's key renames applied (typed fields in LLaMA's spelling), for
/// reading hyperparameters of families that are never converted (GPT-2's `n_embd`, ...).
pub fn renamed(cfg: &ModelConfig, family: &Family) -> Result<ModelConfig> {
    if family.config.rename.is_empty() || cfg.source == Some(ConfigSource::ParamsJson) {
        return Ok(cfg.clone());
    }
    let raw = rename_keys(cfg.raw.clone(), &family.config.rename, true, cfg)?;
    reparse(raw, ConfigSource::ConfigJson, cfg)
}

/// The LLaMA `config.json` for a checkpoint of `family` whose config is `cfg`.
pub fn to_llama(cfg: &ModelConfig, family: &Family, facts: &TensorFacts) -> Result<ModelConfig> {
    if let Some(why) = &cfg.rope_conflict {
        return Err(crate::checkpoint::config::rope_conflict_error(cfg, why));
    }
    let from_params = cfg.source == Some(ConfigSource::ParamsJson)
        || family.config.format == ConfigFormat::ParamsJson;
    let mut map = Map::new();
    if from_params {
        map.insert(
            "architectures".into(),
            Value::from(vec!["LlamaForCausalLM"]),
        );
        map.insert("model_type".into(), Value::from("llama"));
    }
    let raw = rename_keys(cfg.raw.clone(), &family.config.rename, true, cfg)?;
    for (k, v) in raw {
        if family.config.drop.iter().any(|d| d == &k) || REMOTE_CODE_KEYS.contains(&k.as_str()) {
            continue;
        }
        map.insert(k, v);
    }
    set(&mut map, "model_type", Value::from("llama"));
    set(
        &mut map,
        "architectures",
        Value::from(vec!["LlamaForCausalLM"]),
    );
    if from_params {
        // Meta writes vocab_size -1 when the tokenizer decides: the embedding rows say.
        let bad_vocab = map.get("vocab_size").is_none_or(|v| v.as_u64().is_none());
        if bad_vocab && let Some(v) = facts.vocab {
            set(&mut map, "vocab_size", Value::from(v));
        }
        if !map.contains_key("intermediate_size")
            && let Some(v) = facts.intermediate
        {
            map.insert("intermediate_size".into(), Value::from(v));
        }
        if !map.contains_key("num_key_value_heads")
            && let Some(h) = cfg.num_attention_heads
        {
            map.insert("num_key_value_heads".into(), Value::from(h));
        }
        if let Some(s) = &cfg.rope_scaling {
            map.insert(
                "rope_scaling".into(),
                serde_json::json!({
                    "rope_type": s.rope_type,
                    "factor": s.factor,
                    "low_freq_factor": s.low_freq_factor,
                    "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                }),
            );
        }
        if let Some(d) = facts.dtype.and_then(torch_dtype_name) {
            map.insert("torch_dtype".into(), Value::from(d));
        }
    }
    for (k, v) in &family.config.defaults {
        let theta_elsewhere = theta_in_parameters(&map, k);
        // A key the conversion drops (Mistral's `sliding_window`, judged by the math) stays out.
        let dropped = family.config.drop.iter().any(|d| d == k);
        if !map.contains_key(k) && !theta_elsewhere && !dropped {
            map.insert(k.clone(), v.clone());
        }
    }
    // The class's own head size when its config leaves it out (Helium: 128).
    if let Some(d) = family.config.head_dim_default
        && map.get("head_dim").is_none_or(Value::is_null)
    {
        set(&mut map, "head_dim", Value::from(d));
    }
    if facts.attention_bias || map.contains_key("attention_bias") {
        set(
            &mut map,
            "attention_bias",
            Value::from(facts.attention_bias),
        );
    }
    if facts.mlp_bias || map.contains_key("mlp_bias") {
        set(&mut map, "mlp_bias", Value::from(facts.mlp_bias));
    }
    if from_params {
        set(&mut map, "tie_word_embeddings", Value::from(!facts.lm_head));
    }
    // A source class that ties by default (Gemma, SmolLM3, ...) and a config that leaves the key
    // out: LLaMA's class does not tie, so the output says it.
    if !map.contains_key("tie_word_embeddings") && cfg.tie_word_embeddings == Some(true) {
        map.insert("tie_word_embeddings".into(), Value::from(true));
    }
    super::portable::apply(&mut map, cfg);
    reparse(map, ConfigSource::ConfigJson, cfg)
}

/// The family's config for a LLaMA `config.json` (the inverse of [`to_llama`]).
pub fn from_llama(cfg: &ModelConfig, family: &Family) -> Result<ModelConfig> {
    if family.config.format == ConfigFormat::ParamsJson {
        let mut map = Map::new();
        // In the order the LLaMA config has the keys.
        for (k, v) in &cfg.raw {
            if let Some((pk, _)) = family.config.rename.iter().find(|(_, h)| h == k) {
                map.insert(pk.clone(), v.clone());
            }
        }
        if let Some(s) = &cfg.rope_scaling {
            if s.rope_type != "llama3" {
                return Err(Error::unsupported(format!(
                    "family `{}` (params.json) cannot express rope scaling `{}`",
                    family.name, s.rope_type
                ))
                .file(&cfg.path));
            }
            // `use_scaled_rope` means Meta's fixed constants; other llama3 parameters would be
            // read back as these and rotate differently.
            let fixed = (Some(8192), Some(1.0), Some(4.0));
            let got = (
                s.original_max_position_embeddings,
                s.low_freq_factor,
                s.high_freq_factor,
            );
            if got != fixed {
                return Err(Error::unsupported(format!(
                    "family `{}` (params.json) can say only `use_scaled_rope`, which means llama3 scaling with original_max_position_embeddings 8192, low_freq_factor 1 and high_freq_factor 4; this checkpoint has {}, {} and {}",
                    family.name,
                    got.0.map_or("none".into(), |v| v.to_string()),
                    got.1.map_or("none".into(), |v| v.to_string()),
                    got.2.map_or("none".into(), |v| v.to_string()),
                ))
                .file(&cfg.path));
            }
            map.insert("use_scaled_rope".into(), Value::from(true));
            if let Some(f) = s.factor {
                map.insert("rope_scaling_factor".into(), Value::from(f));
            }
        }
        if !map.contains_key("rope_theta")
            && let Some(t) = cfg.rope_theta
        {
            map.insert("rope_theta".into(), Value::from(t));
        }
        return reparse(map, ConfigSource::ParamsJson, cfg);
    }
    // What the family's config class can hold: its RoPE scaling types, its head size.
    let rope_type = cfg.rope_type();
    if !family.config.rope_types.is_empty()
        && !family.config.rope_types.iter().any(|t| t == rope_type)
    {
        return Err(Error::unsupported(format!(
            "family `{}` cannot express rope scaling `{}` (its config class accepts {})",
            family.name,
            escape(rope_type),
            family.config.rope_types.join(", ")
        ))
        .file(&cfg.path));
    }
    let head_dim = cfg.resolved_head_dim();
    if family.config.square_o_proj
        && let (Some(hd), Some(heads), Some(hidden)) =
            (head_dim, cfg.num_attention_heads, cfg.hidden_size)
        && heads.checked_mul(hd) != Some(hidden)
    {
        return Err(Error::unsupported(format!(
            "family `{}` cannot express head_dim {hd} with {heads} heads and hidden size {hidden}: its o_proj is hidden x hidden, so heads x head_dim must equal the hidden size",
            family.name
        ))
        .file(&cfg.path));
    }
    let mut map = rename_keys(cfg.raw.clone(), &family.config.rename, false, cfg)?;
    // A class whose head size defaults to something else than hidden / heads (Helium: 128)
    // gets it written, or a loader would expect other shapes.
    if family.config.head_dim_default.is_some()
        && let Some(hd) = head_dim
        && map.get("head_dim").is_none_or(Value::is_null)
    {
        set(&mut map, "head_dim", Value::from(hd));
    }
    if let Some(mt) = &family.config.model_type {
        set(&mut map, "model_type", Value::from(mt.clone()));
    }
    if let Some(a) = family.config.architectures.first() {
        set(&mut map, "architectures", Value::from(vec![a.clone()]));
    }
    // A target class that ties by default reads a missing key as tied: say what LLaMA meant.
    if !map.contains_key("tie_word_embeddings")
        && crate::checkpoint::config::tied_by_default(
            family.config.model_type.as_deref(),
            &family.config.architectures,
        )
        .is_some()
    {
        map.insert(
            "tie_word_embeddings".into(),
            Value::from(cfg.tie_word_embeddings.unwrap_or(false)),
        );
    }
    for (k, v) in &family.config.defaults {
        // The LLaMA config leaves the key out, so it means LLaMA's default: the target class
        // would read its own, so write LLaMA's (then dropped below if the two agree).
        let theta_elsewhere = theta_in_parameters(&map, k);
        let renamed = family.config.rename.iter().any(|(_, llama)| llama == k);
        if !map.contains_key(k)
            && !theta_elsewhere
            && !renamed
            && let Some(ours) = llama_default(k)
        {
            map.insert(k.clone(), ours);
        }
        if map.get(k) == Some(v) {
            map.shift_remove(k);
        }
    }
    reparse(map, ConfigSource::ConfigJson, cfg)
}
