//! The `timeouts` block every resource and action with long operations shares: its model, and
//! the limit each operation gets.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::NestedBlock;

/// The `timeouts` block's values; an operation the block lacks is never set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke: Option<String>,
}

/// One operation a `timeouts` block limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    /// An action's run.
    Invoke,
}

impl Operation {
    /// Its attribute in the block.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Invoke => "invoke",
        }
    }
}

/// The block, for the operations given.
pub fn block(operations: &[Operation]) -> NestedBlock {
    let names: Vec<&str> = operations.iter().map(|o| o.name()).collect();
    NestedBlock::timeouts(&names)
}

/// The limit of `op`: the block's value, or `default` when unset (the schema's validator has
/// refused malformed values already).
pub fn limit(block: Option<&Timeouts>, op: Operation, default: Duration) -> Duration {
    let set = block.and_then(|t| match op {
        Operation::Create => t.create.as_deref(),
        Operation::Update => t.update.as_deref(),
        Operation::Delete => t.delete.as_deref(),
        Operation::Invoke => t.invoke.as_deref(),
    });
    set.and_then(|text| crate::units::parse_duration(text).ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fall_back_to_the_default() {
        let t = Timeouts {
            create: Some("2m".into()),
            ..Timeouts::default()
        };
        let d = Duration::from_secs(30 * 60);
        assert_eq!(
            limit(Some(&t), Operation::Create, d),
            Duration::from_secs(120)
        );
        assert_eq!(limit(Some(&t), Operation::Delete, d), d);
        assert_eq!(limit(None, Operation::Invoke, d), d);
    }
}
