//! The placement engine's one error type: input it cannot work with. A request that no host
//! fits is not an error; it is a [`Decision`](super::Decision) without a placement.

/// An inventory or request the engine rejects as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two hosts share a name.
    #[error("the inventory lists host {0:?} twice")]
    DuplicateHost(String),
    /// Two datastores share a name.
    #[error("the inventory lists datastore {0:?} twice")]
    DuplicateDatastore(String),
    /// A request field is out of range or contradicts another.
    #[error("invalid placement request {request:?}: {field} {reason}")]
    InvalidRequest {
        /// The request's name.
        request: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A rebalancing option is out of range.
    #[error("invalid rebalancing option {field}: {reason}")]
    InvalidOptions {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
