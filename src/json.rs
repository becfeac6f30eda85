//! JSON helpers for the files checkpoints ship: `config.json` and `*.index.json`.
//!
//! Two things plain `serde_json` does not do. Real `config.json` files contain the non-JSON tokens
//! `Infinity`, `-Infinity` and `NaN` (transformers writes them, e.g. Mamba2's `time_step_limit`;
//! huggingface/transformers#42959): they are read as sentinel strings and written back as the same
//! tokens, so a config rewrite keeps them. And JSON objects with a repeated key (last wins in serde)
//! are rejected where a duplicate would hide data (`weight_map`).
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use serde_json::Value;

/// Prefix of the sentinel string a non-finite number token is read as.
pub const NONFINITE_SENTINEL: &str = "__ckpt_nonfinite__:";

/// Parse JSON that may contain the bare tokens `Infinity`, `-Infinity` and `NaN` outside strings.
/// They become the strings `"__ckpt_nonfinite__:Infinity"` etc.; [`to_string_pretty_nonfinite`]
/// turns them back.
pub fn from_slice_nonfinite(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(first) => {
            let Some(fixed) = replace_nonfinite_tokens(bytes) else {
                return Err(first);
            };
            serde_json::from_slice(&fixed)
        }
    }
}

/// Serialise a value as pretty JSON (2-space indent, as transformers writes), restoring non-finite
/// tokens read by [`from_slice_nonfinite`].
pub fn to_string_pretty_nonfinite(v: &Value) -> String {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    if !s.contains(NONFINITE_SENTINEL) {
        return s;
    }
    let mut out = s;
    for tok in ["-Infinity", "Infinity", "NaN"] {
        out = out.replace(&format!("\"{NONFINITE_SENTINEL}{tok}\""), tok);
    }
    out
}

/// Rewrite bare non-finite tokens outside strings to sentinel strings. `None` when there are none.
fn replace_nonfinite_tokens(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len().saturating_add(64));
    let mut in_str = false;
    let mut escaped = false;
    let mut changed = false;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if in_str {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            i = i.saturating_add(1);
            continue;
        }
        if b == b'"' {
            in_str = true;
            out.push(b);
            i = i.saturating_add(1);
            continue;
        }
        let rest = bytes.get(i..).unwrap_or_default();
        let mut matched = false;
        for tok in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(tok.as_bytes()) {
                out.extend_from_slice(format!("\"{NONFINITE_SENTINEL}{tok}\"").as_bytes());
                i = i.saturating_add(tok.len());
                matched = true;
                changed = true;
                break;
            }
        }
        if !matched {
            out.push(b);
            i = i.saturating_add(1);
        }
    }
    changed.then_some(out)
}

/// Find the first key that appears twice in the same JSON object anywhere in `bytes` (which must
/// already be valid JSON). Returns the key.
pub fn first_duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    struct Dup;
    struct Found(Option<String>);

    impl<'de> serde::de::DeserializeSeed<'de> for Dup {
        type Value = Found;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
            d.deserialize_any(DupVisitor)
        }
    }

    struct DupVisitor;
    impl<'de> Visitor<'de> for DupVisitor {
        type Value = Found;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Found, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut found = None;
            while let Some(k) = m.next_key::<String>()? {
                let inner = m.next_value_seed(Dup)?;
                if found.is_none() {
                    if !seen.insert(k.clone()) {
                        found = Some(k);
                    } else if inner.0.is_some() {
                        found = inner.0;
                    }
                }
            }
            Ok(Found(found))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Found, A::Error> {
            let mut found = None;
            while let Some(inner) = s.next_element_seed(Dup)? {
                if found.is_none() {
                    found = inner.0;
                }
            }
            Ok(Found(found))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
            Ok(Found(None))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
            Ok(Found(None))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
            Ok(Found(None))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
            Ok(Found(None))
        }
        fn visit_str<E>(self, _: &str) -> Result<Found, E> {
            Ok(Found(None))
        }
        fn visit_unit<E>(self) -> Result<Found, E> {
            Ok(Found(None))
        }
    }
    let _ = IgnoredAny;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::de::DeserializeSeed::deserialize(Dup, &mut de)
        .ok()
        .and_then(|f| f.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn nonfinite_round_trip() {
        let v = from_slice_nonfinite(
            br#"{"a":[0.0, Infinity, -Infinity], "b": NaN, "s":"NaN Infinity"}"#,
        )
        .unwrap();
        assert_eq!(v["s"], "NaN Infinity");
        let s = to_string_pretty_nonfinite(&v);
        assert!(s.contains("-Infinity") && s.contains("NaN") && s.contains("\"NaN Infinity\""));
        assert!(!s.contains(NONFINITE_SENTINEL));
    }

    #[test]
    fn duplicate_keys_found_at_any_depth() {
        assert_eq!(
            first_duplicate_key(br#"{"a":1,"b":{"x":1,"x":2}}"#),
            Some("x".into())
        );
        assert_eq!(first_duplicate_key(br#"{"a":1,"a":2}"#), Some("a".into()));
        assert_eq!(first_duplicate_key(br#"{"a":[{"k":1},{"k":2}]}"#), None);
    }
}
