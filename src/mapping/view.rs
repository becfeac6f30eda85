//! Views: a checkpoint seen under other names, with tensors produced lazily from the mmaps.
//!
//! Every transform a LLaMA-equivalent family needs (rename, split, concat, grouped interleave, rotary
//! permutation, drop, zeros) moves whole rows and never does arithmetic, so a view tensor is described
//! as a list of [`Segment`]s: runs of consecutive rows of a physical tensor, or zero bytes, concatenated.
//! A rename is one segment covering the whole source; a split is one segment over part of a fused
//! tensor; a rotary permutation is one single-row segment per row. Because the plan is data, the writer
//! can stream it with `copy_file_range`, the forward pass can read it, and two views compose
//! (A -> canonical -> B) by resolving segments, all bit-exact for every dtype.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::checkpoint::header::Dtype;
use crate::checkpoint::{Checkpoint, ModelConfig, TensorInfo};
use crate::error::{Error, Result};

/// A run of bytes of a view tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `rows` consecutive rows (slices along the first dimension) of physical tensor `tensor`
    /// (an index into [`Checkpoint::tensors`]), starting at `row_start`.
    Rows {
        /// Index into the checkpoint's tensor list.
        tensor: usize,
        /// First row.
        row_start: usize,
        /// Number of rows.
        rows: usize,
    },
    /// `bytes` zero bytes (a zero bias added for a target family that expects one).
    Zeros {
        /// Number of zero bytes.
        bytes: usize,
    },
}

/// One tensor of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewTensor {
    /// Name in the view's naming.
    pub name: String,
    /// Element type (the sources'; transforms never change it).
    pub dtype: Dtype,
    /// Shape in the view.
    pub shape: Vec<usize>,
    /// How its bytes are assembled, in order.
    pub segments: Vec<Segment>,
    /// Names of the physical tensors it is made from (empty for zeros).
    pub sources: Vec<String>,
    /// The transform that produced it, for reports: `same`, `rename`, `split`, `concat`, `permute`,
    /// `interleave`, `zeros`.
    pub transform: &'static str,
}

impl ViewTensor {
    /// Byte length.
    pub fn nbytes(&self) -> usize {
        crate::checkpoint::header::checked_nbytes(self.dtype, &self.shape).unwrap_or(0)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        crate::checkpoint::header::checked_numel(&self.shape).unwrap_or(0)
    }

    /// True when the tensor is exactly one physical tensor's bytes (a rename or no change).
    pub fn is_whole_tensor(&self, ck: &Checkpoint) -> Option<usize> {
        match self.segments.as_slice() {
            [
                Segment::Rows {
                    tensor,
                    row_start: 0,
                    rows,
                },
            ] => {
                let t = ck.tensors.get(*tensor)?;
                (rows_of(t) == *rows).then_some(*tensor)
            }
            _ => None,
        }
    }
}

/// Number of rows of a physical tensor (first dimension; 1 for a scalar).
pub fn rows_of(t: &TensorInfo) -> usize {
    t.shape.first().copied().unwrap_or(1)
}

/// Bytes per row of a physical tensor; `None` when a row is not a whole number of bytes.
pub fn row_bytes(t: &TensorInfo) -> Option<usize> {
    let rows = rows_of(t);
    if rows == 0 {
        return Some(0);
    }
    let n = t.nbytes();
    n.is_multiple_of(rows).then(|| n / rows)
}

/// A checkpoint seen under a family's naming (usually the canonical LLaMA names).
#[derive(Debug)]
pub struct View<'a> {
    /// The physical checkpoint.
    pub ckpt: &'a Checkpoint,
    /// The family the checkpoint was read as (e.g. `yi`), or `identity`.
    pub family: String,
    /// The naming the view presents (`llama` for canonical views).
    pub naming: String,
    /// The tensors, in output order (source order, layer by layer).
    pub tensors: Vec<ViewTensor>,
    /// The config as seen in the view's naming (rewritten by the mapping), if the checkpoint has one.
    pub config: Option<ModelConfig>,
    /// Physical tensors deliberately dropped (e.g. rotary `inv_freq` buffers), with the reason.
    pub dropped: Vec<(String, String)>,
    /// The computation the view's tensors mean, resolved from the family's `[math]` and the
    /// checkpoint's config: `Some(Ok)` when known, `Some(Err(reason))` when it cannot be known (no
    /// config, config keys the family does not model, ...), `None` when no family was involved
    /// (an identity view: the caller asserts the tensors are canonical LLaMA).
    pub math: Option<std::result::Result<crate::reference::Math, String>>,
    /// Notes for the user about how the view was read (config keys ignored on the user's word).
    pub notes: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl<'a> View<'a> {
    /// Build a view from its parts; names must be unique.
    pub fn new(
        ckpt: &'a Checkpoint,
        family: impl Into<String>,
        naming: impl Into<String>,
        tensors: Vec<ViewTensor>,
        config: Option<ModelConfig>,
        dropped: Vec<(String, String)>,
    ) -> Result<View<'a>> {
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(
                    Error::bad_data("two tensors of the view have this name").tensor(&t.name)
                );
            }
            validate_segments(ckpt, t)?;
        }
        Ok(View {
            ckpt,
            family: family.into(),
            naming: naming.into(),
            tensors,
            config,
            dropped,
            math: None,
            notes: Vec::new(),
            by_name,
        })
    }

    /// The checkpoint as it is: every tensor under its own name.
    pub fn identity(ckpt: &'a Checkpoint) -> View<'a> {
        let tensors = ckpt
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| ViewTensor {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                segments: vec![Segment::Rows {
                    tensor: i,
                    row_start: 0,
                    rows: rows_of(t),
                }],
                sources: vec![t.name.clone()],
                transform: "same",
            })
            .collect::<Vec<_>>();
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        View {
            ckpt,
            family: "identity".into(),
            naming: "identity".into(),
            tensors,
            config: ckpt.config.clone(),
            dropped: Vec::new(),
            math: None,
            notes: Vec::new(),
            by_name,
        }
    }

    /// Look a view tensor up by name.
    pub fn get(&self, name: &str) -> Option<&ViewTensor> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// Look a view tensor up by name, checking its shape (the candle `VarBuilder` habit): the error
    /// names the tensor, the expected and the actual shape.
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<&ViewTensor> {
        let t = self.get(name).ok_or_else(|| {
            Error::bad_data("the model needs this tensor but the checkpoint does not have it")
                .file(&self.ckpt.path)
                .tensor(name)
        })?;
        if t.shape != shape {
            return Err(Error::bad_data(format!(
                "shape is {:?} but the config implies {:?}",
                t.shape, shape
            ))
            .file(&self.ckpt.path)
            .tensor(name));
        }
        Ok(t)
    }

    /// The checkpoint's own name for the view tensor `name`: the stored tensor's name when the
    /// view tensor is one whole stored tensor (a rename), else `name` (a part of a fused tensor,
    /// permuted rows, a tensor the view adds).
    pub fn stored_name<'s>(&'s self, name: &'s str) -> &'s str {
        self.get(name)
            .and_then(|t| t.is_whole_tensor(self.ckpt))
            .and_then(|i| self.ckpt.tensors.get(i))
            .map_or(name, |t| t.name.as_str())
    }

    /// The bytes of a view tensor: borrowed from the mmap when it is one whole contiguous physical
    /// tensor, gathered into one buffer otherwise.
    pub fn read(&self, t: &ViewTensor) -> Result<Cow<'a, [u8]>> {
        if let Some(i) = t.is_whole_tensor(self.ckpt) {
            let info = self
                .ckpt
                .tensors
                .get(i)
                .ok_or_else(|| Error::internal("bad segment"))?;
            return self.ckpt.read(info);
        }
        let mut out = Vec::with_capacity(t.nbytes());
        self.for_each_chunk(t, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(Cow::Owned(out))
    }

    /// Drop the pages of every physical tensor a view tensor reads from this process's resident set
    /// (see [`crate::checkpoint::Shard::release`]); call it when done with the tensor.
    pub fn release(&self, t: &ViewTensor) {
        for seg in &t.segments {
            if let Segment::Rows { tensor, .. } = seg
                && let Some(info) = self.ckpt.tensors.get(*tensor)
            {
                self.ckpt.release(info);
            }
        }
    }

    /// Stream a view tensor's bytes in order, one contiguous chunk per segment (zeros in bounded
    /// chunks), without assembling the tensor.
    pub fn for_each_chunk(
        &self,
        t: &ViewTensor,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        const ZERO_CHUNK: usize = 1 << 16;
        static ZEROS: [u8; ZERO_CHUNK] = [0u8; ZERO_CHUNK];
        for seg in &t.segments {
            match seg {
                Segment::Rows { .. } => f(&self.segment_bytes(seg)?)?,
                Segment::Zeros { bytes } => {
                    let mut left = *bytes;
                    while left > 0 {
                        let n = left.min(ZERO_CHUNK);
                        f(ZEROS.get(..n).unwrap_or_default())?;
                        left -= n;
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes of one `Rows` segment (empty for `Zeros`): borrowed from the mmap when they are one
    /// contiguous byte range, gathered otherwise (a strided torch tensor, merged Meta ranks).
    pub fn segment_bytes(&self, seg: &Segment) -> Result<Cow<'a, [u8]>> {
        let Segment::Rows {
            tensor,
            row_start,
            rows,
        } = seg
        else {
            return Ok(Cow::Borrowed(&[]));
        };
        let info = self
            .ckpt
            .tensors
            .get(*tensor)
            .ok_or_else(|| Error::internal("bad segment"))?;
        row_bytes(info).ok_or_else(|| {
            Error::unsupported("rows of this tensor are not whole bytes").tensor(&info.name)
        })?;
        self.ckpt.read_rows(info, *row_start, *rows)
    }

    /// The physical (file, absolute byte offset, length) of a `Rows` segment when it is one
    /// contiguous run; `None` for `Zeros` and for a segment of a strided or rank-merged tensor (use
    /// [`View::segment_runs`], which handles every segment).
    pub fn segment_location(&self, seg: &Segment) -> Option<(usize, u64, usize)> {
        let mut runs: Vec<(usize, u64, usize)> = Vec::with_capacity(1);
        self.segment_runs(seg, &mut |s, o, l| {
            if runs.is_empty() {
                runs.push((s, o, l));
                Ok(())
            } else {
                Err(Error::internal("more than one run"))
            }
        })
        .ok()?;
        match runs.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The physical byte runs of a `Rows` segment, in order, as `(shard, absolute file offset,
    /// length)`: one run for a contiguous tensor, several for a strided or rank-merged one. `Zeros`
    /// has none.
    pub fn segment_runs(
        &self,
        seg: &Segment,
        f: &mut dyn FnMut(usize, u64, usize) -> Result<()>,
    ) -> Result<()> {
        let Segment::Rows {
            tensor,
            row_start,
            rows,
        } = seg
        else {
            return Ok(());
        };
        let info = self
            .ckpt
            .tensors
            .get(*tensor)
            .ok_or_else(|| Error::internal("bad segment"))?;
        self.ckpt.for_each_run(info, *row_start, *rows, f)
    }

    /// Rows `[start, start + n)` of view tensor `t`, expressed as segments over physical tensors
    /// (used to compose views: a tensor of a second view that takes rows of this one).
    pub fn resolve_rows(&self, t: &ViewTensor, start: usize, n: usize) -> Result<Vec<Segment>> {
        let rows_total = t.shape.first().copied().unwrap_or(1);
        let row_len = t.nbytes().checked_div(rows_total).unwrap_or(0);
        let end = start
            .checked_add(n)
            .filter(|&e| e <= rows_total)
            .ok_or_else(|| {
                Error::internal(format!("rows {start}+{n} outside {rows_total}")).tensor(&t.name)
            })?;
        let mut out = Vec::new();
        let mut pos = 0usize; // in rows of `t`
        for seg in &t.segments {
            let (seg_rows, mk): (usize, Box<dyn Fn(usize, usize) -> Segment>) = match seg {
                Segment::Rows {
                    tensor,
                    row_start,
                    rows,
                } => {
                    let (tensor, row_start) = (*tensor, *row_start);
                    let info = self
                        .ckpt
                        .tensors
                        .get(tensor)
                        .ok_or_else(|| Error::internal("bad segment"))?;
                    let rb = row_bytes(info).unwrap_or(0);
                    if rb != row_len {
                        return Err(Error::unsupported(
                            "cannot take rows of a tensor assembled from rows of another width",
                        )
                        .tensor(&t.name));
                    }
                    (
                        *rows,
                        Box::new(move |a, k| Segment::Rows {
                            tensor,
                            row_start: row_start + a,
                            rows: k,
                        }),
                    )
                }
                Segment::Zeros { bytes } => {
                    let r = bytes.checked_div(row_len).unwrap_or(0);
                    (
                        r,
                        Box::new(move |_, k| Segment::Zeros { bytes: k * row_len }),
                    )
                }
            };
            let (s0, s1) = (pos, pos + seg_rows);
            let (a, b) = (start.max(s0), end.min(s1));
            if a < b {
                out.push(mk(a - s0, b - a));
            }
            pos = s1;
        }
        Ok(merge_segments(out))
    }
}

/// Merge adjacent segments that continue each other (so a gather that undoes another collapses to a
/// single whole-tensor segment again).
pub fn merge_segments(segs: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
    for s in segs {
        match (out.last_mut(), &s) {
            (
                Some(Segment::Rows {
                    tensor: t0,
                    row_start: r0,
                    rows: n0,
                }),
                Segment::Rows {
                    tensor: t1,
                    row_start: r1,
                    rows: n1,
                },
            ) if t0 == t1 && *r0 + *n0 == *r1 => *n0 += n1,
            (Some(Segment::Zeros { bytes: b0 }), Segment::Zeros { bytes: b1 }) => *b0 += b1,
            _ => out.push(s),
        }
    }
    out
}

fn validate_segments(ck: &Checkpoint, t: &ViewTensor) -> Result<()> {
    let mut total = 0usize;
    for seg in &t.segments {
        let n = match seg {
            Segment::Rows {
                tensor,
                row_start,
                rows,
            } => {
                let info = ck
                    .tensors
                    .get(*tensor)
                    .ok_or_else(|| Error::internal("bad segment").tensor(&t.name))?;
                if info.dtype != t.dtype {
                    return Err(Error::bad_data(format!(
                        "made from `{}` of dtype {}, but the other parts are {}",
                        info.name, info.dtype, t.dtype
                    ))
                    .tensor(&t.name));
                }
                let end = row_start.checked_add(*rows);
                if end.is_none_or(|e| e > rows_of(info)) {
                    return Err(Error::bad_data(format!(
                        "needs rows {row_start}..{} of `{}`, which has {}",
                        row_start.saturating_add(*rows),
                        info.name,
                        rows_of(info)
                    ))
                    .tensor(&t.name));
                }
                let rb = row_bytes(info).ok_or_else(|| {
                    Error::unsupported("rows are not whole bytes").tensor(&info.name)
                })?;
                rows.checked_mul(rb)
            }
            Segment::Zeros { bytes } => Some(*bytes),
        };
        total = n
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| Error::bad_data("size overflows").tensor(&t.name))?;
    }
    let want = crate::checkpoint::header::checked_nbytes(t.dtype, &t.shape)
        .map_err(|m| Error::bad_data(m).tensor(&t.name))?;
    if total != want {
        return Err(Error::bad_data(format!(
            "its parts hold {total} bytes but shape {:?} of {} needs {want}",
            t.shape, t.dtype
        ))
        .tensor(&t.name));
    }
    Ok(())
}
