//! A serde `Deserializer` over a `cty::Value`: model structs decode straight from configuration,
//! plan and state values. A `Tri` field sees unknowns as unknown; elsewhere an unknown is null
//! when decoding a plan (`Unknowns::AsNull`) and an error otherwise.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};

use crate::cty::Value;

use super::tri::TRI_NAME;

/// What an unknown outside a `Tri` field decodes as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unknowns {
    /// An error: the caller needs every value known (apply-time configuration).
    Refuse,
    /// Null: a plan's computed values the apply will set.
    AsNull,
}

/// Why a value did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// An unknown where the caller needs every value known.
    #[error("a value needed now is not known yet")]
    NotKnownYet,
    /// The value does not fit the model.
    #[error("{0}")]
    Mismatch(String),
}

impl de::Error for DecodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DecodeError::Mismatch(msg.to_string())
    }
}

/// Decodes one value.
#[derive(Clone, Copy)]
pub struct ValueDeserializer<'a> {
    value: &'a Value,
    unknowns: Unknowns,
}

impl<'a> ValueDeserializer<'a> {
    /// A decoder of `value`.
    pub fn new(value: &'a Value, unknowns: Unknowns) -> Self {
        Self { value, unknowns }
    }

    fn at(&self, value: &'a Value) -> Self {
        Self {
            value,
            unknowns: self.unknowns,
        }
    }

    /// The value itself, looking through a dynamic slot.
    fn plain(&self) -> &'a Value {
        match self.value {
            Value::Dynamic { value, .. } => value,
            v => v,
        }
    }
}

impl<'de, 'a> IntoDeserializer<'de, DecodeError> for ValueDeserializer<'a> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de, 'a> de::Deserializer<'de> for ValueDeserializer<'a> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.plain() {
            Value::Null => visitor.visit_none(),
            Value::Unknown => match self.unknowns {
                Unknowns::AsNull => visitor.visit_none(),
                Unknowns::Refuse => Err(DecodeError::NotKnownYet),
            },
            Value::String(s) => visitor.visit_str(s),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.to_i64() {
                    visitor.visit_i64(i)
                } else if let Some(u) = n.to_u64() {
                    visitor.visit_u64(u)
                } else {
                    visitor.visit_f64(n.to_f64())
                }
            }
            Value::List(items) | Value::Set(items) | Value::Tuple(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(|v| self.at(v)));
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Map(items) | Value::Object(items) => {
                let mut map =
                    MapDeserializer::new(items.iter().map(|(k, v)| (k.as_str(), self.at(v))));
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
            Value::Dynamic { .. } => unreachable!("plain() looks through dynamic values"),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.plain() {
            Value::Null => visitor.visit_none(),
            Value::Unknown if self.unknowns == Unknowns::AsNull => visitor.visit_none(),
            Value::Unknown => Err(DecodeError::NotKnownYet),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        if name == TRI_NAME {
            return match self.plain() {
                Value::Unknown => visitor.visit_unit(),
                Value::Null => visitor.visit_none(),
                _ => visitor.visit_some(self),
            };
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.plain() {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(DecodeError::Mismatch(format!(
                "expected a string naming a variant, found {other:?}"
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::tri::Tri;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Model {
        name: String,
        count: Option<i64>,
        size: Tri<i64>,
        tags: Vec<String>,
        nested: Option<Vec<Inner>>,
        mode: Option<Mode>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Inner {
        big: u64,
        ratio: f64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Thin,
        Thick,
    }

    fn object(items: &[(&str, Value)]) -> Value {
        Value::Object(
            items
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn sample(size: Value, count: Value) -> Value {
        object(&[
            ("name", Value::string("web")),
            ("count", count),
            ("size", size),
            ("tags", Value::List(vec![Value::string("a")])),
            (
                "nested",
                Value::List(vec![object(&[
                    ("big", Value::number(u64::MAX)),
                    ("ratio", Value::Number("0.5".parse().unwrap())),
                ])]),
            ),
            ("mode", Value::string("thick")),
        ])
    }

    fn decode(v: &Value, unknowns: Unknowns) -> Result<Model, DecodeError> {
        Model::deserialize(ValueDeserializer::new(v, unknowns))
    }

    #[test]
    fn decodes_models_with_three_states() {
        let m = decode(&sample(Value::Unknown, Value::Null), Unknowns::Refuse).unwrap();
        assert_eq!(m.size, Tri::Unknown);
        assert_eq!(m.count, None);
        assert_eq!(m.nested.unwrap()[0].big, u64::MAX);
        assert_eq!(m.mode, Some(Mode::Thick));
        let m = decode(&sample(Value::number(3), Value::Null), Unknowns::Refuse).unwrap();
        assert_eq!(m.size, Tri::Known(3));
        let m = decode(&sample(Value::Null, Value::Null), Unknowns::Refuse).unwrap();
        assert_eq!(m.size, Tri::Null);
    }

    #[test]
    fn unknowns_outside_tri_are_null_or_refused() {
        let v = sample(Value::Null, Value::Unknown);
        assert_eq!(decode(&v, Unknowns::AsNull).unwrap().count, None);
        let e = decode(&v, Unknowns::Refuse).unwrap_err();
        assert!(e.to_string().contains("not known yet"), "{e}");
    }

    #[test]
    fn tri_reads_json_too() {
        #[derive(Deserialize)]
        struct M {
            a: Tri<String>,
            b: Tri<String>,
        }
        let m: M = serde_json::from_str(r#"{"a": "x", "b": null}"#).unwrap();
        assert_eq!(m.a, Tri::Known("x".to_string()));
        assert_eq!(m.b, Tri::Null);
    }
}
