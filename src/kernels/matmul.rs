//! The blocked, multi-threaded matrix product `out[T,N] = x[T,K] * W[N,K]^T` for the SIMD ISAs.
//!
//! From `gemm::GEMM_MIN_T` tokens on, the product is handed to `gemm.rs` (tokens along the
//! vector lanes, no horizontal sums); this file's dot-product kernel serves fewer tokens.
//!
//! Both operands are row-major in `K`, so the inner kernel is a block of dot products (the
//! "NT" layout of `torch.nn.Linear`), register-blocked in the spirit of the BLIS and
//! `matrixmultiply` microkernels:
//! - rayon splits the `N` weight rows into tasks of [`TASK_ROWS`]; each task owns the matching
//!   columns of every output row (disjoint `chunks_mut`, never aliased writes);
//! - `x` is packed once, K block by K block ([`KC`] wide, zero-padded to a whole vector, 64-byte
//!   aligned so no vector load straddles two cache lines); when all of `x` fits in L1 beside the
//!   weights (`X_L1_FLOATS`, one token at any real width) and the weights are read in place, the
//!   K block is the whole row, so a microkernel call streams its rows end to end: with `KC`
//!   slices, a task read 48 rows' slices in turn, and the whole rows made the TinyLlama forward
//!   pass 10-15% faster at 1 token (bf16 0.114-0.128 -> 0.100-0.108 s, 4 alternating pairs);
//! - f32 and bf16 weights are read straight from the tensor bytes (any alignment) and widened
//!   in registers: with fewer than 16 tokens each weight feeds at most 15 FMAs, so the decoded
//!   copy of the other dtypes (f16 and the block types: [`ROW_TILE`] rows per K block decoded
//!   into a contiguous aligned buffer that stays in L2) would cost a store and a reload per
//!   weight for little reuse; a row's ragged end (`K` block not a multiple of the vector width)
//!   is decoded by the scalar spec into a zero-padded stack vector;
//! - no software prefetch: the weight rows are sequential streams the hardware prefetchers
//!   follow. Prefetching the next tile's rows a few lines per microkernel call (as this file did
//!   until 2026-11-30) made the TinyLlama forward pass slower at every token count below 16
//!   (1 token, medians of 5 alternating runs: bf16 0.104 against 0.100 s, f32 0.161 against
//!   0.141 s);
//! - the microkernel computes 4 tokens x 3 rows with 12 vector accumulators (AVX2 has 16
//!   registers): per step 7 loads feed 12 FMAs, the 4-token x block sits in L1 and is reused by
//!   every row of the tile; the accumulators are reduced four at a time once per K block.
//!
//! The constants were tuned on an AMD EPYC (Zen 3, AVX2, 32 KiB L1, 512 KiB L2 per core) with
//! `cargo bench --bench kernels` and single-thread CPU-time measurements: K blocks of 256 or 512
//! spent too much in the reductions, 12-row tiles re-read x from L2 too often, and unaligned
//! packing cost about 5% in split loads.

use rayon::prelude::*;

use super::simd::Simd;
use super::{WDtype, Weights, scalar};

/// K block: floats of one row per pass. The 4-token x group (16 KiB) stays in L1, the decoded
/// weight tile (`ROW_TILE * KC` floats, 192 KiB) in L2.
pub(crate) const KC: usize = 1024;
/// Floats of packed x (32 KiB) up to which in-place weight rows are read whole, in one K block.
const X_L1_FLOATS: usize = 8192;
/// Weight rows decoded together; every 4-token x group is reused across all of them.
pub(crate) const ROW_TILE: usize = 48;
/// Weight rows per rayon task (a multiple of `ROW_TILE`).
pub(crate) const TASK_ROWS: usize = 48;
/// Tokens per pass over a K block, bounding the packed x block a tile streams through.
pub(crate) const TOKEN_BLOCK: usize = 128;
/// K blocks are zero-padded to a multiple of this (the widest vector, AVX-512).
const PAD: usize = 16;
/// Microkernel shape: tokens x weight rows.
const MR: usize = 4;
const NR: usize = 3;

/// One microkernel pass: a packed block of tokens against a decoded tile of weight rows.
pub(crate) struct TileJob<'o, 's> {
    /// Packed activations: `tcount` rows of `kcp` floats.
    pub x: &'s [f32],
    /// Tokens in the block.
    pub tcount: usize,
    /// Padded K block length, a multiple of the vector width.
    pub kcp: usize,
    /// The tile's weight rows.
    pub w: Rows<'s>,
    /// Weight rows in the tile.
    pub nrows: usize,
    /// For each token of the block, the task's columns of its output row.
    pub outs: &'s mut [&'o mut [f32]],
    /// Column of the tile's first row within `outs[t]`.
    pub col0: usize,
}

/// The weight rows of a small-`T` tile.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'s> {
    /// Decoded rows: `nrows` rows of `kcp` floats, zero past the K block.
    Decoded(&'s [f32]),
    /// f32 or bf16 weights read in place and widened in registers: row `r` of the tile starts at
    /// element `start + r * stride` of `w` and the K block holds `kc <= kcp` elements of it.
    InPlace {
        /// The whole weight tensor (F32 or BF16).
        w: Weights<'s>,
        /// Element index of the tile's first weight.
        start: usize,
        /// Elements between rows.
        stride: usize,
        /// K block length.
        kc: usize,
    },
}

/// Split `out` (`[t, n]`, row-major) among tasks: task `c` gets columns `c * width ..` of every
/// row, so each task writes its own disjoint slices (no `&` -> `&mut` casts for parallel writes).
pub(crate) fn split_columns(
    out: &mut [f32],
    t: usize,
    n: usize,
    width: usize,
) -> Vec<Vec<&mut [f32]>> {
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(width))
        .map(|_| Vec::with_capacity(t))
        .collect();
    for row in out.chunks_mut(n) {
        for (c, piece) in row.chunks_mut(width).enumerate() {
            tasks[c].push(piece);
        }
    }
    tasks
}

/// The per-ISA pieces of the product, implemented by each ISA token in `simd::entry_points!`.
pub(crate) trait TileKernel: Copy + Send + Sync {
    /// Decode `out.len()` elements of `w` starting at element `start` into `out`.
    fn decode(self, w: Weights<'_>, start: usize, out: &mut [f32]);
    /// `outs[t][col0 + r] += dot(x[t], w[r])` for the whole tile.
    fn tile(self, job: &mut TileJob<'_, '_>);
    /// The GEMM tile of `gemm.rs` (many tokens).
    fn gemm_tile(self, job: &mut super::gemm::GemmJob<'_>);
    /// Pack one K block of activations for the GEMM (`gemm::pack`).
    fn gemm_pack(self, job: &mut super::gemm::PackJob<'_>);
    /// Write a GEMM task's transposed accumulators into its output rows (`gemm::scatter`).
    fn gemm_scatter(self, acc: &[f32], tp: usize, outs: &mut [&mut [f32]]);
    /// f32 lanes per vector.
    fn lanes(self) -> usize;
}

/// Floats of slack that let [`aligned`] start a buffer on a cache line.
const ALIGN_F32: usize = 16;

/// `buf` minus its first few elements, so it starts on a 64-byte boundary: a 32- or 64-byte
/// load that straddles two cache lines costs two, and the packed rows are multiples of 64 bytes.
fn aligned(buf: &mut [f32]) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(ALIGN_F32);
    &mut buf[skip..]
}

/// `v` rounded up to a multiple of `m`.
fn round_up(v: usize, m: usize) -> usize {
    v.div_ceil(m) * m
}

/// The product on a SIMD ISA. Lengths were validated by `kernels::matmul`.
pub(crate) fn matmul<K: TileKernel>(
    kern: K,
    x: &[f32],
    t: usize,
    k_dim: usize,
    w: Weights<'_>,
    n: usize,
    out: &mut [f32],
) {
    if t == 0 || n == 0 {
        return;
    }
    if k_dim == 0 {
        out.fill(0.0);
        return;
    }
    if t >= super::gemm::GEMM_MIN_T {
        super::gemm::matmul(kern, kern.lanes(), x, t, k_dim, w, n, out);
        return;
    }
    // f32 and bf16 weights are widened in registers straight from the tensor: every weight is
    // used by at most `GEMM_MIN_T - 1` tokens, so a decoded copy would cost more than it saves.
    let in_place = matches!(w.dtype, WDtype::F32 | WDtype::Bf16) && cfg!(target_endian = "little");
    // Read in place, a weight row is one K block when all of x fits in L1 beside it (one token of
    // any real width): each microkernel call then streams its rows end to end, which the
    // hardware prefetchers follow, instead of `KC` slices of many rows in turn.
    let kcb = if in_place && t * k_dim <= X_L1_FLOATS {
        k_dim
    } else {
        KC
    };
    let nkb = k_dim.div_ceil(kcb);
    let block = |kb: usize| {
        let k0 = kb * kcb;
        let kc = kcb.min(k_dim - k0);
        (k0, kc, round_up(kc, PAD))
    };
    // Packed x: K block `kb` starts at `kb * kcb * t` (every earlier block is a full `kcb`); within
    // it token `i` starts at `i * kcp`; padding is zero so it adds nothing to the dot products.
    let (_, _, last_kcp) = block(nkb - 1);
    let mut xp_store = vec![0.0f32; (nkb - 1) * kcb * t + last_kcp * t + ALIGN_F32];
    let xp = aligned(&mut xp_store);
    for kb in 0..nkb {
        let (k0, kc, kcp) = block(kb);
        let base = kb * kcb * t;
        for (i, row) in x.chunks_exact(k_dim).enumerate() {
            xp[base + i * kcp..base + i * kcp + kc].copy_from_slice(&row[k0..k0 + kc]);
        }
    }

    let tasks = split_columns(out, t, n, TASK_ROWS);
    let xp = &*xp;
    // The weight buffer is made once per rayon split, not per task (a fresh 192 KiB allocation is
    // an mmap with page faults every time).
    let init = || vec![0.0f32; if in_place { 0 } else { ROW_TILE * KC } + ALIGN_F32];
    tasks
        .into_par_iter()
        .enumerate()
        .for_each_init(init, |wbuf_store, (c, mut outs)| {
            let j0 = c * TASK_ROWS;
            let rows = outs.first().map_or(0, |o| o.len());
            for o in outs.iter_mut() {
                o.fill(0.0);
            }
            let wbuf = aligned(wbuf_store);
            // The task's tiles in order: token block, K block, first row.
            let tiles = (0..t).step_by(TOKEN_BLOCK).flat_map(|tb0| {
                (0..nkb)
                    .flat_map(move |kb| (0..rows).step_by(ROW_TILE).map(move |r0| (tb0, kb, r0)))
            });
            for (tb0, kb, r0) in tiles {
                let tcount = TOKEN_BLOCK.min(t - tb0);
                let (k0, kc, kcp) = block(kb);
                let base = kb * kcb * t;
                let xblk = &xp[base + tb0 * kcp..base + (tb0 + tcount) * kcp];
                let nr = ROW_TILE.min(rows - r0);
                let rows_w = if in_place {
                    Rows::InPlace {
                        w,
                        start: (j0 + r0) * k_dim + k0,
                        stride: k_dim,
                        kc,
                    }
                } else {
                    for (r, dst) in wbuf.chunks_exact_mut(kcp).take(nr).enumerate() {
                        kern.decode(w, (j0 + r0 + r) * k_dim + k0, &mut dst[..kc]);
                        dst[kc..].fill(0.0);
                    }
                    Rows::Decoded(&wbuf[..nr * kcp])
                };
                kern.tile(&mut TileJob {
                    x: xblk,
                    tcount,
                    kcp,
                    w: rows_w,
                    nrows: nr,
                    outs: &mut outs[tb0..tb0 + tcount],
                    col0: r0,
                });
            }
        });
}

/// Floats of a row's K block past its last whole vector, padded with zeros to the packed length
/// (`kcp - kfull <= 16`: `kcp` rounds the block up to 16 and `kfull` down to the vector width,
/// which divides 16).
const TAIL: usize = 16;

/// Dot products of `M` packed token rows with `N` weight rows over one K block:
/// `result[r][t] = sum_k x[t * kcp + k] * w_r[k]` (entries `t >= M` are 0). Below `kfull`,
/// `w_r[k]` is read from `w + r * wstride` bytes: little-endian f32 (any alignment) or, with
/// `BF16`, bf16 widened in registers; from `kfull` on it is `tail[r][k - kfull]`.
///
/// # Safety
/// `x` is readable for `M * kcp` floats; `kcp` and `kfull` are multiples of `S::LANES`,
/// `kfull <= kcp <= kfull + TAIL`; for every `r < N`, `w + r * wstride` is readable for `kfull`
/// elements.
// Index loops keep the (row, token) accumulator grid readable; they are fully unrolled.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn micro<S: Simd, const M: usize, const N: usize, const BF16: bool>(
    s: S,
    x: *const f32,
    kcp: usize,
    w: *const u8,
    wstride: usize,
    kfull: usize,
    tail: &[[f32; TAIL]; NR],
) -> [[f32; 4]; N] {
    let mut acc = [[s.zero(); M]; N];
    let size = if BF16 { 2 } else { 4 };
    // One K step of `LANES` floats: N weight vectors in registers, each x vector used N times.
    // (Macros rather than closures: a closure that is not inlined loses the target features.)
    macro_rules! step {
        ($k:expr, $tail:expr) => {{
            let k: usize = $k;
            let mut wv = [s.zero(); N];
            for (r, v) in wv.iter_mut().enumerate() {
                // SAFETY: `k + LANES <= kfull` reads row `r < N` in bounds, and a tail step
                // has `k - kfull + LANES <= kcp - kfull <= TAIL` (the caller's contract).
                *v = unsafe {
                    if $tail {
                        s.load(tail[r].as_ptr().add(k - kfull))
                    } else if BF16 {
                        s.load_bf16(w.add(r * wstride + k * size))
                    } else {
                        s.load_f32le(w.add(r * wstride + k * size))
                    }
                };
            }
            for t in 0..M {
                // SAFETY: `k + LANES <= kcp`, within the `M` rows of `kcp` floats of `x`.
                let xv = unsafe { s.load(x.add(t * kcp + k)) };
                for r in 0..N {
                    acc[r][t] = s.fma(xv, wv[r], acc[r][t]);
                }
            }
        }};
    }
    let l = S::LANES;
    let mut k = 0;
    while k + 2 * l <= kfull {
        step!(k, false);
        step!(k + l, false);
        k += 2 * l;
    }
    if k < kfull {
        step!(k, false);
        k += l;
    }
    while k < kcp {
        step!(k, true);
        k += l;
    }
    let z = s.zero();
    let pick = |a: &[S::V; M], t: usize| if t < M { a[t] } else { z };
    let mut res = [[0.0f32; 4]; N];
    for r in 0..N {
        res[r] = s.reduce4(
            pick(&acc[r], 0),
            pick(&acc[r], 1),
            pick(&acc[r], 2),
            pick(&acc[r], 3),
        );
    }
    res
}

/// The body of [`TileKernel::tile`]: microkernel over every (4 tokens x 3 rows) sub-tile.
#[inline(always)]
pub(crate) fn tile<S: Simd>(s: S, job: &mut TileJob<'_, '_>) {
    let TileJob {
        x,
        tcount,
        kcp,
        w,
        nrows,
        ref mut outs,
        col0,
    } = *job;
    let l = S::LANES;
    assert!(kcp % l == 0 && TAIL.is_multiple_of(l));
    assert!(x.len() >= tcount * kcp && outs.len() >= tcount);
    assert!(outs[..tcount].iter().all(|o| o.len() >= col0 + nrows));
    // The rows as bytes: first row, bytes between rows, whether bf16, whole vectors per row;
    // the in-place rows' ragged ends go through `tails`.
    let (pw, wstride, bf16, kfull) = match w {
        Rows::Decoded(d) => {
            assert!(d.len() >= nrows * kcp);
            (d.as_ptr().cast::<u8>(), kcp * 4, false, kcp)
        }
        Rows::InPlace {
            w,
            start,
            stride,
            kc,
        } => {
            let kfull = kc / l * l;
            let size = w.dtype.size();
            assert!(matches!(w.dtype, WDtype::F32 | WDtype::Bf16));
            assert!(kc <= kcp && kcp <= kfull + TAIL);
            assert!(nrows == 0 || (start + (nrows - 1) * stride + kc) * size <= w.bytes.len());
            // SAFETY: element `start` is within the bytes (asserted just above).
            let p = unsafe { w.bytes.as_ptr().add(start * size) };
            (p, stride * size, w.dtype == WDtype::Bf16, kfull)
        }
    };
    let px = x.as_ptr();
    let mut t0 = 0;
    while t0 < tcount {
        let m = MR.min(tcount - t0);
        let mut r0 = 0;
        while r0 < nrows {
            let nn = NR.min(nrows - r0);
            let mut tail = [[0.0f32; TAIL]; NR];
            if let Rows::InPlace {
                w,
                start,
                stride,
                kc,
            } = w
            {
                for (r, t) in tail.iter_mut().enumerate().take(nn) {
                    let row = start + (r0 + r) * stride;
                    for (i, v) in t.iter_mut().enumerate().take(kc - kfull) {
                        *v = scalar::weight_at(w, row + kfull + i);
                    }
                }
            }
            // SAFETY: the asserts above give `tcount` token rows of `kcp` floats and `nrows`
            // weight rows of at least `kfull` elements, `wstride` bytes apart; `t0 + m <= tcount`
            // and `r0 + nn <= nrows`.
            let (xs, ws) = unsafe { (px.add(t0 * kcp), pw.add(r0 * wstride)) };
            macro_rules! run {
                ($m:literal, $n:literal) => {{
                    // SAFETY: see above; `$m` token rows and `$n` weight rows remain, and
                    // `kfull <= kcp <= kfull + TAIL`.
                    let res = unsafe {
                        if bf16 {
                            micro::<S, $m, $n, true>(s, xs, kcp, ws, wstride, kfull, &tail)
                        } else {
                            micro::<S, $m, $n, false>(s, xs, kcp, ws, wstride, kfull, &tail)
                        }
                    };
                    for (r, sums) in res.iter().enumerate() {
                        for (t, v) in sums.iter().take($m).enumerate() {
                            outs[t0 + t][col0 + r0 + r] += v;
                        }
                    }
                }};
            }
            match (m, nn) {
                (4, 3) => run!(4, 3),
                (4, 2) => run!(4, 2),
                (4, 1) => run!(4, 1),
                (3, 3) => run!(3, 3),
                (3, 2) => run!(3, 2),
                (3, 1) => run!(3, 1),
                (2, 3) => run!(2, 3),
                (2, 2) => run!(2, 2),
                (2, 1) => run!(2, 1),
                (1, 3) => run!(1, 3),
                (1, 2) => run!(1, 2),
                _ => run!(1, 1),
            }
            r0 += nn;
        }
        t0 += m;
    }
}
