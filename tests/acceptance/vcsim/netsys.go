package main

// ceso addition: a fuller model of standard-switch networking, after the vSphere API reference
// (HostNetworkSystem.AddPortGroup / UpdatePortGroup / RemovePortGroup / AddVirtualSwitch /
// RemoveVirtualSwitch, HostPortGroupSpec, HostPortGroup, HostNetworkPolicy, Network).
//
// govmomi 0.24's simulator falls short of real hosts and vCenter in ways ceso's port-group
// resource depends on:
//
//   - it has no HostNetworkSystem.UpdatePortGroup at all (MethodNotFound);
//   - it keeps HostNetworkSystem.networkInfo apart from HostSystem.config.network, so a port
//     group it adds never appears in the host's config, and vSwitch port-group lists hold names
//     where the API holds HostPortGroup keys;
//   - HostPortGroup.computedPolicy is left empty;
//   - in the vCenter model it refuses (DuplicateName) a standard port group whose name another
//     host already has, where vCenter accepts it and shows ONE Network object backed by every
//     host carrying that port group; and it never fills Network.host / HostSystem.network.
//
// installNetworkModel (called from main after the inventory is built) replaces every host's
// HostNetworkSystem in simulator.Map with hostNetworkSystem below, whose methods the simulator
// finds by reflection (simulator.go, Service.call: strings.Title(method name), one or two
// parameters, the optional first being *simulator.Context). It embeds the simulator's type by
// value, not by pointer: the property collector digs the mo.HostNetworkSystem out of a
// registry object by following field 0 through structs only, and a pointer there panics.

import (
	"fmt"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	pgKeyPrefix   = "key-vim.host.PortGroup-"
	vsKeyPrefix   = "key-vim.host.VirtualSwitch-"
	pnicKeyPrefix = "key-vim.host.PhysicalNic-"
)

// ceso addition: netMu serialises the port-group methods of all hosts. The simulator locks only the called
// HostNetworkSystem, but joining or leaving a shared Network touches objects of other hosts
// (two hosts adding the same new name at once must still end with one Network). Lock order:
// the caller's HostNetworkSystem (taken by the simulator), then netMu, then single objects.
var netMu sync.Mutex

// ceso addition: hostNetworkSystem is the simulator's HostNetworkSystem with the methods below
// added or overridden; everything else (QueryNetworkHint, UpdateNetworkConfig, ...) is promoted.
type hostNetworkSystem struct {
	simulator.HostNetworkSystem
}

// ceso addition: installNetworkModel puts a hostNetworkSystem in place of each host's network
// system (and, through a registry handler, of each host added later), makes its networkInfo
// the host's config.network (one object, as on a real host), fills the keys and
// computedPolicy the recorded data may lack, and records which hosts back each existing
// standard Network (Network.host, HostSystem.network), as vCenter reports them.
func installNetworkModel() {
	for _, e := range simulator.Map.All("HostSystem") {
		h, ok := e.(*simulator.HostSystem)
		if !ok || h.ConfigManager.NetworkSystem == nil {
			continue
		}
		orig, ok := simulator.Map.Get(*h.ConfigManager.NetworkSystem).(*simulator.HostNetworkSystem)
		if !ok {
			continue
		}
		if w := wrapNetworkSystem(orig); w != nil {
			w.syncNetworks(nil)
		}
	}
	simulator.Map.AddHandler(&netSysInstaller{})
}

// ceso addition: wrapNetworkSystem registers a hostNetworkSystem in place of orig.
func wrapNetworkSystem(orig *simulator.HostNetworkSystem) *hostNetworkSystem {
	if orig.Host == nil || orig.Host.Config == nil || orig.Host.Config.Network == nil {
		return nil
	}
	w := &hostNetworkSystem{HostNetworkSystem: *orig}
	w.NetworkInfo = orig.Host.Config.Network
	info := w.NetworkInfo
	for i := range info.Vswitch {
		if info.Vswitch[i].Key == "" {
			info.Vswitch[i].Key = vsKeyPrefix + info.Vswitch[i].Name
		}
	}
	for i := range info.Portgroup {
		pg := &info.Portgroup[i]
		if pg.Key == "" {
			pg.Key = pgKeyPrefix + pg.Spec.Name
		}
		if vs := w.vswitch(pg.Spec.VswitchName); vs != nil {
			pg.Vswitch = vs.Key
			if policyEmpty(pg.ComputedPolicy) {
				pg.ComputedPolicy = mergePolicy(vs.Spec.Policy, pg.Spec.Policy)
			}
		}
	}
	simulator.Map.Put(w)
	return w
}

// ceso addition: netSysInstaller is a registry handler: the simulator registers a new host's network
// system (AddHost_Task, AddStandaloneHost_Task) before the host itself; it is wrapped at once.
type netSysInstaller struct{}

func (*netSysInstaller) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "CesoNetworkModel", Value: "ceso-network-model"}
}

func (*netSysInstaller) PutObject(o mo.Reference) {
	if orig, ok := o.(*simulator.HostNetworkSystem); ok {
		wrapNetworkSystem(orig)
	}
}

func (*netSysInstaller) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (*netSysInstaller) RemoveObject(types.ManagedObjectReference)         {}

// ceso addition: syncNetworks attaches the host to the existing standard Network of each of its port groups.
// Run at start-up and before each port-group change, it also covers hosts added later, whose
// default port groups the simulator never recorded in Network.host.
func (s *hostNetworkSystem) syncNetworks(ctx *simulator.Context) {
	h := s.host()
	if h == nil {
		return
	}
	dc := datacenterOf(h.Self)
	for _, pg := range s.NetworkInfo.Portgroup {
		if n := findNetwork(dc, pg.Spec.Name); n != nil {
			attachHost(ctx, h, n)
		}
	}
}

func policyEmpty(p types.HostNetworkPolicy) bool {
	return p.Security == nil && p.NicTeaming == nil && p.OffloadPolicy == nil && p.ShapingPolicy == nil
}

// ---------------------------------------------------------------------------- lookups

func (s *hostNetworkSystem) host() *simulator.HostSystem {
	h, _ := simulator.Map.Get(s.Host.Self).(*simulator.HostSystem)
	return h
}

func (s *hostNetworkSystem) vswitch(name string) *types.HostVirtualSwitch {
	for i := range s.NetworkInfo.Vswitch {
		if s.NetworkInfo.Vswitch[i].Name == name {
			return &s.NetworkInfo.Vswitch[i]
		}
	}
	return nil
}

func (s *hostNetworkSystem) portgroupIndex(name string) int {
	for i := range s.NetworkInfo.Portgroup {
		if s.NetworkInfo.Portgroup[i].Spec.Name == name {
			return i
		}
	}
	return -1
}

func withLock(ctx *simulator.Context, obj mo.Reference, f func()) {
	if ctx != nil {
		ctx.WithLock(obj, f)
		return
	}
	simulator.Map.WithLock(obj, f)
}

// datacenterOf walks up the inventory from ref to its Datacenter.
func datacenterOf(ref types.ManagedObjectReference) *simulator.Datacenter {
	for {
		obj := simulator.Map.Get(ref)
		if dc, ok := obj.(*simulator.Datacenter); ok {
			return dc
		}
		e, ok := obj.(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			return nil
		}
		ref = *e.Entity().Parent
	}
}

// ceso addition: findNetwork returns the datacenter's standard Network (type "Network", not a distributed
// or opaque one) of that name. Datacenter.network lists networks in every network sub-folder.
func findNetwork(dc *simulator.Datacenter, name string) *mo.Network {
	if dc == nil {
		return nil
	}
	for _, ref := range dc.Network {
		if ref.Type != "Network" {
			continue
		}
		if n, ok := simulator.Map.Get(ref).(*mo.Network); ok && n.Name == name {
			return n
		}
	}
	return nil
}

// hostNetworkByName returns the standard Network of that name the host is attached to.
func hostNetworkByName(h *simulator.HostSystem, name string) *mo.Network {
	for _, ref := range h.Network {
		if ref.Type != "Network" {
			continue
		}
		if n, ok := simulator.Map.Get(ref).(*mo.Network); ok && n.Name == name {
			return n
		}
	}
	return nil
}

// computeResource returns the registry object and the mo.ComputeResource of a host's parent.
func computeResource(h *simulator.HostSystem) (mo.Reference, *mo.ComputeResource) {
	if h.Parent == nil {
		return nil, nil
	}
	switch p := simulator.Map.Get(*h.Parent).(type) {
	case *mo.ComputeResource:
		return p, p
	case *simulator.ClusterComputeResource:
		return p, &p.ComputeResource
	}
	return nil, nil
}

func hasRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) bool {
	for _, r := range refs {
		if r == ref {
			return true
		}
	}
	return false
}

// Fresh slices on every change: the simulator builds HostSystem.network and
// ComputeResource.network as sub-slices of Datacenter.network, so appending in place would
// overwrite the datacenter's own list.
func withRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	out := make([]types.ManagedObjectReference, 0, len(refs)+1)
	out = append(out, refs...)
	if !hasRef(out, ref) {
		out = append(out, ref)
	}
	return out
}

func withoutRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	out := make([]types.ManagedObjectReference, 0, len(refs))
	for _, r := range refs {
		if r != ref {
			out = append(out, r)
		}
	}
	return out
}

// ceso addition: setProp assigns one property through simulator.Map.Update, so property collectors with
// pending WaitForUpdates see the change.
func setProp(ctx *simulator.Context, obj mo.Reference, name string, val interface{}) {
	withLock(ctx, obj, func() {
		simulator.Map.Update(obj, []types.PropertyChange{{Name: name, Val: val}})
	})
}

// ---------------------------------------------------------------------------- Network objects

// ceso addition: attachHost records that host h backs network n: h joins Network.host, n joins
// HostSystem.network and the parent ComputeResource.network (vCenter lists there the networks
// available to any of its hosts).
func attachHost(ctx *simulator.Context, h *simulator.HostSystem, n *mo.Network) {
	if !hasRef(n.Host, h.Self) {
		setProp(ctx, n, "host", withRef(n.Host, h.Self))
		refreshSummary(ctx, n)
	}
	if !hasRef(h.Network, n.Self) {
		setProp(ctx, h, "network", withRef(h.Network, n.Self))
	}
	if obj, cr := computeResource(h); cr != nil && !hasRef(cr.Network, n.Self) {
		setProp(ctx, obj, "network", withRef(cr.Network, n.Self))
	}
}

func refreshSummary(ctx *simulator.Context, n *mo.Network) {
	self := n.Self
	// NetworkSummary.accessible: at least one host can reach the network.
	setProp(ctx, n, "summary", &types.NetworkSummary{Network: &self, Name: n.Name, Accessible: len(n.Host) > 0})
}

// ceso addition: joinNetwork attaches host h to the standard Network named name, creating the
// Network when the datacenter has none. vCenter keys standard networks by name across hosts:
// the same port-group name on several hosts is ONE Network whose host list names them all
// (the simulator instead faults DuplicateName for the second host).
func joinNetwork(ctx *simulator.Context, h *simulator.HostSystem, name string) {
	dc := datacenterOf(h.Self)
	if dc == nil {
		return
	}
	n := findNetwork(dc, name)
	if n == nil {
		n = createNetwork(ctx, dc, name)
	}
	attachHost(ctx, h, n)
}

// ceso addition: createNetwork adds a Network entity to the datacenter's network folder, as the simulator's
// own folderPutChild does (unexported, so repeated here): child list first, then the registry
// (for ContainerView updates), then Datacenter.network. On ESXi the moid is "HaNetwork-<name>",
// as hostd names them (and as the simulator names its "VM Network").
func createNetwork(ctx *simulator.Context, dc *simulator.Datacenter, name string) *mo.Network {
	n := &mo.Network{}
	n.Name = name
	if simulator.Map.IsESX() {
		n.Self = types.ManagedObjectReference{Type: "Network", Value: "HaNetwork-" + name}
	} else {
		simulator.Map.NewEntity(n)
	}
	self := n.Self
	n.Summary = &types.NetworkSummary{Network: &self, Name: name, Accessible: true}
	folder := simulator.Map.Get(dc.NetworkFolder).(*simulator.Folder)
	withLock(ctx, folder, func() {
		folder.ChildEntity = withRef(folder.ChildEntity, n.Self)
		simulator.Map.PutEntity(folder, n)
	})
	setProp(ctx, dc, "network", withRef(dc.Network, n.Self))
	return n
}

// ceso addition: networkInUse reports whether any virtual machine is connected to n. (The simulator does not
// maintain Network.vm, only VirtualMachine.network, so both are consulted.)
func networkInUse(ctx *simulator.Context, n *mo.Network) bool {
	if len(n.Vm) > 0 {
		return true
	}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		used := false
		withLock(ctx, vm, func() { used = hasRef(vm.Network, n.Self) })
		if used {
			return true
		}
	}
	return false
}

// ceso addition: leaveNetwork detaches host h from the standard Network named name: h leaves
// Network.host, the network leaves HostSystem.network and, when no other host of the same
// compute resource still has it, ComputeResource.network. The Network object itself is
// destroyed once no host backs it and no virtual machine uses it (vCenter keeps a network that
// VMs still reference, reporting it inaccessible).
func leaveNetwork(ctx *simulator.Context, h *simulator.HostSystem, name string) {
	n := hostNetworkByName(h, name)
	if n == nil {
		n = findNetwork(datacenterOf(h.Self), name)
	}
	if n == nil {
		return
	}
	if hasRef(n.Host, h.Self) {
		setProp(ctx, n, "host", withoutRef(n.Host, h.Self))
	}
	if hasRef(h.Network, n.Self) {
		setProp(ctx, h, "network", withoutRef(h.Network, n.Self))
	}
	if obj, cr := computeResource(h); cr != nil && hasRef(cr.Network, n.Self) {
		still := false
		for _, ref := range cr.Host {
			if other, ok := simulator.Map.Get(ref).(*simulator.HostSystem); ok && other != h && hasRef(other.Network, n.Self) {
				still = true
			}
		}
		if !still {
			setProp(ctx, obj, "network", withoutRef(cr.Network, n.Self))
		}
	}
	// Ground truth is the hosts' own port groups: one still carrying the name keeps (and joins)
	// the Network even if Network.host missed it.
	for _, other := range portgroupHosts(ctx, datacenterOf(h.Self), name) {
		if other != h {
			attachHost(ctx, other, n)
		}
	}
	if len(n.Host) == 0 && !networkInUse(ctx, n) {
		destroyNetwork(ctx, n)
		return
	}
	refreshSummary(ctx, n)
}

// ceso addition: portgroupHosts returns the hosts of datacenter dc that have a port group named name.
func portgroupHosts(ctx *simulator.Context, dc *simulator.Datacenter, name string) []*simulator.HostSystem {
	var out []*simulator.HostSystem
	if dc == nil {
		return nil
	}
	for _, e := range simulator.Map.All("HostSystem") {
		h, ok := e.(*simulator.HostSystem)
		if !ok || datacenterOf(h.Self) != dc {
			continue
		}
		has := false
		withLock(ctx, h, func() {
			if h.Config != nil && h.Config.Network != nil {
				for _, pg := range h.Config.Network.Portgroup {
					if pg.Spec.Name == name {
						has = true
					}
				}
			}
		})
		if has {
			out = append(out, h)
		}
	}
	return out
}

// ceso addition: destroyNetwork removes a Network entity, as the simulator's folderRemoveChild does.
func destroyNetwork(ctx *simulator.Context, n *mo.Network) {
	ref := n.Self
	simulator.Map.Remove(ref)
	if n.Parent != nil {
		if folder, ok := simulator.Map.Get(*n.Parent).(*simulator.Folder); ok {
			withLock(ctx, folder, func() { folder.ChildEntity = withoutRef(folder.ChildEntity, ref) })
			if dc := datacenterOf(folder.Self); dc != nil {
				setProp(ctx, dc, "network", withoutRef(dc.Network, ref))
			}
		}
	}
}

// ---------------------------------------------------------------------------- faults

func faultBody(msg string, f types.BaseMethodFault) *soap.Fault { return simulator.Fault(msg, f) }

// ceso addition: validSpec applies the checks the API reference lists for AddPortGroup and UpdatePortGroup:
// InvalidArgument for an empty name or a vlanId outside [0, 4095] (0 = untagged, 4095 = trunk).
func validSpec(spec *types.HostPortGroupSpec) *soap.Fault {
	if spec.Name == "" {
		return faultBody("A specified parameter was not correct: portgrp.name", &types.InvalidArgument{InvalidProperty: "portgrp.name"})
	}
	if spec.VlanId < 0 || spec.VlanId > 4095 {
		return faultBody(fmt.Sprintf("A specified parameter was not correct: portgrp.vlanId (%d; valid 0-4095)", spec.VlanId),
			&types.InvalidArgument{InvalidProperty: "portgrp.vlanId"})
	}
	return nil
}

// edit runs f, which changes the host's network configuration, under the HostSystem's lock
// (the property collector reads config.network under that lock).
func (s *hostNetworkSystem) edit(ctx *simulator.Context, f func()) {
	if h := s.host(); h != nil {
		withLock(ctx, h, f)
		return
	}
	f()
}

// ceso addition: notify tells property collectors that the host's network configuration changed. The
// HostSystem's config.network and this system's networkInfo are one object; Map.Update
// assigns a pointer-typed property by copying into a fresh value, so the shared pointer is
// put back afterwards.
func (s *hostNetworkSystem) notify(ctx *simulator.Context) {
	info := s.NetworkInfo
	setProp(ctx, s, "networkInfo", info)
	s.NetworkInfo = info
	if h := s.host(); h != nil {
		setProp(ctx, h, "config.network", info)
		withLock(ctx, h, func() { h.Config.Network = info })
	}
}

// ceso addition: newPortGroup builds the HostPortGroup record the API reports for spec on switch vs.
func newPortGroup(spec types.HostPortGroupSpec, vs *types.HostVirtualSwitch, ports []types.HostPortGroupPort) types.HostPortGroup {
	spec.Policy = normalizeSpecPolicy(spec.Policy)
	return types.HostPortGroup{
		Key:            pgKeyPrefix + spec.Name,
		Port:           ports,
		Vswitch:        vs.Key,
		ComputedPolicy: mergePolicy(vs.Spec.Policy, spec.Policy),
		Spec:           spec,
	}
}

func removeString(list []string, s string) []string {
	out := make([]string, 0, len(list))
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}

// ---------------------------------------------------------------------------- SOAP methods

// AddPortGroup (ceso addition: override of the simulator's) adds a port group to a standard
// switch. Faults per the API reference: AlreadyExists if the host already has a port group of
// that name, NotFound if the virtual switch does not exist, InvalidArgument for a bad vlanId.
// The HostPortGroup gets its key, switch key and computedPolicy; the switch's portgroup list
// gets the key; the host joins (or, in vCenter, first creates) the Network of that name.
func (s *hostNetworkSystem) AddPortGroup(ctx *simulator.Context, req *types.AddPortGroup) soap.HasFault {
	body := &methods.AddPortGroupBody{}
	netMu.Lock()
	defer netMu.Unlock()
	s.syncNetworks(ctx)

	spec := req.Portgrp
	if f := validSpec(&spec); f != nil {
		body.Fault_ = f
		return body
	}
	if s.portgroupIndex(spec.Name) >= 0 {
		body.Fault_ = faultBody(fmt.Sprintf("The specified key, name, or identifier '%s' already exists.", spec.Name),
			&types.AlreadyExists{Name: spec.Name})
		return body
	}
	vs := s.vswitch(spec.VswitchName)
	if vs == nil {
		body.Fault_ = faultBody(fmt.Sprintf("The virtual switch '%s' was not found.", spec.VswitchName), &types.NotFound{})
		return body
	}

	pg := newPortGroup(spec, vs, nil)
	s.edit(ctx, func() {
		vs.Portgroup = append(cloneStrings(vs.Portgroup), pg.Key)
		s.NetworkInfo.Portgroup = append(append([]types.HostPortGroup(nil), s.NetworkInfo.Portgroup...), pg)
	})
	s.notify(ctx)
	if h := s.host(); h != nil {
		joinNetwork(ctx, h, spec.Name)
	}

	body.Res = &types.AddPortGroupResponse{}
	return body
}

// UpdatePortGroup (ceso addition: the simulator has none) replaces the named port group's
// HostPortGroupSpec: name (a rename is allowed), vlanId, vswitchName and policy. Faults per the
// API reference: NotFound if the port group or the new virtual switch does not exist,
// AlreadyExists if the new name is another port group's, InvalidArgument for a bad vlanId.
// The port list is kept; the key follows the name; the switch portgroup lists, the host's
// virtual NICs on the port group, the computedPolicy and (on a rename) the Network
// membership follow the new spec.
func (s *hostNetworkSystem) UpdatePortGroup(ctx *simulator.Context, req *types.UpdatePortGroup) soap.HasFault {
	body := &methods.UpdatePortGroupBody{}
	netMu.Lock()
	defer netMu.Unlock()
	s.syncNetworks(ctx)

	i := s.portgroupIndex(req.PgName)
	if i < 0 {
		body.Fault_ = faultBody(fmt.Sprintf("The port group '%s' was not found.", req.PgName), &types.NotFound{})
		return body
	}
	spec := req.Portgrp
	if f := validSpec(&spec); f != nil {
		body.Fault_ = f
		return body
	}
	if spec.Name != req.PgName && s.portgroupIndex(spec.Name) >= 0 {
		body.Fault_ = faultBody(fmt.Sprintf("The specified key, name, or identifier '%s' already exists.", spec.Name),
			&types.AlreadyExists{Name: spec.Name})
		return body
	}
	vs := s.vswitch(spec.VswitchName)
	if vs == nil {
		body.Fault_ = faultBody(fmt.Sprintf("The virtual switch '%s' was not found.", spec.VswitchName), &types.NotFound{})
		return body
	}

	old := s.NetworkInfo.Portgroup[i]
	pg := newPortGroup(spec, vs, old.Port)

	s.edit(ctx, func() {
		// The switch portgroup lists hold port-group keys: drop the old key wherever it is, then
		// list the new key on the (possibly different) switch, keeping its position on a rename.
		for j := range s.NetworkInfo.Vswitch {
			sw := &s.NetworkInfo.Vswitch[j]
			if sw == vs {
				list := cloneStrings(sw.Portgroup)
				replaced := false
				for k, key := range list {
					if key == old.Key {
						list[k], replaced = pg.Key, true
					}
				}
				if !replaced {
					list = append(list, pg.Key)
				}
				sw.Portgroup = list
			} else {
				sw.Portgroup = removeString(sw.Portgroup, old.Key)
			}
		}
		pgs := append([]types.HostPortGroup(nil), s.NetworkInfo.Portgroup...)
		pgs[i] = pg
		s.NetworkInfo.Portgroup = pgs

		if spec.Name != req.PgName {
			// VMkernel NICs sit on the port group itself, so they follow the rename.
			for j := range s.NetworkInfo.Vnic {
				if s.NetworkInfo.Vnic[j].Portgroup == req.PgName {
					s.NetworkInfo.Vnic[j].Portgroup = spec.Name
					s.NetworkInfo.Vnic[j].Spec.Portgroup = spec.Name
				}
			}
		}
	})
	s.notify(ctx)

	if spec.Name != req.PgName {
		if h := s.host(); h != nil {
			joinNetwork(ctx, h, spec.Name)
			leaveNetwork(ctx, h, req.PgName)
		}
	}

	body.Res = &types.UpdatePortGroupResponse{}
	return body
}

// RemovePortGroup (ceso addition: override of the simulator's) removes a port group from this
// host only. Faults per the API reference: NotFound if there is no such port group,
// ResourceInUse if a virtual (VMkernel) NIC is on it. In vCenter the host leaves the Network;
// the Network goes away only with its last host (and no VM using it), where the simulator
// deleted it outright.
func (s *hostNetworkSystem) RemovePortGroup(ctx *simulator.Context, req *types.RemovePortGroup) soap.HasFault {
	body := &methods.RemovePortGroupBody{}
	netMu.Lock()
	defer netMu.Unlock()
	s.syncNetworks(ctx)

	if f := s.removePortGroup(ctx, req.PgName); f != nil {
		body.Fault_ = f
		return body
	}
	body.Res = &types.RemovePortGroupResponse{}
	return body
}

func (s *hostNetworkSystem) removePortGroup(ctx *simulator.Context, name string) *soap.Fault {
	i := s.portgroupIndex(name)
	if i < 0 {
		return faultBody(fmt.Sprintf("The port group '%s' was not found.", name), &types.NotFound{})
	}
	for _, nic := range s.NetworkInfo.Vnic {
		if nic.Portgroup == name {
			return faultBody(fmt.Sprintf("The port group '%s' is in use by virtual NIC %s.", name, nic.Device),
				&types.ResourceInUse{Type: "HostVirtualNic", Name: nic.Device})
		}
	}
	key := s.NetworkInfo.Portgroup[i].Key
	s.edit(ctx, func() {
		for j := range s.NetworkInfo.Vswitch {
			s.NetworkInfo.Vswitch[j].Portgroup = removeString(s.NetworkInfo.Vswitch[j].Portgroup, key)
		}
		pgs := append([]types.HostPortGroup(nil), s.NetworkInfo.Portgroup[:i]...)
		s.NetworkInfo.Portgroup = append(pgs, s.NetworkInfo.Portgroup[i+1:]...)
	})
	s.notify(ctx)
	if h := s.host(); h != nil {
		leaveNetwork(ctx, h, name)
	}
	return nil
}

// AddVirtualSwitch (ceso addition: override of the simulator's, which stored only the name)
// adds a standard switch with its key, spec and policy, so port groups on it get a switch key
// and a computedPolicy. Unset spec settings take ESXi's defaults (128 ports, the default
// policy, teaming over the bridge's uplinks). AlreadyExists if the name is taken.
func (s *hostNetworkSystem) AddVirtualSwitch(ctx *simulator.Context, req *types.AddVirtualSwitch) soap.HasFault {
	body := &methods.AddVirtualSwitchBody{}
	netMu.Lock()
	defer netMu.Unlock()

	if req.VswitchName == "" {
		body.Fault_ = faultBody("A specified parameter was not correct: vswitchName", &types.InvalidArgument{InvalidProperty: "vswitchName"})
		return body
	}
	if s.vswitch(req.VswitchName) != nil {
		body.Fault_ = faultBody(fmt.Sprintf("The specified key, name, or identifier '%s' already exists.", req.VswitchName),
			&types.AlreadyExists{Name: req.VswitchName})
		return body
	}
	spec := types.HostVirtualSwitchSpec{NumPorts: 128}
	if req.Spec != nil {
		spec = *req.Spec
	}
	var uplinks, pnics []string
	if b, ok := spec.Bridge.(*types.HostVirtualSwitchBondBridge); ok {
		uplinks = cloneStrings(b.NicDevice)
	}
	for _, nic := range uplinks {
		pnics = append(pnics, pnicKeyPrefix+nic)
	}
	spec.Policy = defaultSwitchPolicy(spec.Policy, uplinks)
	mtu := spec.Mtu
	if mtu == 0 {
		mtu = 1500
	}
	vs := types.HostVirtualSwitch{
		Name:              req.VswitchName,
		Key:               vsKeyPrefix + req.VswitchName,
		NumPorts:          spec.NumPorts,
		NumPortsAvailable: spec.NumPorts,
		Mtu:               mtu,
		Pnic:              pnics,
		Spec:              spec,
	}
	s.edit(ctx, func() {
		s.NetworkInfo.Vswitch = append(append([]types.HostVirtualSwitch(nil), s.NetworkInfo.Vswitch...), vs)
	})
	s.notify(ctx)

	body.Res = &types.AddVirtualSwitchResponse{}
	return body
}

// RemoveVirtualSwitch (ceso addition: override of the simulator's, which left the switch's
// port groups behind) removes a standard switch and the port groups on it, each as
// RemovePortGroup would. Faults per the API reference: NotFound if there is no such switch,
// ResourceInUse if a virtual NIC is on one of its port groups.
func (s *hostNetworkSystem) RemoveVirtualSwitch(ctx *simulator.Context, req *types.RemoveVirtualSwitch) soap.HasFault {
	body := &methods.RemoveVirtualSwitchBody{}
	netMu.Lock()
	defer netMu.Unlock()

	vs := s.vswitch(req.VswitchName)
	if vs == nil {
		body.Fault_ = faultBody(fmt.Sprintf("The virtual switch '%s' was not found.", req.VswitchName), &types.NotFound{})
		return body
	}
	var names []string
	for _, pg := range s.NetworkInfo.Portgroup {
		if pg.Spec.VswitchName == req.VswitchName {
			names = append(names, pg.Spec.Name)
		}
	}
	for _, nic := range s.NetworkInfo.Vnic {
		for _, name := range names {
			if nic.Portgroup == name {
				body.Fault_ = faultBody(fmt.Sprintf("The virtual switch '%s' is in use by virtual NIC %s.", req.VswitchName, nic.Device),
					&types.ResourceInUse{Type: "HostVirtualNic", Name: nic.Device})
				return body
			}
		}
	}
	for _, name := range names {
		if f := s.removePortGroup(ctx, name); f != nil {
			body.Fault_ = f
			return body
		}
	}
	var kept []types.HostVirtualSwitch
	for _, sw := range s.NetworkInfo.Vswitch {
		if sw.Name != req.VswitchName {
			kept = append(kept, sw)
		}
	}
	s.edit(ctx, func() { s.NetworkInfo.Vswitch = kept })
	s.notify(ctx)

	body.Res = &types.RemoveVirtualSwitchResponse{}
	return body
}
