//! `ceso_vm`'s `pci_device` blocks: static checks, plan-time checks against the host (device
//! exists, passthrough active, free, group complete, vGPU profile offered), plan alignment, and
//! the device changes that take the VM's passthrough devices to the plan.

use crate::framework::{AttrPath, Diagnostics, Tri};
use crate::vsphere::device::{DeviceChange, Operation, Passthrough, PassthroughBacking};
use crate::vsphere::inventory::Inventory;
use crate::vsphere::pci::{normalize_address, HostPci};
use crate::vsphere::vm::VmInfo;
use crate::vsphere::{Client, Error};

use super::model::{match_pci, PciModel, VmModel};
use super::view::VmView;

/// Each block names exactly one of `address` and `vgpu_profile`, and no device twice.
pub fn validate(config: &VmView, diags: &mut Diagnostics) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, b) in config.pci().iter().enumerate() {
        let here = AttrPath::attr("pci_device").join_index(i);
        match (&b.address, &b.vgpu_profile) {
            (Tri::Null, Tri::Null) => diags.attr_error(
                here.clone(),
                "Missing PCI device",
                "Each pci_device names a host device (address = \"0000:3b:00.0\") or a vGPU profile (vgpu_profile = \"grid_t4-4q\").",
            ),
            (Tri::Null, _) | (_, Tri::Null) => {}
            _ => diags.attr_error(
                here.join_attr("vgpu_profile"),
                "Conflicting PCI device",
                "Give either address (a whole device) or vgpu_profile (a share of a GPU), not both.",
            ),
        }
        if let (Tri::Known(a), Tri::Null) = (&b.address, &b.vgpu_profile) {
            if !seen.insert(normalize_address(a)) {
                diags.attr_error(
                    here.join_attr("address"),
                    "Duplicate PCI device",
                    format!("PCI device {a} is listed twice; a device can be given to a VM once."),
                );
            }
        }
    }
}

/// Blocks keep key and device name when the prior state has a device they name; new ones get
/// unknowns. With devices, the memory reservation is planned as the memory size (locked).
pub fn align(config: &VmView, prior: &VmView, planned: &mut VmView, diags: &mut Diagnostics) {
    let Tri::Known(blocks) = &mut planned.pci_device else {
        return;
    };
    let before = prior.pci();
    let mut used = vec![false; before.len()];
    for block in blocks.iter_mut() {
        let id = block.identity();
        let found = before
            .iter()
            .enumerate()
            .position(|(i, p)| !used[i] && id.is_some() && p.identity() == id);
        match found {
            Some(i) => {
                used[i] = true;
                block.key = before[i].key;
                block.device_name = before[i].device_name.clone();
            }
            None => {
                block.key = Tri::Unknown;
                block.device_name = Tri::Unknown;
            }
        }
    }
    if blocks.is_empty() {
        return;
    }
    let memory = planned.memory_mb;
    match &config.memory_reservation_mb {
        Tri::Null => planned.memory_reservation_mb = memory,
        r if *r != memory && !memory.is_unknown() && !r.is_unknown() => {
            diags.attr_error(
                AttrPath::attr("memory_reservation_mb"),
                "Passthrough needs all memory reserved",
                "A VM with PCI passthrough devices must reserve all its memory; leave memory_reservation_mb unset (ceso locks it to memory_mb) or set it to memory_mb.",
            );
        }
        _ => {}
    }
}

/// Checks every block against the host the VM runs on (or will): the device exists, is
/// passthrough-capable, enabled and active, no other VM holds it, its group mates are listed
/// too, and vGPU profiles are offered. Costs two property reads, only with blocks.
pub async fn check_against_host(
    client: &Client,
    inv: &Inventory,
    config: &VmView,
    prior: &VmView,
    diags: &mut Diagnostics,
) {
    let blocks = config.pci();
    if blocks.is_empty() {
        return;
    }
    let host_name = config
        .host
        .as_deref()
        .or_else(|| prior.host.as_deref())
        .map(str::to_string);
    let Some(host_name) = host_name else {
        if !config.host.is_unknown() {
            diags.attr_error(
                AttrPath::attr("host"),
                "Host needed for PCI devices",
                "A VM with pci_device blocks must name its host: passthrough devices belong to one host.",
            );
        }
        return;
    };
    let Ok(host) = inv.host(&host_name) else {
        return; // reported as an unknown host already
    };
    let pci = match client.host_pci(&host.obj).await {
        Ok(p) => p,
        Err(e) => {
            diags.extend(crate::session::error_diagnostics(
                &format!("read the PCI devices of {host_name}"),
                &e,
            ));
            return;
        }
    };
    let this_vm = prior.moid.as_deref();
    let listed: Vec<String> = blocks
        .iter()
        .filter_map(|b| b.address.as_deref().map(normalize_address))
        .collect();
    for (i, b) in blocks.iter().enumerate() {
        let here = AttrPath::attr("pci_device").join_index(i);
        if let Tri::Known(address) = &b.address {
            if let Err(why) = check_device(&pci, address, this_vm, &listed) {
                diags.attr_error(here.join_attr("address"), "PCI device not usable", why);
            }
        } else if let Tri::Known(profile) = &b.vgpu_profile {
            if !pci.vgpu_profiles.iter().any(|p| p == profile) {
                diags.attr_error(
                    here.join_attr("vgpu_profile"),
                    "Unknown vGPU profile",
                    format!(
                        "Host {host_name} does not offer vGPU profile {profile:?}; it offers: {}.",
                        if pci.vgpu_profiles.is_empty() {
                            "none".to_string()
                        } else {
                            pci.vgpu_profiles.join(", ")
                        }
                    ),
                );
            }
        }
    }
}

/// Why `address` cannot be given to the VM `this_vm` on this host, if it cannot.
pub fn check_device(
    pci: &HostPci,
    address: &str,
    this_vm: Option<&str>,
    listed: &[String],
) -> Result<(), String> {
    let id = normalize_address(address);
    let host = &pci.name;
    if pci.device(&id).is_none() {
        return Err(format!(
            "Host {host} has no PCI device {id}; see ceso_pci_devices for its devices."
        ));
    }
    let s = pci.state(&id);
    if !s.capable {
        return Err(format!(
            "PCI device {id} on {host} cannot be passed through (the host reports it not passthrough-capable)."
        ));
    }
    if !s.enabled {
        return Err(format!("Passthrough is not enabled for PCI device {id} on {host}; enable it with ceso_pci_passthrough (reboot_if_required = true) and set this address from its `address` attribute, so the VM waits for it."));
    }
    if !s.active {
        return Err(format!("Passthrough of PCI device {id} on {host} is enabled but not active until the host reboots; reboot it (ceso_pci_passthrough's reboot_if_required = true, with this address set from its `address` attribute)."));
    }
    if let Some(other) = pci
        .holders
        .get(&id)
        .into_iter()
        .flatten()
        .find(|h| Some(h.vm.value.as_str()) != this_vm)
    {
        return Err(format!(
            "PCI device {id} on {host} is already given to VM {} ({}).",
            other.name, other.vm.value
        ));
    }
    let missing: Vec<String> = pci
        .group_mates(&id)
        .into_iter()
        .filter(|m| !listed.contains(m))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "PCI device {id} on {host} must be passed through together with {}: add pci_device blocks for {}.",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        ));
    }
    Ok(())
}

/// Device changes that take the VM's passthrough devices from `info` to `plan` (managed once
/// the plan or the prior state lists some), and the memory-reservation lock to set with them.
/// Backings of new DirectPath devices come from the host's `QueryConfigTarget`.
pub async fn device_changes(
    client: &Client,
    inv: &Inventory,
    plan: &VmModel,
    prior: Option<&VmModel>,
    info: &VmInfo,
) -> Result<(Vec<DeviceChange>, Option<bool>), Error> {
    let planned = plan.pci_device.clone().unwrap_or_default();
    let managed_before = prior
        .and_then(|p| p.pci_device.as_ref())
        .is_some_and(|p| !p.is_empty());
    if planned.is_empty() && !managed_before {
        return Ok((Vec::new(), None));
    }
    let have: Vec<&Passthrough> = info.passthroughs().collect();
    let have_models: Vec<PciModel> = have.iter().map(|p| PciModel::from_device(p)).collect();
    let pairs = match_pci(&planned, &have_models);
    let mut changes: Vec<DeviceChange> = have
        .iter()
        .enumerate()
        .filter(|(i, _)| !pairs.contains(&Some(*i)))
        .map(|(_, p)| DeviceChange::Passthrough {
            op: Operation::Remove,
            device: (*p).clone(),
        })
        .collect();
    let adds: Vec<&PciModel> = planned
        .iter()
        .zip(&pairs)
        .filter(|(_, p)| p.is_none())
        .map(|(m, _)| m)
        .collect();
    if !adds.is_empty() {
        let host = info.host.as_ref().and_then(|h| inv.host_by_ref(h));
        let browser = host
            .and_then(|h| h.parent.as_ref())
            .and_then(|cr| inv.environment_browsers.get(cr));
        let (Some(host), Some(browser)) = (host, browser) else {
            return Err(Error::new(
                crate::vsphere::ErrorKind::NotFound,
                "the VM's host (and its environment browser) is not in the inventory",
            ));
        };
        let target = client.config_target(browser, Some(&host.obj)).await?;
        for (n, want) in adds.iter().enumerate() {
            let backing = if let Some(address) = &want.address {
                let id = normalize_address(address);
                let t = target.pci.iter().find(|t| t.id == id).ok_or_else(|| {
                    Error::new(
                        crate::vsphere::ErrorKind::InvalidArgument,
                        format!("host {} does not offer PCI device {id} for passthrough (is passthrough active for it?)", host.name),
                    )
                })?;
                PassthroughBacking::Direct {
                    id: t.id.clone(),
                    device_id: format!("{:x}", t.device_id),
                    system_id: t.system_id.clone(),
                    vendor_id: t.vendor_id,
                    device_name: t.name.clone(),
                }
            } else {
                let profile = want.vgpu_profile.clone().unwrap_or_default();
                if !target.vgpu_profiles.contains(&profile) {
                    return Err(Error::new(
                        crate::vsphere::ErrorKind::InvalidArgument,
                        format!("host {} does not offer vGPU profile {profile:?}", host.name),
                    ));
                }
                PassthroughBacking::Vgpu { profile }
            };
            changes.push(DeviceChange::Passthrough {
                op: Operation::Add,
                device: Passthrough {
                    key: -301 - n as i32,
                    backing,
                },
            });
        }
    }
    let lock = if !planned.is_empty() && !info.memory_locked_to_max {
        Some(true)
    } else if planned.is_empty() && info.memory_locked_to_max {
        Some(false)
    } else {
        None
    };
    Ok((changes, lock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::pci::{Holder, PassthruState, PciDevice};
    use crate::vsphere::types::ManagedObjectReference;

    fn host() -> HostPci {
        let dev = |id: &str| PciDevice {
            id: id.into(),
            class_id: 0x0302,
            ..PciDevice::default()
        };
        let state = |enabled, active, dep: &str| PassthruState {
            capable: true,
            enabled,
            active,
            dependent_device: Some(dep.into()),
        };
        let mut h = HostPci {
            host: ManagedObjectReference::new("HostSystem", "host-1"),
            name: "esx-01".into(),
            passthru_system: None,
            in_maintenance: false,
            devices: [
                "0000:3b:00.0",
                "0000:af:00.0",
                "0000:81:00.0",
                "0000:81:00.1",
                "0000:5e:00.0",
            ]
            .iter()
            .map(|a| dev(a))
            .collect(),
            passthru: Default::default(),
            gpu_memory_kb: Default::default(),
            vgpu_profiles: vec![],
            holders: Default::default(),
        };
        h.passthru
            .insert("0000:3b:00.0".into(), state(true, true, "0000:3b:00.0"));
        h.passthru
            .insert("0000:af:00.0".into(), state(true, false, "0000:af:00.0"));
        h.passthru
            .insert("0000:81:00.0".into(), state(true, true, "0000:80:03.0"));
        h.passthru
            .insert("0000:81:00.1".into(), state(true, true, "0000:80:03.0"));
        h.passthru
            .insert("0000:5e:00.0".into(), state(false, false, "0000:5e:00.0"));
        h.holders.insert(
            "0000:3b:00.0".into(),
            vec![Holder {
                vm: ManagedObjectReference::new("VirtualMachine", "vm-7"),
                name: "train-1".into(),
            }],
        );
        h
    }

    #[test]
    fn each_reason_names_the_device_and_what_to_do() {
        let h = host();
        let err = |a: &str, vm: Option<&str>, listed: &[&str]| {
            let listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
            check_device(&h, a, vm, &listed).err().unwrap_or_default()
        };
        assert!(err("0000:00:00.0", None, &[]).contains("has no PCI device 0000:00:00.0"));
        assert!(err("0000:5e:00.0", None, &[]).contains("not enabled"));
        assert!(err("0000:af:00.0", None, &[]).contains("not active until the host reboots"));
        assert!(
            err("0000:3b:00.0", Some("vm-9"), &[]).contains("already given to VM train-1 (vm-7)")
        );
        assert_eq!(
            err("0000:3b:00.0", Some("vm-7"), &[]),
            "",
            "its own device is fine"
        );
        assert!(err("0000:81:00.0", None, &["0000:81:00.0"]).contains("together with 0000:81:00.1"));
        assert_eq!(
            err("0000:81:00.0", None, &["0000:81:00.0", "0000:81:00.1"]),
            ""
        );
    }

    #[test]
    fn matching_pairs_blocks_with_devices_once() {
        let m = |a: Option<&str>, p: Option<&str>| PciModel {
            address: a.map(str::to_string),
            vgpu_profile: p.map(str::to_string),
            ..PciModel::default()
        };
        let have = vec![
            m(Some("0000:3b:00.0"), None),
            m(None, Some("grid_t4-4q")),
            m(None, Some("grid_t4-4q")),
        ];
        let want = vec![
            m(None, Some("grid_t4-4q")),
            m(Some("0000:3B:00.0"), None),
            m(Some("0000:af:00.0"), None),
        ];
        assert_eq!(match_pci(&want, &have), vec![Some(1), Some(0), None]);
    }
}
