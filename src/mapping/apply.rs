//! Applying a family's rules: a checkpoint seen under canonical LLaMA names ([`canonical_view`]) and a
//! canonical view seen under a family's names ([`to_family`], the inverse).
//!
//! Every transform is a row gather, so each produced tensor is a list of [`Segment`]s over the
//! physical tensors. The inverse resolves rows of the canonical view back to physical segments, so
//! A -> canonical -> A yields the original segments (merged back to whole tensors).

use std::collections::{HashMap, HashSet};

use super::configmap::{self, TensorFacts};
use super::family::{Family, Quantity, Rule, RuleEntry};
use super::pattern::{Bindings, RenameRule, apply_renames};
use super::view::{Segment, View, ViewTensor, merge_segments, row_bytes, rows_of};
use crate::checkpoint::header::Dtype;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::{Error, Result, escape};

/// The config quantities rules are sized by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantities {
    /// `hidden_size`.
    pub hidden: Option<usize>,
    /// `num_attention_heads`.
    pub heads: Option<usize>,
    /// `num_key_value_heads` (defaults to the head count).
    pub kv_heads: Option<usize>,
    /// `head_dim` (defaults to hidden / heads).
    pub head_dim: Option<usize>,
    /// `intermediate_size`.
    pub intermediate: Option<usize>,
    /// `vocab_size`.
    pub vocab: Option<usize>,
}

impl Quantities {
    /// From a (LLaMA-named) config.
    pub fn from_config(c: Option<&ModelConfig>) -> Quantities {
        let Some(c) = c else {
            return Quantities::default();
        };
        Quantities {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.resolved_kv_heads(),
            head_dim: c.resolved_head_dim(),
            intermediate: c.intermediate_size,
            vocab: c.vocab_size,
        }
    }

    /// The value of a quantity, if known.
    pub fn value(&self, q: Quantity) -> Option<usize> {
        match q {
            Quantity::Hidden => self.hidden,
            Quantity::Heads => self.heads,
            Quantity::KvHeads => self.kv_heads,
            Quantity::HeadDim => self.head_dim,
            Quantity::Q => self.heads?.checked_mul(self.head_dim?),
            Quantity::Kv => self.kv_heads?.checked_mul(self.head_dim?),
            Quantity::Intermediate => self.intermediate,
            Quantity::Vocab => self.vocab,
        }
    }

    fn need(&self, q: Quantity, fam: &Family, r: &RuleEntry, tensor: &str) -> Result<usize> {
        self.value(q).filter(|&v| v > 0).ok_or_else(|| {
            let key = match q {
                Quantity::Hidden => "hidden_size",
                Quantity::Heads | Quantity::Q => "num_attention_heads",
                Quantity::KvHeads | Quantity::Kv => "num_key_value_heads",
                Quantity::HeadDim => "head_dim (or hidden_size and num_attention_heads)",
                Quantity::Intermediate => "intermediate_size",
                Quantity::Vocab => "vocab_size",
            };
            Error::bad_data(format!(
                "rule {} needs `{}` ({key}) from the config, which does not give it",
                r.origin,
                q.name()
            ))
            .file(&fam.file)
            .tensor(tensor)
            .hint("add config.json next to the weights")
        })
    }
}

fn size_error(fam: &Family, r: &RuleEntry, tensor: &str, msg: String) -> Error {
    Error::bad_data(format!("rule {}: {msg}", r.origin))
        .file(&fam.file)
        .tensor(tensor)
}

/// Within one head of `hd` rows, the Meta (interleaved) row that HF (half-split) row `j` comes from.
pub fn meta_row_of_hf(j: usize, hd: usize) -> usize {
    let half = hd / 2;
    if j < half { 2 * j } else { 2 * (j - half) + 1 }
}

/// Within one head of `hd` rows, the HF (half-split) row that Meta (interleaved) row `m` comes from.
pub fn hf_row_of_meta(m: usize, hd: usize) -> usize {
    if m.is_multiple_of(2) {
        m / 2
    } else {
        hd / 2 + m / 2
    }
}

/// How the tensors of a checkpoint match a family's rules (no config needed).
#[derive(Debug)]
pub struct Matched<'f> {
    /// Per physical tensor: the effective name (after ad-hoc renames), and its rule with bindings.
    pub entries: Vec<(String, &'f RuleEntry, Bindings)>,
}

/// Match every tensor of `ck` (renamed by `renames`) against `family`: an error naming the first
/// tensor no rule maps, or one two rules match.
pub fn match_tensors<'f>(
    ck: &Checkpoint,
    family: &'f Family,
    renames: &[RenameRule],
) -> Result<Matched<'f>> {
    let names: Vec<String> = ck.tensors.iter().map(|t| t.name.clone()).collect();
    let names = apply_renames(&names, renames).map_err(|e| e.file(&ck.path))?;
    let mut entries = Vec::with_capacity(names.len());
    for (i, n) in names.into_iter().enumerate() {
        let Some(r) = family.rule_for(&n)? else {
            // A projection bias the family's class does not have (Qwen2's o_proj) is that, not a
            // gap in the mapping file.
            if let Err(why) =
                family
                    .biases
                    .check(&family.name, &n, ck.config.as_ref().map(|c| &c.raw))
            {
                return Err(unexpected_bias(&ck.tensors[i].name, why, family).file(&ck.path));
            }
            return Err(Error::bad_data(format!(
                "no rule of family `{}` ({}) maps this tensor",
                family.name, family.file
            ))
            .file(&ck.path)
            .tensor(&ck.tensors[i].name)
            .cause(crate::error::Cause::TensorUnmapped {
                family: family.name.clone(),
            }));
        };
        let b = r
            .rule
            .from()
            .and_then(|p| p.matches(&n))
            .unwrap_or_default();
        entries.push((n, r, b));
    }
    Ok(Matched { entries })
}

/// The checkpoint under canonical LLaMA names: tensors renamed, split and permuted by the family's
/// rules, dropped buffers listed in `view.dropped`, and `view.config` rewritten to LLaMA.
pub fn canonical_view<'a>(
    ck: &'a Checkpoint,
    family: &Family,
    renames: &[RenameRule],
) -> Result<View<'a>> {
    if family.detect_only {
        return Err(Error::unsupported(format!(
            "family `{}` is recognised only, not converted: {}",
            family.name,
            family
                .note
                .as_deref()
                .unwrap_or("it is not LLaMA-equivalent")
        ))
        .file(&ck.path));
    }
    let m = match_tensors(ck, family, renames)?;
    // Facts the config mapping needs, from names and shapes alone.
    let mut facts = TensorFacts::default();
    for (i, (_, r, b)) in m.entries.iter().enumerate() {
        let t = &ck.tensors[i];
        for target in r.rule.targets() {
            let name = target.render(b);
            if name == "model.embed_tokens.weight" {
                facts.vocab = t.shape.first().copied();
                facts.dtype = Some(t.dtype);
            }
            if name == "model.layers.0.mlp.gate_proj.weight"
                && matches!(r.rule, Rule::Rename { .. })
            {
                facts.intermediate = t.shape.first().copied();
            }
            // A bias the family's own class does not compute: its loader drops it, a LLaMA
            // loader of the converted names would use it.
            family
                .biases
                .check(&family.name, &name, ck.config.as_ref().map(|c| &c.raw))
                .map_err(|why| unexpected_bias(&t.name, why, family).file(&ck.path))?;
            facts.attention_bias |= name.ends_with(".self_attn.q_proj.bias")
                || name.ends_with(".self_attn.o_proj.bias");
            facts.mlp_bias |= name.ends_with(".mlp.gate_proj.bias");
            facts.lm_head |= name == "lm_head.weight";
        }
    }
    let config = ck
        .config
        .as_ref()
        .map(|c| configmap::to_llama(c, family, &facts))
        .transpose()?;
    let q = Quantities::from_config(config.as_ref());
    let mut out: Vec<ViewTensor> = Vec::with_capacity(ck.tensors.len());
    let mut dropped = Vec::new();
    for (i, (_, r, b)) in m.entries.iter().enumerate() {
        let t = &ck.tensors[i];
        let rows = rows_of(t);
        let whole = |name: String, transform: &'static str, segments: Vec<Segment>| ViewTensor {
            name,
            dtype: t.dtype,
            shape: t.shape.clone(),
            segments,
            sources: vec![t.name.clone()],
            transform,
        };
        match &r.rule {
            Rule::Rename { from, to } => {
                let name = to.render(b);
                let tr = if name == t.name && from == to {
                    "same"
                } else {
                    "rename"
                };
                out.push(whole(
                    name,
                    tr,
                    vec![Segment::Rows {
                        tensor: i,
                        row_start: 0,
                        rows,
                    }],
                ));
            }
            Rule::Permute { to, heads, .. } => {
                let n = q.need(*heads, family, r, &t.name)?;
                let hd = rotary_head_rows(rows, n, q.head_dim, family, r, &t.name)?;
                let mut segs = Vec::with_capacity(rows);
                for h in 0..n {
                    for j in 0..hd {
                        segs.push(Segment::Rows {
                            tensor: i,
                            row_start: h * hd + meta_row_of_hf(j, hd),
                            rows: 1,
                        });
                    }
                }
                out.push(whole(to.render(b), "permute", merge_segments(segs)));
            }
            Rule::Split {
                into,
                rows: sizes,
                grouped,
                ..
            } => {
                let parts = split_parts(rows, sizes, *grouped, &q, family, r, &t.name)?;
                for (target, segs) in into.iter().zip(parts) {
                    let n: usize = segs
                        .iter()
                        .map(|s| match s {
                            Segment::Rows { rows, .. } => *rows,
                            Segment::Zeros { .. } => 0,
                        })
                        .sum();
                    let mut shape = t.shape.clone();
                    if let Some(s0) = shape.first_mut() {
                        *s0 = n;
                    }
                    out.push(ViewTensor {
                        name: target.render(b),
                        dtype: t.dtype,
                        shape,
                        segments: merge_segments(
                            segs.into_iter()
                                .map(|s| match s {
                                    Segment::Rows {
                                        row_start, rows, ..
                                    } => Segment::Rows {
                                        tensor: i,
                                        row_start,
                                        rows,
                                    },
                                    z => z,
                                })
                                .collect(),
                        ),
                        sources: vec![t.name.clone()],
                        transform: "split",
                    });
                }
            }
            Rule::Drop { reason, .. } => dropped.push((t.name.clone(), reason.clone())),
            Rule::Zeros { .. } => {}
        }
    }
    add_zeros(&mut out, family, &q)?;
    tied_head_as_embeddings(&mut out, config.as_ref());
    let mut v = View::new(ck, family.name.clone(), "llama", out, config, dropped)
        .map_err(|e| e.file(&ck.path))?;
    // A family view always carries the computation its family means (never LLaMA by default);
    // `detect::open_view` re-resolves it when the user asserts the family.
    let r = super::math::for_checkpoint(family, ck.config.as_ref());
    v.math = Some(r.usable(&family.name, false).cloned());
    Ok(v)
}

/// A tied model stored as its output layer only: `safetensors.torch.save_model` keeps one name of
/// each shared tensor, and for a tied LLaMA that is `lm_head.weight` (its metadata then records
/// `model.embed_tokens.weight=lm_head.weight`). transformers ties the embeddings to it on load, so
/// the view reads it as the embeddings of a tied model, the form `save_pretrained` writes. Only
/// when the config ties and no embeddings are stored.
fn tied_head_as_embeddings(out: &mut [ViewTensor], config: Option<&ModelConfig>) {
    if config.and_then(|c| c.tie_word_embeddings) != Some(true)
        || out.iter().any(|t| t.name == "model.embed_tokens.weight")
    {
        return;
    }
    if let Some(head) = out.iter_mut().find(|t| t.name == "lm_head.weight") {
        head.name = "model.embed_tokens.weight".into();
        head.transform = "rename";
    }
}

/// Rows per head for a rotary permutation of a tensor of `rows` rows over `n` heads.
/// Rotary pairs live within one head, so a head is `head_dim` rows when the config says: `heads`
/// where `kv_heads` was meant also divides a GQA key's rows, into heads of the wrong size.
fn rotary_head_rows(
    rows: usize,
    n: usize,
    head_dim: Option<usize>,
    fam: &Family,
    r: &RuleEntry,
    tensor: &str,
) -> Result<usize> {
    if !rows.is_multiple_of(n) || !(rows / n).is_multiple_of(2) {
        return Err(size_error(
            fam,
            r,
            tensor,
            format!("{rows} rows do not split into {n} heads of an even number of rows"),
        ));
    }
    if let Some(hd) = head_dim.filter(|&hd| hd != rows / n) {
        return Err(size_error(
            fam,
            r,
            tensor,
            format!(
                "{rows} rows over {n} heads are heads of {} rows, but the config's head_dim is {hd}",
                rows / n
            ),
        ));
    }
    Ok(rows / n)
}

/// The row ranges (as `Rows` segments with tensor 0) of each part of a fused tensor.
fn split_parts(
    rows: usize,
    sizes: &[Quantity],
    grouped: bool,
    q: &Quantities,
    fam: &Family,
    r: &RuleEntry,
    tensor: &str,
) -> Result<Vec<Vec<Segment>>> {
    let seg = |row_start: usize, rows: usize| Segment::Rows {
        tensor: 0,
        row_start,
        rows,
    };
    if grouped {
        let (nh, nkv, hd) = (
            q.need(Quantity::Heads, fam, r, tensor)?,
            q.need(Quantity::KvHeads, fam, r, tensor)?,
            q.need(Quantity::HeadDim, fam, r, tensor)?,
        );
        if nh % nkv != 0 {
            return Err(size_error(
                fam,
                r,
                tensor,
                format!("{nh} heads do not split into {nkv} key/value groups"),
            ));
        }
        let g = nh / nkv;
        let want = (nh + 2 * nkv).checked_mul(hd);
        if want != Some(rows) {
            return Err(size_error(
                fam,
                r,
                tensor,
                format!(
                    "grouped parts of (heads + 2 * kv_heads) * head_dim = ({nh} + 2 * {nkv}) * {hd} rows do not add up to the fused tensor's {rows} rows"
                ),
            ));
        }
        let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for j in 0..nkv {
            let base = j * (g + 2) * hd;
            qs.push(seg(base, g * hd));
            ks.push(seg(base + g * hd, hd));
            vs.push(seg(base + (g + 1) * hd, hd));
        }
        return Ok(vec![qs, ks, vs]);
    }
    let mut lens = Vec::with_capacity(sizes.len());
    for s in sizes {
        lens.push(q.need(*s, fam, r, tensor)?);
    }
    let total = lens.iter().try_fold(0usize, |a, &b| a.checked_add(b));
    if total != Some(rows) {
        let named: Vec<String> = sizes
            .iter()
            .zip(&lens)
            .map(|(s, n)| format!("{}={n}", s.name()))
            .collect();
        return Err(size_error(
            fam,
            r,
            tensor,
            format!(
                "parts of [{}] rows add up to {} but the fused tensor has {rows} rows",
                named.join(", "),
                total.map_or("overflow".into(), |t| t.to_string())
            ),
        ));
    }
    let mut start = 0;
    Ok(lens
        .into_iter()
        .map(|n| {
            let s = vec![seg(start, n)];
            start += n;
            s
        })
        .collect())
}

/// Add the zero tensors a family leaves out (Qwen2's `o_proj.bias`) where their trigger exists.
fn add_zeros(out: &mut Vec<ViewTensor>, family: &Family, q: &Quantities) -> Result<()> {
    for r in &family.rules {
        let Rule::Zeros { to, rows, when } = &r.rule else {
            continue;
        };
        let mut k = 0;
        while k < out.len() {
            if let Some(b) = when.matches(&out[k].name) {
                let name = to.render(&b);
                if !out.iter().any(|t| t.name == name) {
                    let n = q.need(*rows, family, r, &name)?;
                    let z = zeros_tensor(name, out[k].dtype, n)?;
                    out.insert(k + 1, z);
                }
            }
            k += 1;
        }
    }
    Ok(())
}

/// Row lookup over a view tensor's segments (binary search), for gathers of its rows.
struct RowMap<'v> {
    starts: Vec<usize>,
    segs: &'v [Segment],
    row_len: usize,
    rows: usize,
    name: &'v str,
}

impl<'v> RowMap<'v> {
    fn new(view: &View<'_>, t: &'v ViewTensor) -> Result<RowMap<'v>> {
        let rows = t.shape.first().copied().unwrap_or(1);
        let row_len = t.nbytes().checked_div(rows).unwrap_or(0);
        let mut starts = Vec::with_capacity(t.segments.len());
        let mut pos = 0usize;
        for s in &t.segments {
            starts.push(pos);
            pos += match s {
                Segment::Rows { tensor, rows, .. } => {
                    let info = view
                        .ckpt
                        .tensors
                        .get(*tensor)
                        .ok_or_else(|| Error::internal("bad segment").tensor(&t.name))?;
                    if row_bytes(info) != Some(row_len) {
                        return Err(Error::unsupported(
                            "cannot take rows of a tensor assembled from rows of another width",
                        )
                        .tensor(&t.name));
                    }
                    *rows
                }
                Segment::Zeros { bytes } => bytes.checked_div(row_len).unwrap_or(0),
            };
        }
        Ok(RowMap {
            starts,
            segs: &t.segments,
            row_len,
            rows,
            name: &t.name,
        })
    }

    /// Append rows `[start, start + n)` as physical segments.
    fn push(&self, start: usize, n: usize, out: &mut Vec<Segment>) -> Result<()> {
        let end = start
            .checked_add(n)
            .filter(|&e| e <= self.rows)
            .ok_or_else(|| {
                Error::internal(format!("rows {start}+{n} outside {}", self.rows)).tensor(self.name)
            })?;
        let mut k = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        let mut at = start;
        while at < end {
            let (Some(&s0), Some(seg)) = (self.starts.get(k), self.segs.get(k)) else {
                return Err(Error::internal("row map out of range").tensor(self.name));
            };
            let seg_rows = match seg {
                Segment::Rows { rows, .. } => *rows,
                Segment::Zeros { bytes } => bytes.checked_div(self.row_len).unwrap_or(0),
            };
            let s1 = s0 + seg_rows;
            let take = end.min(s1).saturating_sub(at);
            if take > 0 {
                out.push(match seg {
                    Segment::Rows {
                        tensor, row_start, ..
                    } => Segment::Rows {
                        tensor: *tensor,
                        row_start: row_start + (at - s0),
                        rows: take,
                    },
                    Segment::Zeros { .. } => Segment::Zeros {
                        bytes: take * self.row_len,
                    },
                });
                at += take;
            }
            k += 1;
        }
        Ok(())
    }
}

/// The inverse: a canonical view seen under `family`'s names and config. Segments stay physical, so a
/// round trip A -> canonical -> A yields A's original segments.
pub fn to_family<'a>(canonical: &View<'a>, family: &Family) -> Result<View<'a>> {
    if family.detect_only {
        return Err(Error::unsupported(format!(
            "family `{}` is recognised only, not converted to: {}",
            family.name,
            family
                .note
                .as_deref()
                .unwrap_or("it is not LLaMA-equivalent")
        )));
    }
    let q = Quantities::from_config(canonical.config.as_ref());
    let mut out: Vec<ViewTensor> = Vec::with_capacity(canonical.tensors.len());
    let mut dropped = canonical.dropped.clone();
    let mut done: HashSet<&str> = HashSet::new();
    let ck_path = &canonical.ckpt.path;
    // Biases the family's class always has, written as zeros where the checkpoint has none
    // (LLaMA -> Qwen2): a loader would otherwise report them missing and initialise them its way.
    let zero_biases = missing_biases(canonical, family)?;
    for t in canonical.tensors.iter().chain(&zero_biases) {
        if done.contains(t.name.as_str()) {
            continue;
        }
        let mut hit: Option<(&RuleEntry, usize, Bindings)> = None;
        for r in &family.rules {
            for (k, p) in r.rule.targets().into_iter().enumerate() {
                if let Some(b) = p.matches(&t.name) {
                    hit = Some((r, k, b));
                }
            }
        }
        let Some((r, _, b)) = hit else {
            return Err(Error::unsupported(format!(
                "family `{}` ({}) has no name for this canonical tensor",
                family.name, family.file
            ))
            .file(ck_path)
            .tensor(&t.name));
        };
        match &r.rule {
            Rule::Rename { from, to } => {
                out.push(ViewTensor {
                    name: from.render(&b),
                    transform: if from == to { "same" } else { "rename" },
                    sources: t.sources.clone(),
                    ..t.clone()
                });
            }
            Rule::Permute { from, heads, .. } => {
                let rows = t.shape.first().copied().unwrap_or(1);
                let n = q.need(*heads, family, r, &t.name)?;
                let hd = rotary_head_rows(rows, n, q.head_dim, family, r, &t.name)?;
                let map = RowMap::new(canonical, t)?;
                let mut segs = Vec::with_capacity(rows);
                for h in 0..n {
                    for m in 0..hd {
                        map.push(h * hd + hf_row_of_meta(m, hd), 1, &mut segs)?;
                    }
                }
                out.push(ViewTensor {
                    name: from.render(&b),
                    segments: merge_segments(segs),
                    transform: "permute",
                    sources: t.sources.clone(),
                    ..t.clone()
                });
            }
            Rule::Split {
                from,
                into,
                rows: sizes,
                grouped,
            } => {
                let fused = from.render(&b);
                let mut parts = Vec::with_capacity(into.len());
                for p in into {
                    let name = p.render(&b);
                    let pt = canonical.get(&name).ok_or_else(|| {
                        Error::bad_data(format!(
                            "rule {}: `{}` needs `{}`, which the checkpoint does not have",
                            r.origin,
                            escape(&fused),
                            escape(&name)
                        ))
                        .file(ck_path)
                        .tensor(&t.name)
                    })?;
                    parts.push(pt);
                }
                let total: usize = parts
                    .iter()
                    .map(|p| p.shape.first().copied().unwrap_or(1))
                    .sum();
                // Parts that do not fill the family's fused layout (grouped-query k/v into
                // Baichuan's three hidden-size blocks) are a model the family cannot hold, not a
                // fault of its mapping file.
                let layout = split_parts(total, sizes, *grouped, &q, family, r, &fused).map_err(
                    |e| {
                        Error::unsupported(format!(
                            "family `{}` cannot hold this checkpoint: {}{}",
                            family.name,
                            e.message(),
                            match (q.value(Quantity::Heads), q.value(Quantity::KvHeads)) {
                                (Some(h), Some(kv)) if h != kv => format!(
                                    " (grouped-query attention: {kv} key/value heads for {h} query heads)"
                                ),
                                _ => String::new(),
                            }
                        ))
                        .file(ck_path)
                        .tensor(&fused)
                    },
                )?;
                let mut segs = Vec::new();
                let mut sources = Vec::new();
                // Each part's rows, taken in the fused layout's order.
                let mut order: Vec<(usize, usize, usize)> = Vec::new(); // (fused row, part, part row)
                for (pi, ranges) in layout.iter().enumerate() {
                    let mut part_row = 0;
                    for s in ranges {
                        if let Segment::Rows {
                            row_start, rows, ..
                        } = s
                        {
                            order.push((*row_start, pi, part_row));
                            part_row += rows;
                            let want = parts[pi].shape.first().copied().unwrap_or(1);
                            if part_row > want {
                                return Err(size_error(
                                    family,
                                    r,
                                    &parts[pi].name,
                                    format!(
                                        "has {want} rows but the config implies more for `{}`",
                                        escape(&fused)
                                    ),
                                ));
                            }
                        }
                    }
                }
                order.sort_unstable();
                for (pi, ranges) in layout.iter().enumerate() {
                    let want: usize = ranges
                        .iter()
                        .map(|s| match s {
                            Segment::Rows { rows, .. } => *rows,
                            Segment::Zeros { .. } => 0,
                        })
                        .sum();
                    if parts[pi].shape.first().copied().unwrap_or(1) != want {
                        return Err(size_error(
                            family,
                            r,
                            &parts[pi].name,
                            format!(
                                "has {} rows but the config implies {want} for its part of `{}`",
                                parts[pi].shape.first().copied().unwrap_or(1),
                                escape(&fused)
                            ),
                        ));
                    }
                }
                let maps = parts
                    .iter()
                    .map(|p| RowMap::new(canonical, p))
                    .collect::<Result<Vec<_>>>()?;
                for (fused_row, pi, part_row) in order {
                    let n = layout[pi]
                        .iter()
                        .find_map(|s| match s {
                            Segment::Rows {
                                row_start, rows, ..
                            } if *row_start == fused_row => Some(*rows),
                            _ => None,
                        })
                        .unwrap_or(0);
                    maps[pi].push(part_row, n, &mut segs)?;
                }
                for p in &parts {
                    sources.extend(p.sources.iter().cloned());
                    done.insert(p.name.as_str());
                }
                sources.dedup();
                let mut shape = t.shape.clone();
                if let Some(s0) = shape.first_mut() {
                    *s0 = total;
                }
                out.push(ViewTensor {
                    name: fused,
                    dtype: t.dtype,
                    shape,
                    segments: merge_segments(segs),
                    sources,
                    transform: if *grouped { "interleave" } else { "concat" },
                });
            }
            Rule::Zeros { .. } => {
                let zero = t
                    .segments
                    .iter()
                    .all(|s| matches!(s, Segment::Zeros { .. }))
                    || canonical.read(t)?.iter().all(|&x| x == 0);
                if !zero {
                    return Err(Error::unsupported(format!(
                        "family `{}` has no place for this tensor and it is not all zeros, so leaving it out would change the model",
                        family.name
                    ))
                    .file(ck_path)
                    .tensor(&t.name));
                }
                dropped.push((
                    t.name.clone(),
                    format!(
                        "all-zero tensor that family `{}` does not store",
                        family.name
                    ),
                ));
            }
            Rule::Drop { .. } => {}
        }
    }
    check_required(&out, canonical, family)?;
    let config = canonical
        .config
        .as_ref()
        .map(|c| configmap::from_llama(c, family))
        .transpose()?;
    // Every bias written must be one the family's class computes under the written config.
    for t in &canonical.tensors {
        if dropped.iter().any(|(n, _)| *n == t.name) {
            continue;
        }
        family
            .biases
            .check(&family.name, &t.name, config.as_ref().map(|c| &c.raw))
            .map_err(|why| {
                Error::unsupported(format!(
                    "{why}: its loader would drop this tensor, so the converted checkpoint would compute something else"
                ))
                .file(ck_path)
                .tensor(&t.name)
            })?;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, t) in out.iter().enumerate() {
        if let Some(j) = names.insert(t.name.as_str(), i) {
            return Err(Error::bad_data(format!(
                "two canonical tensors map to this name of family `{}` (the other is made from {:?})",
                family.name, out[j].sources
            ))
            .tensor(&t.name));
        }
    }
    View::new(
        canonical.ckpt,
        canonical.family.clone(),
        family.name.clone(),
        out,
        config,
        dropped,
    )
}

/// An all-zero vector of `rows` elements, made by the view (no file bytes).
fn zeros_tensor(name: String, dtype: Dtype, rows: usize) -> Result<ViewTensor> {
    let bytes = crate::checkpoint::header::checked_nbytes(dtype, &[rows])
        .map_err(|m| Error::bad_data(m).tensor(&name))?;
    Ok(ViewTensor {
        name,
        dtype,
        shape: vec![rows],
        segments: vec![Segment::Zeros { bytes }],
        sources: Vec::new(),
        transform: "zeros",
    })
}

/// All-zero canonical biases for the projections whose bias the family's class always has
/// (`[biases]` `true`) and the checkpoint does not store, in the weight's float dtype (f32 for a
/// block-quantised weight).
fn missing_biases(canonical: &View<'_>, family: &Family) -> Result<Vec<ViewTensor>> {
    let mut extra = Vec::new();
    for t in &canonical.tensors {
        let Some(stem) = t.name.strip_suffix(".weight") else {
            continue;
        };
        let name = format!("{stem}.bias");
        if !family.biases.always(&name) || canonical.get(&name).is_some() {
            continue;
        }
        let rows = t.shape.first().copied().unwrap_or(0);
        let dtype = match t.dtype {
            d @ (Dtype::F32 | Dtype::F16 | Dtype::BF16) => d,
            _ => Dtype::F32,
        };
        extra.push(zeros_tensor(name, dtype, rows)?);
    }
    Ok(extra)
}

/// The refusal of a stored bias the family's class does not compute.
fn unexpected_bias(tensor: &str, why: String, family: &Family) -> Error {
    Error::unsupported(format!(
        "`{}`: {why}; its loader drops this tensor while a LLaMA loader would add it, so the checkpoint computes different things in different tools and ckpt will not pick one{}",
        escape(tensor),
        if family.file.starts_with("mappings/") {
            String::new()
        } else {
            format!(
                " (a family file says which biases its class computes in `[biases]`: {})",
                family.file
            )
        }
    ))
}

/// Every non-optional tensor of the family must be produced (for `{i}` names, in every layer): a
/// tied LLaMA has no `lm_head.weight`, so it cannot become a Meta checkpoint, which needs `output.weight`.
fn check_required(out: &[ViewTensor], canonical: &View<'_>, family: &Family) -> Result<()> {
    let layers = canonical
        .config
        .as_ref()
        .and_then(|c| c.num_hidden_layers)
        .unwrap_or(0);
    let have: HashSet<&str> = out.iter().map(|t| t.name.as_str()).collect();
    for r in &family.rules {
        if matches!(r.rule, Rule::Drop { .. }) {
            continue;
        }
        let Some(p) = r.rule.from() else { continue };
        if family.optional.iter().any(|o| o == p) {
            continue;
        }
        let vars = p.placeholders();
        let missing = if vars.is_empty() {
            (!have.contains(p.text())).then(|| p.text().to_string())
        } else if vars == ["i"] {
            (0..layers).find_map(|i| {
                let mut b = Bindings::new();
                b.insert("i".into(), i.to_string());
                let n = p.render(&b);
                (!have.contains(n.as_str())).then_some(n)
            })
        } else {
            None
        };
        if let Some(n) = missing {
            let canon: Vec<String> = r
                .rule
                .targets()
                .iter()
                .map(|t| format!("`{}`", escape(t.text())))
                .collect();
            return Err(Error::unsupported(format!(
                "family `{}` needs `{}` (from {}), which this checkpoint does not have{}",
                family.name,
                escape(&n),
                canon.join(", "),
                if n.contains("output") || canon.iter().any(|c| c.contains("lm_head")) {
                    " (tied embeddings?)"
                } else {
                    ""
                }
            ))
            .file(&canonical.ckpt.path)
            .tensor(&n));
        }
    }
    Ok(())
}

/// The checkpoint as it is, with ad-hoc `--rename` rules applied to its names and no family (an
/// identity view: nothing is said about its computation).
pub fn identity_renamed<'a>(ck: &'a Checkpoint, rules: &[RenameRule]) -> Result<View<'a>> {
    let id = View::identity(ck);
    if rules.is_empty() {
        return Ok(id);
    }
    let names: Vec<String> = id.tensors.iter().map(|t| t.name.clone()).collect();
    let new = apply_renames(&names, rules).map_err(|e| e.file(&ck.path))?;
    let tensors = id
        .tensors
        .iter()
        .cloned()
        .zip(new)
        .map(|(mut t, n)| {
            if n != t.name {
                t.transform = "rename";
                t.name = n;
            }
            t
        })
        .collect();
    View::new(
        ck,
        "identity",
        "identity",
        tensors,
        ck.config.clone(),
        Vec::new(),
    )
}
