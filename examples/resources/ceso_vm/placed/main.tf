terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

variable "endpoints" {
  description = "Endpoint name => SDK URL of each standalone ESXi host."
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

# Three web VMs that must not share a host: each asks ceso_placement where to go, and joins
# the "web" anti-affinity group the next one avoids. Add them one at a time (count 1, 2, 3):
# data sources of one plan all see the same inventory.
variable "web_count" {
  type    = number
  default = 1
}

data "ceso_placement" "web" {
  count               = var.web_count
  name                = "web-${count.index}"
  cpus                = 2
  memory_mb           = 2048
  anti_affinity_group = "web"
}

resource "ceso_vm" "web" {
  count               = var.web_count
  name                = "web-${count.index}"
  endpoint            = data.ceso_placement.web[count.index].endpoint
  host                = data.ceso_placement.web[count.index].host
  num_cpus            = 2
  memory_mb           = 2048
  anti_affinity_group = "web"
  power_state         = "off"
}

output "placement" {
  value = { for i, vm in ceso_vm.web : vm.name => "${vm.endpoint}/${vm.host}" }
}
