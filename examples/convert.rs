//! Convert a checkpoint to LLaMA names with the library: read it through its detected family as a
//! canonical (LLaMA-named) view, then write that view crash-safely to a new directory.
//!
//! ```sh
//! cargo run --example convert -- fixtures/yi "$(mktemp -d)/yi-llama"
//! ```

use ckpt::Checkpoint;
use ckpt::mapping::Registry;
use ckpt::write::{WriteOptions, write_view};

fn main() -> Result<(), ckpt::Error> {
    let mut args = std::env::args().skip(1);
    let src = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/yi").to_string());
    let tmp = tempfile::tempdir()
        .map_err(|e| ckpt::Error::io(".", "cannot create a temporary directory", e))?;
    let dst = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("yi-llama"));
    let ck = Checkpoint::open(&src)?;
    let registry = Registry::builtin()?;
    // `None`: the detected family; the view presents canonical LLaMA names.
    let (view, family) = ckpt::detect::open_view(&ck, &registry, None, &[])?;
    let summary = write_view(
        &view,
        &dst,
        &WriteOptions {
            // LLaMA runs without the source's remote code.
            drop_remote_code: true,
            ..WriteOptions::default()
        },
    )?;
    println!(
        "{family} -> llama: wrote {} tensors ({} bytes) to {}, bytes verified: {}",
        summary.tensors,
        summary.data_bytes,
        summary.dst.display(),
        summary.verified_bytes
    );
    Ok(())
}
