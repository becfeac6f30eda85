//! Tokenizer rules: is there a tokenizer of a kind the loaders read, does `tokenizer_config.json`
//! name a class transformers has (or code the release ships), does the vocabulary fit the embedding,
//! are the special-token ids inside it, and do config, generation config and tokenizer agree on
//! bos/eos. Files are read with [`crate::tokenizer`] (bounded readers, no Python).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Finding, Loaders};
use crate::checkpoint::Checkpoint;
use crate::tokenizer::{
    self, CONFIG_FILE, GENERATION_FILE, JSON_FILE, SP_FILE, Tokenizer, auto_map_module_file,
    ids_of, is_stock_class,
};

/// Finding ids of this module.
pub mod ids {
    /// No tokenizer vocabulary file.
    pub const MISSING: &str = "K001-tokenizer-missing";
    /// A tokenizer file that does not parse, or a kind the loaders do not read.
    pub const KIND: &str = "K002-tokenizer-kind";
    /// `auto_map` in `tokenizer_config.json`: dangling (error) or remote code (warning).
    pub const AUTO_MAP: &str = "K003-tokenizer-auto-map";
    /// `tokenizer_class` that transformers does not ship, without remote code.
    pub const CLASS: &str = "K004-tokenizer-class";
    /// The tokenizer has more tokens than the embedding has rows.
    pub const VOCAB: &str = "K005-tokenizer-vocab";
    /// A special-token id outside the embedding or the vocabulary.
    pub const SPECIAL_ID: &str = "K006-special-token-id";
    /// bos/eos disagree between config.json, generation_config.json and the tokenizer.
    pub const BOS_EOS: &str = "K007-bos-eos";
    /// No eos id anywhere.
    pub const NO_EOS: &str = "K008-no-eos";
    /// Only a `tokenizer.json` that llama.cpp's converter reads through its GPT-2 BPE path.
    pub const LLAMA_CPP_VOCAB: &str = "K009-llama-cpp-vocab";
}

/// Loaders that open the tokenizer through transformers' `AutoTokenizer` (vLLM does, at start-up).
const AUTO_TOKENIZER: Loaders = Loaders::TRANSFORMERS.or(Loaders::VLLM);
/// Loaders that read the vocabulary files themselves or through transformers.
const VOCAB_READERS: Loaders = AUTO_TOKENIZER.or(Loaders::LLAMA_CPP);

/// Rows of the embedding table (the largest id the model can take, plus one).
pub fn embedding_rows(ck: &Checkpoint) -> Option<usize> {
    [
        "model.embed_tokens.weight",
        "tok_embeddings.weight",
        "model.tok_embeddings.weight",
    ]
    .iter()
    .find_map(|n| ck.get(n))
    .and_then(|t| t.shape.first().copied())
    .or_else(|| ck.config.as_ref().and_then(|c| c.vocab_size))
}

/// Run the tokenizer rules on the checkpoint's directory.
pub fn rules(ck: &Checkpoint, out: &mut Vec<Finding>) {
    let t = Tokenizer::read(&ck.dir);
    let dir = &ck.dir;
    // K002: files that do not parse.
    if let Some(Err(e)) = &t.sp {
        let msg = if t.sp_is_tiktoken {
            "a tiktoken rank file (Meta's Llama 3 release), not SentencePiece: transformers and llama.cpp read Llama 3 tokenizers from `tokenizer.json`; convert it with transformers' `convert_llama_weights_to_hf.py` or ship `tokenizer.json`".to_string()
        } else {
            format!("cannot be read as SentencePiece: {}", e.message())
        };
        out.push(
            Finding::error(ids::KIND, msg)
                .file(dir.join(SP_FILE))
                .loaders(VOCAB_READERS),
        );
    }
    if let Some(Err(e)) = &t.json {
        out.push(
            Finding::error(ids::KIND, format!("cannot be read: {}", e.message()))
                .file(dir.join(JSON_FILE))
                .loaders(VOCAB_READERS.or(Loaders::CANDLE)),
        );
    }
    if let Some(Err(e)) = &t.config {
        // The legacy special_tokens_map.json / added_tokens.json errors name their own file.
        let file = e
            .path()
            .map_or_else(|| dir.join(CONFIG_FILE), std::path::Path::to_path_buf);
        out.push(
            Finding::error(ids::KIND, format!("cannot be read: {}", e.message()))
                .file(file)
                .loaders(VOCAB_READERS),
        );
    }
    // K001: nothing llama.cpp's converter can build a vocabulary from.
    let kinds = t.kinds();
    let readable = kinds.iter().any(|k| {
        matches!(
            k,
            tokenizer::Kind::SentencePiece | tokenizer::Kind::TokenizersJson
        )
    });
    if !readable && t.sp.is_none() && t.json.is_none() {
        let what = if t.any() {
            format!(
                "no `tokenizer.model` (SentencePiece) or `tokenizer.json` (found: {})",
                if kinds.is_empty() && t.others.is_empty() {
                    "only tokenizer_config.json".to_string()
                } else if kinds.is_empty() {
                    t.others.join(", ")
                } else {
                    kinds
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        } else {
            "no tokenizer files".to_string()
        };
        let file = if t.config.is_some() {
            dir.join(CONFIG_FILE)
        } else {
            dir.join(SP_FILE)
        };
        out.push(
            Finding::error(
                ids::MISSING,
                format!(
                    "{what}: llama.cpp's converter builds the GGUF vocabulary from `tokenizer.model` or `tokenizer.json` and fails without one, and `AutoTokenizer` cannot load the release's tokenizer"
                ),
            )
            .file(file)
            .loaders(Loaders::LLAMA_CPP),
        );
    }
    // K009: what llama.cpp's converter does with a tokenizer.json alone.
    if t.spm().is_none()
        && let Some(j) = t.tj()
        && !j.llama_cpp_llama_hf()
    {
        let msg = if j.model_type != "BPE" {
            Finding::error(
                ids::LLAMA_CPP_VOCAB,
                format!(
                    "a `{}` `tokenizer.json` and no `tokenizer.model`: llama.cpp's converter reads the llama architecture's vocabulary from SentencePiece, a byte-fallback BPE `tokenizer.json`, or a GPT-2 style BPE; this kind fails",
                    crate::error::escape(&j.model_type)
                ),
            )
        } else {
            Finding::warning(
                ids::LLAMA_CPP_VOCAB,
                format!(
                    "`tokenizer.json` is a BPE {} and there is no `tokenizer.model`: llama.cpp's converter takes its GPT-2 path, which fails unless it knows the pre-tokenizer by hash (`get_vocab_base_pre`); a LLaMA-style file (byte fallback, `Sequence` decoder) or `tokenizer.model` avoids it",
                    if j.byte_level {
                        "with a ByteLevel pre-tokenizer"
                    } else {
                        "without byte fallback"
                    }
                ),
            )
        };
        out.push(msg.file(dir.join(JSON_FILE)).loaders(Loaders::LLAMA_CPP));
    }
    // K003 / K004: auto_map and tokenizer_class.
    if let Some(cfg) = t.cfg() {
        // K006: a special token transformers cannot build (`bos_token: 5`, an object without content).
        for (file, key) in &cfg.bad_special {
            out.push(
                Finding::error(
                    ids::SPECIAL_ID,
                    format!(
                        "`{}` is neither a token string nor {{\"content\": \"...\"}}: `AutoTokenizer` refuses it (TypeError: special token has to be either str or AddedToken)",
                        crate::error::escape(key)
                    ),
                )
                .file(dir.join(file))
                .loaders(AUTO_TOKENIZER),
            );
        }
        let cfile = dir.join(CONFIG_FILE);
        let mut dangling = Vec::new();
        let mut remote = Vec::new();
        for (k, r) in &cfg.auto_map {
            match auto_map_module_file(r) {
                Some(f) if !dir.join(&f).is_file() => dangling.push(format!("{k} -> `{f}`")),
                Some(f) => remote.push(f),
                None => remote.push(r.clone()),
            }
        }
        if !dangling.is_empty() {
            out.push(
                Finding::error(
                    ids::AUTO_MAP,
                    format!(
                        "`auto_map` names code the release does not ship ({}): `AutoTokenizer` fails without `trust_remote_code` (custom code required) and with it (file not found); set a stock `tokenizer_class` (`ckpt convert` does) or ship the code",
                        crate::error::escape(&dangling.join(", "))
                    ),
                )
                .file(&cfile)
                .loaders(AUTO_TOKENIZER),
            );
        } else if !remote.is_empty() {
            remote.dedup();
            out.push(
                Finding::warning(
                    ids::AUTO_MAP,
                    format!(
                        "the tokenizer is remote code ({}): it loads only with `trust_remote_code`",
                        crate::error::escape(&remote.join(", "))
                    ),
                )
                .file(&cfile)
                .loaders(AUTO_TOKENIZER),
            );
        }
        if cfg.auto_map.is_empty()
            && let Some(c) = cfg.class.as_deref().filter(|c| !is_stock_class(c))
        {
            // transformers 5.23 falls back to `TokenizersBackend` for a class it does not know
            // (`AutoTokenizer.from_pretrained`, `tokenization_auto.py`): that loads `tokenizer.json`
            // as written, but built from `tokenizer.model` alone it tokenizes differently (measured).
            // transformers 4, which vLLM runs on, raises "does not exist or is not currently imported".
            let (loaders, v5) = if t.tj().is_some() {
                (
                    Loaders::VLLM,
                    "transformers 5 falls back to `TokenizersBackend`, which loads `tokenizer.json` as written",
                )
            } else {
                (
                    AUTO_TOKENIZER,
                    "transformers 5 falls back to `TokenizersBackend`, which without `tokenizer.json` does not tokenize like the SentencePiece `tokenizer.model`",
                )
            };
            out.push(
                Finding::error(
                    ids::CLASS,
                    format!(
                        "`tokenizer_class` \"{}\" is not a transformers class and no `auto_map` provides it: transformers 4 (vLLM) fails (\"Tokenizer class ... does not exist or is not currently imported\"); {v5}; use `LlamaTokenizer` (SentencePiece) or `PreTrainedTokenizerFast` (`tokenizer.json`)",
                        crate::error::escape(c)
                    ),
                )
                .file(&cfile)
                .loaders(loaders),
            );
        }
    }
    // config.json's tokenizer_class is AutoTokenizer's fallback when tokenizer_config.json has none.
    if let Some(c) = ck
        .config
        .as_ref()
        .and_then(|c| c.raw.get("tokenizer_class"))
        .and_then(Value::as_str)
        && !is_stock_class(c)
        && t.cfg()
            .is_none_or(|tc| tc.class.is_none() && tc.auto_map.is_empty())
    {
        out.push(
            Finding::error(
                ids::CLASS,
                format!(
                    "`tokenizer_class` \"{}\" in config.json is not a transformers class: `AutoTokenizer` falls back to it and fails",
                    crate::error::escape(c)
                ),
            )
            .file(dir.join("config.json"))
            .loaders(AUTO_TOKENIZER),
        );
    }
    // K005: vocabulary vs embedding, for each vocabulary file (loaders differ in which they read).
    let rows = embedding_rows(ck);
    let vocab = t.vocab_size();
    let added = t
        .cfg()
        .and_then(|c| c.added.iter().map(|(i, _)| i.saturating_add(1)).max())
        .unwrap_or(0);
    let sizes = [
        t.tj().map(|j| (j.size(), JSON_FILE)),
        t.spm().map(|sp| (sp.pieces.len().max(added), SP_FILE)),
    ];
    for (n, from) in sizes.into_iter().flatten() {
        if let Some(rows) = rows
            && n > rows
        {
            out.push(
                Finding::error(
                    ids::VOCAB,
                    format!(
                        "the tokenizer has {n} tokens (base + added, from `{from}`) but the embedding has {rows} rows: ids {rows}..{} index past the table (crash or garbage)",
                        n.saturating_sub(1)
                    ),
                )
                .file(dir.join(from))
                .loaders(Loaders::ALL),
            );
        }
    }
    // K006 / K007 / K008: special-token ids.
    special_ids(ck, &t, rows, vocab.map(|v| v.0), out);
}

/// The ids each source gives bos / eos, and out-of-range checks.
fn special_ids(
    ck: &Checkpoint,
    t: &Tokenizer,
    rows: Option<usize>,
    vocab: Option<usize>,
    out: &mut Vec<Finding>,
) {
    let dir = &ck.dir;
    let gen_path = dir.join(GENERATION_FILE);
    let generation = if gen_path.is_file() {
        match tokenizer::read_json_object(&gen_path) {
            Ok(m) => Some(m),
            Err(e) => {
                out.push(
                    Finding::error(ids::KIND, format!("cannot be read: {}", e.message()))
                        .file(&gen_path)
                        .loaders(AUTO_TOKENIZER),
                );
                None
            }
        }
    } else {
        None
    };
    let config = ck.config.as_ref().map(|c| &c.raw);
    let cfile = dir.join("config.json");
    let mut eos_anywhere = false;
    for (key, tok) in [
        ("bos_token_id", "bos_token"),
        ("eos_token_id", "eos_token"),
        ("pad_token_id", "pad_token"),
    ] {
        let mut seen: Vec<(String, BTreeSet<u64>)> = Vec::new();
        for (name, map, path) in [
            ("config.json", config, &cfile),
            (GENERATION_FILE, generation.as_ref(), &gen_path),
        ] {
            let Some(v) = map.and_then(|m| m.get(key)) else {
                continue;
            };
            let Some(ids) = ids_of(v) else {
                out.push(
                    Finding::error(
                        ids::SPECIAL_ID,
                        format!("`{key}` is not a token id or a list of ids: {v}"),
                    )
                    .file(path)
                    .loaders(Loaders::ALL),
                );
                continue;
            };
            if ids.is_empty() {
                continue;
            }
            check_range(key, &ids, rows, vocab, path, out);
            seen.push((name.to_string(), ids.into_iter().collect()));
        }
        if let Some((text, id)) = t.special_id(tok) {
            match id {
                Some(id) => {
                    let ids = vec![id as u64];
                    check_range(
                        key,
                        &ids,
                        rows,
                        vocab,
                        &dir.join(t.cfg().map_or(CONFIG_FILE, |c| c.special_file(tok))),
                        out,
                    );
                    seen.push((
                        format!(
                            "the tokenizer (`{}`)",
                            crate::error::escape(&text.unwrap_or_default())
                        ),
                        ids.into_iter().collect(),
                    ));
                }
                None if t.vocab_size().is_some() => out.push(
                    Finding::error(
                        ids::SPECIAL_ID,
                        format!(
                            "`{tok}` \"{}\" is not in the tokenizer's vocabulary",
                            crate::error::escape(&text.unwrap_or_default())
                        ),
                    )
                    .file(dir.join(t.cfg().map_or(CONFIG_FILE, |c| c.special_file(tok))))
                    .loaders(VOCAB_READERS),
                ),
                None => {}
            }
        }
        if key == "eos_token_id" && !seen.is_empty() {
            eos_anywhere = true;
        }
        if key == "pad_token_id" {
            continue; // pad differs legitimately (often unset in one file)
        }
        // Agreement: every source's ids must meet (eos lists: the single ids must be among them).
        for i in 0..seen.len() {
            for j in i.saturating_add(1)..seen.len() {
                let (a, b) = (&seen[i], &seen[j]);
                let agree = a.1.is_subset(&b.1) || b.1.is_subset(&a.1);
                if !agree {
                    out.push(
                        Finding::warning(
                            ids::BOS_EOS,
                            format!(
                                "`{key}` disagrees: {} says {}, {} says {}; generation starts or stops on the wrong token in the loaders that read the other one",
                                a.0,
                                id_list(&a.1),
                                b.0,
                                id_list(&b.1)
                            ),
                        )
                        .file(&cfile)
                        .loaders(Loaders::ALL),
                    );
                }
            }
        }
    }
    if !eos_anywhere && config.is_some() {
        out.push(
            Finding::warning(
                ids::NO_EOS,
                "no `eos_token_id` in config.json or generation_config.json and none from the tokenizer: `generate()` never stops",
            )
            .file(&cfile)
            .loaders(AUTO_TOKENIZER),
        );
    }
}

fn id_list(ids: &BTreeSet<u64>) -> String {
    format!(
        "[{}]",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn check_range(
    key: &str,
    ids: &[u64],
    rows: Option<usize>,
    vocab: Option<usize>,
    file: &std::path::Path,
    out: &mut Vec<Finding>,
) {
    for &id in ids {
        if let Some(r) = rows
            && id >= r as u64
        {
            out.push(
                Finding::error(
                    ids::SPECIAL_ID,
                    format!("`{key}` {id} is outside the embedding ({r} rows)"),
                )
                .file(file)
                .loaders(Loaders::ALL),
            );
        } else if let Some(v) = vocab
            && id >= v as u64
        {
            out.push(
                Finding::error(
                    ids::SPECIAL_ID,
                    format!("`{key}` {id} is not a token of the tokenizer ({v} tokens)"),
                )
                .file(file)
                .loaders(VOCAB_READERS),
            );
        }
    }
}
