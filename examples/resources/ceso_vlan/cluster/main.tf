terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "cluster" {
  type    = string
  default = "DC0_C0"
}

# The same standard port group on every host of a vCenter cluster. Hosts that join the cluster
# later get it on the next apply; `hosts` lists where it exists.
resource "ceso_vlan" "storage" {
  name    = "vlan-130-storage"
  vlan_id = 130
  cluster = var.cluster
}

output "hosts" {
  value = ceso_vlan.storage.hosts
}
