//! Value scan (`check --scan-values`): NaN, Inf and all-zero tensors, read straight from the mmap.
//!
//! NaN and Inf are recognised from the bits (exponent all ones; mantissa non-zero for NaN) for f32,
//! f16 and bf16 without converting elements to f32, and zero as "every bit but the sign clear".
//! Tensors are scanned in parallel (rayon), each in fixed-size chunks so progress can be reported and
//! the working set stays bounded whatever the tensor size. The f32 decoders used by `diff --values`
//! live here too.

use rayon::prelude::*;

use super::Finding;
use crate::checkpoint::header::Dtype;
use crate::checkpoint::{Checkpoint, TensorInfo};
use crate::error::Result;

/// Finding ids of this module.
pub mod ids {
    /// NaN values.
    pub const NAN: &str = "V001-nan";
    /// Infinite values.
    pub const INF: &str = "V002-inf";
    /// A weight that is all zeros.
    pub const ALL_ZERO: &str = "V003-all-zero";
}

/// Bytes scanned per step (progress granularity).
pub const SCAN_CHUNK: usize = 4 << 20;

/// Whether the scan and the value diff can decode this dtype.
pub fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Per-tensor counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// NaN elements.
    pub nan: u64,
    /// +-Inf elements.
    pub inf: u64,
    /// Elements that are not +-0.
    pub nonzero: u64,
    /// First NaN or Inf element index.
    pub first_bad: Option<u64>,
}

/// Classify the elements of `bytes` (a whole number of elements of `dtype`, little-endian) starting
/// at element `base`, adding to `c`.
pub fn classify(dtype: Dtype, bytes: &[u8], base: u64, c: &mut Counts) {
    // (element size, exponent mask, mantissa mask) on the raw bits.
    let (exp, man, mag): (u32, u32, u32) = match dtype {
        Dtype::F32 => (0x7F80_0000, 0x007F_FFFF, 0x7FFF_FFFF),
        Dtype::F16 => (0x7C00, 0x03FF, 0x7FFF),
        Dtype::BF16 => (0x7F80, 0x007F, 0x7FFF),
        _ => return,
    };
    // Blocks of elements are tallied without branches (the compiler vectorises this); only a block
    // that holds a NaN or Inf is walked again element by element to split the two and find the first.
    const BLOCK: usize = 256;
    let size = if dtype == Dtype::F32 { 4 } else { 2 };
    let bits = |e: &[u8]| -> u32 {
        if size == 4 {
            u32::from_le_bytes([e[0], e[1], e[2], e[3]])
        } else {
            u16::from_le_bytes([e[0], e[1]]) as u32
        }
    };
    for (k, block) in bytes.chunks(BLOCK * size).enumerate() {
        let (mut nz, mut bad) = (0u64, 0u64);
        for e in block.chunks_exact(size) {
            let b = bits(e);
            nz += (b & mag != 0) as u64;
            bad += (b & exp == exp) as u64;
        }
        c.nonzero += nz;
        if bad == 0 {
            continue;
        }
        for (i, e) in block.chunks_exact(size).enumerate() {
            let b = bits(e);
            if b & exp == exp {
                if b & man != 0 {
                    c.nan += 1;
                } else {
                    c.inf += 1;
                }
                if c.first_bad.is_none() {
                    c.first_bad = Some(base + (k * BLOCK + i) as u64);
                }
            }
        }
    }
}

/// Scan one tensor in chunks, calling `progress` with each chunk's byte count.
pub fn scan_tensor(
    ck: &Checkpoint,
    t: &TensorInfo,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Counts> {
    let mut c = Counts::default();
    let data = ck.read(t)?;
    let elem = match t.dtype {
        Dtype::F32 => 4,
        _ => 2,
    };
    let step = SCAN_CHUNK - SCAN_CHUNK % elem;
    for (k, chunk) in data.chunks(step).enumerate() {
        classify(t.dtype, chunk, (k * step / elem) as u64, &mut c);
        if let Some(p) = progress {
            p(chunk.len() as u64);
        }
    }
    Ok(c)
}

/// Total bytes [`scan`] will read (for a progress bar).
pub fn scan_bytes(ck: &Checkpoint) -> u64 {
    ck.tensors
        .iter()
        .filter(|t| is_float(t.dtype))
        .map(|t| t.nbytes() as u64)
        .sum()
}

/// Scan every float tensor for NaN, Inf and all-zero weights.
/// `progress` gets (bytes just scanned, total bytes to scan).
pub fn scan(ck: &Checkpoint, progress: Option<&(dyn Fn(u64, u64) + Sync)>) -> Result<Vec<Finding>> {
    let total = scan_bytes(ck);
    let inner = |n: u64| {
        if let Some(p) = progress {
            p(n, total)
        }
    };
    let progress: Option<&(dyn Fn(u64) + Sync)> = Some(&inner);
    let results: Vec<Result<(usize, Counts)>> = ck
        .tensors
        .par_iter()
        .enumerate()
        .filter(|(_, t)| is_float(t.dtype))
        .map(|(i, t)| scan_tensor(ck, t, progress).map(|c| (i, c)))
        .collect();
    let mut out = Vec::new();
    for r in results {
        let (i, c) = r?;
        let t = &ck.tensors[i];
        let file = ck
            .shard_of(t)
            .map(|s| s.path.clone())
            .unwrap_or_else(|| ck.path.clone());
        let n = t.numel();
        let at = c
            .first_bad
            .map(|e| format!(" (first at element {e})"))
            .unwrap_or_default();
        if c.nan > 0 {
            out.push(
                Finding::error(ids::NAN, format!("{} of {n} values are NaN{at}", c.nan))
                    .file(&file)
                    .tensor(&t.name),
            );
        }
        if c.inf > 0 {
            out.push(
                Finding::error(
                    ids::INF,
                    format!("{} of {n} values are infinite{at}", c.inf),
                )
                .file(&file)
                .tensor(&t.name),
            );
        }
        if c.nonzero == 0 && n > 0 && t.name.ends_with(".weight") {
            out.push(
                Finding::warning(
                    ids::ALL_ZERO,
                    "every value is zero: an untrained or unsaved weight (a zero norm or projection silences the layer)",
                )
                .file(&file)
                .tensor(&t.name),
            );
        }
    }
    Ok(out)
}

/// Append the elements of `bytes` (`dtype`, little-endian) to `out` as f32 (exact for f16/bf16).
pub fn decode_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|e| f32::from_le_bytes([e[0], e[1], e[2], e[3]])),
        ),
        // bf16 is the top half of an f32.
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|e| f32::from_bits((u16::from_le_bytes([e[0], e[1]]) as u32) << 16)),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|e| half::f16::from_le_bytes([e[0], e[1]]).to_f32()),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(dtype: Dtype, bytes: &[u8]) -> Counts {
        let mut c = Counts::default();
        classify(dtype, bytes, 0, &mut c);
        c
    }

    #[test]
    fn classifies_bits_like_the_float_types() {
        let vals = [
            0.0f32,
            -0.0,
            1.5,
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            1e-40,
        ];
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let hf: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let c = counts(Dtype::F32, &f32b);
        assert_eq!((c.nan, c.inf, c.nonzero, c.first_bad), (1, 2, 5, Some(3)));
        let c = counts(Dtype::BF16, &bf);
        assert_eq!((c.nan, c.inf, c.nonzero), (1, 2, 5));
        // 1e-40 underflows to zero in f16.
        let c = counts(Dtype::F16, &hf);
        assert_eq!((c.nan, c.inf, c.nonzero), (1, 2, 4));
        // The bit tests agree with the float predicates on every 16-bit pattern.
        for b in 0..=u16::MAX {
            let c = counts(Dtype::BF16, &b.to_le_bytes());
            let v = half::bf16::from_bits(b).to_f32();
            assert_eq!(c.nan == 1, v.is_nan());
            assert_eq!(c.inf == 1, v.is_infinite());
            assert_eq!(c.nonzero == 1, v != 0.0);
            let c = counts(Dtype::F16, &b.to_le_bytes());
            let v = half::f16::from_bits(b).to_f32();
            assert_eq!(c.nan == 1, v.is_nan());
            assert_eq!(c.inf == 1, v.is_infinite());
            assert_eq!(c.nonzero == 1, v != 0.0);
        }
    }

    #[test]
    fn decodes_exactly() {
        let v = [1.0f32, -2.5, 0.15625];
        for d in [Dtype::F32, Dtype::BF16, Dtype::F16] {
            let bytes: Vec<u8> = match d {
                Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::BF16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            };
            let mut out = Vec::new();
            decode_f32(d, &bytes, &mut out);
            assert_eq!(out, v, "{d}");
        }
    }
}
