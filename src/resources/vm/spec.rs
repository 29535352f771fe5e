//! `ceso_vm`'s specs: the settings every create, clone and update applies the same way, the
//! device diff that takes a VM's disks and NICs from what vSphere has to the plan, and
//! whether a change needs the VM powered off.

use crate::framework::{AttrPath, Diagnostics};
use crate::vsphere::device::{Device, DeviceChange, Disk, Nic, NicBacking, Operation};
use crate::vsphere::inventory::{Inventory, NetworkRef};
use crate::vsphere::vm::{ConfigSpec, VmInfo};

use super::model::{self, DiskModel, VmModel};

/// Key of the SCSI controller ceso adds to a new VM.
pub(super) const CONTROLLER_KEY: i32 = -100;
/// Reserved SCSI unit (the controller itself).
pub(super) const SCSI_RESERVED_UNIT: i64 = 7;

/// The NIC backing for a configured network.
pub(super) fn nic_backing(
    inv: &Inventory,
    network: &str,
    index: usize,
) -> Result<NicBacking, Diagnostics> {
    match inv.network(network) {
        Ok(NetworkRef::Standard { name, .. }) => Ok(NicBacking::Network { name: name.clone() }),
        Ok(NetworkRef::Distributed {
            key, switch_uuid, ..
        }) => Ok(NicBacking::Distributed {
            switch_uuid: switch_uuid.clone(),
            portgroup_key: key.clone(),
        }),
        Err(e) => Err(Diagnostics::from_attr_error(
            AttrPath::attr("network_interface")
                .join_index(index)
                .join_attr("network"),
            "Unknown network",
            e.message,
        )),
    }
}

/// The next free SCSI unit numbers, skipping the reserved 7.
pub(super) fn assign_units(disks: &[DiskModel], taken: &[i64]) -> Vec<i64> {
    let mut used: Vec<i64> = taken.to_vec();
    used.extend(disks.iter().filter_map(|d| d.unit_number));
    disks
        .iter()
        .map(|d| {
            d.unit_number.unwrap_or_else(|| {
                let u = (0..64)
                    .find(|u| *u != SCSI_RESERVED_UNIT && !used.contains(u))
                    .unwrap_or(63);
                used.push(u);
                u
            })
        })
        .collect()
}

/// The cloud_init block, if there is one (an absent block is an empty list or null).
pub(super) fn cloud_init_of(m: &VmModel) -> Option<&model::CloudInitModel> {
    m.cloud_init.as_ref().and_then(|c| c.first())
}

/// Settings every create, clone and update applies the same way.
pub(super) fn settings_spec(plan: &VmModel, prior: Option<&VmModel>) -> ConfigSpec {
    let changed = |f: fn(&VmModel) -> Option<i64>| -> Option<i64> {
        let want = f(plan)?;
        (prior.and_then(f) != Some(want)).then_some(want)
    };
    let changed_b = |f: fn(&VmModel) -> Option<bool>| -> Option<bool> {
        let want = f(plan)?;
        (prior.and_then(f) != Some(want)).then_some(want)
    };
    let alloc = |r: fn(&VmModel) -> Option<i64>, l: fn(&VmModel) -> Option<i64>| {
        let (want_r, want_l) = (r(plan), l(plan));
        let differs = prior.is_none_or(|p| r(p) != want_r || l(p) != want_l);
        (differs && (want_r.is_some() || want_l.is_some()))
            .then(|| (want_r.unwrap_or(0), want_l.unwrap_or(-1)))
    };
    let mut extra: Vec<(String, String)> = Vec::new();
    let want = plan.extra_config.clone().unwrap_or_default();
    let had = prior
        .and_then(|p| p.extra_config.clone())
        .unwrap_or_default();
    for (k, v) in &want {
        if had.get(k) != Some(v) {
            extra.push((k.clone(), v.clone()));
        }
    }
    for k in had.keys().filter(|k| !want.contains_key(*k)) {
        extra.push((k.clone(), String::new()));
    }
    let group_key = crate::vsphere::vm::GROUP_KEY;
    if prior.is_none_or(|p| p.anti_affinity_group != plan.anti_affinity_group)
        && (prior.is_some() || plan.anti_affinity_group.is_some())
    {
        extra.push((
            group_key.to_string(),
            plan.anti_affinity_group.clone().unwrap_or_default(),
        ));
    }
    if prior.is_none_or(|p| cloud_init_of(p) != cloud_init_of(plan)) {
        extra.extend(
            plan.cloud_init_entries()
                .into_iter()
                .filter(|(_, v)| prior.is_some() || !v.is_empty()),
        );
    }
    ConfigSpec {
        guest_id: plan
            .guest_id
            .clone()
            .filter(|g| prior.and_then(|p| p.guest_id.as_ref()) != Some(g)),
        annotation: plan
            .annotation
            .clone()
            .filter(|a| prior.and_then(|p| p.annotation.as_ref()) != Some(a)),
        num_cpus: changed(|m| m.num_cpus),
        cores_per_socket: changed(|m| m.cores_per_socket),
        memory_mb: changed(|m| m.memory_mb),
        memory_hot_add: changed_b(|m| m.memory_hot_add),
        cpu_hot_add: changed_b(|m| m.cpu_hot_add),
        cpu_allocation: alloc(|m| m.cpu_reservation_mhz, |m| m.cpu_limit_mhz),
        memory_allocation: alloc(|m| m.memory_reservation_mb, |m| m.memory_limit_mb),
        extra_config: extra,
        cbt: changed_b(|m| m.enable_cbt),
        firmware: plan
            .firmware
            .clone()
            .filter(|f| prior.and_then(|p| p.firmware.as_ref()) != Some(f)),
        ..ConfigSpec::default()
    }
}

/// The spec of a new VM named as planned in `[datastore]`, built around disks copied from
/// `source`: what the plan leaves unset (guest OS, vCPUs, memory, firmware) comes from it.
pub(super) fn spec_around(plan: &VmModel, source: &VmInfo, datastore: &str) -> ConfigSpec {
    let mut spec = settings_spec(plan, None);
    spec.name = Some(plan.name.clone());
    spec.vm_path = Some(format!("[{datastore}]"));
    spec.guest_id = spec.guest_id.or(Some(source.guest_id.clone()));
    spec.num_cpus = spec.num_cpus.or(Some(source.num_cpus));
    spec.memory_mb = spec.memory_mb.or(Some(source.memory_mb));
    spec.firmware = spec.firmware.or(Some(source.firmware.clone()));
    spec
}

/// Device changes that take the VM's disks and NICs from `info` to `plan`.
pub(super) fn device_changes(
    plan: &VmModel,
    prior: Option<&VmModel>,
    info: &VmInfo,
    inv: &Inventory,
    datastore: &str,
) -> Result<Vec<DeviceChange>, Diagnostics> {
    let mut changes = Vec::new();
    let vm_disks: Vec<&Disk> = info.disks().collect();
    let controller = info.devices.iter().find_map(|d| match d {
        Device::Controller { key, kind, bus: 0 }
            if kind.contains("SCSI") || kind.contains("LsiLogic") || kind.contains("BusLogic") =>
        {
            Some(*key)
        }
        _ => None,
    });
    let prior_disks = prior.and_then(|p| p.disk.clone()).unwrap_or_default();
    let planned_disks = plan.disk.clone().unwrap_or_default();
    // With no disk blocks, disks are not managed (a clone keeps its template's).
    let manage_disks = !planned_disks.is_empty();
    // Disks known by label in state, matched to the VM's disks by device key.
    let existing = |label: &str| -> Option<&Disk> {
        let key = prior_disks.iter().find(|p| p.label == label)?.key?;
        vm_disks.iter().copied().find(|d| i64::from(d.key) == key)
    };
    let new_disks: Vec<DiskModel> = planned_disks
        .iter()
        .filter(|d| existing(&d.label).is_none())
        .cloned()
        .collect();
    let taken: Vec<i64> = vm_disks.iter().map(|d| i64::from(d.unit_number)).collect();
    let units = assign_units(&new_disks, &taken);
    let mut next_key = -101;
    for d in planned_disks.iter().filter(|_| manage_disks) {
        if let Some(current) = existing(&d.label) {
            let want_kb = d.size_gb * 1024 * 1024;
            if want_kb > current.capacity_kb {
                changes.push(DeviceChange::Disk {
                    op: Operation::Edit,
                    disk: Disk {
                        capacity_kb: want_kb,
                        ..current.clone()
                    },
                    file_op: false,
                });
            }
        }
    }
    for (d, unit) in new_disks.iter().zip(units) {
        let controller_key = controller.unwrap_or(CONTROLLER_KEY);
        changes.push(DeviceChange::Disk {
            op: Operation::Add,
            disk: Disk {
                key: next_key,
                controller_key,
                unit_number: unit as i32,
                capacity_kb: d.size_gb * 1024 * 1024,
                file_name: format!("[{}]", d.datastore.as_deref().unwrap_or(datastore)),
                thin: d.thin.unwrap_or(true),
            },
            file_op: true,
        });
        next_key -= 1;
    }
    for p in prior_disks.iter().filter(|_| manage_disks) {
        if !planned_disks.iter().any(|d| d.label == p.label) {
            if let Some(current) = existing(&p.label) {
                changes.push(DeviceChange::Disk {
                    op: Operation::Remove,
                    disk: current.clone(),
                    file_op: true,
                });
            }
        }
    }
    // Network adapters, by position.
    let vm_nics: Vec<&Nic> = info.nics().collect();
    let planned_nics = plan.network_interface.clone().unwrap_or_default();
    let mut nic_key = -201;
    for (i, want) in planned_nics.iter().enumerate() {
        let backing = nic_backing(inv, &want.network, i)?;
        let adapter = want
            .adapter_type
            .clone()
            .unwrap_or_else(|| "vmxnet3".to_string());
        let fresh = |key: i32| Nic {
            key,
            adapter_type: adapter.clone(),
            mac_address: want.mac_address.clone(),
            address_type: if want.mac_address.is_some() {
                "manual"
            } else {
                "generated"
            }
            .to_string(),
            backing: backing.clone(),
            network: inv.network(&want.network).ok().map(|n| n.obj().clone()),
        };
        match vm_nics.get(i) {
            Some(current) if current.adapter_type == adapter => {
                let mac_changed =
                    want.mac_address.is_some() && want.mac_address != current.mac_address;
                if current.backing != backing || mac_changed {
                    let mut edited = fresh(current.key);
                    if !mac_changed {
                        edited.mac_address = current.mac_address.clone();
                        edited.address_type = current.address_type.clone();
                    }
                    changes.push(DeviceChange::Nic {
                        op: Operation::Edit,
                        nic: edited,
                    });
                }
            }
            Some(current) => {
                changes.push(DeviceChange::Nic {
                    op: Operation::Remove,
                    nic: (*current).clone(),
                });
                changes.push(DeviceChange::Nic {
                    op: Operation::Add,
                    nic: fresh(nic_key),
                });
                nic_key -= 1;
            }
            None => {
                changes.push(DeviceChange::Nic {
                    op: Operation::Add,
                    nic: fresh(nic_key),
                });
                nic_key -= 1;
            }
        }
    }
    // With no adapter blocks, adapters are not managed.
    for extra in vm_nics
        .iter()
        .skip(planned_nics.len())
        .filter(|_| !planned_nics.is_empty())
    {
        changes.push(DeviceChange::Nic {
            op: Operation::Remove,
            nic: (*extra).clone(),
        });
    }
    Ok(changes)
}

/// Whether applying `spec` to a running VM needs it powered off first.
pub(super) fn needs_power_off(spec: &ConfigSpec, info: &VmInfo) -> Option<String> {
    if info.power_state != "poweredOn" {
        return None;
    }
    if spec.num_cpus.is_some_and(|n| n < info.num_cpus)
        || (spec.num_cpus.is_some() && !info.cpu_hot_add)
    {
        return Some(
            "changing vCPUs of a running VM needs CPU hot add (and never removes vCPUs)".into(),
        );
    }
    if spec.memory_mb.is_some_and(|m| m < info.memory_mb)
        || (spec.memory_mb.is_some() && !info.memory_hot_add)
    {
        return Some(
            "changing memory of a running VM needs memory hot add (and never removes memory)"
                .into(),
        );
    }
    if spec
        .device_changes
        .iter()
        .any(|c| matches!(c, DeviceChange::Passthrough { .. }))
    {
        return Some(
            "PCI passthrough devices are added and removed only while the VM is off".into(),
        );
    }
    if spec.cores_per_socket.is_some()
        || spec.cpu_hot_add.is_some()
        || spec.memory_hot_add.is_some()
        || spec.firmware.is_some()
        || spec.guest_id.is_some()
    {
        return Some("cores per socket, hot-add settings, firmware and guest OS change only while the VM is off".into());
    }
    None
}
