//! Proving two checkpoints compute the same thing: the answer to "it may be working incorrectly for
//! all I know" (the Yi rename discussion) without PyTorch.
//!
//! Both checkpoints are seen through their families as canonical views, then compared at three levels:
//! - **structure**: the same canonical tensors with the same shapes (dtype differences noted), and the
//!   same forward-relevant hyperparameters (a `rope_theta` left at 10000 is a real, silent bug);
//! - **bytes**: each tensor's bytes identical, compared zero-copy over the two views' mmap slices (a
//!   differing tensor gets its max abs difference);
//! - **logits**: the reference forward pass on both over the same token sequences (plus the tokens
//!   whose embedding rows differ, which a fixed sample could miss), with max abs and relative
//!   differences, cosine similarity, top-1/top-5 agreement and KL divergence.
//!
//! Only one model's forward runs at a time and each streams its weights from the mmaps, so verifying
//! needs the activations of one model, never both models in memory.
//!
//! The [`Verdict`] says only what the levels that ran prove: `equivalent` needs the logits level to
//! have run and agreed (and the structure to agree); a run limited to structure or bytes names the
//! levels it did not compare; a level that could not run (no config, an input the reference refuses)
//! makes the verdict `inconclusive`, never "not equivalent". Non-finite logits compare by identity:
//! the same NaN or infinity at the same position agrees, one against a finite value disagrees and is
//! counted, and the tolerance is computed from finite values only.

use serde_json::Value;

pub mod quant;

use crate::checkpoint::header::Dtype;
use crate::diff::values::{self, ValueDiff};
use crate::error::{Error, ErrorKind, Result};
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
    /// Forward-relevant hyperparameters that differ: (key, A's value, B's value), values as JSON
    /// (`null`: the config does not give it).
    pub config_differs: Vec<(String, Value, Value)>,
    /// Whether A and B have a config (hyperparameters are compared only when both do).
    pub configs: (bool, bool),
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
    /// Tensors whose bytes differ, with how their values differ (`None` for non-float dtypes).
    pub differing: Vec<(Pair, Option<ValueDiff>)>,
}

/// The logits level.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsCmp {
    /// Pass: `max_abs <= tolerance` and no non-finite value disagrees.
    pub pass: bool,
    /// The tolerance applied (`atol + rtol * max|A|` over A's finite logits; never NaN).
    pub tolerance: f64,
    /// Largest absolute difference between two finite logits.
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
    /// Largest finite |logit| of A (the scale).
    pub scale: f64,
    /// Non-finite logits (NaN, +inf, -inf) of A.
    pub nonfinite_a: u64,
    /// Non-finite logits of B.
    pub nonfinite_b: u64,
    /// Positions where one side is non-finite and the other holds a different value (a finite one,
    /// or another non-finite one): each is a disagreement whatever the tolerance.
    pub nonfinite_differ: u64,
    /// Positions whose KL divergence could not be computed (a non-finite logit in the row).
    pub kl_skipped: usize,
    /// NMSE of B's logits against A's (llama.cpp's check-nmse.py definition; [`quant::nmse`]).
    pub nmse: f64,
}

/// Embedding rows that differ between A and B, and how many of their tokens the logits level ran
/// (in extra sequences appended to the ones asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingRows {
    /// Rows whose bytes differ.
    pub differing: usize,
    /// Of those, rows whose token the logits level ran.
    pub exercised: usize,
    /// Of those, tokens added in extra sequences (at most [`EXTRA_TOKENS`]).
    pub added: usize,
}

/// Most tokens of differing embedding rows added to the logits level's input.
pub const EXTRA_TOKENS: usize = 64;

/// Which embedding rows differ (`row_differs[id]`).
struct RowsToRun {
    differing: usize,
    row_differs: Vec<bool>,
}

/// The differing rows of the embedding, when it is among the differing tensors.
fn embedding_rows_to_run(a: &View<'_>, b: &View<'_>, bt: &Bytes) -> Result<Option<RowsToRun>> {
    const EMBED: &str = "model.embed_tokens.weight";
    if !bt.differing.iter().any(|(p, _)| p.canonical == EMBED) {
        return Ok(None);
    }
    let (Some(ta), Some(tb)) = (a.get(EMBED), b.get(EMBED)) else {
        return Ok(None);
    };
    let rows = ta.shape.first().copied().unwrap_or(0);
    if ta.dtype != tb.dtype || ta.nbytes() != tb.nbytes() || rows == 0 {
        // Another dtype: every row differs.
        return Ok(Some(RowsToRun {
            differing: rows,
            row_differs: vec![true; rows],
        }));
    }
    let row_bytes = ta.nbytes() / rows;
    let (ca, cb) = (chunks(a, ta)?, chunks(b, tb)?);
    let (ca, cb) = (refs(&ca), refs(&cb));
    let (mut ra, mut rb) = (RowReader::new(&ca), RowReader::new(&cb));
    let mut out = RowsToRun {
        differing: 0,
        row_differs: Vec::with_capacity(rows),
    };
    for _ in 0..rows {
        let differs = ra.next_row(row_bytes) != rb.next_row(row_bytes);
        out.differing += usize::from(differs);
        out.row_differs.push(differs);
    }
    a.release(ta);
    b.release(tb);
    Ok(Some(out))
}

/// Sequences of length `len` holding `ids` (the last one completed by repeating them).
fn extra_sequences(ids: &[u32], len: usize) -> Vec<Vec<u32>> {
    ids.chunks(len)
        .map(|c| c.iter().copied().cycle().take(len).collect())
        .collect()
}

/// Reads consecutive rows from a chunked byte stream, borrowing when a row lies in one chunk.
struct RowReader<'c, 'a> {
    chunks: &'c [&'a [u8]],
    idx: usize,
    off: usize,
}

impl<'c, 'a> RowReader<'c, 'a> {
    fn new(chunks: &'c [&'a [u8]]) -> Self {
        RowReader {
            chunks,
            idx: 0,
            off: 0,
        }
    }

    fn next_row(&mut self, n: usize) -> std::borrow::Cow<'a, [u8]> {
        while self
            .chunks
            .get(self.idx)
            .is_some_and(|c| self.off >= c.len())
        {
            self.idx += 1;
            self.off = 0;
        }
        if let Some(c) = self.chunks.get(self.idx)
            && let Some(row) = c.get(self.off..self.off + n)
        {
            self.off += n;
            return std::borrow::Cow::Borrowed(row);
        }
        let mut row = Vec::with_capacity(n);
        while row.len() < n {
            let Some(c) = self.chunks.get(self.idx) else {
                break;
            };
            let take = (n - row.len()).min(c.len() - self.off);
            row.extend_from_slice(&c[self.off..self.off + take]);
            self.off += take;
            if self.off >= c.len() {
                self.idx += 1;
                self.off = 0;
            }
        }
        std::borrow::Cow::Owned(row)
    }
}

/// Why a level could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRun {
    /// The error kind that stopped it (`unsupported`, `bad-data`, ...).
    pub kind: ErrorKind,
    /// What stopped it (`forward pass on A: ...`).
    pub reason: String,
    /// The hint of the underlying error, if any.
    pub hint: Option<String>,
}

/// What a verify run proves. Exit codes: [`Verdict::exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Structure agrees and the logits were compared and agree within the tolerance.
    Equivalent,
    /// A level that ran found a difference that rules equivalence out: the logits differ, or the
    /// structure differs in a run that asked for logits.
    NotEquivalent,
    /// Structure only was asked and it agrees.
    SameStructure,
    /// Structure and bytes were asked (no logits) and every tensor's bytes are identical.
    IdenticalBytes,
    /// Structure only, or structure and bytes, were asked and the structure differs.
    StructureDiffers,
    /// Structure and bytes were asked, the structure agrees and some bytes differ (which alone does
    /// not decide equivalence: a dtype conversion differs in bytes).
    BytesDiffer,
    /// A level asked for could not run and no level found a difference.
    Inconclusive,
}

impl Verdict {
    /// The verdict word, the same in text and JSON.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Equivalent => "equivalent",
            Verdict::NotEquivalent => "NOT equivalent",
            Verdict::SameStructure => "same structure",
            Verdict::IdenticalBytes => "identical bytes",
            Verdict::StructureDiffers => "structure differs",
            Verdict::BytesDiffer => "bytes differ",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// 0: equivalent or matching at every level asked; 1: a level ran and found a difference;
    /// 2: inconclusive.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Equivalent | Verdict::SameStructure | Verdict::IdenticalBytes => 0,
            Verdict::NotEquivalent | Verdict::StructureDiffers | Verdict::BytesDiffer => 1,
            Verdict::Inconclusive => 2,
        }
    }
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
    /// Logits level, if asked; `Err` when a forward pass could not run.
    pub logits: Option<std::result::Result<LogitsCmp, NotRun>>,
    /// The deepest level asked for.
    pub level: Level,
    /// When embedding rows differ: how many, and how many of those tokens the logits level ran.
    pub embedding_rows: Option<EmbeddingRows>,
    /// The quantization-aware comparison, when one side has block-quantized weights and no
    /// tolerance was stated: per-tensor weight NMSE and the bands applied ([`quant`]).
    pub quant: Option<quant::QuantCheck>,
    /// What the levels that ran prove.
    pub verdict: Verdict,
    /// `verdict == Verdict::Equivalent`.
    pub equivalent: bool,
}

impl Report {
    /// The levels that ran to completion, in order.
    pub fn checked(&self) -> Vec<Level> {
        let mut v = vec![Level::Structure];
        if self.bytes.is_some() {
            v.push(Level::Bytes);
        }
        if matches!(self.logits, Some(Ok(_))) {
            v.push(Level::Logits);
        }
        v
    }

    /// The levels that were not compared: not asked for, or unable to run.
    pub fn not_checked(&self) -> Vec<Level> {
        let done = self.checked();
        [Level::Structure, Level::Bytes, Level::Logits]
            .into_iter()
            .filter(|l| !done.contains(l))
            .collect()
    }

    /// Why the logits level could not run, if it could not.
    pub fn not_run(&self) -> Option<&NotRun> {
        match &self.logits {
            Some(Err(n)) => Some(n),
            _ => None,
        }
    }
}

impl Level {
    /// `structure`, `bytes` or `logits`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Structure => "structure",
            Level::Bytes => "bytes",
            Level::Logits => "logits",
        }
    }
}

impl Bytes {
    /// Whether every differing tensor holds numerically equal values (`-0` against `+0`, NaN
    /// against NaN with another payload): the bytes differ, the numbers do not.
    pub fn values_equal(&self) -> bool {
        self.differing
            .iter()
            .all(|(_, v)| v.is_some_and(|v| v.differing == 0))
    }
}

/// The verdict of a run from its levels (see [`Verdict`]). `exact` is the default tolerance
/// (`atol = rtol = 0`): then tensors whose values differ rule equivalence out even when the logits
/// of the sampled sequences agree (a changed embedding row of a token they do not contain would
/// otherwise pass); with a stated tolerance, differing values are accepted when the logits stay
/// within it (a dtype conversion).
pub fn decide(
    structure: &Structure,
    bytes: Option<&Bytes>,
    logits: Option<&std::result::Result<LogitsCmp, NotRun>>,
    exact: bool,
) -> Verdict {
    let values_differ = exact && bytes.is_some_and(|b| !b.values_equal());
    match logits {
        Some(Ok(l)) if structure.pass && l.pass && !values_differ => Verdict::Equivalent,
        Some(Ok(_)) => Verdict::NotEquivalent,
        // A differing structure, or values at the exact tolerance, rule equivalence out even
        // without logits.
        Some(Err(_)) if !structure.pass || values_differ => Verdict::NotEquivalent,
        Some(Err(_)) => Verdict::Inconclusive,
        None if !structure.pass => Verdict::StructureDiffers,
        None => match bytes {
            Some(b) if b.pass => Verdict::IdenticalBytes,
            Some(_) => Verdict::BytesDiffer,
            None => Verdict::SameStructure,
        },
    }
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
    // An embedding row only matters for inputs holding its token: the logits level also runs the
    // tokens whose rows differ (up to `EXTRA_TOKENS` of them), so a changed row cannot hide from a
    // sample that happens not to contain it.
    let mut embedding_rows = None;
    let mut run_opts = std::borrow::Cow::Borrowed(opts);
    if opts.level >= Level::Logits
        && let Some(bt) = &bytes
        && let Some(rows) = embedding_rows_to_run(a, b, bt)?
    {
        let len = opts.sequences.first().map_or(0, Vec::len);
        let run = |seqs: &[Vec<u32>]| -> std::collections::BTreeSet<u32> {
            seqs.iter()
                .flatten()
                .copied()
                .filter(|&t| rows.row_differs.get(t as usize).copied().unwrap_or(false))
                .collect()
        };
        let already = run(&opts.sequences);
        let extra: Vec<u32> = (0..rows.row_differs.len())
            .filter(|&r| rows.row_differs[r])
            .filter_map(|r| u32::try_from(r).ok())
            .filter(|t| !already.contains(t))
            .take(EXTRA_TOKENS)
            .collect();
        let added = if len > 0 { extra.len() } else { 0 };
        if added > 0 {
            let mut o = opts.clone();
            o.sequences.extend(extra_sequences(&extra, len));
            run_opts = std::borrow::Cow::Owned(o);
        }
        embedding_rows = Some(EmbeddingRows {
            differing: rows.differing,
            exercised: run(&run_opts.sequences).len(),
            added,
        });
    }
    let mut logits = if opts.level >= Level::Logits {
        Some(compare_logits(a, b, &run_opts, progress)?)
    } else {
        None
    };
    // Differing values are acceptable only when the logits level ran and stayed within a tolerance
    // the user stated (a dtype conversion, say).
    let exact = opts.atol == 0.0 && opts.rtol == 0.0;
    // Quantized weights with no stated tolerance: judged against the type's bands instead of
    // exactness (`quant.rs`): the logits by their NMSE, each quantized tensor by its weight NMSE,
    // and no other tensor may differ except floats widened without a change of value (llama.cpp
    // stores norms in F32 whatever the source dtype).
    let mut quant = match exact && opts.level >= Level::Bytes {
        true => quant::check(a, b)?,
        false => None,
    };
    if let (Some(q), Some(Ok(l))) = (&quant, logits.as_mut()) {
        l.pass = l.nmse <= q.logits_band;
    }
    // Tensors of a block type ckpt cannot decode (IQ*, TQ*, MXFP4) against the source's floats:
    // their bytes differ whatever the model, so they rule nothing out; with the logits unable to
    // run on them, such a run is inconclusive, never "not equivalent" on their account.
    // In a GGUF, a float tensor stored narrower (`--outtype f16`, an F16 embedding beside Q8_0)
    // whose values are exactly the source's rounded to that type is the source's tensor too.
    let mut judged = bytes.clone();
    if let Some(j) = judged.as_mut() {
        let mut kept = Vec::with_capacity(j.differing.len());
        for (p, d) in std::mem::take(&mut j.differing) {
            let narrowed = quant
                .as_ref()
                .is_some_and(|q| q.rounded.iter().any(|(n, _)| *n == p.canonical));
            if !narrowed && !quant::unjudged(p.a_dtype, p.b_dtype) {
                if let Some(q) = quant.as_mut()
                    && quant::is_float_change(p.a_dtype, p.b_dtype)
                    && d.as_ref().is_some_and(|v| v.max_abs != 0.0)
                {
                    q.not_rounded.push(p.canonical.clone());
                }
                kept.push((p, d));
            }
        }
        j.differing = kept;
    }
    let verdict = match &quant {
        None => decide(&structure, judged.as_ref(), logits.as_ref(), exact),
        Some(q) => {
            let mut bytes_ok = true;
            for (p, d) in judged.iter().flat_map(|b| &b.differing) {
                let ok = d.as_ref().is_some_and(|v| v.max_abs == 0.0)
                    || p.a_dtype.is_some_and(|d| d.is_block())
                        != p.b_dtype.is_some_and(|d| d.is_block());
                if !ok {
                    bytes_ok = false;
                    break;
                }
            }
            match decide(&structure, bytes.as_ref(), logits.as_ref(), false) {
                Verdict::Equivalent if !(q.weights_pass() && bytes_ok) => Verdict::NotEquivalent,
                v => v,
            }
        }
    };
    Ok(Report {
        family_a: a.family.clone(),
        family_b: b.family.clone(),
        structure,
        bytes,
        logits,
        level: opts.level,
        embedding_rows,
        quant,
        verdict,
        equivalent: verdict == Verdict::Equivalent,
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
        configs: (a.config.is_some(), b.config.is_some()),
    };
    for ta in &a.tensors {
        match b.get(&ta.name) {
            None if redundant_tied_head(a, ta) && redundant_pair(b) => {}
            None if zero_bias(a, ta) => {}
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
        if a.get(&tb.name).is_none()
            && !(redundant_tied_head(b, tb) && redundant_pair(a))
            && !zero_bias(b, tb)
        {
            s.only_b.push(pair(&tb.name, None, Some(tb)));
        }
    }
    s.config_differs = config_differences(a, b);
    // Each side computes in its own family's math: behaviour one side has and the other cannot
    // express (a sliding window, NoPE layers, q/k norms) is a difference whatever the sampled
    // logits say. Differences that arithmetic on weights reproduces (multipliers, NormHead) are
    // judged by the logits.
    if let (Some(Ok(ma)), Some(Ok(mb))) = (&a.math, &b.math) {
        let bridge = crate::mapping::math::bridge(ma, mb);
        for what in bridge.lossy.iter().chain(&bridge.impossible) {
            s.config_differs.push((
                "computation".into(),
                format!("{} math", a.family).into(),
                format!("{} math: {what}", b.family).into(),
            ));
        }
    }
    s.pass = s.only_a.is_empty()
        && s.only_b.is_empty()
        && s.shape_differs.is_empty()
        && s.config_differs.is_empty();
    s
}

/// Whether `t` is a stored `lm_head.weight` that the view's config ties to the embedding and whose
/// bytes are the embedding's: what transformers 4's `save_pretrained(safe_serialization=False)`
/// writes for a tied model (the shared storage pickled under both names), and what every loader
/// ignores. Not a structural difference from the same model saved without it.
fn redundant_tied_head(v: &View<'_>, t: &ViewTensor) -> bool {
    if t.name != "lm_head.weight"
        || v.config.as_ref().and_then(|c| c.tie_word_embeddings) != Some(true)
    {
        return false;
    }
    let Some(e) = v.get("model.embed_tokens.weight") else {
        return false;
    };
    e.shape == t.shape && tensor_bytes_equal(v, t, v, e).unwrap_or(false)
}

/// Whether `t` is an all-zero projection bias (`..._proj.bias`, every byte 0): what a projection
/// without a bias computes, as Qwen2's class stores for a LLaMA converted to it. Not a structural
/// difference from the same model without it.
fn zero_bias(v: &View<'_>, t: &ViewTensor) -> bool {
    t.name.ends_with("_proj.bias")
        && matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
        && v.read(t).is_ok_and(|b| b.iter().all(|&x| x == 0))
}

/// Whether the other side ties its embedding too (so it computes with the embedding as its head).
fn redundant_pair(v: &View<'_>) -> bool {
    v.config.as_ref().and_then(|c| c.tie_word_embeddings) == Some(true)
}

fn config_differences(a: &View<'_>, b: &View<'_>) -> Vec<(String, Value, Value)> {
    let (Some(ca), Some(cb)) = (&a.config, &b.config) else {
        return Vec::new();
    };
    // Values as JSON (numbers as numbers, `null` where the config does not give one), so reports
    // never show Rust's `Debug` forms.
    fn j<T: serde::Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }
    let rope = |c: &crate::checkpoint::ModelConfig| {
        c.rope_scaling.as_ref().map(|s| {
            serde_json::json!({
                "rope_type": s.rope_type, "factor": s.factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
                "low_freq_factor": s.low_freq_factor, "high_freq_factor": s.high_freq_factor,
            })
        })
    };
    let fields: Vec<(&str, Value, Value)> = vec![
        ("hidden_size", j(ca.hidden_size), j(cb.hidden_size)),
        (
            "num_hidden_layers",
            j(ca.num_hidden_layers),
            j(cb.num_hidden_layers),
        ),
        (
            "num_attention_heads",
            j(ca.num_attention_heads),
            j(cb.num_attention_heads),
        ),
        (
            "num_key_value_heads",
            j(ca.resolved_kv_heads()),
            j(cb.resolved_kv_heads()),
        ),
        (
            "head_dim",
            j(ca.resolved_head_dim()),
            j(cb.resolved_head_dim()),
        ),
        (
            "intermediate_size",
            j(ca.intermediate_size),
            j(cb.intermediate_size),
        ),
        ("vocab_size", j(ca.vocab_size), j(cb.vocab_size)),
        ("rms_norm_eps", j(ca.rms_norm_eps), j(cb.rms_norm_eps)),
        (
            "rope_theta",
            j(ca.rope_theta.unwrap_or(10000.0)),
            j(cb.rope_theta.unwrap_or(10000.0)),
        ),
        ("rope_scaling", j(rope(ca)), j(rope(cb))),
        (
            "tie_word_embeddings",
            j(ca.tie_word_embeddings.unwrap_or(false)),
            j(cb.tie_word_embeddings.unwrap_or(false)),
        ),
        (
            "hidden_act",
            j(ca.hidden_act.as_deref().unwrap_or("silu")),
            j(cb.hidden_act.as_deref().unwrap_or("silu")),
        ),
    ];
    fields
        .into_iter()
        .filter(|(k, x, y)| {
            x != y
                && !(*k == "rope_scaling" && same_llama3_frequencies(ca, cb))
                && !(*k == "hidden_act" && same_activation(x, y))
        })
        .map(|(k, x, y)| (k.to_string(), x, y))
        .collect()
}

/// Whether two activation names are one function (`gelu_new` and `gelu_pytorch_tanh` are both the
/// tanh GELU in transformers' `ACT2FN`).
fn same_activation(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use reference::math::Activation;
    match (
        a.as_str().and_then(Activation::parse),
        b.as_str().and_then(Activation::parse),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Whether two `llama3` rope scalings written with different parameters give the same rotary
/// frequencies. The parameters are determined by the frequencies only up to a common scale of
/// `(low_freq_factor, high_freq_factor, original_max_position_embeddings)`: llama.cpp's GGUF
/// stores the frequency factors, and reading them back gives `low_freq_factor = 1`
/// (docs/GGUF.md), so `(2, 8, 100)` and `(1, 4, 50)` are one computation. Judged on the inverse
/// frequencies the reference computes, bit for bit.
fn same_llama3_frequencies(
    a: &crate::checkpoint::ModelConfig,
    b: &crate::checkpoint::ModelConfig,
) -> bool {
    use reference::config::{Config, RopeScaling};
    let (Ok(ra), Ok(rb)) = (Config::from_model_config(a), Config::from_model_config(b)) else {
        return false;
    };
    matches!(ra.rope_scaling, RopeScaling::Llama3 { .. })
        && matches!(rb.rope_scaling, RopeScaling::Llama3 { .. })
        && ra.rope_theta == rb.rope_theta
        && ra.rotary_dim == rb.rotary_dim
        && ra.inv_freq(1) == rb.inv_freq(1)
}

/// Borrow gathered or mapped chunks as plain slices.
fn refs<'c>(chunks: &'c [std::borrow::Cow<'_, [u8]>]) -> Vec<&'c [u8]> {
    chunks.iter().map(|c| &**c).collect()
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

/// Whether two view tensors hold the same bytes: the same dtype, the same length and equal byte
/// streams, compared zero-copy over the two views' mmap slices in 64 KiB steps. A segment that is
/// the same region of the same file (device and inode) on both sides is equal without being read,
/// so a checkpoint compared with itself costs nothing. Both tensors' pages are released afterwards.
/// `verify`'s bytes level and `diff` both use this one comparison.
pub fn tensor_bytes_equal(
    a: &View<'_>,
    ta: &ViewTensor,
    b: &View<'_>,
    tb: &ViewTensor,
) -> Result<bool> {
    if ta.dtype != tb.dtype || ta.nbytes() != tb.nbytes() {
        return Ok(false);
    }
    let same =
        same_regions(a, ta, b, tb) || streams_equal(&refs(&chunks(a, ta)?), &refs(&chunks(b, tb)?));
    // Done reading: keep the resident set at about one tensor, not two models.
    a.release(ta);
    b.release(tb);
    Ok(same)
}

/// Every segment of `ta` is the same file region as the matching segment of `tb`.
fn same_regions(a: &View<'_>, ta: &ViewTensor, b: &View<'_>, tb: &ViewTensor) -> bool {
    let file = |v: &View<'_>, seg: &Segment| {
        v.segment_location(seg)
            .and_then(|(si, off, len)| v.ckpt.shards.get(si).map(|s| (s.dev_ino, off, len)))
    };
    ta.segments.len() == tb.segments.len()
        && ta
            .segments
            .iter()
            .zip(&tb.segments)
            .all(|(x, y)| match (x, y) {
                (Segment::Zeros { bytes: p }, Segment::Zeros { bytes: q }) => p == q,
                (Segment::Rows { .. }, Segment::Rows { .. }) => {
                    matches!((file(a, x), file(b, y)), (Some(p), Some(q)) if p == q)
                }
                _ => false,
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
        r.bytes += ta.nbytes() as u64;
        progress("bytes", r.bytes, total);
        if tensor_bytes_equal(a, ta, b, tb)? {
            r.identical += 1;
            continue;
        }
        // Only differing tensors are decoded, streamed in blocks.
        let diff = if values::is_float_pair(ta, tb) {
            let v = values::compare(a, ta, b, tb, None)?;
            a.release(ta);
            b.release(tb);
            Some(v)
        } else {
            None
        };
        r.differing.push((pair(&ta.name, Some(ta), Some(tb)), diff));
    }
    r.pass = r.differing.is_empty();
    Ok(r)
}

/// The logits level: `Ok(Err(..))` when a forward pass could not run (the reference refuses the
/// config, the input, a dtype...), `Err` only for I/O failures, interruptions and bugs.
fn compare_logits(
    a: &View<'_>,
    b: &View<'_>,
    opts: &Options,
    progress: &Progress<'_>,
) -> Result<std::result::Result<LogitsCmp, NotRun>> {
    let side = |which: &str, r: Result<Logits>| -> Result<std::result::Result<Logits, NotRun>> {
        match r {
            Ok(l) => Ok(Ok(l)),
            Err(e) => match e.kind() {
                ErrorKind::Io | ErrorKind::Interrupted | ErrorKind::Internal => Err(e),
                kind => Ok(Err(NotRun {
                    kind,
                    reason: format!("forward pass on {which}: {e}"),
                    hint: e.hint_text().map(str::to_string),
                })),
            },
        }
    };
    let la = reference::forward_with_progress(a, &opts.sequences, opts.isa, &|d, t| {
        progress("logits A", d as u64, t as u64)
    });
    let la = match side("A", la)? {
        Ok(l) => l,
        Err(n) => return Ok(Err(n)),
    };
    let lb = reference::forward_with_progress(b, &opts.sequences, opts.isa, &|d, t| {
        progress("logits B", d as u64, t as u64)
    });
    let lb = match side("B", lb)? {
        Ok(l) => l,
        Err(n) => return Ok(Err(n)),
    };
    Ok(
        logits_metrics(&la, &lb, opts.atol, opts.rtol).map_err(|reason| NotRun {
            kind: ErrorKind::BadData,
            reason,
            hint: None,
        }),
    )
}

/// Compare two sets of logits.
///
/// Finite pairs give the absolute difference; a pair with a non-finite member agrees only when both
/// hold the same value (NaN against NaN, `+inf` against `+inf`) and is otherwise counted in
/// `nonfinite_differ`, a disagreement whatever the tolerance. The scale (and so the tolerance) comes
/// from A's finite logits only, so it is never NaN. Cosine, top-k and KL are computed per position;
/// a position with a non-finite logit has no KL (`kl_skipped`), and its cosine uses the finite
/// pairs.
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
    let (mut top1, mut top5, mut kl_skipped) = (0usize, 0usize, 0usize);
    let (mut nonfinite_a, mut nonfinite_b, mut nonfinite_differ) = (0u64, 0u64, 0u64);
    for p in 0..positions {
        let (Some(xa), Some(xb)) = (
            a.data.get(p * v..(p + 1) * v),
            b.data.get(p * v..(p + 1) * v),
        ) else {
            return Err(format!(
                "the logits hold fewer values than [{}, {}, {}]",
                a.batch, a.seq, a.vocab
            ));
        };
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        let mut row_finite = true;
        for (&x, &y) in xa.iter().zip(xb) {
            let (x, y) = (f64::from(x), f64::from(y));
            if !(x.is_finite() && y.is_finite()) {
                row_finite = false;
                nonfinite_a += u64::from(!x.is_finite());
                nonfinite_b += u64::from(!y.is_finite());
                let same = (x.is_nan() && y.is_nan()) || x == y;
                nonfinite_differ += u64::from(!same);
                if x.is_finite() {
                    scale = scale.max(x.abs());
                }
                continue;
            }
            max_abs = max_abs.max((x - y).abs());
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
        if row_finite {
            max_kl = max_kl.max(kl(xa, xb));
        } else {
            kl_skipped += 1;
        }
    }
    let tolerance = atol + rtol * scale;
    let n = positions.max(1) as f64;
    Ok(LogitsCmp {
        pass: max_abs <= tolerance && nonfinite_differ == 0,
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
        nonfinite_a,
        nonfinite_b,
        nonfinite_differ,
        kl_skipped,
        nmse: quant::nmse(&a.data, &b.data),
    })
}

/// Indices of the `k` largest values, largest first; NaN sorts last (a total order, so sorting never
/// sees an inconsistent comparison).
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    use std::cmp::Ordering;
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let desc = |p: f32, q: f32| match (p.is_nan(), q.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => q.partial_cmp(&p).unwrap_or(Ordering::Equal),
    };
    idx.sort_by(|&i, &j| desc(x[i], x[j]).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// KL(softmax(a) || softmax(b)) in f64 (finite rows only).
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
            outputs: crate::reference::Outputs::Every,
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

    fn logits(data: Vec<f32>) -> Logits {
        Logits {
            batch: 1,
            seq: 2,
            vocab: 3,
            outputs: crate::reference::Outputs::Every,
            data,
        }
    }

    #[test]
    fn non_finite_logits_compare_by_identity() {
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        // The same non-finite values at the same positions agree; the tolerance stays a number.
        let a = logits(vec![1.0, inf, 3.0, nan, nan, nan]);
        let same = logits_metrics(&a, &a.clone(), 0.0, 1e-3).unwrap();
        assert!(same.pass, "{same:?}");
        assert_eq!((same.nonfinite_a, same.nonfinite_b), (4, 4));
        assert_eq!(same.nonfinite_differ, 0);
        assert_eq!(same.scale, 3.0, "the scale comes from finite values only");
        assert!((same.tolerance - 3e-3).abs() < 1e-12 && same.max_abs == 0.0);
        assert_eq!(same.kl_skipped, 2);
        // NaN against a finite value, and +inf against -inf, disagree whatever the tolerance.
        let b = logits(vec![1.0, inf, 3.0, 0.0, nan, nan]);
        let d = logits_metrics(&a, &b, 1e9, 1e9).unwrap();
        assert!(!d.pass && d.nonfinite_differ == 1, "{d:?}");
        assert!(d.tolerance.is_finite() && d.max_abs == 0.0);
        let c = logits(vec![1.0, -inf, 3.0, nan, nan, nan]);
        let d = logits_metrics(&a, &c, 1e9, 1e9).unwrap();
        assert!(!d.pass && d.nonfinite_differ == 1, "{d:?}");
        // A finite side against an all-NaN one.
        let finite = logits(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let all_nan = logits(vec![nan; 6]);
        let d = logits_metrics(&finite, &all_nan, 0.0, 0.0).unwrap();
        assert!(
            !d.pass && d.nonfinite_differ == 6 && d.nonfinite_b == 6,
            "{d:?}"
        );
        assert_eq!(d.tolerance, 0.0);
    }

    #[test]
    fn top_k_orders_nan_last_without_panicking() {
        let x = [f32::NAN, 2.0, f32::NAN, 5.0, -1.0, f32::INFINITY];
        assert_eq!(top_k(&x, 4), vec![5, 3, 1, 4]);
        assert_eq!(top_k(&x, 6)[4..], [0, 2]);
    }

    fn structure(pass: bool) -> Structure {
        Structure {
            pass,
            common: 1,
            only_a: Vec::new(),
            only_b: Vec::new(),
            shape_differs: Vec::new(),
            dtype_differs: Vec::new(),
            config_differs: Vec::new(),
            configs: (true, true),
        }
    }

    #[test]
    fn verdicts_claim_only_what_ran() {
        // `differing`: None = all bytes equal; Some(n) = one tensor whose values differ in n elements
        // (0: the same numbers in other bytes, e.g. -0 and +0).
        let bytes = |differing: Option<u64>| Bytes {
            pass: differing.is_none(),
            compared: 1,
            identical: usize::from(differing.is_none()),
            bytes: 4,
            differing: differing
                .map(|n| {
                    let p = Pair {
                        canonical: "w".into(),
                        a_name: "w".into(),
                        b_name: "w".into(),
                        a_shape: vec![1],
                        b_shape: vec![1],
                        a_dtype: Some(Dtype::F32),
                        b_dtype: Some(Dtype::F32),
                    };
                    let v = ValueDiff {
                        max_abs: n as f64,
                        rel_l2: 0.0,
                        cosine: 1.0,
                        differing: n,
                        elements: 1,
                        nonfinite_a: 0,
                        nonfinite_b: 0,
                    };
                    vec![(p, Some(v))]
                })
                .unwrap_or_default(),
        };
        let (same, numerically_same, differ) = (bytes(None), bytes(Some(0)), bytes(Some(1)));
        let a = logits(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let ok = logits_metrics(&a, &a, 0.0, 0.0).unwrap();
        let mut b = a.clone();
        b.data[0] = 9.0;
        let bad = logits_metrics(&a, &b, 0.0, 0.0).unwrap();
        let not_run = NotRun {
            kind: ErrorKind::BadData,
            reason: "no config".into(),
            hint: None,
        };
        let (t, f) = (structure(true), structure(false));
        use Verdict::*;
        let exact = true;
        assert_eq!(decide(&t, None, None, exact), SameStructure);
        assert_eq!(decide(&f, None, None, exact), StructureDiffers);
        assert_eq!(decide(&t, Some(&same), None, exact), IdenticalBytes);
        assert_eq!(decide(&t, Some(&differ), None, exact), BytesDiffer);
        assert_eq!(decide(&f, Some(&same), None, exact), StructureDiffers);
        let l = |r: std::result::Result<LogitsCmp, NotRun>| Some(r);
        let ok_l = l(Ok(ok.clone()));
        assert_eq!(decide(&t, Some(&same), ok_l.as_ref(), exact), Equivalent);
        // Values that differ at the exact default tolerance are not equivalent even when the sampled
        // logits agree; with a stated tolerance they are; -0 against +0 always is.
        assert_eq!(
            decide(&t, Some(&differ), ok_l.as_ref(), exact),
            NotEquivalent
        );
        assert_eq!(decide(&t, Some(&differ), ok_l.as_ref(), false), Equivalent);
        assert_eq!(
            decide(&t, Some(&numerically_same), ok_l.as_ref(), exact),
            Equivalent
        );
        assert_eq!(decide(&f, Some(&same), ok_l.as_ref(), exact), NotEquivalent);
        let bad_l = l(Ok(bad));
        assert_eq!(
            decide(&t, Some(&same), bad_l.as_ref(), false),
            NotEquivalent
        );
        let err = l(Err(not_run));
        assert_eq!(decide(&t, Some(&same), err.as_ref(), exact), Inconclusive);
        assert_eq!(
            decide(&t, Some(&differ), err.as_ref(), exact),
            NotEquivalent
        );
        assert_eq!(decide(&t, Some(&differ), err.as_ref(), false), Inconclusive);
        assert_eq!(decide(&f, Some(&same), err.as_ref(), exact), NotEquivalent);
        for (v, code) in [
            (Equivalent, 0),
            (SameStructure, 0),
            (IdenticalBytes, 0),
            (NotEquivalent, 1),
            (StructureDiffers, 1),
            (BytesDiffer, 1),
            (Inconclusive, 2),
        ] {
            assert_eq!(v.exit_code(), code, "{v:?}");
        }
    }

    #[test]
    fn rows_are_read_across_chunk_boundaries() {
        let chunks: Vec<&[u8]> = vec![b"abc", b"defg", b"h", b"ijkl"];
        let mut r = RowReader::new(&chunks);
        let rows: Vec<Vec<u8>> = (0..4).map(|_| r.next_row(3).into_owned()).collect();
        assert_eq!(
            rows,
            [
                b"abc".to_vec(),
                b"def".to_vec(),
                b"ghi".to_vec(),
                b"jkl".to_vec()
            ]
        );
        assert_eq!(extra_sequences(&[7, 8, 9], 2), vec![vec![7, 8], vec![9, 9]]);
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
