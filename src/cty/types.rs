//! The cty type system ([`Type`]) and its JSON encoding, the form Terraform
//! uses for schema `type` fields and for the type half of dynamic values.
//!
//! The encoding (from go-cty's `Type.MarshalJSON`): `"string"`, `"number"`,
//! `"bool"`, `"dynamic"`, `["list",T]`, `["set",T]`, `["map",T]`,
//! `["object",{"name":T,...}]` or, when some attributes are optional,
//! `["object",{...},["opt1",...]]`, and `["tuple",[T,...]]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::error::{CtyError, Path};
use super::MAX_DEPTH;

/// A cty type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    /// A Unicode string.
    String,
    /// An exact decimal number ([`Number`](super::Number)).
    Number,
    /// `true` or `false`.
    Bool,
    /// DynamicPseudoType: any type, decided per value. Values in a dynamic
    /// slot travel with their concrete type
    /// ([`Value::Dynamic`](super::Value::Dynamic)).
    Dynamic,
    /// An ordered sequence of elements of one type.
    List(Box<Type>),
    /// An unordered collection of distinct elements of one type.
    Set(Box<Type>),
    /// String-keyed elements of one type.
    Map(Box<Type>),
    /// Named attributes, each with its own type. `optional` names the
    /// attributes a configuration may leave out (a type-constraint notion:
    /// values of the type still carry every attribute).
    Object {
        /// Attribute names and types.
        attrs: BTreeMap<String, Type>,
        /// Names of the optional attributes; each is a key of `attrs`.
        optional: BTreeSet<String>,
    },
    /// A fixed-length sequence with a type per position.
    Tuple(Vec<Type>),
}

impl Type {
    /// An object type with the given attributes and none optional.
    pub fn object<'a>(attrs: impl IntoIterator<Item = (&'a str, Type)>) -> Type {
        Type::Object {
            attrs: attrs.into_iter().map(|(k, t)| (k.to_owned(), t)).collect(),
            optional: BTreeSet::new(),
        }
    }

    /// An object type with some optional attributes. Names in `optional`
    /// that are not attributes are ignored.
    pub fn object_with_optional<'a>(
        attrs: impl IntoIterator<Item = (&'a str, Type)>,
        optional: impl IntoIterator<Item = &'a str>,
    ) -> Type {
        let attrs: BTreeMap<String, Type> =
            attrs.into_iter().map(|(k, t)| (k.to_owned(), t)).collect();
        let optional = optional
            .into_iter()
            .filter(|k| attrs.contains_key(*k))
            .map(str::to_owned)
            .collect();
        Type::Object { attrs, optional }
    }

    /// The empty object type, `["object",{}]`.
    pub fn empty_object() -> Type {
        Type::object([])
    }

    /// A list type.
    pub fn list(t: Type) -> Type {
        Type::List(Box::new(t))
    }

    /// A set type.
    pub fn set(t: Type) -> Type {
        Type::Set(Box::new(t))
    }

    /// A map type.
    pub fn map(t: Type) -> Type {
        Type::Map(Box::new(t))
    }

    /// A tuple type.
    pub fn tuple(elems: impl IntoIterator<Item = Type>) -> Type {
        Type::Tuple(elems.into_iter().collect())
    }

    /// True for `string`, `number` and `bool`.
    pub fn is_primitive(&self) -> bool {
        matches!(self, Type::String | Type::Number | Type::Bool)
    }

    /// True for list, set and map types.
    pub fn is_collection(&self) -> bool {
        matches!(self, Type::List(_) | Type::Set(_) | Type::Map(_))
    }

    /// The element type of a list, set or map type.
    pub fn element_type(&self) -> Option<&Type> {
        match self {
            Type::List(t) | Type::Set(t) | Type::Map(t) => Some(t),
            _ => None,
        }
    }

    /// The attribute types of an object type.
    pub fn attribute_types(&self) -> Option<&BTreeMap<String, Type>> {
        match self {
            Type::Object { attrs, .. } => Some(attrs),
            _ => None,
        }
    }

    /// True when this type is or contains `dynamic`.
    pub fn has_dynamic(&self) -> bool {
        match self {
            Type::Dynamic => true,
            Type::String | Type::Number | Type::Bool => false,
            Type::List(t) | Type::Set(t) | Type::Map(t) => t.has_dynamic(),
            Type::Object { attrs, .. } => attrs.values().any(Type::has_dynamic),
            Type::Tuple(ts) => ts.iter().any(Type::has_dynamic),
        }
    }

    /// How deeply the type nests: 1 for primitives and `dynamic`.
    pub fn depth(&self) -> usize {
        match self {
            Type::String | Type::Number | Type::Bool | Type::Dynamic => 1,
            Type::List(t) | Type::Set(t) | Type::Map(t) => 1 + t.depth(),
            Type::Object { attrs, .. } => 1 + attrs.values().map(Type::depth).max().unwrap_or(0),
            Type::Tuple(ts) => 1 + ts.iter().map(Type::depth).max().unwrap_or(0),
        }
    }

    /// The kind of type in one word, without element types: `string`,
    /// `list`, `object`, `dynamic`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Bool => "bool",
            Type::Dynamic => "dynamic",
            Type::List(_) => "list",
            Type::Set(_) => "set",
            Type::Map(_) => "map",
            Type::Object { .. } => "object",
            Type::Tuple(_) => "tuple",
        }
    }

    /// A human-readable name, like cty's `FriendlyName`: `list of string`,
    /// `object`, `dynamic`.
    pub fn friendly_name(&self) -> String {
        match self {
            Type::String => "string".into(),
            Type::Number => "number".into(),
            Type::Bool => "bool".into(),
            Type::Dynamic => "dynamic".into(),
            Type::List(t) => format!("list of {}", t.friendly_name()),
            Type::Set(t) => format!("set of {}", t.friendly_name()),
            Type::Map(t) => format!("map of {}", t.friendly_name()),
            Type::Object { .. } => "object".into(),
            Type::Tuple(_) => "tuple".into(),
        }
    }

    /// The type's JSON description as a `serde_json::Value`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Type::String => J::String("string".into()),
            Type::Number => J::String("number".into()),
            Type::Bool => J::String("bool".into()),
            Type::Dynamic => J::String("dynamic".into()),
            Type::List(t) => J::Array(vec![J::String("list".into()), t.to_json()]),
            Type::Set(t) => J::Array(vec![J::String("set".into()), t.to_json()]),
            Type::Map(t) => J::Array(vec![J::String("map".into()), t.to_json()]),
            Type::Object { attrs, optional } => {
                let map: serde_json::Map<String, J> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                let mut parts = vec![J::String("object".into()), J::Object(map)];
                if !optional.is_empty() {
                    parts.push(J::Array(optional.iter().cloned().map(J::String).collect()));
                }
                J::Array(parts)
            }
            Type::Tuple(ts) => J::Array(vec![
                J::String("tuple".into()),
                J::Array(ts.iter().map(Type::to_json).collect()),
            ]),
        }
    }

    /// The type's JSON description as compact bytes, exactly as go-cty
    /// writes it: no spaces, object attributes and optional names sorted.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Type::String => out.extend_from_slice(b"\"string\""),
            Type::Number => out.extend_from_slice(b"\"number\""),
            Type::Bool => out.extend_from_slice(b"\"bool\""),
            Type::Dynamic => out.extend_from_slice(b"\"dynamic\""),
            Type::List(t) | Type::Set(t) | Type::Map(t) => {
                let kind: &[u8] = match self {
                    Type::List(_) => b"[\"list\",",
                    Type::Set(_) => b"[\"set\",",
                    _ => b"[\"map\",",
                };
                out.extend_from_slice(kind);
                t.write_json(out);
                out.push(b']');
            }
            Type::Object { attrs, optional } => {
                out.extend_from_slice(b"[\"object\",{");
                for (i, (name, t)) in attrs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, name);
                    out.push(b':');
                    t.write_json(out);
                }
                out.push(b'}');
                if !optional.is_empty() {
                    out.extend_from_slice(b",[");
                    for (i, name) in optional.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_json_string(out, name);
                    }
                    out.push(b']');
                }
                out.push(b']');
            }
            Type::Tuple(ts) => {
                out.extend_from_slice(b"[\"tuple\",[");
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    t.write_json(out);
                }
                out.extend_from_slice(b"]]");
            }
        }
    }

    /// Parses a type from its JSON description held as a `serde_json::Value`.
    pub fn from_json(v: &serde_json::Value) -> Result<Type, CtyError> {
        type_from_json(v, &Path::root(), 0)
    }

    /// Parses a type from the bytes of its JSON description.
    pub fn from_json_bytes(b: &[u8]) -> Result<Type, CtyError> {
        // serde_json refuses nesting beyond 128 levels, so this cannot
        // exhaust the stack.
        let v: serde_json::Value =
            serde_json::from_slice(b).map_err(|e| CtyError::InvalidType {
                path: Path::root(),
                reason: format!("not valid JSON: {e}"),
            })?;
        Type::from_json(&v)
    }
}

impl fmt::Display for Type {
    /// The compact JSON description, e.g. `["list","string"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_json_bytes()))
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

fn type_err(path: &Path, reason: impl Into<String>) -> CtyError {
    CtyError::InvalidType {
        path: path.clone(),
        reason: reason.into(),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn type_from_json(v: &serde_json::Value, path: &Path, depth: usize) -> Result<Type, CtyError> {
    use serde_json::Value as J;
    if depth >= MAX_DEPTH {
        return Err(type_err(
            path,
            format!("nesting exceeds the limit of {MAX_DEPTH} levels"),
        ));
    }
    match v {
        J::String(name) => match name.as_str() {
            "string" => Ok(Type::String),
            "number" => Ok(Type::Number),
            "bool" => Ok(Type::Bool),
            "dynamic" => Ok(Type::Dynamic),
            other => Err(type_err(
                path,
                format!("invalid primitive type name {other:?}: expected \"string\", \"number\", \"bool\" or \"dynamic\""),
            )),
        },
        J::Array(items) => {
            let kind = match items.first() {
                Some(J::String(k)) => k.as_str(),
                Some(other) => {
                    return Err(type_err(
                        &path.index(0),
                        format!("expected a type kind name (\"list\", \"set\", \"map\", \"object\" or \"tuple\"), found {}", json_kind(other)),
                    ))
                }
                None => return Err(type_err(path, "expected a type kind name, found an empty array")),
            };
            let arity_ok = match kind {
                "object" => items.len() == 2 || items.len() == 3,
                _ => items.len() == 2,
            };
            if !arity_ok {
                return Err(type_err(
                    path,
                    format!("a {kind:?} type description has the wrong number of elements ({})", items.len()),
                ));
            }
            let second = &items[1];
            let second_path = path.index(1);
            match kind {
                "list" => Ok(Type::list(type_from_json(second, &second_path, depth + 1)?)),
                "set" => Ok(Type::set(type_from_json(second, &second_path, depth + 1)?)),
                "map" => Ok(Type::map(type_from_json(second, &second_path, depth + 1)?)),
                "tuple" => {
                    let J::Array(elems) = second else {
                        return Err(type_err(
                            &second_path,
                            format!("expected an array of element types, found {}", json_kind(second)),
                        ));
                    };
                    let mut ts = Vec::with_capacity(elems.len());
                    for (i, e) in elems.iter().enumerate() {
                        ts.push(type_from_json(e, &second_path.index(i), depth + 1)?);
                    }
                    Ok(Type::Tuple(ts))
                }
                "object" => {
                    let J::Object(members) = second else {
                        return Err(type_err(
                            &second_path,
                            format!("expected an object of attribute types, found {}", json_kind(second)),
                        ));
                    };
                    let mut attrs = BTreeMap::new();
                    for (name, t) in members {
                        attrs.insert(name.clone(), type_from_json(t, &second_path.key(name), depth + 1)?);
                    }
                    let mut optional = BTreeSet::new();
                    if let Some(opts) = items.get(2) {
                        let opt_path = path.index(2);
                        let J::Array(names) = opts else {
                            return Err(type_err(
                                &opt_path,
                                format!("expected an array of optional attribute names, found {}", json_kind(opts)),
                            ));
                        };
                        for (i, n) in names.iter().enumerate() {
                            let J::String(n) = n else {
                                return Err(type_err(
                                    &opt_path.index(i),
                                    format!("expected an attribute name, found {}", json_kind(n)),
                                ));
                            };
                            if !attrs.contains_key(n) {
                                return Err(type_err(
                                    &opt_path.index(i),
                                    format!("optional attribute {n:?} is not an attribute of the object"),
                                ));
                            }
                            optional.insert(n.clone());
                        }
                    }
                    Ok(Type::Object { attrs, optional })
                }
                other => Err(type_err(
                    &path.index(0),
                    format!("invalid type kind {other:?}: expected \"list\", \"set\", \"map\", \"object\" or \"tuple\""),
                )),
            }
        }
        other => Err(type_err(
            path,
            format!("expected a type name string or a [kind, ...] array, found {}", json_kind(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cty::testgen::arb_type;
    use proptest::prelude::*;

    fn roundtrip(t: &Type, json: &str) {
        assert_eq!(String::from_utf8(t.to_json_bytes()).unwrap(), json);
        assert_eq!(&Type::from_json_bytes(json.as_bytes()).unwrap(), t);
        assert_eq!(serde_json::to_string(&t.to_json()).unwrap(), json);
    }

    #[test]
    fn known_encodings() {
        roundtrip(&Type::String, r#""string""#);
        roundtrip(&Type::Number, r#""number""#);
        roundtrip(&Type::Bool, r#""bool""#);
        roundtrip(&Type::Dynamic, r#""dynamic""#);
        roundtrip(&Type::list(Type::String), r#"["list","string"]"#);
        roundtrip(&Type::set(Type::Number), r#"["set","number"]"#);
        roundtrip(&Type::map(Type::Bool), r#"["map","bool"]"#);
        roundtrip(
            &Type::tuple([Type::String, Type::Dynamic]),
            r#"["tuple",["string","dynamic"]]"#,
        );
        roundtrip(&Type::tuple([]), r#"["tuple",[]]"#);
        roundtrip(&Type::empty_object(), r#"["object",{}]"#);
        roundtrip(
            &Type::object([
                ("name", Type::String),
                ("disk", Type::list(Type::object([("size", Type::Number)]))),
            ]),
            r#"["object",{"disk":["list",["object",{"size":"number"}]],"name":"string"}]"#,
        );
        roundtrip(
            &Type::object_with_optional(
                [("b", Type::String), ("a", Type::Number), ("c", Type::Bool)],
                ["c", "a"],
            ),
            r#"["object",{"a":"number","b":"string","c":"bool"},["a","c"]]"#,
        );
    }

    #[test]
    fn lenient_forms_accepted() {
        // Whitespace and an explicit empty optional list are fine.
        assert_eq!(
            Type::from_json_bytes(b" [ \"list\" , \"string\" ] ").unwrap(),
            Type::list(Type::String)
        );
        assert_eq!(
            Type::from_json_bytes(br#"["object",{"a":"string"},[]]"#).unwrap(),
            Type::object([("a", Type::String)])
        );
    }

    #[test]
    fn errors_are_reported_with_paths() {
        let cases: &[(&str, &str)] = &[
            (
                r#""text""#,
                "invalid type description at (root): invalid primitive type name \"text\"",
            ),
            (r#"["list"]"#, "wrong number of elements"),
            (r#"["list","string","x"]"#, "wrong number of elements"),
            (
                r#"["vector","string"]"#,
                "at [0]: invalid type kind \"vector\"",
            ),
            (
                r#"["object",{"a":"strin"}]"#,
                "at [1][\"a\"]: invalid primitive type name",
            ),
            (
                r#"["object",{"a":"string"},["b"]]"#,
                "at [2][0]: optional attribute \"b\"",
            ),
            (
                r#"["object",{"a":"string"},[1]]"#,
                "at [2][0]: expected an attribute name",
            ),
            (
                r#"["tuple",{}]"#,
                "at [1]: expected an array of element types",
            ),
            (
                r#"["tuple",["string",7]]"#,
                "at [1][1]: expected a type name",
            ),
            (r#"[7,"string"]"#, "at [0]: expected a type kind name"),
            (r#"[]"#, "empty array"),
            (r#"null"#, "found null"),
            (r#""string" x"#, "not valid JSON"),
            (r#""#, "not valid JSON"),
        ];
        for (input, want) in cases {
            let err = Type::from_json_bytes(input.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{input}: {err} should contain {want}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing() {
        let mut s = String::new();
        for _ in 0..100_000 {
            s.push_str("[\"list\",");
        }
        assert!(Type::from_json_bytes(s.as_bytes()).is_err());
        // A deep serde_json::Value built in code hits the type depth limit.
        let mut v = serde_json::json!("string");
        for _ in 0..(MAX_DEPTH + 5) {
            v = serde_json::json!(["list", v]);
        }
        let err = Type::from_json(&v).unwrap_err().to_string();
        assert!(err.contains("nesting exceeds"), "{err}");
    }

    #[test]
    fn helpers() {
        let t = Type::object([("a", Type::list(Type::Dynamic))]);
        assert!(t.has_dynamic());
        assert_eq!(t.depth(), 3);
        assert_eq!(Type::map(Type::String).friendly_name(), "map of string");
        assert_eq!(Type::map(Type::String).kind_name(), "map");
        assert_eq!(Type::set(Type::Bool).to_string(), r#"["set","bool"]"#);
        assert_eq!(Type::list(Type::Number).element_type(), Some(&Type::Number));
        assert!(Type::String.is_primitive() && Type::map(Type::String).is_collection());
    }

    proptest! {
        #[test]
        fn type_json_roundtrip(t in arb_type()) {
            let bytes = t.to_json_bytes();
            prop_assert_eq!(&Type::from_json_bytes(&bytes).unwrap(), &t);
            prop_assert_eq!(&Type::from_json(&t.to_json()).unwrap(), &t);
            prop_assert_eq!(serde_json::to_vec(&t.to_json()).unwrap(), bytes);
        }

        #[test]
        fn type_json_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Type::from_json_bytes(&bytes);
        }

        #[test]
        fn type_json_mangled_never_panics(t in arb_type(), cut in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = t.to_json_bytes();
            let i = cut.index(bytes.len());
            bytes[i] = b;
            let _ = Type::from_json_bytes(&bytes);
            bytes.truncate(i);
            let _ = Type::from_json_bytes(&bytes);
        }
    }
}
