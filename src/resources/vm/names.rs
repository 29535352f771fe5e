//! The inventory objects a VM's configuration names (its networks, host and datastore) and
//! whether they exist. At plan time a missing one is a warning, because the same apply may
//! create it (a `ceso_vlan` the VM attaches to); at apply time it is an error naming the
//! attribute, before anything is created.

use std::sync::Arc;

use crate::framework::{AttrPath, Diagnostics, Tri};
use crate::vsphere::inventory::Inventory;
use crate::vsphere::{Client, Error, ErrorKind};

use super::model::VmModel;
use super::view::VmView;

/// What an object named in the configuration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Network,
    Host,
    Datastore,
}

/// One name the configuration gives, with the attribute it is written in.
#[derive(Debug, Clone)]
struct Named {
    kind: Kind,
    name: String,
    path: AttrPath,
}

/// One name that did not resolve, and why.
struct Unresolved<'a> {
    named: &'a Named,
    error: Error,
}

/// The inventory names of one VM configuration.
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<Named>);

impl Names {
    /// The names a configuration (or plan) gives; unknown values are left out.
    pub fn of_view(config: &VmView) -> Self {
        let mut names = Vec::new();
        for (i, nic) in config.nics().iter().enumerate() {
            if let Tri::Known(net) = &nic.network {
                names.push(Named {
                    kind: Kind::Network,
                    name: net.clone(),
                    path: nic_path(i),
                });
            }
        }
        for (kind, attr, value) in [
            (Kind::Host, "host", &config.host),
            (Kind::Datastore, "datastore", &config.datastore),
        ] {
            if let Tri::Known(name) = value {
                names.push(Named {
                    kind,
                    name: name.clone(),
                    path: AttrPath::attr(attr),
                });
            }
        }
        Self(names)
    }

    /// The names a planned model gives.
    pub fn of_model(m: &VmModel) -> Self {
        let mut names: Vec<Named> = m
            .network_interface
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, nic)| Named {
                kind: Kind::Network,
                name: nic.network.clone(),
                path: nic_path(i),
            })
            .collect();
        for (kind, attr, name) in [
            (Kind::Host, "host", &m.host),
            (Kind::Datastore, "datastore", &m.datastore),
        ] {
            if let Some(name) = name {
                names.push(Named {
                    kind,
                    name: name.clone(),
                    path: AttrPath::attr(attr),
                });
            }
        }
        Self(names)
    }

    /// The names `inv` does not resolve (missing, or ambiguous).
    fn unresolved<'a>(&'a self, inv: &Inventory) -> Vec<Unresolved<'a>> {
        self.0
            .iter()
            .filter_map(|named| {
                let found = match named.kind {
                    Kind::Network => inv.network(&named.name).map(|_| ()),
                    Kind::Host => inv.host(&named.name).map(|_| ()),
                    Kind::Datastore => inv.datastore(&named.name).map(|_| ()),
                };
                found.err().map(|error| Unresolved { named, error })
            })
            .collect()
    }

    /// The endpoint's inventory, read again when the cached snapshot lacks one of the names:
    /// it may have been created moments ago, e.g. by a `ceso_vlan` earlier in the same apply.
    pub async fn inventory(&self, client: &Client) -> Result<Arc<Inventory>, Error> {
        client
            .inventory_with(|inv| {
                self.unresolved(inv)
                    .iter()
                    .all(|u| u.error.kind != ErrorKind::NotFound)
            })
            .await
    }

    /// Plan-time check: a name not found is a warning (it must exist by apply), an ambiguous
    /// one an error.
    pub fn check_at_plan(&self, inv: &Inventory, diags: &mut Diagnostics) {
        for u in self.unresolved(inv) {
            let what = u.named.kind.noun();
            if u.error.kind == ErrorKind::NotFound {
                diags.attr_warning(
                    u.named.path.clone(),
                    format!("{} not found (yet)", capitalized(what)),
                    format!("{}. That is expected when this configuration creates it (e.g. a ceso_vlan for a network); otherwise check the name: the apply fails if no {what} of that name exists by then.", u.error.message),
                );
            } else {
                diags.attr_error(
                    u.named.path.clone(),
                    format!("Unknown {what}"),
                    u.error.message,
                );
            }
        }
    }

    /// Apply-time check: every name must resolve now.
    pub fn check_at_apply(&self, inv: &Inventory) -> Result<(), Diagnostics> {
        let mut diags = Diagnostics::new();
        for u in self.unresolved(inv) {
            diags.attr_error(
                u.named.path.clone(),
                format!("Unknown {}", u.named.kind.noun()),
                u.error.message,
            );
        }
        if diags.has_errors() {
            Err(diags)
        } else {
            Ok(())
        }
    }
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Host => "host",
            Kind::Datastore => "datastore",
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn nic_path(index: usize) -> AttrPath {
    AttrPath::attr("network_interface")
        .join_index(index)
        .join_attr("network")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Severity;
    use crate::vsphere::inventory::{HostInfo, NetworkRef};
    use crate::vsphere::types::ManagedObjectReference;

    fn inventory() -> Inventory {
        let net = |id: &str, name: &str| NetworkRef::Standard {
            obj: ManagedObjectReference::new("Network", id),
            name: name.into(),
        };
        Inventory {
            hosts: vec![HostInfo {
                obj: ManagedObjectReference::new("HostSystem", "host-1"),
                name: "esx-01".into(),
                parent: None,
                datastores: Vec::new(),
                networks: Vec::new(),
            }],
            networks: vec![
                net("network-1", "VM Network"),
                net("network-2", "twin"),
                net("network-3", "twin"),
            ],
            ..Default::default()
        }
    }

    fn names(networks: &[&str], host: Option<&str>) -> Names {
        Names::of_model(&VmModel {
            network_interface: Some(
                networks
                    .iter()
                    .map(|n| super::super::model::NicModel {
                        network: n.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            host: host.map(str::to_string),
            ..Default::default()
        })
    }

    #[test]
    fn a_missing_name_warns_at_plan_and_fails_at_apply() {
        let inv = inventory();
        let n = names(&["VM Network", "tenant-120"], Some("esx-01"));
        let mut diags = Diagnostics::new();
        n.check_at_plan(&inv, &mut diags);
        assert_eq!(diags.0.len(), 1, "{diags}");
        let d = &diags.0[0];
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(
            d.path.as_ref().unwrap().to_string(),
            "network_interface[1].network"
        );
        assert!(d.detail.contains("\"tenant-120\""), "{}", d.detail);

        let err = n.check_at_apply(&inv).unwrap_err();
        assert!(err.has_errors());
        assert_eq!(err.0[0].summary, "Unknown network");
        assert_eq!(
            err.0[0].path.as_ref().unwrap().to_string(),
            "network_interface[1].network"
        );
        assert!(names(&["VM Network"], Some("esx-01"))
            .check_at_apply(&inv)
            .is_ok());
    }

    #[test]
    fn missing_host_warns_and_ambiguous_network_is_an_error_at_plan() {
        let inv = inventory();
        let mut diags = Diagnostics::new();
        names(&["twin"], Some("esx-02")).check_at_plan(&inv, &mut diags);
        let by_path = |p: &str| {
            diags
                .0
                .iter()
                .find(|d| d.path.as_ref().unwrap().to_string() == p)
                .unwrap_or_else(|| panic!("{p} in {diags}"))
        };
        assert_eq!(by_path("host").severity, Severity::Warning);
        assert_eq!(by_path("host").summary, "Host not found (yet)");
        assert_eq!(
            by_path("network_interface[0].network").severity,
            Severity::Error
        );
    }
}
