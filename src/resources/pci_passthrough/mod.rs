//! `ceso_pci_passthrough`: a host's passthrough setting for one PCI device
//! (`HostPciPassthruSystem.UpdatePassthruConfig`), with the reboot it needs to take effect done
//! on request (maintenance mode, reboot, wait), and the host left as found on destroy.
//!
//! The VM side (giving the device to a VM) is `ceso_vm`'s `pci_device` blocks: a VM's devices
//! live with the VM, like its disks and adapters, so a VM is created with its GPU before its first
//! power-on. This resource is host state with its own lifecycle (the reboot).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cty::Value;
use crate::framework::timeouts::{self, Operation, Timeouts};
use crate::framework::typed_resource::{Connect, Import, Outcome, Plan, TypedResource};
use crate::framework::validator::{duration, matches};
use crate::framework::{AttrPath, Attribute, Block, Context, Diagnostics, Schema, Tri};
use crate::session::{error_diagnostics, resolve_host, Call, Vsphere};
use crate::units::parse_duration;
use crate::vsphere::inventory::HostInfo;
use crate::vsphere::pci::{normalize_address, HostPci, ADDRESS_PATTERN, ADDRESS_WHAT};
use crate::vsphere::Client;

/// The `ceso_pci_passthrough` resource.
pub struct PciPassthrough;

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
    pub timeouts: Option<Timeouts>,
}

crate::endpoint_scoped_model!(PassthroughModel);

/// The resource's schema.
pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description("Passthrough (DirectPath I/O) of one PCI device of a host: enables or disables it with the host's PCI passthrough system. A change takes effect after the host reboots: `reboot_required` says so, and `reboot_if_required = true` lets ceso put the host into maintenance mode, reboot it and wait. Destroy puts the setting back as it was before this resource managed it. To give the device to a VM, use `ceso_vm`'s `pci_device` block.")
            .attribute(Attribute::string("id").computed().use_state_for_unknown().description("`HOST/ADDRESS`."))
            .attribute(crate::session::endpoint_attribute(true))
            .attribute(Attribute::string("host").required().requires_replace().description("The host's name."))
            .attribute(Attribute::string("device").required().requires_replace().validate(matches(ADDRESS_PATTERN, ADDRESS_WHAT)).description("The device's PCI address, `DDDD:BB:SS.F` (see `ceso_pci_devices`)."))
            .attribute(Attribute::string("address").computed().description("The device's address as the host writes it, known once passthrough is set: give it to `ceso_vm`'s `pci_device` so the VM waits for this resource (and for the reboot)."))
            .attribute(Attribute::bool("enabled").default_value(Value::Bool(true)).description("Whether passthrough is enabled for the device."))
            .attribute(Attribute::bool("reboot_if_required").default_value(Value::Bool(false)).description("When the change needs a host reboot to take effect, put the host into maintenance mode, reboot it, wait until it is back and take it out of maintenance mode. Off by default: a reboot stops the host's running VMs' service."))
            .attribute(Attribute::string("reboot_timeout").default_value(Value::String("30m".into())).validate(duration()).description("How long to wait for a reboot (maintenance mode, reboot, reconnect), e.g. `30m`, when `timeouts` does not say."))
            .attribute(Attribute::bool("active").computed().description("Whether passthrough is in effect (enabled and the host rebooted since)."))
            .attribute(Attribute::bool("reboot_required").computed().description("Whether the setting waits for a host reboot to take effect."))
            .attribute(Attribute::string("device_name").computed().use_state_for_unknown().description("The device's name as the host reports it."))
            .attribute(Attribute::new("group", crate::cty::Type::List(Box::new(crate::cty::Type::String))).computed().use_state_for_unknown().description("Other devices the host passes through only together with this one (they share its dependent device, e.g. functions of one card); give them to a VM together."))
            .attribute(Attribute::bool("enabled_before").computed().use_state_for_unknown().description("The setting found before this resource managed it; destroy restores it."))
            .block(timeouts::block(&[Operation::Create, Operation::Update, Operation::Delete])),
    )
}

impl PassthroughModel {
    /// How long the reboot of `op` may take: the `timeouts` block's limit, else
    /// `reboot_timeout`.
    fn reboot_limit(&self, op: Operation) -> Duration {
        let fallback = self
            .reboot_timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(30 * 60));
        timeouts::limit(self.timeouts.as_ref(), op, fallback)
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
) -> Result<(HostInfo, HostPci), Diagnostics> {
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
    call: &Call<'_>,
    op: Operation,
    m: &PassthroughModel,
    info: &HostInfo,
    pci: &HostPci,
) -> Result<Diagnostics, Diagnostics> {
    let client = &call.conn;
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
    reboot(
        call,
        m.reboot_limit(op),
        &m.host,
        info,
        current.in_maintenance,
    )
    .await?;
    Ok(diags)
}

/// Maintenance mode (unless already in it), reboot, wait, leave maintenance mode (if entered).
async fn reboot(
    call: &Call<'_>,
    limit: Duration,
    host: &str,
    info: &HostInfo,
    already_in_maintenance: bool,
) -> Result<(), Diagnostics> {
    let (client, cancel) = (&call.conn, &call.ctx.cancel);
    let fail = |what: &str, e: &crate::vsphere::Error| {
        error_diagnostics(&format!("{what} host {host}"), e)
    };
    if !already_in_maintenance {
        client
            .set_maintenance(&info.obj, true, Some(limit), cancel)
            .await
            .map_err(|e| fail("enter maintenance mode on", &e))?;
    }
    client
        .reboot_host(&info.obj, limit, cancel)
        .await
        .map_err(|e| fail("reboot", &e))?;
    if !already_in_maintenance {
        client
            .set_maintenance(&info.obj, false, Some(limit), cancel)
            .await
            .map_err(|e| fail("exit maintenance mode on", &e))?;
    }
    Ok(())
}

/// The host read back after an apply, keeping `diags`; the model as it was when the host
/// cannot be read (what was done is still tracked).
async fn read_back(
    client: &Client,
    info: &HostInfo,
    mut m: PassthroughModel,
    mut diags: Diagnostics,
) -> Outcome<PassthroughModel> {
    match client.host_pci(&info.obj).await {
        Ok(pci) => m.observe(&pci),
        Err(e) => diags.extend(error_diagnostics("read the host back", &e)),
    }
    Outcome::with(Some(m), diags)
}

/// What the plan hook reads.
#[derive(Deserialize)]
struct PlanView {
    endpoint: Option<String>,
    host: Tri<String>,
    device: Tri<String>,
    enabled: Tri<bool>,
    reboot_if_required: Tri<bool>,
    reboot_required: Tri<bool>,
}

#[async_trait]
impl TypedResource for PciPassthrough {
    type Model = PassthroughModel;
    type Connect = Vsphere;
    const TYPE_NAME: &'static str = "ceso_pci_passthrough";

    fn schema() -> Schema {
        schema()
    }

    async fn plan(&self, ctx: &Context, plan: &mut Plan<'_, '_>) {
        let (Ok(config), Ok(planned), Ok(prior)) = (
            plan.config::<PlanView>(),
            plan.planned::<PlanView>(),
            plan.prior::<PlanView>(),
        ) else {
            return;
        };
        let (Tri::Known(host), Tri::Known(device)) = (&config.host, &config.device) else {
            return;
        };
        let Ok(client) = Vsphere::connect(ctx, config.endpoint.as_deref()).await else {
            return;
        };
        let pci = match host_state(&client, host, device).await {
            Ok((_, pci)) => pci,
            Err(d) => {
                plan.diags().extend(d);
                return;
            }
        };
        if planned.enabled == Tri::Known(false) {
            if let Some(vms) = held_by(&pci, device) {
                plan.diags().attr_error(
                    AttrPath::attr("enabled"),
                    "Device in use",
                    format!("PCI device {device} on {host} is given to VM {vms}; disabling passthrough would stop it from powering on. Remove the device from the VM first."),
                );
            }
        }
        // Whether a reboot will be pending depends on the host after apply: unknown when the
        // setting changes, or a pending reboot is now allowed. (Changing only how ceso would
        // reboot, e.g. after an import, changes nothing on the host.)
        let setting_changes = prior.as_ref().is_none_or(|p| p.enabled != planned.enabled);
        let reboots_now = planned.reboot_if_required == Tri::Known(true)
            && prior.is_some_and(|p| p.reboot_required == Tri::Known(true));
        if setting_changes || reboots_now {
            for a in ["active", "reboot_required", "address"] {
                plan.set_unknown(a);
            }
        }
    }

    async fn create(&self, call: &Call<'_>, mut m: PassthroughModel) -> Outcome<PassthroughModel> {
        m.device = normalize_address(&m.device);
        let (info, pci) = match host_state(&call.conn, &m.host, &m.device).await {
            Ok(x) => x,
            Err(d) => return Outcome::failed(d),
        };
        m.enabled_before = Some(pci.state(&m.device).enabled);
        // From here on the host may have changed: state is always returned.
        let diags = match converge(call, Operation::Create, &m, &info, &pci).await {
            Ok(d) | Err(d) => d,
        };
        read_back(&call.conn, &info, m, diags).await
    }

    async fn read(
        &self,
        call: &Call<'_>,
        mut m: PassthroughModel,
    ) -> Result<Option<PassthroughModel>, Diagnostics> {
        let client = &call.conn;
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
        Ok(Some(m))
    }

    async fn update(
        &self,
        call: &Call<'_>,
        prior: PassthroughModel,
        m: PassthroughModel,
    ) -> Outcome<PassthroughModel> {
        let (info, pci) = match host_state(&call.conn, &m.host, &m.device).await {
            Ok(x) => x,
            Err(d) => return Outcome::failed(d),
        };
        let m = PassthroughModel {
            enabled_before: prior.enabled_before,
            ..m
        };
        let diags = match converge(call, Operation::Update, &m, &info, &pci).await {
            Ok(d) | Err(d) => d,
        };
        read_back(&call.conn, &info, m, diags).await
    }

    async fn delete(&self, call: &Call<'_>, m: PassthroughModel) -> Diagnostics {
        let client = &call.conn;
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
        match converge(call, Operation::Delete, &restore, &info, &pci).await {
            Ok(d) | Err(d) => d,
        }
    }
}

#[async_trait]
impl Import<PciPassthrough> for PciPassthrough {
    fn id_format(&self) -> &'static str {
        "HOST/ADDRESS, e.g. esx-01.example.com/0000:3b:00.0"
    }

    async fn import(
        &self,
        call: &Call<'_>,
        id: &str,
    ) -> Result<Vec<PassthroughModel>, Diagnostics> {
        let bad = |why: String| {
            Diagnostics::from_error(
                "Unable to import ceso_pci_passthrough",
                format!("{why}. Use {}.", self.id_format()),
            )
        };
        let (host, device) = id
            .rsplit_once('/')
            .ok_or_else(|| bad(format!("{id:?} has no '/'")))?;
        if !crate::vsphere::pci::is_address(&normalize_address(device)) {
            return Err(bad(format!("{device:?} is not {ADDRESS_WHAT}")));
        }
        let (_, pci) = host_state(&call.conn, host, device).await?;
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
        Ok(vec![m])
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
