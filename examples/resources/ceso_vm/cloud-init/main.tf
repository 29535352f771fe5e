terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "template" {
  type        = string
  description = "An Ubuntu cloud image VM or template (name, inventory path or UUID)."
  default     = "ubuntu-22.04"
}

variable "network" {
  type    = string
  default = "VM Network"
}

# An Ubuntu VM cloned from a cloud image, configured by cloud-init at first boot. On a
# standalone ESXi host the template's disks are copied; on vCenter CloneVM_Task is used.
resource "ceso_vm" "app" {
  name      = "app-01"
  num_cpus  = 2
  memory_mb = 4096

  clone {
    template = var.template
  }

  cloud_init {
    user_data = <<-EOT
      #cloud-config
      hostname: app-01
      users:
        - name: ops
          ssh_authorized_keys:
            - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnly ops@example
    EOT
    meta_data = "local-hostname: app-01\ninstance-id: app-01\n"
    network_config = <<-EOT
      version: 2
      ethernets:
        ens192:
          dhcp4: true
    EOT
  }

  network_interface {
    network = var.network
  }

  enable_cbt = true
}
