//! Walking a value alongside its block schema: shared by config validation and planning.

use crate::cty::Value;

use super::schema::{NestedBlock, Nesting};

/// The null value, for lookups that find nothing.
pub(crate) static NULL: Value = Value::Null;

/// The attribute `name` of an object value, or null.
pub(crate) fn attr<'a>(value: &'a Value, name: &str) -> &'a Value {
    match value {
        Value::Object(attrs) => attrs.get(name).unwrap_or(&NULL),
        _ => &NULL,
    }
}

/// The elements of a nested block's value, each with its path step: list index or map key.
/// Set elements are indexed by their position.
pub(crate) fn block_elements<'a>(nested: &NestedBlock, value: &'a Value) -> Vec<(Elem, &'a Value)> {
    match (nested.nesting, value) {
        (Nesting::Single, v @ Value::Object(_)) => vec![(Elem::Single, v)],
        (Nesting::List | Nesting::Set, Value::List(items) | Value::Set(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Elem::Index(i), v))
            .collect(),
        (Nesting::Map, Value::Map(items)) => items
            .iter()
            .map(|(k, v)| (Elem::Key(k.clone()), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// Where an element of a nested block sits in its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Elem {
    Single,
    Index(usize),
    Key(String),
}

impl Elem {
    /// Extends `path` (already pointing at the block) to this element.
    pub(crate) fn extend(&self, path: &super::path::AttrPath) -> super::path::AttrPath {
        match self {
            Elem::Single => path.clone(),
            Elem::Index(i) => path.join_index(*i),
            Elem::Key(k) => path.join_key(k),
        }
    }

    /// The matching element of another value of the same nested block (prior state, config).
    pub(crate) fn lookup<'a>(&self, nested: &NestedBlock, value: &'a Value) -> &'a Value {
        match (self, value) {
            (Elem::Single, v) => v,
            (Elem::Index(i), Value::List(items)) if nested.nesting == Nesting::List => {
                items.get(*i).unwrap_or(&NULL)
            }
            (Elem::Key(k), Value::Map(items)) => items.get(k).unwrap_or(&NULL),
            _ => &NULL,
        }
    }
}

/// Replaces the element `elem` of nested block value `value` with `new`.
pub(crate) fn set_block_element(value: &mut Value, elem: &Elem, new: Value) {
    match (elem, value) {
        (Elem::Single, v) => *v = new,
        (Elem::Index(i), Value::List(items) | Value::Set(items)) => {
            if let Some(slot) = items.get_mut(*i) {
                *slot = new;
            }
        }
        (Elem::Key(k), Value::Map(items)) => {
            items.insert(k.clone(), new);
        }
        _ => {}
    }
}

/// Sets attribute `name` of an object value.
pub(crate) fn set_attr(value: &mut Value, name: &str, new: Value) {
    if let Value::Object(attrs) = value {
        attrs.insert(name.to_string(), new);
    }
}
