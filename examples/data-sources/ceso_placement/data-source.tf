terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# Standalone ESXi hosts, no vCenter: one endpoint block each. User and password at the top
# level are defaults for every block.
variable "endpoints" {
  description = "Endpoint name => SDK URL, e.g. { esx-01 = \"https://esx-01.example.com/sdk\" }."
  type        = map(string)
}

variable "user" {
  type    = string
  default = "root"
}

variable "password" {
  type      = string
  sensitive = true
}

provider "ceso" {
  user     = var.user
  password = var.password

  dynamic "endpoint" {
    for_each = var.endpoints
    content {
      name = endpoint.key
      url  = endpoint.value
    }
  }
}

# Where should a GPU training VM go? A dry run at plan time, explained.
data "ceso_placement" "train" {
  name      = "train-01"
  cpus      = 4
  memory_mb = 1024
  gpus      = 1
  gpu_model = "t4"
  strategy  = "spread"
}

output "where" {
  value = "${data.ceso_placement.train.endpoint}/${data.ceso_placement.train.host} on ${data.ceso_placement.train.datastore}"
}

output "gpus" {
  value = data.ceso_placement.train.pci_devices
}

output "why" {
  value = data.ceso_placement.train.summary
}

output "runners_up" {
  value = [for c in data.ceso_placement.train.candidates : "${c.endpoint}/${c.host}: ${c.score}"]
}

output "rejected" {
  value = [for r in data.ceso_placement.train.rejected : "${r.endpoint}/${r.host}: ${r.reason}"]
}
