//! `tokenizer.json` parsing (`TokJson::parse`, which builds only the parts it reads). Invariants: no
//! panic; every document serde_json reads as a `Value` is valid JSON to it too (its errors are then
//! about the content, never "not valid JSON", unless a kept part nests past serde_json's recursion
//! limit); and the same document re-serialised from that `Value` (one space less or more, a repeated
//! key reduced to its last value) reads the same.
#![no_main]

use ckpt::tokenizer::TokJson;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = TokJson::parse(data);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Err(e) = &got {
        assert!(!e.starts_with("not valid JSON"), "valid JSON refused: {e}");
    }
    let again = TokJson::parse(v.to_string().as_bytes());
    assert_eq!(got, again, "the same document read differently");
});
