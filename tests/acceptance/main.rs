//! Acceptance tests: the real Terraform CLI and VMware's simulator against the built provider,
//! plus protocol tests that drive the spawned binary with a gRPC client through the real
//! go-plugin handshake (AutoMTLS on). Slow suites run when `TF_ACC=1` (CI sets it).

mod backup;
mod backup_job;
#[path = "../support/cbt_vm.rs"]
mod cbt_vm;
mod chaos;
mod cli;
mod disks;
mod endpoint;
mod fleet;
mod harness;
mod hooks;
mod pci;
mod placement;
mod protocol;
mod snapshot;
mod transfers;
mod vlan;
mod vm;
mod vm_move;
mod vsphere_client;
