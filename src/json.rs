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

/// Prefix a string that came from the file gets in memory when it starts with
/// [`NONFINITE_SENTINEL`] itself, so it can never be mistaken for a non-finite token; removed again
/// on output. Every value round-trips exactly.
pub const SENTINEL_ESCAPE: &str = "__ckpt_nonfinite__:str:";

/// The `Visitor` methods of a value read as `$other` unless it is an object: every scalar, and an
/// array (its elements checked as JSON and dropped, without recursion). For visitors that pick
/// keys out of an object and skip the rest unbuilt (`has_top_level_key`, `tokenizer::parts`);
/// the visitor defines `visit_map` itself.
macro_rules! visit_non_objects_as {
    ($other:expr) => {
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut s: A,
        ) -> Result<Self::Value, A::Error> {
            while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($other)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}
pub(crate) use visit_non_objects_as;

/// Whether `bytes`, as plain JSON, are an object with the top-level key `key`: `Some(false)` for
/// any other JSON value too, `None` when they are not plain JSON (invalid, or holding the
/// non-finite tokens [`from_slice_nonfinite`] reads: the caller parses them in full). Values are
/// skipped unbuilt (`IgnoredAny`), so asking this of a multi-megabyte `tokenizer.json` costs a
/// scan, not a `Value` of every entry.
pub fn has_top_level_key(bytes: &[u8], key: &str) -> Option<bool> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Find<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = bool;
        visit_non_objects_as!(false);
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= k == self.0;
                m.next_value::<IgnoredAny>()?;
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = Find(key).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(found)
}

/// Parse JSON that may contain the bare tokens `Infinity`, `-Infinity` and `NaN` outside strings.
/// They become the strings `"__ckpt_nonfinite__:Infinity"` etc.; a string of the file that starts
/// with `__ckpt_nonfinite__:` is kept distinct (prefixed with [`SENTINEL_ESCAPE`]).
/// [`to_string_pretty_nonfinite`] turns both back exactly.
pub fn from_slice_nonfinite(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if !has_sentinel_string(&v) => Ok(v),
        Ok(_) => match rewrite_tokens(bytes) {
            Some(fixed) => serde_json::from_slice(&fixed),
            None => serde_json::from_slice(bytes),
        },
        Err(first) => {
            let Some(fixed) = rewrite_tokens(bytes) else {
                return Err(first);
            };
            let v: Value = serde_json::from_slice(&fixed)?;
            // A bare token where a key belongs (`{NaN: 1}`) is not JSON, and no writer could
            // give it back as a bare key: refuse it, as every JSON reader does.
            if let Some(k) = token_key(&v) {
                return Err(serde::de::Error::custom(format!(
                    "`{}` (a bare number token) where an object key is expected",
                    k.strip_prefix(NONFINITE_SENTINEL).unwrap_or(k)
                )));
            }
            Ok(v)
        }
    }
}

/// An object key that a bare non-finite token was read as, at any depth.
fn token_key(v: &Value) -> Option<&str> {
    match v {
        Value::Array(a) => a.iter().find_map(token_key),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            (k.starts_with(NONFINITE_SENTINEL) && !k.starts_with(SENTINEL_ESCAPE))
                .then_some(k.as_str())
                .or_else(|| token_key(x))
        }),
        _ => None,
    }
}

fn has_sentinel_string(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with(NONFINITE_SENTINEL),
        Value::Array(a) => a.iter().any(has_sentinel_string),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| k.starts_with(NONFINITE_SENTINEL) || has_sentinel_string(v)),
        _ => false,
    }
}

/// Serialise a value as pretty JSON (2-space indent, as transformers writes), writing the
/// non-finite sentinels read by [`from_slice_nonfinite`] back as bare tokens and removing the
/// escape of strings that started with the sentinel. A tree walk, not a text substitution, so a
/// string that merely contains a sentinel is never touched.
pub fn to_string_pretty_nonfinite(v: &Value) -> String {
    let mut out = String::new();
    write_pretty(v, 0, &mut out);
    out
}

fn json_string(s: &str) -> String {
    let s = s.strip_prefix(SENTINEL_ESCAPE).unwrap_or(s);
    serde_json::to_string(s).unwrap_or_default()
}

fn write_pretty(v: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize, out: &mut String| {
        for _ in 0..n {
            out.push_str("  ");
        }
    };
    match v {
        Value::String(s) => {
            let tok = s
                .strip_prefix(NONFINITE_SENTINEL)
                .filter(|t| matches!(*t, "Infinity" | "-Infinity" | "NaN"));
            match tok {
                Some(t) => out.push_str(t),
                None => out.push_str(&json_string(s)),
            }
        }
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pad(indent.saturating_add(1), out);
                write_pretty(x, indent.saturating_add(1), out);
            }
            out.push('\n');
            pad(indent, out);
            out.push(']');
        }
        Value::Object(o) if o.is_empty() => out.push_str("{}"),
        Value::Object(o) => {
            out.push_str("{\n");
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                pad(indent.saturating_add(1), out);
                out.push_str(&json_string(k));
                out.push_str(": ");
                write_pretty(x, indent.saturating_add(1), out);
            }
            out.push('\n');
            pad(indent, out);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// Rewrite bare non-finite tokens outside strings to sentinel strings, and strings that start with
/// the sentinel to their escaped form. `None` when there is nothing to rewrite.
fn rewrite_tokens(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len().saturating_add(64));
    let mut changed = false;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b == b'"' {
            // The whole string literal, up to its closing quote.
            let mut j = i.saturating_add(1);
            let mut escaped = false;
            while let Some(&c) = bytes.get(j) {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    break;
                }
                j = j.saturating_add(1);
            }
            let end = j.saturating_add(1).min(bytes.len());
            let lit = bytes.get(i..end).unwrap_or_default();
            match serde_json::from_slice::<String>(lit) {
                Ok(s) if s.starts_with(NONFINITE_SENTINEL) => {
                    let esc =
                        serde_json::to_string(&format!("{SENTINEL_ESCAPE}{s}")).unwrap_or_default();
                    out.extend_from_slice(esc.as_bytes());
                    changed = true;
                }
                _ => out.extend_from_slice(lit),
            }
            i = end;
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

/// Largest nesting depth [`number_spellings`] follows.
const MAX_SPELLING_DEPTH: usize = 128;

/// The number tokens of a JSON text as written (`1e-05`, `5000000.0`), by their path
/// (`/rope_parameters/rope_theta`, array elements by index). Best effort: on text it cannot follow
/// (invalid, too deep) it returns what it found so far.
pub fn number_spellings(bytes: &[u8]) -> Vec<(String, String)> {
    let mut s = Scan {
        b: bytes,
        i: 0,
        out: Vec::new(),
    };
    s.ws();
    let _ = s.value(&mut String::new(), 0);
    s.out
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    out: Vec<(String, String)>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn bump(&mut self) {
        self.i = self.i.saturating_add(1);
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.bump();
        }
    }
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        self.bump();
        let mut esc = false;
        while let Some(c) = self.peek() {
            self.bump();
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                let raw = self.b.get(start..self.i)?;
                return serde_json::from_slice::<String>(raw).ok();
            }
        }
        None
    }
    fn value(&mut self, path: &mut String, depth: usize) -> Option<()> {
        if depth > MAX_SPELLING_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.bump();
                loop {
                    self.ws();
                    match self.peek()? {
                        b'}' => {
                            self.bump();
                            return Some(());
                        }
                        b',' => self.bump(),
                        b'"' => {
                            let k = self.string()?;
                            self.ws();
                            if self.peek()? != b':' {
                                return None;
                            }
                            self.bump();
                            self.ws();
                            let len = path.len();
                            path.push('/');
                            path.push_str(&k);
                            self.value(path, depth.saturating_add(1))?;
                            path.truncate(len);
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.bump();
                let mut n = 0usize;
                loop {
                    self.ws();
                    match self.peek()? {
                        b']' => {
                            self.bump();
                            return Some(());
                        }
                        b',' => self.bump(),
                        _ => {
                            let len = path.len();
                            path.push('/');
                            path.push_str(&n.to_string());
                            self.value(path, depth.saturating_add(1))?;
                            path.truncate(len);
                            n = n.saturating_add(1);
                        }
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            c if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.bump();
                }
                let text = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
                self.out.push((path.clone(), text.to_string()));
                Some(())
            }
            _ => {
                // true, false, null, Infinity, NaN: skip the word.
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == b'-')
                {
                    self.bump();
                }
                Some(())
            }
        }
    }
}

fn same_number(text: &str, n: &serde_json::Number) -> bool {
    match serde_json::from_str::<serde_json::Number>(text) {
        Ok(m) => {
            if let (Some(a), Some(b)) = (m.as_i64(), n.as_i64()) {
                return a == b;
            }
            if let (Some(a), Some(b)) = (m.as_u64(), n.as_u64()) {
                return a == b;
            }
            match (m.as_f64(), n.as_f64()) {
                (Some(a), Some(b)) => a == b && (m.is_f64() == n.is_f64()),
                _ => false,
            }
        }
        Err(_) => false,
    }
}

/// Serialise `v` like [`to_string_pretty_nonfinite`], but write each number the way `original` (the
/// JSON text the value was derived from) spelled it: the same path first, else any number of the
/// same value (a key moved or renamed keeps its spelling). `1e-05` stays `1e-05` instead of
/// becoming `0.00001`. Numbers that did not exist in `original` get serde_json's spelling.
pub fn to_string_pretty_spelled(v: &Value, original: &[u8]) -> String {
    let spellings = number_spellings(original);
    let mut out = String::new();
    write_spelled(v, &mut String::new(), &spellings, 0, &mut out);
    out
}

fn write_spelled(
    v: &Value,
    path: &mut String,
    sp: &[(String, String)],
    indent: usize,
    out: &mut String,
) {
    let pad = |n: usize, out: &mut String| {
        for _ in 0..n {
            out.push_str("  ");
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            for (i, (k, e)) in m.iter().enumerate() {
                pad(indent.saturating_add(1), out);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                let len = path.len();
                path.push('/');
                path.push_str(k);
                write_spelled(e, path, sp, indent.saturating_add(1), out);
                path.truncate(len);
                if i.saturating_add(1) < m.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, e) in a.iter().enumerate() {
                pad(indent.saturating_add(1), out);
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                write_spelled(e, path, sp, indent.saturating_add(1), out);
                path.truncate(len);
                if i.saturating_add(1) < a.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push(']');
        }
        Value::Number(n) => {
            let at_path = sp
                .iter()
                .find(|(p, t)| p == path && same_number(t, n))
                .or_else(|| sp.iter().find(|(_, t)| same_number(t, n)));
            match at_path {
                Some((_, t)) => out.push_str(t),
                None => out.push_str(&n.to_string()),
            }
        }
        Value::String(s) => match s.strip_prefix(NONFINITE_SENTINEL) {
            Some(tok @ ("Infinity" | "-Infinity" | "NaN")) => out.push_str(tok),
            _ => out.push_str(&json_string(s)),
        },
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn top_level_key_is_found_without_building_values() {
        let has = |j: &str| has_top_level_key(j.as_bytes(), "auto_map");
        assert_eq!(
            has(r#"{"a": [1, {"b": 2}], "auto_map": {"x": "m.C"}}"#),
            Some(true)
        );
        assert_eq!(
            has(r#"{"auto\u005fmap": 1}"#),
            Some(true),
            "an escaped key is the key"
        );
        assert_eq!(has(r#"{"auto_map": 1, "auto_map": 2}"#), Some(true));
        assert_eq!(
            has(r#"{"model": {"auto_map": {}}, "x": "auto_map"}"#),
            Some(false)
        );
        for other in ["[1, 2]", "\"auto_map\"", "3", "null", "{}"] {
            assert_eq!(has(other), Some(false), "{other}");
        }
        // not plain JSON: the caller parses it in full (non-finite tokens, or an error)
        for bad in [r#"{"a": NaN, "auto_map": 1}"#, r#"{"a": 1"#, "{} x", ""] {
            assert_eq!(has(bad), None, "{bad}");
        }
    }

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
    fn a_bare_token_as_a_key_is_refused() {
        // Found by the config_json fuzz target: the key came back as a string, not a token.
        for src in [&br#"{Infinity: NaN}"#[..], br#"{"a": [{"b": 1, NaN: 2}]}"#] {
            let e = from_slice_nonfinite(src).unwrap_err().to_string();
            assert!(e.contains("where an object key is expected"), "{e}");
        }
        // As values and as quoted keys they still read.
        let v = from_slice_nonfinite(br#"{"Infinity": NaN, "x": [-Infinity]}"#).unwrap();
        assert_eq!(v["Infinity"], "__ckpt_nonfinite__:NaN");
    }

    #[test]
    fn strings_equal_to_the_sentinel_round_trip_as_strings() {
        let src = br#"{"a": "__ckpt_nonfinite__:Infinity", "b": Infinity, "__ckpt_nonfinite__:NaN": "x\"__ckpt_nonfinite__:NaN", "c": "\u005f_ckpt_nonfinite__:str:y", "d": [], "e": {}}"#;
        let v = from_slice_nonfinite(src).unwrap();
        let text = to_string_pretty_nonfinite(&v);
        let orig: Vec<&str> = vec![
            r#""a": "__ckpt_nonfinite__:Infinity""#,
            r#""b": Infinity"#,
            r#""__ckpt_nonfinite__:NaN": "x\"__ckpt_nonfinite__:NaN""#,
            r#""c": "__ckpt_nonfinite__:str:y""#,
            r#""d": []"#,
            r#""e": {}"#,
        ];
        for o in orig {
            assert!(text.contains(o), "{o} not in {text}");
        }
        assert_eq!(from_slice_nonfinite(text.as_bytes()).unwrap(), v);
        // Plain JSON is written exactly as serde_json's pretty printer does.
        let plain: Value =
            serde_json::from_str(r#"{"a":[1,2.5,{"b":null}],"c":"d","e":[],"f":{}}"#).unwrap();
        assert_eq!(
            to_string_pretty_nonfinite(&plain),
            serde_json::to_string_pretty(&plain).unwrap()
        );
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

    #[test]
    fn spelled_keeps_number_text() {
        let orig = br#"{"eps": 1e-05, "theta": 5000000.0, "n": [1, 2.50], "neg": -0.0, "inf": Infinity, "s": "1e-05"}"#;
        let mut v = from_slice_nonfinite(orig).unwrap();
        v["moved"] = v["theta"].clone();
        v["new"] = serde_json::json!(0.1);
        let s = to_string_pretty_spelled(&v, orig);
        assert!(s.contains("\"eps\": 1e-05,"), "{s}");
        assert!(s.contains("\"theta\": 5000000.0,"), "{s}");
        assert!(s.contains("\"moved\": 5000000.0,"), "{s}");
        assert!(s.contains("2.50"), "{s}");
        assert!(s.contains("\"inf\": Infinity"), "{s}");
        assert!(s.contains("\"new\": 0.1"), "{s}");
        // Same structure as serde_json's pretty printer otherwise.
        let plain = serde_json::json!({"a": [], "b": {}, "c": [1, {"d": null}]});
        assert_eq!(
            to_string_pretty_spelled(&plain, b"{}"),
            serde_json::to_string_pretty(&plain).unwrap()
        );
        // Hostile text is never followed past its depth or end.
        assert!(number_spellings(&[b'['; 10_000]).is_empty());
        assert!(number_spellings(b"{\"a\": 1").len() == 1);
    }
}
