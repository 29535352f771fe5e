//! A test VM for backups, shared by the acceptance tests and the backup benchmark (included
//! by both with `#[path]`): powered on, one thin disk, changed block tracking on.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use ceso::vsphere::cbt::flat_extent_of;
use ceso::vsphere::datastore_file::DatastoreFile;
use ceso::vsphere::device::{DeviceChange, Disk, Operation};
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::vm::{ConfigSpec, PowerOp};
use ceso::vsphere::Client;

/// A powered-on VM with one thin disk of `capacity` bytes and CBT on; returns it and its
/// flat extent.
pub async fn make_vm(
    client: &Arc<Client>,
    name: &str,
    capacity: usize,
) -> (ManagedObjectReference, DatastoreFile) {
    let inv = client.inventory().await.unwrap();
    let (_, dc_name, folder) = inv.datacenters[0].clone();
    let host = &inv.hosts[0];
    let pool = inv.pool_of(host).unwrap().clone();
    let ds = inv.datastores[0].name.clone();
    let cancel = CancellationToken::new();
    let spec = ConfigSpec {
        name: Some(name.into()),
        guest_id: Some("otherGuest64".into()),
        vm_path: Some(format!("[{ds}]")),
        num_cpus: Some(2),
        memory_mb: Some(256),
        cbt: Some(true),
        device_changes: vec![
            DeviceChange::ScsiController {
                key: -100,
                bus: 0,
                kind: "ParaVirtualSCSIController".into(),
            },
            DeviceChange::Disk {
                op: Operation::Add,
                disk: Disk {
                    key: -101,
                    controller_key: -100,
                    unit_number: 0,
                    capacity_kb: (capacity / 1024) as i64,
                    file_name: format!("[{ds}]"),
                    thin: true,
                },
                file_op: true,
            },
        ],
        ..ConfigSpec::default()
    };
    let vm = client
        .create_vm(
            &folder.unwrap(),
            &pool,
            Some(&host.obj),
            &spec,
            None,
            &cancel,
        )
        .await
        .unwrap();
    client
        .power_vm(&vm, PowerOp::On, None, &cancel)
        .await
        .unwrap();
    let info = client.vm_info(&vm).await.unwrap();
    assert!(info.cbt, "CBT is on");
    let disk = info.disks().next().unwrap().file_name.clone();
    (vm, flat_extent_of(&dc_name, &disk).unwrap())
}
