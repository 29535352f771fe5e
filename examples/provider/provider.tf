terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

variable "esxi_password" {
  type      = string
  sensitive = true
}

# One standalone ESXi host (or a vCenter Server) reached over HTTPS.
provider "ceso" {
  url      = "esx1.example.com" # same as "https://esx1.example.com/sdk"
  user     = "root"
  password = var.esxi_password

  # ESXi hosts often have self-signed certificates: pin the host's certificate by its SHA-256
  # thumbprint (openssl s_client -connect esx1.example.com:443 </dev/null |
  #   openssl x509 -noout -fingerprint -sha256) rather than turning verification off.
  thumbprint = "4B:1F:0A:6C:2E:9D:73:58:C1:0E:AA:52:7B:3D:91:E6:05:C8:F4:2A:6B:D0:19:37:8E:45:A2:CB:70:13:5F:E9"

  api_timeout = "60s"
}
