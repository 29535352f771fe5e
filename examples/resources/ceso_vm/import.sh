# By inventory path (as govc writes it), by instance or BIOS UUID, or by a unique name.
terraform import ceso_vm.web /ha-datacenter/vm/web-01
terraform import ceso_vm.web 5029a4c2-7b1e-5f3a-9d44-1a2b3c4d5e6f
terraform import ceso_vm.web web-01
# Imported disks are labelled disk0, disk1, ... in device order: use those labels in the
# configuration (or rename them there and let the next apply record the new labels).
# extra_config is not imported (which keys a configuration manages cannot be known); the first
# apply records the configured keys, changing nothing when the VM already has those values.
