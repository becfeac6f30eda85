//! Where a tensor's bytes are: one contiguous range (every safetensors tensor, every row-major torch
//! tensor), a strided view of a torch storage, or a concatenation of tensor-parallel rank slices.
//!
//! Readers never assume contiguity: they ask for the *byte runs* of a row range
//! ([`Checkpoint::for_each_run`]): `(shard, file offset, length)` in order. A contiguous tensor is one
//! run; a row concatenation of ranks one run per rank touched; a column concatenation, per row, one
//! run from each rank; a strided tensor one run per maximal contiguous inner block (per element for a
//! transpose). Runs are computed on the fly from a handful of numbers, so a 70B model's
//! column-concatenated weights cost no memory until they are read.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::borrow::Cow;

use super::{Checkpoint, TensorInfo};
use crate::error::{Error, Result};

/// How a tensor's bytes are laid out in its file(s).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// `[begin, end)` of shard `shard`'s data section, row-major.
    #[default]
    Contiguous,
    /// A strided view (torch): element `(i0, i1, ...)` is at byte
    /// `begin + (i0 * strides[0] + i1 * strides[1] + ...) * element size` of shard `shard`.
    Strided {
        /// Element strides, one per dimension.
        strides: Vec<usize>,
    },
    /// Tensor-parallel slices concatenated along `axis` (0: rows, 1: columns), each part a
    /// contiguous row-major range.
    Concat {
        /// The concatenation axis (0 or 1).
        axis: usize,
        /// The parts, in order.
        parts: Vec<Part>,
    },
}

/// One contiguous slice of a concatenated tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Index into [`Checkpoint::shards`].
    pub shard: usize,
    /// Start of its data relative to the shard's data section.
    pub begin: usize,
    /// End of its data (exclusive).
    pub end: usize,
    /// Its size along the concatenation axis.
    pub len: usize,
}

fn bad(t: &TensorInfo, msg: &str) -> Error {
    Error::internal(msg.to_string()).tensor(&t.name)
}

impl Checkpoint {
    /// Call `f(shard, file offset, length)` for each contiguous byte run of rows
    /// `[row_start, row_start + rows)` of `t` (rows along the first dimension), in order.
    pub fn for_each_run(
        &self,
        t: &TensorInfo,
        row_start: usize,
        rows: usize,
        f: &mut dyn FnMut(usize, u64, usize) -> Result<()>,
    ) -> Result<()> {
        let total_rows = t.shape.first().copied().unwrap_or(1);
        let row_end = row_start
            .checked_add(rows)
            .filter(|&e| e <= total_rows)
            .ok_or_else(|| bad(t, "row range outside the tensor"))?;
        if rows == 0 {
            return Ok(());
        }
        let base = |shard: usize, begin: usize| -> Result<usize> {
            let s = self
                .shards
                .get(shard)
                .ok_or_else(|| bad(t, "missing shard"))?;
            s.data_start()
                .checked_add(begin)
                .ok_or_else(|| bad(t, "offset overflows"))
        };
        let nbytes = t.nbytes();
        let rb = nbytes.checked_div(total_rows).unwrap_or(0);
        let of = |x: Option<usize>| x.ok_or_else(|| bad(t, "offset overflows"));
        match &t.placement {
            Placement::Contiguous => {
                let off = of(base(t.shard, t.begin)?.checked_add(of(row_start.checked_mul(rb))?))?;
                f(t.shard, off as u64, of(rows.checked_mul(rb))?)
            }
            Placement::Concat { axis: 0, parts } => {
                let mut first = 0usize; // first row of the current part
                for p in parts {
                    let last = of(first.checked_add(p.len))?;
                    let (a, b) = (row_start.max(first), row_end.min(last));
                    if a < b {
                        let local = of(a.checked_sub(first))?;
                        let off =
                            of(base(p.shard, p.begin)?.checked_add(of(local.checked_mul(rb))?))?;
                        f(
                            p.shard,
                            off as u64,
                            of(b.saturating_sub(a).checked_mul(rb))?,
                        )?;
                    }
                    first = last;
                }
                Ok(())
            }
            Placement::Concat { parts, .. } => {
                let mut starts = Vec::with_capacity(parts.len());
                for p in parts {
                    let prb = p
                        .end
                        .saturating_sub(p.begin)
                        .checked_div(total_rows)
                        .unwrap_or(0);
                    starts.push((p.shard, base(p.shard, p.begin)?, prb));
                }
                for r in row_start..row_end {
                    for &(shard, start, prb) in &starts {
                        let off = of(start.checked_add(of(r.checked_mul(prb))?))?;
                        f(shard, off as u64, prb)?;
                    }
                }
                Ok(())
            }
            Placement::Strided { strides } => {
                let es = crate::checkpoint::header::dtype_bits(t.dtype) / 8;
                let n = t.shape.len();
                // Merge the trailing dimensions that are row-major into one run.
                let mut run = 1usize;
                let mut outer = n;
                while outer > 1 {
                    let i = outer.saturating_sub(1);
                    let (d, s) = (
                        t.shape.get(i).copied().unwrap_or(1),
                        strides.get(i).copied().unwrap_or(0),
                    );
                    if d == 1 || s == run {
                        run = of(run.checked_mul(d))?;
                        outer = i;
                    } else {
                        break;
                    }
                }
                let run_bytes = of(run.checked_mul(es))?;
                if run_bytes == 0 {
                    return Ok(());
                }
                let start = base(t.shard, t.begin)?;
                // An odometer over dimensions 0..outer, dimension 0 limited to the row range.
                let mut idx = vec![0usize; outer.max(1)];
                if let Some(i0) = idx.first_mut() {
                    *i0 = row_start;
                }
                let mut pending: Option<(u64, usize)> = None;
                loop {
                    let mut elem = 0usize;
                    for (k, &i) in idx.iter().enumerate() {
                        let s = strides.get(k).copied().unwrap_or(0);
                        elem = of(elem.checked_add(of(i.checked_mul(s))?))?;
                    }
                    let off = of(start.checked_add(of(elem.checked_mul(es))?))? as u64;
                    pending = match pending {
                        Some((o, l)) if o.checked_add(l as u64) == Some(off) => {
                            Some((o, of(l.checked_add(run_bytes))?))
                        }
                        Some((o, l)) => {
                            f(t.shard, o, l)?;
                            Some((off, run_bytes))
                        }
                        None => Some((off, run_bytes)),
                    };
                    // Advance the odometer.
                    let mut k = idx.len();
                    loop {
                        let Some(kk) = k.checked_sub(1) else {
                            if let Some((o, l)) = pending {
                                f(t.shard, o, l)?;
                            }
                            return Ok(());
                        };
                        k = kk;
                        let limit = if k == 0 {
                            row_end
                        } else {
                            t.shape.get(k).copied().unwrap_or(1)
                        };
                        if let Some(i) = idx.get_mut(k) {
                            *i = i.saturating_add(1);
                            if *i < limit {
                                break;
                            }
                            *i = if k == 0 { row_start } else { 0 };
                        }
                        if k == 0 {
                            if let Some((o, l)) = pending {
                                f(t.shard, o, l)?;
                            }
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// The bytes of rows `[row_start, row_start + rows)` of `t`: borrowed from the mmap when they are
    /// one run, gathered into a buffer otherwise.
    pub fn read_rows(
        &self,
        t: &TensorInfo,
        row_start: usize,
        rows: usize,
    ) -> Result<Cow<'_, [u8]>> {
        let mut runs: Vec<(usize, u64, usize)> = Vec::new();
        let mut single = true;
        let mut out: Vec<u8> = Vec::new();
        self.for_each_run(t, row_start, rows, &mut |s, o, l| {
            if single && runs.is_empty() {
                runs.push((s, o, l));
                return Ok(());
            }
            if single {
                single = false;
                out.reserve(t.nbytes());
                for &(s0, o0, l0) in &runs {
                    out.extend_from_slice(self.run_bytes(t, s0, o0, l0)?);
                }
            }
            out.extend_from_slice(self.run_bytes(t, s, o, l)?);
            Ok(())
        })?;
        if single {
            return match runs.first() {
                Some(&(s, o, l)) => self.run_bytes(t, s, o, l).map(Cow::Borrowed),
                None => Ok(Cow::Borrowed(&[])),
            };
        }
        // The gathered copy is what the caller reads now: the mapped source pages can leave the
        // resident set (they stay in the page cache).
        self.release(t);
        Ok(Cow::Owned(out))
    }

    /// The mapped bytes of one run.
    pub fn run_bytes(&self, t: &TensorInfo, shard: usize, off: u64, len: usize) -> Result<&[u8]> {
        let s = self
            .shards
            .get(shard)
            .ok_or_else(|| bad(t, "missing shard"))?;
        let b = usize::try_from(off).map_err(|_| bad(t, "offset overflows"))?;
        let e = b
            .checked_add(len)
            .ok_or_else(|| bad(t, "offset overflows"))?;
        s.bytes().get(b..e).ok_or_else(|| {
            Error::internal(format!("byte range [{b}, {e}) outside the mapped file"))
                .file(&s.path)
                .tensor(&t.name)
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    #[test]
    fn default_is_contiguous() {
        assert_eq!(Placement::default(), Placement::Contiguous);
    }
}
