//! The inventory as the engine reads it: hosts and datastores numbered in name order, every
//! per-host list (datastores, networks, GPUs, vGPU profiles) pre-indexed in flat arrays, plus
//! the ledger of what committed placements consumed (including the VMs they added).
//!
//! Built once per snapshot in time linear in its size (plus a few sorts), so a decision is a
//! loop over hosts that reads integers and short slices and allocates nothing per host.
//! Numbering hosts in name order makes "ties go to the host name" a comparison of ids and
//! makes every result independent of the order the inventory lists things in.
//!
//! VMs are not indexed by name or group: a request names one group and a few VMs, and one
//! linear scan for those costs less than hashing every VM name and group of a large inventory
//! (which dominated building the index); a request without either never touches the VMs.
//! The scan reads the inventory's VMs where they are, until the first committed placement
//! (a batch) flattens every VM's host, name and groups into a [`VmTable`]: building it costs
//! about two scans, and each later scan reads three sequential arrays instead of scattered
//! strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use super::error::Error;
use super::model::{Datastore, Fleet, Host, HostNetwork, PciDevice, VgpuProfile, Vm};

/// "No such id" in the `u32` id arrays.
pub(crate) const NONE: u32 = u32::MAX;

/// The Fx hash (rustc's): a multiply and a rotate per word. The keys are inventory names the
/// user's own vCenter returned, so resistance to chosen collisions buys nothing here, and
/// SipHash would dominate the index build.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.add(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A hash map with the Fx hash.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Rows of variable length in one flat array (compressed sparse rows): row `r` is
/// `items[start[r]..start[r + 1]]`.
#[derive(Clone, Debug)]
pub(crate) struct Rows<T> {
    start: Vec<u32>,
    pub items: Vec<T>,
}

impl<T> Rows<T> {
    fn with_capacity(rows: usize, items: usize) -> Self {
        let mut start = Vec::with_capacity(rows + 1);
        start.push(0);
        Self {
            start,
            items: Vec::with_capacity(items),
        }
    }

    fn end_row(&mut self) {
        self.start.push(self.items.len() as u32);
    }

    /// The range of row `r` in `items`.
    #[inline]
    pub fn range(&self, r: u32) -> Range<usize> {
        self.start[r as usize] as usize..self.start[r as usize + 1] as usize
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: u32) -> &[T] {
        &self.items[self.range(r)]
    }
}

/// A GPU free for passthrough on a host.
#[derive(Clone, Debug)]
pub(crate) struct GpuEntry<'a> {
    pub device: &'a PciDevice,
    /// Lower-cased "vendor model", what a request's model substring is matched against.
    pub search: String,
}

/// A string in [`VmTable::text`]: offset and length.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

/// One VM of a [`VmTable`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct VmRow {
    /// Host id.
    pub host: u32,
    name: Span,
    /// Range of its groups in [`VmTable::groups`].
    groups: (u32, u32),
}

/// Every VM's host, name and groups (tags count as groups), in three flat arrays: what a
/// request's scan for its anti-affinity group and VM names reads, sequentially.
#[derive(Debug, Default)]
pub(crate) struct VmTable {
    /// All names and groups, back to back.
    text: String,
    pub rows: Vec<VmRow>,
    groups: Vec<Span>,
}

impl VmTable {
    fn build(hosts: &[&Host]) -> Self {
        let count: usize = hosts.iter().map(|h| h.vms.len()).sum();
        let mut table = VmTable {
            text: String::with_capacity(count * 24),
            rows: Vec::with_capacity(count),
            groups: Vec::with_capacity(count * 2),
        };
        for (h, host) in hosts.iter().enumerate() {
            for vm in &host.vms {
                let groups = vm.groups.iter().chain(&vm.tags).map(String::as_str);
                table.push(h as u32, &vm.name, groups);
            }
        }
        table
    }

    fn span(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    /// Adds a VM.
    pub fn push<'s>(&mut self, host: u32, name: &str, groups: impl Iterator<Item = &'s str>) {
        let name = self.span(name);
        let first = self.groups.len() as u32;
        for group in groups {
            let span = self.span(group);
            self.groups.push(span);
        }
        self.rows.push(VmRow {
            host,
            name,
            groups: (first, self.groups.len() as u32),
        });
    }

    #[inline]
    fn bytes(&self, s: Span) -> &[u8] {
        &self.text.as_bytes()[s.start as usize..(s.start + s.len) as usize]
    }

    /// The name of VM `row`.
    #[inline]
    pub fn name<'t>(&'t self, row: &VmRow) -> &'t str {
        // Spans start and end where a pushed `&str` did, so on character boundaries.
        &self.text[row.name.start as usize..(row.name.start + row.name.len) as usize]
    }

    /// Whether VM `row` is in `group`.
    #[inline]
    pub fn in_group(&self, row: &VmRow, group: &str) -> bool {
        let group = group.as_bytes();
        self.groups[row.groups.0 as usize..row.groups.1 as usize]
            .iter()
            .any(|&g| g.len as usize == group.len() && self.bytes(g) == group)
    }
}

/// A VM as a request's scan sees it, wherever it is stored.
pub(crate) trait ScannedVm<'x> {
    /// Its name.
    fn name(&self) -> &'x str;
    /// Whether it is in `group` (groups and tags both count).
    fn in_group(&self, group: &str) -> bool;
}

/// A VM of the inventory, read in place.
pub(crate) struct ListedVm<'x> {
    pub vm: &'x Vm,
}

impl<'x> ScannedVm<'x> for ListedVm<'x> {
    #[inline]
    fn name(&self) -> &'x str {
        &self.vm.name
    }

    #[inline]
    fn in_group(&self, group: &str) -> bool {
        self.vm
            .groups
            .iter()
            .chain(&self.vm.tags)
            .any(|g| g == group)
    }
}

/// A VM of a [`VmTable`].
pub(crate) struct TabledVm<'x> {
    pub table: &'x VmTable,
    pub row: &'x VmRow,
}

impl<'x> ScannedVm<'x> for TabledVm<'x> {
    #[inline]
    fn name(&self) -> &'x str {
        self.table.name(self.row)
    }

    #[inline]
    fn in_group(&self, group: &str) -> bool {
        self.table.in_group(self.row, group)
    }
}

/// The indexed inventory plus the ledger of committed placements.
#[derive(Debug)]
pub(crate) struct Index<'a> {
    /// Hosts in name order: a host's id is its position here.
    pub hosts: Vec<&'a Host>,
    pub host_by_name: FxMap<&'a str, u32>,
    /// Datastores in name order.
    pub datastores: Vec<&'a Datastore>,
    pub ds_by_name: FxMap<&'a str, u32>,
    /// Datastores each host sees (ids, ascending, so in name order).
    pub host_ds: Rows<u32>,
    /// Networks of each host, as listed (lookups pick the first match by name).
    pub host_nets: Rows<&'a HostNetwork>,
    /// GPUs of each host, by PCI id.
    pub host_gpus: Rows<GpuEntry<'a>>,
    /// vGPU profiles of each host, by name.
    pub host_vgpus: Rows<&'a VgpuProfile>,
    // The ledger: starts as the inventory says, then each commit consumes its share.
    pub cpu_used: Vec<u64>,
    pub mem_used: Vec<u64>,
    pub ds_free: Vec<u64>,
    /// Parallel to `host_gpus.items`.
    pub gpu_taken: Vec<bool>,
    /// Parallel to `host_vgpus.items`.
    pub vgpu_free: Vec<u32>,
    /// The inventory's VMs and those committed placements added, from the first commit on.
    vms: Option<VmTable>,
}

impl<'a> Index<'a> {
    /// Indexes an inventory; host and datastore names must be unique.
    pub fn new(inv: &'a Fleet) -> Result<Self, Error> {
        let mut hosts: Vec<&Host> = inv.hosts.iter().collect();
        hosts.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = hosts.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::DuplicateHost(w[0].name.clone()));
        }
        let mut datastores: Vec<&Datastore> = inv.datastores.iter().collect();
        datastores.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = datastores.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::DuplicateDatastore(w[0].name.clone()));
        }
        let n = hosts.len();
        let host_by_name: FxMap<&str, u32> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i as u32))
            .collect();
        let ds_by_name: FxMap<&str, u32> = datastores
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i as u32))
            .collect();

        // Which host sees which datastore: the union of both sides, as (host << 32 | ds).
        let mut pairs: Vec<u64> =
            Vec::with_capacity(hosts.iter().map(|h| h.datastores.len()).sum());
        for (h, host) in hosts.iter().enumerate() {
            for name in &host.datastores {
                if let Some(&d) = ds_by_name.get(name.as_str()) {
                    pairs.push((h as u64) << 32 | u64::from(d));
                }
            }
        }
        let mut extra = false;
        for (d, ds) in datastores.iter().enumerate() {
            for name in &ds.hosts {
                if let Some(&h) = host_by_name.get(name.as_str()) {
                    pairs.push(u64::from(h) << 32 | d as u64);
                    extra = true;
                }
            }
        }
        if extra || pairs.windows(2).any(|w| w[0] >= w[1]) {
            pairs.sort_unstable();
            pairs.dedup();
        }
        let mut host_ds = Rows::with_capacity(n, pairs.len());
        let mut p = 0;
        for h in 0..n as u64 {
            while p < pairs.len() && pairs[p] >> 32 == h {
                host_ds.items.push(pairs[p] as u32);
                p += 1;
            }
            host_ds.end_row();
        }

        let mut host_nets = Rows::with_capacity(n, hosts.iter().map(|h| h.networks.len()).sum());
        let mut host_gpus = Rows::with_capacity(n, 0);
        let mut host_vgpus = Rows::with_capacity(n, 0);
        for host in &hosts {
            host_nets.items.extend(host.networks.iter());
            host_nets.end_row();

            let row_start = host_gpus.items.len();
            for device in host.pci_devices.iter().filter(|d| d.is_gpu()) {
                let search = format!("{} {}", device.vendor_name, device.device_name);
                host_gpus.items.push(GpuEntry {
                    device,
                    search: search.to_lowercase(),
                });
            }
            host_gpus.items[row_start..].sort_by(|a, b| a.device.id.cmp(&b.device.id));
            host_gpus.end_row();

            let row_start = host_vgpus.items.len();
            host_vgpus.items.extend(host.vgpu_profiles.iter());
            host_vgpus.items[row_start..].sort_by(|a, b| a.name.cmp(&b.name));
            host_vgpus.end_row();
        }

        Ok(Index {
            cpu_used: hosts.iter().map(|h| h.cpu_mhz_used).collect(),
            mem_used: hosts.iter().map(|h| h.memory_mib_used).collect(),
            ds_free: datastores.iter().map(|d| d.free_gib).collect(),
            gpu_taken: vec![false; host_gpus.items.len()],
            vgpu_free: host_vgpus.items.iter().map(|p| p.free).collect(),
            hosts,
            host_by_name,
            datastores,
            ds_by_name,
            host_ds,
            host_nets,
            host_gpus,
            host_vgpus,
            vms: None,
        })
    }

    /// The VM table, once a commit built it; until then scans read the inventory.
    pub fn vm_table(&self) -> Option<&VmTable> {
        self.vms.as_ref()
    }

    /// Builds the VM table now rather than on the first commit.
    pub fn build_vm_table(&mut self) {
        let hosts = &self.hosts;
        self.vms.get_or_insert_with(|| VmTable::build(hosts));
    }

    /// Records a VM a placement added.
    pub fn add_vm<'s>(&mut self, host: u32, name: &str, groups: impl Iterator<Item = &'s str>) {
        let hosts = &self.hosts;
        self.vms
            .get_or_insert_with(|| VmTable::build(hosts))
            .push(host, name, groups);
    }

    /// Whether a host has a GPU or vGPU instance still free.
    pub fn has_free_gpu(&self, h: u32) -> bool {
        self.host_gpus.range(h).any(|i| !self.gpu_taken[i])
            || self.host_vgpus.range(h).any(|i| self.vgpu_free[i] > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::placement::model::Vm;

    #[test]
    fn hosts_and_datastores_are_numbered_by_name_and_merged() {
        let inv = Fleet {
            hosts: vec![
                Host {
                    name: "b".into(),
                    datastores: vec!["ds2".into(), "missing".into()],
                    networks: vec![
                        HostNetwork {
                            name: "z".into(),
                            vlan_id: Some(2),
                        },
                        HostNetwork {
                            name: "a".into(),
                            vlan_id: None,
                        },
                    ],
                    vms: vec![Vm {
                        name: "vm1".into(),
                        groups: vec!["web".into()],
                        tags: vec!["prod".into()],
                        ..Vm::default()
                    }],
                    ..Host::default()
                },
                Host {
                    name: "a".into(),
                    vms: vec![Vm {
                        name: "vm1".into(),
                        ..Vm::default()
                    }],
                    ..Host::default()
                },
            ],
            datastores: vec![
                Datastore {
                    name: "ds2".into(),
                    ..Datastore::default()
                },
                Datastore {
                    name: "ds1".into(),
                    hosts: vec!["b".into(), "a".into(), "nope".into()],
                    ..Datastore::default()
                },
            ],
            ..Fleet::default()
        };
        let ix = Index::new(&inv).unwrap();
        assert_eq!(ix.hosts[0].name, "a");
        assert_eq!(ix.datastores[0].name, "ds1");
        assert_eq!(ix.host_ds.row(0), &[0]);
        assert_eq!(ix.host_ds.row(1), &[0, 1]);
        assert_eq!(ix.host_nets.row(1).len(), 2);
    }

    #[test]
    fn vm_table_flattens_names_and_groups() {
        let inv = Fleet {
            hosts: vec![Host {
                name: "h".into(),
                vms: vec![Vm {
                    name: "vm1".into(),
                    groups: vec!["web".into()],
                    tags: vec!["prod".into()],
                    ..Vm::default()
                }],
                ..Host::default()
            }],
            ..Fleet::default()
        };
        let mut ix = Index::new(&inv).unwrap();
        assert!(ix.vm_table().is_none());
        ix.add_vm(0, "vm2", ["db"].into_iter());
        let vms = ix.vm_table().unwrap();
        assert_eq!(vms.rows.len(), 2);
        let (a, b) = (&vms.rows[0], &vms.rows[1]);
        assert_eq!((vms.name(a), vms.name(b)), ("vm1", "vm2"));
        assert!(vms.in_group(a, "web") && vms.in_group(a, "prod"));
        assert!(!vms.in_group(a, "we") && !vms.in_group(a, "db"));
        assert!(vms.in_group(b, "db"));
        let listed = ListedVm {
            vm: &inv.hosts[0].vms[0],
        };
        assert!(listed.in_group("prod") && !listed.in_group("db"));
        assert_eq!(listed.name(), "vm1");
    }

    #[test]
    fn duplicate_names_are_errors() {
        let host = Host {
            name: "h".into(),
            ..Host::default()
        };
        let inv = Fleet {
            hosts: vec![host.clone(), host],
            ..Fleet::default()
        };
        assert_eq!(
            Index::new(&inv).unwrap_err(),
            Error::DuplicateHost("h".into())
        );
        let ds = Datastore {
            name: "d".into(),
            ..Datastore::default()
        };
        let inv = Fleet {
            datastores: vec![ds.clone(), ds],
            ..Fleet::default()
        };
        assert_eq!(
            Index::new(&inv).unwrap_err(),
            Error::DuplicateDatastore("d".into())
        );
    }

    #[test]
    fn fx_hash_distinguishes_lengths() {
        let h = |s: &str| {
            let mut hasher = FxHasher::default();
            hasher.write(s.as_bytes());
            hasher.finish()
        };
        assert_ne!(h("a"), h("a\0"));
        assert_ne!(h("vm-1"), h("vm-2"));
    }
}
