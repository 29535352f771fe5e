//! vSphere client benchmarks (plain `std::time`, no harness; prints tables).
//!
//! `cargo bench --bench vsphere -j1` runs both parts; pass `decode` or `refresh` after `--` to
//! run one.
//!
//! (a) decode: a synthetic `RetrievePropertiesEx` response (10,000 VMs x 12 properties, device
//!     lists included) through the client's real decoding path: `envelope::response_inner`,
//!     `xml::parse_fragment`, `property::ObjectContent::from_owned`. One thread; MB/s of XML,
//!     and heap allocations counted by the global allocator below.
//! (b) refresh: 500 VMs on the simulator (`.testbed/bin/vcsim`, vCenter model, `-delay 5`),
//!     read three ways: one `Client::properties` per VM with 10 in flight (Terraform's default
//!     parallelism), `Client::read_batched` with the same concurrency, and one
//!     `Client::retrieve_all`. Round trips come from the simulator's `/vcsim-counts`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ceso::vsphere::envelope::response_inner;
use ceso::vsphere::property::ObjectContent;
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::xml::parse_fragment;
use ceso::vsphere::{Client, ConnectConfig, Secret, TlsPolicy};

// ---------------------------------------------------------------------------------------------
// Allocation counting.

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grow(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    ALLOC_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    let live = LIVE.fetch_add(size as u64, Ordering::Relaxed) + size as u64;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(size: usize) {
    LIVE.fetch_sub(size as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct AllocSnapshot {
    count: u64,
    bytes: u64,
}

fn allocs() -> AllocSnapshot {
    AllocSnapshot {
        count: ALLOCS.load(Ordering::Relaxed),
        bytes: ALLOC_BYTES.load(Ordering::Relaxed),
    }
}

fn allocs_since(before: AllocSnapshot) -> AllocSnapshot {
    let now = allocs();
    AllocSnapshot {
        count: now.count - before.count,
        bytes: now.bytes - before.bytes,
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| part.contains(a.as_str()));
    let start = Instant::now();
    if wants("decode") {
        bench_decode();
    }
    if wants("refresh") {
        bench_refresh();
    }
    println!("\ntotal bench time: {:.1} s", start.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// (a) Decode.

const DECODE_VMS: usize = 10_000;
const DECODE_RUNS: usize = 5;

const ENVELOPE_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval>"#;
const ENVELOPE_TAIL: &str =
    "</returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>";

fn uuid(seed: u64, salt: u64) -> String {
    let x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt);
    let y = x.rotate_left(29) ^ 0xD1B5_4A32_D192_ED03;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (x >> 32) as u32,
        (x >> 16) as u16,
        x as u16,
        (y >> 48) as u16,
        y & 0xFFFF_FFFF_FFFF
    )
}

/// One `<objects>` element shaped like vCenter's answer for a VM (12 properties, xsi:types,
/// a device list with controller, disks, NIC and CD-ROM), its values varied by `i`.
fn vm_object(out: &mut String, i: usize) {
    let n = i as u64;
    let name = format!("app-{:02}-{i:05}", i % 37);
    let ds = i % 12;
    let power = match i % 9 {
        0 => "poweredOff",
        4 => "suspended",
        _ => "poweredOn",
    };
    let mac = format!(
        "00:50:56:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let disks = 1 + i % 3;
    let _ = write!(
        out,
        r#"<objects><obj type="VirtualMachine">vm-{vm}</obj><propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice"><VirtualDevice xsi:type="VirtualLsiLogicController"><key>1000</key><deviceInfo><label>SCSI controller 0</label><summary>LSI Logic</summary></deviceInfo><controllerKey>100</controllerKey><unitNumber>3</unitNumber><busNumber>0</busNumber><device>2000</device><hotAddRemove>true</hotAddRemove><sharedBus>noSharing</sharedBus><scsiCtlrUnitNumber>7</scsiCtlrUnitNumber></VirtualDevice>"#,
        vm = 1000 + i
    );
    for d in 0..disks {
        let _ = write!(
            out,
            r#"<VirtualDevice xsi:type="VirtualDisk"><key>{key}</key><deviceInfo><label>Hard disk {label}</label><summary>{gb} GB</summary></deviceInfo><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[datastore-{ds}] {name}/{name}{suffix}.vmdk</fileName><datastore type="Datastore">datastore-{dsid}</datastore><diskMode>persistent</diskMode><thinProvisioned>{thin}</thinProvisioned><uuid>{uuid}</uuid><contentId>{cid:032x}</contentId></backing><controllerKey>1000</controllerKey><unitNumber>{d}</unitNumber><capacityInKB>{kb}</capacityInKB><capacityInBytes>{bytes}</capacityInBytes></VirtualDevice>"#,
            key = 2000 + d,
            label = d + 1,
            gb = 16 << (d + i % 3),
            ds = ds,
            dsid = 100 + ds,
            name = name,
            suffix = if d == 0 {
                String::new()
            } else {
                format!("_{d}")
            },
            thin = i % 2 == 0,
            uuid = uuid(n, d as u64),
            cid = n.wrapping_mul(0x2545_F491_4F6C_DD1D) as u128 * 31 + d as u128,
            kb = (16u64 << (d + i % 3)) * 1024 * 1024,
            bytes = (16u64 << (d + i % 3)) * 1024 * 1024 * 1024,
        );
    }
    let _ = write!(
        out,
        r#"<VirtualDevice xsi:type="VirtualVmxnet3"><key>4000</key><deviceInfo><label>Network adapter 1</label><summary>DVSwitch: 50 2a 6b 0c</summary></deviceInfo><backing xsi:type="VirtualEthernetCardDistributedVirtualPortBackingInfo"><port><switchUuid>50 2a 6b 0c 9e 11 4d 2c-a1 3f 55 0e 7b 12 c4 {sw:02x}</switchUuid><portgroupKey>dvportgroup-{pg}</portgroupKey><portKey>{port}</portKey><connectionCookie>{cookie}</connectionCookie></port></backing><connectable><startConnected>true</startConnected><allowGuestControl>true</allowGuestControl><connected>{conn}</connected><status>ok</status></connectable><slotInfo xsi:type="VirtualDevicePciBusSlotInfo"><pciSlotNumber>192</pciSlotNumber></slotInfo><controllerKey>100</controllerKey><unitNumber>7</unitNumber><addressType>assigned</addressType><macAddress>{mac}</macAddress><wakeOnLanEnabled>true</wakeOnLanEnabled></VirtualDevice><VirtualDevice xsi:type="VirtualCdrom"><key>3002</key><deviceInfo><label>CD/DVD drive 1</label><summary>Remote device</summary></deviceInfo><backing xsi:type="VirtualCdromRemotePassthroughBackingInfo"><deviceName></deviceName><useAutoDetect>false</useAutoDetect><exclusive>false</exclusive></backing><connectable><startConnected>false</startConnected><allowGuestControl>true</allowGuestControl><connected>false</connected><status>untried</status></connectable><controllerKey>201</controllerKey><unitNumber>0</unitNumber></VirtualDevice></val></propSet>"#,
        sw = i % 4,
        pg = 20 + i % 6,
        port = i % 4096,
        cookie = n.wrapping_mul(2_654_435_761) % 1_000_000_007,
        conn = power == "poweredOn",
        mac = mac,
    );
    let _ = write!(
        out,
        r#"<propSet><name>config.hardware.memoryMB</name><val xsi:type="xsd:int">{mem}</val></propSet><propSet><name>config.hardware.numCPU</name><val xsi:type="xsd:int">{cpu}</val></propSet><propSet><name>config.instanceUuid</name><val xsi:type="xsd:string">{iuuid}</val></propSet><propSet><name>config.uuid</name><val xsi:type="xsd:string">{buuid}</val></propSet><propSet><name>datastore</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="Datastore" xsi:type="ManagedObjectReference">datastore-{dsid}</ManagedObjectReference></val></propSet><propSet><name>guest.ipAddress</name><val xsi:type="xsd:string">10.{a}.{b}.{c}</val></propSet><propSet><name>name</name><val xsi:type="xsd:string">{name}</val></propSet><propSet><name>resourcePool</name><val type="ResourcePool" xsi:type="ManagedObjectReference">resgroup-{rp}</val></propSet><propSet><name>runtime.host</name><val type="HostSystem" xsi:type="ManagedObjectReference">host-{host}</val></propSet><propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">{power}</val></propSet><propSet><name>summary.storage.committed</name><val xsi:type="xsd:long">{committed}</val></propSet></objects>"#,
        mem = 1024 * (1 + i % 16),
        cpu = 1 << (i % 4),
        iuuid = uuid(n, 0x5000),
        buuid = uuid(n, 0x4200),
        dsid = 100 + ds,
        a = (i >> 16) & 0xff,
        b = (i >> 8) & 0xff,
        c = i & 0xff,
        name = name,
        rp = 8 + i % 5,
        host = 10 + i % 64,
        power = power,
        committed = n * 7_340_033 + 1_073_741_824,
    );
}

fn synthetic_response(vms: usize) -> String {
    let mut out = String::with_capacity(vms * 3000);
    out.push_str(ENVELOPE_HEAD);
    for i in 0..vms {
        vm_object(&mut out, i);
    }
    out.push_str(ENVELOPE_TAIL);
    out
}

#[derive(Default, Clone, Copy)]
struct Stage {
    time: Duration,
    count: u64,
    bytes: u64,
}

fn bench_decode() {
    let xml = synthetic_response(DECODE_VMS);
    let mb = xml.len() as f64 / 1e6;
    println!(
        "(a) decode: synthetic RetrievePropertiesEx, {DECODE_VMS} VMs x 12 properties, {mb:.1} MB of XML, one thread, median of {DECODE_RUNS} runs (+1 warm-up)"
    );

    let names = [
        "response_inner",
        "parse_fragment",
        "ObjectContent::from_owned",
        "decode (sum of the above)",
        "drop nodes + objects",
        "total with drop",
    ];
    let mut runs: Vec<[Stage; 6]> = Vec::new();
    let mut peak_over_xml = 0u64;
    for run in 0..=DECODE_RUNS {
        let base_live = LIVE.load(Ordering::Relaxed);
        PEAK.store(base_live, Ordering::Relaxed);
        let mut st = [Stage::default(); 6];
        let all = allocs();
        let t_all = Instant::now();

        let (a, t) = (allocs(), Instant::now());
        let inner = response_inner(&xml).expect("envelope");
        st[0] = stage(t, a);

        let (a, t) = (allocs(), Instant::now());
        let mut nodes = parse_fragment(inner).expect("parse");
        st[1] = stage(t, a);

        // The client's bulk path: the value subtrees move into the results, uncopied.
        let (a, t) = (allocs(), Instant::now());
        let returnval = nodes.remove(0);
        let objects: Vec<ObjectContent> = returnval
            .children
            .into_iter()
            .filter(|n| n.name == "objects")
            .map(|o| ObjectContent::from_owned(o).expect("object"))
            .collect();
        st[2] = stage(t, a);
        assert_eq!(objects.len(), DECODE_VMS);
        assert_eq!(objects[7].props.len(), 12);
        assert_eq!(objects[7].text("name"), Some("app-07-00007"));
        let devices = objects[7].get("config.hardware.device").expect("devices");
        assert_eq!(devices.children.len(), 5);
        peak_over_xml = peak_over_xml.max(PEAK.load(Ordering::Relaxed) - base_live);

        let (a, t) = (allocs(), Instant::now());
        drop(objects);
        drop(nodes);
        st[4] = stage(t, a);
        st[5] = stage(t_all, all);
        st[3] = Stage {
            time: st[0].time + st[1].time + st[2].time,
            count: st[0].count + st[1].count + st[2].count,
            bytes: st[0].bytes + st[1].bytes + st[2].bytes,
        };
        if run > 0 {
            runs.push(st);
        }
    }

    println!(
        "  {:<26} {:>10} {:>10} {:>13} {:>13} {:>9}",
        "stage", "time ms", "MB/s", "allocations", "alloc MB", "allocs/VM"
    );
    for (k, name) in names.iter().enumerate() {
        let mut times: Vec<Duration> = runs.iter().map(|r| r[k].time).collect();
        times.sort();
        let median = times[times.len() / 2];
        let s = runs[0][k];
        let rate = if median.is_zero() {
            f64::INFINITY
        } else {
            mb / median.as_secs_f64()
        };
        println!(
            "  {:<26} {:>10.1} {:>10.1} {:>13} {:>13.1} {:>9.1}",
            name,
            median.as_secs_f64() * 1e3,
            rate,
            s.count,
            s.bytes as f64 / 1e6,
            s.count as f64 / DECODE_VMS as f64
        );
    }
    println!(
        "  peak heap above baseline during a decode: {:.1} MB ({:.1} x the XML, XML itself not counted)",
        peak_over_xml as f64 / 1e6,
        peak_over_xml as f64 / xml.len() as f64
    );
}

fn stage(t: Instant, a: AllocSnapshot) -> Stage {
    let time = t.elapsed();
    let d = allocs_since(a);
    Stage {
        time,
        count: d.count,
        bytes: d.bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Refresh of 500 VMs on the simulator.

const REFRESH_VMS: usize = 500;
/// vCenter model defaults: one standalone host and one cluster resource pool per datacenter,
/// `-vm` VMs in each: 2 x 250 = 500.
const VMS_PER_POOL: &str = "250";
const DELAY_MS: &str = "5";
const CONCURRENCY: usize = 10;
const REFRESH_RUNS: usize = 3;

const PATHS: &[&str] = &[
    "name",
    "config.hardware.device",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.uuid",
    "config.instanceUuid",
    "runtime.powerState",
    "runtime.host",
    "summary.storage.committed",
    "guest.ipAddress",
    "resourcePool",
    "datastore",
];

/// The simulator process, killed (by its own handle) when dropped.
struct Vcsim {
    child: Child,
    _dir: PathBuf,
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start_vcsim(bin: &Path) -> Result<(Vcsim, url::Url), String> {
    let dir = std::env::temp_dir().join(format!("ceso-bench-vcsim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let url_file = dir.join("url");
    let child = Command::new(bin)
        .args([
            "-vm",
            VMS_PER_POOL,
            "-delay",
            DELAY_MS,
            "-l",
            "127.0.0.1:0",
            "-url-file",
        ])
        .arg(&url_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let sim = Vcsim { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&url_file) {
            if !text.trim().is_empty() {
                let url = url::Url::parse(text.trim()).map_err(|e| e.to_string())?;
                return Ok((sim, url));
            }
        }
        if Instant::now() > deadline {
            return Err("vcsim did not write its URL within 60 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone, Default)]
struct Counts {
    total: u64,
    methods: BTreeMap<String, u64>,
    peak_inflight: u64,
}

async fn counts(http: &reqwest::Client, base: &str) -> Counts {
    let v: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{base}/vcsim-counts"))
            .send()
            .await
            .expect("vcsim-counts")
            .text()
            .await
            .expect("vcsim-counts body"),
    )
    .expect("vcsim-counts JSON");
    let num = |v: &serde_json::Value| v.to_string().parse::<u64>().unwrap_or(0);
    Counts {
        total: num(&v["total"]["/sdk"]),
        methods: v["methods"]["/sdk"]
            .as_object()
            .map(|m| m.iter().map(|(k, n)| (k.clone(), num(n))).collect())
            .unwrap_or_default(),
        peak_inflight: num(&v["peak_inflight"]),
    }
}

fn delta(before: &Counts, after: &Counts) -> (u64, String) {
    let mut parts = Vec::new();
    for (m, n) in &after.methods {
        let d = n - before.methods.get(m).copied().unwrap_or(0);
        if d > 0 {
            parts.push(format!("{m}:{d}"));
        }
    }
    (after.total - before.total, parts.join(" "))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    PerVm,
    Batched,
    All,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::PerVm => "(i) properties per VM, 10 in flight",
            Mode::Batched => "(ii) read_batched, 10 in flight",
            Mode::All => "(iii) one retrieve_all",
        }
    }
}

/// Reads every VM's `PATHS` in `mode`; returns (vm, name, power state, property count) sorted.
async fn refresh(
    client: &Arc<Client>,
    vms: &[ManagedObjectReference],
    mode: Mode,
) -> Vec<(String, String, String, usize)> {
    let summarize = |o: &ObjectContent| {
        (
            o.obj.value.clone(),
            o.text("name").unwrap_or_default().to_string(),
            o.text("runtime.powerState").unwrap_or_default().to_string(),
            o.props.len(),
        )
    };
    let mut out = match mode {
        Mode::All => {
            let all = client
                .retrieve_all("VirtualMachine", PATHS)
                .await
                .expect("retrieve_all");
            all.iter()
                .filter(|o| vms.contains(&o.obj))
                .map(summarize)
                .collect()
        }
        Mode::PerVm | Mode::Batched => {
            // Like Terraform's walker: 10 workers, each taking the next resource when done.
            let queue = Arc::new(Mutex::new(vms.iter().cloned().collect::<VecDeque<_>>()));
            let workers = (0..CONCURRENCY).map(|_| {
                let queue = Arc::clone(&queue);
                let client = Arc::clone(client);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    loop {
                        let Some(vm) = queue.lock().expect("lock").pop_front() else {
                            break;
                        };
                        let o = if mode == Mode::PerVm {
                            client.properties(&vm, PATHS).await
                        } else {
                            client.read_batched(&vm, PATHS).await
                        };
                        got.push(o.expect("read"));
                    }
                    got
                })
            });
            let mut out = Vec::new();
            for w in futures::future::join_all(workers).await {
                out.extend(w.expect("worker").iter().map(summarize));
            }
            out
        }
    };
    out.sort();
    out
}

fn bench_refresh() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".testbed/bin/vcsim");
    println!();
    if !bin.exists() {
        println!(
            "(b) refresh: skipped, {} is missing (scripts/testbed.sh builds it)",
            bin.display()
        );
        return;
    }
    let (sim, sdk_url) = match start_vcsim(&bin) {
        Ok(s) => s,
        Err(e) => {
            println!("(b) refresh: skipped, {e}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(refresh_all(sdk_url));
    drop(sim);
}

async fn refresh_all(sdk_url: url::Url) {
    ceso::vsphere::tls::install_crypto_provider();
    let host = sdk_url.host_str().expect("host").to_string();
    assert!(host == "127.0.0.1" || host == "localhost" || host == "[::1]");
    let base = format!("http://{host}:{}", sdk_url.port().expect("port"));
    let user = sdk_url.username().to_string();
    let password = sdk_url.password().unwrap_or_default().to_string();
    let mut url = sdk_url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);

    let client = Arc::new(
        Client::connect(ConnectConfig {
            url,
            user,
            password: Secret::new(password),
            tls: TlsPolicy::Verify,
            timeout: Duration::from_secs(60),
        })
        .await
        .expect("connect to vcsim"),
    );
    let http = reqwest::Client::new();

    // The inventory (this also creates the container view later retrieve_all calls reuse).
    let listed = client
        .retrieve_all("VirtualMachine", &["name"])
        .await
        .expect("list VMs");
    let mut vms: Vec<ManagedObjectReference> = listed.iter().map(|o| o.obj.clone()).collect();
    vms.sort_by(|a, b| a.value.cmp(&b.value));
    println!(
        "(b) refresh: vcsim vCenter model -vm {VMS_PER_POOL} -delay {DELAY_MS} ({} VMs in the inventory, {} refreshed), {} property paths, concurrency {CONCURRENCY}, median of {REFRESH_RUNS} runs (+1 warm-up)",
        vms.len(),
        REFRESH_VMS.min(vms.len()),
        PATHS.len(),
    );
    assert!(vms.len() >= REFRESH_VMS, "only {} VMs", vms.len());
    vms.truncate(REFRESH_VMS);

    let mut reference: Option<Vec<(String, String, String, usize)>> = None;
    let mut rows = Vec::new();
    for mode in [Mode::PerVm, Mode::Batched, Mode::All] {
        let mut walls = Vec::new();
        let mut trips = Vec::new();
        let mut methods = String::new();
        let mut peak = 0;
        for run in 0..=REFRESH_RUNS {
            let before = counts(&http, &base).await;
            let t = Instant::now();
            let got = refresh(&client, &vms, mode).await;
            let wall = t.elapsed();
            let after = counts(&http, &base).await;
            assert_eq!(got.len(), REFRESH_VMS, "{mode:?}");
            match &reference {
                None => reference = Some(got),
                Some(r) => assert_eq!(r, &got, "{mode:?} read different data"),
            }
            if run == 0 {
                continue;
            }
            let (n, m) = delta(&before, &after);
            walls.push(wall);
            trips.push(n);
            methods = m;
            peak = peak.max(after.peak_inflight);
        }
        walls.sort();
        trips.sort_unstable();
        rows.push((
            mode,
            trips[trips.len() / 2],
            *trips.first().expect("runs"),
            *trips.last().expect("runs"),
            walls[walls.len() / 2],
            methods,
            peak,
        ));
    }
    let props = reference
        .as_ref()
        .map(|r| r.iter().map(|x| x.3).sum::<usize>())
        .unwrap_or(0);
    println!(
        "  {:<38} {:>11} {:>10} {:>9}  methods (last run)",
        "mode", "round trips", "wall ms", "peak srv"
    );
    for (mode, trips, lo, hi, wall, methods, peak) in &rows {
        let range = if lo == hi {
            String::new()
        } else {
            format!(" ({lo}-{hi})")
        };
        println!(
            "  {:<38} {:>11} {:>10.1} {:>9}  {}{}",
            mode.label(),
            trips,
            wall.as_secs_f64() * 1e3,
            peak,
            methods,
            range
        );
    }
    let (per_vm, batched, all) = (&rows[0], &rows[1], &rows[2]);
    let ratio = |a: f64, b: f64| if b == 0.0 { f64::INFINITY } else { a / b };
    println!(
        "  ratios: round trips (i)/(ii) = {:.1}x, (i)/(iii) = {:.1}x; wall time (i)/(ii) = {:.1}x, (i)/(iii) = {:.1}x, (ii)/(iii) = {:.1}x",
        ratio(per_vm.1 as f64, batched.1 as f64),
        ratio(per_vm.1 as f64, all.1 as f64),
        ratio(per_vm.4.as_secs_f64(), batched.4.as_secs_f64()),
        ratio(per_vm.4.as_secs_f64(), all.4.as_secs_f64()),
        ratio(batched.4.as_secs_f64(), all.4.as_secs_f64()),
    );
    println!("  (every mode read the same {props} property values; peak srv = most SOAP calls in flight at the simulator)");
    client.logout().await;
}
