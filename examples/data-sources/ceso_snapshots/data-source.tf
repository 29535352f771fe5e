terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "vm_id" {
  type = string
}

# Every snapshot of a VM, parents before children.
data "ceso_snapshots" "web" {
  vm_id = var.vm_id
}

output "snapshot_names" {
  value = [for s in data.ceso_snapshots.web.snapshots : s.name]
}

output "current" {
  value = data.ceso_snapshots.web.current_id
}
