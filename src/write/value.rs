//! Value conversions: the arithmetic a target family needs to compute what the source computes,
//! when the two differ by scalar multipliers (Granite's embedding, residual, attention and logits
//! multipliers) or by a normalisation of output rows (Baichuan2's NormHead).
//!
//! A value conversion is written in two steps. The writer first stages the bit-exact gather (with
//! a tied `lm_head` untied into its own tensor when its values must change apart from the
//! embeddings) and checks its bytes against the source as for any conversion; then [`apply`]
//! rewrites the listed tensors of the *staged* files in place (same dtype, same size, so no header
//! changes), row block by row block, in f32 with round-to-nearest-even back to the stored dtype.
//! The caller then compares logits of the source in its own math with the staged output in the
//! target's, under a stated tolerance, before anything is committed. Nothing here is bit-exact, and
//! the reports say so.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::mapping::{View, ViewTensor};
use crate::reference::Math;

/// One arithmetic step on one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueOp {
    /// Every element multiplied by the factor.
    Scale(f64),
    /// Every row divided by its L2 norm (`max(norm, 1e-12)`, torch's `F.normalize`), then every
    /// element multiplied by the factor.
    NormalizeRows(f64),
}

/// The value steps of a conversion, by tensor name in the written view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValuePlan {
    /// `(tensor name, operation)`, in writing order.
    pub ops: Vec<(String, ValueOp)>,
}

impl ValuePlan {
    /// True when nothing is to be computed.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn ratio(a: f32, b: f32) -> f64 {
    f64::from(a) / f64::from(b)
}

/// Fold the scalar and NormHead differences between `from` (the source's computation) and `to`
/// (the target's) into the canonical view's weights: returns the view to write (with `lm_head`
/// untied when it must change apart from the embeddings) and the value steps for [`apply`].
pub fn fold<'a>(view: View<'a>, from: &Math, to: &Math) -> Result<(View<'a>, ValuePlan)> {
    let emb = ratio(from.embedding_scale, to.embedding_scale);
    let res = ratio(from.residual_scale, to.residual_scale);
    let att = ratio(from.attention_scale, to.attention_scale);
    let div = ratio(from.logits_divisor, to.logits_divisor);
    let norm = from.norm_head && !to.norm_head;
    let head_changes = div != 1.0 || norm;
    let mut tensors = view.tensors.clone();
    let mut config = view.config.clone();
    let tied = !tensors.iter().any(|t| t.name == "lm_head.weight");
    if tied && (head_changes || emb != 1.0) {
        // The output projection is the embedding matrix: give it its own copy (a gather of the
        // same rows) so each can be scaled on its own.
        let e = tensors
            .iter()
            .find(|t| t.name == "model.embed_tokens.weight")
            .ok_or_else(|| {
                Error::bad_data("no embedding tensor to untie the output projection from")
                    .file(&view.ckpt.path)
                    .tensor("model.embed_tokens.weight")
            })?;
        let mut head: ViewTensor = e.clone();
        head.name = "lm_head.weight".into();
        head.transform = "untie";
        tensors.push(head);
        if let Some(c) = config.as_mut() {
            c.raw
                .insert("tie_word_embeddings".into(), serde_json::Value::Bool(false));
            c.tie_word_embeddings = Some(false);
        }
    }
    let mut plan = ValuePlan::default();
    for t in &tensors {
        let n = t.name.as_str();
        let op = if n == "model.embed_tokens.weight" && emb != 1.0 {
            Some(ValueOp::Scale(emb))
        } else if n == "lm_head.weight" && head_changes {
            Some(match norm {
                true => ValueOp::NormalizeRows(1.0 / div),
                false => ValueOp::Scale(1.0 / div),
            })
        } else if res != 1.0
            && (n.ends_with(".self_attn.o_proj.weight")
                || n.ends_with(".self_attn.o_proj.bias")
                || n.ends_with(".mlp.down_proj.weight")
                || n.ends_with(".mlp.down_proj.bias"))
        {
            Some(ValueOp::Scale(res))
        } else if att != 1.0
            && (n.ends_with(".self_attn.q_proj.weight") || n.ends_with(".self_attn.q_proj.bias"))
        {
            Some(ValueOp::Scale(att))
        } else {
            None
        };
        if let Some(op) = op {
            if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(Error::unsupported(format!(
                    "a value conversion computes in f32, f16 or bf16; this tensor is {:?}",
                    t.dtype
                ))
                .file(&view.ckpt.path)
                .tensor(n));
            }
            plan.ops.push((t.name.clone(), op));
        }
    }
    let mut v = View::new(
        view.ckpt,
        view.family.clone(),
        view.naming.clone(),
        tensors,
        config,
        view.dropped.clone(),
    )?;
    v.math = view.math.clone();
    v.notes = view.notes.clone();
    Ok((v, plan))
}

/// Bytes processed per block when rewriting a tensor.
const BLOCK_BYTES: usize = 1 << 20;

/// Apply `plan` to the staged checkpoint in `dir` in place, then fsync every file it touched.
pub fn apply(dir: &Path, plan: &ValuePlan) -> Result<()> {
    let ck = Checkpoint::open(dir)?;
    for (name, op) in &plan.ops {
        let t = ck.get(name).ok_or_else(|| {
            Error::internal("a value step names a tensor the output lacks").tensor(name)
        })?;
        let shard = ck
            .shards
            .get(t.shard)
            .ok_or_else(|| Error::internal("tensor outside the shard list").tensor(name))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&shard.path)
            .map_err(|e| Error::io_write(&shard.path, "cannot open for a value conversion", e))?;
        let esize = match t.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(
                    Error::unsupported(format!("value conversion of dtype {other:?}")).tensor(name),
                );
            }
        };
        let rows = t.shape.first().copied().unwrap_or(1).max(1);
        let row_bytes = t.nbytes() / rows;
        let start = (shard.data_start() + t.begin) as u64;
        let per_block = (BLOCK_BYTES / row_bytes.max(1)).max(1);
        let mut buf = Vec::new();
        let mut row = 0;
        while row < rows {
            let n = per_block.min(rows - row);
            buf.resize(n * row_bytes, 0);
            let off = start + (row * row_bytes) as u64;
            file.read_exact_at(&mut buf, off).map_err(|e| {
                Error::io(&shard.path, "cannot read a staged tensor", e).tensor(name)
            })?;
            for r in buf.chunks_exact_mut(row_bytes.max(1)) {
                let mut x = decode(t.dtype, r, esize);
                match op {
                    ValueOp::Scale(f) => x.iter_mut().for_each(|v| *v *= f),
                    ValueOp::NormalizeRows(f) => {
                        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                        x.iter_mut().for_each(|v| *v = *v / norm * f);
                    }
                }
                encode(t.dtype, &x, r, esize);
            }
            file.write_all_at(&buf, off).map_err(|e| {
                Error::io_write(&shard.path, "cannot write a value-converted tensor", e)
                    .tensor(name)
            })?;
            row += n;
        }
        file.sync_all()
            .map_err(|e| Error::io_write(&shard.path, "cannot fsync", e))?;
    }
    Ok(())
}

/// Decode one row to f64 (the arithmetic is done in f64 and rounded once to the stored dtype, so a
/// bf16 weight changes by at most half an ulp of bf16 beyond the exact product).
fn decode(dtype: Dtype, bytes: &[u8], esize: usize) -> Vec<f64> {
    bytes
        .chunks_exact(esize)
        .map(|c| match (dtype, c) {
            (Dtype::F32, [a, b, c, d]) => f64::from(f32::from_le_bytes([*a, *b, *c, *d])),
            (Dtype::F16, [a, b]) => f64::from(half::f16::from_le_bytes([*a, *b]).to_f32()),
            (Dtype::BF16, [a, b]) => f64::from(half::bf16::from_le_bytes([*a, *b]).to_f32()),
            _ => 0.0,
        })
        .collect()
}

fn encode(dtype: Dtype, x: &[f64], out: &mut [u8], esize: usize) {
    for (v, o) in x.iter().zip(out.chunks_exact_mut(esize)) {
        match dtype {
            Dtype::F32 => o.copy_from_slice(&(*v as f32).to_le_bytes()),
            Dtype::F16 => o.copy_from_slice(&half::f16::from_f64(*v).to_le_bytes()),
            Dtype::BF16 => o.copy_from_slice(&half::bf16::from_f64(*v).to_le_bytes()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_through_f64() {
        let x = [1.0f64 / 3.0, -2.5e-3, 7.0];
        let mut out = vec![0u8; 6];
        encode(Dtype::BF16, &x, &mut out, 2);
        let back = decode(Dtype::BF16, &out, 2);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() * 2f64.powi(-8), "{a} vs {b}");
        }
        assert_eq!(back[2], 7.0);
        let mut out = vec![0u8; 12];
        encode(Dtype::F32, &x, &mut out, 4);
        assert_eq!(
            decode(Dtype::F32, &out, 4)[0],
            f64::from((1.0f64 / 3.0) as f32)
        );
    }
}
