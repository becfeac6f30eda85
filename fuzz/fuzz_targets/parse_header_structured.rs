//! Structure-aware header fuzzing (RELIABILITY.md C.1 target 2): an `arbitrary` description of a
//! tensor table with boundary numbers, made consistent (offsets derived from shape x dtype) or not,
//! then 0-3 targeted mutations (duplicate key, swapped offsets, off-by-one end, bad dtype, NUL
//! padding, trailing or missing data bytes, dropped field, unknown field). Invariants: no panic,
//! `Ok` only for a fully valid file, and our verdict equals the reference crate's except for the
//! documented deviations (we are stricter, never looser).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const BOUNDARY: &[u64] = &[
    0,
    1,
    2,
    3,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    (1 << 61) - 1,
    1 << 61,
    1 << 63,
    u64::MAX - 7,
    u64::MAX - 1,
    u64::MAX,
];
const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "U8", "I64", "F64", "F4", "F6_E2M3", "BOOL", "C64", "F8_E4M3", "Q4_0",
    "f32",
];

#[derive(Arbitrary, Debug)]
enum Num {
    Small(u8),
    Boundary(u8),
}

impl Num {
    fn get(&self) -> u64 {
        match self {
            Num::Small(v) => u64::from(*v % 9),
            Num::Boundary(i) => BOUNDARY[usize::from(*i) % BOUNDARY.len()],
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Tensor {
    name: u8,
    raw_name: Option<String>,
    dtype: u8,
    shape: Vec<Num>,
    begin: Num,
    end: Num,
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    DuplicateKey(u8),
    SwapOffsets(u8),
    OffByOneEnd(u8, bool),
    BadDtype(u8),
    NulPad(u8),
    TrailingBytes(u8),
    MissingBytes(u8),
    DropField(u8, u8),
    ExtraField(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    tensors: Vec<Tensor>,
    metadata: Option<Vec<(String, String)>>,
    consistent: bool,
    lead_ws: u8,
    mutations: Vec<Mutation>,
}

struct Entry {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    offsets: Vec<u64>,
    extra: bool,
}

fn bits(dtype: &str) -> u128 {
    match dtype {
        "F4" => 4,
        "F6_E2M3" => 6,
        "BOOL" | "U8" | "F8_E4M3" => 8,
        "F16" | "BF16" => 16,
        "F32" => 32,
        "I64" | "F64" | "C64" => 64,
        _ => 32,
    }
}

fn build(input: &Input) -> Vec<u8> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut cursor: u128 = 0;
    for (i, t) in input.tensors.iter().take(12).enumerate() {
        let name = match &t.raw_name {
            Some(n) if t.name % 4 == 0 => n.clone(),
            _ => format!("model.layers.{i}.w{}", t.name % 3),
        };
        let dtype = DTYPES[usize::from(t.dtype) % DTYPES.len()].to_string();
        let shape: Vec<u64> = t.shape.iter().take(9).map(Num::get).collect();
        let offsets = if input.consistent {
            let n = shape
                .iter()
                .fold(1u128, |a, &d| a.saturating_mul(u128::from(d)));
            let len = n.saturating_mul(bits(&dtype)) / 8;
            let (b, e) = (cursor, cursor.saturating_add(len));
            cursor = e;
            vec![
                u64::try_from(b).unwrap_or(u64::MAX),
                u64::try_from(e).unwrap_or(u64::MAX),
            ]
        } else {
            vec![t.begin.get(), t.end.get()]
        };
        entries.push(Entry {
            name,
            dtype,
            shape,
            offsets,
            extra: false,
        });
    }
    let mut nul_pad = 0usize;
    let mut data_delta: i64 = 0;
    for m in input.mutations.iter().take(3) {
        let k = entries.len().max(1);
        match *m {
            Mutation::DuplicateKey(i) if !entries.is_empty() => {
                let e = &entries[usize::from(i) % k];
                let dup = Entry {
                    name: e.name.clone(),
                    dtype: e.dtype.clone(),
                    shape: e.shape.clone(),
                    offsets: e.offsets.clone(),
                    extra: false,
                };
                entries.push(dup);
            }
            Mutation::SwapOffsets(i) if !entries.is_empty() => {
                entries[usize::from(i) % k].offsets.reverse()
            }
            Mutation::OffByOneEnd(i, up) if !entries.is_empty() => {
                let o = &mut entries[usize::from(i) % k].offsets;
                if let Some(end) = o.last_mut() {
                    *end = if up {
                        end.wrapping_add(1)
                    } else {
                        end.wrapping_sub(1)
                    };
                }
            }
            Mutation::BadDtype(i) if !entries.is_empty() => {
                entries[usize::from(i) % k].dtype = "Q4_0".into()
            }
            Mutation::NulPad(n) => nul_pad = usize::from(n % 8) + 1,
            Mutation::TrailingBytes(n) => data_delta += i64::from(n % 9) + 1,
            Mutation::MissingBytes(n) => data_delta -= i64::from(n % 9) + 1,
            Mutation::DropField(i, f) if !entries.is_empty() => {
                let e = &mut entries[usize::from(i) % k];
                match f % 3 {
                    0 => e.dtype.clear(),
                    1 => e.shape = vec![u64::MAX, u64::MAX],
                    _ => e.offsets.truncate(1),
                }
            }
            Mutation::ExtraField(i) if !entries.is_empty() => {
                entries[usize::from(i) % k].extra = true
            }
            _ => {}
        }
    }
    let mut h = " ".repeat(usize::from(input.lead_ws % 4));
    h.push('{');
    let mut first = true;
    if let Some(meta) = &input.metadata {
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .take(4)
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        h.push_str(&format!(
            "\"__metadata__\":{}",
            serde_json::Value::Object(m)
        ));
        first = false;
    }
    for e in &entries {
        if !first {
            h.push(',');
        }
        first = false;
        let name = serde_json::to_string(&e.name).unwrap_or_default();
        let dtype = if e.dtype.is_empty() {
            String::new()
        } else {
            format!("\"dtype\":\"{}\",", e.dtype)
        };
        let shape: Vec<String> = e.shape.iter().map(u64::to_string).collect();
        let offs: Vec<String> = e.offsets.iter().map(u64::to_string).collect();
        let extra = if e.extra { ",\"evil\":\"x\"" } else { "" };
        h.push_str(&format!(
            "{name}:{{{dtype}\"shape\":[{}],\"data_offsets\":[{}]{extra}}}",
            shape.join(","),
            offs.join(",")
        ));
    }
    h.push('}');
    let pad = (8 - (h.len() + nul_pad) % 8) % 8;
    h.push_str(&" ".repeat(pad));
    let mut out = Vec::with_capacity(h.len() + 64);
    out.extend_from_slice(&((h.len() + nul_pad) as u64).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.resize(out.len() + nul_pad, 0);
    // Data: the declared size when small, adjusted by the mutations.
    let declared = entries
        .iter()
        .filter_map(|e| e.offsets.get(1).copied())
        .max()
        .unwrap_or(0);
    let data = i64::try_from(declared.min(4096))
        .unwrap_or(0)
        .saturating_add(data_delta)
        .max(0);
    out.resize(out.len() + data as usize, 0x5a);
    out
}

fuzz_target!(|input: Input| {
    let bytes = build(&input);
    let ours = common::parse_bytes(&bytes);
    let theirs = common::reference_accepts(&bytes);
    match &ours {
        Ok(h) => {
            common::assert_fully_valid(h, bytes.len());
            assert_eq!(theirs, Some(true), "we accept, the reference does not");
        }
        Err(e) if theirs == Some(true) => {
            let msg = e.to_string();
            assert!(
                common::documented_deviation(&msg),
                "undocumented deviation: {msg}"
            );
        }
        Err(_) => {}
    }
});
