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

/// `out = x / sqrt(mean(x^2) + eps) * w` (Hugging Face `LlamaRMSNorm` in f32).
pub(crate) fn rmsnorm(x: &[f32], weight: Weights<'_>, eps: f32, out: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let ss: f32 = x.iter().map(|v| v * v).sum();
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        *o = (v * inv) * weight_at(weight, i);
    }
}

/// The maximum of `x` (`-inf` for an empty slice). NaN entries are skipped.
pub(crate) fn max(x: &[f32]) -> f32 {
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Stable softmax in place; an all `-inf` row becomes zeros.
pub(crate) fn softmax_inplace(x: &mut [f32]) {
    let m = max(x);
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

/// `y += alpha * x`.
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}
