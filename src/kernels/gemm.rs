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
//! - within a task, for each token block and K block, the task's bf16 / f16 weight rows are
//!   decoded to f32 row-major into an aligned buffer, once for all tokens of the block; f32
//!   weights are broadcast straight from the (maybe unaligned) tensor bytes instead: a copy
//!   would take the cache misses in one burst, while in place they overlap with the FMAs (on a
//!   Zen 3 this took 32 tokens from about 61% to 78% of the FMA peak);
//! - the microkernel computes 6 weight rows x 2 vectors of tokens with 12 vector accumulators:
//!   per `k`, 2 vector loads of x and 6 broadcasts of weights feed 12 FMAs (15 of AVX2's 16
//!   registers); the x panel (`2 * LANES * KC` floats) stays in L1 while the row groups of the
//!   tile stream through it from L2;
//! - the next tile's weight bytes are prefetched a few lines per microkernel call.
//!
//! Every output element is the sum over K blocks in order of the block sums, each accumulated in
//! order of `k` in one lane: the result does not depend on the number of threads.

use rayon::prelude::*;

use super::Weights;
use super::matmul::{Prefetch, PrefetchCursor, TileKernel};
use super::simd::Simd;

/// K block: the two-vector x panel (`2 * 8 * 256` floats = 16 KiB on AVX2) stays in L1.
pub(crate) const KC: usize = 256;
/// Weight rows per rayon task (a multiple of [`MR`]); they are decoded together per K block.
pub(crate) const TASK_ROWS: usize = 48;
/// Tokens per pass over a K block (a multiple of every `2 * LANES`).
pub(crate) const TOKEN_BLOCK: usize = 128;
/// Below this many tokens the dot-product kernel of `matmul.rs` is used.
pub(crate) const GEMM_MIN_T: usize = 16;
/// Microkernel weight rows.
const MR: usize = 6;

/// One tile: a K block of packed token panels against a decoded tile of weight rows.
pub(crate) struct GemmJob<'s> {
    /// Packed x of the token block for this K block: panels of `2 * LANES` tokens (the last may
    /// be `LANES`), each `kc * width` floats, K-major.
    pub x: &'s [f32],
    /// Tokens in the block, a multiple of the vector width.
    pub tcount: usize,
    /// K block length.
    pub kc: usize,
    /// The tile's weight rows.
    pub w: WRows<'s>,
    /// Weight rows in the tile.
    pub nrows: usize,
    /// Transposed accumulators: row `r` of the tile, token `t` of the block is at
    /// `acc[r * stride + t]`.
    pub acc: &'s mut [f32],
    /// Row stride of `acc`.
    pub stride: usize,
    /// Weight bytes to prefetch while computing (the next tile's rows).
    pub prefetch: Option<Prefetch<'s>>,
}

/// The weight rows of a tile.
#[derive(Clone, Copy)]
pub(crate) enum WRows<'s> {
    /// Decoded rows: `nrows` rows of `kc` floats, one after the other.
    Decoded(&'s [f32]),
    /// f32 little-endian weights read in place (any alignment): row `r` of the tile starts at
    /// byte `4 * r * stride`; each row holds at least `kc` floats.
    F32Le(&'s [u8], usize),
}

/// `acc[r * stride + v * LANES + i] += sum_k w[r * wstride + k] * x[k * NV * LANES + v * LANES + i]`
/// for `r < M`, `v < NV`, `i < LANES`, each lane summed in order of `k`.
///
/// # Safety
/// `x` is readable for `kc * NV * LANES` floats, `w` (any alignment) for `M` rows of `kc`
/// floats `wstride` floats apart, and `acc` is
/// readable and writable at `r * stride + [0, NV * LANES)` for every `r < M`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn micro<S: Simd, const M: usize, const NV: usize>(
    s: S,
    x: *const f32,
    w: *const f32,
    wstride: usize,
    kc: usize,
    acc: *mut f32,
    stride: usize,
) {
    let l = S::LANES;
    let mut a = [[s.zero(); NV]; M];
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
                let b = s.splat(w.add(r * wstride + k).read_unaligned());
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
/// of the tile, with the prefetches of the next tile spread over the calls.
#[inline(always)]
pub(crate) fn tile<S: Simd>(s: S, job: &mut GemmJob<'_>) {
    let GemmJob {
        x,
        tcount,
        kc,
        w,
        nrows,
        ref mut acc,
        stride,
        prefetch,
    } = *job;
    let l = S::LANES;
    let mut pf = PrefetchCursor::new(prefetch, tcount.div_ceil(2 * l) * nrows.div_ceil(MR));
    assert!(tcount % l == 0 && tcount <= stride);
    assert!(x.len() >= tcount * kc);
    // The weight rows as a pointer (maybe unaligned) and a row stride in floats.
    let (pw, wstride) = match w {
        WRows::Decoded(d) => {
            assert!(d.len() >= nrows * kc);
            (d.as_ptr(), kc)
        }
        WRows::F32Le(b, wstride) => {
            assert!(nrows == 0 || b.len() >= ((nrows - 1) * wstride + kc) * 4);
            (b.as_ptr().cast::<f32>(), wstride)
        }
    };
    assert!(nrows == 0 || acc.len() >= (nrows - 1) * stride + tcount);
    let (px, pacc) = (x.as_ptr(), acc.as_mut_ptr());
    let mut t0 = 0;
    while t0 < tcount {
        let nv = if tcount - t0 >= 2 * l { 2 } else { 1 };
        // SAFETY: the panel at `t0` holds `kc * nv * l` floats within `tcount * kc` (asserted).
        let xs = unsafe { px.add(t0 * kc) };
        let mut r0 = 0;
        while r0 < nrows {
            let m = MR.min(nrows - r0);
            pf.step(s);
            // SAFETY: `r0 + m <= nrows` rows of `kc` floats `wstride` apart; `acc` holds `nrows` rows of
            // `stride >= tcount` floats and `t0 + nv * l <= tcount` (all asserted above).
            let (ws, as_) = unsafe { (pw.add(r0 * wstride), pacc.add(r0 * stride + t0)) };
            macro_rules! run {
                ($m:literal, $nv:literal) => {
                    // SAFETY: see above.
                    unsafe { micro::<S, $m, $nv>(s, xs, ws, wstride, kc, as_, stride) }
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
            r0 += m;
        }
        t0 += nv * l;
    }
}

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
            let mut t0 = 0;
            while t0 < tp {
                let width = if tp - t0 >= 2 * lanes {
                    2 * lanes
                } else {
                    lanes
                };
                let panel = &mut xblock[t0 * kc..(t0 + width) * kc];
                for i in 0..width.min(t.saturating_sub(t0)) {
                    let row = &x[(t0 + i) * k_dim + k0..(t0 + i) * k_dim + k0 + kc];
                    for (dst, &v) in panel[i..].iter_mut().step_by(width).zip(row) {
                        *dst = v;
                    }
                }
                t0 += width;
            }
        });

    let tasks = super::matmul::split_columns(out, t, n, TASK_ROWS);
    let xp = &*xp;
    let bytes_of = |elements: usize| w.dtype.bytes_of(elements);
    let direct = w.dtype == super::WDtype::F32 && cfg!(target_endian = "little");
    let init = || {
        (
            vec![0.0f32; TASK_ROWS * KC + ALIGN_F32],
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
            let mut tiles = Vec::new();
            for tb0 in (0..tp).step_by(TOKEN_BLOCK) {
                for kb in 0..nkb {
                    tiles.push((tb0, kb));
                }
            }
            let wbuf = aligned(wbuf_store);
            for (i, &(tb0, kb)) in tiles.iter().enumerate() {
                let tcount = TOKEN_BLOCK.min(tp - tb0);
                let (k0, kc) = block(kb);
                let xblk = &xp[k0 * tp + tb0 * kc..k0 * tp + (tb0 + tcount) * kc];
                // f32 weights are read in place; other dtypes are decoded once per tile.
                let wrows = if direct {
                    WRows::F32Le(&w.bytes[(j0 * k_dim + k0) * 4..], k_dim)
                } else {
                    for (r, dst) in wbuf.chunks_exact_mut(kc).take(rows).enumerate() {
                        kern.decode(w, (j0 + r) * k_dim + k0, dst);
                    }
                    WRows::Decoded(&wbuf[..rows * kc])
                };
                let prefetch = tiles.get(i + 1).map(|&(_, nkb_)| {
                    let (nk0, nkc) = block(nkb_);
                    Prefetch {
                        bytes: w.bytes,
                        start: bytes_of(j0 * k_dim + nk0),
                        stride: bytes_of(k_dim),
                        row_bytes: bytes_of(nkc),
                        rows,
                    }
                });
                kern.gemm_tile(&mut GemmJob {
                    x: xblk,
                    tcount,
                    kc,
                    w: wrows,
                    nrows: rows,
                    acc: &mut acc[tb0..],
                    stride: tp,
                    prefetch,
                });
            }
            for (tok, o) in outs.iter_mut().enumerate() {
                for (r, v) in o.iter_mut().enumerate() {
                    *v = acc[r * tp + tok];
                }
            }
        });
}
