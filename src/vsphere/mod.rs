//! The vSphere SOAP client, with no Terraform types: transport and TLS policy, envelopes,
//! typed faults, data objects, methods, and the logged-in session every resource uses.
//!
//! Architecture invariant: nothing here imports `framework` or `protocol`; errors are typed
//! [`Error`]s, turned into diagnostics only at the provider edge.

pub mod client;
pub mod envelope;
pub mod error;
pub mod methods;
pub mod secret;
pub mod tls;
pub mod transport;
pub mod types;

pub use client::{Client, ConnectConfig};
pub use error::{Error, ErrorKind};
pub use secret::Secret;
pub use tls::TlsPolicy;
