//! `ceso_vm`'s specs: the settings every create, clone and update applies the same way, the
//! device diff that takes a VM's disks and NICs from what vSphere has to the plan, and
//! whether a change needs the VM powered off.

use crate::framework::{AttrPath, Diagnostics};
use crate::session::error_diagnostics;
use crate::vsphere::device::{Device, DeviceChange, Disk, Nic, NicBacking, Operation};
use crate::vsphere::inventory::{Inventory, NetworkRef};
use crate::vsphere::vm::{ConfigSpec, VmInfo};
use crate::vsphere::Client;

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

/// The device changes that take the VM of `info` to `plan`: disks, network adapters and PCI
/// devices, and whether the memory reservation must be locked to its size (passthrough).
pub(super) async fn device_changes(
    client: &Client,
    plan: &VmModel,
    prior: Option<&VmModel>,
    info: &VmInfo,
    inv: &Inventory,
    datastore: &str,
) -> Result<(Vec<DeviceChange>, Option<bool>), Diagnostics> {
    let mut changes = disk_and_nic_changes(plan, prior, info, inv, datastore)?;
    let (pci, lock) = super::pci::device_changes(client, inv, plan, prior, info)
        .await
        .map_err(|e| {
            error_diagnostics(&format!("plan the PCI devices of VM {:?}", plan.name), &e)
        })?;
    changes.extend(pci);
    Ok((changes, lock))
}

/// Device changes that take the VM's disks and NICs from `info` to `plan` (a new VM's, or a
/// moved VM's adapters, before it has PCI devices).
pub(super) fn disk_and_nic_changes(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::types::ManagedObjectReference;

    fn inventory() -> Inventory {
        Inventory {
            networks: vec![NetworkRef::Standard {
                obj: ManagedObjectReference::new("Network", "network-7"),
                name: "VM Network".into(),
            }],
            ..Inventory::default()
        }
    }

    fn disk(label: &str, size_gb: i64, key: Option<i64>) -> DiskModel {
        DiskModel {
            label: label.into(),
            size_gb,
            key,
            ..DiskModel::default()
        }
    }

    fn vm_disk(key: i32, unit: i32, gb: i64) -> Device {
        Device::Disk(Disk {
            key,
            controller_key: 1000,
            unit_number: unit,
            capacity_kb: gb * 1024 * 1024,
            file_name: format!("[ds] web/web_{unit}.vmdk"),
            thin: true,
        })
    }

    #[test]
    fn settings_carry_only_what_changes() {
        let prior = VmModel {
            num_cpus: Some(2),
            memory_mb: Some(2048),
            ..VmModel::default()
        };
        let plan = VmModel {
            num_cpus: Some(4),
            memory_mb: Some(2048),
            ..VmModel::default()
        };
        let spec = settings_spec(&plan, Some(&prior));
        assert_eq!(spec.num_cpus, Some(4));
        assert_eq!(spec.memory_mb, None);
        let new = settings_spec(&plan, None);
        assert_eq!(new.memory_mb, Some(2048));
    }

    #[test]
    fn disks_grow_in_place_and_new_ones_skip_the_controller_unit() {
        let info = VmInfo {
            devices: (0..7).map(|u| vm_disk(2000 + u, u, 10)).collect(),
            ..VmInfo::default()
        };
        let prior = VmModel {
            disk: Some(vec![disk("disk0", 10, Some(2000))]),
            ..VmModel::default()
        };
        let plan = VmModel {
            disk: Some(vec![disk("disk0", 20, None), disk("data", 5, None)]),
            ..VmModel::default()
        };
        let changes = disk_and_nic_changes(&plan, Some(&prior), &info, &inventory(), "ds").unwrap();
        let edits: Vec<&DeviceChange> = changes
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    DeviceChange::Disk {
                        op: Operation::Edit,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(edits.len(), 1);
        let added: Vec<&Disk> = changes
            .iter()
            .filter_map(|c| match c {
                DeviceChange::Disk {
                    op: Operation::Add,
                    disk,
                    ..
                } => Some(disk),
                _ => None,
            })
            .collect();
        assert_eq!(added.len(), 1);
        assert_eq!(
            added[0].unit_number, 8,
            "units 0-6 are taken and 7 is the controller's"
        );
        assert_eq!(added[0].file_name, "[ds]");
    }

    #[test]
    fn a_disk_left_out_of_the_plan_is_removed_and_shrinks_are_not_edits() {
        let info = VmInfo {
            devices: vec![vm_disk(2000, 0, 10), vm_disk(2001, 1, 10)],
            ..VmInfo::default()
        };
        let prior = VmModel {
            disk: Some(vec![disk("a", 10, Some(2000)), disk("b", 10, Some(2001))]),
            ..VmModel::default()
        };
        let plan = VmModel {
            disk: Some(vec![disk("a", 5, None)]),
            ..VmModel::default()
        };
        let changes = disk_and_nic_changes(&plan, Some(&prior), &info, &inventory(), "ds").unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(
            &changes[0],
            DeviceChange::Disk { op: Operation::Remove, disk, .. } if disk.key == 2001
        ));
    }

    #[test]
    fn adapters_are_added_by_position_and_unknown_networks_name_the_attribute() {
        let plan = VmModel {
            network_interface: Some(vec![model::NicModel {
                network: "VM Network".into(),
                ..model::NicModel::default()
            }]),
            ..VmModel::default()
        };
        let changes =
            disk_and_nic_changes(&plan, None, &VmInfo::default(), &inventory(), "ds").unwrap();
        assert!(matches!(
            &changes[..],
            [DeviceChange::Nic { op: Operation::Add, nic }] if nic.adapter_type == "vmxnet3"
        ));
        let lost = VmModel {
            network_interface: Some(vec![model::NicModel {
                network: "nowhere".into(),
                ..model::NicModel::default()
            }]),
            ..VmModel::default()
        };
        let d =
            disk_and_nic_changes(&lost, None, &VmInfo::default(), &inventory(), "ds").unwrap_err();
        assert_eq!(
            d.0[0].path.as_ref().map(|p| p.to_string()).as_deref(),
            Some("network_interface[0].network")
        );
    }

    #[test]
    fn running_vms_need_a_power_cycle_for_cpu_without_hot_add() {
        let info = VmInfo {
            power_state: "poweredOn".into(),
            num_cpus: 2,
            ..VmInfo::default()
        };
        let spec = ConfigSpec {
            num_cpus: Some(4),
            ..ConfigSpec::default()
        };
        assert!(needs_power_off(&spec, &info).is_some());
        let hot = VmInfo {
            cpu_hot_add: true,
            ..info.clone()
        };
        assert!(needs_power_off(&spec, &hot).is_none());
        let off = VmInfo {
            power_state: "poweredOff".into(),
            ..info
        };
        assert!(needs_power_off(&spec, &off).is_none());
    }
}
