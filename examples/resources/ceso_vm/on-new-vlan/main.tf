terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# Connection from the environment (CESO_URL, CESO_USER, CESO_PASSWORD, CESO_THUMBPRINT).
provider "ceso" {}

# On vCenter: the cluster whose hosts get the port group, and the VMs' host (one of them).
# Leave both null on a standalone ESXi host.
variable "cluster" {
  type    = string
  default = null
}

variable "host" {
  type    = string
  default = null
}

variable "app_count" {
  type    = number
  default = 2
}

# A VLAN, then VMs on it, in one apply: the VMs name the port group, and Terraform creates it
# first. (The plan warns that the network is not found yet: it must exist by apply.)
resource "ceso_vlan" "tenant" {
  name    = "tenant-120"
  vlan_id = 120
  cluster = var.cluster
}

resource "ceso_vm" "app" {
  count       = var.app_count
  name        = "app-${count.index}"
  host        = var.host
  guest_id    = "ubuntu64Guest"
  num_cpus    = 1
  memory_mb   = 1024
  power_state = "off"

  network_interface {
    network = ceso_vlan.tenant.name
  }
}

output "vms" {
  value = { for vm in ceso_vm.app : vm.name => vm.network_interface[0].network }
}
