//! ceso: a Terraform/OpenTofu provider for VMware ESXi and vCenter, with hot backups.
//!
//! See `ARCHITECTURE.md` for the code map and the import rules between layers.

pub mod actions;
pub mod adapters;
pub mod cty;
pub mod data_sources;
pub mod docs;
pub mod engine;
pub mod framework;
pub mod machine;
pub mod memory;
pub mod pci_ids;
pub mod protocol;
pub mod provider;
pub mod resources;
pub mod session;
pub mod units;
pub mod vsphere;
