//! `ceso_vm`'s state model, and its conversion from what vSphere reports and to the config
//! specs that create or change the VM.

use std::collections::BTreeMap;
use std::io::Write as _;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::vsphere::device::{Disk, Nic, NicBacking, Passthrough, PassthroughBacking};
use crate::vsphere::inventory::{Inventory, NetworkRef};
use crate::vsphere::vm::VmInfo;

/// A disk block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskModel {
    pub label: String,
    pub size_gb: i64,
    pub thin: Option<bool>,
    pub datastore: Option<String>,
    pub unit_number: Option<i64>,
    pub path: Option<String>,
    pub key: Option<i64>,
}

/// A network_interface block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NicModel {
    pub network: String,
    pub adapter_type: Option<String>,
    pub mac_address: Option<String>,
    pub key: Option<i64>,
}

/// A pci_device block: a host device given to the VM (DirectPath) or a vGPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PciModel {
    pub address: Option<String>,
    pub vgpu_profile: Option<String>,
    pub key: Option<i64>,
    pub device_name: Option<String>,
}

impl PciModel {
    /// What the block names: `0000:3b:00.0` or `vgpu:grid_t4-4q`.
    pub fn identity(&self) -> String {
        match (&self.address, &self.vgpu_profile) {
            (Some(a), _) => crate::vsphere::pci::normalize_address(a),
            (None, Some(p)) => format!("vgpu:{p}"),
            (None, None) => String::new(),
        }
    }

    /// The block for a passthrough device of the VM.
    pub fn from_device(p: &Passthrough) -> Self {
        match &p.backing {
            PassthroughBacking::Direct {
                id, device_name, ..
            } => PciModel {
                address: Some(crate::vsphere::pci::normalize_address(id)),
                vgpu_profile: None,
                key: Some(i64::from(p.key)),
                device_name: Some(device_name.clone()),
            },
            PassthroughBacking::Vgpu { profile } => PciModel {
                address: None,
                vgpu_profile: Some(profile.clone()),
                key: Some(i64::from(p.key)),
                device_name: Some(format!("vGPU {profile}")),
            },
        }
    }
}

/// Pairs `wanted` blocks with the VM's `devices` by what they name (each device used once);
/// returns, per wanted block, the index of its device.
pub fn match_pci(wanted: &[PciModel], devices: &[PciModel]) -> Vec<Option<usize>> {
    let mut used = vec![false; devices.len()];
    wanted
        .iter()
        .map(|w| {
            let id = w.identity();
            let found = devices
                .iter()
                .enumerate()
                .position(|(i, d)| !used[i] && d.identity() == id)?;
            used[found] = true;
            Some(found)
        })
        .collect()
}

/// The clone block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloneModel {
    pub template: String,
    pub linked_clone: Option<bool>,
}

/// The ovf block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OvfModel {
    pub source: String,
}

/// The cloud_init block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudInitModel {
    pub user_data: Option<String>,
    pub meta_data: Option<String>,
    pub network_config: Option<String>,
    pub vendor_data: Option<String>,
}

/// The wait_for_ip block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitForIpModel {
    pub timeout: Option<String>,
}

/// The resource's state (and wholly known plan).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmModel {
    pub id: Option<String>,
    pub endpoint: Option<String>,
    pub name: String,
    pub guest_id: Option<String>,
    pub firmware: Option<String>,
    pub hardware_version: Option<i64>,
    pub num_cpus: Option<i64>,
    pub cores_per_socket: Option<i64>,
    pub memory_mb: Option<i64>,
    pub cpu_reservation_mhz: Option<i64>,
    pub cpu_limit_mhz: Option<i64>,
    pub memory_reservation_mb: Option<i64>,
    pub memory_limit_mb: Option<i64>,
    pub cpu_hot_add: Option<bool>,
    pub memory_hot_add: Option<bool>,
    pub allow_power_cycle: Option<bool>,
    pub force_new_on_shrink: Option<bool>,
    pub host: Option<String>,
    pub resource_pool: Option<String>,
    pub datastore: Option<String>,
    pub folder: Option<String>,
    pub enable_cbt: Option<bool>,
    pub power_state: Option<String>,
    pub annotation: Option<String>,
    pub extra_config: Option<BTreeMap<String, String>>,
    pub anti_affinity_group: Option<String>,
    pub force_destroy: Option<bool>,
    pub moid: Option<String>,
    pub bios_uuid: Option<String>,
    pub ip_addresses: Option<Vec<String>>,
    pub default_ip: Option<String>,
    pub disk: Option<Vec<DiskModel>>,
    pub network_interface: Option<Vec<NicModel>>,
    pub pci_device: Option<Vec<PciModel>>,
    pub clone: Option<Vec<CloneModel>>,
    pub ovf: Option<Vec<OvfModel>>,
    pub cloud_init: Option<Vec<CloudInitModel>>,
    pub wait_for_ip: Option<Vec<WaitForIpModel>>,
    pub timeouts: Option<crate::framework::timeouts::Timeouts>,
}

/// `poweredOn` -> `on`, and so on.
pub fn power_state_name(vsphere: &str) -> &'static str {
    match vsphere {
        "poweredOn" => "on",
        "suspended" => "suspended",
        _ => "off",
    }
}

/// The datastore name in `[datastore] path`.
pub fn datastore_of(path: &str) -> Option<String> {
    path.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map(|(d, _)| d.to_string())
}

/// GiB rounded up from KiB.
fn kb_to_gb(kb: i64) -> i64 {
    (kb + 1024 * 1024 - 1) / (1024 * 1024)
}

/// How a NIC's backing is written in state: the name unless state used an id for the same
/// network.
fn network_name(backing: &NicBacking, inv: &Inventory, prior: Option<&NicModel>) -> String {
    let found: Option<&NetworkRef> = match backing {
        NicBacking::Network { name } => inv
            .networks
            .iter()
            .find(|n| matches!(n, NetworkRef::Standard { name: n2, .. } if n2 == name)),
        NicBacking::Distributed { portgroup_key, .. } => inv
            .networks
            .iter()
            .find(|n| matches!(n, NetworkRef::Distributed { key, .. } if key == portgroup_key)),
    };
    let fallback = match backing {
        NicBacking::Network { name } => name.clone(),
        NicBacking::Distributed { portgroup_key, .. } => portgroup_key.clone(),
    };
    match (found, prior) {
        (Some(n), Some(p)) if p.network == n.obj().value => p.network.clone(),
        (Some(n), _) => n.name().to_string(),
        (None, _) => fallback,
    }
}

impl VmModel {
    /// The state as vSphere reports it, keeping from `prior` what only Terraform knows
    /// (disk labels, settings of ceso itself, write-only cloud-init data).
    pub fn from_info(info: &VmInfo, inv: &Inventory, prior: &VmModel) -> Self {
        let prior_disks = prior.disk.clone().unwrap_or_default();
        let mut disks: Vec<(usize, DiskModel)> = Vec::new();
        let vm_disks: Vec<&Disk> = info.disks().collect();
        // Match the VM's disks to state's labels: by device key, then (for disks just added,
        // whose keys state does not know yet) in order.
        let mut claimed: Vec<Option<usize>> = vm_disks
            .iter()
            .map(|d| {
                prior_disks
                    .iter()
                    .position(|p| p.key == Some(i64::from(d.key)))
            })
            .collect();
        let taken: Vec<usize> = claimed.iter().flatten().copied().collect();
        let mut unkeyed =
            (0..prior_disks.len()).filter(|i| prior_disks[*i].key.is_none() && !taken.contains(i));
        for slot in claimed.iter_mut().filter(|c| c.is_none()) {
            *slot = unkeyed.next();
        }
        for (n, (d, known)) in vm_disks.iter().zip(claimed).enumerate() {
            let label = known
                .map(|i| prior_disks[i].label.clone())
                .unwrap_or_else(|| format!("disk{n}"));
            disks.push((
                known.unwrap_or(usize::MAX - vm_disks.len() + n),
                DiskModel {
                    label,
                    size_gb: kb_to_gb(d.capacity_kb),
                    thin: Some(d.thin),
                    datastore: datastore_of(&d.file_name),
                    unit_number: Some(i64::from(d.unit_number)),
                    path: Some(d.file_name.clone()),
                    key: Some(i64::from(d.key)),
                },
            ));
        }
        disks.sort_by_key(|(order, _)| *order);
        let prior_nics = prior.network_interface.clone().unwrap_or_default();
        let nics: Vec<NicModel> = info
            .nics()
            .enumerate()
            .map(|(i, n): (usize, &Nic)| NicModel {
                network: network_name(&n.backing, inv, prior_nics.get(i)),
                adapter_type: Some(n.adapter_type.clone()),
                mac_address: n.mac_address.clone(),
                key: Some(i64::from(n.key)),
            })
            .collect();
        let host = info
            .host
            .as_ref()
            .and_then(|h| inv.host_by_ref(h))
            .map(|h| h.name.clone());
        let datastore = info
            .datastores
            .first()
            .and_then(|d| inv.datastore_by_ref(d))
            .map(|d| d.name.clone())
            .or_else(|| prior.datastore.clone());
        let extra_config = prior.extra_config.as_ref().map(|managed| {
            managed
                .keys()
                .filter_map(|k| info.extra_config.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        });
        VmModel {
            id: Some(info.instance_uuid.clone()),
            endpoint: prior.endpoint.clone(),
            name: info.name.clone(),
            guest_id: Some(info.guest_id.clone()),
            firmware: Some(info.firmware.clone()),
            hardware_version: info
                .version
                .strip_prefix("vmx-")
                .and_then(|v| v.parse().ok()),
            num_cpus: Some(info.num_cpus),
            cores_per_socket: Some(info.cores_per_socket),
            memory_mb: Some(info.memory_mb),
            cpu_reservation_mhz: Some(info.cpu_reservation),
            cpu_limit_mhz: Some(info.cpu_limit),
            memory_reservation_mb: Some(info.memory_reservation),
            memory_limit_mb: Some(info.memory_limit),
            cpu_hot_add: Some(info.cpu_hot_add),
            memory_hot_add: Some(info.memory_hot_add),
            allow_power_cycle: prior.allow_power_cycle,
            force_new_on_shrink: prior.force_new_on_shrink,
            host,
            resource_pool: info.resource_pool.as_ref().map(|p| p.value.clone()),
            datastore,
            folder: info.folder.as_ref().map(|f| f.value.clone()),
            enable_cbt: Some(info.cbt),
            power_state: Some(power_state_name(&info.power_state).to_string()),
            annotation: Some(info.annotation.clone()),
            extra_config,
            anti_affinity_group: info
                .extra_config
                .get(crate::vsphere::vm::GROUP_KEY)
                .cloned(),
            force_destroy: prior.force_destroy,
            moid: info.obj.as_ref().map(|o| o.value.clone()),
            bios_uuid: Some(info.bios_uuid.clone()),
            ip_addresses: Some(info.ip_addresses.clone()),
            default_ip: info.default_ip.clone(),
            // Disks and adapters are managed only when the configuration lists some; with none
            // listed (e.g. a clone keeping its template's), they are left alone and not shown.
            // (An absent block list is an empty list, as Terraform plans it.)
            disk: Some(if prior.disk.as_ref().is_some_and(|d| !d.is_empty()) {
                disks.into_iter().map(|(_, d)| d).collect()
            } else {
                Vec::new()
            }),
            network_interface: Some(
                if prior
                    .network_interface
                    .as_ref()
                    .is_some_and(|n| !n.is_empty())
                {
                    nics
                } else {
                    Vec::new()
                },
            ),
            // Passthrough devices are managed once the configuration lists some: then state
            // shows every one the VM has (in the configuration's order, extras after), so one
            // added or removed out of band shows in the plan.
            pci_device: Some(
                if prior.pci_device.as_ref().is_some_and(|p| !p.is_empty()) {
                    let have: Vec<PciModel> =
                        info.passthroughs().map(PciModel::from_device).collect();
                    let wanted = prior.pci_device.clone().unwrap_or_default();
                    let pairs = match_pci(&wanted, &have);
                    let mut out: Vec<PciModel> =
                        pairs.iter().flatten().map(|i| have[*i].clone()).collect();
                    out.extend(
                        have.iter()
                            .enumerate()
                            .filter(|(i, _)| !pairs.contains(&Some(*i)))
                            .map(|(_, d)| d.clone()),
                    );
                    out
                } else {
                    Vec::new()
                },
            ),
            // Block lists Terraform knows only as written: an absent one is an empty list.
            clone: Some(prior.clone.clone().unwrap_or_default()),
            ovf: Some(prior.ovf.clone().unwrap_or_default()),
            cloud_init: Some(prior.cloud_init.clone().unwrap_or_default()),
            wait_for_ip: Some(prior.wait_for_ip.clone().unwrap_or_default()),
            timeouts: prior.timeouts.clone(),
        }
    }

    /// The `guestinfo.*` extraConfig entries of the cloud_init block (empty values remove keys
    /// when the block is gone).
    pub fn cloud_init_entries(&self) -> Vec<(String, String)> {
        let ci = self.cloud_init.as_ref().and_then(|c| c.first());
        let mut meta = ci.and_then(|c| c.meta_data.clone());
        if let Some(net) = ci.and_then(|c| c.network_config.as_ref()) {
            let mut m = meta.unwrap_or_default();
            if !m.is_empty() && !m.ends_with('\n') {
                m.push('\n');
            }
            m.push_str(&format!(
                "network: {}\nnetwork.encoding: base64\n",
                base64::engine::general_purpose::STANDARD.encode(net)
            ));
            meta = Some(m);
        }
        let entry = |key: &str, value: Option<String>| -> Vec<(String, String)> {
            match value {
                Some(v) => vec![
                    (format!("guestinfo.{key}"), gzip_base64(&v)),
                    (
                        format!("guestinfo.{key}.encoding"),
                        "gzip+base64".to_string(),
                    ),
                ],
                None => vec![
                    (format!("guestinfo.{key}"), String::new()),
                    (format!("guestinfo.{key}.encoding"), String::new()),
                ],
            }
        };
        let mut out = entry("userdata", ci.and_then(|c| c.user_data.clone()));
        out.extend(entry("metadata", meta));
        out.extend(entry("vendordata", ci.and_then(|c| c.vendor_data.clone())));
        out
    }
}

/// gzip, then base64: the encoding cloud-init's VMware datasource reads as `gzip+base64`.
pub fn gzip_base64(text: &str) -> String {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(text.as_bytes()).expect("writing to memory");
    base64::engine::general_purpose::STANDARD.encode(enc.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn cloud_init_is_gzip_base64_and_carries_network_config() {
        let m = VmModel {
            cloud_init: Some(vec![CloudInitModel {
                user_data: Some("#cloud-config\nhostname: web\n".into()),
                meta_data: Some("local-hostname: web".into()),
                network_config: Some("version: 2\n".into()),
                vendor_data: None,
            }]),
            ..Default::default()
        };
        let entries: BTreeMap<_, _> = m.cloud_init_entries().into_iter().collect();
        assert_eq!(entries["guestinfo.userdata.encoding"], "gzip+base64");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&entries["guestinfo.userdata"])
            .unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "#cloud-config\nhostname: web\n");
        let meta = base64::engine::general_purpose::STANDARD
            .decode(&entries["guestinfo.metadata"])
            .unwrap();
        let mut meta_text = String::new();
        flate2::read::GzDecoder::new(&meta[..])
            .read_to_string(&mut meta_text)
            .unwrap();
        assert!(meta_text.contains("network.encoding: base64"));
        assert_eq!(entries["guestinfo.vendordata"], "");
    }

    #[test]
    fn rounds_capacity_up_to_gib() {
        assert_eq!(kb_to_gb(10 * 1024 * 1024), 10);
        assert_eq!(kb_to_gb(10 * 1024 * 1024 + 1), 11);
        assert_eq!(
            datastore_of("[LocalDS_0] web/web.vmdk").as_deref(),
            Some("LocalDS_0")
        );
    }
}
