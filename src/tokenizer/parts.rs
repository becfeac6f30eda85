//! The parts of a `tokenizer.json` that [`super::TokJson`] reads, deserialized without building the
//! rest.
//!
//! A BPE `tokenizer.json` is mostly its `model.merges` list: 280,000 strings, two thirds of Llama
//! 3's 9 MB file. Parsed into a `serde_json::Value`, every one of them is an allocation, and the
//! merges took about 75 ms of the 110 ms a full parse of that file took; nothing here reads them.
//! These visitors keep the top-level `model`, `added_tokens`, `pre_tokenizer` and `decoder`, and of
//! `model` its `type`, `byte_fallback` and `vocab`, as `Value`s (so [`super::TokJson::parse`] gives the
//! same answers and the same errors as from a whole `Value`); every other value is still read and
//! checked as JSON (`IgnoredAny`), only not kept. serde_json skips a value with a stack of its own,
//! not by recursion, so a value skipped may nest deeper than the 128 levels a kept one may, and
//! still cannot overflow the stack. A repeated key keeps its last value, as a `Value` object does.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// The top level of a `tokenizer.json`: `None` for a key that is absent (a JSON `null` is
/// `Some(Value::Null)`, as in a `Value` object).
pub(super) struct Parts {
    /// `model`: `None` when absent.
    pub model: Option<Model>,
    /// `added_tokens`.
    pub added_tokens: Option<Value>,
    /// `pre_tokenizer`.
    pub pre_tokenizer: Option<Value>,
    /// `decoder`.
    pub decoder: Option<Value>,
}

/// The `model` value: an object (with the keys read) or anything else.
pub(super) enum Model {
    /// An object.
    Object(Box<ModelFields>),
    /// Not an object (it was read and checked as JSON).
    Other,
}

/// The keys of a `model` object that are read.
pub(super) struct ModelFields {
    /// `type`.
    pub ty: Option<Value>,
    /// `byte_fallback`.
    pub byte_fallback: Option<Value>,
    /// `vocab`.
    pub vocab: Option<Value>,
}

impl Parts {
    /// Parse the bytes: `Ok(None)` when they are valid JSON but not an object.
    pub fn parse(bytes: &[u8]) -> Result<Option<Parts>, serde_json::Error> {
        serde_json::from_slice::<Top>(bytes).map(|t| t.0)
    }
}

/// The top-level value: `Some` for an object.
struct Top(Option<Parts>);

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        d.deserialize_any(TopVisitor).map(Top)
    }
}

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Model, D::Error> {
        d.deserialize_any(ModelVisitor)
            .map(|m| m.unwrap_or(Model::Other))
    }
}

struct TopVisitor;
struct ModelVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Option<Parts>;
    crate::json::visit_non_objects_as!(None);

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<Parts>, A::Error> {
        let mut p = Parts {
            model: None,
            added_tokens: None,
            pre_tokenizer: None,
            decoder: None,
        };
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "model" => p.model = Some(m.next_value()?),
                "added_tokens" => p.added_tokens = Some(m.next_value()?),
                "pre_tokenizer" => p.pre_tokenizer = Some(m.next_value()?),
                "decoder" => p.decoder = Some(m.next_value()?),
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(p))
    }
}

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = Option<Model>;
    crate::json::visit_non_objects_as!(None);

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Option<Model>, A::Error> {
        let (mut ty, mut byte_fallback, mut vocab) = (None, None, None);
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "type" => ty = Some(m.next_value()?),
                "byte_fallback" => byte_fallback = Some(m.next_value()?),
                "vocab" => vocab = Some(m.next_value()?),
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(Model::Object(Box::new(ModelFields {
            ty,
            byte_fallback,
            vocab,
        }))))
    }
}
