package main

// ceso addition: datastore transfers as a slow or broken network shows them: a bandwidth limit
// on the bytes of datastore HTTP transfers, a transfer that stops being fed halfway, and
// inventory VMs with multi-GiB disks.
//
// What vSphere does: datastore files are read and written over HTTPS (GET and PUT of
// /folder/<path>?dcPath=&dsName=, Range supported on GET), and OVF/disk export and import go
// through the URLs of an HttpNfcLease (/nfc/<lease>/<disk>). These move gigabytes at whatever
// rate the host's network and storage allow (often tens of MB/s), and a transfer can stop
// making progress without the connection closing (a host under load, a stuck NFC session, a
// proxy that stops forwarding): a client needs its own stall timeout for that.
//
// What the simulator lacks: every transfer runs at memory speed (a 4 GiB sparse extent is read
// in a few seconds), and none ever stalls. Its inventory VMs have 1 MiB disks.
//
// What is modelled (flags registered here, parsed by main's flag.Parse):
//
//   - -datastore-mbps N: each transfer (one HTTP request's body, PUT/POST, or one response's
//     body, GET) of /folder/... and /nfc/... moves at most N MB/s (1 MB = 1,000,000 bytes;
//     fractions allowed, e.g. 0.5): the limit is per transfer, not shared, so two parallel
//     transfers take twice the bandwidth. Response bytes are paced as they are written (in
//     chunks of at most 1/50 s worth, at least 16 KiB), request bytes as they are read (the
//     client is held back by TCP flow control); pacing is against the time of the first byte,
//     so short scheduling delays are caught up. This includes cbt.go's PUT path (writes of
//     VM disks' flat extents), whose reading of the body no longer holds cbt.go's lock.
//     0 (default): no limit.
//   - -fault-stall-transfer-after BYTES (default -1: off), with -fault-stall-paths REGEX
//     (default: every transfer path; matched against the URL path, e.g. -flat\.vmdk$): every
//     matching transfer stops being fed after BYTES bytes: a GET response has exactly BYTES
//     body bytes written and flushed (after the headers announcing the full length), a PUT has
//     BYTES body bytes read (and acted on: cbt.go writes those blocks; the simulator's file
//     keeps what it got), then the server neither reads nor writes that connection again and
//     keeps it open, so only the client's own stall timeout ends the transfer. The connection
//     is taken from the HTTP server (hijacked), so the handler ends and the server can shut
//     down; it is closed when the client closes it (seen for a GET, where nothing remains to be
//     read) or after 10 minutes (a PUT: with the client's unread body queued before its close,
//     the server cannot see it go without reading on). Each stall is counted in
//     /vcsim-counts "injected": {"stall": n}.
//   - -disk-gb N: the inventory VMs' disks get a capacity of N GiB (instead of the
//     simulator's 1 MiB); cbt.go sizes each flat extent to it, sparsely (no disk space is
//     used until written). VMs created later get the capacity their spec asks for (multi-GiB
//     disks work the same way).
//
// Not modelled: a bandwidth shared by all transfers (or per host, per datastore), latency per
// transfer, slow starts, transfers that fail outright (a reset: see faults.go for SOAP calls).
// (NFC leases' progress and time-outs, and what an upload to a lease writes: nfc.go.)

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// ceso addition: the transfer flags (see the file comment).
var (
	datastoreMbps    = flag.Float64("datastore-mbps", 0, "MB/s (10^6 bytes) each datastore transfer (/folder and /nfc GET/PUT bodies) may move; 0: unlimited")
	faultStallAfter  = flag.Int64("fault-stall-transfer-after", -1, "stop feeding every datastore transfer after this many body bytes, keeping the connection open; negative: off")
	faultStallPaths  = flag.String("fault-stall-paths", "", "regular expression of the transfer URL paths -fault-stall-transfer-after applies to (default: all)")
	inventoryDiskGiB = flag.Int("disk-gb", 0, "capacity in GiB of the inventory VMs' disks (0: the simulator's 1 MiB)")
)

// transferHold is how long a stalled transfer's connection is kept at most.
const transferHold = 10 * time.Minute

// errStalled ends the handler's copy of a stalled transfer.
var errStalled = errors.New("transfer stalled (-fault-stall-transfer-after)")

// transferHTTP paces and stalls datastore transfers.
type transferHTTP struct {
	next       http.Handler
	rate       float64 // bytes per second, 0: unlimited
	stallAfter int64   // < 0: off
	stallPaths *regexp.Regexp
}

// installTransfers wraps h as the flags ask (a no-op wrapper without them).
func installTransfers(h http.Handler) (http.Handler, error) {
	t := &transferHTTP{next: h, rate: *datastoreMbps * 1e6, stallAfter: *faultStallAfter}
	if *datastoreMbps < 0 {
		return nil, fmt.Errorf("-datastore-mbps %v: want 0 or more", *datastoreMbps)
	}
	if *faultStallPaths != "" {
		re, err := regexp.Compile(*faultStallPaths)
		if err != nil {
			return nil, fmt.Errorf("-fault-stall-paths: %v", err)
		}
		t.stallPaths = re
	}
	return t, nil
}

func isTransfer(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/folder/") || strings.HasPrefix(r.URL.Path, "/nfc/")
}

func (h *transferHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isTransfer(r) {
		h.next.ServeHTTP(w, r)
		return
	}
	stall := h.stallAfter >= 0 && (h.stallPaths == nil || h.stallPaths.MatchString(r.URL.Path))
	if h.rate <= 0 && !stall {
		h.next.ServeHTTP(w, r)
		return
	}
	limit := int64(-1)
	if stall {
		limit = h.stallAfter
	}
	if r.Body != nil && r.Body != http.NoBody && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
		in := &transfer{w: w, r: r, rate: h.rate, limit: limit, reading: true}
		r.Body = &transferBody{t: in, body: r.Body}
		// A PUT's response is small: only the body read is paced and stalled; once stalled,
		// whatever the handler answers is dropped.
		h.next.ServeHTTP(&transferWriter{t: in}, r)
		return
	}
	h.next.ServeHTTP(&transferWriter{t: &transfer{w: w, r: r, rate: h.rate, limit: limit}, body: true}, r)
}

// transfer is one body's pacing and stall state.
type transfer struct {
	w       http.ResponseWriter
	r       *http.Request
	rate    float64
	limit   int64 // stall after this many bytes; < 0: never
	reading bool

	// Used by the handler's goroutine only.
	start   time.Time
	moved   int64
	stalled bool
}

// chunk is how many bytes move between pacing checks.
func (t *transfer) chunk() int {
	c := 16 << 10
	if t.rate > 0 {
		if n := int(t.rate / 50); n > c {
			c = n
		}
	}
	return c
}

// pace waits until n more bytes may have moved, then counts them. It ends early when the
// client goes away.
func (t *transfer) pace(n int) {
	if t.rate <= 0 {
		t.moved += int64(n)
		return
	}
	if t.start.IsZero() {
		t.start = time.Now()
	}
	due := t.start.Add(time.Duration(float64(t.moved) / t.rate * float64(time.Second)))
	t.moved += int64(n)
	if d := time.Until(due); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.r.Context().Done():
		}
	}
}

// stall takes the connection from the server and keeps it open without reading or writing
// (see the file comment).
func (t *transfer) stall() {
	if t.stalled {
		return
	}
	t.stalled = true
	faultStats.Lock()
	faultStats.stall++
	faultStats.Unlock()
	if f, ok := t.w.(http.Flusher); ok && !t.reading {
		f.Flush()
	}
	hj, ok := t.w.(http.Hijacker)
	if !ok {
		log.Printf("transfer: cannot hijack %s to stall it; holding the handler", t.r.URL.Path)
		select {
		case <-t.r.Context().Done():
		case <-time.After(transferHold):
		}
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		log.Printf("transfer: stall %s: %v", t.r.URL.Path, err)
		return
	}
	go holdConn(conn, !t.reading)
}

// holdConn keeps a stalled connection open until the client closes it (watched only when
// nothing of the request remains unread) or transferHold passes.
func holdConn(conn net.Conn, watch bool) {
	closed := make(chan struct{})
	if watch {
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := conn.Read(buf); err != nil {
					close(closed)
					return
				}
			}
		}()
	}
	timer := time.NewTimer(transferHold)
	defer timer.Stop()
	select {
	case <-closed:
	case <-timer.C:
	}
	_ = conn.Close()
}

// transferWriter paces (and stalls) a response body (body), or only drops what is written
// after the request body stalled.
type transferWriter struct {
	t    *transfer
	body bool
}

func (tw *transferWriter) Header() http.Header { return tw.t.w.Header() }

func (tw *transferWriter) WriteHeader(status int) {
	if !tw.t.stalled {
		tw.t.w.WriteHeader(status)
	}
}

func (tw *transferWriter) Write(p []byte) (int, error) {
	t := tw.t
	if !tw.body {
		if t.stalled {
			return 0, errStalled
		}
		return t.w.Write(p)
	}
	written := 0
	for len(p) > 0 {
		if t.stalled {
			return written, errStalled
		}
		n := len(p)
		if c := t.chunk(); n > c {
			n = c
		}
		if t.limit >= 0 && t.moved+int64(n) > t.limit {
			n = int(t.limit - t.moved)
			if n <= 0 {
				t.stall()
				return written, errStalled
			}
		}
		t.pace(n)
		m, err := t.w.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush passes flushes on (FileServer does not flush, other handlers may).
func (tw *transferWriter) Flush() {
	if f, ok := tw.t.w.(http.Flusher); ok && !tw.t.stalled {
		f.Flush()
	}
}

// transferBody paces (and stalls) a request body.
type transferBody struct {
	t    *transfer
	body io.ReadCloser
}

func (tb *transferBody) Read(p []byte) (int, error) {
	t := tb.t
	if t.stalled {
		return 0, errStalled
	}
	if c := t.chunk(); len(p) > c {
		p = p[:c]
	}
	if t.limit >= 0 {
		left := t.limit - t.moved
		if left <= 0 {
			t.stall()
			return 0, errStalled
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := tb.body.Read(p)
	if n > 0 {
		t.pace(n)
	}
	return n, err
}

func (tb *transferBody) Close() error { return tb.body.Close() }

// sizeInventoryDisks gives every VM disk of the inventory a capacity of gib GiB (-disk-gb).
// Called from main before installCBT sizes the flat extents.
func sizeInventoryDisks(gib int) {
	if gib <= 0 {
		return
	}
	capacity := int64(gib) << 30
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm, ok := e.(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			if vm.Config == nil {
				return
			}
			for _, dev := range vm.Config.Hardware.Device {
				if disk, ok := dev.(*types.VirtualDisk); ok {
					disk.CapacityInBytes = capacity
					disk.CapacityInKB = capacity >> 10
				}
			}
		})
	}
}
