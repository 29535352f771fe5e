//! The wire plumbing of the vSphere client: HTTP transport and retries (`transport`), SOAP
//! envelopes and faults (`envelope`), the XML tree of dynamic data (`xml`), method
//! descriptions (`methods`), the PropertyCollector (`property`) and its coalesced reads
//! (`batch`), and task waits (`task`). The managed-object helpers beside `wire` (VMs, hosts,
//! networks, snapshots, files, OVF, ...) are written on top of it; `vsphere` re-exports these
//! modules under their old paths.

pub mod batch;
pub mod envelope;
pub mod methods;
pub mod property;
pub mod task;
pub mod transport;
pub mod xml;
