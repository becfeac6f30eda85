//! `config.json` (Hugging Face) and `params.json` (Meta / mistral-inference) as a typed view.
//!
//! The raw JSON object is kept verbatim with its key order (serde_json's `preserve_order`), so a
//! converter can rewrite a few keys and leave everything else as it was. The typed fields are the
//! hyperparameters the tool consults; a consulted key with the wrong type is an error naming the key,
//! an unknown key is kept and ignored. RoPE settings are read from both spellings: transformers 4's
//! top-level `rope_theta` + `rope_scaling`, and transformers 5's `rope_parameters`.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Largest config file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Which file the config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Hugging Face `config.json`.
    ConfigJson,
    /// Meta / mistral-inference `params.json`.
    ParamsJson,
}

/// RoPE scaling parameters (`rope_scaling` in transformers 4, part of `rope_parameters` in 5).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// `rope_type` (or the older `type`): `linear`, `dynamic`, `llama3`, `yarn`, ...
    pub rope_type: String,
    /// `factor`.
    pub factor: Option<f64>,
    /// `original_max_position_embeddings`.
    pub original_max_position_embeddings: Option<usize>,
    /// `low_freq_factor` (llama3).
    pub low_freq_factor: Option<f64>,
    /// `high_freq_factor` (llama3).
    pub high_freq_factor: Option<f64>,
}

/// The `model_type`s (with their causal-LM class) whose transformers config class defaults
/// `tie_word_embeddings` to true
/// (`CONFIG_MAPPING[model_type]().tie_word_embeddings`, the same in transformers 4.57.1 and
/// 5.24.0; every other class ckpt models, LLaMA's among them, defaults to false). The default
/// matters: transformers 4's `save_pretrained` leaves out every key equal to both its class's and
/// the base class's default, so a tied Gemma 2, Cohere or SmolLM3 saved by it has no
/// `tie_word_embeddings` at all, and no `lm_head.weight`.
const TIED_BY_DEFAULT: &[(&str, &str)] = &[
    ("bloom", "BloomForCausalLM"),
    ("cohere", "CohereForCausalLM"),
    ("cohere2", "Cohere2ForCausalLM"),
    ("ernie4_5", "Ernie4_5ForCausalLM"),
    ("falcon", "FalconForCausalLM"),
    ("gemma", "GemmaForCausalLM"),
    ("gemma2", "Gemma2ForCausalLM"),
    ("gemma3", "Gemma3ForConditionalGeneration"),
    ("gemma3_text", "Gemma3ForCausalLM"),
    ("gemma3n_text", "Gemma3nForCausalLM"),
    ("gpt2", "GPT2LMHeadModel"),
    ("gpt_bigcode", "GPTBigCodeForCausalLM"),
    ("gpt_neo", "GPTNeoForCausalLM"),
    ("jetmoe", "JetMoeForCausalLM"),
    ("lfm2", "Lfm2ForCausalLM"),
    ("minicpm3", "MiniCPM3ForCausalLM"),
    ("mpt", "MptForCausalLM"),
    ("opt", "OPTForCausalLM"),
    ("recurrent_gemma", "RecurrentGemmaForCausalLM"),
    ("smollm3", "SmolLM3ForCausalLM"),
    ("starcoder2", "Starcoder2ForCausalLM"),
    ("vaultgemma", "VaultGemmaForCausalLM"),
    ("zamba2", "Zamba2ForCausalLM"),
];

/// `tie_word_embeddings` of a config that does not write it: true where the `model_type`'s
/// transformers class says so ([`TIED_BY_DEFAULT`]; without a `model_type`, the class
/// `architectures` names, which is what loads it), else unknown (read as false, LLaMA's default).
pub(crate) fn tied_by_default(model_type: Option<&str>, architectures: &[String]) -> Option<bool> {
    let tied = match model_type {
        Some(m) => TIED_BY_DEFAULT.iter().any(|(t, _)| *t == m),
        None => architectures
            .first()
            .is_some_and(|a| TIED_BY_DEFAULT.iter().any(|(_, c)| c == a)),
    };
    tied.then_some(true)
}

/// The hyperparameters the tool consults, plus the raw JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfig {
    /// Path of the file it was read from (empty for a config inferred from shapes).
    pub path: PathBuf,
    /// Which spelling the file uses; `None` for an inferred config.
    pub source: Option<ConfigSource>,
    /// The whole JSON object, key order preserved.
    pub raw: Map<String, Value>,
    /// `model_type`.
    pub model_type: Option<String>,
    /// `architectures`.
    pub architectures: Vec<String>,
    /// `hidden_size` (`dim` in params.json).
    pub hidden_size: Option<usize>,
    /// `num_hidden_layers` (`n_layers`).
    pub num_hidden_layers: Option<usize>,
    /// `num_attention_heads` (`n_heads`).
    pub num_attention_heads: Option<usize>,
    /// `num_key_value_heads` (`n_kv_heads`).
    pub num_key_value_heads: Option<usize>,
    /// `head_dim`, when given explicitly.
    pub head_dim: Option<usize>,
    /// `intermediate_size` (`hidden_dim` in mistral-inference params).
    pub intermediate_size: Option<usize>,
    /// `vocab_size`.
    pub vocab_size: Option<usize>,
    /// `rms_norm_eps` (`norm_eps`).
    pub rms_norm_eps: Option<f64>,
    /// `rope_theta`, from either spelling.
    pub rope_theta: Option<f64>,
    /// RoPE scaling, from either spelling; `None` for the default rotary embedding.
    pub rope_scaling: Option<RopeScaling>,
    /// How the two RoPE spellings contradict each other, when the config has both and they do
    /// (loaders then read different positions: see [`rope_conflict`]).
    pub rope_conflict: Option<String>,
    /// `tie_word_embeddings`; when `config.json` leaves it out, the default of the `model_type`'s
    /// transformers class where that is true (Gemma, Cohere, SmolLM3, GPT-2, ...), else `None`.
    pub tie_word_embeddings: Option<bool>,
    /// `torch_dtype` or `dtype`.
    pub dtype: Option<String>,
    /// `hidden_act`.
    pub hidden_act: Option<String>,
    /// `attention_bias`.
    pub attention_bias: Option<bool>,
    /// `mlp_bias`.
    pub mlp_bias: Option<bool>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<usize>,
    /// `sliding_window` (null and absent are both `None`).
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// Read and parse a `config.json` or `params.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_limited(path, MAX_CONFIG_BYTES)?;
        let source = if path.file_name().is_some_and(|n| n == "params.json") {
            ConfigSource::ParamsJson
        } else {
            ConfigSource::ConfigJson
        };
        Self::parse(&bytes, source)
            .map_err(|e| e.file(path))
            .map(|mut c| {
                c.path = path.to_path_buf();
                c
            })
    }

    /// Parse config bytes of the given spelling.
    pub fn parse(bytes: &[u8], source: ConfigSource) -> Result<Self> {
        let value: Value = crate::json::from_slice_nonfinite(bytes)
            .map_err(|e| Error::bad_data(format!("not valid JSON: {e}")))?;
        let Value::Object(raw) = value else {
            return Err(Error::bad_data("the config must be a JSON object"));
        };
        match source {
            ConfigSource::ConfigJson => Self::from_hf(raw),
            ConfigSource::ParamsJson => Self::from_params(raw),
        }
    }

    fn from_hf(raw: Map<String, Value>) -> Result<Self> {
        let g = Getter(&raw);
        let (mut rope_theta, mut rope_scaling) = (g.f64("rope_theta")?, None);
        if let Some(v) = raw.get("rope_scaling") {
            rope_scaling = parse_scaling(v, "rope_scaling")?;
        }
        // transformers 5: {"rope_type": "default"|"llama3"|..., "rope_theta": ..., "factor": ...}
        if let Some(v) = raw.get("rope_parameters").filter(|v| !v.is_null()) {
            let Value::Object(p) = v else {
                return Err(Error::bad_data("key `rope_parameters` must be an object"));
            };
            let pg = Getter(p);
            if let Some(t) = pg.f64("rope_theta")? {
                rope_theta = Some(t);
            }
            if let Some(s) = parse_scaling(v, "rope_parameters")? {
                rope_scaling = Some(s);
            }
        }
        Ok(ModelConfig {
            path: PathBuf::new(),
            source: Some(ConfigSource::ConfigJson),
            model_type: g.string("model_type")?,
            architectures: g.strings("architectures")?,
            hidden_size: g.usize("hidden_size")?,
            num_hidden_layers: g.usize("num_hidden_layers")?,
            num_attention_heads: g.usize("num_attention_heads")?,
            num_key_value_heads: g.usize("num_key_value_heads")?,
            head_dim: g.usize("head_dim")?,
            intermediate_size: g.usize("intermediate_size")?,
            vocab_size: g.usize("vocab_size")?,
            rms_norm_eps: g.f64("rms_norm_eps")?,
            rope_theta,
            rope_scaling,
            rope_conflict: rope_conflict(&raw)?,
            tie_word_embeddings: match g.bool("tie_word_embeddings")? {
                Some(tied) => Some(tied),
                None => tied_by_default(
                    g.string("model_type")?.as_deref(),
                    &g.strings("architectures")?,
                ),
            },
            dtype: match g.string("torch_dtype")? {
                Some(d) => Some(d),
                None => g.string("dtype")?,
            },
            hidden_act: g.string("hidden_act")?,
            attention_bias: g.bool("attention_bias")?,
            mlp_bias: g.bool("mlp_bias")?,
            max_position_embeddings: g.usize("max_position_embeddings")?,
            sliding_window: g.usize("sliding_window")?,
            raw,
        })
    }

    fn from_params(raw: Map<String, Value>) -> Result<Self> {
        let g = Getter(&raw);
        let rope_scaling = if g.bool("use_scaled_rope")? == Some(true) {
            // Llama 3.1 original params: the llama3 scaling with Meta's fixed constants.
            Some(RopeScaling {
                rope_type: "llama3".into(),
                factor: Some(g.f64("rope_scaling_factor")?.unwrap_or(8.0)),
                original_max_position_embeddings: Some(8192),
                low_freq_factor: Some(1.0),
                high_freq_factor: Some(4.0),
            })
        } else {
            None
        };
        // Meta writes vocab_size -1 when the tokenizer decides; treat it as unknown.
        let vocab = match raw.get("vocab_size") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v < 0) => None,
            _ => g.usize("vocab_size")?,
        };
        Ok(ModelConfig {
            path: PathBuf::new(),
            source: Some(ConfigSource::ParamsJson),
            model_type: None,
            architectures: Vec::new(),
            hidden_size: g.usize("dim")?,
            num_hidden_layers: g.usize("n_layers")?,
            num_attention_heads: g.usize("n_heads")?,
            num_key_value_heads: match g.usize("n_kv_heads")? {
                Some(v) => Some(v),
                None => g.usize("n_heads")?,
            },
            head_dim: g.usize("head_dim")?,
            intermediate_size: g.usize("hidden_dim")?,
            vocab_size: vocab,
            rms_norm_eps: g.f64("norm_eps")?,
            rope_theta: Some(g.f64("rope_theta")?.unwrap_or(10000.0)),
            rope_scaling,
            rope_conflict: None,
            tie_word_embeddings: Some(false),
            dtype: None,
            hidden_act: Some("silu".into()),
            attention_bias: Some(false),
            mlp_bias: Some(false),
            max_position_embeddings: None,
            sliding_window: g.usize("sliding_window")?,
            raw,
        })
    }

    /// The RoPE scaling type (`rope_type`, or the older `type`), `default` when there is none.
    pub fn rope_type(&self) -> &str {
        self.rope_scaling
            .as_ref()
            .map_or("default", |s| s.rope_type.as_str())
    }

    /// The head dimension: explicit `head_dim`, else `hidden_size / num_attention_heads` when it divides.
    pub fn resolved_head_dim(&self) -> Option<usize> {
        if let Some(h) = self.head_dim {
            return Some(h);
        }
        let (h, n) = (self.hidden_size?, self.num_attention_heads?);
        h.checked_rem(n)
            .filter(|&r| r == 0)
            .and_then(|_| h.checked_div(n))
    }

    /// The key/value head count: `num_key_value_heads`, else the attention head count (MHA).
    pub fn resolved_kv_heads(&self) -> Option<usize> {
        self.num_key_value_heads.or(self.num_attention_heads)
    }

    /// A raw key's value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }
}

/// Read a whole file of at most `limit` bytes, with errors naming it.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    // O_NONBLOCK: opening a FIFO must not block forever (RELIABILITY.md A33); fstat then rejects it.
    let (f, meta) = super::shard::open_regular(path)?;
    if meta.len() > limit {
        return Err(Error::bad_data(format!(
            "file is {} bytes, over the limit of {limit}",
            meta.len()
        ))
        .file(path));
    }
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, "cannot read", e))?;
    Ok(buf)
}

/// Where a config that spells RoPE both ways (transformers 5's `rope_parameters` beside the top-level
/// `rope_theta` / `rope_scaling` of transformers 4) says two different things: transformers 4 and
/// candle read only the top-level keys, transformers 5 merges the two (a non-null `rope_scaling`
/// wins, the theta comes from either), so such a file has no one meaning. `None` when the spellings
/// agree or only one is there (a transformers 5 config with only `rope_parameters` is read the
/// same by every transformers 5 loader; `ckpt check` L001 reports what legacy readers make of it).
pub fn rope_conflict(raw: &Map<String, Value>) -> Result<Option<String>> {
    let Some(params @ Value::Object(p)) = raw.get("rope_parameters") else {
        return Ok(None);
    };
    let mut why = Vec::new();
    if let (Some(t4), Some(t5)) = (Getter(raw).f64("rope_theta")?, Getter(p).f64("rope_theta")?)
        && t4 != t5
    {
        why.push(format!(
            "top-level `rope_theta` {t4} against `rope_parameters.rope_theta` {t5}"
        ));
    }
    if let (Some(f4), Some(f5)) = (
        Getter(raw).f64("partial_rotary_factor")?,
        Getter(p).f64("partial_rotary_factor")?,
    ) && f4 != f5
    {
        why.push(format!(
            "top-level `partial_rotary_factor` {f4} against `rope_parameters.partial_rotary_factor` {f5}"
        ));
    }
    if let Some(s4) = raw.get("rope_scaling").filter(|v| !v.is_null()) {
        let (a, b) = (
            parse_scaling(s4, "rope_scaling")?,
            parse_scaling(params, "rope_parameters")?,
        );
        if a != b {
            let show = |s: &Option<RopeScaling>| match s {
                None => "default (unscaled)".to_string(),
                Some(s) => match s.factor {
                    Some(f) => format!("`{}` factor {f}", s.rope_type),
                    None => format!("`{}`", s.rope_type),
                },
            };
            why.push(format!(
                "`rope_scaling` {} against `rope_parameters` {}{}",
                show(&a),
                show(&b),
                if a.as_ref().map(|s| &s.rope_type) == b.as_ref().map(|s| &s.rope_type) {
                    " (other parameters differ)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok((!why.is_empty()).then(|| why.join("; ")))
}

/// The refusal of a config whose two RoPE spellings disagree ([`rope_conflict`]).
pub fn rope_conflict_error(c: &ModelConfig, why: &str) -> Error {
    Error::unsupported(format!(
        "the config spells RoPE both ways and they disagree ({}): transformers 4 and candle read the top-level keys, transformers 5 merges them, so the checkpoint's positions mean different things to different loaders and ckpt will not pick one (write one consistent pair; `ckpt check` reports a `rope_theta` or scaling pair as L001)",
        crate::error::escape(why)
    ))
    .file(&c.path)
}

fn parse_scaling(v: &Value, key: &str) -> Result<Option<RopeScaling>> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(Error::bad_data(format!(
                "key `{key}` must be an object or null"
            )));
        }
    };
    let g = Getter(obj);
    let rope_type = match g.string("rope_type")? {
        Some(t) => t,
        None => g.string("type")?.unwrap_or_else(|| "default".into()),
    };
    if rope_type == "default" {
        return Ok(None);
    }
    Ok(Some(RopeScaling {
        rope_type,
        factor: g.f64("factor")?,
        original_max_position_embeddings: g.usize("original_max_position_embeddings")?,
        low_freq_factor: g.f64("low_freq_factor")?,
        high_freq_factor: g.f64("high_freq_factor")?,
    }))
}

/// Typed access to keys of a JSON object; a present key of the wrong type is an error naming it,
/// `null` counts as absent.
struct Getter<'a>(&'a Map<String, Value>);

impl Getter<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().and_then(|v| usize::try_from(v).ok()) {
                Some(v) => Ok(Some(v)),
                None => Err(Error::bad_data(format!(
                    "key `{key}` must be a non-negative integer, found {n}"
                ))),
            },
            Some(other) => Err(type_error(key, "a non-negative integer", other)),
        }
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(Error::bad_data(format!(
                    "key `{key}` must be a finite number"
                ))),
            },
            Some(other) => Err(type_error(key, "a number", other)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(type_error(key, "true or false", other)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(type_error(key, "a string", other)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_error(key, "an array of strings", other)),
                })
                .collect(),
            Some(other) => Err(type_error(key, "an array of strings", other)),
        }
    }
}

fn type_error(key: &str, expected: &str, found: &Value) -> Error {
    let mut shown = crate::error::escape_value(found);
    if shown.chars().count() > 60 {
        shown = shown.chars().take(60).collect();
        shown.push_str("...");
    }
    Error::bad_data(format!("key `{key}` must be {expected}, found {shown}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_rope_spellings() {
        let v4 = br#"{"model_type":"llama","hidden_size":64,"num_attention_heads":4,"rope_theta":500000.0,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":32}}"#;
        let c = ModelConfig::parse(v4, ConfigSource::ConfigJson).unwrap();
        assert_eq!(c.rope_theta, Some(500000.0));
        assert_eq!(c.rope_scaling.as_ref().unwrap().rope_type, "llama3");
        assert_eq!(c.resolved_head_dim(), Some(16));
        let v5 = br#"{"model_type":"llama","rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"original_max_position_embeddings":32}}"#;
        let c5 = ModelConfig::parse(v5, ConfigSource::ConfigJson).unwrap();
        assert_eq!(c5.rope_theta, Some(500000.0));
        assert_eq!(
            c5.rope_scaling.unwrap().original_max_position_embeddings,
            Some(32)
        );
        let dflt = br#"{"rope_parameters":{"rope_type":"default","rope_theta":5000000.0}}"#;
        let c = ModelConfig::parse(dflt, ConfigSource::ConfigJson).unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling), (Some(5e6), None));
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (text, key) in [
            (
                r#"{"hidden_size":"4096"}"#,
                "`hidden_size` must be a non-negative integer",
            ),
            (
                r#"{"hidden_size":4096.5}"#,
                "`hidden_size` must be a non-negative integer",
            ),
            (
                r#"{"tie_word_embeddings":1}"#,
                "`tie_word_embeddings` must be true or false",
            ),
            (
                r#"{"architectures":"Llama"}"#,
                "`architectures` must be an array of strings",
            ),
            (r#"[1]"#, "must be a JSON object"),
        ] {
            let e = ModelConfig::parse(text.as_bytes(), ConfigSource::ConfigJson).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn params_json_maps_meta_keys() {
        let p = br#"{"dim":64,"n_layers":2,"n_heads":4,"n_kv_heads":2,"vocab_size":-1,"norm_eps":1e-5,"rope_theta":500000.0,"multiple_of":32}"#;
        let c = ModelConfig::parse(p, ConfigSource::ParamsJson).unwrap();
        assert_eq!(c.hidden_size, Some(64));
        assert_eq!(c.num_key_value_heads, Some(2));
        assert_eq!(c.vocab_size, None);
        assert_eq!(c.rope_theta, Some(500000.0));
    }

    #[test]
    fn raw_key_order_is_kept_and_nonfinite_tolerated() {
        let t = br#"{"z":1,"a":2,"time_step_limit":[0.0, Infinity],"m":NaN}"#;
        let c = ModelConfig::parse(t, ConfigSource::ConfigJson).unwrap();
        let keys: Vec<_> = c.raw.keys().cloned().collect();
        assert_eq!(keys, ["z", "a", "time_step_limit", "m"]);
    }
}
