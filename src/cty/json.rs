//! The JSON value codec: cty values as Terraform carries them in
//! `DynamicValue.json` and in state JSON, following go-cty's `cty/json`.
//!
//! Wire rules, as go-cty writes and reads them:
//! - null is `null` (for every type, `dynamic` included); unknown values
//!   cannot be written at all.
//! - numbers are JSON numbers in plain decimal form (`0.1`, `100`, never an
//!   exponent), exact to any size; reading also accepts a string holding a
//!   number (`"42"`).
//! - strings are JSON strings; reading also takes a JSON number (its literal
//!   text) or a bool (`"true"`/`"false"`). Bools are `true`/`false`;
//!   reading also takes the strings `"true"`, `"1"`, `"false"`, `"0"`.
//! - lists, sets and tuples are arrays; maps and objects are JSON objects
//!   with sorted keys. Every attribute of an object type is written; on
//!   reading, an absent attribute becomes null and an undeclared one is an
//!   error.
//! - a value in a `dynamic` slot is `{"value":V,"type":T}` with `T` the
//!   type's JSON description; a null of no particular type is `null`.

use std::collections::BTreeMap;

use serde_json::Value as J;

use super::error::{CtyError, Path};
use super::number::{shorten, Number};
use super::types::{write_json_string, Type};
use super::value::{resolve_slot, Slot, Value};
use super::MAX_DEPTH;

/// Encodes `v` as a value of type `ty` in cty's JSON form.
///
/// Fails when the value (or anything in it) is unknown, or does not
/// conform to the type; the error names the path.
pub fn to_json(v: &Value, ty: &Type) -> Result<Vec<u8>, CtyError> {
    let mut out = Vec::new();
    encode(&mut out, v, ty, &Path::root(), 0)?;
    Ok(out)
}

/// Decodes cty JSON bytes as a value of type `ty`.
///
/// Never panics; invalid JSON (including nesting beyond serde_json's limit
/// of 128 levels), mistyped values and trailing data are errors naming the
/// path.
pub fn from_json(b: &[u8], ty: &Type) -> Result<Value, CtyError> {
    let j: J = serde_json::from_slice(b).map_err(|e| CtyError::JsonSyntax {
        message: e.to_string(),
    })?;
    from_json_value(&j, ty)
}

/// Decodes an already-parsed JSON document as a value of type `ty`, by the
/// same rules as [`from_json`].
pub fn from_json_value(j: &J, ty: &Type) -> Result<Value, CtyError> {
    decode(j, ty, &Path::root(), 0)
}

fn encode(
    out: &mut Vec<u8>,
    v: &Value,
    ty: &Type,
    path: &Path,
    depth: usize,
) -> Result<(), CtyError> {
    if depth > MAX_DEPTH {
        return Err(CtyError::too_deep(path));
    }
    let (ty, v) = match resolve_slot(v, ty, &|| path.clone())? {
        Slot::Null => {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        Slot::Unknown => return Err(CtyError::UnknownInJson { path: path.clone() }),
        Slot::Concrete {
            ty,
            value,
            wrap: true,
        } => {
            out.extend_from_slice(b"{\"value\":");
            encode(out, value, &ty, path, depth + 1)?;
            out.extend_from_slice(b",\"type\":");
            out.extend_from_slice(&ty.to_json_bytes());
            out.push(b'}');
            return Ok(());
        }
        Slot::Concrete {
            ty,
            value,
            wrap: false,
        } => (ty, value),
    };
    match (&*ty, v) {
        (Type::String, Value::String(s)) => write_json_string(out, s),
        (Type::Number, Value::Number(n)) => out.extend_from_slice(n.to_string().as_bytes()),
        (Type::Bool, Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        (Type::List(et), Value::List(vs)) | (Type::Set(et), Value::Set(vs)) => {
            out.push(b'[');
            for (i, ev) in vs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode(out, ev, et, &path.index(i), depth + 1)?;
            }
            out.push(b']');
        }
        (Type::Tuple(ts), Value::Tuple(vs)) => {
            if ts.len() != vs.len() {
                return Err(CtyError::TupleLength {
                    path: path.clone(),
                    expected: ts.len(),
                    found: vs.len(),
                });
            }
            out.push(b'[');
            for (i, (et, ev)) in ts.iter().zip(vs).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode(out, ev, et, &path.index(i), depth + 1)?;
            }
            out.push(b']');
        }
        (Type::Map(et), Value::Map(m)) => {
            out.push(b'{');
            for (i, (k, ev)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, k);
                out.push(b':');
                encode(out, ev, et, &path.key(k), depth + 1)?;
            }
            out.push(b'}');
        }
        (Type::Object { attrs, .. }, Value::Object(m)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(CtyError::UnsupportedAttribute {
                    path: path.clone(),
                    name: extra.clone(),
                });
            }
            out.push(b'{');
            for (i, (k, at)) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, k);
                out.push(b':');
                encode(
                    out,
                    m.get(k).unwrap_or(&Value::Null),
                    at,
                    &path.attr(k),
                    depth + 1,
                )?;
            }
            out.push(b'}');
        }
        (t, v) => return Err(CtyError::mismatch(path, t.friendly_name(), v.kind_name())),
    }
    Ok(())
}

fn describe(j: &J) -> &'static str {
    match j {
        J::Null => "JSON null",
        J::Bool(_) => "JSON boolean",
        J::Number(_) => "JSON number",
        J::String(_) => "JSON string",
        J::Array(_) => "JSON array",
        J::Object(_) => "JSON object",
    }
}

fn parse_number(text: &str, path: &Path) -> Result<Number, CtyError> {
    Number::parse(text).map_err(|e| match e {
        CtyError::InvalidNumber { reason, .. } => CtyError::InvalidNumber {
            path: path.clone(),
            text: shorten(text),
            reason,
        },
        other => other,
    })
}

fn decode(j: &J, ty: &Type, path: &Path, depth: usize) -> Result<Value, CtyError> {
    if depth > MAX_DEPTH {
        return Err(CtyError::too_deep(path));
    }
    if j.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = || CtyError::mismatch(path, ty.friendly_name(), describe(j));
    match ty {
        Type::Dynamic => {
            let J::Object(members) = j else {
                return Err(CtyError::mismatch(
                    path,
                    "a dynamic value ({\"value\":…,\"type\":…})",
                    describe(j),
                ));
            };
            if let Some(k) = members.keys().find(|k| *k != "value" && *k != "type") {
                return Err(CtyError::invalid(
                    path,
                    format!("invalid key {k:?} in a dynamically-typed value"),
                ));
            }
            let Some(tj) = members.get("type") else {
                return Err(CtyError::invalid(
                    path,
                    "missing \"type\" in a dynamically-typed value",
                ));
            };
            let Some(vj) = members.get("value") else {
                return Err(CtyError::invalid(
                    path,
                    "missing \"value\" in a dynamically-typed value",
                ));
            };
            let inner = Type::from_json(tj).map_err(|e| {
                CtyError::invalid(path, format!("the type of a dynamic value is invalid: {e}"))
            })?;
            let v = decode(vj, &inner, path, depth + 1)?;
            Ok(Value::dynamic(inner, v))
        }
        Type::String => match j {
            J::String(s) => Ok(Value::String(s.clone())),
            J::Number(n) => Ok(Value::String(n.to_string())),
            J::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(mismatch()),
        },
        Type::Number => match j {
            J::Number(n) => parse_number(&n.to_string(), path).map(Value::Number),
            J::String(s) => parse_number(s, path).map(Value::Number),
            _ => Err(mismatch()),
        },
        Type::Bool => match j {
            J::Bool(b) => Ok(Value::Bool(*b)),
            J::String(s) => match s.as_str() {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(CtyError::mismatch(
                    path,
                    "bool",
                    format!("the string {:?}", shorten(s)),
                )),
            },
            _ => Err(mismatch()),
        },
        Type::List(et) | Type::Set(et) => {
            let J::Array(items) = j else {
                return Err(mismatch());
            };
            let mut vs = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                vs.push(decode(item, et, &path.index(i), depth + 1)?);
            }
            Ok(if matches!(ty, Type::List(_)) {
                Value::List(vs)
            } else {
                Value::Set(vs)
            })
        }
        Type::Tuple(ts) => {
            let J::Array(items) = j else {
                return Err(mismatch());
            };
            if items.len() != ts.len() {
                return Err(CtyError::TupleLength {
                    path: path.clone(),
                    expected: ts.len(),
                    found: items.len(),
                });
            }
            let mut vs = Vec::with_capacity(items.len());
            for (i, (item, et)) in items.iter().zip(ts).enumerate() {
                vs.push(decode(item, et, &path.index(i), depth + 1)?);
            }
            Ok(Value::Tuple(vs))
        }
        Type::Map(et) => {
            let J::Object(members) = j else {
                return Err(mismatch());
            };
            let mut out = BTreeMap::new();
            for (k, item) in members {
                out.insert(k.clone(), decode(item, et, &path.key(k), depth + 1)?);
            }
            Ok(Value::Map(out))
        }
        Type::Object { attrs, .. } => {
            let J::Object(members) = j else {
                return Err(mismatch());
            };
            let mut out = BTreeMap::new();
            for (k, item) in members {
                let Some(at) = attrs.get(k) else {
                    return Err(CtyError::UnsupportedAttribute {
                        path: path.clone(),
                        name: k.clone(),
                    });
                };
                out.insert(k.clone(), decode(item, at, &path.attr(k), depth + 1)?);
            }
            for k in attrs.keys() {
                if !out.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Ok(Value::Object(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cty::testgen::{arb_type, arb_typed_value};
    use proptest::prelude::*;

    fn num(s: &str) -> Value {
        Value::Number(Number::parse(s).unwrap())
    }

    /// Encodes, checks the text, and decodes back to the same value.
    fn case(v: &Value, ty: &Type, want: &str) {
        let b = to_json(v, ty).unwrap();
        assert_eq!(
            String::from_utf8(b.clone()).unwrap(),
            want,
            "encoding {v:?} as {ty}"
        );
        assert_eq!(&from_json(&b, ty).unwrap(), v, "decoding {want} as {ty}");
    }

    fn dec(s: &str, ty: &Type) -> Result<Value, CtyError> {
        from_json(s.as_bytes(), ty)
    }

    #[test]
    fn primitives() {
        case(&Value::Null, &Type::String, "null");
        case(&Value::Null, &Type::Dynamic, "null");
        case(&Value::from("a\"b\n"), &Type::String, r#""a\"b\n""#);
        case(&Value::from(true), &Type::Bool, "true");
        case(&Value::from(-42), &Type::Number, "-42");
        case(&num("0.1"), &Type::Number, "0.1");
        case(
            &num("18446744073709551616"),
            &Type::Number,
            "18446744073709551616",
        );
        case(
            &num("1e400"),
            &Type::Number,
            &format!("1{}", "0".repeat(400)),
        );
        case(
            &num("-1e-30"),
            &Type::Number,
            &format!("-0.{}1", "0".repeat(29)),
        );
        case(
            &Value::number(Number::try_from(0.1).unwrap()),
            &Type::Number,
            "0.1000000000000000055511151231257827021181583404541015625",
        );
    }

    #[test]
    fn lenient_primitive_reading() {
        assert_eq!(dec("1e400", &Type::Number).unwrap(), num("1e400"));
        assert_eq!(dec("1.50E+1", &Type::Number).unwrap(), num("15"));
        assert_eq!(dec(r#""42""#, &Type::Number).unwrap(), num("42"));
        assert_eq!(dec("1.50", &Type::String).unwrap(), Value::from("1.50"));
        assert_eq!(dec("false", &Type::String).unwrap(), Value::from("false"));
        assert_eq!(dec(r#""1""#, &Type::Bool).unwrap(), Value::from(true));
        assert_eq!(dec(r#""false""#, &Type::Bool).unwrap(), Value::from(false));
        assert!(dec(r#""True""#, &Type::Bool).is_err());
        assert!(matches!(
            dec(r#""abc""#, &Type::Number),
            Err(CtyError::InvalidNumber { .. })
        ));
        assert!(matches!(
            dec("1e99999999", &Type::Number),
            Err(CtyError::InvalidNumber { .. })
        ));
        assert_eq!(
            dec("[1]", &Type::String).unwrap_err().to_string(),
            "at (root): expected string, found JSON array"
        );
    }

    #[test]
    fn unknown_is_an_error() {
        let ty = Type::object([("disk", Type::list(Type::object([("size", Type::Number)])))]);
        let v = Value::object([(
            "disk",
            Value::List(vec![Value::object([("size", Value::Unknown)])]),
        )]);
        let err = to_json(&v, &ty).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at .disk[0].size: unknown values cannot be encoded as JSON"
        );
        assert!(to_json(
            &Value::dynamic(Type::String, Value::Unknown),
            &Type::Dynamic
        )
        .is_err());
    }

    #[test]
    fn nested_object_with_optional_attrs() {
        let ty = Type::object_with_optional(
            [
                ("name", Type::String),
                (
                    "disk",
                    Type::list(Type::object([
                        ("size", Type::Number),
                        ("label", Type::String),
                    ])),
                ),
                ("notes", Type::String),
            ],
            ["notes"],
        );
        let v = Value::object([
            (
                "disk",
                Value::List(vec![Value::object([
                    ("label", Value::from("a")),
                    ("size", Value::from(10)),
                ])]),
            ),
            ("name", Value::from("vm")),
            ("notes", Value::Null),
        ]);
        case(
            &v,
            &ty,
            r#"{"disk":[{"label":"a","size":10}],"name":"vm","notes":null}"#,
        );
        assert_eq!(
            dec(r#"{"name":"vm"}"#, &ty).unwrap(),
            Value::object([
                ("disk", Value::Null),
                ("name", Value::from("vm")),
                ("notes", Value::Null)
            ])
        );
        assert_eq!(
            dec(r#"{"disk":[{"size":1,"extra":2}]}"#, &ty)
                .unwrap_err()
                .to_string(),
            "at .disk[0]: unsupported attribute \"extra\": the object type has no such attribute"
        );
        assert_eq!(
            dec(r#"{"disk":[{"size":true}]}"#, &ty)
                .unwrap_err()
                .to_string(),
            "at .disk[0].size: expected number, found JSON boolean"
        );
    }

    #[test]
    fn collections() {
        case(
            &Value::Set(vec!["b".into(), "a".into()]),
            &Type::set(Type::String),
            r#"["b","a"]"#,
        );
        case(
            &Value::map([("z", 1.into()), ("a", Value::Null)]),
            &Type::map(Type::Number),
            r#"{"a":null,"z":1}"#,
        );
        case(
            &Value::Tuple(vec!["x".into(), true.into(), 3.into()]),
            &Type::tuple([Type::String, Type::Bool, Type::Number]),
            r#"["x",true,3]"#,
        );
        case(&Value::Tuple(vec![]), &Type::tuple([]), "[]");
        assert!(matches!(
            dec(r#"["x"]"#, &Type::tuple([Type::String, Type::Bool])),
            Err(CtyError::TupleLength {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert_eq!(
            dec(r#"{"k":{"a":"x"}}"#, &Type::map(Type::map(Type::Number)))
                .unwrap_err()
                .to_string(),
            "at [\"k\"][\"a\"]: invalid number \"x\": a decimal number is required"
        );
    }

    #[test]
    fn dynamic_values() {
        case(
            &Value::dynamic(Type::String, "hi".into()),
            &Type::Dynamic,
            r#"{"value":"hi","type":"string"}"#,
        );
        case(
            &Value::dynamic(Type::list(Type::Number), Value::List(vec![1.into()])),
            &Type::Dynamic,
            r#"{"value":[1],"type":["list","number"]}"#,
        );
        case(
            &Value::dynamic(Type::Bool, Value::Null),
            &Type::Dynamic,
            r#"{"value":null,"type":"bool"}"#,
        );
        // Member order does not matter on reading.
        assert_eq!(
            dec(r#"{"type":"number","value":2}"#, &Type::Dynamic).unwrap(),
            Value::dynamic(Type::Number, 2.into())
        );
        // A bare value in a dynamic slot is wrapped with its implied type.
        assert_eq!(
            String::from_utf8(to_json(&Value::from(true), &Type::Dynamic).unwrap()).unwrap(),
            r#"{"value":true,"type":"bool"}"#
        );
        assert!(dec(r#"{"value":1}"#, &Type::Dynamic).is_err());
        assert!(dec(r#"{"type":"number"}"#, &Type::Dynamic).is_err());
        assert!(dec(r#"{"type":"number","value":1,"x":0}"#, &Type::Dynamic).is_err());
        assert!(dec(r#"{"type":"nope","value":1}"#, &Type::Dynamic).is_err());
        assert!(dec(r#"7"#, &Type::Dynamic).is_err());
        // Nested wrappers of "dynamic" flatten.
        assert_eq!(
            dec(
                r#"{"type":"dynamic","value":{"type":"string","value":"x"}}"#,
                &Type::Dynamic
            )
            .unwrap(),
            Value::dynamic(Type::String, "x".into())
        );
    }

    #[test]
    fn malformed_input() {
        assert!(matches!(
            dec("", &Type::String),
            Err(CtyError::JsonSyntax { .. })
        ));
        assert!(matches!(
            dec(r#""a" "b""#, &Type::String),
            Err(CtyError::JsonSyntax { .. })
        ));
        assert!(matches!(
            dec("[", &Type::list(Type::String)),
            Err(CtyError::JsonSyntax { .. })
        ));
        let deep = "[".repeat(100_000);
        assert!(dec(&deep, &Type::Dynamic).is_err());
        let mut ty = Type::Bool;
        for _ in 0..200 {
            ty = Type::list(ty);
        }
        assert!(dec(&format!("{}true{}", "[".repeat(200), "]".repeat(200)), &ty).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip((ty, v) in arb_typed_value(false)) {
            let b = to_json(&v, &ty).unwrap();
            let back = from_json(&b, &ty).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_json(&back, &ty).unwrap(), b);
        }

        #[test]
        fn msgpack_and_json_agree((ty, v) in arb_typed_value(false)) {
            let via_json = from_json(&to_json(&v, &ty).unwrap(), &ty).unwrap();
            let via_msgpack = crate::cty::from_msgpack(&crate::cty::to_msgpack(&v, &ty).unwrap(), &ty).unwrap();
            prop_assert_eq!(via_json, via_msgpack);
        }

        #[test]
        fn garbage_never_panics(ty in arb_type(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = from_json(&bytes, &ty);
        }

        #[test]
        fn jsonish_garbage_never_panics(ty in arb_type(), s in r#"[\[\]{}",:0-9a-z.eE+-]{0,64}"#) {
            let _ = from_json(s.as_bytes(), &ty);
            let _ = from_json(s.as_bytes(), &Type::Dynamic);
        }

        #[test]
        fn valid_input_of_another_type_never_panics((ty, v) in arb_typed_value(false), other in arb_type()) {
            let b = to_json(&v, &ty).unwrap();
            for target in [&other, &Type::Dynamic] {
                if let Ok(got) = from_json(&b, target) {
                    let again = to_json(&got, target).unwrap();
                    prop_assert_eq!(from_json(&again, target).unwrap(), got);
                }
            }
        }
    }
}
