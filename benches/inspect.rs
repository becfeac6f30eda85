//! Opening a checkpoint reads headers only: time `Checkpoint::open` and the inspect summary on sparse
//! real-shaped layouts (a 7-shard 60-layer Yi-34B and a 4-shard Llama-3-8B, data left as holes) and
//! show that peak memory does not grow with the model size.
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
        "{:<12} {:>7} {:>8} {:>14} {:>12} {:>14}",
        "layout", "shards", "tensors", "parameters", "open (ms)", "peak RSS (MB)"
    );
    for (name, dims, shards) in [
        ("llama3-8b", Dims::LLAMA3_8B, 4),
        ("yi-34b", Dims::YI_34B, 7),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs = synth::llama_tensors(&dims, Dtype::BF16, false);
        let cfg = dims.config_json("llama", "LlamaForCausalLM", "bfloat16");
        synth::write_checkpoint(dir.path(), Some(&cfg), &specs, shards, Fill::Sparse)
            .expect("write");
        let mut best = f64::MAX;
        let mut params = 0;
        let mut tensors = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let ck = Checkpoint::open(dir.path()).expect("open");
            params = ck.parameter_count();
            tensors = ck.tensors.len();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{:<12} {:>7} {:>8} {:>14} {:>12.3} {:>14.1}",
            name,
            shards,
            tensors,
            ckpt::report::human_count(params),
            best * 1e3,
            peak_rss_kb() as f64 / 1024.0
        );
    }
}
