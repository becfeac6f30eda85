//! Mapping-file and `--rename` rule fuzzing (RELIABILITY.md C.1, slot `mapping_rules`).
//!
//! The input is split at the first NUL byte: the part before is a mapping file (TOML text), loaded
//! into an empty registry and, with a `base = "llama"` line in front, into the built-in registry; the
//! part after is a list of `PATTERN=REPLACEMENT` rename rules, one per line, applied to a fixed list
//! of LLaMA tensor names. Invariants: no panic; a loaded family's rules never target an empty name
//! or `__metadata__`, and every target pattern is non-empty; `apply_renames`, when it succeeds,
//! gives as many names as it was given, all distinct, non-empty, without control characters and not
//! `__metadata__`.
#![no_main]

use ckpt::mapping::pattern::apply_renames;
use ckpt::mapping::{Registry, RenameRule};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;

const LLAMA_NAMES: &[&str] = &[
    "model.embed_tokens.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.post_attention_layernorm.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.1.input_layernorm.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.10.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
];

fn builtin() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Registry::builtin().expect("built-in mappings load"))
}

/// The family just loaded into `reg` must have sane rule targets.
fn check_family(reg: &Registry, name: &str) {
    let fam = reg
        .get(name)
        .expect("load_str returned the name of a family it added");
    for entry in &fam.rules {
        for t in entry.rule.targets() {
            let text = t.text();
            assert!(!text.is_empty(), "family `{name}`: empty target pattern");
            assert_ne!(
                text, "__metadata__",
                "family `{name}`: rule targets __metadata__"
            );
            let sample = t.sample();
            assert!(!sample.is_empty(), "family `{name}`: target renders empty");
            assert_ne!(
                sample, "__metadata__",
                "family `{name}`: target renders __metadata__"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (toml_part, rename_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };

    if let Ok(text) = std::str::from_utf8(toml_part) {
        let mut reg = Registry::empty();
        if let Ok(name) = reg.load_str(text, "fuzz.toml") {
            check_family(&reg, &name);
        }
        let mut reg = builtin().clone();
        let based = format!("base = \"llama\"\n{text}");
        if let Ok(name) = reg.load_str(&based, "fuzz.toml") {
            check_family(&reg, &name);
        }
    }

    let text = String::from_utf8_lossy(rename_part);
    let rules: Vec<RenameRule> = text
        .lines()
        .take(8)
        .filter_map(|l| RenameRule::parse(l).ok())
        .collect();
    let names: Vec<String> = LLAMA_NAMES.iter().map(|s| s.to_string()).collect();
    if let Ok(out) = apply_renames(&names, &rules) {
        assert_eq!(out.len(), names.len());
        let mut seen = HashSet::new();
        for (old, new) in names.iter().zip(&out) {
            assert!(
                !new.is_empty(),
                "`{old}` renamed to an empty name by {rules:?}"
            );
            assert!(seen.insert(new.as_str()), "two names renamed onto `{new}`");
        }
    }
});
