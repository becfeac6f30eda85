//! The `torch.save` archive (PyTorch >= 1.6): a ZIP of `<root>/data.pkl` (the object graph),
//! `<root>/data/<key>` (one stored, uncompressed entry per storage), `<root>/byteorder` and
//! `<root>/version` (`torch/serialization.py`, `caffe2/serialize/inline_container.cc`).
//!
//! The legacy format of PyTorch < 1.6 (pickles followed by raw storages) is read by [`read_legacy`].
//!
//! The ZIP directory is read by [`super::zip`], the pickle by the restricted interpreter in
//! [`super::pickle`] (nothing is imported or executed). Each tensor becomes a byte range of the
//! mmapped file: its storage entry's data start plus the storage offset, with its shape and strides.
//! A tensor whose strides are row-major is [`TorchTensor::strides`] `None` (one contiguous range, read
//! in place exactly like a safetensors tensor, even when several tensors share one storage); any other
//! layout (a transposed weight, an expanded view) keeps its strides and is gathered element-run by
//! element-run by the readers, never misread as contiguous.
//!
//! The state dict is found in the object graph: the top-level dict when it holds tensors, else the one
//! nested dict (reached through string keys: `{"state_dict": {...}, "epoch": 3}`, `{"model": ...}`)
//! that does; several candidates are an error listing them unless a key picks one. Non-tensor entries
//! are listed and skipped.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::{HashMap, HashSet};

use super::header::{self, Dtype};
use super::pickle::{self, Object, Pickle, StorageRef, Value};
use super::zip::{self, Entry};
use crate::error::{Error, ErrorKind, Result, escape};

/// How deep the search for a nested state dict goes (`{"a": {"b": {"c": {tensors}}}}` is depth 3).
pub const MAX_STATE_DICT_DEPTH: usize = 4;
/// Most skipped (non-tensor) entries listed.
pub const MAX_SKIPPED_LISTED: usize = 64;

/// One tensor of a torch archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchTensor {
    /// The state-dict key.
    pub name: String,
    /// Element type, from the storage type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte offset of element 0 in the file.
    pub begin: usize,
    /// End of the bytes it reads (exclusive): `begin + nbytes` when contiguous, else one past the
    /// last element's last byte.
    pub end: usize,
    /// Element strides when they are not row-major; `None` for a contiguous tensor.
    pub strides: Option<Vec<usize>>,
    /// The storage entry key (`data/<key>`).
    pub storage: String,
}

/// A parsed torch archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchArchive {
    /// The archive's root folder name (every entry is under `<root>/`); empty for a legacy
    /// (pre-1.6, non-zip) file.
    pub root: String,
    /// Contents of `<root>/version`, if present.
    pub version: Option<String>,
    /// Tensors in pickle order.
    pub tensors: Vec<TorchTensor>,
    /// Where the state dict was found (`None`: the top level), e.g. `state_dict` or `model/module`.
    pub key: Option<String>,
    /// Entries that are not tensors (`epoch: int 3`), listed and skipped.
    pub skipped: Vec<(String, String)>,
    /// Number of storage entries.
    pub storages: usize,
    /// Total bytes of the storage entries the tensors use.
    pub storage_bytes: usize,
}

/// The first bytes of a legacy (PyTorch < 1.6) `torch.save` file: protocol 2 and the magic number
/// 0x1950a86a20f9469cfc6c as a LONG1.
pub const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Read a torch archive from the bytes of the whole file. `key` picks the state dict when several
/// nested dicts hold tensors.
pub fn read_archive(bytes: &[u8], key: Option<&str>) -> Result<TorchArchive> {
    let entries = zip::entries(bytes)?;
    let pkl: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
        .collect();
    let data_pkl = match pkl.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::new(
                ErrorKind::WrongFormat,
                "a zip archive without `<root>/data.pkl`: not a torch.save checkpoint",
            ));
        }
        _ => {
            return Err(Error::bad_data(
                "the archive has several `*/data.pkl` entries",
            ));
        }
    };
    let root = data_pkl.name.trim_end_matches("/data.pkl").to_string();
    let prefix = format!("{root}/");
    if let Some(stray) = entries.iter().find(|e| !e.name.starts_with(&prefix)) {
        return Err(Error::bad_data(format!(
            "entry `{}` is outside the archive's root folder `{}`",
            escape(&stray.name),
            escape(&root)
        )));
    }
    let by_name: HashMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let small = |name: &str| -> Option<String> {
        let e = by_name.get(format!("{prefix}{name}").as_str())?;
        if e.size > 64 {
            return Some(String::from("?"));
        }
        let b = bytes.get(e.data_start..e.data_end())?;
        Some(String::from_utf8_lossy(b).trim().to_string())
    };
    if let Some(order) = small("byteorder")
        && order != "little"
    {
        return Err(Error::unsupported(format!(
            "`{}` says the byte order is \"{}\"; ckpt reads little-endian archives only",
            escape(&format!("{prefix}byteorder")),
            escape(&order)
        )));
    }
    let version = small("version");
    let code = bytes
        .get(data_pkl.data_start..data_pkl.data_end())
        .ok_or_else(|| Error::bad_data("`data.pkl` lies outside the file"))?;
    let mut used: HashMap<String, (Dtype, usize)> = HashMap::new();
    let mut check = |s: &StorageRef| -> Result<()> {
        let name = format!("{prefix}data/{}", s.key);
        let e = by_name.get(name.as_str()).ok_or_else(|| {
            Error::bad_data(format!(
                "the pickle names storage `{}`, which the archive does not hold",
                escape(&name)
            ))
        })?;
        let want = header::checked_nbytes(s.dtype, &[s.numel]).map_err(Error::bad_data)?;
        if e.size != want {
            return Err(Error::bad_data(format!(
                "storage `{}` holds {} bytes but the pickle declares {} elements of {} ({want} bytes)",
                escape(&name),
                e.size,
                s.numel,
                s.dtype
            )));
        }
        used.insert(s.key.clone(), (s.dtype, e.data_start));
        Ok(())
    };
    let p = pickle::run(code, &mut check).map_err(|e| in_entry(e, &data_pkl.name))?;
    let starts: HashMap<String, usize> = used.iter().map(|(k, (_, s))| (k.clone(), *s)).collect();
    let (tensors, path, skipped) =
        collect_tensors(&p, key, &starts).map_err(|e| in_entry(e, &data_pkl.name))?;
    let storage_bytes = used
        .keys()
        .filter_map(|k| {
            by_name
                .get(format!("{prefix}data/{k}").as_str())
                .map(|e| e.size)
        })
        .fold(0usize, |a, b| a.saturating_add(b));
    Ok(TorchArchive {
        root,
        version,
        tensors,
        key: path,
        skipped,
        storages: used.len(),
        storage_bytes,
    })
}

/// The tensors of the state dict, placed at their storages' data offsets (`starts`: key -> offset of
/// the storage's first byte in the file); returns `(tensors, state-dict path, skipped entries)`.
type Collected = (Vec<TorchTensor>, Option<String>, Vec<(String, String)>);

fn collect_tensors(
    p: &Pickle,
    key: Option<&str>,
    starts: &HashMap<String, usize>,
) -> Result<Collected> {
    let (path, dict, mut skipped) = find_state_dict(p, key)?;
    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for (k, v) in dict {
        let name = match p.str(*k) {
            Some(s) => s.to_string(),
            None => {
                if matches!(p.obj(*v), Some(Object::Tensor(_))) {
                    return Err(Error::bad_data(format!(
                        "a tensor under a key that is not a string ({})",
                        p.describe(*k)
                    )));
                }
                push_skipped(&mut skipped, p.describe(*k), p.describe(*v));
                continue;
            }
        };
        if !names.insert(name.clone()) {
            return Err(Error::bad_data("the state dict has this key twice").tensor(&name));
        }
        let Some(Object::Tensor(t)) = p.obj(*v) else {
            push_skipped(&mut skipped, qualify(&path, &name), p.describe(*v));
            continue;
        };
        let Some(Object::Storage(s)) = p.objects.get(t.storage) else {
            return Err(Error::internal("tensor without storage").tensor(&name));
        };
        let start = *starts
            .get(&s.key)
            .ok_or_else(|| Error::internal("storage without a location").tensor(&name))?;
        tensors.push(
            place(&name, s, start, t.offset, &t.shape, &t.strides).map_err(|e| e.tensor(&name))?,
        );
    }
    Ok((tensors, path, skipped))
}

/// Read a legacy (PyTorch < 1.6) `torch.save` file: five pickles in a row (magic number, protocol
/// version 1001, system info, the object, the sorted storage keys), then each storage as an 8-byte
/// little-endian element count followed by its bytes, in key order (`torch/serialization.py`
/// `_legacy_save`). The same interpreter reads every pickle; the storages are byte ranges of the file.
pub fn read_legacy(bytes: &[u8], key: Option<&str>) -> Result<TorchArchive> {
    let rest = |at: usize| bytes.get(at..).unwrap_or_default();
    let mut pos = LEGACY_MAGIC.len();
    if bytes.get(pos) != Some(&b'.') {
        return Err(Error::bad_data(
            "legacy torch.save: the magic-number pickle does not end",
        ));
    }
    pos = pos.saturating_add(1);
    let mut no_storage = |_: &StorageRef| -> Result<()> {
        Err(Error::bad_data(
            "a storage in a header pickle of a legacy torch.save file",
        ))
    };
    let header = |e: Error| Error::bad_data(format!("legacy torch.save header: {}", e.message()));
    let proto = pickle::run(rest(pos), &mut no_storage).map_err(header)?;
    if proto.root != Value::Int(1001) {
        return Err(Error::unsupported(format!(
            "legacy torch.save protocol {} (ckpt reads 1001)",
            proto.describe(proto.root)
        )));
    }
    pos = pos.saturating_add(proto.end);
    let info = pickle::run(rest(pos), &mut no_storage).map_err(header)?;
    let little = match info.obj(info.root) {
        Some(Object::Dict(d)) => d
            .iter()
            .find(|(k, _)| info.str(*k) == Some("little_endian"))
            .map(|(_, v)| *v),
        _ => None,
    };
    if little != Some(Value::Bool(true)) {
        return Err(Error::unsupported(
            "a legacy torch.save file that does not say it is little-endian",
        ));
    }
    pos = pos.saturating_add(info.end);
    let mut declared: HashMap<String, (Dtype, usize)> = HashMap::new();
    let mut record = |s: &StorageRef| -> Result<()> {
        declared.insert(s.key.clone(), (s.dtype, s.numel));
        Ok(())
    };
    let at = pos;
    let obj = pickle::run(rest(pos), &mut record).map_err(|e| {
        Error::new(
            e.kind(),
            format!("legacy object pickle at byte {at}: {}", e.message()),
        )
        .hint(e.hint_text().unwrap_or_default().to_string())
    })?;
    pos = pos.saturating_add(obj.end);
    let keys = pickle::run(rest(pos), &mut no_storage).map_err(header)?;
    pos = pos.saturating_add(keys.end);
    let list: Vec<String> = match keys.obj(keys.root) {
        Some(Object::List(l)) => l
            .iter()
            .map(|v| keys.str(*v).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                Error::bad_data("legacy torch.save: the storage key list holds a non-string")
            })?,
        _ => return Err(Error::bad_data("legacy torch.save: no storage key list")),
    };
    let mut starts = HashMap::new();
    let mut storage_bytes = 0usize;
    for k in &list {
        let (dtype, numel) = *declared.get(k).ok_or_else(|| {
            Error::bad_data(format!(
                "legacy torch.save: storage `{}` is listed but never used",
                escape(k)
            ))
        })?;
        let count = bytes
            .get(pos..pos.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| {
                Error::bad_data(format!(
                    "legacy torch.save: storage `{}` is cut short",
                    escape(k)
                ))
            })?;
        if usize::try_from(count).ok() != Some(numel) {
            return Err(Error::bad_data(format!(
                "legacy torch.save: storage `{}` holds {count} elements but the pickle declares {numel}",
                escape(k)
            )));
        }
        let start = pos.saturating_add(8);
        let size = header::checked_nbytes(dtype, &[numel]).map_err(Error::bad_data)?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                Error::bad_data(format!(
                    "legacy torch.save: storage `{}` runs past the end of the file",
                    escape(k)
                ))
                .hint("the file is truncated; re-download it")
            })?;
        if starts.insert(k.clone(), start).is_some() {
            return Err(Error::bad_data(format!(
                "legacy torch.save: storage `{}` is listed twice",
                escape(k)
            )));
        }
        storage_bytes = storage_bytes.saturating_add(size);
        pos = end;
    }
    if pos != bytes.len() {
        return Err(Error::bad_data(format!(
            "legacy torch.save: {} bytes after the last storage",
            bytes.len().saturating_sub(pos)
        )));
    }
    let (tensors, path, skipped) = collect_tensors(&obj, key, &starts)?;
    Ok(TorchArchive {
        root: String::new(),
        version: None,
        tensors,
        key: path,
        skipped,
        storages: starts.len(),
        storage_bytes,
    })
}

fn in_entry(e: Error, entry: &str) -> Error {
    let kind = e.kind();
    let msg = format!("`{}`: {}", escape(entry), e.message());
    let mut out = Error::new(kind, msg);
    if let Some(h) = e.hint_text() {
        out = out.hint(h.to_string());
    }
    if let Some(t) = e.tensor_name() {
        out = out.tensor(t.to_string());
    }
    out
}

fn qualify(path: &Option<String>, name: &str) -> String {
    match path {
        Some(p) => format!("{p}/{name}"),
        None => name.to_string(),
    }
}

fn push_skipped(out: &mut Vec<(String, String)>, name: String, what: String) {
    if out.len() < MAX_SKIPPED_LISTED {
        out.push((name, what));
    }
}

/// Where a tensor's bytes are, checked against its storage.
fn place(
    name: &str,
    s: &StorageRef,
    start: usize,
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Result<TorchTensor> {
    let es = header::dtype_bits(s.dtype) / 8;
    let numel =
        header::checked_numel(shape).ok_or_else(|| Error::bad_data("the shape overflows"))?;
    let overflow = || Error::bad_data("the tensor's extent overflows");
    let begin = offset
        .checked_mul(es)
        .and_then(|o| o.checked_add(start))
        .ok_or_else(overflow)?;
    let mut contiguous = true;
    let mut expect = 1usize;
    let mut last = offset; // index of the last element read
    for (&d, &st) in shape.iter().zip(strides).rev() {
        if d > 1 && st != expect {
            contiguous = false;
        }
        expect = expect.checked_mul(d).ok_or_else(overflow)?;
        if d > 0 {
            let reach = d.saturating_sub(1).checked_mul(st).ok_or_else(overflow)?;
            last = last.checked_add(reach).ok_or_else(overflow)?;
        }
    }
    if numel > 0 && last >= s.numel {
        return Err(Error::bad_data(format!(
            "the tensor (shape {shape:?}, strides {strides:?}, offset {offset}) reads element {last} of storage `data/{}`, which holds {} elements",
            escape(&s.key),
            s.numel
        ))
        .hint("the file is truncated or was edited; re-download it"));
    }
    // A view that does not overlap itself cannot hold more elements than its storage; one that does
    // (an `expand`ed tensor, stride 0) could claim terabytes over one element: refused.
    if !contiguous && numel > s.numel {
        return Err(Error::unsupported(format!(
            "the tensor (shape {shape:?}, strides {strides:?}) has {numel} elements over a storage of {}: an expanded view whose elements overlap",
            s.numel
        ))
        .hint("save it with .contiguous() (or .clone()) before torch.save"));
    }
    let nbytes = numel.checked_mul(es).ok_or_else(overflow)?;
    // An empty tensor reads nothing: its range is pinned to the start of its storage, which lies in
    // the file, whatever offset it claims (found by fuzzing: an offset past the end of the input).
    let begin = if numel == 0 { start } else { begin };
    let end = if numel == 0 {
        begin
    } else if contiguous {
        begin.checked_add(nbytes).ok_or_else(overflow)?
    } else {
        last.checked_add(1)
            .and_then(|l| l.checked_mul(es))
            .and_then(|l| l.checked_add(start))
            .ok_or_else(overflow)?
    };
    Ok(TorchTensor {
        name: name.to_string(),
        dtype: s.dtype,
        shape: shape.to_vec(),
        begin,
        end,
        strides: (!contiguous && numel > 0).then(|| strides.to_vec()),
        storage: s.key.clone(),
    })
}

type Entries<'p> = &'p [(Value, Value)];
/// A found state dict: its path, its entries, and the entries skipped around it.
type Found<'p> = (Option<String>, Entries<'p>, Vec<(String, String)>);

/// Find the dict of tensors: `(path, entries, skipped entries around it)`.
fn find_state_dict<'p>(p: &'p Pickle, key: Option<&str>) -> Result<Found<'p>> {
    let Some(Object::Dict(top)) = p.obj(p.root) else {
        return Err(Error::bad_data(format!(
            "the top-level object is {}, not a dict of tensors",
            p.describe(p.root)
        )));
    };
    let has_tensors = |d: &[(Value, Value)]| {
        d.iter()
            .filter(|(_, v)| matches!(p.obj(*v), Some(Object::Tensor(_))))
            .count()
    };
    // Breadth-first over dicts reached through string keys.
    let mut candidates: Vec<(Option<String>, Entries<'p>, usize)> = Vec::new();
    let mut queue: Vec<(Option<String>, Entries<'p>, usize)> = vec![(None, top.as_slice(), 0)];
    while let Some((path, d, depth)) = queue.pop() {
        let n = has_tensors(d);
        if n > 0 {
            candidates.push((path.clone(), d, n));
        }
        if depth >= MAX_STATE_DICT_DEPTH {
            continue;
        }
        for (k, v) in d {
            if let (Some(name), Some(Object::Dict(inner))) = (p.str(*k), p.obj(*v)) {
                queue.push((
                    Some(qualify(&path, name)),
                    inner.as_slice(),
                    depth.saturating_add(1),
                ));
            }
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let list = |c: &[(Option<String>, Entries<'p>, usize)]| {
        c.iter()
            .map(|(path, _, n)| {
                format!(
                    "`{}` ({n} tensors)",
                    escape(path.as_deref().unwrap_or("(top level)"))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match key {
        Some(k) => {
            let hit: Vec<_> = candidates
                .iter()
                .filter(|(path, _, _)| path.as_deref().unwrap_or("") == k)
                .collect();
            match hit.as_slice() {
                [one] => (*one).clone(),
                _ => {
                    return Err(Error::usage(format!(
                        "no dict of tensors under the key `{}`; the file has: {}",
                        escape(k),
                        list(&candidates)
                    )));
                }
            }
        }
        None => match candidates.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Error::bad_data(
                    "the file holds no tensors (no dict of tensors found)",
                ));
            }
            _ => {
                return Err(Error::usage(format!(
                    "several dicts hold tensors: {}; say which one is the model",
                    list(&candidates)
                ))
                .hint("pick one with --state-dict-key KEY (nested keys joined with `/`)"));
            }
        },
    };
    let (path, dict, _) = chosen;
    // Entries outside the chosen dict that are skipped: the siblings along its path.
    let mut skipped = Vec::new();
    let mut cur: Entries<'p> = top.as_slice();
    let mut prefix: Option<String> = None;
    let parts: Vec<&str> = path
        .as_deref()
        .map(|s| s.split('/').collect())
        .unwrap_or_default();
    for part in parts {
        let mut next = None;
        for (k, v) in cur {
            match p.str(*k) {
                Some(name) if name == part && next.is_none() => {
                    if let Some(Object::Dict(inner)) = p.obj(*v) {
                        next = Some(inner.as_slice());
                    }
                }
                Some(name) => push_skipped(&mut skipped, qualify(&prefix, name), p.describe(*v)),
                None => push_skipped(&mut skipped, p.describe(*k), p.describe(*v)),
            }
        }
        prefix = Some(qualify(&prefix, part));
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    Ok((path, dict, skipped))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn placement_of_views() {
        let s = StorageRef {
            key: "0".into(),
            dtype: Dtype::F32,
            numel: 12,
        };
        // A row slice: contiguous, offset 4 elements.
        let t = place("a", &s, 100, 4, &[2, 4], &[4, 1]).unwrap();
        assert_eq!((t.begin, t.end, t.strides), (116, 148, None));
        // A transpose of a [3, 4] matrix: strided.
        let t = place("b", &s, 100, 0, &[4, 3], &[1, 4]).unwrap();
        assert_eq!((t.begin, t.end, t.strides), (100, 148, Some(vec![1, 4])));
        // Reads past the storage.
        assert!(
            place("c", &s, 100, 8, &[2, 4], &[4, 1])
                .unwrap_err()
                .to_string()
                .contains("holds 12")
        );
        // An expanded view (stride 0) larger than its storage.
        let e = place("e", &s, 0, 0, &[1 << 20, 1 << 20], &[0, 0]).unwrap_err();
        assert!(e.to_string().contains("expanded view"), "{e}");
        // Size-1 dims do not break contiguity.
        let t = place("d", &s, 0, 0, &[1, 12], &[99, 1]).unwrap();
        assert_eq!(t.strides, None);
    }

    #[test]
    fn archive_level_refusals_are_named() {
        use crate::checkpoint::zip::tests::build;
        let pkl: &[u8] = b"\x80\x02}.";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (build(&[("a/other", b"x")], 0), "without `<root>/data.pkl`"),
            (
                build(&[("a/data.pkl", pkl), ("b/data.pkl", pkl)], 0),
                "several",
            ),
            (
                build(&[("a/data.pkl", pkl), ("b/x", b"x")], 0),
                "outside the archive's root",
            ),
            (
                build(&[("a/data.pkl", pkl), ("a/byteorder", b"big")], 0),
                "byte order",
            ),
            (build(&[("a/data.pkl", pkl)], 0), "no tensors"),
            (build(&[("a/data.pkl", b"\x80\x02N.")], 0), "not a dict"),
        ];
        let bad: Vec<String> = cases
            .iter()
            .filter_map(|(z, want)| {
                let e = match read_archive(z, None) {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => e.to_string(),
                };
                (!e.contains(want)).then(|| format!("{e} (wanted {want:?})"))
            })
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
        // An empty state dict under a key is listed among the candidates when the key is wrong.
        let z = build(&[("a/data.pkl", pkl)], 0);
        assert!(read_archive(&z, Some("model")).is_err());
    }
}
