//! Verify two checkpoints with the library: read both through their families and compare
//! structure, bytes and the logits of the reference forward pass.
//!
//! ```sh
//! cargo run --example verify -- fixtures/yi fixtures/llama-gqa
//! ```

use ckpt::Checkpoint;
use ckpt::mapping::Registry;
use ckpt::verify::{Level, Options, default_sequences, verify};

fn main() -> Result<(), ckpt::Error> {
    let fixture = |name: &str| format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let a = args.next().unwrap_or_else(|| fixture("yi"));
    let b = args.next().unwrap_or_else(|| fixture("llama-gqa"));
    let registry = Registry::builtin()?;
    let (cka, ckb) = (Checkpoint::open(&a)?, Checkpoint::open(&b)?);
    let (va, fa) = ckpt::detect::open_view(&cka, &registry, None, &[])?;
    let (vb, fb) = ckpt::detect::open_view(&ckb, &registry, None, &[])?;
    let vocab = va
        .get("model.embed_tokens.weight")
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1);
    let opts = Options {
        level: Level::Logits,
        atol: 0.0,
        rtol: 0.0,
        sequences: default_sequences(vocab, 2, 8),
        isa: ckpt::kernels::active_isa(),
    };
    let report = verify(&va, &vb, &opts)?;
    println!("A {a} (read as {fa})\nB {b} (read as {fb})");
    println!(
        "structure {}, bytes {}, logits {}",
        report.structure.pass,
        report.bytes.as_ref().is_some_and(|x| x.pass),
        matches!(&report.logits, Some(Ok(g)) if g.pass)
    );
    println!(
        "{}",
        if report.equivalent {
            "equivalent"
        } else {
            "NOT equivalent"
        }
    );
    Ok(())
}
