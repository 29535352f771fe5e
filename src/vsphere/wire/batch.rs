//! Coalesced reads: when Terraform refreshes many objects in parallel, each single-object read
//! waits a few milliseconds for company (and for the batch in flight, if any), and the whole
//! group is fetched with one `RetrievePropertiesEx`. Nothing is kept after a batch is answered, so a read never returns
//! data older than its own request (no invalidation on writes is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::vsphere::client::Client;
use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::property::{ObjectContent, ObjectSpec, PropertyFilterSpec, PropertySpec};
use crate::vsphere::types::ManagedObjectReference;

/// How long the first read of a batch waits for others.
pub const BATCH_WINDOW: Duration = Duration::from_millis(3);

/// Reads waiting to be fetched together.
#[derive(Default)]
pub struct ReadBatcher {
    state: Mutex<BatchState>,
    /// Held while a batch is fetched: the next batch gathers until it is done (group commit),
    /// so under load each round trip carries every read that arrived during the last one.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct BatchState {
    pending: Vec<Pending>,
    leader: bool,
}

struct Pending {
    obj: ManagedObjectReference,
    paths: Vec<String>,
    tx: oneshot::Sender<Result<ObjectContent>>,
}

/// Hands the pending reads back (dropping their senders, so followers fall back to reading
/// alone) if the leading read is cancelled before it fetched them.
struct LeaderGuard<'a> {
    batcher: &'a ReadBatcher,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.batcher.state.lock().expect("lock");
            st.leader = false;
            st.pending.clear();
        }
    }
}

impl Client {
    /// Properties `paths` of `obj`, fetched together with the other reads made within
    /// [`BATCH_WINDOW`]. A deleted object is `ErrorKind::NotFound`.
    pub async fn read_batched(
        &self,
        obj: &ManagedObjectReference,
        paths: &[&str],
    ) -> Result<ObjectContent> {
        let batcher = self.read_batcher();
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut st = batcher.state.lock().expect("lock");
            st.pending.push(Pending {
                obj: obj.clone(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                tx,
            });
            !std::mem::replace(&mut st.leader, true)
        };
        if lead {
            let mut guard = LeaderGuard {
                batcher,
                armed: true,
            };
            tokio::time::sleep(BATCH_WINDOW).await;
            let _fetching = batcher.fetching.lock().await;
            let batch = {
                let mut st = batcher.state.lock().expect("lock");
                st.leader = false;
                std::mem::take(&mut st.pending)
            };
            guard.armed = false;
            self.fetch_batch(batch).await;
        }
        match rx.await {
            Ok(result) => result,
            // The leader was cancelled: read alone.
            Err(_) => self.properties(obj, paths).await,
        }
    }

    async fn fetch_batch(&self, batch: Vec<Pending>) {
        let mut paths_by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut objects: Vec<ManagedObjectReference> = Vec::new();
        for p in &batch {
            paths_by_kind
                .entry(p.obj.kind.clone())
                .or_default()
                .extend(p.paths.iter().cloned());
            if !objects.contains(&p.obj) {
                objects.push(p.obj.clone());
            }
        }
        tracing::debug!(objects = objects.len(), reads = batch.len(), "batched read");
        let spec = PropertyFilterSpec {
            props: paths_by_kind
                .into_iter()
                .map(|(kind, paths)| PropertySpec {
                    kind,
                    paths: paths.into_iter().collect(),
                    all: false,
                })
                .collect(),
            objects: objects.into_iter().map(ObjectSpec::object).collect(),
        };
        match self.retrieve(spec).await {
            Ok(results) => {
                let by_obj: std::collections::HashMap<&ManagedObjectReference, &ObjectContent> =
                    results.iter().map(|o| (&o.obj, o)).collect();
                for p in batch {
                    let found = by_obj.get(&p.obj).map(|o| (*o).clone());
                    let _ = p.tx.send(found.ok_or_else(|| {
                        Error::new(ErrorKind::NotFound, format!("{} does not exist", p.obj))
                    }));
                }
            }
            // One deleted object fails the whole call: read each one alone to tell which.
            Err(e) if e.is_not_found() && batch.len() > 1 => {
                let reads = batch.into_iter().map(|p| async move {
                    let paths: Vec<&str> = p.paths.iter().map(String::as_str).collect();
                    let _ = p.tx.send(self.properties(&p.obj, &paths).await);
                });
                futures::future::join_all(reads).await;
            }
            Err(e) => {
                for p in batch {
                    let _ = p.tx.send(Err(e.clone()));
                }
            }
        }
    }
}
