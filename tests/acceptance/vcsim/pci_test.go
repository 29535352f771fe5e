package main

// Wire tests of the ceso PCI passthrough / vGPU model (pci.go): an in-process simulator served
// over HTTP and a govmomi client, so every call goes through SOAP encoding and decoding (and so
// through pci.go's decode-time routing). Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Pci .

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	t4ID   = "0000:3b:00.0"
	a100ID = "0000:af:00.0"
	x710A  = "0000:81:00.0"
	x710B  = "0000:81:00.1"
)

type pciEnv struct {
	t   *testing.T
	ctx context.Context
	m   *simulator.Model
	s   *simulator.Server
	c   *govmomi.Client
}

func newPciEnv(t *testing.T, m *simulator.Model, gpuHosts int) *pciEnv {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	installPciModel(gpuHosts)
	s := m.Service.NewServer()
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	e := &pciEnv{t: t, ctx: ctx, m: m, s: s, c: c}
	t.Cleanup(func() {
		_ = c.Logout(ctx)
		s.Close()
		m.Remove()
	})
	return e
}

func (e *pciEnv) props(ref types.ManagedObjectReference, dst interface{}, ps ...string) {
	e.t.Helper()
	if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, ref, ps, dst); err != nil {
		e.t.Fatalf("retrieve %v %v: %v", ref, ps, err)
	}
}

func (e *pciEnv) host(ref types.ManagedObjectReference) mo.HostSystem {
	e.t.Helper()
	var h mo.HostSystem
	e.props(ref, &h, "name", "hardware.pciDevice", "config.pciPassthruInfo", "config.graphicsInfo",
		"config.sharedPassthruGpuTypes", "configManager.pciPassthruSystem", "runtime", "parent", "vm")
	return h
}

// wait waits for a task; its error, if any, is a task.Error carrying the fault.
func (e *pciEnv) wait(ref types.ManagedObjectReference, err error) error {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	return object.NewTask(e.c.Client, ref).Wait(e.ctx)
}

func (e *pciEnv) mustWait(ref types.ManagedObjectReference, err error) {
	e.t.Helper()
	if err := e.wait(ref, err); err != nil {
		e.t.Fatal(err)
	}
}

// taskFault returns the fault of a failed task (failing the test if it did not fail).
func (e *pciEnv) taskFault(err error) (types.BaseMethodFault, string) {
	e.t.Helper()
	var te task.Error
	if !errors.As(err, &te) {
		e.t.Fatalf("expected a failed task, got %v", err)
	}
	return te.Fault(), te.LocalizedMessage
}

func (e *pciEnv) updatePassthru(pss types.ManagedObjectReference, id string, enabled bool) error {
	_, err := methods.UpdatePassthruConfig(e.ctx, e.c.Client, &types.UpdatePassthruConfig{
		This:   pss,
		Config: []types.BaseHostPciPassthruConfig{&types.HostPciPassthruConfig{Id: id, PassthruEnabled: enabled}},
	})
	return err
}

func (e *pciEnv) reboot(host types.ManagedObjectReference, force bool) (types.ManagedObjectReference, error) {
	res, err := methods.RebootHost_Task(e.ctx, e.c.Client, &types.RebootHost_Task{This: host, Force: force})
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	return res.Returnval, nil
}

func (e *pciEnv) configTarget(browser types.ManagedObjectReference, host *types.ManagedObjectReference) *types.ConfigTarget {
	e.t.Helper()
	res, err := methods.QueryConfigTarget(e.ctx, e.c.Client, &types.QueryConfigTarget{This: browser, Host: host})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Returnval
}

func passthruInfo(infos []types.BaseHostPciPassthruInfo, id string) *types.HostPciPassthruInfo {
	for _, i := range infos {
		if info := i.GetHostPciPassthruInfo(); info.Id == id {
			return info
		}
	}
	return nil
}

func pciDevice(devs []types.HostPciDevice, id string) *types.HostPciDevice {
	for i := range devs {
		if devs[i].Id == id {
			return &devs[i]
		}
	}
	return nil
}

// soapFault returns the fault detail of a SOAP fault (a value, not a pointer, as govmomi decodes it).
func soapFault(t *testing.T, err error) interface{} {
	t.Helper()
	if err == nil || !soap.IsSoapFault(err) {
		t.Fatalf("expected a SOAP fault, got %v", err)
	}
	return soap.ToSoapFault(err).VimFault()
}

func TestPciPassthroughESX(t *testing.T) {
	e := newPciEnv(t, simulator.ESX(), 1)
	ctx := e.ctx
	hostRef := simulator.Map.Any("HostSystem").Reference()
	host := object.NewHostSystem(e.c.Client, hostRef)

	// Hardware: the simulator's devices stay, the model's are added with API encodings.
	h := e.host(hostRef)
	t4 := pciDevice(h.Hardware.PciDevice, t4ID)
	if t4 == nil || t4.VendorId != 0x10de || t4.DeviceId != 0x1eb8 || t4.SubDeviceId != 0x12a2 ||
		t4.ClassId != 0x0302 || t4.Bus != 0x3b || t4.ParentBridge != "0000:3a:00.0" || t4.DeviceName != "TU104GL [Tesla T4]" {
		t.Fatalf("T4: %+v", t4)
	}
	if x := pciDevice(h.Hardware.PciDevice, x710B); x == nil || x.VendorId != -32634 || x.Function != 1 || x.Bus != 0x81 {
		t.Fatalf("X710 function 1: %+v", x)
	}
	if a := pciDevice(h.Hardware.PciDevice, a100ID); a == nil || a.Bus != 0xaf || a.DeviceId != 0x20f1 {
		t.Fatalf("A100: %+v", a)
	}
	if pciDevice(h.Hardware.PciDevice, "0000:00:00.0") == nil || pciDevice(h.Hardware.PciDevice, "0000:3a:00.0") == nil {
		t.Fatal("simulator device or bridge missing")
	}
	if len(h.Config.PciPassthruInfo) != len(h.Hardware.PciDevice) {
		t.Fatalf("%d passthru infos for %d devices", len(h.Config.PciPassthruInfo), len(h.Hardware.PciDevice))
	}
	if i := passthruInfo(h.Config.PciPassthruInfo, t4ID); i == nil || !i.PassthruCapable || i.PassthruEnabled || i.PassthruActive || i.DependentDevice != t4ID {
		t.Fatalf("T4 passthru info: %+v", i)
	}
	if i := passthruInfo(h.Config.PciPassthruInfo, x710B); i == nil || i.DependentDevice != x710A {
		t.Fatalf("X710 function 1 passthru info: %+v", i)
	}
	if i := passthruInfo(h.Config.PciPassthruInfo, "0000:00:00.0"); i == nil || i.PassthruCapable {
		t.Fatalf("simulator device passthru info: %+v", i)
	}
	if len(h.Config.GraphicsInfo) != 2 || h.Config.GraphicsInfo[0].GraphicsType != "sharedDirect" || h.Config.GraphicsInfo[0].MemorySizeInKB != 16<<20 {
		t.Fatalf("graphicsInfo: %+v", h.Config.GraphicsInfo)
	}
	if !contains(h.Config.SharedPassthruGpuTypes, "grid_t4-4q") || !contains(h.Config.SharedPassthruGpuTypes, "grid_a100-40c") {
		t.Fatalf("sharedPassthruGpuTypes: %v", h.Config.SharedPassthruGpuTypes)
	}

	// The HostPciPassthruSystem the host names is registered and agrees with the host.
	pss := *h.ConfigManager.PciPassthruSystem
	if pss.Value != "ha-pcipassthrusystem" {
		t.Fatalf("pciPassthruSystem %v", pss)
	}
	var sys mo.HostPciPassthruSystem
	e.props(pss, &sys, "pciPassthruInfo")
	if len(sys.PciPassthruInfo) != len(h.Config.PciPassthruInfo) {
		t.Fatal("pciPassthruSystem and host disagree")
	}

	// Faults: unknown device, device not capable.
	if f := soapFault(t, e.updatePassthru(pss, "0000:99:00.0", true)); !isType(f, &types.HostConfigFault{}) {
		t.Fatalf("unknown device: %T", f)
	}
	if f := soapFault(t, e.updatePassthru(pss, "0000:3a:00.0", true)); !isType(f, &types.HostConfigFault{}) {
		t.Fatalf("bridge: %T", f)
	}

	// Enable the T4 and (through function 1) the X710 group: enabled, not active.
	if err := e.updatePassthru(pss, t4ID, true); err != nil {
		t.Fatal(err)
	}
	if err := e.updatePassthru(pss, x710B, true); err != nil {
		t.Fatal(err)
	}
	h = e.host(hostRef)
	for _, id := range []string{t4ID, x710A, x710B} {
		if i := passthruInfo(h.Config.PciPassthruInfo, id); !i.PassthruEnabled || i.PassthruActive {
			t.Fatalf("%s after UpdatePassthruConfig: %+v", id, i)
		}
	}
	e.props(pss, &sys, "pciPassthruInfo")
	if i := passthruInfo(sys.PciPassthruInfo, t4ID); !i.PassthruEnabled {
		t.Fatal("pciPassthruSystem not updated")
	}

	crRef := *h.Parent
	var cr mo.ComputeResource
	e.props(crRef, &cr, "environmentBrowser")
	if ct := e.configTarget(*cr.EnvironmentBrowser, &hostRef); len(ct.PciPassthrough) != 0 || len(ct.SharedGpuPassthroughTypes) != 10 {
		t.Fatalf("config target before reboot: %d devices, %d vGPU types", len(ct.PciPassthrough), len(ct.SharedGpuPassthroughTypes))
	}

	// Reboot: refused outside maintenance mode, then done in it.
	ref, err := e.reboot(hostRef, false)
	if f, msg := e.taskFault(e.wait(ref, err)); !isType(f, &types.InvalidState{}) || !strings.Contains(msg, "maintenance mode") {
		t.Fatalf("reboot outside maintenance mode: %T %q", f, msg)
	}
	mm, err := host.EnterMaintenanceMode(ctx, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.mustWait(mm.Reference(), mm.Wait(ctx))
	ref, err = e.reboot(hostRef, false)
	if err != nil {
		t.Fatal(err)
	}
	if h = e.host(hostRef); h.Runtime.ConnectionState != types.HostSystemConnectionStateNotResponding {
		t.Fatalf("connection state while rebooting: %s", h.Runtime.ConnectionState)
	}
	e.mustWait(ref, nil)
	exit, err := host.ExitMaintenanceMode(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.mustWait(exit.Reference(), exit.Wait(ctx))
	h = e.host(hostRef)
	if h.Runtime.ConnectionState != types.HostSystemConnectionStateConnected {
		t.Fatalf("connection state after reboot: %s", h.Runtime.ConnectionState)
	}
	for _, id := range []string{t4ID, x710A, x710B} {
		if i := passthruInfo(h.Config.PciPassthruInfo, id); !i.PassthruActive {
			t.Fatalf("%s after reboot: %+v", id, i)
		}
	}
	if g := h.Config.GraphicsInfo[0]; g.PciId != t4ID || g.GraphicsType != "direct" {
		t.Fatalf("T4 graphics after reboot: %+v", g)
	}
	if contains(h.Config.SharedPassthruGpuTypes, "grid_t4-4q") || !contains(h.Config.SharedPassthruGpuTypes, "grid_a100-4c") {
		t.Fatalf("vGPU profiles after reboot: %v", h.Config.SharedPassthruGpuTypes)
	}

	// QueryConfigTarget lists the active devices with the host's systemId.
	ct := e.configTarget(*cr.EnvironmentBrowser, &hostRef)
	var t4Info *types.VirtualMachinePciPassthroughInfo
	var ids []string
	for _, p := range ct.PciPassthrough {
		info := p.GetVirtualMachinePciPassthroughInfo()
		ids = append(ids, info.PciDevice.Id)
		if info.PciDevice.Id == t4ID {
			t4Info = info
		}
	}
	sort.Strings(ids)
	if strings.Join(ids, ",") != strings.Join([]string{t4ID, x710A, x710B}, ",") || t4Info.SystemId == "" || t4Info.SystemId == h.Hardware.SystemInfo.Uuid {
		t.Fatalf("config target: %v, T4 %+v", ids, t4Info)
	}
	if len(ct.Datastore) == 0 || len(ct.SharedGpuPassthroughTypes) != 5 {
		t.Fatalf("config target lost the simulator's answer or has wrong vGPU types: %+v", ct)
	}
	if ct2 := e.configTarget(*cr.EnvironmentBrowser, nil); len(ct2.PciPassthrough) != 3 {
		t.Fatalf("config target without host: %d devices", len(ct2.PciPassthrough))
	}

	// The model's VMs ran on the host; the reboot stopped them.
	vm := object.NewVirtualMachine(e.c.Client, h.Vm[0])
	vm2 := object.NewVirtualMachine(e.c.Client, h.Vm[1])
	if state, err := vm.PowerState(ctx); err != nil || state != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("VM after host reboot: %s %v", state, err)
	}
	t4Device := func() *types.VirtualPCIPassthrough {
		return &types.VirtualPCIPassthrough{VirtualDevice: types.VirtualDevice{
			Key: -100,
			Backing: &types.VirtualPCIPassthroughDeviceBackingInfo{
				Id:       t4Info.PciDevice.Id,
				DeviceId: "1eb8",
				SystemId: t4Info.SystemId,
				VendorId: t4Info.PciDevice.VendorId,
			},
		}}
	}
	addSpec := func(d types.BaseVirtualDevice) types.VirtualMachineConfigSpec {
		return types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d},
		}}
	}
	reconfigure := func(v *object.VirtualMachine, spec types.VirtualMachineConfigSpec) error {
		tk, err := v.Reconfigure(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return tk.Wait(ctx)
	}

	tk, err := vm.PowerOn(ctx)
	e.mustWait(tk.Reference(), err)
	if f, msg := e.taskFault(reconfigure(vm, addSpec(t4Device()))); !isType(f, &types.InvalidPowerState{}) || !strings.Contains(msg, "Powered on") {
		t.Fatalf("hot add: %T %q", f, msg)
	}
	tk, err = vm.PowerOff(ctx)
	e.mustWait(tk.Reference(), err)

	// Backings the host cannot serve.
	bad := t4Device()
	bad.Backing.(*types.VirtualPCIPassthroughDeviceBackingInfo).Id = a100ID // not active
	if f, msg := e.taskFault(reconfigure(vm, addSpec(bad))); !isType(f, &types.InvalidDeviceBacking{}) || !strings.Contains(msg, a100ID) {
		t.Fatalf("inactive device: %T %q", f, msg)
	}
	vgpuT4 := &types.VirtualPCIPassthrough{VirtualDevice: types.VirtualDevice{Key: -101, Backing: &types.VirtualPCIPassthroughVmiopBackingInfo{Vgpu: "grid_t4-4q"}}}
	if f, _ := e.taskFault(reconfigure(vm, addSpec(vgpuT4))); !isType(f, &types.InvalidDeviceBacking{}) {
		t.Fatalf("vGPU of a passed-through GPU: %T", f)
	}

	// Add the T4 to the powered-off VM.
	if err := reconfigure(vm, addSpec(t4Device())); err != nil {
		t.Fatal(err)
	}
	devices, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pcis := devices.SelectByType((*types.VirtualPCIPassthrough)(nil))
	if len(pcis) != 1 {
		t.Fatalf("%d passthrough devices", len(pcis))
	}
	dev := pcis[0].(*types.VirtualPCIPassthrough)
	backing, ok := dev.Backing.(*types.VirtualPCIPassthroughDeviceBackingInfo)
	if !ok || backing.Id != t4ID || backing.SystemId != t4Info.SystemId || dev.ControllerKey != 100 ||
		dev.DeviceInfo.GetDescription().Label != "PCI device 0" {
		t.Fatalf("device after reconfigure: %+v backing %+v", dev.VirtualDevice, dev.Backing)
	}

	// Power-on needs all memory reserved.
	tk, err = vm.PowerOn(ctx)
	if f, msg := e.taskFault(e.wait(tk.Reference(), err)); !isType(f, &types.GenericVmConfigFault{}) || !strings.Contains(msg, "sched.mem.min") {
		t.Fatalf("power on without reservation: %T %q", f, msg)
	}
	lock := types.VirtualMachineConfigSpec{MemoryReservationLockedToMax: types.NewBool(true)}
	if err := reconfigure(vm, lock); err != nil {
		t.Fatal(err)
	}
	tk, err = vm.PowerOn(ctx)
	e.mustWait(tk.Reference(), err)

	// A second VM with the same device cannot power on while the first runs.
	if err := reconfigure(vm2, addSpec(t4Device())); err != nil {
		t.Fatal(err)
	}
	if err := reconfigure(vm2, lock); err != nil {
		t.Fatal(err)
	}
	tk, err = vm2.PowerOn(ctx)
	if f, msg := e.taskFault(e.wait(tk.Reference(), err)); !isType(f, &types.GenericVmConfigFault{}) || !strings.Contains(msg, "in use") {
		t.Fatalf("power on with a device in use: %T %q", f, msg)
	}

	// The device cannot be removed while the VM runs; it can once it is off.
	remove := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: dev},
	}}
	if f, _ := e.taskFault(reconfigure(vm, remove)); !isType(f, &types.InvalidPowerState{}) {
		t.Fatalf("hot remove: %T", f)
	}
	tk, err = vm.PowerOff(ctx)
	e.mustWait(tk.Reference(), err)
	if err := reconfigure(vm, remove); err != nil {
		t.Fatal(err)
	}
	if devices, _ = vm.Device(ctx); len(devices.SelectByType((*types.VirtualPCIPassthrough)(nil))) != 0 {
		t.Fatal("device not removed")
	}

	// A vGPU of the A100 (still in vGPU mode).
	vgpu := &types.VirtualPCIPassthrough{VirtualDevice: types.VirtualDevice{Key: -102, Backing: &types.VirtualPCIPassthroughVmiopBackingInfo{Vgpu: "grid_a100-4c"}}}
	if err := reconfigure(vm, addSpec(vgpu)); err != nil {
		t.Fatal(err)
	}
	if devices, _ = vm.Device(ctx); len(devices.SelectByType((*types.VirtualPCIPassthrough)(nil))) != 1 {
		t.Fatal("vGPU not added")
	}
	tk, err = vm.PowerOn(ctx)
	e.mustWait(tk.Reference(), err)
}

func TestPciVCenter(t *testing.T) {
	e := newPciEnv(t, simulator.VPX(), 1)
	var hosts []mo.HostSystem
	for _, o := range simulator.Map.All("HostSystem") {
		hosts = append(hosts, e.host(o.Reference()))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	seen := map[types.ManagedObjectReference]bool{}
	for i, h := range hosts {
		gpu := pciDevice(h.Hardware.PciDevice, t4ID) != nil
		if gpu != (i == 0) {
			t.Fatalf("host %s has GPUs: %v", h.Name, gpu)
		}
		ref := *h.ConfigManager.PciPassthruSystem
		if seen[ref] || !strings.HasPrefix(ref.Value, "pciPassthruSystem-") {
			t.Fatalf("host %s pciPassthruSystem %v", h.Name, ref)
		}
		seen[ref] = true
		if len(h.Config.PciPassthruInfo) != len(h.Hardware.PciDevice) {
			t.Fatalf("host %s: passthru info", h.Name)
		}
	}
	gpuHost := hosts[0]
	if err := e.updatePassthru(*gpuHost.ConfigManager.PciPassthruSystem, a100ID, true); err != nil {
		t.Fatal(err)
	}
	ref, err := e.reboot(gpuHost.Self, true)
	e.mustWait(ref, err)

	var cluster mo.ClusterComputeResource
	e.props(*gpuHost.Parent, &cluster, "environmentBrowser")
	ct := e.configTarget(*cluster.EnvironmentBrowser, &gpuHost.Self)
	if len(ct.PciPassthrough) != 1 || ct.PciPassthrough[0].GetVirtualMachinePciPassthroughInfo().PciDevice.Id != a100ID {
		t.Fatalf("config target of the GPU host: %+v", ct.PciPassthrough)
	}
	if len(ct.SharedGpuPassthroughTypes) != 5 || ct.SharedGpuPassthroughTypes[0].Vgpu != "grid_t4-1q" {
		t.Fatalf("vGPU types of the GPU host: %+v", ct.SharedGpuPassthroughTypes)
	}
	other := hosts[1]
	if ct := e.configTarget(*cluster.EnvironmentBrowser, &other.Self); len(ct.PciPassthrough) != 0 || len(ct.SharedGpuPassthroughTypes) != 0 {
		t.Fatalf("config target of a host without GPUs: %+v", ct)
	}

	// A host added later gets its own HostPciPassthruSystem (and no GPUs).
	folders, err := object.NewDatacenter(e.c.Client, simulator.Map.Any("Datacenter").Reference()).Folders(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := folders.HostFolder.AddStandaloneHost(e.ctx, types.HostConnectSpec{HostName: "added.example.com"}, true, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := tk.WaitForResult(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	addedRef := info.Result.(types.ManagedObjectReference) // the simulator answers with the host
	if addedRef.Type != "HostSystem" {
		var cr mo.ComputeResource
		e.props(addedRef, &cr, "host")
		addedRef = cr.Host[0]
	}
	added := e.host(addedRef)
	if added.ConfigManager.PciPassthruSystem == nil || seen[*added.ConfigManager.PciPassthruSystem] ||
		len(added.Config.PciPassthruInfo) != len(added.Hardware.PciDevice) || pciDevice(added.Hardware.PciDevice, t4ID) != nil {
		t.Fatalf("added host: %v", added.ConfigManager.PciPassthruSystem)
	}
	var sys mo.HostPciPassthruSystem
	e.props(*added.ConfigManager.PciPassthruSystem, &sys, "pciPassthruInfo")
	if len(sys.PciPassthruInfo) != len(added.Config.PciPassthruInfo) {
		t.Fatal("added host's pciPassthruSystem")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isType reports whether fault is a want (pointer or value).
func isType(fault interface{}, want types.BaseMethodFault) bool {
	ft := reflect.TypeOf(fault)
	if ft != nil && ft.Kind() == reflect.Ptr {
		ft = ft.Elem()
	}
	return ft == reflect.TypeOf(want).Elem()
}
