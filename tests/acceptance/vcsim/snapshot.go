package main

// ceso addition: VM snapshot and disk-consolidation methods modelled after the vSphere API
// reference (VirtualMachineSnapshot.RenameSnapshot / RemoveSnapshot_Task / RevertToSnapshot_Task,
// VirtualMachine.CreateSnapshot_Task / RevertToCurrentSnapshot_Task / RemoveAllSnapshots_Task /
// ConsolidateVMDisks_Task, VirtualMachineRuntimeInfo.consolidationNeeded,
// VirtualMachineSnapshotTree).
//
// Where govmomi 0.24's simulator falls short:
//
//   - it has no RenameSnapshot and no ConsolidateVMDisks_Task (MethodNotFound);
//   - RemoveSnapshot_Task panics (the client sees the connection drop, the tree is left half
//     updated) when the removed snapshot is the current one and has no parent while other
//     snapshots remain: it publishes a nil *ManagedObjectReference as snapshot.currentSnapshot,
//     which mo.ApplyPropertyChange cannot assign;
//   - with removeChildren=true it drops the subtree from the VM's tree but leaves the
//     descendants' managed objects registered (and their files and layout entries in place),
//     and leaves currentSnapshot on a removed descendant;
//   - it never keeps VirtualMachineSnapshot.childSnapshot in step on removal (the parent still
//     lists the removed snapshot, not its re-parented children), never fills
//     VirtualMachine.rootSnapshot, and never sets runtime.consolidationNeeded;
//   - RevertToSnapshot_Task / RevertToCurrentSnapshot_Task only move currentSnapshot: the
//     power state stays as it was, where the API says the VM takes the snapshot's recorded
//     state (tree item "state") unless suppressPowerOn keeps it from powering on;
//   - CreateSnapshot_Task records the VM's power state as the snapshot's state even with
//     memory=false, where the API says "When set to FALSE, the power state of the snapshot is
//     set to powered off" (so reverting to it would wrongly power the VM on); and a snapshot
//     created under another one changes snapshot.rootSnapshotList in place, unpublished, so
//     WaitForUpdatesEx filters on that path never hear of it.
//
// How the methods are reached. The simulator dispatches a SOAP call by reflection on the
// object registered under the request's _this (simulator.go, Service.call: method
// strings.Title(name) with "_Task" -> "Task", one or two parameters, the optional first being
// *simulator.Context). Replacing the VirtualMachine / VirtualMachineSnapshot objects in
// simulator.Map with wrapper types (as netsys.go does for HostNetworkSystem) does not work
// here: the simulator type-asserts these objects to their concrete types all over
// (Map.Get(ref).(*VirtualMachine) in snapshot.go, datacenter.go, resource_pool.go,
// guest_operations_manager.go, dvs.go, performance_manager.go, virtual_machine.go;
// Map.Get(ref).(*VirtualMachineSnapshot) in CreateSnapshotTask, RemoveSnapshotTask and
// RemoveAllSnapshotsTask), so a wrapper in their place makes those paths panic, including
// the very snapshot methods wrapped here. A snapshot object is created inside the
// simulator's own CreateSnapshotTask, so registering a wrapper for new snapshots would not
// help either.
//
// Instead the request is routed at decode time. The simulator decodes a request body into
// the Go type that the vim25 type registry (types.TypeFunc, read on every request) names for
// the method element; init below registers, for each method modelled here, a type with the
// same XML shape whose UnmarshalXML keeps the _this reference the client sent as the target
// and points This at one stateless dispatcher object (snapshotModel), registered in
// simulator.Map on first use. Dispatch then finds the methods below on it. Nothing has to be
// registered per VM or per snapshot, so snapshots created later, by the simulator's own
// CreateSnapshotTask or otherwise, are covered with no hook. The dispatcher opts out of the
// simulator's per-object auto-locking (it is a sync.Locker with no-op methods); each method
// takes its VM's snapshot-operation lock (see vmOpLock), then the lock of its target, and sets
// ctx.Caller to it, exactly as Service.call would have done for the target itself. The
// simulator's own methods are then called on the real objects and extended ("wrapped"), never
// copied. The registered request types also let RenameSnapshot tell an absent name or
// description from an empty one, which govmomi's RenameSnapshot type (plain strings with
// omitempty) cannot. Only SOAP requests are decoded this way: the simulator's in-process
// RoundTrip (its own vim25 client) passes govmomi's request types and still reaches the
// simulator's methods directly; nothing in the launcher calls these methods in process.

import (
	"flag"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// ceso addition: -consolidation-needed-after-remove makes every RemoveSnapshot_Task leave the
// VM's runtime.consolidationNeeded = true, as when vSphere removes a snapshot but fails to
// merge its disk back, so a test can exercise ConsolidateVMDisks_Task. (Registered here, parsed
// by main's flag.Parse.)
var consolidationNeededAfterRemove = flag.Bool("consolidation-needed-after-remove", false,
	"leave runtime.consolidationNeeded=true after each RemoveSnapshot_Task (as when vSphere fails to consolidate the disks)")

// ---------------------------------------------------------------------------- dispatch

// ceso addition: snapshotModelRef names the dispatcher in simulator.Map; clients never see it.
var snapshotModelRef = types.ManagedObjectReference{Type: "CesoSnapshotModel", Value: "ceso-snapshot-model"}

// ceso addition: snapshotModel receives the methods routed to it by the request types below.
// It holds no state. As a sync.Locker with no-op methods it opts out of the lock the
// simulator takes on the dispatch object (registry.go, Registry.locker); each method locks
// its real target instead.
type snapshotModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*snapshotModel) Reference() types.ManagedObjectReference { return snapshotModelRef }
func (*snapshotModel) Lock()                                   {}
func (*snapshotModel) Unlock()                                 {}

var snapshotModelMu sync.Mutex

// ceso addition: routeToModel registers the dispatcher if simulator.Map does not hold it yet
// (the model's Create replaces the registry, so it cannot be done at init), points *this at
// it and returns the reference the client sent.
func routeToModel(this *types.ManagedObjectReference) types.ManagedObjectReference {
	snapshotModelMu.Lock()
	if simulator.Map.Get(snapshotModelRef) == nil {
		simulator.Map.Put(&snapshotModel{})
	}
	snapshotModelMu.Unlock()
	target := *this
	*this = snapshotModelRef
	return target
}

// ceso addition: request types with the XML shape of the vim25 ones, registered under the
// method names so that the simulator decodes those requests into them.
func init() {
	types.Add("RenameSnapshot", reflect.TypeOf(renameSnapshotRequest{}))
	types.Add("RemoveSnapshot_Task", reflect.TypeOf(removeSnapshotRequest{}))
	types.Add("RevertToSnapshot_Task", reflect.TypeOf(revertToSnapshotRequest{}))
	types.Add("RevertToCurrentSnapshot_Task", reflect.TypeOf(revertToCurrentSnapshotRequest{}))
	types.Add("CreateSnapshot_Task", reflect.TypeOf(createSnapshotRequest{}))
	types.Add("RemoveAllSnapshots_Task", reflect.TypeOf(removeAllSnapshotsRequest{}))
	types.Add("ConsolidateVMDisks_Task", reflect.TypeOf(consolidateVMDisksRequest{}))
}

// renameSnapshotRequest is RenameSnapshot's RenameSnapshotRequestType with the optional
// strings as pointers: nil when the element is absent ("unchanged"), "" when it is empty.
type renameSnapshotRequest struct {
	This        types.ManagedObjectReference `xml:"_this"`
	Name        *string                      `xml:"name"`
	Description *string                      `xml:"description"`
	target      types.ManagedObjectReference
}

func (r *renameSnapshotRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain renameSnapshotRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type removeSnapshotRequest struct {
	types.RemoveSnapshot_Task
	target types.ManagedObjectReference
}

func (r *removeSnapshotRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain removeSnapshotRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type revertToSnapshotRequest struct {
	types.RevertToSnapshot_Task
	target types.ManagedObjectReference
}

func (r *revertToSnapshotRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain revertToSnapshotRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type revertToCurrentSnapshotRequest struct {
	types.RevertToCurrentSnapshot_Task
	target types.ManagedObjectReference
}

func (r *revertToCurrentSnapshotRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain revertToCurrentSnapshotRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type createSnapshotRequest struct {
	types.CreateSnapshot_Task
	target types.ManagedObjectReference
}

func (r *createSnapshotRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain createSnapshotRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type removeAllSnapshotsRequest struct {
	types.RemoveAllSnapshots_Task
	target types.ManagedObjectReference
}

func (r *removeAllSnapshotsRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain removeAllSnapshotsRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

type consolidateVMDisksRequest struct {
	types.ConsolidateVMDisks_Task
	target types.ManagedObjectReference
}

func (r *consolidateVMDisksRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain consolidateVMDisksRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = routeToModel(&r.This)
	return nil
}

// ---------------------------------------------------------------------------- helpers

// lookupSnapshot / lookupVM resolve a routed target with the faults Service.call gives for an
// unknown object (ManagedObjectNotFound) or an object without the method (MethodNotFound).
func lookupSnapshot(ctx *simulator.Context, ref types.ManagedObjectReference, method string) (*simulator.VirtualMachineSnapshot, *soap.Fault) {
	obj := ctx.Map.Get(ref)
	if obj == nil {
		return nil, simulator.Fault(fmt.Sprintf("managed object not found: %s", ref), &types.ManagedObjectNotFound{Obj: ref})
	}
	s, ok := obj.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return nil, simulator.Fault(fmt.Sprintf("%s does not implement: %s", ref, method), &types.MethodNotFound{Receiver: ref, Method: method})
	}
	return s, nil
}

func lookupVM(ctx *simulator.Context, ref types.ManagedObjectReference, method string) (*simulator.VirtualMachine, *soap.Fault) {
	obj := ctx.Map.Get(ref)
	if obj == nil {
		return nil, simulator.Fault(fmt.Sprintf("managed object not found: %s", ref), &types.ManagedObjectNotFound{Obj: ref})
	}
	vm, ok := obj.(*simulator.VirtualMachine)
	if !ok {
		return nil, simulator.Fault(fmt.Sprintf("%s does not implement: %s", ref, method), &types.MethodNotFound{Receiver: ref, Method: method})
	}
	return vm, nil
}

// ceso addition: snapshot operations on one VM run one at a time, as vSphere runs them (vCenter
// queues a VM's tasks; the API's TaskInProgress fault is "if the virtual machine is busy").
// Every method of this model takes its VM's operation lock first, before any registry lock, and
// no other code takes it, so it adds no lock-order cycle. Without it, a revert could, for
// example, make current a snapshot that a concurrent removeChildren=true removal of one of its
// ancestors (which does not hold the descendants' own locks) has just removed.
var (
	vmOpMu    sync.Mutex
	vmOpLocks = map[types.ManagedObjectReference]*sync.Mutex{}
)

func vmOpLock(vm types.ManagedObjectReference) *sync.Mutex {
	vmOpMu.Lock()
	defer vmOpMu.Unlock()
	mu, ok := vmOpLocks[vm]
	if !ok {
		mu = new(sync.Mutex)
		vmOpLocks[vm] = mu
	}
	return mu
}

// lockSnapshotOp resolves a snapshot target and takes its VM's operation lock; the target is
// looked up again once the lock is held, since a queued removal may have taken it away.
func lockSnapshotOp(ctx *simulator.Context, ref types.ManagedObjectReference, method string) (*simulator.VirtualMachineSnapshot, func(), *soap.Fault) {
	snap, f := lookupSnapshot(ctx, ref, method)
	if f != nil {
		return nil, nil, f
	}
	mu := vmOpLock(snap.Vm)
	mu.Lock()
	if snap, f = lookupSnapshot(ctx, ref, method); f != nil {
		mu.Unlock()
		return nil, nil, f
	}
	return snap, mu.Unlock, nil
}

// lockVMOp is lockSnapshotOp for a VirtualMachine target.
func lockVMOp(ctx *simulator.Context, ref types.ManagedObjectReference, method string) (*simulator.VirtualMachine, func(), *soap.Fault) {
	vm, f := lookupVM(ctx, ref, method)
	if f != nil {
		return nil, nil, f
	}
	mu := vmOpLock(ref)
	mu.Lock()
	if vm, f = lookupVM(ctx, ref, method); f != nil {
		mu.Unlock()
		return nil, nil, f
	}
	return vm, mu.Unlock, nil
}

// snapshotVM is the VM a snapshot belongs to.
func snapshotVM(ctx *simulator.Context, s *simulator.VirtualMachineSnapshot) (*simulator.VirtualMachine, types.BaseMethodFault) {
	vm, ok := ctx.Map.Get(s.Vm).(*simulator.VirtualMachine)
	if !ok {
		return nil, &types.ManagedObjectNotFound{Obj: s.Vm}
	}
	return vm, nil
}

// asCaller runs f as Service.call runs a method of obj: with obj locked and obj as ctx.Caller
// (so the simulator's Context.WithLock(obj) inside f does not lock it twice). obj must not be
// locked by this goroutine already.
func asCaller(ctx *simulator.Context, obj mo.Reference, f func()) {
	ref := obj.Reference()
	prev := ctx.Caller
	ctx.Map.WithLock(obj, func() {
		ctx.Caller = &ref
		defer func() { ctx.Caller = prev }()
		f()
	})
}

// innerTask returns the outcome of a simulator task method called from a wrapper: the fault of
// the call or of its (synchronous) task, else the task's result.
func innerTask(ctx *simulator.Context, res soap.HasFault) (types.AnyType, types.BaseMethodFault) {
	if f := res.Fault(); f != nil {
		if mf, ok := f.Detail.Fault.(types.BaseMethodFault); ok {
			return nil, mf
		}
		return nil, &types.SystemError{Reason: f.String}
	}
	ref := reflect.ValueOf(res).Elem().FieldByName("Res").Elem().FieldByName("Returnval").Interface().(types.ManagedObjectReference)
	task, ok := ctx.Map.Get(ref).(*simulator.Task)
	if !ok {
		return nil, &types.SystemError{Reason: "task not found: " + ref.Value}
	}
	if task.Info.Error != nil {
		return nil, task.Info.Error.Fault
	}
	return task.Info.Result, nil
}

func snapshotTree(vm *simulator.VirtualMachine) []types.VirtualMachineSnapshotTree {
	if vm.Snapshot == nil {
		return nil
	}
	return vm.Snapshot.RootSnapshotList
}

// cloneTree deep-copies a snapshot tree, so a change can be made on the copy and published
// whole (readers holding the old slices never see it change under them).
func cloneTree(tree []types.VirtualMachineSnapshotTree) []types.VirtualMachineSnapshotTree {
	if tree == nil {
		return nil
	}
	out := make([]types.VirtualMachineSnapshotTree, len(tree))
	for i := range tree {
		out[i] = tree[i]
		out[i].ChildSnapshotList = cloneTree(tree[i].ChildSnapshotList)
	}
	return out
}

// findItem returns the tree item of ref, pointing into tree.
func findItem(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) *types.VirtualMachineSnapshotTree {
	for i := range tree {
		if tree[i].Snapshot == ref {
			return &tree[i]
		}
		if s := findItem(tree[i].ChildSnapshotList, ref); s != nil {
			return s
		}
	}
	return nil
}

// parentOf returns the snapshot whose child ref is; nil for a root (or an unknown ref).
func parentOf(tree []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) *types.ManagedObjectReference {
	for i := range tree {
		for _, c := range tree[i].ChildSnapshotList {
			if c.Snapshot == ref {
				p := tree[i].Snapshot
				return &p
			}
		}
		if p := parentOf(tree[i].ChildSnapshotList, ref); p != nil {
			return p
		}
	}
	return nil
}

// postOrder lists the snapshots of a subtree list, children before their parents.
func postOrder(tree []types.VirtualMachineSnapshotTree) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, s := range tree {
		out = append(out, postOrder(s.ChildSnapshotList)...)
		out = append(out, s.Snapshot)
	}
	return out
}

func treeRefs(tree []types.VirtualMachineSnapshotTree) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, s := range tree {
		out = append(out, s.Snapshot)
	}
	return out
}

func sameRefs(a, b []types.ManagedObjectReference) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// refsVal is a property-change value for a reference list; unset when empty.
func refsVal(refs []types.ManagedObjectReference) interface{} {
	if len(refs) == 0 {
		return nil
	}
	return refs
}

// syncSnapshotRefs makes VirtualMachine.rootSnapshot and every VirtualMachineSnapshot's
// childSnapshot agree with the VM's snapshot tree, publishing those that change. The tree is
// the VM's, guarded by the VM's lock, which the caller holds (the simulator's own
// CreateSnapshotTask edits the parent snapshot's childSnapshot the same way).
func syncSnapshotRefs(ctx *simulator.Context, vm *simulator.VirtualMachine) {
	tree := snapshotTree(vm)
	if roots := treeRefs(tree); !sameRefs(vm.RootSnapshot, roots) {
		ctx.Map.Update(vm, []types.PropertyChange{{Name: "rootSnapshot", Val: refsVal(roots)}})
	}
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(list []types.VirtualMachineSnapshotTree) {
		for _, item := range list {
			if s, ok := ctx.Map.Get(item.Snapshot).(*simulator.VirtualMachineSnapshot); ok {
				if kids := treeRefs(item.ChildSnapshotList); !sameRefs(s.ChildSnapshot, kids) {
					ctx.Map.Update(s, []types.PropertyChange{{Name: "childSnapshot", Val: refsVal(kids)}})
				}
			}
			walk(item.ChildSnapshotList)
		}
	}
	walk(tree)
}

// setConsolidationNeeded sets runtime.consolidationNeeded (and its copy in summary.runtime).
// The caller holds the VM's lock.
func setConsolidationNeeded(ctx *simulator.Context, vm *simulator.VirtualMachine, needed bool) {
	ctx.Map.Update(vm, []types.PropertyChange{
		{Name: "runtime.consolidationNeeded", Val: needed},
		{Name: "summary.runtime.consolidationNeeded", Val: needed},
	})
}

// setPowerState brings the VM to state through the simulator's own power methods (which post
// the power events and keep bootTime), as its ResetVMTask does. The caller holds the VM's lock
// as ctx.Caller.
func setPowerState(ctx *simulator.Context, vm *simulator.VirtualMachine, state types.VirtualMachinePowerState) types.BaseMethodFault {
	if vm.Runtime.PowerState == state {
		return nil
	}
	var res soap.HasFault
	switch state {
	case types.VirtualMachinePowerStatePoweredOn:
		res = vm.PowerOnVMTask(ctx, &types.PowerOnVM_Task{This: vm.Self})
	case types.VirtualMachinePowerStatePoweredOff:
		res = vm.PowerOffVMTask(ctx, &types.PowerOffVM_Task{This: vm.Self})
	case types.VirtualMachinePowerStateSuspended:
		res = vm.SuspendVMTask(ctx, &types.SuspendVM_Task{This: vm.Self})
	default:
		return nil
	}
	_, fault := innerTask(ctx, res)
	return fault
}

// revertPowerState is the power state a revert leaves the VM in (vSphere API reference,
// RevertToSnapshot_Task): the state recorded in the snapshot's tree item ("state"), except that
// with suppressPowerOn the VM is not powered on.
func revertPowerState(recorded types.VirtualMachinePowerState, suppressPowerOn *bool) types.VirtualMachinePowerState {
	if recorded == types.VirtualMachinePowerStatePoweredOn && suppressPowerOn != nil && *suppressPowerOn {
		return types.VirtualMachinePowerStatePoweredOff
	}
	return recorded
}

// checkHost validates RevertToSnapshot's optional host: it must name a host.
func checkHost(ctx *simulator.Context, host *types.ManagedObjectReference) *soap.Fault {
	if host == nil {
		return nil
	}
	if _, ok := ctx.Map.Get(*host).(*simulator.HostSystem); !ok {
		return simulator.Fault(fmt.Sprintf("managed object not found: %s", *host), &types.ManagedObjectNotFound{Obj: *host})
	}
	return nil
}

// ---------------------------------------------------------------------------- methods

// RenameSnapshot (ceso addition: the simulator has none). vSphere API reference: "Rename this
// snapshot with either a new name or a new description or both. At least one of these must be
// specified"; name and description are optional, an absent one is left unchanged, a present
// one (even empty, for the description) replaces the old value. Faults: InvalidName if the
// name given is not valid (here: empty), InvalidArgument if neither is given. The change is
// made to the tree item in the owning VM's snapshot.rootSnapshotList (the snapshot object has
// no name or description of its own) and published, so RetrievePropertiesEx and
// WaitForUpdatesEx see it.
func (*snapshotModel) RenameSnapshot(ctx *simulator.Context, req *renameSnapshotRequest) soap.HasFault {
	body := &methods.RenameSnapshotBody{}
	snap, unlock, f := lockSnapshotOp(ctx, req.target, "RenameSnapshot")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	if req.Name == nil && req.Description == nil {
		body.Fault_ = simulator.Fault("A specified parameter was not correct: name, description",
			&types.InvalidArgument{InvalidProperty: "name"})
		return body
	}
	if req.Name != nil && *req.Name == "" {
		body.Fault_ = simulator.Fault("The name '' is invalid.", &types.InvalidName{Name: "", Entity: &req.target})
		return body
	}

	asCaller(ctx, snap, func() {
		vm, fault := snapshotVM(ctx, snap)
		if fault != nil {
			body.Fault_ = simulator.Fault("", fault)
			return
		}
		ctx.Map.WithLock(vm, func() {
			tree := cloneTree(snapshotTree(vm))
			item := findItem(tree, req.target)
			if item == nil {
				body.Fault_ = simulator.Fault(fmt.Sprintf("managed object not found: %s", req.target),
					&types.ManagedObjectNotFound{Obj: req.target})
				return
			}
			if req.Name != nil {
				item.Name = *req.Name
			}
			if req.Description != nil {
				item.Description = *req.Description
			}
			ctx.Map.Update(vm, []types.PropertyChange{{Name: "snapshot.rootSnapshotList", Val: tree}})
		})
	})
	if body.Fault_ == nil {
		body.Res = &types.RenameSnapshotResponse{}
	}
	return body
}

// RemoveSnapshotTask (ceso addition: wraps the simulator's RemoveSnapshot_Task). vSphere API
// reference: removes this snapshot; removeChildren=true removes its whole subtree, false
// re-parents its children to its parent (roots if it had none, keeping their place among the
// siblings); consolidate (default true) merges the disk, and when it is false the disk is left
// unmerged, which runtime.consolidationNeeded reports ("a snapshot is deleted but its
// associated disk is not committed back to the base disk"). Each snapshot of the subtree is
// removed, children first, by the simulator's own RemoveSnapshotTask (which edits the tree,
// deletes the files and layout entries and unregisters the object); this wrapper moves
// currentSnapshot to the removed snapshot's parent (unset for a root) itself first (the
// simulator's own move panics for a root), keeps childSnapshot/rootSnapshot in step, and sets
// consolidationNeeded when consolidate=false or -consolidation-needed-after-remove is given.
// The returned task finishes after all of it.
func (*snapshotModel) RemoveSnapshotTask(ctx *simulator.Context, req *removeSnapshotRequest) soap.HasFault {
	body := &methods.RemoveSnapshot_TaskBody{}
	snap, unlock, f := lockSnapshotOp(ctx, req.target, "RemoveSnapshot_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	asCaller(ctx, snap, func() {
		task := simulator.CreateTask(snap, "removeSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			vm, fault := snapshotVM(ctx, snap)
			if fault != nil {
				return nil, fault
			}
			var order []types.ManagedObjectReference
			ctx.Map.WithLock(vm, func() {
				if item := findItem(snapshotTree(vm), req.target); item != nil && req.RemoveChildren {
					order = postOrder(item.ChildSnapshotList)
				}
			})
			for _, ref := range order {
				if _, ok := ctx.Map.Get(ref).(*simulator.VirtualMachineSnapshot); !ok {
					continue // already gone
				}
				if fault := removeOneSnapshot(ctx, vm, ref, req.Consolidate); fault != nil {
					return nil, fault
				}
			}
			if fault := removeOneSnapshot(ctx, vm, req.target, req.Consolidate); fault != nil {
				return nil, fault
			}
			if *consolidationNeededAfterRemove || (req.Consolidate != nil && !*req.Consolidate) {
				ctx.Map.WithLock(vm, func() { setConsolidationNeeded(ctx, vm, true) })
			}
			return nil, nil
		})
		body.Res = &types.RemoveSnapshot_TaskResponse{Returnval: task.Run()}
	})
	return body
}

// removeOneSnapshot removes one snapshot (its children re-parented) through the simulator.
func removeOneSnapshot(ctx *simulator.Context, vm *simulator.VirtualMachine, ref types.ManagedObjectReference, consolidate *bool) types.BaseMethodFault {
	s, ok := ctx.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: ref}
	}
	ctx.Map.WithLock(vm, func() {
		if vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil && *vm.Snapshot.CurrentSnapshot == ref {
			var parent interface{} // unset when the removed snapshot is a root
			if p := parentOf(snapshotTree(vm), ref); p != nil {
				parent = *p
			}
			ctx.Map.Update(vm, []types.PropertyChange{{Name: "snapshot.currentSnapshot", Val: parent}})
		}
	})
	res := s.RemoveSnapshotTask(ctx, &types.RemoveSnapshot_Task{This: ref, RemoveChildren: false, Consolidate: consolidate})
	if _, fault := innerTask(ctx, res); fault != nil {
		return fault
	}
	ctx.Map.WithLock(vm, func() { syncSnapshotRefs(ctx, vm) })
	return nil
}

// RevertToSnapshotTask (ceso addition: wraps the simulator's RevertToSnapshot_Task, which only
// makes this snapshot current). vSphere API reference: "Change the execution state of the
// virtual machine to the state of this snapshot": the VM takes the power state recorded in the
// snapshot's tree item ("state"; a snapshot taken without memory records poweredOff), except
// that suppressPowerOn=true keeps it from being powered on. currentSnapshot becomes this
// snapshot. host, when given, must name a host; the VM keeps its host affiliation (the
// simulator does not model placing the power-on elsewhere).
func (*snapshotModel) RevertToSnapshotTask(ctx *simulator.Context, req *revertToSnapshotRequest) soap.HasFault {
	body := &methods.RevertToSnapshot_TaskBody{}
	snap, unlock, f := lockSnapshotOp(ctx, req.target, "RevertToSnapshot_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	if f := checkHost(ctx, req.Host); f != nil {
		body.Fault_ = f
		return body
	}
	asCaller(ctx, snap, func() {
		task := simulator.CreateTask(snap, "revertToSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			inner := req.RevertToSnapshot_Task
			inner.This = req.target
			if _, fault := innerTask(ctx, snap.RevertToSnapshotTask(&inner)); fault != nil {
				return nil, fault
			}
			vm, fault := snapshotVM(ctx, snap)
			if fault != nil {
				return nil, fault
			}
			asCaller(ctx, vm, func() {
				item := findItem(snapshotTree(vm), req.target)
				if item == nil {
					fault = &types.ManagedObjectNotFound{Obj: req.target}
					return
				}
				fault = setPowerState(ctx, vm, revertPowerState(item.State, req.SuppressPowerOn))
			})
			return nil, fault
		})
		body.Res = &types.RevertToSnapshot_TaskResponse{Returnval: task.Run()}
	})
	return body
}

// RevertToCurrentSnapshotTask (ceso addition: wraps the simulator's, which changes nothing):
// the same power-state rule as RevertToSnapshot_Task, for the current snapshot ("If set to
// true, the virtual machine will not be powered on regardless of the power state when the
// current snapshot was created"). NotFound (the simulator's fault) when there is none.
func (*snapshotModel) RevertToCurrentSnapshotTask(ctx *simulator.Context, req *revertToCurrentSnapshotRequest) soap.HasFault {
	body := &methods.RevertToCurrentSnapshot_TaskBody{}
	vm, unlock, f := lockVMOp(ctx, req.target, "RevertToCurrentSnapshot_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	if f := checkHost(ctx, req.Host); f != nil {
		body.Fault_ = f
		return body
	}
	asCaller(ctx, vm, func() {
		if vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil {
			body.Fault_ = simulator.Fault("snapshot not found", &types.NotFound{})
			return
		}
		current := *vm.Snapshot.CurrentSnapshot
		task := simulator.CreateTask(vm, "revertSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			inner := req.RevertToCurrentSnapshot_Task
			inner.This = req.target
			if _, fault := innerTask(ctx, vm.RevertToCurrentSnapshotTask(&inner)); fault != nil {
				return nil, fault
			}
			item := findItem(snapshotTree(vm), current)
			if item == nil {
				return nil, &types.NotFound{}
			}
			return nil, setPowerState(ctx, vm, revertPowerState(item.State, req.SuppressPowerOn))
		})
		body.Res = &types.RevertToCurrentSnapshot_TaskResponse{Returnval: task.Run()}
	})
	return body
}

// CreateSnapshotTask (ceso addition: wraps the simulator's CreateSnapshot_Task). vSphere API
// reference, memory: "When set to FALSE, the power state of the snapshot is set to powered
// off" (a suspended VM's snapshot always includes memory), so the new tree item's state is
// poweredOff for a powered-on VM snapshotted without memory; the simulator recorded
// poweredOn, and a revert would have powered the VM on. The whole tree is then published
// (the simulator edits a parent's childSnapshotList in place without publishing it) and
// rootSnapshot/childSnapshot are kept in step. The task's result is the new snapshot.
func (*snapshotModel) CreateSnapshotTask(ctx *simulator.Context, req *createSnapshotRequest) soap.HasFault {
	body := &methods.CreateSnapshot_TaskBody{}
	vm, unlock, f := lockVMOp(ctx, req.target, "CreateSnapshot_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	asCaller(ctx, vm, func() {
		task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			inner := req.CreateSnapshot_Task
			inner.This = req.target
			result, fault := innerTask(ctx, vm.CreateSnapshotTask(&inner))
			if fault != nil {
				return nil, fault
			}
			ref, _ := result.(types.ManagedObjectReference)
			tree := cloneTree(snapshotTree(vm))
			if item := findItem(tree, ref); item != nil && !req.Memory && item.State == types.VirtualMachinePowerStatePoweredOn {
				item.State = types.VirtualMachinePowerStatePoweredOff
			}
			ctx.Map.Update(vm, []types.PropertyChange{{Name: "snapshot.rootSnapshotList", Val: tree}})
			syncSnapshotRefs(ctx, vm)
			return ref, nil
		})
		body.Res = &types.CreateSnapshot_TaskResponse{Returnval: task.Run()}
	})
	return body
}

// RemoveAllSnapshotsTask (ceso addition: wraps the simulator's RemoveAllSnapshots_Task, which
// removes every snapshot object and unsets snapshot). It also unsets rootSnapshot, which this
// model fills, and, as for RemoveSnapshot_Task, consolidate=false ("If set to true, the virtual
// disks of the deleted snapshot will be merged with other disk if possible. Default to true")
// leaves runtime.consolidationNeeded = true.
func (*snapshotModel) RemoveAllSnapshotsTask(ctx *simulator.Context, req *removeAllSnapshotsRequest) soap.HasFault {
	body := &methods.RemoveAllSnapshots_TaskBody{}
	vm, unlock, f := lockVMOp(ctx, req.target, "RemoveAllSnapshots_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	asCaller(ctx, vm, func() {
		task := simulator.CreateTask(vm, "RemoveAllSnapshots", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			inner := req.RemoveAllSnapshots_Task
			inner.This = req.target
			if _, fault := innerTask(ctx, vm.RemoveAllSnapshotsTask(ctx, &inner)); fault != nil {
				return nil, fault
			}
			syncSnapshotRefs(ctx, vm)
			if req.Consolidate != nil && !*req.Consolidate {
				setConsolidationNeeded(ctx, vm, true)
			}
			return nil, nil
		})
		body.Res = &types.RemoveAllSnapshots_TaskResponse{Returnval: task.Run()}
	})
	return body
}

// ConsolidateVMDisksTask (ceso addition: the simulator has none). vSphere API reference:
// consolidates the VM's redo logs; runtime.consolidationNeeded ("Use ConsolidateVMDisks_Task
// to consolidate if needed") is false afterwards. A VM that needs none succeeds too.
func (*snapshotModel) ConsolidateVMDisksTask(ctx *simulator.Context, req *consolidateVMDisksRequest) soap.HasFault {
	body := &methods.ConsolidateVMDisks_TaskBody{}
	vm, unlock, f := lockVMOp(ctx, req.target, "ConsolidateVMDisks_Task")
	if f != nil {
		body.Fault_ = f
		return body
	}
	defer unlock()
	asCaller(ctx, vm, func() {
		task := simulator.CreateTask(vm, "consolidateDisks", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			setConsolidationNeeded(ctx, vm, false)
			return nil, nil
		})
		body.Res = &types.ConsolidateVMDisks_TaskResponse{Returnval: task.Run()}
	})
	return body
}
