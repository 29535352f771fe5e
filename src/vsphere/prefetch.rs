//! Refreshing a fleet in one round trip: the first VM read of a refresh fetches every VM of the
//! endpoint (and the inventory) with one `RetrievePropertiesEx` through the session's view, and
//! the refresh reads of the other VMs are answered from it.
//!
//! Freshness: a snapshot serves reads for [`PREFETCH_TTL`] (a refresh of thousands of VMs fits
//! well inside it), and never for a VM this session has changed since it was taken: any write
//! to a VM marks it, and a write that may change VMs some other way (a host reboot, a snapshot
//! removal, a network change) drops the snapshot. A VM missing from it (created since) is read
//! on its own. Endpoints with more than [`PREFETCH_MAX_VMS`] VMs are not prefetched: their
//! reads stay batched ([`Client::read_batched`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::Client;
use super::error::Result;
use super::inventory::{Inventory, INVENTORY_PROPS};
use super::methods::{CancelRetrievePropertiesEx, Method, RetrievePropertiesEx};
use super::property::{read_result, ObjectContent, ObjectSpec, PropertyFilterSpec, PropertySpec};
use super::types::ManagedObjectReference;
use super::vm::{VmInfo, VM_PATHS};

/// How long a snapshot of every VM serves refresh reads.
pub const PREFETCH_TTL: Duration = Duration::from_secs(30);
/// The most VMs one prefetch reads; larger endpoints are read VM by VM (batched).
pub const PREFETCH_MAX_VMS: u32 = 5_000;

/// The session's snapshot of every VM, and what it may no longer say.
#[derive(Default)]
pub struct VmPrefetch {
    state: Mutex<PrefetchState>,
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct PrefetchState {
    snapshot: Option<(Instant, Arc<HashMap<ManagedObjectReference, ObjectContent>>)>,
    /// VMs this session changed since the last snapshot was started.
    changed: HashSet<ManagedObjectReference>,
    /// Bumped by every write that drops the snapshot, so a fetch under way when it happened
    /// is not kept.
    epoch: u64,
    /// The endpoint has too many VMs to read them all at once.
    too_large: bool,
}

impl VmPrefetch {
    /// Notes a write: to a VM (which the snapshot no longer describes), or one that may change
    /// VMs indirectly (the snapshot is dropped).
    pub(crate) fn note_write<M: Method>(&self, method: &M) {
        let this = method.this();
        let mut st = self.state.lock().expect("lock");
        if this.kind == "VirtualMachine" {
            st.changed.insert(this.clone());
        } else if method.changes_inventory() || this.kind == "VirtualMachineSnapshot" {
            st.snapshot = None;
            st.epoch += 1;
        }
    }

    /// The VM's content from a fresh snapshot, unless this session changed it since.
    fn lookup(&self, vm: &ManagedObjectReference) -> Lookup {
        let st = self.state.lock().expect("lock");
        if st.too_large || st.changed.contains(vm) {
            return Lookup::ReadAlone;
        }
        match &st.snapshot {
            Some((at, all)) if at.elapsed() < PREFETCH_TTL => match all.get(vm) {
                Some(o) => Lookup::Found(Box::new(VmInfo::from_content(o))),
                None => Lookup::ReadAlone,
            },
            _ => Lookup::Fetch,
        }
    }
}

enum Lookup {
    Found(Box<VmInfo>),
    ReadAlone,
    Fetch,
}

impl Client {
    /// A VM as a refresh (or a delete's check) sees it: from the session's snapshot of every VM
    /// of the endpoint, taken by the first such read, when this session has not changed the VM
    /// since; otherwise read (batched with concurrent reads).
    pub async fn vm_info_prefetched(&self, vm: &ManagedObjectReference) -> Result<VmInfo> {
        for _ in 0..2 {
            match self.vm_prefetch().lookup(vm) {
                Lookup::Found(info) => return Ok(*info),
                Lookup::ReadAlone => break,
                Lookup::Fetch => {
                    let _one = self.vm_prefetch().fetch.lock().await;
                    if matches!(self.vm_prefetch().lookup(vm), Lookup::Fetch) {
                        self.prefetch_all().await?;
                    }
                }
            }
        }
        self.vm_info(vm).await
    }

    /// Reads every VM (and the inventory, cached for later) in one round trip.
    async fn prefetch_all(&self) -> Result<()> {
        let root = self.service_content().root_folder.clone();
        let view = self
            .container_view(&root, super::property::SESSION_VIEW_KINDS)
            .await?;
        let mut props: Vec<PropertySpec> = INVENTORY_PROPS
            .iter()
            .map(|(k, paths)| PropertySpec::new(k, paths))
            .collect();
        props.push(PropertySpec::new("VirtualMachine", VM_PATHS));
        let this = self.service_content().property_collector.clone();
        let started = Instant::now();
        let epoch = {
            let mut st = self.vm_prefetch().state.lock().expect("lock");
            st.changed.clear();
            st.epoch
        };
        let first = self
            .call(&RetrievePropertiesEx {
                this: this.clone(),
                spec: PropertyFilterSpec {
                    props,
                    objects: vec![ObjectSpec::view(view)],
                },
                max_objects: Some(PREFETCH_MAX_VMS),
            })
            .await?;
        let (objects, token) = read_result(first)?;
        if let Some(token) = token {
            // Too many to read at once: let the rest go, and read VMs one by one from now on.
            let _ = self.call(&CancelRetrievePropertiesEx { this, token }).await;
            tracing::debug!(
                "more than {PREFETCH_MAX_VMS} objects: refresh reads are not prefetched"
            );
            self.vm_prefetch().state.lock().expect("lock").too_large = true;
            return Ok(());
        }
        let (vms, rest): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|o| o.obj.kind == "VirtualMachine");
        tracing::debug!(vms = vms.len(), elapsed = ?started.elapsed(), "prefetched every VM");
        self.inventory_cache()
            .store(Arc::new(Inventory::from_objects(rest)));
        let all: HashMap<_, _> = vms.into_iter().map(|o| (o.obj.clone(), o)).collect();
        let mut st = self.vm_prefetch().state.lock().expect("lock");
        if st.epoch == epoch {
            st.snapshot = Some((started, Arc::new(all)));
        }
        Ok(())
    }
}
