//! Write-then-read round trip (RELIABILITY.md C.1, slot `roundtrip_write`).
//!
//! An `arbitrary` set of 1-8 small tensors (names from a small alphabet with dots, dtypes F32, F16,
//! BF16, U8, I64, ranks 0-3, dims 0-5, arbitrary bytes) is written as a safetensors file in a temp
//! dir, opened with `Checkpoint::open` (names, dtypes, shapes and bytes must come back unchanged),
//! then rewritten with `write_view` of the identity view at a small arbitrary `max_shard_size` into a
//! fresh directory, which is opened again: every tensor's bytes must be identical. Inputs with names
//! the format rejects (empty, duplicate) are skipped: the invariant is about valid inputs.
#![no_main]

use arbitrary::Arbitrary;
use ckpt::Checkpoint;
use ckpt::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use ckpt::mapping::View;
use ckpt::write::{WriteOptions, write_view};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

const ALPHABET: &[u8] = b"ab.0_";
const DTYPES: &[Dtype] = &[Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::U8, Dtype::I64];

#[derive(Arbitrary, Debug)]
struct Tensor {
    name: Vec<u8>,
    dtype: u8,
    shape: Vec<u8>,
    bytes: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    tensors: Vec<Tensor>,
    max_shard_size: u16,
    metadata: bool,
}

struct Built {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn build(input: &Input) -> Option<Vec<Built>> {
    if input.tensors.is_empty() {
        return None;
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for t in input.tensors.iter().take(8) {
        let name: String = t
            .name
            .iter()
            .take(12)
            .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
            .collect();
        if name.is_empty() || !names.insert(name.clone()) {
            return None;
        }
        let dtype = DTYPES[usize::from(t.dtype) % DTYPES.len()];
        let shape: Vec<usize> = t
            .shape
            .iter()
            .take(3)
            .map(|&d| usize::from(d % 6))
            .collect();
        let n = checked_nbytes(dtype, &shape).ok()?;
        // Arbitrary bytes, repeated to fill the tensor (zeros when none were given).
        let data: Vec<u8> = if t.bytes.is_empty() {
            vec![0; n]
        } else {
            t.bytes.iter().copied().cycle().take(n).collect()
        };
        out.push(Built {
            name,
            dtype,
            shape,
            data,
        });
    }
    Some(out)
}

fn assert_same(ck: &Checkpoint, built: &[Built], what: &str) {
    assert_eq!(ck.tensors.len(), built.len(), "{what}: tensor count");
    for b in built {
        let info = ck
            .get(&b.name)
            .unwrap_or_else(|| panic!("{what}: `{}` missing", b.name));
        assert_eq!(info.dtype, b.dtype, "{what}: dtype of `{}`", b.name);
        assert_eq!(info.shape, b.shape, "{what}: shape of `{}`", b.name);
        let bytes = ck
            .data(info)
            .unwrap_or_else(|e| panic!("{what}: `{}`: {e}", b.name));
        assert_eq!(bytes, &b.data[..], "{what}: bytes of `{}`", b.name);
    }
}

fuzz_target!(|input: Input| {
    let Some(built) = build(&input) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");

    let mut entries = Vec::new();
    let mut off = 0usize;
    for b in &built {
        entries.push((
            b.name.clone(),
            b.dtype,
            b.shape.clone(),
            off,
            off + b.data.len(),
        ));
        off += b.data.len();
    }
    let meta = vec![("format".to_string(), "pt".to_string())];
    let header = serialize_header(input.metadata.then_some(&meta[..]), &entries)
        .expect("valid names serialise");
    let mut file = header;
    for b in &built {
        file.extend_from_slice(&b.data);
    }
    std::fs::write(src.join("model.safetensors"), &file).expect("write source");

    let ck = Checkpoint::open(&src).expect("a well-formed file opens");
    assert_same(&ck, &built, "source");

    let dst = tmp.path().join("dst");
    let opts = WriteOptions {
        max_shard_size: u64::from(input.max_shard_size).max(1),
        ..Default::default()
    };
    write_view(&View::identity(&ck), &dst, &opts).expect("write_view of a valid checkpoint");
    let out = Checkpoint::open(&dst).expect("written checkpoint opens");
    assert_same(&out, &built, "output");
});
