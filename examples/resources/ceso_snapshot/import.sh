# VM_ID/SNAPSHOT_NAME (VM_ID: the VM's instance UUID or moid) or VM_ID/SNAPSHOT_ID.
terraform import ceso_snapshot.base 5029a4c2-7b1e-5f3a-9d44-1a2b3c4d5e6f/base
terraform import ceso_snapshot.base vm-42/snapshot-7
