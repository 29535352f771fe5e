//! The shared vSphere client against the simulator: finders, bulk property retrieval, batched
//! reads, tasks awaited with WaitForUpdatesEx, session expiry and re-login, datastore file
//! transfer, and behaviour under a faulty network (a loopback proxy that stalls and resets).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ceso::vsphere::datastore_file::DatastoreFile;
use ceso::vsphere::envelope::RequestWriter;
use ceso::vsphere::error::Result as VResult;
use ceso::vsphere::methods::{Method, TerminateSession};
use ceso::vsphere::types::ManagedObjectReference;
use ceso::vsphere::xml::parse_fragment;
use ceso::vsphere::{Client, ConnectConfig, ErrorKind, Secret, TlsPolicy};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::harness::Vcsim;
use crate::require_acc;

async fn connect_to(url: &str, timeout: Duration) -> VResult<Client> {
    ceso::vsphere::tls::install_crypto_provider();
    Client::connect(ConnectConfig {
        url: url.parse().unwrap(),
        user: "user".into(),
        password: Secret::new("pass"),
        tls: TlsPolicy::Insecure,
        timeout,
    })
    .await
}

async fn connect(sim: &Vcsim) -> Arc<Client> {
    Arc::new(
        connect_to(&sim.url, Duration::from_secs(10))
            .await
            .expect("login"),
    )
}

fn calls(sim: &Vcsim, method: &str) -> u64 {
    sim.counts()["methods"]["/sdk"][method]
        .as_u64()
        .unwrap_or(0)
}

/// A task-returning method the tests use: `ManagedEntity.Rename_Task`.
struct RenameTask {
    this: ManagedObjectReference,
    name: String,
}

impl Method for RenameTask {
    type Response = ManagedObjectReference;
    const NAME: &'static str = "Rename_Task";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        &self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        w.text("newName", &self.name);
    }
    fn decode(inner: &str) -> VResult<Self::Response> {
        Ok(parse_fragment(inner)?[0].as_moref().unwrap())
    }
}

/// `VirtualMachine.PowerOnVM_Task`.
struct PowerOn(ManagedObjectReference);

impl Method for PowerOn {
    type Response = ManagedObjectReference;
    const NAME: &'static str = "PowerOnVM_Task";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        &self.0
    }
    fn decode(inner: &str) -> VResult<Self::Response> {
        Ok(parse_fragment(inner)?[0].as_moref().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finders_and_tasks() {
    require_acc!();
    let sim = Vcsim::start(&[]);
    let client = connect(&sim).await;
    let vms = client
        .retrieve_all(
            "VirtualMachine",
            &[
                "name",
                "config.uuid",
                "config.instanceUuid",
                "runtime.powerState",
            ],
        )
        .await
        .unwrap();
    assert!(vms.len() >= 4, "{}", vms.len());
    let vm = &vms[0];
    let name = vm.text("name").unwrap().to_string();

    assert_eq!(
        client.find_by_name("VirtualMachine", &name).await.unwrap(),
        vm.obj
    );
    assert_eq!(
        client
            .find_vm_by_uuid(vm.text("config.uuid").unwrap(), false)
            .await
            .unwrap(),
        vm.obj
    );
    assert_eq!(
        client
            .find_vm_by_uuid(vm.text("config.instanceUuid").unwrap(), true)
            .await
            .unwrap(),
        vm.obj
    );
    assert_eq!(
        client
            .find_by_path(&format!("/DC0/vm/{name}"))
            .await
            .unwrap(),
        vm.obj
    );
    assert_eq!(client.find_by_ref(&vm.obj).await.unwrap(), vm.obj);
    let e = client.find_by_path("/DC0/vm/nope").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = client
        .find_by_ref(&ManagedObjectReference::new("VirtualMachine", "vm-424242"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e:?}");

    // A task that succeeds, awaited through WaitForUpdatesEx; the simulator then shows the name.
    let other = &vms[1];
    let before_waits = calls(&sim, "WaitForUpdatesEx");
    let task = client
        .call(&RenameTask {
            this: other.obj.clone(),
            name: "ceso-renamed".into(),
        })
        .await
        .unwrap();
    let never = CancellationToken::new();
    client
        .wait_for_task(&task, Some(Duration::from_secs(10)), &never, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        client
            .properties(&other.obj, &["name"])
            .await
            .unwrap()
            .text("name"),
        Some("ceso-renamed")
    );
    let waits = calls(&sim, "WaitForUpdatesEx") - before_waits;
    assert!(waits <= 3, "waited with {waits} WaitForUpdatesEx calls");

    // Two resource pools are called "Resources" (the cluster's and the standalone host's):
    // the finder says so and lists both.
    let pools = client
        .retrieve_all("ResourcePool", &["name"])
        .await
        .unwrap();
    let roots: Vec<_> = pools
        .iter()
        .filter(|p| p.text("name") == Some("Resources"))
        .collect();
    assert_eq!(roots.len(), 2);
    let e = client
        .find_by_name("ResourcePool", "Resources")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message.contains("ambiguous: 2 matches")
            && roots.iter().all(|r| e.message.contains(&r.obj.value)),
        "{}",
        e.message
    );

    // A task that fails: powering on a VM that is already on.
    let on = vms
        .iter()
        .find(|v| v.text("runtime.powerState") == Some("poweredOn"))
        .expect("a powered-on VM");
    let task = client.call(&PowerOn(on.obj.clone())).await.unwrap();
    let e = client
        .wait_for_task(&task, Some(Duration::from_secs(10)), &never, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Task, "{e:?}");
    assert_eq!(e.fault.as_deref(), Some("InvalidPowerState"), "{e:?}");

    // Several tasks awaited at once share one long poll.
    let tasks = futures::future::join_all(vms.iter().take(4).enumerate().map(|(i, v)| {
        let client = client.clone();
        let obj = v.obj.clone();
        async move {
            let t = client
                .call(&RenameTask {
                    this: obj,
                    name: format!("renamed-{i}"),
                })
                .await
                .unwrap();
            client
                .wait_for_task(
                    &t,
                    Some(Duration::from_secs(10)),
                    &CancellationToken::new(),
                    &|_| {},
                )
                .await
        }
    }))
    .await;
    assert!(tasks.iter().all(|t| t.is_ok()), "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_batched_reads_cost_few_round_trips() {
    require_acc!();
    // vCenter model with enough VMs for 1,000+ objects.
    let sim = Vcsim::start(&["-vm", "520"]);
    let client = connect(&sim).await;
    let before = sim.sdk_calls();
    let started = Instant::now();
    let vms = client
        .retrieve_all(
            "VirtualMachine",
            &[
                "name",
                "runtime.powerState",
                "runtime.host",
                "config.hardware.numCPU",
                "config.hardware.memoryMB",
                "config.hardware.device",
            ],
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let calls = sim.sdk_calls() - before;
    eprintln!(
        "retrieve_all: {} VMs × 6 properties in {took:?}, {calls} round trips",
        vms.len()
    );
    assert!(vms.len() >= 1000, "only {} VMs", vms.len());
    assert!(calls <= 2, "{calls} round trips for one bulk read");
    assert!(vms.iter().all(|v| v
        .get("config.hardware.device")
        .is_some_and(|d| !d.children.is_empty())));

    // 200 concurrent single-object reads become a handful of RetrievePropertiesEx calls.
    let before = calls_of(&sim);
    let reads = futures::future::join_all(vms.iter().take(200).map(|v| {
        let client = client.clone();
        let obj = v.obj.clone();
        async move {
            client
                .read_batched(&obj, &["name", "runtime.powerState"])
                .await
        }
    }))
    .await;
    let used = calls_of(&sim) - before;
    eprintln!("200 batched reads: {used} RetrievePropertiesEx calls");
    assert!(reads
        .iter()
        .zip(&vms)
        .all(|(r, v)| r.as_ref().unwrap().text("name") == v.text("name")));
    assert!(used <= 5, "{used} calls for 200 concurrent reads");

    // A deleted object in a batch fails only its own read.
    let ghost = ManagedObjectReference::new("VirtualMachine", "vm-999999");
    let (a, b) = tokio::join!(
        client.read_batched(&vms[0].obj, &["name"]),
        client.read_batched(&ghost, &["name"])
    );
    assert!(a.is_ok());
    assert_eq!(b.unwrap_err().kind, ErrorKind::NotFound);
}

fn calls_of(sim: &Vcsim) -> u64 {
    calls(sim, "RetrievePropertiesEx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_logs_in_again() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let client = connect(&sim).await;
    let admin = connect(&sim).await;
    let sm = client.service_content().session_manager.clone().unwrap();
    let session = client.properties(&sm, &["currentSession"]).await.unwrap();
    let key = session
        .get("currentSession")
        .unwrap()
        .text_of("key")
        .unwrap()
        .to_string();
    admin
        .call(&TerminateSession {
            this: sm.clone(),
            session_ids: vec![key],
        })
        .await
        .unwrap();
    let logins = calls(&sim, "Login");
    // The next call meets NotAuthenticated, logs in again and succeeds.
    client
        .current_time()
        .await
        .expect("call after the session was killed");
    assert_eq!(calls(&sim, "Login"), logins + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_files_round_trip() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let client = connect(&sim).await;
    let file = DatastoreFile::parse("ha-datacenter", "[LocalDS_0] ceso-test/blob.bin").unwrap();
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    client
        .upload(&file, futures::stream::iter(chunks), data.len() as u64)
        .await
        .unwrap();

    let mut got = Vec::new();
    let mut stream = Box::pin(client.download(&file, None).await.unwrap());
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&data),
        "downloaded bytes differ"
    );

    let mut part = Vec::new();
    let mut stream = Box::pin(client.download(&file, Some(1000..5000)).await.unwrap());
    while let Some(chunk) = stream.next().await {
        part.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(part, &data[1000..5000]);

    client.delete_file(&file).await.unwrap();
    let e = match client.download(&file, None).await {
        Err(e) => e,
        Ok(_) => panic!("file still there after delete"),
    };
    assert_eq!(e.kind, ErrorKind::NotFound);
}

/// A loopback TCP proxy whose behaviour the test switches: pass, reset new connections, or
/// accept and stall them.
struct Proxy {
    addr: String,
    mode: Arc<AtomicU8>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

const PASS: u8 = 0;
const RESET_ONCE: u8 = 1;
const STALL: u8 = 2;
const RESET_ALL: u8 = 3;
/// Answer every new connection with HTTP 503 and `Retry-After: 1`.
const BUSY_ALL: u8 = 4;

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, count) = (mode.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                match m.load(Ordering::SeqCst) {
                    RESET_ONCE | RESET_ALL => {
                        let _ = m.compare_exchange(
                            RESET_ONCE,
                            PASS,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        let _ = inbound.set_zero_linger();
                        drop(inbound);
                    }
                    BUSY_ALL => {
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = [0u8; 4096];
                            let _ = inbound.read(&mut buf).await;
                            let _ = inbound
                                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                        });
                    }
                    STALL => {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            drop(inbound);
                        });
                    }
                    _ => {
                        let target = target.clone();
                        tokio::spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        });
                    }
                }
            }
        });
        Proxy {
            addr,
            mode,
            accepted,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_recover_from_resets_and_stalls_time_out() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let proxy = Proxy::start(sim.addr.clone()).await;
    let url = format!("http://{}/sdk", proxy.addr);

    // A reset connection at login time: RetrieveServiceContent is a read and is retried.
    proxy.mode.store(RESET_ONCE, Ordering::SeqCst);
    let client = connect_to(&url, Duration::from_secs(5))
        .await
        .expect("login through a reset");
    assert_eq!(
        proxy.mode.load(Ordering::SeqCst),
        PASS,
        "the reset happened"
    );

    // Every connection reset: a read is tried three times, a write (Login) once, and both
    // report a transport error.
    proxy.mode.store(RESET_ALL, Ordering::SeqCst);
    let transport = ceso::vsphere::transport::Transport::new(
        url.parse().unwrap(),
        &TlsPolicy::Verify,
        Duration::from_secs(5),
    )
    .unwrap();
    let before = proxy.accepted.load(Ordering::SeqCst);
    let e = transport
        .call(&ceso::vsphere::methods::RetrieveServiceContent::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport, "{e:?}");
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst) - before,
        3,
        "a read is retried twice"
    );
    let before = proxy.accepted.load(Ordering::SeqCst);
    let login = ceso::vsphere::methods::Login {
        this: ManagedObjectReference::new("SessionManager", "ha-sessionmgr"),
        user: "user".into(),
        password: Secret::new("pass"),
    };
    let e = transport.call(&login).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport, "{e:?}");
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst) - before,
        1,
        "a write is never retried"
    );
    // A busy server (HTTP 503): a read waits as asked (Retry-After: 1) and is tried three
    // times, a write once; both say the server is busy.
    proxy.mode.store(BUSY_ALL, Ordering::SeqCst);
    let before = proxy.accepted.load(Ordering::SeqCst);
    let started = Instant::now();
    let e = transport
        .call(&ceso::vsphere::methods::RetrieveServiceContent::default())
        .await
        .unwrap_err();
    assert_eq!(e.fault.as_deref(), Some("ServerBusy"), "{e:?}");
    assert!(e.message.contains("busy"), "{e:?}");
    assert_eq!(proxy.accepted.load(Ordering::SeqCst) - before, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited as asked"
    );
    let before = proxy.accepted.load(Ordering::SeqCst);
    let e = transport.call(&login).await.unwrap_err();
    assert_eq!(e.fault.as_deref(), Some("ServerBusy"), "{e:?}");
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst) - before,
        1,
        "a write is never retried"
    );
    proxy.mode.store(PASS, Ordering::SeqCst);

    // A stalled server: the call gives up within the API timeout with a Timeout error.
    let stalled = connect_to(&url, Duration::from_secs(2));
    proxy.mode.store(STALL, Ordering::SeqCst);
    let started = Instant::now();
    let e = stalled.await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Timeout), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    proxy.mode.store(PASS, Ordering::SeqCst);
    client
        .current_time()
        .await
        .expect("the pooled connection still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_calls_while_the_client_lives_and_stops_after() {
    require_acc!();
    let sim = Vcsim::start(&["-esx"]);
    let client = connect(&sim).await;
    let before = calls(&sim, "CurrentTime");
    client.keep_alive(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let kept = calls(&sim, "CurrentTime") - before;
    assert!(
        (3..=7).contains(&kept),
        "{kept} keep-alive calls in 1.1 s at 200 ms"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = calls(&sim, "CurrentTime");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        calls(&sim, "CurrentTime"),
        after_drop,
        "no calls once the client is gone"
    );
}

/// Cancellation end to end: a slow rename (the launcher's `-slow-task`, a running cancelable
/// task as vSphere has them), cancelled by the caller's token (StopProvider / Ctrl-C), is
/// cancelled on the server with `CancelTask`: the waiter gets `Cancelled`, the task ends in
/// RequestCanceled, and the rename never happens. Progress is reported while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_wait_cancels_the_task_on_the_server() {
    require_acc!();
    let sim = Vcsim::start(&["-esx", "-slow-task", "Rename_Task=6000"]);
    let client = connect(&sim).await;
    let vm = client
        .retrieve_all("VirtualMachine", &["name"])
        .await
        .unwrap()
        .remove(0);
    let name = vm.text("name").unwrap().to_string();
    let task = client
        .call(&RenameTask {
            this: vm.obj.clone(),
            name: "never-renamed".into(),
        })
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        trigger.cancel();
    });
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        move |p: i32| seen.lock().unwrap().push(p)
    };
    let started = Instant::now();
    let e = client
        .wait_for_task(&task, Some(Duration::from_secs(20)), &cancel, &progress)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled before the task would end"
    );
    assert_eq!(calls(&sim, "CancelTask"), 1);
    assert!(
        seen.lock().unwrap().contains(&25),
        "progress reported: {:?}",
        seen.lock().unwrap()
    );
    let info = client
        .properties(&task, &["info.state", "info.error", "info.cancelled"])
        .await
        .unwrap();
    assert_eq!(info.text("info.state"), Some("error"));
    assert_eq!(info.text("info.cancelled"), Some("true"));
    let fault = info
        .get("info.error")
        .and_then(|e| e.child("fault"))
        .map(|f| f.type_or("").to_string());
    assert_eq!(fault.as_deref(), Some("RequestCanceled"));
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(
        client
            .properties(&vm.obj, &["name"])
            .await
            .unwrap()
            .text("name"),
        Some(name.as_str()),
        "the cancelled rename never happened"
    );
}
