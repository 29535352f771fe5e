terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "data_gb" {
  type    = number
  default = 50
}

variable "backend_network" {
  type    = string
  default = "VM Network"
}

# A database VM with a root and a data disk and two network adapters.
resource "ceso_vm" "db" {
  name             = "db-01"
  guest_id         = "ubuntu64Guest"
  num_cpus         = 4
  cores_per_socket = 2
  memory_mb        = 8192
  power_state      = "off"

  disk {
    label   = "root"
    size_gb = 20
  }

  disk {
    label   = "data"
    size_gb = var.data_gb
    thin    = true
  }

  network_interface {
    network = "VM Network"
  }

  network_interface {
    network      = var.backend_network
    adapter_type = "e1000e"
    mac_address  = "00:50:56:01:02:03"
  }
}
