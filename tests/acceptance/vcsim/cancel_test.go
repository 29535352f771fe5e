package main

// Wire tests of the ceso CancelTask / -slow-task model (cancel.go): an in-process simulator
// served over HTTP and a govmomi client, so every call goes through SOAP encoding and decoding
// (and so through the decode-time routing). Task states are awaited with WaitForUpdatesEx on
// "info", as the project's client waits. Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Cancel .

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// slowDelay is the -slow-task delay the tests use.
const slowDelay = 600 * time.Millisecond

type cancelEnv struct {
	t   *testing.T
	ctx context.Context
	c   *govmomi.Client
}

// newCancelEnv starts model m with -slow-task spec (as main would parse it) and connects.
func newCancelEnv(t *testing.T, m *simulator.Model, spec string) *cancelEnv {
	t.Helper()
	t.Cleanup(resetSlowTasks)
	if spec != "" {
		if err := (slowTaskFlag{}).Set(spec); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	s := m.Service.NewServer()
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, s.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Logout(ctx)
		s.Close()
		m.Remove()
	})
	return &cancelEnv{t: t, ctx: ctx, c: c}
}

// resetSlowTasks undoes -slow-task: every slowed method is decoded as before again.
func resetSlowTasks() {
	slowTaskMu.Lock()
	defer slowTaskMu.Unlock()
	for name, r := range slowTaskRoutes {
		types.Add(name, r.prev)
		delete(slowTaskRoutes, name)
	}
}

func (e *cancelEnv) info(ref types.ManagedObjectReference) types.TaskInfo {
	e.t.Helper()
	var t mo.Task
	if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, ref, []string{"info"}, &t); err != nil {
		e.t.Fatalf("retrieve %v info: %v", ref, err)
	}
	return t.Info
}

func (e *cancelEnv) name(ref types.ManagedObjectReference) string {
	e.t.Helper()
	var me mo.ManagedEntity
	if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, ref, []string{"name"}, &me); err != nil {
		e.t.Fatalf("retrieve %v name: %v", ref, err)
	}
	return me.Name
}

// watch waits with WaitForUpdatesEx on the task's info until it is done; it returns the final
// info and every progress value seen on the way.
func (e *cancelEnv) watch(ref types.ManagedObjectReference) (types.TaskInfo, []int32) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	var last types.TaskInfo
	var progress []int32
	err := property.Wait(ctx, property.DefaultCollector(e.c.Client), ref, []string{"info"}, func(pc []types.PropertyChange) bool {
		for _, c := range pc {
			if info, ok := c.Val.(types.TaskInfo); ok {
				last = info
				if info.State == types.TaskInfoStateRunning {
					progress = append(progress, info.Progress)
				}
			}
		}
		return last.State == types.TaskInfoStateSuccess || last.State == types.TaskInfoStateError
	})
	if err != nil {
		e.t.Fatalf("wait for %v: %v", ref, err)
	}
	return last, progress
}

func (e *cancelEnv) cancelTask(ref types.ManagedObjectReference) error {
	_, err := methods.CancelTask(e.ctx, e.c.Client, &types.CancelTask{This: ref})
	return err
}

func (e *cancelEnv) wantFault(err error, want types.BaseMethodFault, msg string) {
	e.t.Helper()
	f := soapFault(e.t, err)
	if !isType(f, want) {
		e.t.Fatalf("want %T, got %T (%v)", want, f, err)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		e.t.Fatalf("want message %q, got %v", msg, err)
	}
}

func (e *cancelEnv) rename(ref types.ManagedObjectReference, name string) types.ManagedObjectReference {
	e.t.Helper()
	res, err := methods.Rename_Task(e.ctx, e.c.Client, &types.Rename_Task{This: ref, NewName: name})
	if err != nil {
		e.t.Fatalf("Rename_Task: %v", err)
	}
	return res.Returnval
}

func (e *cancelEnv) recentTasks() []types.ManagedObjectReference {
	e.t.Helper()
	var tm mo.TaskManager
	if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, *e.c.ServiceContent.TaskManager, []string{"recentTask"}, &tm); err != nil {
		e.t.Fatal(err)
	}
	return tm.RecentTask
}

func TestCancelSlowRename(t *testing.T) {
	e := newCancelEnv(t, simulator.VPX(), "Rename_Task=600")
	vms := simulator.Map.All("VirtualMachine")
	vm := vms[0].Reference()
	orig := e.name(vm)

	// Started, running and cancelable, nothing renamed yet.
	t0 := time.Now()
	ref := e.rename(vm, "cancelled-name")
	if d := time.Since(t0); d > slowDelay/2 {
		t.Fatalf("Rename_Task took %v to return its task", d)
	}
	info := e.info(ref)
	if info.State != types.TaskInfoStateRunning || !info.Cancelable || info.Cancelled {
		t.Fatalf("slow task: state %s cancelable %v cancelled %v", info.State, info.Cancelable, info.Cancelled)
	}
	if info.Name != "Rename_Task" || info.DescriptionId != "VirtualMachine.rename" || info.Entity == nil || *info.Entity != vm || info.EntityName != orig || info.StartTime == nil || info.CompleteTime != nil {
		t.Fatalf("slow task info: %+v", info)
	}
	if got := e.name(vm); got != orig {
		t.Fatalf("renamed to %q before the delay", got)
	}

	// Cancelled: error RequestCanceled, cancelled = true, and WaitForUpdatesEx hears of it.
	if err := e.cancelTask(ref); err != nil {
		t.Fatalf("CancelTask: %v", err)
	}
	info = e.info(ref)
	if info.State != types.TaskInfoStateError || !info.Cancelled || info.CompleteTime == nil || info.Error == nil {
		t.Fatalf("cancelled task: %+v", info)
	}
	if _, ok := info.Error.Fault.(*types.RequestCanceled); !ok || info.Error.LocalizedMessage != msgRequestCanceled {
		t.Fatalf("cancelled task error: %T %q", info.Error.Fault, info.Error.LocalizedMessage)
	}
	final, _ := e.watch(ref)
	if final.State != types.TaskInfoStateError || !final.Cancelled {
		t.Fatalf("watched cancelled task: %+v", final)
	}
	err := object.NewTask(e.c.Client, ref).Wait(e.ctx)
	var te task.Error
	if !errors.As(err, &te) || !isType(te.Fault(), &types.RequestCanceled{}) {
		t.Fatalf("Task.Wait on a cancelled task: %v", err)
	}

	// Cancelling again: it is already cancelled.
	e.wantFault(e.cancelTask(ref), &types.InvalidState{}, msgInvalidState)

	// The rename never happens.
	time.Sleep(slowDelay + 300*time.Millisecond)
	if got := e.name(vm); got != orig {
		t.Fatalf("cancelled rename happened: %q", got)
	}
	if info := e.info(ref); info.State != types.TaskInfoStateError || !info.Cancelled {
		t.Fatalf("cancelled task changed afterwards: %+v", info)
	}
}

func TestCancelSlowTaskCompletes(t *testing.T) {
	e := newCancelEnv(t, simulator.VPX(), "Rename_Task=600")
	vms := simulator.Map.All("VirtualMachine")
	vm, other := vms[0].Reference(), vms[1].Reference()

	// Left alone, it renames after the delay and succeeds, reporting progress on the way.
	t0 := time.Now()
	ref := e.rename(vm, "slow-renamed")
	final, progress := e.watch(ref)
	if d := time.Since(t0); d < slowDelay {
		t.Fatalf("slow task finished after %v, before its %v", d, slowDelay)
	}
	if final.State != types.TaskInfoStateSuccess || final.Error != nil || final.Cancelled || final.Cancelable || final.Progress != 100 || final.CompleteTime == nil {
		t.Fatalf("completed slow task: %+v", final)
	}
	between := false
	for _, p := range progress {
		between = between || (p > 0 && p < 100)
	}
	if !between {
		t.Fatalf("no progress reported while running: %v", progress)
	}
	if got := e.name(vm); got != "slow-renamed" {
		t.Fatalf("name after the slow rename: %q", got)
	}
	// One task per call: the simulator's own rename task is not left behind.
	for _, r := range e.recentTasks() {
		if r != ref && simulator.Map.Get(r) == nil {
			t.Fatalf("recentTask lists %v, which does not exist", r)
		}
		if r != ref {
			if i := e.info(r); i.Name == "Rename" || i.Name == "Rename_Task" {
				t.Fatalf("recentTask still lists the inner rename task %v", r)
			}
		}
	}

	// Finished: CancelTask is InvalidState.
	e.wantFault(e.cancelTask(ref), &types.InvalidState{}, msgInvalidState)

	// A slow rename that the simulator refuses (name taken in the folder) fails as it would.
	ref = e.rename(other, "slow-renamed")
	final, _ = e.watch(ref)
	if final.State != types.TaskInfoStateError || final.Error == nil || !isType(final.Error.Fault, &types.InvalidArgument{}) {
		t.Fatalf("slow rename to a taken name: %+v", final)
	}
	if got := e.name(other); got == "slow-renamed" {
		t.Fatal("the refused rename happened")
	}

	// Unslowed methods are untouched: PowerOffVM_Task returns a finished task.
	res, err := methods.PowerOffVM_Task(e.ctx, e.c.Client, &types.PowerOffVM_Task{This: other})
	if err != nil {
		t.Fatal(err)
	}
	if info := e.info(res.Returnval); info.State != types.TaskInfoStateSuccess || info.Cancelable {
		t.Fatalf("PowerOffVM_Task: %+v", info)
	}
	// A finished simulator task: InvalidState (checked before cancelable).
	e.wantFault(e.cancelTask(res.Returnval), &types.InvalidState{}, "")
}

func TestCancelFaults(t *testing.T) {
	e := newCancelEnv(t, simulator.ESX(), "")
	installPciModel(1)
	host := simulator.Map.Any("HostSystem").Reference()
	vm := simulator.Map.Any("VirtualMachine").Reference()

	// A running task that is not cancelable (the simulator's own tasks never are).
	saved := *pciRebootDelay
	*pciRebootDelay = 800
	t.Cleanup(func() { *pciRebootDelay = saved })
	res, err := methods.RebootHost_Task(e.ctx, e.c.Client, &types.RebootHost_Task{This: host, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	info := e.info(res.Returnval)
	if info.State != types.TaskInfoStateRunning || info.Cancelable {
		t.Fatalf("RebootHost_Task: state %s cancelable %v", info.State, info.Cancelable)
	}
	e.wantFault(e.cancelTask(res.Returnval), &types.NotSupported{}, msgNotSupported)
	if final, _ := e.watch(res.Returnval); final.State != types.TaskInfoStateSuccess || final.Cancelled {
		t.Fatalf("RebootHost_Task after a refused cancel: %+v", final)
	}

	// No such task; not a task.
	e.wantFault(e.cancelTask(types.ManagedObjectReference{Type: "Task", Value: "task-999999"}), &types.ManagedObjectNotFound{}, "")
	e.wantFault(e.cancelTask(vm), &types.MethodNotFound{}, "")
}

// Slowed methods that other additions route (snapshot.go, pci.go) keep their behaviour.
func TestCancelSlowRoutedMethods(t *testing.T) {
	e := newCancelEnv(t, simulator.VPX(), "CreateSnapshot_Task=400,PowerOnVM_Task=400")
	var vm types.ManagedObjectReference
	for _, o := range simulator.Map.All("VirtualMachine") {
		if v := o.(*simulator.VirtualMachine); v.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			vm = v.Self
			break
		}
	}
	snapshot := func(name string) types.ManagedObjectReference {
		res, err := methods.CreateSnapshot_Task(e.ctx, e.c.Client, &types.CreateSnapshot_Task{This: vm, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return res.Returnval
	}
	vmSnapshot := func() *types.VirtualMachineSnapshotInfo {
		var v mo.VirtualMachine
		if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, vm, []string{"snapshot"}, &v); err != nil {
			t.Fatal(err)
		}
		return v.Snapshot
	}

	// Cancelled: no snapshot.
	ref := snapshot("never")
	if info := e.info(ref); info.State != types.TaskInfoStateRunning || !info.Cancelable || info.Name != "CreateSnapshot_Task" {
		t.Fatalf("slow CreateSnapshot_Task: %+v", info)
	}
	if err := e.cancelTask(ref); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400*time.Millisecond + 300*time.Millisecond)
	if s := vmSnapshot(); s != nil {
		t.Fatalf("cancelled CreateSnapshot_Task made a snapshot: %+v", s)
	}

	// Completed: the result is the new snapshot, made by snapshot.go's CreateSnapshot_Task
	// (memory=false on a powered-on VM records poweredOff).
	ref = snapshot("kept")
	final, _ := e.watch(ref)
	snap, ok := final.Result.(types.ManagedObjectReference)
	if final.State != types.TaskInfoStateSuccess || !ok || snap.Type != "VirtualMachineSnapshot" {
		t.Fatalf("slow CreateSnapshot_Task: %+v", final)
	}
	s := vmSnapshot()
	if s == nil || s.CurrentSnapshot == nil || *s.CurrentSnapshot != snap || len(s.RootSnapshotList) != 1 ||
		s.RootSnapshotList[0].Name != "kept" || s.RootSnapshotList[0].State != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("snapshot after the slow CreateSnapshot_Task: %+v", s)
	}

	// pci.go routes PowerOnVM_Task: slowed, the power-on still goes through it and succeeds.
	off, err := methods.PowerOffVM_Task(e.ctx, e.c.Client, &types.PowerOffVM_Task{This: vm})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := e.watch(off.Returnval); info.State != types.TaskInfoStateSuccess {
		t.Fatalf("PowerOffVM_Task: %+v", info)
	}
	on, err := methods.PowerOnVM_Task(e.ctx, e.c.Client, &types.PowerOnVM_Task{This: vm})
	if err != nil {
		t.Fatal(err)
	}
	if info := e.info(on.Returnval); info.State != types.TaskInfoStateRunning {
		t.Fatalf("slow PowerOnVM_Task: %+v", info)
	}
	if info, _ := e.watch(on.Returnval); info.State != types.TaskInfoStateSuccess {
		t.Fatalf("slow PowerOnVM_Task: %+v", info)
	}
	var v mo.VirtualMachine
	if err := property.DefaultCollector(e.c.Client).RetrieveOne(e.ctx, vm, []string{"runtime.powerState"}, &v); err != nil {
		t.Fatal(err)
	}
	if v.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("power state after the slow power-on: %s", v.Runtime.PowerState)
	}

	// A target that does not exist is still a SOAP fault at once.
	_, err = methods.PowerOnVM_Task(e.ctx, e.c.Client, &types.PowerOnVM_Task{This: types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-999999"}})
	e.wantFault(err, &types.ManagedObjectNotFound{}, "")
}

func TestCancelSlowTaskFlag(t *testing.T) {
	t.Cleanup(resetSlowTasks)
	for _, bad := range []string{"Rename_Task", "Rename_Task=x", "Rename_Task=-1", "RetrievePropertiesEx=5", "NoSuchThing_Task=5", "_Task=1"} {
		if err := (slowTaskFlag{}).Set(bad); err == nil {
			t.Errorf("-slow-task %s accepted", bad)
		}
	}
	if err := (slowTaskFlag{}).Set("Rename_Task=3000, Destroy_Task=10"); err != nil {
		t.Fatal(err)
	}
	if err := (slowTaskFlag{}).Set("Rename_Task=20"); err != nil {
		t.Fatal(err)
	}
	if got := (slowTaskFlag{}).String(); got != "Destroy_Task=10,Rename_Task=20" {
		t.Fatalf("-slow-task is %q", got)
	}
}
