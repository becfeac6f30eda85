//! The f32 FMA peak loop shared by `benches/kernels.rs` and `benches/peers.rs`: independent FMA
//! chains that keep every FMA port busy, on the active ISA.

use std::hint::black_box;

use ckpt::kernels::Isa;

/// FLOPs of one call of the peak loop body per iteration: 12 accumulators x lanes x 2.
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// 12 independent 8-lane FMA chains; returns a value that depends on all of them.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64, a: f32, b: f32) -> f32 {
        let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(va, vb, *v);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// The sum of every lane of the chains: a value that depends on all of them.
    #[target_feature(enable = "avx512f")]
    fn sum(acc: [__m512; 24]) -> f32 {
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }

    /// 24 independent 16-lane FMA chains.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64, a: f32, b: f32) -> f32 {
        let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
        let mut acc = [_mm512_setzero_ps(); 24];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(va, vb, *v);
            }
        }
        sum(acc)
    }

    /// 24 independent `vdpbf16ps` chains (AVX512_BF16): each instruction does 16 lanes x 2
    /// bf16 products, accumulated in f32. `a` and `b` are rounded to bf16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn avx512_bf16(iters: u64, a: f32, b: f32) -> f32 {
        let va = _mm512_cvtne2ps_pbh(_mm512_set1_ps(a), _mm512_set1_ps(a));
        let vb = _mm512_cvtne2ps_pbh(_mm512_set1_ps(b), _mm512_set1_ps(b));
        let mut acc = [_mm512_setzero_ps(); 24];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, va, vb);
            }
        }
        sum(acc)
    }
}

/// Run the `vdpbf16ps` loop (the bf16 dot-product instruction of AVX512_BF16, what llama.cpp's
/// BF16 path uses where the CPU has it) on one thread for `iters` iterations; returns FLOPs done,
/// or `None` when this CPU lacks AVX512_BF16.
pub fn bf16_dot_run(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            // Products of 1.0 and 2^-20: the sums grow slowly and stay finite.
            // SAFETY: the CPU has AVX-512F and AVX512_BF16 (checked above).
            black_box(unsafe { fma::avx512_bf16(iters, black_box(1.0), black_box(9.5e-7)) });
            return Some(iters as f64 * 24.0 * 16.0 * 2.0 * 2.0);
        }
    }
    let _ = iters;
    None
}

/// Run the peak loop on one thread for `iters` iterations; returns FLOPs done.
pub fn peak_run(isa: Isa, iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512 | Isa::Amx => {
                // SAFETY: `isa` is the active ISA, so the CPU has AVX-512F.
                black_box(unsafe { fma::avx512(iters, black_box(1e-9), black_box(1.0)) });
                return iters as f64 * 24.0 * 16.0 * 2.0;
            }
            Isa::Avx2 => {
                // SAFETY: `isa` is the active ISA, so the CPU has AVX2 and FMA.
                black_box(unsafe { fma::avx2(iters, black_box(1e-9), black_box(1.0)) });
                return iters as f64 * 12.0 * 8.0 * 2.0;
            }
            _ => {}
        }
    }
    let _ = (isa, iters);
    0.0
}
