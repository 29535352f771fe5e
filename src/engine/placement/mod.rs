//! VM placement: an inventory snapshot and a request in, a decision out. Pure: no I/O, no
//! async, no vSphere or framework types, so it is unit-tested and benchmarked on its own; the
//! data source reads the inventory and hands it over.
//!
//! - [`model`]: the inventory, the request and the decision (serde types).
//! - `index` (private): the inventory numbered in host-name order and pre-indexed, plus
//!   the ledger of committed placements.
//! - [`filter`]: the hard constraints, each with a reason that carries numbers.
//! - [`score`]: the soft criteria (0–100 each) and the strategies' weights.
//! - [`place`]: one decision: filter, score, rank (ties by host name), explain, summarise.
//! - [`batch`]: requests placed in order, each seeing the ones before (Terraform `count`).
//! - [`rebalance`]: DRS-style moves that lower the standard deviation of host load.
//!
//! # Capacity model
//!
//! A VM needs `cpus × per_vcpu_mhz` MHz, `memory_mib` MiB and `disk_gib` GiB on one datastore
//! the host sees. A host offers `floor(capacity × ratio)` of CPU and of memory (the request's
//! over-commit ratios, 4 and 1 by default) minus what is already used; a datastore offers its
//! free space. Results never depend on the order the inventory lists hosts, datastores,
//! networks or devices in.

pub mod batch;
pub mod error;
pub mod filter;
mod index;
pub mod model;
pub mod place;
pub mod rebalance;
pub mod score;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use batch::{place_batch, BatchDecision};
pub use error::Error;
pub use filter::Filter;
pub use model::{
    allocatable, Candidate, ConnectionState, Datastore, DatastorePreference, Decision, Fleet,
    GpuRequest, Headroom, Host, HostNetwork, NetworkRequirement, PciDevice, Placement,
    PlacementRequest, Rejection, Strategy, VgpuProfile, Vm,
};
pub use place::{place, Placer};
pub use rebalance::{rebalance, HostLoad, Move, RebalanceOptions, RebalancePlan};
pub use score::{ScoreBreakdown, Weights};
