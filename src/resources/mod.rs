//! The provider's managed resources, one module each (`mod.rs` CRUD, `model.rs` state <-> API,
//! `schema.rs`).

pub mod backup_job;
pub mod pci_passthrough;
pub mod snapshot;
pub mod vlan;
pub mod vm;
