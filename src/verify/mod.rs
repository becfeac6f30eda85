//! Proving two checkpoints compute the same thing: the answer to "it may be working incorrectly for
//! all I know" (the Yi rename discussion) without PyTorch.
//!
//! Both checkpoints are seen through their families as canonical views, then compared at three levels:
//! - **structure**: the same canonical tensors with the same shapes (dtype differences noted), and the
//!   same forward-relevant hyperparameters (a `rope_theta` left at 10000 is a real, silent bug);
//! - **bytes**: each tensor's bytes identical, compared zero-copy over the two views' mmap slices (a
//!   differing tensor gets its max abs difference);
//! - **logits**: the reference forward pass on both over the same token sequences, with max abs and
//!   relative differences, cosine similarity, top-1/top-5 agreement and KL divergence.
//!
//! Only one model's forward runs at a time and each streams its weights from the mmaps, so verifying
//! needs the activations of one model, never both models in memory.

use crate::checkpoint::header::Dtype;
use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::mapping::{Segment, View, ViewTensor};
use crate::reference::{self, Logits};

/// How far to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Tensor names, shapes and hyperparameters only (headers).
    Structure,
    /// Plus every tensor's bytes.
    Bytes,
    /// Plus the reference forward pass on both.
    Logits,
}

/// What to compare and the tolerances.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deepest level to run.
    pub level: Level,
    /// Logits pass when `max_abs <= atol + rtol * max|logit of A|`.
    pub atol: f64,
    /// See `atol`.
    pub rtol: f64,
    /// Token sequences for the logits level (equal lengths).
    pub sequences: Vec<Vec<u32>>,
    /// Kernel path.
    pub isa: Isa,
}

/// One canonical tensor seen on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Canonical name.
    pub canonical: String,
    /// Stored name(s) in A (joined with `+` when fused), empty if absent.
    pub a_name: String,
    /// Stored name(s) in B.
    pub b_name: String,
    /// Shape in A.
    pub a_shape: Vec<usize>,
    /// Shape in B.
    pub b_shape: Vec<usize>,
    /// Dtype in A.
    pub a_dtype: Option<Dtype>,
    /// Dtype in B.
    pub b_dtype: Option<Dtype>,
}

/// The structure level.
#[derive(Debug, Clone, PartialEq)]
pub struct Structure {
    /// Pass: same tensor set, same shapes, same forward-relevant hyperparameters.
    pub pass: bool,
    /// Tensors present on both sides.
    pub common: usize,
    /// Canonical tensors only in A.
    pub only_a: Vec<Pair>,
    /// Canonical tensors only in B.
    pub only_b: Vec<Pair>,
    /// Same name, different shape.
    pub shape_differs: Vec<Pair>,
    /// Same name and shape, different dtype (noted; the bytes level fails on them).
    pub dtype_differs: Vec<Pair>,
    /// Forward-relevant hyperparameters that differ: (key, A, B).
    pub config_differs: Vec<(String, String, String)>,
}

/// The bytes level.
#[derive(Debug, Clone, PartialEq)]
pub struct Bytes {
    /// Pass: every common tensor byte-identical.
    pub pass: bool,
    /// Tensors compared.
    pub compared: usize,
    /// Of those, identical.
    pub identical: usize,
    /// Bytes compared.
    pub bytes: u64,
    /// Tensors that differ, with their max abs difference (decoded as f32; NaN for non-float dtypes).
    pub differing: Vec<(Pair, f64)>,
}

/// The logits level.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsCmp {
    /// Pass: `max_abs <= tolerance`.
    pub pass: bool,
    /// The tolerance applied (`atol + rtol * max|A|`).
    pub tolerance: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `max_abs / max|A|`.
    pub max_rel: f64,
    /// Smallest cosine similarity between the two logit vectors at any position.
    pub min_cosine: f64,
    /// Share of positions whose argmax agrees.
    pub top1: f64,
    /// Share of positions whose top-5 sets agree.
    pub top5: f64,
    /// Largest KL(softmax(A) || softmax(B)) at any position, in nats.
    pub max_kl: f64,
    /// Positions compared (batch x seq).
    pub positions: usize,
    /// Largest |logit| of A (the scale).
    pub scale: f64,
}

/// The whole verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Family A was read as.
    pub family_a: String,
    /// Family B was read as.
    pub family_b: String,
    /// Structure level (always run).
    pub structure: Structure,
    /// Bytes level, if run.
    pub bytes: Option<Bytes>,
    /// Logits level, if run; `Err(reason)` when a forward pass could not run.
    pub logits: Option<std::result::Result<LogitsCmp, String>>,
    /// The verdict.
    pub equivalent: bool,
}

/// Deterministic default sequences: `batch - 1` pseudo-random ones across the whole vocabulary, plus one
/// of low ids (where tokenizers put special and frequent tokens).
pub fn default_sequences(vocab: usize, batch: usize, seq_len: usize) -> Vec<Vec<u32>> {
    let vocab = vocab.clamp(1, u32::MAX as usize) as u64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(batch);
    for b in 0..batch.max(1) {
        let seq = if b + 1 == batch.max(1) && batch > 1 {
            (0..seq_len)
                .map(|i| (i as u64 % vocab.min(100)) as u32)
                .collect()
        } else {
            (0..seq_len).map(|_| (next() % vocab) as u32).collect()
        };
        out.push(seq);
    }
    out
}

/// Compare two canonical views.
pub fn verify(a: &View<'_>, b: &View<'_>, opts: &Options) -> Result<Report> {
    verify_with_progress(a, b, opts, &|_, _, _| {})
}

/// Progress of a verify run: the stage (`bytes`, `logits A`, `logits B`), done and total units.
pub type Progress<'a> = dyn Fn(&str, u64, u64) + 'a;

/// [`verify`], reporting progress (bytes compared, layers run) to `progress`.
pub fn verify_with_progress(
    a: &View<'_>,
    b: &View<'_>,
    opts: &Options,
    progress: &Progress<'_>,
) -> Result<Report> {
    let structure = compare_structure(a, b);
    let bytes = (opts.level >= Level::Bytes)
        .then(|| compare_bytes_with_progress(a, b, progress))
        .transpose()?;
    let logits = if opts.level >= Level::Logits {
        Some(compare_logits(a, b, opts, progress))
    } else {
        None
    };
    let logits_ok = match &logits {
        None => true,
        Some(Ok(l)) => l.pass,
        Some(Err(_)) => false,
    };
    let logits_ran_ok = matches!(&logits, Some(Ok(l)) if l.pass);
    // Differing bytes are acceptable only when the logits level ran and stayed within the tolerance the
    // user stated (a dtype conversion, say).
    let bytes_ok = bytes.as_ref().is_none_or(|b| b.pass || logits_ran_ok);
    let equivalent = structure.pass && bytes_ok && logits_ok;
    Ok(Report {
        family_a: a.family.clone(),
        family_b: b.family.clone(),
        structure,
        bytes,
        logits,
        equivalent,
    })
}

fn pair(name: &str, ta: Option<&ViewTensor>, tb: Option<&ViewTensor>) -> Pair {
    Pair {
        canonical: name.to_string(),
        a_name: ta.map(|t| t.sources.join("+")).unwrap_or_default(),
        b_name: tb.map(|t| t.sources.join("+")).unwrap_or_default(),
        a_shape: ta.map(|t| t.shape.clone()).unwrap_or_default(),
        b_shape: tb.map(|t| t.shape.clone()).unwrap_or_default(),
        a_dtype: ta.map(|t| t.dtype),
        b_dtype: tb.map(|t| t.dtype),
    }
}

/// The structure level: tensor sets, shapes, dtypes and forward-relevant hyperparameters.
pub fn compare_structure(a: &View<'_>, b: &View<'_>) -> Structure {
    let mut s = Structure {
        pass: true,
        common: 0,
        only_a: Vec::new(),
        only_b: Vec::new(),
        shape_differs: Vec::new(),
        dtype_differs: Vec::new(),
        config_differs: Vec::new(),
    };
    for ta in &a.tensors {
        match b.get(&ta.name) {
            None => s.only_a.push(pair(&ta.name, Some(ta), None)),
            Some(tb) => {
                s.common += 1;
                if ta.shape != tb.shape {
                    s.shape_differs.push(pair(&ta.name, Some(ta), Some(tb)));
                } else if ta.dtype != tb.dtype {
                    s.dtype_differs.push(pair(&ta.name, Some(ta), Some(tb)));
                }
            }
        }
    }
    for tb in &b.tensors {
        if a.get(&tb.name).is_none() {
            s.only_b.push(pair(&tb.name, None, Some(tb)));
        }
    }
    s.config_differs = config_differences(a, b);
    s.pass = s.only_a.is_empty()
        && s.only_b.is_empty()
        && s.shape_differs.is_empty()
        && s.config_differs.is_empty();
    s
}

fn config_differences(a: &View<'_>, b: &View<'_>) -> Vec<(String, String, String)> {
    let (Some(ca), Some(cb)) = (&a.config, &b.config) else {
        return Vec::new();
    };
    let fmt = |v: String| v;
    let fields: Vec<(&str, String, String)> = vec![
        (
            "hidden_size",
            format!("{:?}", ca.hidden_size),
            format!("{:?}", cb.hidden_size),
        ),
        (
            "num_hidden_layers",
            format!("{:?}", ca.num_hidden_layers),
            format!("{:?}", cb.num_hidden_layers),
        ),
        (
            "num_attention_heads",
            format!("{:?}", ca.num_attention_heads),
            format!("{:?}", cb.num_attention_heads),
        ),
        (
            "num_key_value_heads",
            format!("{:?}", ca.resolved_kv_heads()),
            format!("{:?}", cb.resolved_kv_heads()),
        ),
        (
            "head_dim",
            format!("{:?}", ca.resolved_head_dim()),
            format!("{:?}", cb.resolved_head_dim()),
        ),
        (
            "intermediate_size",
            format!("{:?}", ca.intermediate_size),
            format!("{:?}", cb.intermediate_size),
        ),
        (
            "vocab_size",
            format!("{:?}", ca.vocab_size),
            format!("{:?}", cb.vocab_size),
        ),
        (
            "rms_norm_eps",
            format!("{:?}", ca.rms_norm_eps),
            format!("{:?}", cb.rms_norm_eps),
        ),
        (
            "rope_theta",
            format!("{:?}", ca.rope_theta.unwrap_or(10000.0)),
            format!("{:?}", cb.rope_theta.unwrap_or(10000.0)),
        ),
        (
            "rope_scaling",
            format!("{:?}", ca.rope_scaling),
            format!("{:?}", cb.rope_scaling),
        ),
        (
            "tie_word_embeddings",
            format!("{:?}", ca.tie_word_embeddings.unwrap_or(false)),
            format!("{:?}", cb.tie_word_embeddings.unwrap_or(false)),
        ),
        (
            "hidden_act",
            format!("{:?}", ca.hidden_act.as_deref().unwrap_or("silu")),
            format!("{:?}", cb.hidden_act.as_deref().unwrap_or("silu")),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| x != y)
        .map(|(k, x, y)| (k.to_string(), fmt(x), fmt(y)))
        .collect()
}

/// The chunks of a view tensor as borrowed slices (zeros as a static buffer), without copying.
fn chunks<'a>(v: &View<'a>, t: &ViewTensor) -> Result<Vec<std::borrow::Cow<'a, [u8]>>> {
    static ZEROS: [u8; 1 << 16] = [0u8; 1 << 16];
    let mut out = Vec::with_capacity(t.segments.len());
    for seg in &t.segments {
        match seg {
            Segment::Rows { .. } => out.push(v.segment_bytes(seg)?),
            Segment::Zeros { bytes } => {
                let mut left = *bytes;
                while left > 0 {
                    let n = left.min(ZEROS.len());
                    out.push(std::borrow::Cow::Borrowed(&ZEROS[..n]));
                    left -= n;
                }
            }
        }
    }
    Ok(out)
}

/// Compare two chunked byte streams of equal total length.
fn streams_equal(a: &[&[u8]], b: &[&[u8]]) -> bool {
    let (mut ia, mut ib) = (
        a.iter().flat_map(|c| c.chunks(1 << 16)),
        b.iter().flat_map(|c| c.chunks(1 << 16)),
    );
    let (mut ca, mut cb): (&[u8], &[u8]) = (&[], &[]);
    loop {
        if ca.is_empty() {
            ca = ia.next().unwrap_or(&[]);
        }
        if cb.is_empty() {
            cb = ib.next().unwrap_or(&[]);
        }
        if ca.is_empty() || cb.is_empty() {
            return ca.is_empty() && cb.is_empty();
        }
        let n = ca.len().min(cb.len());
        if ca[..n] != cb[..n] {
            return false;
        }
        ca = &ca[n..];
        cb = &cb[n..];
    }
}

/// Decode a float tensor's bytes to f32 (None for non-float dtypes).
fn decode(dtype: Dtype, chunks: &[&[u8]]) -> Option<Vec<f32>> {
    let bytes: Vec<u8> = chunks.concat();
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// The bytes level: every common tensor with equal shapes compared byte for byte.
pub fn compare_bytes(a: &View<'_>, b: &View<'_>) -> Result<Bytes> {
    compare_bytes_with_progress(a, b, &|_, _, _| {})
}

fn compare_bytes_with_progress(
    a: &View<'_>,
    b: &View<'_>,
    progress: &Progress<'_>,
) -> Result<Bytes> {
    let total: u64 = a.tensors.iter().map(|t| t.nbytes() as u64).sum();
    let mut r = Bytes {
        pass: true,
        compared: 0,
        identical: 0,
        bytes: 0,
        differing: Vec::new(),
    };
    for ta in &a.tensors {
        let Some(tb) = b.get(&ta.name) else { continue };
        if ta.shape != tb.shape {
            continue;
        }
        r.compared += 1;
        let (oa, ob) = (chunks(a, ta)?, chunks(b, tb)?);
        let ca: Vec<&[u8]> = oa.iter().map(|c| &**c).collect();
        let cb: Vec<&[u8]> = ob.iter().map(|c| &**c).collect();
        r.bytes += ta.nbytes() as u64;
        progress("bytes", r.bytes, total);
        let same = ta.dtype == tb.dtype && streams_equal(&ca, &cb);
        // Done reading: keep the resident set at about one tensor, not two models.
        let release = || {
            a.release(ta);
            b.release(tb);
        };
        if same {
            r.identical += 1;
            release();
            continue;
        }
        // Only differing tensors are decoded (one at a time).
        let diff = match (decode(ta.dtype, &ca), decode(tb.dtype, &cb)) {
            (Some(x), Some(y)) => x
                .iter()
                .zip(&y)
                .map(|(p, q)| (f64::from(*p) - f64::from(*q)).abs())
                .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m }),
            _ => f64::NAN,
        };
        release();
        r.differing.push((pair(&ta.name, Some(ta), Some(tb)), diff));
    }
    r.pass = r.differing.is_empty();
    Ok(r)
}

fn compare_logits(
    a: &View<'_>,
    b: &View<'_>,
    opts: &Options,
    progress: &Progress<'_>,
) -> std::result::Result<LogitsCmp, String> {
    let la = reference::forward_with_progress(a, &opts.sequences, opts.isa, &|d, t| {
        progress("logits A", d as u64, t as u64)
    })
    .map_err(|e| format!("forward pass on A: {e}"))?;
    let lb = reference::forward_with_progress(b, &opts.sequences, opts.isa, &|d, t| {
        progress("logits B", d as u64, t as u64)
    })
    .map_err(|e| format!("forward pass on B: {e}"))?;
    logits_metrics(&la, &lb, opts.atol, opts.rtol)
}

/// Compare two sets of logits.
pub fn logits_metrics(
    a: &Logits,
    b: &Logits,
    atol: f64,
    rtol: f64,
) -> std::result::Result<LogitsCmp, String> {
    if (a.batch, a.seq, a.vocab) != (b.batch, b.seq, b.vocab) {
        return Err(format!(
            "logits shapes differ: [{}, {}, {}] vs [{}, {}, {}]",
            a.batch, a.seq, a.vocab, b.batch, b.seq, b.vocab
        ));
    }
    let v = a.vocab.max(1);
    let positions = a.batch * a.seq;
    let (mut max_abs, mut scale, mut min_cos, mut max_kl) = (0f64, 0f64, 1f64, 0f64);
    let (mut top1, mut top5) = (0usize, 0usize);
    for p in 0..positions {
        let (xa, xb) = (&a.data[p * v..(p + 1) * v], &b.data[p * v..(p + 1) * v]);
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for (&x, &y) in xa.iter().zip(xb) {
            let (x, y) = (f64::from(x), f64::from(y));
            let d = (x - y).abs();
            if d.is_nan() || d > max_abs {
                max_abs = d;
            }
            scale = scale.max(x.abs());
            dot += x * y;
            na += x * x;
            nb += y * y;
        }
        let cos = if na == 0.0 || nb == 0.0 {
            f64::from(u8::from(na == nb))
        } else {
            dot / (na.sqrt() * nb.sqrt())
        };
        min_cos = min_cos.min(cos);
        let (ta, tb) = (top_k(xa, 5), top_k(xb, 5));
        top1 += usize::from(ta.first() == tb.first());
        let (mut sa, mut sb) = (ta.clone(), tb.clone());
        sa.sort_unstable();
        sb.sort_unstable();
        top5 += usize::from(sa == sb);
        max_kl = max_kl.max(kl(xa, xb));
    }
    let tolerance = atol + rtol * scale;
    let n = positions.max(1) as f64;
    Ok(LogitsCmp {
        pass: max_abs <= tolerance,
        tolerance,
        max_abs,
        max_rel: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
        min_cosine: min_cos,
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        max_kl,
        positions,
        scale,
    })
}

/// Indices of the `k` largest values, largest first (NaN sorts last).
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&i, &j| {
        x[j].partial_cmp(&x[i])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(i.cmp(&j))
    });
    idx.truncate(k);
    idx
}

/// KL(softmax(a) || softmax(b)) in f64.
fn kl(a: &[f32], b: &[f32]) -> f64 {
    let lse = |x: &[f32]| {
        let m = x
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        m + x
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln()
    };
    let (la, lb) = (lse(a), lse(b));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let (lpa, lpb) = (f64::from(x) - la, f64::from(y) - lb);
            lpa.exp() * (lpa - lpb)
        })
        .sum::<f64>()
        .max(0.0)
}

/// Parse a `--level` value.
pub fn parse_level(s: &str) -> Result<Level> {
    match s {
        "structure" => Ok(Level::Structure),
        "bytes" => Ok(Level::Bytes),
        "logits" => Ok(Level::Logits),
        _ => Err(Error::usage(format!(
            "unknown level `{s}` (structure, bytes, logits)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_comparison_ignores_chunking() {
        let a: Vec<&[u8]> = vec![b"abc", b"de", b"f"];
        let b: Vec<&[u8]> = vec![b"a", b"bcdef"];
        assert!(streams_equal(&a, &b));
        let c: Vec<&[u8]> = vec![b"a", b"bcdeg"];
        assert!(!streams_equal(&a, &c));
        let d: Vec<&[u8]> = vec![b"abcde"];
        assert!(!streams_equal(&a, &d));
    }

    #[test]
    fn metrics_of_identical_and_different_logits() {
        let a = Logits {
            batch: 1,
            seq: 2,
            vocab: 3,
            data: vec![1.0, 2.0, 3.0, 0.0, -1.0, 5.0],
        };
        let same = logits_metrics(&a, &a.clone(), 0.0, 0.0).unwrap();
        assert!(same.pass && same.max_abs == 0.0 && same.top1 == 1.0 && same.max_kl == 0.0);
        assert!((same.min_cosine - 1.0).abs() < 1e-12);
        let mut b = a.clone();
        b.data[2] = 1.5; // argmax of position 0 moves to index 1
        let d = logits_metrics(&a, &b, 0.0, 0.0).unwrap();
        assert!(!d.pass);
        assert_eq!(d.max_abs, 1.5);
        assert_eq!(d.top1, 0.5);
        assert!(d.max_kl > 0.1);
        assert!(logits_metrics(&a, &b, 1.5, 0.0).unwrap().pass);
    }

    #[test]
    fn default_sequences_are_deterministic_and_in_range() {
        let s = default_sequences(256, 3, 16);
        assert_eq!(s, default_sequences(256, 3, 16));
        assert_eq!(s.len(), 3);
        assert!(s.iter().flatten().all(|&t| t < 256));
        assert_eq!(s[2][..4], [0, 1, 2, 3]);
        assert_ne!(s[0], s[1]);
    }
}
