//! Engines: long-running work built on the lower layers (`vsphere`), never on `framework`.

pub mod backup;
pub mod placement;
pub mod schedule;
