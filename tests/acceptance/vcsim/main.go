// Command vcsim serves VMware's vSphere API simulator (govmomi's simulator
// package) on a loopback address, for tests that need a real SOAP peer.
//
// This is ceso's test scaffolding, owned by the project: the acceptance tests
// and bench/bench.py run it. It started as a copy of the shared test bed's
// launcher (govmomi 0.24.2 from Debian, Go 1.19).
//
// Build (offline, from Debian's golang-go and golang-github-vmware-govmomi-dev);
// scripts/testbed.sh does this into .testbed/bin/vcsim:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o vcsim .
//
// Two additions make HashiCorp's vsphere provider (the peer we benchmark against)
// work on it: -vapi registers the vAPI REST (/rest) and PBM (/pbm) endpoints it
// opens at configure time, and -cralias lets it look a cluster up through a
// ComputeResource-typed reference (real vCenter resolves by moid alone; this
// simulator keys objects by type and id). The peer also needs -tls.
//
// ceso additions (netsys.go, netpolicy.go) model standard-switch networking after the vSphere
// API reference where the simulator falls short: HostNetworkSystem.UpdatePortGroup, a filled
// HostPortGroup.computedPolicy, networkInfo kept as the host's config.network, and in the
// vCenter model one Network object shared by every host carrying a port group of that name.
// snapshot.go models RenameSnapshot, ConsolidateVMDisks_Task (and the
// -consolidation-needed-after-remove flag), reverts that restore the snapshot's recorded power
// state, and removal of current/root snapshots without the simulator's panic.
// pci.go models PCI passthrough and NVIDIA vGPU: GPUs and a NIC on the first -gpu-hosts hosts,
// HostPciPassthruSystem, RebootHost_Task (-reboot-ms), QueryConfigTarget's pciPassthrough and
// vGPU profiles, and the passthrough checks of ReconfigVM_Task and PowerOnVM_Task.
// cbt.go sizes each VM disk's flat extent (<name>-flat.vmdk) to its capacity, tracks datastore
// PUTs to it as changed block tracking (changeId, QueryChangedDiskAreas paged by -cbt-page-bytes
// and -cbt-page-extents), freezes each snapshot's config, and makes CloneVM_Task copy disk data.
// cancel.go models Task.CancelTask (RequestCanceled; NotSupported / InvalidState) and
// -slow-task METHOD=MS[,...], which makes those *_Task methods return a running, cancelable
// task with progress that does the simulator's work only after MS milliseconds.
// collector.go models the PropertyCollector's updates (CreateFilter, DestroyPropertyFilter,
// WaitForUpdatesEx, WaitForUpdates, CheckForUpdates, CancelWaitForUpdates,
// DestroyPropertyCollector) after the vSphere API reference: each answer is the difference
// between the filters' current state and the state of the version the client names, versions
// are real ("1", "2", ...; the last 16 can be asked again, others are InvalidCollectorVersion),
// a filter created during a long poll is reported by it within ~20 ms, and destroying a filter
// during a long poll neither panics (the simulator's own collector did) nor loses any other
// filter's update.
// faults.go injects faults, deterministically given -fault-seed: -fault-wait-error P (a SOAP
// SystemError instead of a WaitForUpdatesEx/WaitForUpdates), -fault-wait-reset P (the wait's
// connection reset, unanswered, within its maxWaitSeconds), -fault-reset-before P and
// -fault-reset-after P (the connection reset before / after the call ran) for the methods of
// -fault-methods (default: all but the waits), never on the login path nor in the first
// -fault-after-calls calls.
// transfer.go paces datastore transfers (/folder and /nfc GET and PUT bodies, cbt.go's PUT path
// included) at -datastore-mbps MB/s each, stalls them after -fault-stall-transfer-after bytes
// (for paths matching -fault-stall-paths) with the connection left open, and gives the
// inventory VMs -disk-gb GiB disks (sparse flat extents).
// nfc.go models OVF import through an HttpNfcLease: a disk uploaded (PUT or POST) to a lease's
// deviceUrl must be a streamOptimized VMDK and is decoded, streaming, into the VM disk's flat
// extent (zero grains left as holes; other bodies refused with 500 as hostd refuses them; CBT
// records the writes), HttpNfcLeaseProgress renews the lease, a lease with neither progress
// calls nor upload bytes for -nfc-lease-timeout (default 300s, as a host) times out
// (state error, Timedout) and, as after HttpNfcLeaseAbort, its VM is removed;
// HttpNfcLeaseComplete makes it done.
// -tls serves a fresh RSA-2048 certificate (the simulator's built-in one has a 1024-bit key);
// -tls-rsa-bits 1024 makes it as weak as an old ESXi host's.
//
// -api-version makes it a server of another release (about.apiVersion/version), refusing
// SOAPActions that name a newer API version as such a server would.
//
// Every SOAP call is counted per method: GET /vcsim-counts on the same address
// returns {"total":{path:n},"methods":{path:{method:n}},"soap_actions":{action:n},"peak_inflight":n,
// "injected":{"wait_error":n,"wait_reset":n,"wait_reset_answer_lost":n,"reset_before":{method:n},
// "reset_after":{method:n},"stall":n},"panics":n,"collector":{"collectors":n,"filters":n,"waits":n,
// "answers":n},"nfc":{"leases":n,"progress_calls":n,"leases_completed":n,"leases_aborted":n,
// "leases_timed_out":n,"uploads":n,"uploads_failed":n,"bytes_received":n,"bytes_written":n,
// "by_lease":{moid:{"state":s,"progress_calls":n,"bytes_written":n}}}}, so a test or benchmark
// can report round trips (read it before and after a command) and check that faults were
// injected (faults.go) and nothing was left behind.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// crAlias makes a ComputeResource-typed reference resolve to a live cluster.
type crAlias struct {
	mo.ComputeResource
	target types.ManagedObjectReference
}

func (a *crAlias) Get() mo.Reference { return simulator.Map.Get(a.target) }

// soapCounter counts SOAP requests per endpoint path and method name.
type soapCounter struct {
	next    http.Handler
	mu      sync.Mutex
	total   map[string]int
	methods map[string]map[string]int
	actions map[string]int
	// announced is the API version the service content announces (-api-version); a request
	// whose SOAPAction names a newer one is refused, as a server of that version would.
	announced string
	inflight  int
	peak      int
}

var bodyMethod = regexp.MustCompile(`<(?:[\w-]+:)?Body[^>]*>\s*<(?:[\w-]+:)?([A-Za-z0-9_]+)`)

func (c *soapCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/vcsim-counts" {
		c.mu.Lock()
		// ceso addition: "injected" and "panics" (faults.go), "collector" (collector.go), "nfc"
		// (nfc.go).
		b, _ := json.Marshal(map[string]interface{}{"total": c.total, "methods": c.methods, "soap_actions": c.actions, "peak_inflight": c.peak,
			"injected": faultCounts(), "panics": panicCount(), "collector": collectorStats(), "nfc": nfcCounts()})
		c.peak = c.inflight
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}
	path := r.URL.Path
	if r.Method != http.MethodPost || !(strings.HasPrefix(path, "/sdk") || strings.HasPrefix(path, "/pbm")) {
		c.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	name := "?"
	if m := bodyMethod.FindSubmatch(body); m != nil {
		name = string(m[1])
	}
	action := strings.Trim(r.Header.Get("SOAPAction"), "\"")
	if v := strings.TrimPrefix(action, "urn:vim25/"); c.announced != "" && v != action && newerVersion(v, c.announced) {
		// ceso addition: a server of an older release does not know a newer API version.
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Unsupported version URI "urn:vim25/%s"</faultstring><detail><InvalidRequestFault xmlns="urn:vim25"></InvalidRequestFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`, v)
		return
	}
	c.mu.Lock()
	if action != "" {
		c.actions[action]++
	}
	c.total[path]++
	if c.methods[path] == nil {
		c.methods[path] = map[string]int{}
	}
	c.methods[path][name]++
	c.inflight++
	if c.inflight > c.peak {
		c.peak = c.inflight
	}
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.inflight--; c.mu.Unlock() }()
	c.next.ServeHTTP(w, r)
}

// serveHandler wraps the simulator's handler as the launcher serves it (tests use it too):
// panics counted (faults.go), datastore transfers paced and stalled (transfer.go), uploads to
// HttpNfcLease URLs (nfc.go), disk extents, changed block tracking and QueryChangedDiskAreas
// (cbt.go), every SOAP call counted, then fault injection and the tagging of waits (faults.go,
// collector.go) right before the simulator.
func serveHandler(sim http.Handler, announced string) (http.Handler, error) {
	faults, err := installFaults(sim)
	if err != nil {
		return nil, err
	}
	var h http.Handler = &soapCounter{next: faults, total: map[string]int{}, methods: map[string]map[string]int{}, actions: map[string]int{}, announced: announced}
	// ceso addition: disk extents, changed block tracking and QueryChangedDiskAreas; see cbt.go.
	h = installCBT(h)
	// ceso addition: OVF import uploads to HttpNfcLease URLs written into the VM's disks, lease
	// time-outs (-nfc-lease-timeout); see nfc.go.
	h, err = installNFC(h)
	if err != nil {
		return nil, err
	}
	// ceso addition: datastore transfers paced (-datastore-mbps) and stalled
	// (-fault-stall-transfer-after); see transfer.go.
	h, err = installTransfers(h)
	if err != nil {
		return nil, err
	}
	// ceso addition: panics are counted in /vcsim-counts; see faults.go.
	return countPanics(h), nil
}

// newerVersion reports whether dotted version a is newer than b ("8.0.2.0" > "8.0").
func newerVersion(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			fmt.Sscan(pa[i], &x)
		}
		if i < len(pb) {
			fmt.Sscan(pb[i], &y)
		}
		if x != y {
			return x > y
		}
	}
	return false
}

func main() {
	esx := flag.Bool("esx", false, "simulate one standalone ESXi host instead of a vCenter")
	listen := flag.String("l", "127.0.0.1:8989", "listen address (loopback only)")
	dc := flag.Int("dc", 1, "datacenters (vCenter model)")
	clusters := flag.Int("cluster", 1, "clusters per datacenter (vCenter model)")
	clusterHosts := flag.Int("host", 3, "hosts per cluster (vCenter model)")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter (vCenter model)")
	vms := flag.Int("vm", 2, "VMs per resource pool / host")
	ds := flag.Int("ds", 1, "local datastores")
	pg := flag.Int("pg", 1, "distributed port groups (vCenter model)")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	// ceso addition: -tls-rsa-bits 1024 serves a certificate with a key as weak as old ESXi
	// 5.x/6.0 hosts have, for the test of allow_unverified_ssl against such servers.
	tlsRSABits := flag.Int("tls-rsa-bits", 2048, "RSA key size of the -tls certificate")
	vapi := flag.Bool("vapi", false, "register the vAPI REST (/rest) and PBM (/pbm) endpoints")
	alias := flag.Bool("cralias", false, "alias ComputeResource:<cluster-moid> to each cluster")
	delay := flag.Int("delay", 0, "milliseconds of latency added to every SOAP call")
	urlFile := flag.String("url-file", "", "write the SDK URL to this file once listening")
	creds := flag.String("user", "", "USER:PASSWORD that Login accepts (default: any non-empty pair)")
	apiVersion := flag.String("api-version", "", "announce this vSphere API version (e.g. 6.7, 7.0.3.0, 8.0.2.0) and refuse newer ones")
	gpuHosts := flag.Int("gpu-hosts", 1, "hosts (the first by name) given passthrough-capable GPUs and NIC (see pci.go)")
	flag.Parse()

	var m *simulator.Model
	if *esx {
		m = simulator.ESX()
	} else {
		m = simulator.VPX()
		m.Datacenter = *dc
		m.Cluster = *clusters
		m.ClusterHost = *clusterHosts
		m.Host = *standalone
		m.Portgroup = *pg
	}
	m.Machine = *vms
	m.Datastore = *ds
	m.DelayConfig.Delay = *delay
	if err := m.Create(); err != nil {
		log.Fatal(err)
	}
	// ceso addition: a server of another release (-api-version): the service content's
	// about.apiVersion and version say it, so clients negotiate it.
	if *apiVersion != "" {
		si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
		si.Content.About.ApiVersion = *apiVersion
		si.Content.About.Version = *apiVersion
		si.Content.About.FullName = fmt.Sprintf("%s %s build-%s", si.Content.About.Name, *apiVersion, si.Content.About.Build)
	}
	// ceso addition: standard port groups modelled after the vSphere API reference
	// (UpdatePortGroup, computedPolicy, one vCenter Network shared by hosts); see netsys.go.
	installNetworkModel()
	// ceso addition: PCI passthrough and vGPU after the vSphere API reference; see pci.go.
	installPciModel(*gpuHosts)
	// ceso addition: -disk-gb, multi-GiB inventory disks (sized sparsely by cbt.go); see
	// transfer.go.
	sizeInventoryDisks(*inventoryDiskGiB)
	if *alias {
		for _, e := range simulator.Map.All("ClusterComputeResource") {
			ref := e.Reference()
			a := &crAlias{target: ref}
			a.Self = types.ManagedObjectReference{Type: "ComputeResource", Value: ref.Value}
			simulator.Map.Put(a)
		}
	}
	m.Service.Listen = &url.URL{Host: *listen}
	if u, p, ok := strings.Cut(*creds, ":"); ok {
		m.Service.Listen.User = url.UserPassword(u, p)
	}
	if *useTLS {
		cert, err := selfSignedCert(*tlsRSABits)
		if err != nil {
			log.Fatal(err)
		}
		m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	m.Service.RegisterEndpoints = *vapi
	s := m.Service.NewServer()
	h, err := serveHandler(s.Config.Handler, *apiVersion)
	if err != nil {
		log.Fatal(err)
	}
	s.Config.Handler = h
	fmt.Printf("VCSIM_URL=%s\n", s.URL)
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(s.URL.String()+"\n"), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
	s.Close()
	m.Remove()
}

// selfSignedCert makes a fresh RSA certificate (2048 bits unless -tls-rsa-bits says otherwise)
// for 127.0.0.1/localhost, as ESXi ships one per host. (ceso addition: the simulator's built-in
// test certificate has a 1024-bit key, which no current TLS verifier accepts, so thumbprint
// pinning could not be tested with it.)
func selfSignedCert(bits int) (tls.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"vcsim"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
