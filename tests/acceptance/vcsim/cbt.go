package main

// ceso addition: virtual-disk contents and changed block tracking (CBT), modelled after the
// vSphere API reference (VirtualMachineConfigSpec/ConfigInfo.changeTrackingEnabled,
// VirtualDiskFlatVer2BackingInfo.changeId, VirtualMachine.QueryChangedDiskAreas,
// DiskChangeInfo, DiskChangeExtent) and VMware's CBT notes, so that a hot-backup engine can be
// tested against the simulator: enable CBT, give a disk content through the datastore HTTP
// interface, snapshot, read the snapshot's disk backing and changeId, read the base extent with
// ranged GETs, ask QueryChangedDiskAreas what changed, remove the snapshot.
//
// What govmomi 0.24's simulator does, and what is added here:
//
//   - Disk files. Creating a disk (CreateVM_Task / ReconfigVM_Task add with fileOperation
//     create, CloneVM_Task, the model's inventory VMs) makes two EMPTY files in the datastore
//     directory on the local disk: the descriptor <name>.vmdk and the flat extent
//     <name>-flat.vmdk (virtual_disk_manager.go, vdmNames). Deleting the disk (remove with
//     fileOperation destroy, Destroy_Task, DeleteVirtualDisk_Task) deletes both. Added: the
//     flat extent is sized to the disk's capacity (sparse: truncated, never zero-filled), also
//     for the inventory VMs built before installCBT runs, and grows when the disk is extended.
//     Descriptors stay as the simulator leaves them (empty). Names: the inventory VMs have
//     "[LocalDS_0] <vm>/disk1.vmdk" + "disk1-flat.vmdk"; a disk created with no file name is
//     "[ds] <vm>/<vm>.vmdk" (then <vm>_1.vmdk, <vm>_2.vmdk, ...) + "<vm>-flat.vmdk" (...); a
//     clone's disks are "[ds] <clone>/<clone>.vmdk" (...) + flat.
//   - CloneVM_Task. The simulator hands the source VM's own device objects to the clone and
//     blanks their file names on the way, so after a clone the SOURCE VM's disk backing names
//     the clone's file (and both VMs share every device object), and no data is copied. Added:
//     the clone is made from a deep copy of the source's devices (the source is left as it
//     was) and each clone disk's flat extent receives the source disk's content (sparse copy),
//     as a full clone does.
//   - Snapshots. CreateSnapshot_Task creates <vm>-Snapshot<N>.vmsn only; the VM's disk backing
//     does NOT switch to a delta disk (<name>-000001.vmdk with parent set): it keeps naming the
//     base descriptor, and no delta file exists. The snapshot's config is a shallow copy of the
//     VM's, sharing every device object with the VM, so later changes to the VM's devices show
//     through the snapshot. Added: the snapshot's config is deep-copied when the snapshot is
//     registered, so VirtualMachineSnapshot.config.hardware.device keeps the devices as they
//     were: the disk backing's fileName is the base descriptor and its changeId is the one at
//     snapshot time. Writes made to the base flat extent while a snapshot exists are NOT
//     redirected to a delta (test-only escape hatch): the base then no longer holds the
//     snapshot's state, and "*" answers for such a snapshot describe the current file.
//   - Changed block tracking: the simulator stores config.changeTrackingEnabled and nothing
//     else (no changeId, no QueryChangedDiskAreas: MethodNotFound). Added below.
//
// How a backup finds the base extent while a snapshot exists: read the snapshot's
// config.hardware.device (RetrievePropertiesEx on the VirtualMachineSnapshot), take the
// VirtualDisk by key, follow backing.parent to the end of the chain (here there is none:
// backing itself), take backing.fileName "[ds] dir/name.vmdk" and fetch
// /folder/dir/name-flat.vmdk?dcPath=<datacenter>&dsName=<ds> with GET (Range supported). The
// changeId for the next incremental is the snapshot's backing.changeId.
//
// changeId. While config.changeTrackingEnabled is true each VirtualDiskFlatVer2BackingInfo
// carries changeId "<epoch>/<sequence>", the epoch a UUID written as VMware writes them, 16
// lowercase hex bytes in two space-separated groups of eight joined by '-', e.g.
// "52 2d 7b 8f ac 61 51 cc-77 4c 7b ec 91 50 bb 7b/7". Enabling CBT (ReconfigVM_Task, or a disk
// added to a VM that has it) starts a new epoch per disk at sequence 0; disabling it clears
// changeId and forgets the history, so changeIds of the old epoch are rejected afterwards.
// Every PUT that changes blocks of a disk's flat extent bumps the sequence once and records the
// changed blocks under the new number; creating a snapshot records the current changeId in the
// snapshot's config and then bumps the VM's disk to the next number (as a real snapshot moves
// the running disk on). Extending a disk records the area beyond the old size as changed
// (the block holding the old end included) and keeps the epoch. Nothing is tracked while CBT is
// off: "The mechanism cannot report changes made to virtual disk before changed block tracking
// was enabled" (VDDK programming guide). Not modelled: the stun/unstun cycle a powered-on VM
// needs on a real host before a changed changeTrackingEnabled takes effect (here it takes
// effect at once), per-disk ctkEnabled, reverts (content and changeIds stay as they are).
//
// Writes are tracked at the datastore HTTP interface: installCBT wraps the server's handler;
// a PUT of /folder/...-flat.vmdk that names a VM disk's extent is written by this model instead
// of the simulator (which would truncate the file to the body): the body is compared with the
// old content block by block (64 KiB, cbtBlockSize) and only changed blocks are written (zero
// blocks as holes); a body shorter than the capacity leaves the rest of the disk zero (a PUT
// replaces the whole file; the extent stays capacity-sized), a body longer than the capacity
// is refused with 400 Bad Request (nothing written when Content-Length says so up front). PUTs
// of other files, GET/HEAD (with Range) and everything else go to the simulator unchanged.
//
// Granularity: 64 KiB blocks. VMware documents none for the API; observed real answers list
// extents from 64 KiB up (adjacent changed blocks come back as one extent), and 64 KiB is the
// smallest tracking unit seen. Extents here are whole 64 KiB blocks merged when adjacent,
// clipped to the disk's capacity and to the queried window.
//
// QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId). The end of the interval is
// the snapshot's changeId for that disk (its recorded config); with no snapshot the VM's current
// state, which "will only work for virtual machines that are powered off". changeId "*" lists
// the areas of the disk in use, here the 64 KiB blocks of the flat extent that are not all
// zero; any other changeId lists the union of the blocks written after it up to the end point.
// Paging: each answer covers at most -cbt-page-bytes (default 4 MiB) from startOffset and at most
// -cbt-page-extents (default 32) extents; when the window holds more extents, the answer's
// length ends where the first omitted extent starts. Clients continue at startOffset+length
// until the capacity, as the reference tells them to ("repeatedly calling
// queryChangedDiskAreas until a map for the entire virtual disk has been obtained").
//
// Faults. The reference lists FileFault ("if the virtual disk files cannot be
// accessed/queried"), NotFound ("if the snapshot specified does not exist") and InvalidArgument
// ("if deviceKey does not specify a virtual disk, startOffset is beyond the end of the virtual
// disk or changeId is invalid or change tracking is not supported for this particular disk"):
//
//   - CBT not active for the disk at the queried point (changeTrackingEnabled false, or the
//     snapshot was taken before it was enabled, or CBT was reset since): FileFault naming the
//     disk's descriptor ("Error caused by file [ds] dir/name.vmdk"), which is what backup
//     products log from real hosts when CBT is off ("Exception during QueryChangedDiskAreas
//     Error caused by file /vmfs/volumes/.../VM-000003.vmdk");
//   - no snapshot given while the VM is not powered off: FileFault on the same file (the
//     running VM holds the disk; the reference only says it "will only work" powered off, and
//     FileFault is the declared fault for a disk that cannot be queried);
//   - snapshot that does not exist: ManagedObjectNotFound (as for any dangling reference); a
//     snapshot of another VM: NotFound;
//   - deviceKey not a virtual disk of the VM (or of the snapshot's config), or a disk whose
//     backing is not a flat VMDK: InvalidArgument, invalidProperty "deviceKey";
//   - startOffset < 0 or >= the disk's capacity: InvalidArgument "startOffset";
//   - changeId malformed, of another epoch (CBT reset since, or another disk's), or with a
//     sequence later than the end point: InvalidArgument "changeId".
//
// Dispatch: as in snapshot.go, the request types of QueryChangedDiskAreas and CloneVM_Task are
// replaced in the vim25 type registry by types of the same XML shape that keep the _this the
// client sent and route the call to a stateless dispatcher (cbtModel); the state is a
// registry handler (cbtWatcher) that sees every device change, snapshot and removal.
// Lock order: a VM's operation lock (snapshot.go, vmOpLock), then the VM's registry lock, then
// cbtMu; the HTTP handler takes an extent's PUT lock, then cbtMu alone (per 64 KiB block, never
// while reading the request body) and releases it before it locks a VM.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// cbtBlockSize is the tracking granularity: 64 KiB.
const cbtBlockSize = 64 << 10

// ceso addition: QueryChangedDiskAreas paging limits (registered here, parsed by main's
// flag.Parse; tests may set them directly).
var (
	cbtPageBytes   = flag.Int64("cbt-page-bytes", 4<<20, "QueryChangedDiskAreas: most bytes of the disk one answer covers (rounded up to 64 KiB)")
	cbtPageExtents = flag.Int("cbt-page-extents", 32, "QueryChangedDiskAreas: most extents one answer lists")
)

// cbtDisk is the model's state of one virtual disk, keyed by its flat extent's local path.
type cbtDisk struct {
	flat     string                       // absolute local path of <name>-flat.vmdk
	desc     string                       // datastore path of the descriptor, "[ds] dir/name.vmdk"
	vm       types.ManagedObjectReference // the VM whose device list holds the disk
	key      int32                        // its device key there
	capacity int64                        // bytes
	epoch    string                       // "" while CBT is off for the disk
	seq      int64                        // current sequence number in epoch
	history  []cbtChange                  // writes of the current epoch, oldest first
	// ceso addition: put serializes the PUTs of the extent (taken before cbtMu, never while
	// holding it).
	put sync.Mutex
}

// cbtChange is one recorded write: the blocks (sorted indexes) it changed, under seq.
type cbtChange struct {
	seq    int64
	blocks []int64
}

func (d *cbtDisk) changeID() string {
	if d.epoch == "" {
		return ""
	}
	return d.epoch + "/" + strconv.FormatInt(d.seq, 10)
}

// record files changed blocks under a new sequence number (nothing while CBT is off).
func (d *cbtDisk) record(blocks []int64) {
	if d.epoch == "" || len(blocks) == 0 {
		return
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	d.seq++
	d.history = append(d.history, cbtChange{seq: d.seq, blocks: blocks})
}

var (
	cbtMu    sync.Mutex
	cbtDisks = map[string]*cbtDisk{}
)

// ---------------------------------------------------------------------------- install

// ceso addition: installCBT (called from main once the inventory is built and the server
// made) starts the disk model on the current registry: it sizes the flat extents of the
// existing VMs' disks, registers the handler that follows later changes, and returns h wrapped
// by the datastore PUT interception.
func installCBT(h http.Handler) http.Handler {
	cbtMu.Lock()
	cbtDisks = map[string]*cbtDisk{}
	cbtMu.Unlock()
	cbtModelInstance()
	for _, e := range simulator.Map.All("VirtualMachine") {
		if vm, ok := e.(*simulator.VirtualMachine); ok {
			simulator.Map.WithLock(vm, func() { syncVM(&vm.VirtualMachine) })
		}
	}
	simulator.Map.AddHandler(&cbtWatcher{})
	for name, want := range map[string]reflect.Type{
		"QueryChangedDiskAreas": reflect.TypeOf(queryChangedDiskAreasRequest{}),
		"CloneVM_Task":          reflect.TypeOf(cloneVMRequest{}),
	} {
		if got, _ := types.TypeFunc()(name); got != want {
			log.Printf("cbt: %s is decoded as %v, not by cbt.go: another file registered it", name, got)
		}
	}
	return &cbtHTTP{next: h}
}

func init() {
	types.Add("QueryChangedDiskAreas", reflect.TypeOf(queryChangedDiskAreasRequest{}))
	types.Add("CloneVM_Task", reflect.TypeOf(cloneVMRequest{}))
}

// ---------------------------------------------------------------------------- dispatch

var cbtModelRef = types.ManagedObjectReference{Type: "CesoCbtModel", Value: "ceso-cbt-model"}

// cbtModel receives the routed methods; stateless, and a no-op sync.Locker so that the
// simulator does not lock it (each method locks its VM).
type cbtModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*cbtModel) Reference() types.ManagedObjectReference { return cbtModelRef }
func (*cbtModel) Lock()                                   {}
func (*cbtModel) Unlock()                                 {}

var cbtModelMu sync.Mutex

// cbtModelInstance registers the dispatcher in the current registry if it is not there (a
// model's Create replaces the registry, so this is checked on every routed request).
func cbtModelInstance() {
	cbtModelMu.Lock()
	defer cbtModelMu.Unlock()
	if simulator.Map.Get(cbtModelRef) == nil {
		simulator.Map.Put(&cbtModel{})
	}
}

func cbtRoute(this *types.ManagedObjectReference) types.ManagedObjectReference {
	cbtModelInstance()
	target := *this
	*this = cbtModelRef
	return target
}

type queryChangedDiskAreasRequest struct {
	types.QueryChangedDiskAreas
	target types.ManagedObjectReference
}

func (r *queryChangedDiskAreasRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain queryChangedDiskAreasRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = cbtRoute(&r.This)
	return nil
}

type cloneVMRequest struct {
	types.CloneVM_Task
	target types.ManagedObjectReference
}

func (r *cloneVMRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain cloneVMRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = cbtRoute(&r.This)
	return nil
}

func cbtLookupVM(ctx *simulator.Context, ref types.ManagedObjectReference, method string) (*simulator.VirtualMachine, *soap.Fault) {
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

// ---------------------------------------------------------------------------- registry handler

// cbtWatcher follows the registry: device changes of VMs (disks added, removed, extended;
// changeTrackingEnabled applied), new snapshots (config frozen, changeId recorded), removed VMs.
// The simulator calls it with the changed VM locked by the caller, so it never locks the VM.
type cbtWatcher struct{}

func (*cbtWatcher) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "CesoCbtWatcher", Value: "ceso-cbt-watcher"}
}

func (*cbtWatcher) PutObject(o mo.Reference) {
	snap, ok := o.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	// The simulator filled snap.Config with a shallow copy of the VM's config just before
	// registering it; the VM is locked by the snapshot's creator.
	snap.Config = deepCopyValue(reflect.ValueOf(snap.Config)).Interface().(types.VirtualMachineConfigInfo)
	vm, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok || vm.Config == nil {
		return
	}
	syncVM(&vm.VirtualMachine)
	bumped := false
	cbtMu.Lock()
	for _, dev := range snap.Config.Hardware.Device {
		disk, b := flatDisk(dev)
		if disk == nil {
			continue
		}
		d := cbtDisks[flatOf(&vm.VirtualMachine, b)]
		if d == nil || d.epoch == "" {
			b.ChangeId = ""
			continue
		}
		b.ChangeId = d.changeID()
		d.seq++ // the running disk moves on past the snapshot's point
		bumped = true
	}
	cbtMu.Unlock()
	if bumped && syncVM(&vm.VirtualMachine) {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	}
}

func (*cbtWatcher) UpdateObject(o mo.Reference, changes []types.PropertyChange) {
	var vm *mo.VirtualMachine
	switch x := o.(type) {
	case *mo.VirtualMachine:
		vm = x
	case *simulator.VirtualMachine:
		vm = &x.VirtualMachine
	default:
		return
	}
	for _, c := range changes {
		if c.Name == "config.hardware.device" || c.Name == "config.changeTrackingEnabled" || c.Name == "config" {
			// Unregistered VMs (Destroy_Task removes the devices after unregistering) only
			// drop their state.
			if simulator.Map.Get(vm.Self) == nil {
				dropVM(vm.Self)
				return
			}
			syncVM(vm) // values are published by the caller's own update
			return
		}
	}
}

func (*cbtWatcher) RemoveObject(ref types.ManagedObjectReference) {
	if ref.Type == "VirtualMachine" {
		dropVM(ref)
	}
}

func dropVM(ref types.ManagedObjectReference) {
	cbtMu.Lock()
	defer cbtMu.Unlock()
	for k, d := range cbtDisks {
		if d.vm == ref {
			delete(cbtDisks, k)
		}
	}
}

// flatDisk returns dev as a VirtualDisk with its flat VMDK backing, or nils.
func flatDisk(dev types.BaseVirtualDevice) (*types.VirtualDisk, *types.VirtualDiskFlatVer2BackingInfo) {
	disk, ok := dev.(*types.VirtualDisk)
	if !ok {
		return nil, nil
	}
	b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return nil, nil
	}
	return disk, b
}

// diskCapacity is the capacity in bytes; a client may have updated only one of the two
// fields when extending, so the larger one counts (disks never shrink).
func diskCapacity(disk *types.VirtualDisk) int64 {
	c := disk.CapacityInKB * 1024
	if disk.CapacityInBytes > c {
		c = disk.CapacityInBytes
	}
	return c
}

// flatOf returns the local path of the flat extent of a disk backing, resolved as the
// simulator resolves it (the backing's datastore, else the VM host's datastore of that name;
// the first ".vmdk" of the path replaced by "-flat.vmdk", as vdmNames does), or "".
func flatOf(vm *mo.VirtualMachine, b *types.VirtualDiskFlatVer2BackingInfo) string {
	var p object.DatastorePath
	if !p.FromString(b.FileName) || p.Path == "" {
		return ""
	}
	var ds *simulator.Datastore
	if b.Datastore != nil {
		if x, ok := simulator.Map.Get(*b.Datastore).(*simulator.Datastore); ok && x.Name == p.Datastore {
			ds = x
		}
	}
	if ds == nil && vm.Runtime.Host != nil {
		if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
			for _, ref := range h.Datastore {
				if x, ok := simulator.Map.Get(ref).(*simulator.Datastore); ok && x.Name == p.Datastore {
					ds = x
				}
			}
		}
	}
	if ds == nil {
		return ""
	}
	file := path.Join(ds.Info.GetDatastoreInfo().Url, p.Path)
	return strings.Replace(file, ".vmdk", "-flat.vmdk", 1)
}

// syncVM brings the model in line with a VM's devices: state for each flat disk (its extent
// sized to the capacity, grown and recorded as changed when extended), a new epoch when CBT is
// on and the disk has none, none when it is off, and each backing's changeId set from the
// state. State of disks the VM no longer has is dropped. It reports whether a changeId
// changed. The caller holds the VM's lock (or the VM is not yet visible), not cbtMu.
func syncVM(vm *mo.VirtualMachine) bool {
	if vm.Config == nil {
		return false
	}
	on := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	changed := false
	seen := map[string]bool{}
	cbtMu.Lock()
	defer cbtMu.Unlock()
	for _, dev := range vm.Config.Hardware.Device {
		disk, b := flatDisk(dev)
		if disk == nil {
			continue
		}
		flat := flatOf(vm, b)
		if flat == "" {
			continue
		}
		seen[flat] = true
		capacity := diskCapacity(disk)
		d := cbtDisks[flat]
		if d == nil {
			d = &cbtDisk{flat: flat, capacity: capacity}
			cbtDisks[flat] = d
			growFlat(flat, capacity)
		}
		d.vm, d.key, d.desc = vm.Self, disk.Key, b.FileName
		if capacity > d.capacity {
			growFlat(flat, capacity)
			var blocks []int64
			for i := d.capacity / cbtBlockSize; i*cbtBlockSize < capacity; i++ {
				blocks = append(blocks, i)
			}
			d.record(blocks)
		}
		d.capacity = capacity
		switch {
		case on && d.epoch == "":
			d.epoch, d.seq, d.history = newEpoch(), 0, nil
		case !on && d.epoch != "":
			d.epoch, d.seq, d.history = "", 0, nil
		}
		if id := d.changeID(); b.ChangeId != id {
			b.ChangeId = id
			changed = true
		}
	}
	for k, d := range cbtDisks {
		if d.vm == vm.Self && !seen[k] {
			delete(cbtDisks, k)
		}
	}
	return changed
}

// growFlat extends a flat extent to size without writing (a sparse tail). A missing file is
// left missing (the simulator creates the files; attaching a disk without them fails there).
func growFlat(flat string, size int64) {
	st, err := os.Stat(flat)
	if err != nil || st.Size() >= size {
		return
	}
	if err := os.Truncate(flat, size); err != nil {
		log.Printf("cbt: extend %s: %v", flat, err)
	}
}

// publishVM sets the VM's disk changeIds from the model and publishes the device list when
// one changed, so that property collector waiters hear of it. The caller holds no lock.
func publishVM(ref types.ManagedObjectReference) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if syncVM(&vm.VirtualMachine) {
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
		}
	})
}

// ---------------------------------------------------------------------------- changeId

var changeIDPattern = regexp.MustCompile(`^((?:[0-9a-f]{2} ){7}[0-9a-f]{2}-(?:[0-9a-f]{2} ){7}[0-9a-f]{2})/([0-9]{1,18})$`)

func newEpoch() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[0] = 0x52
	hex := make([]string, 16)
	for i, x := range b {
		hex[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(hex[:8], " ") + "-" + strings.Join(hex[8:], " ")
}

func parseChangeID(id string) (epoch string, seq int64, ok bool) {
	m := changeIDPattern.FindStringSubmatch(id)
	if m == nil {
		return "", 0, false
	}
	seq, err := strconv.ParseInt(m[2], 10, 64)
	return m[1], seq, err == nil
}

// ---------------------------------------------------------------------------- QueryChangedDiskAreas

func fileFault(file string) *soap.Fault {
	return simulator.Fault("Error caused by file "+file, &types.FileFault{File: file})
}

func invalidArgument(prop string) *soap.Fault {
	return simulator.Fault("A specified parameter was not correct: "+prop, &types.InvalidArgument{InvalidProperty: prop})
}

// QueryChangedDiskAreas (ceso addition: the simulator has none); see the file comment for the
// semantics, paging and faults.
func (*cbtModel) QueryChangedDiskAreas(ctx *simulator.Context, req *queryChangedDiskAreasRequest) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	vm, f := cbtLookupVM(ctx, req.target, "QueryChangedDiskAreas")
	if f != nil {
		body.Fault_ = f
		return body
	}
	ctx.Map.WithLock(vm, func() {
		if syncVM(&vm.VirtualMachine) {
			ctx.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
		}
		info, f := queryChangedDiskAreas(ctx, vm, req)
		if f != nil {
			body.Fault_ = f
			return
		}
		body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	})
	return body
}

func queryChangedDiskAreas(ctx *simulator.Context, vm *simulator.VirtualMachine, req *queryChangedDiskAreasRequest) (types.DiskChangeInfo, *soap.Fault) {
	var none types.DiskChangeInfo
	devices := vm.Config.Hardware.Device
	if req.Snapshot != nil {
		obj := ctx.Map.Get(*req.Snapshot)
		if obj == nil {
			return none, simulator.Fault(fmt.Sprintf("managed object not found: %s", *req.Snapshot), &types.ManagedObjectNotFound{Obj: *req.Snapshot})
		}
		snap, ok := obj.(*simulator.VirtualMachineSnapshot)
		if !ok || snap.Vm != vm.Self {
			return none, simulator.Fault("The object or item referred to could not be found.", &types.NotFound{})
		}
		devices = snap.Config.Hardware.Device
	}
	var disk *types.VirtualDisk
	var b *types.VirtualDiskFlatVer2BackingInfo
	for _, dev := range devices {
		if dev.GetVirtualDevice().Key == req.DeviceKey {
			disk, b = flatDisk(dev)
			if disk == nil {
				return none, invalidArgument("deviceKey")
			}
		}
	}
	if disk == nil {
		return none, invalidArgument("deviceKey")
	}
	if req.Snapshot == nil && vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		return none, fileFault(b.FileName)
	}
	endEpoch, endSeq, ok := parseChangeID(b.ChangeId)
	if !ok {
		return none, fileFault(b.FileName) // CBT not active for the disk at that point
	}
	cbtMu.Lock()
	defer cbtMu.Unlock()
	d := cbtDisks[flatOf(&vm.VirtualMachine, b)]
	if d == nil || d.epoch != endEpoch {
		return none, fileFault(b.FileName) // its tracking data is gone (CBT reset since)
	}
	capacity := diskCapacity(disk)
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		return none, invalidArgument("startOffset")
	}
	page := *cbtPageBytes
	if page < cbtBlockSize {
		page = cbtBlockSize
	}
	page = (page + cbtBlockSize - 1) / cbtBlockSize * cbtBlockSize
	end := capacity
	if req.StartOffset+page < end {
		end = req.StartOffset + page
	}
	first, last := req.StartOffset/cbtBlockSize, (end-1)/cbtBlockSize
	var blocks []int64
	if req.ChangeId == "*" {
		var err error
		if blocks, err = nonZeroBlocks(d.flat, first*cbtBlockSize, end); err != nil {
			return none, fileFault(b.FileName)
		}
	} else {
		epoch, seq, ok := parseChangeID(req.ChangeId)
		if !ok || epoch != endEpoch || seq > endSeq {
			return none, invalidArgument("changeId")
		}
		set := map[int64]bool{}
		for _, c := range d.history {
			if c.seq <= seq || c.seq > endSeq {
				continue
			}
			i := sort.Search(len(c.blocks), func(i int) bool { return c.blocks[i] >= first })
			for ; i < len(c.blocks) && c.blocks[i] <= last; i++ {
				set[c.blocks[i]] = true
			}
		}
		for x := range set {
			blocks = append(blocks, x)
		}
		sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	}
	var extents []types.DiskChangeExtent
	for _, x := range blocks {
		s, e := x*cbtBlockSize, (x+1)*cbtBlockSize
		if s < req.StartOffset {
			s = req.StartOffset
		}
		if e > end {
			e = end
		}
		if n := len(extents); n > 0 && extents[n-1].Start+extents[n-1].Length == s {
			extents[n-1].Length += e - s
			continue
		}
		extents = append(extents, types.DiskChangeExtent{Start: s, Length: e - s})
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset}
	max := *cbtPageExtents
	if max < 1 {
		max = 1
	}
	if len(extents) > max {
		info.Length = extents[max].Start - req.StartOffset
		extents = extents[:max]
	}
	info.ChangedArea = extents
	return info, nil
}

// ---------------------------------------------------------------------------- block I/O

const (
	seekData = 3 // SEEK_DATA (Linux)
	seekHole = 4 // SEEK_HOLE
)

// nonZeroBlocks lists the 64 KiB blocks of the file that overlap [from, to) and hold a
// non-zero byte, skipping holes where the file system reports them.
func nonZeroBlocks(name string, from, to int64) ([]int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if to > size {
		to = size
	}
	buf := make([]byte, cbtBlockSize)
	var out []int64
	next := from / cbtBlockSize // first block not yet looked at
	for next*cbtBlockSize < to {
		data, hole := next*cbtBlockSize, to
		if d, err := f.Seek(data, seekData); err == nil {
			if d >= to {
				break
			}
			data = d
			if h, err := f.Seek(d, seekHole); err == nil {
				hole = h
			}
		} else if errors.Is(err, syscall.ENXIO) {
			break // no data after here
		}
		for x := data / cbtBlockSize; x*cbtBlockSize < hole && x*cbtBlockSize < to; x++ {
			n, err := f.ReadAt(buf, x*cbtBlockSize)
			if err != nil && err != io.EOF {
				return nil, err
			}
			if !allZero(buf[:n]) {
				out = append(out, x)
			}
			next = x + 1
		}
		if next*cbtBlockSize < hole {
			next = (hole + cbtBlockSize - 1) / cbtBlockSize
		}
	}
	return out, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// writeBlock writes b at off, as a hole when it is all zero and the file system can punch one.
func writeBlock(f *os.File, b []byte, off int64) error {
	if allZero(b) {
		const punchHole = 0x02 | 0x01 // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
		if syscall.Fallocate(int(f.Fd()), punchHole, off, int64(len(b))) == nil {
			return nil
		}
	}
	_, err := f.WriteAt(b, off)
	return err
}

// readBlock fills b from off, zeros past the end of the file.
func readBlock(f *os.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	for i := n; i < len(b); i++ {
		b[i] = 0
	}
	if err == io.EOF {
		return nil
	}
	return err
}

// copySparse copies src's content over the start of dst, block by block, skipping zero blocks
// (dst is a freshly created, sparse extent).
func copySparse(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	blocks, err := nonZeroBlocks(src, 0, st.Size())
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, cbtBlockSize)
	for _, x := range blocks {
		n, err := in.ReadAt(buf, x*cbtBlockSize)
		if err != nil && err != io.EOF {
			return err
		}
		if _, err := out.WriteAt(buf[:n], x*cbtBlockSize); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------- datastore PUT

// cbtHTTP intercepts PUTs of VM disks' flat extents (see the file comment).
type cbtHTTP struct{ next http.Handler }

func (h *cbtHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/folder/") && strings.HasSuffix(r.URL.Path, "-flat.vmdk") {
		if flat := folderFile(r); flat != "" && putFlat(w, r, flat) {
			return
		}
	}
	h.next.ServeHTTP(w, r)
}

// folderFile resolves a /folder/<path>?dcPath=&dsName= request to a local path, as the
// simulator's ServeDatastore does (datacenter by inventory path, datastore by name; either may
// be left out when there is only one), or "" when it cannot tell.
func folderFile(r *http.Request) string {
	q := r.URL.Query()
	dcPath := strings.Trim(q.Get("dcPath"), "/")
	var dss []*simulator.Datastore
	for _, e := range simulator.Map.All("Datacenter") {
		dc, ok := e.(*simulator.Datacenter)
		if !ok || (dcPath != "" && inventoryPath(dc) != dcPath && dc.Name != dcPath) {
			continue
		}
		for _, ref := range dc.Datastore {
			ds, ok := simulator.Map.Get(ref).(*simulator.Datastore)
			if ok && (q.Get("dsName") == "" || ds.Name == q.Get("dsName")) {
				dss = append(dss, ds)
			}
		}
	}
	if len(dss) != 1 {
		return ""
	}
	root := path.Clean(dss[0].Info.GetDatastoreInfo().Url)
	p := path.Join(root, strings.TrimPrefix(r.URL.Path, "/folder/"))
	if !strings.HasPrefix(p, root+"/") {
		return ""
	}
	return p
}

// inventoryPath is a datacenter's path below the root folder ("DC0", "F0/DC1").
func inventoryPath(dc *simulator.Datacenter) string {
	parts := []string{dc.Name}
	for p := dc.Parent; p != nil; {
		e, ok := simulator.Map.Get(*p).(mo.Entity)
		if !ok || e.Entity().Parent == nil { // the root folder
			break
		}
		parts = append([]string{e.Entity().Name}, parts...)
		p = e.Entity().Parent
	}
	return strings.Join(parts, "/")
}

// putFlat writes a PUT body into a tracked flat extent and records the changed blocks; it
// returns false (nothing done) when the file is not a known disk's extent. ceso addition
// (transfer.go): the body is read from the network without cbtMu held, so a slow, throttled
// (-datastore-mbps) or stalled upload never holds up the registry handlers that take cbtMu;
// each 64 KiB block is compared and written under cbtMu, and the PUTs of one extent still run
// one at a time (cbtDisk.put).
func putFlat(w http.ResponseWriter, r *http.Request, flat string) bool {
	cbtMu.Lock()
	d := cbtDisks[flat]
	if d == nil || d.capacity <= 0 {
		cbtMu.Unlock()
		return false
	}
	cbtMu.Unlock()
	d.put.Lock()
	status, msg, changed := writeFlat(d, r)
	d.put.Unlock()
	cbtMu.Lock()
	owner := d.vm
	cbtMu.Unlock()
	if changed {
		publishVM(owner)
	}
	if msg != "" {
		http.Error(w, msg, status)
		return true
	}
	w.WriteHeader(status)
	return true
}

// writeFlat does putFlat's work: the body replaces the extent's content up to the capacity (a
// short body leaves the rest zero), changed 64 KiB blocks are written and recorded. It reports
// the HTTP status, an error message, and whether a changeId moved. It takes cbtMu for each
// block and for the end, never while reading the body.
func writeFlat(d *cbtDisk, r *http.Request) (int, string, bool) {
	cbtMu.Lock()
	capacity, flat := d.capacity, d.flat
	cbtMu.Unlock()
	if r.ContentLength > capacity {
		return http.StatusBadRequest, fmt.Sprintf("%d bytes exceed the disk's capacity of %d bytes", r.ContentLength, capacity), false
	}
	f, err := os.OpenFile(flat, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return http.StatusInternalServerError, err.Error(), false
	}
	defer f.Close()
	var changed []int64
	record := func() bool {
		cbtMu.Lock()
		defer cbtMu.Unlock()
		return d.recordNow(&changed)
	}
	st, err := f.Stat()
	if err != nil {
		return http.StatusInternalServerError, err.Error(), false
	}
	oldSize := st.Size()
	newBuf, oldBuf := make([]byte, cbtBlockSize), make([]byte, cbtBlockSize)
	var off int64
	ended := false
	for off < capacity && !ended {
		n := int64(cbtBlockSize)
		if capacity-off < n {
			n = capacity - off
		}
		got, err := io.ReadFull(r.Body, newBuf[:n])
		switch {
		case err == io.EOF:
			ended = true
			continue
		case err == io.ErrUnexpectedEOF:
			ended = true
		case err != nil:
			return http.StatusBadRequest, "reading the request body: " + err.Error(), record()
		}
		for i := got; int64(i) < n; i++ {
			newBuf[i] = 0
		}
		cbtMu.Lock()
		err = readBlock(f, oldBuf[:n], off)
		if err == nil && !bytes.Equal(newBuf[:n], oldBuf[:n]) {
			if err = writeBlock(f, newBuf[:n], off); err == nil {
				changed = append(changed, off/cbtBlockSize)
			}
		}
		cbtMu.Unlock()
		if err != nil {
			return http.StatusInternalServerError, err.Error(), record()
		}
		off += n
	}
	if off >= capacity {
		if n, _ := r.Body.Read(newBuf[:1]); n > 0 {
			return http.StatusBadRequest, fmt.Sprintf("the body exceeds the disk's capacity of %d bytes (the first %d bytes were written)", capacity, capacity), record()
		}
	}
	cbtMu.Lock()
	defer cbtMu.Unlock()
	if off < capacity && off < oldSize {
		// The body ended early: what follows reads as zeros from now on.
		blocks, err := nonZeroBlocks(flat, off, oldSize)
		if err != nil {
			return http.StatusInternalServerError, err.Error(), d.recordNow(&changed)
		}
		changed = append(changed, blocks...)
		if err := f.Truncate(off); err != nil {
			return http.StatusInternalServerError, err.Error(), d.recordNow(&changed)
		}
	}
	if err := f.Truncate(capacity); err != nil {
		return http.StatusInternalServerError, err.Error(), d.recordNow(&changed)
	}
	return http.StatusOK, "", d.recordNow(&changed)
}

// recordNow records *blocks (clearing it) and reports whether the changeId moved.
func (d *cbtDisk) recordNow(blocks *[]int64) bool {
	before := d.seq
	d.record(*blocks)
	*blocks = nil
	return d.seq != before
}

// ---------------------------------------------------------------------------- CloneVM_Task

// CloneVMTask (ceso addition: wraps the simulator's CloneVM_Task; see the file comment): the
// source's devices are swapped for a deep copy while the simulator clones (so its edits land
// on the copy, which becomes the clone's), then restored; each clone disk then gets the
// content of the source disk with the same key. Runs under the VM's operation lock
// (snapshot.go), as vCenter queues a VM's tasks.
func (*cbtModel) CloneVMTask(ctx *simulator.Context, req *cloneVMRequest) soap.HasFault {
	vm, f := cbtLookupVM(ctx, req.target, "CloneVM_Task")
	if f != nil {
		return &methods.CloneVM_TaskBody{Fault_: f}
	}
	mu := vmOpLock(req.target)
	mu.Lock()
	defer mu.Unlock()
	inner := req.CloneVM_Task
	inner.This = req.target
	var res soap.HasFault
	ref := vm.Reference()
	ctx.Map.WithLock(vm, func() {
		prev := ctx.Caller
		ctx.Caller = &ref
		defer func() { ctx.Caller = prev }()
		orig := vm.Config.Hardware.Device
		vm.Config.Hardware.Device = deepCopyValue(reflect.ValueOf(orig)).Interface().([]types.BaseVirtualDevice)
		res = vm.CloneVMTask(ctx, &inner)
		vm.Config.Hardware.Device = orig
		body, ok := res.(*methods.CloneVM_TaskBody)
		if !ok || body.Res == nil {
			return
		}
		task, ok := ctx.Map.Get(body.Res.Returnval).(*simulator.Task)
		if !ok || task.Info.Error != nil {
			return
		}
		cloneRef, ok := task.Info.Result.(types.ManagedObjectReference)
		if !ok {
			return
		}
		if clone, ok := ctx.Map.Get(cloneRef).(*simulator.VirtualMachine); ok {
			copyDisks(&vm.VirtualMachine, orig, &clone.VirtualMachine)
		}
	})
	return res
}

// copyDisks gives each flat disk of clone the content of the source disk with the same key.
func copyDisks(src *mo.VirtualMachine, srcDevices []types.BaseVirtualDevice, clone *mo.VirtualMachine) {
	cbtMu.Lock()
	defer cbtMu.Unlock()
	for _, sd := range srcDevices {
		disk, sb := flatDisk(sd)
		if disk == nil {
			continue
		}
		for _, cd := range clone.Config.Hardware.Device {
			if cd.GetVirtualDevice().Key != disk.Key {
				continue
			}
			if _, cb := flatDisk(cd); cb != nil {
				from, to := flatOf(src, sb), flatOf(clone, cb)
				if from != "" && to != "" && from != to {
					if err := copySparse(from, to); err != nil {
						log.Printf("cbt: clone %s -> %s: %v", from, to, err)
					}
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------- deep copy

// deepCopyValue copies v and everything it points to (pointers, interfaces, slices, maps,
// structs; unexported fields are copied shallowly).
func deepCopyValue(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Ptr:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Elem().Type())
		n.Elem().Set(deepCopyValue(v.Elem()))
		return n
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		n := reflect.New(v.Type()).Elem()
		n.Set(deepCopyValue(v.Elem()))
		return n
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(deepCopyValue(v.Index(i)))
		}
		return n
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		n := reflect.MakeMapWithSize(v.Type(), v.Len())
		it := v.MapRange()
		for it.Next() {
			n.SetMapIndex(it.Key(), deepCopyValue(it.Value()))
		}
		return n
	case reflect.Struct:
		n := reflect.New(v.Type()).Elem()
		n.Set(v)
		for i := 0; i < v.NumField(); i++ {
			if n.Field(i).CanSet() {
				n.Field(i).Set(deepCopyValue(v.Field(i)))
			}
		}
		return n
	case reflect.Array:
		n := reflect.New(v.Type()).Elem()
		for i := 0; i < v.Len(); i++ {
			n.Index(i).Set(deepCopyValue(v.Index(i)))
		}
		return n
	default:
		return v
	}
}
