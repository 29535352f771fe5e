terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

# The host to look at; leave null on a standalone ESXi endpoint (its only host).
variable "host" {
  type    = string
  default = null
}

# Every GPU of the host, with its passthrough state and the VM holding it.
data "ceso_pci_devices" "gpus" {
  host      = var.host
  gpus_only = true
}

# NVIDIA devices a VM can take right now (passthrough active, held by no VM).
data "ceso_pci_devices" "free_nvidia" {
  host            = var.host
  vendor_id       = "0x10de"
  assignable_only = true
}

output "gpus" {
  value = {
    for d in data.ceso_pci_devices.gpus.devices : d.address => {
      name      = d.device_name
      vendor    = d.gpu_vendor
      memory_mb = d.memory_mb
      enabled   = d.passthru_enabled
      active    = d.passthru_active
      vm        = d.assigned_vm
      profiles  = d.vgpu_profiles
    }
  }
}

output "free_nvidia" {
  value = [for d in data.ceso_pci_devices.free_nvidia.devices : d.address]
}

output "vgpu_profiles" {
  value = data.ceso_pci_devices.gpus.vgpu_profiles
}
