//! Boundary values and properties of the safetensors header parser (`ckpt::checkpoint::header`).
//!
//! Every size computed from a file (dims, element and byte counts, offsets, the end of the data
//! section) is driven through 0, 1, 2^31±1, 2^32±1, 2^61−1, 2^63 and u64::MAX, and through offset
//! sums landing in 2^64−8 … 2^64−1 (RELIABILITY.md A28: the safetensors crate panics on those in
//! debug builds; this test binary is built with overflow checks, so an unchecked operation in our
//! parser would panic here). An independent u128 oracle says which files are valid.
//!
//! Properties (proptest): every prefix of a valid file is rejected with an error naming the file;
//! every single-byte mutation is either rejected or yields a file that passes full validation; and
//! `parse(serialize_header(x)) == x`.

use std::io::Write;
use std::path::Path;

use ckpt::checkpoint::Shard;
use ckpt::checkpoint::header::{
    Dtype, Header, MAX_RANK, check_prefix, checked_nbytes, parse_header, serialize_header,
};
use proptest::prelude::*;

const BOUNDARIES: &[u64] = &[
    0,
    1,
    2,
    (1 << 31) - 1,
    1 << 31,
    (1 << 31) + 1,
    (1 << 32) - 1,
    1 << 32,
    (1 << 32) + 1,
    (1 << 61) - 1,
    1 << 61,
    1 << 63,
    u64::MAX - 8,
    u64::MAX - 1,
    u64::MAX,
];

/// Parse a whole file held in memory, as `Shard::open` does after `fstat`.
fn parse_bytes(bytes: &[u8]) -> ckpt::Result<Header> {
    let n = check_prefix(bytes, bytes.len() as u64)?;
    let header = bytes
        .get(8..8 + n)
        .expect("check_prefix guarantees the header is inside the file");
    parse_header(header, bytes.len() as u64)
}

fn file(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data_len, 0);
    v
}

fn bits(dtype: &str) -> u128 {
    match dtype {
        "F4" => 4,
        "U8" => 8,
        "F32" => 32,
        "F64" => 64,
        _ => unreachable!(),
    }
}

/// The u128 oracle: is a one-tensor file with this dtype, shape, offsets and data length valid?
fn oracle_valid(
    dtype: &str,
    shape: &[u64],
    begin: u64,
    end: u64,
    header_len: usize,
    data: usize,
) -> bool {
    if shape.len() > MAX_RANK {
        return false;
    }
    let mut n: u128 = 1;
    for &d in shape {
        n = match n.checked_mul(d as u128) {
            Some(v) if v <= usize::MAX as u128 => v,
            _ => return false,
        };
    }
    let nbits = n * bits(dtype);
    if !nbits.is_multiple_of(8) || nbits / 8 > usize::MAX as u128 {
        return false;
    }
    begin == 0
        && end as u128 == nbits / 8
        && 8 + header_len as u128 + end as u128 == 8 + header_len as u128 + data as u128
}

#[test]
fn dims_and_offsets_at_boundaries() {
    let mut accepted = 0;
    let mut cases = 0;
    for dtype in ["F4", "U8", "F32", "F64"] {
        for &a in BOUNDARIES {
            for shape in [vec![a], vec![a, 2], vec![2, a], vec![a, a], vec![a, 0]] {
                for &end in BOUNDARIES.iter().chain(&[4, 8, 16]) {
                    let shape_s = shape
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    let h = format!(
                        r#"{{"t":{{"dtype":"{dtype}","shape":[{shape_s}],"data_offsets":[0,{end}]}}}}"#
                    );
                    // Only small data sections are materialised; for the others the file is short
                    // and must be rejected as truncated, never overflow.
                    let data = usize::try_from(end).ok().filter(|&e| e <= 64).unwrap_or(16);
                    let bytes = file(&h, data);
                    let got = parse_bytes(&bytes);
                    let want = oracle_valid(dtype, &shape, 0, end, h.len(), data);
                    cases += 1;
                    assert_eq!(got.is_ok(), want, "{h} + {data} bytes: {got:?}");
                    if let Ok(hdr) = got {
                        accepted += 1;
                        assert_eq!(hdr.data_len as u64, end);
                    }
                }
            }
        }
    }
    println!("{cases} boundary files, {accepted} accepted");
    assert!(accepted > 0);
}

#[test]
fn begin_and_end_at_boundaries() {
    for &b in BOUNDARIES {
        for &e in BOUNDARIES {
            let h = format!(
                r#"{{"t":{{"dtype":"U8","shape":[{}],"data_offsets":[{b},{e}]}}}}"#,
                e.wrapping_sub(b)
            );
            let bytes = file(&h, 2);
            let got = parse_bytes(&bytes);
            // Only [0,0] (zero-size, then 2 trailing bytes: rejected) or [0,2] could be valid.
            assert!(got.is_err() || (b == 0 && e == 2), "[{b},{e}] accepted");
        }
    }
}

/// Contiguous U8 tensors whose ends land on every value in 2^64−8 … 2^64−1: nine tensors (eight of
/// 2^61−1 bytes, the largest U8 tensor whose bit count fits in 64 bits, then 0…7 bytes), and two
/// tensors (where the single large one overflows the bit count first).
#[test]
fn offset_sums_near_2_pow_64_are_rejected_without_overflow() {
    let big = (1u64 << 61) - 1;
    for last in (u64::MAX - 7)..=u64::MAX {
        let mut parts = Vec::new();
        let mut begin = 0u64;
        for i in 0..9 {
            let len = if i < 8 { big } else { last - 8 * big };
            parts.push(format!(
                r#""t{i}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{begin},{}]}}"#,
                begin + len
            ));
            begin += len;
        }
        for pad in 0..8 {
            let h = format!("{{{}}}{}", parts.join(","), " ".repeat(pad));
            for data in [0usize, 1, 7] {
                let err = parse_bytes(&file(&h, data)).unwrap_err();
                assert!(err.to_string().contains("truncated"), "{err}");
                assert_eq!(err.tensor_name(), Some("t0"));
            }
        }
        for split in [1u64, 1 << 31, 1 << 32, 1 << 61, 1 << 63, last - 1] {
            let h = format!(
                r#"{{"a":{{"dtype":"U8","shape":[{split}],"data_offsets":[0,{split}]}},"b":{{"dtype":"U8","shape":[{}],"data_offsets":[{split},{last}]}}}}"#,
                last - split
            );
            let msg = parse_bytes(&file(&h, 0)).unwrap_err().to_string();
            assert!(
                msg.contains("truncated") || msg.contains("overflows"),
                "{msg}"
            );
        }
    }
    // The exact 945-byte file of the catalog (A28), also checked into tests/corpus/bad/.
    let big = (1u64 << 61) - 1;
    let mut parts = Vec::new();
    let mut begin = 0u64;
    for i in 0..9 {
        let len = if i < 8 { big } else { u64::MAX - 8 * big };
        parts.push(format!(
            r#""t{i}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{begin},{}]}}"#,
            begin + len
        ));
        begin += len;
    }
    let bytes = file(&format!("{{{}}}", parts.join(",")), 0);
    assert_eq!(bytes.len(), 945);
    let err = parse_bytes(&bytes).unwrap_err();
    assert_eq!(err.tensor_name(), Some("t0"));
    // The reference crate on the same bytes: in this (debug) build it panics, which is why our
    // parser pre-validates instead of delegating.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let reference =
        std::panic::catch_unwind(|| safetensors::SafeTensors::read_metadata(&bytes).is_ok());
    std::panic::set_hook(prev);
    if cfg!(debug_assertions) {
        assert!(
            reference.is_err(),
            "safetensors no longer panics on A28: update RELIABILITY.md"
        );
    }
}

#[test]
fn header_length_prefix_at_boundaries() {
    for &n in BOUNDARIES {
        for file_len in [0u64, 7, 8, 9, 10, 1 << 20, u64::MAX] {
            let got = check_prefix(&n.to_le_bytes(), file_len);
            let want = (2..=100_000_000).contains(&n) && file_len >= 8 && n <= file_len - 8;
            assert_eq!(got.is_ok(), want, "n={n} file_len={file_len}: {got:?}");
        }
    }
    for len in 0..8 {
        assert!(check_prefix(&[0u8; 8][..len], len as u64).is_err());
    }
}

#[test]
fn checked_nbytes_matches_u128_oracle() {
    for dtype in [
        Dtype::F4,
        Dtype::F6_E2M3,
        Dtype::U8,
        Dtype::BF16,
        Dtype::F32,
        Dtype::C64,
    ] {
        for &a in BOUNDARIES {
            for &b in BOUNDARIES {
                let shape = [a as usize, b as usize];
                let n = a as u128 * b as u128;
                let nbits = n.saturating_mul(dtype.bitsize() as u128);
                let fits = n <= usize::MAX as u128 && nbits <= usize::MAX as u128;
                let want = (fits && nbits.is_multiple_of(8)).then_some((nbits / 8) as usize);
                assert_eq!(
                    checked_nbytes(dtype, &shape).ok(),
                    want,
                    "{dtype} {shape:?}"
                );
            }
        }
        // Sub-byte element counts 1, 2, 3 and rank 0.
        assert_eq!(
            checked_nbytes(dtype, &[]).ok().is_some(),
            dtype.bitsize() % 8 == 0
        );
        for n in 1..=3usize {
            let ok = (n * dtype.bitsize()) % 8 == 0;
            assert_eq!(checked_nbytes(dtype, &[n]).is_ok(), ok, "{dtype} [{n}]");
        }
    }
}

#[test]
fn metadata_entry_cap() {
    let entries: Vec<String> = (0..=ckpt::checkpoint::header::MAX_METADATA_ENTRIES)
        .map(|i| format!(r#""k{i}":"v""#))
        .collect();
    let h = format!(r#"{{"__metadata__":{{{}}}}}"#, entries.join(","));
    let err = parse_bytes(&file(&h, 0)).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Properties.

const DTYPES: &[Dtype] = &[
    Dtype::BOOL,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

type Spec = (String, Dtype, Vec<usize>, usize, usize);

/// Tensor sets: unique names (ASCII, Unicode, quotes and backslashes), every dtype, rank 0..=8,
/// zero-size dims, laid out contiguously; sub-byte shapes that do not end on a byte are dropped.
fn tensor_sets() -> impl Strategy<Value = (Option<Vec<(String, String)>>, Vec<Spec>)> {
    let name = prop_oneof![
        "[a-z_.0-9]{1,24}",
        "[\\PC]{1,8}",
        Just("a\"b\\c".to_string()),
        Just("../../x".to_string()),
    ];
    let tensor = (
        name,
        proptest::sample::select(DTYPES),
        proptest::collection::vec(0usize..5, 0..=MAX_RANK),
    );
    let meta = proptest::option::of(proptest::collection::vec(
        ("[a-z]{1,8}", "[\\PC]{0,12}"),
        0..4,
    ));
    (meta, proptest::collection::vec(tensor, 0..8)).prop_map(|(meta, ts)| {
        let mut out: Vec<Spec> = Vec::new();
        let mut off = 0usize;
        for (name, dtype, shape) in ts {
            if name == "__metadata__" || out.iter().any(|t| t.0 == name) {
                continue;
            }
            let Ok(n) = checked_nbytes(dtype, &shape) else {
                continue;
            };
            out.push((name, dtype, shape, off, off + n));
            off += n;
        }
        let meta = meta.map(|m| {
            let mut seen = std::collections::BTreeSet::new();
            m.into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .collect()
        });
        (meta, out)
    })
}

fn build(meta: Option<&[(String, String)]>, ts: &[Spec]) -> Vec<u8> {
    let mut bytes = serialize_header(meta, ts).unwrap();
    let data: usize = ts.iter().map(|t| t.4 - t.3).sum();
    bytes.extend((0..data).map(|i| (i * 7) as u8));
    bytes
}

/// Full validation of an accepted header, independently of the parser.
fn fully_valid(h: &Header, file_len: usize) {
    let mut cursor = 0usize;
    for t in &h.tensors {
        assert_eq!(t.begin, cursor, "tensors do not tile the data section");
        assert_eq!(checked_nbytes(t.dtype, &t.shape).unwrap(), t.end - t.begin);
        assert!(t.shape.len() <= MAX_RANK);
        assert!(!t.name.is_empty() && !t.name.chars().any(char::is_control));
        cursor = t.end;
    }
    assert_eq!(cursor, h.data_len);
    assert_eq!(8 + h.header_len + h.data_len, file_len);
    let mut names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), h.tensors.len(), "duplicate names accepted");
}

/// Failing seeds are kept in `tests/proptest-regressions/boundaries.txt` (committed) and replayed.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/boundaries.txt",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// parse(serialize_header(x)) == x, and the reference crate accepts what we write.
    #[test]
    fn round_trip((meta, ts) in tensor_sets()) {
        let bytes = build(meta.as_deref(), &ts);
        let h = parse_bytes(&bytes).unwrap();
        let got: Vec<Spec> = h.tensors.iter()
            .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), t.begin, t.end))
            .collect();
        prop_assert_eq!(got, ts);
        prop_assert_eq!(h.metadata, meta);
        prop_assert_eq!((8 + h.header_len) % 8, 0);
        prop_assert!(safetensors::SafeTensors::read_metadata(&bytes).is_ok());
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Every proper prefix of a valid file is rejected, from disk, with an error naming the file.
    #[test]
    fn every_prefix_is_rejected_naming_the_file((meta, ts) in tensor_sets()) {
        let bytes = build(meta.as_deref(), &ts);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.safetensors");
        std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
        prop_assert!(Shard::open(&path).is_ok());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for len in (0..bytes.len()).rev() {
            prop_assert!(parse_bytes(&bytes[..len]).is_err(), "prefix {} accepted", len);
            f.set_len(len as u64).unwrap();
            let err = Shard::open(&path).unwrap_err();
            prop_assert_eq!(err.path(), Some(path.as_path()));
            prop_assert!(err.to_string().contains("cut.safetensors"));
        }
        prop_assert!(Shard::open(Path::new(&path)).is_err());
    }

    /// Each single-byte change is rejected or yields a fully valid file; what we accept, the
    /// reference crate accepts too (we are stricter, never looser).
    #[test]
    fn single_byte_mutations((meta, ts) in tensor_sets(), pos in any::<proptest::sample::Index>(), val in any::<u8>()) {
        let mut bytes = build(meta.as_deref(), &ts);
        let i = pos.index(bytes.len());
        bytes[i] = val;
        if let Ok(h) = parse_bytes(&bytes) {
            fully_valid(&h, bytes.len());
            prop_assert!(safetensors::SafeTensors::read_metadata(&bytes).is_ok());
        }
    }
}

/// Exhaustive variant on one small file: every position, every byte value (≈ 80,000 files).
#[test]
fn exhaustive_single_byte_mutations_of_one_file() {
    let ts: Vec<Spec> = vec![
        ("w".into(), Dtype::F32, vec![2], 0, 8),
        ("b".into(), Dtype::BF16, vec![1], 8, 10),
        ("z".into(), Dtype::F16, vec![0], 10, 10),
    ];
    let meta = vec![("format".to_string(), "pt".to_string())];
    let good = build(Some(&meta), &ts);
    let (mut ok, mut rejected, mut ref_more_lenient) = (0, 0, 0);
    for i in 0..good.len() {
        for v in 0..=255u8 {
            let mut b = good.clone();
            b[i] = v;
            match parse_bytes(&b) {
                Ok(h) => {
                    fully_valid(&h, b.len());
                    assert!(
                        safetensors::SafeTensors::read_metadata(&b).is_ok(),
                        "byte {i} = {v}"
                    );
                    ok += 1;
                }
                Err(_) => {
                    rejected += 1;
                    if safetensors::SafeTensors::read_metadata(&b).is_ok() {
                        ref_more_lenient += 1;
                    }
                }
            }
        }
    }
    println!(
        "{} mutants of a {}-byte file: {ok} accepted (all fully valid), {rejected} rejected, of which the reference accepts {ref_more_lenient}",
        good.len() * 256,
        good.len()
    );
}

/// Found by the `config_json` fuzz target: without serde_json's `float_roundtrip` feature a config
/// value such as `1e-45` came back as `1.0000000000000001e-45` after a rewrite.
#[test]
fn config_floats_survive_a_rewrite_exactly() {
    use ckpt::checkpoint::{ConfigSource, ModelConfig};
    use ckpt::json::{from_slice_nonfinite, to_string_pretty_nonfinite};
    for text in [
        r#"{"rms_norm_eps": 1e-45}"#,
        r#"{"rms_norm_eps": 1e-06, "x": 2.2250738585072014e-308, "y": [0.1, Infinity, NaN]}"#,
        r#"{"rope_theta": 500000.0, "z": 4.9406564584124654e-324}"#,
    ] {
        let c = ModelConfig::parse(text.as_bytes(), ConfigSource::ConfigJson).unwrap();
        let v = serde_json::Value::Object(c.raw.clone());
        let back = from_slice_nonfinite(to_string_pretty_nonfinite(&v).as_bytes()).unwrap();
        assert_eq!(back, v, "{text}");
    }
}
