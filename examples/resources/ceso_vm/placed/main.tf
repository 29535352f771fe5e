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

# Three web VMs that must not share a host: ceso_placement places the three together (each
# seeing the ones before), and each VM goes where its placement says. Once they exist, the same
# plan gives the same answer (a VM does not avoid itself), so nothing moves.
variable "web_count" {
  type    = number
  default = 3
}

data "ceso_placement" "web" {
  name                = "web"
  instances           = var.web_count
  cpus                = 2
  memory_mb           = 2048
  anti_affinity_group = "web"
}

resource "ceso_vm" "web" {
  count               = var.web_count
  name                = data.ceso_placement.web.placements[count.index].name
  endpoint            = data.ceso_placement.web.placements[count.index].endpoint
  host                = data.ceso_placement.web.placements[count.index].host
  num_cpus            = 2
  memory_mb           = 2048
  anti_affinity_group = "web"
  power_state         = "off"
}

output "placement" {
  value = { for vm in ceso_vm.web : vm.name => "${vm.endpoint}/${vm.host}" }
}
