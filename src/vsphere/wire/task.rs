//! Waiting for vSphere tasks without polling, and without one task's fate depending on another's
//! stream. Each session keeps one private PropertyCollector with one filter over a `ListView`
//! of the tasks it awaits; a background pump runs `WaitForUpdatesEx` long polls on it and hands
//! each task's new `info` to its waiter. Awaiting a task costs no call of its own: tasks join
//! and leave the view through `ModifyListView` calls that carry every task queued while the
//! previous one was in flight (group commit).
//!
//! Recovery: a long poll that fails (a SOAP fault, a reset or lost answer, a timeout) never
//! fails a wait. The pump reads every pending task's `info` directly, then polls again from the
//! version it had (a lost answer) or, after a fault or a second failure in a row, makes the
//! collector, view and filter again, whose first answer is every task's current state. A task
//! that vanished from the server (purged) ends its wait with a transport-kind error: its outcome
//! is unknown, never "failed". Cancellation calls `CancelTask`; a task that ends in error
//! becomes a typed error with vSphere's message.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::vsphere::client::Client;
use crate::vsphere::envelope::RequestWriter;
use crate::vsphere::error::{Error, ErrorKind, Result};
use crate::vsphere::methods::Method;
use crate::vsphere::methods::{
    CancelTask, CreateFilter, CreateListView, CreatePropertyCollector, DestroyPropertyCollector,
    DestroyView, ModifyListView, WaitForUpdatesEx,
};
use crate::vsphere::property::{ObjectSpec, PropertyFilterSpec, PropertySpec, TraversalSpec};
use crate::vsphere::types::ManagedObjectReference;
use crate::vsphere::xml::{parse_fragment, Node};

/// A call of any `*_Task` method: its name, object and arguments; it returns the task.
pub struct TaskCall<'a> {
    /// The SOAP method, e.g. `PowerOnVM_Task`.
    pub name: &'static str,
    /// The object it is invoked on.
    pub this: &'a ManagedObjectReference,
    /// Writes the arguments after `_this`.
    pub args: &'a (dyn Fn(&mut RequestWriter) + Send + Sync),
}

impl Method for TaskCall<'_> {
    type Response = ManagedObjectReference;
    const NAME: &'static str = "";
    const IDEMPOTENT: bool = false;
    fn this(&self) -> &ManagedObjectReference {
        self.this
    }
    fn write_args(&self, w: &mut RequestWriter) {
        (self.args)(w)
    }
    fn decode(inner: &str) -> Result<ManagedObjectReference> {
        parse_fragment(inner)?
            .first()
            .and_then(Node::as_moref)
            .ok_or_else(|| Error::new(ErrorKind::Decode, "vSphere returned no task"))
    }
    fn method_name(&self) -> &'static str {
        self.name
    }
    fn changes_inventory(&self) -> bool {
        // Tasks on VMs and their snapshots (and a VM's creation) leave hosts, datastores and
        // networks as they were.
        !(matches!(
            self.this.kind.as_str(),
            "VirtualMachine" | "VirtualMachineSnapshot" | "Task"
        ) || self.name == "CreateVM_Task")
    }
}

/// Longest single long poll; the pump simply polls again.
const LONG_POLL_SECONDS: u32 = 30;
/// The longest pause between attempts while the update stream keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Tasks per direct read when the stream is recovered.
const DIRECT_READ_CHUNK: usize = 500;
/// How long tasks are gathered before they join the view in one `ModifyListView`, and how
/// long updates gather on the server before the next long poll collects them. Each costs a
/// task's wait at most this much; with many tasks in flight it saves most of the calls.
const GATHER: Duration = Duration::from_millis(GATHER_MS);
const GATHER_MS: u64 = 25;

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting to run.
    Queued,
    /// Running.
    Running,
    /// Done.
    Success,
    /// Failed.
    Error,
}

/// What vSphere says about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Its state.
    pub state: TaskState,
    /// Percent done, when reported.
    pub progress: Option<i32>,
    /// The fault type and message when it failed.
    pub error: Option<(String, String)>,
    /// The task's result (e.g. the new VM's reference), as a node.
    pub result: Option<Node>,
}

impl TaskInfo {
    /// Reads a `TaskInfo` node.
    pub fn from_node(node: &Node) -> Self {
        let state = match node.text_of("state").unwrap_or_default() {
            "success" => TaskState::Success,
            "error" => TaskState::Error,
            "running" => TaskState::Running,
            _ => TaskState::Queued,
        };
        let error = node.child("error").map(|e| {
            let fault = e
                .child("fault")
                .map(|f| f.type_or("MethodFault").to_string())
                .unwrap_or_else(|| "MethodFault".to_string());
            let message = e
                .text_of("localizedMessage")
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("the task failed with {fault}"));
            (fault, message)
        });
        Self {
            state,
            progress: node.parse_of("progress"),
            error,
            result: node.child("result").cloned(),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.state, TaskState::Success | TaskState::Error)
    }
}

/// What a waiter hears about its task.
#[derive(Debug, Clone)]
enum Heard {
    /// The task's current info.
    Info(TaskInfo),
    /// The server no longer knows the task: its outcome is unknown.
    Vanished,
}

/// The per-session dispatcher of task updates.
#[derive(Default)]
pub struct TaskWaiter {
    state: Mutex<WatchState>,
    /// Tells the pump that tasks were queued for the view.
    wake: Notify,
    /// Per task method: how often a task was already done when first read.
    quick: Mutex<HashMap<&'static str, QuickRate>>,
}

/// How often tasks of one method finish before a first (batched) read of them, as a decaying
/// average: worth reading first while it stays above [`QUICK_THRESHOLD`].
#[derive(Debug, Clone, Copy)]
struct QuickRate {
    rate: f32,
    seen: u32,
}

/// Below this share of quick finishes, a method's tasks go straight to the view.
const QUICK_THRESHOLD: f32 = 0.25;
/// After this many skipped probes, a method is tried again (its tasks may have got quicker).
const QUICK_RETRY_EVERY: u32 = 32;

#[derive(Default)]
struct WatchState {
    /// Awaited tasks and the channel each one's news goes to.
    waiters: HashMap<ManagedObjectReference, Watched>,
    /// Awaited tasks not yet in the server-side view.
    to_add: Vec<ManagedObjectReference>,
    /// Finished tasks still in it.
    to_remove: Vec<ManagedObjectReference>,
    /// The server-side collector and view, kept while the pump is idle.
    watch: Option<ServerWatch>,
    /// Whether the pump runs.
    pumping: bool,
    /// Bumped when the session is replaced: server objects made before are dead.
    generation: u64,
}

struct Watched {
    tx: watch::Sender<Option<Heard>>,
    users: usize,
}

/// The server-side objects of the session's task watch.
#[derive(Debug, Clone)]
struct ServerWatch {
    collector: ManagedObjectReference,
    view: ManagedObjectReference,
    version: String,
    generation: u64,
}

impl TaskWaiter {
    /// Whether the tasks of `method` are worth one read before joining the view.
    fn should_probe(&self, method: &'static str) -> bool {
        let mut quick = self.quick.lock().expect("lock");
        let q = quick
            .entry(method)
            .or_insert(QuickRate { rate: 1.0, seen: 0 });
        q.seen = q.seen.wrapping_add(1);
        q.rate >= QUICK_THRESHOLD || q.seen % QUICK_RETRY_EVERY == 0
    }

    /// Records whether a probed task of `method` was already done.
    fn record_probe(&self, method: &'static str, done: bool) {
        if let Some(q) = self.quick.lock().expect("lock").get_mut(method) {
            q.rate = 0.8 * q.rate + if done { 0.2 } else { 0.0 };
        }
    }

    /// Forgets the server-side objects (they died with an expired session); the pump makes new
    /// ones when it next needs them.
    pub(crate) fn reset(&self) {
        let mut st = self.state.lock().expect("lock");
        st.generation += 1;
        st.watch = None;
    }

    /// Registers a waiter for `task`; returns its receiver and whether the pump must start.
    fn register(&self, task: &ManagedObjectReference) -> (watch::Receiver<Option<Heard>>, bool) {
        let mut st = self.state.lock().expect("lock");
        let rx = match st.waiters.get_mut(task) {
            Some(w) => {
                w.users += 1;
                w.tx.subscribe()
            }
            None => {
                let (tx, rx) = watch::channel(None);
                st.waiters.insert(task.clone(), Watched { tx, users: 1 });
                st.to_remove.retain(|t| t != task);
                st.to_add.push(task.clone());
                rx
            }
        };
        let start = !std::mem::replace(&mut st.pumping, true);
        drop(st);
        self.wake.notify_one();
        (rx, start)
    }

    /// Drops one waiter of `task`; the last one queues the task's removal from the view.
    fn unregister(&self, task: &ManagedObjectReference) {
        let mut st = self.state.lock().expect("lock");
        let last = match st.waiters.get_mut(task) {
            Some(w) => {
                w.users -= 1;
                w.users == 0
            }
            None => false,
        };
        if last {
            st.waiters.remove(task);
            if let Some(i) = st.to_add.iter().position(|t| t == task) {
                st.to_add.swap_remove(i);
            } else {
                st.to_remove.push(task.clone());
            }
        }
    }

    fn waiting(&self) -> Vec<ManagedObjectReference> {
        self.state
            .lock()
            .expect("lock")
            .waiters
            .keys()
            .cloned()
            .collect()
    }

    fn tell(&self, task: &ManagedObjectReference, heard: Heard) {
        if let Some(w) = self.state.lock().expect("lock").waiters.get(task) {
            let _ = w.tx.send(Some(heard));
        }
    }

    /// The queued view changes, taken.
    fn take_changes(&self) -> (Vec<ManagedObjectReference>, Vec<ManagedObjectReference>) {
        let mut st = self.state.lock().expect("lock");
        (
            std::mem::take(&mut st.to_add),
            std::mem::take(&mut st.to_remove),
        )
    }

    /// `add` plus the tasks queued since it was taken (removals wait for the next call).
    fn take_more(&self, mut add: Vec<ManagedObjectReference>) -> Vec<ManagedObjectReference> {
        let mut st = self.state.lock().expect("lock");
        add.append(&mut st.to_add);
        // A task that finished while gathering needs no place in the view.
        add.retain(|t| st.waiters.contains_key(t));
        add
    }

    /// Every awaited task, for a new view (which holds exactly those: nothing stays queued).
    fn take_all_for_new_view(&self) -> Vec<ManagedObjectReference> {
        let mut st = self.state.lock().expect("lock");
        st.to_add.clear();
        st.to_remove.clear();
        st.waiters.keys().cloned().collect()
    }

    fn generation(&self) -> u64 {
        self.state.lock().expect("lock").generation
    }

    /// Ends the pump when nobody waits and nothing is queued, keeping `watch` for next time.
    fn stop_if_idle(&self, watch: &mut Option<ServerWatch>) -> bool {
        let mut st = self.state.lock().expect("lock");
        if !st.waiters.is_empty() || !st.to_add.is_empty() {
            return false;
        }
        st.pumping = false;
        if watch
            .as_ref()
            .is_some_and(|w| w.generation == st.generation)
        {
            st.watch = watch.take();
        }
        true
    }
}

type CallFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Awaits an optional in-flight call; pending forever when there is none.
async fn in_flight<T>(call: &mut Option<CallFuture<T>>) -> Result<T> {
    match call {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_BACKOFF)
}

impl Client {
    /// Waits for `task` to finish: its result node on success, a typed error (kind `Task`, with
    /// the fault type and vSphere's message) on failure. `cancel` calls `CancelTask`; `timeout`
    /// bounds the wait. `on_progress` sees each reported percentage. The wait survives lost and
    /// failed long polls; only a task the server no longer knows ends it without an outcome
    /// (kind `Transport`).
    pub async fn wait_for_task(
        self: &Arc<Self>,
        task: &ManagedObjectReference,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        on_progress: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<Option<Node>> {
        self.await_task(task, None, timeout, cancel, on_progress)
            .await
    }

    /// [`Client::wait_for_task`]; with `probe` (the task's method), the task is first read
    /// once, batched with concurrent reads, when that method's tasks are often done by then:
    /// a done task then needs no place in the view and no long poll.
    async fn await_task(
        self: &Arc<Self>,
        task: &ManagedObjectReference,
        probe: Option<&'static str>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        on_progress: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<Option<Node>> {
        let waiter = self.task_waiter();
        if let Some(method) = probe.filter(|m| waiter.should_probe(m)) {
            let first = self
                .read_batched(task, &["info"])
                .await
                .ok()
                .and_then(|o| o.get("info").map(TaskInfo::from_node));
            let done = first.as_ref().is_some_and(TaskInfo::is_done);
            waiter.record_probe(method, done);
            if let Some(info) = first.filter(TaskInfo::is_done) {
                if let Some(p) = info.progress {
                    on_progress(p);
                }
                return outcome_of(task, info);
            }
        }
        let (mut rx, start) = waiter.register(task);
        if start {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.pump().await });
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let outcome = loop {
            let heard = rx.borrow_and_update().clone();
            match heard {
                Some(Heard::Info(info)) => {
                    if let Some(p) = info.progress {
                        on_progress(p);
                    }
                    if info.is_done() {
                        break Ok(info);
                    }
                }
                Some(Heard::Vanished) => {
                    break Err(Error::new(
                        ErrorKind::Transport,
                        format!("{task} vanished from the server before its outcome was read"),
                    ));
                }
                None => {}
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // The sender lives as long as this waiter is registered.
                _ = rx.changed() => {}
                _ = cancel.cancelled() => {
                    let _ = self.call(&CancelTask { this: task.clone() }).await;
                    break Err(Error::new(ErrorKind::Cancelled, format!("{task} was cancelled on request")));
                }
                _ = sleep => break Err(Error::new(ErrorKind::Timeout, format!("{task} did not finish in time"))),
            }
        };
        waiter.unregister(task);
        outcome_of(task, outcome?)
    }

    /// Starts a `*_Task` method and waits for it; the task's result on success.
    pub async fn run_task(
        self: &Arc<Self>,
        call: TaskCall<'_>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Option<Node>> {
        let task = self.call(&call).await?;
        self.await_task(&task, Some(call.name), timeout, cancel, &|_| {})
            .await
    }

    /// Waits until every task of `method` (e.g. `CreateVM_Task`) on `entity` that is queued or
    /// running now has finished. After a lost answer to a task call, this is how a client
    /// knows the call's task (if the server started one) is over before it looks at the result:
    /// the server's recent tasks are read once, and the matching ones awaited like any task.
    pub async fn settle_tasks(
        self: &Arc<Self>,
        entity: &ManagedObjectReference,
        method: &str,
        limit: Duration,
    ) -> Result<()> {
        let Some(manager) = self.service_content().task_manager.clone() else {
            return Ok(());
        };
        let spec = PropertyFilterSpec {
            props: vec![PropertySpec::new("Task", &["info"])],
            objects: vec![ObjectSpec {
                obj: manager,
                skip: true,
                select: vec![TraversalSpec {
                    name: "recentTasks".to_string(),
                    kind: "TaskManager".to_string(),
                    path: "recentTask".to_string(),
                    skip: false,
                }],
            }],
        };
        let wanted = method_key(method);
        let pending: Vec<ManagedObjectReference> = self
            .retrieve(spec)
            .await?
            .into_iter()
            .filter(|o| {
                o.get("info").is_some_and(|info| {
                    let state = info.text_of("state").unwrap_or_default();
                    let named = [
                        info.text_of("name").unwrap_or_default(),
                        info.text_of("descriptionId")
                            .and_then(|d| d.rsplit('.').next())
                            .unwrap_or_default(),
                    ];
                    matches!(state, "queued" | "running")
                        && info.moref_of("entity").as_ref() == Some(entity)
                        && named.iter().any(|n| method_key(n) == wanted)
                })
            })
            .map(|o| o.obj)
            .collect();
        if !pending.is_empty() {
            tracing::debug!(tasks = pending.len(), %entity, method, "waiting for tasks that may be a lost call's");
        }
        let never = CancellationToken::new();
        for task in pending {
            let _ = self
                .wait_for_task(&task, Some(limit), &never, &|_| {})
                .await;
        }
        Ok(())
    }

    /// [`Client::run_task`] for long tasks (clones, disk copies, moves): each new percentage
    /// the task reports is logged at INFO as "`what`: N%", which `TF_LOG=INFO` shows.
    pub async fn run_task_reporting(
        self: &Arc<Self>,
        call: TaskCall<'_>,
        what: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Option<Node>> {
        let task = self.call(&call).await?;
        let last = std::sync::atomic::AtomicI32::new(-1);
        let started = std::time::Instant::now();
        let report = |p: i32| {
            if last.swap(p, std::sync::atomic::Ordering::Relaxed) != p {
                tracing::info!(
                    "{what}: {p}% after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        };
        let done = self
            .await_task(&task, Some(call.name), timeout, cancel, &report)
            .await;
        if done.is_ok() {
            tracing::info!("{what}: done in {:.1} s", started.elapsed().as_secs_f64());
        }
        done
    }

    /// The session's task pump: keeps the server-side watch, sends queued view changes, runs
    /// the long polls and recovers from their failures. Runs while anyone waits.
    async fn pump(self: Arc<Self>) {
        let waiter = self.task_waiter();
        let mut watch = waiter.state.lock().expect("lock").watch.take();
        let mut failures: u32 = 0;
        let mut poll: Option<CallFuture<Option<Node>>> = None;
        let mut modify: Option<CallFuture<Vec<ManagedObjectReference>>> = None;
        loop {
            if watch
                .as_ref()
                .is_some_and(|w| w.generation != waiter.generation())
            {
                watch = None;
            }
            let Some((collector, view, version)) = watch
                .as_ref()
                .map(|w| (w.collector.clone(), w.view.clone(), w.version.clone()))
            else {
                poll = None;
                modify = None;
                let tasks = waiter.take_all_for_new_view();
                match self.make_watch(&tasks).await {
                    Ok(made) => watch = Some(made),
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "could not set up the task watch; reading the tasks directly");
                        self.read_tasks(&tasks).await;
                        if waiter.stop_if_idle(&mut watch) {
                            return;
                        }
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
                continue;
            };
            if poll.is_none() {
                let gather = failures == 0 && !version.is_empty();
                let call = WaitForUpdatesEx {
                    this: collector,
                    version,
                    max_wait_seconds: LONG_POLL_SECONDS,
                };
                let me = Arc::clone(&self);
                poll = Some(Box::pin(async move {
                    if gather {
                        tokio::time::sleep(GATHER).await;
                    }
                    me.call(&call).await
                }));
            }
            if modify.is_none() {
                let (add, remove) = waiter.take_changes();
                if !add.is_empty() || !remove.is_empty() {
                    let call = ModifyListView {
                        this: view,
                        add,
                        remove,
                    };
                    let me = Arc::clone(&self);
                    modify = Some(Box::pin(async move {
                        tokio::time::sleep(GATHER).await;
                        let call = ModifyListView {
                            add: me.task_waiter().take_more(call.add),
                            ..call
                        };
                        let refused = me.call(&call).await?;
                        // Tasks the view refused (gone already) are read on their own.
                        let refused: Vec<_> = refused
                            .into_iter()
                            .filter(|t| call.add.contains(t))
                            .collect();
                        Ok(refused)
                    }));
                }
            }
            tokio::select! {
                result = in_flight(&mut poll) => {
                    poll = None;
                    match result {
                        Ok(update) => {
                            failures = 0;
                            if let Some(set) = update {
                                if let (Some(v), Some(w)) = (set.text_of("version"), watch.as_mut()) {
                                    w.version = v.to_string();
                                }
                                for (task, info) in task_updates(&set) {
                                    waiter.tell(&task, Heard::Info(info));
                                }
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(error = %e, failures, "waiting for task updates failed; reading the awaited tasks directly");
                            self.read_tasks(&waiter.waiting()).await;
                            // A fault (or a second failure) means the collector may be gone or
                            // its version history lost: make everything again. A lost answer
                            // alone is asked again from the same version.
                            let remake = failures >= 2
                                || !matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout);
                            if remake {
                                if let Some(old) = watch.take() {
                                    let me = Arc::clone(&self);
                                    tokio::spawn(async move { me.discard_watch(old).await });
                                }
                            }
                            if failures >= 2 && !waiter.waiting().is_empty() {
                                tokio::time::sleep(backoff(failures)).await;
                            }
                        }
                    }
                    if modify.is_none() && waiter.stop_if_idle(&mut watch) {
                        return;
                    }
                }
                result = in_flight(&mut modify) => {
                    modify = None;
                    match result {
                        Ok(refused) if refused.is_empty() => {}
                        Ok(refused) => self.read_tasks(&refused).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "adding tasks to the task watch failed; making it again");
                            self.read_tasks(&waiter.waiting()).await;
                            if let Some(old) = watch.take() {
                                let me = Arc::clone(&self);
                                tokio::spawn(async move { me.discard_watch(old).await });
                            }
                        }
                    }
                }
                _ = waiter.wake.notified(), if modify.is_none() => {}
            }
        }
    }

    /// A private collector with one filter on every task's `info` in a new list view of `tasks`.
    async fn make_watch(&self, tasks: &[ManagedObjectReference]) -> Result<ServerWatch> {
        let generation = self.task_waiter().generation();
        let collector = self
            .call(&CreatePropertyCollector {
                this: self.service_content().property_collector.clone(),
            })
            .await?;
        let view_manager =
            self.service_content().view_manager.clone().ok_or_else(|| {
                Error::new(ErrorKind::NotVsphere, "the endpoint has no view manager")
            })?;
        let view = self
            .call(&CreateListView {
                this: view_manager,
                objects: tasks.to_vec(),
            })
            .await?;
        self.call(&CreateFilter {
            this: collector.clone(),
            spec: PropertyFilterSpec {
                props: vec![PropertySpec::new("Task", &["info"])],
                objects: vec![ObjectSpec {
                    obj: view.clone(),
                    skip: true,
                    select: vec![TraversalSpec {
                        name: "traverseTasks".to_string(),
                        kind: "ListView".to_string(),
                        path: "view".to_string(),
                        skip: false,
                    }],
                }],
            },
            partial_updates: false,
        })
        .await?;
        Ok(ServerWatch {
            collector,
            view,
            version: String::new(),
            generation,
        })
    }

    /// Destroys a replaced watch (best effort: it may be gone with its session already).
    async fn discard_watch(&self, old: ServerWatch) {
        if old.generation != self.task_waiter().generation() {
            return;
        }
        let _ = self
            .call(&DestroyPropertyCollector {
                this: old.collector,
            })
            .await;
        let _ = self.call(&DestroyView { this: old.view }).await;
    }

    /// Reads the `info` of `tasks` directly and tells their waiters; a task the server no
    /// longer knows is reported as vanished. Errors are logged: the stream, once back, or the
    /// next recovery tells the rest.
    async fn read_tasks(&self, tasks: &[ManagedObjectReference]) {
        let waiter = self.task_waiter();
        for chunk in tasks.chunks(DIRECT_READ_CHUNK) {
            let spec = PropertyFilterSpec {
                props: vec![PropertySpec::new("Task", &["info"])],
                objects: chunk.iter().cloned().map(ObjectSpec::object).collect(),
            };
            match self.retrieve(spec).await {
                Ok(objects) => {
                    for o in objects {
                        if let Some(info) = o.get("info").map(TaskInfo::from_node) {
                            waiter.tell(&o.obj, Heard::Info(info));
                        }
                    }
                }
                Err(e) if e.is_not_found() => {
                    // One of them is gone: ask one by one to know which.
                    for task in chunk {
                        match self.properties(task, &["info"]).await {
                            Ok(o) => {
                                if let Some(info) = o.get("info").map(TaskInfo::from_node) {
                                    waiter.tell(task, Heard::Info(info));
                                }
                            }
                            Err(e) if e.is_not_found() => waiter.tell(task, Heard::Vanished),
                            Err(e) => tracing::debug!(error = %e, %task, "direct task read failed"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "direct task read failed"),
            }
        }
    }
}

/// A method name as tasks report it, folded: `CreateVM_Task`, `createVm` and the last part of
/// `Folder.createVm` are all `createvm`.
fn method_key(name: &str) -> String {
    let lower = name.to_ascii_lowercase().replace('_', "");
    lower.strip_suffix("task").unwrap_or(&lower).to_string()
}

/// A finished task's result, or its error as a typed error with vSphere's message.
fn outcome_of(task: &ManagedObjectReference, info: TaskInfo) -> Result<Option<Node>> {
    match (info.state, info.error) {
        (TaskState::Success, _) => Ok(info.result),
        (_, Some((fault, message))) => Err(Error {
            kind: match Error::from_fault(&fault, "").kind {
                ErrorKind::Fault => ErrorKind::Task,
                other => other,
            },
            fault: Some(fault),
            message,
            retry_after: None,
        }),
        _ => Err(Error::new(ErrorKind::Task, format!("{task} failed"))),
    }
}

/// The task infos carried by an `UpdateSet`.
fn task_updates(set: &Node) -> Vec<(ManagedObjectReference, TaskInfo)> {
    let mut out = Vec::new();
    for filter in set.children_named("filterSet") {
        for object in filter.children_named("objectSet") {
            let Some(obj) = object.moref_of("obj") else {
                continue;
            };
            for change in object.children_named("changeSet") {
                if change.text_of("name") == Some("info") {
                    if let Some(val) = change.child("val") {
                        out.push((obj.clone(), TaskInfo::from_node(val)));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse_fragment;

    #[test]
    fn reads_update_sets() {
        let xml = r#"<returnval><version>2</version><filterSet><filter type="PropertyFilter">f-1</filter><objectSet><kind>modify</kind><obj type="Task">task-7</obj><changeSet><name>info</name><op>assign</op><val xsi:type="TaskInfo"><key>task-7</key><state>error</state><error><fault xsi:type="InvalidPowerState"><requestedState>poweredOn</requestedState></fault><localizedMessage>The attempted operation cannot be performed in the current state (Powered on).</localizedMessage></error><progress>40</progress></val></changeSet></objectSet></filterSet></returnval>"#;
        let set = parse_fragment(xml).unwrap().pop().unwrap();
        let updates = task_updates(&set);
        assert_eq!(updates.len(), 1);
        let (task, info) = &updates[0];
        assert_eq!(task, &ManagedObjectReference::new("Task", "task-7"));
        assert_eq!(info.state, TaskState::Error);
        assert_eq!(info.progress, Some(40));
        let (fault, message) = info.error.clone().unwrap();
        assert_eq!(fault, "InvalidPowerState");
        assert!(message.contains("current state"));
    }

    #[test]
    fn method_names_fold_as_tasks_report_them() {
        assert_eq!(method_key("CreateVM_Task"), "createvm");
        assert_eq!(method_key("createVm"), "createvm");
        assert_eq!(method_key("PowerOnVM_Task"), method_key("powerOnVm"));
        assert_ne!(method_key("PowerOnVM_Task"), method_key("PowerOffVM_Task"));
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn waiters_share_a_task_and_queue_view_changes() {
        let w = TaskWaiter::default();
        let t = ManagedObjectReference::new("Task", "task-1");
        let (_a, start) = w.register(&t);
        assert!(start);
        let (_b, start) = w.register(&t);
        assert!(!start, "one pump per session");
        assert_eq!(w.take_changes().0, vec![t.clone()], "queued once");
        w.unregister(&t);
        assert!(w.take_changes().1.is_empty(), "still awaited by one");
        w.unregister(&t);
        assert_eq!(w.take_changes().1, vec![t.clone()]);
        // A task finished before it reached the view is simply dropped from the queue.
        let u = ManagedObjectReference::new("Task", "task-2");
        let _c = w.register(&u);
        w.unregister(&u);
        assert_eq!(w.take_changes(), (vec![], vec![]));
    }
}
