//! The computation a checkpoint means, beyond its tensor names: the switches of the one reference
//! forward pass. A family file's `[math]` table (see `mappings/README.md`) is resolved against a
//! checkpoint's config into a [`Math`]; the forward pass reads nothing else to decide *what* to
//! compute. LLaMA is [`Math::llama`]; every other family is a handful of switches away from it, or
//! is refused with the reason (never approximated).
//!
//! Each switch mirrors the transformers class that defines it:
//! - rotary layout: `modeling_llama.py` `rotate_half` (half-split) vs `modeling_helium.py` /
//!   `modeling_glm.py` (interleaved pairs, `cos.repeat_interleave(2)`);
//! - rotary per layer: `modeling_smollm3.py` (`no_rope_layers[i] == 0` means no rotary: NoPE);
//! - partial rotary: `partial_rotary_factor` rotates the first `rotary_dim` dims of each head;
//! - norm offset: `modeling_gemma.py` `GemmaRMSNorm` multiplies by `1 + weight`;
//! - placement: pre-norm (LLaMA), post-norm on the block outputs (`modeling_olmo2.py`), sandwich
//!   (pre and post, `modeling_gemma2.py`), parallel attention and MLP over one norm
//!   (`modeling_cohere.py`);
//! - q/k norms: per head over `head_dim` with one weight shared by the heads (`modeling_qwen3.py`)
//!   or a weight of each head's own (`modeling_cohere.py` `use_qk_norm`, `modeling_stablelm.py`
//!   `qk_layernorm`), or over the whole projection (`modeling_olmo2.py`), applied before the
//!   rotary embedding, in the family's norm kind;
//! - multipliers: `modeling_granite.py` (`embedding_multiplier`, `residual_multiplier`,
//!   `attention_multiplier`, `logits_scaling`), Gemma's `sqrt(hidden_size)` embedding normaliser;
//! - NormHead: Baichuan2's `NormHead` (rows of `lm_head` L2-normalised at inference);
//! - sliding window per layer: `modeling_mistral.py` / `modeling_qwen2.py` (a query at position `i`
//!   sees keys `j` with `i - window < j <= i`), `modeling_gemma2.py` (`layer_types`);
//! - soft-capping: `modeling_gemma2.py` (`attn_logit_softcapping`, `final_logit_softcapping`).

/// How the two halves of a rotary pair are laid out within a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face LLaMA: dimension `j` pairs with `j + rotary_dim / 2` (`rotate_half`).
    Half,
    /// Meta / Helium / GLM: dimension `2j` pairs with `2j + 1`.
    Interleaved,
}

/// Which normalisation a norm weight belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / sqrt(mean(x^2) + eps) * (offset + w)`.
    Rms,
    /// `(x - mean) / sqrt(var + eps) * (offset + w) + b` (bias present when the family has one).
    LayerNorm,
}

/// Where the norms of a decoder layer sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// LLaMA: `x += attn(norm1(x)); x += mlp(norm2(x))` with `input_layernorm` and
    /// `post_attention_layernorm`.
    Pre,
    /// OLMo2: `x += norm1(attn(x)); x += norm2(mlp(x))` with `post_attention_layernorm` and
    /// `post_feedforward_layernorm`.
    Post,
    /// Gemma2/3: `x += norm2(attn(norm1(x))); x += norm4(mlp(norm3(x)))` with `input_layernorm`,
    /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`.
    Sandwich,
    /// Cohere, StableLM with `use_parallel_residual` (parallel residual):
    /// `x = x + attn(norm1(x)) + mlp(norm1(x))` with
    /// `input_layernorm` only.
    Parallel,
}

/// Normalisation of queries and keys before the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// None (LLaMA).
    None,
    /// RMSNorm of each head over `head_dim` with weights `q_norm.weight [head_dim]`,
    /// `k_norm.weight [head_dim]` (Qwen3).
    PerHead,
    /// RMSNorm over the whole projection with weights `q_norm.weight [heads * head_dim]`,
    /// `k_norm.weight [kv_heads * head_dim]` (OLMo2).
    Full,
    /// A norm of each head over `head_dim`, each head with weights of its own: one tensor
    /// `q_norm.weight [heads, head_dim]`, `k_norm.weight [kv_heads, head_dim]` (Cohere's
    /// `use_qk_norm`), or one tensor per head `q_norm.{h}.weight [head_dim]` (StableLM's
    /// `qk_layernorm`, a `LayerNorm` per head). No bias; the family's norm kind.
    Heads,
}

/// The MLP's activation (always gated: `act(gate) * up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (`silu`, `swish`).
    Silu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`).
    GeluTanh,
    /// GELU, exact erf form (`gelu`).
    Gelu,
}

impl Activation {
    /// Parse a transformers `ACT2FN` name; `None` for one the reference does not implement.
    pub fn parse(name: &str) -> Option<Activation> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            _ => return None,
        })
    }
}

/// The resolved computation of one checkpoint: what the forward pass does besides LLaMA's defaults.
/// Per-layer vectors have one entry per decoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Math {
    /// Rotary pair layout.
    pub rope: RopeLayout,
    /// Per layer: whether the rotary embedding is applied (false = NoPE layer).
    pub rope_layers: Vec<bool>,
    /// Dimensions of each head that rotate (even, `<= head_dim`; `head_dim` unless partial).
    pub rotary_dim: usize,
    /// Norm kind of every norm.
    pub norm: NormKind,
    /// Added to every norm weight before it multiplies (`1.0` for Gemma's `1 + w`).
    pub norm_offset: f32,
    /// LayerNorm weights come with a `.bias` of the same shape (`torch.nn.LayerNorm` with
    /// `bias=True`, e.g. StableLM); only meaningful with [`NormKind::LayerNorm`].
    pub norm_bias: bool,
    /// Where the norms sit.
    pub placement: NormPlacement,
    /// Query/key norms (in the norm kind and offset of [`Math::norm`], without biases).
    pub qk_norm: QkNorm,
    /// MLP activation.
    pub activation: Activation,
    /// Multiplies the token embeddings (`embedding_multiplier`; Gemma: `sqrt(hidden_size)`).
    pub embedding_scale: f32,
    /// Multiplies each block's output before the residual add (`residual_multiplier`).
    pub residual_scale: f32,
    /// Multiplies `q . k` (LLaMA: `head_dim ** -0.5`; Granite: `attention_multiplier`).
    pub attention_scale: f32,
    /// Divides the logits (`logits_scaling`).
    pub logits_divisor: f32,
    /// Rows of `lm_head` are L2-normalised before use (Baichuan2 `NormHead`).
    pub norm_head: bool,
    /// Per layer: the sliding-window span (`None`: full causal attention).
    pub sliding_window: Vec<Option<usize>>,
    /// Gemma2's `attn_logit_softcapping`: each scaled attention score `s` becomes
    /// `cap * tanh(s / cap)` before the mask and softmax.
    pub attn_logit_softcap: Option<f32>,
    /// Gemma2's `final_logit_softcapping`: each logit `l` becomes `cap * tanh(l / cap)` (after
    /// the logits divisor).
    pub final_logit_softcap: Option<f32>,
}

impl Math {
    /// Hugging Face LLaMA's computation for `layers` layers of head size `head_dim`.
    pub fn llama(layers: usize, head_dim: usize) -> Math {
        Math {
            rope: RopeLayout::Half,
            rope_layers: vec![true; layers],
            rotary_dim: head_dim,
            norm: NormKind::Rms,
            norm_offset: 0.0,
            norm_bias: false,
            placement: NormPlacement::Pre,
            qk_norm: QkNorm::None,
            activation: Activation::Silu,
            embedding_scale: 1.0,
            residual_scale: 1.0,
            attention_scale: (head_dim as f32).powf(-0.5),
            logits_divisor: 1.0,
            norm_head: false,
            sliding_window: vec![None; layers],
            attn_logit_softcap: None,
            final_logit_softcap: None,
        }
    }

    /// True when this is exactly LLaMA's computation for the same dimensions.
    pub fn is_llama(&self, head_dim: usize) -> bool {
        *self == Math::llama(self.rope_layers.len(), head_dim)
    }
}
