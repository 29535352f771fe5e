package main

// ceso addition: OVF import through an HttpNfcLease, modelled after the vSphere API reference
// (ResourcePool.ImportVApp, HttpNfcLease: state, error, info, transferProgress;
// HttpNfcLeaseProgress, HttpNfcLeaseComplete, HttpNfcLeaseAbort; HttpNfcLeaseInfo.leaseTimeout,
// totalDiskCapacityInKB; HttpNfcLeaseDeviceUrl) and VMware's Virtual Disk Format 5.0
// specification (the streamOptimized sparse extent: header, grain markers, metadata markers).
//
// What vSphere does. ImportVApp creates the VM of the import spec (with empty disks) and
// returns a lease; once it is ready, info.deviceUrl maps each file of the import (matched to
// the import spec's OvfFileItem.deviceId by importKey) to a URL on the host,
// https://<host>/nfc/<lease>/<file> ("*" for the host when the client talks to the host
// itself). The client uploads each disk there: OVF disks are streamOptimized VMDKs, sent with
// POST (govmomi, pyVmomi's samples; PUT works too) and Content-Type
// application/x-vnd.vmware-streamVmdk; the host decodes the stream as it arrives and writes the
// grains into the new VM's virtual disk ("conversion happens as NFC upload is streamed to
// disk", govmomi #805). Other files of the import (an ISO of a CD-ROM) are PUT as they are
// (govmomi adds "Overwrite: t"). A body that is not a sparse VMDK is refused: hostd logs
// "[DiskUploadWorker] Stream reader initialization failed: Not a supported disk format
// (invalid sparse VMDK header)" and answers 500 Internal Server Error (pyvmomi-community-samples
// #398). The lease's states: ready; done after HttpNfcLeaseComplete ("the status of the
// corresponding task will be set to success"); error after HttpNfcLeaseAbort or a time-out,
// with the error property saying why, and "If the lease belongs to an import session, all
// objects created during the import are removed when the lease enters this state." Keep-alive:
// "A lease will time out automatically after a while. If the client wishes to continue using
// it ... this method [HttpNfcLeaseProgress] must be called periodically"; info.leaseTimeout is
// the "Number of seconds before the lease times out. The client extends the lease by calling
// HttpNfcLeaseProgress before the timeout has expired" (hosts and vCenter report 300). Faults:
// HttpNfcLeaseProgress Timedout "if the lease has timed out or vSphere has not detected data
// transfer progress"; HttpNfcLeaseComplete Timedout "if the lease has timed out before this
// call", InvalidState "if the lease has already been completed or aborted"; HttpNfcLeaseAbort
// Timedout likewise, InvalidState "if the lease has already been aborted". While the lease is
// held, operations on the VM (PowerOn, Destroy, Migrate) are blocked.
//
// What govmomi 0.24's simulator does (simulator/http_nfc_lease.go, resource_pool.go
// ImportVApp): the VM and a ready lease with info.leaseTimeout 30000 and deviceUrls
// /nfc/<lease>/<base name of the device's file>, importKey "/<vm name>/<device type>:<n>" (as
// its CreateImportSpec names fileItem.deviceId); a PUT or POST there reads the body and
// discards it; HttpNfcLeaseProgress stores the percent; Complete and Abort forget the lease
// (ManagedObjectNotFound from then on), and Abort leaves the half-imported VM in place; leases
// never time out; info.totalDiskCapacityInKB is 0.
//
// What is modelled (flag -nfc-lease-timeout, registered here):
//
//   - Uploads. A PUT or POST of /nfc/<lease>/<file> of a lease made here (ImportVApp below) is
//     served by this file; the Content-Type is not looked at (clients differ; the body decides).
//     For a disk the body must be a streamOptimized VMDK: a sparse extent header (magic "KDMV",
//     version 1-3, flags with compressed grains (bit 16) and markers (bit 17), compression
//     algorithm 1 = deflate, a grain size of 8 to 2048 sectors that is a power of two), the
//     embedded descriptor and the rest of the header area (skipped up to overHead sectors),
//     then sector-aligned markers: a grain {lba uint64, size uint32, size bytes of zlib data
//     (raw deflate accepted too)} that inflates to at most one grain, written at lba*512 into
//     the VM disk's flat extent (<name>-flat.vmdk, kept capacity-sized and sparse by cbt.go);
//     metadata markers (size 0: grain table 1, grain directory 2, footer 3, each followed by
//     lba sectors that are skipped) and the end-of-stream marker (type 0), after which the
//     rest of the body is read and ignored; a stream whose header points at a grain directory
//     in its header area (gdOffset not GD_AT_END, as qemu-img writes streamOptimized disks)
//     may also simply end after its last grain, as hosts accept (the last grain the grain
//     tables in its header area list: a stream that ends before it was cut short). The stream replaces the disk's content: the extent
//     is emptied (made one hole) when a valid header has arrived, grains absent from the stream
//     (zero grains) stay holes, and so do grains that inflate to zeros: zeros are never
//     written. The body is decoded as it arrives, in one pass, with at most one compressed and
//     one inflated grain in memory (a 64 KiB grain: ~130 KiB), whatever the disk's size. The
//     answer is 200 once the end-of-stream marker is read. A body that is not a sparse VMDK
//     (garbage, or a flat raw image, even sent as application/octet-stream) is refused as
//     hostd refuses it: 500 with hostd's words, before anything is written (the disk keeps its
//     content); a sparse VMDK that is not streamOptimized (monolithicSparse) likewise. A
//     stream that turns bad later (a marker or grain that does not decode, a grain not on a
//     grain boundary, beyond the stream's capacity or holding data beyond the disk's capacity,
//     a body that ends before the end-of-stream marker) answers 500 too; what was written
//     before stays. Files that are not disks (a CD-ROM's ISO) are written as sent, replacing
//     the file. URLs of an unknown lease or file answer 404, as before; so do uploads to a
//     lease that is no longer ready (an upload under way when the lease ends stops at the next
//     grain, answering 500). GET and other methods stay the simulator's.
//   - Changed block tracking (cbt.go). A disk upload takes the extent's PUT lock (so it never
//     interleaves with a datastore PUT of the same extent) and writes under cbtMu, as cbt.go's
//     own writes. When the VM has CBT on (an import spec may set changeTrackingEnabled), the
//     blocks emptied at the start and the 64 KiB blocks of every grain written are recorded
//     as one change (one changeId sequence step) when the upload ends, and the VM's device
//     list is published, as after a datastore PUT.
//   - Lease state. ImportVApp is the simulator's, then: info.leaseTimeout is the
//     -nfc-lease-timeout in seconds (rounded up), info.totalDiskCapacityInKB the sum of the
//     VM's disks, and the deviceUrls' scheme is the server's (http without -tls, where the
//     simulator's "https://*/nfc/..." could not be reached; the host is still "*").
//     HttpNfcLeaseProgress records the percent (transferProgress) and the time. A lease is
//     kept alive by HttpNfcLeaseProgress calls and by upload bytes arriving (the second clause
//     of the Timedout fault above); when neither happened for -nfc-lease-timeout (default
//     300s, as a host; tests make it short) it is aborted as a host does: state error, error
//     Timedout ("Operation timed out."), the VM removed. HttpNfcLeaseComplete
//     makes it done; HttpNfcLeaseAbort makes it error, with the fault the client passed as
//     error (RequestCanceled, "The task was canceled by a user.", if it passed none), and
//     removes the VM. A lease that ended stays readable in its session (state, error) until
//     the session ends; calls on it then answer as the reference says: Progress, Complete and
//     Abort of a timed-out lease Timedout; Complete or Abort of a lease completed or aborted,
//     and Progress of one completed or aborted by the client, InvalidState ("The operation is
//     not allowed in the current state."). Removing the VM: powered off first if a client
//     powered it on, then the simulator's Destroy_Task (unregistered, disks and the VM's
//     directory deleted); neither task is left in recentTask (on a host the removal is part
//     of the import task).
//   - Counts: GET /vcsim-counts has "nfc": {"leases":n, "progress_calls":n,
//     "leases_completed":n, "leases_aborted":n, "leases_timed_out":n, "uploads":n,
//     "uploads_failed":n, "bytes_received":n, "bytes_written":n, "by_lease": {"<lease moid>":
//     {"state":"ready|done|error", "progress_calls":n, "bytes_written":n}}}. progress_calls
//     counts every HttpNfcLeaseProgress call on a lease of this model (also those answered
//     with a fault); bytes_received the upload body bytes read, bytes_written the disk and file
//     bytes written (zero grains are neither). Counts start at 0 with each server.
//   - -datastore-mbps and -fault-stall-transfer-after (transfer.go) wrap this handler: an
//     upload's body is paced, and stalled, as it is read here, so a stalled upload sends no
//     bytes and its lease times out unless the client calls HttpNfcLeaseProgress.
//
// Not modelled: the lease's initializing state (ready at once), the ImportVApp task vCenter
// shows (the simulator's CreateVM_Task is there instead), blocking operations on the leased VM
// (a client may power it on, or destroy it, meanwhile), leases of ExportVm (the simulator has
// none), HttpNfcLeaseGetManifest, HttpNfcLeaseSetManifestChecksumType, pull mode,
// OvfFileItem.create (the simulator's CreateImportSpec leaves it false for an ISO; vSphere
// sets it, and govmomi then PUTs the file; either method works here), deviceUrl keys named
// after the disk's controller as vCenter names them ("/vm-12/VirtualLsiLogicController0:0";
// the simulator's "/vm-12/disk:0" is kept, and the importKeys match its CreateImportSpec's
// deviceIds), sslThumbprint, fileSize, the VMDK's grain tables and footer (skipped: the grain
// markers alone place the data), descriptor checks, and leases of ended sessions: they go on
// until they time out (uploads still work: the URLs are tokens, as on a host), then remove
// the VM.
//
// How the calls are reached: routed at decode time, as in cancel.go and collector.go. init
// registers one request type (nfcRequest) for ImportVApp, HttpNfcLeaseProgress,
// HttpNfcLeaseComplete and HttpNfcLeaseAbort; its UnmarshalXML decodes govmomi's request, keeps
// the target and points This at the stateless dispatcher (nfcModel). ImportVApp is handed to
// the simulator's own method (forwardCall, cancel.go), and the lease it made is then taken over
// here; a lease this model does not know is handed to the simulator's methods (collectorCall,
// collector.go). Lease objects stay the simulator's (registered in the caller's session); their
// published properties change only through Registry.Update under the lease's registry lock, so
// property collectors hear of them.
//
// Locking: nfcMu guards the table of leases and the counts; under it only a lease's mu is taken
// (for reading, by the counts), and nothing takes nfcMu while holding a lease's mu. A lease's
// state changes under its mu held for writing; an upload holds it for reading around each
// write (checking the state first), so once the state left ready no write follows, and the
// VM's files are removed only after that. Per file, uploads run one at a time (nfcFile.mu),
// then the extent's cbt.go PUT lock, then (per write) the lease's mu, then cbtMu. Object locks
// (lease, VM) are taken with no lease mu held.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// ceso addition: -nfc-lease-timeout (registered here, parsed by main's flag.Parse; tests set it
// directly before serveHandler).
var nfcLeaseTimeout = flag.Duration("nfc-lease-timeout", 300*time.Second,
	"HttpNfcLease timeout: a lease with neither an HttpNfcLeaseProgress call nor upload bytes for this long is aborted and its VM removed (info.leaseTimeout, in seconds rounded up; see nfc.go)")

// vSphere's localized message of the Timedout fault.
const msgTimedout = "Operation timed out."

// hostd's words for a body that is not a sparse VMDK.
const msgNotSparse = "Not a supported disk format (invalid sparse VMDK header)"

// ---------------------------------------------------------------------------- state

// nfcFile is one file of a lease: a disk (its flat extent) or another file (an ISO).
type nfcFile struct {
	name     string // the URL's last element
	disk     bool
	local    string // flat extent of a disk, the file itself otherwise
	capacity int64  // disks: bytes
	mu       sync.Mutex
}

// nfcLease is the model's state of one lease made by ImportVApp.
type nfcLease struct {
	ref     types.ManagedObjectReference
	obj     *simulator.HttpNfcLease
	vm      types.ManagedObjectReference
	files   map[string]*nfcFile
	reg     *simulator.Registry
	ctx     simulator.Context // a copy of ImportVApp's context, for the removal after a time-out
	timeout time.Duration
	done    chan struct{} // closed when the lease leaves ready (or the model is reset)
	once    sync.Once
	last    int64 // unix nanoseconds of the last sign of life (atomic)

	mu       sync.RWMutex
	state    types.HttpNfcLeaseState
	timedOut bool

	// Guarded by nfcMu.
	progressCalls int
	bytesWritten  int64
}

func (l *nfcLease) touch() { atomic.StoreInt64(&l.last, time.Now().UnixNano()) }

func (l *nfcLease) idle() time.Duration {
	return time.Since(time.Unix(0, atomic.LoadInt64(&l.last)))
}

func (l *nfcLease) end() { l.once.Do(func() { close(l.done) }) }

var (
	nfcMu     sync.Mutex
	nfcLeases = map[string]*nfcLease{} // by lease moid
	nfcStats  struct {
		leases, progress, completed, aborted, timedOut, uploads, uploadsFailed int
		received, written                                                      int64
	}
)

// nfcCounts is the "nfc" object of /vcsim-counts.
func nfcCounts() map[string]interface{} {
	nfcMu.Lock()
	defer nfcMu.Unlock()
	by := map[string]interface{}{}
	for id, l := range nfcLeases {
		l.mu.RLock()
		state := l.state
		l.mu.RUnlock()
		by[id] = map[string]interface{}{"state": state, "progress_calls": l.progressCalls, "bytes_written": l.bytesWritten}
	}
	return map[string]interface{}{
		"leases": nfcStats.leases, "progress_calls": nfcStats.progress, "leases_completed": nfcStats.completed,
		"leases_aborted": nfcStats.aborted, "leases_timed_out": nfcStats.timedOut, "uploads": nfcStats.uploads,
		"uploads_failed": nfcStats.uploadsFailed, "bytes_received": nfcStats.received, "bytes_written": nfcStats.written,
		"by_lease": by,
	}
}

// installNFC (called by serveHandler) starts the model afresh (leases of an earlier server are
// forgotten and their timers stopped, counts zeroed) and wraps h with the upload handler.
func installNFC(h http.Handler) (http.Handler, error) {
	if *nfcLeaseTimeout <= 0 {
		return nil, fmt.Errorf("-nfc-lease-timeout %v: want a positive duration", *nfcLeaseTimeout)
	}
	nfcMu.Lock()
	for _, l := range nfcLeases {
		l.end()
	}
	nfcLeases = map[string]*nfcLease{}
	nfcStats.leases, nfcStats.progress, nfcStats.completed, nfcStats.aborted, nfcStats.timedOut = 0, 0, 0, 0, 0
	nfcStats.uploads, nfcStats.uploadsFailed, nfcStats.received, nfcStats.written = 0, 0, 0, 0
	nfcMu.Unlock()
	return &nfcHTTP{next: h}, nil
}

// ---------------------------------------------------------------------------- dispatch

// ceso addition: nfcModelRef names the dispatcher in simulator.Map; clients never see it.
var nfcModelRef = types.ManagedObjectReference{Type: "CesoNfcModel", Value: "ceso-nfc-model"}

// ceso addition: nfcModel receives the routed requests. It holds no state; as a sync.Locker
// with no-op methods it opts out of the simulator's lock on the dispatch object.
type nfcModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*nfcModel) Reference() types.ManagedObjectReference { return nfcModelRef }
func (*nfcModel) Lock()                                   {}
func (*nfcModel) Unlock()                                 {}

// nfcMethods are the routed methods and govmomi's request type of each.
var nfcMethods = map[string]reflect.Type{
	"ImportVApp":           reflect.TypeOf(types.ImportVApp{}),
	"HttpNfcLeaseProgress": reflect.TypeOf(types.HttpNfcLeaseProgress{}),
	"HttpNfcLeaseComplete": reflect.TypeOf(types.HttpNfcLeaseComplete{}),
	"HttpNfcLeaseAbort":    reflect.TypeOf(types.HttpNfcLeaseAbort{}),
}

func init() {
	for name, std := range nfcMethods {
		if prev, ok := types.TypeFunc()(name); ok && prev != std {
			log.Printf("nfc: %s was decoded as %v before nfc.go routed it", name, prev)
		}
		types.Add(name, reflect.TypeOf(nfcRequest{}))
	}
}

var nfcRouteMu sync.Mutex

// nfcRoute registers the dispatcher if the current registry lacks it (a model's Create
// replaces the registry) and returns its reference.
func nfcRoute() types.ManagedObjectReference {
	nfcRouteMu.Lock()
	defer nfcRouteMu.Unlock()
	if simulator.Map.Get(nfcModelRef) == nil {
		simulator.Map.Put(&nfcModel{})
	}
	return nfcModelRef
}

// ceso addition: nfcRequest is the decoded form of every routed request.
type nfcRequest struct {
	This   types.ManagedObjectReference // the dispatcher, read by Service.call
	method string
	target types.ManagedObjectReference // the _this the client sent
	req    interface{}                  // govmomi's request, e.g. *types.HttpNfcLeaseProgress
}

func (r *nfcRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	rt, ok := nfcMethods[start.Name.Local]
	if !ok {
		return fmt.Errorf("ceso nfc model: no route for %s", start.Name.Local)
	}
	v := reflect.New(rt).Interface()
	if err := d.DecodeElement(v, &start); err != nil {
		return err
	}
	r.method, r.req = start.Name.Local, v
	r.target = reflect.ValueOf(v).Elem().FieldByName("This").Interface().(types.ManagedObjectReference)
	r.This = nfcRoute()
	return nil
}

// ---------------------------------------------------------------------------- ImportVApp

// ImportVApp (ceso addition: wraps the simulator's) imports as the simulator does, then takes
// the lease over: timeout, total disk capacity, the files behind its URLs, the timer.
func (*nfcModel) ImportVApp(ctx *simulator.Context, r *nfcRequest) soap.HasFault {
	res := forwardCall(ctx, r.method, r.req)
	body, ok := res.(*methods.ImportVAppBody)
	if !ok || body.Res == nil || ctx.Session == nil {
		return res
	}
	obj, ok := ctx.Session.Get(body.Res.Returnval).(*simulator.HttpNfcLease)
	if !ok {
		return res
	}
	l := &nfcLease{
		ref:     obj.Self,
		obj:     obj,
		files:   map[string]*nfcFile{},
		reg:     ctx.Map,
		ctx:     *ctx,
		timeout: *nfcLeaseTimeout,
		done:    make(chan struct{}),
		state:   types.HttpNfcLeaseStateReady,
	}
	l.ctx.Caller = nil
	var info types.HttpNfcLeaseInfo
	ctx.Map.WithLock(obj, func() {
		if obj.Info != nil {
			info = *obj.Info
		}
	})
	l.vm = info.Entity
	var totalKB int64
	if vm, ok := ctx.Map.Get(l.vm).(*simulator.VirtualMachine); ok {
		ctx.Map.WithLock(vm, func() {
			if syncVM(&vm.VirtualMachine) {
				ctx.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
			}
			for _, dev := range vm.Config.Hardware.Device {
				fb, ok := dev.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo)
				if !ok {
					continue
				}
				b := fb.GetVirtualDeviceFileBackingInfo()
				var p object.DatastorePath
				if !p.FromString(b.FileName) || p.Path == "" {
					continue
				}
				f := &nfcFile{name: path.Base(p.Path)}
				if disk, flat := flatDisk(dev); disk != nil {
					f.disk, f.local, f.capacity = true, flatOf(&vm.VirtualMachine, flat), diskCapacity(disk)
					totalKB += f.capacity / 1024
				} else {
					f.local = datastoreFile(&vm.VirtualMachine, p, b.Datastore)
				}
				if f.local != "" {
					l.files[f.name] = f
				}
			}
		})
	}
	if scheme, _ := nfcScheme.Load().(string); scheme != "" {
		urls := make([]types.HttpNfcLeaseDeviceUrl, len(info.DeviceUrl))
		copy(urls, info.DeviceUrl)
		for i := range urls {
			if u, err := url.Parse(urls[i].Url); err == nil {
				u.Scheme = scheme
				urls[i].Url = u.String()
			}
		}
		info.DeviceUrl = urls
	}
	info.LeaseTimeout = int32((l.timeout + time.Second - 1) / time.Second)
	info.TotalDiskCapacityInKB = totalKB
	ctx.Map.WithLock(obj, func() {
		ctx.Map.Update(obj, []types.PropertyChange{{Name: "info", Val: info}})
	})
	l.touch()
	nfcMu.Lock()
	nfcLeases[l.ref.Value] = l
	nfcStats.leases++
	nfcMu.Unlock()
	go l.watch()
	return res
}

// datastoreFile is the local path of a datastore path of vm's (the backing's datastore, else
// the VM host's datastore of that name), or "".
func datastoreFile(vm *mo.VirtualMachine, p object.DatastorePath, dsRef *types.ManagedObjectReference) string {
	var refs []types.ManagedObjectReference
	if dsRef != nil {
		refs = append(refs, *dsRef)
	}
	if vm.Runtime.Host != nil {
		if h, ok := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem); ok {
			refs = append(refs, h.Datastore...)
		}
	}
	for _, ref := range refs {
		if ds, ok := simulator.Map.Get(ref).(*simulator.Datastore); ok && ds.Name == p.Datastore {
			return path.Join(ds.Info.GetDatastoreInfo().Url, p.Path)
		}
	}
	return ""
}

// watch aborts the lease when it has been idle for its timeout.
func (l *nfcLease) watch() {
	for {
		wait := l.timeout - l.idle()
		if wait <= 0 {
			l.expire()
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-l.done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// expire aborts a ready lease as a host does when it times out.
func (l *nfcLease) expire() {
	if simulator.Map != l.reg {
		return // the model was replaced: none of its objects are served any more
	}
	l.mu.Lock()
	if l.state != types.HttpNfcLeaseStateReady {
		l.mu.Unlock()
		return
	}
	l.state, l.timedOut = types.HttpNfcLeaseStateError, true
	l.mu.Unlock()
	l.end()
	nfcMu.Lock()
	nfcStats.timedOut++
	nfcMu.Unlock()
	ctx := l.ctx
	l.finish(&ctx, &types.LocalizedMethodFault{Fault: &types.Timedout{}, LocalizedMessage: msgTimedout})
}

// finish publishes the lease's final state (error when fault is set, else done) and, for an
// error, removes the imported VM.
func (l *nfcLease) finish(ctx *simulator.Context, fault *types.LocalizedMethodFault) {
	changes := []types.PropertyChange{{Name: "state", Val: types.HttpNfcLeaseStateDone}}
	if fault != nil {
		changes = []types.PropertyChange{{Name: "state", Val: types.HttpNfcLeaseStateError}, {Name: "error", Val: *fault}}
	}
	l.reg.WithLock(l.obj, func() { l.reg.Update(l.obj, changes) })
	if fault != nil {
		nfcRemoveVM(ctx, l.vm)
	}
}

// nfcRemoveVM removes an imported VM as the end of a failed import does: powered off if it
// runs, then destroyed (unregistered, disks and directory deleted), the tasks hidden.
func nfcRemoveVM(ctx *simulator.Context, ref types.ManagedObjectReference) {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	c := *ctx
	c.Caller = &ref
	hide := func(res soap.HasFault) {
		if res == nil || res.Fault() != nil {
			return
		}
		rv := reflect.ValueOf(res).Elem().FieldByName("Res")
		if !rv.IsValid() || rv.IsNil() {
			return
		}
		if t, ok := c.Map.Get(rv.Elem().FieldByName("Returnval").Interface().(types.ManagedObjectReference)).(*simulator.Task); ok {
			c.Map.WithLock(t, func() {
				if t.Info.Error != nil {
					log.Printf("nfc: removing %s: %s", ref, t.Info.Error.LocalizedMessage)
				}
			})
			hideTask(c.Map, t)
		}
	}
	c.Map.WithLock(vm, func() {
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			hide(vm.PowerOffVMTask(&c, &types.PowerOffVM_Task{This: ref}))
		}
		hide(vm.DestroyTask(&c, &types.Destroy_Task{This: ref}))
	})
}

// ---------------------------------------------------------------------------- lease methods

// nfcLookup resolves a lease method's target: the model's lease, or, for a lease it does not
// know, the simulator's answer.
func nfcLookup(ctx *simulator.Context, r *nfcRequest) (*nfcLease, soap.HasFault) {
	var obj mo.Reference
	if ctx.Session != nil {
		obj = ctx.Session.Get(r.target)
	}
	if obj == nil {
		obj = ctx.Map.Get(r.target)
	}
	if obj == nil {
		return nil, &pciFaultBody{simulator.Fault("managed object not found: "+r.target.String(), &types.ManagedObjectNotFound{Obj: r.target})}
	}
	if _, ok := obj.(*simulator.HttpNfcLease); !ok {
		return nil, collectorCall(ctx, r.method, r.target, r.req)
	}
	nfcMu.Lock()
	l := nfcLeases[r.target.Value]
	nfcMu.Unlock()
	if l == nil || l.obj != obj {
		return nil, collectorCall(ctx, r.method, r.target, r.req)
	}
	return l, nil
}

func nfcFault(fault types.BaseMethodFault, msg string) *pciFaultBody {
	return &pciFaultBody{simulator.Fault(msg, fault)}
}

// HttpNfcLeaseProgress (ceso addition) records the percent and renews the lease.
func (*nfcModel) HttpNfcLeaseProgress(ctx *simulator.Context, r *nfcRequest) soap.HasFault {
	l, res := nfcLookup(ctx, r)
	if l == nil {
		return res
	}
	nfcMu.Lock()
	l.progressCalls++
	nfcStats.progress++
	nfcMu.Unlock()
	l.mu.Lock()
	timedOut, state := l.timedOut, l.state
	if state == types.HttpNfcLeaseStateReady {
		l.touch()
	}
	l.mu.Unlock()
	switch {
	case timedOut:
		return nfcFault(&types.Timedout{}, msgTimedout)
	case state != types.HttpNfcLeaseStateReady:
		return nfcFault(&types.InvalidState{}, msgInvalidState)
	}
	percent := r.req.(*types.HttpNfcLeaseProgress).Percent
	l.reg.WithLock(l.obj, func() {
		l.reg.Update(l.obj, []types.PropertyChange{{Name: "transferProgress", Val: percent}})
	})
	return &methods.HttpNfcLeaseProgressBody{Res: &types.HttpNfcLeaseProgressResponse{}}
}

// HttpNfcLeaseComplete (ceso addition) ends the import successfully: state done.
func (*nfcModel) HttpNfcLeaseComplete(ctx *simulator.Context, r *nfcRequest) soap.HasFault {
	l, res := nfcLookup(ctx, r)
	if l == nil {
		return res
	}
	l.mu.Lock()
	timedOut, state := l.timedOut, l.state
	if state == types.HttpNfcLeaseStateReady {
		l.state = types.HttpNfcLeaseStateDone
	}
	l.mu.Unlock()
	switch {
	case timedOut:
		return nfcFault(&types.Timedout{}, msgTimedout)
	case state != types.HttpNfcLeaseStateReady:
		return nfcFault(&types.InvalidState{}, msgInvalidState)
	}
	l.end()
	nfcMu.Lock()
	nfcStats.completed++
	nfcMu.Unlock()
	l.finish(ctx, nil)
	return &methods.HttpNfcLeaseCompleteBody{Res: &types.HttpNfcLeaseCompleteResponse{}}
}

// HttpNfcLeaseAbort (ceso addition) ends the import in error and removes the VM.
func (*nfcModel) HttpNfcLeaseAbort(ctx *simulator.Context, r *nfcRequest) soap.HasFault {
	l, res := nfcLookup(ctx, r)
	if l == nil {
		return res
	}
	l.mu.Lock()
	timedOut, state := l.timedOut, l.state
	if state == types.HttpNfcLeaseStateReady {
		l.state = types.HttpNfcLeaseStateError
	}
	l.mu.Unlock()
	switch {
	case timedOut:
		return nfcFault(&types.Timedout{}, msgTimedout)
	case state != types.HttpNfcLeaseStateReady:
		return nfcFault(&types.InvalidState{}, msgInvalidState)
	}
	l.end()
	nfcMu.Lock()
	nfcStats.aborted++
	nfcMu.Unlock()
	fault := r.req.(*types.HttpNfcLeaseAbort).Fault
	if fault == nil || fault.Fault == nil {
		fault = &types.LocalizedMethodFault{Fault: &types.RequestCanceled{}, LocalizedMessage: msgRequestCanceled}
	}
	l.finish(ctx, fault)
	return &methods.HttpNfcLeaseAbortBody{Res: &types.HttpNfcLeaseAbortResponse{}}
}

// ---------------------------------------------------------------------------- uploads

// nfcHTTP serves uploads to the URLs of the model's leases (see the file comment).
type nfcHTTP struct{ next http.Handler }

// errLeaseEnded stops an upload whose lease left the ready state.
var errLeaseEnded = errors.New("the lease is no longer ready")

// nfcScheme is the scheme the server is reached by ("https" with -tls, else "http"), seen on
// each request: deviceUrls are given in it.
var nfcScheme atomic.Value

func (h *nfcHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil {
		nfcScheme.Store("https")
	} else {
		nfcScheme.Store("http")
	}
	if (r.Method != http.MethodPut && r.Method != http.MethodPost) || !strings.HasPrefix(r.URL.Path, "/nfc/") {
		h.next.ServeHTTP(w, r)
		return
	}
	p := strings.Split(strings.TrimPrefix(r.URL.Path, "/nfc/"), "/")
	if len(p) != 2 {
		h.next.ServeHTTP(w, r)
		return
	}
	nfcMu.Lock()
	l := nfcLeases[p[0]]
	nfcMu.Unlock()
	if l == nil {
		h.next.ServeHTTP(w, r) // the simulator's: 404 for an unknown lease
		return
	}
	f := l.files[p[1]]
	if f == nil {
		http.Error(w, fmt.Sprintf("no file %q in lease %s", p[1], p[0]), http.StatusNotFound)
		return
	}
	l.mu.RLock()
	state := l.state
	l.mu.RUnlock()
	if state != types.HttpNfcLeaseStateReady {
		http.Error(w, fmt.Sprintf("lease %s is %s", p[0], state), http.StatusNotFound)
		return
	}
	nfcMu.Lock()
	nfcStats.uploads++
	nfcMu.Unlock()
	l.touch()
	body := &nfcBody{l: l, r: r.Body}
	var err error
	f.mu.Lock()
	if f.disk {
		err = l.uploadDisk(f, body)
	} else {
		err = l.uploadFile(f, body)
	}
	f.mu.Unlock()
	if err != nil {
		nfcMu.Lock()
		nfcStats.uploadsFailed++
		nfcMu.Unlock()
		log.Printf("nfc %s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// nfcBody counts an upload's bytes and keeps its lease alive while they arrive.
type nfcBody struct {
	l *nfcLease
	r io.Reader
}

func (b *nfcBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.l.touch()
		nfcMu.Lock()
		nfcStats.received += int64(n)
		nfcMu.Unlock()
	}
	return n, err
}

// written counts bytes written for the lease.
func (l *nfcLease) written(n int64) {
	nfcMu.Lock()
	l.bytesWritten += n
	nfcStats.written += n
	nfcMu.Unlock()
}

// whileReady runs f with the lease held ready (errLeaseEnded when it is not).
func (l *nfcLease) whileReady(f func() error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.state != types.HttpNfcLeaseStateReady {
		return errLeaseEnded
	}
	return f()
}

// uploadFile writes a file that is not a disk as it is sent.
func (l *nfcLease) uploadFile(f *nfcFile, body io.Reader) error {
	var out *os.File
	err := l.whileReady(func() error {
		var err error
		out, err = os.OpenFile(f.local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		return err
	})
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	var off int64
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			err := l.whileReady(func() error {
				_, err := out.WriteAt(buf[:n], off)
				return err
			})
			if err != nil {
				return err
			}
			off += int64(n)
			l.written(int64(n))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("reading the request body: %v", rerr)
		}
	}
}

// uploadDisk decodes a streamOptimized VMDK into a disk's flat extent (see the file comment).
func (l *nfcLease) uploadDisk(f *nfcFile, body io.Reader) error {
	s, err := newStreamVmdk(body)
	if err != nil {
		return err
	}
	cbtMu.Lock()
	d := cbtDisks[f.local]
	cbtMu.Unlock()
	if d != nil {
		d.put.Lock()
		defer d.put.Unlock()
	}
	out, err := os.OpenFile(f.local, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer out.Close()

	// The stream replaces the content: empty the extent (blocks that held data change).
	var changed []int64
	tracked := false
	err = l.whileReady(func() error {
		cbtMu.Lock()
		defer cbtMu.Unlock()
		if tracked = d != nil && d.epoch != ""; tracked {
			blocks, err := nonZeroBlocks(f.local, 0, f.capacity)
			if err != nil {
				return err
			}
			changed = append(changed, blocks...)
		}
		if err := out.Truncate(0); err != nil {
			return err
		}
		return out.Truncate(f.capacity)
	})
	if err == nil {
		err = l.decodeInto(s, f, out, tracked, &changed)
	}
	if d != nil && len(changed) > 0 {
		cbtMu.Lock()
		moved := d.recordNow(&changed)
		owner := d.vm
		cbtMu.Unlock()
		if moved {
			publishVM(owner)
		}
	}
	return err
}

// decodeInto writes the stream's grains into out.
func (l *nfcLease) decodeInto(s *streamVmdk, f *nfcFile, out *os.File, tracked bool, changed *[]int64) error {
	for {
		off, data, err := s.next()
		if err == io.EOF {
			_, _ = io.Copy(io.Discard, s.r) // whatever follows the end-of-stream marker
			return nil
		}
		if err != nil {
			return err
		}
		if end := off + int64(len(data)); end > f.capacity {
			if off >= f.capacity || !allZero(data[f.capacity-off:]) {
				return fmt.Errorf("grain at sector %d holds data beyond the disk's capacity of %d bytes", off/512, f.capacity)
			}
			data = data[:f.capacity-off]
		}
		if allZero(data) {
			continue // a hole already
		}
		err = l.whileReady(func() error {
			cbtMu.Lock()
			defer cbtMu.Unlock()
			_, err := out.WriteAt(data, off)
			return err
		})
		if err != nil {
			return err
		}
		l.written(int64(len(data)))
		if tracked {
			for b := off / cbtBlockSize; b*cbtBlockSize < off+int64(len(data)); b++ {
				*changed = append(*changed, b)
			}
		}
	}
}

// ---------------------------------------------------------------------------- streamOptimized VMDK

// Sparse extent header flags (VMDK 5.0 specification).
const (
	vmdkFlagCompressed = 1 << 16
	vmdkFlagMarkers    = 1 << 17
	vmdkMarkerEOS      = 0
	vmdkMarkerGT       = 1
	vmdkMarkerGD       = 2
	vmdkMarkerFooter   = 3
)

// streamVmdk reads the grains of a streamOptimized VMDK in one pass.
type streamVmdk struct {
	r        *bufio.Reader
	pos      int64 // bytes consumed
	sectors  int64 // the stream's capacity
	grain    int64 // grain size in sectors
	cbuf     []byte
	dbuf     []byte
	zr       io.ReadCloser
	fr       io.ReadCloser
	probeBuf [1]byte
	// gdEmbedded: the header points at a grain directory in the header area (qemu-img writes
	// streamOptimized disks so); such a stream may end after its last grain without a
	// metadata footer or end-of-stream marker, and hosts import it.
	gdEmbedded bool
	// lastGrain: the stream sector of the last grain the grain tables in the header area list
	// (0: none, or tables not read); a gdEmbedded stream that ends before it was cut short.
	lastGrain int64
}

func (s *streamVmdk) read(b []byte) error {
	n, err := io.ReadFull(s.r, b)
	s.pos += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("the stream ended before its end-of-stream marker")
	}
	return err
}

func (s *streamVmdk) skip(n int64) error {
	m, err := io.CopyN(io.Discard, s.r, n)
	s.pos += m
	if err == io.EOF {
		return errors.New("the stream ended before its end-of-stream marker")
	}
	return err
}

// newStreamVmdk reads and checks the header and skips the header area (descriptor, tables).
func newStreamVmdk(body io.Reader) (*streamVmdk, error) {
	s := &streamVmdk{r: bufio.NewReaderSize(body, 64<<10)}
	var h [512]byte
	if n, err := io.ReadFull(s.r, h[:]); err != nil {
		if n == 0 && err == io.EOF {
			return nil, errors.New(msgNotSparse + ": empty body")
		}
		if err != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("reading the request body: %v", err)
		}
	}
	s.pos = 512
	le := binary.LittleEndian
	if string(h[:4]) != "KDMV" {
		return nil, errors.New(msgNotSparse)
	}
	version, flags := le.Uint32(h[4:]), le.Uint32(h[8:])
	s.sectors, s.grain = int64(le.Uint64(h[12:])), int64(le.Uint64(h[20:]))
	overhead := int64(le.Uint64(h[64:]))
	algorithm := le.Uint16(h[77:])
	s.gdEmbedded = le.Uint64(h[56:]) != ^uint64(0)
	switch {
	case version < 1 || version > 3:
		return nil, fmt.Errorf(msgNotSparse+": version %d", version)
	case flags&vmdkFlagCompressed == 0 || flags&vmdkFlagMarkers == 0:
		return nil, fmt.Errorf("Not a supported disk format (a sparse VMDK without compressed grains and markers, flags %#x: not streamOptimized)", flags)
	case algorithm != 1:
		return nil, fmt.Errorf("Not a supported disk format (compression algorithm %d, want 1: deflate)", algorithm)
	case s.grain < 8 || s.grain > 2048 || s.grain&(s.grain-1) != 0:
		return nil, fmt.Errorf(msgNotSparse+": grain size %d sectors", s.grain)
	case s.sectors < 0 || s.sectors > 1<<40:
		return nil, fmt.Errorf(msgNotSparse+": capacity %d sectors", s.sectors)
	case overhead < 1 || overhead > 1<<24:
		return nil, fmt.Errorf(msgNotSparse+": overhead %d sectors", overhead)
	}
	grainBytes := int(s.grain * 512)
	s.dbuf = make([]byte, grainBytes)
	s.cbuf = make([]byte, grainBytes+grainBytes/8+1024) // deflate's worst case with room to spare
	if s.gdEmbedded {
		if err := s.readTables(int64(le.Uint64(h[56:])), int64(le.Uint32(h[44:])), overhead); err != nil {
			return nil, err
		}
	}
	if err := s.skip(overhead*512 - s.pos); err != nil {
		return nil, err
	}
	return s, nil
}

// readTables reads the grain directory and the grain tables in the header area (qemu-img
// writes them there, each entry the stream sector of a grain's marker) and notes the last
// grain they list. Tables not readable in this one pass (or implausibly large) are skipped:
// no check then.
func (s *streamVmdk) readTables(gdOffset, perGT, overhead int64) error {
	if perGT < 1 || perGT > 1<<16 {
		return nil
	}
	le := binary.LittleEndian
	gts := ((s.sectors+s.grain-1)/s.grain + perGT - 1) / perGT
	gtSectors := (perGT*4 + 511) / 512
	if gts > 1<<20 || gdOffset*512 < s.pos || gdOffset+(gts*4+511)/512 > overhead {
		return nil
	}
	if err := s.skip(gdOffset*512 - s.pos); err != nil {
		return err
	}
	gd := make([]byte, gts*4)
	if err := s.read(gd); err != nil {
		return err
	}
	gt := make([]byte, perGT*4)
	for i := 0; i < len(gd); i += 4 {
		sec := int64(le.Uint32(gd[i:]))
		if sec == 0 || sec*512 < s.pos || sec+gtSectors > overhead {
			continue
		}
		if err := s.skip(sec*512 - s.pos); err != nil {
			return err
		}
		if err := s.read(gt); err != nil {
			return err
		}
		for j := 0; j < len(gt); j += 4 {
			if g := int64(le.Uint32(gt[j:])); g > s.lastGrain {
				s.lastGrain = g
			}
		}
	}
	return nil
}

// next returns the next grain's byte offset and inflated data (valid until the next call), or
// io.EOF at the end-of-stream marker.
func (s *streamVmdk) next() (int64, []byte, error) {
	le := binary.LittleEndian
	for {
		if s.pos%512 != 0 {
			if err := s.skip(512 - s.pos%512); err != nil {
				return 0, nil, err
			}
		}
		var m [12]byte
		if s.gdEmbedded {
			// A clean end at a sector boundary after the last grain the tables list ends such
			// a stream.
			if _, err := s.r.Peek(1); err == io.EOF {
				if s.pos <= s.lastGrain*512 {
					return 0, nil, fmt.Errorf("the stream ended before its end-of-stream marker, before the grain at sector %d its grain tables list", s.lastGrain)
				}
				return 0, nil, io.EOF
			}
		}
		if err := s.read(m[:]); err != nil {
			return 0, nil, err
		}
		val, size := int64(le.Uint64(m[:8])), int(le.Uint32(m[8:]))
		if size == 0 {
			var t [4]byte
			if err := s.read(t[:]); err != nil {
				return 0, nil, err
			}
			if err := s.skip(512 - 16); err != nil {
				return 0, nil, err
			}
			switch typ := le.Uint32(t[:]); typ {
			case vmdkMarkerEOS:
				return 0, nil, io.EOF
			case vmdkMarkerGT, vmdkMarkerGD, vmdkMarkerFooter:
				if val < 0 || val > 1<<24 {
					return 0, nil, fmt.Errorf("metadata marker (type %d) of %d sectors", typ, val)
				}
				if err := s.skip(val * 512); err != nil {
					return 0, nil, err
				}
				continue
			default:
				return 0, nil, fmt.Errorf("unknown marker type %d at byte %d", typ, s.pos-16)
			}
		}
		if size > len(s.cbuf) {
			return 0, nil, fmt.Errorf("grain marker at byte %d: %d compressed bytes for a grain of %d", s.pos-12, size, len(s.dbuf))
		}
		if val < 0 || val%s.grain != 0 || val >= s.sectors {
			return 0, nil, fmt.Errorf("grain at sector %d: not a grain boundary within the stream's %d sectors", val, s.sectors)
		}
		if err := s.read(s.cbuf[:size]); err != nil {
			return 0, nil, err
		}
		n, err := s.inflate(s.cbuf[:size])
		if err != nil {
			return 0, nil, fmt.Errorf("grain at sector %d: %v", val, err)
		}
		return val * 512, s.dbuf[:n], nil
	}
}

// inflate decompresses one grain (zlib, or raw deflate) into dbuf.
func (s *streamVmdk) inflate(c []byte) (int, error) {
	var zr io.Reader
	src := bytes.NewReader(c)
	if len(c) >= 2 && c[0]&0x0f == 8 && (uint16(c[0])<<8|uint16(c[1]))%31 == 0 {
		if s.zr == nil {
			r, err := zlib.NewReader(src)
			if err != nil {
				return 0, err
			}
			s.zr = r
		} else if err := s.zr.(zlib.Resetter).Reset(src, nil); err != nil {
			return 0, err
		}
		zr = s.zr
	} else {
		if s.fr == nil {
			s.fr = flate.NewReader(src)
		} else if err := s.fr.(flate.Resetter).Reset(src, nil); err != nil {
			return 0, err
		}
		zr = s.fr
	}
	n, err := io.ReadFull(zr, s.dbuf)
	switch err {
	case nil:
		if m, err := zr.Read(s.probeBuf[:]); m > 0 {
			return 0, errors.New("inflates to more than one grain")
		} else if err != nil && err != io.EOF {
			return 0, err
		}
	case io.EOF, io.ErrUnexpectedEOF:
		// A short grain (the last one of a disk whose size is not a multiple of the grain).
	default:
		return 0, err
	}
	return n, nil
}
