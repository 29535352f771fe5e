//! Disk images for the tests that move real-sized disks: sparse raw images with known data in
//! a few regions, their streamOptimized VMDK (made by `qemu-img`, as packaging tools make them)
//! in an OVF package, and byte-for-byte checks against the simulator's datastore files, read
//! straight from the directory behind the datastore.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::harness::SimClient;

/// One GiB.
pub const GIB: u64 = 1 << 30;
/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Deterministic bytes for a region (incompressible, so a streamOptimized disk carries them).
pub fn region_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Writes `regions` (offset, length) of known bytes into the file at `path`, making it
/// `len` bytes long and leaving every other byte a hole.
pub fn write_regions(path: &Path, len: u64, regions: &[(u64, usize)]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.set_len(len).unwrap();
    for (i, &(at, n)) in regions.iter().enumerate() {
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&region_bytes(n, i as u64 + 1)).unwrap();
    }
    f.sync_all().unwrap();
}

/// The usual test regions of a `len`-byte disk: at the start, in the middle, near the end.
pub fn regions(len: u64) -> Vec<(u64, usize)> {
    vec![
        (0, 8 * MIB as usize),
        (len / 2 + 12345, 16 * MIB as usize),
        (len - 5 * MIB, 4 * MIB as usize),
    ]
}

/// A BLAKE3 digest of a whole file (holes read as zeros), to compare files across moves.
pub fn digest_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

/// The length of a file.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The local directory behind the simulator's datastore `name` (its `summary.url`).
pub fn datastore_dir(c: &SimClient, name: &str) -> PathBuf {
    let all = c
        .run(c.client.retrieve_all("Datastore", &["name", "summary.url"]))
        .unwrap();
    let ds = all
        .iter()
        .find(|o| o.text("name") == Some(name))
        .unwrap_or_else(|| panic!("no datastore {name}"));
    let url = ds.text("summary.url").expect("datastore url");
    PathBuf::from(url.trim_start_matches("ds://"))
}

/// The local path of a datastore file given as `[ds] dir/file.vmdk`, taking its flat extent.
pub fn local_flat(c: &SimClient, disk: &str) -> PathBuf {
    let (ds, path) = disk
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .unwrap_or_else(|| panic!("not a datastore path: {disk}"));
    datastore_dir(c, ds).join(path.trim().replace(".vmdk", "-flat.vmdk"))
}

/// The local flat file of `vm`'s first disk.
pub fn first_disk_flat(c: &SimClient, vm: &ceso::vsphere::vm::VmInfo) -> PathBuf {
    let disk = vm.disks().next().expect("the VM has a disk");
    local_flat(c, &disk.file_name)
}

/// Converts the raw image at `raw` into a streamOptimized VMDK at `vmdk` with `qemu-img`.
pub fn stream_optimized(raw: &Path, vmdk: &Path) {
    let out = std::process::Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(raw)
        .arg(vmdk)
        .output()
        .expect("qemu-img (Debian's qemu-utils) makes the test's VMDK");
    assert!(
        out.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OVF descriptor for one VM with one disk of `capacity_gib` GiB in `vmdk` (`size` bytes).
pub fn ovf_descriptor(vmdk: &str, size: u64, capacity_gib: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="{vmdk}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="{capacity_gib}" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="tiny">
    <Info>A tiny VM</Info>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest"><Info>Guest OS</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>256MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// An OVF package in `dir`: a raw image of `capacity_gib` GiB with the usual regions (kept as
/// `disk.raw` for comparisons), its streamOptimized `disk1.vmdk`, `tiny.ovf`, and both packed
/// as `tiny.ova`. Returns (the .ovf, the .ova, the raw image).
pub fn ovf_package(dir: &Path, capacity_gib: u64) -> (PathBuf, PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    write_regions(&raw, capacity_gib * GIB, &regions(capacity_gib * GIB));
    let vmdk = dir.join("disk1.vmdk");
    stream_optimized(&raw, &vmdk);
    let ovf = dir.join("tiny.ovf");
    std::fs::write(
        &ovf,
        ovf_descriptor("disk1.vmdk", file_len(&vmdk), capacity_gib),
    )
    .unwrap();
    let ova = dir.join("tiny.ova");
    let mut tar = tar::Builder::new(File::create(&ova).unwrap());
    // Plain members, as ovftool and `tar` without --sparse write them, so the provider reads
    // the disk where it lies in the archive (sparse members are unpacked: unit-tested).
    tar.sparse(false);
    tar.append_path_with_name(&ovf, "tiny.ovf").unwrap();
    tar.append_path_with_name(&vmdk, "disk1.vmdk").unwrap();
    tar.finish().unwrap();
    (ovf, ova, raw)
}
