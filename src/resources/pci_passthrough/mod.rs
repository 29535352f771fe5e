//! `ceso_pci_passthrough`: a host's passthrough setting for one PCI device
//! (`HostPciPassthruSystem.UpdatePassthruConfig`), with the reboot it needs to take effect done
//! on request (maintenance mode, reboot, wait), and the host left as found on destroy.
//!
//! The VM side (giving the device to a VM) is `ceso_vm`'s `pci_device` blocks: a VM's devices
//! live with the VM, like its disks and adapters, so a VM is created with its GPU before its first
//! power-on. This resource is host state with its own lifecycle (the reboot).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cty::Value;
use crate::framework::resource::{ApplyRequest, ApplyResult, ImportedResource, PlanRequest};
use crate::framework::typed::{from_planned, get_attr, parse_duration, to_value};
use crate::framework::validator::{duration, matches};
use crate::framework::{AttrPath, Attribute, Block, Context, Diagnostics, Resource, Schema};
use crate::provider::{client, endpoint_of, error_diagnostics, resolve_host};
use crate::vsphere::pci::{normalize_address, HostPci};
use crate::vsphere::Client;

/// The `ceso_pci_passthrough` resource.
pub struct PciPassthrough;

const TYPE: &str = "ceso_pci_passthrough";
/// Address format, as the validator and docs say it.
pub const ADDRESS_PATTERN: &str = r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$";
/// How the address format is described in diagnostics.
pub const ADDRESS_WHAT: &str = "a PCI address DDDD:BB:SS.F in hex, e.g. 0000:3b:00.0";

/// The resource's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassthroughModel {
    pub id: Option<String>,
    pub endpoint: Option<String>,
    pub host: String,
    pub device: String,
    pub address: Option<String>,
    pub enabled: Option<bool>,
    pub reboot_if_required: Option<bool>,
    pub reboot_timeout: Option<String>,
    pub active: Option<bool>,
    pub reboot_required: Option<bool>,
    pub device_name: Option<String>,
    pub group: Option<Vec<String>>,
    pub enabled_before: Option<bool>,
}

/// The resource's schema.
pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description("Passthrough (DirectPath I/O) of one PCI device of a host: enables or disables it with the host's PCI passthrough system. A change takes effect after the host reboots: `reboot_required` says so, and `reboot_if_required = true` lets ceso put the host into maintenance mode, reboot it and wait. Destroy puts the setting back as it was before this resource managed it. To give the device to a VM, use `ceso_vm`'s `pci_device` block.")
            .attribute(Attribute::string("id").computed().use_state_for_unknown().description("`HOST/ADDRESS`."))
            .attribute(crate::provider::endpoint_attribute(true))
            .attribute(Attribute::string("host").required().requires_replace().description("The host's name."))
            .attribute(Attribute::string("device").required().requires_replace().validate(matches(ADDRESS_PATTERN, ADDRESS_WHAT)).description("The device's PCI address, `DDDD:BB:SS.F` (see `ceso_pci_devices`)."))
            .attribute(Attribute::string("address").computed().description("The device's address as the host writes it, known once passthrough is set: give it to `ceso_vm`'s `pci_device` so the VM waits for this resource (and for the reboot)."))
            .attribute(Attribute::bool("enabled").default_value(Value::Bool(true)).description("Whether passthrough is enabled for the device."))
            .attribute(Attribute::bool("reboot_if_required").default_value(Value::Bool(false)).description("When the change needs a host reboot to take effect, put the host into maintenance mode, reboot it, wait until it is back and take it out of maintenance mode. Off by default: a reboot stops the host's running VMs' service."))
            .attribute(Attribute::string("reboot_timeout").default_value(Value::String("30m".into())).validate(duration()).description("How long to wait for a reboot (maintenance mode, reboot, reconnect), e.g. `30m`."))
            .attribute(Attribute::bool("active").computed().description("Whether passthrough is in effect (enabled and the host rebooted since)."))
            .attribute(Attribute::bool("reboot_required").computed().description("Whether the setting waits for a host reboot to take effect."))
            .attribute(Attribute::string("device_name").computed().use_state_for_unknown().description("The device's name as the host reports it."))
            .attribute(Attribute::new("group", crate::cty::Type::List(Box::new(crate::cty::Type::String))).computed().use_state_for_unknown().description("Other devices the host passes through only together with this one (they share its dependent device, e.g. functions of one card); give them to a VM together."))
            .attribute(Attribute::bool("enabled_before").computed().use_state_for_unknown().description("The setting found before this resource managed it; destroy restores it.")),
    )
}

/// The state's value type (computed once).
fn value_type() -> &'static crate::cty::Type {
    static TYPE: std::sync::OnceLock<crate::cty::Type> = std::sync::OnceLock::new();
    crate::framework::schema::memo_type(&TYPE, schema)
}

fn model(v: &Value) -> Result<PassthroughModel, Diagnostics> {
    from_planned(v, value_type())
}

fn value(m: &PassthroughModel) -> Result<Value, Diagnostics> {
    to_value(m, value_type())
}

impl PassthroughModel {
    fn reboot_limit(&self) -> Duration {
        self.reboot_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(30 * 60))
    }

    /// Fills the computed attributes from what the host reports.
    fn observe(&mut self, pci: &HostPci) {
        let address = normalize_address(&self.device);
        let s = pci.state(&address);
        self.id = Some(format!("{}/{}", self.host, self.device));
        self.address = Some(address.clone());
        self.enabled = Some(s.enabled);
        self.active = Some(s.active);
        self.reboot_required = Some(s.enabled != s.active);
        self.device_name = pci.device(&address).map(|d| d.device_name.clone());
        self.group = Some(pci.group_mates(&address));
    }
}

/// The host's PCI state, the device checked to exist and be passthrough-capable.
async fn host_state(
    client: &Client,
    host: &str,
    device: &str,
) -> Result<(crate::vsphere::inventory::HostInfo, HostPci), Diagnostics> {
    let info = resolve_host(client, Some(host), "host").await?;
    let pci = client
        .host_pci(&info.obj)
        .await
        .map_err(|e| error_diagnostics(&format!("read the PCI devices of {host}"), &e))?;
    check_device(&pci, device).map_err(|(summary, detail)| {
        Diagnostics::from_attr_error(AttrPath::attr("device"), summary, detail)
    })?;
    Ok((info, pci))
}

/// Whether `device` exists on the host and can be passed through.
fn check_device(pci: &HostPci, device: &str) -> Result<(), (&'static str, String)> {
    let address = normalize_address(device);
    if pci.device(&address).is_none() {
        return Err((
            "Unknown PCI device",
            format!(
                "Host {} has no PCI device {address}; see ceso_pci_devices for its devices.",
                pci.name
            ),
        ));
    }
    if !pci.state(&address).capable {
        return Err((
            "Device cannot be passed through",
            format!(
                "Host {} reports PCI device {address} as not passthrough-capable.",
                pci.name
            ),
        ));
    }
    Ok(())
}

/// Disabling passthrough of a device a VM holds would break that VM's next power-on.
fn held_by(pci: &HostPci, device: &str) -> Option<String> {
    pci.holders
        .get(&normalize_address(device))
        .filter(|h| !h.is_empty())
        .map(|h| {
            h.iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// Sets passthrough to `enabled` when it differs, then reboots when asked and still needed.
/// Returns warnings (reboot pending).
async fn converge(
    client: &Arc<Client>,
    ctx: &Context,
    m: &PassthroughModel,
    info: &crate::vsphere::inventory::HostInfo,
    pci: &HostPci,
) -> Result<Diagnostics, Diagnostics> {
    let address = normalize_address(&m.device);
    let want = m.enabled.unwrap_or(true);
    let mut current = pci.clone();
    if current.state(&address).enabled != want {
        let system = current.passthru_system.clone().ok_or_else(|| {
            Diagnostics::from_error(
                "Unable to change PCI passthrough",
                format!("Host {} has no PCI passthrough system.", m.host),
            )
        })?;
        client
            .update_passthru(&system, &[(address.clone(), want)])
            .await
            .map_err(|e| {
                error_diagnostics(
                    &format!("change passthrough of {address} on {}", m.host),
                    &e,
                )
            })?;
        current = client
            .host_pci(&info.obj)
            .await
            .map_err(|e| error_diagnostics("read the host back", &e))?;
    }
    let s = current.state(&address);
    let mut diags = Diagnostics::new();
    if s.enabled == s.active {
        return Ok(diags);
    }
    if !m.reboot_if_required.unwrap_or(false) {
        diags.warning(
            "Passthrough change requires a host reboot",
            format!("Passthrough of {address} on {} is {} but takes effect only after the host reboots; reboot_required stays true until then. Set reboot_if_required = true to let ceso reboot it in maintenance mode.", m.host, if s.enabled { "enabled" } else { "disabled" }),
        );
        return Ok(diags);
    }
    reboot(client, ctx, m, info, current.in_maintenance).await?;
    Ok(diags)
}

/// Maintenance mode (unless already in it), reboot, wait, leave maintenance mode (if entered).
async fn reboot(
    client: &Arc<Client>,
    ctx: &Context,
    m: &PassthroughModel,
    info: &crate::vsphere::inventory::HostInfo,
    already_in_maintenance: bool,
) -> Result<(), Diagnostics> {
    let limit = m.reboot_limit();
    let fail = |what: &str, e: &crate::vsphere::Error| {
        error_diagnostics(&format!("{what} host {}", m.host), e)
    };
    if !already_in_maintenance {
        client
            .set_maintenance(&info.obj, true, Some(limit), &ctx.cancel)
            .await
            .map_err(|e| fail("enter maintenance mode on", &e))?;
    }
    client
        .reboot_host(&info.obj, limit, &ctx.cancel)
        .await
        .map_err(|e| fail("reboot", &e))?;
    if !already_in_maintenance {
        client
            .set_maintenance(&info.obj, false, Some(limit), &ctx.cancel)
            .await
            .map_err(|e| fail("exit maintenance mode on", &e))?;
    }
    Ok(())
}

impl PciPassthrough {
    /// Reads the host back into the apply result, keeping `diags`.
    async fn finish(
        &self,
        client: &Client,
        info: &crate::vsphere::inventory::HostInfo,
        mut m: PassthroughModel,
        mut diags: Diagnostics,
    ) -> ApplyResult {
        match client.host_pci(&info.obj).await {
            Ok(pci) => m.observe(&pci),
            Err(e) => diags.extend(error_diagnostics("read the host back", &e)),
        }
        match value(&m) {
            Ok(v) => ApplyResult {
                state: crate::framework::typed::unknown_to_null(&v),
                private: None,
                diags,
            },
            Err(d) => {
                diags.extend(d);
                ApplyResult::failed(Value::Null, diags)
            }
        }
    }
}

#[async_trait]
impl Resource for PciPassthrough {
    fn type_name(&self) -> &'static str {
        TYPE
    }

    fn schema(&self) -> Schema {
        schema()
    }

    async fn modify_plan(&self, ctx: &Context, req: &mut PlanRequest<'_>) {
        if *req.config == Value::Null || ctx.provider_data.is_none() {
            return;
        }
        let (Value::String(host), Value::String(device)) =
            (get_attr(req.config, "host"), get_attr(req.config, "device"))
        else {
            return;
        };
        let Ok(client) = client(ctx, endpoint_of(req.config)).await else {
            return;
        };
        let pci = match host_state(&client, host, device).await {
            Ok((_, pci)) => pci,
            Err(d) => {
                req.diags.extend(d);
                return;
            }
        };
        let enabled = get_attr(&req.planned, "enabled") != &Value::Bool(false);
        if !enabled {
            if let Some(vms) = held_by(&pci, device) {
                req.diags.attr_error(
                    AttrPath::attr("enabled"),
                    "Device in use",
                    format!("PCI device {device} on {host} is given to VM {vms}; disabling passthrough would stop it from powering on. Remove the device from the VM first."),
                );
            }
        }
        // Whether a reboot will be pending depends on the host after apply: unknown when the
        // setting changes, or a pending reboot is now allowed. (Changing only how ceso would
        // reboot, e.g. after an import, changes nothing on the host.)
        let setting_changes = *req.prior == Value::Null
            || get_attr(&req.planned, "enabled") != get_attr(req.prior, "enabled");
        let reboots_now = get_attr(&req.planned, "reboot_if_required") == &Value::Bool(true)
            && get_attr(req.prior, "reboot_required") == &Value::Bool(true);
        if setting_changes || reboots_now {
            for a in ["active", "reboot_required", "address"] {
                crate::framework::walk::set_attr(&mut req.planned, a, Value::Unknown);
            }
        }
    }

    async fn create(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        let mut m = match model(req.planned) {
            Ok(m) => m,
            Err(d) => return ApplyResult::failed(Value::Null, d),
        };
        m.device = normalize_address(&m.device);
        let client = match client(ctx, endpoint_of(req.planned)).await {
            Ok(c) => c,
            Err(d) => return ApplyResult::failed(Value::Null, d),
        };
        let (info, pci) = match host_state(&client, &m.host, &m.device).await {
            Ok(x) => x,
            Err(d) => return ApplyResult::failed(Value::Null, d),
        };
        m.enabled_before = Some(pci.state(&m.device).enabled);
        // From here on the host may have changed: state is always returned.
        let diags = match converge(&client, ctx, &m, &info, &pci).await {
            Ok(d) | Err(d) => d,
        };
        self.finish(&client, &info, m, diags).await
    }

    async fn read(&self, ctx: &Context, state: &Value) -> Result<Option<Value>, Diagnostics> {
        let mut m = model(state)?;
        let client = client(ctx, endpoint_of(state)).await?;
        let inv = client
            .inventory_cached()
            .await
            .map_err(|e| error_diagnostics("read the inventory", &e))?;
        let Ok(info) = inv.host(&m.host) else {
            return Ok(None);
        };
        let pci = client
            .host_pci(&info.obj)
            .await
            .map_err(|e| error_diagnostics(&format!("read the PCI devices of {}", m.host), &e))?;
        if pci.device(&m.device).is_none() {
            return Ok(None);
        }
        m.observe(&pci);
        value(&m).map(Some)
    }

    async fn update(&self, ctx: &Context, req: &ApplyRequest<'_>) -> ApplyResult {
        let (m, prior) = match (model(req.planned), model(req.prior)) {
            (Ok(m), Ok(p)) => (m, p),
            (Err(d), _) | (_, Err(d)) => return ApplyResult::failed(req.prior.clone(), d),
        };
        let client = match client(ctx, endpoint_of(req.prior)).await {
            Ok(c) => c,
            Err(d) => return ApplyResult::failed(req.prior.clone(), d),
        };
        let (info, pci) = match host_state(&client, &m.host, &m.device).await {
            Ok(x) => x,
            Err(d) => return ApplyResult::failed(req.prior.clone(), d),
        };
        let m = PassthroughModel {
            enabled_before: prior.enabled_before,
            ..m
        };
        let diags = match converge(&client, ctx, &m, &info, &pci).await {
            Ok(d) | Err(d) => d,
        };
        self.finish(&client, &info, m, diags).await
    }

    async fn delete(&self, ctx: &Context, req: &ApplyRequest<'_>) -> Diagnostics {
        let m = match model(req.prior) {
            Ok(m) => m,
            Err(d) => return d,
        };
        let client = match client(ctx, endpoint_of(req.prior)).await {
            Ok(c) => c,
            Err(d) => return d,
        };
        let inv = match client.inventory_cached().await {
            Ok(i) => i,
            Err(e) => return error_diagnostics("read the inventory", &e),
        };
        let Ok(info) = inv.host(&m.host).cloned() else {
            return Diagnostics::new();
        };
        let pci = match client.host_pci(&info.obj).await {
            Ok(p) => p,
            Err(e) => return error_diagnostics("read the host", &e),
        };
        if pci.device(&m.device).is_none() {
            return Diagnostics::new();
        }
        let before = m.enabled_before.unwrap_or(false);
        if pci.state(&m.device).enabled == before {
            return Diagnostics::new();
        }
        if !before {
            if let Some(vms) = held_by(&pci, &m.device) {
                return Diagnostics::from_error(
                    "Device in use",
                    format!("PCI device {} on {} is given to VM {vms}; destroying this resource would disable passthrough the VM needs. Remove the device from the VM first.", m.device, m.host),
                );
            }
        }
        let restore = PassthroughModel {
            enabled: Some(before),
            ..m.clone()
        };
        match converge(&client, ctx, &restore, &info, &pci).await {
            Ok(d) | Err(d) => d,
        }
    }

    fn supports_import(&self) -> bool {
        true
    }

    async fn import(&self, ctx: &Context, id: &str) -> Result<Vec<ImportedResource>, Diagnostics> {
        let (endpoint, id) = crate::provider::split_import_id(id);
        let bad = |why: String| {
            Diagnostics::from_error(
                "Unable to import ceso_pci_passthrough",
                format!("{why}. Use HOST/ADDRESS, e.g. esx-01.example.com/0000:3b:00.0."),
            )
        };
        let (host, device) = id
            .rsplit_once('/')
            .ok_or_else(|| bad(format!("{id:?} has no '/'")))?;
        if !crate::vsphere::pci::is_address(&normalize_address(device)) {
            return Err(bad(format!("{device:?} is not {ADDRESS_WHAT}")));
        }
        let client = client(ctx, endpoint).await?;
        let (_, pci) = host_state(&client, host, device).await?;
        let mut m = PassthroughModel {
            host: host.to_string(),
            device: normalize_address(device),
            reboot_if_required: Some(false),
            reboot_timeout: Some("30m".into()),
            ..PassthroughModel::default()
        };
        m.observe(&pci);
        // Imported as found: destroy leaves it as it is now.
        m.enabled_before = m.enabled;
        Ok(vec![ImportedResource {
            type_name: TYPE.to_string(),
            state: crate::provider::with_endpoint(value(&m)?, endpoint),
            private: Vec::new(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_pattern_matches_the_pci_format() {
        let re = regex::Regex::new(ADDRESS_PATTERN).unwrap();
        assert!(re.is_match("0000:3b:00.0"));
        assert!(re.is_match("0000:AF:1f.7"));
        assert!(!re.is_match("3b:00.0"));
        assert!(!re.is_match("0000:3b:00.8"));
    }
}
