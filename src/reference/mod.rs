//! The reference forward pass: f32 logits for token ids, from a canonical view of a checkpoint,
//! agreeing with Hugging Face transformers (eager attention, causal mask, f32 math).
//!
//! It is the proof half of `ckpt verify`: two views of the same weights must give the same logits.
//! It computes LLaMA (`LlamaForCausalLM`: GQA, explicit `head_dim`, `attention_bias`, `mlp_bias`,
//! tied embeddings, `rope_theta`, `rope_scaling` linear / dynamic / llama3) and, given a [`Math`],
//! the families a few switches away from it, each as its own transformers class computes it:
//! interleaved rotary (Helium, Cohere), NoPE layers (SmolLM3), partial rotary (Phi-3, StableLM),
//! `1 + w` RMSNorm, gelu and embedding scale (Gemma), LayerNorm with or without bias (StableLM,
//! Cohere), post-norm, sandwich and parallel placement (OLMo2, Gemma2, Cohere), q/k norms (Qwen3,
//! OLMo2), multipliers (Granite), NormHead (Baichuan2), sliding windows (Mistral, Qwen2, Gemma2),
//! soft-capping (Gemma2). Anything else is refused with the reason.
//! Weights are read from the mmap in their stored dtype (f32, f16, bf16); nothing holds an f32
//! copy of the model, and activation memory is checked against [`ACTIVATION_LIMIT`] before it is
//! allocated.
//!
//! - `config.rs`: hyperparameters resolved from the view's config, rotary frequencies.
//! - `math.rs`: the switches ([`Math`]) a family's computation resolves to.
//! - `tensors.rs`: the tensors a math needs, found by canonical name and shape; math-vs-config checks.
//! - `model.rs`: weights, activation state and the forward pass itself.

pub mod config;
pub mod math;
mod model;
mod tensors;

pub use config::{Config, RopeScaling};
pub use math::Math;
pub use model::{ACTIVATION_LIMIT, Model};

use crate::error::Result;
use crate::kernels::Isa;
use crate::mapping::View;

/// Which positions a forward pass computes logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outputs {
    /// Every position of every sequence (what `verify` compares and `logits --out` writes).
    #[default]
    Every,
    /// Only each sequence's last position: the next-token prediction of a prompt (`ckpt logits`'
    /// top tokens), as llama.cpp's prompt processing computes. The last layer's work after its
    /// attention and `lm_head` then run on one row per sequence.
    Last,
}

impl Outputs {
    /// Rows of logits a pass over `sequences` sequences of `tokens` tokens in all computes.
    pub fn rows(self, sequences: usize, tokens: usize) -> usize {
        match self {
            Outputs::Every => tokens,
            Outputs::Last => sequences,
        }
    }
}

/// Logits of a batch. With [`Outputs::Every`], `data[(b * seq + i) * vocab + v]` is the logit of
/// token `v` after position `i` of sequence `b`; with [`Outputs::Last`], `data[b * vocab + v]` is
/// the logit after the last position (`seq - 1`) of sequence `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Number of sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// The positions computed.
    pub outputs: Outputs,
    /// `[batch, seq, vocab]` (every position) or `[batch, vocab]` (last positions), row-major.
    pub data: Vec<f32>,
}

impl Logits {
    /// The logits row `[vocab]` after position `pos` of sequence `b` (empty when out of range or
    /// not computed).
    pub fn row(&self, b: usize, pos: usize) -> &[f32] {
        if pos >= self.seq {
            return &[];
        }
        let row = match self.outputs {
            Outputs::Every => b.checked_mul(self.seq).and_then(|r| r.checked_add(pos)),
            Outputs::Last => Some(b).filter(|_| pos + 1 == self.seq),
        };
        row.and_then(|r| r.checked_mul(self.vocab))
            .and_then(|s| self.data.get(s..s.checked_add(self.vocab)?))
            .unwrap_or(&[])
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

/// Run the reference forward over a batch of equal-length token sequences, in the math of the
/// view's family ([`view_math`], see [`Model::new`]; LLaMA's when no family was involved).
///
/// `view` must present canonical Hugging Face LLaMA names (`View::identity` of a LLaMA checkpoint,
/// or a family mapping's canonical view). Errors name the tensor whose shape or dtype does not fit
/// the config, the token id outside the vocabulary, the config feature that is not supported, or
/// why the family's math is not known.
pub fn forward(view: &View<'_>, batch: &[Vec<u32>], isa: Isa) -> Result<Logits> {
    forward_with_progress(view, batch, isa, &|_, _| {})
}

/// The computation a view's tensors mean: its family's resolved [`Math`], an error naming why it is
/// not known, or `None` for a view no family was involved in (the caller asserts LLaMA).
pub fn view_math(view: &View<'_>) -> Result<Option<Math>> {
    match &view.math {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m.clone())),
        // The reason lies in the config (an unmodelled key, a value the math cannot take).
        Some(Err(why)) => Err(crate::error::Error::unsupported(format!(
            "cannot run family `{}`: {why}",
            view.family
        ))
        .file(
            view.ckpt
                .config
                .as_ref()
                .map(|c| c.path.clone())
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| view.ckpt.path.clone()),
        )),
    }
}

/// [`forward`], calling `on_layer(done, total)` after each decoder layer.
pub fn forward_with_progress(
    view: &View<'_>,
    batch: &[Vec<u32>],
    isa: Isa,
    on_layer: &dyn Fn(usize, usize),
) -> Result<Logits> {
    forward_outputs(view, batch, isa, Outputs::Every, on_layer)
}

/// [`forward_with_progress`], computing the logits of the positions `outputs` asks for (see
/// [`Model::forward_outputs`]).
pub fn forward_outputs(
    view: &View<'_>,
    batch: &[Vec<u32>],
    isa: Isa,
    outputs: Outputs,
    on_layer: &dyn Fn(usize, usize),
) -> Result<Logits> {
    Model::new(view)?.forward_outputs(batch, isa, outputs, on_layer)
}

/// Run the reference forward in a family's math (see [`Model::with_math`]) over a batch of
/// equal-length token sequences. `view` must present the canonical names the math needs.
pub fn forward_with_math(
    view: &View<'_>,
    math: Math,
    batch: &[Vec<u32>],
    isa: Isa,
) -> Result<Logits> {
    Model::with_math(view, math)?.forward(batch, isa)
}

/// [`forward_with_math`], calling `on_layer(done, total)` after each decoder layer.
pub fn forward_with_math_progress(
    view: &View<'_>,
    math: Math,
    batch: &[Vec<u32>],
    isa: Isa,
    on_layer: &dyn Fn(usize, usize),
) -> Result<Logits> {
    Model::with_math(view, math)?.forward_with_progress(batch, isa, on_layer)
}

#[cfg(test)]
mod tests {
    use super::{Logits, Outputs};

    #[test]
    fn rows_out_of_range_are_empty_not_another_row() {
        let l = Logits {
            batch: 2,
            seq: 2,
            vocab: 3,
            outputs: Outputs::Every,
            data: (0..12).map(|v| v as f32).collect(),
        };
        assert_eq!(l.row(1, 0), [6.0, 7.0, 8.0]);
        assert!(l.row(0, 2).is_empty()); // not row (1, 0)
        assert!(l.row(2, 0).is_empty());
        assert!(l.row(usize::MAX, 1).is_empty());
        assert_eq!(l.top_k(1, 1, 2), [(2, 11.0), (1, 10.0)]);
    }

    #[test]
    fn last_position_logits_have_one_row_per_sequence() {
        let l = Logits {
            batch: 2,
            seq: 3,
            vocab: 2,
            outputs: Outputs::Last,
            data: vec![1.0, 2.0, 3.0, 4.0],
        };
        assert_eq!(l.row(0, 2), [1.0, 2.0]);
        assert_eq!(l.row(1, 2), [3.0, 4.0]);
        // Earlier positions were not computed: never another row's values.
        assert!(l.row(1, 0).is_empty());
        assert!(l.row(0, 1).is_empty());
        assert!(l.row(2, 2).is_empty());
        assert!(l.row(usize::MAX, 2).is_empty());
        assert_eq!(l.top_k(1, 2, 1), [(1, 4.0)]);
    }
}
