//! Arbitrary bytes as a whole safetensors file: our header parser + full validation. Invariants: no
//! panic (built with overflow checks), `Ok` only for a fully valid file, never looser than the
//! reference crate.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = common::parse_bytes(data) {
        common::assert_fully_valid(&h, data.len());
        assert_eq!(
            common::reference_accepts(data),
            Some(true),
            "we accept, the reference does not"
        );
    }
});
