package main

// ceso addition: end-to-end checks of nfc.go over SOAP and HTTP, with the simulator in process
// behind main's handler chain: an OVF import whose streamOptimized disk (made by qemu-img)
// lands byte for byte in the VM's flat extent, refused bodies, abort and time-out removing the
// VM, keep-alive by progress calls and by upload bytes, -datastore-mbps and
// -fault-stall-transfer-after on /nfc uploads, a 4 GiB sparse disk, and the counts. Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Nfc .

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type nfcEnv struct {
	*wireEnv
	pool   *object.ResourcePool
	folder *object.Folder
	ds     *object.Datastore
	dir    string // scratch files
}

// newNfcEnv starts a VPX simulator; set sets flags first (restored after the test).
func newNfcEnv(t *testing.T, set func()) *nfcEnv {
	t.Helper()
	timeout := *nfcLeaseTimeout
	mbps, after, paths := *datastoreMbps, *faultStallAfter, *faultStallPaths
	t.Cleanup(func() {
		*nfcLeaseTimeout = timeout
		*datastoreMbps, *faultStallAfter, *faultStallPaths = mbps, after, paths
	})
	if set != nil {
		set()
	}
	e := &nfcEnv{wireEnv: newWireEnv(t, simulator.VPX()), dir: t.TempDir()}
	f := find.NewFinder(e.c.Client, true)
	dc, err := f.Datacenter(e.ctx, "DC0")
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	if e.pool, err = f.ResourcePool(e.ctx, "/DC0/host/DC0_C0/Resources"); err != nil {
		t.Fatal(err)
	}
	if e.ds, err = f.Datastore(e.ctx, "LocalDS_0"); err != nil {
		t.Fatal(err)
	}
	folders, err := dc.Folders(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.folder = folders.VmFolder
	return e
}

// rawImage writes a sparse raw image of size bytes holding regions (offset -> data).
func (e *nfcEnv) rawImage(name string, size int64, regions map[int64][]byte) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	f, err := os.Create(p)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		e.t.Fatal(err)
	}
	for off, data := range regions {
		if _, err := f.WriteAt(data, off); err != nil {
			e.t.Fatal(err)
		}
	}
	return p
}

// streamVmdkOf converts a raw image with qemu-img (skipping the test without it).
func (e *nfcEnv) streamVmdkOf(raw string) string {
	e.t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		e.t.Skip("qemu-img not installed")
	}
	out := strings.TrimSuffix(raw, ".img") + ".vmdk"
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, out).CombinedOutput(); err != nil {
		e.t.Fatalf("qemu-img: %v: %s", err, b)
	}
	return out
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// ovfDescriptor is a one-disk OVF (SCSI controller, disk of capacity bytes from disk.vmdk).
func ovfDescriptor(name string, capacity, fileSize int64) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="%d"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:capacity="%d" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="%s"><Info>A virtual machine</Info><Name>%s</Name>
    <VirtualHardwareSection><Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:ElementName>1 virtual CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>32MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>32</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>SCSI Controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>`, fileSize, capacity, name, name)
}

// nfcImport is one import: its lease, the lease's info (files matched to the import spec's
// items) and the VM.
type nfcImport struct {
	lease *nfc.Lease
	info  *nfc.LeaseInfo
	vm    types.ManagedObjectReference
}

// importVM runs CreateImportSpec and ImportVApp for a one-disk VM and waits for the lease.
func (e *nfcEnv) importVM(name string, capacity int64, cbt bool) *nfcImport {
	e.t.Helper()
	spec, err := ovf.NewManager(e.c.Client).CreateImportSpec(e.ctx, ovfDescriptor(name, capacity, 0), e.pool, e.ds, types.OvfCreateImportSpecParams{EntityName: name})
	if err != nil {
		e.t.Fatal(err)
	}
	if spec.Error != nil {
		e.t.Fatalf("CreateImportSpec: %v", spec.Error[0].LocalizedMessage)
	}
	if cbt {
		spec.ImportSpec.(*types.VirtualMachineImportSpec).ConfigSpec.ChangeTrackingEnabled = types.NewBool(true)
	}
	lease, err := e.pool.ImportVApp(e.ctx, spec.ImportSpec, e.folder, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := lease.Wait(e.ctx, spec.FileItem)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(info.Items) != 1 {
		e.t.Fatalf("%d lease items for one disk", len(info.Items))
	}
	return &nfcImport{lease: lease, info: info, vm: info.Entity}
}

// post uploads a file to the import's disk URL as govmomi's Lease.Upload does (POST,
// application/x-vnd.vmware-streamVmdk), without progress reports.
func (e *nfcEnv) post(imp *nfcImport, file string) error {
	e.t.Helper()
	f, err := os.Open(file)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	return e.c.Client.Upload(e.ctx, f, imp.info.Items[0].URL, &soap.Upload{Method: "POST", Type: "application/x-vnd.vmware-streamVmdk", ContentLength: st.Size()})
}

// postBody sends body to u and returns the status and the answer's text.
func postBody(t *testing.T, u, ctype string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// lease reads the lease's state, error, info and transferProgress.
func (e *nfcEnv) lease(imp *nfcImport) mo.HttpNfcLease {
	e.t.Helper()
	var l mo.HttpNfcLease
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, imp.lease.Reference(), []string{"state", "error", "info", "transferProgress"}, &l); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// flat is the local path of the VM's disk's flat extent, and the VM's disk.
func (e *nfcEnv) flat(vm types.ManagedObjectReference) (string, *types.VirtualDisk) {
	e.t.Helper()
	var o mo.VirtualMachine
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, vm, []string{"config.hardware.device"}, &o); err != nil {
		e.t.Fatal(err)
	}
	disks := disksOf(o.Config.Hardware.Device)
	if len(disks) != 1 {
		e.t.Fatalf("%d disks", len(disks))
	}
	desc := localPath(e.t, backing(disks[0]).FileName)
	return strings.TrimSuffix(desc, ".vmdk") + "-flat.vmdk", disks[0]
}

// nfcStats reads /vcsim-counts "nfc".
type nfcStatsJSON struct {
	Leases        int   `json:"leases"`
	Progress      int   `json:"progress_calls"`
	Completed     int   `json:"leases_completed"`
	Aborted       int   `json:"leases_aborted"`
	TimedOut      int   `json:"leases_timed_out"`
	Uploads       int   `json:"uploads"`
	UploadsFailed int   `json:"uploads_failed"`
	Received      int64 `json:"bytes_received"`
	Written       int64 `json:"bytes_written"`
	ByLease       map[string]struct {
		State    string `json:"state"`
		Progress int    `json:"progress_calls"`
		Written  int64  `json:"bytes_written"`
	} `json:"by_lease"`
}

func (e *nfcEnv) nfcStats() nfcStatsJSON {
	e.t.Helper()
	var s nfcStatsJSON
	if err := json.Unmarshal(e.counts()["nfc"], &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

// wantFault checks that err is a SOAP fault of the type of want.
func wantFault(t *testing.T, what string, err error, want string) {
	t.Helper()
	if got, _ := faultOf(err); got != want {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// gone checks that the VM and its directory no longer exist.
func (e *nfcEnv) gone(vm types.ManagedObjectReference, flat string) {
	e.t.Helper()
	if simulator.Map.Get(vm) != nil {
		e.t.Fatalf("%s is still registered", vm)
	}
	var o mo.VirtualMachine
	if err := e.c.PropertyCollector().RetrieveOne(e.ctx, vm, []string{"name"}, &o); err == nil {
		e.t.Fatalf("%s can still be read", vm)
	}
	if _, err := os.Stat(path.Dir(flat)); !os.IsNotExist(err) {
		e.t.Fatalf("the VM's directory %s is still there: %v", path.Dir(flat), err)
	}
}

// The whole import, as govc does it (CreateImportSpec, ImportVApp, Lease.Wait, Upload with
// the lease updater, Complete): the VM's flat extent holds the raw image byte for byte, zero
// grains stay holes, and with CBT on the upload is one change listing the written blocks.
func TestNfcImport(t *testing.T) {
	e := newNfcEnv(t, nil)
	const size = 8 << 20
	regions := map[int64][]byte{
		70000:        []byte("hello, disk"),
		3000000:      randomBytes(1, 100000),
		5 << 20:      randomBytes(2, 1<<20),
		size - 4096:  bytes.Repeat([]byte{0xa5}, 4096),
		size/2 + 511: {1},
	}
	raw := e.rawImage("disk.img", size, regions)
	vmdk := e.streamVmdkOf(raw)

	imp := e.importVM("nfc-import", size, true)
	l := e.lease(imp)
	if l.State != types.HttpNfcLeaseStateReady || l.Info.LeaseTimeout != 300 || l.Info.TotalDiskCapacityInKB != size/1024 {
		t.Fatalf("lease: state %s, leaseTimeout %d, totalDiskCapacityInKB %d", l.State, l.Info.LeaseTimeout, l.Info.TotalDiskCapacityInKB)
	}
	flat, disk := e.flat(imp.vm)
	before := backing(disk).ChangeId
	if epochOf(before) == "" {
		t.Fatalf("no changeId on the imported disk (CBT on): %q", before)
	}
	if st, err := os.Stat(flat); err != nil || st.Size() != size {
		t.Fatalf("flat extent before the upload: %v", err)
	}

	item := imp.info.Items[0]
	if !strings.HasPrefix(item.URL.Path, "/nfc/") || item.URL.Host == "*" {
		t.Fatalf("item URL %s", item.URL)
	}
	f, err := os.Open(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	updater := imp.lease.StartUpdater(e.ctx, imp.info)
	err = imp.lease.Upload(e.ctx, item, f, soap.Upload{ContentLength: st.Size()})
	f.Close()
	updater.Done()
	if err != nil {
		t.Fatal(err)
	}
	if err := imp.lease.Progress(e.ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := imp.lease.Complete(e.ctx); err != nil {
		t.Fatal(err)
	}
	l = e.lease(imp)
	if l.State != types.HttpNfcLeaseStateDone || l.Error != nil || l.TransferProgress != 100 {
		t.Fatalf("after Complete: state %s, error %v, transferProgress %d", l.State, l.Error, l.TransferProgress)
	}

	want, _ := os.ReadFile(raw)
	got, err := os.ReadFile(flat)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the flat extent differs from the raw image (%d bytes, %v)", len(got), err)
	}
	fst, _ := os.Stat(flat)
	if used := fst.Sys().(*syscall.Stat_t).Blocks * 512; used > 2<<20 {
		t.Fatalf("the flat extent uses %d bytes for %d blocks of data: zero grains were written", used, len(nonZero(want)))
	}

	// CBT: one step, listing the 64 KiB blocks that hold data.
	_, disk = e.flat(imp.vm)
	after := backing(disk).ChangeId
	if epochOf(after) != epochOf(before) || after == before {
		t.Fatalf("changeId %q -> %q", before, after)
	}
	var blocks []int64
	for start := int64(0); start < size; {
		res, err := methods.QueryChangedDiskAreas(e.ctx, e.c.Client, &types.QueryChangedDiskAreas{This: imp.vm, DeviceKey: disk.Key, StartOffset: start, ChangeId: before})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range res.Returnval.ChangedArea {
			for b := x.Start / cbtBlockSize; b*cbtBlockSize < x.Start+x.Length; b++ {
				blocks = append(blocks, b)
			}
		}
		start += res.Returnval.Length
	}
	if fmt.Sprint(blocks) != fmt.Sprint(nonZero(want)) {
		t.Fatalf("changed blocks %v, want %v", blocks, nonZero(want))
	}

	// The lease is over: Complete again is InvalidState, its URL is gone.
	wantFault(t, "Complete after Complete", imp.lease.Complete(e.ctx), "InvalidState")
	wantFault(t, "Abort after Complete", imp.lease.Abort(e.ctx, nil), "InvalidState")
	if code, _ := postBody(t, item.URL.String(), "application/x-vnd.vmware-streamVmdk", []byte("KDMV")); code != http.StatusNotFound {
		t.Fatalf("upload after Complete: %d", code)
	}
	s := e.nfcStats()
	bl := s.ByLease[imp.lease.Reference().Value]
	if s.Leases != 1 || s.Completed != 1 || s.Uploads != 1 || s.UploadsFailed != 0 || s.Received != st.Size() ||
		s.Written != bl.Written || s.Written < 1<<20 || s.Written > size || bl.State != "done" || s.Progress != bl.Progress || s.Progress < 1 {
		t.Fatalf("counts %+v", s)
	}
}

// Bodies that are not a streamOptimized VMDK are refused (500, hostd's words) before anything
// is written; a stream cut short is refused too; unknown files are 404.
func TestNfcUploadRefused(t *testing.T) {
	e := newNfcEnv(t, nil)
	const size = 2 << 20
	raw := e.rawImage("disk.img", size, map[int64][]byte{0: randomBytes(3, 300000)})
	vmdk := e.streamVmdkOf(raw)
	imp := e.importVM("nfc-refused", size, false)
	flat, _ := e.flat(imp.vm)
	u := imp.info.Items[0].URL.String()

	rawData, _ := os.ReadFile(raw)
	for _, c := range []struct {
		what, ctype string
		body        []byte
		want        string
	}{
		{"garbage", "application/x-vnd.vmware-streamVmdk", randomBytes(4, 5000), "Not a supported disk format (invalid sparse VMDK header)"},
		{"a flat raw image", "application/octet-stream", rawData, "Not a supported disk format (invalid sparse VMDK header)"},
		{"an empty body", "application/x-vnd.vmware-streamVmdk", nil, "Not a supported disk format"},
	} {
		code, msg := postBody(t, u, c.ctype, c.body)
		if code != http.StatusInternalServerError || !strings.Contains(msg, c.want) {
			t.Fatalf("%s: %d %q", c.what, code, msg)
		}
		if b, err := nonZeroBlocks(flat, 0, size); err != nil || len(b) != 0 {
			t.Fatalf("%s: the disk was written: %v %v", c.what, b, err)
		}
	}
	// A monolithicSparse VMDK (sparse, not streamOptimized).
	sparse := filepath.Join(e.dir, "sparse.vmdk")
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, sparse).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, b)
	}
	sparseData, _ := os.ReadFile(sparse)
	if code, msg := postBody(t, u, "application/x-vnd.vmware-streamVmdk", sparseData); code != http.StatusInternalServerError || !strings.Contains(msg, "not streamOptimized") {
		t.Fatalf("monolithicSparse: %d %q", code, msg)
	}
	// A stream cut short: what arrived is written, the answer is 500.
	stream, _ := os.ReadFile(vmdk)
	if code, msg := postBody(t, u, "application/x-vnd.vmware-streamVmdk", stream[:len(stream)/2]); code != http.StatusInternalServerError || !strings.Contains(msg, "ended before its end-of-stream marker") {
		t.Fatalf("half a stream: %d %q", code, msg)
	}
	// Unknown file: 404.
	if code, _ := postBody(t, strings.Replace(u, "disk-0.vmdk", "disk-9.vmdk", 1), "application/x-vnd.vmware-streamVmdk", stream); code != http.StatusNotFound {
		t.Fatalf("unknown file: %d", code)
	}
	// The whole stream, sent as application/octet-stream, replaces what the half wrote.
	if code, msg := postBody(t, u, "application/octet-stream", stream); code != http.StatusOK {
		t.Fatalf("the stream: %d %q", code, msg)
	}
	got, _ := os.ReadFile(flat)
	if !bytes.Equal(got, rawData) {
		t.Fatal("the flat extent differs from the raw image")
	}
	if s := e.nfcStats(); s.Uploads != 6 || s.UploadsFailed != 5 {
		t.Fatalf("counts %+v", s)
	}
}

// A qemu-img stream whose last grain ends the file (no end-of-stream marker: its grain tables
// are in the header area) is accepted; cut just before that grain (the last one its tables
// list), it is refused.
func TestNfcStreamEndsAfterLastGrain(t *testing.T) {
	e := newNfcEnv(t, nil)
	const size = 1 << 20
	raw := e.rawImage("disk.img", size, map[int64][]byte{0: randomBytes(7, size)})
	stream, _ := os.ReadFile(e.streamVmdkOf(raw))
	if allZero(stream[len(stream)-512:]) {
		t.Fatal("the stream ends with zeros (an end-of-stream marker): not the case under test")
	}
	le := binary.LittleEndian
	grains := size / (int(le.Uint64(stream[20:])) * 512)
	gt := int(le.Uint32(stream[le.Uint64(stream[56:])*512:])) * 512
	last := int(le.Uint32(stream[gt+4*(grains-1):])) * 512 // the last grain's marker
	if last < 512 || last >= len(stream) {
		t.Fatalf("last grain at byte %d of %d", last, len(stream))
	}
	imp := e.importVM("nfc-no-eos", size, false)
	flat, _ := e.flat(imp.vm)
	u := imp.info.Items[0].URL.String()
	if code, msg := postBody(t, u, "application/x-vnd.vmware-streamVmdk", stream[:last]); code != http.StatusInternalServerError || !strings.Contains(msg, "ended before its end-of-stream marker") {
		t.Fatalf("the stream without its last grain: %d %q", code, msg)
	}
	if code, msg := postBody(t, u, "application/x-vnd.vmware-streamVmdk", stream); code != http.StatusOK {
		t.Fatalf("the stream: %d %q", code, msg)
	}
	got, _ := os.ReadFile(flat)
	want, _ := os.ReadFile(raw)
	if !bytes.Equal(got, want) {
		t.Fatal("the flat extent differs from the raw image")
	}
}

// HttpNfcLeaseAbort: state error with RequestCanceled (or the client's fault), the VM and its
// files removed, later calls InvalidState.
func TestNfcAbort(t *testing.T) {
	e := newNfcEnv(t, nil)
	const size = 1 << 20
	vmdk := e.streamVmdkOf(e.rawImage("disk.img", size, map[int64][]byte{4096: randomBytes(5, 50000)}))

	imp := e.importVM("nfc-abort", size, false)
	flat, _ := e.flat(imp.vm)
	if err := e.post(imp, vmdk); err != nil {
		t.Fatal(err)
	}
	// The lease is an object of the session that made it: another session does not see it.
	other, err := govmomi.NewClient(e.ctx, e.u, true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Logout(e.ctx) }()
	wantFault(t, "Abort from another session", nfc.NewLease(other.Client, imp.lease.Reference()).Abort(e.ctx, nil), "ManagedObjectNotFound")
	if err := imp.lease.Abort(e.ctx, nil); err != nil {
		t.Fatal(err)
	}
	l := e.lease(imp)
	if l.State != types.HttpNfcLeaseStateError || l.Error == nil {
		t.Fatalf("after Abort: state %s, error %v", l.State, l.Error)
	}
	if _, ok := l.Error.Fault.(*types.RequestCanceled); !ok {
		t.Fatalf("error %T %q", l.Error.Fault, l.Error.LocalizedMessage)
	}
	e.gone(imp.vm, flat)
	wantFault(t, "Abort after Abort", imp.lease.Abort(e.ctx, nil), "InvalidState")
	wantFault(t, "Complete after Abort", imp.lease.Complete(e.ctx), "InvalidState")
	wantFault(t, "Progress after Abort", imp.lease.Progress(e.ctx, 50), "InvalidState")
	if err := e.post(imp, vmdk); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("upload after Abort: %v", err)
	}

	// The client's fault becomes the lease's error.
	imp = e.importVM("nfc-abort-2", size, false)
	flat, _ = e.flat(imp.vm)
	fault := &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: "client gave up"}, LocalizedMessage: "client gave up"}
	if err := imp.lease.Abort(e.ctx, fault); err != nil {
		t.Fatal(err)
	}
	if l := e.lease(imp); l.Error == nil || l.Error.LocalizedMessage != "client gave up" {
		t.Fatalf("error %+v", l.Error)
	}
	e.gone(imp.vm, flat)
	if s := e.nfcStats(); s.Leases != 2 || s.Aborted != 2 || s.Completed != 0 || s.TimedOut != 0 {
		t.Fatalf("counts %+v", s)
	}
}

// A lease with neither progress calls nor upload bytes times out: state error, Timedout, the
// VM removed; one kept alive by HttpNfcLeaseProgress does not.
func TestNfcLeaseTimeout(t *testing.T) {
	e := newNfcEnv(t, func() { *nfcLeaseTimeout = 700 * time.Millisecond })
	idle := e.importVM("nfc-idle", 1<<20, false)
	alive := e.importVM("nfc-alive", 1<<20, false)
	if l := e.lease(idle); l.Info.LeaseTimeout != 1 {
		t.Fatalf("info.leaseTimeout %d, want 1 (700ms rounded up)", l.Info.LeaseTimeout)
	}
	idleFlat, _ := e.flat(idle.vm)
	aliveFlat, _ := e.flat(alive.vm)

	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		if err := alive.lease.Progress(e.ctx, 10); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	l := e.lease(idle)
	if l.State != types.HttpNfcLeaseStateError || l.Error == nil {
		t.Fatalf("idle lease: state %s, error %v", l.State, l.Error)
	}
	if _, ok := l.Error.Fault.(*types.Timedout); !ok || l.Error.LocalizedMessage != "Operation timed out." {
		t.Fatalf("idle lease error %T %q", l.Error.Fault, l.Error.LocalizedMessage)
	}
	e.gone(idle.vm, idleFlat)
	wantFault(t, "Progress after the time-out", idle.lease.Progress(e.ctx, 50), "Timedout")
	wantFault(t, "Complete after the time-out", idle.lease.Complete(e.ctx), "Timedout")
	wantFault(t, "Abort after the time-out", idle.lease.Abort(e.ctx, nil), "Timedout")

	if l := e.lease(alive); l.State != types.HttpNfcLeaseStateReady {
		t.Fatalf("kept-alive lease: %s %v", l.State, l.Error)
	}
	if _, err := os.Stat(aliveFlat); err != nil {
		t.Fatal(err)
	}
	if err := alive.lease.Complete(e.ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(900 * time.Millisecond) // a completed lease never times out
	if l := e.lease(alive); l.State != types.HttpNfcLeaseStateDone {
		t.Fatalf("completed lease: %s", l.State)
	}
	if simulator.Map.Get(alive.vm) == nil {
		t.Fatal("the completed import's VM was removed")
	}
	s := e.nfcStats()
	if s.TimedOut != 1 || s.Completed != 1 || s.Aborted != 0 || s.ByLease[idle.lease.Reference().Value].Progress != 1 ||
		s.ByLease[alive.lease.Reference().Value].Progress < 6 || s.Progress != s.ByLease[alive.lease.Reference().Value].Progress+1 ||
		s.ByLease[idle.lease.Reference().Value].State != "error" {
		t.Fatalf("counts %+v", s)
	}
}

// -datastore-mbps paces an upload, whose bytes keep its lease alive without progress calls;
// -fault-stall-transfer-after stalls one, whose lease then times out.
func TestNfcThrottleAndStall(t *testing.T) {
	e := newNfcEnv(t, func() { *nfcLeaseTimeout = 600 * time.Millisecond; *datastoreMbps = 2 })
	const size = 4 << 20
	vmdk := e.streamVmdkOf(e.rawImage("disk.img", size, map[int64][]byte{1 << 20: randomBytes(6, 2_400_000)}))
	st, _ := os.Stat(vmdk)
	imp := e.importVM("nfc-paced", size, false)
	start := time.Now()
	if err := e.post(imp, vmdk); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(float64(st.Size()) / 2e6 * float64(time.Second))
	if d := time.Since(start); d < want*8/10 || d > want*3/2+500*time.Millisecond {
		t.Fatalf("upload of %d bytes at 2 MB/s took %v", st.Size(), d)
	}
	if err := imp.lease.Complete(e.ctx); err != nil {
		t.Fatalf("Complete after a paced upload longer than the lease timeout: %v", err)
	}

	e = newNfcEnv(t, func() {
		*nfcLeaseTimeout = 600 * time.Millisecond
		*faultStallAfter = 256 << 10
		*faultStallPaths = `^/nfc/`
	})
	imp = e.importVM("nfc-stalled", size, false)
	flat, _ := e.flat(imp.vm)
	ctx, cancel := context.WithTimeout(e.ctx, 1500*time.Millisecond)
	defer cancel()
	f, _ := os.Open(vmdk)
	defer f.Close()
	start = time.Now()
	err := e.c.Client.Upload(ctx, f, imp.info.Items[0].URL, &soap.Upload{Method: "POST", Type: "application/x-vnd.vmware-streamVmdk", ContentLength: st.Size()})
	if err == nil || time.Since(start) < 1400*time.Millisecond {
		t.Fatalf("the stalled upload ended after %v: %v", time.Since(start), err)
	}
	if l := e.lease(imp); l.State != types.HttpNfcLeaseStateError {
		t.Fatalf("stalled upload's lease: %s", l.State)
	}
	e.gone(imp.vm, flat)
	var in struct {
		Stall int `json:"stall"`
	}
	_ = json.Unmarshal(e.counts()["injected"], &in)
	if s := e.nfcStats(); in.Stall != 1 || s.TimedOut != 1 || s.Received != 256<<10 {
		t.Fatalf("stall %d, counts %+v", in.Stall, s)
	}
}

// A 4 GiB disk with a few MiB of data: fast, little memory, the extent stays sparse.
func TestNfcLargeSparseDisk(t *testing.T) {
	e := newNfcEnv(t, nil)
	const size = 4 << 30
	regions := map[int64][]byte{
		0:             randomBytes(7, 1<<20),
		1<<30 + 123:   []byte("one GiB and a bit"),
		2 << 30:       randomBytes(8, 2<<20),
		size - 65536:  bytes.Repeat([]byte{0xee}, 65536),
		3<<30 + 70000: randomBytes(9, 300),
	}
	raw := e.rawImage("big.img", size, regions)
	start := time.Now()
	vmdk := e.streamVmdkOf(raw)
	convert := time.Since(start)

	imp := e.importVM("nfc-big", size, false)
	flat, _ := e.flat(imp.vm)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start = time.Now()
	if err := e.post(imp, vmdk); err != nil {
		t.Fatal(err)
	}
	upload := time.Since(start)
	runtime.ReadMemStats(&after)
	if err := imp.lease.Complete(e.ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(vmdk)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("4 GiB disk: qemu-img %v, stream %d bytes, upload %v, %d bytes allocated", convert, st.Size(), upload, alloc)
	if upload > 5*time.Second || alloc > 64<<20 {
		t.Fatalf("upload took %v and allocated %d bytes", upload, alloc)
	}
	fst, err := os.Stat(flat)
	if err != nil || fst.Size() != size {
		t.Fatalf("flat extent: %v", err)
	}
	if used := fst.Sys().(*syscall.Stat_t).Blocks * 512; used > 8<<20 {
		t.Fatalf("the flat extent uses %d bytes", used)
	}
	wantBlocks, err := nonZeroBlocks(raw, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	gotBlocks, err := nonZeroBlocks(flat, 0, size)
	if err != nil || fmt.Sprint(gotBlocks) != fmt.Sprint(wantBlocks) {
		t.Fatalf("blocks with data %v, want %v (%v)", gotBlocks, wantBlocks, err)
	}
	rf, _ := os.Open(raw)
	defer rf.Close()
	ff, _ := os.Open(flat)
	defer ff.Close()
	a, b := make([]byte, cbtBlockSize), make([]byte, cbtBlockSize)
	for _, x := range wantBlocks {
		_, _ = rf.ReadAt(a, x*cbtBlockSize)
		_, _ = ff.ReadAt(b, x*cbtBlockSize)
		if !bytes.Equal(a, b) {
			t.Fatalf("block %d differs", x)
		}
	}
}

// A file that is not a disk (a CD-ROM's ISO, PUT with "Overwrite: t" as govmomi sends it) is
// written as sent.
func TestNfcImportISO(t *testing.T) {
	e := newNfcEnv(t, nil)
	desc := strings.Replace(ovfDescriptor("nfc-iso", 1<<20, 0),
		`<File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="0"/>`,
		`<File ovf:href="disk.vmdk" ovf:id="file1" ovf:size="0"/><File ovf:href="seed.iso" ovf:id="file2" ovf:size="70000"/>`, 1)
	desc = strings.Replace(desc, `</VirtualHardwareSection>`,
		`<Item><rasd:ElementName>IDE 0</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>CD-ROM 1</rasd:ElementName><rasd:HostResource>ovf:/file/file2</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>5</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
    </VirtualHardwareSection>`, 1)
	spec, err := ovf.NewManager(e.c.Client).CreateImportSpec(e.ctx, desc, e.pool, e.ds, types.OvfCreateImportSpecParams{EntityName: "nfc-iso"})
	if err != nil || spec.Error != nil {
		t.Fatalf("CreateImportSpec: %v %v", err, spec)
	}
	lease, err := e.pool.ImportVApp(e.ctx, spec.ImportSpec, e.folder, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := lease.Wait(e.ctx, spec.FileItem)
	if err != nil {
		t.Fatal(err)
	}
	var iso *nfc.FileItem
	for i := range info.Items {
		if info.Items[i].Path == "seed.iso" {
			iso = &info.Items[i]
		}
	}
	if iso == nil {
		t.Fatalf("no ISO item among %+v", info.Items)
	}
	// vSphere's import spec marks such a file create = true (govmomi then PUTs it with
	// "Overwrite: t"); the simulator's CreateImportSpec does not.
	iso.Create = true
	data := randomBytes(10, 70000)
	if err := lease.Upload(e.ctx, *iso, bytes.NewReader(data), soap.Upload{ContentLength: int64(len(data)), Progress: nopSinker{}}); err != nil {
		t.Fatal(err)
	}
	if err := lease.Complete(e.ctx); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(localPath(t, "[LocalDS_0] nfc-iso/"+path.Base(iso.URL.Path)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the ISO was not written as sent (%d bytes, %v)", len(got), err)
	}
	if s := e.nfcStats(); s.Written != int64(len(data)) {
		t.Fatalf("counts %+v", s)
	}
}

// nopSinker drops progress reports.
type nopSinker struct{}

func (nopSinker) Sink() chan<- progress.Report {
	ch := make(chan progress.Report)
	go func() {
		for range ch {
		}
	}()
	return ch
}
