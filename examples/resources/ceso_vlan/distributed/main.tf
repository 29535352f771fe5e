terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "switch" {
  type    = string
  default = "DVS0"
}

# A distributed port group with one VLAN...
resource "ceso_vlan" "web" {
  name               = "web-140"
  distributed_switch = var.switch
  vlan_id            = 140
  num_ports          = 32
}

# ...and a trunk carrying several VLAN ranges.
resource "ceso_vlan" "trunk" {
  name               = "trunk-100-200"
  distributed_switch = var.switch
  vlan_ranges        = ["100-200", "300"]
  port_binding       = "ephemeral"
}

output "web_network_id" {
  value = ceso_vlan.web.network_id
}
