//! Inventory lookups every resource and data source does the same way, with their failures
//! as diagnostics on the attribute that named the object.

use crate::framework::{AttrPath, Diagnostics};
use crate::vsphere::inventory::HostInfo;
use crate::vsphere::Client;

use super::error_diagnostics;

/// The host named `name`, or the endpoint's only host when `name` is unset.
pub async fn resolve_host(
    client: &Client,
    name: Option<&str>,
    attr: &str,
) -> Result<HostInfo, Diagnostics> {
    let inv = client
        .inventory_cached()
        .await
        .map_err(|e| error_diagnostics("read the inventory", &e))?;
    match name {
        Some(n) => inv.host(n).cloned().map_err(|e| {
            Diagnostics::from_attr_error(AttrPath::attr(attr), "Unknown host", e.message)
        }),
        None if inv.hosts.len() == 1 => Ok(inv.hosts[0].clone()),
        None => Err(Diagnostics::from_attr_error(
            AttrPath::attr(attr),
            "Missing host",
            format!(
                "The endpoint has {} hosts; set {attr} to one of: {}.",
                inv.hosts.len(),
                inv.hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
