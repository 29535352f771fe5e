//! What PCI ids mean: readable class names, the vendors that make GPUs, and the one rule for
//! which devices are GPUs (compute GPUs, not a server's BMC display or a virtual adapter). Pure,
//! shared by `vsphere::pci`, the placement engine and the data sources, so "GPU" means the same
//! everywhere.

/// PCI class 0x03, subclass 0x02: a 3D controller. Compute GPUs (Tesla, A100, Instinct) have
/// no display output and report this class.
pub const CLASS_3D_CONTROLLER: u16 = 0x0302;

/// Vendors whose display controllers are only ever a console, never a GPU to hand to a VM:
/// BMC VGA (ASPEED, Matrox G200e on Dell, HPE and Lenovo boards) and the virtual adapters of
/// hypervisors (VMware SVGA II, QEMU/Bochs, Cirrus, Red Hat QXL, virtio, VirtualBox, Hyper-V).
pub const CONSOLE_ONLY_VENDORS: &[(u16, &str)] = &[
    (0x1a03, "ASPEED"),
    (0x102b, "Matrox"),
    (0x15ad, "VMware"),
    (0x1234, "QEMU/Bochs"),
    (0x1013, "Cirrus Logic"),
    (0x1b36, "Red Hat"),
    (0x1af4, "virtio"),
    (0x80ee, "VirtualBox"),
    (0x1414, "Microsoft Hyper-V"),
];

/// The GPU vendor for a PCI vendor id, when it is one of the three that make GPUs for ESXi.
pub fn gpu_vendor(vendor_id: u16) -> Option<&'static str> {
    match vendor_id {
        0x10de => Some("NVIDIA"),
        0x1002 => Some("AMD"),
        0x8086 => Some("Intel"),
        _ => None,
    }
}

/// Whether a device is a GPU: a display controller (class 0x03xx) from a GPU vendor (NVIDIA,
/// AMD, Intel), or any 3D controller (class 0x0302), and never one from a
/// [`CONSOLE_ONLY_VENDORS`] vendor.
pub fn is_gpu(vendor_id: u16, class_id: u16) -> bool {
    let display = class_id >> 8 == 0x03;
    let console_only = CONSOLE_ONLY_VENDORS.iter().any(|(v, _)| *v == vendor_id);
    display && !console_only && (gpu_vendor(vendor_id).is_some() || class_id == CLASS_3D_CONTROLLER)
}

/// A readable name for a PCI class/subclass (the PCI code and ID assignment's classes), falling
/// back to the base class.
pub fn class_name(class_id: u16) -> &'static str {
    match class_id {
        0x0100 => "SCSI storage controller",
        0x0101 => "IDE interface",
        0x0104 => "RAID bus controller",
        0x0106 => "SATA controller",
        0x0107 => "Serial Attached SCSI controller",
        0x0108 => "Non-Volatile memory controller",
        0x0200 => "Ethernet controller",
        0x0207 => "InfiniBand controller",
        0x0300 => "VGA compatible controller",
        0x0302 => "3D controller",
        0x0403 => "Audio device",
        0x0600 => "Host bridge",
        0x0601 => "ISA bridge",
        0x0604 => "PCI bridge",
        0x0c03 => "USB controller",
        0x0c04 => "Fibre Channel",
        0x0c05 => "SMBus",
        0x1200 => "Processing accelerators",
        _ => match class_id >> 8 {
            0x00 => "Unclassified device",
            0x01 => "Mass storage controller",
            0x02 => "Network controller",
            0x03 => "Display controller",
            0x04 => "Multimedia controller",
            0x05 => "Memory controller",
            0x06 => "Bridge",
            0x07 => "Communication controller",
            0x08 => "Generic system peripheral",
            0x09 => "Input device controller",
            0x0b => "Processor",
            0x0c => "Serial bus controller",
            0x0d => "Wireless controller",
            0x10 => "Encryption controller",
            0x11 => "Signal processing controller",
            0x12 => "Processing accelerators",
            _ => "Unknown class",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host's display controllers and others as they are found in the field: (vendor, class,
    /// what it is, whether it is a GPU).
    const DEVICES: &[(u16, u16, &str, bool)] = &[
        (0x10de, 0x0302, "NVIDIA Tesla T4", true),
        (0x10de, 0x0302, "NVIDIA A100 PCIe", true),
        (
            0x10de,
            0x0300,
            "NVIDIA RTX A6000 (with display outputs)",
            true,
        ),
        (0x1002, 0x0380, "AMD Instinct MI210", true),
        (0x1002, 0x0300, "AMD Radeon Pro V620", true),
        (0x8086, 0x0380, "Intel Data Center GPU Flex 170", true),
        (0x8086, 0x0300, "Intel UHD Graphics P630", true),
        (0x1a03, 0x0300, "ASPEED AST2500 BMC VGA", false),
        (0x102b, 0x0300, "Matrox G200eR2 (Dell iDRAC)", false),
        (0x102b, 0x0302, "Matrox as a 3D controller", false),
        (
            0x15ad,
            0x0300,
            "VMware SVGA II (the simulator's 0000:00:0f.0)",
            false,
        ),
        (0x1234, 0x0300, "QEMU standard VGA", false),
        (0x1b36, 0x0300, "Red Hat QXL", false),
        (0x19e5, 0x0300, "Huawei iBMC VGA", false),
        (0x1a2b, 0x0302, "an unknown vendor's 3D controller", true),
        (0x10de, 0x0403, "NVIDIA HDMI audio function", false),
        (0x10de, 0x0c03, "NVIDIA USB-C controller on a GPU", false),
        (0x8086, 0x0200, "Intel X710 NIC", false),
        (0x15b3, 0x0207, "Mellanox InfiniBand", false),
    ];

    #[test]
    fn gpus_are_compute_gpus_not_consoles() {
        for (vendor, class, what, gpu) in DEVICES {
            assert_eq!(is_gpu(*vendor, *class), *gpu, "{what}");
        }
    }

    #[test]
    fn names_classes_and_vendors() {
        assert_eq!(class_name(0x0302), "3D controller");
        assert_eq!(class_name(0x0380), "Display controller");
        assert_eq!(gpu_vendor(0x10de), Some("NVIDIA"));
        assert_eq!(gpu_vendor(0x1a03), None);
    }
}
