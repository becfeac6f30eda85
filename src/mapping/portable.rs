//! A LLaMA `config.json` every LLaMA loader reads the same way (the last step of
//! [`super::configmap::to_llama`]).
//!
//! * RoPE in both spellings: transformers 4 / candle / llama.cpp read top-level `rope_theta` and
//!   `rope_scaling`, transformers 5 reads `rope_parameters`. Both are written with the same values
//!   (transformers 5 gives a non-null `rope_scaling` priority over `rope_parameters` and takes a
//!   missing `rope_theta` from the top level, so the two spellings cannot disagree once both come
//!   from one source). A config with only `rope_parameters` is read by candle as theta 10000 without
//!   scaling: silently wrong logits.
//! * `max_position_embeddings` (candle refuses a config without it; llama.cpp takes the context
//!   length from it), and `bos_token_id` / `eos_token_id` (generation stops on `eos_token_id`),
//!   filled from the source's `generation_config.json` or its tokenizer when missing.
//! * Keys of the source family that LLaMA loaders ignore and that mean nothing for LLaMA are dropped
//!   ([`MEANINGLESS`], each with its reason and the condition under which it is meaningless); every
//!   other key is kept. [`describe`] lists what changed for the convert output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::checkpoint::ModelConfig;
use crate::tokenizer::{
    ADDED_FILE, CONFIG_FILE, GENERATION_FILE, JSON_FILE, SP_FILE, SPECIAL_MAP_FILE, Tokenizer,
    ids_of, read_json_object,
};

/// When a source key is meaningless for LLaMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always (training-only or family-only settings).
    Always,
    /// When the value is `false` (a disabled feature LLaMA does not have).
    False,
    /// When every element is `"full_attention"` (what LLaMA does anyway).
    AllFullAttention,
    /// When the config has no RoPE scaling that reads it.
    NoScaling,
    /// When it names a tokenizer class transformers does not ship (remote code).
    NonStockTokenizer,
}

/// Source-family keys that LLaMA loaders ignore and that are meaningless for a LLaMA model, with the
/// condition and the reason. Keys not listed are kept.
pub const MEANINGLESS: &[(&str, When, &str)] = &[
    (
        "max_window_layers",
        When::Always,
        "Qwen2's count of full-attention layers before sliding-window ones; LLaMA has no sliding-window layers",
    ),
    (
        "use_sliding_window",
        When::False,
        "Qwen2's sliding-window switch, off; LLaMA has no sliding window",
    ),
    (
        "layer_types",
        When::AllFullAttention,
        "every layer is full attention, which is what LLaMA does",
    ),
    (
        "attention_out_bias",
        When::False,
        "no output-projection bias; LLaMA's `attention_bias` says it",
    ),
    ("use_mrope", When::False, "multimodal RoPE switch, off"),
    (
        "original_max_position_embeddings",
        When::NoScaling,
        "pre-training context length, read only by RoPE scaling (none here); transformers 5 would otherwise copy it into rope_parameters",
    ),
    (
        "tokenizer_class",
        When::NonStockTokenizer,
        "names the source family's remote-code tokenizer, which `AutoTokenizer` cannot resolve without it",
    ),
    (
        "resid_pdrop",
        When::Always,
        "Phi-3's residual dropout, training only; LLaMA has no residual dropout",
    ),
    (
        "embd_pdrop",
        When::Always,
        "Phi-3's embedding dropout, training only; LLaMA has no embedding dropout",
    ),
    (
        "z_loss_weight",
        When::Always,
        "Baichuan's training loss weight",
    ),
];

/// transformers' `LlamaConfig` default for `max_position_embeddings`: what transformers assumes when
/// the key is absent, written explicitly so other loaders agree.
pub const DEFAULT_MAX_POSITIONS: u64 = 2048;

/// LLaMA's default `rope_theta`.
pub const DEFAULT_THETA: f64 = 10000.0;

fn meaningless(key: &str, v: &Value, map: &Map<String, Value>) -> Option<&'static str> {
    let (_, when, why) = MEANINGLESS.iter().find(|(k, _, _)| *k == key)?;
    let yes = match when {
        When::Always => true,
        When::False => v == &Value::Bool(false) || v.is_null(),
        When::AllFullAttention => v
            .as_array()
            .is_some_and(|a| a.iter().all(|e| e == "full_attention")),
        When::NoScaling => scaling_of(map).is_none(),
        When::NonStockTokenizer => v
            .as_str()
            .is_some_and(|c| !crate::tokenizer::is_stock_class(c)),
    };
    yes.then_some(*why)
}

/// The RoPE scaling object (without `rope_theta`), from either spelling; `None` for the default
/// rotary embedding.
fn scaling_of(map: &Map<String, Value>) -> Option<Map<String, Value>> {
    let from = match map.get("rope_scaling") {
        Some(Value::Object(o)) => o.clone(),
        _ => match map.get("rope_parameters") {
            Some(Value::Object(o)) => o.clone(),
            _ => return None,
        },
    };
    let mut s: Map<String, Value> = from
        .into_iter()
        .filter(|(k, _)| k != "rope_theta")
        .collect();
    let ty = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if ty == "default" {
        return None;
    }
    if !s.contains_key("rope_type") {
        // `rope_type` is what transformers 4.43+, 5 and candle read; keep `type` for older readers.
        s.insert("rope_type".into(), Value::from(ty));
    }
    Some(s)
}

/// Set `key` after `after` when absent (keeps related keys together), else replace in place.
fn put_after(map: &mut Map<String, Value>, after: &str, key: &str, v: Value) {
    if let Some(slot) = map.get_mut(key) {
        *slot = v;
        return;
    }
    if !map.contains_key(after) {
        map.insert(key.to_string(), v);
        return;
    }
    let old = std::mem::take(map);
    let mut v = Some(v);
    for (k, e) in old {
        let hit = k == after;
        map.insert(k, e);
        if hit && let Some(v) = v.take() {
            map.insert(key.to_string(), v);
        }
    }
}

/// Make a LLaMA config map portable (see the module docs). `src` is the source config (its
/// directory is read for `generation_config.json` and the tokenizer when bos/eos are missing).
pub fn apply(map: &mut Map<String, Value>, src: &ModelConfig) {
    // 1. Drop keys meaningless for LLaMA (judged on the source values).
    let drop: Vec<String> = map
        .iter()
        .filter(|(k, v)| meaningless(k, v, map).is_some())
        .map(|(k, _)| k.clone())
        .collect();
    for k in drop {
        map.shift_remove(&k);
    }
    // 2. RoPE in both spellings.
    let theta = map
        .get("rope_parameters")
        .and_then(|p| p.get("rope_theta"))
        .filter(|t| t.is_number())
        .cloned()
        .or_else(|| map.get("rope_theta").filter(|t| t.is_number()).cloned())
        .unwrap_or_else(|| Value::from(DEFAULT_THETA));
    let scaling = scaling_of(map);
    let mut params = Map::new();
    params.insert(
        "rope_type".into(),
        scaling
            .as_ref()
            .and_then(|s| s.get("rope_type").cloned())
            .unwrap_or_else(|| Value::from("default")),
    );
    params.insert("rope_theta".into(), theta.clone());
    if let Some(s) = &scaling {
        for (k, v) in s {
            if k != "rope_type" && k != "type" {
                params.insert(k.clone(), v.clone());
            }
        }
    }
    let anchor = if map.contains_key("rope_parameters") {
        "rope_parameters"
    } else {
        "rms_norm_eps"
    };
    put_after(map, anchor, "rope_theta", theta);
    put_after(
        map,
        "rope_theta",
        "rope_scaling",
        scaling.map(Value::Object).unwrap_or(Value::Null),
    );
    put_after(
        map,
        "rope_scaling",
        "rope_parameters",
        Value::Object(params),
    );
    // 3. Context length.
    if !map.contains_key("max_position_embeddings") {
        let v = src
            .raw
            .get("max_seq_len")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_MAX_POSITIONS);
        put_after(
            map,
            "intermediate_size",
            "max_position_embeddings",
            Value::from(v),
        );
    }
    // 4. bos / eos.
    for (key, tok) in [("bos_token_id", "bos_token"), ("eos_token_id", "eos_token")] {
        if map.get(key).is_some_and(|v| !v.is_null()) {
            continue;
        }
        if let Some(v) = special_id(src, key, tok) {
            map.insert(key.to_string(), v);
        }
    }
}

/// A bos/eos id for a config without one: the source's `generation_config.json`, else its tokenizer.
pub fn special_id(src: &ModelConfig, key: &str, token: &str) -> Option<Value> {
    let dir = src.path.parent()?;
    if let Ok(g) = read_json_object(&dir.join(GENERATION_FILE))
        && let Some(v) = g
            .get(key)
            .filter(|v| ids_of(v).is_some_and(|i| !i.is_empty()))
    {
        return Some(v.clone());
    }
    tokenizer_special_id(dir, token).map(Value::from)
}

/// The id the tokenizer files in `dir` give a special token, when resolvable.
///
/// Remembered for the process, per directory and the identity of every file that decides it
/// (device, inode, size, modification time: a file replaced or edited later is read again, unless
/// an edit in place keeps its size within the filesystem's timestamp granularity). Detection
/// maps a config once per family it scores, twice each (bos, eos), and a Llama-3-sized
/// `tokenizer.json` (9 MB) takes about 0.1 s to parse: read every time, that was 2-3 s of
/// `ckpt detect`.
pub fn tokenizer_special_id(dir: &Path, token: &str) -> Option<u64> {
    let key = TokenizerFiles::of(dir);
    let mut memo = SPECIAL_IDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, ids)) = memo.iter().find(|(k, _)| *k == key)
        && let Some(id) = ids.get(token)
    {
        return *id;
    }
    let t = Tokenizer::read(dir);
    let resolve = |tok: &str| t.special_id(tok).and_then(|(_, id)| id).map(|i| i as u64);
    let mut ids: HashMap<String, Option<u64>> = MEMO_TOKENS
        .iter()
        .map(|&tok| (tok.to_string(), resolve(tok)))
        .collect();
    let id = *ids
        .entry(token.to_string())
        .or_insert_with(|| resolve(token));
    // One entry per directory: the latest state of its files.
    memo.retain(|(k, _)| k.dir != key.dir);
    if memo.len() >= MEMO_DIRS {
        memo.remove(0);
    }
    memo.push((key, ids));
    id
}

/// The special tokens resolved together from one read of the tokenizer files.
const MEMO_TOKENS: [&str; 4] = ["bos_token", "eos_token", "pad_token", "unk_token"];
/// Directories remembered by [`tokenizer_special_id`] (a process opens one or two checkpoints).
const MEMO_DIRS: usize = 8;

/// Special-token ids already read, by the tokenizer files they were read from.
type SpecialIds = Vec<(TokenizerFiles, HashMap<String, Option<u64>>)>;
static SPECIAL_IDS: Mutex<SpecialIds> = Mutex::new(Vec::new());

/// A directory and the identity of each file [`Tokenizer::read`] takes special tokens from
/// (`None` where there is no such file).
#[derive(Debug, PartialEq, Eq)]
struct TokenizerFiles {
    dir: PathBuf,
    files: Vec<Option<FileId>>,
}

/// A file's device, inode, size and modification time (seconds, nanoseconds).
type FileId = (u64, u64, u64, i64, i64);

impl TokenizerFiles {
    fn of(dir: &Path) -> TokenizerFiles {
        use std::os::unix::fs::MetadataExt;
        let files = [
            SP_FILE,
            JSON_FILE,
            CONFIG_FILE,
            SPECIAL_MAP_FILE,
            ADDED_FILE,
        ]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .ok()
                .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect();
        TokenizerFiles {
            dir: dir.to_path_buf(),
            files,
        }
    }
}

/// The `generation_config.json` to write next to a config generated from Meta's `params.json`
/// (which has none): bos/eos from the generated config. `None` when neither is known.
pub fn generation_config(cfg: &Map<String, Value>) -> Option<String> {
    let mut g = Map::new();
    g.insert("_from_model_config".into(), Value::Bool(true));
    let mut any = false;
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = cfg.get(k).filter(|v| !v.is_null()) {
            g.insert(k.into(), v.clone());
            any = true;
        }
    }
    if !any {
        return None;
    }
    let mut s = serde_json::to_string_pretty(&Value::Object(g)).unwrap_or_default();
    s.push('\n');
    Some(s)
}

/// What the conversion did to the config keys, for the convert output: keys dropped as meaningless
/// for LLaMA (with the reason) and keys added for portability.
pub fn describe(src: &Map<String, Value>, out: &Map<String, Value>) -> Vec<String> {
    let mut lines = Vec::new();
    let dropped: Vec<String> = src
        .iter()
        .filter(|(k, _)| !out.contains_key(*k))
        .filter_map(|(k, v)| meaningless(k, v, src).map(|why| format!("{k} ({why})")))
        .collect();
    if !dropped.is_empty() {
        lines.push(format!(
            "config.json: dropped keys meaningless for llama: {}",
            dropped.join("; ")
        ));
    }
    let added: Vec<String> = [
        "rope_theta",
        "rope_scaling",
        "rope_parameters",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
    ]
    .iter()
    .filter(|k| !src.contains_key(**k) && out.contains_key(**k))
    .map(|k| match (*k, out.get(*k)) {
        ("max_position_embeddings", Some(v)) if v.as_u64() == Some(DEFAULT_MAX_POSITIONS) && !src.contains_key("max_seq_len") => {
            format!("{k} {v} (transformers' default: the source does not say; set the real context length)")
        }
        (_, Some(v)) => format!("{k} {v}"),
        _ => (*k).to_string(),
    })
    .collect();
    if !added.is_empty() {
        lines.push(format!(
            "config.json: added for every LLaMA loader: {}",
            added.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// The remembered special ids follow the files: an edited `tokenizer_config.json` (another
    /// bos token) and a replaced `tokenizer.json` (another id for it) are read again.
    #[test]
    fn special_ids_are_remembered_per_state_of_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tok = |ids: [u64; 2]| {
            serde_json::json!({
                "added_tokens": [
                    {"id": ids[0], "content": "<s>", "special": true},
                    {"id": ids[1], "content": "</s>", "special": true}
                ],
                "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}
            })
            .to_string()
        };
        let cfg =
            |bos: &str| serde_json::json!({"bos_token": bos, "eos_token": "</s>"}).to_string();
        std::fs::write(d.join(JSON_FILE), tok([5, 6])).unwrap();
        std::fs::write(d.join(CONFIG_FILE), cfg("<s>")).unwrap();
        assert_eq!(tokenizer_special_id(d, "bos_token"), Some(5));
        assert_eq!(tokenizer_special_id(d, "eos_token"), Some(6));
        assert_eq!(tokenizer_special_id(d, "bos_token"), Some(5));
        // another bos token (a longer file)
        std::fs::write(d.join(CONFIG_FILE), cfg("</s>  ")).unwrap();
        assert_eq!(
            tokenizer_special_id(d, "bos_token"),
            None,
            "`</s>  ` is no token"
        );
        std::fs::write(d.join(CONFIG_FILE), cfg("</s>")).unwrap();
        assert_eq!(tokenizer_special_id(d, "bos_token"), Some(6));
        // tokenizer.json replaced by rename (a new inode, the same size)
        let tmp = d.join("t.tmp");
        std::fs::write(&tmp, tok([7, 8])).unwrap();
        std::fs::rename(&tmp, d.join(JSON_FILE)).unwrap();
        assert_eq!(tokenizer_special_id(d, "eos_token"), Some(8));
        // a token outside the ones resolved together is resolved on its own
        assert_eq!(tokenizer_special_id(d, "cls_token"), None);
    }

    #[test]
    fn both_rope_spellings_and_drops() {
        let mut m = obj(serde_json::json!({
            "hidden_size": 64, "intermediate_size": 96, "rms_norm_eps": 1e-5,
            "max_window_layers": 28, "use_sliding_window": false, "sliding_window": 4096,
            "layer_types": ["full_attention", "full_attention"], "tokenizer_class": "BaichuanTokenizer",
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            "bos_token_id": 1, "eos_token_id": 2
        }));
        let src = ModelConfig::default();
        let before = m.clone();
        apply(&mut m, &src);
        for k in [
            "max_window_layers",
            "use_sliding_window",
            "layer_types",
            "tokenizer_class",
        ] {
            assert!(!m.contains_key(k), "{k}");
        }
        assert_eq!(m["sliding_window"], 4096);
        assert_eq!(m["rope_theta"], 500000.0);
        assert_eq!(m["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(m["rope_scaling"]["factor"], 8.0);
        assert!(m["rope_scaling"].get("rope_theta").is_none());
        assert_eq!(m["rope_parameters"]["rope_theta"], 500000.0);
        assert_eq!(m["max_position_embeddings"], DEFAULT_MAX_POSITIONS);
        let d = describe(&before, &m).join("\n");
        assert!(
            d.contains("max_window_layers (") && d.contains("layer_types ("),
            "{d}"
        );
        assert!(
            d.contains("max_position_embeddings 2048 (transformers' default"),
            "{d}"
        );
    }

    #[test]
    fn legacy_spelling_gains_rope_parameters() {
        let mut m = obj(
            serde_json::json!({"rope_theta": 10000.0, "rope_scaling": null,
            "max_position_embeddings": 256, "layer_types": ["sliding_attention"], "use_sliding_window": true}),
        );
        apply(&mut m, &ModelConfig::default());
        assert_eq!(
            m["rope_parameters"],
            serde_json::json!({"rope_type": "default", "rope_theta": 10000.0})
        );
        assert!(m["rope_scaling"].is_null());
        assert_eq!(m["max_position_embeddings"], 256);
        assert!(m.contains_key("layer_types") && m.contains_key("use_sliding_window"));
    }
}
