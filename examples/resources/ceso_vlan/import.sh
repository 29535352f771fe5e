# A standard port group on one host: HOST:NAME (host name or id).
terraform import ceso_vlan.app esx1.example.com:vlan-120

# A distributed port group: DISTRIBUTED_SWITCH:NAME.
terraform import ceso_vlan.dmz DSwitch:dmz

# Or just the name, when it is unique (a standard port group is then tracked on every host
# that has it).
terraform import ceso_vlan.app vlan-120
