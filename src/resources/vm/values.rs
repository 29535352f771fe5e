//! Reading plan and config values without a model: a number, a string, a list's elements.

use crate::cty::Value;

/// A whole number, when the value is one.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.to_i64(),
        _ => None,
    }
}

/// A string, when the value is one (not null or unknown).
pub fn string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// A list's elements; none for anything else (null, unknown).
pub fn elements(v: &Value) -> &[Value] {
    match v {
        Value::List(items) => items,
        _ => &[],
    }
}
