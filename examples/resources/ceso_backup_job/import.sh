# By job name (`ceso-backup jobs` lists them).
terraform import ceso_backup_job.nightly web-nightly
