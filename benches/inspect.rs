//! Opening a checkpoint reads headers only: time `Checkpoint::open`, family detection and
//! `check` on sparse real-shaped layouts (a 7-shard 60-layer Yi-34B with Yi names and config, and a
//! 4-shard Llama-3-8B, data left as holes) and show that peak memory does not grow with the model size.
//!
//! Run: `cargo bench --bench inspect`

use std::time::Instant;

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` / `--list`: nothing to list
    }
    println!(
        "{:<10} {:>6} {:>8} {:>10} {:>10} {:>12} {:>11} {:>14}",
        "layout",
        "shards",
        "tensors",
        "params",
        "open (ms)",
        "detect (ms)",
        "check (ms)",
        "peak RSS (MB)"
    );
    let reg = ckpt::mapping::Registry::builtin().expect("families");
    for (name, dims, shards, yi) in [
        ("llama3-8b", Dims::LLAMA3_8B, 4, false),
        ("yi-34b", Dims::YI_34B, 7, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut specs = synth::llama_tensors(&dims, Dtype::BF16, false);
        let cfg = if yi {
            synth::rename(&mut specs, "input_layernorm", "ln1");
            synth::rename(&mut specs, "post_attention_layernorm", "ln2");
            dims.config_json("Yi", "YiForCausalLM", "bfloat16")
        } else {
            dims.config_json("llama", "LlamaForCausalLM", "bfloat16")
        };
        synth::write_checkpoint(dir.path(), Some(&cfg), &specs, shards, Fill::Sparse)
            .expect("write");
        let mut open = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            let ck = Checkpoint::open(dir.path()).expect("open");
            open = open.min(t.elapsed().as_secs_f64());
            drop(ck);
        }
        let ck = Checkpoint::open(dir.path()).expect("open");
        let (mut det, mut chk) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            let d = ckpt::detect::detect(&ck, &reg);
            det = det.min(t.elapsed().as_secs_f64());
            assert_eq!(d.winner.as_deref(), Some(if yi { "yi" } else { "llama" }));
            let t = Instant::now();
            let opts = ckpt::check::Options {
                target: ckpt::check::Target::Transformers,
                ..Default::default()
            };
            let r = ckpt::check::run(dir.path(), &opts).expect("check");
            chk = chk.min(t.elapsed().as_secs_f64());
            assert_eq!(r.ok(false), !yi);
        }
        println!(
            "{:<10} {:>6} {:>8} {:>10} {:>10.2} {:>12.1} {:>11.1} {:>14.1}",
            name,
            shards,
            ck.tensors.len(),
            ckpt::report::human_count(ck.parameter_count()),
            open * 1e3,
            det * 1e3,
            chk * 1e3,
            peak_rss_kb() as f64 / 1024.0
        );
    }
}
