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

variable "network" {
  type    = string
  default = "VM Network"
}

# Find the host's Tesla T4 by name rather than hard-coding its address.
data "ceso_pci_devices" "t4" {
  host       = var.host
  gpus_only  = true
  name_regex = "(?i)tesla t4"
}

# Passthrough for it, with the host reboot it needs (maintenance mode first).
resource "ceso_pci_passthrough" "t4" {
  host               = var.host
  device             = data.ceso_pci_devices.t4.devices[0].address
  reboot_if_required = true
}

# An Ubuntu VM with the T4. Referring to the passthrough's `address` makes the VM wait for it;
# the GPU is attached before the VM's first power-on, and ceso locks the memory reservation
# to the memory size as passthrough requires.
resource "ceso_vm" "train" {
  name      = "train-01"
  host      = var.host
  guest_id  = "ubuntu64Guest"
  firmware  = "efi"
  num_cpus  = 8
  memory_mb = 32768

  disk {
    label   = "root"
    size_gb = 100
  }

  network_interface {
    network = var.network
  }

  pci_device {
    address = ceso_pci_passthrough.t4.address
  }
}

output "vm" {
  value = ceso_vm.train.moid
}

output "gpu" {
  value = ceso_vm.train.pci_device[0].device_name
}
