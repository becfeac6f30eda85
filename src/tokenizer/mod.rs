//! Tokenizer files of a checkpoint directory: what kind they are, how many tokens they define, which
//! ids the special tokens have, and whether `tokenizer_config.json` points loaders at remote code.
//!
//! Read without Python and treating every file as hostile (size caps, errors naming the file):
//! `tokenizer.model` through the bounded SentencePiece reader in [`sentencepiece`], `tokenizer.json`
//! and `tokenizer_config.json` as JSON. [`plan_for_llama`] decides what `convert --to llama` does
//! with the tokenizer: rewrite `tokenizer_config.json` to a stock transformers class (and drop its
//! `auto_map`) when the files are a standard kind, or keep the remote code when nothing else can
//! load them. The `check` rules built on this are in `check/tokenizer.rs`.

mod parts;
pub mod sentencepiece;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::checkpoint::config::read_limited;
use crate::error::{Error, Result, escape};
pub use sentencepiece::SpModel;

/// Largest `tokenizer.json` read (Gemma's is 34 MB).
pub const MAX_TOKENIZER_JSON_BYTES: u64 = 64 << 20;
/// Largest `tokenizer_config.json` / `generation_config.json` / other small JSON read.
pub const MAX_SMALL_JSON_BYTES: u64 = 16 << 20;

/// `tokenizer.model`.
pub const SP_FILE: &str = "tokenizer.model";
/// `tokenizer.json`.
pub const JSON_FILE: &str = "tokenizer.json";
/// `tokenizer_config.json`.
pub const CONFIG_FILE: &str = "tokenizer_config.json";
/// `generation_config.json`.
pub const GENERATION_FILE: &str = "generation_config.json";

/// Tokenizer classes transformers resolves without remote code (from `TOKENIZER_MAPPING_NAMES` in
/// transformers 5.23 `models/auto/tokenization_auto.py`; the `Fast` suffix is stripped before the
/// lookup, as transformers 5 does, and transformers 4 had both spellings).
pub const STOCK_CLASSES: &[&str] = &[
    "AlbertTokenizer",
    "BartTokenizer",
    "BarthezTokenizer",
    "BartphoTokenizer",
    "BertGenerationTokenizer",
    "BertJapaneseTokenizer",
    "BertTokenizer",
    "BertweetTokenizer",
    "BigBirdTokenizer",
    "BioGptTokenizer",
    "BlenderbotSmallTokenizer",
    "BlenderbotTokenizer",
    "BloomTokenizer",
    "ByT5Tokenizer",
    "CLIPTokenizer",
    "CTRLTokenizer",
    "CamembertTokenizer",
    "CanineTokenizer",
    "ClvpTokenizer",
    "CodeLlamaTokenizer",
    "CohereTokenizer",
    "CpmAntTokenizer",
    "CpmTokenizer",
    "DPRQuestionEncoderTokenizer",
    "DebertaTokenizer",
    "DebertaV2Tokenizer",
    "DiaTokenizer",
    "EsmTokenizer",
    "FNetTokenizer",
    "FSMTTokenizer",
    "FlaubertTokenizer",
    "FunnelTokenizer",
    "GPT2Tokenizer",
    "GPTNeoXJapaneseTokenizer",
    "GPTNeoXTokenizer",
    "GPTSw3Tokenizer",
    "GemmaTokenizer",
    "HerbertTokenizer",
    "LEDTokenizer",
    "LayoutLMv2Tokenizer",
    "LayoutLMv3Tokenizer",
    "LayoutXLMTokenizer",
    "LlamaTokenizer",
    "LukeTokenizer",
    "LxmertTokenizer",
    "M2M100Tokenizer",
    "MBart50Tokenizer",
    "MBartTokenizer",
    "MLukeTokenizer",
    "MPNetTokenizer",
    "MarianTokenizer",
    "MarkupLMTokenizer",
    "MistralCommonBackend",
    "MobileBertTokenizer",
    "MvpTokenizer",
    "NllbTokenizer",
    "NougatTokenizer",
    "OpenAIGPTTokenizer",
    "PLBartTokenizer",
    "PegasusTokenizer",
    "PerceiverTokenizer",
    "PhobertTokenizer",
    "PreTrainedTokenizer",
    "ProphetNetTokenizer",
    "PythonBackend",
    "Qwen2Tokenizer",
    "ReformerTokenizer",
    "RemBertTokenizer",
    "RoCBertTokenizer",
    "RoFormerTokenizer",
    "RobertaTokenizer",
    "SentencePieceBackend",
    "SiglipTokenizer",
    "SplinterTokenizer",
    "T5Tokenizer",
    "TapasTokenizer",
    "TokenizersBackend",
    "WhisperTokenizer",
    "XGLMTokenizer",
    "XLMRobertaTokenizer",
    "XLMTokenizer",
    "XLNetTokenizer",
];

/// Whether transformers resolves a `tokenizer_class` without remote code.
pub fn is_stock_class(name: &str) -> bool {
    let base = name.strip_suffix("Fast").unwrap_or(name);
    STOCK_CLASSES.contains(&base)
}

/// What `tokenizer.json` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokJson {
    /// `model.type` (`BPE`, `Unigram`, `WordPiece`, `WordLevel`); empty when absent.
    pub model_type: String,
    /// Ids of the base vocabulary: one more than the largest id in `model.vocab`.
    pub base: usize,
    /// `added_tokens`: (id, content, special).
    pub added: Vec<(usize, String, bool)>,
    /// The pre-tokenizer (or one of a sequence) is `ByteLevel` (GPT-2 / Llama 3 style).
    pub byte_level: bool,
    /// `model.byte_fallback` is true (SentencePiece-converted BPE).
    pub byte_fallback: bool,
    /// `decoder.type` (`Sequence` for SentencePiece-converted LLaMA tokenizers).
    pub decoder_type: String,
    vocab: Vec<(String, usize)>,
}

impl TokJson {
    /// Whether llama.cpp's converter reads it as a LLaMA SentencePiece-style vocabulary
    /// (`LlamaHfVocab` in gguf-py's `vocab.py`: a BPE model with byte fallback and a `Sequence`
    /// decoder). Otherwise it falls back to its GPT-2 BPE path, which needs the pre-tokenizer to be
    /// one it knows by hash.
    pub fn llama_cpp_llama_hf(&self) -> bool {
        self.model_type == "BPE" && self.byte_fallback && self.decoder_type == "Sequence"
    }

    /// Tokens the tokenizer can produce: base vocabulary and added tokens (largest id + 1).
    pub fn size(&self) -> usize {
        self.added
            .iter()
            .map(|(i, _, _)| i.saturating_add(1))
            .fold(self.base, usize::max)
    }

    /// The id of a token (added tokens first, then the base vocabulary).
    pub fn id_of(&self, token: &str) -> Option<usize> {
        self.added
            .iter()
            .find(|(_, c, _)| c == token)
            .map(|(i, _, _)| *i)
            .or_else(|| self.vocab.iter().find(|(t, _)| t == token).map(|(_, i)| *i))
    }

    /// Parse `tokenizer.json` bytes.
    pub fn parse(bytes: &[u8]) -> std::result::Result<TokJson, String> {
        // Only the parts read are built (see `parts`): the merges are most of a BPE file.
        let o = parts::Parts::parse(bytes)
            .map_err(|e| format!("not valid JSON: {e}"))?
            .ok_or("not a JSON object")?;
        let Some(parts::Model::Object(model)) = o.model else {
            return Err("no `model` object: not a tokenizers `tokenizer.json`".into());
        };
        let parts::ModelFields {
            ty,
            byte_fallback,
            vocab,
        } = *model;
        let mut t = TokJson {
            model_type: ty
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            byte_fallback: byte_fallback.as_ref().and_then(Value::as_bool) == Some(true),
            ..TokJson::default()
        };
        match vocab {
            Some(Value::Object(m)) => {
                for (tok, id) in m {
                    let id = id
                        .as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| {
                            format!("`model.vocab` id of `{}` is not an integer", escape(&tok))
                        })?;
                    t.base = t.base.max(id.saturating_add(1));
                    t.vocab.push((tok, id));
                }
            }
            // Unigram: [[piece, score], ...], ids are positions.
            Some(Value::Array(a)) => {
                for (i, e) in a.iter().enumerate() {
                    let tok = e
                        .as_array()
                        .and_then(|p| p.first())
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("`model.vocab[{i}]` is not [piece, score]"))?;
                    t.vocab.push((tok.to_string(), i));
                }
                t.base = a.len();
            }
            Some(_) => return Err("`model.vocab` is neither an object nor a list".into()),
            None => return Err("no `model.vocab`".into()),
        }
        if let Some(added) = &o.added_tokens {
            let a = added.as_array().ok_or("`added_tokens` is not a list")?;
            for (i, e) in a.iter().enumerate() {
                let id = e
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| format!("`added_tokens[{i}].id` is not an integer"))?;
                let content = e
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`added_tokens[{i}].content` is not a string"))?;
                let special = e.get("special").and_then(Value::as_bool) == Some(true);
                t.added.push((id, content.to_string(), special));
            }
        }
        t.byte_level = has_type(o.pre_tokenizer.as_ref(), "ByteLevel");
        t.decoder_type = o
            .decoder
            .as_ref()
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(t)
    }
}

/// Whether a tokenizers component (or a `Sequence` of them) has the given `type`.
fn has_type(v: Option<&Value>, ty: &str) -> bool {
    let Some(v) = v else { return false };
    if v.get("type").and_then(Value::as_str) == Some(ty) {
        return true;
    }
    ["pretokenizers", "normalizers", "processors", "decoders"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_array))
        .flatten()
        .any(|e| has_type(Some(e), ty))
}

/// What `tokenizer_config.json` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokConfig {
    /// The whole object, key order kept.
    pub raw: Map<String, Value>,
    /// `tokenizer_class`.
    pub class: Option<String>,
    /// `auto_map` entries: (key, class reference `module.Class` or `repo--module.Class`).
    pub auto_map: Vec<(String, String)>,
    /// `added_tokens_decoder`: (id, content); without it, the legacy `added_tokens.json` entries.
    pub added: Vec<(usize, String)>,
    /// Special tokens of the legacy `special_tokens_map.json`, read (as transformers 5.23 does in
    /// `PreTrainedTokenizerBase._from_pretrained`) only when there is no `added_tokens_decoder`;
    /// they override the keys of `tokenizer_config.json`.
    pub legacy_special: Map<String, Value>,
    /// Special-token keys whose value transformers refuses (neither a string nor
    /// `{"content": "..."}`), with the file holding it.
    pub bad_special: Vec<(&'static str, String)>,
}

/// `special_tokens_map.json` (legacy, read when `tokenizer_config.json` has no `added_tokens_decoder`).
pub const SPECIAL_MAP_FILE: &str = "special_tokens_map.json";
/// `added_tokens.json` (legacy, read when `tokenizer_config.json` has no `added_tokens_decoder`).
pub const ADDED_FILE: &str = "added_tokens.json";

/// transformers refuses a special token that is neither a string nor `{"content": "...", ...}`
/// (`TypeError: Special token ... has to be either str or AddedToken`).
fn special_value_ok(v: &Value) -> bool {
    match v {
        Value::Null | Value::String(_) => true,
        Value::Object(o) => o.get("content").is_some_and(Value::is_string),
        _ => false,
    }
}

/// The special-token keys of a tokenizer config.
pub const SPECIAL_KEYS: &[&str] = &["bos_token", "eos_token", "unk_token", "pad_token"];

impl TokConfig {
    /// Parse `tokenizer_config.json` bytes.
    pub fn parse(bytes: &[u8]) -> std::result::Result<TokConfig, String> {
        let v =
            crate::json::from_slice_nonfinite(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(raw) = v else {
            return Err("not a JSON object".into());
        };
        let class = match raw.get("tokenizer_class") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`tokenizer_class` is not a string".into()),
        };
        let auto_map = auto_map_entries(raw.get("auto_map"))?;
        let bad_special = SPECIAL_KEYS
            .iter()
            .filter(|k| raw.get(**k).is_some_and(|v| !special_value_ok(v)))
            .map(|k| (CONFIG_FILE, (*k).to_string()))
            .collect();
        let mut added = Vec::new();
        if let Some(d) = raw.get("added_tokens_decoder") {
            let d = d
                .as_object()
                .ok_or("`added_tokens_decoder` is not an object")?;
            for (k, e) in d {
                let id: usize = k.parse().map_err(|_| {
                    format!("`added_tokens_decoder` key `{}` is not an id", escape(k))
                })?;
                let content = e.get("content").and_then(Value::as_str).ok_or_else(|| {
                    format!("`added_tokens_decoder.{id}.content` is not a string")
                })?;
                added.push((id, content.to_string()));
            }
        }
        Ok(TokConfig {
            raw,
            class,
            auto_map,
            added,
            legacy_special: Map::new(),
            bad_special,
        })
    }

    /// Merge the legacy `special_tokens_map.json` and `added_tokens.json` of `dir`, which
    /// transformers 5.23 reads only when `tokenizer_config.json` has no `added_tokens_decoder`.
    pub fn merge_legacy(&mut self, dir: &Path) -> Result<()> {
        if self.raw.contains_key("added_tokens_decoder") {
            return Ok(());
        }
        let p = dir.join(SPECIAL_MAP_FILE);
        if p.is_file() {
            for (k, v) in read_json_object(&p)? {
                if SPECIAL_KEYS.contains(&k.as_str()) {
                    if !special_value_ok(&v) {
                        self.bad_special.push((SPECIAL_MAP_FILE, k.clone()));
                    }
                    self.legacy_special.insert(k, v);
                }
            }
        }
        let p = dir.join(ADDED_FILE);
        if p.is_file() {
            for (k, v) in read_json_object(&p)? {
                let id = v
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| {
                        Error::bad_data(format!("the id of `{}` is not an integer", escape(&k)))
                            .file(&p)
                    })?;
                self.added.push((id, k));
            }
        }
        Ok(())
    }

    /// The file a special token's value comes from (`special_tokens_map.json` overrides).
    pub fn special_file(&self, key: &str) -> &'static str {
        if self.legacy_special.contains_key(key) {
            SPECIAL_MAP_FILE
        } else {
            CONFIG_FILE
        }
    }

    /// A special token's text (`"<s>"` or `{"content": "<s>", ...}`).
    pub fn special(&self, key: &str) -> Option<&str> {
        match self.legacy_special.get(key).or_else(|| self.raw.get(key))? {
            Value::String(s) => Some(s),
            Value::Object(o) => o.get("content").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// `auto_map` entries as (key, class reference); a list value (the legacy `[slow, fast]` form of
/// `AutoTokenizer`) gives one entry per non-null element.
pub fn auto_map_entries(v: Option<&Value>) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let mut push = |k: &str, e: &Value| -> std::result::Result<(), String> {
        match e {
            Value::String(s) => out.push((k.to_string(), s.clone())),
            Value::Null => {}
            Value::Array(a) => {
                for x in a {
                    match x {
                        Value::String(s) => out.push((k.to_string(), s.clone())),
                        Value::Null => {}
                        _ => return Err(format!("`auto_map.{}` holds a non-string", escape(k))),
                    }
                }
            }
            _ => return Err(format!("`auto_map.{}` is not a class reference", escape(k))),
        }
        Ok(())
    };
    match v {
        Value::Object(o) => {
            for (k, e) in o {
                push(k, e)?;
            }
        }
        Value::Array(_) => push("AutoTokenizer", v)?,
        _ => return Err("`auto_map` is neither an object nor a list".into()),
    }
    Ok(out)
}

/// The file an `auto_map` class reference needs: `tokenization_yi.YiTokenizer` -> `tokenization_yi.py`
/// (a module path `a.b.C` -> `a/b.py`). `None` for a reference into another repository
/// (`org/repo--module.Class`), which is fetched from the Hub, not from the release.
pub fn auto_map_module_file(class_ref: &str) -> Option<String> {
    if class_ref.contains("--") {
        return None;
    }
    let (module, _class) = class_ref.rsplit_once('.')?;
    if module.is_empty() {
        return None;
    }
    Some(format!("{}.py", module.replace('.', "/")))
}

/// The kind of a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SentencePiece `tokenizer.model`.
    SentencePiece,
    /// Hugging Face tokenizers `tokenizer.json`.
    TokenizersJson,
    /// GPT-2 style `vocab.json` + `merges.txt` (slow BPE tokenizers).
    VocabMerges,
    /// A tiktoken rank file (`*.tiktoken`, or Llama 3's `tokenizer.model` in that format).
    Tiktoken,
}

impl Kind {
    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SentencePiece => "SentencePiece `tokenizer.model`",
            Kind::TokenizersJson => "`tokenizer.json`",
            Kind::VocabMerges => "`vocab.json` + `merges.txt`",
            Kind::Tiktoken => "tiktoken ranks",
        }
    }
}

/// The tokenizer files of a directory, each parsed (or the error naming it).
#[derive(Debug, Default)]
pub struct Tokenizer {
    /// The directory.
    pub dir: PathBuf,
    /// `tokenizer.model` as SentencePiece.
    pub sp: Option<Result<SpModel>>,
    /// `tokenizer.model` is a tiktoken rank file (Llama 3's Meta release), not SentencePiece.
    pub sp_is_tiktoken: bool,
    /// `tokenizer.json`.
    pub json: Option<Result<TokJson>>,
    /// `tokenizer_config.json`.
    pub config: Option<Result<TokConfig>>,
    /// Other tokenizer files present (`vocab.json`, `merges.txt`, `*.tiktoken`, ...).
    pub others: Vec<String>,
}

fn read_parsed<T>(
    path: &Path,
    limit: u64,
    parse: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
) -> Result<T> {
    let bytes = read_limited(path, limit)?;
    parse(&bytes).map_err(|m| Error::bad_data(m).file(path))
}

/// A tiktoken rank file: lines of `base64 rank`.
fn looks_like_tiktoken(bytes: &[u8]) -> bool {
    let head = bytes.get(..bytes.len().min(4096)).unwrap_or_default();
    let Ok(text) = std::str::from_utf8(head.rsplit_once_newline()) else {
        return false;
    };
    let mut lines = 0;
    for l in text.lines().take(16) {
        let Some((tok, rank)) = l.split_once(' ') else {
            return false;
        };
        let b64 = !tok.is_empty()
            && tok
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
        if !b64 || rank.parse::<u64>().is_err() {
            return false;
        }
        lines += 1;
    }
    lines > 0
}

trait UpToNewline {
    fn rsplit_once_newline(&self) -> &[u8];
}

impl UpToNewline for [u8] {
    /// The bytes up to and including the last newline (all of them when there is none).
    fn rsplit_once_newline(&self) -> &[u8] {
        match self.iter().rposition(|&b| b == b'\n') {
            Some(p) => self.get(..p).unwrap_or(self),
            None => self,
        }
    }
}

/// Names of other tokenizer files recognised (for "a tokenizer is present" and its kind).
const OTHER_TOKENIZER_FILES: &[&str] = &["vocab.json", "merges.txt", "vocab.txt", "spiece.model"];

/// Whether a file name (in the checkpoint directory) is one of the other tokenizer files: a BPE
/// `vocab.json` / `merges.txt`, a WordPiece `vocab.txt`, a T5 `spiece.model`, or a `*.tiktoken`
/// rank file.
pub fn is_other_tokenizer_file(name: &str) -> bool {
    OTHER_TOKENIZER_FILES.contains(&name) || (name.ends_with(".tiktoken") && !name.contains('/'))
}

impl Tokenizer {
    /// Read the tokenizer files in `dir` (absent files are `None`; unreadable ones are errors).
    pub fn read(dir: &Path) -> Tokenizer {
        let mut t = Tokenizer {
            dir: dir.to_path_buf(),
            ..Tokenizer::default()
        };
        let p = dir.join(SP_FILE);
        if p.exists() {
            t.sp = Some(
                read_limited(&p, sentencepiece::MAX_SP_BYTES).and_then(|bytes| {
                    if looks_like_tiktoken(&bytes) {
                        t.sp_is_tiktoken = true;
                    }
                    sentencepiece::parse(&bytes).map_err(|m| {
                        Error::bad_data(format!("not a SentencePiece model: {m}")).file(&p)
                    })
                }),
            );
        }
        let p = dir.join(JSON_FILE);
        if p.exists() {
            t.json = Some(read_parsed(&p, MAX_TOKENIZER_JSON_BYTES, TokJson::parse));
        }
        let p = dir.join(CONFIG_FILE);
        if p.exists() {
            t.config = Some(
                read_parsed(&p, MAX_SMALL_JSON_BYTES, TokConfig::parse)
                    .and_then(|mut c| c.merge_legacy(dir).map(|()| c)),
            );
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if is_other_tokenizer_file(&n) {
                    t.others.push(n);
                }
            }
        }
        t.others.sort();
        t
    }

    /// The kinds of tokenizer files that parsed.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut k = Vec::new();
        if matches!(self.json, Some(Ok(_))) {
            k.push(Kind::TokenizersJson);
        }
        if matches!(self.sp, Some(Ok(_))) {
            k.push(Kind::SentencePiece);
        }
        if self.sp_is_tiktoken || self.others.iter().any(|o| o.ends_with(".tiktoken")) {
            k.push(Kind::Tiktoken);
        }
        if self.others.iter().any(|o| o == "vocab.json")
            && self.others.iter().any(|o| o == "merges.txt")
        {
            k.push(Kind::VocabMerges);
        }
        k
    }

    /// Whether any tokenizer file is present at all.
    pub fn any(&self) -> bool {
        self.sp.is_some() || self.json.is_some() || self.config.is_some() || !self.others.is_empty()
    }

    /// The parsed `tokenizer_config.json`, if it parsed.
    pub fn cfg(&self) -> Option<&TokConfig> {
        self.config.as_ref().and_then(|c| c.as_ref().ok())
    }

    /// The parsed `tokenizer.json`, if it parsed.
    pub fn tj(&self) -> Option<&TokJson> {
        self.json.as_ref().and_then(|c| c.as_ref().ok())
    }

    /// The parsed SentencePiece model, if it parsed.
    pub fn spm(&self) -> Option<&SpModel> {
        self.sp.as_ref().and_then(|c| c.as_ref().ok())
    }

    /// Tokens the tokenizer can produce (base vocabulary plus added tokens), and where that was
    /// read. `tokenizer.json` when present (it holds both), else the SentencePiece pieces plus the
    /// ids of `added_tokens_decoder` in `tokenizer_config.json`.
    pub fn vocab_size(&self) -> Option<(usize, &'static str)> {
        if let Some(j) = self.tj() {
            return Some((j.size(), JSON_FILE));
        }
        let sp = self.spm()?;
        let added = self
            .cfg()
            .map(|c| {
                c.added
                    .iter()
                    .map(|(i, _)| i.saturating_add(1))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        Some((sp.pieces.len().max(added), SP_FILE))
    }

    /// The id of a token text, through `tokenizer.json`, the added tokens of `tokenizer_config.json`,
    /// or the SentencePiece pieces.
    pub fn id_of(&self, token: &str) -> Option<usize> {
        if let Some(i) = self.tj().and_then(|j| j.id_of(token)) {
            return Some(i);
        }
        if let Some(i) = self
            .cfg()
            .and_then(|c| c.added.iter().find(|(_, t)| t == token).map(|(i, _)| *i))
        {
            return Some(i);
        }
        self.spm().and_then(|s| s.id_of(token))
    }

    /// The tokenizer's id for a special-token key (`bos_token`, ...): the text in
    /// `tokenizer_config.json` looked up in the vocabulary, or for bos/eos/unk/pad without a config
    /// entry, the SentencePiece trainer's id. Returns (text if known, id if resolvable).
    pub fn special_id(&self, key: &str) -> Option<(Option<String>, Option<usize>)> {
        if let Some(text) = self.cfg().and_then(|c| c.special(key)) {
            return Some((Some(text.to_string()), self.id_of(text)));
        }
        if self
            .cfg()
            .is_some_and(|c| c.raw.contains_key(key) || c.legacy_special.contains_key(key))
        {
            return None; // explicitly null
        }
        let sp = self.spm()?;
        let id = match key {
            "bos_token" => sp.bos(),
            "eos_token" => sp.eos(),
            "unk_token" => usize::try_from(sp.unk_id).ok(),
            "pad_token" => usize::try_from(sp.pad_id).ok(),
            _ => None,
        }?;
        Some((sp.pieces.get(id).cloned(), Some(id)))
    }
}

/// What `convert --to llama` does with the tokenizer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerPlan {
    /// The new `tokenizer_config.json` text, when it is rewritten.
    pub config_text: Option<String>,
    /// Remote-code files the tokenizer needs and that are therefore kept.
    pub keep_code: Vec<String>,
    /// What was done, for the convert output.
    pub notes: Vec<String>,
}

/// The stock class for a tokenizer whose files are a standard kind, and why; `None` when only
/// remote code can load it.
///
/// * `tokenizer.json` present: `PreTrainedTokenizerFast`. transformers 4 loads the file exactly as
///   written; transformers 5 maps it to `TokenizersBackend`, which also loads the file as written.
///   `LlamaTokenizerFast` would be wrong for ByteLevel (Llama 3 style) files: transformers 5's
///   `LlamaTokenizer` hard-codes a Metaspace pre-tokenizer (it falls back with a warning).
/// * only a SentencePiece `tokenizer.model`: `LlamaTokenizer` (transformers 4: the SentencePiece
///   slow tokenizer, converted to the fast one by `AutoTokenizer`; 5: a byte-fallback BPE built from
///   the model's pieces and merges).
pub fn stock_class(t: &Tokenizer) -> Option<(&'static str, &'static str)> {
    if t.tj().is_some() {
        return Some((
            "PreTrainedTokenizerFast",
            "`tokenizer.json` loads as written with the generic fast tokenizer",
        ));
    }
    let sp = t.spm()?;
    if sp.llama_like() {
        return Some((
            "LlamaTokenizer",
            "a LLaMA-style SentencePiece `tokenizer.model` (BPE, byte fallback, identity normalisation) loads exactly with the LLaMA tokenizer",
        ));
    }
    // Another SentencePiece model: transformers 5's LlamaTokenizer (a byte-fallback BPE without
    // normaliser) would tokenize it differently; only its own code reproduces it.
    None
}

/// Decide what happens to the tokenizer when converting to a family without remote code. `shipped`
/// says whether a file will be in the output (before remote-code files are dropped).
pub fn plan_for_llama(t: &Tokenizer, shipped: &dyn Fn(&str) -> bool) -> Result<TokenizerPlan> {
    let mut plan = TokenizerPlan::default();
    let Some(cfg) = &t.config else {
        return Ok(plan);
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            // Copied as it is; `check` reports it (K002).
            plan.notes.push(format!(
                "{CONFIG_FILE}: not rewritten, it cannot be read ({}); copied as it is",
                e.message()
            ));
            return Ok(plan);
        }
    };
    let stock_now = cfg.class.as_deref().is_none_or(is_stock_class);
    if cfg.auto_map.is_empty() && stock_now {
        return Ok(plan);
    }
    let old = cfg.class.clone().unwrap_or_else(|| "(none)".into());
    match stock_class(t) {
        Some((class, why)) => {
            let mut map = Map::with_capacity(cfg.raw.len());
            for (k, v) in &cfg.raw {
                if k == "auto_map" {
                    continue;
                }
                map.insert(k.clone(), v.clone());
            }
            if let Some(slot) = map.get_mut("tokenizer_class") {
                *slot = Value::from(class);
            } else {
                map.insert("tokenizer_class".into(), Value::from(class));
            }
            let original = read_limited(&t.dir.join(CONFIG_FILE), MAX_SMALL_JSON_BYTES)?;
            let mut text = crate::json::to_string_pretty_spelled(&Value::Object(map), &original);
            text.push('\n');
            plan.config_text = Some(text);
            plan.notes.push(format!(
                "{CONFIG_FILE}: tokenizer_class `{}` -> `{class}`{} ({why})",
                escape(&old),
                if cfg.auto_map.is_empty() {
                    ""
                } else {
                    ", auto_map removed"
                }
            ));
        }
        None => {
            let why = match t.spm() {
                Some(sp) => format!(
                    "the SentencePiece model is not LLaMA-style ({}), so the stock LlamaTokenizer would tokenize differently",
                    sp.unlike_llama().join(", ")
                ),
                None => "no `tokenizer.json` or SentencePiece model a stock class loads".into(),
            };
            let mut files = Vec::new();
            for (_, r) in &cfg.auto_map {
                if let Some(f) = auto_map_module_file(r)
                    && !files.contains(&f)
                {
                    files.push(f);
                }
            }
            let missing: Vec<&String> = files.iter().filter(|f| !shipped(f)).collect();
            if !missing.is_empty() {
                plan.notes.push(format!(
                    "the tokenizer needs remote code ({why}) that the source does not ship ({}): it does not load from the source either; its auto_map entries are removed",
                    missing.iter().map(|m| escape(m)).collect::<Vec<_>>().join(", ")
                ));
                files.retain(|f| shipped(f));
                if files.is_empty() {
                    return Ok(plan);
                }
            }
            plan.notes.push(format!(
                "the tokenizer needs its remote code ({why}): kept {} and the `auto_map` of {CONFIG_FILE}; loading it needs trust_remote_code",
                if files.is_empty() { "(no file)".to_string() } else { files.join(", ") }
            ));
            plan.keep_code = files;
        }
    }
    Ok(plan)
}

/// The `tokenizer_config.json` for a release converted from Meta's layout, whose tokenizer is only a
/// SentencePiece `tokenizer.model` (as transformers' `convert_llama_weights_to_hf.py` writes it):
/// `LlamaTokenizer`, bos added, eos not, special tokens named by the model's trainer ids. `None`
/// when the model is not LLaMA-style (the stock class would tokenize differently) or unreadable.
pub fn meta_tokenizer_config(t: &Tokenizer, max_len: Option<u64>) -> Option<String> {
    let sp = t.spm()?;
    if !sp.llama_like() {
        return None;
    }
    let piece = |id: i64| {
        usize::try_from(id)
            .ok()
            .and_then(|i| sp.pieces.get(i))
            .map(|p| Value::from(p.clone()))
            .unwrap_or(Value::Null)
    };
    let mut m = Map::new();
    m.insert("add_bos_token".into(), Value::Bool(true));
    m.insert("add_eos_token".into(), Value::Bool(false));
    m.insert("bos_token".into(), piece(sp.bos_id));
    m.insert("clean_up_tokenization_spaces".into(), Value::Bool(false));
    m.insert("eos_token".into(), piece(sp.eos_id));
    if let Some(n) = max_len {
        m.insert("model_max_length".into(), Value::from(n));
    }
    m.insert("pad_token".into(), piece(sp.pad_id));
    m.insert("tokenizer_class".into(), Value::from("LlamaTokenizer"));
    m.insert("unk_token".into(), piece(sp.unk_id));
    let mut s = serde_json::to_string_pretty(&Value::Object(m)).ok()?;
    s.push('\n');
    Some(s)
}

/// Read a small JSON object file (size-capped), with errors naming the file.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>> {
    let bytes = read_limited(path, MAX_SMALL_JSON_BYTES)?;
    match crate::json::from_slice_nonfinite(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::bad_data("not a JSON object").file(path)),
        Err(e) => Err(Error::bad_data(format!("not valid JSON: {e}")).file(path)),
    }
}

/// The token ids a JSON value names (`2`, `[2, 32000]`, `null`); `None` when malformed.
pub fn ids_of(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Number(n) => n.as_u64().map(|i| vec![i]),
        Value::Array(a) => a.iter().map(Value::as_u64).collect(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `TokJson::parse` reads only the parts it needs, with the answers and errors a whole `Value`
    /// would give: non-objects, a `model` that is not an object, repeated keys (the last wins),
    /// `null`s, invalid JSON inside a skipped value, nesting past the recursion limit.
    #[test]
    fn tokenizer_json_parts_read_as_a_whole_value_would() {
        let ok = |j: &str| TokJson::parse(j.as_bytes()).unwrap_or_else(|e| panic!("{j}: {e}"));
        let err = |j: &str| match TokJson::parse(j.as_bytes()) {
            Ok(t) => panic!("{j}: read as {t:?}"),
            Err(e) => e,
        };
        let t = ok(r#"{"version": "1.0", "truncation": null,
            "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "byte_fallback": true, "ignore_merges": true,
                "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", ["a", "b"], {"x": [1]}]}}"#);
        assert_eq!(
            (t.model_type.as_str(), t.base, t.byte_fallback),
            ("BPE", 3, true)
        );
        assert_eq!(t.added, [(3, "<s>".to_string(), true)]);
        assert!(t.byte_level);
        assert_eq!(t.decoder_type, "ByteLevel");
        assert_eq!(
            (t.id_of("ab"), t.id_of("<s>"), t.id_of("c")),
            (Some(2), Some(3), None)
        );
        // a Unigram vocabulary
        let t = ok(r#"{"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["x", -1.5]]}}"#);
        assert_eq!((t.base, t.id_of("x")), (2, Some(1)));
        // repeated keys: the last value, at both levels
        let t = ok(r#"{"model": {"type": "WordPiece", "vocab": {}},
            "model": {"type": "A", "type": "BPE", "vocab": {"q": 7}}}"#);
        assert_eq!((t.model_type.as_str(), t.base), ("BPE", 8));
        for j in ["[1, 2]", "\"x\"", "3", "null", "true"] {
            assert_eq!(err(j), "not a JSON object", "{j}");
        }
        for j in [
            "{}",
            r#"{"model": "BPE"}"#,
            r#"{"model": null}"#,
            r#"{"model": [{"vocab": {}}]}"#,
            r#"{"model": {"vocab": {}}, "model": 1}"#,
        ] {
            assert_eq!(
                err(j),
                "no `model` object: not a tokenizers `tokenizer.json`",
                "{j}"
            );
        }
        assert_eq!(
            err(r#"{"model": {"vocab": null}}"#),
            "`model.vocab` is neither an object nor a list"
        );
        assert_eq!(err(r#"{"model": {"type": "BPE"}}"#), "no `model.vocab`");
        assert_eq!(
            err(r#"{"model": {"vocab": {"a": -1}}}"#),
            "`model.vocab` id of `a` is not an integer"
        );
        assert_eq!(
            err(r#"{"model": {"vocab": {}}, "added_tokens": null}"#),
            "`added_tokens` is not a list"
        );
        // invalid JSON inside a value that is skipped, or after the parts read
        for j in [
            r#"{"model": {"vocab": {}, "merges": [1, }}"#,
            r#"{"model": {"vocab": {}}, "normalizer": {"a" 1}}"#,
            r#"{"model": {"vocab": {}}} trailing"#,
            r#"{"model": {"vocab": {}}"#,
            "",
        ] {
            assert!(err(j).starts_with("not valid JSON"), "{j}: {}", err(j));
        }
        // Deep nesting: in a part kept, past serde_json's recursion limit, an error; in a part
        // skipped, read without recursion (serde_json's `IgnoredAny` keeps its own stack). Never
        // a stack overflow.
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let kept = format!(
            r#"{{"model": {{"vocab": {{}}}}, "decoder": {}}}"#,
            nest(100_000)
        );
        assert!(err(&kept).starts_with("not valid JSON"), "{}", err(&kept));
        let skipped = format!(
            r#"{{"model": {{"vocab": {{"a": 0}}, "merges": {}}}}}"#,
            nest(100_000)
        );
        assert_eq!(ok(&skipped).base, 1);
    }

    #[test]
    fn stock_classes() {
        assert!(is_stock_class("LlamaTokenizer"));
        assert!(is_stock_class("LlamaTokenizerFast"));
        assert!(is_stock_class("PreTrainedTokenizerFast"));
        assert!(is_stock_class("Qwen2TokenizerFast"));
        assert!(!is_stock_class("YiTokenizer"));
        assert!(!is_stock_class("BaichuanTokenizer"));
    }

    #[test]
    fn auto_map_files() {
        assert_eq!(
            auto_map_module_file("tokenization_yi.YiTokenizer").as_deref(),
            Some("tokenization_yi.py")
        );
        assert_eq!(auto_map_module_file("org/repo--tok.T"), None);
        assert_eq!(auto_map_module_file("NoModule"), None);
        let e =
            auto_map_entries(Some(&serde_json::json!({"AutoTokenizer": ["a.A", null]}))).unwrap();
        assert_eq!(e, vec![("AutoTokenizer".to_string(), "a.A".to_string())]);
        assert!(auto_map_entries(Some(&serde_json::json!(3))).is_err());
    }

    #[test]
    fn tokenizer_json_sizes() {
        let j = TokJson::parse(
            br#"{"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":5}},"added_tokens":[{"id":9,"content":"<x>","special":true}],
                "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"ByteLevel"}]}}"#,
        )
        .unwrap();
        assert_eq!((j.base, j.size(), j.byte_level), (6, 10, true));
        assert_eq!(j.id_of("<x>"), Some(9));
        let u = TokJson::parse(br#"{"model":{"type":"Unigram","vocab":[["a",0.0],["b",-1.0]]}}"#)
            .unwrap();
        assert_eq!(u.size(), 2);
        assert!(TokJson::parse(br#"{"model":{"vocab":{"a":-1}}}"#).is_err());
        assert!(TokJson::parse(b"[]").is_err());
    }

    #[test]
    fn tiktoken_recognised() {
        assert!(looks_like_tiktoken(b"IQ== 0\nIg== 1\n"));
        assert!(!looks_like_tiktoken(b"\x0a\x05hello"));
    }
}
