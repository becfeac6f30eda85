//! Dequantization of ggml's block types: the scalar specification.
//!
//! One function per type turns one block (32 or 256 elements) into f32, following ggml's block
//! layouts (`ggml-common.h`) as gguf-py's `quants.py` reads them, operation for operation in f32
//! (`d * sc` first, then `* q`, then `- m`, never fused), so the values equal gguf-py's bit for bit
//! (`tests.rs` checks them against fixtures/gguf/dequant.safetensors written by gguf-py).
//!
//! The matmul decodes a weight tile per K block into its small f32 buffer through [`decode`], so a
//! quantized model is never expanded to f32 as a whole. K blocks and rows start on block boundaries
//! (the entry points check that rows are whole blocks).

use super::WDtype;

const QK_K: usize = 256;

#[inline]
fn f16(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q8_0: `d: f16, qs: [i8; 32]`; `x = d * q`.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = d * f32::from(q as i8);
    }
}

/// Q4_0: `d: f16, qs: [u8; 16]`; element `j` is the low nibble of `qs[j]`, element `j + 16` the
/// high one; `x = d * (q - 8)`.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * f32::from((q & 0x0F) as i8 - 8);
        out[j + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; `x = d * q + m`.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    for j in 0..16 {
        let q = b[4 + j];
        out[j] = d * f32::from(q & 0x0F) + m;
        out[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// Q5_0: `d: f16, qh: u32, qs: [u8; 16]`; bit `i` of `qh` is bit 4 of element `i`;
/// `x = d * (q - 16)`.
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        out[j] = d * f32::from(((q & 0x0F) | (h0 << 4)) as i8 - 16);
        out[j + 16] = d * f32::from(((q >> 4) | (h1 << 4)) as i8 - 16);
    }
}

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; `x = d * q + m`.
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16(b, 0), f16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        out[j] = d * f32::from((q & 0x0F) | (h0 << 4)) + m;
        out[j + 16] = d * f32::from((q >> 4) | (h1 << 4)) + m;
    }
}

/// Q2_K: `scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16`. Sixteen sub-blocks of 16; sub-block
/// `s` has scale `d * (scales[s] & 15)` and minimum `dmin * (scales[s] >> 4)`. Element `e`:
/// within its 128-element half `g`, 2-bit field `(e % 128) / 32` of byte `qs[g*32 + e % 32]`.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16(b, 80), f16(b, 82));
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let s = b[e / 16];
        let dl = d * f32::from(s & 0x0F);
        let ml = dmin * f32::from(s >> 4);
        let (g, rem) = (e / 128, e % 128);
        let q = (b[16 + g * 32 + rem % 32] >> (2 * (rem / 32))) & 3;
        *o = dl * f32::from(q) - ml;
    }
}

/// Q3_K: `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16`. Sixteen 6-bit signed scales
/// (low 4 bits from bytes 0..8, high 2 bits from bytes 8..12, minus 32); element `e` has a 2-bit
/// low part as in Q2_K and a high bit `hmask[e % 32] >> (e / 32)`; a clear high bit subtracts 4.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let d = f16(b, 108);
    let sc = &b[96..108];
    let mut scales = [0f32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 { sc[i] & 0x0F } else { sc[i - 8] >> 4 };
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = f32::from(((low | (high << 4)) as i8).wrapping_sub(32));
    }
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let dl = d * scales[e / 16];
        let (g, rem) = (e / 128, e % 128);
        let low = ((b[32 + g * 32 + rem % 32] >> (2 * (rem / 32))) & 3) as i8;
        let high = (b[e % 32] >> (e / 32)) & 1;
        let q = if high == 1 { low } else { low - 4 };
        *o = dl * f32::from(q);
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K / Q5_K block (`get_scale_min_k4`).
#[inline]
fn scale_min_k4(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of 32; element
/// `e` of sub-block `j = e / 32` is nibble `j % 2` of `qs[(j / 2) * 32 + e % 32]`;
/// `x = (d * sc_j) * q - dmin * m_j`.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(scales, j);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        for l in 0..32 {
            let q = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0F;
            out[j * 32 + l] = dl * f32::from(q) - ml;
        }
    }
}

/// Q5_K: Q4_K plus `qh: [u8; 32]` before `qs`: bit `j` of `qh[l]` is bit 4 of element `l` of
/// sub-block `j`.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16(b, 0), f16(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..8 {
        let (sc, m) = scale_min_k4(scales, j);
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        for l in 0..32 {
            let low = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0F;
            let high = (qh[l] >> j) & 1;
            out[j * 32 + l] = dl * f32::from(low | (high << 4)) - ml;
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Element `e`, in half
/// `g = e / 128` at `r = e % 128`: low 4 bits are nibble `r / 64` of `ql[g*64 + r % 64]`, high 2
/// bits field `r / 32` of `qh[g*32 + r % 32]`; `x = (d * scales[e / 16]) * (q - 32)`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16(b, 208);
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (g, r) = (e / 128, e % 128);
        let low = (b[g * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (b[128 + g * 32 + r % 32] >> (2 * (r / 32))) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        let dl = d * f32::from(b[192 + e / 16] as i8);
        *o = dl * f32::from(q);
    }
}

/// Dequantize one block of `dtype` (`bytes` is exactly one block, `out` its elements).
pub(crate) fn block(dtype: WDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        WDtype::Q8_0 => q8_0(bytes, out),
        WDtype::Q4_0 => q4_0(bytes, out),
        WDtype::Q4_1 => q4_1(bytes, out),
        WDtype::Q5_0 => q5_0(bytes, out),
        WDtype::Q5_1 => q5_1(bytes, out),
        WDtype::Q2K => q2_k(bytes, out),
        WDtype::Q3K => q3_k(bytes, out),
        WDtype::Q4K => q4_k(bytes, out),
        WDtype::Q5K => q5_k(bytes, out),
        WDtype::Q6K => q6_k(bytes, out),
        WDtype::F32 | WDtype::F16 | WDtype::Bf16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = super::scalar::weight_at(super::Weights::new(dtype, bytes), i);
            }
        }
    }
}

/// Decode `out.len()` elements of a block-quantized tensor starting at element `start`. Whole
/// blocks are decoded straight into `out`; a range that starts or ends inside a block goes through
/// a small stack buffer (never on the matmul path, whose ranges are block-aligned).
pub(crate) fn decode(dtype: WDtype, bytes: &[u8], start: usize, out: &mut [f32]) {
    let (be, bb) = dtype.block();
    let mut tmp = [0f32; QK_K];
    let mut e = start;
    let end = start + out.len();
    while e < end {
        let blk = e / be;
        let within = e % be;
        let src = &bytes[blk * bb..(blk + 1) * bb];
        let take = (be - within).min(end - e);
        let dst = &mut out[e - start..e - start + take];
        if within == 0 && take == be {
            block(dtype, src, dst);
        } else {
            block(dtype, src, &mut tmp[..be]);
            dst.copy_from_slice(&tmp[within..within + take]);
        }
        e += take;
    }
}
