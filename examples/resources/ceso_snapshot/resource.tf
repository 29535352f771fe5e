terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

provider "ceso" {}

variable "vm_id" {
  type        = string
  description = "The VM: a ceso_vm's id (instance UUID) or moid."
}

variable "revert" {
  type        = string
  default     = ""
  description = "Change this value to revert the VM to the 'before-upgrade' snapshot."
}

# A chain of two snapshots: "base", then "before-upgrade" on top of it.
resource "ceso_snapshot" "base" {
  vm_id       = var.vm_id
  name        = "base"
  description = "clean install"
}

resource "ceso_snapshot" "before_upgrade" {
  vm_id = var.vm_id
  name  = "before-upgrade"

  # Taken after "base", so it becomes its child.
  depends_on = [ceso_snapshot.base]

  # terraform apply -var revert=now  reverts the VM to this snapshot.
  revert_trigger = var.revert
}

output "chain" {
  value = [ceso_snapshot.base.id, ceso_snapshot.before_upgrade.parent_id]
}
