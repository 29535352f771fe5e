//! Waiting for vSphere tasks without polling: one private PropertyCollector per session watches
//! every awaited task's `info` through `WaitForUpdatesEx` (a long poll that returns as soon as
//! any watched task changes), and hands each update to the task's waiter. Cancellation calls
//! `CancelTask`; a task that ends in error becomes a typed error with vSphere's message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::envelope::RequestWriter;
use super::error::{Error, ErrorKind, Result};
use super::methods::Method;
use super::methods::{
    CancelTask, CreateFilter, CreatePropertyCollector, DestroyPropertyFilter, WaitForUpdatesEx,
};
use super::property::{ObjectSpec, PropertyFilterSpec, PropertySpec};
use super::types::ManagedObjectReference;
use super::xml::{parse_fragment, Node};

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
}

/// Longest single long poll; the loop simply polls again.
const LONG_POLL_SECONDS: u32 = 30;

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

/// The per-session dispatcher of task updates.
#[derive(Default)]
pub struct TaskWaiter {
    collector: Mutex<OnceCell<ManagedObjectReference>>,
    state: Mutex<WaiterState>,
}

impl TaskWaiter {
    /// Forgets the session's private collector (it died with an expired session).
    pub(crate) fn reset(&self) {
        *self.collector.lock().expect("lock") = OnceCell::new();
    }
}

#[derive(Default)]
struct WaiterState {
    waiters: HashMap<ManagedObjectReference, watch::Sender<Option<TaskInfo>>>,
    polling: bool,
}

impl Client {
    /// Waits for `task` to finish: its result node on success, a typed error (kind `Task`, with
    /// the fault type and vSphere's message) on failure. `cancel` calls `CancelTask`; `timeout`
    /// bounds the wait. `on_progress` sees each reported percentage.
    pub async fn wait_for_task(
        self: &Arc<Self>,
        task: &ManagedObjectReference,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        on_progress: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<Option<Node>> {
        let waiter = self.task_waiter();
        let known = waiter.collector.lock().expect("lock").get().cloned();
        let collector = match known {
            Some(c) => c,
            None => {
                let c = self
                    .call(&CreatePropertyCollector {
                        this: self.service_content().property_collector.clone(),
                    })
                    .await?;
                let cell = waiter.collector.lock().expect("lock");
                let _ = cell.set(c);
                cell.get().cloned().expect("just set")
            }
        };
        let (tx, mut rx) = watch::channel(None);
        let start_loop = {
            let mut st = waiter.state.lock().expect("lock");
            st.waiters.insert(task.clone(), tx);
            !std::mem::replace(&mut st.polling, true)
        };
        let filter = match self
            .call(&CreateFilter {
                this: collector.clone(),
                spec: PropertyFilterSpec {
                    props: vec![PropertySpec::new("Task", &["info"])],
                    objects: vec![ObjectSpec::object(task.clone())],
                },
                partial_updates: false,
            })
            .await
        {
            Ok(f) => f,
            Err(e) => {
                self.forget_waiter(task);
                if start_loop {
                    // Others may have registered counting on the loop this call was to start.
                    let keep_polling = {
                        let mut st = waiter.state.lock().expect("lock");
                        st.polling = !st.waiters.is_empty();
                        st.polling
                    };
                    if keep_polling {
                        let me = Arc::clone(self);
                        tokio::spawn(async move { me.poll_updates(collector).await });
                    }
                }
                return Err(e);
            }
        };
        if start_loop {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.poll_updates(collector).await });
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        // Safety net: if the update stream stays silent about this task (some servers only
        // report a filter created during a pending long poll once something else changes),
        // read the task's info directly, backing off from 1 s to 15 s.
        let mut silent_for = Duration::from_secs(1);
        let outcome = loop {
            let info = rx.borrow_and_update().clone();
            if let Some(info) = info {
                if let Some(p) = info.progress {
                    on_progress(p);
                }
                if info.is_done() {
                    break Ok(info);
                }
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    break Err(Error::new(ErrorKind::Transport, format!("lost the update stream while waiting for {task}")));
                },
                _ = cancel.cancelled() => {
                    let _ = self.call(&CancelTask { this: task.clone() }).await;
                    break Err(Error::new(ErrorKind::Cancelled, format!("{task} was cancelled on request")));
                }
                _ = sleep => break Err(Error::new(ErrorKind::Timeout, format!("{task} did not finish in time"))),
                _ = tokio::time::sleep(silent_for) => {
                    silent_for = (silent_for * 2).min(Duration::from_secs(15));
                    if let Ok(o) = self.properties(task, &["info"]).await {
                        if let Some(info) = o.get("info").map(TaskInfo::from_node) {
                            if info.is_done() {
                                break Ok(info);
                            }
                        }
                    }
                }
            }
        };
        self.forget_waiter(task);
        // The filter is not needed any more; removing it is off the critical path.
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.call(&DestroyPropertyFilter { this: filter }).await;
        });
        let info = outcome?;
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

    /// Starts a `*_Task` method and waits for it; the task's result on success.
    pub async fn run_task(
        self: &Arc<Self>,
        call: TaskCall<'_>,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Option<Node>> {
        let task = self.call(&call).await?;
        self.wait_for_task(&task, timeout, cancel, &|_| {}).await
    }

    fn forget_waiter(&self, task: &ManagedObjectReference) {
        self.task_waiter()
            .state
            .lock()
            .expect("lock")
            .waiters
            .remove(task);
    }

    /// The long-poll loop: runs while anyone waits, and hands each task's new info to its
    /// waiter. Transport errors end every current wait (their channels close).
    async fn poll_updates(self: Arc<Self>, collector: ManagedObjectReference) {
        let mut version = String::new();
        loop {
            let update = self
                .call(&WaitForUpdatesEx {
                    this: collector.clone(),
                    version: version.clone(),
                    max_wait_seconds: LONG_POLL_SECONDS,
                })
                .await;
            let mut st = self.task_waiter().state.lock().expect("lock");
            match update {
                Ok(Some(set)) => {
                    if let Some(v) = set.text_of("version") {
                        version = v.to_string();
                    }
                    for (task, info) in task_updates(&set) {
                        if let Some(tx) = st.waiters.get(&task) {
                            let _ = tx.send(Some(info));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for task updates failed");
                    st.waiters.clear();
                }
            }
            if st.waiters.is_empty() {
                st.polling = false;
                return;
            }
        }
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
}
