//! The provider's data sources, one module each.

pub mod endpoint;
pub mod pci_devices;
pub mod placement;
pub mod snapshots;
