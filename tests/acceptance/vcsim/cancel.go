package main

// ceso addition: Task.CancelTask and slow, cancelable tasks (-slow-task), modelled after the
// vSphere API reference (Task.CancelTask; TaskInfo.cancelable, cancelled, progress, error;
// the RequestCanceled fault).
//
// Where govmomi 0.24's simulator falls short:
//
//   - Task has no CancelTask: any call fails with MethodNotFound;
//   - every task method does its work inside the call (simulator.Task.Run) and returns a task
//     that has already succeeded or failed, so no task is ever seen running, none is cancelable
//     (info.cancelable is always false) and none reports info.progress: a client's cancel path
//     cannot be exercised at all.
//
// What is modelled:
//
//   - CancelTask, on any task. The reference: "Cancels a running or queued task. A task may only
//     be canceled if it is cancelable. Multiple cancel requests will be treated as a single
//     cancelation request. Canceling a completed or already canceled task will throw an
//     InvalidState exception. If a task is canceled, its runtime state will be set to error and
//     its error state will be set to RequestCanceled." Faults: InvalidState ("Thrown if the task
//     is already canceled or completed"), checked first, so a finished task always answers it;
//     then NotSupported ("Thrown if the task is not cancelable"), which is what every running
//     task of the simulator itself answers (RebootHost_Task under -reboot-ms, for one). An
//     unknown task is ManagedObjectNotFound and an object that is not a Task MethodNotFound, as
//     for any call. A cancelled task gets info.cancelled = true ("the client requested
//     cancellation of the task"), info.state = error, info.error = RequestCanceled ("thrown if
//     the user canceled the task") with vSphere's message "The task was canceled by a user.",
//     and info.completeTime; info.cancelable stays true. The reference allows the call to
//     return before that ("A cancel operation is asynchronous"); here it is all done, and
//     published, when CancelTask returns. The faults carry vSphere's usual messages for
//     InvalidState and NotSupported.
//   - -slow-task METHOD=MS[,METHOD=MS...] (repeatable; e.g. -slow-task Rename_Task=3000) makes
//     those *_Task methods slow and cancelable. The call returns at once a task on the object
//     it names (_this): info.name the method, descriptionId "<type>.<method without _Task, first
//     letter lowered>" (e.g. VirtualMachine.rename), entityName the entity's name, state
//     running, cancelable true, startTime set, progress 0 (the simulator never reports
//     progress). Each further quarter of MS publishes progress 25, 50, 75. When MS have passed
//     and the task was not cancelled, it turns cancelable = false (the work is committed; a
//     CancelTask from then on answers NotSupported) and the call is dispatched as it would have
//     been without the flag: to the simulator's own method or to the ceso addition routing it
//     (pci.go, snapshot.go, cbt.go), the request decoded as they decode it. The returned task
//     then finishes as that call's own task does: its result (e.g. the new snapshot of
//     CreateSnapshot_Task), or its error with the same fault and localized message; progress
//     100 on success. The call's own task is then removed from the registry and from
//     TaskManager.recentTask, so a client sees one task per call, as on vSphere. A task
//     cancelled before MS never reaches the method: nothing it would have done happens. A
//     target that does not exist (ManagedObjectNotFound), an object without the method
//     (MethodNotFound) and a disabled method (MethodDisabled) are still answered at once as
//     SOAP faults, as without the flag; any other SOAP fault the method answers becomes the
//     task's error. MS 0 leaves the method as it was. Every *_Task method the simulator or a
//     ceso addition implements can be slowed (the list is the taskModel methods below);
//     -slow-task refuses other names.
//
// Not modelled: queued tasks (a slow task starts running at once), tasks that take longer
// because another one holds their object (slow tasks of one object run side by side), the
// descriptionId vSphere uses where its vmodl name is not the SOAP name less "_Task"
// (PowerOnVM_Task is VirtualMachine.powerOn there, VirtualMachine.powerOnVM here), and
// cancelling the simulator's own tasks (never cancelable).
//
// WaitForUpdatesEx. Every change to a task's info is made through Registry.Update under the
// task's registry lock, so property collectors report it (collector.go: a pending long poll
// hears of each progress step within about 20 ms). A filter on "info" receives the whole
// current TaskInfo for every change to it (with partialUpdates, the changed fields).
//
// How the calls are reached: routed at decode time, as in snapshot.go and pci.go. init
// registers CancelTask's request type, whose UnmarshalXML keeps the task the client named and
// points This at one stateless dispatcher (taskModel). -slow-task, parsed by main's flag.Parse
// after every file's init has run, registers for each method named a request type
// (slowTaskRequest) that records the request's tokens, decodes them into the type registered
// for the method before (govmomi's, or another addition's routing type: so additions compose)
// and routes to the same dispatcher, whose method of that name hands the decoded request on
// later exactly as Service.call would have (method name mapping, disabled-method check, lock,
// ctx.Caller). The token replay reuses pci.go's pciTokens and its fault body pciFaultBody.
// (cbt.go's installCBT logs that CloneVM_Task is "decoded ... not by cbt.go" when it is
// slowed: harmless, cbt.go still receives it, through this routing.)
//
// Locking: a task's info changes only under its registry lock; CancelTask takes that lock, then
// slowTaskRunMu (never the other way round). A slow task's goroutine holds no lock while it
// calls the method.

import (
	"flag"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// vSphere's localized messages for the faults of CancelTask and of a cancelled task.
const (
	msgRequestCanceled = "The task was canceled by a user."
	msgInvalidState    = "The operation is not allowed in the current state."
	msgNotSupported    = "The operation is not supported on the object."
)

// slowTaskSteps is how many progress steps a slow task takes (25, 50, 75, then the work).
const slowTaskSteps = 4

// ceso addition: -slow-task (registered here, parsed by main's flag.Parse).
func init() {
	flag.Var(slowTaskFlag{}, "slow-task",
		"METHOD=MS[,METHOD=MS...]: make these *_Task methods return a running, cancelable task and do their work only after MS milliseconds unless it is cancelled with CancelTask (see cancel.go)")
}

// ---------------------------------------------------------------------------- dispatch

// ceso addition: taskModelRef names the dispatcher in simulator.Map; clients never see it.
var taskModelRef = types.ManagedObjectReference{Type: "CesoTaskModel", Value: "ceso-task-model"}

// ceso addition: taskModel receives CancelTask and the slowed task methods. It holds no state;
// as a sync.Locker with no-op methods it opts out of the simulator's lock on the dispatch
// object, and locks the real objects itself.
type taskModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*taskModel) Reference() types.ManagedObjectReference { return taskModelRef }
func (*taskModel) Lock()                                   {}
func (*taskModel) Unlock()                                 {}

var taskModelMu sync.Mutex

// taskModelRoute registers the dispatcher if the current registry does not hold it (a model's
// Create replaces the registry) and returns its reference.
func taskModelRoute() types.ManagedObjectReference {
	taskModelMu.Lock()
	defer taskModelMu.Unlock()
	if simulator.Map.Get(taskModelRef) == nil {
		simulator.Map.Put(&taskModel{})
	}
	return taskModelRef
}

func init() {
	types.Add("CancelTask", reflect.TypeOf(cancelTaskRequest{}))
}

// cancelTaskRequest is CancelTask's request, routed to taskModel.
type cancelTaskRequest struct {
	types.CancelTask
	target types.ManagedObjectReference
}

func (r *cancelTaskRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	type plain cancelTaskRequest
	if err := d.DecodeElement((*plain)(r), &start); err != nil {
		return err
	}
	r.target = r.This
	r.This = taskModelRoute()
	return nil
}

// ---------------------------------------------------------------------------- CancelTask

// CancelTask (ceso addition: the simulator has none) cancels a cancelable task that is queued
// or running; see the file comment.
func (*taskModel) CancelTask(ctx *simulator.Context, req *cancelTaskRequest) soap.HasFault {
	body := &methods.CancelTaskBody{}
	var task *simulator.Task
	switch o := ctx.Map.Get(req.target).(type) {
	case *simulator.Task:
		task = o
	case nil:
		body.Fault_ = simulator.Fault("managed object not found: "+req.target.String(), &types.ManagedObjectNotFound{Obj: req.target})
		return body
	default:
		body.Fault_ = simulator.Fault(fmt.Sprintf("%s does not implement: CancelTask", req.target), &types.MethodNotFound{Receiver: req.target, Method: "CancelTask"})
		return body
	}

	var fault types.BaseMethodFault
	var msg string
	ctx.Map.WithLock(task, func() {
		switch {
		case task.Info.State == types.TaskInfoStateSuccess || task.Info.State == types.TaskInfoStateError:
			fault, msg = &types.InvalidState{}, msgInvalidState
		case !task.Info.Cancelable:
			fault, msg = &types.NotSupported{}, msgNotSupported
		default:
			ctx.Map.Update(task, []types.PropertyChange{
				{Name: "info.cancelled", Val: true},
				{Name: "info.state", Val: types.TaskInfoStateError},
				{Name: "info.error", Val: types.LocalizedMethodFault{Fault: &types.RequestCanceled{}, LocalizedMessage: msgRequestCanceled}},
				{Name: "info.completeTime", Val: time.Now()},
			})
			slowTaskCancelled(task.Self)
		}
	})
	if fault != nil {
		body.Fault_ = simulator.Fault(msg, fault)
		return body
	}
	body.Res = &types.CancelTaskResponse{}
	return body
}

// ---------------------------------------------------------------------------- -slow-task

// slowTaskRoute is a slowed method: the request type it was decoded into before, and its delay.
type slowTaskRoute struct {
	prev  reflect.Type
	delay time.Duration
}

var (
	slowTaskMu     sync.Mutex
	slowTaskRoutes = map[string]*slowTaskRoute{}
)

// slowTaskFlag is the -slow-task flag.Value.
type slowTaskFlag struct{}

func (slowTaskFlag) String() string {
	slowTaskMu.Lock()
	defer slowTaskMu.Unlock()
	var out []string
	for name, r := range slowTaskRoutes {
		out = append(out, fmt.Sprintf("%s=%d", name, r.delay.Milliseconds()))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func (slowTaskFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, ms, ok := strings.Cut(item, "=")
		if !ok {
			return fmt.Errorf("%q: want METHOD=MS, e.g. Rename_Task=3000", item)
		}
		n, err := strconv.Atoi(strings.TrimSpace(ms))
		if err != nil || n < 0 {
			return fmt.Errorf("%q: MS must be a number of milliseconds (0 or more)", item)
		}
		if err := setSlowTask(strings.TrimSpace(name), time.Duration(n)*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// goMethodName is the name Service.call looks a SOAP method up by ("Rename_Task" ->
// "RenameTask").
func goMethodName(method string) string {
	name := strings.ToUpper(method[:1]) + method[1:]
	if strings.HasSuffix(name, "_Task") {
		name = strings.TrimSuffix(name, "_Task") + "Task"
	}
	return name
}

// setSlowTask makes method take delay (0: as fast as without the flag) and routes it here.
func setSlowTask(method string, delay time.Duration) error {
	if !strings.HasSuffix(method, "_Task") || len(method) == len("_Task") {
		return fmt.Errorf("-slow-task %s: not a task method (METHOD must be a *_Task method, e.g. Rename_Task)", method)
	}
	if !reflect.ValueOf(&taskModel{}).MethodByName(goMethodName(method)).IsValid() {
		return fmt.Errorf("-slow-task %s: not a task method this simulator implements (see the taskModel methods in cancel.go)", method)
	}
	slowTaskMu.Lock()
	defer slowTaskMu.Unlock()
	r := slowTaskRoutes[method]
	if r == nil {
		prev, ok := types.TypeFunc()(method)
		if !ok {
			return fmt.Errorf("-slow-task %s: unknown method", method)
		}
		r = &slowTaskRoute{prev: prev}
		slowTaskRoutes[method] = r
		types.Add(method, reflect.TypeOf(slowTaskRequest{}))
	}
	r.delay = delay
	return nil
}

// slowTaskRequest is the decoded form of a slowed method's request.
type slowTaskRequest struct {
	This   types.ManagedObjectReference // the dispatcher, read by Service.call
	method string
	target types.ManagedObjectReference // the _this the client sent
	inner  interface{}                  // the request as the earlier registration decodes it
}

func (r *slowTaskRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	r.method = start.Name.Local
	slowTaskMu.Lock()
	route := slowTaskRoutes[r.method]
	slowTaskMu.Unlock()
	if route == nil {
		return fmt.Errorf("ceso task model: no route for %s", r.method)
	}
	toks := []xml.Token{start.Copy()}
	for depth := 1; depth > 0; {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch t.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
		toks = append(toks, xml.CopyToken(t))
	}
	decode := func(v interface{}) error {
		nd := xml.NewTokenDecoder(&pciTokens{toks: append([]xml.Token(nil), toks...)})
		nd.TypeFunc = d.TypeFunc
		t, err := nd.Token()
		if err != nil {
			return err
		}
		s := t.(xml.StartElement)
		return nd.DecodeElement(v, &s)
	}
	var this struct {
		This types.ManagedObjectReference `xml:"_this"`
	}
	if err := decode(&this); err != nil {
		return err
	}
	r.target = this.This
	inner := reflect.New(route.prev).Interface()
	if err := decode(inner); err != nil {
		return err
	}
	r.inner = inner
	r.This = taskModelRoute()
	return nil
}

// slowTaskBody answers a slowed call with the task, in the method's own response element
// (<Rename_TaskResponse><returnval type="Task">...).
type slowTaskBody struct {
	Res    *slowTaskResponse
	Fault_ *soap.Fault `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *slowTaskBody) Fault() *soap.Fault { return b.Fault_ }

type slowTaskResponse struct {
	method string
	task   types.ManagedObjectReference
}

func (r *slowTaskResponse) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	start.Name.Local = r.method + "Response"
	return e.EncodeElement(struct {
		Returnval types.ManagedObjectReference `xml:"returnval"`
	}{r.task}, start)
}

// resolveCall finds what Service.call would invoke for the request inner (decoded as the
// earlier registration of method wants it): the object its This names and the method, with
// the faults Service.call gives.
func resolveCall(ctx *simulator.Context, method string, inner interface{}) (mo.Reference, types.ManagedObjectReference, reflect.Value, *soap.Fault) {
	this := reflect.ValueOf(inner).Elem().FieldByName("This").Interface().(types.ManagedObjectReference)
	handler := ctx.Map.Get(this)
	if handler == nil {
		return nil, this, reflect.Value{}, simulator.Fault("managed object not found: "+this.String(), &types.ManagedObjectNotFound{Obj: this})
	}
	name := goMethodName(method)
	m := reflect.ValueOf(handler).MethodByName(name)
	if !m.IsValid() {
		return nil, this, m, simulator.Fault(fmt.Sprintf("%s does not implement: %s", this, method), &types.MethodNotFound{Receiver: this, Method: method})
	}
	if e, ok := handler.(mo.Entity); ok {
		for _, dm := range e.Entity().DisabledMethod {
			if dm == name {
				return nil, this, m, simulator.Fault(fmt.Sprintf("%s method is disabled: %s", this, method), &types.MethodDisabled{})
			}
		}
	}
	return handler, this, m, nil
}

// forwardCall invokes the request as Service.call would: handler locked, ctx.Caller set.
func forwardCall(ctx *simulator.Context, method string, inner interface{}) soap.HasFault {
	handler, this, m, f := resolveCall(ctx, method, inner)
	if f != nil {
		return &pciFaultBody{f}
	}
	var args, res []reflect.Value
	if m.Type().NumIn() == 2 {
		args = append(args, reflect.ValueOf(ctx))
	}
	args = append(args, reflect.ValueOf(inner))
	prev := ctx.Caller
	ctx.Map.WithLock(handler, func() {
		ctx.Caller = &this
		res = m.Call(args)
	})
	ctx.Caller = prev
	return res[0].Interface().(soap.HasFault)
}

// slow serves every slowed method (see the file comment).
func (*taskModel) slow(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	slowTaskMu.Lock()
	var delay time.Duration
	if route := slowTaskRoutes[r.method]; route != nil {
		delay = route.delay
	}
	slowTaskMu.Unlock()
	if delay <= 0 {
		return forwardCall(ctx, r.method, r.inner)
	}
	obj := ctx.Map.Get(r.target)
	if obj == nil {
		return &pciFaultBody{simulator.Fault("managed object not found: "+r.target.String(), &types.ManagedObjectNotFound{Obj: r.target})}
	}
	if _, _, _, f := resolveCall(ctx, r.method, r.inner); f != nil {
		return &pciFaultBody{f}
	}

	name := r.target.Value
	if e, ok := obj.(mo.Entity); ok {
		ctx.Map.WithLock(obj, func() { name = e.Entity().Name })
	}
	id := strings.TrimSuffix(r.method, "_Task")
	task := simulator.CreateTask(obj, id+"Task", nil) // info.name = r.method
	cancel := make(chan struct{})
	slowTaskRunMu.Lock()
	slowTaskRuns[task.Self] = cancel
	slowTaskRunMu.Unlock()
	reg := ctx.Map
	reg.WithLock(task, func() {
		reg.Update(task, []types.PropertyChange{
			{Name: "info.descriptionId", Val: r.target.Type + "." + strings.ToLower(id[:1]) + id[1:]},
			{Name: "info.entityName", Val: name},
			{Name: "info.startTime", Val: time.Now()},
			{Name: "info.state", Val: types.TaskInfoStateRunning},
			{Name: "info.cancelable", Val: true},
			{Name: "info.progress", Val: int32(0)},
		})
	})

	// The call's context outlives the call: give the goroutine its own copy.
	bg := *ctx
	go runSlowTask(&bg, task, r, delay, cancel)
	return &slowTaskBody{Res: &slowTaskResponse{method: r.method, task: task.Self}}
}

// slowTaskRuns holds, per running slow task, the channel CancelTask closes.
var (
	slowTaskRunMu sync.Mutex
	slowTaskRuns  = map[types.ManagedObjectReference]chan struct{}{}
)

// slowTaskCancelled wakes the slow task ref, if it is one, after CancelTask cancelled it.
func slowTaskCancelled(ref types.ManagedObjectReference) {
	slowTaskRunMu.Lock()
	defer slowTaskRunMu.Unlock()
	if c, ok := slowTaskRuns[ref]; ok {
		close(c)
		delete(slowTaskRuns, ref)
	}
}

func forgetSlowTask(ref types.ManagedObjectReference) {
	slowTaskRunMu.Lock()
	defer slowTaskRunMu.Unlock()
	delete(slowTaskRuns, ref)
}

// runSlowTask reports progress until delay has passed, then, unless the task was cancelled,
// does the work and finishes the task.
func runSlowTask(ctx *simulator.Context, task *simulator.Task, r *slowTaskRequest, delay time.Duration, cancel <-chan struct{}) {
	reg := ctx.Map
	start := time.Now()
	for i := 1; i <= slowTaskSteps; i++ {
		timer := time.NewTimer(time.Until(start.Add(delay * time.Duration(i) / slowTaskSteps)))
		select {
		case <-cancel:
			timer.Stop()
			return
		case <-timer.C:
		}
		if i == slowTaskSteps {
			break
		}
		progress := int32(100 * i / slowTaskSteps)
		reg.WithLock(task, func() {
			if task.Info.State == types.TaskInfoStateRunning && !task.Info.Cancelled {
				reg.Update(task, []types.PropertyChange{{Name: "info.progress", Val: progress}})
			}
		})
	}

	committed := false
	reg.WithLock(task, func() {
		if task.Info.State != types.TaskInfoStateRunning || task.Info.Cancelled {
			return
		}
		committed = true
		reg.Update(task, []types.PropertyChange{{Name: "info.cancelable", Val: false}})
	})
	forgetSlowTask(task.Self)
	if !committed {
		return
	}

	result, fault, msg := callInner(ctx, r)
	reg.WithLock(task, func() {
		changes := []types.PropertyChange{{Name: "info.completeTime", Val: time.Now()}}
		if fault != nil {
			changes = append(changes,
				types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
				types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{Fault: fault, LocalizedMessage: msg}})
		} else {
			changes = append(changes,
				types.PropertyChange{Name: "info.progress", Val: int32(100)},
				types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateSuccess},
				types.PropertyChange{Name: "info.result", Val: result})
		}
		reg.Update(task, changes)
	})
}

// callInner makes the slowed call and returns the outcome of the task it returns (waiting for
// it if it runs on), then hides that task.
func callInner(ctx *simulator.Context, r *slowTaskRequest) (types.AnyType, types.BaseMethodFault, string) {
	reg := ctx.Map
	res := forwardCall(ctx, r.method, r.inner)
	if f := res.Fault(); f != nil {
		if mf, ok := f.Detail.Fault.(types.BaseMethodFault); ok {
			return nil, mf, f.String
		}
		return nil, &types.SystemError{Reason: f.String}, f.String
	}
	rv := reflect.ValueOf(res).Elem().FieldByName("Res")
	var ref types.ManagedObjectReference
	if rv.IsValid() && rv.Kind() == reflect.Ptr && !rv.IsNil() {
		if v := rv.Elem().FieldByName("Returnval"); v.IsValid() {
			ref, _ = v.Interface().(types.ManagedObjectReference)
		}
	}
	inner, ok := reg.Get(ref).(*simulator.Task)
	if !ok {
		msg := fmt.Sprintf("%s returned no task", r.method)
		return nil, &types.SystemError{Reason: msg}, msg
	}
	var info types.TaskInfo
	for {
		reg.WithLock(inner, func() { info = inner.Info })
		if info.State == types.TaskInfoStateSuccess || info.State == types.TaskInfoStateError {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	hideTask(reg, inner)
	if info.Error != nil {
		return nil, info.Error.Fault, info.Error.LocalizedMessage
	}
	return info.Result, nil, ""
}

// hideTask removes a finished task from TaskManager.recentTask and from the registry.
func hideTask(reg *simulator.Registry, t *simulator.Task) {
	if si, ok := reg.Get(vim25.ServiceInstance).(*simulator.ServiceInstance); ok && si.Content.TaskManager != nil {
		if tm, ok := reg.Get(*si.Content.TaskManager).(*simulator.TaskManager); ok {
			reg.WithLock(tm, func() {
				keep := make([]types.ManagedObjectReference, 0, len(tm.RecentTask))
				for _, ref := range tm.RecentTask {
					if ref != t.Self {
						keep = append(keep, ref)
					}
				}
				if len(keep) != len(tm.RecentTask) {
					reg.Update(tm, []types.PropertyChange{{Name: "recentTask", Val: keep}})
				}
			})
		}
	}
	reg.Remove(t.Self)
}

// ---------------------------------------------------------------------------- slowed methods

// ceso addition: the task methods -slow-task can slow: every *_Task method of govmomi 0.24's
// simulator and of the ceso additions (RebootHost_Task, ConsolidateVMDisks_Task). Service.call
// finds them by name on the dispatcher; each hands the request to slow.

func (m *taskModel) AddDVPortgroupTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) AddHostTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) AddStandaloneHostTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CloneVAppTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CloneVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ConfigureStorageDrsForPodTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ConsolidateVMDisksTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CopyDatastoreFileTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CopyVirtualDiskTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateChildVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateDVSTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateDiskTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CreateVirtualDiskTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) CustomizeVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) DeleteDatastoreFileTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) DeleteSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) DeleteVStorageObjectTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) DeleteVirtualDiskTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) DestroyTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) EnterMaintenanceModeTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ExitMaintenanceModeTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) MoveDatastoreFileTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) MoveIntoFolderTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) MoveVirtualDiskTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) PowerOffVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) PowerOnMultiVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) PowerOnVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RebootHostTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ReconcileDatastoreInventoryTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ReconfigVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ReconfigureComputeResourceTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ReconfigureDVPortgroupTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ReconfigureDvsTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RegisterVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RelocateVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RemoveAllSnapshotsTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RemoveSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RenameTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) ResetVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RevertToCurrentSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) RevertToSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) SearchDatastoreSubFoldersTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) SearchDatastoreTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) SuspendVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) UpgradeVMTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
func (m *taskModel) VStorageObjectCreateSnapshotTask(ctx *simulator.Context, r *slowTaskRequest) soap.HasFault {
	return m.slow(ctx, r)
}
