//! The vector vocabulary shared by every SIMD ISA (trait [`Simd`]), the element-wise kernel bodies
//! written once over it, and the macro that stamps out each ISA's `#[target_feature]` entry points.
//!
//! A value of a type implementing [`Simd`] is a token: it can only be constructed after run-time
//! detection found the features, so the register operations are safe methods. The bodies here are
//! `#[inline(always)]` and become real vector code only once inlined into a `#[target_feature]`
//! wrapper (the scheme of `memchr`'s `generic` module). Tails shorter than a vector run the scalar
//! spec's formula.

use super::scalar;
use super::{WDtype, Weights};

/// One SIMD instruction set: an f32 vector type and the operations the kernels need.
///
/// Pointer methods are `unsafe`: the caller guarantees the pointed-to bytes are readable (or
/// writable) for a whole vector. Loads never assume alignment.
pub(crate) trait Simd: Copy + Send + Sync {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;
    /// The GEMM (`gemm.rs`) broadcasts bf16 weights straight from the tensor bytes
    /// ([`Simd::splat_bf16_hi`]) in token blocks of at most this many tokens, and decodes them
    /// a row group at a time into L1 in larger ones; 0 = always decode. The broadcast costs an
    /// AND per weight per token panel, the decode a widening per weight per block: the decode
    /// wins once it is shared by enough panels. Measured on AVX2 (Zen 3, TinyLlama's
    /// projections; `cargo bench --bench kernels`): broadcasting is 5-15 points of the FMA peak
    /// ahead at 16-48 tokens, 2 ahead at 64, level at 128 (where the whole forward pass was
    /// 10% slower with it). Where it was not measured (AVX-512, whose ANDs share the FMA ports
    /// on Intel; NEON) it stays 0.
    const BF16_DIRECT_MAX_TOKENS: usize = 0;
    fn zero(self) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise minimum; returns `b` where either is NaN.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum; returns `b` where either is NaN.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Round to the nearest integer, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for integer-valued `n` in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Lane-wise `if a < b { x } else { y }` (false for NaN).
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    fn reduce_sum(self, a: Self::V) -> f32;
    /// The largest lane; NaN when a lane is NaN. (Lane-wise `max` does not propagate NaN, so a
    /// running maximum built with it must track NaN itself, as `softmax_inplace` does.)
    fn reduce_max(self, a: Self::V) -> f32;
    /// `[sum(a), sum(b), sum(c), sum(d)]`, cheaper than four `reduce_sum`.
    fn reduce4(self, a: Self::V, b: Self::V, c: Self::V, d: Self::V) -> [f32; 4];
    /// Hint that the cache line holding `*p` will be read soon (towards L2; a no-op where the ISA
    /// has no stable prefetch intrinsic).
    fn prefetch(self, p: &u8);
    /// # Safety
    /// `p` is readable for `LANES` f32.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` is writable for `LANES` f32.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// # Safety
    /// `p` is readable for `4 * LANES` bytes (any alignment).
    unsafe fn load_f32le(self, p: *const u8) -> Self::V;
    /// # Safety
    /// `p` is readable for `2 * LANES` bytes (any alignment).
    unsafe fn load_bf16(self, p: *const u8) -> Self::V;
    /// # Safety
    /// `p` is readable for `2 * LANES` bytes (any alignment).
    unsafe fn load_f16(self, p: *const u8) -> Self::V;
    /// Every lane's bits `0xFFFF_0000`, for [`Simd::splat_bf16_hi`]. Opaque to the optimiser:
    /// with a constant mask LLVM moves the AND before the broadcast, where it becomes a blend
    /// and a register broadcast on the shuffle unit (3 uops instead of a broadcast load and an
    /// AND; measured 1.6x slower in the GEMM).
    #[inline(always)]
    fn bf16_hi_mask(self) -> Self::V {
        std::hint::black_box(self.splat(f32::from_bits(0xFFFF_0000)))
    }
    /// The bf16 value in the high half of the little-endian `u32` at `p`, widened to f32 and
    /// broadcast: `p` points 2 bytes before the element, whose neighbour in the low half is
    /// masked off with `mask` (from [`Simd::bf16_hi_mask`]): a broadcast load and an AND, no
    /// shift. The GEMM broadcasts bf16 weights this way straight from the tensor bytes. ISAs
    /// override it to mask in a vector register; this default masks the scalar.
    ///
    /// # Safety
    /// `p` is readable for 4 bytes (any alignment).
    #[inline(always)]
    unsafe fn splat_bf16_hi(self, p: *const u8, mask: Self::V) -> Self::V {
        let _ = mask;
        // SAFETY: the caller guarantees 4 readable bytes.
        let bits = u32::from_le_bytes(unsafe { p.cast::<[u8; 4]>().read_unaligned() });
        self.splat(f32::from_bits(bits & 0xFFFF_0000))
    }
    /// `*dst[c].add(r) = *src.add(r * src_stride + c)` for `r, c < 8`: an 8x8 transpose, as the
    /// GEMM packs activations into token panels and scatters its results back to token rows.
    /// Element by element unless an ISA overrides it; a move, so every bit is kept.
    ///
    /// # Safety
    /// `src` is readable for 8 f32 at `r * src_stride` for every `r < 8`; every `dst[c]` is
    /// writable for 8 f32; no destination overlaps the source.
    #[inline(always)]
    unsafe fn transpose8(self, src: *const f32, src_stride: usize, dst: [*mut f32; 8]) {
        for (c, d) in dst.into_iter().enumerate() {
            for r in 0..8 {
                // SAFETY: the caller's contract.
                unsafe { *d.add(r) = *src.add(r * src_stride + c) };
            }
        }
    }
    /// `LANES` signed bytes widened to f32 (ggml's Q8_0 values). The default goes through a stack
    /// buffer; ISAs with a widening instruction override it.
    ///
    /// # Safety
    /// `p` is readable for `LANES` bytes.
    #[inline(always)]
    unsafe fn load_i8(self, p: *const u8) -> Self::V {
        let mut tmp = [0f32; 16];
        for (i, t) in tmp.iter_mut().enumerate().take(Self::LANES) {
            // SAFETY: the caller guarantees `LANES` readable bytes.
            *t = f32::from(unsafe { *p.add(i) } as i8);
        }
        // SAFETY: `tmp` holds 16 >= LANES floats.
        unsafe { self.load(tmp.as_ptr()) }
    }
}

/// Q8_0 blocks on a SIMD ISA: `x = d * q`, one multiply per lane as in the scalar specification
/// (so the values are bit-identical). `start` and `out.len()` are multiples of 32.
#[inline(always)]
fn decode_q8_0<S: Simd>(s: S, bytes: &[u8], start: usize, out: &mut [f32]) {
    let l = S::LANES;
    for (b, dst) in out.chunks_exact_mut(32).enumerate() {
        let blk = &bytes[(start / 32 + b) * 34..(start / 32 + b + 1) * 34];
        let d = s.splat(half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32());
        let q = blk[2..34].as_ptr();
        let o = dst.as_mut_ptr();
        let mut j = 0;
        while j + l <= 32 {
            // SAFETY: `j + l <= 32`: 32 readable bytes after the scale, 32 writable floats.
            unsafe { s.store(o.add(j), s.mul(s.load_i8(q.add(j)), d)) };
            j += l;
        }
    }
}

/// `exp(x)` to about 2 ulp: Cody-Waite reduction `x = n ln2 + r` and the Cephes `expf` polynomial.
/// Below `-87.34` the result is 0 (so `-inf` masks give exactly 0), above `88.38` it is `+inf`.
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_55;
    let c = |v: f32| s.splat(v);
    // min/max return their second operand on NaN, so a NaN input stays NaN.
    let xc = s.max(c(LO), s.min(c(HI), x));
    let n = s.round(s.mul(xc, c(std::f32::consts::LOG2_E)));
    let r = s.fma(n, c(-0.693_359_4), xc);
    let r = s.fma(n, c(2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    p = s.fma(p, r, c(1.398_2e-3));
    p = s.fma(p, r, c(8.333_452e-3));
    p = s.fma(p, r, c(4.166_579_6e-2));
    p = s.fma(p, r, c(1.666_666_5e-1));
    p = s.fma(p, r, c(0.5));
    let r2 = s.mul(r, r);
    let y = s.add(s.fma(p, r2, r), c(1.0));
    let y = s.mul(y, s.pow2i(n));
    let y = s.select_lt(x, c(LO), s.zero(), y);
    s.select_lt(c(HI), x, c(f32::INFINITY), y)
}

/// Decode `out.len()` elements of `w` starting at element `start`.
#[inline(always)]
pub(crate) fn decode<S: Simd>(s: S, w: Weights<'_>, start: usize, out: &mut [f32]) {
    if w.dtype == WDtype::Q8_0
        && start.is_multiple_of(32)
        && out.len().is_multiple_of(32)
        && S::LANES <= 32
    {
        assert!((start + out.len()) / 32 * 34 <= w.bytes.len());
        decode_q8_0(s, w.bytes, start, out);
        return;
    }
    if w.dtype.is_block() {
        super::quant::decode(w.dtype, w.bytes, start, out);
        return;
    }
    let l = S::LANES;
    let count = out.len();
    let size = w.dtype.size();
    assert!((start + count) * size <= w.bytes.len());
    let src = w.bytes[start * size..].as_ptr();
    let dst = out.as_mut_ptr();
    let mut i = 0;
    macro_rules! run {
        ($load:ident) => {
            while i + l <= count {
                // SAFETY: `i + l <= count` and the assert above keep the source bytes and the
                // destination floats of this vector in bounds.
                unsafe { s.store(dst.add(i), s.$load(src.add(i * size))) };
                i += l;
            }
        };
    }
    match w.dtype {
        WDtype::F32 => run!(load_f32le),
        WDtype::Bf16 => run!(load_bf16),
        WDtype::F16 => run!(load_f16),
        _ => {}
    }
    for (j, o) in out.iter_mut().enumerate().skip(i) {
        *o = scalar::weight_at(w, start + j);
    }
}

/// See [`super::to_f32`].
#[inline(always)]
pub(crate) fn to_f32<S: Simd>(s: S, w: Weights<'_>, out: &mut [f32]) {
    decode(s, w, 0, out)
}

/// See [`super::dot`]; four independent accumulators.
#[inline(always)]
pub(crate) fn dot<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    let l = S::LANES;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [s.zero(); 4];
    let mut i = 0;
    while i + 4 * l <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 4 * l <= n` keeps both loads inside `a` and `b`.
            *acc = unsafe { s.fma(s.load(pa.add(i + u * l)), s.load(pb.add(i + u * l)), *acc) };
        }
        i += 4 * l;
    }
    while i + l <= n {
        // SAFETY: `i + l <= n`.
        acc[0] = unsafe { s.fma(s.load(pa.add(i)), s.load(pb.add(i)), acc[0]) };
        i += l;
    }
    let v = s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]));
    let mut sum = s.reduce_sum(v);
    for j in i..n {
        sum += a[j] * b[j];
    }
    sum
}

/// See [`super::axpy`].
#[inline(always)]
pub(crate) fn axpy<S: Simd>(s: S, alpha: f32, x: &[f32], y: &mut [f32]) {
    let l = S::LANES;
    let n = x.len().min(y.len());
    let va = s.splat(alpha);
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n` keeps the vector inside `x` and `y`.
        unsafe { s.store(py.add(i), s.fma(va, s.load(px.add(i)), s.load(py.add(i)))) };
        i += l;
    }
    for j in i..n {
        y[j] += alpha * x[j];
    }
}

/// See [`super::rmsnorm_offset`]. The weight is decoded a chunk at a time into a stack buffer.
#[inline(always)]
pub(crate) fn rmsnorm<S: Simd>(
    s: S,
    x: &[f32],
    w: Weights<'_>,
    offset: f32,
    eps: f32,
    out: &mut [f32],
) {
    const CHUNK: usize = 256;
    let n = x.len().min(out.len());
    if n == 0 {
        return;
    }
    let ss = dot(s, x, x);
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let vinv = s.splat(inv);
    let voff = s.splat(offset);
    let mut wbuf = [0.0f32; CHUNK];
    for c0 in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - c0);
        decode(s, w, c0, &mut wbuf[..len]);
        let (xs, os) = (&x[c0..c0 + len], &mut out[c0..c0 + len]);
        let (px, pw, po) = (xs.as_ptr(), wbuf.as_ptr(), os.as_mut_ptr());
        let mut i = 0;
        while i + S::LANES <= len {
            // SAFETY: `i + LANES <= len`, the length of `xs`, `os` and the used part of `wbuf`.
            unsafe {
                let wv = s.add(voff, s.load(pw.add(i)));
                let v = s.mul(s.mul(s.load(px.add(i)), vinv), wv);
                s.store(po.add(i), v);
            }
            i += S::LANES;
        }
        for j in i..len {
            os[j] = (xs[j] * inv) * (offset + wbuf[j]);
        }
    }
}

/// See [`super::attend`]. The scores are [`dot`]s and the softmax is [`softmax_inplace`], so every
/// bit is what those kernels give one call at a time; the weighted sum keeps a block of `out` in
/// registers across the keys, adding in key order with the FMA [`axpy`] uses (and its unfused
/// tail), so it equals `out.fill(0)` followed by one `axpy` per key, without reloading and storing
/// `out` per key.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend<S: Simd>(
    s: S,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    scale: f32,
    softcap: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len().min(out.len());
    // Keys (and values) that fit; the public entry point checked that all of them do.
    let rows = |m: &[f32]| match m.len().checked_sub(hd) {
        Some(rest) if stride > 0 => rest / stride + 1,
        Some(_) => usize::MAX,
        None => 0,
    };
    let n = scores.len().min(rows(keys)).min(rows(values));
    let scores = &mut scores[..n];
    for (j, sc) in scores.iter_mut().enumerate() {
        *sc = dot(s, &q[..hd], &keys[j * stride..][..hd]) * scale;
    }
    if let Some(cap) = softcap {
        scalar::softcap_inplace(scores, cap);
    }
    softmax_inplace(s, scores);
    let l = S::LANES;
    let (pv, po) = (values.as_ptr(), out.as_mut_ptr());
    let mut c = 0;
    while c + 4 * l <= hd {
        let mut acc = [s.zero(); 4];
        for (j, &p) in scores.iter().enumerate() {
            let a = s.splat(p);
            for (u, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row `j < n` of `values` holds `hd` floats from `j * stride`, and
                // `c + 4 * l <= hd`.
                *acc = unsafe { s.fma(a, s.load(pv.add(j * stride + c + u * l)), *acc) };
            }
        }
        for (u, acc) in acc.iter().enumerate() {
            // SAFETY: `c + 4 * l <= hd <= out.len()`.
            unsafe { s.store(po.add(c + u * l), *acc) };
        }
        c += 4 * l;
    }
    while c + l <= hd {
        let mut acc = s.zero();
        for (j, &p) in scores.iter().enumerate() {
            // SAFETY: as above, with `c + l <= hd`.
            acc = unsafe { s.fma(s.splat(p), s.load(pv.add(j * stride + c)), acc) };
        }
        // SAFETY: `c + l <= hd <= out.len()`.
        unsafe { s.store(po.add(c), acc) };
        c += l;
    }
    for (i, o) in out.iter_mut().enumerate().take(hd).skip(c) {
        let mut y = 0.0f32;
        for (j, &p) in scores.iter().enumerate() {
            y += p * values[j * stride + i];
        }
        *o = y;
    }
}

/// See [`super::softmax_inplace`].
#[inline(always)]
pub(crate) fn softmax_inplace<S: Simd>(s: S, x: &mut [f32]) {
    let l = S::LANES;
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut vmax = s.splat(f32::NEG_INFINITY);
    // The vector max skips NaN lanes, so count the lanes that are not `< +inf` (NaN or `+inf`):
    // when there are any, the scalar NaN-propagating max decides (rare; `-inf` masks stay fast).
    let (inf, one, zero) = (s.splat(f32::INFINITY), s.splat(1.0), s.zero());
    let mut vodd = s.zero();
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n`.
        let v = unsafe { s.load(p.add(i)) };
        vmax = s.max(v, vmax);
        vodd = s.add(vodd, s.select_lt(v, inf, zero, one));
        i += l;
    }
    let m = if s.reduce_sum(vodd) != 0.0 {
        scalar::max(x)
    } else {
        x[i..]
            .iter()
            .copied()
            .fold(s.reduce_max(vmax), scalar::max_nan)
    };
    if m.is_nan() {
        x.fill(f32::NAN);
        return;
    }
    if m == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let vm = s.splat(m);
    let mut vsum = s.zero();
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n`.
        unsafe {
            let e = exp(s, s.sub(s.load(p.add(i)), vm));
            s.store(p.add(i), e);
            vsum = s.add(vsum, e);
        }
        i += l;
    }
    let mut sum = s.reduce_sum(vsum);
    for v in x[i..].iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    let vinv = s.splat(inv);
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n`.
        unsafe { s.store(p.add(i), s.mul(s.load(p.add(i)), vinv)) };
        i += l;
    }
    for v in x[i..].iter_mut() {
        *v *= inv;
    }
}

/// See [`super::silu_mul`].
#[inline(always)]
pub(crate) fn silu_mul<S: Simd>(s: S, gate: &mut [f32], up: &[f32]) {
    let l = S::LANES;
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let one = s.splat(1.0);
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n` keeps the vector inside `gate` and `up`.
        unsafe {
            let g = s.load(pg.add(i));
            let e = exp(s, s.sub(s.zero(), g));
            let silu = s.div(g, s.add(one, e));
            s.store(pg.add(i), s.mul(silu, s.load(pu.add(i))));
        }
        i += l;
    }
    for j in i..n {
        gate[j] = scalar::silu(gate[j]) * up[j];
    }
}

/// See [`super::gelu_tanh_mul`]. Uses `0.5 * (1 + tanh(u)) = 1 / (1 + exp(-2u))`, so
/// `gelu_tanh(x) = x / (1 + exp(-2u))`: the same function without the cancellation of `1 + tanh`
/// for negative `x` (it differs from the scalar spec by f32 rounding only).
#[inline(always)]
pub(crate) fn gelu_tanh_mul<S: Simd>(s: S, gate: &mut [f32], up: &[f32]) {
    let l = S::LANES;
    let n = gate.len().min(up.len());
    let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
    let one = s.splat(1.0);
    let beta2 = s.splat(-2.0 * scalar::GELU_BETA);
    let kappa = s.splat(scalar::GELU_KAPPA);
    let mut i = 0;
    while i + l <= n {
        // SAFETY: `i + l <= n` keeps the vector inside `gate` and `up`.
        unsafe {
            let g = s.load(pg.add(i));
            let cube = s.mul(s.mul(g, g), g);
            let inner = s.fma(kappa, cube, g); // x + kappa * x^3
            let e = exp(s, s.mul(beta2, inner)); // exp(-2 * beta * (x + kappa x^3))
            let v = s.div(g, s.add(one, e));
            s.store(pg.add(i), s.mul(v, s.load(pu.add(i))));
        }
        i += l;
    }
    for j in i..n {
        gate[j] = scalar::gelu_tanh(gate[j]) * up[j];
    }
}

/// See [`super::rope_half`].
#[inline(always)]
pub(crate) fn rope_half<S: Simd>(s: S, x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let l = S::LANES;
    let half = (x.len() / 2).min(cos.len()).min(sin.len());
    let (lo, hi) = x.split_at_mut(x.len() / 2);
    let (pl, ph, pc, ps) = (lo.as_mut_ptr(), hi.as_mut_ptr(), cos.as_ptr(), sin.as_ptr());
    let mut i = 0;
    while i + l <= half {
        // SAFETY: `i + l <= half`, and `lo`, `hi`, `cos`, `sin` all hold at least `half` floats.
        unsafe {
            let (a, b) = (s.load(pl.add(i)), s.load(ph.add(i)));
            let (c, sn) = (s.load(pc.add(i)), s.load(ps.add(i)));
            s.store(pl.add(i), s.sub(s.mul(a, c), s.mul(b, sn)));
            s.store(ph.add(i), s.add(s.mul(b, c), s.mul(a, sn)));
        }
        i += l;
    }
    for j in i..half {
        let (a, b) = (lo[j], hi[j]);
        lo[j] = a * cos[j] - b * sin[j];
        hi[j] = b * cos[j] + a * sin[j];
    }
}

/// Stamp out the entry points of one ISA: for each kernel body a `#[target_feature]` `unsafe fn`
/// wrapper and a safe function that takes the ISA's token (proof that the features exist).
macro_rules! entry_points {
    ($tok:ty, $features:literal) => {
        use crate::kernels::Weights;
        use crate::kernels::{matmul as mm, simd as body};

        $crate::kernels::simd::entry_points!(@one $tok, $features, to_f32, (w: Weights<'_>, out: &mut [f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, dot, (a: &[f32], b: &[f32]) -> f32);
        $crate::kernels::simd::entry_points!(@one $tok, $features, axpy, (alpha: f32, x: &[f32], y: &mut [f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, rmsnorm,
            (x: &[f32], w: Weights<'_>, offset: f32, eps: f32, out: &mut [f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, gelu_tanh_mul, (gate: &mut [f32], up: &[f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, softmax_inplace, (x: &mut [f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, attend,
            (q: &[f32], keys: &[f32], values: &[f32], stride: usize, scale: f32,
             softcap: Option<f32>, scores: &mut [f32], out: &mut [f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, silu_mul, (gate: &mut [f32], up: &[f32]));
        $crate::kernels::simd::entry_points!(@one $tok, $features, rope_half,
            (x: &mut [f32], cos: &[f32], sin: &[f32]));

        /// Blocked multi-threaded matmul on this ISA (see `matmul.rs`).
        pub(crate) fn matmul(
            s: $tok,
            x: &[f32],
            t: usize,
            k_dim: usize,
            w: Weights<'_>,
            n: usize,
            out: &mut [f32],
        ) {
            mm::matmul(s, x, t, k_dim, w, n, out)
        }

        impl mm::TileKernel for $tok {
            fn decode(self, w: Weights<'_>, start: usize, out: &mut [f32]) {
                #[target_feature(enable = $features)]
                unsafe fn tf(s: $tok, w: Weights<'_>, start: usize, out: &mut [f32]) {
                    body::decode(s, w, start, out)
                }
                // SAFETY: a token exists only when the CPU has every feature in `$features`.
                unsafe { tf(self, w, start, out) }
            }

            fn tile(self, job: &mut mm::TileJob<'_, '_>) {
                #[target_feature(enable = $features)]
                unsafe fn tf(s: $tok, job: &mut mm::TileJob<'_, '_>) {
                    mm::tile(s, job)
                }
                // SAFETY: a token exists only when the CPU has every feature in `$features`.
                unsafe { tf(self, job) }
            }

            fn gemm_tile(self, job: &mut crate::kernels::gemm::GemmJob<'_>) {
                #[target_feature(enable = $features)]
                unsafe fn tf(s: $tok, job: &mut crate::kernels::gemm::GemmJob<'_>) {
                    crate::kernels::gemm::tile(s, job)
                }
                // SAFETY: a token exists only when the CPU has every feature in `$features`.
                unsafe { tf(self, job) }
            }

            fn gemm_pack(self, job: &mut crate::kernels::gemm::PackJob<'_>) {
                #[target_feature(enable = $features)]
                unsafe fn tf(s: $tok, job: &mut crate::kernels::gemm::PackJob<'_>) {
                    crate::kernels::gemm::pack(s, job)
                }
                // SAFETY: a token exists only when the CPU has every feature in `$features`.
                unsafe { tf(self, job) }
            }

            fn gemm_scatter(self, acc: &[f32], tp: usize, outs: &mut [&mut [f32]]) {
                #[target_feature(enable = $features)]
                unsafe fn tf(s: $tok, acc: &[f32], tp: usize, outs: &mut [&mut [f32]]) {
                    crate::kernels::gemm::scatter(s, acc, tp, outs)
                }
                // SAFETY: a token exists only when the CPU has every feature in `$features`.
                unsafe { tf(self, acc, tp, outs) }
            }

            fn lanes(self) -> usize {
                <$tok as body::Simd>::LANES
            }
        }
    };
    (@one $tok:ty, $features:literal, $name:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        /// Safe entry point; the token proves the CPU has the features.
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name(s: $tok, $($arg: $ty),*) $(-> $ret)? {
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn tf(s: $tok, $($arg: $ty),*) $(-> $ret)? {
                body::$name(s, $($arg),*)
            }
            // SAFETY: a token exists only when the CPU has every feature in `$features`.
            unsafe { tf(s, $($arg),*) }
        }
    };
}

pub(crate) use entry_points;
