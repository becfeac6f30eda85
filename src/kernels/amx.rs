//! bf16 weights times f32 activations on Intel AMX tiles (`tdpbf16ps`), for products of
//! [`GEMM_MIN_T`](super::gemm::GEMM_MIN_T) or more tokens: the one matmul of [`Isa::Amx`]
//! (every other kernel of that ISA is AVX-512's).
//!
//! A tile multiply takes bf16 on both sides, so the activations are split **exactly** into three
//! bf16 parts, `x = x1 + x2 + x3`: `x1` is `x` truncated to its top 16 bits, `x2` the remainder
//! truncated the same way, and `x3` what is left, at most 8 significant bits, so a bf16 holds it
//! exactly. Each part times a bf16 weight is exact in f32 (8 x 8 significand bits), so the tiles sum
//! the same exact products the f32 FMA path sums (`w * x` of each `k`, split in three); only the
//! order and rounding of that f32 sum differ, as they do between every SIMD path and the scalar
//! spec. What AMX does differently, stated:
//! - it treats subnormal bf16 inputs as zero and flushes subnormal results: a weight below
//!   `1.2e-38` in magnitude counts as 0, and the parts of an activation below about `2^-103` are
//!   lost (a relative change of at most `2^-16` in that product);
//! - a non-finite activation goes in whole as `x1` (a NaN as the canonical NaN) with `x2 = x3 = 0`,
//!   so it poisons its token's outputs as in the spec; but an infinite *weight* meets the zero `x2`
//!   and `x3` of an activation that bf16 holds exactly, and `inf * 0` is NaN where the spec gives
//!   `±inf`. `kernels::matmul` therefore recomputes every output column holding a NaN on
//!   AVX-512 after this product (every other NaN of the tiles is one of the spec's too).
//!
//! Layout (`out[T,N] = x[T,K] * W[N,K]^T`, computed as `W * x^T` like `gemm.rs`):
//! - tile A is 16 weight rows x 32 `k`: read in place from the tensor bytes (64 bytes of each row,
//!   `2 * K` bytes apart) when each is used once (up to 32 tokens, whole rows of whole 32-`k`
//!   steps), else from a packed, zero-padded copy of the task's rows (`pack_a`), which the token
//!   pairs after the first read from L1;
//! - tile B is 16 pairs of `k` x 16 tokens of one part, packed once per call ("VNNI": the 32-bit
//!   word of pair `p`, token `n` holds `x[n][2p]` in its low half and `x[n][2p + 1]` in its high);
//! - a rayon task owns [`ROWS`] = 32 weight rows (two A tiles) and runs every pair of token tiles
//!   against them: four accumulator tiles (32 rows x 32 tokens) take, per 32 `k`, two A loads, six
//!   B loads (three parts x two token tiles) and twelve `tdpbf16ps`;
//! - above 32 tokens `K` is taken in blocks of [`KC`], each a parallel pass over the tasks, so the
//!   packed activations of a block stay in L2 while every task runs against them; the accumulator
//!   tiles are stored between blocks (exactly: the sum is the same, in the same order, as in one
//!   pass, tested). When the stored accumulators of all tasks would pass [`ACC_MAX_BYTES`] (they
//!   are as large as the output), and up to 32 tokens, `K` is one pass.
//!
//! The tiles are reached through inline assembly (Rust's AMX intrinsics are not stable); the
//! registers `tmm0`-`tmm7` are invisible to the compiler, which never emits AMX itself, so their
//! contents persist between the `asm!` blocks of one task. Linux hands out the tile state only
//! after `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, which [`Amx::new`] requests once.

use std::arch::asm;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::x86::Avx512;
use super::{WDtype, Weights};

/// Weight rows per rayon task: two A tiles.
const ROWS: usize = 32;
/// Rows of a tile (A: weight rows; B: pairs of `k`; C: weight rows).
const TROWS: usize = 16;
/// `k` per A tile row (64 bytes of bf16).
const TK: usize = 32;
/// Tokens per B tile.
const TT: usize = 16;
/// Largest accumulator buffer for every task together, in bytes (see `matmul`).
pub(crate) const ACC_MAX_BYTES: usize = 64 << 20;
/// `k` per block of the outer loop (a multiple of [`TK`]).
const KC: usize = 512;
/// Parts an activation is split into.
const PARTS: usize = 3;

/// Proof that the CPU has AVX-512F (with AVX2, FMA, F16C), AMX-TILE and AMX-BF16 with tiles of 16
/// rows of 64 bytes, and that the OS lets this process use them. Only [`Amx::new`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Amx(#[allow(dead_code)] Avx512);

impl Amx {
    /// The token, if the CPU and OS allow AMX-BF16 (the permission is requested on the first call).
    pub(crate) fn new() -> Option<Self> {
        static GRANTED: OnceLock<bool> = OnceLock::new();
        let avx512 = Avx512::new()?;
        GRANTED.get_or_init(detect).then_some(Amx(avx512))
    }
}

/// CPUID says AMX-TILE and AMX-BF16 with palette 1 of 8 tiles of 16 x 64 bytes, and the kernel
/// grants the tile data state (Linux 5.16 and later).
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // `cpuid` exists on every x86-64 CPU; leaves above the maximum return zeros. (The intrinsic
    // is safe since Rust 1.87 and `unsafe` before: the block serves both.)
    #[allow(unused_unsafe)]
    // SAFETY: see above.
    let cpuid = |leaf, sub| unsafe { __cpuid_count(leaf, sub) };
    let (max, l7) = (cpuid(0, 0).eax, cpuid(7, 0));
    if max < 0x1d || l7.edx & (1 << 24) == 0 || l7.edx & (1 << 22) == 0 {
        return false;
    }
    // Leaf 0x1D, sub-leaf 1: palette 1's geometry.
    let p1 = cpuid(0x1d, 1);
    let bytes_per_row = p1.ebx & 0xffff;
    let names = p1.ebx >> 16;
    let max_rows = p1.ecx & 0xffff;
    if bytes_per_row != 64 || names < 8 || max_rows < TROWS as u32 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl` with these arguments only changes this process's permission for the
    // AMX tile state; an OS without it returns an error, which means no AMX.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

/// `ldtilecfg`'s 64-byte operand: palette 1, every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
    reserved2: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut colsb = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        colsb[i] = 64;
        rows[i] = TROWS as u8;
        i += 1;
    }
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb,
        rows,
        reserved2: [0; 16],
    }
};

/// The three bf16 parts of `v` whose sum is `v` exactly (see the module docs); a non-finite `v`
/// is one part (a NaN as the canonical quiet NaN).
#[inline(always)]
fn split3(v: f32) -> [u16; PARTS] {
    if !v.is_finite() {
        let hi = if v.is_nan() {
            0x7fc0
        } else {
            (v.to_bits() >> 16) as u16
        };
        return [hi, 0, 0];
    }
    let p1 = v.to_bits() & 0xffff_0000;
    let r1 = v - f32::from_bits(p1);
    let p2 = r1.to_bits() & 0xffff_0000;
    let r2 = r1 - f32::from_bits(p2);
    [
        (p1 >> 16) as u16,
        (p2 >> 16) as u16,
        (r2.to_bits() >> 16) as u16,
    ]
}

/// Pack the activations of token tile `tile` (tokens `16 * tile ..`, zero past `t`) into its
/// three parts' B panels: part `s`, pair `p`, token `n` at word `(s * pairs + p) * 16 + n`.
fn pack_tile(x: &[f32], t: usize, k_dim: usize, pairs: usize, tile: usize, dst: &mut [u32]) {
    debug_assert_eq!(dst.len(), PARTS * pairs * TT);
    dst.fill(0);
    for n in 0..TT {
        let tok = tile * TT + n;
        if tok >= t {
            break;
        }
        let row = &x[tok * k_dim..(tok + 1) * k_dim];
        for p in 0..pairs {
            let lo = row.get(2 * p).map_or([0; PARTS], |&v| split3(v));
            let hi = row.get(2 * p + 1).map_or([0; PARTS], |&v| split3(v));
            for s in 0..PARTS {
                dst[(s * pairs + p) * TT + n] = u32::from(lo[s]) | (u32::from(hi[s]) << 16);
            }
        }
    }
}

/// Load tile register `$t` with 16 rows of 64 bytes at `$p`, `$stride` bytes apart.
macro_rules! tileload {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(
            concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
            p = in(reg) $p,
            s = in(reg) ($stride as usize),
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// `tmm$c += tmm$a * tmm$b` (bf16 pairs, f32 sums).
macro_rules! tdp {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem, preserves_flags)
        )
    };
}

/// Store tile register `$t` as 16 rows of 64 bytes at `$p`, `$stride` bytes apart.
macro_rules! tilestore {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(
            concat!("tilestored [{p} + {s}*1], tmm", $t),
            p = in(reg) $p,
            s = in(reg) ($stride as usize),
            options(nostack, preserves_flags)
        )
    };
}

/// Copy rows `j0 .. j0 + rows` of the bf16 weights, elements `[k0, k0 + kc)` (`kc` a multiple of
/// [`TK`]), into `pad` as A tiles: step `q`'s rows are 64 bytes each at `(q * ROWS + r) * 64`,
/// zero past the last row and past `k_dim`.
///
/// # Safety
/// The CPU has AVX-512F (the 64-byte copies compile to one vector move each).
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(
    w: &[u8],
    k_dim: usize,
    j0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    pad: &mut Vec<u8>,
) {
    pad.clear();
    pad.resize(kc / TK * ROWS * 64, 0);
    let k1 = k_dim.min(k0 + kc);
    for r in 0..rows {
        let row = 2 * (j0 + r) * k_dim;
        let src = &w[row + 2 * k0..row + 2 * k1];
        let whole = src.chunks_exact(64);
        let tail = whole.remainder();
        for (q, chunk) in whole.enumerate() {
            let at = (q * ROWS + r) * 64;
            let dst: &mut [u8; 64] = (&mut pad[at..at + 64]).try_into().unwrap();
            *dst = *<&[u8; 64]>::try_from(chunk).unwrap();
        }
        if !tail.is_empty() {
            let at = ((src.len() / 64) * ROWS + r) * 64;
            pad[at..at + tail.len()].copy_from_slice(tail);
        }
    }
}

/// The product for `t >= GEMM_MIN_T` tokens with bf16 weights. Lengths were validated by
/// `kernels::matmul`; `t`, `n` and `k_dim` are not 0.
///
/// Above 32 tokens `K` is taken in blocks of [`KC`], each a parallel pass over the row tasks: the
/// packed activations of one block (`T * KC * 6` bytes, 384 KiB at 128 tokens) stay in L2 while
/// every task runs against them, and a task's rows of the block (32 KiB) sit in L1. Between blocks
/// the accumulator tiles are stored; after the last they are written to `out`.
///
/// `acc_max` bounds the accumulators of the blocked schedule: [`ACC_MAX_BYTES`] (tests pass 0 and
/// `usize::MAX` to reach both schedules).
///
/// Returns whether an output is NaN (seen while scattering, so the caller need not scan `out`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    _proof: Amx,
    x: &[f32],
    t: usize,
    k_dim: usize,
    w: Weights<'_>,
    n: usize,
    out: &mut [f32],
    acc_max: usize,
) -> bool {
    assert_eq!(w.dtype, WDtype::Bf16);
    assert!(x.len() >= t * k_dim && out.len() >= t * n && w.bytes.len() >= 2 * n * k_dim);
    let kp = k_dim.div_ceil(TK) * TK;
    let pairs = kp / 2;
    // An even number of token tiles: the tasks run them two at a time.
    let tiles = t.div_ceil(2 * TT) * 2;
    let panel = PARTS * pairs * TT;
    let mut xb = vec![0u32; tiles * panel];
    xb.par_chunks_mut(panel)
        .enumerate()
        .for_each(|(tile, dst)| pack_tile(x, t, k_dim, pairs, tile, dst));
    let xb = &*xb;
    const TILE_F32: usize = TROWS * TT;
    // A task's accumulators: per pair of token tiles, four tiles.
    let per_task = tiles / 2 * 4 * TILE_F32;
    let mut tasks = super::matmul::split_columns(out, t, n, ROWS);
    let ntasks = tasks.len();
    // Above one pair of token tiles, `K` is taken in blocks when the accumulators of every task
    // (as large as `out`) stay under `acc_max`; otherwise, and for one pair (which reads
    // each A tile once, so blocks would only add passes), in one pass with a task's accumulators
    // in a per-thread buffer.
    let blocked = tiles > 2 && ntasks * per_task * 4 <= acc_max;
    let block = if blocked { KC } else { kp };
    let mut shared = vec![0.0f32; if blocked { ntasks * per_task } else { 0 }];
    let mut accs: Vec<&mut [f32]> = if blocked {
        shared.chunks_mut(per_task).collect()
    } else {
        (0..ntasks).map(|_| <&mut [f32]>::default()).collect()
    };
    let nkb = kp.div_ceil(block);
    let saw_nan = AtomicBool::new(false);
    for kb in 0..nkb {
        let k0 = kb * block;
        let kc = block.min(kp - k0);
        let (first, last) = (kb == 0, kb + 1 == nkb);
        tasks
            .par_iter_mut()
            .zip(accs.par_iter_mut())
            .enumerate()
            .for_each_init(
                || (Vec::<u8>::new(), Vec::<f32>::new()),
                |(pad, local), (c, (outs, acc))| {
                let acc: &mut [f32] = if blocked {
                    acc
                } else {
                    local.resize(per_task, 0.0);
                    local
                };
                let j0 = c * ROWS;
                let rows = outs.first().map_or(0, |o| o.len());
                // With one pair of token tiles each A tile is used once: read it in place (whole
                // rows of whole steps only). With more, pack the block so that the pairs after the
                // first read it from L1 (rows `2 * K` bytes apart alias one L1 set when that is a
                // multiple of 4 KiB, TinyLlama's K = 2048, and 32 such rows thrash a 12-way set).
                let (a, a_row, a_step) = if tiles == 2 && rows == ROWS && k_dim == kp {
                    // SAFETY: element `j0 * k_dim + k0` is within the weight bytes (asserted
                    // through `n * k_dim` above).
                    (unsafe { w.bytes.as_ptr().add(2 * (j0 * k_dim + k0)) }, 2 * k_dim, 2 * TK)
                } else {
                    // SAFETY: the token proves AVX-512F.
                    unsafe { pack_a(w.bytes, k_dim, j0, rows, k0, kc, pad) };
                    (pad.as_ptr(), 64, ROWS * 64)
                };
                // SAFETY: the token proves AMX with permission; every tile load reads 16 rows of
                // 64 bytes: A rows within the weights (32 whole rows from `j0`, `kc` elements from
                // `k0`) or within `pad` (`kc / 32` steps of 32 rows), B
                // rows within `xb` (token tiles `2 * pair` and `2 * pair + 1`, each `panel` words,
                // rows `k0 / 2 ..` of each part, below `pairs`), accumulators within `acc`
                // (`per_task` floats: `tiles / 2` pairs of four 1 KiB tiles).
                unsafe {
                    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags));
                    for pair in 0..tiles / 2 {
                        let ca = acc.as_mut_ptr().add(pair * 4 * TILE_F32).cast::<u8>();
                        if first {
                            asm!(
                                "tilezero tmm0",
                                "tilezero tmm1",
                                "tilezero tmm2",
                                "tilezero tmm3",
                                options(nostack, nomem, preserves_flags)
                            );
                        } else {
                            tileload!(0, ca, 64);
                            tileload!(1, ca.add(1024), 64);
                            tileload!(2, ca.add(2048), 64);
                            tileload!(3, ca.add(3072), 64);
                        }
                        let b0 = xb.as_ptr().add(2 * pair * panel).cast::<u8>();
                        let b1 = b0.add(4 * panel);
                        for q in 0..kc / TK {
                            let a0 = a.add(q * a_step);
                            tileload!(4, a0, a_row);
                            tileload!(5, a0.add(TROWS * a_row), a_row);
                            for s in 0..PARTS {
                                let off = 4 * ((s * pairs + k0 / 2 + q * TROWS) * TT);
                                tileload!(6, b0.add(off), 64);
                                tdp!(0, 4, 6);
                                tdp!(2, 5, 6);
                                tileload!(7, b1.add(off), 64);
                                tdp!(1, 4, 7);
                                tdp!(3, 5, 7);
                            }
                        }
                        tilestore!(0, ca, 64);
                        tilestore!(1, ca.add(1024), 64);
                        tilestore!(2, ca.add(2048), 64);
                        tilestore!(3, ca.add(3072), 64);
                    }
                    asm!("tilerelease", options(nostack, nomem, preserves_flags));
                }
                if last && scatter(acc, outs) {
                    saw_nan.store(true, Ordering::Relaxed);
                }
            });
    }
    saw_nan.into_inner()
}

/// Write a task's accumulator tiles into its output rows: pair `p`'s tile `2 * a + b` holds
/// weight rows `16 * a ..` (row `m` of the tile) against the tokens of token tile `2 * p + b`
/// (column `n`). Returns whether a value written is NaN.
fn scatter(acc: &[f32], outs: &mut [&mut [f32]]) -> bool {
    const TILE_F32: usize = TROWS * TT;
    let mut nan = false;
    for (i, tile) in acc.chunks_exact(TILE_F32).enumerate() {
        let (pair, a, b) = (i / 4, (i % 4) / 2, i % 2);
        let tok0 = (2 * pair + b) * TT;
        for (nn, o) in outs.iter_mut().skip(tok0).take(TT).enumerate() {
            let cols = o.len().saturating_sub(a * TROWS).min(TROWS);
            for m in 0..cols {
                let v = tile[m * TT + nn];
                nan |= v.is_nan();
                o[a * TROWS + m] = v;
            }
        }
    }
    nan
}
