//! Typed access to configuration, plan and state values: a schema value converts to and from a
//! plain Rust model struct through serde, and a few parsers for common attribute formats.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cty::{self, Type, Value};

use super::diag::Diagnostics;

/// Reads a wholly known value of type `ty` into a model struct. Unknown values are an error:
/// call this on configuration only where every value is known (apply time, data source reads).
pub fn from_value<T: DeserializeOwned>(value: &Value, ty: &Type) -> Result<T, Diagnostics> {
    let json = cty::to_json(value, ty).map_err(|e| {
        Diagnostics::from_error(
            "Value not known yet",
            format!("A value needed now is not known yet or malformed: {e}"),
        )
    })?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        Diagnostics::from_error(
            "Internal error: model does not fit schema",
            format!("at {}: {}", e.path(), e.inner()),
        )
    })
}

/// Reads a planned value into a model struct: values still unknown (computed ones the apply
/// will set) read as `None`.
pub fn from_planned<T: DeserializeOwned>(value: &Value, ty: &Type) -> Result<T, Diagnostics> {
    from_value(&unknown_to_null(value), ty)
}

/// `value` with every unknown replaced by null.
pub fn unknown_to_null(value: &Value) -> Value {
    match value {
        Value::Unknown => Value::Null,
        Value::List(items) => Value::List(items.iter().map(unknown_to_null).collect()),
        Value::Set(items) => Value::Set(items.iter().map(unknown_to_null).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(unknown_to_null).collect()),
        Value::Map(items) => Value::Map(
            items
                .iter()
                .map(|(k, v)| (k.clone(), unknown_to_null(v)))
                .collect(),
        ),
        Value::Object(items) => Value::Object(
            items
                .iter()
                .map(|(k, v)| (k.clone(), unknown_to_null(v)))
                .collect(),
        ),
        Value::Dynamic { ty, value } => Value::Dynamic {
            ty: ty.clone(),
            value: Box::new(unknown_to_null(value)),
        },
        other => other.clone(),
    }
}

/// Writes a model struct as a value of type `ty`.
pub fn to_value<T: Serialize>(model: &T, ty: &Type) -> Result<Value, Diagnostics> {
    let json = serde_json::to_vec(model).map_err(|e| {
        Diagnostics::from_error("Internal error: cannot encode model", e.to_string())
    })?;
    cty::from_json(&json, ty).map_err(|e| {
        Diagnostics::from_error("Internal error: model does not fit schema", e.to_string())
    })
}

/// The attribute `name` of an object value, or null.
pub fn get_attr<'a>(value: &'a Value, name: &str) -> &'a Value {
    super::walk::attr(value, name)
}

/// The longest duration an attribute takes: 8760h (365 days). Longer ones are refused rather
/// than risking overflow where they are added to a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a Go-style duration: a sequence of numbers with units `ms`, `s`, `m`, `h`
/// (e.g. `"1h30m"`, `"90s"`, `"1.5s"`), at most [`MAX_DURATION`]. Never panics: a value too
/// large for any arithmetic is an error like any other malformed one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    let too_long = || {
        format!(
            "longer than the maximum of {}h (365 days)",
            MAX_DURATION.as_secs() / 3600
        )
    };
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?}"))?;
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad number {:?}", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?}")),
        };
        total += number * seconds;
        // Checked on every term: a long number parses to a huge (or infinite) float.
        if !total.is_finite() || total > MAX_DURATION.as_secs_f64() {
            return Err(too_long());
        }
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| too_long())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn refuses_huge_durations_without_panicking() {
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        for huge in [
            "8760h1s",
            "99999999999999999999h",
            "1000000000000000000000000000000000000000000s",
            &format!("{}s", "9".repeat(400)),
            "18446744073709551616s",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("maximum of 8760h"), "{huge}: {e}");
        }
    }

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
}
