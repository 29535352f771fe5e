terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# Connection from the environment (CESO_URL, CESO_USER, CESO_PASSWORD, CESO_THUMBPRINT).
provider "ceso" {}

variable "vlan_id" {
  type    = number
  default = 120
}

# A VLAN port group on vSwitch0 of a standalone ESXi host: no vCenter needed.
resource "ceso_vlan" "app" {
  name    = "vlan-120"
  vlan_id = var.vlan_id

  # Optional overrides of the vSwitch's security policy (null inherits it).
  allow_promiscuous = false
}

output "network_id" {
  value = ceso_vlan.app.network_id
}
