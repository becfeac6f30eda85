//! A bounded reader for the ZIP central directory of a `torch.save` archive (PKWARE APPNOTE 6.3.x,
//! the subset PyTorch's `caffe2/serialize/inline_container.cc` writes through miniz).
//!
//! It never extracts and never decompresses: it locates each entry's data as a byte range of the
//! (mmapped) file. Only what `torch.save` writes is accepted: stored (method 0) entries, one disk,
//! ZIP64 end records and ZIP64 extended-information extra fields when sizes or offsets exceed 32 bits.
//! Everything else is refused with a named error: compressed or encrypted entries, multi-disk archives,
//! entries whose local header disagrees with the central directory, entries that overlap each other or
//! the central directory, or that run past the end of the file, duplicate names.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::collections::HashSet;

use crate::error::{Error, Result, escape};

/// Most entries accepted in one archive (a model has one storage entry per tensor, or fewer).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest entry name accepted, in bytes.
pub const MAX_ENTRY_NAME: usize = 4096;
/// Largest archive comment / ZIP64 end-record tail scanned, in bytes (the format's own maximum).
const MAX_COMMENT: usize = 65_535;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_EOCD64: u32 = 0x0606_4b50;
const SIG_LOCATOR64: u32 = 0x0706_4b50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// One entry of the archive, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name (e.g. `archive/data/0`).
    pub name: String,
    /// Offset of the entry's data in the file.
    pub data_start: usize,
    /// Length of the data in bytes (stored, so compressed size = uncompressed size).
    pub size: usize,
}

impl Entry {
    /// End of the data (exclusive); cannot overflow, it was checked against the file size.
    pub fn data_end(&self) -> usize {
        self.data_start.saturating_add(self.size)
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| Error::bad_data(format!("zip: {what} {v} does not fit in memory")))
}

fn truncated(what: &str) -> Error {
    Error::bad_data(format!(
        "zip: truncated {what} (the file is cut short or not a zip archive)"
    ))
    .hint("re-download the file; a torch.save archive ends with the zip central directory")
}

/// Where the central directory is and how many entries it holds.
struct Directory {
    offset: usize,
    size: usize,
    entries: usize,
}

/// Read the end-of-central-directory record(s).
fn find_directory(b: &[u8]) -> Result<Directory> {
    let len = b.len();
    if len < EOCD_LEN {
        return Err(truncated("archive: no end-of-central-directory record"));
    }
    // The EOCD record is the last thing in the file, followed only by its comment.
    let lowest = len.saturating_sub(EOCD_LEN.saturating_add(MAX_COMMENT));
    let mut pos = len.saturating_sub(EOCD_LEN);
    let eocd = loop {
        if u32_at(b, pos) == Some(SIG_EOCD) {
            let comment = u16_at(b, pos.saturating_add(20)).map(usize::from);
            if comment.and_then(|c| pos.checked_add(EOCD_LEN)?.checked_add(c)) == Some(len) {
                break pos;
            }
        }
        if pos <= lowest {
            return Err(truncated("archive: no end-of-central-directory record"));
        }
        pos = pos.saturating_sub(1);
    };
    let field16 = |o: usize| u16_at(b, eocd.saturating_add(o)).unwrap_or(0);
    let field32 = |o: usize| u32_at(b, eocd.saturating_add(o)).unwrap_or(0);
    let (disk, cd_disk) = (field16(4), field16(6));
    let (on_disk, total) = (field16(8), field16(10));
    let (cd_size, cd_off) = (field32(12), field32(16));
    let zip64 =
        on_disk == u16::MAX || total == u16::MAX || cd_size == u32::MAX || cd_off == u32::MAX;
    if !zip64 {
        if disk != 0 || cd_disk != 0 || on_disk != total {
            return Err(Error::unsupported("zip: a multi-disk (spanned) archive"));
        }
        return Ok(Directory {
            offset: to_usize(cd_off.into(), "central directory offset")?,
            size: to_usize(cd_size.into(), "central directory size")?,
            entries: usize::from(total),
        });
    }
    // ZIP64: a locator right before the EOCD record points at the ZIP64 end record.
    let loc = eocd
        .checked_sub(20)
        .filter(|&l| u32_at(b, l) == Some(SIG_LOCATOR64))
        .ok_or_else(|| truncated("ZIP64 end-of-central-directory locator"))?;
    let (loc_disk, rec_off, disks) = (
        u32_at(b, loc.saturating_add(4)).unwrap_or(1),
        u64_at(b, loc.saturating_add(8)).unwrap_or(u64::MAX),
        u32_at(b, loc.saturating_add(16)).unwrap_or(0),
    );
    if loc_disk != 0 || disks != 1 {
        return Err(Error::unsupported(
            "zip: a multi-disk (spanned) ZIP64 archive",
        ));
    }
    let rec = to_usize(rec_off, "ZIP64 end record offset")?;
    if rec.checked_add(56).is_none_or(|e| e > loc) || u32_at(b, rec) != Some(SIG_EOCD64) {
        return Err(Error::bad_data(
            "zip: the ZIP64 locator does not point at a ZIP64 end-of-central-directory record",
        ));
    }
    let r32 = |o: usize| u32_at(b, rec.saturating_add(o)).unwrap_or(1);
    let r64 = |o: usize| u64_at(b, rec.saturating_add(o)).unwrap_or(u64::MAX);
    if r32(16) != 0 || r32(20) != 0 || r64(24) != r64(32) {
        return Err(Error::unsupported(
            "zip: a multi-disk (spanned) ZIP64 archive",
        ));
    }
    Ok(Directory {
        offset: to_usize(r64(48), "central directory offset")?,
        size: to_usize(r64(40), "central directory size")?,
        entries: to_usize(r64(32), "entry count")?,
    })
}

/// The ZIP64 extended-information extra field values, in their fixed order, for the fields that
/// are saturated (`0xFFFFFFFF`) in the central record.
fn zip64_extra(extra: &[u8], need: usize, name: &str) -> Result<Vec<u64>> {
    let mut pos = 0usize;
    while let (Some(id), Some(n)) = (u16_at(extra, pos), u16_at(extra, pos.saturating_add(2))) {
        let body = pos.saturating_add(4);
        let end = body.saturating_add(usize::from(n));
        let data = extra.get(body..end).ok_or_else(|| {
            Error::bad_data(format!(
                "zip: entry `{}`: extra field runs past its record",
                escape(name)
            ))
        })?;
        if id == 1 {
            let vals: Vec<u64> = data
                .chunks_exact(8)
                .take(need)
                .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
                .collect();
            if vals.len() < need {
                return Err(Error::bad_data(format!(
                    "zip: entry `{}`: the ZIP64 extra field is too short",
                    escape(name)
                )));
            }
            return Ok(vals);
        }
        pos = end;
    }
    Err(Error::bad_data(format!(
        "zip: entry `{}`: sizes are saturated but there is no ZIP64 extra field",
        escape(name)
    )))
}

/// Read and validate every entry of the archive `b` (the whole file).
pub fn entries(b: &[u8]) -> Result<Vec<Entry>> {
    let dir = find_directory(b)?;
    if dir.entries > MAX_ENTRIES {
        return Err(Error::bad_data(format!(
            "zip: {} entries, more than the {MAX_ENTRIES} accepted",
            dir.entries
        )));
    }
    let cd_end = dir
        .offset
        .checked_add(dir.size)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| truncated("central directory (it runs past the end of the file)"))?;
    let cd = b.get(dir.offset..cd_end).unwrap_or_default();
    let mut out: Vec<Entry> = Vec::with_capacity(dir.entries.min(cd.len() / CENTRAL_LEN));
    let mut names = HashSet::new();
    let mut spans: Vec<(usize, usize, usize)> = Vec::new(); // (local header start, data end, entry)
    let mut pos = 0usize;
    for _ in 0..dir.entries {
        if u32_at(cd, pos) != Some(SIG_CENTRAL) {
            return Err(Error::bad_data(
                "zip: the central directory holds fewer entries than its end record says",
            ));
        }
        let f16 = |o: usize| u16_at(cd, pos.saturating_add(o)).unwrap_or(0);
        let f32 = |o: usize| u32_at(cd, pos.saturating_add(o)).unwrap_or(0);
        let (flags, method) = (f16(8), f16(10));
        let (csize, usize_, name_len, extra_len, comment_len) = (
            f32(20),
            f32(24),
            usize::from(f16(28)),
            usize::from(f16(30)),
            usize::from(f16(32)),
        );
        let (disk, local) = (f16(34), f32(42));
        let name_start = pos.saturating_add(CENTRAL_LEN);
        let extra_start = name_start.saturating_add(name_len);
        let next = extra_start
            .saturating_add(extra_len)
            .saturating_add(comment_len);
        if next > cd.len() {
            return Err(truncated("central directory record"));
        }
        let raw_name = cd.get(name_start..extra_start).unwrap_or_default();
        if name_len > MAX_ENTRY_NAME {
            return Err(Error::bad_data(format!(
                "zip: an entry name of {name_len} bytes"
            )));
        }
        let name = std::str::from_utf8(raw_name)
            .map_err(|_| Error::bad_data("zip: an entry name is not UTF-8"))?
            .to_string();
        let extra = cd
            .get(extra_start..extra_start.saturating_add(extra_len))
            .unwrap_or_default();
        if flags & 1 != 0 {
            return Err(Error::unsupported(format!(
                "zip: entry `{}` is encrypted",
                escape(&name)
            )));
        }
        if method != 0 {
            return Err(Error::unsupported(format!(
                "zip: entry `{}` is compressed (method {method}); torch.save stores entries uncompressed, so ckpt reads tensors in place and does not decompress",
                escape(&name)
            ))
            .hint("re-save the checkpoint with torch.save (no re-zipping), or convert it to safetensors"));
        }
        // ZIP64 fields follow in the order: uncompressed, compressed, local offset, disk.
        let sat = [
            usize_ == u32::MAX,
            csize == u32::MAX,
            local == u32::MAX,
            disk == u16::MAX,
        ];
        let need = sat.iter().filter(|&&s| s).count();
        let vals = if need > 0 {
            zip64_extra(extra, need, &name)?
        } else {
            Vec::new()
        };
        let mut it = vals.into_iter();
        let mut pick = |saturated: bool, small: u64| {
            if saturated {
                it.next().unwrap_or(u64::MAX)
            } else {
                small
            }
        };
        let (usize64, csize64) = (pick(sat[0], usize_.into()), pick(sat[1], csize.into()));
        let (local64, disk64) = (pick(sat[2], local.into()), pick(sat[3], disk.into()));
        if disk64 != 0 {
            return Err(Error::unsupported(format!(
                "zip: entry `{}` is on another disk of a spanned archive",
                escape(&name)
            )));
        }
        if usize64 != csize64 {
            return Err(Error::bad_data(format!(
                "zip: entry `{}` is stored but its compressed size ({csize64}) and size ({usize64}) differ",
                escape(&name)
            )));
        }
        let size = to_usize(usize64, "entry size")?;
        let lh = to_usize(local64, "local header offset")?;
        // The local header: its own name and extra lengths decide where the data starts.
        if u32_at(b, lh) != Some(SIG_LOCAL) {
            return Err(Error::bad_data(format!(
                "zip: entry `{}`: no local header at offset {lh}",
                escape(&name)
            )));
        }
        let l16 = |o: usize| u16_at(b, lh.saturating_add(o));
        let (lmethod, lname, lextra) = (l16(8), l16(26), l16(28));
        let (Some(lmethod), Some(lname), Some(lextra)) = (lmethod, lname, lextra) else {
            return Err(truncated("local header"));
        };
        if lmethod != 0 {
            return Err(Error::unsupported(format!(
                "zip: entry `{}` is compressed in its local header (method {lmethod})",
                escape(&name)
            )));
        }
        let lname_start = lh.saturating_add(LOCAL_LEN);
        let lname_end = lname_start.saturating_add(usize::from(lname));
        if b.get(lname_start..lname_end) != Some(raw_name) {
            return Err(Error::bad_data(format!(
                "zip: entry `{}`: the local header names another file",
                escape(&name)
            )));
        }
        let data_start = lname_end.saturating_add(usize::from(lextra));
        let data_end = data_start.checked_add(size).filter(|&e| e <= dir.offset).ok_or_else(|| {
            Error::bad_data(format!(
                "zip: entry `{}` ({size} bytes at offset {data_start}) runs past the central directory or the end of the file",
                escape(&name)
            ))
            .hint("the file is truncated or corrupt; re-download it")
        })?;
        if !names.insert(name.clone()) {
            return Err(Error::bad_data(format!(
                "zip: entry `{}` appears twice",
                escape(&name)
            )));
        }
        spans.push((lh, data_end, out.len()));
        out.push(Entry {
            name,
            data_start,
            size,
        });
        pos = next;
    }
    // No two entries may share bytes (a crafted archive could alias one storage as another).
    spans.sort_unstable();
    for w in spans.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = w
            && start_b < end_a
        {
            let name = |i: &usize| out.get(*i).map(|e| escape(&e.name)).unwrap_or_default();
            return Err(Error::bad_data(format!(
                "zip: entries `{}` and `{}` overlap",
                name(a),
                name(b)
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation
)]
pub(crate) mod tests {
    use super::*;

    /// A minimal stored archive with the given entries (no ZIP64).
    pub fn build(files: &[(&str, &[u8])], method: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let off = out.len() as u32;
            out.extend_from_slice(&SIG_LOCAL.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&SIG_EOCD.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out
    }

    /// The same archive written the way miniz does in ZIP64 mode: saturated sizes and offsets in
    /// the central records with a ZIP64 extra field, and a ZIP64 end record + locator.
    fn build64(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let off = out.len() as u64;
            out.extend_from_slice(&SIG_LOCAL.to_le_bytes());
            out.extend_from_slice(&[45, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&20u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&1u16.to_le_bytes());
            out.extend_from_slice(&16u16.to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
            let mut extra = Vec::new();
            extra.extend_from_slice(&1u16.to_le_bytes());
            extra.extend_from_slice(&24u16.to_le_bytes());
            extra.extend_from_slice(&(data.len() as u64).to_le_bytes());
            extra.extend_from_slice(&(data.len() as u64).to_le_bytes());
            extra.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(&SIG_CENTRAL.to_le_bytes());
            central.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&u32::MAX.to_le_bytes());
            central.extend_from_slice(&u32::MAX.to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&[0; 2]);
            central.extend_from_slice(&u32::MAX.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let cd_off = out.len() as u64;
        out.extend_from_slice(&central);
        let rec = out.len() as u64;
        out.extend_from_slice(&SIG_EOCD64.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&(files.len() as u64).to_le_bytes());
        out.extend_from_slice(&(files.len() as u64).to_le_bytes());
        out.extend_from_slice(&(central.len() as u64).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&SIG_LOCATOR64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&rec.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&SIG_EOCD.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&u16::MAX.to_le_bytes());
        out.extend_from_slice(&u16::MAX.to_le_bytes());
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out
    }

    #[test]
    fn reads_zip64_records_and_refuses_their_oddities() {
        let z = build64(&[("a/data.pkl", b"xyz"), ("a/data/0", &[1, 2, 3, 4])]);
        let e = entries(&z).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(&z[e[0].data_start..e[0].data_end()], b"xyz");
        assert_eq!(&z[e[1].data_start..e[1].data_end()], &[1, 2, 3, 4]);
        // Multi-disk ZIP64.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 22 - 4..n - 22].copy_from_slice(&2u32.to_le_bytes());
        assert!(
            entries(&bad)
                .unwrap_err()
                .to_string()
                .contains("multi-disk")
        );
        // A locator pointing elsewhere.
        let mut bad = z.clone();
        bad[n - 22 - 12..n - 22 - 4].copy_from_slice(&3u64.to_le_bytes());
        assert!(entries(&bad).unwrap_err().to_string().contains("ZIP64"));
        // Every truncation and single-byte corruption of the tail is an error or a valid read, never
        // a panic.
        for cut in 0..z.len() {
            let _ = entries(&z[..cut]);
        }
        for i in 0..z.len() {
            let mut c = z.clone();
            c[i] ^= 0xff;
            if let Ok(es) = entries(&c) {
                assert!(es.iter().all(|e| e.data_end() <= c.len()));
            }
        }
    }

    #[test]
    fn reads_stored_entries() {
        let z = build(&[("a/data.pkl", b"xyz"), ("a/data/0", &[1, 2, 3, 4])], 0);
        let e = entries(&z).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(&z[e[1].data_start..e[1].data_end()], &[1, 2, 3, 4]);
    }

    #[test]
    fn refuses_compressed_truncated_and_overlapping() {
        let z = build(&[("a/data/0", b"abcd")], 8);
        assert!(entries(&z).unwrap_err().to_string().contains("compressed"));
        let z = build(&[("a/data/0", b"abcd")], 0);
        assert!(entries(&z[..z.len() - 5]).is_err());
        for cut in 0..z.len() {
            let _ = entries(&z[..cut]);
        }
        // Point the second entry's local header offset at the first one's.
        let mut z = build(&[("a/x", b"abcd"), ("a/x", b"abcd")], 0);
        let n = z.len();
        let cd_off = u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize;
        let second = cd_off + CENTRAL_LEN + 3;
        z[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
        let err = entries(&z).unwrap_err().to_string();
        assert!(err.contains("twice") || err.contains("overlap"), "{err}");
    }

    /// Offset of the first central record of an archive built by [`build`].
    fn cd(z: &[u8]) -> usize {
        let n = z.len();
        u32::from_le_bytes(z[n - 6..n - 2].try_into().unwrap()) as usize
    }

    /// One crafted archive per refusal, each named.
    #[test]
    fn each_refusal_is_named() {
        let ok = build(&[("a/data.pkl", b"xyz"), ("a/data/0", b"abcd")], 0);
        let n = ok.len();
        let c0 = cd(&ok);
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        // Encrypted (flag bit 0 in the central record).
        let mut z = ok.clone();
        z[c0 + 8] |= 1;
        cases.push((z, "encrypted"));
        // Multi-disk.
        let mut z = ok.clone();
        z[n - 22 + 4] = 1;
        cases.push((z, "multi-disk"));
        // The local header names another file.
        let mut z = ok.clone();
        z[30] = b'b';
        cases.push((z, "names another file"));
        // Compressed only in the local header.
        let mut z = ok.clone();
        z[8] = 8;
        cases.push((z, "compressed in its local header"));
        // Sizes differ for a stored entry.
        let mut z = ok.clone();
        z[c0 + 20] = 9;
        cases.push((z, "differ"));
        // Data running into the central directory.
        let mut z = ok.clone();
        z[c0 + 24] = 200;
        z[c0 + 20] = 200;
        cases.push((z, "runs past the central directory"));
        // No local header where the central record points.
        let mut z = ok.clone();
        z[c0 + 42] = 5;
        cases.push((z, "no local header"));
        // More entries announced than recorded.
        let mut z = ok.clone();
        z[n - 22 + 10] = 3;
        z[n - 22 + 8] = 3;
        cases.push((z, "fewer entries"));
        // A name that is not UTF-8.
        let mut z = ok.clone();
        z[c0 + 46] = 0xff;
        z[30] = 0xff;
        cases.push((z, "not UTF-8"));
        // Saturated sizes without a ZIP64 extra field.
        let mut z = ok.clone();
        z[c0 + 20..c0 + 28].copy_from_slice(&[0xff; 8]);
        cases.push((z, "no ZIP64 extra field"));
        // A comment length that does not reach the end of the file.
        let mut z = ok.clone();
        z.extend_from_slice(b"junk");
        cases.push((z, "no end-of-central-directory"));
        let bad: Vec<String> = cases
            .iter()
            .filter_map(|(z, want)| {
                let e = match entries(z) {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => e.to_string(),
                };
                (!e.contains(want)).then(|| format!("{e} (wanted {want:?})"))
            })
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
