//! Refreshing a fleet in one round trip: the first VM read of a refresh fetches every VM of the
//! endpoint (and the inventory) with one `RetrievePropertiesEx` through the session's view, and
//! the refresh reads of the other VMs are answered from it.
//!
//! Freshness: a snapshot serves reads for [`PREFETCH_TTL`] (a refresh of thousands of VMs fits
//! well inside it), and never for a VM this session has changed since it was taken: any write
//! to a VM marks it, and a write that may change VMs some other way (a host reboot, a snapshot
//! removal, a network change) drops the snapshot. A VM missing from it (created since) is read
//! on its own. The read is paged, each page kept only as compact VM records; endpoints with
//! more than [`PREFETCH_MAX_OBJECTS`] objects are not prefetched: their reads stay batched
//! ([`Client::read_batched`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::inventory::{Inventory, INVENTORY_PROPS};
use super::methods::Method;
use super::property::{ObjectContent, ObjectSpec, PropertyFilterSpec, PropertySpec};
use super::types::ManagedObjectReference;
use super::vm::{VmInfo, VM_PATHS};

const TOO_MANY: &str = "more objects than a prefetch keeps";

/// How long a snapshot of every VM serves refresh reads.
pub const PREFETCH_TTL: Duration = Duration::from_secs(30);
/// The most objects one prefetch reads; larger endpoints are read VM by VM (batched).
pub const PREFETCH_MAX_OBJECTS: usize = 10_000;
/// Objects per page of a prefetch: each page is turned into compact VM records before the
/// next is read, so memory holds one page of XML at a time.
const PREFETCH_PAGE: u32 = 250;

/// The session's snapshot of every VM, and what it may no longer say.
#[derive(Default)]
pub struct VmPrefetch {
    state: Mutex<PrefetchState>,
    fetch: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct PrefetchState {
    snapshot: Option<(Instant, Arc<HashMap<ManagedObjectReference, VmInfo>>)>,
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
                Some(info) => Lookup::Found(Box::new(info.clone())),
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
        let started = Instant::now();
        let epoch = {
            let mut st = self.vm_prefetch().state.lock().expect("lock");
            st.changed.clear();
            st.epoch
        };
        let mut vms: HashMap<ManagedObjectReference, VmInfo> = HashMap::new();
        let mut rest: Vec<ObjectContent> = Vec::new();
        let spec = PropertyFilterSpec {
            props,
            objects: vec![ObjectSpec::view(view)],
        };
        let read = self
            .retrieve_each(spec, PREFETCH_PAGE, |o| {
                if vms.len() + rest.len() >= PREFETCH_MAX_OBJECTS {
                    return Err(Error::new(ErrorKind::InvalidArgument, TOO_MANY));
                }
                if o.obj.kind == "VirtualMachine" {
                    vms.insert(o.obj.clone(), VmInfo::from_content(&o));
                } else {
                    rest.push(o);
                }
                Ok(())
            })
            .await;
        match read {
            Ok(()) => {}
            Err(e) if e.message == TOO_MANY => {
                // Too many to keep: read VMs one by one from now on.
                tracing::debug!("{TOO_MANY}: refresh reads are not prefetched");
                self.vm_prefetch().state.lock().expect("lock").too_large = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        tracing::debug!(vms = vms.len(), elapsed = ?started.elapsed(), "prefetched every VM");
        self.inventory_cache()
            .store(Arc::new(Inventory::from_objects(rest)));
        let all = vms;
        let mut st = self.vm_prefetch().state.lock().expect("lock");
        if st.epoch == epoch {
            st.snapshot = Some((started, Arc::new(all)));
        }
        Ok(())
    }
}
