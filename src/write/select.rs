//! Which files of the source directory a conversion puts in the output, besides the tensors and the
//! config: the selection (how a selected file is copied is `write/mod.rs`'s business).
//!
//! * Only the checkpoint's weights: other weight files (another layout's `consolidated.safetensors`
//!   beside `model.safetensors`, stray `*.safetensors` such as `expected.safetensors`, PyTorch
//!   `*.bin` / `*.pth` twins and their indexes, `*.gguf`, Flax / TF weights) are skipped, each with
//!   its reason ([`weight_skip_reason`]).
//! * Remote code (`*.py`) is dropped when the target family has none, except the files the tokenizer
//!   still needs ([`crate::tokenizer::plan_for_llama`]); `tokenizer_config.json` is rewritten to a
//!   stock class when the tokenizer files are a standard kind.
//! * No copied JSON keeps an `auto_map` entry naming a file the output does not ship.
//! * A config generated from Meta's `params.json` gets a `generation_config.json` (bos/eos).

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::config::ConfigSource;
use crate::error::Result;
use crate::mapping::View;
use crate::tokenizer::{
    self, CONFIG_FILE, GENERATION_FILE, MAX_SMALL_JSON_BYTES, Tokenizer, auto_map_entries,
    auto_map_module_file,
};

/// The decisions for the non-tensor files of a conversion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Whether `*.py` files are dropped (the target family has no remote code).
    pub drop_remote_code: bool,
    /// Remote-code files kept anyway (the tokenizer needs them).
    pub keep_code: Vec<String>,
    /// Files replaced by new text in the output: (relative path, text).
    pub rewritten: Vec<(String, String)>,
    /// Files created in the output that the source does not have: (name, text).
    pub generated: Vec<(String, String)>,
    /// What was decided, for the convert output.
    pub notes: Vec<String>,
}

impl Selection {
    /// Why a source file (relative path) is not copied, or `None` when it is. Weight files that are
    /// not the checkpoint's and dropped remote code are not copied; rewritten files are written from
    /// their new text instead.
    pub fn skip_reason(&self, ck: &Checkpoint, rel: &str) -> Option<String> {
        if let Some(r) = weight_skip_reason(ck, rel) {
            return Some(r);
        }
        if self.drop_remote_code && rel.ends_with(".py") && !self.keep_code.iter().any(|k| k == rel)
        {
            return Some("remote code, not needed by the target".into());
        }
        None
    }

    /// The new text of a rewritten file.
    pub fn rewritten(&self, rel: &str) -> Option<&str> {
        self.rewritten
            .iter()
            .find(|(r, _)| r == rel)
            .map(|(_, t)| t.as_str())
    }
}

/// Pickled PyTorch / trainer files: never the safetensors checkpoint being converted.
const PICKLE_EXT: &[&str] = &[".bin", ".pth", ".pt", ".ckpt", ".pkl"];

/// Why a file under the source directory is a weight file that is not part of the checkpoint
/// being converted (`None` for every other file).
pub fn weight_skip_reason(ck: &Checkpoint, rel: &str) -> Option<String> {
    let name = Path::new(rel)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let top = !rel.contains('/');
    if name.ends_with(".safetensors") {
        if top && ck.shards.iter().any(|s| s.file_name == name) {
            return None;
        }
        let ours = ck
            .shards
            .iter()
            .map(|s| s.file_name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let what = if name.starts_with("consolidated") {
            "Meta-layout weights, another layout of the model"
        } else if name.starts_with("model") {
            "weights that the checkpoint's index or layout does not include"
        } else {
            "a safetensors file outside the checkpoint"
        };
        return Some(format!("{what}; the checkpoint is {ours}"));
    }
    if name.ends_with(".safetensors.index.json") || name.ends_with(".bin.index.json") {
        return Some("the index of weights that are not copied".into());
    }
    if PICKLE_EXT.iter().any(|e| name.ends_with(e)) {
        return Some(
            "PyTorch pickle: a twin of the weights in another format, or trainer state".into(),
        );
    }
    if name.ends_with(".gguf") {
        return Some("GGUF weights: another format of the model".into());
    }
    if name.ends_with(".msgpack") || name.ends_with(".h5") {
        return Some("Flax / TensorFlow weights: another format of the model".into());
    }
    None
}

/// Decide the non-tensor files of writing `view`. `drop_remote_code`: the target family has no
/// remote code (LLaMA).
pub fn select(view: &View, drop_remote_code: bool) -> Result<Selection> {
    let ck = view.ckpt;
    let mut sel = Selection {
        drop_remote_code,
        ..Selection::default()
    };
    let exists = |rel: &str| ck.other_files.iter().any(|f| f == rel) || ck.dir.join(rel).is_file();
    if drop_remote_code {
        let t = Tokenizer::read(&ck.dir);
        let plan = tokenizer::plan_for_llama(&t, &exists)?;
        if let Some(text) = plan.config_text {
            sel.rewritten.push((CONFIG_FILE.to_string(), text));
        }
        sel.keep_code = plan.keep_code;
        sel.notes.extend(plan.notes);
    }
    // Any other top-level JSON with an auto_map naming code that will not be shipped.
    for f in &ck.other_files {
        if !f.ends_with(".json") || sel.rewritten(f).is_some() {
            continue;
        }
        let ships =
            |module: &str| !sel.drop_remote_code || sel.keep_code.iter().any(|k| k == module);
        if let Some((text, removed)) = strip_dangling_auto_map(&ck.dir.join(f), &exists, &ships) {
            sel.notes.push(format!(
                "{f}: removed auto_map entries naming code that is not shipped: {}",
                removed.join(", ")
            ));
            sel.rewritten.push((f.clone(), text));
        }
    }
    // Meta -> HF: a generation_config.json with the generated bos/eos.
    let from_params = ck
        .config
        .as_ref()
        .is_some_and(|c| c.source == Some(ConfigSource::ParamsJson));
    let to_config_json = view
        .config
        .as_ref()
        .is_some_and(|c| c.source == Some(ConfigSource::ConfigJson));
    if from_params
        && to_config_json
        && !exists(GENERATION_FILE)
        && let Some(cfg) = &view.config
    {
        match crate::mapping::portable::generation_config(&cfg.raw) {
            Some(text) => {
                sel.generated.push((GENERATION_FILE.to_string(), text));
                sel.notes.push(format!(
                    "{GENERATION_FILE}: written with bos/eos from the tokenizer (params.json has none)"
                ));
            }
            None => sel.notes.push(format!(
                "{GENERATION_FILE}: not written: bos/eos ids unknown (no SentencePiece tokenizer.model to read them from); add them before release"
            )),
        }
    }
    if from_params && to_config_json && !exists(CONFIG_FILE) && !exists(tokenizer::JSON_FILE) {
        let t = Tokenizer::read(&ck.dir);
        let max_len = view
            .config
            .as_ref()
            .and_then(|c| c.raw.get("max_position_embeddings"))
            .and_then(Value::as_u64);
        match (t.spm(), tokenizer::meta_tokenizer_config(&t, max_len)) {
            (Some(_), Some(text)) => {
                sel.generated.push((CONFIG_FILE.to_string(), text));
                sel.notes.push(format!(
                    "{CONFIG_FILE}: written for the LLaMA-style SentencePiece tokenizer.model (LlamaTokenizer, bos added)"
                ));
            }
            (Some(sp), None) => sel.notes.push(format!(
                "{CONFIG_FILE}: not written: tokenizer.model is not LLaMA-style ({}); the stock LlamaTokenizer would tokenize it differently",
                sp.unlike_llama().join(", ")
            )),
            _ => {}
        }
    }
    Ok(sel)
}

/// `path` (a JSON object with an `auto_map`) without the entries whose module file is not shipped:
/// the new text and the removed keys; `None` when nothing dangles or the file is not such JSON.
fn strip_dangling_auto_map(
    path: &Path,
    exists: &dyn Fn(&str) -> bool,
    ships: &dyn Fn(&str) -> bool,
) -> Option<(String, Vec<String>)> {
    let bytes = crate::checkpoint::config::read_limited(path, MAX_SMALL_JSON_BYTES).ok()?;
    // Most such files (`tokenizer.json` above all, megabytes) have no `auto_map`: find out without
    // building their values.
    if crate::json::has_top_level_key(&bytes, "auto_map") == Some(false) {
        return None;
    }
    let Ok(Value::Object(mut map)) = crate::json::from_slice_nonfinite(&bytes) else {
        return None;
    };
    let am = map.get("auto_map")?.clone();
    let entries = auto_map_entries(Some(&am)).ok()?;
    let dangling: Vec<String> = entries
        .iter()
        .filter(|(_, r)| {
            auto_map_module_file(r).is_some_and(|m| {
                let shipped = exists(&m) && (!m.ends_with(".py") || ships(&m));
                !shipped
            })
        })
        .map(|(k, _)| k.clone())
        .collect();
    if dangling.is_empty() {
        return None;
    }
    match am {
        Value::Object(mut o) => {
            for k in &dangling {
                o.shift_remove(k);
            }
            if o.is_empty() {
                map.shift_remove("auto_map");
            } else {
                map.insert("auto_map".into(), Value::Object(o));
            }
        }
        _ => {
            map.shift_remove("auto_map");
        }
    }
    let mut text = crate::json::to_string_pretty_spelled(&Value::Object(map), &bytes);
    text.push('\n');
    let mut removed = dangling;
    removed.dedup();
    Some((text, removed))
}
