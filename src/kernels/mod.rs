//! CPU compute kernels for the reference forward pass: run-time ISA selection and the safe public
//! entry points (`matmul`, `rmsnorm`, `rmsnorm_offset`, `layernorm`, `softmax_inplace`,
//! `silu_mul`, `gelu_tanh_mul`, `gelu_mul`, `rope_half`, `rope_interleaved`, `dot`, `axpy`,
//! `to_f32`).
//!
//! Layout of the module:
//! - `scalar.rs` is the specification: plain loops, sequential sums. Every SIMD path is tested
//!   against it (`tests.rs`).
//! - `simd.rs` is a small vector vocabulary (trait `Simd`) and the kernel bodies written once over it,
//!   all `#[inline(always)]`.
//! - `x86.rs` (AVX2+FMA+F16C, AVX-512F) and `neon.rs` (aarch64) implement the vocabulary and hold the
//!   thin `#[target_feature]` wrappers, reachable only with a token that proves the CPU has the
//!   features (the dispatch scheme of the `memchr` crate).
//! - `amx.rs` is the matrix product of bf16 weights and 16+ tokens on Intel AMX tiles ([`Isa::Amx`]),
//!   the activations split exactly into three bf16 parts; tested against the scalar spec like the rest.
//! - `matmul.rs` is the blocked, multi-threaded matrix product: below 16 tokens a dot-product
//!   kernel that widens f32 and bf16 weights in registers straight from the tensor, from 16 tokens
//!   on the GEMM microkernel of `gemm.rs`, where bf16 / f16 rows are decoded a 6-row group at a
//!   time into L1 and reused for every token of the block (on a shared 2-core Zen 3 with AVX2,
//!   best CPU-time figures of `cargo bench --bench kernels`: about 71-77% of the FMA peak for 32
//!   tokens and 81-89% for 128, f32 and bf16 alike; bf16 is ahead below 16 tokens).
//!
//! The ISA is detected once and cached; `CKPT_ISA=scalar|avx2|avx512|amx|neon` forces one. Every kernel
//! takes the ISA explicitly (so tests and benchmarks can compare them); an ISA this CPU lacks is
//! never executed: the call runs on the fastest available one instead.
//!
//! Lengths are checked by every entry point and reported as a [`KernelError`]; the kernels never
//! panic on a length that came from a file.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
mod gemm;
mod matmul;
mod quant;
mod scalar;
mod simd;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod neon;

use std::fmt;
use std::sync::OnceLock;

/// An instruction-set level a kernel can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD: the specification every other path is tested against.
    Scalar,
    /// x86-64 AVX2 together with FMA and F16C (all three are required).
    Avx2,
    /// x86-64 AVX-512F (plus the AVX2, FMA and F16C features every AVX-512 CPU has).
    Avx512,
    /// x86-64 AVX-512F with Intel AMX-TILE and AMX-BF16 granted by the OS: bf16 weights in products
    /// of 16 or more tokens multiply on AMX tiles (the activations split exactly into three bf16
    /// parts, see `amx.rs`); every other kernel is AVX-512's.
    Amx,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every ISA, from slowest to fastest within an architecture.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx, Isa::Neon];

    /// The lower-case name used by `CKPT_ISA` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
        }
    }

    /// Parse a name as printed by [`Isa::name`] (ASCII case-insensitive, surrounding space ignored).
    pub fn parse(s: &str) -> Option<Isa> {
        let s = s.trim();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What this CPU supports, detected once.
fn detected() -> &'static [Isa] {
    static DETECTED: OnceLock<Vec<Isa>> = OnceLock::new();
    DETECTED.get_or_init(|| {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::Avx2::new().is_some() {
                v.push(Isa::Avx2);
            }
            if x86::Avx512::new().is_some() {
                v.push(Isa::Avx512);
            }
            if amx::Amx::new().is_some() {
                v.push(Isa::Amx);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if neon::Neon::new().is_some() {
                v.push(Isa::Neon);
            }
        }
        v
    })
}

/// The ISAs this CPU supports, slowest first; [`Isa::Scalar`] is always present.
pub fn available_isas() -> Vec<Isa> {
    detected().to_vec()
}

/// Whether this CPU supports `isa`.
pub fn is_available(isa: Isa) -> bool {
    detected().contains(&isa)
}

/// The fastest ISA this CPU supports.
pub fn best_isa() -> Isa {
    // `detected()` always holds at least `Scalar` and is ordered slowest first.
    detected().last().copied().unwrap_or(Isa::Scalar)
}

/// The ISA the kernels use by default, chosen once per process.
///
/// It is the fastest ISA this CPU supports, unless the environment variable `CKPT_ISA` names one
/// (`scalar`, `avx2`, `avx512`, `amx`, `neon`). A `CKPT_ISA` value that is unknown or names an ISA this CPU
/// lacks is ignored here and the fastest available ISA is used; the CLI calls [`isa_from_env`]
/// first so that such a value is refused loudly instead.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| match isa_from_env() {
        Ok(Some(isa)) => isa,
        _ => best_isa(),
    })
}

/// The ISA forced by the `CKPT_ISA` environment variable: `Ok(None)` when it is unset or empty, an
/// error message when it names an unknown ISA or one this CPU does not support.
pub fn isa_from_env() -> Result<Option<Isa>, String> {
    let value = std::env::var_os("CKPT_ISA");
    match value {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Some(s) => isa_from_value(s),
            None => Err("`CKPT_ISA` is not valid UTF-8".to_string()),
        },
    }
}

/// The parsing half of [`isa_from_env`], separate so it can be tested without touching the
/// process environment.
fn isa_from_value(s: &str) -> Result<Option<Isa>, String> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let names = || {
        available_isas()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match Isa::parse(s) {
        None => Err(format!(
            "unknown `CKPT_ISA` value `{}`: expected one of scalar, avx2, avx512, amx, neon",
            s.escape_debug()
        )),
        Some(isa) if !is_available(isa) => Err(format!(
            "`CKPT_ISA={}` is not supported by this cpu (available: {})",
            isa.name(),
            names()
        )),
        Some(isa) => Ok(Some(isa)),
    }
}

/// An ISA this CPU supports: `isa` itself, or the fastest available one when the CPU lacks it.
fn resolve(isa: Isa) -> Isa {
    if is_available(isa) { isa } else { best_isa() }
}

/// The element type of a weight tensor as stored in the checkpoint: floats, or ggml's block
/// types (dequantized per tile by `quant.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    Bf16,
    /// ggml Q8_0 (32-element blocks of 34 bytes).
    Q8_0,
    /// ggml Q4_0 (32 / 18).
    Q4_0,
    /// ggml Q4_1 (32 / 20).
    Q4_1,
    /// ggml Q5_0 (32 / 22).
    Q5_0,
    /// ggml Q5_1 (32 / 24).
    Q5_1,
    /// ggml Q2_K (256 / 84).
    Q2K,
    /// ggml Q3_K (256 / 110).
    Q3K,
    /// ggml Q4_K (256 / 144).
    Q4K,
    /// ggml Q5_K (256 / 176).
    Q5K,
    /// ggml Q6_K (256 / 210).
    Q6K,
}

impl WDtype {
    /// Every weight type.
    pub const ALL: [WDtype; 13] = [
        WDtype::F32,
        WDtype::F16,
        WDtype::Bf16,
        WDtype::Q8_0,
        WDtype::Q4_0,
        WDtype::Q4_1,
        WDtype::Q5_0,
        WDtype::Q5_1,
        WDtype::Q2K,
        WDtype::Q3K,
        WDtype::Q4K,
        WDtype::Q5K,
        WDtype::Q6K,
    ];

    /// `(elements, bytes)` of one block; `(1, size)` for the float types.
    pub fn block(self) -> (usize, usize) {
        match self {
            WDtype::F32 => (1, 4),
            WDtype::F16 | WDtype::Bf16 => (1, 2),
            WDtype::Q8_0 => (32, 34),
            WDtype::Q4_0 => (32, 18),
            WDtype::Q4_1 => (32, 20),
            WDtype::Q5_0 => (32, 22),
            WDtype::Q5_1 => (32, 24),
            WDtype::Q2K => (256, 84),
            WDtype::Q3K => (256, 110),
            WDtype::Q4K => (256, 144),
            WDtype::Q5K => (256, 176),
            WDtype::Q6K => (256, 210),
        }
    }

    /// The kernel type of a stored dtype, `None` for dtypes the kernels do not read.
    pub fn from_dtype(d: crate::checkpoint::Dtype) -> Option<WDtype> {
        use crate::checkpoint::Dtype as D;
        Some(match d {
            D::F32 => WDtype::F32,
            D::F16 => WDtype::F16,
            D::BF16 => WDtype::Bf16,
            D::Q8_0 => WDtype::Q8_0,
            D::Q4_0 => WDtype::Q4_0,
            D::Q4_1 => WDtype::Q4_1,
            D::Q5_0 => WDtype::Q5_0,
            D::Q5_1 => WDtype::Q5_1,
            D::Q2_K => WDtype::Q2K,
            D::Q3_K => WDtype::Q3K,
            D::Q4_K => WDtype::Q4K,
            D::Q5_K => WDtype::Q5K,
            D::Q6_K => WDtype::Q6K,
            _ => return None,
        })
    }

    /// Whether the type is a ggml block type.
    pub fn is_block(self) -> bool {
        self.block().0 > 1
    }

    /// Size of one element in bytes (float types; for block types, the block's bytes, see
    /// [`WDtype::block`]).
    pub fn size(self) -> usize {
        self.block().1
    }

    /// Bytes of `elements` elements (rounded down to whole blocks for block types).
    pub fn bytes_of(self, elements: usize) -> usize {
        let (e, b) = self.block();
        elements / e * b
    }

    /// The dtype's name (`F32`, `F16`, `BF16`, `Q8_0`, `Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            WDtype::F32 => "F32",
            WDtype::F16 => "F16",
            WDtype::Bf16 => "BF16",
            WDtype::Q8_0 => "Q8_0",
            WDtype::Q4_0 => "Q4_0",
            WDtype::Q4_1 => "Q4_1",
            WDtype::Q5_0 => "Q5_0",
            WDtype::Q5_1 => "Q5_1",
            WDtype::Q2K => "Q2_K",
            WDtype::Q3K => "Q3_K",
            WDtype::Q4K => "Q4_K",
            WDtype::Q5K => "Q5_K",
            WDtype::Q6K => "Q6_K",
        }
    }
}

/// A weight tensor as raw little-endian bytes straight from the file (typically an mmap).
///
/// The bytes may start at any address (an odd offset is fine): kernels only ever use unaligned
/// loads on them. `bytes.len()` must be the element count times [`WDtype::size`] (for block types:
/// the number of blocks times the block's bytes, rows being whole blocks).
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    /// Element type of the bytes.
    pub dtype: WDtype,
    /// Little-endian element bytes, any alignment.
    pub bytes: &'a [u8],
}

impl<'a> Weights<'a> {
    /// Wrap raw bytes of the given dtype.
    pub fn new(dtype: WDtype, bytes: &'a [u8]) -> Self {
        Weights { dtype, bytes }
    }

    /// The number of whole elements in the bytes.
    pub fn len(&self) -> usize {
        let (e, b) = self.dtype.block();
        self.bytes.len() / b * e
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A length mismatch between the buffers handed to a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    message: String,
}

impl KernelError {
    fn new(message: String) -> Self {
        KernelError { message }
    }

    /// The message, naming the kernel, the argument, the expected and the actual length.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KernelError {}

impl From<KernelError> for crate::Error {
    fn from(e: KernelError) -> Self {
        crate::Error::bad_data(e.message)
    }
}

/// `Ok` when `actual == expected`, else an error naming the kernel and the argument.
fn check_len(kernel: &str, what: &str, expected: usize, actual: usize) -> Result<(), KernelError> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::new(format!(
            "kernel `{kernel}`: `{what}` has length {actual}, expected {expected}"
        )))
    }
}

/// `a * b`, or an error naming the kernel when it overflows.
fn mul_len(kernel: &str, what: &str, a: usize, b: usize) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or_else(|| {
        KernelError::new(format!(
            "kernel `{kernel}`: size of `{what}` overflows ({a} * {b})"
        ))
    })
}

/// Check that `w` holds exactly `elements` elements.
fn check_weights(kernel: &str, w: &Weights<'_>, elements: usize) -> Result<(), KernelError> {
    let (be, bb) = w.dtype.block();
    if !elements.is_multiple_of(be) {
        return Err(KernelError::new(format!(
            "kernel `{kernel}`: {elements} elements of {} are not whole {be}-element blocks",
            w.dtype.name()
        )));
    }
    let bytes = mul_len(kernel, "weights", elements / be, bb)?;
    if w.bytes.len() == bytes {
        Ok(())
    } else {
        Err(KernelError::new(format!(
            "kernel `{kernel}`: `weights` ({}) has {} bytes, expected {bytes} ({elements} elements)",
            w.dtype.name(),
            w.bytes.len()
        )))
    }
}

/// Run `$body` with `$tok` bound to the token of a SIMD ISA, or `$scalar` for [`Isa::Scalar`].
/// The tokens are only constructible when the CPU has the features, which is what makes the
/// SIMD paths safe to call.
macro_rules! dispatch {
    ($isa:expr, $scalar:expr, |$tok:ident| $f:ident($($arg:expr),* $(,)?)) => {{
        match resolve($isa) {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => match x86::Avx2::new() {
                Some($tok) => x86::avx2::$f($($arg),*),
                None => $scalar,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => match x86::Avx512::new() {
                Some($tok) => x86::avx512::$f($($arg),*),
                None => $scalar,
            },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => match neon::Neon::new() {
                Some($tok) => neon::entry::$f($($arg),*),
                None => $scalar,
            },
            _ => $scalar,
        }
    }};
}

/// `out[t*n + j] = sum_k x[t*k_dim + k] * W[j*k_dim + k]`: the `[t, k_dim]` activations times the
/// transpose of the `[n, k_dim]` weight matrix as stored (a `torch.nn.Linear` without bias).
///
/// Uses every rayon thread for large products and reads each weight row once for all `t` tokens.
/// Sums are accumulated in f32; the order of the sum differs between ISAs.
pub fn matmul(
    isa: Isa,
    x: &[f32],
    t: usize,
    k_dim: usize,
    w: Weights<'_>,
    n: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    const K: &str = "matmul";
    check_len(K, "x", mul_len(K, "x", t, k_dim)?, x.len())?;
    check_weights(K, &w, mul_len(K, "weights", n, k_dim)?)?;
    if !k_dim.is_multiple_of(w.dtype.block().0) {
        return Err(KernelError::new(format!(
            "kernel `{K}`: rows of {k_dim} elements are not whole {}-element blocks of {}",
            w.dtype.block().0,
            w.dtype.name()
        )));
    }
    check_len(K, "out", mul_len(K, "out", t, n)?, out.len())?;
    #[cfg(target_arch = "x86_64")]
    if resolve(isa) == Isa::Amx
        && w.dtype == WDtype::Bf16
        && t >= gemm::GEMM_MIN_T
        && k_dim > 0
        && n > 0
        && let Some(tok) = amx::Amx::new()
    {
        if amx::matmul(tok, x, t, k_dim, w, n, out, amx::ACC_MAX_BYTES) {
            redo_nan_columns(x, t, k_dim, w, n, out)?;
        }
        return Ok(());
    }
    dispatch!(isa, scalar::matmul(x, t, k_dim, w, n, out), |s| matmul(
        s, x, t, k_dim, w, n, out
    ));
    Ok(())
}

/// After the AMX product: recompute on AVX-512 every output column (weight row) holding a NaN.
///
/// The tiles multiply the three bf16 parts of each activation separately, so an infinite weight
/// meets the zero second and third part of an activation that bf16 holds exactly and gives
/// `inf * 0 = NaN`, where the spec's one product `inf * x` is an infinity. Every other NaN of the
/// tiles is one of the spec's too (a NaN input, `inf * 0`, `inf - inf`), so the columns with a NaN
/// are exactly the ones that may differ, and the AVX-512 path (which multiplies each `w * x`
/// whole) computes them as the spec does. A checkpoint without non-finite weights or activations
/// has no NaN output, and `amx::matmul` reports NaNs as it writes `out`, so this runs only then.
#[cfg(target_arch = "x86_64")]
fn redo_nan_columns(
    x: &[f32],
    t: usize,
    k_dim: usize,
    w: Weights<'_>,
    n: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let mut bad = vec![false; n];
    for row in out.chunks_exact(n) {
        for (b, v) in bad.iter_mut().zip(row) {
            *b |= v.is_nan();
        }
    }
    let row_bytes = 2 * k_dim;
    let mut col = vec![0.0f32; t];
    for (j, _) in bad.iter().enumerate().filter(|(_, b)| **b) {
        let bytes = w
            .bytes
            .get(j * row_bytes..(j + 1) * row_bytes)
            .ok_or_else(|| KernelError::new("kernel `matmul`: weight row out of range".into()))?;
        matmul(
            Isa::Avx512,
            x,
            t,
            k_dim,
            Weights::new(WDtype::Bf16, bytes),
            1,
            &mut col,
        )?;
        for (tok, v) in col.iter().enumerate() {
            out[tok * n + j] = *v;
        }
    }
    Ok(())
}

/// One row of LLaMA RMSNorm (Hugging Face `LlamaRMSNorm`): `out = x / sqrt(mean(x^2) + eps) * w`,
/// computed in f32 with the weight converted to f32.
pub fn rmsnorm(
    isa: Isa,
    x: &[f32],
    weight: Weights<'_>,
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    rmsnorm_offset(isa, x, weight, 0.0, eps, out)
}

/// One row of RMSNorm with a weight offset: `out = x / sqrt(mean(x^2) + eps) * (offset + w)`
/// (`offset` 0: `LlamaRMSNorm`; 1: `GemmaRMSNorm`, which multiplies by `1 + w` in f32).
pub fn rmsnorm_offset(
    isa: Isa,
    x: &[f32],
    weight: Weights<'_>,
    offset: f32,
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_weights("rmsnorm", &weight, x.len())?;
    check_len("rmsnorm", "out", x.len(), out.len())?;
    let (w, o) = (weight, offset);
    dispatch!(isa, scalar::rmsnorm(x, w, o, eps, out), |s| rmsnorm(
        s, x, w, o, eps, out
    ));
    Ok(())
}

/// One row of `torch.nn.LayerNorm`: `out = (x - mean) / sqrt(var + eps) * (offset + w) + b`
/// (biased variance; `bias` optional). Runs the scalar spec on every ISA: a norm is a few
/// thousand operations per token next to the matmuls' millions.
pub fn layernorm(
    _isa: Isa,
    x: &[f32],
    weight: Weights<'_>,
    bias: Option<Weights<'_>>,
    offset: f32,
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_weights("layernorm", &weight, x.len())?;
    if let Some(b) = &bias {
        check_weights("layernorm", b, x.len())?;
    }
    check_len("layernorm", "out", x.len(), out.len())?;
    scalar::layernorm(x, weight, bias, offset, eps, out);
    Ok(())
}

/// Numerically stable softmax of one row in place (the maximum is subtracted first).
///
/// `-inf` entries (masks) become exactly 0. A row that is entirely `-inf` becomes all zeros
/// (nothing to attend to) rather than NaN. A NaN anywhere in the row, or a `+inf` (`inf - inf`),
/// makes the whole row NaN, as `torch.softmax` does: a poisoned score is never read as a mask.
/// An empty row is left alone.
pub fn softmax_inplace(isa: Isa, x: &mut [f32]) {
    dispatch!(isa, scalar::softmax_inplace(x), |s| softmax_inplace(s, x))
}

/// One query's attention for one head, over `scores.len()` keys: with `hd = q.len()` and row `j`
/// of a strided matrix `m` being `m[j * stride..][..hd]`,
/// `scores[j] = cap(scale * (q . keys_j))`, where `cap(s) = c * tanh(s / c)` when `softcap` is
/// `Some(c)` and `s` otherwise; then [`softmax_inplace`] of the scores, and
/// `out = sum_j scores[j] * values_j`, added in key order.
///
/// The same bits as [`dot`] per key, [`softmax_inplace`] and, on a zeroed `out`, [`axpy`] per
/// key on the same ISA; one call instead of two per key. `scores` is left holding the
/// probabilities.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    isa: Isa,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    stride: usize,
    scale: f32,
    softcap: Option<f32>,
    scores: &mut [f32],
    out: &mut [f32],
) -> Result<(), KernelError> {
    const K: &str = "attend";
    let hd = q.len();
    check_len(K, "out", hd, out.len())?;
    if let Some(last) = scores.len().checked_sub(1) {
        let need = mul_len(K, "keys", last, stride)?
            .checked_add(hd)
            .ok_or_else(|| KernelError::new(format!("kernel `{K}`: size of `keys` overflows")))?;
        for (what, m) in [("keys", keys), ("values", values)] {
            if m.len() < need {
                return Err(KernelError::new(format!(
                    "kernel `{K}`: `{what}` has length {}, expected at least {need} ({} rows \
                     of {hd}, {stride} apart)",
                    m.len(),
                    scores.len()
                )));
            }
        }
    }
    dispatch!(
        isa,
        scalar::attend(q, keys, values, stride, scale, softcap, scores, out),
        |s| attend(s, q, keys, values, stride, scale, softcap, scores, out)
    );
    Ok(())
}

/// SwiGLU gate: `gate[i] = silu(gate[i]) * up[i]` with `silu(v) = v / (1 + exp(-v))`.
pub fn silu_mul(isa: Isa, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    check_len("silu_mul", "up", gate.len(), up.len())?;
    dispatch!(isa, scalar::silu_mul(gate, up), |s| silu_mul(s, gate, up));
    Ok(())
}

/// Gated GELU, tanh approximation (`gelu_pytorch_tanh`):
/// `gate[i] = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) * up[i]` with `g = gate[i]`.
pub fn gelu_tanh_mul(isa: Isa, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    check_len("gelu_tanh_mul", "up", gate.len(), up.len())?;
    dispatch!(isa, scalar::gelu_tanh_mul(gate, up), |s| gelu_tanh_mul(
        s, gate, up
    ));
    Ok(())
}

/// Gated GELU, exact form (`gelu`): `gate[i] = g * 0.5 * (1 + erf(g / sqrt(2))) * up[i]`.
/// Runs the scalar spec on every ISA (`erf` is evaluated in f64 and rounded to f32).
pub fn gelu_mul(_isa: Isa, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
    check_len("gelu_mul", "up", gate.len(), up.len())?;
    scalar::gelu_mul(gate, up);
    Ok(())
}

/// Rotary embedding of one head vector on interleaved pairs (Helium, GLM, Meta's layout): for
/// `i < hd/2`, `(a, b) = (x[2i], x[2i + 1])` becomes `(a*cos[i] - b*sin[i], b*cos[i] + a*sin[i])`.
/// `x.len()` must be even and `cos`, `sin` hold `hd/2` values. Runs the scalar spec on every ISA
/// (the pairs would need lane shuffles; the op is tiny next to the projections).
pub fn rope_interleaved(
    _isa: Isa,
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
) -> Result<(), KernelError> {
    if !x.len().is_multiple_of(2) {
        return Err(KernelError::new(format!(
            "kernel `rope_interleaved`: head vector `x` has odd length {}",
            x.len()
        )));
    }
    check_len("rope_interleaved", "cos", x.len() / 2, cos.len())?;
    check_len("rope_interleaved", "sin", x.len() / 2, sin.len())?;
    scalar::rope_interleaved(x, cos, sin);
    Ok(())
}

/// Rotary embedding of one head vector in the Hugging Face "rotate_half" layout: for
/// `i < hd/2`, `(a, b) = (x[i], x[i + hd/2])` becomes
/// `(a*cos[i] - b*sin[i], b*cos[i] + a*sin[i])`. `x.len()` must be even and `cos`, `sin` hold
/// `hd/2` values.
pub fn rope_half(isa: Isa, x: &mut [f32], cos: &[f32], sin: &[f32]) -> Result<(), KernelError> {
    if !x.len().is_multiple_of(2) {
        return Err(KernelError::new(format!(
            "kernel `rope_half`: head vector `x` has odd length {}",
            x.len()
        )));
    }
    check_len("rope_half", "cos", x.len() / 2, cos.len())?;
    check_len("rope_half", "sin", x.len() / 2, sin.len())?;
    dispatch!(isa, scalar::rope_half(x, cos, sin), |s| rope_half(
        s, x, cos, sin
    ));
    Ok(())
}

/// `sum_i a[i] * b[i]`, accumulated in f32.
pub fn dot(isa: Isa, a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
    check_len("dot", "b", a.len(), b.len())?;
    Ok(dispatch!(isa, scalar::dot(a, b), |s| dot(s, a, b)))
}

/// `y += alpha * x`.
pub fn axpy(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    check_len("axpy", "y", x.len(), y.len())?;
    dispatch!(isa, scalar::axpy(alpha, x, y), |s| axpy(s, alpha, x, y));
    Ok(())
}

/// Decode weight elements to f32 (an embedding row, a bias, a norm weight). `out.len()` must be
/// the number of elements in `w`. Uses the active ISA.
pub fn to_f32(w: Weights<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    to_f32_with(active_isa(), w, out)
}

/// [`to_f32`] on a given ISA.
pub fn to_f32_with(isa: Isa, w: Weights<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    check_weights("to_f32", &w, out.len())?;
    dispatch!(isa, scalar::to_f32(w, out), |s| to_f32(s, w, out));
    Ok(())
}
