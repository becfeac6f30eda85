//! Detection: every fixture family named correctly; real-shaped sparse layouts (headers only);
//! quantised and adapter checkpoints named as such; and the `ckpt detect` / `ckpt families` CLI.

use ckpt::Checkpoint;
use ckpt::detect::{CheckpointKind, detect};
use ckpt::mapping::Registry;

fn fixture(name: &str) -> Checkpoint {
    Checkpoint::open(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn every_fixture_is_detected() {
    let reg = Registry::builtin().unwrap();
    for (case, fam) in [
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
    ] {
        let d = detect(&fixture(case), &reg);
        assert_eq!(d.kind, CheckpointKind::Plain, "{case}");
        assert_eq!(d.winner.as_deref(), Some(fam), "{case}: {:#?}", d.evidence);
        eprintln!("{case}: {:?} {:?}", d.evidence, d.dims);
    }
}
