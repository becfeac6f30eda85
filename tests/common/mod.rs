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
