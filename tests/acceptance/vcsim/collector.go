package main

// ceso addition: the PropertyCollector's update model (CreateFilter, DestroyPropertyFilter,
// WaitForUpdatesEx, WaitForUpdates, CheckForUpdates, CancelWaitForUpdates,
// DestroyPropertyCollector), modelled after the vSphere API reference (PropertyCollector,
// PropertyFilter, PropertyFilterSpec, WaitOptions, UpdateSet, PropertyFilterUpdate,
// ObjectUpdate, PropertyChange, the InvalidCollectorVersion and RequestCanceled faults).
//
// What vSphere does (the reference): a client creates filters on a collector (the session's
// default one or its own, from CreatePropertyCollector) and asks WaitForUpdatesEx for "the
// changes since the data version it knows". The first call, with the initial version "",
// reports every object of every filter as "enter" with the requested properties; later calls
// report "enter" (an object joined a filter's set, or the filter is new to the client),
// "modify" (changed properties only) and "leave". Every answer carries a new data version, and
// a version "may be passed ... more than once. Re-using a version allows a client to recover a
// change sequence after a transient failure on a previous call". A version that is "out of date
// or invalid" is answered with InvalidCollectorVersion. options.maxWaitSeconds: unset "wait as
// long as possible" (policy may still return null), 0 "one update calculation", N > 0 return
// null when nothing changed within N seconds; negative values are illegal, as are
// maxObjectUpdates <= 0. partialUpdates chooses between reporting a change to a nested property
// by its nested path ("info.state") or as the whole property named in the filter ("info").
// CancelWaitForUpdates makes the pending wait fail with RequestCanceled; DestroyPropertyFilter
// and DestroyPropertyCollector end filters (a destroyed filter is simply no longer reported).
// CheckForUpdates is a wait that never blocks; WaitForUpdates (deprecated) one that never
// returns null.
//
// Where govmomi 0.24's simulator falls short (simulator/property_collector.go):
//
//   - WaitForUpdatesEx iterates pc.Filter and type-asserts each session object while
//     DestroyPropertyFilter removes entries from it: destroying a filter of the collector while
//     a long poll is pending panics ("mo.Reference is nil, not *simulator.PropertyFilter"), the
//     HTTP server drops the connection, and the waiting client loses that long poll and every
//     update of every other filter it would have carried (they were taken from the collector's
//     queue and are gone).
//   - the changes are a queue of registry events per collector, not a comparison with what the
//     client has seen: a filter created while a long poll is pending is only reported once some
//     other object changes (the wait loop only looks at filters when an event arrives), and
//     events that arrive while no wait is pending accumulate forever.
//   - versions are fake: the first call answers "-", every later call echoes the version it was
//     given; a client that lost an answer cannot ask for it again (the events are gone), and an
//     unknown version is never refused.
//   - one cancel function per collector, overwritten by each wait; CreateFilter and
//     DestroyPropertyFilter change pc.Filter without any lock.
//
// What is modelled. Each collector (a key: session + collector reference, since the default
// collector is one object per session) has, under this file's mutex, its live filters and a
// short history of versions:
//
//   - A filter's state is what a RetrievePropertiesEx of its spec returns now (collected
//     through the simulator's own PropertyCollector.RetrievePropertiesEx, with
//     reportMissingObjectsInResults forced on so a vanished object is just absent): per object,
//     per property, the value and a 64-bit hash of its XML encoding (so changes made in place
//     to shared slices or pointers are still seen). A version records, per filter, the state
//     the client had when it received that version's answer. An answer for version V is the
//     difference between the current states and V's: "enter" with every property (and the
//     missingSet) for an object V's state lacks (every object of a filter V does not know),
//     "modify" with the changed properties (op assign; a property that became unset is an
//     assign without val), "leave" for an object that left; filters with nothing to report are
//     left out, destroyed filters are never reported again, and nothing is ever taken away
//     from another filter. With partialUpdates the changed properties are reported by their
//     deepest changed nested path within vSphere data objects ("info.progress"; arrays,
//     references and interface values are reported whole); without, by the property path named
//     in the filter.
//   - Versions are decimal numbers per collector ("1", "2", ...); each answer with content gets
//     the next one. The last 16 are kept: any of them can be asked again (a client that lost
//     answer N asks with N-1 again and gets every change since N-1 under a new version), ""
//     is the empty state (so it reports the full current state at once; with nothing to report
//     it waits like any version), and any other version (older, never issued, or not a
//     number) is answered InvalidCollectorVersion at once.
//   - Waking: a registry handler (PutObject/UpdateObject/RemoveObject) only marks the filters
//     whose last state contains the object (or names it in its objectSet) dirty, plus, for an
//     object put or removed, every filter with a traversal spec (its set may change), and kicks
//     one goroutine per registry. That goroutine waits 20 ms to coalesce a burst, re-collects
//     the dirty filters of collectors that have a pending wait (filters of collectors nobody
//     waits on stay dirty until someone does) and answers every pending wait that now has
//     something. A new filter is collected by CreateFilter itself and kicks the same goroutine,
//     so a pending wait reports its initial state within about 20 ms (plus -delay). Because
//     some simulator code changes objects without telling the registry (a folder's childEntity,
//     for one), every filter of a collector is also re-collected at most once a second while a
//     wait is pending (and at the start of a wait when the last full pass is older than that):
//     such changes are reported within about a second.
//   - maxWaitSeconds: absent waits up to 15 minutes (then answers null, which govmomi's
//     property.Wait and the project's client both treat as "ask again"); 0 collects (all
//     filters, at most once a second, else the dirty ones) and answers at once, null when
//     nothing changed; N waits up to N s and answers null (no returnval) on timeout. Negative
//     maxWaitSeconds and maxObjectUpdates are InvalidArgument; a positive maxObjectUpdates is
//     ignored (answers are never truncated, UpdateSet.truncated is never set). Several waits may
//     be pending on one collector; each is answered from its own version. A wait whose HTTP
//     client went away (connection closed, or reset by -fault-wait-reset, see faults.go) is
//     withdrawn without computing an answer; one answered before its connection died has
//     produced a version its client never saw, as on vCenter, and that client asks again with
//     the version it had.
//   - CancelWaitForUpdates answers every pending wait of the collector with RequestCanceled.
//     DestroyPropertyCollector does too, destroys its filters and forgets its versions (the
//     session's default collector is emptied that way but not unregistered: the simulator would
//     remove the one object every session's default collector is copied from). Logout and
//     TerminateSession drop the collectors of the sessions they end (their pending waits answer
//     NotAuthenticated).
//   - WaitForUpdates is a wait without maxWaitSeconds that answers an empty UpdateSet carrying
//     the version it was given if the 15-minute cap passes; CheckForUpdates is maxWaitSeconds 0.
//
// Not modelled: truncated updates (maxObjectUpdates), array element paths in partial updates
// (foo.arProp["key"], ops add/remove/indirectRemove), PropertyFilterUpdate.missingSet
// (objects of the objectSet that do not exist are silently absent), CreateFilter's validation
// of property paths (an unknown path is only reported in the enter's missingSet, as
// RetrievePropertiesEx does), session idle expiry (collectors of sessions that expire without
// Logout keep their state), per-session limits on filters.
//
// Filters stay the simulator's objects: CreateFilter, DestroyPropertyFilter and
// DestroyPropertyCollector are forwarded to its own methods (serialized by collectorOpMu, since
// they edit pc.Filter unlocked), so ctx.Session.Put registers each filter in its session and
// RetrievePropertiesEx of a collector's "filter" property or of a filter's "spec" keeps
// working. The simulator's own WaitForUpdatesEx/WaitForUpdates/CheckForUpdates and
// CancelWaitForUpdates are never entered (so its panic cannot happen, and it never registers
// itself as a registry handler, so its event queues do not grow).
//
// How the calls are reached: routed at decode time, as in cancel.go and pci.go: init registers
// one request type (collectorRequest) for the nine methods; its UnmarshalXML decodes govmomi's
// request type, keeps the target and points This at the stateless dispatcher (collectorModel).
// No other addition routes these methods. The HTTP wrapper of faults.go tags each wait request
// with an attribute (cesoRequest="N") naming its HTTP request's context, so a wait knows when
// its client is gone.
//
// Locking: collectorModel.mu (m.mu below) guards every collector's state; it is the innermost
// lock: the registry handler takes it while the simulator holds an object's lock, so nothing
// is collected, encoded, forwarded or registered while it is held. Collection runs without it,
// stamped, and is applied under it (an older collection never overwrites a newer one).
// collectorOpMu is taken before any object lock and never while m.mu is held.

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

const (
	// collectorCoalesce is how long the model's goroutine lets changes accumulate after a kick.
	collectorCoalesce = 20 * time.Millisecond
	// collectorSweep is how often every filter of a collector with a pending wait is collected.
	collectorSweep = time.Second
	// collectorHistory is how many versions per collector can be asked again.
	collectorHistory = 16
	// collectorMaxWait caps a wait without maxWaitSeconds.
	collectorMaxWait = 15 * time.Minute
	// collectorHTTPAttr is the attribute faults.go adds to a wait's request element.
	collectorHTTPAttr = "cesoRequest"
)

// msgInvalidCollectorVersion is what the InvalidCollectorVersion fault says.
const msgInvalidCollectorVersion = "The collector version is out of date or invalid."

// ---------------------------------------------------------------------------- dispatch

// ceso addition: collectorModelRef names the dispatcher in simulator.Map; clients never see it.
var collectorModelRef = types.ManagedObjectReference{Type: "CesoCollectorModel", Value: "ceso-collector-model"}

// ceso addition: collectorModel receives the routed requests. It holds no state (that is in
// pcModel, per registry); as a sync.Locker with no-op methods it opts out of the simulator's
// lock on the dispatch object.
type collectorModel struct {
	// ceso addition: an embedded mo type as first field, as the simulator expects of every
	// registry object (SearchIndex.FindByUuid, for one, inspects them all and panics otherwise).
	mo.ExtensibleManagedObject
}

func (*collectorModel) Reference() types.ManagedObjectReference { return collectorModelRef }
func (*collectorModel) Lock()                                   {}
func (*collectorModel) Unlock()                                 {}

// collectorMethods are the routed methods and govmomi's request type of each.
var collectorMethods = map[string]reflect.Type{
	"WaitForUpdatesEx":         reflect.TypeOf(types.WaitForUpdatesEx{}),
	"WaitForUpdates":           reflect.TypeOf(types.WaitForUpdates{}),
	"CheckForUpdates":          reflect.TypeOf(types.CheckForUpdates{}),
	"CreateFilter":             reflect.TypeOf(types.CreateFilter{}),
	"DestroyPropertyFilter":    reflect.TypeOf(types.DestroyPropertyFilter{}),
	"CancelWaitForUpdates":     reflect.TypeOf(types.CancelWaitForUpdates{}),
	"DestroyPropertyCollector": reflect.TypeOf(types.DestroyPropertyCollector{}),
	"Logout":                   reflect.TypeOf(types.Logout{}),
	"TerminateSession":         reflect.TypeOf(types.TerminateSession{}),
}

func init() {
	for name, std := range collectorMethods {
		if prev, ok := types.TypeFunc()(name); ok && prev != std {
			log.Printf("collector: %s was decoded as %v before collector.go routed it", name, prev)
		}
		types.Add(name, reflect.TypeOf(collectorRequest{}))
	}
}

var collectorRouteMu sync.Mutex

// collectorRoute registers the dispatcher if the current registry lacks it (a model's Create
// replaces the registry) and returns its reference.
func collectorRoute() types.ManagedObjectReference {
	collectorRouteMu.Lock()
	defer collectorRouteMu.Unlock()
	if simulator.Map.Get(collectorModelRef) == nil {
		simulator.Map.Put(&collectorModel{})
	}
	return collectorModelRef
}

// ceso addition: collectorRequest is the decoded form of every routed request.
type collectorRequest struct {
	This   types.ManagedObjectReference // the dispatcher, read by Service.call
	method string
	target types.ManagedObjectReference // the _this the client sent
	req    interface{}                  // govmomi's request, e.g. *types.WaitForUpdatesEx
	httpID string                       // the cesoRequest attribute (faults.go), if any
}

func (r *collectorRequest) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	rt, ok := collectorMethods[start.Name.Local]
	if !ok {
		return fmt.Errorf("ceso collector model: no route for %s", start.Name.Local)
	}
	for _, a := range start.Attr {
		if a.Name.Local == collectorHTTPAttr {
			r.httpID = a.Value
		}
	}
	v := reflect.New(rt).Interface()
	if err := d.DecodeElement(v, &start); err != nil {
		return err
	}
	r.method, r.req = start.Name.Local, v
	r.target = reflect.ValueOf(v).Elem().FieldByName("This").Interface().(types.ManagedObjectReference)
	r.This = collectorRoute()
	return nil
}

// collectorCall hands req to the object target names, as Service.call would: the session's
// object first (filters, private collectors and the session's default collector live there),
// same method-name mapping, disabled-method check, lock and ctx.Caller.
func collectorCall(ctx *simulator.Context, method string, target types.ManagedObjectReference, req interface{}) soap.HasFault {
	handler := ctx.Map.Get(target)
	if ctx.Session != nil {
		if h := ctx.Session.Get(target); h != nil {
			handler = h
		}
	}
	if handler == nil {
		return &pciFaultBody{simulator.Fault("managed object not found: "+target.String(), &types.ManagedObjectNotFound{Obj: target})}
	}
	name := goMethodName(method)
	m := reflect.ValueOf(handler).MethodByName(name)
	if !m.IsValid() {
		return &pciFaultBody{simulator.Fault(fmt.Sprintf("%s does not implement: %s", target, method), &types.MethodNotFound{Receiver: target, Method: method})}
	}
	if e, ok := handler.(mo.Entity); ok {
		for _, dm := range e.Entity().DisabledMethod {
			if dm == name {
				return &pciFaultBody{simulator.Fault(fmt.Sprintf("%s method is disabled: %s", target, method), &types.MethodDisabled{})}
			}
		}
	}
	var args, res []reflect.Value
	if m.Type().NumIn() == 2 {
		args = append(args, reflect.ValueOf(ctx))
	}
	args = append(args, reflect.ValueOf(req))
	prev := ctx.Caller
	ctx.Map.WithLock(handler, func() {
		ctx.Caller = &target
		res = m.Call(args)
	})
	ctx.Caller = prev
	return res[0].Interface().(soap.HasFault)
}

// ---------------------------------------------------------------------------- wait requests and HTTP contexts

var (
	collectorHTTPNext uint64
	collectorHTTPCtx  sync.Map // httpID -> context.Context
)

// collectorWaitStart matches the element of a wait method right after the SOAP Body tag.
var collectorWaitStart = regexp.MustCompile(`<(?:[\w-]+:)?Body[^>]*>\s*<((?:[\w-]+:)?(?:WaitForUpdatesEx|WaitForUpdates|CheckForUpdates))[\s/>]`)

// collectorTagRequest, for a wait request body, returns the body with its method element
// tagged with a fresh id bound to ctx (a wait ends when ctx does) and a release function; for
// any other body, the body unchanged and a no-op.
func collectorTagRequest(body []byte, ctx context.Context) ([]byte, func()) {
	loc := collectorWaitStart.FindSubmatchIndex(body)
	if loc == nil {
		return body, func() {}
	}
	id := strconv.FormatUint(atomic.AddUint64(&collectorHTTPNext, 1), 10)
	collectorHTTPCtx.Store(id, ctx)
	at := loc[3]
	out := make([]byte, 0, len(body)+32)
	out = append(out, body[:at]...)
	out = append(out, fmt.Sprintf(` %s="%s"`, collectorHTTPAttr, id)...)
	out = append(out, body[at:]...)
	return out, func() { collectorHTTPCtx.Delete(id) }
}

// collectorHTTPDone is closed when the HTTP request of a tagged wait ends (nil: never).
func collectorHTTPDone(id string) <-chan struct{} {
	if id == "" {
		return nil
	}
	if v, ok := collectorHTTPCtx.Load(id); ok {
		return v.(context.Context).Done()
	}
	return nil
}

// ---------------------------------------------------------------------------- state

// pcKey names one collector: the default collector is one object per session, so the session
// is part of the key.
type pcKey struct {
	session string
	ref     types.ManagedObjectReference
}

// pcModel is the update model of one registry.
type pcModel struct {
	reg *simulator.Registry

	mu         sync.Mutex
	cols       map[pcKey]*pcState
	filters    map[types.ManagedObjectReference]*filterState
	index      map[types.ManagedObjectReference]map[*filterState]struct{}
	traversing map[*filterState]struct{}
	stamp      uint64
	issued     uint64 // answers with content, all collectors (for /vcsim-counts)

	kick chan struct{}
	done chan struct{}
}

// pcState is one collector.
type pcState struct {
	key pcKey
	pc  *simulator.PropertyCollector
	// ctx is a copy of the latest call's context (its session), for collecting in the
	// background.
	ctx       simulator.Context
	filters   []*filterState // in creation order
	versions  []pcVersion    // oldest first, at most collectorHistory
	last      uint64
	waits     map[*pcWait]struct{}
	lastSweep time.Time
}

// pcVersion is what the client knew after receiving version n: the state of each filter.
type pcVersion struct {
	n     uint64
	known map[*filterState]*filterSnap
}

// pcWait is a pending wait: the state its client knows, and where its answer goes.
type pcWait struct {
	base map[*filterState]*filterSnap
	done chan pcAnswer // buffered: the answer is sent once, under m.mu
}

type pcAnswer struct {
	set   *types.UpdateSet
	fault *soap.Fault
}

// filterState is one filter.
type filterState struct {
	ref       types.ManagedObjectReference
	st        *pcState
	spec      types.PropertyFilterSpec // as collected: reportMissingObjectsInResults on
	partial   bool
	roots     []types.ManagedObjectReference
	traverses bool

	cur     *filterSnap // the latest collected state; nil until first collected
	dirty   bool
	seq     uint64 // bumped at every dirty mark
	applied uint64 // stamp of the collection cur comes from
	indexed []types.ManagedObjectReference
	gone    bool
}

// filterSnap is a filter's state at one collection. Immutable once applied; a collection that
// finds no change keeps the previous snapshot (and object snapshots), so equal states are
// equal pointers.
type filterSnap struct {
	order []types.ManagedObjectReference
	objs  map[types.ManagedObjectReference]*objSnap
}

type objSnap struct {
	names   []string
	props   map[string]*propNode
	missing []types.MissingProperty
}

// propNode is a property value and its hash; for partialUpdates filters, a vSphere data
// object's fields as children (names in field order).
type propNode struct {
	val   types.AnyType
	sum   uint64
	names []string
	kids  map[string]*propNode
}

var (
	collectorMu  sync.Mutex
	collectorCur *pcModel
	// collectorOpMu serializes the forwarded CreateFilter, DestroyPropertyFilter and
	// DestroyPropertyCollector (the simulator edits pc.Filter without a lock).
	collectorOpMu sync.Mutex
)

// collectorFor returns the model of reg, replacing the model of an earlier registry.
func collectorFor(reg *simulator.Registry) *pcModel {
	collectorMu.Lock()
	defer collectorMu.Unlock()
	if collectorCur != nil && collectorCur.reg == reg {
		return collectorCur
	}
	if collectorCur != nil {
		close(collectorCur.done)
		collectorCur.reg.RemoveHandler(&collectorWatcher{})
	}
	m := &pcModel{
		reg:        reg,
		cols:       map[pcKey]*pcState{},
		filters:    map[types.ManagedObjectReference]*filterState{},
		index:      map[types.ManagedObjectReference]map[*filterState]struct{}{},
		traversing: map[*filterState]struct{}{},
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	reg.AddHandler(&collectorWatcher{m: m})
	go m.loop()
	collectorCur = m
	return m
}

// collectorStats is the "collector" object of /vcsim-counts: live collectors, filters, pending
// waits, and answers with content so far.
func collectorStats() map[string]int {
	collectorMu.Lock()
	m := collectorCur
	collectorMu.Unlock()
	out := map[string]int{"collectors": 0, "filters": 0, "waits": 0, "answers": 0}
	if m == nil {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out["collectors"] = len(m.cols)
	out["filters"] = len(m.filters)
	for _, st := range m.cols {
		out["waits"] += len(st.waits)
	}
	out["answers"] = int(m.issued)
	return out
}

// ceso addition: collectorWatcher is the registry handler that marks filters dirty.
type collectorWatcher struct{ m *pcModel }

func (*collectorWatcher) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "CesoCollectorWatcher", Value: "ceso-collector-watcher"}
}
func (w *collectorWatcher) PutObject(o mo.Reference) { w.m.touch(o.Reference(), true) }
func (w *collectorWatcher) UpdateObject(o mo.Reference, _ []types.PropertyChange) {
	w.m.touch(o.Reference(), false)
}
func (w *collectorWatcher) RemoveObject(ref types.ManagedObjectReference) { w.m.touch(ref, true) }

// touch marks the filters that may see ref dirty; structural (put/remove) also marks every
// filter with a traversal spec. Called with the object's lock held: m.mu only, nothing else.
func (m *pcModel) touch(ref types.ManagedObjectReference, structural bool) {
	m.mu.Lock()
	hit := false
	for f := range m.index[ref] {
		f.mark()
		hit = true
	}
	if structural {
		for f := range m.traversing {
			f.mark()
			hit = true
		}
	}
	m.mu.Unlock()
	if hit {
		m.poke()
	}
}

func (f *filterState) mark() {
	f.dirty = true
	f.seq++
}

// poke wakes the model's goroutine.
func (m *pcModel) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// loop coalesces kicks, sweeps collectors with pending waits once a second, and answers waits.
func (m *pcModel) loop() {
	sweep := time.NewTicker(collectorSweep)
	defer sweep.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-m.kick:
			t := time.NewTimer(collectorCoalesce)
			select {
			case <-m.done:
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case <-m.kick:
			default:
			}
			m.refresh(nil, false)
		case <-sweep.C:
			m.refresh(nil, true)
		}
	}
}

// state returns the state of the collector target names (created on first use), or the fault
// a call on it gets.
func (m *pcModel) state(ctx *simulator.Context, target types.ManagedObjectReference, method string) (*pcState, *soap.Fault) {
	var obj mo.Reference
	if ctx.Session != nil {
		obj = ctx.Session.Get(target)
	} else {
		obj = ctx.Map.Get(target)
	}
	if obj == nil {
		return nil, simulator.Fault("managed object not found: "+target.String(), &types.ManagedObjectNotFound{Obj: target})
	}
	pc, ok := obj.(*simulator.PropertyCollector)
	if !ok {
		return nil, simulator.Fault(fmt.Sprintf("%s does not implement: %s", target, method), &types.MethodNotFound{Receiver: target, Method: method})
	}
	key := pcKey{ref: target}
	if ctx.Session != nil {
		key.session = ctx.Session.Key
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cols[key]
	if st != nil && st.pc != pc {
		m.dropLocked(st, simulator.Fault("", &types.RequestCanceled{}))
		st = nil
	}
	if st == nil {
		st = &pcState{key: key, pc: pc, waits: map[*pcWait]struct{}{}}
		m.cols[key] = st
	}
	st.ctx = *ctx
	st.ctx.Caller = nil
	return st, nil
}

// lookup returns what the client of version v knows.
func (st *pcState) lookup(v string) (map[*filterState]*filterSnap, bool) {
	if v == "" {
		return map[*filterState]*filterSnap{}, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, false
	}
	for _, ver := range st.versions {
		if ver.n == n {
			return ver.known, true
		}
	}
	return nil, false
}

// addLocked registers a new filter (not yet collected, so dirty).
func (m *pcModel) addLocked(f *filterState) {
	f.st.filters = append(f.st.filters, f)
	m.filters[f.ref] = f
	if f.traverses {
		m.traversing[f] = struct{}{}
	}
	f.mark()
	m.reindexLocked(f, f.roots)
}

// removeLocked forgets a filter: it is no longer collected nor reported.
func (m *pcModel) removeLocked(f *filterState) {
	if f.gone {
		return
	}
	f.gone = true
	st := f.st
	for i, g := range st.filters {
		if g == f {
			st.filters = append(st.filters[:i:i], st.filters[i+1:]...)
			break
		}
	}
	delete(m.filters, f.ref)
	delete(m.traversing, f)
	m.reindexLocked(f, nil)
}

// reindexLocked makes refs the objects whose changes mark f dirty.
func (m *pcModel) reindexLocked(f *filterState, refs []types.ManagedObjectReference) {
	for _, ref := range f.indexed {
		if s := m.index[ref]; s != nil {
			delete(s, f)
			if len(s) == 0 {
				delete(m.index, ref)
			}
		}
	}
	f.indexed = refs
	for _, ref := range refs {
		s := m.index[ref]
		if s == nil {
			s = map[*filterState]struct{}{}
			m.index[ref] = s
		}
		s[f] = struct{}{}
	}
}

// dropLocked ends a collector: its waits answer fault, its filters are forgotten.
func (m *pcModel) dropLocked(st *pcState, fault *soap.Fault) []*filterState {
	for w := range st.waits {
		w.done <- pcAnswer{fault: fault}
		delete(st.waits, w)
	}
	fs := append([]*filterState(nil), st.filters...)
	for _, f := range fs {
		m.removeLocked(f)
	}
	st.versions = nil
	if m.cols[st.key] == st {
		delete(m.cols, st.key)
	}
	return fs
}

// ---------------------------------------------------------------------------- collecting

type collectJob struct {
	f     *filterState
	seq   uint64
	stamp uint64
	ctx   simulator.Context
	pc    *simulator.PropertyCollector
}

// refresh collects the dirty filters of sts (nil: of every collector with a pending wait; all
// their filters when sweep, or when their last full pass is a second old) and answers the
// pending waits of those collectors.
func (m *pcModel) refresh(sts []*pcState, sweep bool) {
	now := time.Now()
	m.mu.Lock()
	if sts == nil {
		for _, st := range m.cols {
			if len(st.waits) > 0 {
				sts = append(sts, st)
			}
		}
	}
	var jobs []collectJob
	for _, st := range sts {
		if sweep || now.Sub(st.lastSweep) >= collectorSweep {
			st.lastSweep = now
			for _, f := range st.filters {
				f.mark()
			}
		}
		for _, f := range st.filters {
			if f.dirty && !f.gone {
				m.stamp++
				jobs = append(jobs, collectJob{f: f, seq: f.seq, stamp: m.stamp, ctx: st.ctx, pc: st.pc})
			}
		}
	}
	m.mu.Unlock()

	snaps := make([]*filterSnap, len(jobs))
	for i := range jobs {
		snaps[i], _ = collectFilter(&jobs[i].ctx, jobs[i].pc, jobs[i].f)
	}

	m.mu.Lock()
	for i, j := range jobs {
		m.applyLocked(j.f, snaps[i], j.seq, j.stamp)
	}
	for _, st := range sts {
		m.answerLocked(st)
	}
	m.mu.Unlock()
}

// collectFilter reads f's objects and properties now, through the simulator's
// RetrievePropertiesEx.
func collectFilter(ctx *simulator.Context, pc *simulator.PropertyCollector, f *filterState) (*filterSnap, *soap.Fault) {
	c := *ctx
	c.Caller = nil
	res := pc.RetrievePropertiesEx(&c, &types.RetrievePropertiesEx{This: f.st.key.ref, SpecSet: []types.PropertyFilterSpec{f.spec}})
	if fault := res.Fault(); fault != nil {
		return nil, fault
	}
	snap := &filterSnap{objs: map[types.ManagedObjectReference]*objSnap{}}
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return snap, nil
	}
	for _, oc := range body.Res.Returnval.Objects {
		if _, dup := snap.objs[oc.Obj]; dup {
			continue
		}
		o := &objSnap{props: map[string]*propNode{}, missing: oc.MissingSet}
		for _, p := range oc.PropSet {
			if p.Val == nil {
				continue
			}
			if _, dup := o.props[p.Name]; dup {
				continue
			}
			n := newPropNode(p.Val, f.partial)
			if n == nil {
				continue
			}
			n.val = p.Val
			o.names = append(o.names, p.Name)
			o.props[p.Name] = n
		}
		snap.order = append(snap.order, oc.Obj)
		snap.objs[oc.Obj] = o
	}
	return snap, nil
}

// applyLocked makes snap (a collection started at stamp, when f's dirty count was seq) f's
// state, keeping the previous snapshots of whatever did not change.
func (m *pcModel) applyLocked(f *filterState, snap *filterSnap, seq, stamp uint64) {
	if f.gone || stamp < f.applied {
		return
	}
	f.applied = stamp
	if f.seq == seq {
		f.dirty = false
	}
	if snap == nil {
		return // the collection failed: keep the last state
	}
	old := f.cur
	same := old != nil && len(old.order) == len(snap.order)
	for i, ref := range snap.order {
		if old != nil {
			if o := old.objs[ref]; o != nil && sameObj(o, snap.objs[ref]) {
				snap.objs[ref] = o
			} else {
				same = false
			}
			if same && old.order[i] != ref {
				same = false
			}
		}
	}
	if same {
		return
	}
	f.cur = snap
	refs := append([]types.ManagedObjectReference(nil), f.roots...)
	for _, ref := range snap.order {
		refs = append(refs, ref)
	}
	m.reindexLocked(f, refs)
}

func sameObj(a, b *objSnap) bool {
	if len(a.names) != len(b.names) || len(a.missing) != len(b.missing) {
		return false
	}
	for i, name := range a.names {
		if b.names[i] != name || a.props[name].sum != b.props[name].sum {
			return false
		}
	}
	return true
}

// newPropNode hashes val; with deep, a vSphere data object gets its fields as children. nil
// for a value that is unset.
func newPropNode(val interface{}, deep bool) *propNode {
	if val == nil {
		return nil
	}
	if deep {
		rv := reflect.ValueOf(val)
		for rv.Kind() == reflect.Ptr || rv.Kind() == reflect.Interface {
			if rv.IsNil() {
				return nil
			}
			rv = rv.Elem()
		}
		if descendable(rv.Type()) {
			n := &propNode{val: val, kids: map[string]*propNode{}}
			h := fnv.New64a()
			fmt.Fprintf(h, "%s{", rv.Type())
			eachField(rv, func(name string, fv reflect.Value) {
				child := newPropNode(fieldVal(fv), true)
				if child == nil {
					return
				}
				if _, dup := n.kids[name]; dup {
					return
				}
				n.names = append(n.names, name)
				n.kids[name] = child
				fmt.Fprintf(h, "%s=%x;", name, child.sum)
			})
			n.sum = h.Sum64()
			return n
		}
	}
	return &propNode{val: val, sum: hashValue(val)}
}

var typesPkg = reflect.TypeOf(types.TaskInfo{}).PkgPath()

// descendable: a vSphere data object (arrays, references and non-vSphere structs like
// time.Time are leaves).
func descendable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t.PkgPath() == typesPkg &&
		!strings.HasPrefix(t.Name(), "ArrayOf") && t != reflect.TypeOf(types.ManagedObjectReference{})
}

// eachField calls fn for each exported field of struct rv, by its XML name, flattening
// embedded structs (DynamicData, base types).
func eachField(rv reflect.Value, fn func(string, reflect.Value)) {
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		sf := rt.Field(i)
		if sf.PkgPath != "" {
			continue
		}
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			eachField(rv.Field(i), fn)
			continue
		}
		name := strings.Split(sf.Tag.Get("xml"), ",")[0]
		if name == "" || name == "-" {
			name = strings.ToLower(sf.Name[:1]) + sf.Name[1:]
		}
		fn(name, rv.Field(i))
	}
}

// fieldVal is a nested field's value as a PropertyChange carries it: nil when unset (nil
// pointer or interface, empty slice or string), structs by value, slices as ArrayOf types.
func fieldVal(fv reflect.Value) interface{} {
	switch fv.Kind() {
	case reflect.Ptr, reflect.Interface:
		if fv.IsNil() {
			return nil
		}
		if fv.Kind() == reflect.Ptr {
			return fieldVal(fv.Elem())
		}
		return fv.Interface()
	case reflect.Slice:
		if fv.Len() == 0 {
			return nil
		}
		return wrapArray(fv)
	case reflect.String:
		if fv.Len() == 0 {
			return nil
		}
	}
	return fv.Interface()
}

// wrapArray converts a slice to the ArrayOf type the wire carries ([]string -> ArrayOfString).
func wrapArray(fv reflect.Value) interface{} {
	elem := fv.Type().Elem()
	var name string
	switch elem.Kind() {
	case reflect.String:
		name = "String"
	case reflect.Int16:
		name = "Short"
	case reflect.Int32:
		name = "Int"
	case reflect.Int64:
		name = "Long"
	case reflect.Uint8:
		name = "Byte"
	case reflect.Bool:
		name = "Boolean"
	default:
		name = strings.TrimPrefix(elem.Name(), "Base")
	}
	if elem.Kind() == reflect.String && elem.Name() != "string" {
		name = "String" // enums are strings on the wire
	}
	at, ok := types.TypeFunc()("ArrayOf" + name)
	if !ok {
		return fv.Interface()
	}
	a := reflect.New(at)
	field := a.Elem().FieldByName(name)
	if !field.IsValid() || !fv.Type().ConvertibleTo(field.Type()) {
		if field.IsValid() && field.Kind() == reflect.Slice && elem.ConvertibleTo(field.Type().Elem()) {
			s := reflect.MakeSlice(field.Type(), fv.Len(), fv.Len())
			for i := 0; i < fv.Len(); i++ {
				s.Index(i).Set(fv.Index(i).Convert(field.Type().Elem()))
			}
			field.Set(s)
			return a.Interface()
		}
		return fv.Interface()
	}
	field.Set(fv.Convert(field.Type()))
	return a.Interface()
}

// hashValue hashes a value's XML encoding (JSON, or its Go syntax, if that fails).
func hashValue(v interface{}) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%T|", v)
	if b, err := xml.Marshal(v); err == nil {
		_, _ = h.Write(b)
	} else if b, err := json.Marshal(v); err == nil {
		_, _ = h.Write(b)
	} else {
		fmt.Fprintf(h, "%#v", v)
	}
	return h.Sum64()
}

// ---------------------------------------------------------------------------- answering

// answerLocked answers every pending wait of st that has something to report.
func (m *pcModel) answerLocked(st *pcState) {
	for w := range st.waits {
		if set := m.diffLocked(st, w.base); set != nil {
			w.done <- pcAnswer{set: set}
			delete(st.waits, w)
		}
	}
}

// diffLocked is the UpdateSet (with a new version) from the state base to now, nil if equal.
func (m *pcModel) diffLocked(st *pcState, base map[*filterState]*filterSnap) *types.UpdateSet {
	var fus []types.PropertyFilterUpdate
	for _, f := range st.filters {
		if f.cur == nil || base[f] == f.cur {
			continue
		}
		if os := diffFilter(f, base[f], f.cur); len(os) > 0 {
			fus = append(fus, types.PropertyFilterUpdate{Filter: f.ref, ObjectSet: os})
		}
	}
	if len(fus) == 0 {
		return nil
	}
	st.last++
	m.issued++
	known := make(map[*filterState]*filterSnap, len(st.filters))
	for _, f := range st.filters {
		if f.cur != nil {
			known[f] = f.cur
		}
	}
	st.versions = append(st.versions, pcVersion{n: st.last, known: known})
	if len(st.versions) > collectorHistory {
		st.versions = append(st.versions[:0:0], st.versions[len(st.versions)-collectorHistory:]...)
	}
	return &types.UpdateSet{Version: strconv.FormatUint(st.last, 10), FilterSet: fus}
}

// diffFilter lists the object updates from old (nil: the client does not know the filter) to
// cur.
func diffFilter(f *filterState, old, cur *filterSnap) []types.ObjectUpdate {
	var out []types.ObjectUpdate
	for _, ref := range cur.order {
		n := cur.objs[ref]
		var o *objSnap
		if old != nil {
			o = old.objs[ref]
		}
		switch {
		case o == nil:
			u := types.ObjectUpdate{Kind: types.ObjectUpdateKindEnter, Obj: ref, MissingSet: n.missing}
			for _, name := range n.names {
				u.ChangeSet = append(u.ChangeSet, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: n.props[name].val})
			}
			out = append(out, u)
		case o != n:
			var cs []types.PropertyChange
			for _, name := range n.names {
				if f.partial {
					diffNode(name, o.props[name], n.props[name], &cs)
				} else if p := o.props[name]; p == nil || p.sum != n.props[name].sum {
					cs = append(cs, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: n.props[name].val})
				}
			}
			for _, name := range o.names {
				if n.props[name] == nil {
					cs = append(cs, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign})
				}
			}
			if len(cs) > 0 {
				out = append(out, types.ObjectUpdate{Kind: types.ObjectUpdateKindModify, Obj: ref, ChangeSet: cs})
			}
		}
	}
	if old != nil {
		for _, ref := range old.order {
			if cur.objs[ref] == nil {
				out = append(out, types.ObjectUpdate{Kind: types.ObjectUpdateKindLeave, Obj: ref})
			}
		}
	}
	return out
}

// diffNode reports the deepest changed paths between two values of a partialUpdates filter.
func diffNode(path string, o, n *propNode, cs *[]types.PropertyChange) {
	switch {
	case o == nil && n == nil:
	case n == nil:
		*cs = append(*cs, types.PropertyChange{Name: path, Op: types.PropertyChangeOpAssign})
	case o == nil || o.kids == nil || n.kids == nil:
		if o == nil || o.sum != n.sum {
			*cs = append(*cs, types.PropertyChange{Name: path, Op: types.PropertyChangeOpAssign, Val: n.val})
		}
	case o.sum != n.sum:
		for _, name := range n.names {
			diffNode(path+"."+name, o.kids[name], n.kids[name], cs)
		}
		for _, name := range o.names {
			if n.kids[name] == nil {
				diffNode(path+"."+name, o.kids[name], nil, cs)
			}
		}
	}
}

// ---------------------------------------------------------------------------- waiting

// wait answers a wait on r's collector from version: an UpdateSet, nil (nothing within
// maxWait; maxWait < 0: the 15-minute cap), or a fault.
func (m *pcModel) wait(ctx *simulator.Context, r *collectorRequest, version string, maxWait time.Duration) (*types.UpdateSet, *soap.Fault) {
	st, fault := m.state(ctx, r.target, r.method)
	if fault != nil {
		return nil, fault
	}
	gone := collectorHTTPDone(r.httpID)
	select {
	case <-gone:
		return nil, simulator.Fault("", &types.RequestCanceled{})
	default:
	}
	m.mu.Lock()
	if m.cols[st.key] != st { // destroyed meanwhile
		m.mu.Unlock()
		return nil, simulator.Fault("managed object not found: "+r.target.String(), &types.ManagedObjectNotFound{Obj: r.target})
	}
	base, ok := st.lookup(version)
	if !ok {
		m.mu.Unlock()
		return nil, simulator.Fault(msgInvalidCollectorVersion, &types.InvalidCollectorVersion{})
	}
	w := &pcWait{base: base, done: make(chan pcAnswer, 1)}
	st.waits[w] = struct{}{}
	m.mu.Unlock()

	m.refresh([]*pcState{st}, false)

	var expired <-chan time.Time
	if maxWait != 0 {
		if maxWait < 0 || maxWait > collectorMaxWait {
			maxWait = collectorMaxWait
		}
		t := time.NewTimer(maxWait)
		defer t.Stop()
		expired = t.C
		select {
		case a := <-w.done:
			return a.set, a.fault
		case <-expired:
		case <-gone:
		}
	}
	m.mu.Lock()
	_, pending := st.waits[w]
	delete(st.waits, w)
	m.mu.Unlock()
	if !pending { // answered meanwhile
		a := <-w.done
		return a.set, a.fault
	}
	select {
	case <-gone:
		return nil, simulator.Fault("", &types.RequestCanceled{})
	default:
	}
	return nil, nil
}

// waitOptions reads WaitOptions: the wait (-1: none given), or InvalidArgument.
func waitOptions(o *types.WaitOptions) (time.Duration, *soap.Fault) {
	if o == nil {
		return -1, nil
	}
	if o.MaxObjectUpdates < 0 {
		return 0, simulator.Fault("A specified parameter was not correct: options.maxObjectUpdates", &types.InvalidArgument{InvalidProperty: "options.maxObjectUpdates"})
	}
	if o.MaxWaitSeconds == nil {
		return -1, nil
	}
	if *o.MaxWaitSeconds < 0 {
		return 0, simulator.Fault("A specified parameter was not correct: options.maxWaitSeconds", &types.InvalidArgument{InvalidProperty: "options.maxWaitSeconds"})
	}
	return time.Duration(*o.MaxWaitSeconds) * time.Second, nil
}

// WaitForUpdatesEx (ceso addition) answers from the model; see the file comment.
func (*collectorModel) WaitForUpdatesEx(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	req := r.req.(*types.WaitForUpdatesEx)
	body := &methods.WaitForUpdatesExBody{}
	maxWait, fault := waitOptions(req.Options)
	if fault == nil {
		var set *types.UpdateSet
		set, fault = collectorFor(ctx.Map).wait(ctx, r, req.Version, maxWait)
		if fault == nil {
			body.Res = &types.WaitForUpdatesExResponse{Returnval: set}
		}
	}
	body.Fault_ = fault
	return body
}

// WaitForUpdates (ceso addition): a wait without maxWaitSeconds that never answers null.
func (*collectorModel) WaitForUpdates(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	req := r.req.(*types.WaitForUpdates)
	body := &methods.WaitForUpdatesBody{}
	set, fault := collectorFor(ctx.Map).wait(ctx, r, req.Version, -1)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	if set == nil {
		set = &types.UpdateSet{Version: req.Version}
	}
	body.Res = &types.WaitForUpdatesResponse{Returnval: *set}
	return body
}

// CheckForUpdates (ceso addition): one update calculation, null when nothing changed.
func (*collectorModel) CheckForUpdates(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	req := r.req.(*types.CheckForUpdates)
	body := &methods.CheckForUpdatesBody{}
	set, fault := collectorFor(ctx.Map).wait(ctx, r, req.Version, 0)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.CheckForUpdatesResponse{Returnval: set}
	return body
}

// CancelWaitForUpdates (ceso addition) answers the collector's pending waits RequestCanceled.
func (*collectorModel) CancelWaitForUpdates(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	m := collectorFor(ctx.Map)
	st, fault := m.state(ctx, r.target, r.method)
	if fault != nil {
		return &methods.CancelWaitForUpdatesBody{Fault_: fault}
	}
	m.mu.Lock()
	for w := range st.waits {
		w.done <- pcAnswer{fault: simulator.Fault("", &types.RequestCanceled{})}
		delete(st.waits, w)
	}
	m.mu.Unlock()
	return &methods.CancelWaitForUpdatesBody{Res: &types.CancelWaitForUpdatesResponse{}}
}

// ---------------------------------------------------------------------------- filters and collectors

// CreateFilter (ceso addition) creates the simulator's filter, then collects its initial state
// and wakes the collector's pending waits, which report it as enter.
func (*collectorModel) CreateFilter(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	req := r.req.(*types.CreateFilter)
	m := collectorFor(ctx.Map)
	st, fault := m.state(ctx, r.target, r.method)
	if fault != nil {
		return &methods.CreateFilterBody{Fault_: fault}
	}
	collectorOpMu.Lock()
	res := collectorCall(ctx, r.method, r.target, req)
	collectorOpMu.Unlock()
	body, ok := res.(*methods.CreateFilterBody)
	if !ok || body.Fault_ != nil || body.Res == nil {
		return res
	}

	f := &filterState{ref: body.Res.Returnval, st: st, spec: req.Spec, partial: req.PartialUpdates}
	f.spec.ObjectSet = append([]types.ObjectSpec(nil), req.Spec.ObjectSet...)
	f.spec.ReportMissingObjectsInResults = types.NewBool(true)
	for _, o := range req.Spec.ObjectSet {
		f.roots = append(f.roots, o.Obj)
		if len(o.SelectSet) > 0 {
			f.traverses = true
		}
	}
	m.mu.Lock()
	if m.cols[st.key] != st { // destroyed meanwhile
		m.mu.Unlock()
		return res
	}
	m.addLocked(f)
	m.stamp++
	seq, stamp := f.seq, m.stamp
	c := st.ctx
	m.mu.Unlock()

	snap, fault := collectFilter(&c, st.pc, f)
	if fault != nil {
		// The spec cannot be collected (e.g. a SelectionSpec naming no TraversalSpec): refuse
		// the filter, as vSphere refuses an invalid spec.
		m.mu.Lock()
		m.removeLocked(f)
		m.mu.Unlock()
		collectorOpMu.Lock()
		collectorCall(ctx, "DestroyPropertyFilter", f.ref, &types.DestroyPropertyFilter{This: f.ref})
		collectorOpMu.Unlock()
		return &methods.CreateFilterBody{Fault_: fault}
	}
	m.mu.Lock()
	m.applyLocked(f, snap, seq, stamp)
	m.mu.Unlock()
	m.poke()
	return res
}

// DestroyPropertyFilter (ceso addition) destroys the simulator's filter and forgets it here.
func (*collectorModel) DestroyPropertyFilter(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	m := collectorFor(ctx.Map)
	collectorOpMu.Lock()
	res := collectorCall(ctx, r.method, r.target, r.req)
	collectorOpMu.Unlock()
	if res.Fault() == nil {
		m.mu.Lock()
		if f := m.filters[r.target]; f != nil {
			m.removeLocked(f)
		}
		m.mu.Unlock()
	}
	return res
}

// DestroyPropertyCollector (ceso addition) cancels the collector's waits, destroys its filters
// and the collector (the session's default collector is only emptied).
func (*collectorModel) DestroyPropertyCollector(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	m := collectorFor(ctx.Map)
	st, fault := m.state(ctx, r.target, r.method)
	if fault != nil {
		return &methods.DestroyPropertyCollectorBody{Fault_: fault}
	}
	m.mu.Lock()
	fs := m.dropLocked(st, simulator.Fault("", &types.RequestCanceled{}))
	m.mu.Unlock()
	collectorOpMu.Lock()
	defer collectorOpMu.Unlock()
	for _, f := range fs {
		collectorCall(ctx, "DestroyPropertyFilter", f.ref, &types.DestroyPropertyFilter{This: f.ref})
	}
	if isDefaultCollector(ctx, r.target) {
		return &methods.DestroyPropertyCollectorBody{Res: &types.DestroyPropertyCollectorResponse{}}
	}
	return collectorCall(ctx, r.method, r.target, r.req)
}

// isDefaultCollector: ref is the service content's property collector.
func isDefaultCollector(ctx *simulator.Context, ref types.ManagedObjectReference) bool {
	si, ok := ctx.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	return ok && si.Content.PropertyCollector == ref
}

// Logout (ceso addition) ends the session as the simulator does, then drops its collectors.
func (*collectorModel) Logout(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	var key string
	if ctx.Session != nil {
		key = ctx.Session.Key
	}
	res := collectorCall(ctx, r.method, r.target, r.req)
	if res.Fault() == nil && key != "" {
		collectorFor(ctx.Map).dropSessions(map[string]bool{key: true})
	}
	return res
}

// TerminateSession (ceso addition) ends the sessions as the simulator does, then drops their
// collectors.
func (*collectorModel) TerminateSession(ctx *simulator.Context, r *collectorRequest) soap.HasFault {
	res := collectorCall(ctx, r.method, r.target, r.req)
	if res.Fault() == nil {
		ids := map[string]bool{}
		for _, id := range r.req.(*types.TerminateSession).SessionId {
			ids[id] = true
		}
		collectorFor(ctx.Map).dropSessions(ids)
	}
	return res
}

// dropSessions forgets the collectors of the given sessions; their waits answer
// NotAuthenticated.
func (m *pcModel) dropSessions(ids map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, st := range m.cols {
		if ids[key.session] {
			m.dropLocked(st, simulator.Fault("The session is not authenticated.", &types.NotAuthenticated{}))
		}
	}
}
