//! Forward-pass benchmark (`cargo bench --bench forward`): a TinyLlama-1.1B-shaped bf16 checkpoint
//! with random weights (written to a temporary directory, about 2.2 GB, deleted afterwards), the
//! full reference forward over 32 and 128 tokens (batch 1), best of 3 after a warm-up.
//!
//! Prints tokens/s, GFLOP/s (2 x parameters x tokens / time) and the process's peak resident memory
//! (`VmHWM`, which counts the mmapped weight pages) next to its anonymous memory (`RssAnon`:
//! activations and buffers only, showing that no f32 copy of the model is made).

use std::time::{Duration, Instant};

use ckpt::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::kernels;
use ckpt::mapping::View;
use ckpt::reference::Model;
use ckpt::synth::{Dims, Fill, llama_tensors, write_checkpoint};

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(key: &str) -> String {
    status_kib(key).map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

fn main() -> ckpt::Result<()> {
    let isa = kernels::active_isa();
    let d = Dims::TINYLLAMA;
    let dir = tempfile::tempdir().map_err(|e| ckpt::Error::io_write(".", "tempdir", e))?;
    let t0 = Instant::now();
    write_checkpoint(
        dir.path(),
        Some(&d.config_json("llama", "LlamaForCausalLM", "bfloat16")),
        &llama_tensors(&d, Dtype::BF16, false),
        1,
        Fill::Random(1),
    )?;
    let ck = Checkpoint::open(dir.path())?;
    println!(
        "TinyLlama-1.1B shape, bf16, {} parameters, {:.2} GB written in {:.1}s",
        ck.parameter_count(),
        ck.data_bytes() as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    println!(
        "isa {}, {} threads",
        isa.name(),
        rayon::current_num_threads()
    );
    let view = View::identity(&ck);
    let model = Model::new(&view)?;
    let params = ck.parameter_count() as f64;
    println!(
        "{:>7} {:>10} {:>10} {:>10}",
        "tokens", "best ms", "tokens/s", "GFLOP/s"
    );
    for tokens in [32usize, 128] {
        let ids: Vec<u32> = (0..tokens)
            .map(|i| ((i * 7919 + 1) % d.vocab) as u32)
            .collect();
        let batch = vec![ids];
        model.forward(&batch, isa)?; // warm-up: page the weights in
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let l = model.forward(&batch, isa)?;
            best = best.min(t.elapsed());
            std::hint::black_box(l);
        }
        let s = best.as_secs_f64();
        println!(
            "{tokens:>7} {:>10.1} {:>10.1} {:>10.1}",
            s * 1e3,
            tokens as f64 / s,
            2.0 * params * tokens as f64 / s / 1e9
        );
    }
    println!(
        "peak RSS (VmHWM) {}  anonymous now (RssAnon) {}  mapped file now (RssFile) {}",
        mib("VmHWM:"),
        mib("RssAnon:"),
        mib("RssFile:")
    );
    Ok(())
}
