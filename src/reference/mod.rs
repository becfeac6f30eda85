//! The reference LLaMA forward pass: f32 logits for token ids, from a canonical view of a
//! checkpoint, agreeing with Hugging Face transformers' `LlamaForCausalLM`
//! (`src/transformers/models/llama/modeling_llama.py`, eager attention, causal mask, f32 math).
//!
//! It is the proof half of `ckpt verify`: two views of the same weights must give the same logits.
//! It supports what real LLaMA-family configs use (GQA, explicit `head_dim`, `attention_bias`,
//! `mlp_bias`, tied embeddings, `rope_theta`, `rope_scaling` linear / dynamic / llama3, `silu`)
//! and refuses, with the reason, anything it cannot reproduce exactly. Weights are read from the
//! mmap in their stored dtype (f32, f16, bf16); nothing holds an f32 copy of the model.
//!
//! - `config.rs`: hyperparameters resolved from the view's config, rotary frequencies.
//! - `model.rs`: weights, activation state and the forward pass itself.

pub mod config;
pub mod math;
mod model;

pub use config::{Config, RopeScaling};
pub use math::Math;
pub use model::Model;

use crate::error::Result;
use crate::kernels::Isa;
use crate::mapping::View;

/// Logits of a batch: `data[(b * seq + i) * vocab + v]` is the logit of token `v` after position
/// `i` of sequence `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Number of sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// `[batch, seq, vocab]`, row-major.
    pub data: Vec<f32>,
}

impl Logits {
    /// The logits row `[vocab]` after position `pos` of sequence `b`.
    pub fn row(&self, b: usize, pos: usize) -> &[f32] {
        let start = (b * self.seq + pos) * self.vocab;
        self.data.get(start..start + self.vocab).unwrap_or(&[])
    }

    /// The `k` highest logits of a row as `(token id, logit)`, highest first (ties: lower id first).
    pub fn top_k(&self, b: usize, pos: usize, k: usize) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = self
            .row(b, pos)
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

/// Run the reference forward over a batch of equal-length token sequences.
///
/// `view` must present canonical Hugging Face LLaMA names (`View::identity` of a LLaMA checkpoint,
/// or a family mapping's canonical view). Errors name the tensor whose shape or dtype does not fit
/// the config, the token id outside the vocabulary, or the config feature that is not supported.
pub fn forward(view: &View<'_>, batch: &[Vec<u32>], isa: Isa) -> Result<Logits> {
    forward_with_progress(view, batch, isa, &|_, _| {})
}

/// The computation a view's tensors mean: its family's resolved [`Math`], an error naming why it is
/// not known, or `None` for a view no family was involved in (the caller asserts LLaMA).
pub fn view_math(view: &View<'_>) -> Result<Option<Math>> {
    match &view.math {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m.clone())),
        Some(Err(why)) => Err(crate::error::Error::unsupported(format!(
            "cannot run family `{}`: {why}",
            view.family
        ))
        .file(&view.ckpt.path)),
    }
}

/// [`forward`], calling `on_layer(done, total)` after each decoder layer.
pub fn forward_with_progress(
    view: &View<'_>,
    batch: &[Vec<u32>],
    isa: Isa,
    on_layer: &dyn Fn(usize, usize),
) -> Result<Logits> {
    let model = Model::new(view)?;
    if let Some(m) = view_math(view)?
        && !m.is_llama(model.config.head_dim)
    {
        return Err(crate::error::Error::unsupported(format!(
            "family `{}` computes something LLaMA does not, and this build's forward pass runs LLaMA only",
            view.family
        ))
        .file(&view.ckpt.path));
    }
    model.forward_with_progress(batch, isa, on_layer)
}
