//! Config and tensor rules: does the config say LLaMA, does the stored tensor set match what
//! `LlamaForCausalLM` builds from that config (names and shapes), do kv heads, vocabulary and tied
//! embeddings agree with the tensors, and are the dtypes consistent.
//!
//! The expected set mirrors `transformers/models/llama/modeling_llama.py`: embeddings `[vocab, hidden]`,
//! per layer two RMSNorm weights, q/k/v/o projections (`attention_bias` adds biases to all four),
//! gate/up/down (`mlp_bias` adds three biases), a final norm, and `lm_head` unless tied.

use std::collections::{BTreeMap, HashSet};

use super::{Finding, Target};
use crate::checkpoint::header::Dtype;
use crate::checkpoint::{Checkpoint, ConfigSource, ModelConfig};
use crate::error::{Result, escape};

/// Finding ids of this module.
pub mod ids {
    /// No `config.json`.
    pub const CONFIG_MISSING: &str = "C001-config-missing";
    /// `model_type` is not the target's.
    pub const MODEL_TYPE: &str = "C002-model-type";
    /// `architectures` is not the target's.
    pub const ARCHITECTURES: &str = "C003-architectures";
    /// `auto_map` / remote code in the repository.
    pub const REMOTE_CODE: &str = "C004-remote-code";
    /// A model type whose tensors look like LLaMA but whose math is different.
    pub const NOT_LLAMA_MATH: &str = "C005-not-llama-math";
    /// A hyperparameter the tensor set is derived from is missing.
    pub const CONFIG_FIELD: &str = "C006-config-field";
    /// A numeric hyperparameter outside its domain (a negative norm epsilon, a non-positive
    /// `rope_theta`).
    pub const CONFIG_VALUE: &str = "C010-config-value";
    /// `hidden_act` is not `silu`.
    pub const HIDDEN_ACT: &str = "C007-hidden-act";
    /// Heads, kv heads, head_dim and hidden size do not fit together.
    pub const HEADS: &str = "C008-heads";
    /// A config key that changes the computation in a way LLaMA does not model.
    pub const UNMODELLED: &str = "C011-unmodelled-key";
    /// `torch_dtype` / `dtype` disagrees with the tensors' dominant dtype.
    pub const CONFIG_DTYPE: &str = "C009-config-dtype";
    /// A tensor the config implies is not in the checkpoint.
    pub const MISSING_TENSOR: &str = "T001-missing-tensor";
    /// A tensor LLaMA does not have.
    pub const UNEXPECTED_TENSOR: &str = "T002-unexpected-tensor";
    /// A tensor LLaMA does not have but loaders ignore (rotary `inv_freq` buffers).
    pub const BENIGN_EXTRA: &str = "T003-benign-extra";
    /// A shape that disagrees with the config.
    pub const SHAPE: &str = "T004-shape";
    /// k/v projection rows disagree with `num_key_value_heads`.
    pub const KV_HEADS: &str = "T005-kv-heads";
    /// Embedding / lm_head rows disagree with `vocab_size`.
    pub const VOCAB: &str = "T006-vocab";
    /// `tie_word_embeddings` is true but `lm_head.weight` is stored.
    pub const TIED_LM_HEAD: &str = "T007-tied-lm-head";
    /// `tie_word_embeddings` is false and there is no `lm_head.weight`.
    pub const MISSING_LM_HEAD: &str = "T008-missing-lm-head";
    /// Tensors in several dtypes.
    pub const MIXED_DTYPES: &str = "T009-mixed-dtypes";
    /// A tensor in a dtype LLaMA tooling does not load as plain weights.
    pub const DTYPE: &str = "T010-dtype";
}

/// Model types whose checkpoints carry LLaMA-like tensor names but whose forward pass differs, with
/// what differs (so "rename it to llama" would load and silently compute something else).
pub const NOT_LLAMA: &[(&str, &str)] = &[
    (
        "gemma",
        "RMSNorm scales by (1 + weight), embeddings are multiplied by sqrt(hidden_size), GeGLU activation",
    ),
    (
        "gemma2",
        "Gemma's (1 + weight) norms and scaled embeddings, plus logit soft-capping and extra pre/post feed-forward norms",
    ),
    (
        "gemma3",
        "Gemma's (1 + weight) norms and scaled embeddings, plus q/k norms and local/global attention layers",
    ),
    (
        "granite",
        "embedding, residual and attention multipliers and logits scaling from the config",
    ),
    (
        "cohere",
        "LayerNorm instead of RMSNorm, attention and MLP in parallel, interleaved rotary, logit_scale",
    ),
    (
        "cohere2",
        "LayerNorm instead of RMSNorm, attention and MLP in parallel, sliding-window layers, logit_scale",
    ),
    (
        "olmo",
        "non-parametric LayerNorm (no norm weights) and optional q/k/v clipping",
    ),
    (
        "olmo2",
        "norms after attention and MLP instead of before, plus q/k RMSNorm",
    ),
    (
        "nemotron",
        "LayerNorm1P (1 + weight, with bias) and a squared-ReLU MLP without a gate",
    ),
    (
        "minicpm",
        "scaled embeddings (scale_emb), scaled residuals (scale_depth) and scaled logits",
    ),
    (
        "stablelm",
        "LayerNorm with bias and partial rotary embeddings",
    ),
    (
        "persimmon",
        "LayerNorm, q/k LayerNorm, squared-ReLU MLP and partial rotary",
    ),
];

/// Alternative names some families use for LLaMA tensors, for hints on unexpected tensors.
const KNOWN_ALIASES: &[(&str, &str)] = &[
    (".ln1.", "Yi's name for `input_layernorm`"),
    (".ln2.", "Yi's name for `post_attention_layernorm`"),
    (
        ".W_pack.",
        "Baichuan's fused q/k/v (split it into q_proj, k_proj, v_proj)",
    ),
    (
        ".qkv_proj.",
        "Phi-3's fused q/k/v (split it into q_proj, k_proj, v_proj)",
    ),
    (
        ".gate_up_proj.",
        "Phi-3's fused gate/up (split it into gate_proj, up_proj)",
    ),
    (
        ".wqkv.",
        "InternLM2's grouped q/k/v (split it into q_proj, k_proj, v_proj)",
    ),
    (
        ".attention.wq.",
        "Meta's name for `self_attn.q_proj` (with rotary-interleaved rows)",
    ),
];

/// Keys of a LLaMA config that LLaMA's computation does not model (Granite's multipliers left in
/// place, SmolLM3's `no_rope_layers`, a sliding window, ...): the model a loader runs is then not
/// the one that was trained. What each loader does with the key is said only where it is known
/// ([`super::loaders::unmodelled_message`]).
fn unmodelled(ck: &Checkpoint, c: &ModelConfig, cfile: &std::path::Path, out: &mut Vec<Finding>) {
    let mut reg = crate::mapping::Registry::empty();
    let Some((file, text)) = crate::mapping::family::BUILTIN.first() else {
        return;
    };
    if reg.load_str(text, file).is_err() {
        return;
    }
    let Some(llama) = reg.get("llama") else {
        return;
    };
    for k in crate::mapping::math::unmodelled_keys(c, &crate::mapping::math::understood_keys(llama))
    {
        let Some(why) = super::loaders::unmodelled_message(ck, c, &k.key) else {
            continue;
        };
        out.push(
            Finding::error(
                ids::UNMODELLED,
                format!(
                    "config key {k} is not part of LLaMA's computation as ckpt models it: {why}"
                ),
            )
            .file(cfile),
        );
    }
}

fn config_file(ck: &Checkpoint) -> std::path::PathBuf {
    match &ck.config {
        Some(c) if !c.path.as_os_str().is_empty() => c.path.clone(),
        _ => ck.dir.join("config.json"),
    }
}

/// `model_type`, `architectures`, remote code, non-LLaMA math, activation, head arithmetic.
pub fn config_identity(ck: &Checkpoint, target: Target, out: &mut Vec<Finding>) {
    let cfile = config_file(ck);
    let Some(c) = &ck.config else {
        out.push(
            Finding::error(
                ids::CONFIG_MISSING,
                "no `config.json`: loaders cannot tell the architecture, and the tensor set cannot be checked",
            )
            .file(&cfile),
        );
        return;
    };
    if c.source == Some(ConfigSource::ParamsJson) {
        out.push(
            Finding::error(
                ids::CONFIG_MISSING,
                "only Meta's `params.json`: Hugging Face-style loaders need `config.json` (run `ckpt convert`)",
            )
            .file(&cfile),
        );
        return;
    }
    let want = target.model_type();
    if c.model_type.as_deref() == Some(want) {
        unmodelled(ck, c, &cfile, out);
    }
    match c.model_type.as_deref() {
        Some(m) if m == want => {}
        Some(m) => {
            if let Some((_, why)) = NOT_LLAMA.iter().find(|(t, _)| *t == m) {
                out.push(
                    Finding::error(
                        ids::NOT_LLAMA_MATH,
                        format!(
                            "`model_type` \"{}\" has LLaMA-like tensor names but different math: {why}; renaming it to llama would load and compute wrong outputs",
                            escape(m)
                        ),
                    )
                    .file(&cfile),
                );
            } else {
                out.push(
                    Finding::error(
                        ids::MODEL_TYPE,
                        format!(
                            "`model_type` is \"{}\", not \"{want}\": loaders dispatch on it and will not take their LLaMA path",
                            escape(m)
                        ),
                    )
                    .file(&cfile),
                );
            }
        }
        None => out.push(
            Finding::error(
                ids::MODEL_TYPE,
                format!("no `model_type`: loaders need \"{want}\" to pick the architecture"),
            )
            .file(&cfile),
        ),
    }
    let arch = target.architecture();
    if c.architectures.len() != 1 || c.architectures[0] != arch {
        let found = if c.architectures.is_empty() {
            "missing".to_string()
        } else {
            format!(
                "[{}]",
                c.architectures
                    .iter()
                    .map(|a| format!("\"{}\"", escape(a)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(
            Finding::error(
                ids::ARCHITECTURES,
                format!("`architectures` is {found}, not [\"{arch}\"]"),
            )
            .file(&cfile),
        );
    }
    if let Some(am) = c.get("auto_map").filter(|v| !v.is_null()) {
        let classes: Vec<String> = am
            .as_object()
            .map(|o| o.keys().map(|k| escape(k)).collect())
            .unwrap_or_default();
        out.push(
            Finding::error(
                ids::REMOTE_CODE,
                format!(
                    "`auto_map` ({}) makes `trust_remote_code` loaders run the repository's Python instead of the LLaMA code; remove it",
                    if classes.is_empty() { "present".into() } else { classes.join(", ") }
                ),
            )
            .file(&cfile),
        );
    }
    for f in ck.other_files.iter().filter(|f| f.ends_with(".py")) {
        out.push(
            Finding::warning(
                ids::REMOTE_CODE,
                "Python file in the release: remote code that LLaMA tooling does not need",
            )
            .file(ck.dir.join(f)),
        );
    }
    if let Some(act) = &c.hidden_act
        && act != "silu"
    {
        out.push(
            Finding::error(
                ids::HIDDEN_ACT,
                format!(
                    "`hidden_act` is \"{}\"; LLaMA tooling assumes silu",
                    escape(act)
                ),
            )
            .file(&cfile),
        );
    }
    // Values no forward pass can use: sqrt(variance + eps) of a negative eps is NaN for
    // near-constant rows, and the rotary frequencies theta^(-2i/d) need theta > 0.
    let bad = [
        c.rms_norm_eps
            .filter(|e| !(e.is_finite() && *e >= 0.0))
            .map(|e| format!("`rms_norm_eps` is {e}: the norm divides by sqrt(variance + eps), NaN or infinite for some rows (the reference forward pass refuses it)")),
        c.rope_theta
            .filter(|t| !(t.is_finite() && *t > 0.0))
            .map(|t| format!("`rope_theta` is {t}: the rotary frequencies theta^(-2i/d) need a finite positive base (the reference forward pass refuses it)")),
    ];
    for msg in bad.into_iter().flatten() {
        out.push(Finding::error(ids::CONFIG_VALUE, msg).file(&cfile));
    }
    if let (Some(h), Some(n)) = (c.hidden_size, c.num_attention_heads) {
        if c.head_dim.is_none() && (n == 0 || h % n != 0) {
            out.push(
                Finding::error(
                    ids::HEADS,
                    format!("`hidden_size` {h} is not divisible by `num_attention_heads` {n} and there is no `head_dim`"),
                )
                .file(&cfile),
            );
        } else if c.head_dim.is_some() && n != 0 && h % n != 0 {
            out.push(
                Finding::error(
                    ids::HEADS,
                    format!("`hidden_size` {h} is not a multiple of `num_attention_heads` {n}: transformers' `LlamaConfig` refuses it (`validate_architecture`) even with an explicit `head_dim`"),
                )
                .file(&cfile)
                .loaders(super::Loaders::TRANSFORMERS),
            );
        }
        let kv = c.resolved_kv_heads().unwrap_or(n);
        if kv == 0 || n % kv != 0 {
            out.push(
                Finding::error(
                    ids::HEADS,
                    format!(
                        "`num_attention_heads` {n} is not a multiple of `num_key_value_heads` {kv}"
                    ),
                )
                .file(&cfile),
            );
        }
    }
}

/// The hyperparameters the LLaMA tensor set is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaDims {
    /// hidden_size
    pub hidden: usize,
    /// num_hidden_layers
    pub layers: usize,
    /// num_attention_heads
    pub heads: usize,
    /// num_key_value_heads
    pub kv_heads: usize,
    /// head_dim
    pub head_dim: usize,
    /// intermediate_size
    pub intermediate: usize,
    /// vocab_size
    pub vocab: usize,
    /// attention_bias
    pub attention_bias: bool,
    /// mlp_bias
    pub mlp_bias: bool,
    /// tie_word_embeddings
    pub tied: bool,
}

impl LlamaDims {
    /// From a config; `Err` lists the missing keys.
    pub fn from_config(c: &ModelConfig) -> std::result::Result<LlamaDims, Vec<&'static str>> {
        let mut missing = Vec::new();
        let mut need = |v: Option<usize>, k: &'static str| {
            if v.is_none() {
                missing.push(k);
            }
            v.unwrap_or(0)
        };
        let hidden = need(c.hidden_size, "hidden_size");
        let layers = need(c.num_hidden_layers, "num_hidden_layers");
        let heads = need(c.num_attention_heads, "num_attention_heads");
        let intermediate = need(c.intermediate_size, "intermediate_size");
        let vocab = need(c.vocab_size, "vocab_size");
        let head_dim = match c.resolved_head_dim() {
            Some(h) => h,
            None => need(None, "head_dim"),
        };
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(LlamaDims {
            hidden,
            layers,
            heads,
            kv_heads: c.resolved_kv_heads().unwrap_or(heads),
            head_dim,
            intermediate,
            vocab,
            attention_bias: c.attention_bias.unwrap_or(false),
            mlp_bias: c.mlp_bias.unwrap_or(false),
            tied: c.tie_word_embeddings.unwrap_or(false),
        })
    }

    /// Every tensor `LlamaForCausalLM` has for these dimensions, with its shape, in layer order.
    pub fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let (h, q, kv, i) = (
            self.hidden,
            self.heads.saturating_mul(self.head_dim),
            self.kv_heads.saturating_mul(self.head_dim),
            self.intermediate,
        );
        let mut v = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            let mut add = |n: &str, s: Vec<usize>| v.push((format!("{p}.{n}"), s));
            add("input_layernorm.weight", vec![h]);
            add("self_attn.q_proj.weight", vec![q, h]);
            add("self_attn.k_proj.weight", vec![kv, h]);
            add("self_attn.v_proj.weight", vec![kv, h]);
            add("self_attn.o_proj.weight", vec![h, q]);
            if self.attention_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
                add("self_attn.o_proj.bias", vec![h]);
            }
            add("post_attention_layernorm.weight", vec![h]);
            add("mlp.gate_proj.weight", vec![i, h]);
            add("mlp.up_proj.weight", vec![i, h]);
            add("mlp.down_proj.weight", vec![h, i]);
            if self.mlp_bias {
                add("mlp.gate_proj.bias", vec![i]);
                add("mlp.up_proj.bias", vec![i]);
                add("mlp.down_proj.bias", vec![h]);
            }
        }
        v.push(("model.norm.weight".into(), vec![h]));
        if !self.tied {
            v.push(("lm_head.weight".into(), vec![self.vocab, h]));
        }
        v
    }
}

/// Beyond this many missing layers, [`tensor_set`] reports the layer count once instead of every
/// missing tensor.
const MAX_MISSING_LAYERS: usize = 1024;

/// One more than the highest `model.layers.{i}.` index stored (0 when there is none).
fn stored_layers(ck: &Checkpoint) -> usize {
    ck.tensors
        .iter()
        .filter_map(|t| {
            t.name
                .strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// Tensors that loaders ignore, with the reason.
pub fn benign_extra(name: &str) -> Option<&'static str> {
    if name.ends_with("rotary_emb.inv_freq") || name.ends_with(".inv_freq") {
        Some(
            "a rotary `inv_freq` buffer saved by old transformers versions; loaders recompute it and ignore this tensor",
        )
    } else if name == "rope.freqs" || name.ends_with(".rope.freqs") {
        Some("Meta's precomputed rotary frequencies; loaders recompute them and ignore this tensor")
    } else {
        None
    }
}

/// The expected tensor set, shapes, kv heads, vocabulary, and tied embeddings.
pub fn tensor_set(ck: &Checkpoint, out: &mut Vec<Finding>) -> Result<()> {
    let Some(c) = &ck.config else {
        return Ok(());
    };
    let cfile = config_file(ck);
    let mut d = match LlamaDims::from_config(c) {
        Ok(d) => d,
        Err(missing) => {
            out.push(
                Finding::error(
                    ids::CONFIG_FIELD,
                    format!(
                        "the config lacks {}: the expected tensor set cannot be derived",
                        missing
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .file(&cfile),
            );
            return Ok(());
        }
    };
    let file_of = |name: &str| {
        ck.get(name)
            .and_then(|t| ck.shard_of(t))
            .map(|s| s.path.clone())
            .unwrap_or_else(|| ck.path.clone())
    };
    // A config claiming far more layers than are stored (`num_hidden_layers` = 10^9) is one
    // finding, not one per missing tensor: enumerating them would exhaust memory.
    let stored = stored_layers(ck);
    if d.layers > stored.saturating_add(MAX_MISSING_LAYERS) {
        out.push(
            Finding::error(
                ids::MISSING_TENSOR,
                format!(
                    "`num_hidden_layers` is {} but the checkpoint stores {stored} layers: layers {stored}..{} are missing",
                    d.layers,
                    d.layers - 1
                ),
            )
            .file(&cfile),
        );
        d.layers = stored;
    }
    let expected = d.expected();
    let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, shape) in &expected {
        let Some(t) = ck.get(name) else {
            if name == "lm_head.weight" {
                out.push(
                    Finding::error(
                        ids::MISSING_LM_HEAD,
                        "`tie_word_embeddings` is false but there is no `lm_head.weight`: loaders initialise a random output layer",
                    )
                    .file(&cfile)
                    .tensor(name),
                );
            } else {
                out.push(
                    Finding::error(
                        ids::MISSING_TENSOR,
                        format!("LlamaForCausalLM needs this tensor (shape {shape:?}) but the checkpoint does not have it"),
                    )
                    .file(&ck.path)
                    .tensor(name),
                );
            }
            continue;
        };
        let file = file_of(name);
        if t.shape == *shape {
            continue;
        }
        let is_vocab = name == "model.embed_tokens.weight" || name == "lm_head.weight";
        let is_kv = name.contains(".self_attn.k_proj.") || name.contains(".self_attn.v_proj.");
        if is_vocab && t.shape.len() == 2 && t.shape[1] == shape[1] {
            let rows = t.shape[0];
            // transformers builds the table with `vocab_size` rows and refuses a checkpoint whose
            // rows differ ("size mismatch", checked with transformers 5.23), padding or not.
            let f = if d.vocab == 0 {
                Finding::error(
                    ids::VOCAB,
                    format!(
                        "{rows} rows but `vocab_size` is 0: transformers builds an empty table and refuses the checkpoint (size mismatch)"
                    ),
                )
            } else if rows > d.vocab {
                Finding::error(
                    ids::VOCAB,
                    format!(
                        "{rows} rows for `vocab_size` {}: transformers refuses the checkpoint (size mismatch); set `vocab_size` to {rows} (padding rows belong in it)",
                        d.vocab
                    ),
                )
            } else {
                Finding::error(
                    ids::VOCAB,
                    format!(
                        "{rows} rows but `vocab_size` is {}: token ids {rows}..{} have no row",
                        d.vocab,
                        d.vocab - 1
                    ),
                )
            };
            out.push(f.file(file).tensor(name));
        } else if is_kv && t.shape.len() == shape.len() && t.shape.get(1) == shape.get(1) {
            let rows = t.shape.first().copied().unwrap_or(0);
            let heads = if d.head_dim == 0 {
                "?".to_string()
            } else if rows % d.head_dim == 0 {
                (rows / d.head_dim).to_string()
            } else {
                format!("{:.2}", rows as f64 / d.head_dim as f64)
            };
            out.push(
                Finding::error(
                    ids::KV_HEADS,
                    format!(
                        "{rows} rows = {heads} kv heads of head_dim {}, but `num_key_value_heads` is {} (expected shape {shape:?}, found {:?})",
                        d.head_dim, d.kv_heads, t.shape
                    ),
                )
                .file(file)
                .tensor(name),
            );
        } else {
            out.push(
                Finding::error(
                    ids::SHAPE,
                    format!("shape is {:?} but the config implies {shape:?}", t.shape),
                )
                .file(file)
                .tensor(name),
            );
        }
    }
    for t in &ck.tensors {
        if names.contains(t.name.as_str()) {
            continue;
        }
        let file = file_of(&t.name);
        if t.name == "lm_head.weight" && d.tied {
            out.push(tied_lm_head(ck, &cfile)?.file(file).tensor(&t.name));
        } else if let Some(why) = benign_extra(&t.name) {
            out.push(
                Finding::warning(ids::BENIGN_EXTRA, why)
                    .file(file)
                    .tensor(&t.name),
            );
        } else {
            let hint = KNOWN_ALIASES
                .iter()
                .find(|(k, _)| t.name.contains(k))
                .map(|(_, h)| format!(" ({h}; `ckpt convert` fixes it)"))
                .unwrap_or_default();
            out.push(
                Finding::error(
                    ids::UNEXPECTED_TENSOR,
                    format!("LlamaForCausalLM has no tensor of this name{hint}; loaders drop it or refuse the checkpoint"),
                )
                .file(file)
                .tensor(&t.name),
            );
        }
    }
    Ok(())
}

fn tied_lm_head(ck: &Checkpoint, cfile: &std::path::Path) -> Result<Finding> {
    let (Some(head), Some(emb)) = (
        ck.get("lm_head.weight"),
        ck.get("model.embed_tokens.weight"),
    ) else {
        return Ok(Finding::error(
            ids::TIED_LM_HEAD,
            "`tie_word_embeddings` is true and `lm_head.weight` is stored without embeddings to tie it to",
        ));
    };
    let same = head.dtype == emb.dtype && head.shape == emb.shape && {
        let (a, b) = (ck.read(head)?, ck.read(emb)?);
        a == b
    };
    let f = if same {
        Finding::warning(
            ids::TIED_LM_HEAD,
            "`tie_word_embeddings` is true and `lm_head.weight` is stored as a copy of the embeddings (redundant bytes)",
        )
    } else {
        Finding::error(
            ids::TIED_LM_HEAD,
            format!(
                "`tie_word_embeddings` is true ({}) but `lm_head.weight` differs from the embeddings: loaders disagree on the output layer (transformers 5 and llama.cpp keep the stored `lm_head`; candle, and vLLM on transformers 4, replace it by the embeddings), so the logits depend on the loader",
                cfile.display()
            ),
        )
    };
    Ok(f)
}

/// Dtype rules: non-float tensors, mixed dtypes, config dtype vs the dominant one.
pub fn dtypes(ck: &Checkpoint, out: &mut Vec<Finding>) {
    let mut by: BTreeMap<String, (usize, u128, Dtype)> = BTreeMap::new();
    for t in &ck.tensors {
        let e = by.entry(t.dtype.to_string()).or_insert((0, 0, t.dtype));
        e.0 += 1;
        e.1 += t.numel() as u128;
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            out.push(
                Finding::error(
                    ids::DTYPE,
                    format!(
                        "dtype {} is not a float weight type LLaMA tooling loads as is (quantised or integer data?)",
                        t.dtype
                    ),
                )
                .file(
                    ck.shard_of(t)
                        .map(|s| s.path.clone())
                        .unwrap_or_else(|| ck.path.clone()),
                )
                .tensor(&t.name),
            );
        }
    }
    let total: u128 = by.values().map(|v| v.1).sum::<u128>().max(1);
    let Some((dom_name, dom)) = by.iter().max_by_key(|(_, v)| v.1) else {
        return;
    };
    if by.len() > 1 {
        let parts: Vec<String> = by
            .iter()
            .map(|(d, (n, p, _))| {
                format!(
                    "{d} {n} tensor{} ({:.1}% of parameters)",
                    if *n == 1 { "" } else { "s" },
                    *p as f64 * 100.0 / total as f64
                )
            })
            .collect();
        out.push(
            Finding::warning(
                ids::MIXED_DTYPES,
                format!(
                    "tensors are stored in {} dtypes: {} (norms kept in F32 beside BF16 weights is common; loaders cast everything to one dtype)",
                    by.len(),
                    parts.join(", ")
                ),
            )
            .file(&ck.path),
        );
    }
    if let Some(c) = &ck.config
        && let Some(cd) = &c.dtype
    {
        let want = match cd.as_str() {
            "float32" | "float" => Some(Dtype::F32),
            "bfloat16" => Some(Dtype::BF16),
            "float16" | "half" => Some(Dtype::F16),
            _ => None,
        };
        if want.is_some_and(|w| w != dom.2) {
            out.push(
                Finding::warning(
                    ids::CONFIG_DTYPE,
                    format!(
                        "config dtype is \"{}\" but most parameters are {dom_name}: loaders using the config dtype will cast the weights",
                        escape(cd)
                    ),
                )
                .file(config_file(ck)),
            );
        }
    }
}
