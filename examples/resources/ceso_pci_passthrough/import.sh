# HOST/ADDRESS. Destroying an imported resource leaves the setting as it was at import.
terraform import ceso_pci_passthrough.gpu esx-01.example.com/0000:3b:00.0
