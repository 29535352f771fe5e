//! The `ceso_vlan` schema.

use crate::cty::{Type, Value};
use crate::framework::validator::{int_between, matches, one_of};
use crate::framework::{Attribute, Block, Schema};

/// The resource's schema.
pub fn schema() -> Schema {
    let standard_only = "Standard switches only.";
    Schema::new(
        Block::new()
            .description("A VLAN port group: on standard vSwitches of one or more hosts (works on standalone ESXi, no vCenter needed), or on a vCenter distributed switch.")
            .attribute(Attribute::string("id").computed().use_state_for_unknown().description(
                "The port group's name for standard switches; the distributed port group's id (e.g. `dvportgroup-42`) for distributed switches.",
            ))
            .attribute(crate::session::endpoint_attribute(true))
            .attribute(
                Attribute::string("name")
                    .required()
                    .requires_replace()
                    .validate(matches(r"^[^\x00-\x1f]{1,80}$", "1 to 80 printable characters"))
                    .description("Port group name (the network name VMs attach to)."),
            )
            .attribute(
                Attribute::number("vlan_id")
                    .default_value(Value::Number(0i64.into()))
                    .validate(int_between(0, 4095))
                    .description("VLAN id: `0` none, `1`-`4094` a VLAN, `4095` all VLANs (trunk, standard switches only; on a distributed switch use `vlan_ranges`)."),
            )
            .attribute(Attribute::string("vswitch").optional().computed().description(&format!(
                "The standard vSwitch to add the port group to. Defaults to `vSwitch0`. {standard_only}"
            )))
            .attribute(Attribute::new("hosts", Type::Set(Box::new(Type::String))).optional().computed().description(&format!(
                "Names of the hosts to create the port group on. Defaults to the one host of a standalone ESXi endpoint, or every host of `cluster`. After apply it lists the hosts where the port group exists. {standard_only}"
            )))
            .attribute(Attribute::string("cluster").optional().description(&format!(
                "Create the port group on every host of this vCenter cluster (hosts joining later are added by the next apply). {standard_only}"
            )))
            .attribute(Attribute::bool("allow_promiscuous").optional().description(&format!(
                "Override the vSwitch's promiscuous mode policy; null inherits it. {standard_only}"
            )))
            .attribute(Attribute::bool("allow_forged_transmits").optional().description(&format!(
                "Override the vSwitch's forged transmits policy; null inherits it. {standard_only}"
            )))
            .attribute(Attribute::bool("allow_mac_changes").optional().description(&format!(
                "Override the vSwitch's MAC address changes policy; null inherits it. {standard_only}"
            )))
            .attribute(Attribute::new("active_nics", Type::List(Box::new(Type::String))).optional().description(&format!(
                "Active physical NICs in order (e.g. `[\"vmnic0\"]`); null inherits the vSwitch's teaming. {standard_only}"
            )))
            .attribute(Attribute::new("standby_nics", Type::List(Box::new(Type::String))).optional().description(&format!(
                "Standby physical NICs in order. {standard_only}"
            )))
            .attribute(Attribute::string("distributed_switch").optional().requires_replace().description(
                "Name of a vCenter distributed switch: the port group is created there instead of on standard vSwitches.",
            ))
            .attribute(Attribute::new("vlan_ranges", Type::List(Box::new(Type::String))).optional().description(
                "Trunk VLAN ranges on a distributed switch, e.g. `[\"100-200\", \"300\"]`. Distributed switches only.",
            ))
            .attribute(
                Attribute::number("private_vlan_id")
                    .optional()
                    .validate(int_between(1, 4094))
                    .description("Secondary private VLAN id on a distributed switch. Distributed switches only."),
            )
            .attribute(Attribute::number("num_ports").optional().computed().validate(int_between(0, 8192)).description(
                "Number of ports of a distributed port group. Distributed switches only.",
            ))
            .attribute(
                Attribute::string("port_binding")
                    .optional()
                    .computed()
                    .validate(one_of(&["static", "ephemeral"]))
                    .description("Port binding of a distributed port group. Defaults to `static`. Distributed switches only."),
            )
            .attribute(Attribute::bool("force_delete").optional().description(
                "Attempt deletion even when VMs are connected (vSphere then refuses while they are; the error says so and nothing is lost). By default deletion is refused up front with the list of connected VMs.",
            ))
            .attribute(Attribute::string("network_id").computed().use_state_for_unknown().description(
                "The network's id (e.g. `network-12`, `HaNetwork-vlan-120` or `dvportgroup-42`): what `ceso_vm`'s `network_interface.network` accepts.",
            )),
    )
}
