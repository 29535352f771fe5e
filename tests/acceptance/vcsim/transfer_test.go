package main

// ceso addition: tests of the datastore transfer flags (transfer.go): multi-GiB sparse disks,
// the bandwidth limit (also on cbt.go's PUT path, which must not stall the simulator), and
// stalled GETs and PUTs. Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Transfer .

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// withTransferFlags sets the transfer flags for one test.
func withTransferFlags(t *testing.T, set func()) {
	t.Helper()
	mbps, after, paths, gb := *datastoreMbps, *faultStallAfter, *faultStallPaths, *inventoryDiskGiB
	t.Cleanup(func() { *datastoreMbps, *faultStallAfter, *faultStallPaths, *inventoryDiskGiB = mbps, after, paths, gb })
	set()
}

// transferEnv is a VPX simulator with -disk-gb applied, and the first inventory VM's disk.
type transferEnv struct {
	*wireEnv
	vm       *simulator.VirtualMachine
	disk     string // "[LocalDS_0] DC0_H0_VM0/disk1.vmdk"
	flat     string // its flat extent on the local disk
	flatURL  string
	capacity int64
}

func newTransferEnv(t *testing.T) *transferEnv {
	t.Helper()
	e := newWireEnv(t, simulator.VPX(), func() { sizeInventoryDisks(*inventoryDiskGiB) })
	te := &transferEnv{wireEnv: e}
	for _, ent := range simulator.Map.All("VirtualMachine") {
		vm := ent.(*simulator.VirtualMachine)
		if te.vm == nil || vm.Name < te.vm.Name {
			te.vm = vm
		}
	}
	for _, dev := range te.vm.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok {
			te.disk = d.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
			te.capacity = d.CapacityInBytes
		}
	}
	var p object.DatastorePath
	if !p.FromString(te.disk) {
		t.Fatalf("disk %q", te.disk)
	}
	flatName := strings.TrimSuffix(path.Base(p.Path), ".vmdk") + "-flat.vmdk"
	te.flat = path.Join(path.Dir(localPath(t, te.disk)), flatName)
	te.flatURL = e.base + "/folder/" + path.Dir(p.Path) + "/" + flatName + "?" + url.Values{"dcPath": {"DC0"}, "dsName": {p.Datastore}}.Encode()
	return te
}

func (e *transferEnv) stalls() int {
	e.t.Helper()
	var in struct {
		Stall int `json:"stall"`
	}
	if err := json.Unmarshal(e.counts()["injected"], &in); err != nil {
		e.t.Fatal(err)
	}
	return in.Stall
}

// -disk-gb 4: a 4 GiB flat extent that uses no disk space.
func TestTransferSparseDisk(t *testing.T) {
	withTransferFlags(t, func() { *inventoryDiskGiB = 4 })
	e := newTransferEnv(t)
	if e.capacity != 4<<30 {
		t.Fatalf("capacity %d", e.capacity)
	}
	st, err := os.Stat(e.flat)
	if err != nil {
		t.Fatal(err)
	}
	used := st.Sys().(*syscall.Stat_t).Blocks * 512
	if st.Size() != 4<<30 || used > 1<<20 {
		t.Fatalf("%s: size %d, %d bytes used", e.flat, st.Size(), used)
	}
	// It is served at its full size: a GET announces 4 GiB, its last MiB reads as zeros.
	res, err := http.Head(e.flatURL)
	if err != nil || res.ContentLength != 4<<30 {
		t.Fatalf("HEAD: %v, %d bytes", err, res.ContentLength)
	}
	req, _ := http.NewRequest(http.MethodGet, e.flatURL, nil)
	req.Header.Set("Range", "bytes=4293918720-")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusPartialContent || !bytes.Equal(b, make([]byte, 1<<20)) {
		t.Fatalf("last MiB: %s, %d bytes, %v", res.Status, len(b), err)
	}
}

// -datastore-mbps paces GET and PUT bodies, and a throttled PUT of a disk does not hold up
// the rest of the simulator.
func TestTransferThrottle(t *testing.T) {
	withTransferFlags(t, func() { *inventoryDiskGiB = 1; *datastoreMbps = 4 })
	e := newTransferEnv(t)

	const size = 4_000_000
	req, _ := http.NewRequest(http.MethodGet, e.flatURL, nil)
	req.Header.Set("Range", "bytes=0-3999999")
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if d := time.Since(start); n != size || d < 800*time.Millisecond || d > 1600*time.Millisecond {
		t.Fatalf("GET of %d bytes at 4 MB/s took %v", n, d)
	}

	data := bytes.Repeat([]byte("ceso"), 3_000_000/4)
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPut, e.flatURL, bytes.NewReader(data))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		} else {
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("PUT: %s", res.Status)
			}
		}
		done <- time.Since(start)
	}()
	time.Sleep(200 * time.Millisecond)
	// Meanwhile the VM (whose disk is being written) and others answer at once.
	callStart := time.Now()
	task, err := object.NewVirtualMachine(e.c.Client, e.vm.Self).PowerOff(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(e.ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(callStart); d > 500*time.Millisecond {
		t.Fatalf("PowerOff during a throttled PUT took %v", d)
	}
	if d := <-done; d < 600*time.Millisecond || d > 1300*time.Millisecond {
		t.Fatalf("PUT of 3 MB at 4 MB/s took %v", d)
	}
	got := make([]byte, len(data))
	f, err := os.Open(e.flat)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the throttled PUT was not written: %v", err)
	}
}

// -fault-stall-transfer-after: a GET and a PUT stop after BYTES and stay open.
func TestTransferStall(t *testing.T) {
	withTransferFlags(t, func() { *inventoryDiskGiB = 1; *faultStallAfter = 1 << 20; *faultStallPaths = `-flat\.vmdk$` })
	e := newTransferEnv(t)

	// GET: exactly BYTES arrive, then nothing, while the connection stays open.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.flatURL, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.ContentLength != 1<<30 {
		t.Fatalf("Content-Length %d", res.ContentLength)
	}
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, res.Body)
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("the stalled GET ended after %d bytes", n)
	case <-time.After(700 * time.Millisecond):
	}
	cancel() // the client's stall timeout
	if n := <-got; n != 1<<20 {
		t.Fatalf("got %d bytes before the stall, want %d", n, 1<<20)
	}
	res.Body.Close()

	// PUT: the server reads BYTES and stops; the client's timeout ends it.
	data := bytes.Repeat([]byte{0x5a}, 8<<20)
	client := &http.Client{Timeout: 700 * time.Millisecond}
	req, _ = http.NewRequest(http.MethodPut, e.flatURL, bytes.NewReader(data))
	start := time.Now()
	_, err = client.Do(req)
	if err == nil || time.Since(start) < 600*time.Millisecond {
		t.Fatalf("the stalled PUT ended after %v: %v", time.Since(start), err)
	}
	buf := make([]byte, 2<<20)
	f, err := os.Open(e.flat)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:1<<20], data[:1<<20]) || !bytes.Equal(buf[1<<20:], make([]byte, 1<<20)) {
		t.Fatal("want the first MiB written and nothing after it")
	}
	if n := e.stalls(); n != 2 {
		t.Fatalf("/vcsim-counts stall = %d, want 2", n)
	}
	// Other paths are not stalled; SOAP goes on.
	if _, err := methods.GetCurrentTime(e.ctx, e.c.Client); err != nil {
		t.Fatal(err)
	}
}
