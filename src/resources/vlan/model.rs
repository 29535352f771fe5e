//! `ceso_vlan`'s state model and its conversions to and from vSphere's port group specs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::framework::{AttrPath, Diagnostics};
use crate::vsphere::network::{DvPortGroupSpec, DvsVlan, PortGroupPolicy, PortGroupSpec};

/// Default vSwitch of standard port groups.
pub const DEFAULT_VSWITCH: &str = "vSwitch0";

/// The resource's state (and wholly known plan).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VlanModel {
    pub id: Option<String>,
    pub endpoint: Option<String>,
    pub name: String,
    pub vlan_id: Option<i64>,
    pub vswitch: Option<String>,
    pub hosts: Option<BTreeSet<String>>,
    pub cluster: Option<String>,
    pub allow_promiscuous: Option<bool>,
    pub allow_forged_transmits: Option<bool>,
    pub allow_mac_changes: Option<bool>,
    pub active_nics: Option<Vec<String>>,
    pub standby_nics: Option<Vec<String>>,
    pub distributed_switch: Option<String>,
    pub vlan_ranges: Option<Vec<String>>,
    pub private_vlan_id: Option<i64>,
    pub num_ports: Option<i64>,
    pub port_binding: Option<String>,
    pub force_delete: Option<bool>,
    pub network_id: Option<String>,
}

impl VlanModel {
    /// Whether this is a distributed port group.
    pub fn is_distributed(&self) -> bool {
        self.distributed_switch.is_some()
    }

    /// The standard port group spec this model asks for.
    pub fn port_group_spec(&self) -> PortGroupSpec {
        PortGroupSpec {
            name: self.name.clone(),
            vlan_id: self.vlan_id.unwrap_or(0),
            vswitch: self
                .vswitch
                .clone()
                .unwrap_or_else(|| DEFAULT_VSWITCH.to_string()),
            policy: PortGroupPolicy {
                allow_promiscuous: self.allow_promiscuous,
                forged_transmits: self.allow_forged_transmits,
                mac_changes: self.allow_mac_changes,
                active_nics: self.active_nics.clone(),
                standby_nics: self.standby_nics.clone(),
            },
        }
    }

    /// Takes the configurable values of a standard port group as a host has it.
    pub fn set_from_port_group(&mut self, spec: &PortGroupSpec) {
        self.vlan_id = Some(spec.vlan_id);
        self.vswitch = Some(spec.vswitch.clone());
        self.allow_promiscuous = spec.policy.allow_promiscuous;
        self.allow_forged_transmits = spec.policy.forged_transmits;
        self.allow_mac_changes = spec.policy.mac_changes;
        self.active_nics = spec.policy.active_nics.clone().filter(|n| !n.is_empty());
        self.standby_nics = spec.policy.standby_nics.clone().filter(|n| !n.is_empty());
    }

    /// The distributed port group spec this model asks for.
    pub fn dv_spec(&self) -> DvPortGroupSpec {
        let vlan = if let Some(ranges) = &self.vlan_ranges {
            DvsVlan::Trunk(ranges.iter().filter_map(|r| parse_range(r).ok()).collect())
        } else if let Some(p) = self.private_vlan_id {
            DvsVlan::Private(p)
        } else {
            DvsVlan::Id(self.vlan_id.unwrap_or(0))
        };
        DvPortGroupSpec {
            name: self.name.clone(),
            vlan,
            num_ports: self.num_ports.unwrap_or(8),
            binding: match self.port_binding.as_deref() {
                Some("ephemeral") => "ephemeral".to_string(),
                _ => "earlyBinding".to_string(),
            },
        }
    }

    /// Takes the configurable values of a distributed port group as vCenter has it.
    pub fn set_from_dv(&mut self, spec: &DvPortGroupSpec) {
        self.vlan_id = Some(0);
        self.vlan_ranges = None;
        self.private_vlan_id = None;
        match &spec.vlan {
            DvsVlan::Id(id) => self.vlan_id = Some(*id),
            DvsVlan::Trunk(ranges) => {
                self.vlan_ranges = Some(ranges.iter().map(|(a, b)| format_range(*a, *b)).collect())
            }
            DvsVlan::Private(p) => self.private_vlan_id = Some(*p),
        }
        self.num_ports = Some(spec.num_ports);
        self.port_binding = Some(
            if spec.binding == "ephemeral" {
                "ephemeral"
            } else {
                "static"
            }
            .to_string(),
        );
    }
}

/// Parses `"100-200"` or `"300"` into an inclusive range of VLAN ids.
pub fn parse_range(text: &str) -> Result<(i64, i64), String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is not a VLAN range like \"100-200\" or \"300\""))
    };
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let v = parse(text)?;
            (v, v)
        }
    };
    if !(0..=4094).contains(&a) || !(0..=4094).contains(&b) {
        return Err(format!("{text:?}: VLAN ids in a trunk go from 0 to 4094"));
    }
    if a > b {
        return Err(format!("{text:?}: the range starts after it ends"));
    }
    Ok((a, b))
}

fn format_range(a: i64, b: i64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// Checks trunk ranges: each well formed, none overlapping another.
pub fn check_ranges(ranges: &[String], diags: &mut Diagnostics) {
    let mut parsed: Vec<(usize, i64, i64)> = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        match parse_range(r) {
            Ok((a, b)) => {
                if let Some((j, _, _)) = parsed.iter().find(|(_, x, y)| a <= *y && *x <= b) {
                    diags.attr_error(
                        AttrPath::attr("vlan_ranges").join_index(i),
                        "Overlapping VLAN ranges",
                        format!("{r:?} overlaps {:?}; give each VLAN once.", ranges[*j]),
                    );
                }
                parsed.push((i, a, b));
            }
            Err(why) => diags.attr_error(
                AttrPath::attr("vlan_ranges").join_index(i),
                "Invalid VLAN range",
                why,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(parse_range("100-200"), Ok((100, 200)));
        assert_eq!(parse_range("300"), Ok((300, 300)));
        assert!(parse_range("200-100").is_err());
        assert!(parse_range("4095").is_err());
        assert!(parse_range("x").is_err());
    }

    #[test]
    fn finds_overlaps_with_paths() {
        let mut d = Diagnostics::new();
        check_ranges(&["100-200".into(), "150".into(), "300".into()], &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.0[0].path.as_ref().unwrap().to_string(), "vlan_ranges[1]");
    }

    #[test]
    fn dv_spec_round_trips() {
        let m = VlanModel {
            name: "t".into(),
            distributed_switch: Some("DSwitch".into()),
            vlan_ranges: Some(vec!["100-200".into(), "300".into()]),
            ..Default::default()
        };
        let mut back = VlanModel::default();
        back.set_from_dv(&m.dv_spec());
        assert_eq!(back.vlan_ranges, m.vlan_ranges);
        assert_eq!(back.port_binding.as_deref(), Some("static"));
    }
}
