//! Virtual machines: their configuration and runtime read in one property set, the
//! `VirtualMachineConfigSpec` writer, and the task-backed operations (create, reconfigure,
//! power, destroy, clone, disk copy) awaited through [`Client::wait_for_task`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::device::{devices, Device, DeviceChange};
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::property::ObjectContent;
use super::task::TaskCall;
use super::types::ManagedObjectReference;
use super::xml::Node;

/// The VM properties [`VmInfo`] is read from (one `RetrievePropertiesEx`, batched on refresh).
pub const VM_PATHS: &[&str] = &[
    "name",
    "config.uuid",
    "config.instanceUuid",
    "config.guestId",
    "config.firmware",
    "config.version",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.cpuAllocation",
    "config.memoryAllocation",
    "config.cpuHotAddEnabled",
    "config.memoryHotAddEnabled",
    "config.changeTrackingEnabled",
    "config.memoryReservationLockedToMax",
    "config.annotation",
    "config.extraConfig",
    "config.template",
    "runtime.powerState",
    "runtime.host",
    "resourcePool",
    "parent",
    "datastore",
    "snapshot",
    "guest.ipAddress",
    "guest.net",
];

/// The extraConfig key where `ceso_vm` records its anti-affinity group (read back by
/// placement: VMs sharing a value should run on different hosts).
pub const GROUP_KEY: &str = "ceso.antiAffinityGroup";

/// A VM as vSphere reports it.
#[derive(Debug, Clone, Default)]
pub struct VmInfo {
    /// The VM.
    pub obj: Option<ManagedObjectReference>,
    /// Name.
    pub name: String,
    /// BIOS UUID.
    pub bios_uuid: String,
    /// Instance UUID.
    pub instance_uuid: String,
    /// Guest OS id.
    pub guest_id: String,
    /// `bios` or `efi`.
    pub firmware: String,
    /// Hardware version, e.g. `vmx-19`.
    pub version: String,
    /// vCPUs.
    pub num_cpus: i64,
    /// Cores per socket.
    pub cores_per_socket: i64,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// CPU reservation (MHz) and limit (-1 = none).
    pub cpu_reservation: i64,
    /// CPU limit in MHz (-1 = unlimited).
    pub cpu_limit: i64,
    /// Memory reservation (MiB).
    pub memory_reservation: i64,
    /// Memory limit in MiB (-1 = unlimited).
    pub memory_limit: i64,
    /// CPU hot add.
    pub cpu_hot_add: bool,
    /// Memory hot add.
    pub memory_hot_add: bool,
    /// Changed block tracking.
    pub cbt: bool,
    /// The memory reservation follows the memory size (needed by PCI passthrough).
    pub memory_locked_to_max: bool,
    /// Notes.
    pub annotation: String,
    /// extraConfig (last value of each key wins; empty values are "unset").
    pub extra_config: BTreeMap<String, String>,
    /// Whether it is a template.
    pub template: bool,
    /// `poweredOn`, `poweredOff`, `suspended`.
    pub power_state: String,
    /// Its host.
    pub host: Option<ManagedObjectReference>,
    /// Its resource pool.
    pub resource_pool: Option<ManagedObjectReference>,
    /// Its folder.
    pub folder: Option<ManagedObjectReference>,
    /// Datastores it uses.
    pub datastores: Vec<ManagedObjectReference>,
    /// Whether it has snapshots.
    pub has_snapshots: bool,
    /// Devices.
    pub devices: Vec<Device>,
    /// The guest's primary IP (from VMware Tools).
    pub default_ip: Option<String>,
    /// All guest IPs.
    pub ip_addresses: Vec<String>,
}

fn allocation(node: Option<&Node>) -> (i64, i64) {
    (
        node.and_then(|n| n.parse_of("reservation")).unwrap_or(0),
        node.and_then(|n| n.parse_of("limit")).unwrap_or(-1),
    )
}

impl VmInfo {
    /// The VM's disks, in device order.
    pub fn disks(&self) -> impl Iterator<Item = &super::device::Disk> {
        self.devices.iter().filter_map(|d| match d {
            Device::Disk(d) => Some(d),
            _ => None,
        })
    }

    /// The VM's PCI passthrough devices and vGPUs, in device order.
    pub fn passthroughs(&self) -> impl Iterator<Item = &super::device::Passthrough> {
        self.devices.iter().filter_map(|d| match d {
            Device::Passthrough(p) => Some(p),
            _ => None,
        })
    }

    /// The VM's network adapters, in device order.
    pub fn nics(&self) -> impl Iterator<Item = &super::device::Nic> {
        self.devices.iter().filter_map(|d| match d {
            Device::Nic(n) => Some(n),
            _ => None,
        })
    }

    /// Reads a VM's object content (collected with [`VM_PATHS`]).
    pub fn from_content(o: &ObjectContent) -> Self {
        let (cpu_reservation, cpu_limit) = allocation(o.get("config.cpuAllocation"));
        let (memory_reservation, memory_limit) = allocation(o.get("config.memoryAllocation"));
        let mut extra_config = BTreeMap::new();
        if let Some(ec) = o.get("config.extraConfig") {
            for opt in &ec.children {
                if let Some(k) = opt.text_of("key") {
                    let v = opt.text_of("value").unwrap_or_default();
                    if v.is_empty() {
                        extra_config.remove(k);
                    } else {
                        extra_config.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
        let mut ip_addresses: Vec<String> = o
            .get("guest.net")
            .map(|n| {
                n.children
                    .iter()
                    .flat_map(|nic| nic.children_named("ipAddress").map(|i| i.text.clone()))
                    .collect()
            })
            .unwrap_or_default();
        ip_addresses.dedup();
        Self {
            obj: Some(o.obj.clone()),
            name: o.text("name").unwrap_or_default().to_string(),
            bios_uuid: o.text("config.uuid").unwrap_or_default().to_string(),
            instance_uuid: o
                .text("config.instanceUuid")
                .unwrap_or_default()
                .to_string(),
            guest_id: o.text("config.guestId").unwrap_or_default().to_string(),
            firmware: o.text("config.firmware").unwrap_or("bios").to_string(),
            version: o.text("config.version").unwrap_or_default().to_string(),
            num_cpus: o.parse("config.hardware.numCPU").unwrap_or(1),
            cores_per_socket: o.parse("config.hardware.numCoresPerSocket").unwrap_or(1),
            memory_mb: o.parse("config.hardware.memoryMB").unwrap_or(0),
            cpu_reservation,
            cpu_limit,
            memory_reservation,
            memory_limit,
            cpu_hot_add: o.bool("config.cpuHotAddEnabled").unwrap_or(false),
            memory_hot_add: o.bool("config.memoryHotAddEnabled").unwrap_or(false),
            cbt: o.bool("config.changeTrackingEnabled").unwrap_or(false),
            memory_locked_to_max: o
                .bool("config.memoryReservationLockedToMax")
                .unwrap_or(false),
            annotation: o.text("config.annotation").unwrap_or_default().to_string(),
            extra_config,
            template: o.bool("config.template").unwrap_or(false),
            power_state: o
                .text("runtime.powerState")
                .unwrap_or("poweredOff")
                .to_string(),
            host: o.moref("runtime.host"),
            resource_pool: o.moref("resourcePool"),
            folder: o.moref("parent"),
            datastores: o.morefs("datastore"),
            has_snapshots: o
                .get("snapshot")
                .is_some_and(|s| s.child("rootSnapshotList").is_some()),
            devices: devices(o.get("config.hardware.device")),
            default_ip: o
                .text("guest.ipAddress")
                .filter(|i| !i.is_empty())
                .map(str::to_string),
            ip_addresses,
        }
    }
}

/// A `VirtualMachineConfigSpec`: only the fields set are sent.
#[derive(Debug, Clone, Default)]
pub struct ConfigSpec {
    /// Name.
    pub name: Option<String>,
    /// Hardware version, e.g. `vmx-19`.
    pub version: Option<String>,
    /// The instance UUID a new VM gets (chosen by the client, so the VM can be found by it
    /// when the answer to its creation is lost).
    pub instance_uuid: Option<String>,
    /// Guest OS id.
    pub guest_id: Option<String>,
    /// Notes.
    pub annotation: Option<String>,
    /// `[datastore]` where the VM's files go (create only).
    pub vm_path: Option<String>,
    /// vCPUs.
    pub num_cpus: Option<i64>,
    /// Cores per socket.
    pub cores_per_socket: Option<i64>,
    /// Memory in MiB.
    pub memory_mb: Option<i64>,
    /// Memory hot add.
    pub memory_hot_add: Option<bool>,
    /// CPU hot add.
    pub cpu_hot_add: Option<bool>,
    /// Device changes.
    pub device_changes: Vec<DeviceChange>,
    /// CPU (reservation, limit) in MHz.
    pub cpu_allocation: Option<(i64, i64)>,
    /// Memory (reservation, limit) in MiB.
    pub memory_allocation: Option<(i64, i64)>,
    /// extraConfig entries to set (an empty value removes the key).
    pub extra_config: Vec<(String, String)>,
    /// Changed block tracking.
    pub cbt: Option<bool>,
    /// `bios` or `efi`.
    pub firmware: Option<String>,
    /// Keep the memory reservation equal to the memory size (PCI passthrough needs it).
    pub memory_reservation_locked_to_max: Option<bool>,
}

impl ConfigSpec {
    /// Writes the spec as element `element`, in the WSDL's element order.
    pub fn write(&self, element: &str, w: &mut RequestWriter) {
        w.start(element, None);
        if let Some(v) = &self.name {
            w.text("name", v);
        }
        if let Some(v) = &self.version {
            w.text("version", v);
        }
        if let Some(v) = &self.instance_uuid {
            w.text("instanceUuid", v);
        }
        if let Some(v) = &self.guest_id {
            w.text("guestId", v);
        }
        if let Some(v) = &self.annotation {
            w.text("annotation", v);
        }
        if let Some(v) = &self.vm_path {
            w.start("files", None).text("vmPathName", v).end("files");
        }
        if let Some(v) = self.num_cpus {
            w.text("numCPUs", &v.to_string());
        }
        if let Some(v) = self.cores_per_socket {
            w.text("numCoresPerSocket", &v.to_string());
        }
        if let Some(v) = self.memory_mb {
            w.text("memoryMB", &v.to_string());
        }
        let b = |v: bool| if v { "true" } else { "false" };
        if let Some(v) = self.memory_hot_add {
            w.text("memoryHotAddEnabled", b(v));
        }
        if let Some(v) = self.cpu_hot_add {
            w.text("cpuHotAddEnabled", b(v));
        }
        for change in &self.device_changes {
            change.write(w);
        }
        let alloc = |w: &mut RequestWriter, name: &str, (reservation, limit): (i64, i64)| {
            w.start(name, None)
                .text("reservation", &reservation.to_string())
                .text("limit", &limit.to_string())
                .end(name);
        };
        if let Some(a) = self.cpu_allocation {
            alloc(w, "cpuAllocation", a);
        }
        if let Some(a) = self.memory_allocation {
            alloc(w, "memoryAllocation", a);
        }
        for (k, v) in &self.extra_config {
            w.start("extraConfig", None)
                .text("key", k)
                .typed_text("value", "xsd:string", v)
                .end("extraConfig");
        }
        if let Some(v) = self.cbt {
            w.text("changeTrackingEnabled", b(v));
        }
        if let Some(v) = &self.firmware {
            w.text("firmware", v);
        }
        if let Some(v) = self.memory_reservation_locked_to_max {
            w.text("memoryReservationLockedToMax", b(v));
        }
        w.end(element);
    }

    /// Whether the spec changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.version.is_none()
            && self.instance_uuid.is_none()
            && self.guest_id.is_none()
            && self.annotation.is_none()
            && self.num_cpus.is_none()
            && self.cores_per_socket.is_none()
            && self.memory_mb.is_none()
            && self.memory_hot_add.is_none()
            && self.cpu_hot_add.is_none()
            && self.device_changes.is_empty()
            && self.cpu_allocation.is_none()
            && self.memory_allocation.is_none()
            && self.extra_config.is_empty()
            && self.cbt.is_none()
            && self.firmware.is_none()
            && self.memory_reservation_locked_to_max.is_none()
    }
}

/// A fresh instance UUID for a new VM.
pub fn new_instance_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// How long a client waits, at most, for the tasks a lost call may have started.
pub const LOST_CALL_SETTLE: Duration = Duration::from_secs(600);

/// How to power a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOp {
    /// `PowerOnVM_Task`.
    On,
    /// `PowerOffVM_Task` (hard off).
    Off,
    /// `SuspendVM_Task`.
    Suspend,
}

/// Where a clone goes and how.
#[derive(Debug, Clone)]
pub struct CloneSpec {
    /// Destination resource pool.
    pub pool: Option<ManagedObjectReference>,
    /// Destination host.
    pub host: Option<ManagedObjectReference>,
    /// Destination datastore.
    pub datastore: Option<ManagedObjectReference>,
    /// Linked clone from the template's current snapshot.
    pub linked_snapshot: Option<ManagedObjectReference>,
    /// Changes applied while cloning.
    pub config: ConfigSpec,
}

fn no_args(_: &mut RequestWriter) {}

fn result_moref(result: Option<Node>, what: &str) -> Result<ManagedObjectReference> {
    result
        .as_ref()
        .and_then(Node::as_moref)
        .ok_or_else(|| Error::new(ErrorKind::Decode, format!("{what} returned no object")))
}

impl Client {
    /// Everything ceso reads of a VM, batched with concurrent reads of other VMs.
    pub async fn vm_info(&self, vm: &ManagedObjectReference) -> Result<VmInfo> {
        Ok(VmInfo::from_content(
            &self.read_batched(vm, VM_PATHS).await?,
        ))
    }

    /// `Folder.CreateVM_Task`: a new VM from a spec; returns it.
    pub async fn create_vm(
        self: &Arc<Self>,
        folder: &ManagedObjectReference,
        pool: &ManagedObjectReference,
        host: Option<&ManagedObjectReference>,
        spec: &ConfigSpec,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ManagedObjectReference> {
        let args = |w: &mut RequestWriter| {
            spec.write("config", w);
            w.moref("pool", pool);
            if let Some(h) = host {
                w.moref("host", h);
            }
        };
        let result = self
            .run_task(
                TaskCall {
                    name: "CreateVM_Task",
                    this: folder,
                    args: &args,
                },
                timeout,
                cancel,
            )
            .await?;
        result_moref(result, "CreateVM_Task")
    }

    /// `VirtualMachine.ReconfigVM_Task`.
    pub async fn reconfigure_vm(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        spec: &ConfigSpec,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| spec.write("spec", w);
        self.run_task(
            TaskCall {
                name: "ReconfigVM_Task",
                this: vm,
                args: &args,
            },
            timeout,
            cancel,
        )
        .await
        .map(|_| ())
    }

    /// The VM's power state now (`poweredOn`, `poweredOff`, `suspended`).
    pub async fn power_state(&self, vm: &ManagedObjectReference) -> Result<String> {
        Ok(self
            .properties(vm, &["runtime.powerState"])
            .await?
            .text("runtime.powerState")
            .unwrap_or_default()
            .to_string())
    }

    /// The guest's VMware Tools status (`guestToolsRunning`, `guestToolsNotRunning`, …); empty
    /// when vSphere does not say.
    pub async fn tools_status(&self, vm: &ManagedObjectReference) -> Result<String> {
        Ok(self
            .properties(vm, &["guest.toolsRunningStatus"])
            .await?
            .text("guest.toolsRunningStatus")
            .unwrap_or_default()
            .to_string())
    }

    /// Whether VMware Tools run in the guest (what quiescing needs); `false` when unknown.
    pub async fn tools_running(&self, vm: &ManagedObjectReference) -> bool {
        self.tools_status(vm)
            .await
            .is_ok_and(|s| s == "guestToolsRunning")
    }

    /// Powers a VM on, off or suspends it. When the answer is lost, the VM's power state says
    /// whether it happened; if not, it is tried once more.
    pub async fn power_vm(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        op: PowerOp,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let (name, reached) = match op {
            PowerOp::On => ("PowerOnVM_Task", "poweredOn"),
            PowerOp::Off => ("PowerOffVM_Task", "poweredOff"),
            PowerOp::Suspend => ("SuspendVM_Task", "suspended"),
        };
        let mut lost = 0;
        loop {
            let done = self
                .run_task(
                    TaskCall {
                        name,
                        this: vm,
                        args: &no_args,
                    },
                    timeout,
                    cancel,
                )
                .await;
            match done {
                Err(e)
                    if e.kind == ErrorKind::Transport && lost < super::error::LOST_CALL_RETRIES =>
                {
                    tracing::warn!(error = %e, %vm, method = name, "the outcome of a power operation is unknown; looking");
                    self.settle_tasks(vm, name, timeout.unwrap_or(LOST_CALL_SETTLE))
                        .await?;
                    if self.power_state(vm).await? == reached {
                        return Ok(());
                    }
                    lost += 1;
                }
                // The lost call did it after all.
                Err(e) if lost > 0 && e.fault.as_deref() == Some("InvalidPowerState") => {
                    if self.power_state(vm).await? == reached {
                        return Ok(());
                    }
                    return Err(e);
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// `VirtualMachine.CloneVM_Task` (vCenter): returns the clone.
    pub async fn clone_vm(
        self: &Arc<Self>,
        source: &ManagedObjectReference,
        folder: &ManagedObjectReference,
        name: &str,
        spec: &CloneSpec,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<ManagedObjectReference> {
        let args = |w: &mut RequestWriter| {
            w.moref("folder", folder).text("name", name);
            w.start("spec", None).start("location", None);
            if let Some(ds) = &spec.datastore {
                w.moref("datastore", ds);
            }
            if spec.linked_snapshot.is_some() {
                w.text("diskMoveType", "createNewChildDiskBacking");
            }
            if let Some(p) = &spec.pool {
                w.moref("pool", p);
            }
            if let Some(h) = &spec.host {
                w.moref("host", h);
            }
            w.end("location");
            w.text("template", "false");
            if !spec.config.is_empty() {
                spec.config.write("config", w);
            }
            w.text("powerOn", "false");
            if let Some(s) = &spec.linked_snapshot {
                w.moref("snapshot", s);
            }
            w.end("spec");
        };
        let result = self
            .run_task_reporting(
                TaskCall {
                    name: "CloneVM_Task",
                    this: source,
                    args: &args,
                },
                &format!("cloning VM {name:?}"),
                timeout,
                cancel,
            )
            .await?;
        result_moref(result, "CloneVM_Task")
    }

    /// `FileManager.MakeDirectory`: creates `[datastore] dir` (and its parents); an existing
    /// directory is fine.
    pub async fn make_directory(
        &self,
        path: &str,
        datacenter: Option<&ManagedObjectReference>,
    ) -> Result<()> {
        self.make_new_directory(path, datacenter).await.map(|_| ())
    }

    /// [`Client::make_directory`], saying whether this call made it (false: it existed).
    pub async fn make_new_directory(
        &self,
        path: &str,
        datacenter: Option<&ManagedObjectReference>,
    ) -> Result<bool> {
        let manager =
            self.service_content().file_manager.clone().ok_or_else(|| {
                Error::new(ErrorKind::NotVsphere, "the endpoint has no file manager")
            })?;
        let args = |w: &mut RequestWriter| {
            w.text("name", path);
            if let Some(dc) = datacenter {
                w.moref("datacenter", dc);
            }
            w.text("createParentDirectories", "true");
        };
        let call = super::methods::PlainCall {
            name: "MakeDirectory",
            this: &manager,
            args: &args,
        };
        match self.call(&call).await {
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(false),
            other => other.map(|()| true),
        }
    }

    /// `VirtualDiskManager.CopyVirtualDisk_Task`: copies a disk (with its extents) between
    /// datastore paths, e.g. `[ds1] tpl/tpl.vmdk` to `[ds1] web/web.vmdk`.
    pub async fn copy_virtual_disk(
        self: &Arc<Self>,
        source: &str,
        dest: &str,
        datacenter: Option<&ManagedObjectReference>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let manager = self
            .service_content()
            .virtual_disk_manager
            .clone()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotVsphere,
                    "the endpoint has no virtual disk manager",
                )
            })?;
        let args = |w: &mut RequestWriter| {
            w.text("sourceName", source);
            if let Some(dc) = datacenter {
                w.moref("sourceDatacenter", dc);
            }
            w.text("destName", dest);
            if let Some(dc) = datacenter {
                w.moref("destDatacenter", dc);
            }
            w.text("force", "false");
        };
        self.run_task_reporting(
            TaskCall {
                name: "CopyVirtualDisk_Task",
                this: &manager,
                args: &args,
            },
            &format!("copying disk {source} to {dest}"),
            timeout,
            cancel,
        )
        .await
        .map(|_| ())
    }
}

impl Client {
    /// Whether `guest_id` is a guest OS the compute resource's environment browser supports;
    /// when not, the supported ids (for the error message).
    pub async fn check_guest_id(
        &self,
        browser: &ManagedObjectReference,
        guest_id: &str,
    ) -> Result<std::result::Result<(), Vec<String>>> {
        let key = format!("{browser}|{guest_id}");
        let cell = self
            .known_guest_ids()
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .clone();
        let answer = cell
            .get_or_try_init(|| async {
                let args = |w: &mut RequestWriter| {
                    w.start("spec", None).text("guestId", guest_id).end("spec");
                };
                let call = super::methods::NodeCall {
                    name: "QueryConfigOptionEx",
                    this: browser,
                    args: &args,
                    idempotent: true,
                };
                let option = self.call(&call).await?;
                let ids: Vec<String> = option
                    .map(|o| {
                        o.children_named("guestOSDescriptor")
                            .filter_map(|d| d.text_of("id").map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                // Filtered to the one asked for when it exists; the whole list otherwise.
                Ok::<_, Error>(if ids.len() == 1 && ids[0] == guest_id {
                    Ok(())
                } else {
                    Err(ids)
                })
            })
            .await?;
        Ok(answer.clone())
    }
}

/// The task that makes a VM, named so that a create whose answer was lost can wait for it
/// (`Client::settle_tasks`) before looking for the VM.
#[derive(Debug, Clone, Copy)]
pub struct MakingTask<'a> {
    /// The entity the task runs on.
    pub entity: &'a ManagedObjectReference,
    /// The method that started it.
    pub method: &'static str,
}

impl<'a> MakingTask<'a> {
    /// `CreateVM_Task` on a folder.
    pub fn create_vm(folder: &'a ManagedObjectReference) -> Self {
        Self {
            entity: folder,
            method: "CreateVM_Task",
        }
    }

    /// `CloneVM_Task` on the source VM.
    pub fn clone_vm(source: &'a ManagedObjectReference) -> Self {
        Self {
            entity: source,
            method: "CloneVM_Task",
        }
    }
}

/// Where `RelocateVM_Task` moves a VM.
#[derive(Debug, Clone, Default)]
pub struct Relocation {
    /// The datastore of its files; `None` leaves them.
    pub datastore: Option<ManagedObjectReference>,
    /// The resource pool; `None` leaves it.
    pub pool: Option<ManagedObjectReference>,
    /// The host.
    pub host: Option<ManagedObjectReference>,
}

impl Client {
    /// The VM's current snapshot, if it has one.
    pub async fn current_snapshot(
        &self,
        vm: &ManagedObjectReference,
    ) -> Result<Option<ManagedObjectReference>> {
        Ok(self
            .properties(vm, &["snapshot.currentSnapshot"])
            .await?
            .moref("snapshot.currentSnapshot"))
    }

    /// The guest's primary IP address as VMware Tools report it; `None` until they do.
    pub async fn guest_ip(&self, vm: &ManagedObjectReference) -> Option<String> {
        self.properties(vm, &["guest.ipAddress"])
            .await
            .ok()
            .and_then(|o| o.text("guest.ipAddress").map(str::to_string))
            .filter(|ip| !ip.is_empty())
    }

    /// Every VM's name (templates left out), as (VM, name).
    pub async fn vm_names(&self) -> Result<Vec<(ManagedObjectReference, String)>> {
        Ok(self
            .retrieve_all("VirtualMachine", &["name", "config.template"])
            .await?
            .into_iter()
            .filter(|o| o.bool("config.template") != Some(true))
            .filter_map(|o| {
                let name = o.text("name")?.to_string();
                Some((o.obj, name))
            })
            .collect())
    }

    /// The name of each object (read together: concurrent reads coalesce into one round
    /// trip); an object whose name cannot be read is named by its id.
    pub async fn names_of(&self, objects: &[ManagedObjectReference]) -> Vec<String> {
        let reads = objects.iter().map(|o| self.read_batched(o, &["name"]));
        futures::future::join_all(reads)
            .await
            .into_iter()
            .zip(objects)
            .map(|(r, o)| {
                r.ok()
                    .and_then(|c| c.text("name").map(str::to_string))
                    .unwrap_or_else(|| o.value.clone())
            })
            .collect()
    }

    /// Renames a managed entity (`Rename_Task`) and waits for it.
    pub async fn rename(
        self: &Arc<Self>,
        entity: &ManagedObjectReference,
        name: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            w.text("newName", name);
        };
        let call = TaskCall {
            name: "Rename_Task",
            this: entity,
            args: &args,
        };
        self.run_task(call, timeout, cancel).await.map(|_| ())
    }

    /// Moves a VM (`RelocateVM_Task`), logging progress as `what`, and waits for it.
    pub async fn relocate_vm(
        self: &Arc<Self>,
        vm: &ManagedObjectReference,
        to: &Relocation,
        what: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let args = |w: &mut RequestWriter| {
            w.start("spec", None);
            if let Some(ds) = &to.datastore {
                w.moref("datastore", ds);
            }
            if let Some(p) = &to.pool {
                w.moref("pool", p);
            }
            if let Some(h) = &to.host {
                w.moref("host", h);
            }
            w.end("spec");
            w.text("priority", "defaultPriority");
        };
        let call = TaskCall {
            name: "RelocateVM_Task",
            this: vm,
            args: &args,
        };
        self.run_task_reporting(call, what, timeout, cancel)
            .await
            .map(|_| ())
    }
}
