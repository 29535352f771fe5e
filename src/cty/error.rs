//! Errors raised by the cty codecs, and the attribute [`Path`] that says where
//! inside a value (or a type description) each error happened.

use std::fmt;

/// One step of a [`Path`] into a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathStep {
    /// An object attribute, shown as `.name`.
    Attr(String),
    /// A list, set or tuple element by position, shown as `[3]`.
    Index(u64),
    /// A map element (or a JSON object member in a type description), shown
    /// as `["key"]`.
    Key(String),
}

/// Where inside a value something happened: a sequence of steps from the
/// root, shown like `.disk[0].size` or `.tags["env"]`; the root itself is
/// shown as `(root)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(pub Vec<PathStep>);

impl Path {
    /// The empty path, naming the root value.
    pub fn root() -> Path {
        Path(Vec::new())
    }

    /// True when this path names the root value.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps of this path, outermost first.
    pub fn steps(&self) -> &[PathStep] {
        &self.0
    }

    /// A copy of this path extended by one step.
    pub fn child(&self, step: PathStep) -> Path {
        let mut steps = self.0.clone();
        steps.push(step);
        Path(steps)
    }

    /// A copy of this path extended by an attribute step.
    pub fn attr(&self, name: &str) -> Path {
        self.child(PathStep::Attr(name.to_owned()))
    }

    /// A copy of this path extended by an element-index step.
    pub fn index(&self, i: usize) -> Path {
        self.child(PathStep::Index(i as u64))
    }

    /// A copy of this path extended by a map-key step.
    pub fn key(&self, k: &str) -> Path {
        self.child(PathStep::Key(k.to_owned()))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for step in &self.0 {
            match step {
                PathStep::Attr(name) => write!(f, ".{name}")?,
                PathStep::Index(i) => write!(f, "[{i}]")?,
                PathStep::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong while checking, encoding or decoding cty
/// values and types. Every variant that concerns a spot inside a value
/// carries the [`Path`] to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CtyError {
    /// The input (or a Rust value being encoded) has another shape than the
    /// type asks for.
    #[error("at {path}: expected {expected}, found {found}")]
    Mismatch {
        /// Where the mismatch is.
        path: Path,
        /// What the type demanded, e.g. `number` or `list of string`.
        expected: String,
        /// What was actually there, e.g. `msgpack str` or `Value::Bool`.
        found: String,
    },
    /// The input ended in the middle of a value.
    #[error("at {path}: input ends in the middle of {what}")]
    Truncated {
        /// Where reading stopped.
        path: Path,
        /// What was being read.
        what: String,
    },
    /// An object carried an attribute its type does not declare.
    #[error("at {path}: unsupported attribute {name:?}: the object type has no such attribute")]
    UnsupportedAttribute {
        /// The path of the object.
        path: Path,
        /// The offending attribute name.
        name: String,
    },
    /// A map or object repeated a key.
    #[error("at {path}: duplicate key {key:?}")]
    DuplicateKey {
        /// The path of the map or object.
        path: Path,
        /// The repeated key.
        key: String,
    },
    /// A tuple had the wrong number of elements.
    #[error("at {path}: expected a tuple of {expected} elements, found {found}")]
    TupleLength {
        /// The path of the tuple.
        path: Path,
        /// How many elements the tuple type has.
        expected: usize,
        /// How many the input had.
        found: usize,
    },
    /// A number could not be parsed or cannot be represented.
    #[error("at {path}: invalid number {text:?}: {reason}")]
    InvalidNumber {
        /// Where the number is.
        path: Path,
        /// The offending text (shortened when long).
        text: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An unknown value was given to the JSON encoder, which cannot
    /// represent unknowns.
    #[error("at {path}: unknown values cannot be encoded as JSON")]
    UnknownInJson {
        /// Where the unknown value is.
        path: Path,
    },
    /// The input nests deeper than [`MAX_DEPTH`](super::MAX_DEPTH) levels.
    #[error("at {path}: nesting exceeds the limit of {limit} levels")]
    TooDeep {
        /// Where the limit was hit.
        path: Path,
        /// The limit.
        limit: usize,
    },
    /// Bytes were left after a complete value.
    #[error("{count} unexpected bytes after the end of the value")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The input is not syntactically valid JSON.
    #[error("invalid JSON: {message}")]
    JsonSyntax {
        /// The parser's message.
        message: String,
    },
    /// A type description (cty's type JSON) is malformed. The path points
    /// into the JSON document, e.g. `[1]["disk"]`.
    #[error("invalid type description at {path}: {reason}")]
    InvalidType {
        /// Where in the type JSON the problem is.
        path: Path,
        /// What is wrong.
        reason: String,
    },
    /// Any other malformed input, described by `reason`.
    #[error("at {path}: {reason}")]
    Invalid {
        /// Where the problem is.
        path: Path,
        /// What is wrong.
        reason: String,
    },
}

impl CtyError {
    /// The path inside the value (or type description) that the error
    /// concerns, when it has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CtyError::Mismatch { path, .. }
            | CtyError::Truncated { path, .. }
            | CtyError::UnsupportedAttribute { path, .. }
            | CtyError::DuplicateKey { path, .. }
            | CtyError::TupleLength { path, .. }
            | CtyError::InvalidNumber { path, .. }
            | CtyError::UnknownInJson { path }
            | CtyError::TooDeep { path, .. }
            | CtyError::InvalidType { path, .. }
            | CtyError::Invalid { path, .. } => Some(path),
            CtyError::TrailingBytes { .. } | CtyError::JsonSyntax { .. } => None,
        }
    }

    /// Shorthand for [`CtyError::Mismatch`].
    pub(crate) fn mismatch(
        path: &Path,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        CtyError::Mismatch {
            path: path.clone(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// Shorthand for [`CtyError::Invalid`].
    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        CtyError::Invalid {
            path: path.clone(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`CtyError::TooDeep`] with the module's limit.
    pub(crate) fn too_deep(path: &Path) -> Self {
        CtyError::TooDeep {
            path: path.clone(),
            limit: super::MAX_DEPTH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let p = Path::root().attr("disk").index(0).attr("size");
        assert_eq!(p.to_string(), ".disk[0].size");
        let p = Path::root().attr("tags").key("env \"x\"");
        assert_eq!(p.to_string(), ".tags[\"env \\\"x\\\"\"]");
        assert_eq!(Path::root().to_string(), "(root)");
    }

    #[test]
    fn error_messages_name_the_path() {
        let e = CtyError::mismatch(
            &Path::root().attr("disk").index(0).attr("size"),
            "number",
            "msgpack str",
        );
        assert_eq!(
            e.to_string(),
            "at .disk[0].size: expected number, found msgpack str"
        );
        assert_eq!(e.path().map(|p| p.steps().len()), Some(3));
        assert!(CtyError::TrailingBytes { count: 1 }.path().is_none());
    }
}
