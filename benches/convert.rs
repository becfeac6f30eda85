//! Convert throughput (Yi -> LLaMA) against `cp -r`, and the converter's peak memory.
//!
//! Generates a Yi-named BF16 checkpoint of about `CKPT_BENCH_GB` GB (default 3) with random data in
//! several shards, in a temporary directory under `target/` (same disk as the build; override with
//! `CKPT_BENCH_DIR`), then times, each after dropping the page cache when permitted:
//! `cp -r` (+ `sync`, since the converter fsyncs), `ckpt convert` with and without the SHA-256
//! verification, and reports GB/s, the ratio to cp, and the converter's peak RSS from
//! `/usr/bin/time -v`. Runs the release binary (`cargo build --release` first if it is missing).
//!
//! `cargo bench --bench convert`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{dir_bytes, drop_caches, release_binary, timed};

use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

fn main() {
    let gb: f64 = std::env::var("CKPT_BENCH_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let base = std::env::var_os("CKPT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let bin = release_binary();
    let tmp = tempfile::Builder::new()
        .prefix("bench-convert-")
        .tempdir_in(&base)
        .expect("temp dir");
    let src = tmp.path().join("yi");

    // Yi-like BF16 dims scaled to the requested size.
    let mut d = Dims {
        hidden: 2048,
        layers: 1,
        heads: 16,
        kv_heads: 4,
        intermediate: 5504,
        vocab: 32000,
        tied: false,
    };
    let per_layer =
        2 * (2 * d.hidden * d.hidden + 2 * 512 * d.hidden + 3 * d.hidden * d.intermediate);
    let emb = 2 * 2 * d.vocab * d.hidden;
    d.layers = (((gb * 1e9) as usize).saturating_sub(emb) / per_layer).max(1);
    let mut specs = synth::llama_tensors(&d, Dtype::BF16, false);
    synth::rename(&mut specs, "input_layernorm", "ln1");
    synth::rename(&mut specs, "post_attention_layernorm", "ln2");
    let cfg = d.config_json("Yi", "YiForCausalLM", "bfloat16");
    let t = Instant::now();
    synth::write_checkpoint(&src, Some(&cfg), &specs, 4, Fill::Random(1)).expect("synth");
    println!(
        "source: {} layers, {} tensors, {:.2} GB in 4 shards at {} (generated in {:.1} s)",
        d.layers,
        specs.len(),
        dir_bytes(&src) as f64 / 1e9,
        src.display(),
        t.elapsed().as_secs_f64()
    );
    run(&bin, tmp.path(), &src);
    if std::env::var_os("CKPT_BENCH_KEEP").is_some() {
        println!("kept {}", tmp.keep().display());
    }
}

fn run(bin: &Path, work: &Path, src: &Path) {
    let bytes = dir_bytes(src);
    let gbs = |secs: f64| bytes as f64 / 1e9 / secs;
    let cold = drop_caches();
    let cp_dst = work.join("cp");
    let t = Instant::now();
    let ok = Command::new("cp")
        .args([
            "-r",
            src.to_str().unwrap_or_default(),
            cp_dst.to_str().unwrap_or_default(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cp failed");
    let cp_secs = t.elapsed().as_secs_f64();
    let _ = Command::new("sync").status();
    let cp_sync_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&cp_dst);
    println!(
        "cp -r                     {cp_secs:6.2} s  {:5.2} GB/s   (cp -r + sync: {cp_sync_secs:.2} s, {:.2} GB/s)",
        gbs(cp_secs),
        gbs(cp_sync_secs)
    );
    for (label, extra) in [
        ("convert (verify bytes)", None),
        ("convert --no-verify-bytes", Some("--no-verify-bytes")),
    ] {
        drop_caches();
        let out = work.join("out");
        let mut cmd = vec![
            bin.to_str().unwrap_or_default(),
            "convert",
            src.to_str().unwrap_or_default(),
            out.to_str().unwrap_or_default(),
            "--to",
            "llama",
            "--quiet",
        ];
        if let Some(e) = extra {
            cmd.push(e);
        }
        let (secs, rss) = timed(&cmd);
        let _ = std::fs::remove_dir_all(&out);
        println!(
            "{label:<26}{secs:6.2} s  {:5.2} GB/s   {:.2}x cp, {:.2}x cp+sync   peak RSS {}",
            gbs(secs),
            cp_secs / secs,
            cp_sync_secs / secs,
            rss.map_or("?".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
        );
    }
    println!(
        "page cache: {}",
        if cold {
            "dropped before each run (cold)"
        } else {
            "could not drop (warm cache numbers)"
        }
    );
}
