terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# Three standalone ESXi hosts, no vCenter. User and password at the top level are defaults
# for every endpoint block.
provider "ceso" {
  user     = "root"
  password = var.esxi_password

  endpoint {
    name = "esx-01"
    url  = "https://esx-01.example.com/sdk"
  }
  endpoint {
    name = "esx-02"
    url  = "https://esx-02.example.com/sdk"
  }
  endpoint {
    name = "esx-03"
    url  = "https://esx-03.example.com/sdk"
  }
}

variable "esxi_password" {
  type      = string
  sensitive = true
}

# Where should a GPU training VM go? A dry run at plan time, explained.
data "ceso_placement" "train" {
  name      = "train-01"
  cpus      = 8
  memory_mb = 32768
  disk_gb   = 200
  gpus      = 1
  gpu_model = "t4"
  network   = "VM Network"
  strategy  = "spread"
}

output "where" {
  value = "${data.ceso_placement.train.endpoint}/${data.ceso_placement.train.host} on ${data.ceso_placement.train.datastore}"
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
