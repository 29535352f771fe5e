terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "host" {
  type = string
}

variable "device" {
  type    = string
  default = "0000:3b:00.0"
}

variable "reboot_if_required" {
  type    = bool
  default = false
}

# Enable passthrough of a GPU. It takes effect after the host reboots: reboot_required says so,
# and with reboot_if_required = true ceso enters maintenance mode, reboots the host and waits.
resource "ceso_pci_passthrough" "gpu" {
  host               = var.host
  device             = var.device
  enabled            = true
  reboot_if_required = var.reboot_if_required
}

output "active" {
  value = ceso_pci_passthrough.gpu.active
}

output "reboot_required" {
  value = ceso_pci_passthrough.gpu.reboot_required
}
