//! Quantization-aware verification: is a GGUF with block-quantized weights the same model as its
//! float source, *up to the quantization*?
//!
//! Exactness cannot be the criterion (a Q4_K file never reproduces the source's logits), and a
//! plain tolerance on logits cannot tell "quantized" from "broken" on its own. Two measures, each
//! with a default band per ggml type (documented with the reasoning in docs/GGUF.md):
//!
//! * **per tensor**: the NMSE of the dequantized weights against the source's,
//!   `mean((w_q - w)^2) / var(w)`. A block quantizer's error is a fixed fraction of each block's
//!   range, so this number depends on the type, not on the model: about 3e-5 for Q8_0 and 1e-2 for
//!   4-bit types on Gaussian-like weights. A tensor that is not the source's tensor quantized (a
//!   swapped k/v, Q/K rows left in the wrong rotary order, another layer's weights) scores about 2.
//! * **logits**: NMSE as llama.cpp's `examples/model-conversion/scripts/utils/check-nmse.py`
//!   defines it, over every logit of every position: `mean((test - ref)^2) / var(ref)` (population
//!   variance; 0 when both are constant and equal, infinite when only the test varies), with A as
//!   the reference. Reported with max relative error, top-1/top-5 agreement and KL by the logits
//!   level.
//!
//! The verdict is "equivalent within the bands" when every quantized tensor is within its type's
//! weight band and the logits NMSE is within the band of the coarsest type present.
//!
//! A GGUF also stores float tensors in a narrower float type than its source (`--outtype f16` or
//! `bf16` of an f32 model, llama.cpp's default conversion, or an F16 embedding beside Q8_0
//! matrices). Such a tensor is accepted only when **every** value is exactly the source's rounded
//! to nearest even (a check, not a band), and the logits NMSE is then held to that type's band
//! ([`rounding_band`]): the file is the source stored in F16 or BF16, nothing else.

use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::kernels::{self, WDtype, Weights};
use crate::mapping::{View, ViewTensor};

/// The default bands of one type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Largest per-tensor weight NMSE accepted.
    pub weight_nmse: f64,
    /// Largest logits NMSE accepted when this is the coarsest type present.
    pub logits_nmse: f64,
}

/// The default band of a block type (`None` for float types, which are compared exactly).
///
/// Weight bands are about four times the NMSE a type's quantizer gives on Gaussian weights (so
/// llama.cpp's own quantizers, which do better than plain min/max, pass with margin); logits bands
/// are 25 times the weight band, capped at 1 (check-nmse.py's "worse than noise" boundary), because
/// the error of every layer adds up in the logits (measured on the fixtures: Q8_0 7.9e-4, Q5_0
/// 6.1e-2, Q4_0 1.8e-1 on a 2-layer model of width 64).
pub fn band(d: Dtype) -> Option<Band> {
    let w = match d {
        Dtype::Q8_0 | Dtype::Q8_1 | Dtype::Q8_K => 2e-4,
        Dtype::Q6_K => 2e-3,
        Dtype::Q5_0 | Dtype::Q5_1 | Dtype::Q5_K => 1e-2,
        Dtype::Q4_0 | Dtype::Q4_1 | Dtype::Q4_K => 4e-2,
        Dtype::Q3_K => 0.15,
        Dtype::Q2_K => 0.5,
        _ => return None,
    };
    Some(Band {
        weight_nmse: w,
        logits_nmse: (w * 25.0_f64).min(1.0),
    })
}

/// The logits band of a float type a GGUF stores the source's values rounded to: 1e-4 for F16
/// and 1e-3 for BF16. Measured on the fixtures (llama.cpp's own converter, `--outtype f16` /
/// `bf16` of the f32 llama-gqa, qwen2 and qwen3 fixtures): F16 0.7-1.6e-6, BF16 4.8e-5-9.8e-5;
/// the bands leave 60x (F16) and 10x (BF16) of room for deeper models whose error adds up layer
/// by layer, stay below the Q8_0 band (a coarser type), and are far below the ~1 of a file read
/// wrongly. Every weight has already been checked to be exactly the source's rounded, so the
/// logits band only has to rule out a forward pass that is not the source's.
pub fn rounding_band(d: Dtype) -> Option<f64> {
    match d {
        Dtype::F16 => Some(1e-4),
        Dtype::BF16 => Some(1e-3),
        _ => None,
    }
}

/// NMSE of `test` against `reference` (check-nmse.py's `calculate_nmse`), in f64.
pub fn nmse(reference: &[f32], test: &[f32]) -> f64 {
    let n = reference.len().min(test.len());
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    let mean = reference.iter().take(n).map(|&v| f64::from(v)).sum::<f64>() / nf;
    let (mut se, mut var) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test).take(n) {
        let (r, t) = (f64::from(r), f64::from(t));
        se += (t - r) * (t - r);
        var += (r - mean) * (r - mean);
    }
    let (mse, var) = (se / nf, var / nf);
    if var == 0.0 {
        if mse > 0.0 { f64::INFINITY } else { 0.0 }
    } else {
        mse / var
    }
}

/// Whether a view holds block-quantized tensors.
pub fn is_quantized(v: &View<'_>) -> bool {
    v.tensors.iter().any(|t| t.dtype.is_block())
}

/// Whether a view is read from a GGUF file (llama.cpp's runtime format, whose conversion rounds
/// or quantizes the source by design).
pub fn is_gguf(v: &View<'_>) -> bool {
    v.ckpt
        .shards
        .iter()
        .any(|s| matches!(s.container, crate::checkpoint::shard::Container::Gguf))
}

/// One quantized tensor against its source.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorNmse {
    /// Canonical name.
    pub name: String,
    /// The quantized side's type.
    pub dtype: Dtype,
    /// Weight NMSE (the float side is the reference).
    pub nmse: f64,
    /// The type's weight band.
    pub band: f64,
}

/// The quantization-aware comparison of two views.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantCheck {
    /// Every tensor quantized on one side (not the other), with its NMSE.
    pub tensors: Vec<TensorNmse>,
    /// The coarsest type present (the one whose logits band applies).
    pub coarsest: Dtype,
    /// The logits band applied.
    pub logits_band: f64,
    /// Tensors over their band.
    pub over: usize,
    /// Float tensors stored in a narrower float type whose every value is exactly the other
    /// side's rounded to nearest even (canonical name, the narrower type).
    pub rounded: Vec<(String, Dtype)>,
    /// Float tensors stored in another float type whose values changed beyond that rounding
    /// (canonical names): each rules equivalence out.
    pub not_rounded: Vec<String>,
}

impl QuantCheck {
    /// Whether every tensor is within its band.
    pub fn weights_pass(&self) -> bool {
        self.over == 0
    }

    /// The largest weight NMSE.
    pub fn max_nmse(&self) -> f64 {
        self.tensors.iter().map(|t| t.nmse).fold(0.0, f64::max)
    }
}

fn decode(v: &View<'_>, t: &ViewTensor) -> Result<Vec<f32>> {
    let wd = WDtype::from_dtype(t.dtype).ok_or_else(|| {
        Error::unsupported(format!("dtype {} cannot be decoded", t.dtype)).tensor(&t.name)
    })?;
    let bytes = v.read(t)?;
    let mut out = vec![0f32; t.numel()];
    kernels::to_f32(Weights::new(wd, &bytes), &mut out).map_err(|e| {
        Error::bad_data(e.message().to_string())
            .tensor(&t.name)
            .file(&v.ckpt.path)
    })?;
    v.release(t);
    Ok(out)
}

/// Whether a pair of tensors is a block type ckpt has no band for (IQ*, TQ*, MXFP4: inspected, not
/// decoded) on one side against another type: their bytes differing says nothing about the
/// model, so values cannot rule equivalence in or out.
pub fn unjudged(a: Option<Dtype>, b: Option<Dtype>) -> bool {
    let unbanded = |d: Option<Dtype>| d.is_some_and(|d| d.is_block() && band(d).is_none());
    a != b && (unbanded(a) || unbanded(b))
}

/// Whether a pair's dtypes are two different float types (F32, F16, BF16).
pub fn is_float_change(a: Option<Dtype>, b: Option<Dtype>) -> bool {
    let float = |d: Option<Dtype>| matches!(d, Some(Dtype::F32 | Dtype::F16 | Dtype::BF16));
    float(a) && float(b) && a != b
}

/// `x` rounded to the 16-bit float type `d` (round to nearest even, as llama.cpp's converter,
/// numpy and gguf-py write F16 and BF16), widened back; `None` for other types.
fn round_to(d: Dtype) -> Option<fn(f32) -> f32> {
    match d {
        Dtype::F16 => Some(|x| half::f16::from_f32(x).to_f32()),
        Dtype::BF16 => Some(|x| half::bf16::from_f32(x).to_f32()),
        _ => None,
    }
}

/// Whether every value of `narrow` is exactly `wide`'s rounded with `round` (NaN for NaN) and at
/// least one differs: a change of value by the rounding alone.
fn is_rounding(wide: &[f32], narrow: &[f32], round: fn(f32) -> f32) -> bool {
    let mut changed = false;
    let all = wide.len() == narrow.len()
        && wide.iter().zip(narrow).all(|(&x, &y)| {
            changed |= x.to_bits() != y.to_bits();
            round(x).to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        });
    all && changed
}

/// The float type one side of a pair of float tensors (F32, F16, BF16; same shape) was rounded
/// to, when every value of that side is exactly the other's rounded to it (round to nearest even,
/// NaN for NaN) and some value changed: F32 to F16 or BF16, BF16 to F16, F16 to BF16. Such a
/// tensor (llama.cpp's `--outtype f16`, an F16 embedding beside quantized matrices) is the
/// source's, changed only by that rounding. `None` otherwise (including values all equal: a
/// widening, which the exact comparison accepts).
pub fn narrowed_exactly(
    va: &View<'_>,
    ta: &ViewTensor,
    vb: &View<'_>,
    tb: &ViewTensor,
) -> Result<Option<Dtype>> {
    if ta.shape != tb.shape || !is_float_change(Some(ta.dtype), Some(tb.dtype)) {
        return Ok(None);
    }
    let (x, y) = (decode(va, ta)?, decode(vb, tb)?);
    for (wide, narrow, d) in [(&x, &y, tb.dtype), (&y, &x, ta.dtype)] {
        if let Some(round) = round_to(d)
            && is_rounding(wide, narrow, round)
        {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Compare every tensor that is block-quantized on one side and a float on the other (same shape),
/// one tensor at a time; the non-quantized side is the reference. Beside them, or in a GGUF with
/// no block type, float tensors stored narrower are checked to be exactly the other side's
/// rounded ([`narrowed_exactly`]). `None` when neither view is quantized and no float tensor of a
/// GGUF is such a rounding (the exact comparison applies).
pub fn check(a: &View<'_>, b: &View<'_>) -> Result<Option<QuantCheck>> {
    let quantized = is_quantized(a) || is_quantized(b);
    if !quantized && !is_gguf(a) && !is_gguf(b) {
        return Ok(None);
    }
    let mut tensors = Vec::new();
    let mut rounded = Vec::new();
    let mut coarsest: Option<(Dtype, Band)> = None;
    let mut over = 0;
    for ta in &a.tensors {
        let Some(tb) = b.get(&ta.name) else { continue };
        if ta.shape != tb.shape || ta.dtype == tb.dtype {
            continue;
        }
        let (reference, quant, qt) = match (ta.dtype.is_block(), tb.dtype.is_block()) {
            (false, true) => (ta, tb, b),
            (true, false) => (tb, ta, a),
            (false, false) => {
                if let Some(d) = narrowed_exactly(a, ta, b, tb)?
                    && let Some(logits_nmse) = rounding_band(d)
                {
                    rounded.push((ta.name.clone(), d));
                    let bd = Band {
                        weight_nmse: 0.0,
                        logits_nmse,
                    };
                    if coarsest.is_none_or(|(_, c)| bd.logits_nmse > c.logits_nmse) {
                        coarsest = Some((d, bd));
                    }
                }
                continue;
            }
            _ => continue,
        };
        let Some(bd) = band(quant.dtype) else {
            continue;
        };
        let refv = if std::ptr::eq(reference, ta) { a } else { b };
        let x = decode(refv, reference)?;
        let y = decode(qt, quant)?;
        let e = nmse(&x, &y);
        // NaN is over the band too.
        if e.is_nan() || e > bd.weight_nmse {
            over += 1;
        }
        if coarsest.is_none_or(|(_, c)| bd.logits_nmse > c.logits_nmse) {
            coarsest = Some((quant.dtype, bd));
        }
        tensors.push(TensorNmse {
            name: ta.name.clone(),
            dtype: quant.dtype,
            nmse: e,
            band: bd.weight_nmse,
        });
    }
    let Some((coarsest, bd)) = coarsest else {
        return Ok(None);
    };
    Ok(Some(QuantCheck {
        tensors,
        coarsest,
        logits_band: bd.logits_nmse,
        over,
        rounded,
        not_rounded: Vec::new(),
    }))
}

/// `ckpt diff --values` for a pair where either side is block-quantized: both tensors decoded to
/// f32 (one tensor at a time) and compared like the float pairs of `diff::values`.
pub fn value_diff(
    va: &View<'_>,
    ta: &ViewTensor,
    vb: &View<'_>,
    tb: &ViewTensor,
) -> Result<crate::diff::values::ValueDiff> {
    let (x, y) = (decode(va, ta)?, decode(vb, tb)?);
    if x.len() != y.len() {
        return Err(Error::internal("value diff of tensors of different sizes").tensor(&ta.name));
    }
    let (mut dd, mut aa, mut bb, mut ab, mut max) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut differing = 0u64;
    for (&p, &q) in x.iter().zip(&y) {
        let (p, q) = (f64::from(p), f64::from(q));
        if p != q && !(p.is_nan() && q.is_nan()) {
            differing += 1;
        }
        let d = p - q;
        if d.abs() > max {
            max = d.abs();
        }
        dd += d * d;
        aa += p * p;
        bb += q * q;
        ab += p * q;
    }
    let (rel_l2, cosine) = crate::diff::values::ratios(dd, aa, bb, ab, differing);
    Ok(crate::diff::values::ValueDiff {
        max_abs: max,
        rel_l2,
        cosine,
        differing,
        elements: x.len() as u64,
        nonfinite_a: x.iter().filter(|v| !v.is_finite()).count() as u64,
        nonfinite_b: y.iter().filter(|v| !v.is_finite()).count() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmse_follows_check_nmse_py() {
        assert_eq!(nmse(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        // mse = (0 + 0 + 1) / 3, var = 2/3.
        assert!((nmse(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]) - 0.5).abs() < 1e-12);
        assert_eq!(nmse(&[2.0, 2.0], &[2.0, 2.0]), 0.0);
        assert_eq!(nmse(&[2.0, 2.0], &[2.0, 3.0]), f64::INFINITY);
    }

    #[test]
    fn bands_grow_as_bits_shrink() {
        let order = [
            Dtype::Q8_0,
            Dtype::Q6_K,
            Dtype::Q5_K,
            Dtype::Q4_K,
            Dtype::Q3_K,
            Dtype::Q2_K,
        ];
        for w in order.windows(2) {
            let (a, b) = (band(w[0]).unwrap(), band(w[1]).unwrap());
            assert!(a.weight_nmse < b.weight_nmse && a.logits_nmse <= b.logits_nmse);
        }
        assert!(band(Dtype::F16).is_none());
        // A swapped tensor (NMSE about 2) is outside every band.
        assert!(band(Dtype::Q2_K).unwrap().weight_nmse < 2.0);
    }
}
