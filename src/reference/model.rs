//! The reference LLaMA forward pass, written like llama2.c's `run.c`: [`Config`] (hyperparameters),
//! per-layer weights borrowed from the view, a `State` of activation buffers with a shape comment
//! on each, and one `forward` that reads top to bottom with a comment per step. The arithmetic is
//! the kernels' (`crate::kernels`); this file only wires them in the order of Hugging Face's
//! `modeling_llama.py` (eager attention, f32).
//!
//! Memory: weights stay in the mmap in their stored dtype and are handed to the kernels as raw
//! bytes; only tensors that a mapping assembles from several pieces (fused q/k/v splits, permuted
//! rows) are gathered, one layer at a time. Activations are f32 for all `batch * seq` tokens at
//! once, so every weight row is read once per forward.

use std::borrow::Cow;

use rayon::prelude::*;

use super::Logits;
use super::config::Config;
use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::kernels::{self, Isa, KernelError, WDtype, Weights};
use crate::mapping::{Segment, View, ViewTensor};

/// A linear layer's tensors as found in the view: weight `[out, in]` and optional bias `[out]`.
#[derive(Debug, Clone, Copy)]
struct Linear<'a> {
    weight: &'a ViewTensor,
    bias: Option<&'a ViewTensor>,
}

/// One decoder layer's tensors (validated against the config, not read yet).
#[derive(Debug)]
struct LayerTensors<'a> {
    input_layernorm: &'a ViewTensor,          // [hidden]
    q_proj: Linear<'a>,                       // [heads * hd, hidden]
    k_proj: Linear<'a>,                       // [kv_heads * hd, hidden]
    v_proj: Linear<'a>,                       // [kv_heads * hd, hidden]
    o_proj: Linear<'a>,                       // [hidden, heads * hd]
    post_attention_layernorm: &'a ViewTensor, // [hidden]
    gate_proj: Linear<'a>,                    // [intermediate, hidden]
    up_proj: Linear<'a>,                      // [intermediate, hidden]
    down_proj: Linear<'a>,                    // [hidden, intermediate]
}

/// Bytes of one tensor in its stored dtype: borrowed from the mmap, or gathered by the view.
struct Tensor<'a> {
    dtype: WDtype,
    bytes: Cow<'a, [u8]>,
}

impl Tensor<'_> {
    fn w(&self) -> Weights<'_> {
        Weights {
            dtype: self.dtype,
            bytes: &self.bytes,
        }
    }
}

/// A linear layer's weight bytes and its bias decoded to f32.
struct LinearWeights<'a> {
    weight: Tensor<'a>,
    bias: Option<Vec<f32>>,
}

/// The current layer's weights (llama2.c's `TransformerWeights`, one layer at a time).
struct LayerWeights<'a> {
    input_layernorm: Tensor<'a>,
    q_proj: LinearWeights<'a>,
    k_proj: LinearWeights<'a>,
    v_proj: LinearWeights<'a>,
    o_proj: LinearWeights<'a>,
    post_attention_layernorm: Tensor<'a>,
    gate_proj: LinearWeights<'a>,
    up_proj: LinearWeights<'a>,
    down_proj: LinearWeights<'a>,
}

/// Activation buffers for `t = batch * seq` tokens (llama2.c's `RunState`).
struct State {
    x: Vec<f32>,      // [t, hidden] residual stream
    xb: Vec<f32>,     // [t, hidden] normalised input of a block
    q: Vec<f32>,      // [t, heads * hd] queries
    k: Vec<f32>,      // [t, kv_heads * hd] keys
    v: Vec<f32>,      // [t, kv_heads * hd] values
    att: Vec<f32>,    // [t, heads * hd] attention output, heads concatenated
    xb2: Vec<f32>,    // [t, hidden] block output before the residual add
    hb: Vec<f32>,     // [t, intermediate] gate, then silu(gate) * up
    hb2: Vec<f32>,    // [t, intermediate] up
    logits: Vec<f32>, // [t, vocab]
}

impl State {
    fn new(c: &Config, t: usize) -> Result<State> {
        let buf = |width: usize| -> Result<Vec<f32>> {
            let n = t.checked_mul(width).ok_or_else(|| {
                Error::usage(format!("{t} tokens x {width} activations overflow"))
            })?;
            Ok(vec![0.0; n])
        };
        Ok(State {
            x: buf(c.hidden)?,
            xb: buf(c.hidden)?,
            q: buf(c.heads * c.head_dim)?,
            k: buf(c.kv_heads * c.head_dim)?,
            v: buf(c.kv_heads * c.head_dim)?,
            att: buf(c.heads * c.head_dim)?,
            xb2: buf(c.hidden)?,
            hb: buf(c.intermediate)?,
            hb2: buf(c.intermediate)?,
            logits: buf(c.vocab)?,
        })
    }
}

/// A LLaMA model prepared from a canonical view: config resolved, every tensor found and its shape
/// checked. Nothing is read until [`Model::forward`]; it can run several batches.
#[derive(Debug)]
pub struct Model<'a> {
    view: &'a View<'a>,
    /// The resolved hyperparameters.
    pub config: Config,
    embed_tokens: &'a ViewTensor, // [vocab, hidden]
    layers: Vec<LayerTensors<'a>>,
    norm: &'a ViewTensor,    // [hidden]
    lm_head: &'a ViewTensor, // [vocab, hidden] (the embedding when tied)
}

impl<'a> Model<'a> {
    /// Resolve the view's config and find every canonical tensor with the shape it implies
    /// (before anything is allocated or read).
    pub fn new(view: &'a View<'a>) -> Result<Model<'a>> {
        let path = &view.ckpt.path;
        let mc = view.config.as_ref().ok_or_else(|| {
            Error::bad_data("the checkpoint has no config.json; the forward pass needs one")
                .file(path)
        })?;
        let c = Config::from_model_config(mc).map_err(|e| e.file(&mc.path))?;
        let (h, q_dim, kv_dim) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let weight = |name: String, shape: &[usize]| -> Result<&'a ViewTensor> {
            let t = view.expect(&name, shape)?;
            wdtype(t.dtype).map_err(|e| e.file(path).tensor(&name))?;
            Ok(t)
        };
        let linear = |prefix: String, rows: usize, cols: usize, bias: bool| -> Result<Linear<'a>> {
            Ok(Linear {
                weight: weight(format!("{prefix}.weight"), &[rows, cols])?,
                bias: match bias {
                    true => Some(weight(format!("{prefix}.bias"), &[rows])?),
                    false => None,
                },
            })
        };
        let embed_tokens = weight("model.embed_tokens.weight".into(), &[c.vocab, h])?;
        let mut layers = Vec::with_capacity(c.layers.min(1 << 12));
        for i in 0..c.layers {
            let p = format!("model.layers.{i}");
            let (ab, mb) = (c.attention_bias, c.mlp_bias);
            layers.push(LayerTensors {
                input_layernorm: weight(format!("{p}.input_layernorm.weight"), &[h])?,
                q_proj: linear(format!("{p}.self_attn.q_proj"), q_dim, h, ab)?,
                k_proj: linear(format!("{p}.self_attn.k_proj"), kv_dim, h, ab)?,
                v_proj: linear(format!("{p}.self_attn.v_proj"), kv_dim, h, ab)?,
                o_proj: linear(format!("{p}.self_attn.o_proj"), h, q_dim, ab)?,
                post_attention_layernorm: weight(
                    format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                )?,
                gate_proj: linear(format!("{p}.mlp.gate_proj"), c.intermediate, h, mb)?,
                up_proj: linear(format!("{p}.mlp.up_proj"), c.intermediate, h, mb)?,
                down_proj: linear(format!("{p}.mlp.down_proj"), h, c.intermediate, mb)?,
            });
        }
        let norm = weight("model.norm.weight".into(), &[h])?;
        let lm_head = match c.tie_word_embeddings {
            true => embed_tokens,
            false => weight("lm_head.weight".into(), &[c.vocab, h])?,
        };
        Ok(Model {
            view,
            config: c,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// Logits `[batch, seq, vocab]` for sequences of equal length, every position.
    pub fn forward(&self, batch: &[Vec<u32>], isa: Isa) -> Result<Logits> {
        self.forward_with_progress(batch, isa, &|_, _| {})
    }

    /// [`Model::forward`], calling `on_layer(done, total)` after each decoder layer (for progress bars).
    pub fn forward_with_progress(
        &self,
        batch: &[Vec<u32>],
        isa: Isa,
        on_layer: &dyn Fn(usize, usize),
    ) -> Result<Logits> {
        let c = &self.config;
        let seq = check_batch(batch, c.vocab)?;
        c.check_seq_len(seq)?;
        let t = batch.len() * seq; // every token of every sequence goes through each matmul together
        let (h, hd) = (c.hidden, c.head_dim);
        let (q_dim, kv_dim) = (c.heads * hd, c.kv_heads * hd);
        let mut s = State::new(c, t)?;

        // Token embeddings: decode only the rows of the ids used.
        let tokens = batch.iter().flatten().map(|&id| id as usize);
        for (x, id) in s.x.chunks_exact_mut(h).zip(tokens) {
            let row = self.rows(self.embed_tokens, id, 1)?;
            kernels::to_f32(weights(self.embed_tokens, &row)?, x)?;
        }
        // Rotary tables for positions 0..seq: cos, sin [seq, hd / 2].
        let (cos, sin) = c.rope_tables(seq);

        for (li, layer) in self.layers.iter().enumerate() {
            let w = self.read_layer(layer)?;

            // Attention block: xb = rmsnorm(x)
            for (x, xb) in s.x.chunks_exact(h).zip(s.xb.chunks_exact_mut(h)) {
                kernels::rmsnorm(isa, x, w.input_layernorm.w(), c.rms_norm_eps, xb)?;
            }
            // q, k, v = xb Wq^T (+ bq), xb Wk^T (+ bk), xb Wv^T (+ bv)
            linear(isa, &s.xb, t, h, &w.q_proj, q_dim, &mut s.q)?;
            linear(isa, &s.xb, t, h, &w.k_proj, kv_dim, &mut s.k)?;
            linear(isa, &s.xb, t, h, &w.v_proj, kv_dim, &mut s.v)?;
            // Rotate each query and key head by its position (HF rotate_half layout).
            for (i, (q, k)) in
                s.q.chunks_exact_mut(q_dim)
                    .zip(s.k.chunks_exact_mut(kv_dim))
                    .enumerate()
            {
                let pos = i % seq;
                let (cos, sin) = (
                    &cos[pos * hd / 2..][..hd / 2],
                    &sin[pos * hd / 2..][..hd / 2],
                );
                for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                    kernels::rope_half(isa, head, cos, sin)?;
                }
            }
            // att = softmax(q k^T / sqrt(hd), causal) v, per sequence and head
            attention(isa, c, seq, &s.q, &s.k, &s.v, &mut s.att)?;
            // x += att Wo^T (+ bo)
            linear(isa, &s.att, t, q_dim, &w.o_proj, h, &mut s.xb2)?;
            kernels::axpy(isa, 1.0, &s.xb2, &mut s.x)?;

            // MLP block: xb = rmsnorm(x)
            for (x, xb) in s.x.chunks_exact(h).zip(s.xb.chunks_exact_mut(h)) {
                kernels::rmsnorm(isa, x, w.post_attention_layernorm.w(), c.rms_norm_eps, xb)?;
            }
            // hb = silu(xb Wgate^T) * (xb Wup^T)
            linear(isa, &s.xb, t, h, &w.gate_proj, c.intermediate, &mut s.hb)?;
            linear(isa, &s.xb, t, h, &w.up_proj, c.intermediate, &mut s.hb2)?;
            kernels::silu_mul(isa, &mut s.hb, &s.hb2)?;
            // x += hb Wdown^T (+ bdown)
            linear(isa, &s.hb, t, c.intermediate, &w.down_proj, h, &mut s.xb2)?;
            kernels::axpy(isa, 1.0, &s.xb2, &mut s.x)?;
            // Done with this layer: its pages leave our resident set (memory stays ~one layer).
            drop(w);
            self.release_layer(layer);
            on_layer(li + 1, self.layers.len());
        }

        // Final norm, then the output projection for every position.
        let norm = self.view.read(self.norm)?;
        for (x, xb) in s.x.chunks_exact(h).zip(s.xb.chunks_exact_mut(h)) {
            kernels::rmsnorm(isa, x, weights(self.norm, &norm)?, c.rms_norm_eps, xb)?;
        }
        let lm_head = self.view.read(self.lm_head)?;
        kernels::matmul(
            isa,
            &s.xb,
            t,
            h,
            weights(self.lm_head, &lm_head)?,
            c.vocab,
            &mut s.logits,
        )?;
        drop(lm_head);
        for t in [self.embed_tokens, self.norm, self.lm_head] {
            self.view.release(t);
        }
        Ok(Logits {
            batch: batch.len(),
            seq,
            vocab: c.vocab,
            data: s.logits,
        })
    }

    /// Release the pages of every tensor of a layer after use.
    fn release_layer(&self, l: &LayerTensors<'a>) {
        let mut ts = vec![l.input_layernorm, l.post_attention_layernorm];
        for lin in [
            &l.q_proj,
            &l.k_proj,
            &l.v_proj,
            &l.o_proj,
            &l.gate_proj,
            &l.up_proj,
            &l.down_proj,
        ] {
            ts.push(lin.weight);
            ts.extend(lin.bias);
        }
        for t in ts {
            self.view.release(t);
        }
    }

    /// Read (borrow, or gather when the view assembles it) every tensor of one layer.
    fn read_layer(&self, l: &LayerTensors<'a>) -> Result<LayerWeights<'a>> {
        let tensor = |t: &ViewTensor| -> Result<Tensor<'a>> {
            Ok(Tensor {
                dtype: wdtype(t.dtype).map_err(|e| e.tensor(&t.name))?,
                bytes: self.view.read(t)?,
            })
        };
        let linear = |lin: &Linear<'a>| -> Result<LinearWeights<'a>> {
            let bias = match lin.bias {
                Some(b) => {
                    let bytes = self.view.read(b)?;
                    let mut out = vec![0.0f32; b.numel()];
                    kernels::to_f32(weights(b, &bytes)?, &mut out)?;
                    Some(out)
                }
                None => None,
            };
            Ok(LinearWeights {
                weight: tensor(lin.weight)?,
                bias,
            })
        };
        Ok(LayerWeights {
            input_layernorm: tensor(l.input_layernorm)?,
            q_proj: linear(&l.q_proj)?,
            k_proj: linear(&l.k_proj)?,
            v_proj: linear(&l.v_proj)?,
            o_proj: linear(&l.o_proj)?,
            post_attention_layernorm: tensor(l.post_attention_layernorm)?,
            gate_proj: linear(&l.gate_proj)?,
            up_proj: linear(&l.up_proj)?,
            down_proj: linear(&l.down_proj)?,
        })
    }

    /// Rows `[start, start + n)` of a view tensor: borrowed when they are contiguous in one file.
    fn rows(&self, t: &ViewTensor, start: usize, n: usize) -> Result<Cow<'a, [u8]>> {
        let segs = self.view.resolve_rows(t, start, n)?;
        if let [seg @ Segment::Rows { .. }] = segs.as_slice() {
            return self.view.segment_bytes(seg);
        }
        let mut out = Vec::new();
        for seg in &segs {
            match seg {
                Segment::Rows { .. } => out.extend_from_slice(&self.view.segment_bytes(seg)?),
                Segment::Zeros { bytes } => out.resize(out.len() + bytes, 0),
            }
        }
        Ok(Cow::Owned(out))
    }
}

/// The sequence length of a batch: every sequence non-empty, of equal length, ids below `vocab`.
fn check_batch(batch: &[Vec<u32>], vocab: usize) -> Result<usize> {
    let seq = batch
        .first()
        .map(Vec::len)
        .ok_or_else(|| Error::usage("the batch has no sequences"))?;
    if seq == 0 {
        return Err(Error::usage("a sequence has no tokens"));
    }
    for (b, ids) in batch.iter().enumerate() {
        if ids.len() != seq {
            return Err(Error::usage(format!(
                "sequences must have equal lengths: sequence 0 has {seq} tokens, sequence {b} has {}",
                ids.len()
            )));
        }
        if let Some(id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::usage(format!(
                "token id {id} is outside the vocabulary (size {vocab})"
            )));
        }
    }
    Ok(seq)
}

/// The kernels' element type for a stored dtype.
fn wdtype(d: Dtype) -> Result<WDtype> {
    match d {
        Dtype::F32 => Ok(WDtype::F32),
        Dtype::F16 => Ok(WDtype::F16),
        Dtype::BF16 => Ok(WDtype::Bf16),
        other => Err(Error::unsupported(format!(
            "dtype {other:?}: the reference forward pass reads F32, F16 and BF16 weights"
        ))),
    }
}

fn weights<'b>(t: &ViewTensor, bytes: &'b [u8]) -> Result<Weights<'b>> {
    Ok(Weights {
        dtype: wdtype(t.dtype).map_err(|e| e.tensor(&t.name))?,
        bytes,
    })
}

/// `out[t, n] = x[t, k] W[n, k]^T + b[n]` (`torch.nn.Linear`).
fn linear(
    isa: Isa,
    x: &[f32],
    t: usize,
    k: usize,
    w: &LinearWeights<'_>,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    kernels::matmul(isa, x, t, k, w.weight.w(), n, out)?;
    if let Some(b) = &w.bias {
        for row in out.chunks_exact_mut(n) {
            kernels::axpy(isa, 1.0, b, row)?;
        }
    }
    Ok(())
}

/// Causal multi-head attention with grouped key/value heads over `t / seq` sequences, one output
/// row per token in parallel: for head `h` (kv head `h / (heads / kv_heads)`),
/// `att[h] = sum_j softmax_j(q[h] . k_j / sqrt(hd)) v_j` over positions `j <= i` of the same sequence.
fn attention(
    isa: Isa,
    c: &Config,
    seq: usize,
    q: &[f32],       // [t, heads * hd]
    k: &[f32],       // [t, kv_heads * hd]
    v: &[f32],       // [t, kv_heads * hd]
    att: &mut [f32], // [t, heads * hd]
) -> Result<(), KernelError> {
    let hd = c.head_dim;
    let (q_dim, kv_dim) = (c.heads * hd, c.kv_heads * hd);
    let group = c.heads / c.kv_heads;
    let scale = (hd as f32).powf(-0.5); // transformers multiplies by head_dim ** -0.5
    att.par_chunks_mut(q_dim).enumerate().try_for_each_init(
        || vec![0.0f32; seq], // scores [seq] of one head
        |scores, (i, out)| {
            let (first, pos) = (i - i % seq, i % seq); // first token of the sequence, position
            let q_row = &q[i * q_dim..][..q_dim];
            for (h, out_h) in out.chunks_exact_mut(hd).enumerate() {
                let q_h = &q_row[h * hd..][..hd];
                let kv_off = (h / group) * hd;
                let scores = &mut scores[..=pos];
                for (j, s) in scores.iter_mut().enumerate() {
                    let k_j = &k[(first + j) * kv_dim + kv_off..][..hd];
                    *s = kernels::dot(isa, q_h, k_j)? * scale;
                }
                kernels::softmax_inplace(isa, scores);
                out_h.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let v_j = &v[(first + j) * kv_dim + kv_off..][..hd];
                    kernels::axpy(isa, p, v_j, out_h)?;
                }
            }
            Ok(())
        },
    )
}
