terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

# The connection comes from the environment: CESO_URL, CESO_USER, CESO_PASSWORD, and
# CESO_THUMBPRINT (or CESO_ALLOW_UNVERIFIED_SSL=true for a lab host).
provider "ceso" {}

data "ceso_endpoint" "this" {}

output "product" {
  value = data.ceso_endpoint.this.full_name
}

output "is_vcenter" {
  value = data.ceso_endpoint.this.is_vcenter
}

output "api_version" {
  value = data.ceso_endpoint.this.api_version
}
