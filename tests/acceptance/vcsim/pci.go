package main

// ceso addition: PCI passthrough (DirectPath I/O) and NVIDIA vGPU, modelled after the vSphere
// API reference: HostSystem.hardware.pciDevice (HostPciDevice), HostConfigInfo.pciPassthruInfo
// (HostPciPassthruInfo), the HostPciPassthruSystem managed object (pciPassthruInfo,
// UpdatePassthruConfig, Refresh), HostSystem.RebootHost_Task, HostConfigInfo.graphicsInfo
// (HostGraphicsInfo) and sharedPassthruGpuTypes, EnvironmentBrowser.QueryConfigTarget
// (ConfigTarget.pciPassthrough / sharedGpuPassthroughTypes), and the checks vSphere makes when a
// VM gets a VirtualPCIPassthrough device (ReconfigVM_Task) and when it powers on with one
// (PowerOnVM_Task).
//
// Where govmomi 0.24's simulator falls short:
//
//   - every host lists only the chipset devices of a VMware virtual machine in
//     hardware.pciDevice, none of which could be passed through, and config.pciPassthruInfo,
//     config.graphicsInfo and config.sharedPassthruGpuTypes are empty;
//   - configManager.pciPassthruSystem names "ha-pcipassthrusystem" on every host (in the
//     vCenter model too, the same reference for all hosts), and no such object is registered:
//     any call to it, or a property read, fails with ManagedObjectNotFound;
//   - HostSystem has no RebootHost_Task (MethodNotFound);
//   - QueryConfigTarget never fills pciPassthrough or sharedGpuPassthroughTypes;
//   - ReconfigVM_Task accepts any VirtualPCIPassthrough, whatever its backing and whatever the
//     VM's power state, and PowerOnVM_Task never looks at such devices.
//
// What is modelled (flags -gpu-hosts in main.go, -reboot-ms here):
//
//   - The first -gpu-hosts HostSystems, by name, get an NVIDIA Tesla T4, an NVIDIA A100 PCIe
//     40GB and a two-function Intel X710 NIC, each behind its own PCIe root port, appended to
//     hardware.pciDevice (the simulator's own devices stay, and stay not passthrough-capable;
//     bridges cannot be passed through either). The two X710 functions share one
//     dependentDevice ("device which needs to be unclaimed by vmkernel"), so the host hands
//     them out, and takes them back, together: UpdatePassthruConfig on either applies to both.
//   - Every host gets its own HostPciPassthruSystem (registered under the reference its
//     configManager names; in the vCenter model "pciPassthruSystem-<host number>", as vCenter
//     names them) whose state is the one source of truth for pciPassthruInfo: each change is
//     published, as one fresh copy, both as the system's pciPassthruInfo and as the host's
//     config.pciPassthruInfo, so the two never differ.
//   - UpdatePassthruConfig sets passthruEnabled; passthruActive follows only at the next
//     reboot ("meaning enabled + rebooted" in the reference): the modelled hosts cannot rebind
//     a device without a reboot, so applyNow is accepted and the change still waits for the
//     reboot. An unknown device, a device that is not passthrough-capable, or an SR-IOV request
//     fails with HostConfigFault, the one fault the reference lists besides RuntimeFault.
//   - RebootHost_Task: without force the host must be in maintenance mode (else InvalidState,
//     as the reference says). The task runs for -reboot-ms milliseconds, during which
//     runtime.connectionState is notResponding; then the host is back (connected, a new
//     runtime.bootTime), every device's passthruActive is its passthruEnabled, VMs that were
//     running on it are powered off (a reboot kills them), and the task succeeds ("if the
//     command is successful, then the host has been rebooted"). A client talking straight to
//     a real ESXi host loses its connection instead; this server keeps answering.
//   - config.graphicsInfo lists the two GPUs: graphicsType "direct" while passthrough is active
//     on the device, else "sharedDirect" (the NVIDIA vGPU host driver owns it). A GPU serves
//     vGPU only while it is not passed through, so config.sharedPassthruGpuTypes lists the
//     grid_t4-* / grid_a100-* profiles of the GPUs that are not passthruActive.
//   - QueryConfigTarget: pciPassthrough lists every passthruActive device of the host asked
//     about (or of every host of the compute resource), with that host's systemId;
//     sharedGpuPassthroughTypes lists the host's vGPU profiles. The rest of the simulator's
//     answer is kept.
//   - ReconfigVM_Task with a VirtualPCIPassthrough (add, edit or remove) fails unless the VM is
//     powered off (InvalidPowerState; DirectPath I/O and vGPU devices cannot be hot-plugged). A
//     VirtualPCIPassthroughDeviceBackingInfo must name a passthruActive device of the VM's host
//     not already on the VM, with the host's systemId (an empty one is filled in; "BYPASS", which
//     some clients send, is accepted), else InvalidDeviceBacking naming the device; a
//     VirtualPCIPassthroughVmiopBackingInfo's vgpu must be one of the host's
//     sharedPassthruGpuTypes, else InvalidDeviceBacking. Other backings (dynamic DirectPath, DVX)
//     are passed on unchecked. A new device without a controller goes onto the VM's PCI
//     controller, and gets a "PCI device N" label, as vSphere shows it.
//   - PowerOnVM_Task of a VM with a VirtualPCIPassthrough fails unless all its memory is
//     reserved (memoryReservationLockedToMax, or memoryAllocation.reservation == memoryMB), if a
//     DirectPath device is not (or no longer) passthruActive on the host or is used by another
//     powered-on VM of the host, or if the host no longer offers a vGPU profile. These are
//     failures of the VM's power-on on the host, which vSphere reports as GenericVmConfigFault
//     with the reason in words (the memory one in the words ESXi uses).
//
// Not modelled: HostGraphicsInfo.vm (the VMs using a GPU), vGPU capacity per GPU,
// config.sharedGpuCapabilities, HostGraphicsManager (configManager.graphicsManager still
// dangles), HostCapability (the simulator leaves it unset, so rebootSupported and
// deviceRebindWithoutRebootSupported are not reported), SR-IOV, and the power-on paths that do
// not go through PowerOnVM_Task (PowerOnMultiVM_Task, ResetVM_Task, snapshot reverts).
//
// How the calls are reached. HostSystem and VirtualMachine objects cannot be replaced by
// wrapper types (the simulator type-asserts them to its own types everywhere; see snapshot.go),
// so, as snapshot.go does, the requests are routed at decode time: init registers one request
// type (pciRequest) for ReconfigVM_Task, PowerOnVM_Task, QueryConfigTarget and RebootHost_Task.
// Its UnmarshalXML records the element's tokens, decodes them into govmomi's request type (to
// read the target and the arguments) and, when another request type was registered for the
// method before this file's init ran (another ceso addition in a file sorted before pci.go,
// whose init runs first), into that type as well, and points This at one stateless dispatcher
// (pciModel). The dispatcher checks what vSphere checks and then hands the request, decoded as
// the earlier registration wanted it, to the object its This names, as Service.call would have:
// so the simulator's own method (or the earlier addition's) still does the work, and
// additions compose instead of replacing each other. (A registration made after this init,
// without the same care, would replace this routing.) The HostPciPassthruSystem is a real
// registered object (pciPassthruSystem) whose methods the simulator finds by reflection.
//
// Locking: pciMu guards the passthrough state of all hosts and is always taken last (no object
// lock is ever requested while it is held). Published properties change only under the lock of
// the object they belong to, one object at a time; the pass-through system's methods (run with
// the system locked by the simulator) take the host's lock inside, and nothing takes them in
// the other order.

import (
	"crypto/sha1"
	"flag"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// ceso addition: -reboot-ms is how long a RebootHost_Task keeps the host notResponding before it
// is back and the task succeeds. (Registered here, parsed by main's flag.Parse.)
var pciRebootDelay = flag.Int("reboot-ms", 200,
	"milliseconds a RebootHost_Task takes (host notResponding meanwhile); 0 completes it at once")

// ---------------------------------------------------------------------------- host hardware

// pciDeviceSpec is one PCI function added to a GPU host, with what the model needs to know
// about it beyond HostPciDevice.
type pciDeviceSpec struct {
	dev types.HostPciDevice
	// capable devices can be passed through; dependent is their dependentDevice (the
	// device id that vmkernel must release with them; equal ids form one group).
	capable   bool
	dependent string
	// GPUs only: framebuffer size and the vGPU profiles the NVIDIA host driver offers.
	memKB    int64
	profiles []string
}

// pciID encodes a 16-bit PCI id the way the API carries it: an xsd:short, so ids above 0x7fff
// (Intel's 0x8086, for one) are negative, as real hosts send them.
func pciID(v uint16) int16 { return int16(v) }

func pciDev(id string, class, vendor, subVendor, device, subDevice uint16, vendorName, name, parent string) types.HostPciDevice {
	var bus, slot, fn int
	// id is "domain:bus:slot.function", all hex.
	if _, err := fmt.Sscanf(id, "0000:%x:%x.%x", &bus, &slot, &fn); err != nil {
		panic("bad PCI id " + id)
	}
	return types.HostPciDevice{
		Id:           id,
		ClassId:      pciID(class),
		Bus:          byte(bus),
		Slot:         byte(slot),
		Function:     byte(fn),
		VendorId:     pciID(vendor),
		SubVendorId:  pciID(subVendor),
		VendorName:   vendorName,
		DeviceId:     pciID(device),
		SubDeviceId:  pciID(subDevice),
		ParentBridge: parent,
		DeviceName:   name,
	}
}

const (
	pciClassBridge  = 0x0604 // PCI-to-PCI bridge (here: PCIe root ports)
	pciClass3D      = 0x0302 // 3D controller (compute GPUs)
	pciClassNetwork = 0x0200 // Ethernet controller
	kib             = 1024
)

// pciGPUHostDevices are added to the hardware.pciDevice of the first -gpu-hosts hosts.
var pciGPUHostDevices = []pciDeviceSpec{
	{dev: pciDev("0000:3a:00.0", pciClassBridge, 0x8086, 0, 0x2030, 0, "Intel Corporation", "Sky Lake-E PCI Express Root Port A", "")},
	{
		dev:     pciDev("0000:3b:00.0", pciClass3D, 0x10de, 0x10de, 0x1eb8, 0x12a2, "NVIDIA Corporation", "TU104GL [Tesla T4]", "0000:3a:00.0"),
		capable: true, dependent: "0000:3b:00.0",
		memKB:    16 * kib * kib,
		profiles: []string{"grid_t4-1q", "grid_t4-2q", "grid_t4-4q", "grid_t4-8q", "grid_t4-16q"},
	},
	{dev: pciDev("0000:80:03.0", pciClassBridge, 0x8086, 0, 0x2033, 0, "Intel Corporation", "Sky Lake-E PCI Express Root Port D", "")},
	{
		dev:     pciDev("0000:81:00.0", pciClassNetwork, 0x8086, 0x8086, 0x1572, 0x0007, "Intel Corporation", "Ethernet Controller X710 for 10GbE SFP+", "0000:80:03.0"),
		capable: true, dependent: "0000:81:00.0",
	},
	{
		dev:     pciDev("0000:81:00.1", pciClassNetwork, 0x8086, 0x8086, 0x1572, 0x0007, "Intel Corporation", "Ethernet Controller X710 for 10GbE SFP+", "0000:80:03.0"),
		capable: true, dependent: "0000:81:00.0",
	},
	{dev: pciDev("0000:ae:00.0", pciClassBridge, 0x8086, 0, 0x2030, 0, "Intel Corporation", "Sky Lake-E PCI Express Root Port A", "")},
	{
		dev:     pciDev("0000:af:00.0", pciClass3D, 0x10de, 0x10de, 0x20f1, 0x145f, "NVIDIA Corporation", "GA100 [A100 PCIe 40GB]", "0000:ae:00.0"),
		capable: true, dependent: "0000:af:00.0",
		memKB:    40 * kib * kib,
		profiles: []string{"grid_a100-4c", "grid_a100-8c", "grid_a100-10c", "grid_a100-20c", "grid_a100-40c"},
	},
}

// pciSystemID is the systemId a host reports for its passthrough devices
// (VirtualMachinePciPassthroughInfo.systemId, to be copied into
// VirtualPCIPassthroughDeviceBackingInfo.systemId). The reference only says "the ID of the
// system the PCI device is attached to"; real hosts report the ESXi installation's system UUID
// (what `esxcli system uuid get` prints), which is not hardware.systemInfo.uuid (the BIOS one)
// and which the API exposes nowhere else. So it is modelled as a UUID-shaped value of its own,
// stable per host, and a client has to read it from QueryConfigTarget, as it must on vSphere.
func pciSystemID(host types.ManagedObjectReference) string {
	s := sha1.Sum([]byte("ceso-esx-system-uuid/" + host.Value))
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// ---------------------------------------------------------------------------- HostPciPassthruSystem

// ceso addition: pciMu guards the passthrough state (the info/devices of every
// pciPassthruSystem). It is always the innermost lock.
var pciMu sync.Mutex

// ceso addition: pciPassthruSystem is a host's HostPciPassthruSystem. mo.HostPciPassthruSystem
// comes first and by value: the property collector reaches the managed object through field 0.
type pciPassthruSystem struct {
	mo.HostPciPassthruSystem

	host     types.ManagedObjectReference
	hostName string
	systemID string
	gpu      bool

	// devices mirrors the host's hardware.pciDevice (fixed once installed); info[i] is the
	// passthrough state of devices[i]: the source of truth, guarded by pciMu, published by
	// publish.
	devices []types.HostPciDevice
	specs   map[string]*pciDeviceSpec
	info    []types.HostPciPassthruInfo
}

// ceso addition: installPciModel gives every host its HostPciPassthruSystem and pciPassthruInfo,
// and the first gpuHosts hosts by name (in the ESXi model, the one host) the devices of
// pciGPUHostDevices. Hosts added later (AddStandaloneHost_Task, AddHost_Task) get the system
// without extra devices. Called from main once the inventory is built.
func installPciModel(gpuHosts int) {
	reg := simulator.Map
	var hosts []*simulator.HostSystem
	for _, e := range reg.All("HostSystem") {
		if h, ok := e.(*simulator.HostSystem); ok {
			hosts = append(hosts, h)
		}
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	for i, h := range hosts {
		pciInstallHost(reg, h, i < gpuHosts)
	}
	reg.AddHandler(&pciHostInstaller{})
}

// ceso addition: pciHostInstaller is a registry handler giving hosts added later their system.
type pciHostInstaller struct{}

func (*pciHostInstaller) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "CesoPciHostInstaller", Value: "ceso-pci-host-installer"}
}

func (*pciHostInstaller) PutObject(o mo.Reference) {
	if h, ok := o.(*simulator.HostSystem); ok {
		pciInstallHost(simulator.Map, h, false)
	}
}

func (*pciHostInstaller) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (*pciHostInstaller) RemoveObject(types.ManagedObjectReference)         {}

// pciInstallHost registers h's pciPassthruSystem (once) and publishes its state.
func pciInstallHost(reg *simulator.Registry, h *simulator.HostSystem, gpu bool) {
	if h.Hardware == nil || h.Config == nil || pciSystemOf(reg, h) != nil {
		return
	}
	s := &pciPassthruSystem{host: h.Self, hostName: h.Name, systemID: pciSystemID(h.Self), gpu: gpu, specs: map[string]*pciDeviceSpec{}}

	// hardware.pciDevice is shared with the simulator's template: build a new slice.
	s.devices = append([]types.HostPciDevice(nil), h.Hardware.PciDevice...)
	if gpu {
		for i := range pciGPUHostDevices {
			spec := &pciGPUHostDevices[i]
			s.devices = append(s.devices, spec.dev)
			s.specs[spec.dev.Id] = spec
		}
		sort.SliceStable(s.devices, func(i, j int) bool { return s.devices[i].Id < s.devices[j].Id })
	}
	for _, d := range s.devices {
		info := types.HostPciPassthruInfo{Id: d.Id, DependentDevice: d.Id}
		if spec := s.specs[d.Id]; spec != nil && spec.capable {
			info.PassthruCapable = true
			info.DependentDevice = spec.dependent
		}
		s.info = append(s.info, info)
	}

	// The reference configManager names is shared with the template too (and in the vCenter
	// model the same for every host): give each host its own.
	ref := types.ManagedObjectReference{Type: "HostPciPassthruSystem", Value: "ha-pcipassthrusystem"}
	if !reg.IsESX() {
		ref.Value = "pciPassthruSystem-" + strings.TrimPrefix(h.Self.Value, "host-")
	}
	s.Self = ref
	reg.Put(s)

	reg.WithLock(h, func() {
		h.Hardware.PciDevice = s.devices
		h.ConfigManager.PciPassthruSystem = &ref
	})
	s.publish(reg, reg.WithLock)
}

// pciSystemOf returns the pciPassthruSystem of host h, if installed.
func pciSystemOf(reg *simulator.Registry, h *simulator.HostSystem) *pciPassthruSystem {
	if h == nil || h.ConfigManager.PciPassthruSystem == nil {
		return nil
	}
	s, _ := reg.Get(*h.ConfigManager.PciPassthruSystem).(*pciPassthruSystem)
	return s
}

// pciHostSystem returns the pciPassthruSystem of the host ref names.
func pciHostSystem(reg *simulator.Registry, ref *types.ManagedObjectReference) *pciPassthruSystem {
	if ref == nil {
		return nil
	}
	h, _ := reg.Get(*ref).(*simulator.HostSystem)
	return pciSystemOf(reg, h)
}

// publish copies the state into the host's config (pciPassthruInfo, graphicsInfo,
// sharedPassthruGpuTypes) and into the system's pciPassthruInfo, each under its object's lock
// (withLock: ctx.WithLock inside a method of one of them, which is locked already, else
// Registry.WithLock), so property collector updates go out for both.
func (s *pciPassthruSystem) publish(reg *simulator.Registry, withLock func(mo.Reference, func())) {
	if h, ok := reg.Get(s.host).(*simulator.HostSystem); ok {
		withLock(h, func() {
			pciMu.Lock()
			changes := []types.PropertyChange{{Name: "config.pciPassthruInfo", Val: s.passthruInfo()}}
			if s.gpu {
				changes = append(changes,
					types.PropertyChange{Name: "config.graphicsInfo", Val: s.graphicsInfo()},
					types.PropertyChange{Name: "config.sharedPassthruGpuTypes", Val: s.vgpuProfiles()})
			}
			pciMu.Unlock()
			reg.Update(h, changes)
		})
	}
	withLock(s, func() {
		pciMu.Lock()
		info := s.passthruInfo()
		pciMu.Unlock()
		reg.Update(s, []types.PropertyChange{{Name: "pciPassthruInfo", Val: info}})
	})
}

// passthruInfo is a fresh copy of the state, as the API type. pciMu must be held.
func (s *pciPassthruSystem) passthruInfo() []types.BaseHostPciPassthruInfo {
	out := make([]types.BaseHostPciPassthruInfo, len(s.info))
	for i := range s.info {
		info := s.info[i]
		out[i] = &info
	}
	return out
}

// graphicsInfo describes the host's GPUs. pciMu must be held.
func (s *pciPassthruSystem) graphicsInfo() []types.HostGraphicsInfo {
	var out []types.HostGraphicsInfo
	for i, d := range s.devices {
		spec := s.specs[d.Id]
		if spec == nil || spec.memKB == 0 {
			continue
		}
		kind := types.HostGraphicsInfoGraphicsTypeSharedDirect
		if s.info[i].PassthruActive {
			kind = types.HostGraphicsInfoGraphicsTypeDirect
		}
		out = append(out, types.HostGraphicsInfo{
			DeviceName:     d.DeviceName,
			VendorName:     d.VendorName,
			PciId:          d.Id,
			GraphicsType:   string(kind),
			MemorySizeInKB: spec.memKB,
		})
	}
	return out
}

// vgpuProfiles lists the vGPU profiles of the GPUs not passed through. pciMu must be held.
func (s *pciPassthruSystem) vgpuProfiles() []string {
	out := []string{}
	for i, d := range s.devices {
		if spec := s.specs[d.Id]; spec != nil && !s.info[i].PassthruActive {
			out = append(out, spec.profiles...)
		}
	}
	return out
}

// activeDevices lists the devices passthrough is active on. pciMu must be held.
func (s *pciPassthruSystem) activeDevices() []types.HostPciDevice {
	var out []types.HostPciDevice
	for i := range s.info {
		if s.info[i].PassthruActive {
			out = append(out, s.devices[i])
		}
	}
	return out
}

// device returns the device with the given id and its state. pciMu must be held.
func (s *pciPassthruSystem) device(id string) (*types.HostPciDevice, *types.HostPciPassthruInfo) {
	for i := range s.devices {
		if s.devices[i].Id == id {
			return &s.devices[i], &s.info[i]
		}
	}
	return nil, nil
}

func (s *pciPassthruSystem) hasProfile(vgpu string) bool {
	pciMu.Lock()
	defer pciMu.Unlock()
	for _, p := range s.vgpuProfiles() {
		if p == vgpu {
			return true
		}
	}
	return false
}

// pciHostNotReachable is the fault of a call to a host that is rebooting.
func pciHostNotReachable(reg *simulator.Registry, host types.ManagedObjectReference) (types.BaseMethodFault, string) {
	h, ok := reg.Get(host).(*simulator.HostSystem)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: host}, "managed object not found: " + host.String()
	}
	var state types.HostSystemConnectionState
	reg.WithLock(h, func() { state = h.Runtime.ConnectionState })
	if state == types.HostSystemConnectionStateNotResponding {
		return &types.HostNotReachable{}, fmt.Sprintf("Host %s is not responding.", h.Name)
	}
	return nil, ""
}

// ceso addition: UpdatePassthruConfig sets passthruEnabled for each device named (and for the
// devices sharing its dependentDevice). Nothing is applied unless every entry is valid. The
// change becomes active at the host's next reboot.
func (s *pciPassthruSystem) UpdatePassthruConfig(ctx *simulator.Context, req *types.UpdatePassthruConfig) soap.HasFault {
	fail := func(fault types.BaseMethodFault, msg string) soap.HasFault {
		return &methods.UpdatePassthruConfigBody{Fault_: simulator.Fault(msg, fault)}
	}
	if f, msg := pciHostNotReachable(ctx.Map, s.host); f != nil {
		return fail(f, msg)
	}

	pciMu.Lock()
	enabled := append([]types.HostPciPassthruInfo(nil), s.info...)
	for _, c := range req.Config {
		cfg := c.GetHostPciPassthruConfig()
		if sriov, ok := c.(*types.HostSriovConfig); ok && sriov.SriovEnabled {
			pciMu.Unlock()
			return fail(&types.HostConfigFault{}, fmt.Sprintf("Device %s on host %s does not support SR-IOV.", cfg.Id, s.hostName))
		}
		_, info := s.device(cfg.Id)
		if info == nil {
			pciMu.Unlock()
			return fail(&types.HostConfigFault{}, fmt.Sprintf("Device %s was not found on host %s.", cfg.Id, s.hostName))
		}
		if !info.PassthruCapable {
			pciMu.Unlock()
			return fail(&types.HostConfigFault{}, fmt.Sprintf("Device %s on host %s is not capable of passthrough.", cfg.Id, s.hostName))
		}
		for i := range enabled {
			if enabled[i].PassthruCapable && enabled[i].DependentDevice == info.DependentDevice {
				enabled[i].PassthruEnabled = cfg.PassthruEnabled
			}
		}
	}
	s.info = enabled
	pciMu.Unlock()

	s.publish(ctx.Map, ctx.WithLock)
	return &methods.UpdatePassthruConfigBody{Res: &types.UpdatePassthruConfigResponse{}}
}

// ceso addition: Refresh re-reads the passthrough state; here it publishes it again.
func (s *pciPassthruSystem) Refresh(ctx *simulator.Context, req *types.Refresh) soap.HasFault {
	if f, msg := pciHostNotReachable(ctx.Map, s.host); f != nil {
		return &methods.RefreshBody{Fault_: simulator.Fault(msg, f)}
	}
	s.publish(ctx.Map, ctx.WithLock)
	return &methods.RefreshBody{Res: &types.RefreshResponse{}}
}

// ---------------------------------------------------------------------------- request routing

// ceso addition: pciModelRef names the dispatcher in simulator.Map; clients never see it.
var pciModelRef = types.ManagedObjectReference{Type: "CesoPciModel", Value: "ceso-pci-model"}

// ceso addition: pciModel receives the requests routed to it by pciRequest. It holds no state;
// as a sync.Locker with no-op methods it opts out of the simulator's lock on the dispatch
// object, and locks the real objects itself.
type pciModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*pciModel) Reference() types.ManagedObjectReference { return pciModelRef }
func (*pciModel) Lock()                                   {}
func (*pciModel) Unlock()                                 {}

var pciModelMu sync.Mutex

// pciRoute is what a routed method was decoded into: govmomi's request type, and the type that
// was registered for it before (the same, unless another addition routes it too).
type pciRoute struct{ std, prev reflect.Type }

var pciRoutes = map[string]pciRoute{}

func pciRouteMethod(name string, std interface{}) {
	st := reflect.TypeOf(std)
	prev, ok := types.TypeFunc()(name)
	if !ok {
		prev = st
	}
	pciRoutes[name] = pciRoute{std: st, prev: prev}
	types.Add(name, reflect.TypeOf(pciRequest{}))
}

func init() {
	pciRouteMethod("ReconfigVM_Task", types.ReconfigVM_Task{})
	pciRouteMethod("PowerOnVM_Task", types.PowerOnVM_Task{})
	pciRouteMethod("QueryConfigTarget", types.QueryConfigTarget{})
	pciRouteMethod("RebootHost_Task", types.RebootHost_Task{})
}

// ceso addition: pciRequest is the decoded form of every routed request.
type pciRequest struct {
	This   types.ManagedObjectReference // the dispatcher, read by Service.call
	method string
	target types.ManagedObjectReference // the _this the client sent
	std    interface{}                  // e.g. *types.ReconfigVM_Task: read (and, when it is inner, adjusted) here
	inner  interface{}                  // the request as the earlier registration decodes it: forwarded
}

func (r *pciRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	route, ok := pciRoutes[start.Name.Local]
	if !ok {
		return fmt.Errorf("ceso pci model: no route for %s", start.Name.Local)
	}
	toks := []xml.Token{start.Copy()}
	for depth := 1; depth > 0; {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch t.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
		toks = append(toks, xml.CopyToken(t))
	}
	decode := func(rt reflect.Type) (interface{}, error) {
		v := reflect.New(rt).Interface()
		nd := xml.NewTokenDecoder(&pciTokens{toks: toks})
		nd.TypeFunc = d.TypeFunc
		t, err := nd.Token()
		if err != nil {
			return nil, err
		}
		s := t.(xml.StartElement)
		return v, nd.DecodeElement(v, &s)
	}
	var err error
	if r.std, err = decode(route.std); err != nil {
		return err
	}
	r.inner = r.std
	if route.prev != route.std {
		if r.inner, err = decode(route.prev); err != nil {
			return err
		}
	}
	r.method = start.Name.Local
	r.target = reflect.ValueOf(r.std).Elem().FieldByName("This").Interface().(types.ManagedObjectReference)

	pciModelMu.Lock()
	if simulator.Map.Get(pciModelRef) == nil {
		simulator.Map.Put(&pciModel{})
	}
	pciModelMu.Unlock()
	r.This = pciModelRef
	return nil
}

// pciTokens replays recorded tokens.
type pciTokens struct{ toks []xml.Token }

func (p *pciTokens) Token() (xml.Token, error) {
	if len(p.toks) == 0 {
		return nil, io.EOF
	}
	t := p.toks[0]
	p.toks = p.toks[1:]
	return t, nil
}

// pciFaultBody is a SOAP fault answer for any method.
type pciFaultBody struct {
	Fault_ *soap.Fault `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *pciFaultBody) Fault() *soap.Fault { return b.Fault_ }

// pciForward hands the request to the object its (inner) This names, as Service.call would:
// same method-name mapping, disabled-method check, lock and ctx.Caller.
func pciForward(ctx *simulator.Context, r *pciRequest) soap.HasFault {
	this := reflect.ValueOf(r.inner).Elem().FieldByName("This").Interface().(types.ManagedObjectReference)
	handler := ctx.Map.Get(this)
	if handler == nil {
		return &pciFaultBody{simulator.Fault("managed object not found: "+this.String(), &types.ManagedObjectNotFound{Obj: this})}
	}
	name := strings.ToUpper(r.method[:1]) + r.method[1:]
	if strings.HasSuffix(name, "_Task") {
		name = strings.TrimSuffix(name, "_Task") + "Task"
	}
	m := reflect.ValueOf(handler).MethodByName(name)
	if !m.IsValid() {
		return &pciFaultBody{simulator.Fault(fmt.Sprintf("%s does not implement: %s", this, r.method), &types.MethodNotFound{Receiver: this, Method: r.method})}
	}
	if e, ok := handler.(mo.Entity); ok {
		for _, dm := range e.Entity().DisabledMethod {
			if dm == name {
				return &pciFaultBody{simulator.Fault(fmt.Sprintf("%s method is disabled: %s", this, r.method), &types.MethodDisabled{})}
			}
		}
	}
	var args, res []reflect.Value
	if m.Type().NumIn() == 2 {
		args = append(args, reflect.ValueOf(ctx))
	}
	args = append(args, reflect.ValueOf(r.inner))
	prev := ctx.Caller
	ctx.Map.WithLock(handler, func() {
		ctx.Caller = &this
		res = m.Call(args)
	})
	ctx.Caller = prev
	return res[0].Interface().(soap.HasFault)
}

// pciFailedTask creates a task on obj that has failed with fault, described by msg (the
// simulator's own tasks carry only the fault's Go type as localizedMessage).
func pciFailedTask(obj mo.Reference, name string, fault types.BaseMethodFault, msg string) types.ManagedObjectReference {
	task := simulator.CreateTask(obj, name, nil)
	pciFinishTask(simulator.Map, task, nil, fault, msg)
	return task.Self
}

// pciFinishTask completes task with result or with fault.
func pciFinishTask(reg *simulator.Registry, task *simulator.Task, result types.AnyType, fault types.BaseMethodFault, msg string) {
	reg.WithLock(task, func() {
		now := time.Now()
		changes := []types.PropertyChange{{Name: "info.completeTime", Val: now}}
		if task.Info.StartTime == nil {
			changes = append(changes, types.PropertyChange{Name: "info.startTime", Val: now})
		}
		if fault != nil {
			changes = append(changes,
				types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
				types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{Fault: fault, LocalizedMessage: msg}})
		} else {
			changes = append(changes,
				types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateSuccess},
				types.PropertyChange{Name: "info.result", Val: result})
		}
		reg.Update(task, changes)
	})
}

// pciLookupVM resolves a routed VirtualMachine target.
func pciLookupVM(ctx *simulator.Context, r *pciRequest) (*simulator.VirtualMachine, *soap.Fault) {
	switch o := ctx.Map.Get(r.target).(type) {
	case *simulator.VirtualMachine:
		return o, nil
	case nil:
		return nil, simulator.Fault("managed object not found: "+r.target.String(), &types.ManagedObjectNotFound{Obj: r.target})
	default:
		return nil, simulator.Fault(fmt.Sprintf("%s does not implement: %s", r.target, r.method), &types.MethodNotFound{Receiver: r.target, Method: r.method})
	}
}

// ---------------------------------------------------------------------------- QueryConfigTarget

// ceso addition: QueryConfigTarget is the simulator's answer plus the passthrough devices and
// vGPU profiles of the host(s) asked about.
func (*pciModel) QueryConfigTarget(ctx *simulator.Context, r *pciRequest) soap.HasFault {
	res := pciForward(ctx, r)
	if res.Fault() != nil {
		return res
	}
	rv := reflect.ValueOf(res).Elem().FieldByName("Res")
	if !rv.IsValid() || rv.IsNil() {
		return res
	}
	target, ok := rv.Elem().FieldByName("Returnval").Interface().(*types.ConfigTarget)
	if !ok || target == nil {
		return res
	}
	req := r.std.(*types.QueryConfigTarget)
	hosts := []types.ManagedObjectReference{}
	if req.Host != nil {
		hosts = append(hosts, *req.Host)
	} else {
		hosts = pciBrowserHosts(ctx.Map, r.target)
	}
	seen := map[string]bool{}
	for i := range hosts {
		s := pciHostSystem(ctx.Map, &hosts[i])
		if s == nil {
			continue
		}
		pciMu.Lock()
		for _, d := range s.activeDevices() {
			target.PciPassthrough = append(target.PciPassthrough, &types.VirtualMachinePciPassthroughInfo{
				VirtualMachineTargetInfo: types.VirtualMachineTargetInfo{Name: d.DeviceName},
				PciDevice:                d,
				SystemId:                 s.systemID,
			})
		}
		for _, p := range s.vgpuProfiles() {
			if !seen[p] {
				seen[p] = true
				target.SharedGpuPassthroughTypes = append(target.SharedGpuPassthroughTypes, types.VirtualMachinePciSharedGpuPassthroughInfo{
					VirtualMachineTargetInfo: types.VirtualMachineTargetInfo{Name: p},
					Vgpu:                     p,
				})
			}
		}
		pciMu.Unlock()
	}
	return res
}

// pciBrowserHosts lists the hosts of the compute resource whose environment browser is b (a
// VM's environment browser is its compute resource's).
func pciBrowserHosts(reg *simulator.Registry, b types.ManagedObjectReference) []types.ManagedObjectReference {
	for _, kind := range []string{"ComputeResource", "ClusterComputeResource"} {
		for _, e := range reg.All(kind) {
			var cr *mo.ComputeResource
			switch o := e.(type) {
			case *mo.ComputeResource:
				cr = o
			case *simulator.ClusterComputeResource:
				cr = &o.ComputeResource
			default:
				continue
			}
			if cr.EnvironmentBrowser != nil && *cr.EnvironmentBrowser == b {
				return cr.Host
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------- RebootHost_Task

// ceso addition: RebootHostTask reboots a host (see the file comment for what is modelled).
func (*pciModel) RebootHostTask(ctx *simulator.Context, r *pciRequest) soap.HasFault {
	req := r.std.(*types.RebootHost_Task)
	h, ok := ctx.Map.Get(r.target).(*simulator.HostSystem)
	if !ok {
		return &methods.RebootHost_TaskBody{Fault_: simulator.Fault("managed object not found: "+r.target.String(), &types.ManagedObjectNotFound{Obj: r.target})}
	}

	var fault types.BaseMethodFault
	var msg string
	var vms []types.ManagedObjectReference
	ctx.WithLock(h, func() {
		switch {
		case h.Runtime.ConnectionState == types.HostSystemConnectionStateNotResponding:
			fault, msg = &types.HostNotReachable{}, fmt.Sprintf("Host %s is not responding.", h.Name)
		case h.Runtime.ConnectionState != types.HostSystemConnectionStateConnected:
			fault, msg = &types.HostNotConnected{}, fmt.Sprintf("Host %s is not connected.", h.Name)
		case !req.Force && !h.Runtime.InMaintenanceMode:
			fault = &types.InvalidState{}
			msg = fmt.Sprintf("The operation is not allowed in the current state: host %s is not in maintenance mode (reboot it with force=true, or enter maintenance mode first).", h.Name)
		default:
			vms = append(vms, h.Vm...)
			ctx.Map.Update(h, []types.PropertyChange{
				{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
				{Name: "summary.runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
			})
		}
	})
	if fault != nil {
		return &methods.RebootHost_TaskBody{Res: &types.RebootHost_TaskResponse{Returnval: pciFailedTask(h, "rebootHost", fault, msg)}}
	}

	reg := ctx.Map
	task := simulator.CreateTask(h, "rebootHost", nil)
	reg.WithLock(task, func() {
		reg.Update(task, []types.PropertyChange{
			{Name: "info.startTime", Val: time.Now()},
			{Name: "info.state", Val: types.TaskInfoStateRunning},
		})
	})
	done := func() {
		pciRebooted(reg, h, vms)
		pciFinishTask(reg, task, nil, nil, "")
	}
	if d := time.Duration(*pciRebootDelay) * time.Millisecond; d > 0 {
		go func() {
			time.Sleep(d)
			done()
		}()
	} else {
		done()
	}
	return &methods.RebootHost_TaskBody{Res: &types.RebootHost_TaskResponse{Returnval: task.Self}}
}

// pciRebooted is the host coming back: passthrough changes take effect, the VMs that ran on it
// are off, it is connected again with a new boot time.
func pciRebooted(reg *simulator.Registry, h *simulator.HostSystem, vms []types.ManagedObjectReference) {
	s := pciSystemOf(reg, h)
	if s != nil {
		pciMu.Lock()
		for i := range s.info {
			s.info[i].PassthruActive = s.info[i].PassthruEnabled
		}
		pciMu.Unlock()
		s.publish(reg, reg.WithLock)
	}
	for _, ref := range vms {
		vm, ok := reg.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		reg.WithLock(vm, func() {
			if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				reg.Update(vm, []types.PropertyChange{
					{Name: "runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
					{Name: "summary.runtime.powerState", Val: types.VirtualMachinePowerStatePoweredOff},
					{Name: "summary.runtime.bootTime", Val: nil},
				})
			}
		})
	}
	reg.WithLock(h, func() {
		now := time.Now()
		reg.Update(h, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			{Name: "summary.runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			{Name: "runtime.bootTime", Val: now},
			{Name: "summary.runtime.bootTime", Val: now},
		})
	})
}

// ---------------------------------------------------------------------------- VM checks

// pciVMHost returns the pciPassthruSystem of the host vm is registered on.
func pciVMHost(reg *simulator.Registry, vm *simulator.VirtualMachine) *pciPassthruSystem {
	return pciHostSystem(reg, vm.Runtime.Host)
}

func pciInvalidBacking(i int, msg string) (types.BaseMethodFault, string) {
	return &types.InvalidDeviceBacking{InvalidDeviceSpec: types.InvalidDeviceSpec{
		InvalidVmConfig: types.InvalidVmConfig{Property: "virtualDeviceSpec.device.backing"},
		DeviceIndex:     int32(i),
	}}, msg
}

// pciConfigSpec finds the VirtualMachineConfigSpec a ReconfigVM_Task request carries.
func pciConfigSpec(req interface{}) *types.VirtualMachineConfigSpec {
	v := reflect.ValueOf(req).Elem().FieldByName("Spec")
	if !v.IsValid() || !v.CanAddr() {
		return nil
	}
	spec, _ := v.Addr().Interface().(*types.VirtualMachineConfigSpec)
	return spec
}

// ceso addition: ReconfigVMTask checks the VirtualPCIPassthrough changes of the spec (see the
// file comment), completes new devices as vSphere does, and passes the request on.
func (*pciModel) ReconfigVMTask(ctx *simulator.Context, r *pciRequest) soap.HasFault {
	vm, f := pciLookupVM(ctx, r)
	if f != nil {
		return &methods.ReconfigVM_TaskBody{Fault_: f}
	}
	spec := pciConfigSpec(r.inner)
	if spec == nil {
		spec = &r.std.(*types.ReconfigVM_Task).Spec
	}
	var fault types.BaseMethodFault
	var msg string
	ctx.WithLock(vm, func() { fault, msg = pciCheckReconfig(ctx.Map, vm, spec) })
	if fault != nil {
		return &methods.ReconfigVM_TaskBody{Res: &types.ReconfigVM_TaskResponse{Returnval: pciFailedTask(vm, "reconfigVm", fault, msg)}}
	}
	return pciForward(ctx, r)
}

// pciCheckReconfig validates (and completes) the passthrough device changes of spec for vm,
// which is locked.
func pciCheckReconfig(reg *simulator.Registry, vm *simulator.VirtualMachine, spec *types.VirtualMachineConfigSpec) (types.BaseMethodFault, string) {
	devices := object.VirtualDeviceList(append([]types.BaseVirtualDevice(nil), vm.Config.Hardware.Device...))
	numPCI := len(devices.SelectByType((*types.VirtualPCIPassthrough)(nil)))
	var host *pciPassthruSystem
	for i, change := range spec.DeviceChange {
		dspec := change.GetVirtualDeviceConfigSpec()
		dev, ok := dspec.Device.(*types.VirtualPCIPassthrough)
		if !ok {
			continue
		}
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			return &types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOff,
				ExistingState:  vm.Runtime.PowerState,
			}, fmt.Sprintf("The attempted operation cannot be performed in the current state (%s): PCI passthrough devices of VM %s can be added or removed only while it is powered off.", pciPowerWords(vm.Runtime.PowerState), vm.Name)
		}
		if dspec.Operation == types.VirtualDeviceConfigSpecOperationRemove {
			devices = pciWithout(devices, dev.Key)
			continue
		}
		if host == nil {
			if host = pciVMHost(reg, vm); host == nil {
				return pciInvalidBacking(i, fmt.Sprintf("The host of VM %s has no PCI passthrough devices.", vm.Name))
			}
		}
		if dspec.Operation == types.VirtualDeviceConfigSpecOperationEdit {
			// The simulator's edit path needs the device's description; keep the old one.
			if old := devices.FindByKey(dev.Key); old != nil && dev.DeviceInfo == nil {
				dev.DeviceInfo = old.GetVirtualDevice().DeviceInfo
			}
			devices = pciWithout(devices, dev.Key)
		}
		summary := ""
		switch b := dev.Backing.(type) {
		case *types.VirtualPCIPassthroughDeviceBackingInfo:
			pciMu.Lock()
			hd, info := host.device(b.Id)
			var d types.HostPciDevice
			active := info != nil && info.PassthruActive
			if hd != nil {
				d = *hd
			}
			pciMu.Unlock()
			switch {
			case hd == nil:
				return pciInvalidBacking(i, fmt.Sprintf("PCI device %q was not found on host %s.", b.Id, host.hostName))
			case !active:
				return pciInvalidBacking(i, fmt.Sprintf("PCI device %s (%s) on host %s is not available for passthrough: passthrough is not active on it (enable it with UpdatePassthruConfig, then reboot the host).", b.Id, d.DeviceName, host.hostName))
			case b.SystemId != "" && b.SystemId != "BYPASS" && b.SystemId != host.systemID:
				return pciInvalidBacking(i, fmt.Sprintf("PCI device %s: systemId %q does not match host %s (systemId %q, see QueryConfigTarget).", b.Id, b.SystemId, host.hostName, host.systemID))
			case b.VendorId != 0 && b.VendorId != d.VendorId:
				return pciInvalidBacking(i, fmt.Sprintf("PCI device %s: vendorId %d does not match the device's %d.", b.Id, b.VendorId, d.VendorId))
			}
			for _, other := range devices.SelectByType((*types.VirtualPCIPassthrough)(nil)) {
				if ob, ok := other.GetVirtualDevice().Backing.(*types.VirtualPCIPassthroughDeviceBackingInfo); ok && ob.Id == b.Id {
					return pciInvalidBacking(i, fmt.Sprintf("PCI device %s is already assigned to VM %s.", b.Id, vm.Name))
				}
			}
			if b.SystemId == "" {
				b.SystemId = host.systemID
			}
			if b.DeviceName == "" {
				b.DeviceName = d.DeviceName
			}
			summary = d.VendorName + " " + d.DeviceName
		case *types.VirtualPCIPassthroughVmiopBackingInfo:
			if !host.hasProfile(b.Vgpu) {
				return pciInvalidBacking(i, fmt.Sprintf("vGPU profile %q is not available on host %s (see its config.sharedPassthruGpuTypes).", b.Vgpu, host.hostName))
			}
			summary = "NVIDIA GRID vGPU " + b.Vgpu
		case nil:
			return pciInvalidBacking(i, fmt.Sprintf("PCI passthrough device %d of the spec has no backing.", dev.Key))
		}
		if dspec.Operation == types.VirtualDeviceConfigSpecOperationAdd {
			if dev.ControllerKey == 0 && dev.UnitNumber == nil {
				if c := devices.PickController((*types.VirtualPCIController)(nil)); c != nil {
					devices.AssignController(dev, c)
				}
			}
			if dev.DeviceInfo == nil {
				dev.DeviceInfo = &types.Description{Label: fmt.Sprintf("PCI device %d", numPCI), Summary: summary}
			}
			numPCI++
		}
		devices = append(devices, dev)
	}
	return nil, ""
}

func pciWithout(devices object.VirtualDeviceList, key int32) object.VirtualDeviceList {
	var out object.VirtualDeviceList
	for _, d := range devices {
		if d.GetVirtualDevice().Key != key {
			out = append(out, d)
		}
	}
	return out
}

func pciPowerWords(s types.VirtualMachinePowerState) string {
	switch s {
	case types.VirtualMachinePowerStatePoweredOn:
		return "Powered on"
	case types.VirtualMachinePowerStateSuspended:
		return "Suspended"
	}
	return "Powered off"
}

// ceso addition: pciPowerMu serialises the checks of passthrough power-ons, so two VMs cannot
// both find a device free and both start with it.
var pciPowerMu sync.Mutex

// ceso addition: PowerOnVMTask checks a VM's passthrough devices before its power-on.
func (*pciModel) PowerOnVMTask(ctx *simulator.Context, r *pciRequest) soap.HasFault {
	vm, f := pciLookupVM(ctx, r)
	if f != nil {
		return &methods.PowerOnVM_TaskBody{Fault_: f}
	}
	pciPowerMu.Lock()
	defer pciPowerMu.Unlock()

	var fault types.BaseMethodFault
	var msg string
	var hostRef *types.ManagedObjectReference
	var ids []string
	ctx.WithLock(vm, func() {
		if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			return // the simulator answers that one
		}
		hostRef = vm.Runtime.Host
		ids, fault, msg = pciCheckPowerOn(ctx.Map, vm)
	})
	if fault == nil && len(ids) > 0 {
		fault, msg = pciCheckInUse(ctx.Map, vm.Self, hostRef, ids)
	}
	if fault != nil {
		return &methods.PowerOnVM_TaskBody{Res: &types.PowerOnVM_TaskResponse{Returnval: pciFailedTask(vm, "powerOn", fault, msg)}}
	}
	return pciForward(ctx, r)
}

// pciPassthroughs lists a VM's passthrough devices.
func pciPassthroughs(vm *simulator.VirtualMachine) []*types.VirtualPCIPassthrough {
	var out []*types.VirtualPCIPassthrough
	if vm.Config == nil {
		return nil
	}
	for _, d := range vm.Config.Hardware.Device {
		if p, ok := d.(*types.VirtualPCIPassthrough); ok {
			out = append(out, p)
		}
	}
	return out
}

// pciCheckPowerOn checks vm (locked) against its host; it returns the DirectPath device ids
// the VM would take.
func pciCheckPowerOn(reg *simulator.Registry, vm *simulator.VirtualMachine) ([]string, types.BaseMethodFault, string) {
	devs := pciPassthroughs(vm)
	if len(devs) == 0 {
		return nil, nil, ""
	}
	genericFault := func(reason string) (types.BaseMethodFault, string) {
		return &types.GenericVmConfigFault{Reason: reason}, reason
	}
	mem := vm.Config.Hardware.MemoryMB
	reserved := vm.Config.MemoryReservationLockedToMax != nil && *vm.Config.MemoryReservationLockedToMax
	if a := vm.Config.MemoryAllocation; a != nil && a.Reservation != nil && *a.Reservation == int64(mem) {
		reserved = true
	}
	if !reserved {
		f, m := genericFault(fmt.Sprintf("Invalid memory setting: memory reservation (sched.mem.min) should be equal to memsize(%d).", mem))
		return nil, f, m
	}
	host := pciVMHost(reg, vm)
	if host == nil {
		f, m := genericFault(fmt.Sprintf("The host of VM %s has no PCI passthrough devices.", vm.Name))
		return nil, f, m
	}
	var ids []string
	for _, d := range devs {
		switch b := d.Backing.(type) {
		case *types.VirtualPCIPassthroughDeviceBackingInfo:
			pciMu.Lock()
			_, info := host.device(b.Id)
			active := info != nil && info.PassthruActive
			pciMu.Unlock()
			if !active {
				f, m := genericFault(fmt.Sprintf("Device %s of VM %s is not available for passthrough on host %s.", b.Id, vm.Name, host.hostName))
				return nil, f, m
			}
			ids = append(ids, b.Id)
		case *types.VirtualPCIPassthroughVmiopBackingInfo:
			if !host.hasProfile(b.Vgpu) {
				f, m := genericFault(fmt.Sprintf("No graphics device on host %s can provide vGPU profile %q for VM %s.", host.hostName, b.Vgpu, vm.Name))
				return nil, f, m
			}
		}
	}
	return ids, nil, ""
}

// pciCheckInUse fails if another powered-on VM of the host holds one of the devices ids.
func pciCheckInUse(reg *simulator.Registry, self types.ManagedObjectReference, hostRef *types.ManagedObjectReference, ids []string) (types.BaseMethodFault, string) {
	h, ok := reg.Get(*hostRef).(*simulator.HostSystem)
	if !ok {
		return nil, ""
	}
	var vms []types.ManagedObjectReference
	reg.WithLock(h, func() { vms = append(vms, h.Vm...) })
	for _, ref := range vms {
		other, ok := reg.Get(ref).(*simulator.VirtualMachine)
		if !ok || ref == self {
			continue
		}
		var busy string
		reg.WithLock(other, func() {
			if other.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return
			}
			for _, d := range pciPassthroughs(other) {
				if b, ok := d.Backing.(*types.VirtualPCIPassthroughDeviceBackingInfo); ok {
					for _, id := range ids {
						if b.Id == id {
							busy = id
						}
					}
				}
			}
		})
		if busy != "" {
			msg := fmt.Sprintf("Device %s is already in use by virtual machine %s.", busy, other.Name)
			return &types.GenericVmConfigFault{Reason: msg}, msg
		}
	}
	return nil, ""
}
