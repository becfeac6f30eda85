//! `candle-llama DIR TOKENS REPS`: load DIR's `config.json` and `model.safetensors` (mmapped) into
//! candle-transformers' LLaMA on the CPU, run one warm-up forward over TOKENS token ids (no KV
//! cache, position 0), then REPS timed forwards; print the median seconds. REPS=0: no warm-up, one
//! timed forward (for whole-process timing).
//!
//! f32 and f16 run in their stored dtype. bf16 weights are widened to f32 as they load: candle's
//! CPU matmul (gemm, without MKL) has no bf16 kernel ("unsupported dtype BF16 for op matmul"), up to
//! at least 0.11.1.
//!
//! The ids are the ones `ckpt`'s peer bench uses: `(i * 7919 + 1) % vocab`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, tokens, reps] = args.as_slice() else {
        return Err("usage: candle-llama DIR TOKENS REPS".into());
    };
    let (dir, tokens, reps): (&std::path::Path, usize, usize) =
        (dir.as_ref(), tokens.parse()?, reps.parse()?);
    let device = Device::Cpu;
    let cfg: LlamaConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let dtype = match cfg_dtype(dir)?.as_str() {
        "float16" => DType::F16,
        _ => DType::F32, // bf16 included: see the module comment
    };
    let cfg = cfg.into_config(false);
    let st = dir.join("model.safetensors");
    // SAFETY: the benchmark's own file, not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[st], dtype, &device)? };
    let model = Llama::load(vb, &cfg)?;
    let ids: Vec<u32> = (0..tokens)
        .map(|i| ((i * 7919 + 1) % cfg.vocab_size) as u32)
        .collect();
    let input = Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?;
    let run = || -> candle_core::Result<f64> {
        let mut cache = Cache::new(false, dtype, &cfg, &device)?;
        let t = Instant::now();
        let logits = model.forward(&input, 0, &mut cache)?;
        logits.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut s = Vec::new();
    if reps == 0 {
        s.push(run()?);
    } else {
        run()?;
        for _ in 0..reps {
            s.push(run()?);
        }
    }
    s.sort_by(f64::total_cmp);
    println!("{:.6}", s[s.len() / 2]);
    Ok(())
}

fn cfg_dtype(dir: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    Ok(v["torch_dtype"].as_str().unwrap_or("float32").to_string())
}
