//! The matrix product for many tokens (`T >= GEMM_MIN_T`): a classic GEMM microkernel with the
//! tokens along the vector lanes, so no horizontal sum is ever needed.
//!
//! `out[T,N] = x[T,K] * W[N,K]^T` is computed as its transpose `out^T[N,T] = W * x^T`:
//! - `x` is packed once per call, K block by K block ([`KC`] wide), into token panels of one or
//!   two vectors (`2 * LANES` tokens, K-major inside: the `LANES` tokens of one `k` are one
//!   vector; tokens past `T` are zero);
//! - rayon splits the `N` weight rows into tasks of [`TASK_ROWS`]; each task owns the matching
//!   columns of every output row and accumulates them in a small transposed buffer
//!   (`rows x T_padded`) that it scatters into `out` once at the end;
//! - within a task, for each token block and K block, f32 weights are broadcast straight from
//!   the (maybe unaligned) tensor bytes, token panel by token panel: a copy would take the cache
//!   misses in one burst, while in place they overlap with the FMAs;
//! - bf16 weights in token blocks of up to `Simd::BF16_DIRECT_MAX_TOKENS` (64 on AVX2, where it
//!   was measured) are broadcast the same way: each element is the high half of the 32-bit word
//!   2 bytes before it, so a broadcast load and an AND widen it exactly, with no decode pass
//!   (at 32 tokens on a 2-core Zen 3, TinyLlama's projections: 77-83% of the FMA peak against
//!   64-75% decoded, and the forward pass 8% faster, 9 of 10 alternating runs);
//! - otherwise bf16 / f16 (and block-quantised) weights are decoded one row group ([`MR`] rows,
//!   `MR * KC` floats = 6 KiB) at a time into an L1-resident buffer, and every token panel of
//!   the block runs against that group before the next one is decoded: each weight is decoded
//!   once per token block, the decoded rows never leave L1, and the next group's bytes are
//!   prefetched while the panels run (the decode is a burst of loads; on a 2-core Zen 3,
//!   decoding a whole 48-row tile at a time into an L2 buffer kept bf16 at about 40-60% of the
//!   FMA peak; this reaches 84-88% at 128 tokens, level with f32);
//! - the microkernel computes 6 weight rows x 2 vectors of tokens with 12 vector accumulators:
//!   per `k`, 2 vector loads of x and 6 broadcasts of weights feed 12 FMAs (15 of AVX2's 16
//!   registers);
//! - no other software prefetch: prefetching the next tile's weight rows a few lines per
//!   microkernel call (as this file did until 2026-11-30) made the TinyLlama forward pass 5-6%
//!   slower at 32 tokens and 0-2% at 128 (3 alternating runs each, bf16 and f32): the rows are
//!   sequential streams the hardware prefetchers already follow.
//!
//! Every output element is the sum over K blocks in order of the block sums, each accumulated in
//! order of `k` in one lane: the result does not depend on the number of threads.

use rayon::prelude::*;

use super::matmul::TileKernel;
use super::simd::{Simd, decode};
use super::{WDtype, Weights};

/// K block: the two-vector x panel (`2 * 8 * 256` floats = 16 KiB on AVX2) and a decoded row
/// group (`6 * 256` floats) fit in L1 together.
pub(crate) const KC: usize = 256;
/// Weight rows per rayon task (a multiple of [`MR`]).
pub(crate) const TASK_ROWS: usize = 48;
/// Tokens per pass over a K block (a multiple of every `2 * LANES`).
pub(crate) const TOKEN_BLOCK: usize = 128;
/// Below this many tokens the dot-product kernel of `matmul.rs` is used.
pub(crate) const GEMM_MIN_T: usize = 16;
/// Microkernel weight rows.
const MR: usize = 6;

/// One tile: a K block of packed token panels against a tile of weight rows.
pub(crate) struct GemmJob<'s> {
    /// Packed x of the token block for this K block: panels of `2 * LANES` tokens (the last may
    /// be `LANES`), each `kc * width` floats, K-major.
    pub x: &'s [f32],
    /// Tokens in the block, a multiple of the vector width.
    pub tcount: usize,
    /// K block length.
    pub kc: usize,
    /// The whole weight tensor.
    pub w: Weights<'s>,
    /// Element index in `w` of the tile's first weight (its first row, the K block's first
    /// column).
    pub w0: usize,
    /// Elements per weight row.
    pub k_dim: usize,
    /// Weight rows in the tile; row `r` starts at element `w0 + r * k_dim` and holds `kc`
    /// elements of the block.
    pub nrows: usize,
    /// Room for one decoded row group: at least `MR * KC` floats.
    pub scratch: &'s mut [f32],
    /// Transposed accumulators: row `r` of the tile, token `t` of the block is at
    /// `acc[r * stride + t]`.
    pub acc: &'s mut [f32],
    /// Row stride of `acc`.
    pub stride: usize,
}

/// `acc[r * stride + v * LANES + i] += sum_k w[r * wstride + k] * x[k * NV * LANES + v * LANES + i]`
/// for `r < M`, `v < NV`, `i < LANES`, each lane summed in order of `k`.
///
/// The weights `w` are f32 (`BF16 = false`: element `e` is the 4 bytes at `w + 4 e`) or bf16
/// (`BF16 = true`: element `e` is the 2 bytes at `w + 2 e + 2`, read as the high half of the
/// `u32` at `w + 2 e`; so `w` points 2 bytes before the first element).
///
/// # Safety
/// `x` is readable for `kc * NV * LANES` floats, `w` (any alignment) for `M` rows of `kc`
/// elements `wstride` elements apart (bf16: from 2 bytes before each row's first element), and
/// `acc` is readable and writable at `r * stride + [0, NV * LANES)` for every `r < M`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn micro<S: Simd, const M: usize, const NV: usize, const BF16: bool>(
    s: S,
    x: *const f32,
    w: *const u8,
    wstride: usize,
    kc: usize,
    acc: *mut f32,
    stride: usize,
) {
    let l = S::LANES;
    let mut a = [[s.zero(); NV]; M];
    let mask = s.bf16_hi_mask();
    // SAFETY: `k < kc`, so every x vector and weight element read is within the bounds the
    // caller guarantees.
    unsafe {
        let mut xk = x;
        for k in 0..kc {
            let mut xv = [s.zero(); NV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = s.load(xk.add(v * l));
            }
            for r in 0..M {
                let e = r * wstride + k;
                let b = if BF16 {
                    s.splat_bf16_hi(w.add(2 * e), mask)
                } else {
                    s.splat(w.add(4 * e).cast::<f32>().read_unaligned())
                };
                for v in 0..NV {
                    a[r][v] = s.fma(b, xv[v], a[r][v]);
                }
            }
            xk = xk.add(NV * l);
        }
        for r in 0..M {
            for v in 0..NV {
                let p = acc.add(r * stride + v * l);
                s.store(p, s.add(s.load(p), a[r][v]));
            }
        }
    }
}

/// The body of [`TileKernel::gemm_tile`]: the microkernel over every (token panel, row group)
/// of the tile.
///
/// f32 weights (and bf16 ones in small token blocks) are broadcast straight from the tensor
/// bytes, token panel by token panel (each panel stays in L1 while the rows stream past it).
/// Other dtypes are decoded one row group
/// ([`MR`] rows, `MR * kc` floats) at a time into `scratch`, right before every token panel of
/// the block runs against it: the decoded group stays in L1, is decoded once per token block and
/// its decode overlaps with the memory traffic of the panels.
#[inline(always)]
pub(crate) fn tile<S: Simd>(s: S, job: &mut GemmJob<'_>) {
    let GemmJob {
        x,
        tcount,
        kc,
        w,
        w0,
        k_dim,
        nrows,
        ref mut scratch,
        ref mut acc,
        stride,
    } = *job;
    let l = S::LANES;
    assert!(tcount % l == 0 && tcount <= stride);
    assert!(x.len() >= tcount * kc);
    assert!(nrows == 0 || acc.len() >= (nrows - 1) * stride + tcount);
    assert!(kc <= KC && scratch.len() >= MR * KC);
    if nrows == 0 {
        return;
    }
    let last = w0 + (nrows - 1) * k_dim + kc;
    let (px, pacc) = (x.as_ptr(), acc.as_mut_ptr());
    // One microkernel call: rows `r0..r0 + m` (at `ws`, `wstride` elements apart, bf16 when
    // `bf16`, else f32) against the panel at `t0`. (A macro, not a closure: a closure would not
    // inherit the caller's target features if it were not inlined.)
    macro_rules! call {
        ($ws:expr, $wstride:expr, $r0:expr, $m:expr, $t0:expr, $nv:expr, $bf16:expr) => {{
            let (ws, wstride, r0, m, t0, nv, bf16): (
                *const u8,
                usize,
                usize,
                usize,
                usize,
                usize,
                bool,
            ) = ($ws, $wstride, $r0, $m, $t0, $nv, $bf16);
            // SAFETY: the panel at `t0` holds `kc * nv * l` floats within `tcount * kc`
            // (asserted); `acc` holds `nrows` rows of `stride >= tcount` floats and
            // `t0 + nv * l <= tcount`.
            let (xs, as_) = unsafe { (px.add(t0 * kc), pacc.add(r0 * stride + t0)) };
            macro_rules! run {
                ($mm:literal, $nvv:literal) => {
                    // SAFETY: see above; the caller guarantees `m` rows of `kc` elements at
                    // `ws`, `wstride` apart, in the layout `micro` reads for `bf16`.
                    unsafe {
                        if bf16 {
                            micro::<S, $mm, $nvv, true>(s, xs, ws, wstride, kc, as_, stride)
                        } else {
                            micro::<S, $mm, $nvv, false>(s, xs, ws, wstride, kc, as_, stride)
                        }
                    }
                };
            }
            match (m, nv) {
                (6, 2) => run!(6, 2),
                (5, 2) => run!(5, 2),
                (4, 2) => run!(4, 2),
                (3, 2) => run!(3, 2),
                (2, 2) => run!(2, 2),
                (1, 2) => run!(1, 2),
                (6, _) => run!(6, 1),
                (5, _) => run!(5, 1),
                (4, _) => run!(4, 1),
                (3, _) => run!(3, 1),
                (2, _) => run!(2, 1),
                _ => run!(1, 1),
            }
        }};
    }
    // Vectors of tokens in the panel at `t0`.
    let width = |t0: usize| if tcount - t0 >= 2 * l { 2 } else { 1 };
    // f32 weights are broadcast straight from the tensor bytes, and so are bf16 ones in small
    // token blocks (see `Simd::BF16_DIRECT_MAX_TOKENS`): a bf16 element is read as the high half
    // of the `u32` 2 bytes before it, so the tile holding the tensor's very first element
    // (`w0 == 0`) takes the decoding path instead.
    let bf16 = w.dtype == WDtype::Bf16;
    let direct = cfg!(target_endian = "little")
        && (w.dtype == WDtype::F32 || (bf16 && w0 > 0 && tcount <= S::BF16_DIRECT_MAX_TOKENS));
    if direct {
        let size = w.dtype.bytes_of(1);
        assert!(last * size <= w.bytes.len());
        // SAFETY: element `w0` is within the bytes (asserted through `last`); for bf16
        // `w0 >= 1`, so the 2 bytes before it are too.
        let pw = unsafe { w.bytes.as_ptr().add(w0 * size - if bf16 { 2 } else { 0 }) };
        let mut t0 = 0;
        while t0 < tcount {
            let nv = width(t0);
            let mut r0 = 0;
            while r0 < nrows {
                let m = MR.min(nrows - r0);
                // SAFETY: rows `r0..r0 + m` of `kc` elements, `k_dim` apart, end by element
                // `last`, within the bytes (asserted).
                let ws = unsafe { pw.add(r0 * k_dim * size) };
                call!(ws, k_dim, r0, m, t0, nv, bf16);
                r0 += m;
            }
            t0 += nv * l;
        }
    } else {
        let mut r0 = 0;
        while r0 < nrows {
            let m = MR.min(nrows - r0);
            for (r, dst) in scratch.chunks_exact_mut(KC).take(m).enumerate() {
                decode(s, w, w0 + (r0 + r) * k_dim, &mut dst[..kc]);
            }
            // `scratch` now holds `m` decoded rows of `kc` floats, `KC` apart (a constant stride
            // folds the row offsets into the broadcasts' addresses). Pull the next group's bytes
            // in while its panels run: the decode is a burst of loads that would otherwise wait
            // on memory.
            for r in r0 + m..nrows.min(r0 + m + MR) {
                let row = w.dtype.bytes_of(w0 + r * k_dim);
                for off in (0..w.dtype.bytes_of(kc)).step_by(LINE) {
                    if let Some(b) = w.bytes.get(row + off) {
                        s.prefetch(b);
                    }
                }
            }
            let ws = scratch.as_ptr().cast::<u8>();
            let mut t0 = 0;
            while t0 < tcount {
                let nv = width(t0);
                call!(ws, KC, r0, m, t0, nv, false);
                t0 += nv * l;
            }
            r0 += m;
        }
    }
}

/// Bytes per cache line.
const LINE: usize = 64;

/// Floats of slack that let [`aligned`] start a buffer on a cache line.
const ALIGN_F32: usize = 16;

/// `buf` minus its first few elements, so it starts on a 64-byte boundary.
fn aligned(buf: &mut [f32]) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(ALIGN_F32);
    &mut buf[skip..]
}

/// The product for `t >= GEMM_MIN_T` tokens on a SIMD ISA with `lanes` f32 lanes. Lengths were
/// validated by `kernels::matmul`; `t`, `n` and `k_dim` are not 0.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul<K: TileKernel>(
    kern: K,
    lanes: usize,
    x: &[f32],
    t: usize,
    k_dim: usize,
    w: Weights<'_>,
    n: usize,
    out: &mut [f32],
) {
    let tp = t.div_ceil(lanes) * lanes;
    let nkb = k_dim.div_ceil(KC);
    let block = |kb: usize| {
        let k0 = kb * KC;
        (k0, KC.min(k_dim - k0))
    };
    // Packed x: K block `kb` starts at `k0 * tp`; within it the panel of token `t0` starts at
    // `t0 * kc` and holds `kc` groups of `width` tokens.
    let mut xp_store = vec![0.0f32; k_dim * tp + ALIGN_F32];
    let xp = &mut aligned(&mut xp_store)[..k_dim * tp];
    // One rayon task per K block (the blocks are disjoint and contiguous).
    xp.par_chunks_mut(KC * tp)
        .enumerate()
        .for_each(|(kb, xblock)| {
            let (k0, kc) = block(kb);
            kern.gemm_pack(&mut PackJob {
                x,
                t,
                k_dim,
                k0,
                kc,
                lanes,
                tp,
                xblock,
            });
        });

    let tasks = super::matmul::split_columns(out, t, n, TASK_ROWS);
    let xp = &*xp;
    let init = || {
        (
            vec![0.0f32; MR * KC + ALIGN_F32],
            vec![0.0f32; TASK_ROWS * tp],
        )
    };
    tasks
        .into_par_iter()
        .enumerate()
        .for_each_init(init, |(wbuf_store, acc), (c, mut outs)| {
            let j0 = c * TASK_ROWS;
            let rows = outs.first().map_or(0, |o| o.len());
            acc.fill(0.0);
            let wbuf = aligned(wbuf_store);
            for tb0 in (0..tp).step_by(TOKEN_BLOCK) {
                for kb in 0..nkb {
                    let tcount = TOKEN_BLOCK.min(tp - tb0);
                    let (k0, kc) = block(kb);
                    let xblk = &xp[k0 * tp + tb0 * kc..k0 * tp + (tb0 + tcount) * kc];
                    kern.gemm_tile(&mut GemmJob {
                        x: xblk,
                        tcount,
                        kc,
                        w,
                        w0: j0 * k_dim + k0,
                        k_dim,
                        nrows: rows,
                        scratch: &mut *wbuf,
                        acc: &mut acc[tb0..],
                        stride: tp,
                    });
                }
            }
            kern.gemm_scatter(acc, tp, &mut outs);
        });
}

/// One K block of `x` to pack: see [`pack`].
pub(crate) struct PackJob<'a> {
    /// The `[t, k_dim]` activations.
    pub x: &'a [f32],
    /// Tokens.
    pub t: usize,
    /// Row length of `x`.
    pub k_dim: usize,
    /// First column of the block.
    pub k0: usize,
    /// Columns in the block.
    pub kc: usize,
    /// f32 lanes of the ISA.
    pub lanes: usize,
    /// Tokens rounded up to `lanes`.
    pub tp: usize,
    /// The block's packed panels, `tp * kc` floats; tokens past `t` must already be 0.
    pub xblock: &'a mut [f32],
}

/// Pack columns `[k0, k0 + kc)` of `x` into token panels of `2 * lanes` tokens (the last may be
/// `lanes`): the panel of token `t0` starts at `t0 * kc` and holds, for each `k` in order, its
/// `width` tokens. 8x8 blocks go through [`Simd::transpose8`], the ragged edges one element at a
/// time; tokens past `t` are not written.
#[inline(always)]
pub(crate) fn pack<S: Simd>(s: S, job: &mut PackJob<'_>) {
    let PackJob {
        x,
        t,
        k_dim,
        k0,
        kc,
        lanes,
        tp,
        ..
    } = *job;
    let xblock = &mut *job.xblock;
    let mut t0 = 0;
    while t0 < tp {
        let width = if tp - t0 >= 2 * lanes {
            2 * lanes
        } else {
            lanes
        };
        let panel = &mut xblock[t0 * kc..(t0 + width) * kc];
        let real = width.min(t.saturating_sub(t0)); // tokens of this panel that exist
        let row = |i: usize| &x[(t0 + i) * k_dim + k0..][..kc];
        let (full_i, full_k) = (real / 8 * 8, kc / 8 * 8);
        for i0 in (0..full_i).step_by(8) {
            // The last row this block reads; indexing it checks the whole block is in `x`.
            let _ = row(i0 + 7);
            // From `x` itself: the block reads 8 of its rows, not only row `i0`'s columns.
            let src = x[(t0 + i0) * k_dim + k0..].as_ptr();
            let p = panel.as_mut_ptr();
            for k in (0..full_k).step_by(8) {
                let dst: [*mut f32; 8] =
                    std::array::from_fn(|c| p.wrapping_add((k + c) * width + i0));
                // SAFETY: rows `i0..i0 + 8` of this panel exist in `x` (checked above), each
                // read `[k, k + 8)` within its `kc` columns; `dst[c]` is 8 floats of panel
                // row `k + c` starting at token `i0`, with `i0 + 8 <= real <= width` and
                // `k + c < kc`, inside `panel` (`width * kc` floats), which `x` cannot alias.
                unsafe { s.transpose8(src.add(k), k_dim, dst) };
            }
            for i in i0..i0 + 8 {
                for (k, &v) in row(i).iter().enumerate().skip(full_k) {
                    panel[k * width + i] = v;
                }
            }
        }
        for i in full_i..real {
            for (dst, &v) in panel[i..].iter_mut().step_by(width).zip(row(i)) {
                *dst = v;
            }
        }
        t0 += width;
    }
}

/// `outs[tok][r] = acc[r * tp + tok]`: a task's transposed accumulators back into the rows of
/// `out`, 8x8 blocks through [`Simd::transpose8`] and the ragged edges one element at a time.
#[inline(always)]
pub(crate) fn scatter<S: Simd>(s: S, acc: &[f32], tp: usize, outs: &mut [&mut [f32]]) {
    let rows = outs.iter().map(|o| o.len()).min().unwrap_or(0);
    let ntok = outs.len().min(tp);
    if rows == 0 {
        return;
    }
    // The caller sizes `acc` as `TASK_ROWS * tp`, at least `rows * tp`.
    debug_assert!(acc.len() >= rows * tp, "acc {} < {rows} x {tp}", acc.len());
    if acc.len() < (rows - 1) * tp + ntok {
        return; // cannot happen (above); the transposes below rely on it, so it is checked
    }
    let (full_t, full_r) = (ntok / 8 * 8, rows / 8 * 8);
    for tok0 in (0..full_t).step_by(8) {
        let dst0: [*mut f32; 8] = std::array::from_fn(|c| outs[tok0 + c].as_mut_ptr());
        for r0 in (0..full_r).step_by(8) {
            let dst = dst0.map(|d| d.wrapping_add(r0));
            // SAFETY: reads rows `r0..r0 + 8 <= rows` of `acc` at tokens `tok0..tok0 + 8 <=
            // ntok <= tp`, inside `rows * tp`; `dst[c]` is elements `r0..r0 + 8` of token
            // `tok0 + c`'s output slice (`rows` long), distinct slices that `acc` cannot alias.
            unsafe { s.transpose8(acc.as_ptr().add(r0 * tp + tok0), tp, dst) };
        }
    }
    for (tok, o) in outs.iter_mut().enumerate().take(ntok) {
        // Rows past the 8x8 blocks for every token; all rows for the tokens past them.
        let from = if tok < full_t { full_r } else { 0 };
        for (r, v) in o.iter_mut().enumerate().take(rows).skip(from) {
            *v = acc[r * tp + tok];
        }
    }
}
