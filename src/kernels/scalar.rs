//! The scalar kernels: the specification of every op. Plain loops, sums in index order, no
//! explicit SIMD. The SIMD paths in `simd.rs` must agree with these up to f32 rounding (sum order,
//! fused multiply-add, a polynomial `exp`); `tests.rs` holds them to it.
//!
//! Lengths have been validated by the public entry points in `mod.rs`.

use super::{WDtype, Weights};

/// Element `i` of f32 little-endian bytes.
#[inline]
pub(crate) fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let b = &bytes[i * 4..i * 4 + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Element `i` of bf16 little-endian bytes: the 16 bits are the top half of an f32.
#[inline]
pub(crate) fn bf16_at(bytes: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[i * 2], bytes[i * 2 + 1]]);
    f32::from_bits(u32::from(bits) << 16)
}

/// Element `i` of f16 little-endian bytes.
#[inline]
pub(crate) fn f16_at(bytes: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[i * 2], bytes[i * 2 + 1]]);
    half::f16::from_bits(bits).to_f32()
}

/// Element `i` of `w` as f32.
#[inline]
pub(crate) fn weight_at(w: Weights<'_>, i: usize) -> f32 {
    match w.dtype {
        WDtype::F32 => f32_at(w.bytes, i),
        WDtype::Bf16 => bf16_at(w.bytes, i),
        WDtype::F16 => f16_at(w.bytes, i),
        _ => {
            // A block type: decode the element's block (the specification, not a fast path).
            let mut v = [0f32];
            super::quant::decode(w.dtype, w.bytes, i, &mut v);
            v[0]
        }
    }
}

/// Decode every element of `w` into `out` (same length).
pub(crate) fn to_f32(w: Weights<'_>, out: &mut [f32]) {
    if w.dtype.is_block() {
        super::quant::decode(w.dtype, w.bytes, 0, out);
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = weight_at(w, i);
    }
}

/// `out[t*n + j] = sum_k x[t*k_dim + k] * W[j*k_dim + k]`, summed in `k` order. Each weight row is
/// decoded once and used for every token.
pub(crate) fn matmul(x: &[f32], t: usize, k_dim: usize, w: Weights<'_>, n: usize, out: &mut [f32]) {
    let rb = w.dtype.bytes_of(k_dim);
    let mut row = vec![0.0f32; k_dim];
    for j in 0..n {
        let row_bytes = &w.bytes[j * rb..(j + 1) * rb];
        to_f32(Weights::new(w.dtype, row_bytes), &mut row);
        for tok in 0..t {
            out[tok * n + j] = dot(&x[tok * k_dim..(tok + 1) * k_dim], &row);
        }
    }
}

/// `out = x / sqrt(mean(x^2) + eps) * (offset + w)` (Hugging Face `LlamaRMSNorm` in f32 with
/// `offset` 0, `GemmaRMSNorm` with `offset` 1).
pub(crate) fn rmsnorm(x: &[f32], weight: Weights<'_>, offset: f32, eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let ss: f32 = x.iter().map(|v| v * v).sum();
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        *o = (v * inv) * (offset + weight_at(weight, i));
    }
}

/// `out = (x - mean(x)) / sqrt(var(x) + eps) * (offset + w) + b` (`torch.nn.LayerNorm`, biased
/// variance). Mean and variance are accumulated in f64 (torch accumulates in f32 with a
/// cascade; both are within f32 rounding of the exact value).
pub(crate) fn layernorm(
    x: &[f32],
    weight: Weights<'_>,
    bias: Option<Weights<'_>>,
    offset: f32,
    eps: f32,
    out: &mut [f32],
) {
    if x.is_empty() {
        return;
    }
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
    let mean = mean as f32;
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        let b = bias.map_or(0.0, |b| weight_at(b, i));
        *o = ((v - mean) * inv) * (offset + weight_at(weight, i)) + b;
    }
}

/// `max(a, b)`, NaN when either is NaN (`f32::max` returns the other operand, which would turn
/// an all-NaN attention row into a fully masked one).
#[inline]
pub(crate) fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// The maximum of `x` (`-inf` for an empty slice); NaN when any entry is NaN.
pub(crate) fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, max_nan)
}

/// Stable softmax in place. NaN anywhere in the row makes the whole row NaN, and so does `+inf`
/// (`inf - inf`), as in `torch.softmax`; an all `-inf` row (fully masked) becomes zeros.
pub(crate) fn softmax_inplace(x: &mut [f32]) {
    let m = max(x);
    if m.is_nan() {
        x.fill(f32::NAN);
        return;
    }
    if m == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `v / (1 + exp(-v))`.
#[inline]
pub(crate) fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `gate[i] = silu(gate[i]) * up[i]`.
pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `sqrt(2 / pi)` as torch's GELU kernel spells it (`M_SQRT2 * M_2_SQRTPI * 0.5`, rounded to f32).
pub(crate) const GELU_BETA: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
pub(crate) const GELU_KAPPA: f32 = 0.044_715;

/// GELU, tanh approximation, in the order of torch's kernel:
/// `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`.
#[inline]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    let cube = x * x * x;
    let inner = GELU_BETA * (x + GELU_KAPPA * cube);
    0.5 * x * (1.0 + inner.tanh())
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`.
pub(crate) fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// `erf(x)` rounded to f32. The Maclaurin series
/// `2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))` is summed in f64 for `|x| < 4` (its terms
/// peak near `n = x^2` at ~1e5, so the cancellation leaves an absolute error below 1e-10);
/// beyond, `1 - |erf(x)| < 1.6e-8`, below half an f32 ulp of 1, so the f32 value is `+-1`.
/// The result is the correctly rounded f32 except within ~1e-10 of a rounding boundary.
pub(crate) fn erf_f32(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x.abs() >= 4.0 {
        return 1.0f32.copysign(x);
    }
    let x = f64::from(x);
    let x2 = x * x;
    let mut term = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    let mut n = 0.0f64;
    loop {
        n += 1.0;
        term *= -x2 / n;
        let add = term / (2.0 * n + 1.0);
        sum += add;
        if add.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    (sum * std::f64::consts::FRAC_2_SQRT_PI).clamp(-1.0, 1.0) as f32
}

/// GELU, exact erf form, in the order of torch's kernel: `x * 0.5 * (1 + erf(x * sqrt(1/2)))`,
/// with `erf` rounded once to f32 ([`erf_f32`]; torch's Sleef `erf` is within 1 ulp).
#[inline]
pub(crate) fn gelu(x: f32) -> f32 {
    let e = erf_f32(x * std::f32::consts::FRAC_1_SQRT_2);
    x * 0.5 * (1.0 + e)
}

/// `gate[i] = gelu(gate[i]) * up[i]`.
pub(crate) fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu(*g) * u;
    }
}

/// RoPE on interleaved pairs: `(x[2i], x[2i + 1])` rotates by the angle of frequency `i`
/// (Helium / GLM / Meta's layout).
pub(crate) fn rope_interleaved(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (pair, (c, s)) in x.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * c - b * s;
        pair[1] = b * c + a * s;
    }
}

/// Rotate-half RoPE on one head vector.
pub(crate) fn rope_half(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (lo, hi) = x.split_at_mut(half);
    for i in 0..half {
        let (a, b) = (lo[i], hi[i]);
        lo[i] = a * cos[i] - b * sin[i];
        hi[i] = b * cos[i] + a * sin[i];
    }
}

/// `sum_i a[i] * b[i]` in index order.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// See [`super::attend`]: the spec, one [`dot`] per key, [`softmax_inplace`], then `out` zeroed
/// and one [`axpy`] per key in key order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    scale: f32,
    softcap: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    for (j, sc) in scores.iter_mut().enumerate() {
        *sc = dot(q, &keys[j * stride..][..hd]) * scale;
    }
    if let Some(cap) = softcap {
        softcap_inplace(scores, cap);
    }
    softmax_inplace(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy(p, &values[j * stride..][..hd], out);
    }
}

/// `x = cap * tanh(x / cap)` for every score (Gemma2's attention softcap), in plain f32 on every
/// ISA, so [`attend`] and its SIMD bodies round it alike.
pub(crate) fn softcap_inplace(x: &mut [f32], cap: f32) {
    x.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
}

/// `y += alpha * x`.
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}
