//! Synthetic checkpoints for tests and benchmarks: real-shaped layouts (a 60-layer Yi-34B, a
//! Llama-3-8B, ...) written either sparse (a valid header with the data region left as a hole, so a
//! 68 GB checkpoint costs no disk and opening it reads only headers) or filled with deterministic
//! pseudo-random values.
//!
//! Nothing in the `ckpt` commands uses this module; it is public so integration tests and benches can.

use std::io::Write;
use std::path::Path;

use crate::checkpoint::header::{Dtype, checked_nbytes, serialize_header};
use crate::error::{Error, Result};

/// A tensor to write: name, dtype, shape.
pub type Spec = (String, Dtype, Vec<usize>);

/// LLaMA-architecture hyperparameters for generating layouts.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// hidden_size
    pub hidden: usize,
    /// num_hidden_layers
    pub layers: usize,
    /// num_attention_heads
    pub heads: usize,
    /// num_key_value_heads
    pub kv_heads: usize,
    /// intermediate_size
    pub intermediate: usize,
    /// vocab_size
    pub vocab: usize,
    /// tie_word_embeddings
    pub tied: bool,
}

impl Dims {
    /// Yi-34B.
    pub const YI_34B: Dims = Dims {
        hidden: 7168,
        layers: 60,
        heads: 56,
        kv_heads: 8,
        intermediate: 20480,
        vocab: 64000,
        tied: false,
    };
    /// Llama-3-8B.
    pub const LLAMA3_8B: Dims = Dims {
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        intermediate: 14336,
        vocab: 128256,
        tied: false,
    };
    /// TinyLlama-1.1B.
    pub const TINYLLAMA: Dims = Dims {
        hidden: 2048,
        layers: 22,
        heads: 32,
        kv_heads: 4,
        intermediate: 5632,
        vocab: 32000,
        tied: false,
    };
    /// Qwen2-0.5B (q/k/v biases, tied embeddings).
    pub const QWEN2_05B: Dims = Dims {
        hidden: 896,
        layers: 24,
        heads: 14,
        kv_heads: 2,
        intermediate: 4864,
        vocab: 151936,
        tied: true,
    };
    /// Phi-3-mini.
    pub const PHI3_MINI: Dims = Dims {
        hidden: 3072,
        layers: 32,
        heads: 32,
        kv_heads: 32,
        intermediate: 8192,
        vocab: 32064,
        tied: false,
    };
    /// Mixtral-8x7B (per expert).
    pub const MIXTRAL_8X7B: Dims = Dims {
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        intermediate: 14336,
        vocab: 32000,
        tied: false,
    };

    /// head_dim.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// A `config.json` for these dimensions with the given model_type and architecture.
    pub fn config_json(&self, model_type: &str, arch: &str, dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tied,
            "torch_dtype": dtype,
        })
    }
}

/// The HF LLaMA tensor set for `d` (layer by layer), optionally with q/k/v biases (Qwen2).
pub fn llama_tensors(d: &Dims, dtype: Dtype, qkv_bias: bool) -> Vec<Spec> {
    let (h, hd) = (d.hidden, d.head_dim());
    let kv = d.kv_heads * hd;
    let mut v: Vec<Spec> = vec![("model.embed_tokens.weight".into(), dtype, vec![d.vocab, h])];
    for i in 0..d.layers {
        let p = format!("model.layers.{i}");
        v.push((format!("{p}.input_layernorm.weight"), dtype, vec![h]));
        v.push((
            format!("{p}.self_attn.q_proj.weight"),
            dtype,
            vec![d.heads * hd, h],
        ));
        v.push((format!("{p}.self_attn.k_proj.weight"), dtype, vec![kv, h]));
        v.push((format!("{p}.self_attn.v_proj.weight"), dtype, vec![kv, h]));
        if qkv_bias {
            v.push((
                format!("{p}.self_attn.q_proj.bias"),
                dtype,
                vec![d.heads * hd],
            ));
            v.push((format!("{p}.self_attn.k_proj.bias"), dtype, vec![kv]));
            v.push((format!("{p}.self_attn.v_proj.bias"), dtype, vec![kv]));
        }
        v.push((
            format!("{p}.self_attn.o_proj.weight"),
            dtype,
            vec![h, d.heads * hd],
        ));
        v.push((
            format!("{p}.post_attention_layernorm.weight"),
            dtype,
            vec![h],
        ));
        v.push((
            format!("{p}.mlp.gate_proj.weight"),
            dtype,
            vec![d.intermediate, h],
        ));
        v.push((
            format!("{p}.mlp.up_proj.weight"),
            dtype,
            vec![d.intermediate, h],
        ));
        v.push((
            format!("{p}.mlp.down_proj.weight"),
            dtype,
            vec![h, d.intermediate],
        ));
    }
    v.push(("model.norm.weight".into(), dtype, vec![h]));
    if !d.tied {
        v.push(("lm_head.weight".into(), dtype, vec![d.vocab, h]));
    }
    v
}

/// Rename tensors by plain substring replacement (e.g. `input_layernorm` -> `ln1` for Yi).
pub fn rename(specs: &mut [Spec], from: &str, to: &str) {
    for s in specs.iter_mut() {
        s.0 = s.0.replace(from, to);
    }
}

/// How tensor data is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Leave the data region as a hole (sparse file): costs no disk; reads return zeros.
    Sparse,
    /// Deterministic pseudo-random values from the seed (small values for float dtypes).
    Random(u64),
}

/// Write one safetensors file holding `specs` in order, with `{"format": "pt"}` metadata.
pub fn write_file(path: &Path, specs: &[Spec], fill: Fill) -> Result<()> {
    let mut entries = Vec::with_capacity(specs.len());
    let mut off = 0usize;
    for (name, dtype, shape) in specs {
        let n = checked_nbytes(*dtype, shape).map_err(|m| Error::bad_data(m).tensor(name))?;
        entries.push((name.clone(), *dtype, shape.clone(), off, off + n));
        off += n;
    }
    let meta = vec![("format".to_string(), "pt".to_string())];
    let header = serialize_header(Some(&meta), &entries)?;
    let mut f =
        std::fs::File::create(path).map_err(|e| Error::io_write(path, "cannot create", e))?;
    f.write_all(&header)
        .map_err(|e| Error::io_write(path, "cannot write", e))?;
    match fill {
        Fill::Sparse => f
            .set_len((header.len() + off) as u64)
            .map_err(|e| Error::io_write(path, "cannot extend", e))?,
        Fill::Random(seed) => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
            for (name, dtype, shape) in specs {
                let n =
                    checked_nbytes(*dtype, shape).map_err(|m| Error::bad_data(m).tensor(name))?;
                let mut buf = vec![0u8; n];
                fill_random(&mut buf, *dtype, &mut rng);
                w.write_all(&buf)
                    .map_err(|e| Error::io_write(path, "cannot write", e))?;
            }
            w.flush()
                .map_err(|e| Error::io_write(path, "cannot write", e))?;
        }
    }
    Ok(())
}

/// Write a checkpoint directory: `config.json` plus the tensors split into `shards` files
/// (`model-0000K-of-0000N.safetensors` with an index when more than one, else `model.safetensors`).
pub fn write_checkpoint(
    dir: &Path,
    config: Option<&serde_json::Value>,
    specs: &[Spec],
    shards: usize,
    fill: Fill,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_write(dir, "cannot create", e))?;
    if let Some(c) = config {
        let p = dir.join("config.json");
        std::fs::write(&p, serde_json::to_string_pretty(c).unwrap_or_default())
            .map_err(|e| Error::io_write(&p, "cannot write", e))?;
    }
    let shards = shards.max(1);
    if shards == 1 {
        return write_file(&dir.join("model.safetensors"), specs, fill);
    }
    let per = specs.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (k, chunk) in specs.chunks(per.max(1)).enumerate() {
        let name = format!("model-{:05}-of-{:05}.safetensors", k + 1, shards);
        for (t, dtype, shape) in chunk {
            weight_map.insert(t.clone(), serde_json::Value::String(name.clone()));
            total += checked_nbytes(*dtype, shape).unwrap_or(0);
        }
        let seed = match fill {
            Fill::Random(s) => Fill::Random(s.wrapping_add(k as u64)),
            f => f,
        };
        write_file(&dir.join(&name), chunk, seed)?;
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let p = dir.join(crate::checkpoint::INDEX_NAME);
    std::fs::write(&p, serde_json::to_string_pretty(&index).unwrap_or_default())
        .map_err(|e| Error::io_write(&p, "cannot write", e))
}

fn fill_random(buf: &mut [u8], dtype: Dtype, rng: &mut u64) {
    let mut next = || {
        // xorshift64*
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let uniform = |r: u64| ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
    match dtype {
        Dtype::F32 => buf
            .chunks_exact_mut(4)
            .for_each(|c| c.copy_from_slice(&uniform(next()).to_le_bytes())),
        Dtype::BF16 => buf
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&half::bf16::from_f32(uniform(next())).to_le_bytes())),
        Dtype::F16 => buf
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&half::f16::from_f32(uniform(next())).to_le_bytes())),
        _ => buf.iter_mut().for_each(|b| *b = next() as u8),
    }
}
