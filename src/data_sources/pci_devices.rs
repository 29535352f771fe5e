//! `ceso_pci_devices`: a host's PCI devices with their passthrough state, GPU details and the VM
//! holding each, filtered as asked.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cty::Type;
use crate::framework::typed_data_source::TypedDataSource;
use crate::framework::validator::{matches, regex_syntax};
use crate::framework::{AttrPath, Attribute, Block, Diagnostics, Schema};
use crate::pci_ids::{class_name, gpu_vendor};
use crate::session::{error_diagnostics, resolve_host, Call, Vsphere};
use crate::vsphere::pci::{HostPci, PciDevice};

/// The `ceso_pci_devices` data source.
pub struct PciDevices;

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    address: String,
    vendor_id: String,
    device_id: String,
    sub_vendor_id: String,
    sub_device_id: String,
    vendor_name: String,
    device_name: String,
    class_id: String,
    class_name: String,
    parent_bridge: Option<String>,
    group: String,
    passthru_capable: bool,
    passthru_enabled: bool,
    passthru_active: bool,
    reboot_pending: bool,
    assigned_vm: Option<String>,
    assigned_vm_id: Option<String>,
    is_gpu: bool,
    gpu_vendor: Option<String>,
    memory_mb: Option<i64>,
    vgpu_profiles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
/// The data source's configuration and state.
pub struct PciDevicesModel {
    endpoint: Option<String>,
    host: Option<String>,
    gpus_only: Option<bool>,
    assignable_only: Option<bool>,
    vendor_id: Option<String>,
    class_id: Option<String>,
    name_regex: Option<String>,
    vgpu_profiles: Option<Vec<String>>,
    devices: Option<Vec<Entry>>,
}

crate::endpoint_scoped!(PciDevicesModel);

fn entry_type() -> Type {
    let s = || Type::String;
    Type::object([
        ("address", s()),
        ("vendor_id", s()),
        ("device_id", s()),
        ("sub_vendor_id", s()),
        ("sub_device_id", s()),
        ("vendor_name", s()),
        ("device_name", s()),
        ("class_id", s()),
        ("class_name", s()),
        ("parent_bridge", s()),
        ("group", s()),
        ("passthru_capable", Type::Bool),
        ("passthru_enabled", Type::Bool),
        ("passthru_active", Type::Bool),
        ("reboot_pending", Type::Bool),
        ("assigned_vm", s()),
        ("assigned_vm_id", s()),
        ("is_gpu", Type::Bool),
        ("gpu_vendor", s()),
        ("memory_mb", Type::Number),
        ("vgpu_profiles", Type::List(Box::new(s()))),
    ])
}

fn hex(v: u16) -> String {
    format!("0x{v:04x}")
}

/// A hex id as the user wrote it (`0x10de`, `10DE`), as a number.
fn parse_hex(text: &str) -> Option<u16> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u16::from_str_radix(t, 16).ok()
}

/// Whether a device is ready to give to a VM: capable, enabled, active, held by no VM.
pub fn assignable(host: &HostPci, d: &PciDevice) -> bool {
    let s = host.state(&d.id);
    s.capable && s.enabled && s.active && host.holders.get(&d.id).is_none_or(Vec::is_empty)
}

fn entry(host: &HostPci, d: &PciDevice) -> Entry {
    let s = host.state(&d.id);
    let holder = host.holders.get(&d.id).and_then(|h| h.first());
    Entry {
        address: d.id.clone(),
        vendor_id: hex(d.vendor_id),
        device_id: hex(d.device_id),
        sub_vendor_id: hex(d.sub_vendor_id),
        sub_device_id: hex(d.sub_device_id),
        vendor_name: d.vendor_name.clone(),
        device_name: d.device_name.clone(),
        class_id: hex(d.class_id),
        class_name: class_name(d.class_id).to_string(),
        parent_bridge: d.parent_bridge.clone(),
        group: host.group_of(&d.id),
        passthru_capable: s.capable,
        passthru_enabled: s.enabled,
        passthru_active: s.active,
        reboot_pending: s.enabled != s.active,
        assigned_vm: holder.map(|h| h.name.clone()),
        assigned_vm_id: holder.map(|h| h.vm.value.clone()),
        is_gpu: d.is_gpu(),
        gpu_vendor: d
            .is_gpu()
            .then(|| gpu_vendor(d.vendor_id))
            .flatten()
            .map(str::to_string),
        memory_mb: host.gpu_memory_kb.get(&d.id).map(|kb| kb / 1024),
        vgpu_profiles: host.profiles_for(d),
    }
}

#[async_trait]
impl TypedDataSource for PciDevices {
    type Model = PciDevicesModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_pci_devices";

    fn schema() -> Schema {
        let hex_id = "a hex PCI id such as 0x10de";
        Schema::new(
            Block::new()
                .description("The PCI devices of one host: passthrough state (capable, enabled, active; enabled but not active means a host reboot is pending), the VM holding each, and for GPUs the vendor, frame buffer size and the vGPU profiles the host offers for them. Devices the host must pass through together share a `group`.")
                .attribute(crate::session::endpoint_attribute(false))
                .attribute(Attribute::string("host").optional().computed().description("The host's name. May be left out when the endpoint has exactly one host (a standalone ESXi)."))
                .attribute(Attribute::bool("gpus_only").optional().description("Only GPUs: compute GPUs as `is_gpu` defines them, not a BMC's or hypervisor's display adapter."))
                .attribute(Attribute::bool("assignable_only").optional().description("Only devices a VM can take now: passthrough capable, enabled and active, and held by no VM."))
                .attribute(Attribute::string("vendor_id").optional().validate(matches(r"^(0[xX])?[0-9a-fA-F]{1,4}$", hex_id)).description("Only this PCI vendor, e.g. `0x10de` (NVIDIA)."))
                .attribute(Attribute::string("class_id").optional().validate(matches(r"^(0[xX])?[0-9a-fA-F]{1,4}$", "a hex PCI class such as 0x0302 (class and subclass) or 0x03 (base class)")).description("Only this PCI class: `0x0302` (class and subclass) or `0x03` (any display controller)."))
                .attribute(Attribute::string("name_regex").optional().validate(regex_syntax()).description("Only devices whose vendor or device name matches this regular expression, e.g. `(?i)tesla`."))
                .attribute(Attribute::new("vgpu_profiles", Type::List(Box::new(Type::String))).computed().description("Every vGPU profile the host offers (`config.sharedPassthruGpuTypes`)."))
                .attribute(Attribute::new("devices", Type::List(Box::new(entry_type()))).computed().description("The matching devices in the host's order: `address` (`DDDD:BB:SS.F`), `vendor_id`, `device_id`, `sub_vendor_id`, `sub_device_id`, `class_id` (hex), `vendor_name`, `device_name`, `class_name`, `parent_bridge`, `group` (devices with the same group must be passed through together), `passthru_capable`, `passthru_enabled`, `passthru_active`, `reboot_pending`, `assigned_vm` and `assigned_vm_id` (the VM holding it), `is_gpu` (a compute GPU: a display controller from NVIDIA, AMD or Intel, or a 3D controller, never a BMC or virtual display), `gpu_vendor` (NVIDIA, AMD or Intel), `memory_mb` (frame buffer, when the host reports it; null otherwise), `vgpu_profiles` (the host's profiles for this GPU model).")),
        )
    }

    async fn read(
        &self,
        call: &Call<'_>,
        mut m: PciDevicesModel,
    ) -> Result<PciDevicesModel, Diagnostics> {
        let client = &call.conn;
        let host = resolve_host(client, m.host.as_deref(), "host").await?;
        let pci = client.host_pci(&host.obj).await.map_err(|e| {
            error_diagnostics(&format!("read the PCI devices of {}", host.name), &e)
        })?;
        let vendor = m.vendor_id.as_deref().and_then(parse_hex);
        let class = m.class_id.as_deref().map(|c| {
            let digits = c.trim_start_matches("0x").trim_start_matches("0X").len();
            (parse_hex(c).unwrap_or(0), digits <= 2)
        });
        let re = m
            .name_regex
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| {
                Diagnostics::from_attr_error(
                    AttrPath::attr("name_regex"),
                    "Invalid regular expression",
                    e.to_string(),
                )
            })?;
        let devices = pci
            .devices
            .iter()
            .filter(|d| !m.gpus_only.unwrap_or(false) || d.is_gpu())
            .filter(|d| !m.assignable_only.unwrap_or(false) || assignable(&pci, d))
            .filter(|d| vendor.is_none_or(|v| d.vendor_id == v))
            .filter(|d| {
                class.is_none_or(|(c, base)| {
                    if base {
                        d.class_id >> 8 == c
                    } else {
                        d.class_id == c
                    }
                })
            })
            .filter(|d| {
                re.as_ref()
                    .is_none_or(|r| r.is_match(&d.device_name) || r.is_match(&d.vendor_name))
            })
            .map(|d| entry(&pci, d))
            .collect();
        m.host = Some(host.name.clone());
        m.vgpu_profiles = Some(pci.vgpu_profiles.clone());
        m.devices = Some(devices);
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_parse_with_or_without_prefix() {
        assert_eq!(parse_hex("0x10de"), Some(0x10de));
        assert_eq!(parse_hex("10DE"), Some(0x10de));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(hex(0x302), "0x0302");
    }
}
