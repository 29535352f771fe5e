//! `ceso_vm` as its checks and plan hook see it: a configuration, prior state or plan decoded
//! with `Tri` fields, so an unknown (a value another resource has not made yet) is told from
//! null. The nested blocks the plan aligns (`disk`, `network_interface`, `pci_device`) are
//! whole: every attribute of their block is a field, so a plan written back from them loses
//! nothing (a unit test holds them to the schema).

use serde::{Deserialize, Serialize};

use crate::framework::Tri;
use crate::vsphere::pci::normalize_address;

/// One `disk` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskView {
    pub label: Tri<String>,
    pub size_gb: Tri<i64>,
    pub thin: Tri<bool>,
    pub datastore: Tri<String>,
    pub unit_number: Tri<i64>,
    pub path: Tri<String>,
    pub key: Tri<i64>,
}

/// One `network_interface` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NicView {
    pub network: Tri<String>,
    pub adapter_type: Tri<String>,
    pub mac_address: Tri<String>,
    pub key: Tri<i64>,
}

/// One `pci_device` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PciView {
    pub address: Tri<String>,
    pub vgpu_profile: Tri<String>,
    pub key: Tri<i64>,
    pub device_name: Tri<String>,
}

impl PciView {
    /// What the block names (as `PciModel::identity`); `None` while unknown.
    pub fn identity(&self) -> Option<String> {
        match (&self.address, &self.vgpu_profile) {
            (Tri::Known(a), _) => Some(normalize_address(a)),
            (Tri::Null, Tri::Known(p)) => Some(format!("vgpu:{p}")),
            _ => None,
        }
    }
}

/// The `clone` block, as far as checks read it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloneView {
    pub template: Tri<String>,
    pub linked_clone: Tri<bool>,
}

/// The `ovf` block, as far as checks read it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OvfView {
    pub source: Tri<String>,
}

/// What the checks and the plan hook read of a configuration, prior state or plan.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VmView {
    pub endpoint: Tri<String>,
    pub host: Tri<String>,
    pub datastore: Tri<String>,
    pub moid: Tri<String>,
    pub guest_id: Tri<String>,
    pub firmware: Tri<String>,
    pub power_state: Tri<String>,
    pub allow_power_cycle: Tri<bool>,
    pub force_new_on_shrink: Tri<bool>,
    pub num_cpus: Tri<i64>,
    pub cores_per_socket: Tri<i64>,
    pub memory_mb: Tri<i64>,
    pub memory_reservation_mb: Tri<i64>,
    pub cpu_hot_add: Tri<bool>,
    pub memory_hot_add: Tri<bool>,
    pub ip_addresses: Tri<Vec<String>>,
    pub default_ip: Tri<String>,
    pub disk: Tri<Vec<DiskView>>,
    pub network_interface: Tri<Vec<NicView>>,
    pub pci_device: Tri<Vec<PciView>>,
    pub clone: Tri<Vec<CloneView>>,
    pub ovf: Tri<Vec<OvfView>>,
}

impl VmView {
    /// The `disk` blocks (none while null or unknown).
    pub fn disks(&self) -> &[DiskView] {
        self.disk.known().map_or(&[], Vec::as_slice)
    }

    /// The `network_interface` blocks.
    pub fn nics(&self) -> &[NicView] {
        self.network_interface.known().map_or(&[], Vec::as_slice)
    }

    /// The `pci_device` blocks.
    pub fn pci(&self) -> &[PciView] {
        self.pci_device.known().map_or(&[], Vec::as_slice)
    }

    /// The `clone` block, if any.
    pub fn clone_block(&self) -> Option<&CloneView> {
        self.clone.known().and_then(|c| c.first())
    }

    /// The `ovf` block, if any.
    pub fn ovf_block(&self) -> Option<&OvfView> {
        self.ovf.known().and_then(|o| o.first())
    }

    /// The sorted identities of the PCI blocks (what they name).
    pub fn pci_identities(&self) -> Vec<Option<String>> {
        let mut ids: Vec<Option<String>> = self.pci().iter().map(PciView::identity).collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Schema;

    /// The field names a view serializes.
    fn fields<T: Serialize + Default>() -> Vec<String> {
        let v = serde_json::to_value(T::default()).unwrap();
        let mut names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    fn block_attributes(schema: &Schema, block: &str) -> Vec<String> {
        let nested = schema.block.find_block(block).unwrap();
        let mut names: Vec<String> = nested
            .block
            .attributes
            .iter()
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn aligned_blocks_hold_every_attribute_of_the_schema() {
        let schema = super::super::schema::schema();
        assert_eq!(fields::<DiskView>(), block_attributes(&schema, "disk"));
        assert_eq!(
            fields::<NicView>(),
            block_attributes(&schema, "network_interface")
        );
        assert_eq!(fields::<PciView>(), block_attributes(&schema, "pci_device"));
    }
}
