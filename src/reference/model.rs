//! The reference forward pass, written like llama2.c's `run.c`: [`Config`] (hyperparameters), a
//! [`Math`] (the switches a family's computation differs from LLaMA's by), per-layer weights
//! borrowed from the view, a `State` of activation buffers with a shape comment on each, and one
//! `forward` that reads top to bottom with a comment per step. The arithmetic is the kernels'
//! (`crate::kernels`); this file wires them in the order of Hugging Face's `modeling_llama.py`
//! (eager attention, f32), with each switch placed where its own transformers class places it
//! (see `math.rs` for the classes).
//!
//! Memory: weights stay in the mmap in their stored dtype and are handed to the kernels as raw
//! bytes; only tensors that a mapping assembles from several pieces (fused q/k/v splits, permuted
//! rows) are gathered, one layer at a time. Activations are f32 for all `batch * seq` tokens at
//! once, so every weight row is read once per forward; their size is computed (checked) before
//! anything is allocated and refused above [`ACTIVATION_LIMIT`]. NormHead (Baichuan2) keeps one
//! f32 norm per vocabulary row (`vocab * 4` bytes), never a normalised copy of `lm_head`: the
//! logits are divided by the row norms instead (`x . (w / n) = (x . w) / n` up to f32 rounding).

use std::borrow::Cow;

use rayon::prelude::*;

use super::config::Config;
use super::math::{Activation, Math, NormKind, NormPlacement, QkNorm, RopeLayout};
use super::tensors::{
    LayerTensors, Linear, Norm, check_math, config_of, find_layers, find_norm, wdtype, weight,
};
use super::{Logits, Outputs};
use crate::error::{Error, Result};
use crate::kernels::{self, Isa, KernelError, WDtype, Weights};
use crate::mapping::{Segment, View, ViewTensor};

/// The most activation memory one forward pass may allocate (16 GiB): above it the input is
/// refused as a usage error (fewer or shorter sequences) instead of aborting the process when the
/// allocation fails.
pub const ACTIVATION_LIMIT: u64 = 16 << 30;

/// NormHead's floor on a row norm (`torch.nn.functional.normalize`'s `eps`).
const NORM_HEAD_EPS: f32 = 1e-12;

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

/// A norm's weight and optional bias bytes.
struct NormWeights<'a> {
    weight: Tensor<'a>,
    bias: Option<Tensor<'a>>,
}

/// The current layer's weights (llama2.c's `TransformerWeights`, one layer at a time).
struct LayerWeights<'a> {
    attn_pre: Option<NormWeights<'a>>,
    attn_post: Option<NormWeights<'a>>,
    mlp_pre: Option<NormWeights<'a>>,
    mlp_post: Option<NormWeights<'a>>,
    q_norm: Vec<Tensor<'a>>,
    k_norm: Vec<Tensor<'a>>,
    q_proj: LinearWeights<'a>,
    k_proj: LinearWeights<'a>,
    v_proj: LinearWeights<'a>,
    o_proj: LinearWeights<'a>,
    gate_proj: LinearWeights<'a>,
    up_proj: LinearWeights<'a>,
    down_proj: LinearWeights<'a>,
}

/// Activation buffers for `t = batch * seq` tokens (llama2.c's `RunState`).
struct State {
    x: Vec<f32>,      // [t, hidden] residual stream
    xb: Vec<f32>,     // [t, hidden] normalised input of a block, or its normalised output
    q: Vec<f32>,      // [t, heads * hd] queries
    k: Vec<f32>,      // [t, kv_heads * hd] keys
    v: Vec<f32>,      // [t, kv_heads * hd] values
    att: Vec<f32>,    // [t, heads * hd] attention output, heads concatenated
    xb2: Vec<f32>,    // [t, hidden] block output before its post-norm and the residual add
    hb: Vec<f32>,     // [t, intermediate] gate, then act(gate) * up
    hb2: Vec<f32>,    // [t, intermediate] up
    logits: Vec<f32>, // [t, vocab]
}

impl State {
    /// Allocate the buffers for `t` tokens and `out_rows` rows of logits (after
    /// [`Model::check_input_size`] has bounded their total size).
    fn new(c: &Config, t: usize, out_rows: usize) -> Result<State> {
        let n = out_rows.checked_mul(c.vocab).ok_or_else(|| {
            Error::usage(format!("{out_rows} rows x {} logits overflow", c.vocab))
        })?;
        let buf = |width: usize| -> Result<Vec<f32>> {
            let n = t.checked_mul(width).ok_or_else(|| {
                Error::usage(format!("{t} tokens x {width} activations overflow"))
            })?;
            Ok(vec![0.0; n])
        };
        Ok(State {
            x: buf(c.hidden)?,
            xb: buf(c.hidden)?,
            q: buf(c.q_dim)?,
            k: buf(c.kv_dim)?,
            v: buf(c.kv_dim)?,
            att: buf(c.q_dim)?,
            xb2: buf(c.hidden)?,
            hb: buf(c.intermediate)?,
            hb2: buf(c.intermediate)?,
            logits: vec![0.0; n],
        })
    }

    /// Keep only the last row of each sequence of `seq` tokens, in order, in every buffer the
    /// rest of the last layer reads or writes (`x`, the residual; `att`, the attention output;
    /// `xb`, which holds the parallel placement's shared input), and shorten the block buffers to
    /// the rows kept: after the last layer's attention, nothing reads the other rows.
    fn keep_last_rows(&mut self, c: &Config, rows: usize, seq: usize) {
        for (buf, width) in [
            (&mut self.x, c.hidden),
            (&mut self.xb, c.hidden),
            (&mut self.att, c.q_dim),
        ] {
            // Row b takes row b * seq + seq - 1: never behind it, so no source is overwritten
            // before it is read.
            for b in 0..rows {
                let from = (b * seq + seq - 1) * width;
                buf.copy_within(from..from + width, b * width);
            }
            buf.truncate(rows * width);
        }
        self.xb2.truncate(rows * c.hidden);
        self.hb.truncate(rows * c.intermediate);
        self.hb2.truncate(rows * c.intermediate);
    }
}

/// A model prepared from a canonical view: config resolved, math checked against it, every tensor
/// the math needs found with the shape it implies. Nothing is read until [`Model::forward`]; it
/// can run several batches.
#[derive(Debug)]
pub struct Model<'a> {
    view: &'a View<'a>,
    /// The resolved hyperparameters.
    pub config: Config,
    /// The computation the forward pass performs.
    pub math: Math,
    /// The LLaMA path ([`Model::new`]): refuse inputs longer than the config's sliding window.
    llama_window_check: bool,
    embed_tokens: &'a ViewTensor, // [vocab, hidden]
    layers: Vec<LayerTensors<'a>>,
    norm: Norm<'a>,          // [hidden]
    lm_head: &'a ViewTensor, // [vocab, hidden] (the embedding when tied)
    /// Drop each layer's pages from the resident set after use ([`Model::keep_mapped`]).
    release_pages: bool,
}

impl<'a> Model<'a> {
    /// The model a view means. A family view runs in its family's resolved math
    /// ([`super::view_math`], through [`Model::with_math`]) and is refused when that math would
    /// leave any of its tensors unused (a stored `lm_head` beside tied embeddings aside). A view
    /// no family was involved in runs LLaMA's math ([`Math::llama`]): its config is resolved
    /// refusing what LLaMA's math cannot run (another activation, partial rotary, and at run time
    /// an input longer than the config's sliding window). Every canonical tensor is found with
    /// the shape it implies before anything is allocated or read.
    pub fn new(view: &'a View<'a>) -> Result<Model<'a>> {
        // Sizes first: a config that describes no model (heads not dividing the width, sizes that
        // overflow, ...) is named as such before anything is said about its math.
        let mc = config_of(view)?;
        Config::resolve(mc).map_err(|e| e.file(&mc.path))?;
        // A family view carries the computation its family file and config say it means.
        if let Some(math) = super::view_math(view)? {
            let m = Model::with_math(view, math)?;
            // Weights the family's math would leave out mean the checkpoint computes something
            // the family does not model: never silently drop them. (A stored lm_head beside tied
            // embeddings is left out only when it is a copy of them, which every loader reads
            // the same; one that differs is refused by `assemble`. `check` reports both.)
            let unused: Vec<&str> = m
                .unused_tensors()
                .into_iter()
                .filter(|n| *n != "lm_head.weight")
                .map(|n| view.stored_name(n))
                .collect();
            if let Some(first) = unused.first() {
                return Err(Error::unsupported(format!(
                    "family `{}` does not compute with {} tensor{} of this checkpoint ({}{}): it computes something the family does not model",
                    view.family,
                    unused.len(),
                    if unused.len() == 1 { "" } else { "s" },
                    unused.iter().take(3).copied().collect::<Vec<_>>().join(", "),
                    if unused.len() > 3 { ", ..." } else { "" }
                ))
                .file(&view.ckpt.path)
                .tensor(*first));
            }
            return Ok(m);
        }
        let c = Config::from_model_config(mc).map_err(|e| e.file(&mc.path))?;
        // Find the layers first: a config claiming 2^40 layers fails at the first missing one
        // instead of allocating a per-layer math table.
        let layers = find_layers(view, &c, None)?;
        let math = Math::llama(c.layers, c.head_dim);
        let mut m = Model::assemble(view, c, math, layers)?;
        m.llama_window_check = true;
        Ok(m)
    }

    /// The model computed in `math` (a family's resolved [`Math`]) instead of LLaMA's. The math
    /// is authoritative for everything it states (activation, rotary layout and dimensions, NoPE
    /// layers, norms and their placement, q/k norms, multipliers, NormHead, sliding windows); the
    /// config supplies the sizes, rotary frequencies and norm epsilon. Errors name the math field
    /// that does not fit the config, or the tensor the math needs with its expected and found
    /// shape, before anything is read.
    pub fn with_math(view: &'a View<'a>, math: Math) -> Result<Model<'a>> {
        let mc = config_of(view)?;
        let mut c = Config::resolve(mc).map_err(|e| e.file(&mc.path))?;
        check_math(&c, &math).map_err(|e| e.file(&mc.path))?;
        c.rotary_dim = math.rotary_dim;
        let layers = find_layers(view, &c, Some(&math))?;
        Model::assemble(view, c, math, layers)
    }

    /// Find the tensors outside the layers and build the model.
    fn assemble(
        view: &'a View<'a>,
        c: Config,
        math: Math,
        layers: Vec<LayerTensors<'a>>,
    ) -> Result<Model<'a>> {
        let embed_tokens = weight(
            view,
            "model.embed_tokens.weight".into(),
            &[c.vocab, c.hidden],
        )?;
        let norm = find_norm(view, "model.norm".into(), c.hidden, &math)?;
        let lm_head = match c.tie_word_embeddings {
            true => embed_tokens,
            false => weight(view, "lm_head.weight".into(), &[c.vocab, c.hidden])?,
        };
        // Tied, yet a stored output layer that is not the embeddings: transformers 5 and
        // llama.cpp compute with the stored one, transformers 4 and candle with the embeddings.
        // The checkpoint means different things to different loaders; none is assumed.
        if c.tie_word_embeddings
            && let Some(head) = view.get("lm_head.weight")
        {
            let same = head.dtype == embed_tokens.dtype
                && head.shape == embed_tokens.shape
                && view.read(head)? == view.read(embed_tokens)?;
            if !same {
                return Err(Error::unsupported(
                    "`tie_word_embeddings` is true but the stored `lm_head.weight` differs from the embeddings: transformers 5 and llama.cpp compute the logits with the stored one, transformers 4 and candle with the embeddings, so the checkpoint's logits depend on the loader and ckpt will not pick one (`ckpt check` reports it as T007)",
                )
                .file(&view.ckpt.path)
                .tensor("lm_head.weight"));
            }
        }
        Ok(Model {
            view,
            config: c,
            math,
            llama_window_check: false,
            embed_tokens,
            layers,
            norm,
            lm_head,
            release_pages: true,
        })
    }

    /// Tensors of the view this model does not compute with, in view order: weights the math
    /// ignores (q/k norms under a math without them, LayerNorm biases under RMSNorm, extra norms,
    /// an untied `lm_head` when the config ties it, ...). Empty when every tensor is used; a
    /// caller asserting a family can refuse a checkpoint whose weights would be silently ignored.
    pub fn unused_tensors(&self) -> Vec<&'a str> {
        let mut used: std::collections::HashSet<&str> = self
            .layers
            .iter()
            .flat_map(|l| l.all())
            .map(|t| t.name.as_str())
            .collect();
        used.extend([self.embed_tokens.name.as_str(), self.lm_head.name.as_str()]);
        used.insert(self.norm.weight.name.as_str());
        used.extend(self.norm.bias.map(|b| b.name.as_str()));
        self.view
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .filter(|n| !used.contains(n))
            .collect()
    }

    /// Bytes of activation memory a forward over `batch` sequences of `seq` tokens allocates
    /// (state buffers, logits, rotary tables, attention scores, NormHead's row norms, a matmul's
    /// packed activations and accumulators), logits at
    /// every position; `None` when the count overflows.
    pub fn activation_bytes(&self, batch: usize, seq: usize) -> Option<u64> {
        self.activation_bytes_for(batch, seq, Outputs::Every)
    }

    /// [`Model::activation_bytes`] with logits for the positions `outputs` asks for.
    pub fn activation_bytes_for(&self, batch: usize, seq: usize, outputs: Outputs) -> Option<u64> {
        let c = &self.config;
        let t = batch.checked_mul(seq)?;
        let logit_rows = outputs.rows(batch, t) as u64;
        let t = t as u64;
        let per_token = [
            c.hidden, c.hidden, c.hidden, c.q_dim, c.q_dim, c.kv_dim, c.kv_dim,
        ]
        .iter()
        .chain(&[c.intermediate, c.intermediate])
        .try_fold(0u64, |acc, &w| acc.checked_add(w as u64))?;
        let threads = rayon::current_num_threads().max(1) as u64;
        let widest = c.hidden.max(c.q_dim).max(c.intermediate) as u64;
        let floats = t
            .checked_mul(per_token)?
            .checked_add(logit_rows.checked_mul(c.vocab as u64)?)?
            .checked_add((seq as u64).checked_mul(c.rotary_dim as u64)?)? // cos, sin
            .checked_add(threads.checked_mul(seq as u64)?)? // attention scores per worker
            .checked_add(c.vocab as u64)? // NormHead row norms
            .checked_add(c.q_dim.max(c.kv_dim) as u64)? // q/k norm scratch
            // One matmul's packed activations, of the widest input (the AMX path's three bf16
            // parts take 1.5 floats each), and its stored accumulators (at most 64 MiB).
            .checked_add(t.checked_mul(widest)?.checked_mul(3)? / 2)?
            .checked_add(16 << 20)?;
        floats.checked_mul(4)
    }

    /// Refuse, as a usage error, an input whose activations would exceed [`ACTIVATION_LIMIT`]
    /// (or whose size overflows), logits at every position. Callers that build large inputs can
    /// call it before building them; [`Model::forward`] calls it before allocating.
    pub fn check_input_size(&self, batch: usize, seq: usize) -> Result<()> {
        self.check_input_size_for(batch, seq, Outputs::Every)
    }

    /// [`Model::check_input_size`] with logits for the positions `outputs` asks for.
    pub fn check_input_size_for(&self, batch: usize, seq: usize, outputs: Outputs) -> Result<()> {
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
        let too_big = |what: String| {
            Error::usage(format!(
                "{batch} sequence(s) of {seq} tokens need {what} of activation memory, above the \
                 limit of {}",
                gib(ACTIVATION_LIMIT)
            ))
            .hint("run fewer or shorter sequences (`--batch`, `--seq-len`, fewer `--ids`)")
        };
        match self.activation_bytes_for(batch, seq, outputs) {
            None => Err(too_big("more than 2^64 bytes".into())),
            Some(b) if b > ACTIVATION_LIMIT => Err(too_big(gib(b))),
            Some(_) => Ok(()),
        }
    }

    /// Logits `[batch, seq, vocab]` for sequences of equal length, every position.
    pub fn forward(&self, batch: &[Vec<u32>], isa: Isa) -> Result<Logits> {
        self.forward_with_progress(batch, isa, &|_, _| {})
    }

    /// Keep the weights mapped between forward passes (`true`) instead of dropping each layer's
    /// pages from this process's resident set once it is done (the default, so a pass over a
    /// model larger than memory needs about one layer resident). For a caller running many passes
    /// over a model that fits in memory: the pages stay in the page cache either way, and kept
    /// mapped, later passes take no page faults (as llama.cpp's mmap does).
    pub fn keep_mapped(mut self, keep: bool) -> Model<'a> {
        self.release_pages = !keep;
        self
    }

    /// [`Model::forward`], calling `on_layer(done, total)` after each decoder layer (for progress bars).
    pub fn forward_with_progress(
        &self,
        batch: &[Vec<u32>],
        isa: Isa,
        on_layer: &dyn Fn(usize, usize),
    ) -> Result<Logits> {
        self.forward_outputs(batch, isa, Outputs::Every, on_layer)
    }

    /// The forward pass, computing the logits of the positions `outputs` asks for.
    ///
    /// With [`Outputs::Last`], the last decoder layer computes keys and values for every position
    /// (the last position attends to them) but carries only each sequence's last row past its
    /// attention: the output projection, the MLP, the final norm and `lm_head` run on `batch` rows
    /// instead of `batch * seq`, as llama.cpp does for a prompt. The rows kept get the same values
    /// as in an [`Outputs::Every`] pass, up to the order of the sums in the matmuls (which depends on
    /// the number of rows on SIMD ISAs; the scalar ISA's sums do not, and gives the same bits).
    pub fn forward_outputs(
        &self,
        batch: &[Vec<u32>],
        isa: Isa,
        outputs: Outputs,
        on_layer: &dyn Fn(usize, usize),
    ) -> Result<Logits> {
        let (c, m) = (&self.config, &self.math);
        let seq = check_batch(batch, c.vocab)?;
        if self.llama_window_check {
            c.check_seq_len(seq)?;
        }
        self.check_input_size_for(batch.len(), seq, outputs)?;
        let t = batch.len() * seq; // every token of every sequence goes through each matmul together
        // Rows carried past the last layer's attention: every token, or each sequence's last.
        let out_rows = outputs.rows(batch.len(), t);
        let (h, hd, rd) = (c.hidden, c.head_dim, c.rotary_dim);
        let (q_dim, kv_dim) = (c.q_dim, c.kv_dim);
        let mut s = State::new(c, t, out_rows)?;
        let mut rows = t; // rows of x (and the block buffers) in use

        // Token embeddings: decode only the rows of the ids used; times the embedding scale
        // (Granite's `embedding_multiplier`, Gemma's `sqrt(hidden_size)`), in f32.
        let tokens = batch.iter().flatten().map(|&id| id as usize);
        for (x, id) in s.x.chunks_exact_mut(h).zip(tokens) {
            let row = self.rows(self.embed_tokens, id, 1)?;
            kernels::to_f32(weights(self.embed_tokens, &row)?, x)?;
            if m.embedding_scale != 1.0 {
                x.iter_mut().for_each(|v| *v *= m.embedding_scale);
            }
        }
        // Rotary tables for positions 0..seq: cos, sin [seq, rotary_dim / 2].
        let (cos, sin) = c.rope_tables(seq);

        for (li, layer) in self.layers.iter().enumerate() {
            let w = self.read_layer(layer)?;

            // Attention block. Input: norm(x) (pre-norm, sandwich) or x itself (post-norm).
            if let Some(n) = &w.attn_pre {
                self.norm_rows(isa, n, &s.x, h, &mut s.xb)?;
            }
            let input = if w.attn_pre.is_some() { &s.xb } else { &s.x };
            // q, k, v = in Wq^T (+ bq), in Wk^T (+ bk), in Wv^T (+ bv)
            linear(isa, input, t, h, &w.q_proj, q_dim, &mut s.q)?;
            linear(isa, input, t, h, &w.k_proj, kv_dim, &mut s.k)?;
            linear(isa, input, t, h, &w.v_proj, kv_dim, &mut s.v)?;
            // q/k norms, before the rotary embedding: per head (Qwen3, Cohere, StableLM) or
            // whole rows (OLMo2).
            if m.qk_norm != QkNorm::None {
                self.qk_norm(isa, &w.q_norm, &mut s.q, q_dim)?;
                self.qk_norm(isa, &w.k_norm, &mut s.k, kv_dim)?;
            }
            // Rotate the first rotary_dim dims of each query and key head by its position, in
            // the math's pair layout; NoPE layers skip this.
            if m.rope_layers.get(li).copied().unwrap_or(true) && rd > 0 {
                for (i, (q, k)) in
                    s.q.chunks_exact_mut(q_dim)
                        .zip(s.k.chunks_exact_mut(kv_dim))
                        .enumerate()
                {
                    let pos = i % seq;
                    let (cos, sin) = (
                        &cos[pos * rd / 2..][..rd / 2],
                        &sin[pos * rd / 2..][..rd / 2],
                    );
                    for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                        let rot = &mut head[..rd];
                        match m.rope {
                            RopeLayout::Half => kernels::rope_half(isa, rot, cos, sin)?,
                            RopeLayout::Interleaved => {
                                kernels::rope_interleaved(isa, rot, cos, sin)?
                            }
                        }
                    }
                }
            }
            // att = softmax(cap(scale * q k^T), causal [and windowed]) v, per sequence and head
            let window = m.sliding_window.get(li).copied().flatten();
            let scores = Scores {
                scale: m.attention_scale,
                softcap: m.attn_logit_softcap,
                window,
            };
            attention(isa, c, scores, seq, &s.q, &s.k, &s.v, &mut s.att)?;
            // Only the last positions' logits wanted: past the last layer's attention, nothing
            // reads the other rows.
            if li + 1 == self.layers.len() && out_rows < rows {
                s.keep_last_rows(c, batch.len(), seq);
                rows = out_rows;
            }
            // out = att Wo^T (+ bo); post-norm / sandwich: norm(out)
            linear(isa, &s.att, rows, q_dim, &w.o_proj, h, &mut s.xb2)?;
            if let Some(n) = &w.attn_post {
                self.norm_rows(isa, n, &s.xb2, h, &mut s.xb)?;
            }
            // x += residual_scale * out
            let out = if w.attn_post.is_some() { &s.xb } else { &s.xb2 };
            kernels::axpy(isa, m.residual_scale, out, &mut s.x)?;

            // MLP block, the same shape: input norm(x) or x; parallel (Cohere): the attention's
            // input norm(x_before), still in xb, so x = x_before + attn + mlp as transformers adds
            let parallel = m.placement == NormPlacement::Parallel;
            if let Some(n) = &w.mlp_pre {
                self.norm_rows(isa, n, &s.x, h, &mut s.xb)?;
            }
            let input = if w.mlp_pre.is_some() || parallel {
                &s.xb
            } else {
                &s.x
            };
            // hb = act(in Wgate^T) * (in Wup^T)
            linear(isa, input, rows, h, &w.gate_proj, c.intermediate, &mut s.hb)?;
            linear(isa, input, rows, h, &w.up_proj, c.intermediate, &mut s.hb2)?;
            match m.activation {
                Activation::Silu => kernels::silu_mul(isa, &mut s.hb, &s.hb2)?,
                Activation::GeluTanh => kernels::gelu_tanh_mul(isa, &mut s.hb, &s.hb2)?,
                Activation::Gelu => kernels::gelu_mul(isa, &mut s.hb, &s.hb2)?,
            }
            // out = hb Wdown^T (+ bdown); post-norm / sandwich: norm(out); x += scale * out
            linear(
                isa,
                &s.hb,
                rows,
                c.intermediate,
                &w.down_proj,
                h,
                &mut s.xb2,
            )?;
            if let Some(n) = &w.mlp_post {
                self.norm_rows(isa, n, &s.xb2, h, &mut s.xb)?;
            }
            let out = if w.mlp_post.is_some() { &s.xb } else { &s.xb2 };
            kernels::axpy(isa, m.residual_scale, out, &mut s.x)?;
            // Done with this layer: its pages leave our resident set (memory stays ~one layer).
            drop(w);
            if self.release_pages {
                for t in layer.all() {
                    self.view.release(t);
                }
            }
            on_layer(li + 1, self.layers.len());
        }

        // Final norm, then the output projection for every row kept.
        let norm = self.read_norm(&self.norm)?;
        self.norm_rows(isa, &norm, &s.x, h, &mut s.xb)?;
        drop(norm);
        let lm_head = self.view.read(self.lm_head)?;
        let head = weights(self.lm_head, &lm_head)?;
        kernels::matmul(isa, &s.xb, rows, h, head, c.vocab, &mut s.logits)?;
        // NormHead: logits against L2-normalised rows = logits / row norm.
        if m.norm_head {
            let norms = row_norms(head, c.vocab, h)?;
            for row in s.logits.chunks_exact_mut(c.vocab) {
                for (l, &n) in row.iter_mut().zip(&norms) {
                    // `clamp_min(eps)`, keeping a NaN norm NaN as torch does
                    *l /= if n.is_nan() { n } else { n.max(NORM_HEAD_EPS) };
                }
            }
        }
        drop(lm_head);
        // Granite's `logits / logits_scaling`, then Gemma2's final soft-capping.
        if m.logits_divisor != 1.0 {
            s.logits.iter_mut().for_each(|l| *l /= m.logits_divisor);
        }
        if let Some(cap) = m.final_logit_softcap {
            s.logits
                .iter_mut()
                .for_each(|l| *l = (*l / cap).tanh() * cap);
        }
        for t in [
            Some(self.embed_tokens),
            Some(self.norm.weight),
            self.norm.bias,
            Some(self.lm_head),
        ]
        .into_iter()
        .flatten()
        .filter(|_| self.release_pages)
        {
            self.view.release(t);
        }
        Ok(Logits {
            batch: batch.len(),
            seq,
            vocab: c.vocab,
            outputs,
            data: s.logits,
        })
    }

    /// `out[r] = norm(x[r])` for every row of `width` values, in the math's norm kind and offset.
    fn norm_rows(
        &self,
        isa: Isa,
        n: &NormWeights<'_>,
        x: &[f32],
        width: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (off, eps) = (self.math.norm_offset, self.config.rms_norm_eps);
        for (x, o) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
            match self.math.norm {
                NormKind::Rms => kernels::rmsnorm_offset(isa, x, n.weight.w(), off, eps, o)?,
                NormKind::LayerNorm => {
                    let bias = n.bias.as_ref().map(Tensor::w);
                    kernels::layernorm(isa, x, n.weight.w(), bias, off, eps, o)?
                }
            }
        }
        Ok(())
    }

    /// The q/k norms of `x`, rows of `row` values (a token's heads), in place, in the math's norm
    /// kind and offset without a bias: whole rows (OLMo2), or each head over `head_dim` with the
    /// one weight the heads share (Qwen3), its row of a `[heads, head_dim]` weight (Cohere) or its
    /// own tensor (StableLM).
    fn qk_norm(&self, isa: Isa, w: &[Tensor<'_>], x: &mut [f32], row: usize) -> Result<()> {
        let (off, eps) = (self.math.norm_offset, self.config.rms_norm_eps);
        let chunk = match self.math.qk_norm {
            QkNorm::Full => row,
            _ => self.config.head_dim,
        };
        // The weights of each chunk of a row, in order.
        let per_chunk: Vec<Weights<'_>> = match w {
            [one] if one.w().dtype.bytes_of(chunk) == one.bytes.len() => {
                vec![one.w(); row / chunk]
            }
            [one] => {
                let (block, _) = one.dtype.block();
                if !chunk.is_multiple_of(block) {
                    return Err(Error::unsupported(format!(
                        "a q/k norm weight of {:?} cannot be cut into heads of {chunk}",
                        one.dtype
                    )));
                }
                one.bytes
                    .chunks_exact(one.dtype.bytes_of(chunk))
                    .map(|b| Weights::new(one.dtype, b))
                    .collect()
            }
            many => many.iter().map(Tensor::w).collect(),
        };
        if per_chunk.len() != row / chunk {
            return Err(Error::internal(format!(
                "q/k norm: {} weights for {} heads",
                per_chunk.len(),
                row / chunk
            )));
        }
        let mut tmp = vec![0.0f32; chunk];
        for r in x.chunks_exact_mut(row) {
            for (c, w) in r.chunks_exact_mut(chunk).zip(&per_chunk) {
                tmp.copy_from_slice(c);
                match self.math.norm {
                    NormKind::Rms => kernels::rmsnorm_offset(isa, &tmp, *w, off, eps, c)?,
                    NormKind::LayerNorm => kernels::layernorm(isa, &tmp, *w, None, off, eps, c)?,
                }
            }
        }
        Ok(())
    }

    /// Read a norm's weight and bias.
    fn read_norm(&self, n: &Norm<'a>) -> Result<NormWeights<'a>> {
        Ok(NormWeights {
            weight: self.tensor(n.weight)?,
            bias: n.bias.map(|b| self.tensor(b)).transpose()?,
        })
    }

    /// Borrow (or gather, when the view assembles it) one tensor's bytes.
    fn tensor(&self, t: &ViewTensor) -> Result<Tensor<'a>> {
        Ok(Tensor {
            dtype: wdtype(t.dtype).map_err(|e| e.tensor(&t.name))?,
            bytes: self.view.read(t)?,
        })
    }

    /// Read (borrow, or gather when the view assembles it) every tensor of one layer.
    fn read_layer(&self, l: &LayerTensors<'a>) -> Result<LayerWeights<'a>> {
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
                weight: self.tensor(lin.weight)?,
                bias,
            })
        };
        let norm = |n: &Option<Norm<'a>>| n.as_ref().map(|n| self.read_norm(n)).transpose();
        let tensors = |ts: &[&'a ViewTensor]| -> Result<Vec<Tensor<'a>>> {
            ts.iter().map(|t| self.tensor(t)).collect()
        };
        Ok(LayerWeights {
            attn_pre: norm(&l.attn_pre)?,
            attn_post: norm(&l.attn_post)?,
            mlp_pre: norm(&l.mlp_pre)?,
            mlp_post: norm(&l.mlp_post)?,
            q_norm: tensors(&l.q_norm)?,
            k_norm: tensors(&l.k_norm)?,
            q_proj: linear(&l.q_proj)?,
            k_proj: linear(&l.k_proj)?,
            v_proj: linear(&l.v_proj)?,
            o_proj: linear(&l.o_proj)?,
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

/// L2 norm of each of the `rows` rows of `w [rows, width]`, from the stored dtype: squares summed
/// in f64, one row decoded at a time (`torch.nn.functional.normalize` divides by these).
fn row_norms(w: Weights<'_>, rows: usize, width: usize) -> Result<Vec<f32>> {
    let size = w.dtype.size();
    let mut row = vec![0.0f32; width];
    let mut out = Vec::with_capacity(rows);
    for r in 0..rows {
        let bytes = w
            .bytes
            .get(r * width * size..(r + 1) * width * size)
            .ok_or_else(|| Error::internal("lm_head is shorter than its shape"))?;
        kernels::to_f32(Weights::new(w.dtype, bytes), &mut row)?;
        let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        out.push(ss.sqrt() as f32);
    }
    Ok(out)
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

/// How a layer's attention scores are formed and masked.
#[derive(Debug, Clone, Copy)]
struct Scores {
    /// Multiplies `q . k`.
    scale: f32,
    /// `cap * tanh(s / cap)` of each scaled score (Gemma2).
    softcap: Option<f32>,
    /// Keys older than this many positions are masked (`None`: full causal attention).
    window: Option<usize>,
}

/// Causal multi-head attention with grouped key/value heads over `t / seq` sequences, one output
/// row per token in parallel: for head `h` (kv head `h / (heads / kv_heads)`),
/// `att[h] = sum_j softmax_j(cap(scale * q[h] . k_j)) v_j` over positions `j <= i` of the same
/// sequence, and with a sliding window `w` only `i - w < j <= i` (transformers'
/// `sliding_window_overlay`: `kv_idx > q_idx - sliding_window`).
#[allow(clippy::too_many_arguments)]
fn attention(
    isa: Isa,
    c: &Config,
    sc: Scores,
    seq: usize,
    q: &[f32],       // [t, heads * hd]
    k: &[f32],       // [t, kv_heads * hd]
    v: &[f32],       // [t, kv_heads * hd]
    att: &mut [f32], // [t, heads * hd]
) -> Result<(), KernelError> {
    let hd = c.head_dim;
    let (q_dim, kv_dim) = (c.q_dim, c.kv_dim);
    let group = c.heads / c.kv_heads;
    att.par_chunks_mut(q_dim).enumerate().try_for_each_init(
        || vec![0.0f32; seq], // scores [seq] of one head
        |scores, (i, out)| {
            let (first, pos) = (i - i % seq, i % seq); // first token of the sequence, position
            // the first key this query sees
            let start = sc.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let q_row = &q[i * q_dim..][..q_dim];
            for (h, out_h) in out.chunks_exact_mut(hd).enumerate() {
                let q_h = &q_row[h * hd..][..hd];
                let kv_off = (h / group) * hd;
                let row0 = (first + start) * kv_dim + kv_off; // the first visible key's row
                kernels::attend(
                    isa,
                    q_h,
                    &k[row0..],
                    &v[row0..],
                    kv_dim,
                    sc.scale,
                    sc.softcap,
                    &mut scores[..=pos - start],
                    out_h,
                )?;
            }
            Ok(())
        },
    )
}
