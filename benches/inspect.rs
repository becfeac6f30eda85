//! Opening a checkpoint reads headers only: time `Checkpoint::open`, family detection and
//! `check` on sparse real-shaped layouts (a 7-shard 60-layer Yi-34B with Yi names and config, and a
//! 4-shard Llama-3-8B, data left as holes) and show that peak memory does not grow with the model size.
//! Then the Llama-3 layout again with a Llama-3-sized `tokenizer.json` (128,000 tokens, 280,000 merges,
//! about 6 MB) and a config without bos/eos ids, which detection resolves from the tokenizer: the
//! first `detect` in a process, and `ckpt detect DIR` as a whole process (release build).
//!
//! Run: `cargo bench --bench inspect`

use std::process::Command;
use std::time::Instant;

use ckpt::checkpoint::Checkpoint;
use ckpt::checkpoint::header::Dtype;
use ckpt::synth::{self, Dims, Fill};

mod common;

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
    with_tokenizer(&reg);
}

/// Detection of a Llama-3-shaped checkpoint whose config has no bos/eos ids beside a
/// `tokenizer.json` of Llama 3's size.
fn with_tokenizer(reg: &ckpt::mapping::Registry) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dims = Dims::LLAMA3_8B;
    let specs = synth::llama_tensors(&dims, Dtype::BF16, false);
    let mut cfg = dims.config_json("llama", "LlamaForCausalLM", "bfloat16");
    if let Some(o) = cfg.as_object_mut() {
        o.remove("bos_token_id");
        o.remove("eos_token_id");
    }
    synth::write_checkpoint(dir.path(), Some(&cfg), &specs, 4, Fill::Sparse).expect("write");
    // Byte-level-BPE-like: tokens `t<i>`, merges of two earlier tokens, two special tokens.
    let vocab: serde_json::Map<String, serde_json::Value> = (0..128_000u64)
        .map(|i| (format!("t{i}"), i.into()))
        .collect();
    let merges: Vec<String> = (0..280_000u64)
        .map(|i| format!("t{} t{}", (i * 7919) % 128_000, (i * 104_729) % 128_000))
        .collect();
    let special = |id: u64, s: &str| serde_json::json!({"id": id, "content": s, "special": true});
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": [special(128_000, "<|begin_of_text|>"), special(128_001, "<|end_of_text|>")],
        "pre_tokenizer": {"type": "ByteLevel"},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges}
    });
    let text = tok.to_string();
    std::fs::write(dir.path().join("tokenizer.json"), &text).expect("tokenizer.json");
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}"#,
    )
    .expect("tokenizer_config.json");
    let ck = Checkpoint::open(dir.path()).expect("open");
    let t = Instant::now();
    let d = ckpt::detect::detect(&ck, reg);
    let first = t.elapsed().as_secs_f64();
    assert_eq!(d.winner.as_deref(), Some("llama"));
    let bin = common::release_binary();
    let mut process = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let o = Command::new(&bin)
            .arg("detect")
            .arg(dir.path())
            .output()
            .expect("run ckpt");
        process = process.min(t.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    println!(
        "\nllama3-8b with a {:.1} MB tokenizer.json, no bos/eos in config.json: first detect in a process {:.1} ms; `ckpt detect DIR` whole process, best of 5: {:.1} ms",
        text.len() as f64 / 1e6,
        first * 1e3,
        process * 1e3
    );
}
