terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "ova" {
  type        = string
  description = "Path of the OVA (or .ovf with its disks beside it), e.g. an Ubuntu cloud image."
  default     = "ubuntu-22.04-server-cloudimg-amd64.ova"
}

variable "network" {
  type    = string
  default = "VM Network"
}

# An Ubuntu cloud image deployed straight from its OVA, configured by cloud-init at first
# boot: no other tool needed to turn the image into a VM.
resource "ceso_vm" "ubuntu" {
  name      = "ubuntu-01"
  num_cpus  = 2
  memory_mb = 2048

  ovf {
    source = var.ova
  }

  cloud_init {
    user_data = "#cloud-config\nhostname: ubuntu-01\n"
    meta_data = "local-hostname: ubuntu-01\n"
  }

  network_interface {
    network = var.network
  }
}
