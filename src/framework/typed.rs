//! Typed access to configuration, plan and state values: a schema value converts to and from a
//! plain Rust model struct through serde.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cty::{self, Type, Value};

use super::decode::{DecodeError, Unknowns, ValueDeserializer};
use super::diag::Diagnostics;
use super::tri::UNKNOWN_MARK;

/// Reads a wholly known value into a model struct. Unknown values are an error outside `Tri`
/// fields: call this on configuration only where every value is known (apply time, data
/// source reads).
pub fn from_value<T: DeserializeOwned>(value: &Value, _ty: &Type) -> Result<T, Diagnostics> {
    decode(value, Unknowns::Refuse)
}

/// Reads a planned value (or plan-time configuration) into a model struct: values still
/// unknown read as `None`, or as `Tri::Unknown` in `Tri` fields.
pub fn from_planned<T: DeserializeOwned>(value: &Value, _ty: &Type) -> Result<T, Diagnostics> {
    decode(value, Unknowns::AsNull)
}

fn decode<T: DeserializeOwned>(value: &Value, unknowns: Unknowns) -> Result<T, Diagnostics> {
    serde_path_to_error::deserialize(ValueDeserializer::new(value, unknowns)).map_err(|e| {
        if matches!(e.inner(), DecodeError::NotKnownYet) {
            Diagnostics::from_error(
                "Value not known yet",
                format!("A value needed now is not known yet (at {}).", e.path()),
            )
        } else {
            Diagnostics::from_error(
                "Internal error: model does not fit schema",
                format!("at {}: {}", e.path(), e.inner()),
            )
        }
    })
}

/// Writes a model struct as a value of type `ty`; `Tri::Unknown` fields become unknowns.
pub fn to_value<T: Serialize>(model: &T, ty: &Type) -> Result<Value, Diagnostics> {
    let mut json = serde_json::to_value(model).map_err(|e| {
        Diagnostics::from_error("Internal error: cannot encode model", e.to_string())
    })?;
    let mut unknown = Vec::new();
    take_unknown_marks(&mut json, &mut Vec::new(), &mut unknown);
    let bytes = serde_json::to_vec(&json).map_err(|e| {
        Diagnostics::from_error("Internal error: cannot encode model", e.to_string())
    })?;
    let mut value = cty::from_json(&bytes, ty).map_err(|e| {
        Diagnostics::from_error("Internal error: model does not fit schema", e.to_string())
    })?;
    for path in unknown {
        mark_unknown(&mut value, &path);
    }
    Ok(value)
}

/// One step into a JSON value: an object's key or an array's index.
enum Step {
    Key(String),
    Index(usize),
}

/// Replaces each unknown mark in `json` by null, noting where it was.
fn take_unknown_marks(
    json: &mut serde_json::Value,
    here: &mut Vec<Step>,
    out: &mut Vec<Vec<Step>>,
) {
    match json {
        serde_json::Value::String(s) if s == UNKNOWN_MARK => {
            *json = serde_json::Value::Null;
            out.push(here.iter().map(Step::clone_step).collect());
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                here.push(Step::Index(i));
                take_unknown_marks(item, here, out);
                here.pop();
            }
        }
        serde_json::Value::Object(items) => {
            for (k, item) in items.iter_mut() {
                here.push(Step::Key(k.clone()));
                take_unknown_marks(item, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

impl Step {
    fn clone_step(&self) -> Step {
        match self {
            Step::Key(k) => Step::Key(k.clone()),
            Step::Index(i) => Step::Index(*i),
        }
    }
}

/// Sets the value at `path` to unknown.
fn mark_unknown(value: &mut Value, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else {
        *value = Value::Unknown;
        return;
    };
    let next = match (value, first) {
        (Value::Object(items) | Value::Map(items), Step::Key(k)) => items.get_mut(k),
        (Value::List(items) | Value::Set(items) | Value::Tuple(items), Step::Index(i)) => {
            items.get_mut(*i)
        }
        (Value::Dynamic { value, .. }, _) => return mark_unknown(value, path),
        _ => None,
    };
    if let Some(next) = next {
        mark_unknown(next, rest);
    }
}

/// The attribute `name` of an object value, or null.
pub fn get_attr<'a>(value: &'a Value, name: &str) -> &'a Value {
    super::walk::attr(value, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Model {
        name: String,
        count: Option<i64>,
    }

    #[test]
    fn model_round_trips_through_value() {
        let ty = Type::object([("name", Type::String), ("count", Type::Number)]);
        let m = Model {
            name: "web".into(),
            count: None,
        };
        let v = to_value(&m, &ty).unwrap();
        assert_eq!(get_attr(&v, "count"), &Value::Null);
        assert_eq!(from_value::<Model>(&v, &ty).unwrap(), m);
    }

    #[test]
    fn unknown_tri_fields_round_trip() {
        use super::super::tri::Tri;
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Planned {
            name: Tri<String>,
            ips: Tri<Vec<String>>,
            disks: Vec<Disk>,
        }
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Disk {
            size: Tri<i64>,
        }
        let ty = Type::object([
            ("name", Type::String),
            ("ips", Type::List(Box::new(Type::String))),
            (
                "disks",
                Type::List(Box::new(Type::object([("size", Type::Number)]))),
            ),
        ]);
        let m = Planned {
            name: Tri::Known("web".into()),
            ips: Tri::Unknown,
            disks: vec![
                Disk { size: Tri::Unknown },
                Disk {
                    size: Tri::Known(4),
                },
            ],
        };
        let v = to_value(&m, &ty).unwrap();
        assert_eq!(get_attr(&v, "ips"), &Value::Unknown);
        assert_eq!(from_planned::<Planned>(&v, &ty).unwrap(), m);
    }
}
