//! Inspect a checkpoint with the library: open it (headers only), list its tensors and config, and
//! detect its family.
//!
//! ```sh
//! cargo run --example inspect -- fixtures/yi
//! ```

use ckpt::Checkpoint;
use ckpt::mapping::Registry;

fn main() -> Result<(), ckpt::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi").to_string());
    // Opening reads headers only; tensor data stays in the (unread) mmaps.
    let ck = Checkpoint::open(&path)?;
    println!(
        "{}: {} file(s), {} tensors, {} parameters",
        ck.path.display(),
        ck.shards.len(),
        ck.tensors.len(),
        ck.parameter_count()
    );
    for t in ck.tensors.iter().take(5) {
        println!("  {} {:?} {}", t.name, t.shape, t.dtype);
    }
    if let Some(c) = &ck.config {
        let n = |v: Option<usize>| v.map_or("(not set)".to_string(), |v| v.to_string());
        println!(
            "config: model_type={} hidden_size={} layers={}",
            c.model_type.as_deref().unwrap_or("(not set)"),
            n(c.hidden_size),
            n(c.num_hidden_layers)
        );
    }
    let registry = Registry::builtin()?;
    let d = ckpt::detect::detect(&ck, &registry);
    match &d.winner {
        Some(family) => println!("family: {family}"),
        None => println!("family: none detected"),
    }
    for e in &d.evidence {
        println!("  {e}");
    }
    Ok(())
}
