package main

// ceso addition: wire tests of the fault injection flags (faults.go), with main's handler
// chain and a govmomi client. Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Fault .

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// withFaultFlags sets the fault flags for one test (as main's flag.Parse would).
func withFaultFlags(t *testing.T, set func()) {
	t.Helper()
	seed, we, wr, rb, ra, ms, after := *faultSeed, *faultWaitError, *faultWaitReset, *faultResetBefore, *faultResetAfter, *faultMethods, *faultAfterCalls
	t.Cleanup(func() {
		*faultSeed, *faultWaitError, *faultWaitReset, *faultResetBefore, *faultResetAfter, *faultMethods, *faultAfterCalls = seed, we, wr, rb, ra, ms, after
	})
	set()
}

type injected struct {
	WaitError     int            `json:"wait_error"`
	WaitReset     int            `json:"wait_reset"`
	WaitResetLost int            `json:"wait_reset_answer_lost"`
	ResetBefore   map[string]int `json:"reset_before"`
	ResetAfter    map[string]int `json:"reset_after"`
	Stall         int            `json:"stall"`
}

func (e *wireEnv) injected() injected {
	e.t.Helper()
	var out injected
	if err := json.Unmarshal(e.counts()["injected"], &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// connLost: the call failed without an answer (not a SOAP fault).
func connLost(err error) bool { return err != nil && !soap.IsSoapFault(err) }

// -fault-wait-error answers the predicted share of waits with SystemError, and only them.
func TestFaultWaitError(t *testing.T) {
	withFaultFlags(t, func() { *faultWaitError = 0.4; *faultSeed = 7 })
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta := newTask(t)
	e.filter(pc, ta.Self, false, "info")
	const n = 50
	version, errs := "", 0
	for i := 0; i < n; i++ {
		want := faultUnit(7, "wait_error/WaitForUpdatesEx", uint64(i)) < 0.4
		set, err := e.wait(pc, version, 0)
		if (err != nil) != want {
			t.Fatalf("call %d: want injected=%v, got %v", i, want, err)
		}
		if err != nil {
			errs++
			if f := soapFault(t, err); !isType(f, &types.SystemError{}) || soap.ToSoapFault(err).String != "A general system error occurred: injected" {
				t.Fatalf("call %d: %T %v", i, f, err)
			}
			continue
		}
		if set != nil {
			version = set.Version
		}
		if i%5 == 0 {
			setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(i)})
		}
	}
	if errs < n/5 || errs > n*3/5 {
		t.Fatalf("%d of %d injected at 0.4", errs, n)
	}
	if got := e.injected(); got.WaitError != errs {
		t.Fatalf("/vcsim-counts says %d, saw %d", got.WaitError, errs)
	}
}

// -fault-wait-reset drops waits unanswered; the client recovers with the version it had.
func TestFaultWaitReset(t *testing.T) {
	withFaultFlags(t, func() { *faultWaitReset = 0.5; *faultSeed = 3 })
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta := newTask(t)
	fa := e.filter(pc, ta.Self, false, "info")
	calls := uint64(0)
	predicted := func() bool {
		r := faultUnit(3, "wait_reset/WaitForUpdatesEx", calls) < 0.5
		calls++
		return r
	}
	version, resets, progress := "", 0, int32(0)
	for round := 0; round < 12; round++ {
		progress++
		setTask(ta, types.PropertyChange{Name: "info.progress", Val: progress})
		// Ask until an answer arrives; a reset one is asked again with the same version.
		for {
			reset := predicted()
			start := time.Now()
			set, err := e.wait(pc, version, 1)
			if reset != connLost(err) {
				t.Fatalf("round %d: predicted reset=%v, got %v", round, reset, err)
			}
			if err != nil {
				if time.Since(start) > 3*time.Second {
					t.Fatalf("a reset came after %v (maxWaitSeconds 1)", time.Since(start))
				}
				resets++
				continue
			}
			u := flatten(set)[fa][ta.Self]
			if set == nil || taskInfoOf(t, u.changes["info"]).Progress != progress {
				t.Fatalf("round %d: want progress %d from %q, got %+v", round, progress, version, flatten(set))
			}
			version = set.Version
			break
		}
	}
	// A reset while nothing changes: the wait is withdrawn.
	for predicted() == false {
		if set, err := e.wait(pc, version, 0); err != nil || set != nil {
			t.Fatalf("nothing changed: %v %+v", err, flatten(set))
		}
	}
	if _, err := e.wait(pc, version, 1); !connLost(err) {
		t.Fatalf("want a reset, got %v", err)
	}
	resets++
	if st := e.collectorStats(); st["waits"] != 0 {
		t.Fatalf("a reset wait is still pending: %v", st)
	}
	got := e.injected()
	if resets < 3 || got.WaitReset != resets {
		t.Fatalf("saw %d resets, /vcsim-counts says %+v", resets, got)
	}
	t.Logf("%d resets, %d after the answer was computed", got.WaitReset, got.WaitResetLost)
}

// -fault-reset-before: the call never runs. The login path is never injected.
func TestFaultResetBefore(t *testing.T) {
	withFaultFlags(t, func() { *faultResetBefore = 1 })
	e := newWireEnv(t, simulator.VPX()) // logging in works with every other call reset
	// A second client can still log in.
	c2, err := govmomi.NewClient(e.ctx, e.u, true)
	if err != nil {
		t.Fatalf("login with -fault-reset-before 1: %v", err)
	}
	_ = c2.Logout(e.ctx)

	vm := simulator.Map.Any("VirtualMachine").(*simulator.VirtualMachine)
	name := vm.Name
	_, err = methods.Rename_Task(e.ctx, e.c.Client, &types.Rename_Task{This: vm.Self, NewName: "never"})
	if !connLost(err) {
		t.Fatalf("want a reset connection, got %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if vm.Name != name {
		t.Fatalf("the reset call ran: %q", vm.Name)
	}
	if got := e.injected(); got.ResetBefore["Rename_Task"] != 1 || len(got.ResetAfter) != 0 {
		t.Fatalf("counts %+v", got)
	}
}

// -fault-reset-after with -fault-methods: the call runs, the answer is lost.
func TestFaultResetAfter(t *testing.T) {
	withFaultFlags(t, func() { *faultResetAfter = 1; *faultMethods = "CreateVM_Task, Rename_Task" })
	e := newWireEnv(t, simulator.ESX())
	finder := find.NewFinder(e.c.Client, true)
	dc, err := finder.DefaultDatacenter(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := finder.DefaultResourcePool(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := finder.DefaultDatastore(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := types.VirtualMachineConfigSpec{Name: "reset-after-vm", GuestId: "otherGuest", Files: &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name() + "]"}}
	_, err = methods.CreateVM_Task(e.ctx, e.c.Client, &types.CreateVM_Task{This: folders.VmFolder.Reference(), Config: spec, Pool: pool.Reference()})
	if !connLost(err) {
		t.Fatalf("want a reset connection, got %v", err)
	}
	var vm *object.VirtualMachine
	for i := 0; i < 50 && vm == nil; i++ {
		vm, _ = finder.VirtualMachine(e.ctx, "reset-after-vm")
		time.Sleep(20 * time.Millisecond)
	}
	if vm == nil {
		t.Fatal("the VM of the reset CreateVM_Task does not exist")
	}
	// Methods not listed are not injected.
	task, err := vm.PowerOn(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.injected(); got.ResetAfter["CreateVM_Task"] != 1 || len(got.ResetBefore) != 0 || got.ResetAfter["PowerOnVM_Task"] != 0 {
		t.Fatalf("counts %+v", got)
	}
	if panicCount() != 0 {
		t.Fatal("panics")
	}
}

// -fault-after-calls spares the first calls; the flags are checked.
func TestFaultAfterCallsAndFlags(t *testing.T) {
	withFaultFlags(t, func() { *faultResetBefore = 1; *faultAfterCalls = 1000 })
	e := newWireEnv(t, simulator.VPX())
	vm := simulator.Map.Any("VirtualMachine").(*simulator.VirtualMachine)
	if _, err := methods.Rename_Task(e.ctx, e.c.Client, &types.Rename_Task{This: vm.Self, NewName: "spared"}); err != nil {
		t.Fatalf("call within -fault-after-calls: %v", err)
	}
	*faultWaitError = 1.5
	if _, err := installFaults(nil); err == nil {
		t.Fatal("-fault-wait-error 1.5 accepted")
	}
}
