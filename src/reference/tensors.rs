//! Finding the tensors a [`Math`] needs in a view, by canonical name with the shape the config
//! implies (candle's `VarBuilder` habit): every name, shape and dtype is checked before anything
//! is read, and errors name the tensor with its expected and found shape. Also the checks that a
//! math fits the config it runs with.

use super::config::Config;
use super::math::{Math, NormKind, NormPlacement, QkNorm};
use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::kernels::WDtype;
use crate::mapping::{View, ViewTensor};

/// A linear layer's tensors as found in the view: weight `[out, in]` and optional bias `[out]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Linear<'a> {
    pub(super) weight: &'a ViewTensor,
    pub(super) bias: Option<&'a ViewTensor>,
}

/// A norm's tensors: weight `[n]` and, for a LayerNorm with bias, bias `[n]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Norm<'a> {
    pub(super) weight: &'a ViewTensor,
    pub(super) bias: Option<&'a ViewTensor>,
}

/// One decoder layer's tensors (validated against the config and the math, not read yet). Which
/// norms exist depends on the placement: Pre has `attn_pre` (`input_layernorm`) and `mlp_pre`
/// (`post_attention_layernorm`); Post has `attn_post` (`post_attention_layernorm`) and
/// `mlp_post` (`post_feedforward_layernorm`); Sandwich has all four (`input_layernorm`,
/// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`);
/// Parallel has `attn_pre` (`input_layernorm`) only, whose output both blocks read.
#[derive(Debug)]
pub(super) struct LayerTensors<'a> {
    pub(super) attn_pre: Option<Norm<'a>>,  // [hidden]
    pub(super) attn_post: Option<Norm<'a>>, // [hidden]
    pub(super) mlp_pre: Option<Norm<'a>>,   // [hidden]
    pub(super) mlp_post: Option<Norm<'a>>,  // [hidden]
    /// Query norm weights: none; one `[head_dim]` shared by the heads, one `[heads * hd]`
    /// (whole rows) or `[heads, hd]` (a row per head); or one `[head_dim]` per head.
    pub(super) q_norm: Vec<&'a ViewTensor>,
    /// Key norm weights, as `q_norm` with `kv_heads`.
    pub(super) k_norm: Vec<&'a ViewTensor>,
    pub(super) q_proj: Linear<'a>,    // [heads * hd, hidden]
    pub(super) k_proj: Linear<'a>,    // [kv_heads * hd, hidden]
    pub(super) v_proj: Linear<'a>,    // [kv_heads * hd, hidden]
    pub(super) o_proj: Linear<'a>,    // [hidden, heads * hd]
    pub(super) gate_proj: Linear<'a>, // [intermediate, hidden]
    pub(super) up_proj: Linear<'a>,   // [intermediate, hidden]
    pub(super) down_proj: Linear<'a>, // [hidden, intermediate]
}

impl<'a> LayerTensors<'a> {
    /// Every tensor of the layer (for releasing their pages).
    pub(super) fn all(&self) -> Vec<&'a ViewTensor> {
        let mut ts = Vec::with_capacity(20);
        for n in [self.attn_pre, self.attn_post, self.mlp_pre, self.mlp_post]
            .into_iter()
            .flatten()
        {
            ts.push(n.weight);
            ts.extend(n.bias);
        }
        ts.extend(&self.q_norm);
        ts.extend(&self.k_norm);
        for lin in [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ] {
            ts.push(lin.weight);
            ts.extend(lin.bias);
        }
        ts
    }
}

/// The view's config, or an error naming the checkpoint.
pub(super) fn config_of<'v>(view: &'v View<'_>) -> Result<&'v crate::checkpoint::ModelConfig> {
    view.config.as_ref().ok_or_else(|| {
        Error::bad_data("the checkpoint has no config.json; the forward pass needs one")
            .file(&view.ckpt.path)
    })
}

/// Every math field that must agree with the config: per-layer tables of the right length, an
/// even rotary width within the head, positive windows and finite multipliers, and no
/// combination the forward pass does not implement.
pub(super) fn check_math(c: &Config, m: &Math) -> Result<()> {
    let bad = |what: String| Err(Error::bad_data(format!("the family's math: {what}")));
    if m.rope_layers.len() != c.layers || m.sliding_window.len() != c.layers {
        return bad(format!(
            "per-layer tables have {} rotary and {} window entries but the config has {} layers",
            m.rope_layers.len(),
            m.sliding_window.len(),
            c.layers
        ));
    }
    if !m.rotary_dim.is_multiple_of(2) || m.rotary_dim > c.head_dim {
        return bad(format!(
            "rotary dimension {} must be even and at most the head dimension {}",
            m.rotary_dim, c.head_dim
        ));
    }
    if let Some(i) = m.sliding_window.iter().position(|w| *w == Some(0)) {
        return bad(format!("layer {i} has a sliding window of 0 tokens"));
    }
    for (name, v) in [
        ("norm offset", m.norm_offset),
        ("embedding scale", m.embedding_scale),
        ("residual scale", m.residual_scale),
        ("attention scale", m.attention_scale),
        ("logits divisor", m.logits_divisor),
    ] {
        if !v.is_finite() {
            return bad(format!("the {name} is {v}"));
        }
    }
    if m.logits_divisor == 0.0 {
        return bad("the logits divisor is 0".into());
    }
    for (name, cap) in [
        ("attention soft-cap", m.attn_logit_softcap),
        ("final logit soft-cap", m.final_logit_softcap),
    ] {
        if let Some(cap) = cap
            && !(cap.is_finite() && cap > 0.0)
        {
            return bad(format!(
                "the {name} must be positive and finite, found {cap}"
            ));
        }
    }
    if m.norm_bias && m.norm != NormKind::LayerNorm {
        return bad("norm biases are only defined for LayerNorm".into());
    }
    Ok(())
}

/// A tensor of the view with the given shape, in a dtype the kernels read.
pub(super) fn weight<'a>(
    view: &'a View<'a>,
    name: String,
    shape: &[usize],
) -> Result<&'a ViewTensor> {
    let t = view.expect(&name, shape)?;
    wdtype(t.dtype).map_err(|e| e.file(&view.ckpt.path).tensor(&name))?;
    Ok(t)
}

/// `{prefix}.weight [width]` and, when the math's LayerNorm has biases, `{prefix}.bias [width]`.
pub(super) fn find_norm<'a>(
    view: &'a View<'a>,
    prefix: String,
    width: usize,
    m: &Math,
) -> Result<Norm<'a>> {
    Ok(Norm {
        weight: weight(view, format!("{prefix}.weight"), &[width])?,
        bias: match m.norm_bias {
            true => Some(weight(view, format!("{prefix}.bias"), &[width])?),
            false => None,
        },
    })
}

/// Every decoder layer's tensors, named and shaped as the math implies (`None`: LLaMA's math).
pub(super) fn find_layers<'a>(
    view: &'a View<'a>,
    c: &Config,
    math: Option<&Math>,
) -> Result<Vec<LayerTensors<'a>>> {
    let llama;
    let m = match math {
        Some(m) => m,
        None => {
            llama = Math::llama(0, c.head_dim);
            &llama
        }
    };
    let h = c.hidden;
    let linear = |prefix: String, rows: usize, cols: usize, bias: bool| -> Result<Linear<'a>> {
        Ok(Linear {
            weight: weight(view, format!("{prefix}.weight"), &[rows, cols])?,
            bias: match bias {
                true => Some(weight(view, format!("{prefix}.bias"), &[rows])?),
                false => None,
            },
        })
    };
    let hd = c.head_dim;
    let mut layers = Vec::with_capacity(c.layers.min(1 << 12));
    for i in 0..c.layers {
        let p = format!("model.layers.{i}");
        let norm = |name: &str| find_norm(view, format!("{p}.{name}"), h, m).map(Some);
        let (attn_pre, attn_post, mlp_pre, mlp_post) = match m.placement {
            NormPlacement::Pre => (
                norm("input_layernorm")?,
                None,
                norm("post_attention_layernorm")?,
                None,
            ),
            NormPlacement::Post => (
                None,
                norm("post_attention_layernorm")?,
                None,
                norm("post_feedforward_layernorm")?,
            ),
            NormPlacement::Parallel => (norm("input_layernorm")?, None, None, None),
            NormPlacement::Sandwich => (
                norm("input_layernorm")?,
                norm("post_attention_layernorm")?,
                norm("pre_feedforward_layernorm")?,
                norm("post_feedforward_layernorm")?,
            ),
        };
        // q/k norm weights: `{name}.weight` shaped by the kind, or, for norms with weights of
        // each head's own, `{name}.{h}.weight` per head when the one tensor is absent.
        let qk = |name: &str, heads: usize| -> Result<Vec<&'a ViewTensor>> {
            let one = format!("{p}.self_attn.{name}.weight");
            let shape = match m.qk_norm {
                QkNorm::None => return Ok(Vec::new()),
                QkNorm::PerHead => vec![hd],
                QkNorm::Full => vec![heads * hd],
                QkNorm::Heads if view.get(&one).is_none() => {
                    let each = |h: usize| format!("{p}.self_attn.{name}.{h}.weight");
                    if view.get(&each(0)).is_none() {
                        return Err(Error::bad_data(format!(
                            "the model needs this tensor [{heads}, {hd}], or one `{}` [{hd}] per head (StableLM's `{}`), and the checkpoint has neither",
                            each(0).replace(".0.weight", ".{h}.weight"),
                            name.replace("_norm", "_layernorm.norms.{h}")
                        ))
                        .file(&view.ckpt.path)
                        .tensor(&one));
                    }
                    return (0..heads).map(|h| weight(view, each(h), &[hd])).collect();
                }
                QkNorm::Heads => vec![heads, hd],
            };
            Ok(vec![weight(view, one, &shape)?])
        };
        let (ab, mb) = (c.attention_bias, c.mlp_bias);
        layers.push(LayerTensors {
            attn_pre,
            attn_post,
            mlp_pre,
            mlp_post,
            q_norm: qk("q_norm", c.heads)?,
            k_norm: qk("k_norm", c.kv_heads)?,
            q_proj: linear(format!("{p}.self_attn.q_proj"), c.q_dim, h, ab)?,
            k_proj: linear(format!("{p}.self_attn.k_proj"), c.kv_dim, h, ab)?,
            v_proj: linear(format!("{p}.self_attn.v_proj"), c.kv_dim, h, ab)?,
            o_proj: linear(format!("{p}.self_attn.o_proj"), h, c.q_dim, ab)?,
            gate_proj: linear(format!("{p}.mlp.gate_proj"), c.intermediate, h, mb)?,
            up_proj: linear(format!("{p}.mlp.up_proj"), c.intermediate, h, mb)?,
            down_proj: linear(format!("{p}.mlp.down_proj"), h, c.intermediate, mb)?,
        });
    }
    Ok(layers)
}

/// The kernels' element type for a stored dtype.
pub(super) fn wdtype(d: Dtype) -> Result<WDtype> {
    WDtype::from_dtype(d).ok_or_else(|| {
        Error::unsupported(format!(
            "dtype {d}: the reference forward pass reads F32, F16, BF16 and the GGUF types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"
        ))
    })
}
