//! `ceso_vm`'s checks and plan: static validation, alignment of disks (by label) and network
//! adapters (by position) with what state knows, and the plan-time lookups that catch unknown
//! guest OS ids and impossible changes before apply, and warn about networks, hosts and
//! datastores not found (yet: see `names`).

use std::collections::BTreeSet;

use crate::cty::Value;
use crate::framework::resource::PlanRequest;
use crate::framework::typed::get_attr;
use crate::framework::walk::set_attr;
use crate::framework::{AttrPath, Context, Diagnostics};
use crate::session::{client, endpoint_of};

use super::spec::SCSI_RESERVED_UNIT;
use super::values::{elements, int, string};

/// Static checks of a configuration.
pub fn validate(config: &Value, diags: &mut Diagnostics) {
    super::pci::validate(config, diags);
    if let (Some(cpus), Some(cores)) = (
        int(get_attr(config, "num_cpus")),
        int(get_attr(config, "cores_per_socket")),
    ) {
        if cores > 0 && cpus % cores != 0 {
            diags.attr_error(
                AttrPath::attr("num_cpus"),
                "Invalid CPU topology",
                format!("num_cpus ({cpus}) must be a multiple of cores_per_socket ({cores})."),
            );
        }
    }
    if let Some(mem) = int(get_attr(config, "memory_mb")) {
        if mem % 4 != 0 {
            diags.attr_error(
                AttrPath::attr("memory_mb"),
                "Invalid memory size",
                format!("memory_mb ({mem}) must be a multiple of 4."),
            );
        }
    }
    let has = |block: &str| !elements(get_attr(config, block)).is_empty();
    if has("ovf") && has("clone") {
        diags.attr_error(
            AttrPath::attr("ovf"),
            "Conflicting sources",
            "Give either an `ovf` block or a `clone` block, not both.",
        );
    }
    if let Some(src) = elements(get_attr(config, "ovf"))
        .first()
        .and_then(|o| string(get_attr(o, "source")))
    {
        let path = std::path::Path::new(src);
        let is_url = src.starts_with("http://") || src.starts_with("https://");
        if is_url {
            // Fetched at apply time.
        } else if !path.is_file() {
            diags.attr_error(AttrPath::attr("ovf").join_index(0).join_attr("source"), "OVF package not found", format!("{src:?} is not a file on this machine (give the path or http(s) URL of an .ova, or of an .ovf with its disks beside it)."));
        } else if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("ova") || e.eq_ignore_ascii_case("ovf"))
        {
            diags.attr_error(
                AttrPath::attr("ovf").join_index(0).join_attr("source"),
                "Not an OVF package",
                format!("{src:?} should end in .ova or .ovf."),
            );
        }
    }
    let mut labels = BTreeSet::new();
    let mut units = BTreeSet::new();
    for (i, d) in elements(get_attr(config, "disk")).iter().enumerate() {
        let here = AttrPath::attr("disk").join_index(i);
        if let Some(label) = string(get_attr(d, "label")) {
            if !labels.insert(label.to_string()) {
                diags.attr_error(here.join_attr("label"), "Duplicate disk label", format!("Another disk is already labelled {label:?}; labels identify disks and must be unique."));
            }
        }
        if let Some(unit) = int(get_attr(d, "unit_number")) {
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

/// The resource's plan hook.
pub async fn modify(ctx: &Context, req: &mut PlanRequest<'_>) {
    let creating = *req.prior == Value::Null;
    align_disks(req);
    align_nics(req);
    super::pci::align(req);
    // Guest IPs change only with the power state (or a power cycle); keep them otherwise.
    for a in ["ip_addresses", "default_ip"] {
        set_attr(&mut req.planned, a, get_attr(req.prior, a).clone());
    }
    let other_changes = !creating && req.planned != *req.prior;
    let power_changes = get_attr(req.prior, "power_state") != get_attr(&req.planned, "power_state")
        || (other_changes && get_attr(req.config, "allow_power_cycle") == &Value::Bool(true));
    if creating || power_changes {
        for a in ["ip_addresses", "default_ip"] {
            set_attr(&mut req.planned, a, Value::Unknown);
        }
    }
    check_power_cycle(req);
    let moving = super::migrate::plan(req);
    if creating
        && elements(get_attr(req.config, "clone")).is_empty()
        && get_attr(req.config, "memory_mb") == &Value::Null
    {
        req.diags.attr_error(AttrPath::attr("memory_mb"), "Missing memory size", "memory_mb is required for a VM created from scratch (a clone takes it from its template).");
    }
    if ctx.provider_data.is_none() || *req.config == Value::Null {
        return;
    }
    let Ok(client) = client(ctx, endpoint_of(req.config)).await else {
        return;
    };
    // Names not found are warnings: the same apply may create them (e.g. a ceso_vlan).
    let names = super::names::Names::of_value(req.config);
    let Ok(inv) = names.inventory(&client).await else {
        return;
    };
    names.check_at_plan(&inv, &mut req.diags);
    super::pci::check_against_host(&client, &inv, req).await;
    if moving == super::migrate::Move::Host {
        super::migrate::check_networks(&inv, req);
    }
    if moving == super::migrate::Move::Endpoint {
        super::migrate::warn_snapshots(ctx, req).await;
    }
    if let Some(guest) = string(get_attr(req.config, "guest_id")) {
        let changed = string(get_attr(req.prior, "guest_id")) != Some(guest);
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
                req.diags.attr_error(
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
        if let Some(template) = elements(get_attr(req.config, "clone"))
            .first()
            .and_then(|c| string(get_attr(c, "template")))
        {
            if let Err(d) = super::create::find_source(&client, template).await {
                req.diags.extend(d);
            }
            let linked = elements(get_attr(req.config, "clone"))
                .first()
                .map(|c| get_attr(c, "linked_clone") == &Value::Bool(true))
                .unwrap_or(false);
            if linked && !client.about().is_vcenter() {
                req.diags.attr_error(AttrPath::attr("clone").join_index(0).join_attr("linked_clone"), "Linked clones need vCenter", "A standalone ESXi host has no clone API; ceso copies the disks instead. Set linked_clone = false.");
            }
        }
    }
}

/// Disks keep their computed values (key, path, placement) by label; new disks get unknowns;
/// a shrink is refused or forces replacement.
fn align_disks(req: &mut PlanRequest<'_>) {
    let prior: Vec<Value> = elements(get_attr(req.prior, "disk")).to_vec();
    let config: Vec<Value> = elements(get_attr(req.config, "disk")).to_vec();
    let Value::List(mut planned) = get_attr(&req.planned, "disk").clone() else {
        return;
    };
    let force_new = get_attr(req.config, "force_new_on_shrink") == &Value::Bool(true);
    for (i, d) in planned.iter_mut().enumerate() {
        let cfg = config.get(i).cloned().unwrap_or(Value::Null);
        let label = get_attr(d, "label").clone();
        let old = prior.iter().find(|p| get_attr(p, "label") == &label);
        match old {
            Some(old) => {
                for a in ["key", "path"] {
                    set_attr(d, a, get_attr(old, a).clone());
                }
                for a in ["thin", "datastore", "unit_number"] {
                    if get_attr(&cfg, a) == &Value::Null {
                        set_attr(d, a, get_attr(old, a).clone());
                    }
                }
                if let (Some(was), Some(now)) =
                    (int(get_attr(old, "size_gb")), int(get_attr(d, "size_gb")))
                {
                    if now < was {
                        let here = AttrPath::attr("disk").join_index(i).join_attr("size_gb");
                        if force_new {
                            req.requires_replace.push(here);
                        } else {
                            req.diags.attr_error(here, "Disks cannot shrink", format!("Disk {:?} is {was} GiB; vSphere cannot shrink it to {now} GiB. Keep the size, or set force_new_on_shrink = true to replace the VM.", string(&label).unwrap_or_default()));
                        }
                    }
                }
            }
            None => {
                for a in ["key", "path"] {
                    set_attr(d, a, Value::Unknown);
                }
                for a in ["thin", "datastore", "unit_number"] {
                    if get_attr(&cfg, a) == &Value::Null {
                        set_attr(d, a, Value::Unknown);
                    }
                }
            }
        }
    }
    set_attr(&mut req.planned, "disk", Value::List(planned));
}

/// Adapters keep key and MAC while their network and type stay; otherwise they are new.
fn align_nics(req: &mut PlanRequest<'_>) {
    let prior: Vec<Value> = elements(get_attr(req.prior, "network_interface")).to_vec();
    let config: Vec<Value> = elements(get_attr(req.config, "network_interface")).to_vec();
    let Value::List(mut planned) = get_attr(&req.planned, "network_interface").clone() else {
        return;
    };
    for (i, n) in planned.iter_mut().enumerate() {
        let cfg = config.get(i).cloned().unwrap_or(Value::Null);
        let adapter_cfg = get_attr(&cfg, "adapter_type").clone();
        match prior.get(i) {
            Some(old)
                if adapter_cfg == Value::Null || &adapter_cfg == get_attr(old, "adapter_type") =>
            {
                set_attr(n, "key", get_attr(old, "key").clone());
                set_attr(n, "adapter_type", get_attr(old, "adapter_type").clone());
                if get_attr(&cfg, "mac_address") == &Value::Null {
                    set_attr(n, "mac_address", get_attr(old, "mac_address").clone());
                }
            }
            _ => {
                set_attr(n, "key", Value::Unknown);
                if adapter_cfg == Value::Null {
                    set_attr(n, "adapter_type", Value::String("vmxnet3".into()));
                }
                if get_attr(&cfg, "mac_address") == &Value::Null {
                    set_attr(n, "mac_address", Value::Unknown);
                }
            }
        }
    }
    set_attr(&mut req.planned, "network_interface", Value::List(planned));
}

/// A change vSphere makes only on a powered-off VM, planned on a running VM without
/// allow_power_cycle, is an error now rather than half-way through apply.
fn check_power_cycle(req: &mut PlanRequest<'_>) {
    if *req.prior == Value::Null || string(get_attr(req.prior, "power_state")) != Some("on") {
        return;
    }
    if get_attr(req.config, "allow_power_cycle") == &Value::Bool(true) {
        return;
    }
    let changed = |a: &str| {
        let now = get_attr(&req.planned, a);
        now != &Value::Unknown && now != get_attr(req.prior, a)
    };
    let hot = |a: &str| get_attr(req.prior, a) == &Value::Bool(true);
    let grows = |a: &str| int(get_attr(&req.planned, a)) >= int(get_attr(req.prior, a));
    let mut reasons = Vec::new();
    if changed("num_cpus") && !(hot("cpu_hot_add") && grows("num_cpus")) {
        reasons.push((
            "num_cpus",
            "vCPUs change on a running VM only with cpu_hot_add, and only upwards",
        ));
    }
    if changed("memory_mb") && !(hot("memory_hot_add") && grows("memory_mb")) {
        reasons.push((
            "memory_mb",
            "memory changes on a running VM only with memory_hot_add, and only upwards",
        ));
    }
    for a in [
        "cores_per_socket",
        "cpu_hot_add",
        "memory_hot_add",
        "firmware",
        "guest_id",
    ] {
        if changed(a) {
            reasons.push((a, "this changes only while the VM is powered off"));
        }
    }
    if super::pci::changes(req) {
        reasons.push((
            "pci_device",
            "PCI passthrough devices are added and removed only while the VM is off",
        ));
    }
    for (attr, why) in reasons {
        req.diags.attr_error(
            AttrPath::attr(attr),
            "Change needs a power cycle",
            format!("The VM is powered on and {why}. Set allow_power_cycle = true to let ceso power it off and on again, or power it off first (power_state = \"off\")."),
        );
    }
}
