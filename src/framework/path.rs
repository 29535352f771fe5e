//! Attribute paths: where in a configuration a value or a diagnostic lives.

use std::fmt;

/// One step of an [`AttrPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// An attribute (or nested block) of an object, by name.
    Attr(String),
    /// An element of a map, by key.
    Key(String),
    /// An element of a list or tuple, by index.
    Index(i64),
}

/// A path from the root of a schema's object to one value, e.g. `disk[0].size_gb`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AttrPath(pub Vec<Step>);

impl AttrPath {
    /// The empty path: the whole object.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A path to a top-level attribute.
    pub fn attr(name: &str) -> Self {
        Self(vec![Step::Attr(name.to_string())])
    }

    /// This path extended by an attribute step.
    pub fn join_attr(&self, name: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Attr(name.to_string()));
        Self(steps)
    }

    /// This path extended by a list index step.
    pub fn join_index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index as i64));
        Self(steps)
    }

    /// This path extended by a map key step.
    pub fn join_key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        Self(steps)
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Attr(name) if i == 0 => write!(f, "{name}")?,
                Step::Attr(name) => write!(f, ".{name}")?,
                Step::Key(key) => write!(f, "[{key:?}]")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_hcl() {
        let p = AttrPath::attr("disk").join_index(0).join_attr("size_gb");
        assert_eq!(p.to_string(), "disk[0].size_gb");
        assert_eq!(
            AttrPath::attr("tags").join_key("env").to_string(),
            "tags[\"env\"]"
        );
    }
}
