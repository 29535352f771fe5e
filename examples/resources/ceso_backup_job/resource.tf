terraform {
  required_providers {
    ceso = {
      source = "choiceomg/ceso"
    }
  }
}

variable "repository" {
  description = "The backup repository (create it once with `ceso-backup init --repo ...`)."
  type        = string
  default     = "/srv/ceso-backups"
}

# vSphere from CESO_URL / CESO_USER / CESO_PASSWORD; the repository from here.
provider "ceso" {
  backup_repository = var.repository
}

# Every night at 02:30 Paris time: hot backups of the web VMs, two at a time, read at most
# 100 MiB/s each; keep a week of dailies, a month of weeklies and a year of monthlies.
resource "ceso_backup_job" "nightly" {
  name          = "web-nightly"
  schedule      = "30 2 * * *"
  timezone      = "Europe/Paris"
  vm_name_regex = "^web-"
  mode          = "snapshot"
  max_parallel  = 2
  max_rate      = "100MiB"
  verify_after  = false

  retention {
    keep_daily   = 7
    keep_weekly  = 4
    keep_monthly = 12
  }

  # A hook the daemons allow, e.g.
  #   ceso-backup serve --allow-hook 'syslog=logger -t ceso-backup "a backup job failed"'
  # The command is the daemon's own; the job only names it.
  on_failure_hook = "syslog"
}

output "next_run" {
  value = ceso_backup_job.nightly.next_run
}

output "last_run" {
  value = ceso_backup_job.nightly.last_run
}
