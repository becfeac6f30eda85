//! `ckpt verify` on a TinyLlama-1.1B-shaped BF16 checkpoint against its Yi-named copy: wall time and
//! peak RSS of the release binary, per level. The two checkpoints (2.2 GB each, same random bytes, Yi
//! naming on the copy) are generated in a temporary directory under `target/` (override with
//! `CKPT_BENCH_DIR`) and deleted afterwards.
//!
//! `cargo bench --bench verify`

use std::path::{Path, PathBuf};
use std::time::Instant;

use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

mod common;
use common::{dir_bytes, drop_caches, release_binary, timed};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var_os("CKPT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("bench-verify-")
        .tempdir_in(&base)
        .expect("temp dir");
    let d = Dims::TINYLLAMA;
    let llama = tmp.path().join("llama");
    let yi = tmp.path().join("yi");
    let t = Instant::now();
    let specs = synth::llama_tensors(&d, Dtype::BF16, false);
    synth::write_checkpoint(
        &llama,
        Some(&d.config_json("llama", "LlamaForCausalLM", "bfloat16")),
        &specs,
        1,
        Fill::Random(7),
    )
    .expect("write llama");
    let mut yi_specs = specs.clone();
    synth::rename(&mut yi_specs, "input_layernorm", "ln1");
    synth::rename(&mut yi_specs, "post_attention_layernorm", "ln2");
    let mut cfg = d.config_json("Yi", "YiForCausalLM", "bfloat16");
    cfg["auto_map"] = serde_json::json!({"AutoModelForCausalLM": "modeling_yi.YiForCausalLM"});
    synth::write_checkpoint(&yi, Some(&cfg), &yi_specs, 1, Fill::Random(7)).expect("write yi");
    println!(
        "TinyLlama-1.1B-shaped BF16: {:.2} GB each (llama and Yi-named copy), generated in {:.1} s",
        dir_bytes(&llama) as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let (a, b) = (
        llama.to_str().unwrap_or_default(),
        yi.to_str().unwrap_or_default(),
    );
    println!("{:<34} {:>9} {:>15}", "run", "time (s)", "peak RSS (MB)");
    for (label, extra) in [
        ("verify --level structure", vec!["--level", "structure"]),
        ("verify --skip-logits (bytes)", vec!["--skip-logits"]),
        ("verify (logits, 3 x 16 tokens)", vec![]),
    ] {
        let cold = drop_caches();
        let mut cmd = vec![bin.to_str().unwrap_or_default(), "verify", a, b, "--json"];
        cmd.extend(extra);
        let (secs, rss) = timed(&cmd);
        println!(
            "{label:<34} {secs:>9.2} {:>15}{}",
            rss.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            if cold { "" } else { "  (warm cache)" }
        );
    }
    println!(
        "model size on disk: {:.1} MB per checkpoint",
        dir_bytes(&llama) as f64 / 1e6
    );
}
