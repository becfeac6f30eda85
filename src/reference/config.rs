//! The hyperparameters the reference forward pass runs with, resolved from a view's
//! [`ModelConfig`] exactly as Hugging Face's `LlamaConfig` would resolve them, and the rotary
//! frequency tables.
//!
//! [`Config::resolve`] reads sizes (every product checked against overflow), rotary scaling and
//! the norm epsilon; the math (activation, rotary dimensions, windows, ...) is stated separately
//! by a [`super::Math`]. [`Config::from_model_config`] is the LLaMA path: it also refuses what
//! LLaMA's math cannot reproduce, with the reason: another activation (Gemma's
//! `gelu_pytorch_tanh`), partial rotary embeddings, and (at run time, [`Config::check_seq_len`])
//! a sliding window shorter than the input. Unknown rope scalings (`yarn`, `longrope`) are
//! refused by both. Silent approximation would defeat the purpose of a reference.
//!
//! Rotary frequencies mirror transformers' `modeling_rope_utils.py`
//! (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_dynamic_ntk_parameters`, `_compute_llama3_parameters`) and `LlamaRotaryEmbedding`:
//! `inv_freq` in f32, `freqs = position * inv_freq` in f32, then `cos`/`sin`.

use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result, escape};

/// `LlamaConfig` default for `rope_theta`.
pub const DEFAULT_ROPE_THETA: f64 = 10000.0;
/// `LlamaConfig` default for `rms_norm_eps`.
pub const DEFAULT_RMS_NORM_EPS: f64 = 1e-6;
/// `LlamaConfig` default for `max_position_embeddings` (used by dynamic NTK scaling).
pub const DEFAULT_MAX_POSITION_EMBEDDINGS: usize = 2048;

/// How rotary frequencies are scaled (`rope_scaling.rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// `linear`: every inverse frequency divided by `factor` (position interpolation).
    Linear {
        /// `factor`.
        factor: f64,
    },
    /// `dynamic`: NTK-aware base change once the input is longer than `max_position_embeddings`.
    Dynamic {
        /// `factor`.
        factor: f64,
        /// `max_position_embeddings` of the config.
        max_position_embeddings: usize,
    },
    /// `llama3`: Llama 3.1's wavelength-dependent interpolation.
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: usize,
    },
}

/// The resolved model hyperparameters (llama2.c's `Config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `hidden_size`: width of the residual stream.
    pub hidden: usize,
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads` (GQA: each kv head serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// `head_dim` (explicit, or `hidden / heads`).
    pub head_dim: usize,
    /// `heads * head_dim`: width of the queries (checked against overflow).
    pub q_dim: usize,
    /// `kv_heads * head_dim`: width of the keys and values (checked against overflow).
    pub kv_dim: usize,
    /// Dimensions of each head that rotate (`head_dim` unless the math says partial rotary); the
    /// rotary frequencies are computed over this many dimensions, as transformers does.
    pub rotary_dim: usize,
    /// `intermediate_size`: width of the MLP.
    pub intermediate: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// `rms_norm_eps` (or `layer_norm_eps` when the config has only that): every norm's epsilon.
    pub rms_norm_eps: f32,
    /// `rope_theta`.
    pub rope_theta: f64,
    /// `rope_scaling`.
    pub rope_scaling: RopeScaling,
    /// `attention_bias`: q/k/v/o projections carry biases.
    pub attention_bias: bool,
    /// `mlp_bias`: gate/up/down projections carry biases.
    pub mlp_bias: bool,
    /// `tie_word_embeddings`: the output projection is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Sliding-window attention span, when the config enables one: inputs longer than it are refused.
    pub sliding_window: Option<usize>,
}

impl Config {
    /// Resolve a view's config for LLaMA's math. Missing optional values take `LlamaConfig`'s
    /// defaults; sizes must be present; anything LLaMA's math cannot run exactly (another
    /// activation, partial rotary) is refused with the reason.
    pub fn from_model_config(c: &ModelConfig) -> Result<Config> {
        check_activation(c)?;
        check_partial_rotary(c)?;
        Config::resolve(c)
    }

    /// Resolve the sizes, rotary frequencies and norm epsilon of a view's config without judging
    /// its math: the caller states the math separately (a [`super::Math`]), which decides the
    /// activation, the rotary dimensions and the attention windows. Unknown rope scaling types
    /// and inconsistent or overflowing sizes are still refused.
    pub fn resolve(c: &ModelConfig) -> Result<Config> {
        if let Some(why) = &c.rope_conflict {
            return Err(crate::checkpoint::config::rope_conflict_error(c, why));
        }
        // Null where every class needs a number: transformers reads None and cannot build the
        // model (4.57 and 5.24 raise), so there is nothing to compute. (Absent is the class's
        // default; a `rope_theta` given in `rope_parameters` is not absent.)
        for key in ["rms_norm_eps", "rope_theta"] {
            let in_parameters = key == "rope_theta"
                && c.get("rope_parameters")
                    .and_then(|p| p.get("rope_theta"))
                    .is_some_and(|v| !v.is_null());
            if matches!(c.get(key), Some(serde_json::Value::Null)) && !in_parameters {
                return Err(null_key(key));
            }
        }
        let need = |v: Option<usize>, key: &str| {
            v.ok_or_else(|| {
                Error::bad_data(format!(
                    "the config has no `{key}`, which the forward pass needs"
                ))
            })
        };
        let hidden = need(c.hidden_size, "hidden_size")?;
        let layers = need(c.num_hidden_layers, "num_hidden_layers")?;
        let heads = need(c.num_attention_heads, "num_attention_heads")?;
        let intermediate = need(c.intermediate_size, "intermediate_size")?;
        let vocab = need(c.vocab_size, "vocab_size")?;
        let kv_heads = c.resolved_kv_heads().unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::bad_data(format!(
                "`num_attention_heads` {heads} is not a positive multiple of `num_key_value_heads` {kv_heads}"
            )));
        }
        let head_dim = match c.head_dim {
            Some(h) => h,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(Error::bad_data(format!(
                    "`hidden_size` {hidden} is not divisible by `num_attention_heads` {heads} and there is no `head_dim`"
                )));
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::bad_data(format!(
                "head dimension {head_dim} must be even and non-zero for rotary embeddings"
            )));
        }
        let width = |n: usize, key: &str| {
            n.checked_mul(head_dim).ok_or_else(|| {
                Error::bad_data(format!(
                    "`{key}` {n} x head dimension {head_dim} overflows: the config describes no real model"
                ))
            })
        };
        let q_dim = width(heads, "num_attention_heads")?;
        let kv_dim = width(kv_heads, "num_key_value_heads")?;
        if hidden == 0 || layers == 0 || intermediate == 0 || vocab == 0 {
            return Err(Error::bad_data(
                "`hidden_size`, `num_hidden_layers`, `intermediate_size` and `vocab_size` must be non-zero",
            ));
        }
        let rope_scaling = resolve_scaling(c)?;
        let rms_norm_eps = c
            .rms_norm_eps
            .or_else(|| c.get("layer_norm_eps").and_then(|v| v.as_f64()))
            .unwrap_or(DEFAULT_RMS_NORM_EPS);
        if !(rms_norm_eps >= 0.0 && rms_norm_eps.is_finite()) {
            return Err(Error::bad_data(format!(
                "the norm epsilon must be a finite non-negative number, found {rms_norm_eps}"
            )));
        }
        let rope_theta = c.rope_theta.unwrap_or(DEFAULT_ROPE_THETA);
        if rope_theta <= 0.0 {
            return Err(Error::bad_data(format!(
                "`rope_theta` must be positive, found {rope_theta}"
            )));
        }
        // Qwen2-style configs carry a `sliding_window` value but switch it off.
        let window_on = !matches!(
            c.get("use_sliding_window"),
            Some(serde_json::Value::Bool(false))
        );
        Ok(Config {
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            q_dim,
            kv_dim,
            rotary_dim: head_dim,
            intermediate,
            vocab,
            rms_norm_eps: rms_norm_eps as f32,
            rope_theta,
            rope_scaling,
            attention_bias: c.attention_bias.unwrap_or(false),
            mlp_bias: c.mlp_bias.unwrap_or(false),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            sliding_window: c.sliding_window.filter(|_| window_on),
        })
    }

    /// Refuse an input the config cannot run exactly (today: one longer than the sliding window).
    pub fn check_seq_len(&self, seq: usize) -> Result<()> {
        if let Some(w) = self.sliding_window
            && seq > w
        {
            return Err(Error::unsupported(format!(
                "the config's `sliding_window` is {w} tokens but the input has {seq}: \
                 the reference implements full causal attention only"
            )));
        }
        Ok(())
    }

    /// Rotary inverse frequencies (`rotary_dim / 2` values) for an input of `seq` positions, in
    /// f32 as transformers computes them (over `rotary_dim` dimensions: `partial_rotary_factor`
    /// shortens the frequency table, it does not subsample it).
    pub fn inv_freq(&self, seq: usize) -> Vec<f32> {
        let dim = self.rotary_dim;
        let mut base = self.rope_theta as f32;
        if let RopeScaling::Dynamic {
            factor,
            max_position_embeddings: max_pos,
        } = self.rope_scaling
        {
            // Recomputed only when the input outgrows `max_position_embeddings`; torch evaluates
            // the new base in f32 (the sequence length is a tensor).
            let seq = seq.max(max_pos) as f32;
            let factor = factor as f32;
            let grown = factor * seq / max_pos as f32 - (factor - 1.0);
            base *= grown.powf(dim as f32 / (dim as f32 - 2.0));
        }
        let mut inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim as f32))
            .collect();
        match self.rope_scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => {}
            RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: old,
            } => {
                let (factor, low, high, old) = (factor as f32, low as f32, high as f32, old as f32);
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor; // long wavelengths: fully interpolated
                    } else if wavelen >= high_wavelen {
                        // medium: blend the interpolated and the original frequency
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    } // short wavelengths: unchanged
                }
            }
        }
        inv
    }

    /// `cos` and `sin` tables `[seq, rotary_dim / 2]` for positions `0..seq` (identical for every
    /// sequence of a batch: no padding, positions start at 0).
    pub fn rope_tables(&self, seq: usize) -> (Vec<f32>, Vec<f32>) {
        let inv = self.inv_freq(seq);
        let half = inv.len();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in 0..seq {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// Parameter count of the model these dimensions describe (for FLOP estimates).
    /// Saturates at `u64::MAX` for sizes no real model has.
    pub fn parameter_count(&self) -> u64 {
        let (h, q, kv, i) = (
            self.hidden as u64,
            self.q_dim as u64,
            self.kv_dim as u64,
            self.intermediate as u64,
        );
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let layer = m(m(h, q), 2)
            .saturating_add(m(m(h, kv), 2))
            .saturating_add(m(m(3, h), i))
            .saturating_add(m(2, h));
        let head = if self.tie_word_embeddings { 1 } else { 2 };
        m(self.layers as u64, layer)
            .saturating_add(m(m(head, self.vocab as u64), h))
            .saturating_add(h)
    }
}

fn check_activation(c: &ModelConfig) -> Result<()> {
    let act = c.hidden_act.as_deref().unwrap_or("silu");
    if act != "silu" {
        return Err(Error::unsupported(format!(
            "`hidden_act` is `{}`: the reference LLaMA forward pass implements `silu` only",
            escape(act)
        )));
    }
    // Gemma spells its activation `hidden_activation`.
    if let Some(serde_json::Value::String(a)) = c.get("hidden_activation")
        && a != "silu"
    {
        return Err(Error::unsupported(format!(
            "`hidden_activation` is `{}`: the reference LLaMA forward pass implements `silu` only",
            escape(a)
        )));
    }
    Ok(())
}

fn check_partial_rotary(c: &ModelConfig) -> Result<()> {
    let value = crate::mapping::math::lookup(c, "partial_rotary_factor");
    match value.and_then(|v| v.as_f64()) {
        Some(f) if f != 1.0 => Err(Error::unsupported(format!(
            "`partial_rotary_factor` is {f}: the reference rotates whole heads only"
        ))),
        _ => Ok(()),
    }
}

fn resolve_scaling(c: &ModelConfig) -> Result<RopeScaling> {
    let Some(s) = &c.rope_scaling else {
        return Ok(RopeScaling::None);
    };
    let factor = || {
        s.factor.filter(|f| *f > 0.0).ok_or_else(|| {
            Error::bad_data(format!(
                "rope scaling `{}` needs a positive `factor`",
                escape(&s.rope_type)
            ))
        })
    };
    let need = |v: Option<f64>, key: &str| {
        v.ok_or_else(|| Error::bad_data(format!("rope scaling `llama3` needs `{key}`")))
    };
    match s.rope_type.as_str() {
        "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
        "dynamic" => Ok(RopeScaling::Dynamic {
            factor: factor()?,
            max_position_embeddings: c
                .max_position_embeddings
                .unwrap_or(DEFAULT_MAX_POSITION_EMBEDDINGS)
                .max(1),
        }),
        "llama3" => {
            let low = need(s.low_freq_factor, "low_freq_factor")?;
            let high = need(s.high_freq_factor, "high_freq_factor")?;
            let old = s.original_max_position_embeddings.ok_or_else(|| {
                Error::bad_data("rope scaling `llama3` needs `original_max_position_embeddings`")
            })?;
            if high <= low || low <= 0.0 {
                return Err(Error::bad_data(format!(
                    "rope scaling `llama3` needs 0 < `low_freq_factor` < `high_freq_factor`, found {low} and {high}"
                )));
            }
            Ok(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: old,
            })
        }
        other => Err(Error::unsupported(format!(
            "rope scaling `{}` is not implemented by the reference (it runs default, `linear`, `dynamic` and `llama3`)",
            escape(other)
        ))),
    }
}

/// A config key set to null where transformers' classes need a value.
pub(crate) fn null_key(key: &str) -> Error {
    Error::unsupported(format!(
        "config key `{}` is null where the model needs a value: transformers' class reads None there and cannot build the model; give it a value, or leave the key out for its class's default",
        escape(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::config::ConfigSource;

    fn parse(s: &str) -> Result<Config> {
        Config::from_model_config(&ModelConfig::parse(s.as_bytes(), ConfigSource::ConfigJson)?)
    }

    const BASE: &str = r#""hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":96,"vocab_size":256"#;

    #[test]
    fn defaults_are_llama_config_defaults() {
        let c = parse(&format!("{{{BASE}}}")).unwrap();
        assert_eq!(
            (c.kv_heads, c.head_dim, c.rope_theta, c.rms_norm_eps),
            (4, 16, 10000.0, 1e-6)
        );
        assert!(!c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
        assert_eq!(c.rope_scaling, RopeScaling::None);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        for (extra, reason) in [
            (
                r#""hidden_act":"gelu_pytorch_tanh""#,
                "`hidden_act` is `gelu_pytorch_tanh`",
            ),
            (
                r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
                "rope scaling `yarn` is not implemented",
            ),
            (r#""partial_rotary_factor":0.5"#, "`partial_rotary_factor`"),
        ] {
            let e = parse(&format!("{{{BASE},{extra}}}")).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{extra}");
            assert!(e.to_string().contains(reason), "{extra}: {e}");
        }
        let c = parse(&format!("{{{BASE},\"sliding_window\":8}}")).unwrap();
        assert!(c.check_seq_len(8).is_ok());
        let e = c.check_seq_len(9).unwrap_err();
        assert!(e.to_string().contains("`sliding_window` is 8"), "{e}");
        let off = parse(&format!(
            "{{{BASE},\"sliding_window\":8,\"use_sliding_window\":false}}"
        ))
        .unwrap();
        assert!(off.check_seq_len(100).is_ok());
    }

    #[test]
    fn sizes_that_overflow_are_errors_not_wraps() {
        // 2^62 heads of 4 dims: heads * head_dim wraps to 0 in a release build
        let big = 1usize << 62;
        let e = parse(&format!(
            r#"{{"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":{big},"num_key_value_heads":{big},"head_dim":4,"intermediate_size":96,"vocab_size":256}}"#
        ))
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadData);
        assert!(e.to_string().contains("overflows"), "{e}");
        let c = parse(&format!(
            r#"{{"hidden_size":{big},"num_hidden_layers":{big},"num_attention_heads":{},"intermediate_size":{big},"vocab_size":{big}}}"#,
            big / 2
        ))
        .unwrap();
        assert_eq!(c.parameter_count(), u64::MAX);
    }

    #[test]
    fn resolve_leaves_the_math_to_the_caller() {
        // what LLaMA's math refuses, resolve accepts (a Math states activation and rotary dims)
        for extra in [
            r#""hidden_act":"gelu_pytorch_tanh""#,
            r#""partial_rotary_factor":0.5"#,
        ] {
            let mc = ModelConfig::parse(
                format!("{{{BASE},{extra}}}").as_bytes(),
                ConfigSource::ConfigJson,
            )
            .unwrap();
            assert!(Config::from_model_config(&mc).is_err(), "{extra}");
            let c = Config::resolve(&mc).unwrap();
            assert_eq!((c.q_dim, c.kv_dim, c.rotary_dim), (64, 64, 16));
        }
        // LayerNorm configs spell the epsilon `layer_norm_eps`
        let c = parse(&format!("{{{BASE},\"layer_norm_eps\":0.25}}")).unwrap();
        assert_eq!(c.rms_norm_eps, 0.25);
        let mut c = parse(&format!("{{{BASE}}}")).unwrap();
        c.rotary_dim = 8;
        let inv = c.inv_freq(4);
        assert_eq!(inv.len(), 4);
        assert!((inv[1] - 10000f32.powf(-2.0 / 8.0)).abs() < 1e-7);
    }

    #[test]
    fn scaled_frequencies_follow_transformers() {
        let plain = parse(&format!("{{{BASE}}}")).unwrap();
        let inv = plain.inv_freq(16);
        assert_eq!(inv.len(), 8);
        assert_eq!(inv[0], 1.0);
        assert!((inv[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
        let lin = parse(&format!(
            r#"{{{BASE},"rope_scaling":{{"type":"linear","factor":4.0}}}}"#
        ))
        .unwrap();
        assert_eq!(lin.inv_freq(16)[3], inv[3] / 4.0);
        // dynamic: unchanged up to max_position_embeddings, a larger base beyond it
        let dynamic = parse(&format!(
            r#"{{{BASE},"max_position_embeddings":32,"rope_scaling":{{"type":"dynamic","factor":2.0}}}}"#
        ))
        .unwrap();
        assert_eq!(dynamic.inv_freq(32), inv);
        let grown = dynamic.inv_freq(64);
        let base = 10000f32 * (2.0f32 * 64.0 / 32.0 - 1.0).powf(16.0 / 14.0);
        assert!((grown[1] - 1.0 / base.powf(2.0 / 16.0)).abs() < 1e-7);
        // llama3 (wavelengths 6.3, 32.5, ... against bands 16 and 64): high frequencies kept,
        // low ones divided by the factor, a blend between
        let l3 = parse(&format!(
            r#"{{{BASE},"rope_theta":500000.0,"rope_scaling":{{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}}}}"#
        ))
        .unwrap();
        let f = l3.inv_freq(16);
        let raw: Vec<f32> = (0..8)
            .map(|i| 1.0 / 500000f32.powf((2 * i) as f32 / 16.0))
            .collect();
        assert_eq!(f[0], raw[0]);
        assert_eq!(f[7], raw[7] / 8.0);
        // wavelength 32.5 is in the medium band: smooth = (64 / 32.5 - 1) / 3
        let wavelen = 2.0 * std::f32::consts::PI / raw[1];
        let smooth = (64.0 / wavelen - 1.0) / 3.0;
        let want = (1.0 - smooth) * raw[1] / 8.0 + smooth * raw[1];
        assert!((f[1] - want).abs() <= 1e-7 * want, "{} vs {want}", f[1]);
        assert!(f[1] > raw[1] / 8.0 && f[1] < raw[1]);
    }
}
