//! cty values ([`Value`]): the data a Terraform configuration, plan or state
//! holds, checked against a [`Type`] and compared with set semantics.

use std::collections::BTreeMap;

use super::error::{CtyError, Path};
use super::number::Number;
use super::types::Type;
use super::MAX_DEPTH;

/// A cty value. The value does not carry its type (except
/// [`Value::Dynamic`]); the codecs take the type separately, as Terraform's
/// protocol does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// A null of whatever type the context gives.
    Null,
    /// A value not yet known (during planning). Refinements Terraform may
    /// attach (not-null, string prefix, number or length bounds) are
    /// dropped on decoding.
    Unknown,
    /// A `string`.
    String(String),
    /// A `number`.
    Number(Number),
    /// A `bool`.
    Bool(bool),
    /// A `list`'s elements, in order.
    List(Vec<Value>),
    /// A `set`'s elements, in the order decoded; [`Value::equivalent`]
    /// compares them without regard to order.
    Set(Vec<Value>),
    /// A `map`'s elements, by key.
    Map(BTreeMap<String, Value>),
    /// An `object`'s attributes, by name. An attribute the type declares but
    /// the map lacks is treated as null when encoding.
    Object(BTreeMap<String, Value>),
    /// A `tuple`'s elements, in order.
    Tuple(Vec<Value>),
    /// A value in a slot whose schema type is `dynamic`, carrying its
    /// concrete type. `ty` is never [`Type::Dynamic`] itself; `value`
    /// conforms to `ty` (and may be `Null` or `Unknown`). A plain
    /// `Value::Null` or `Value::Unknown` in a dynamic slot means a null or
    /// unknown of no particular type.
    Dynamic {
        /// The concrete type.
        ty: Type,
        /// The value, of type `ty`.
        value: Box<Value>,
    },
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// A number value.
    pub fn number(n: impl Into<Number>) -> Value {
        Value::Number(n.into())
    }

    /// A bool value.
    pub fn bool(b: bool) -> Value {
        Value::Bool(b)
    }

    /// An object value from attribute names and values.
    pub fn object<'a>(attrs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Object(attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A map value from keys and values.
    pub fn map<'a>(elems: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(elems.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A value for a `dynamic` slot carrying its concrete type. A `ty` of
    /// `Type::Dynamic` yields `value` unchanged.
    pub fn dynamic(ty: Type, value: Value) -> Value {
        if ty == Type::Dynamic {
            value
        } else {
            Value::Dynamic {
                ty,
                value: Box::new(value),
            }
        }
    }

    /// An object of the given object type with every attribute null; for
    /// other types, [`Value::Null`].
    pub fn null_object(ty: &Type) -> Value {
        match ty {
            Type::Object { attrs, .. } => {
                Value::Object(attrs.keys().map(|k| (k.clone(), Value::Null)).collect())
            }
            _ => Value::Null,
        }
    }

    /// True for a null (including a dynamic wrapper around a null).
    pub fn is_null(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Dynamic { value, .. } => value.is_null(),
            _ => false,
        }
    }

    /// True for an unknown (including a dynamic wrapper around an unknown).
    pub fn is_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::Dynamic { value, .. } => value.is_unknown(),
            _ => false,
        }
    }

    /// True unless the value itself is unknown (its elements may be).
    pub fn is_known(&self) -> bool {
        !self.is_unknown()
    }

    /// True when neither the value nor anything inside it is unknown.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::Null | Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
            Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => {
                vs.iter().all(Value::is_wholly_known)
            }
            Value::Map(m) | Value::Object(m) => m.values().all(Value::is_wholly_known),
            Value::Dynamic { value, .. } => value.is_wholly_known(),
        }
    }

    /// The value with any dynamic wrappers removed.
    pub fn unwrap_dynamic(&self) -> &Value {
        match self {
            Value::Dynamic { value, .. } => value.unwrap_dynamic(),
            v => v,
        }
    }

    /// The string, for a known string value.
    pub fn as_str(&self) -> Option<&str> {
        match self.unwrap_dynamic() {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, for a known number value.
    pub fn as_number(&self) -> Option<&Number> {
        match self.unwrap_dynamic() {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    /// The bool, for a known bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match self.unwrap_dynamic() {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements of a list, set or tuple value.
    pub fn as_elements(&self) -> Option<&[Value]> {
        match self.unwrap_dynamic() {
            Value::List(vs) | Value::Set(vs) | Value::Tuple(vs) => Some(vs),
            _ => None,
        }
    }

    /// The entries of a map or object value.
    pub fn as_entries(&self) -> Option<&BTreeMap<String, Value>> {
        match self.unwrap_dynamic() {
            Value::Map(m) | Value::Object(m) => Some(m),
            _ => None,
        }
    }

    /// An attribute of an object value; a missing attribute of a present
    /// object reads as `Null`. `None` when `self` is not an object.
    pub fn get_attr(&self, name: &str) -> Option<&Value> {
        const NULL: &Value = &Value::Null;
        match self.unwrap_dynamic() {
            Value::Object(m) => Some(m.get(name).unwrap_or(NULL)),
            _ => None,
        }
    }

    /// The type a value implies on its own, used to wrap a bare value placed
    /// in a `dynamic` slot. Primitives, objects and tuples imply their
    /// types; lists, sets and maps do only when non-empty with every
    /// element implying the same type. Nulls and unknowns imply nothing.
    pub fn implied_type(&self) -> Option<Type> {
        match self {
            Value::Null | Value::Unknown => None,
            Value::String(_) => Some(Type::String),
            Value::Number(_) => Some(Type::Number),
            Value::Bool(_) => Some(Type::Bool),
            Value::Dynamic { ty, .. } => Some(ty.clone()),
            Value::Tuple(vs) => vs
                .iter()
                .map(Value::implied_type)
                .collect::<Option<Vec<_>>>()
                .map(Type::Tuple),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| v.implied_type().map(|t| (k.clone(), t)))
                .collect::<Option<BTreeMap<_, _>>>()
                .map(|attrs| Type::Object {
                    attrs,
                    optional: Default::default(),
                }),
            Value::List(vs) | Value::Set(vs) => {
                let t = common_type(vs.iter())?;
                Some(if matches!(self, Value::List(_)) {
                    Type::list(t)
                } else {
                    Type::set(t)
                })
            }
            Value::Map(m) => common_type(m.values()).map(Type::map),
        }
    }

    /// Checks that the value conforms to `ty`, reporting the first place
    /// that does not. Null and unknown conform to every type; object values
    /// may omit attributes (read as null) but not add any.
    pub fn check_type(&self, ty: &Type) -> Result<(), CtyError> {
        check(self, ty, &Path::root(), 0)
    }

    /// Equality that treats sets as unordered collections (each element
    /// matched once), an omitted object attribute as null, and otherwise
    /// like `==`.
    pub fn equivalent(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Set(a), Value::Set(b)) => {
                if a.len() != b.len() {
                    return false;
                }
                let mut used = vec![false; b.len()];
                a.iter().all(|x| {
                    for (i, y) in b.iter().enumerate() {
                        if !used[i] && x.equivalent(y) {
                            used[i] = true;
                            return true;
                        }
                    }
                    false
                })
            }
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equivalent(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.equivalent(vb))
            }
            (Value::Object(a), Value::Object(b)) => {
                let null = Value::Null;
                a.keys().chain(b.keys()).all(|k| {
                    a.get(k)
                        .unwrap_or(&null)
                        .equivalent(b.get(k).unwrap_or(&null))
                })
            }
            (Value::Dynamic { ty: ta, value: va }, Value::Dynamic { ty: tb, value: vb }) => {
                ta == tb && va.equivalent(vb)
            }
            (a, b) => a == b,
        }
    }

    /// A short description of the value's kind for error messages, like
    /// `Value::String`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "Value::Null",
            Value::Unknown => "Value::Unknown",
            Value::String(_) => "Value::String",
            Value::Number(_) => "Value::Number",
            Value::Bool(_) => "Value::Bool",
            Value::List(_) => "Value::List",
            Value::Set(_) => "Value::Set",
            Value::Map(_) => "Value::Map",
            Value::Object(_) => "Value::Object",
            Value::Tuple(_) => "Value::Tuple",
            Value::Dynamic { .. } => "Value::Dynamic",
        }
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<Number> for Value {
    fn from(n: Number) -> Value {
        Value::Number(n)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Number(n.into())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None` becomes [`Value::Null`].
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

fn common_type<'a>(mut vs: impl Iterator<Item = &'a Value>) -> Option<Type> {
    let first = vs.next()?.implied_type()?;
    for v in vs {
        if v.implied_type()? != first {
            return None;
        }
    }
    Some(first)
}

/// How a value that sits in a slot of schema type `ty` is to be treated by
/// the encoders: after unwrapping a dynamic wrapper whose type equals a
/// concrete slot type, or deciding the concrete type for a dynamic slot.
pub(crate) enum Slot<'a> {
    /// Write null / unknown (no type information needed).
    Null,
    /// Write an unknown.
    Unknown,
    /// Write `value` as a value of concrete type `ty`, wrapped with its type
    /// when `wrap` (the slot is `dynamic`).
    Concrete {
        ty: std::borrow::Cow<'a, Type>,
        value: &'a Value,
        wrap: bool,
    },
}

/// Resolves what to write for `value` in a slot of type `ty`. `path` is
/// called only to build an error, so callers need not materialize it.
pub(crate) fn resolve_slot<'a>(
    value: &'a Value,
    ty: &'a Type,
    path: &dyn Fn() -> Path,
) -> Result<Slot<'a>, CtyError> {
    use std::borrow::Cow;
    match (value, ty) {
        (Value::Null, _) => Ok(Slot::Null),
        (Value::Unknown, _) => Ok(Slot::Unknown),
        (
            Value::Dynamic {
                ty: inner_ty,
                value: inner,
            },
            Type::Dynamic,
        ) => {
            if *inner_ty == Type::Dynamic {
                // Degenerate wrapper: treat the inner value as sitting in
                // the dynamic slot directly.
                return resolve_slot(inner, ty, path);
            }
            Ok(Slot::Concrete {
                ty: Cow::Borrowed(inner_ty),
                value: inner,
                wrap: true,
            })
        }
        (
            Value::Dynamic {
                ty: inner_ty,
                value: inner,
            },
            _,
        ) => {
            if inner_ty == ty {
                resolve_slot(inner, ty, path)
            } else {
                Err(CtyError::mismatch(
                    &path(),
                    ty.friendly_name(),
                    format!("Value::Dynamic of type {}", inner_ty.friendly_name()),
                ))
            }
        }
        (v, Type::Dynamic) => match v.implied_type() {
            Some(t) => Ok(Slot::Concrete {
                ty: Cow::Owned(t),
                value: v,
                wrap: true,
            }),
            None => Err(CtyError::invalid(
                &path(),
                format!(
                    "cannot tell the type of this {} in a dynamic slot: wrap it in Value::Dynamic",
                    v.kind_name()
                ),
            )),
        },
        (v, t) => Ok(Slot::Concrete {
            ty: Cow::Borrowed(t),
            value: v,
            wrap: false,
        }),
    }
}

fn check(value: &Value, ty: &Type, path: &Path, depth: usize) -> Result<(), CtyError> {
    if depth > MAX_DEPTH {
        return Err(CtyError::too_deep(path));
    }
    let (ty, value) = match resolve_slot(value, ty, &|| path.clone())? {
        Slot::Null | Slot::Unknown => return Ok(()),
        Slot::Concrete {
            ty,
            value,
            wrap: true,
        } => return check(value, &ty, path, depth + 1),
        Slot::Concrete {
            ty,
            value,
            wrap: false,
        } => (ty, value),
    };
    let mismatch = || CtyError::mismatch(path, ty.friendly_name(), value.kind_name());
    match (&*ty, value) {
        (Type::String, Value::String(_))
        | (Type::Number, Value::Number(_))
        | (Type::Bool, Value::Bool(_)) => Ok(()),
        (Type::List(et), Value::List(vs)) | (Type::Set(et), Value::Set(vs)) => {
            for (i, v) in vs.iter().enumerate() {
                check(v, et, &path.index(i), depth + 1)?;
            }
            Ok(())
        }
        (Type::Map(et), Value::Map(m)) => {
            for (k, v) in m {
                check(v, et, &path.key(k), depth + 1)?;
            }
            Ok(())
        }
        (Type::Tuple(ts), Value::Tuple(vs)) => {
            if ts.len() != vs.len() {
                return Err(CtyError::TupleLength {
                    path: path.clone(),
                    expected: ts.len(),
                    found: vs.len(),
                });
            }
            for (i, (t, v)) in ts.iter().zip(vs).enumerate() {
                check(v, t, &path.index(i), depth + 1)?;
            }
            Ok(())
        }
        (Type::Object { attrs, .. }, Value::Object(m)) => {
            if let Some(extra) = m.keys().find(|k| !attrs.contains_key(*k)) {
                return Err(CtyError::UnsupportedAttribute {
                    path: path.clone(),
                    name: extra.clone(),
                });
            }
            for (k, v) in m {
                if let Some(t) = attrs.get(k) {
                    check(v, t, &path.attr(k), depth + 1)?;
                }
            }
            Ok(())
        }
        _ => Err(mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_type_reports_paths() {
        let ty = Type::object([("disk", Type::list(Type::object([("size", Type::Number)])))]);
        let good = Value::object([(
            "disk",
            Value::List(vec![Value::object([("size", Value::from(3))])]),
        )]);
        good.check_type(&ty).unwrap();
        let bad = Value::object([(
            "disk",
            Value::List(vec![Value::object([("size", Value::from("x"))])]),
        )]);
        let err = bad.check_type(&ty).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at .disk[0].size: expected number, found Value::String"
        );
        let extra = Value::object([("nope", Value::Null)]);
        assert!(matches!(
            extra.check_type(&ty),
            Err(CtyError::UnsupportedAttribute { .. })
        ));
        // Missing attributes are fine.
        Value::object([]).check_type(&ty).unwrap();
        let tuple = Value::Tuple(vec![Value::Null]);
        assert!(matches!(
            tuple.check_type(&Type::tuple([Type::String, Type::String])),
            Err(CtyError::TupleLength {
                expected: 2,
                found: 1,
                ..
            })
        ));
    }

    #[test]
    fn dynamic_slots() {
        let d = Value::dynamic(Type::list(Type::String), Value::List(vec!["a".into()]));
        d.check_type(&Type::Dynamic).unwrap();
        // A wrapper whose type matches a concrete slot is accepted.
        d.check_type(&Type::list(Type::String)).unwrap();
        assert!(d.check_type(&Type::list(Type::Number)).is_err());
        // A bare value in a dynamic slot needs an implied type.
        Value::from("x").check_type(&Type::Dynamic).unwrap();
        assert!(Value::List(vec![]).check_type(&Type::Dynamic).is_err());
        assert_eq!(Value::dynamic(Type::Dynamic, Value::Null), Value::Null);
        assert_eq!(d.as_elements().map(<[Value]>::len), Some(1));
    }

    #[test]
    fn implied_types() {
        assert_eq!(
            Value::object([
                ("a", Value::from(true)),
                ("b", Value::Tuple(vec![Value::from(1)]))
            ])
            .implied_type(),
            Some(Type::object([
                ("a", Type::Bool),
                ("b", Type::tuple([Type::Number]))
            ]))
        );
        assert_eq!(
            Value::Set(vec!["a".into(), "b".into()]).implied_type(),
            Some(Type::set(Type::String))
        );
        assert_eq!(
            Value::List(vec!["a".into(), true.into()]).implied_type(),
            None
        );
        assert_eq!(Value::Map(BTreeMap::new()).implied_type(), None);
    }

    #[test]
    fn equivalence_ignores_set_order() {
        let a = Value::Set(vec!["x".into(), "y".into(), "x".into()]);
        let b = Value::Set(vec!["y".into(), "x".into(), "x".into()]);
        let c = Value::Set(vec!["y".into(), "y".into(), "x".into()]);
        assert!(a.equivalent(&b));
        assert!(!a.equivalent(&c));
        assert_ne!(a, b);
        assert!(Value::object([("a", Value::Null)]).equivalent(&Value::object([])));
        assert!(!Value::object([("a", Value::from(1))]).equivalent(&Value::object([])));
    }

    #[test]
    fn accessors() {
        let o = Value::object([("name", Value::from("vm1")), ("on", Value::from(true))]);
        assert_eq!(o.get_attr("name").and_then(Value::as_str), Some("vm1"));
        assert_eq!(o.get_attr("missing"), Some(&Value::Null));
        assert_eq!(o.get_attr("on").and_then(Value::as_bool), Some(true));
        assert!(Value::from("x").get_attr("a").is_none());
        assert!(!Value::List(vec![Value::Unknown]).is_wholly_known());
        assert!(Value::List(vec![Value::Unknown]).is_known());
        assert!(Value::dynamic(Type::String, Value::Unknown).is_unknown());
        assert_eq!(Value::from(None::<bool>), Value::Null);
        assert_eq!(
            Value::null_object(&Type::object([("a", Type::String)])),
            Value::object([("a", Value::Null)])
        );
    }
}
