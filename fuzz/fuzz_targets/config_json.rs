//! `config.json` / `params.json` parsing. Invariants: no panic; derived quantities computed without
//! panicking; a config's raw JSON (with `Infinity`/`NaN` tokens kept) survives a write and re-read.
#![no_main]

use ckpt::checkpoint::{ConfigSource, ModelConfig};
use ckpt::json::{from_slice_nonfinite, to_string_pretty_nonfinite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (source, bytes) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (ConfigSource::ParamsJson, rest),
        Some((_, rest)) => (ConfigSource::ConfigJson, rest),
        None => return,
    };
    if let Ok(c) = ModelConfig::parse(bytes, source) {
        let _ = (c.resolved_head_dim(), c.resolved_kv_heads());
        let v = serde_json::Value::Object(c.raw.clone());
        let text = to_string_pretty_nonfinite(&v);
        let back = from_slice_nonfinite(text.as_bytes())
            .unwrap_or_else(|e| panic!("rewritten config does not parse: {e}\n{text}"));
        assert_eq!(back, v, "config changed in a write/read round trip");
    }
});
