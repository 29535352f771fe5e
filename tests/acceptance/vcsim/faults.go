package main

// ceso addition: fault injection on the SOAP endpoint, so that a client's handling of lost
// answers, dropped connections and server faults can be exercised deterministically.
//
// What vSphere does: nothing on purpose, but a real vCenter does answer a long poll with a
// SOAP fault now and then (SystemError, "A general system error occurred: ..." while its
// services restart, for one), and load balancers, proxies and idle timeouts drop connections
// while a call is pending: before the server saw the request, after it acted (the task was
// started, the VM exists) but before the answer arrived, or in the middle of a
// WaitForUpdatesEx long poll. The vSphere API reference tells a client how to recover: a
// WaitForUpdatesEx version "may be passed ... more than once. Re-using a version allows a
// client to recover a change sequence after a transient failure on a previous call" (see
// collector.go for how versions are modelled here).
//
// What the simulator lacks: every call is answered, at once and completely.
//
// What is modelled (flags registered here, parsed by main's flag.Parse; all draws are
// deterministic given -fault-seed: the n-th eligible call of a method gets the same decision
// for the same seed, whatever the other methods do):
//
//   - -fault-wait-error P: that share (0..1) of WaitForUpdatesEx and WaitForUpdates calls is
//     answered at once with a SOAP fault (HTTP 500, faultcode ServerFaultCode, faultstring "A
//     general system error occurred: injected", detail SystemError with reason "injected"),
//     without reaching the collector: its state is untouched, the client's version stays good.
//   - -fault-wait-reset P: that share of WaitForUpdatesEx and WaitForUpdates calls runs, its
//     answer is never sent, and the connection is reset (TCP RST: hijacked, SO_LINGER 0,
//     closed) after a random part of its wait has elapsed: a uniform draw in [0, W), W being
//     the call's maxWaitSeconds (30 s when it has none; 0 resets it as soon as it has
//     answered). If the wait answered before that moment, its answer (and version) was
//     computed and lost, as when vCenter's answer dies on the way; otherwise the wait is
//     withdrawn when the connection is reset and computes nothing. Either way the client's
//     previous version still works (collector.go keeps 16).
//   - -fault-reset-before P: that share of the calls of -fault-methods get their connection
//     reset before the server acts: the request is not executed at all.
//   - -fault-reset-after P: that share of the calls of -fault-methods are executed (the
//     method ran, its effects are real: a *_Task method's task exists and runs, CreateFilter's
//     filter exists, ...) and then the connection is reset instead of answering.
//     A call drawn for both is reset before.
//   - -fault-methods M1,M2,...: the methods -fault-reset-before/-after apply to; default every
//     method except WaitForUpdatesEx and WaitForUpdates.
//   - -fault-after-calls N: nothing is injected into the first N SOAP calls (all methods
//     counted), e.g. to let a client log in and set up first.
//   - -fault-seed S (default 1).
//
// Never injected: the login path, so clients can always connect: RetrieveServiceContent,
// Login*, CloneSession, AcquireCloneTicket, Logout, SessionIsActive, any other call on the
// SessionManager or the ServiceInstance, PbmRetrieveServiceContent, and RetrieveProperties(Ex)
// of the SessionManager or the ServiceInstance (a client's "is my session alive" check).
// Only POSTs to /sdk are considered (not /pbm, /rest, /folder).
//
// Counting: GET /vcsim-counts (main.go) carries "injected": {"wait_error": n, "wait_reset": n,
// "wait_reset_answer_lost": n (the resets that came after the wait had answered),
// "reset_before": {method: n}, "reset_after": {method: n}, "stall": n (transfer.go)} and
// "panics": n, the Go panics recovered from any HTTP handler (each is logged with its stack
// and the connection dropped, as net/http does; http.ErrAbortHandler, which this file uses
// itself when it cannot hijack a connection, is not counted).
//
// The HTTP wrapper is also where each WaitForUpdatesEx/WaitForUpdates/CheckForUpdates request
// is tagged with its HTTP request's context (collectorTagRequest, collector.go), so a wait
// whose client went away is withdrawn. It runs inside main's call counter, so injected calls
// are counted in "methods" like any other.

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ceso addition: the fault injection flags (see the file comment).
var (
	faultSeed        = flag.Int64("fault-seed", 1, "seed of every fault injection draw")
	faultWaitError   = flag.Float64("fault-wait-error", 0, "share (0..1) of WaitForUpdatesEx/WaitForUpdates calls answered with a SystemError SOAP fault instead of running")
	faultWaitReset   = flag.Float64("fault-wait-reset", 0, "share (0..1) of WaitForUpdatesEx/WaitForUpdates calls whose connection is reset after a random part of their wait, unanswered")
	faultResetBefore = flag.Float64("fault-reset-before", 0, "share (0..1) of -fault-methods calls whose connection is reset before they run")
	faultResetAfter  = flag.Float64("fault-reset-after", 0, "share (0..1) of -fault-methods calls whose connection is reset after they ran, unanswered")
	faultMethods     = flag.String("fault-methods", "", "comma-separated methods -fault-reset-before/-after apply to (default: all but WaitForUpdatesEx and WaitForUpdates; never the login path)")
	faultAfterCalls  = flag.Int("fault-after-calls", 0, "inject nothing into the first N SOAP calls")
)

// faultWaitWindow is W for a wait without maxWaitSeconds.
const faultWaitWindow = 30 * time.Second

// faultLoginMethods are never injected.
var faultLoginMethods = map[string]bool{
	"RetrieveServiceContent": true, "PbmRetrieveServiceContent": true,
	"Login": true, "LoginByToken": true, "LoginExtensionByCertificate": true,
	"LoginExtensionBySubjectName": true, "LoginExtensionByPrivateKey": true, "LoginBySSPI": true,
	"LoginBySessionTicket": true, "ImpersonateUser": true,
	"CloneSession": true, "AcquireCloneTicket": true, "Logout": true, "SessionIsActive": true,
}

var faultWaitMethods = map[string]bool{"WaitForUpdatesEx": true, "WaitForUpdates": true}

var (
	faultThisType   = regexp.MustCompile(`<(?:[\w-]+:)?_this\b[^>]*\btype="([^"]+)"`)
	faultSessionObj = regexp.MustCompile(`<(?:[\w-]+:)?obj\b[^>]*\btype="(?:SessionManager|ServiceInstance)"`)
	faultMaxWait    = regexp.MustCompile(`<(?:[\w-]+:)?maxWaitSeconds>\s*(-?\d+)\s*<`)
)

// ---------------------------------------------------------------------------- counts

var faultStats struct {
	sync.Mutex
	waitError, waitReset, waitResetLost, stall, panics int
	before, after                                      map[string]int
}

func resetFaultStats() {
	faultStats.Lock()
	defer faultStats.Unlock()
	faultStats.waitError, faultStats.waitReset, faultStats.waitResetLost, faultStats.stall = 0, 0, 0, 0
	faultStats.before, faultStats.after = map[string]int{}, map[string]int{}
}

// faultCounts is the "injected" object of /vcsim-counts.
func faultCounts() map[string]interface{} {
	faultStats.Lock()
	defer faultStats.Unlock()
	copyMap := func(m map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	return map[string]interface{}{
		"wait_error":             faultStats.waitError,
		"wait_reset":             faultStats.waitReset,
		"wait_reset_answer_lost": faultStats.waitResetLost,
		"reset_before":           copyMap(faultStats.before),
		"reset_after":            copyMap(faultStats.after),
		"stall":                  faultStats.stall,
	}
}

// panicCount is the "panics" number of /vcsim-counts.
func panicCount() int {
	faultStats.Lock()
	defer faultStats.Unlock()
	return faultStats.panics
}

// countPanics wraps the whole server: a panic in any handler is counted and logged, then
// re-raised so net/http drops the connection as it would have.
func countPanics(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					faultStats.Lock()
					faultStats.panics++
					faultStats.Unlock()
					log.Printf("panic serving %s %s: %v\n%s", r.Method, r.URL.Path, p, debug.Stack())
				}
				panic(p)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// ---------------------------------------------------------------------------- injection

type faultConfig struct {
	seed                 int64
	waitError, waitReset float64
	before, after        float64
	methods              map[string]bool // nil: the default
	afterCalls           int
}

// faultConfigFromFlags reads and checks the flags.
func faultConfigFromFlags() (faultConfig, error) {
	c := faultConfig{seed: *faultSeed, waitError: *faultWaitError, waitReset: *faultWaitReset,
		before: *faultResetBefore, after: *faultResetAfter, afterCalls: *faultAfterCalls}
	for name, p := range map[string]float64{"-fault-wait-error": c.waitError, "-fault-wait-reset": c.waitReset,
		"-fault-reset-before": c.before, "-fault-reset-after": c.after} {
		if p < 0 || p > 1 {
			return c, fmt.Errorf("%s %v: want a share between 0 and 1", name, p)
		}
	}
	if c.afterCalls < 0 {
		return c, fmt.Errorf("-fault-after-calls %d: want 0 or more", c.afterCalls)
	}
	if strings.TrimSpace(*faultMethods) != "" {
		c.methods = map[string]bool{}
		for _, m := range strings.Split(*faultMethods, ",") {
			if m = strings.TrimSpace(m); m != "" {
				c.methods[m] = true
			}
		}
	}
	return c, nil
}

// faultHTTP injects faults into SOAP calls and tags wait requests (see the file comment).
type faultHTTP struct {
	next http.Handler
	cfg  faultConfig

	mu    sync.Mutex
	calls int
	seq   map[string]uint64
}

// installFaults wraps the SOAP handler with the injection the flags ask for (none by default;
// the wait tagging always). It resets the counts.
func installFaults(h http.Handler) (http.Handler, error) {
	cfg, err := faultConfigFromFlags()
	if err != nil {
		return nil, err
	}
	resetFaultStats()
	return &faultHTTP{next: h, cfg: cfg, seq: map[string]uint64{}}, nil
}

// splitmix64 scrambles x (Steele, Lea, Flood: "Fast splittable pseudorandom number
// generators").
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// faultUnit is the deterministic draw in [0, 1) for the n-th draw of key under seed.
func faultUnit(seed int64, key string, n uint64) float64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(key))
	x := splitmix64(f.Sum64() ^ splitmix64(uint64(seed)) ^ splitmix64(n+1))
	return float64(x>>11) / (1 << 53)
}

// draw returns the next draw of kind for method (its own sequence).
func (h *faultHTTP) draw(kind, method string) float64 {
	key := kind + "/" + method
	h.mu.Lock()
	n := h.seq[key]
	h.seq[key]++
	h.mu.Unlock()
	return faultUnit(h.cfg.seed, key, n)
}

// hit draws kind for method and reports whether it falls within p (no draw when p is 0).
func (h *faultHTTP) hit(kind, method string, p float64) bool {
	return p > 0 && h.draw(kind, method) < p
}

// loginPath reports whether a call is part of connecting (never injected).
func loginPath(method string, body []byte) bool {
	if faultLoginMethods[method] {
		return true
	}
	if m := faultThisType.FindSubmatch(body); m != nil {
		if t := string(m[1]); t == "SessionManager" || t == "ServiceInstance" {
			return true
		}
	}
	return strings.HasPrefix(method, "RetrieveProperties") && faultSessionObj.Match(body)
}

func (h *faultHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
		h.next.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	method := "?"
	if m := bodyMethod.FindSubmatch(body); m != nil {
		method = string(m[1])
	}
	h.mu.Lock()
	h.calls++
	eligible := h.calls > h.cfg.afterCalls
	h.mu.Unlock()
	eligible = eligible && !loginPath(method, body)

	if eligible && faultWaitMethods[method] {
		if h.hit("wait_error", method, h.cfg.waitError) {
			faultStats.Lock()
			faultStats.waitError++
			faultStats.Unlock()
			writeSystemError(w, "injected")
			return
		}
		if h.hit("wait_reset", method, h.cfg.waitReset) {
			h.waitReset(w, r, body, method)
			return
		}
	}
	selected := h.cfg.methods[method] || (h.cfg.methods == nil && !faultWaitMethods[method])
	if eligible && selected {
		if h.hit("reset_before", method, h.cfg.before) {
			faultStats.Lock()
			faultStats.before[method]++
			faultStats.Unlock()
			resetConn(w)
			return
		}
		if h.hit("reset_after", method, h.cfg.after) {
			tagged, release := collectorTagRequest(body, r.Context())
			r.Body = io.NopCloser(bytes.NewReader(tagged))
			r.ContentLength = int64(len(tagged))
			h.next.ServeHTTP(&discardWriter{}, r)
			release()
			faultStats.Lock()
			faultStats.after[method]++
			faultStats.Unlock()
			resetConn(w)
			return
		}
	}
	tagged, release := collectorTagRequest(body, r.Context())
	defer release()
	r.Body = io.NopCloser(bytes.NewReader(tagged))
	r.ContentLength = int64(len(tagged))
	h.next.ServeHTTP(w, r)
}

// waitReset runs a wait, unanswered, and resets its connection after a random part of it.
func (h *faultHTTP) waitReset(w http.ResponseWriter, r *http.Request, body []byte, method string) {
	window := faultWaitWindow
	if m := faultMaxWait.FindSubmatch(body); m != nil {
		if s, err := strconv.Atoi(string(m[1])); err == nil && s >= 0 {
			window = time.Duration(s) * time.Second
		}
	}
	at := time.Duration(h.draw("wait_reset_at", method) * float64(window))
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	tagged, release := collectorTagRequest(body, ctx)
	defer release()
	r2 := r.WithContext(ctx)
	r2.Body = io.NopCloser(bytes.NewReader(tagged))
	r2.ContentLength = int64(len(tagged))
	timer := time.AfterFunc(at, cancel)
	dw := &discardWriter{}
	h.next.ServeHTTP(dw, r2)
	answeredFirst := timer.Stop()
	faultStats.Lock()
	faultStats.waitReset++
	if answeredFirst && bytes.Contains(dw.body.Bytes(), []byte("<returnval")) {
		faultStats.waitResetLost++
	}
	faultStats.Unlock()
	resetConn(w)
}

// discardWriter takes a response nobody will receive.
type discardWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (d *discardWriter) Header() http.Header {
	if d.header == nil {
		d.header = http.Header{}
	}
	return d.header
}
func (d *discardWriter) Write(b []byte) (int, error) {
	if d.body.Len() < 1<<16 {
		d.body.Write(b)
	}
	return len(b), nil
}
func (d *discardWriter) WriteHeader(status int) { d.status = status }

// resetConn drops the client's connection with a TCP RST (SO_LINGER 0), unanswered. When the
// connection cannot be hijacked, net/http's abort closes it instead.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// writeSystemError answers a SOAP SystemError fault, as vCenter does for an internal error.
func writeSystemError(w http.ResponseWriter, reason string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+
		`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">`+
		`<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>A general system error occurred: %s</faultstring>`+
		`<detail><SystemErrorFault xmlns="urn:vim25" xsi:type="SystemError"><reason>%s</reason></SystemErrorFault></detail>`+
		`</soapenv:Fault></soapenv:Body></soapenv:Envelope>`, reason, reason)
}
