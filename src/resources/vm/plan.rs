//! `ceso_vm`'s checks and plan: static validation, alignment of disks (by label) and network
//! adapters (by position) with what state knows, and the plan-time lookups that catch unknown
//! guest OS ids and impossible changes before apply, and warn about networks, hosts and
//! datastores not found (yet: see `names`). Everything is read through `VmView`s.

use std::collections::BTreeSet;

use crate::framework::typed_resource::{Connect, Plan};
use crate::framework::{AttrPath, Context, Diagnostics, Tri};
use crate::session::Vsphere;

use super::migrate::Move;
use super::spec::SCSI_RESERVED_UNIT;
use super::view::{DiskView, NicView, VmView};

/// Static checks of a configuration.
pub fn validate(config: &VmView, diags: &mut Diagnostics) {
    super::pci::validate(config, diags);
    if let (Tri::Known(cpus), Tri::Known(cores)) = (config.num_cpus, config.cores_per_socket) {
        if cores > 0 && cpus % cores != 0 {
            diags.attr_error(
                AttrPath::attr("num_cpus"),
                "Invalid CPU topology",
                format!("num_cpus ({cpus}) must be a multiple of cores_per_socket ({cores})."),
            );
        }
    }
    if let Tri::Known(mem) = config.memory_mb {
        if mem % 4 != 0 {
            diags.attr_error(
                AttrPath::attr("memory_mb"),
                "Invalid memory size",
                format!("memory_mb ({mem}) must be a multiple of 4."),
            );
        }
    }
    if config.ovf_block().is_some() && config.clone_block().is_some() {
        diags.attr_error(
            AttrPath::attr("ovf"),
            "Conflicting sources",
            "Give either an `ovf` block or a `clone` block, not both.",
        );
    }
    if let Some(src) = config.ovf_block().and_then(|o| o.source.as_deref()) {
        check_ovf_source(src, diags);
    }
    let mut labels = BTreeSet::new();
    let mut units = BTreeSet::new();
    for (i, d) in config.disks().iter().enumerate() {
        let here = AttrPath::attr("disk").join_index(i);
        if let Tri::Known(label) = &d.label {
            if !labels.insert(label.clone()) {
                diags.attr_error(here.join_attr("label"), "Duplicate disk label", format!("Another disk is already labelled {label:?}; labels identify disks and must be unique."));
            }
        }
        if let Tri::Known(unit) = d.unit_number {
            if unit == SCSI_RESERVED_UNIT {
                diags.attr_error(
                    here.join_attr("unit_number"),
                    "Reserved unit number",
                    "SCSI unit 7 is the controller's own; use 0-6 or 8-63.",
                );
            } else if !units.insert(unit) {
                diags.attr_error(
                    here.join_attr("unit_number"),
                    "Duplicate unit number",
                    format!("Another disk already uses unit {unit}."),
                );
            }
        }
    }
}

/// An OVF `source` on this machine must be an .ova or .ovf file (URLs are fetched at apply).
fn check_ovf_source(src: &str, diags: &mut Diagnostics) {
    let path = std::path::Path::new(src);
    let here = AttrPath::attr("ovf").join_index(0).join_attr("source");
    if src.starts_with("http://") || src.starts_with("https://") {
        // Fetched at apply time.
    } else if !path.is_file() {
        diags.attr_error(here, "OVF package not found", format!("{src:?} is not a file on this machine (give the path or http(s) URL of an .ova, or of an .ovf with its disks beside it)."));
    } else if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ova") || e.eq_ignore_ascii_case("ovf"))
    {
        diags.attr_error(
            here,
            "Not an OVF package",
            format!("{src:?} should end in .ova or .ovf."),
        );
    }
}

/// Writes the aligned blocks and kept values of `planned` back into the plan.
fn write_back(plan: &mut Plan<'_, '_>, planned: &VmView) -> Result<(), Diagnostics> {
    if let Tri::Known(disks) = &planned.disk {
        plan.set("disk", disks)?;
    }
    if let Tri::Known(nics) = &planned.network_interface {
        plan.set("network_interface", nics)?;
    }
    if let Tri::Known(pci) = &planned.pci_device {
        plan.set("pci_device", pci)?;
    }
    plan.set("memory_reservation_mb", &planned.memory_reservation_mb)?;
    plan.set("ip_addresses", &planned.ip_addresses)?;
    plan.set("default_ip", &planned.default_ip)
}

/// The resource's plan hook.
pub async fn modify(ctx: &Context, plan: &mut Plan<'_, '_>) {
    let (Ok(config), Ok(prior), Ok(mut planned)) = (
        plan.config::<VmView>(),
        plan.prior::<VmView>(),
        plan.planned::<VmView>(),
    ) else {
        return;
    };
    let creating = prior.is_none();
    let empty = VmView::default();
    let was = prior.as_ref().unwrap_or(&empty);
    align_disks(&config, was, &mut planned, plan);
    align_nics(&config, was, &mut planned);
    super::pci::align(&config, was, &mut planned, plan.diags());
    // Guest IPs change only with the power state (or a power cycle); keep them otherwise.
    planned.ip_addresses = was.ip_addresses.clone();
    planned.default_ip = was.default_ip.clone();
    if let Err(d) = write_back(plan, &planned) {
        plan.diags().extend(d);
        return;
    }
    let other_changes = !creating && plan.changes_anything();
    let power_changes = was.power_state != planned.power_state
        || (other_changes && config.allow_power_cycle == Tri::Known(true));
    if creating || power_changes {
        plan.set_unknown("ip_addresses");
        plan.set_unknown("default_ip");
    }
    if let Some(prior) = &prior {
        check_power_cycle(&config, prior, &planned, plan.diags());
    }
    let moving = super::migrate::plan(&config, prior.as_ref(), &mut planned, plan);
    if creating && config.clone_block().is_none() && config.memory_mb.is_null() {
        plan.diags().attr_error(AttrPath::attr("memory_mb"), "Missing memory size", "memory_mb is required for a VM created from scratch (a clone takes it from its template).");
    }
    if ctx.provider_data.is_none() {
        return;
    }
    let Ok(client) = Vsphere::connect(ctx, config.endpoint.as_deref()).await else {
        return;
    };
    // Names not found are warnings: the same apply may create them (e.g. a ceso_vlan).
    let names = super::names::Names::of_view(&config);
    let Ok(inv) = names.inventory(&client).await else {
        return;
    };
    names.check_at_plan(&inv, plan.diags());
    super::pci::check_against_host(&client, &inv, &config, was, plan.diags()).await;
    if moving == Move::Host {
        super::migrate::check_networks(&inv, &config, &planned, plan.diags());
    }
    if moving == Move::Endpoint {
        super::migrate::warn_snapshots(ctx, was, plan.diags()).await;
    }
    let req_diags = plan.diags();
    if let Tri::Known(guest) = &config.guest_id {
        let changed = was.guest_id.as_deref() != Some(guest.as_str());
        let browser = inv
            .hosts
            .first()
            .and_then(|h| h.parent.as_ref())
            .and_then(|cr| inv.environment_browsers.get(cr));
        if let (true, Some(browser)) = (changed, browser) {
            if let Ok(Err(known)) = client.check_guest_id(browser, guest).await {
                let stem: String = guest
                    .to_lowercase()
                    .replace("guest", "")
                    .chars()
                    .take(6)
                    .collect();
                let close: Vec<&String> = known
                    .iter()
                    .filter(|k| !stem.is_empty() && k.to_lowercase().contains(&stem))
                    .take(8)
                    .collect();
                req_diags.attr_error(
                    AttrPath::attr("guest_id"),
                    "Unknown guest OS",
                    format!(
                        "{guest:?} is not a guest OS id this host supports{}",
                        if close.is_empty() {
                            ".".to_string()
                        } else {
                            format!(
                                "; close matches: {}.",
                                close
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    ),
                );
            }
        }
    }
    if creating {
        if let Some(clone) = config.clone_block() {
            if let Tri::Known(template) = &clone.template {
                if let Err(d) = super::create::find_source(&client, template).await {
                    req_diags.extend(d);
                }
                if clone.linked_clone == Tri::Known(true) && !client.about().is_vcenter() {
                    req_diags.attr_error(AttrPath::attr("clone").join_index(0).join_attr("linked_clone"), "Linked clones need vCenter", "A standalone ESXi host has no clone API; ceso copies the disks instead. Set linked_clone = false.");
                }
            }
        }
    }
}

/// Disks keep their computed values (key, path, placement) by label; new disks get unknowns;
/// a shrink is refused or forces replacement.
fn align_disks(config: &VmView, prior: &VmView, planned: &mut VmView, plan: &mut Plan<'_, '_>) {
    let Tri::Known(disks) = &mut planned.disk else {
        return;
    };
    let force_new = config.force_new_on_shrink == Tri::Known(true);
    let none = DiskView::default();
    for (i, d) in disks.iter_mut().enumerate() {
        let cfg = config.disks().get(i).unwrap_or(&none);
        match prior.disks().iter().find(|p| p.label == d.label) {
            Some(old) => {
                d.key = old.key;
                d.path = old.path.clone();
                if cfg.thin.is_null() {
                    d.thin = old.thin;
                }
                if cfg.datastore.is_null() {
                    d.datastore = old.datastore.clone();
                }
                if cfg.unit_number.is_null() {
                    d.unit_number = old.unit_number;
                }
                if let (Tri::Known(was), Tri::Known(now)) = (old.size_gb, d.size_gb) {
                    if now < was {
                        let here = AttrPath::attr("disk").join_index(i).join_attr("size_gb");
                        if force_new {
                            plan.requires_replace(here);
                        } else {
                            plan.diags().attr_error(here, "Disks cannot shrink", format!("Disk {:?} is {was} GiB; vSphere cannot shrink it to {now} GiB. Keep the size, or set force_new_on_shrink = true to replace the VM.", d.label.as_deref().unwrap_or_default()));
                        }
                    }
                }
            }
            None => {
                d.key = Tri::Unknown;
                d.path = Tri::Unknown;
                if cfg.thin.is_null() {
                    d.thin = Tri::Unknown;
                }
                if cfg.datastore.is_null() {
                    d.datastore = Tri::Unknown;
                }
                if cfg.unit_number.is_null() {
                    d.unit_number = Tri::Unknown;
                }
            }
        }
    }
}

/// Adapters keep key and MAC while their network and type stay; otherwise they are new.
fn align_nics(config: &VmView, prior: &VmView, planned: &mut VmView) {
    let Tri::Known(nics) = &mut planned.network_interface else {
        return;
    };
    let none = NicView::default();
    for (i, n) in nics.iter_mut().enumerate() {
        let cfg = config.nics().get(i).unwrap_or(&none);
        match prior.nics().get(i) {
            Some(old) if cfg.adapter_type.is_null() || cfg.adapter_type == old.adapter_type => {
                n.key = old.key;
                n.adapter_type = old.adapter_type.clone();
                if cfg.mac_address.is_null() {
                    n.mac_address = old.mac_address.clone();
                }
            }
            _ => {
                n.key = Tri::Unknown;
                if cfg.adapter_type.is_null() {
                    n.adapter_type = Tri::Known("vmxnet3".into());
                }
                if cfg.mac_address.is_null() {
                    n.mac_address = Tri::Unknown;
                }
            }
        }
    }
}

/// A change vSphere makes only on a powered-off VM, planned on a running VM without
/// allow_power_cycle, is an error now rather than half-way through apply.
fn check_power_cycle(config: &VmView, prior: &VmView, planned: &VmView, diags: &mut Diagnostics) {
    if prior.power_state.as_deref() != Some("on") || config.allow_power_cycle == Tri::Known(true) {
        return;
    }
    fn changed<T: PartialEq>(now: &Tri<T>, was: &Tri<T>) -> bool {
        !now.is_unknown() && now != was
    }
    let grows = |now: &Tri<i64>, was: &Tri<i64>| now.known() >= was.known();
    let hot = |v: &Tri<bool>| *v == Tri::Known(true);
    let mut reasons = Vec::new();
    if changed(&planned.num_cpus, &prior.num_cpus)
        && !(hot(&prior.cpu_hot_add) && grows(&planned.num_cpus, &prior.num_cpus))
    {
        reasons.push((
            "num_cpus",
            "vCPUs change on a running VM only with cpu_hot_add, and only upwards",
        ));
    }
    if changed(&planned.memory_mb, &prior.memory_mb)
        && !(hot(&prior.memory_hot_add) && grows(&planned.memory_mb, &prior.memory_mb))
    {
        reasons.push((
            "memory_mb",
            "memory changes on a running VM only with memory_hot_add, and only upwards",
        ));
    }
    let off_only = [
        (
            "cores_per_socket",
            changed(&planned.cores_per_socket, &prior.cores_per_socket),
        ),
        (
            "cpu_hot_add",
            changed(&planned.cpu_hot_add, &prior.cpu_hot_add),
        ),
        (
            "memory_hot_add",
            changed(&planned.memory_hot_add, &prior.memory_hot_add),
        ),
        ("firmware", changed(&planned.firmware, &prior.firmware)),
        ("guest_id", changed(&planned.guest_id, &prior.guest_id)),
    ];
    for (a, _) in off_only.iter().filter(|(_, c)| *c) {
        reasons.push((a, "this changes only while the VM is powered off"));
    }
    if planned.pci_identities() != prior.pci_identities() {
        reasons.push((
            "pci_device",
            "PCI passthrough devices are added and removed only while the VM is off",
        ));
    }
    for (attr, why) in reasons {
        diags.attr_error(
            AttrPath::attr(attr),
            "Change needs a power cycle",
            format!("The VM is powered on and {why}. Set allow_power_cycle = true to let ceso power it off and on again, or power it off first (power_state = \"off\")."),
        );
    }
}
