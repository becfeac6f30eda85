//! Helpers shared by the integration tests: run the binary as a user would, and find fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run `ckpt` with `args`; returns (exit code, stdout, stderr).
pub fn ckpt(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ckpt"))
        .args(args)
        .output()
        .expect("run ckpt");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Path of a bundled fixture directory (`fixtures/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Every bundled fixture with the family it is saved in; all but `gpt2` are LLaMA-exact.
pub const FIXTURE_FAMILIES: &[(&str, &str)] = &[
    ("llama-mha", "llama"),
    ("llama-gqa", "llama"),
    ("llama-tied", "llama"),
    ("llama-bias", "llama"),
    ("llama-theta", "llama"),
    ("llama3-scaling", "llama"),
    ("llama-bf16", "llama"),
    ("llama-f16", "llama"),
    ("llama-sharded", "llama"),
    ("yi", "yi"),
    ("llama-meta", "llama-meta"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
    ("phi3", "phi3"),
    ("baichuan", "baichuan"),
    ("internlm2", "internlm2"),
    ("gpt2", "gpt2"),
];

/// The LLaMA-exact fixtures with their families.
pub fn llama_exact_fixtures() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIXTURE_FAMILIES
        .iter()
        .copied()
        .filter(|(_, f)| *f != "gpt2")
}

/// `input_ids` (I64 `[batch, seq]`) and `logits` (F32) of `dir/expected.safetensors`: the golden
/// values a fixture script froze from the reference implementation.
pub fn golden(dir: &Path) -> (Vec<Vec<u32>>, Vec<f32>) {
    use ckpt::checkpoint::{Checkpoint, Dtype};
    let ck = Checkpoint::open(dir.join("expected.safetensors")).unwrap();
    let ids = ck.get("input_ids").unwrap();
    assert_eq!(ids.dtype, Dtype::I64);
    let seq = ids.shape[1];
    let flat: Vec<u32> = ck
        .data(ids)
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let lg = ck.get("logits").unwrap();
    assert_eq!(lg.dtype, Dtype::F32);
    let logits = ck
        .data(lg)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (flat.chunks(seq).map(<[u32]>::to_vec).collect(), logits)
}

/// The last-position pass of `model` ([`ckpt::reference::Outputs::Last`]) against the
/// every-position pass `every` of the same batch and the golden logits `want` (`[batch, seq,
/// vocab]`): one row per sequence, each within `tol` of the golden last row; on the scalar ISA
/// (whose sums do not depend on the number of rows) bit-identical to `every`'s last rows, on the
/// others within a millionth of the largest logit. `what` names the case in failures.
pub fn check_last_rows(
    what: &str,
    model: &ckpt::reference::Model<'_>,
    batch: &[Vec<u32>],
    isa: ckpt::kernels::Isa,
    every: &ckpt::reference::Logits,
    want: &[f32],
    tol: f32,
) {
    use ckpt::reference::Outputs;
    let last = model
        .forward_outputs(batch, isa, Outputs::Last, &|_, _| {})
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (b, seq, vocab) = (every.batch, every.seq, every.vocab);
    assert_eq!(
        (last.batch, last.seq, last.vocab),
        (b, seq, vocab),
        "{what}"
    );
    assert_eq!(last.outputs, Outputs::Last, "{what}");
    assert_eq!(last.data.len(), b * vocab, "{what}: one row per sequence");
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for s in 0..b {
        let (got, all) = (last.row(s, seq - 1), every.row(s, seq - 1));
        let gold = &want[(s * seq + seq - 1) * vocab..][..vocab];
        let off = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(
            off(got, gold) <= tol,
            "{what} on {}: sequence {s}'s last row is {} from the golden one",
            isa.name(),
            off(got, gold)
        );
        if isa == ckpt::kernels::Isa::Scalar {
            let bits = |r: &[f32]| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(all), "{what}: sequence {s}, scalar bits");
        } else {
            assert!(
                off(got, all) <= 1e-6 * scale,
                "{what} on {}: sequence {s}'s last row moved by {}",
                isa.name(),
                off(got, all)
            );
        }
    }
}

/// Write `tensors` (name, shape, little-endian f32 bytes) as `path`, a safetensors file.
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Every tensor of a bundled fixture as (name, shape, bytes), to edit and write back with
/// [`write_f32_safetensors`].
pub fn fixture_tensors(name: &str) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let ck = ckpt::checkpoint::Checkpoint::open(fixture(name)).unwrap();
    ck.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                ck.read(t).unwrap().into_owned(),
            )
        })
        .collect()
}
