//! Value differences between two same-shape tensors, streamed: both sides are decoded to f32 in
//! fixed-size blocks (f16/bf16 exactly) straight from their view segments, and the sums are kept in
//! f64, so memory stays bounded by the block size whatever the tensor size. Pairs run in parallel
//! (rayon).
//!
//! Reported per tensor: max |a-b|, relative L2 ‖a−b‖/‖a‖, cosine similarity over the pairs where
//! both values are finite, how many elements differ, and how many values are non-finite on each
//! side. Non-finite values compare by identity: NaN against NaN and `+inf` against `+inf` are equal
//! (so a checkpoint compared with itself has no difference), a non-finite value against anything
//! else is a differing element (and never a NaN in the metrics).

use rayon::prelude::*;

use crate::check::scan::{decode_f32, is_float};
use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::mapping::{Segment, View, ViewTensor};

/// Elements decoded per block and side.
pub const BLOCK_ELEMS: usize = 1 << 16;

/// How two tensors' values differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueDiff {
    /// Largest |a - b| over the pairs where both are finite.
    pub max_abs: f64,
    /// ‖a − b‖ / ‖a‖ (0 when both are zero, infinite when only a is zero).
    pub rel_l2: f64,
    /// a·b / (‖a‖‖b‖) (1 when both are all zero, 0 when one is).
    pub cosine: f64,
    /// Elements that differ (a non-finite value against a different value included).
    pub differing: u64,
    /// Elements compared.
    pub elements: u64,
    /// Non-finite values (NaN, `+inf`, `-inf`) in A.
    pub nonfinite_a: u64,
    /// Non-finite values in B.
    pub nonfinite_b: u64,
}

enum Piece<'a> {
    Bytes(std::borrow::Cow<'a, [u8]>),
    Zeros(usize),
}

/// Reads a view tensor's elements in order, across its segments.
struct Cursor<'a> {
    pieces: Vec<Piece<'a>>,
    idx: usize,
    off: usize,
    dtype: Dtype,
    esize: usize,
}

impl<'a> Cursor<'a> {
    fn new(view: &View<'a>, t: &ViewTensor) -> Result<Cursor<'a>> {
        let mut pieces = Vec::with_capacity(t.segments.len());
        for seg in &t.segments {
            pieces.push(match seg {
                Segment::Rows { .. } => Piece::Bytes(view.segment_bytes(seg)?),
                Segment::Zeros { bytes } => Piece::Zeros(*bytes),
            });
        }
        Ok(Cursor {
            pieces,
            idx: 0,
            off: 0,
            dtype: t.dtype,
            esize: t.dtype.bitsize() / 8,
        })
    }

    /// Append up to `n` elements to `out`; returns how many were appended.
    fn fill(&mut self, n: usize, out: &mut Vec<f32>) -> usize {
        let mut left = n;
        while left > 0 {
            let Some(p) = self.pieces.get(self.idx) else {
                break;
            };
            let len = match p {
                Piece::Bytes(b) => b.len(),
                Piece::Zeros(z) => *z,
            };
            let avail = (len - self.off) / self.esize;
            if avail == 0 {
                self.idx += 1;
                self.off = 0;
                continue;
            }
            let k = avail.min(left);
            match p {
                Piece::Bytes(b) => {
                    let s = &b[self.off..self.off + k * self.esize];
                    decode_f32(self.dtype, s, out);
                }
                Piece::Zeros(_) => out.extend(std::iter::repeat_n(0.0f32, k)),
            }
            self.off += k * self.esize;
            left -= k;
        }
        n - left
    }
}

/// Compare two same-shape float view tensors element by element.
pub fn compare(
    va: &View,
    ta: &ViewTensor,
    vb: &View,
    tb: &ViewTensor,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<ValueDiff> {
    if ta.numel() != tb.numel() {
        return Err(Error::internal("value diff of tensors of different sizes").tensor(&ta.name));
    }
    let (mut ca, mut cb) = (Cursor::new(va, ta)?, Cursor::new(vb, tb)?);
    let (mut xa, mut xb) = (
        Vec::with_capacity(BLOCK_ELEMS),
        Vec::with_capacity(BLOCK_ELEMS),
    );
    let (mut dd, mut aa, mut bb, mut ab, mut max) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let (mut differing, mut elements) = (0u64, 0u64);
    let (mut nonfinite_a, mut nonfinite_b) = (0u64, 0u64);
    loop {
        xa.clear();
        xb.clear();
        let na = ca.fill(BLOCK_ELEMS, &mut xa);
        let nb = cb.fill(BLOCK_ELEMS, &mut xb);
        if na != nb {
            return Err(Error::internal("view tensors ended at different lengths").tensor(&ta.name));
        }
        if na == 0 {
            break;
        }
        for (&x, &y) in xa.iter().zip(&xb) {
            let (x, y) = (x as f64, y as f64);
            if !(x.is_finite() && y.is_finite()) {
                nonfinite_a += u64::from(!x.is_finite());
                nonfinite_b += u64::from(!y.is_finite());
                differing += u64::from(!((x.is_nan() && y.is_nan()) || x == y));
                continue;
            }
            if x != y {
                differing += 1;
            }
            let d = x - y;
            if d.abs() > max {
                max = d.abs();
            }
            dd += d * d;
            aa += x * x;
            bb += y * y;
            ab += x * y;
        }
        elements += na as u64;
        if let Some(p) = progress {
            p((na * ca.esize) as u64);
        }
    }
    let (rel_l2, cosine) = ratios(dd, aa, bb, ab, differing);
    Ok(ValueDiff {
        max_abs: max,
        rel_l2,
        cosine,
        differing,
        elements,
        nonfinite_a,
        nonfinite_b,
    })
}

/// Whether both tensors have a float dtype whose values can be compared.
pub fn is_float_pair(ta: &ViewTensor, tb: &ViewTensor) -> bool {
    is_float(ta.dtype) && is_float(tb.dtype)
}

/// Compare pairs `(row, a tensor, b tensor)` in parallel; non-float pairs give `None`.
pub fn compare_pairs(
    va: &View,
    vb: &View,
    pairs: &[(usize, &ViewTensor, &ViewTensor)],
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Vec<(usize, Option<ValueDiff>)>> {
    pairs
        .par_iter()
        .map(|(i, ta, tb)| {
            let decodable =
                |d: Dtype| is_float(d) || crate::kernels::WDtype::from_dtype(d).is_some();
            if (ta.dtype.is_block() || tb.dtype.is_block())
                && decodable(ta.dtype)
                && decodable(tb.dtype)
            {
                // GGUF block types: decoded whole, one tensor at a time.
                let v = crate::verify::quant::value_diff(va, ta, vb, tb)?;
                if let Some(p) = progress {
                    p(ta.nbytes() as u64);
                }
                return Ok((*i, Some(v)));
            }
            if !is_float(ta.dtype) || !is_float(tb.dtype) {
                return Ok((*i, None));
            }
            compare(va, ta, vb, tb, progress).map(|v| (*i, Some(v)))
        })
        .collect()
}

/// Total bytes of A that a value diff of `a` against `b` reads, for a progress bar.
pub fn value_bytes(a: &View, b: &View) -> u64 {
    a.tensors
        .iter()
        .filter(|ta| {
            b.get(&ta.name)
                .is_some_and(|tb| tb.shape == ta.shape && is_float(ta.dtype) && is_float(tb.dtype))
        })
        .map(|ta| ta.nbytes() as u64)
        .sum()
}

/// Relative L2 difference `|a - b| / |a|` and cosine of two value streams from their sums
/// (`dd = sum (a-b)^2`, `aa = sum a^2`, `bb = sum b^2`, `ab = sum a b`). Equal values have cosine
/// exactly 1 (the formula can round to 0.9999999999999998).
pub fn ratios(dd: f64, aa: f64, bb: f64, ab: f64, differing: u64) -> (f64, f64) {
    let rel_l2 = if aa > 0.0 {
        dd.sqrt() / aa.sqrt()
    } else if dd == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let cosine = if differing == 0 || (aa == 0.0 && bb == 0.0) {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    };
    (rel_l2, cosine)
}
