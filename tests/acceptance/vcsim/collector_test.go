package main

// ceso addition: wire tests of the PropertyCollector update model (collector.go): an
// in-process simulator served over HTTP with main's handler chain (serveHandler), and a
// govmomi client, so every call goes through SOAP and the decode-time routing. Run with
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go test -run Collector .

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type wireEnv struct {
	t    *testing.T
	ctx  context.Context
	c    *govmomi.Client
	base string   // http://host:port
	u    *url.URL // the SDK URL, with credentials
}

// newWireEnv starts model m (created here) behind main's handler chain and logs in; setup
// runs once the inventory exists, before the handlers are installed (as in main).
func newWireEnv(t *testing.T, m *simulator.Model, setup ...func()) *wireEnv {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f()
	}
	s := m.Service.NewServer()
	h, err := serveHandler(s.Config.Handler, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Config.Handler = h
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
	return &wireEnv{t: t, ctx: ctx, c: c, base: s.URL.Scheme + "://" + s.URL.Host, u: s.URL}
}

// counts reads GET /vcsim-counts.
func (e *wireEnv) counts() map[string]json.RawMessage {
	e.t.Helper()
	res, err := http.Get(e.base + "/vcsim-counts")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *wireEnv) collectorStats() map[string]int {
	e.t.Helper()
	var out map[string]int
	if err := json.Unmarshal(e.counts()["collector"], &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *wireEnv) newCollector() types.ManagedObjectReference {
	e.t.Helper()
	res, err := methods.CreatePropertyCollector(e.ctx, e.c.Client, &types.CreatePropertyCollector{This: e.c.ServiceContent.PropertyCollector})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Returnval
}

// filter creates a filter on obj's props (the project's pattern: one object, no traversal).
func (e *wireEnv) filter(pc, obj types.ManagedObjectReference, partial bool, props ...string) types.ManagedObjectReference {
	e.t.Helper()
	res, err := methods.CreateFilter(e.ctx, e.c.Client, &types.CreateFilter{
		This: pc,
		Spec: types.PropertyFilterSpec{
			PropSet:   []types.PropertySpec{{Type: obj.Type, PathSet: props}},
			ObjectSet: []types.ObjectSpec{{Obj: obj}},
		},
		PartialUpdates: partial,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Returnval
}

func (e *wireEnv) destroyFilter(f types.ManagedObjectReference) {
	e.t.Helper()
	if _, err := methods.DestroyPropertyFilter(e.ctx, e.c.Client, &types.DestroyPropertyFilter{This: f}); err != nil {
		e.t.Fatal(err)
	}
}

// wait calls WaitForUpdatesEx (maxWait < 0: no maxWaitSeconds).
func (e *wireEnv) wait(pc types.ManagedObjectReference, version string, maxWait int32) (*types.UpdateSet, error) {
	req := &types.WaitForUpdatesEx{This: pc, Version: version}
	if maxWait >= 0 {
		req.Options = &types.WaitOptions{MaxWaitSeconds: &maxWait}
	}
	res, err := methods.WaitForUpdatesEx(e.ctx, e.c.Client, req)
	if err != nil {
		return nil, err
	}
	return res.Returnval, nil
}

func (e *wireEnv) mustWait(pc types.ManagedObjectReference, version string, maxWait int32) *types.UpdateSet {
	e.t.Helper()
	set, err := e.wait(pc, version, maxWait)
	if err != nil {
		e.t.Fatalf("WaitForUpdatesEx(%q): %v", version, err)
	}
	return set
}

// asyncWait runs wait in the background.
func (e *wireEnv) asyncWait(pc types.ManagedObjectReference, version string, maxWait int32) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		set, err := e.wait(pc, version, maxWait)
		ch <- waitResult{set, err, time.Now()}
	}()
	return ch
}

type waitResult struct {
	set *types.UpdateSet
	err error
	at  time.Time
}

func (e *wireEnv) waitFault(err error, want types.BaseMethodFault) {
	e.t.Helper()
	f := soapFault(e.t, err)
	if !isType(f, want) {
		e.t.Fatalf("want %T, got %T (%v)", want, f, err)
	}
}

// newTask makes a queued task on some VM, changed in process by setTask.
func newTask(t *testing.T) *simulator.Task {
	t.Helper()
	vm := simulator.Map.Any("VirtualMachine")
	if vm == nil {
		t.Fatal("no VM")
	}
	return simulator.CreateTask(vm, "cesoTest", nil)
}

func setTask(task *simulator.Task, changes ...types.PropertyChange) {
	simulator.Map.WithLock(task, func() { simulator.Map.Update(task, changes) })
}

// updates flattens an UpdateSet: filter -> object -> kind and changes by name.
type objUpdate struct {
	kind    types.ObjectUpdateKind
	changes map[string]types.PropertyChange
}

func flatten(set *types.UpdateSet) map[types.ManagedObjectReference]map[types.ManagedObjectReference]objUpdate {
	out := map[types.ManagedObjectReference]map[types.ManagedObjectReference]objUpdate{}
	if set == nil {
		return out
	}
	for _, fu := range set.FilterSet {
		objs := map[types.ManagedObjectReference]objUpdate{}
		for _, ou := range fu.ObjectSet {
			u := objUpdate{kind: ou.Kind, changes: map[string]types.PropertyChange{}}
			for _, c := range ou.ChangeSet {
				u.changes[c.Name] = c
			}
			objs[ou.Obj] = u
		}
		out[fu.Filter] = objs
	}
	return out
}

func taskInfoOf(t *testing.T, c types.PropertyChange) types.TaskInfo {
	t.Helper()
	info, ok := c.Val.(types.TaskInfo)
	if !ok {
		t.Fatalf("%s: want a TaskInfo, got %T", c.Name, c.Val)
	}
	return info
}

// A filter destroyed while a long poll is pending neither breaks the poll nor takes another
// filter's update with it (the simulator's own collector panicked here).
func TestCollectorDestroyFilterDuringWait(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta, tb := newTask(t), newTask(t)
	fa := e.filter(pc, ta.Self, false, "info")
	fb := e.filter(pc, tb.Self, false, "info")

	first := e.mustWait(pc, "", 0)
	got := flatten(first)
	if got[fa][ta.Self].kind != types.ObjectUpdateKindEnter || got[fb][tb.Self].kind != types.ObjectUpdateKindEnter {
		t.Fatalf("initial answer: want both tasks entering, got %+v", got)
	}
	if first.Version == "" || first.Version == "-" {
		t.Fatalf("initial version %q", first.Version)
	}

	pending := e.asyncWait(pc, first.Version, 10)
	time.Sleep(200 * time.Millisecond)
	e.destroyFilter(fa)
	setTask(ta, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateRunning})
	time.Sleep(100 * time.Millisecond)
	setTask(tb, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateSuccess})

	r := <-pending
	if r.err != nil {
		t.Fatalf("pending wait: %v", r.err)
	}
	got = flatten(r.set)
	if _, ok := got[fa]; ok {
		t.Fatalf("a destroyed filter was reported: %+v", got)
	}
	u, ok := got[fb][tb.Self]
	if !ok || u.kind != types.ObjectUpdateKindModify {
		t.Fatalf("want tb modified through fb, got %+v", got)
	}
	if info := taskInfoOf(t, u.changes["info"]); info.State != types.TaskInfoStateSuccess {
		t.Fatalf("tb state %s", info.State)
	}
	if n := panicCount(); n != 0 {
		t.Fatalf("%d panics", n)
	}
	if set := e.mustWait(pc, r.set.Version, 0); set != nil {
		t.Fatalf("nothing changed since %s, got %+v", r.set.Version, flatten(set))
	}
}

// A filter created while a long poll is pending is reported by that poll at once.
func TestCollectorNewFilterDuringWait(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta, tc := newTask(t), newTask(t)
	e.filter(pc, ta.Self, false, "info")
	v := e.mustWait(pc, "", 0).Version

	pending := e.asyncWait(pc, v, 30)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	fc := e.filter(pc, tc.Self, false, "info")
	r := <-pending
	if r.err != nil {
		t.Fatal(r.err)
	}
	if d := r.at.Sub(start); d > time.Second {
		t.Fatalf("the new filter was reported after %v", d)
	}
	u := flatten(r.set)[fc][tc.Self]
	if u.kind != types.ObjectUpdateKindEnter || taskInfoOf(t, u.changes["info"]).Key != tc.Self.Value {
		t.Fatalf("want tc entering through the new filter, got %+v", flatten(r.set))
	}
	if len(r.set.FilterSet) != 1 {
		t.Fatalf("want only the new filter, got %+v", flatten(r.set))
	}
}

// Versions: a lost answer can be asked for again with the version before it; unknown
// versions are InvalidCollectorVersion.
func TestCollectorVersions(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta := newTask(t)
	fa := e.filter(pc, ta.Self, false, "info")
	v1 := e.mustWait(pc, "", 0).Version

	setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(10)})
	lost := e.mustWait(pc, v1, 5) // the client never sees this answer
	if lost == nil || taskInfoOf(t, flatten(lost)[fa][ta.Self].changes["info"]).Progress != 10 {
		t.Fatalf("want progress 10, got %+v", flatten(lost))
	}
	setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(20)})

	again := e.mustWait(pc, v1, 5)
	u := flatten(again)[fa][ta.Self]
	if u.kind != types.ObjectUpdateKindModify || taskInfoOf(t, u.changes["info"]).Progress != 20 {
		t.Fatalf("re-asking %s: want a modify with progress 20, got %+v", v1, flatten(again))
	}
	if again.Version == lost.Version || again.Version == v1 {
		t.Fatalf("versions %s, %s, %s: want a new one", v1, lost.Version, again.Version)
	}
	if set := e.mustWait(pc, again.Version, 0); set != nil {
		t.Fatalf("nothing changed since %s, got %+v", again.Version, flatten(set))
	}
	// The lost version is still good too: it knew progress 10.
	if set := e.mustWait(pc, lost.Version, 0); set == nil || taskInfoOf(t, flatten(set)[fa][ta.Self].changes["info"]).Progress != 20 {
		t.Fatalf("from %s: want progress 20, got %+v", lost.Version, flatten(set))
	}
	// "" is the full state.
	if set := e.mustWait(pc, "", 0); set == nil || flatten(set)[fa][ta.Self].kind != types.ObjectUpdateKindEnter {
		t.Fatalf(`from "": want an enter, got %+v`, flatten(set))
	}

	for _, bad := range []string{"bogus", "-", "999999"} {
		_, err := e.wait(pc, bad, 0)
		e.waitFault(err, &types.InvalidCollectorVersion{})
	}
	// Versions older than the history are refused.
	v := again.Version
	for i := 0; i < collectorHistory+1; i++ {
		setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(30 + i)})
		v = e.mustWait(pc, v, 5).Version
	}
	_, err := e.wait(pc, v1, 0)
	e.waitFault(err, &types.InvalidCollectorVersion{})
	if set := e.mustWait(pc, v, 0); set != nil {
		t.Fatalf("latest %s: want nothing, got %+v", v, flatten(set))
	}
}

// maxWaitSeconds: a wait with nothing to report answers null after it; negative is refused.
func TestCollectorMaxWait(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta := newTask(t)
	e.filter(pc, ta.Self, false, "info")
	v := e.mustWait(pc, "", 0).Version
	start := time.Now()
	if set := e.mustWait(pc, v, 1); set != nil {
		t.Fatalf("want null, got %+v", flatten(set))
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 2*time.Second {
		t.Fatalf("waited %v for maxWaitSeconds 1", d)
	}
	neg := int32(-1)
	_, err := methods.WaitForUpdatesEx(e.ctx, e.c.Client, &types.WaitForUpdatesEx{This: pc, Version: v, Options: &types.WaitOptions{MaxWaitSeconds: &neg}})
	e.waitFault(err, &types.InvalidArgument{})
}

// CancelWaitForUpdates and DestroyPropertyCollector end pending waits with RequestCanceled.
func TestCollectorCancelAndDestroy(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	before := e.collectorStats()
	pc := e.newCollector()
	ta := newTask(t)
	e.filter(pc, ta.Self, false, "info")
	e.filter(pc, ta.Self, true, "info.state")
	v := e.mustWait(pc, "", 0).Version

	pending := e.asyncWait(pc, v, 30)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if _, err := methods.CancelWaitForUpdates(e.ctx, e.c.Client, &types.CancelWaitForUpdates{This: pc}); err != nil {
		t.Fatal(err)
	}
	r := <-pending
	e.waitFault(r.err, &types.RequestCanceled{})
	if d := r.at.Sub(start); d > time.Second {
		t.Fatalf("cancelled after %v", d)
	}
	// The version is still good after a cancel.
	setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(5)})
	set := e.mustWait(pc, v, 5)
	if set == nil || len(set.FilterSet) != 1 {
		t.Fatalf("after a cancel: want the info filter's change, got %+v", flatten(set))
	}

	pending = e.asyncWait(pc, set.Version, 30)
	time.Sleep(200 * time.Millisecond)
	if _, err := methods.DestroyPropertyCollector(e.ctx, e.c.Client, &types.DestroyPropertyCollector{This: pc}); err != nil {
		t.Fatal(err)
	}
	r = <-pending
	e.waitFault(r.err, &types.RequestCanceled{})
	_, err := e.wait(pc, "", 0)
	e.waitFault(err, &types.ManagedObjectNotFound{})
	if after := e.collectorStats(); after["filters"] != before["filters"] || after["waits"] != 0 {
		t.Fatalf("after destroying the collector: %v (before %v)", after, before)
	}
}

// partialUpdates reports nested changes by their path.
func TestCollectorPartialUpdates(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	pc := e.newCollector()
	ta := newTask(t)
	fp := e.filter(pc, ta.Self, true, "info")
	fw := e.filter(pc, ta.Self, false, "info")
	v := e.mustWait(pc, "", 0).Version
	setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(30)}, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateRunning})
	set := e.mustWait(pc, v, 5)
	got := flatten(set)
	p := got[fp][ta.Self].changes
	if len(p) != 2 || p["info.progress"].Val != int32(30) || p["info.state"].Val != types.TaskInfoStateRunning {
		t.Fatalf("partial: want info.progress and info.state, got %+v", got[fp])
	}
	if w := got[fw][ta.Self].changes; len(w) != 1 || taskInfoOf(t, w["info"]).Progress != 30 {
		t.Fatalf("whole: want info, got %+v", got[fw])
	}
	// A nested value that becomes unset is an assign without a value.
	setTask(ta, types.PropertyChange{Name: "info.progress", Val: int32(0)}, types.PropertyChange{Name: "info.error", Val: &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: "x"}, LocalizedMessage: "x"}})
	set = e.mustWait(pc, set.Version, 5)
	if c, ok := flatten(set)[fp][ta.Self].changes["info.error"]; !ok || c.Val == nil {
		t.Fatalf("want info.error set, got %+v", flatten(set)[fp])
	}
}

// A filter traversing a container view reports VMs entering, changing and leaving.
func TestCollectorTraversal(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	m := view.NewManager(e.c.Client)
	cv, err := m.CreateContainerView(e.ctx, e.c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	pc := e.newCollector()
	res, err := methods.CreateFilter(e.ctx, e.c.Client, &types.CreateFilter{This: pc, Spec: types.PropertyFilterSpec{
		PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name"}}},
		ObjectSet: []types.ObjectSpec{{Obj: cv.Reference(), Skip: types.NewBool(true), SelectSet: []types.BaseSelectionSpec{
			&types.TraversalSpec{Type: "ContainerView", Path: "view"},
		}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Returnval
	first := e.mustWait(pc, "", 0)
	vms := flatten(first)[f]
	if len(vms) == 0 {
		t.Fatal("no VM entered")
	}
	var ref types.ManagedObjectReference
	for ref = range vms {
		break
	}
	vm := object.NewVirtualMachine(e.c.Client, ref)
	task, err := vm.Rename(e.ctx, "renamed-by-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(e.ctx); err != nil {
		t.Fatal(err)
	}
	set := e.mustWait(pc, first.Version, 5)
	if u := flatten(set)[f][ref]; u.kind != types.ObjectUpdateKindModify || u.changes["name"].Val != "renamed-by-test" {
		t.Fatalf("rename: got %+v", flatten(set))
	}
	if task, err = vm.PowerOff(e.ctx); err == nil {
		_ = task.Wait(e.ctx)
	}
	task, err = vm.Destroy(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(e.ctx); err != nil {
		t.Fatal(err)
	}
	set = e.mustWait(pc, set.Version, 5)
	if u := flatten(set)[f][ref]; u.kind != types.ObjectUpdateKindLeave {
		t.Fatalf("destroy: want a leave, got %+v", flatten(set))
	}
}

// HashiCorp's provider waits through govmomi: property.Wait (CreatePropertyCollector,
// CreateFilter, a WaitForUpdatesEx loop, DestroyPropertyCollector) and task.Wait.
func TestCollectorGovmomiWait(t *testing.T) {
	e := newWireEnv(t, simulator.VPX())
	before := e.collectorStats()
	finder := find.NewFinder(e.c.Client, true)
	dc, err := finder.DefaultDatacenter(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(dc)
	vms, err := finder.VirtualMachineList(e.ctx, "*")
	if err != nil {
		t.Fatal(err)
	}
	vm := vms[0]
	task, err := vm.PowerOff(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(e.ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		if task, err := vm.PowerOn(e.ctx); err == nil {
			_ = task.Wait(e.ctx)
		}
	}()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	err = property.Wait(ctx, property.DefaultCollector(e.c.Client), vm.Reference(), []string{"runtime.powerState"}, func(pc []types.PropertyChange) bool {
		for _, c := range pc {
			if c.Val == types.VirtualMachinePowerStatePoweredOn {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	var o mo.VirtualMachine
	if err := vm.Properties(e.ctx, vm.Reference(), []string{"runtime.powerState"}, &o); err != nil || o.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("power state %v, %v", o.Runtime.PowerState, err)
	}
	if after := e.collectorStats(); after["filters"] != before["filters"] || after["collectors"] != before["collectors"] || after["waits"] != 0 {
		t.Fatalf("govmomi's collectors were left behind: %v (before %v)", after, before)
	}
}

// The project's pattern: one private collector per session, one filter per task on
// Task.info, shared 30 s long polls, DestroyPropertyFilter once a task is done; with -delay
// 20 and slow tasks, as the benchmarks run.
func TestCollectorProjectPattern(t *testing.T) {
	t.Cleanup(resetSlowTasks)
	if err := (slowTaskFlag{}).Set("Rename_Task=300"); err != nil {
		t.Fatal(err)
	}
	m := simulator.VPX()
	m.DelayConfig.Delay = 20
	e := newWireEnv(t, m)
	pc := e.newCollector()
	vms := simulator.Map.All("VirtualMachine")

	type waiter struct {
		filter types.ManagedObjectReference
		done   chan types.TaskInfo
	}
	var mu sync.Mutex
	waiters := map[types.ManagedObjectReference]*waiter{}
	stop := make(chan struct{})
	var polls int64
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		version := ""
		for {
			select {
			case <-stop:
				return
			default:
			}
			set, err := e.wait(pc, version, 30)
			atomic.AddInt64(&polls, 1)
			if err != nil {
				select {
				case <-stop:
				default:
					t.Errorf("poll: %v", err)
				}
				return
			}
			if set == nil {
				continue
			}
			version = set.Version
			for _, fu := range set.FilterSet {
				for _, ou := range fu.ObjectSet {
					for _, c := range ou.ChangeSet {
						info, ok := c.Val.(types.TaskInfo)
						if !ok {
							continue
						}
						mu.Lock()
						w := waiters[ou.Obj]
						mu.Unlock()
						if w != nil && (info.State == types.TaskInfoStateSuccess || info.State == types.TaskInfoStateError) {
							select {
							case w.done <- info:
							default:
							}
						}
					}
				}
			}
		}
	}()
	defer func() {
		close(stop)
		_, _ = methods.CancelWaitForUpdates(e.ctx, e.c.Client, &types.CancelWaitForUpdates{This: pc})
		<-pollDone
	}()

	const n = 24
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			vm := vms[i%len(vms)].Reference()
			res, err := methods.Rename_Task(e.ctx, e.c.Client, &types.Rename_Task{This: vm, NewName: fmt.Sprintf("pattern-%d", i)})
			if err != nil {
				errs <- err
				return
			}
			w := &waiter{done: make(chan types.TaskInfo, 1)}
			mu.Lock()
			waiters[res.Returnval] = w
			mu.Unlock()
			w.filter = e.filter(pc, res.Returnval, false, "info")
			select {
			case info := <-w.done:
				if info.State != types.TaskInfoStateSuccess {
					errs <- fmt.Errorf("%v: %s", res.Returnval, info.State)
				}
			case <-time.After(10 * time.Second):
				errs <- fmt.Errorf("%v: no final update in 10 s", res.Returnval)
			}
			if _, err := methods.DestroyPropertyFilter(e.ctx, e.c.Client, &types.DestroyPropertyFilter{This: w.filter}); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	elapsed := time.Since(start)
	if elapsed > 5*time.Second {
		t.Errorf("%d slow tasks of 300 ms took %v", n, elapsed)
	}
	st := e.collectorStats()
	if st["filters"] != 0 {
		t.Errorf("filters left: %v", st)
	}
	t.Logf("%d tasks in %v, %d polls, %v", n, elapsed, atomic.LoadInt64(&polls), st)
	if panicCount() != 0 {
		t.Fatal("panics")
	}
}
