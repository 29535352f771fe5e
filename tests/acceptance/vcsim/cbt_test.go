package main

// ceso addition: end-to-end checks of cbt.go over SOAP and the datastore HTTP interface, with
// the simulator in process (as main serves it: the snapshot.go and cbt.go request routing,
// installCBT's handler wrapping).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"sort"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const mib = 1 << 20

type cbtEnv struct {
	t      *testing.T
	ctx    context.Context
	c      *govmomi.Client
	base   *url.URL // http://host:port
	finder *find.Finder
	dc     *object.Datacenter
}

func newCbtEnv(t *testing.T) *cbtEnv {
	t.Helper()
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	s := m.Service.NewServer()
	s.Config.Handler = installCBT(s.Config.Handler)
	t.Cleanup(func() { s.Close(); m.Remove() })
	pb, pe := *cbtPageBytes, *cbtPageExtents
	t.Cleanup(func() { *cbtPageBytes, *cbtPageExtents = pb, pe })
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	f := find.NewFinder(c.Client, true)
	dc, err := f.Datacenter(ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	return &cbtEnv{t: t, ctx: ctx, c: c, base: &url.URL{Scheme: s.URL.Scheme, Host: s.URL.Host}, finder: f, dc: dc}
}

func (e *cbtEnv) wait(task *object.Task, err error) types.AnyType {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := task.WaitForResult(e.ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.Result
}

func (e *cbtEnv) createVM(name string, capacity int64) *object.VirtualMachine {
	e.t.Helper()
	folders, err := e.dc.Folders(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	pool, err := e.finder.ResourcePool(e.ctx, "/DC0/host/DC0_C0/Resources")
	if err != nil {
		e.t.Fatal(err)
	}
	var devices object.VirtualDeviceList
	scsi, _ := devices.CreateSCSIController("pvscsi")
	devices = append(devices, scsi)
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{}, "")
	disk.CapacityInKB = capacity / 1024
	devices = append(devices, disk)
	spec := types.VirtualMachineConfigSpec{
		Name:    name,
		GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
	}
	spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	ref := e.wait(folders.VmFolder.CreateVM(e.ctx, spec, pool, nil)).(types.ManagedObjectReference)
	return object.NewVirtualMachine(e.c.Client, ref)
}

func (e *cbtEnv) vmDisks(vm types.ManagedObjectReference) []*types.VirtualDisk {
	e.t.Helper()
	var o mo.VirtualMachine
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, vm, []string{"config.hardware.device"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return disksOf(o.Config.Hardware.Device)
}

func (e *cbtEnv) snapDisks(snap types.ManagedObjectReference) []*types.VirtualDisk {
	e.t.Helper()
	var o mo.VirtualMachineSnapshot
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, snap, []string{"config.hardware.device"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return disksOf(o.Config.Hardware.Device)
}

func disksOf(devices []types.BaseVirtualDevice) []*types.VirtualDisk {
	var out []*types.VirtualDisk
	for _, d := range devices {
		if disk, ok := d.(*types.VirtualDisk); ok {
			out = append(out, disk)
		}
	}
	return out
}

func backing(d *types.VirtualDisk) *types.VirtualDiskFlatVer2BackingInfo {
	return d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
}

// flatURL is the datastore URL of a disk's flat extent, from its descriptor's datastore path.
func (e *cbtEnv) flatURL(fileName string) string {
	var p object.DatastorePath
	if !p.FromString(fileName) {
		e.t.Fatalf("bad datastore path %q", fileName)
	}
	u := *e.base
	u.Path = "/folder/" + path.Dir(p.Path) + "/" + regexp.MustCompile(`\.vmdk$`).ReplaceAllString(path.Base(p.Path), "-flat.vmdk")
	u.RawQuery = url.Values{"dcPath": {"DC0"}, "dsName": {p.Datastore}}.Encode()
	return u.String()
}

// localPath is where a datastore path lives on the simulator's disk.
func localPath(t *testing.T, fileName string) string {
	var p object.DatastorePath
	if !p.FromString(fileName) {
		t.Fatalf("bad datastore path %q", fileName)
	}
	for _, e := range simulator.Map.All("Datastore") {
		if ds := e.(*simulator.Datastore); ds.Name == p.Datastore {
			return path.Join(ds.Info.GetDatastoreInfo().Url, p.Path)
		}
	}
	t.Fatalf("no datastore %q", p.Datastore)
	return ""
}

func (e *cbtEnv) put(u string, data []byte) int {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(data))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func (e *cbtEnv) get(u string, from, to int64) []byte {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if to > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to-1))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusPartialContent {
		e.t.Fatalf("GET %s: %d", u, res.StatusCode)
	}
	return b
}

func (e *cbtEnv) query(vm types.ManagedObjectReference, snap *types.ManagedObjectReference, key int32, start int64, changeID string) (types.DiskChangeInfo, error) {
	res, err := methods.QueryChangedDiskAreas(e.ctx, e.c.Client, &types.QueryChangedDiskAreas{
		This: vm, Snapshot: snap, DeviceKey: key, StartOffset: start, ChangeId: changeID,
	})
	if err != nil {
		return types.DiskChangeInfo{}, err
	}
	return res.Returnval, nil
}

// queryAll pages through the whole disk as a client must and returns the changed blocks, and
// the number of calls it took; it checks each answer's shape on the way.
func (e *cbtEnv) queryAll(vm types.ManagedObjectReference, snap *types.ManagedObjectReference, key int32, capacity int64, changeID string) ([]int64, int) {
	e.t.Helper()
	set := map[int64]bool{}
	calls := 0
	for start := int64(0); start < capacity; {
		info, err := e.query(vm, snap, key, start, changeID)
		if err != nil {
			e.t.Fatalf("QueryChangedDiskAreas(start=%d, %q): %v", start, changeID, err)
		}
		calls++
		if info.StartOffset != start || info.Length <= 0 || info.Length > *cbtPageBytes || start+info.Length > capacity {
			e.t.Fatalf("answer at %d: startOffset %d length %d", start, info.StartOffset, info.Length)
		}
		if len(info.ChangedArea) > *cbtPageExtents {
			e.t.Fatalf("answer at %d: %d extents, more than %d", start, len(info.ChangedArea), *cbtPageExtents)
		}
		prevEnd := int64(-1)
		for _, x := range info.ChangedArea {
			if x.Start < start || x.Start+x.Length > start+info.Length || x.Length <= 0 || x.Start <= prevEnd {
				e.t.Fatalf("answer at %d (+%d): bad extent %+v", start, info.Length, x)
			}
			if x.Start%cbtBlockSize != 0 || (x.Length%cbtBlockSize != 0 && x.Start+x.Length != capacity) {
				e.t.Fatalf("extent %+v not on 64 KiB blocks", x)
			}
			prevEnd = x.Start + x.Length
			for b := x.Start / cbtBlockSize; b*cbtBlockSize < x.Start+x.Length; b++ {
				set[b] = true
			}
		}
		start += info.Length
	}
	var out []int64
	for b := range set {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, calls
}

func (e *cbtEnv) snapshot(vm *object.VirtualMachine, name string) types.ManagedObjectReference {
	e.t.Helper()
	return e.wait(vm.CreateSnapshot(e.ctx, name, "", false, false)).(types.ManagedObjectReference)
}

func (e *cbtEnv) removeSnapshot(snap types.ManagedObjectReference) {
	e.t.Helper()
	res, err := methods.RemoveSnapshot_Task(e.ctx, e.c.Client, &types.RemoveSnapshot_Task{This: snap, RemoveChildren: false})
	e.wait(object.NewTask(e.c.Client, res.Returnval), err)
}

func (e *cbtEnv) setCBT(vm *object.VirtualMachine, on bool) {
	e.t.Helper()
	e.wait(vm.Reconfigure(e.ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)}))
}

// faultOf names the vim fault of a SOAP error and its invalidProperty, if any.
func faultOf(err error) (string, string) {
	if err == nil || !soap.IsSoapFault(err) {
		return fmt.Sprint(err), ""
	}
	v := reflect.Indirect(reflect.ValueOf(soap.ToSoapFault(err).VimFault()))
	prop := ""
	if f := v.FieldByName("InvalidProperty"); f.IsValid() {
		prop = f.String()
	}
	return v.Type().Name(), prop
}

func nonZero(data []byte) []int64 {
	var out []int64
	for b := int64(0); b*cbtBlockSize < int64(len(data)); b++ {
		end := (b + 1) * cbtBlockSize
		if end > int64(len(data)) {
			end = int64(len(data))
		}
		if !allZero(data[b*cbtBlockSize : end]) {
			out = append(out, b)
		}
	}
	return out
}

func union(a, b []int64) []int64 {
	set := map[int64]bool{}
	for _, x := range append(append([]int64{}, a...), b...) {
		set[x] = true
	}
	var out []int64
	for x := range set {
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func epochOf(changeID string) string {
	epoch, _, _ := parseChangeID(changeID)
	return epoch
}

var changeIDFormat = regexp.MustCompile(`^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/[0-9]+$`)

func TestCbtBackupFlow(t *testing.T) {
	e := newCbtEnv(t)
	*cbtPageBytes, *cbtPageExtents = 4*mib, 32
	const capacity = 16 * mib
	vm := e.createVM("cbtvm", capacity)

	disks := e.vmDisks(vm.Reference())
	if len(disks) != 1 {
		t.Fatalf("%d disks", len(disks))
	}
	disk := disks[0]
	desc := backing(disk).FileName
	if desc != "[LocalDS_0] cbtvm/cbtvm.vmdk" || backing(disk).ChangeId != "" {
		t.Fatalf("new disk: file %q changeId %q", desc, backing(disk).ChangeId)
	}
	flatLocal := localPath(t, "[LocalDS_0] cbtvm/cbtvm-flat.vmdk")
	if st, err := os.Stat(flatLocal); err != nil || st.Size() != capacity {
		t.Fatalf("flat extent: %v %v", st, err)
	}
	if _, err := os.Stat(localPath(t, desc)); err != nil {
		t.Fatalf("descriptor: %v", err)
	}

	// No CBT yet: FileFault on the disk.
	if _, err := e.query(vm.Reference(), nil, disk.Key, 0, "*"); err == nil {
		t.Fatal("query without CBT succeeded")
	} else if name, _ := faultOf(err); name != "FileFault" {
		t.Fatalf("query without CBT: %v", err)
	}

	e.setCBT(vm, true)
	cid0 := backing(e.vmDisks(vm.Reference())[0]).ChangeId
	if !changeIDFormat.MatchString(cid0) || cid0[len(cid0)-2:] != "/0" {
		t.Fatalf("changeId after enabling CBT: %q", cid0)
	}

	// Content: random, with every 7th block and a 20-block run left zero.
	rng := rand.New(rand.NewSource(1))
	data := make([]byte, capacity)
	rng.Read(data)
	for b := int64(0); b < capacity/cbtBlockSize; b++ {
		if b%7 == 3 || (b >= 100 && b < 120) {
			copy(data[b*cbtBlockSize:(b+1)*cbtBlockSize], make([]byte, cbtBlockSize))
		}
	}
	u := e.flatURL(desc)
	if code := e.put(u, data); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	if got := e.get(u, 5*cbtBlockSize+17, 9*cbtBlockSize); !bytes.Equal(got, data[5*cbtBlockSize+17:9*cbtBlockSize]) {
		t.Fatal("ranged GET does not return the PUT content")
	}
	cidPut := backing(e.vmDisks(vm.Reference())[0]).ChangeId
	if cidPut != cid0[:len(cid0)-1]+"1" {
		t.Fatalf("changeId after the PUT: %q (was %q)", cidPut, cid0)
	}

	// Backup 1: snapshot, base extent and changeId from the snapshot's config.
	snap1 := e.snapshot(vm, "backup-1")
	sd := e.snapDisks(snap1)
	if len(sd) != 1 || sd[0].Key != disk.Key || backing(sd[0]).FileName != desc || backing(sd[0]).Parent != nil {
		t.Fatalf("snapshot disk: %+v", sd)
	}
	cid1 := backing(sd[0]).ChangeId
	if cid1 != cidPut {
		t.Fatalf("snapshot changeId %q, want %q", cid1, cidPut)
	}
	if cur := backing(e.vmDisks(vm.Reference())[0]).ChangeId; cur != cid0[:len(cid0)-1]+"2" {
		t.Fatalf("VM changeId after the snapshot: %q", cur)
	}
	all, calls := e.queryAll(vm.Reference(), &snap1, disk.Key, capacity, "*")
	if want := nonZero(data); !reflect.DeepEqual(all, want) {
		t.Fatalf("\"*\": %v\nwant %v", all, want)
	}
	if calls < 4 {
		t.Fatalf("\"*\" took %d calls; a 16 MiB disk in 4 MiB pages needs 4", calls)
	}
	// The extents cap pages too.
	*cbtPageExtents = 3
	all3, calls3 := e.queryAll(vm.Reference(), &snap1, disk.Key, capacity, "*")
	if !reflect.DeepEqual(all3, all) || calls3 <= calls {
		t.Fatalf("with 3 extents a page: %d calls (%d before), same answer %v", calls3, calls, reflect.DeepEqual(all3, all))
	}
	*cbtPageExtents = 32
	if got, _ := e.queryAll(vm.Reference(), &snap1, disk.Key, capacity, cid0); !reflect.DeepEqual(got, nonZero(data)) {
		t.Fatalf("since enabling: %v", got)
	}
	if got, _ := e.queryAll(vm.Reference(), &snap1, disk.Key, capacity, cid1); len(got) != 0 {
		t.Fatalf("since the snapshot's own changeId: %v", got)
	}
	// Unaligned start: extents are clipped to it.
	if info, err := e.query(vm.Reference(), &snap1, disk.Key, 5*cbtBlockSize+100, "*"); err != nil ||
		len(info.ChangedArea) == 0 || info.ChangedArea[0].Start != 5*cbtBlockSize+100 {
		t.Fatalf("unaligned start: %+v %v", info, err)
	}
	e.removeSnapshot(snap1)

	// Backup 2: a few blocks change.
	changedBlocks := []int64{3, 4, 150, 255}
	for _, b := range changedBlocks {
		rng.Read(data[b*cbtBlockSize : (b+1)*cbtBlockSize])
	}
	if code := e.put(u, data); code != http.StatusOK {
		t.Fatalf("PUT 2: %d", code)
	}
	snap2 := e.snapshot(vm, "backup-2")
	cid2 := backing(e.snapDisks(snap2)[0]).ChangeId
	got, _ := e.queryAll(vm.Reference(), &snap2, disk.Key, capacity, cid1)
	if !reflect.DeepEqual(got, changedBlocks) {
		t.Fatalf("since backup 1: %v, want %v", got, changedBlocks)
	}
	info, err := e.query(vm.Reference(), &snap2, disk.Key, 0, cid1)
	if err != nil || len(info.ChangedArea) != 1 || info.ChangedArea[0] != (types.DiskChangeExtent{Start: 3 * cbtBlockSize, Length: 2 * cbtBlockSize}) {
		t.Fatalf("first page since backup 1: %+v %v", info, err)
	}
	if got, _ := e.queryAll(vm.Reference(), &snap2, disk.Key, capacity, cid0); !reflect.DeepEqual(got, union(nonZero(data), changedBlocks)) {
		t.Fatalf("since enabling, at backup 2: %v", got)
	}

	// Faults.
	other, err := e.finder.VirtualMachine(e.ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	otherSnap := e.snapshot(other, "other")
	var controllerKey int32
	for _, d := range e.vmDevices(vm.Reference()) {
		if _, ok := d.(types.BaseVirtualSCSIController); ok {
			controllerKey = d.GetVirtualDevice().Key
		}
	}
	gone := snap1
	for _, c := range []struct {
		name     string
		snap     *types.ManagedObjectReference
		key      int32
		start    int64
		changeID string
		fault    string
		prop     string
	}{
		{"unknown deviceKey", &snap2, 999999, 0, "*", "InvalidArgument", "deviceKey"},
		{"deviceKey of a controller", &snap2, controllerKey, 0, "*", "InvalidArgument", "deviceKey"},
		{"startOffset at the end", &snap2, disk.Key, capacity, "*", "InvalidArgument", "startOffset"},
		{"negative startOffset", &snap2, disk.Key, -1, "*", "InvalidArgument", "startOffset"},
		{"malformed changeId", &snap2, disk.Key, 0, "garbage", "InvalidArgument", "changeId"},
		{"empty changeId", &snap2, disk.Key, 0, "", "InvalidArgument", "changeId"},
		{"changeId of another epoch", &snap2, disk.Key, 0, newEpoch() + "/1", "InvalidArgument", "changeId"},
		{"changeId after the snapshot", &snap2, disk.Key, 0, cid0[:len(cid0)-1] + "99", "InvalidArgument", "changeId"},
		{"removed snapshot", &gone, disk.Key, 0, "*", "ManagedObjectNotFound", ""},
		{"another VM's snapshot", &otherSnap, disk.Key, 0, "*", "NotFound", ""},
	} {
		_, err := e.query(vm.Reference(), c.snap, c.key, c.start, c.changeID)
		if name, prop := faultOf(err); name != c.fault || prop != c.prop {
			t.Errorf("%s: got %s %q (%v), want %s %q", c.name, name, prop, err, c.fault, c.prop)
		}
	}

	// No snapshot: the current state, for a powered-off VM only.
	e.removeSnapshot(snap2)
	if got, _ := e.queryAll(vm.Reference(), nil, disk.Key, capacity, cid2); len(got) != 0 {
		t.Fatalf("current state since backup 2: %v", got)
	}
	e.wait(vm.PowerOn(e.ctx))
	if _, err := e.query(vm.Reference(), nil, disk.Key, 0, cid2); err == nil {
		t.Fatal("query of a powered-on VM without a snapshot succeeded")
	} else if name, _ := faultOf(err); name != "FileFault" {
		t.Fatalf("powered-on, no snapshot: %v", err)
	}
	e.wait(vm.PowerOff(e.ctx))

	// Extending the disk: the new area counts as changed, the epoch stays.
	dev := e.vmDisks(vm.Reference())[0]
	dev.CapacityInKB = 20 * 1024
	dev.CapacityInBytes = 20 * mib
	e.wait(vm.Reconfigure(e.ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: dev},
	}}))
	if st, err := os.Stat(flatLocal); err != nil || st.Size() != 20*mib {
		t.Fatalf("extended flat extent: %v %v", st, err)
	}
	cid3 := backing(e.vmDisks(vm.Reference())[0]).ChangeId
	if epochOf(cid3) != epochOf(cid2) {
		t.Fatalf("extending changed the epoch: %q -> %q", cid2, cid3)
	}
	var grown []int64
	for b := int64(capacity / cbtBlockSize); b < 20*mib/cbtBlockSize; b++ {
		grown = append(grown, b)
	}
	if got, _ := e.queryAll(vm.Reference(), nil, disk.Key, 20*mib, cid2); !reflect.DeepEqual(got, grown) {
		t.Fatalf("after extending: %v", got)
	}

	// A short PUT leaves the rest of the disk zero, and that counts as a change.
	head := data[:2*mib]
	if code := e.put(u, head); code != http.StatusOK {
		t.Fatalf("short PUT: %d", code)
	}
	if st, _ := os.Stat(flatLocal); st.Size() != 20*mib {
		t.Fatalf("short PUT resized the extent to %d", st.Size())
	}
	var tail []int64
	for _, b := range nonZero(data) {
		if b >= 2*mib/cbtBlockSize {
			tail = append(tail, b)
		}
	}
	if got, _ := e.queryAll(vm.Reference(), nil, disk.Key, 20*mib, cid3); !reflect.DeepEqual(got, tail) {
		t.Fatalf("after the short PUT: %v\nwant %v", got, tail)
	}
	if got := e.get(u, 0, 0); len(got) != 20*mib || !bytes.Equal(got[:2*mib], head) || !allZero(got[2*mib:]) {
		t.Fatal("content after the short PUT")
	}
	if code := e.put(u, make([]byte, 20*mib+1)); code != http.StatusBadRequest {
		t.Fatalf("PUT beyond the capacity: %d", code)
	}

	// Disabling CBT clears changeId; enabling it again starts a new epoch.
	e.setCBT(vm, false)
	if id := backing(e.vmDisks(vm.Reference())[0]).ChangeId; id != "" {
		t.Fatalf("changeId with CBT off: %q", id)
	}
	e.setCBT(vm, true)
	cid4 := backing(e.vmDisks(vm.Reference())[0]).ChangeId
	if !changeIDFormat.MatchString(cid4) || epochOf(cid4) == epochOf(cid3) {
		t.Fatalf("changeId after re-enabling: %q (before %q)", cid4, cid3)
	}
	if _, err := e.query(vm.Reference(), nil, disk.Key, 0, cid3); err == nil {
		t.Fatal("old epoch accepted")
	} else if name, prop := faultOf(err); name != "InvalidArgument" || prop != "changeId" {
		t.Fatalf("old epoch: %v", err)
	}

	// A second disk: created with its flat extent, tracked on its own, deleted with it.
	var devices object.VirtualDeviceList = e.vmDevices(vm.Reference())
	scsi, err := devices.FindSCSIController("")
	if err != nil {
		t.Fatal(err)
	}
	disk2 := devices.CreateDisk(scsi, types.ManagedObjectReference{}, "")
	disk2.CapacityInKB = 2 * 1024
	add, _ := object.VirtualDeviceList{disk2}.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	e.wait(vm.Reconfigure(e.ctx, types.VirtualMachineConfigSpec{DeviceChange: add}))
	disks = e.vmDisks(vm.Reference())
	if len(disks) != 2 {
		t.Fatalf("%d disks after adding one", len(disks))
	}
	d2 := disks[1]
	if backing(d2).FileName != "[LocalDS_0] cbtvm/cbtvm_1.vmdk" || !changeIDFormat.MatchString(backing(d2).ChangeId) {
		t.Fatalf("second disk: %q %q", backing(d2).FileName, backing(d2).ChangeId)
	}
	flat2 := localPath(t, "[LocalDS_0] cbtvm/cbtvm_1-flat.vmdk")
	if st, err := os.Stat(flat2); err != nil || st.Size() != 2*mib {
		t.Fatalf("second flat extent: %v %v", st, err)
	}
	rm, _ := object.VirtualDeviceList{d2}.ConfigSpec(types.VirtualDeviceConfigSpecOperationRemove)
	e.wait(vm.Reconfigure(e.ctx, types.VirtualMachineConfigSpec{DeviceChange: rm}))
	for _, f := range []string{flat2, localPath(t, "[LocalDS_0] cbtvm/cbtvm_1.vmdk")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("%s after removing the disk with destroy: %v", f, err)
		}
	}

	// Destroying the VM removes the flat extent with the descriptor.
	e.wait(vm.Destroy(e.ctx))
	for _, f := range []string{flatLocal, localPath(t, desc)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("%s after Destroy_Task: %v", f, err)
		}
	}
}

func (e *cbtEnv) vmDevices(vm types.ManagedObjectReference) []types.BaseVirtualDevice {
	e.t.Helper()
	var o mo.VirtualMachine
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, vm, []string{"config.hardware.device"}, &o); err != nil {
		e.t.Fatal(err)
	}
	return o.Config.Hardware.Device
}

func TestCbtInventoryAndClone(t *testing.T) {
	e := newCbtEnv(t)
	src, err := e.finder.VirtualMachine(e.ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	disks := e.vmDisks(src.Reference())
	desc := backing(disks[0]).FileName
	if desc != "[LocalDS_0] DC0_H0_VM0/disk1.vmdk" {
		t.Fatalf("inventory disk %q", desc)
	}
	if st, err := os.Stat(localPath(t, "[LocalDS_0] DC0_H0_VM0/disk1-flat.vmdk")); err != nil || st.Size() != 1*mib {
		t.Fatalf("inventory flat extent: %v %v", st, err)
	}
	data := make([]byte, mib)
	rand.New(rand.NewSource(2)).Read(data[3*cbtBlockSize : 7*cbtBlockSize])
	if code := e.put(e.flatURL(desc), data); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}

	folders, _ := e.dc.Folders(e.ctx)
	pool, err := e.finder.ResourcePool(e.ctx, "/DC0/host/DC0_H0/Resources")
	if err != nil {
		t.Fatal(err)
	}
	pr := pool.Reference()
	ref := e.wait(src.Clone(e.ctx, folders.VmFolder, "cbtclone", types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Pool: &pr},
	})).(types.ManagedObjectReference)

	if got := backing(e.vmDisks(src.Reference())[0]).FileName; got != desc {
		t.Fatalf("source disk after the clone: %q", got)
	}
	cd := e.vmDisks(ref)
	if len(cd) != 1 || backing(cd[0]).FileName != "[LocalDS_0] cbtclone/cbtclone.vmdk" {
		t.Fatalf("clone disks: %+v", cd)
	}
	if got := e.get(e.flatURL(backing(cd[0]).FileName), 0, 0); !bytes.Equal(got, data) {
		t.Fatal("the clone's flat extent does not hold the source's content")
	}
	// Shared device objects would make this edit show on the source too.
	simulator.Map.WithLock(simulator.Map.Get(ref), func() {
		vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		for _, d := range vm.Config.Hardware.Device {
			for _, s := range simulator.Map.Get(src.Reference()).(*simulator.VirtualMachine).Config.Hardware.Device {
				if d == s {
					if _, ok := d.(*types.VirtualDisk); ok {
						t.Errorf("clone shares disk device %d with the source", d.GetVirtualDevice().Key)
					}
				}
			}
		}
	})
}
