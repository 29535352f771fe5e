//! The cty value model and its codecs: the data format Terraform uses on the
//! plugin protocol (tfplugin5 `DynamicValue.msgpack` / `.json`) and the JSON
//! type descriptions in schema `type` fields.
//!
//! - [`Type`] is a cty type, with [`Type::to_json_bytes`] /
//!   [`Type::from_json_bytes`] for its JSON description.
//! - [`Value`] is a value (null, unknown, primitives, collections,
//!   structural values, and [`Value::Dynamic`] for `dynamic` slots), with
//!   [`Number`] as an exact decimal.
//! - [`to_msgpack`] / [`from_msgpack`] and [`to_json`] / [`from_json`]
//!   encode and decode a value against a type, as go-cty does.
//! - [`CtyError`] says what was expected and where ([`Path`], shown like
//!   `.disk[0].size`).
//!
//! Decoding never panics and refuses input nesting deeper than
//! [`MAX_DEPTH`] levels, so hostile input cannot exhaust the stack.

pub mod error;
pub mod json;
pub mod msgpack;
pub mod number;
pub mod types;
pub mod value;

#[cfg(test)]
pub(crate) mod testgen;

pub use error::{CtyError, Path, PathStep};
pub use json::{from_json, from_json_value, to_json};
pub use msgpack::{from_msgpack, to_msgpack};
pub use number::Number;
pub use types::Type;
pub use value::Value;

/// The deepest nesting of values (containers and dynamic wrappers) and of
/// type descriptions that the codecs accept. serde_json itself refuses JSON
/// documents nested deeper than 128 levels.
pub const MAX_DEPTH: usize = 128;
