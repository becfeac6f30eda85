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

/// Whether `narrow` holds exactly `wide`'s values rounded to its float type (F32 to F16 or BF16,
/// round to nearest even, as llama.cpp's converter and gguf-py write them; NaN for NaN): a float
/// tensor a quantized file stores in a narrower float type (llama.cpp keeps some tensors in F16)
/// is then the source's tensor, changed only by that rounding.
pub fn narrowed_exactly(
    va: &View<'_>,
    ta: &ViewTensor,
    vb: &View<'_>,
    tb: &ViewTensor,
) -> Result<bool> {
    let width = |d: Dtype| match d {
        Dtype::F32 => Some(32),
        Dtype::F16 | Dtype::BF16 => Some(16),
        _ => None,
    };
    let ((vw, tw), (vn, tn)) = match (width(ta.dtype), width(tb.dtype)) {
        (Some(32), Some(16)) => ((va, ta), (vb, tb)),
        (Some(16), Some(32)) => ((vb, tb), (va, ta)),
        _ => return Ok(false),
    };
    if tw.shape != tn.shape {
        return Ok(false);
    }
    let (w, n) = (decode(vw, tw)?, decode(vn, tn)?);
    let round = |x: f32| -> f32 {
        match tn.dtype {
            Dtype::F16 => half::f16::from_f32(x).to_f32(),
            _ => half::bf16::from_f32(x).to_f32(),
        }
    };
    Ok(w.len() == n.len()
        && w.iter()
            .zip(&n)
            .all(|(&x, &y)| round(x).to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())))
}

/// Compare every tensor that is block-quantized on one side and a float on the other (same shape),
/// one tensor at a time. The non-quantized side is the reference. `None` when neither view is
/// quantized.
pub fn check(a: &View<'_>, b: &View<'_>) -> Result<Option<QuantCheck>> {
    if !is_quantized(a) && !is_quantized(b) {
        return Ok(None);
    }
    let mut tensors = Vec::new();
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
