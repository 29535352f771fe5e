terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# Connection from the environment (CESO_URL, CESO_USER, CESO_PASSWORD, CESO_THUMBPRINT).
provider "ceso" {}

variable "num_cpus" {
  type    = number
  default = 2
}

variable "memory_mb" {
  type    = number
  default = 2048
}

variable "root_gb" {
  type    = number
  default = 20
}

variable "network" {
  type    = string
  default = "VM Network"
}

variable "allow_power_cycle" {
  type    = bool
  default = false
}

# A VM built from scratch on a standalone ESXi host (or vCenter), powered on.
resource "ceso_vm" "web" {
  name      = "web-01"
  guest_id  = "ubuntu64Guest"
  num_cpus  = var.num_cpus
  memory_mb = var.memory_mb

  # CPU or memory changes on a running VM without hot add need a power cycle: allow it.
  allow_power_cycle = var.allow_power_cycle

  disk {
    label   = "root"
    size_gb = var.root_gb
  }

  network_interface {
    network = var.network
  }

  annotation = "managed by Terraform"
}

output "moid" {
  value = ceso_vm.web.moid
}
