//! Every SIMD path this CPU has, held to the scalar spec: lengths 0, 1, lane-1, lane, lane+1 and
//! odd sizes, weight bytes at odd offsets, outputs pre-filled with NaN so an unwritten element
//! fails; the matmul shape grid and a seeded property test; `CKPT_ISA` parsing; length errors.

use super::*;
use proptest::prelude::*;

/// Run `f` for every SIMD ISA this CPU has (the scalar spec is what they are compared with).
fn for_each_available_isa(mut f: impl FnMut(Isa)) {
    for isa in available_isas() {
        if isa != Isa::Scalar {
            f(isa);
        }
    }
}

/// f32 lanes of an ISA's vectors.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 1,
        Isa::Avx2 => 8,
        Isa::Avx512 | Isa::Amx => 16,
        Isa::Neon => 4,
    }
}

/// The lengths every element-wise op is tested on for `isa`.
fn lengths(isa: Isa) -> Vec<usize> {
    let l = lanes(isa);
    let mut v = vec![
        0,
        1,
        l - 1,
        l,
        l + 1,
        2 * l + 3,
        4 * l - 1,
        4 * l + 5,
        7,
        33,
        100,
        257,
    ];
    v.sort_unstable();
    v.dedup();
    v
}

/// Deterministic pseudo-random numbers (64-bit LCG), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Uniform in `[lo, hi)`.
    fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

const DTYPES: [WDtype; 3] = [WDtype::F32, WDtype::F16, WDtype::Bf16];

/// `values` encoded as `dtype`, stored after `offset` junk bytes (so the slice starting at
/// `offset` has that misalignment).
fn encode(dtype: WDtype, values: &[f32], offset: usize) -> Vec<u8> {
    let mut out = vec![0xAB; offset];
    for &v in values {
        match dtype {
            WDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            WDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            WDtype::Bf16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            other => panic!(
                "encode: {} is a block type (tests/gguf.rs covers them)",
                other.name()
            ),
        }
    }
    out
}

/// `|got - want| <= tol * scale + 1e-30`, element by element, with a message naming the case.
fn assert_close(got: &[f32], want: &[f32], tol: f32, scale: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        if w.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
            continue;
        }
        let bound = tol * scale[i] + 1e-30;
        assert!(
            (g - w).abs() <= bound,
            "{what}[{i}]: got {g}, want {w} (diff {}, bound {bound})",
            (g - w).abs()
        );
    }
}

fn abs_scale(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs().max(f32::MIN_POSITIVE)).collect()
}

#[test]
fn isa_names_round_trip_and_unknown_names_are_rejected() {
    for isa in Isa::ALL {
        assert_eq!(Isa::parse(isa.name()), Some(isa));
        assert_eq!(Isa::parse(&isa.name().to_uppercase()), Some(isa));
    }
    assert_eq!(Isa::parse("sse2"), None);
    assert_eq!(Isa::parse(""), None);
    let err = isa_from_value("avx3").unwrap_err();
    assert!(err.contains("unknown `CKPT_ISA` value `avx3`"), "{err}");
    assert_eq!(isa_from_value(""), Ok(None));
    assert_eq!(isa_from_value("scalar"), Ok(Some(Isa::Scalar)));
    for isa in Isa::ALL {
        let r = isa_from_value(isa.name());
        if is_available(isa) {
            assert_eq!(r, Ok(Some(isa)));
        } else {
            let err = r.unwrap_err();
            assert!(err.contains("not supported by this cpu"), "{err}");
        }
    }
}

#[test]
fn detection_is_consistent() {
    let avail = available_isas();
    assert_eq!(avail.first(), Some(&Isa::Scalar));
    assert!(avail.contains(&best_isa()));
    assert!(avail.contains(&active_isa()));
    // An ISA the CPU lacks runs on the best available one instead of faulting.
    for isa in Isa::ALL {
        assert!(is_available(resolve(isa)));
    }
}

#[test]
fn to_f32_matches_scalar_exactly_at_odd_offsets() {
    let mut rng = Rng(1);
    for_each_available_isa(|isa| {
        for n in lengths(isa) {
            for dtype in DTYPES {
                for offset in [0, 1, 3] {
                    // Raw random bits cover subnormals, infinities and NaNs of every dtype.
                    let mut bytes = vec![0u8; offset];
                    bytes.extend((0..n * dtype.size()).map(|_| rng.next_u32() as u8));
                    let w = Weights::new(dtype, &bytes[offset..]);
                    let mut want = vec![f32::NAN; n];
                    let mut got = vec![f32::NAN; n];
                    scalar::to_f32(w, &mut want);
                    to_f32_with(isa, w, &mut got).unwrap();
                    for i in 0..n {
                        assert!(
                            got[i].to_bits() == want[i].to_bits()
                                || (got[i].is_nan() && want[i].is_nan()),
                            "{isa} {dtype:?} n={n} off={offset} [{i}]: {} vs {}",
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn dot_and_axpy_match_scalar() {
    let mut rng = Rng(2);
    for_each_available_isa(|isa| {
        for n in lengths(isa) {
            let a = rng.vec(n, -2.0, 2.0);
            let b = rng.vec(n, -2.0, 2.0);
            let scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            let want = scalar::dot(&a, &b);
            let got = dot(isa, &a, &b).unwrap();
            assert_close(&[got], &[want], 1e-5, &[scale], &format!("{isa} dot n={n}"));

            let alpha = rng.f32(-3.0, 3.0);
            let y0 = rng.vec(n, -2.0, 2.0);
            let mut want = y0.clone();
            scalar::axpy(alpha, &a, &mut want);
            let mut got = y0.clone();
            axpy(isa, alpha, &a, &mut got).unwrap();
            let scale: Vec<f32> = a
                .iter()
                .zip(&y0)
                .map(|(x, y)| (alpha * x).abs() + y.abs())
                .collect();
            assert_close(&got, &want, 1e-6, &scale, &format!("{isa} axpy n={n}"));
        }
    });
}

/// `attend` on every ISA (the scalar one too) against the composition it replaces on that ISA:
/// `dot` per key, the softcap, `softmax_inplace`, then `axpy` per key into a zeroed output. Bit
/// for bit, for head sizes around the lane counts, strides wider than the head, overflowing
/// scores (softcap) and NaN or infinite inputs.
#[test]
fn attend_is_dot_softmax_and_axpy_bit_for_bit() {
    let mut rng = Rng(17);
    for isa in available_isas() {
        let l = lanes(isa);
        for hd in [1, 3, l, 4 * l - 1, 4 * l, 4 * l + 3, 64, 80, 128] {
            for n in [0usize, 1, 2, 7, 33] {
                for (pad, softcap, poison) in [
                    (0, None, None),
                    (5, Some(30.0), None),
                    (3, None, Some(f32::NAN)),
                    (0, None, Some(f32::INFINITY)),
                    (1, Some(50.0), Some(f32::NEG_INFINITY)),
                ] {
                    let stride = hd + pad;
                    let q = rng.vec(hd, -3.0, 3.0);
                    let rows = n.saturating_sub(1) * stride + hd;
                    let mut keys = rng.vec(rows, -3.0, 3.0);
                    let mut values = rng.vec(rows, -2.0, 2.0);
                    if let (Some(x), true) = (poison, n > 1) {
                        keys[stride + hd / 2] = x; // key 1
                        values[(n - 1) * stride] = x; // the last value
                    }
                    let scale = 0.7f32;
                    let mut want_p = vec![0.0f32; n];
                    for (j, p) in want_p.iter_mut().enumerate() {
                        *p = dot(isa, &q, &keys[j * stride..][..hd]).unwrap() * scale;
                    }
                    if let Some(cap) = softcap {
                        want_p.iter_mut().for_each(|x| *x = (*x / cap).tanh() * cap);
                    }
                    softmax_inplace(isa, &mut want_p);
                    let mut want = vec![0.0f32; hd];
                    for (j, &p) in want_p.iter().enumerate() {
                        axpy(isa, p, &values[j * stride..][..hd], &mut want).unwrap();
                    }
                    let mut got_p = vec![f32::NAN; n];
                    let mut got = vec![f32::NAN; hd];
                    let what =
                        format!("{isa} hd={hd} n={n} stride={stride} {softcap:?} {poison:?}");
                    attend(
                        isa, &q, &keys, &values, stride, scale, softcap, &mut got_p, &mut got,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got_p), bits(&want_p), "{what}: probabilities");
                    assert_eq!(bits(&got), bits(&want), "{what}: output");
                }
            }
        }
    }
}

#[test]
fn rmsnorm_matches_scalar_for_every_dtype_and_offset() {
    let mut rng = Rng(3);
    for_each_available_isa(|isa| {
        for n in lengths(isa).into_iter().chain([300, 513]) {
            let x = rng.vec(n, -3.0, 3.0);
            let wv = rng.vec(n, 0.5, 1.5);
            for dtype in DTYPES {
                for (offset, norm_offset) in [(0, 0.0), (1, 1.0), (3, 0.0)] {
                    let bytes = encode(dtype, &wv, offset);
                    let w = Weights::new(dtype, &bytes[offset..]);
                    let mut want = vec![f32::NAN; n];
                    scalar::rmsnorm(&x, w, norm_offset, 1e-5, &mut want);
                    let mut got = vec![f32::NAN; n];
                    rmsnorm_offset(isa, &x, w, norm_offset, 1e-5, &mut got).unwrap();
                    let what = format!(
                        "{isa} rmsnorm {dtype:?} n={n} off={offset} norm offset {norm_offset}"
                    );
                    assert_close(&got, &want, 1e-5, &abs_scale(&want), &what);
                    if norm_offset == 0.0 {
                        let mut plain = vec![f32::NAN; n];
                        rmsnorm(isa, &x, w, 1e-5, &mut plain).unwrap();
                        assert_eq!(plain, got, "{what}: rmsnorm is rmsnorm_offset with 0");
                    }
                }
            }
        }
    });
}

#[test]
fn softmax_matches_scalar_with_masks() {
    let mut rng = Rng(4);
    for_each_available_isa(|isa| {
        for n in lengths(isa) {
            for masked in [false, true] {
                let mut x = rng.vec(n, -30.0, 30.0);
                if masked {
                    for (i, v) in x.iter_mut().enumerate() {
                        if i % 3 == 1 {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
                let mut want = x.clone();
                scalar::softmax_inplace(&mut want);
                let mut got = x.clone();
                softmax_inplace(isa, &mut got);
                let what = format!("{isa} softmax n={n} masked={masked}");
                assert_close(&got, &want, 2e-6, &vec![1.0; n], &what);
                assert_close(&got, &want, 1e-5, &abs_scale(&want), &what);
                for (i, v) in got.iter().enumerate() {
                    if x[i] == f32::NEG_INFINITY {
                        assert_eq!(*v, 0.0, "{what}: masked [{i}] must be exactly 0");
                    }
                }
            }
            let mut all_masked = vec![f32::NEG_INFINITY; n];
            softmax_inplace(isa, &mut all_masked);
            assert!(
                all_masked.iter().all(|v| *v == 0.0),
                "{isa} all-masked n={n}"
            );
        }
    });
}

/// Issue 16 item 3: a NaN score (first, middle or last lane, or the whole row) or a `+inf` one makes
/// the whole softmax row NaN on every path, scalar and SIMD; it never becomes a masked (zero) row.
#[test]
fn softmax_propagates_nan_and_inf() {
    let mut rng = Rng(40);
    for isa in available_isas() {
        for n in lengths(isa).into_iter().filter(|&n| n > 0) {
            let l = lanes(isa);
            let mut spots = vec![0, n / 2, n - 1, l.min(n - 1), (l + 1).min(n - 1)];
            spots.dedup();
            for &at in &spots {
                for poison in [f32::NAN, f32::INFINITY] {
                    for masked in [false, true] {
                        let mut x = rng.vec(n, -30.0, 30.0);
                        if masked {
                            for v in x.iter_mut().step_by(2) {
                                *v = f32::NEG_INFINITY;
                            }
                        }
                        x[at] = poison;
                        let mut want = x.clone();
                        scalar::softmax_inplace(&mut want);
                        let mut got = x.clone();
                        softmax_inplace(isa, &mut got);
                        let what = format!("{isa} n={n} {poison} at {at} masked={masked}");
                        assert!(want.iter().all(|v| v.is_nan()), "scalar {what}: {want:?}");
                        assert!(got.iter().all(|v| v.is_nan()), "{what}: {got:?}");
                    }
                }
            }
            let mut all_nan = vec![f32::NAN; n];
            softmax_inplace(isa, &mut all_nan);
            assert!(all_nan.iter().all(|v| v.is_nan()), "{isa} all-NaN n={n}");
            let mut nan_and_masks = vec![f32::NEG_INFINITY; n];
            nan_and_masks[n - 1] = f32::NAN;
            softmax_inplace(isa, &mut nan_and_masks);
            assert!(
                nan_and_masks.iter().all(|v| v.is_nan()),
                "{isa} NaN among masks n={n}"
            );
        }
    }
}

/// `got` has the non-finite values `want` has, at the same places (NaN where NaN, the same infinity
/// where infinite), and at least one.
fn assert_same_nonfinite(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        want.iter().any(|v| !v.is_finite()),
        "{what}: the poison vanished in the scalar spec: {want:?}"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan())
            || (w.is_infinite() && g == w)
            || (g.is_finite() && w.is_finite());
        assert!(same, "{what}[{i}]: got {g}, want {w}");
    }
}

/// Issue 16 item 3: NaN and infinities propagate through every kernel, scalar spec and SIMD alike,
/// from the first, a middle or the last lane: no op turns a poisoned input into a finite output
/// where the spec does not.
#[test]
fn every_kernel_propagates_nan_and_inf() {
    let mut rng = Rng(41);
    for isa in available_isas() {
        for n in lengths(isa).into_iter().filter(|&n| n > 1) {
            for at in [0, n / 2, n - 1] {
                for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let what = |op: &str| format!("{isa} {op} n={n} {poison} at {at}");
                    let mut x = rng.vec(n, -2.0, 2.0);
                    x[at] = poison;
                    // rmsnorm
                    let w = encode(WDtype::F32, &rng.vec(n, 0.5, 1.5), 0);
                    let w = Weights::new(WDtype::F32, &w);
                    let mut want = vec![0.0; n];
                    scalar::rmsnorm(&x, w, 1e-6, 0.0, &mut want);
                    let mut got = vec![0.0; n];
                    rmsnorm(isa, &x, w, 1e-6, &mut got).unwrap();
                    assert_same_nonfinite(&got, &want, &what("rmsnorm"));
                    // silu_mul
                    let up = rng.vec(n, 0.5, 2.0);
                    let mut want = x.clone();
                    scalar::silu_mul(&mut want, &up);
                    let mut got = x.clone();
                    silu_mul(isa, &mut got, &up).unwrap();
                    assert_same_nonfinite(&got, &want, &what("silu_mul"));
                    // axpy and dot
                    let mut want = rng.vec(n, -1.0, 1.0);
                    let mut got = want.clone();
                    scalar::axpy(0.5, &x, &mut want);
                    axpy(isa, 0.5, &x, &mut got).unwrap();
                    assert_same_nonfinite(&got, &want, &what("axpy"));
                    let y = rng.vec(n, 0.5, 1.0);
                    let (d, dw) = (dot(isa, &x, &y).unwrap(), scalar::dot(&x, &y));
                    assert_same_nonfinite(&[d], &[dw], &what("dot"));
                    // rope_half (even length)
                    let h = n / 2;
                    let mut want = x[..2 * h].to_vec();
                    if at < 2 * h {
                        let cos = rng.vec(h, 0.1, 1.0);
                        let sin = rng.vec(h, 0.1, 1.0);
                        let mut got = want.clone();
                        scalar::rope_half(&mut want, &cos, &sin);
                        rope_half(isa, &mut got, &cos, &sin).unwrap();
                        assert_same_nonfinite(&got, &want, &what("rope_half"));
                    }
                }
            }
        }
        // matmul: a poisoned activation poisons its token's row, a poisoned weight its column, on
        // the small-T path and the GEMM path (16+ tokens).
        let (k, n) = (37, 11);
        for t in [1, 3, 17, 33] {
            for dtype in DTYPES {
                for poison in [f32::NAN, f32::INFINITY] {
                    let what = format!("{isa} matmul t={t} {dtype:?} {poison}");
                    let mut x = rng.vec(t * k, -1.0, 1.0);
                    x[(t - 1) * k + k / 2] = poison;
                    let mut wv = rng.vec(n * k, 0.1, 1.0);
                    wv[3 * k + k - 1] = f32::NAN;
                    // An infinite weight against activations bf16 holds exactly (AMX splits an
                    // activation into bf16 parts; the zero ones must not turn `inf * x` into NaN).
                    wv[5 * k + 2] = f32::NEG_INFINITY;
                    for tok in 0..t {
                        x[tok * k + 2] = if tok % 2 == 0 { 0.5 } else { -1.25 };
                    }
                    let wb = encode(dtype, &wv, 0);
                    let w = Weights::new(dtype, &wb);
                    let mut want = vec![0.0; t * n];
                    scalar::matmul(&x, t, k, w, n, &mut want);
                    let mut got = vec![0.0; t * n];
                    matmul(isa, &x, t, k, w, n, &mut got).unwrap();
                    assert_same_nonfinite(&got, &want, &what);
                    for tok in 0..t {
                        assert!(got[tok * n + 3].is_nan(), "{what}: column 3, token {tok}");
                        if tok + 1 < t {
                            let sign = if tok % 2 == 0 { -1.0 } else { 1.0 };
                            assert_eq!(
                                got[tok * n + 5],
                                sign * f32::INFINITY,
                                "{what}: column 5, token {tok}"
                            );
                        }
                    }
                    assert!(
                        got[(t - 1) * n..].iter().all(|v| !v.is_finite()),
                        "{what}: last token's row"
                    );
                }
            }
        }
    }
}

#[test]
fn silu_mul_matches_scalar_including_large_inputs() {
    let mut rng = Rng(5);
    for_each_available_isa(|isa| {
        for n in lengths(isa) {
            for range in [4.0f32, 120.0] {
                let g = rng.vec(n, -range, range);
                let up = rng.vec(n, -2.0, 2.0);
                let mut want = g.clone();
                scalar::silu_mul(&mut want, &up);
                let mut got = g.clone();
                silu_mul(isa, &mut got, &up).unwrap();
                let what = format!("{isa} silu_mul n={n} range={range}");
                assert_close(&got, &want, 1e-5, &abs_scale(&want), &what);
            }
        }
    });
}

#[test]
fn rope_half_matches_scalar() {
    let mut rng = Rng(6);
    for_each_available_isa(|isa| {
        for half in lengths(isa) {
            let x = rng.vec(2 * half, -2.0, 2.0);
            let angles = rng.vec(half, -3.2, 3.2);
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            let mut want = x.clone();
            scalar::rope_half(&mut want, &cos, &sin);
            let mut got = x.clone();
            rope_half(isa, &mut got, &cos, &sin).unwrap();
            let scale: Vec<f32> = (0..2 * half)
                .map(|i| {
                    let j = i % half.max(1);
                    x[j].abs() + x[j + half].abs()
                })
                .collect();
            assert_close(
                &got,
                &want,
                1e-6,
                &scale,
                &format!("{isa} rope hd={}", 2 * half),
            );
        }
    });
}

/// Compare `matmul` on `isa` with the scalar spec for one shape, dtype and weight offset.
fn check_matmul(isa: Isa, t: usize, k: usize, n: usize, dtype: WDtype, offset: usize, seed: u64) {
    let mut rng = Rng(seed);
    let x = rng.vec(t * k, -1.0, 1.0);
    let wv = rng.vec(n * k, -1.0, 1.0);
    let bytes = encode(dtype, &wv, offset);
    let w = Weights::new(dtype, &bytes[offset..]);
    let mut want = vec![f32::NAN; t * n];
    scalar::matmul(&x, t, k, w, n, &mut want);
    let mut got = vec![f32::NAN; t * n];
    matmul(isa, &x, t, k, w, n, &mut got).unwrap();
    let what = format!("{isa} matmul t={t} k={k} n={n} {dtype:?} off={offset}");
    assert_close(&got, &want, 1e-5, &matmul_scale(&x, t, k, w, n), &what);
}

/// Per output element of `x * W^T`, the sum of the magnitudes of its products: the scale a
/// rounding error of the sum is measured against.
fn matmul_scale(x: &[f32], t: usize, k: usize, w: Weights<'_>, n: usize) -> Vec<f32> {
    let mut wf = vec![0.0f32; n * k];
    scalar::to_f32(w, &mut wf);
    (0..t * n)
        .map(|i| {
            let (tok, j) = (i / n, i % n);
            (0..k)
                .map(|kk| (x[tok * k + kk] * wf[j * k + kk]).abs())
                .sum()
        })
        .collect()
}

#[test]
fn matmul_matches_scalar_on_the_shape_grid() {
    for_each_available_isa(|isa| {
        let mut seed = 10;
        for t in [0, 1, 2, 3, 5, 8, 33] {
            for n in [1, 3, 17, 64] {
                for k in [1, 7, 8, 9, 64, 100] {
                    for dtype in DTYPES {
                        let offset = [1, 3][seed as usize % 2];
                        check_matmul(isa, t, k, n, dtype, offset, seed);
                        seed += 1;
                    }
                }
            }
        }
    });
}

#[test]
fn matmul_matches_scalar_across_blocks() {
    // Several K blocks (with a ragged last one), several rayon tasks, several token blocks; and
    // f32 / bf16 rows read whole, in one K block longer than `KC`, when x fits in L1 (1 token at
    // TinyLlama's 5632, 3 tokens at a width that leaves a ragged vector tail).
    for_each_available_isa(|isa| {
        let shapes = [
            (5, 600, 101),
            (131, 257, 50),
            (2, 1030, 7),
            (9, 2100, 97),
            (1, 5632, 13),
            (3, 2731, 5),
        ];
        for (t, k, n) in shapes {
            for dtype in DTYPES {
                check_matmul(isa, t, k, n, dtype, 1, 99);
            }
        }
    });
}

#[test]
fn matmul_matches_scalar_at_the_gemm_edges() {
    // The GEMM path (16 tokens and more): token counts between one and two panels and not a
    // multiple of the vector width, K not a multiple of its 256-wide K block or of the lanes, row
    // counts that leave a partial 6-row group and a partial 48-row task (58 = 48 + 6 + 4), every
    // weight dtype (f32 read in place, the others decoded one row group at a time).
    for_each_available_isa(|isa| {
        let shapes = [
            (16, 1, 1),
            (17, 300, 53),
            (24, 513, 97),
            (31, 9, 7),
            (32, 256, 6),
            (40, 255, 49),
            (47, 1, 13),
            (64, 770, 12),
            (20, 100, 23),
            (33, 300, 58),
        ];
        for (t, k, n) in shapes {
            for dtype in DTYPES {
                check_matmul(isa, t, k, n, dtype, 3, 5);
            }
        }
    });
}

#[test]
fn gemm_bits_do_not_depend_on_the_token_count() {
    // Each output is summed over K blocks in order and over `k` in order within a lane, whatever
    // else is in the call; so the first tokens of a long prompt get the bits they get alone.
    // This also pins the two ways the GEMM reads bf16 weights against each other: broadcast
    // straight from the bytes in small token blocks (on ISAs that do), decoded a row group at a
    // time in large ones; and the tile holding the tensor's first element, always decoded.
    for_each_available_isa(|isa| {
        for (k, n) in [(600, 101), (256, 6), (33, 49)] {
            for dtype in DTYPES {
                for offset in [0, 1] {
                    let mut rng = Rng(k as u64 * 31 + n as u64);
                    let x = rng.vec(160 * k, -1.0, 1.0);
                    let mut wv = rng.vec(n * k, -1.0, 1.0);
                    // Values whose bits a wrong widening would change, spread over the rows
                    // and K blocks (the last weight of the tensor too).
                    let special = [
                        f32::NAN,
                        -0.0,
                        f32::INFINITY,
                        f32::NEG_INFINITY,
                        1e-40,
                        -3e-39,
                    ];
                    for (i, &v) in special.iter().enumerate() {
                        wv[(i * 7919 + k - 1) % (n * k)] = v;
                    }
                    *wv.last_mut().unwrap() = f32::NAN;
                    let bytes = encode(dtype, &wv, offset);
                    let w = Weights::new(dtype, &bytes[offset..]);
                    let run = |t: usize| {
                        let mut out = vec![f32::NAN; t * n];
                        matmul(isa, &x[..t * k], t, k, w, n, &mut out).unwrap();
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    };
                    let long = run(160);
                    for t in [16, 24, 32, 40, 64, 65, 128] {
                        assert!(
                            run(t) == long[..t * n],
                            "{isa} {dtype:?} k={k} n={n} off={offset}: {t} tokens"
                        );
                    }
                }
            }
        }
    });
}

/// `splat_bf16_hi` on one ISA token: every lane holds the bf16 element of the word's high half,
/// widened exactly, whatever the low half (the previous element) holds.
fn check_splat_bf16_hi<S: simd::Simd>(s: S) {
    let patterns: [u16; 10] = [
        0x0000, 0x8000, 0x3F80, 0xBF80, 0x7F80, 0xFF80, 0x7FC1, 0xFFA5, 0x0001, 0x807F,
    ];
    for &hi in &patterns {
        for &lo in &[0x0000u16, 0xFFFF, 0x7FC0, 0x1234] {
            let bytes = [lo.to_le_bytes(), hi.to_le_bytes()].concat();
            let mut got = [0.0f32; 16];
            // SAFETY: `bytes` holds the 4 bytes read; `got` has room for 16 >= LANES floats.
            unsafe {
                let v = s.splat_bf16_hi(bytes.as_ptr(), s.bf16_hi_mask());
                s.store(got.as_mut_ptr(), v);
            }
            let want = u32::from(hi) << 16;
            for (lane, g) in got.iter().take(S::LANES).enumerate() {
                assert_eq!(g.to_bits(), want, "hi {hi:#06x} lo {lo:#06x} lane {lane}");
            }
        }
    }
}

/// Call a function generic over `simd::Simd` with the token of every SIMD ISA this CPU has.
macro_rules! on_every_simd_token {
    ($f:ident) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(s) = x86::Avx2::new() {
                $f(s);
            }
            if let Some(s) = x86::Avx512::new() {
                $f(s);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(s) = neon::Neon::new() {
            $f(s);
        }
    }};
}

#[test]
fn splat_bf16_hi_widens_exactly_on_every_isa() {
    // Signed zeros, infinities, NaNs with payloads and subnormals keep their bits; the
    // neighbour in the low half never leaks in.
    on_every_simd_token!(check_splat_bf16_hi);
}

fn check_transpose8<S: simd::Simd>(s: S) {
    // Every element a distinct bit pattern (NaN payloads and signed zeros among them), read
    // from rows `stride` apart and written to 8 separate rows: each lands exactly once, intact.
    for stride in [8usize, 9, 13, 64] {
        let src: Vec<f32> = (0..8 * stride)
            .map(|i| f32::from_bits(0x7FC0_0000 ^ (i as u32).wrapping_mul(0x9E37_79B1)))
            .collect();
        let mut out = vec![f32::from_bits(0xDEAD_BEEF); 8 * 10];
        let base = out.as_mut_ptr();
        let dst: [*mut f32; 8] = std::array::from_fn(|c| base.wrapping_add(c * 10 + 1));
        // SAFETY: 8 rows of 8 readable floats `stride >= 8` apart; each destination is 8
        // floats of its own 10-float row of `out`.
        unsafe { s.transpose8(src.as_ptr(), stride, dst) };
        for c in 0..8 {
            let row = &out[c * 10..c * 10 + 10];
            assert_eq!(
                row[0].to_bits(),
                0xDEAD_BEEF,
                "stride {stride}: wrote before row {c}"
            );
            assert_eq!(
                row[9].to_bits(),
                0xDEAD_BEEF,
                "stride {stride}: wrote after row {c}"
            );
            for r in 0..8 {
                assert_eq!(
                    row[1 + r].to_bits(),
                    src[r * stride + c].to_bits(),
                    "stride {stride}: column {c} of row {r}"
                );
            }
        }
    }
}

#[test]
fn transpose8_moves_every_bit_on_every_isa() {
    // NEON runs the trait's element-by-element default; AVX2 and AVX-512 the shuffles.
    on_every_simd_token!(check_transpose8);
}

#[test]
fn small_t_matmul_reads_ragged_rows_in_place() {
    // Fewer than 16 tokens: f32 and bf16 rows are read in place, so a K block that ends mid-vector
    // (K not a multiple of 8 or 16, also past the 1024-wide K block) takes the zero-padded tail,
    // at every misalignment of the tensor bytes.
    for_each_available_isa(|isa| {
        for (t, k, n) in [
            (1, 1023, 5),
            (3, 1025, 4),
            (15, 17, 3),
            (4, 2063, 7),
            (9, 15, 8),
        ] {
            for dtype in DTYPES {
                for offset in 0..4 {
                    check_matmul(isa, t, k, n, dtype, offset, 11);
                }
            }
        }
    });
}

#[test]
fn scalar_matmul_is_the_naive_sum() {
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
    let wv = [1.0, 0.0, -1.0, 0.5, 0.5, 0.5]; // [2, 3]
    let bytes = encode(WDtype::F32, &wv, 0);
    let mut out = [f32::NAN; 4];
    matmul(
        Isa::Scalar,
        &x,
        2,
        3,
        Weights::new(WDtype::F32, &bytes),
        2,
        &mut out,
    )
    .unwrap();
    assert_eq!(out, [-2.0, 3.0, -2.0, 7.5]);
}

#[test]
fn length_mismatches_are_errors_naming_both_lengths() {
    let bytes = vec![0u8; 4 * 6];
    let w = Weights::new(WDtype::F32, &bytes);
    for isa in available_isas() {
        let mut out = vec![0.0; 4];
        let e = matmul(isa, &[0.0; 5], 2, 3, w, 2, &mut out).unwrap_err();
        assert!(e.message().contains("length 5, expected 6"), "{e}");
        let e = matmul(isa, &[0.0; 6], 2, 3, w, 3, &mut out).unwrap_err();
        assert!(e.message().contains("24 bytes, expected 36"), "{e}");
        let e = matmul(isa, &[0.0; 6], 2, 3, w, 2, &mut out[..3]).unwrap_err();
        assert!(
            e.message().contains("`out` has length 3, expected 4"),
            "{e}"
        );
        let e = matmul(isa, &[], usize::MAX, 2, w, 2, &mut out).unwrap_err();
        assert!(e.message().contains("overflows"), "{e}");
        assert!(dot(isa, &[1.0; 3], &[1.0; 2]).is_err());
        assert!(axpy(isa, 1.0, &[1.0; 3], &mut [1.0; 2]).is_err());
        // 3 keys of 4, 6 apart, need 16 floats of keys and of values; `out` is one head.
        let (q, kv) = ([1.0f32; 4], [1.0f32; 16]);
        let mut p = [0.0f32; 3];
        assert!(attend(isa, &q, &kv, &kv, 6, 1.0, None, &mut p, &mut [0.0; 4]).is_ok());
        let e = attend(isa, &q, &kv[..15], &kv, 6, 1.0, None, &mut p, &mut [0.0; 4]).unwrap_err();
        assert!(
            e.message()
                .contains("`keys` has length 15, expected at least 16"),
            "{e}"
        );
        let e = attend(isa, &q, &kv, &kv[..15], 6, 1.0, None, &mut p, &mut [0.0; 4]).unwrap_err();
        assert!(e.message().contains("`values` has length 15"), "{e}");
        let e = attend(isa, &q, &kv, &kv, 6, 1.0, None, &mut p, &mut [0.0; 3]).unwrap_err();
        assert!(
            e.message().contains("`out` has length 3, expected 4"),
            "{e}"
        );
        let e = attend(
            isa,
            &q,
            &kv,
            &kv,
            usize::MAX,
            1.0,
            None,
            &mut p,
            &mut [0.0; 4],
        );
        assert!(e.unwrap_err().message().contains("overflows"));
        assert!(silu_mul(isa, &mut [1.0; 3], &[1.0; 2]).is_err());
        assert!(rope_half(isa, &mut [1.0; 3], &[1.0], &[1.0]).is_err());
        assert!(rope_half(isa, &mut [1.0; 4], &[1.0], &[1.0; 2]).is_err());
        let e = rmsnorm(isa, &[1.0; 5], w, 1e-5, &mut [0.0; 5]).unwrap_err();
        assert!(e.message().contains("expected 20"), "{e}");
        assert!(rmsnorm(isa, &[1.0; 6], w, 1e-5, &mut [0.0; 5]).is_err());
        assert!(to_f32_with(isa, w, &mut [0.0; 5]).is_err());
        assert!(gelu_tanh_mul(isa, &mut [1.0; 3], &[1.0; 2]).is_err());
        assert!(gelu_mul(isa, &mut [1.0; 3], &[1.0; 2]).is_err());
        assert!(rope_interleaved(isa, &mut [1.0; 3], &[1.0], &[1.0]).is_err());
        assert!(rope_interleaved(isa, &mut [1.0; 4], &[1.0; 2], &[1.0]).is_err());
        let e = layernorm(isa, &[1.0; 5], w, None, 0.0, 1e-5, &mut [0.0; 5]).unwrap_err();
        assert!(e.message().contains("expected 20"), "{e}");
        let bias = Weights::new(WDtype::F32, &bytes[..20]);
        assert!(layernorm(isa, &[1.0; 6], w, Some(bias), 0.0, 1e-5, &mut [0.0; 6]).is_err());
        assert!(layernorm(isa, &[1.0; 6], w, None, 0.0, 1e-5, &mut [0.0; 5]).is_err());
    }
    let odd = Weights::new(WDtype::Bf16, &bytes[..5]);
    assert!(to_f32(odd, &mut [0.0; 2]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_cafe),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matmul_matches_scalar_on_random_shapes(
        t in 0usize..40,
        k in 0usize..300,
        n in 0usize..70,
        dtype in prop::sample::select(DTYPES.to_vec()),
        offset in 0usize..4,
        seed in any::<u64>(),
    ) {
        for_each_available_isa(|isa| check_matmul(isa, t, k, n, dtype, offset, seed));
    }
}

#[test]
fn matmul_bits_do_not_depend_on_the_thread_count() {
    // Several rayon tasks, K blocks and token blocks, on both kernels (few and many tokens).
    for_each_available_isa(|isa| {
        for (t, k, n) in [(5, 600, 101), (131, 700, 150)] {
            let mut rng = Rng(7);
            let x = rng.vec(t * k, -1.0, 1.0);
            let bytes = encode(WDtype::Bf16, &rng.vec(n * k, -1.0, 1.0), 1);
            let w = Weights::new(WDtype::Bf16, &bytes[1..]);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![f32::NAN; t * n];
                pool.install(|| matmul(isa, &x, t, k, w, n, &mut out).unwrap());
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(1), run(3), "{isa} t={t} k={k} n={n}");
        }
    });
}

/// `(x, gelu(x), gelu_tanh(x))` as torch 2.15 computes them in f32
/// (`torch.nn.functional.gelu(x)` and `gelu(x, approximate="tanh")` on a float32 tensor), with
/// the digits torch printed.
#[allow(clippy::excessive_precision, clippy::approx_constant)]
const TORCH_GELU: [(f32, f32, f32); 20] = [
    (-10.0, 0.0, -0.0),
    (-5.5, -1.639_127_7e-7, -0.0),
    (-3.0, -0.004_049_867_4, -0.003_637_433),
    (-2.0, -0.045_500_1, -0.045_402_288),
    (-1.0, -0.158_655_29, -0.158_807_99),
    (-0.5, -0.154_268_79, -0.154_286),
    (-0.125, -0.056_282_72, -0.056_282_8),
    (-0.001, -0.000_499_601_13, -0.000_499_601_07),
    (0.0, 0.0, 0.0),
    (0.001, 0.000_500_398_9, 0.000_500_398_98),
    (0.0625, 0.032_807_36, 0.032_807_35),
    (0.5, 0.345_731_2, 0.345_714),
    (0.7071, 0.537_571_25, 0.537_514_1),
    (1.0, 0.841_344_7, 0.841_192),
    (1.5, 1.399_789_1, 1.399_571_5),
    (2.0, 1.954_5, 1.954_597_7),
    (3.0, 2.995_950_2, 2.996_362_7),
    (4.25, 4.249_954_7, 4.249_98),
    (6.0, 6.0, 6.0),
    (12.0, 12.0, 12.0),
];

/// `|got - want| <= ulps` f32 ulps of `want` (an exact match for zeros and infinities).
fn assert_ulps(got: f32, want: f32, ulps: f32, what: &str) {
    let ulp = (want.abs() * f32::EPSILON).max(f32::MIN_POSITIVE);
    assert!(
        (got - want).abs() <= ulps * ulp,
        "{what}: got {got:e}, want {want:e} ({} ulp)",
        (got - want).abs() / ulp
    );
}

#[test]
fn gelu_matches_torch_reference_values() {
    // `1 + erf` and `1 + tanh` cancel for x < 0: an ulp of 1 in the erf/tanh value (torch's
    // Sleef functions are within 1 ulp, not correctly rounded) becomes `|x| * 2^-24` in the
    // output, so the bound is that plus a few ulps of the result.
    for (x, erf_form, tanh_form) in TORCH_GELU {
        let bound = |want: f32| x.abs() * f32::EPSILON + 4.0 * want.abs() * f32::EPSILON;
        let got = scalar::gelu(x);
        assert!(
            (got - erf_form).abs() <= bound(erf_form),
            "gelu({x}): {got:e} vs {erf_form:e}"
        );
        let got = scalar::gelu_tanh(x);
        assert!(
            (got - tanh_form).abs() <= bound(tanh_form),
            "gelu_tanh({x}): {got:e} vs {tanh_form:e}"
        );
        for isa in available_isas() {
            let mut g = [x];
            gelu_mul(isa, &mut g, &[1.0]).unwrap();
            assert_eq!(g[0].to_bits(), scalar::gelu(x).to_bits(), "{isa} gelu({x})");
        }
    }
    assert!(scalar::gelu(f32::NAN).is_nan() && scalar::gelu_tanh(f32::NAN).is_nan());
}

#[test]
fn erf_is_the_rounded_exact_value() {
    // Python's math.erf (correctly rounded f64) of each argument, rounded to f32.
    for (x, want) in [
        (0.1f32, 0.112_462_916_018_284_9f64),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.0, 0.999_977_909_503_001_4),
        (3.9, 0.999_999_965_207_751_4),
        (4.5, 0.999_999_999_803_383_9),
        (6.0, 1.0),
    ] {
        // 3.9f32 is not 3.9: compare with erf at the f32 argument via the derivative.
        let dx = f64::from(x) - format!("{x}").parse::<f64>().unwrap();
        let slope = std::f64::consts::FRAC_2_SQRT_PI * (-f64::from(x).powi(2)).exp();
        let exact = (want + slope * dx) as f32;
        assert_eq!(scalar::erf_f32(x), exact, "erf({x})");
        assert_eq!(scalar::erf_f32(-x), -exact, "erf(-{x})");
    }
    assert_eq!(scalar::erf_f32(0.0), 0.0);
    assert!(scalar::erf_f32(f32::NAN).is_nan());
    assert_eq!(scalar::erf_f32(f32::INFINITY), 1.0);
    assert_eq!(scalar::erf_f32(f32::NEG_INFINITY), -1.0);
}

#[test]
fn gelu_tanh_mul_matches_scalar_including_large_inputs() {
    let mut rng = Rng(8);
    for_each_available_isa(|isa| {
        for n in lengths(isa) {
            for range in [4.0f32, 120.0] {
                let g = rng.vec(n, -range, range);
                let up = rng.vec(n, -2.0, 2.0);
                let mut want = g.clone();
                scalar::gelu_tanh_mul(&mut want, &up);
                let mut got = g.clone();
                gelu_tanh_mul(isa, &mut got, &up).unwrap();
                // relative to |x * up| and an absolute floor: `1 + tanh` cancels for x < 0
                let scale: Vec<f32> = g.iter().zip(&up).map(|(x, u)| (x * u).abs()).collect();
                let what = format!("{isa} gelu_tanh_mul n={n} range={range}");
                assert_close(&got, &want, 1e-6, &scale, &what);
            }
        }
        let mut nan = [f32::NAN; 9];
        gelu_tanh_mul(isa, &mut nan, &[1.0; 9]).unwrap();
        assert!(nan.iter().all(|v| v.is_nan()), "{isa}: NaN in, NaN out");
    });
}

#[test]
fn layernorm_matches_torch_reference_values() {
    // torch.nn.functional.layer_norm([1, 2, 3, 4, -1, 0.25, -2.5], (7,), w, b, 1e-5) in f32.
    let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.25, -2.5];
    let w = encode(WDtype::F32, &[0.5, 1.0, 1.5, 2.0, 1.0, -0.75, 0.2], 1);
    let b = encode(WDtype::F32, &[0.1, -0.2, 0.3, 0.0, 0.05, 1.0, -1.0], 0);
    let (w, b) = (
        Weights::new(WDtype::F32, &w[1..]),
        Weights::new(WDtype::F32, &b),
    );
    let with_bias = [
        0.108_512_57,
        0.293_728_3,
        1.755_647_2,
        2.894_269_2,
        -0.886_381_1,
        1.255_376_7,
        -1.330_287_2,
    ];
    let without = [
        0.008_512_566,
        0.493_728_3,
        1.455_647_2,
        2.894_269_2,
        -0.936_381_1,
        0.255_376_67,
        -0.330_287_2,
    ];
    // `x - mean` cancels (x[0] = 1, mean = 0.964): both sides carry the f32 rounding of the
    // mean, so the bound is absolute, a few ulps of the O(1) inputs.
    for isa in available_isas() {
        let mut out = [f32::NAN; 7];
        layernorm(isa, &x, w, None, 0.0, 1e-5, &mut out).unwrap();
        assert_close(&out, &without, 1e-6, &[1.0; 7], &format!("{isa} layernorm"));
        let mut out = [f32::NAN; 7];
        layernorm(isa, &x, w, Some(b), 0.0, 1e-5, &mut out).unwrap();
        assert_close(
            &out,
            &with_bias,
            1e-6,
            &[1.0; 7],
            &format!("{isa} layernorm+bias"),
        );
        // offset 1 multiplies by 1 + w
        let mut plus = [f32::NAN; 7];
        layernorm(isa, &x, w, None, 1.0, 1e-5, &mut plus).unwrap();
        let wf = [0.5f32, 1.0, 1.5, 2.0, 1.0, -0.75, 0.2];
        for i in 0..7 {
            let normalised = without[i] / wf[i];
            assert!(
                (plus[i] - normalised * (1.0 + wf[i])).abs() <= 2e-6,
                "{isa} [{i}]"
            );
        }
    }
}

#[test]
fn gemma_rmsnorm_matches_torch_reference_values() {
    // x * rsqrt(mean(x^2) + 1e-6) * (1 + w) in f32 (GemmaRMSNorm), computed by torch 2.15.
    let x = [1.0, 2.0, 3.0, 4.0, -1.0, 0.25, -2.5];
    let w = encode(WDtype::F32, &[0.5, 1.0, 1.5, 2.0, 1.0, -0.75, 0.2], 0);
    let want = [
        0.649_700_3,
        1.732_534_2,
        3.248_501_3,
        5.197_602_3,
        -0.866_267_1,
        0.027_070_846,
        -1.299_400_7,
    ];
    for isa in available_isas() {
        let mut out = [f32::NAN; 7];
        rmsnorm_offset(isa, &x, Weights::new(WDtype::F32, &w), 1.0, 1e-6, &mut out).unwrap();
        for i in 0..7 {
            assert_ulps(out[i], want[i], 4.0, &format!("{isa} gemma rmsnorm [{i}]"));
        }
    }
}

#[test]
fn rope_interleaved_is_rope_half_on_permuted_pairs() {
    let mut rng = Rng(9);
    for half in [1usize, 3, 8, 33] {
        let x = rng.vec(2 * half, -2.0, 2.0);
        let angles = rng.vec(half, -3.2, 3.2);
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        // (x[2i], x[2i+1]) is the pair (y[i], y[i + half]) of the rotate_half layout
        let mut y: Vec<f32> = (0..2 * half)
            .map(|j| {
                if j < half {
                    x[2 * j]
                } else {
                    x[2 * (j - half) + 1]
                }
            })
            .collect();
        for isa in available_isas() {
            let mut got = x.clone();
            rope_interleaved(isa, &mut got, &cos, &sin).unwrap();
            let mut want = y.clone();
            rope_half(Isa::Scalar, &mut want, &cos, &sin).unwrap();
            for i in 0..half {
                assert_eq!(
                    got[2 * i].to_bits(),
                    want[i].to_bits(),
                    "{isa} hd={} [{i}]",
                    2 * half
                );
                assert_eq!(got[2 * i + 1].to_bits(), want[i + half].to_bits());
            }
        }
        y.clear();
    }
}

/// The AMX path (bf16 weights, 16 or more tokens) against the scalar spec on the shapes that reach
/// its edges: `K` not a multiple of 32 (zero-padded rows), row counts not a multiple of 32 or 16
/// (the padded last task), token counts that leave a tile or a pair of tiles partly empty, odd
/// byte offsets of the weights (unaligned tile loads), and `K` of real models.
#[test]
fn amx_matmul_matches_scalar_on_its_edges() {
    if !is_available(Isa::Amx) {
        return;
    }
    let mut seed = 900;
    for (t, k, n) in [
        (16, 32, 32),
        (17, 33, 17),
        (31, 64, 48),
        (32, 2048, 64),
        (33, 100, 33),
        (47, 31, 5),
        (64, 96, 1),
        (128, 256, 96),
        (20, 5632, 40),
    ] {
        for offset in [0, 1, 3] {
            check_matmul(Isa::Amx, t, k, n, WDtype::Bf16, offset, seed);
            seed += 1;
        }
    }
}

/// An activation that bf16 does not hold goes through the AMX path as three exact parts: a
/// product with one weight of 1 returns the activation bit for bit (one bf16 product would keep
/// only its top 8 significant bits).
#[test]
fn amx_matmul_keeps_every_bit_of_the_activations() {
    if !is_available(Isa::Amx) {
        return;
    }
    let (t, k, n) = (32, 64, 32);
    let mut rng = Rng(77);
    let x = rng.vec(t * k, -3.0, 3.0);
    // Row j of W is the unit vector e_(j mod k): out[tok][j] = x[tok][j mod k], exactly.
    let mut wv = vec![0.0f32; n * k];
    for j in 0..n {
        wv[j * k + (j * 5) % k] = 1.0;
    }
    let wb = encode(WDtype::Bf16, &wv, 0);
    let w = Weights::new(WDtype::Bf16, &wb);
    let mut got = vec![f32::NAN; t * n];
    matmul(Isa::Amx, &x, t, k, w, n, &mut got).unwrap();
    for tok in 0..t {
        for j in 0..n {
            let want = x[tok * k + (j * 5) % k];
            assert_eq!(
                got[tok * n + j].to_bits(),
                want.to_bits(),
                "token {tok} row {j}"
            );
        }
    }
}

/// Both schedules of the AMX product give the same bits: `K` in blocks with every task's
/// accumulators in one buffer (what 33 or more tokens get while that buffer stays under 64 MiB)
/// and one pass over `K` with a task's accumulators per thread (larger outputs), and both match
/// the scalar spec.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_matmul_schedules_agree() {
    let Some(tok) = amx::Amx::new() else {
        return;
    };
    let mut rng = Rng(78);
    for (t, k, n) in [(33, 1100, 40), (64, 2048, 64), (128, 600, 33)] {
        let x = rng.vec(t * k, -1.0, 1.0);
        let wb = encode(WDtype::Bf16, &rng.vec(n * k, -1.0, 1.0), 1);
        let w = Weights::new(WDtype::Bf16, &wb[1..]);
        let mut blocked = vec![f32::NAN; t * n];
        let nan = amx::matmul(tok, &x, t, k, w, n, &mut blocked, usize::MAX);
        let mut one_pass = vec![f32::NAN; t * n];
        let nan_too = amx::matmul(tok, &x, t, k, w, n, &mut one_pass, 0);
        // Finite inputs: every output written (the NaN prefill gone), and none reported NaN.
        assert!(!nan && !nan_too, "t={t} k={k} n={n}: a NaN reported");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&blocked), bits(&one_pass), "t={t} k={k} n={n}");
        let mut want = vec![f32::NAN; t * n];
        scalar::matmul(&x, t, k, w, n, &mut want);
        let scale = matmul_scale(&x, t, k, w, n);
        assert_close(
            &one_pass,
            &want,
            1e-5,
            &scale,
            &format!("amx t={t} k={k} n={n}"),
        );
    }
}
