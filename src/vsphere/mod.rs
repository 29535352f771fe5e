//! The vSphere SOAP client, with no Terraform types: transport and TLS policy, envelopes,
//! typed faults, data objects, methods, and the logged-in session every resource uses.
//!
//! Architecture invariant: nothing here imports `framework` or `protocol`; errors are typed
//! [`Error`]s, turned into diagnostics only at the provider edge.

pub mod capacity;
pub mod cbt;
pub mod client;
pub mod datastore_file;
pub mod device;
pub mod error;
pub mod finder;
pub mod inventory;
pub mod network;
pub mod ovf;
pub mod pci;
pub mod prefetch;
pub mod secret;
pub mod snapshot;
pub mod tagging;
pub mod tls;
pub mod transfer;
pub mod types;
pub mod vm;
pub mod wait;
pub mod wire;

pub use wire::{batch, envelope, methods, property, task, transport, xml};

pub use client::{Client, ConnectConfig};
pub use error::{Error, ErrorKind};
pub use secret::Secret;
pub use tls::TlsPolicy;

#[cfg(test)]
mod fixtures_test;
