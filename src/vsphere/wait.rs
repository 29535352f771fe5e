//! Waiting for a property of any managed object (an import lease's `state`, a host's connection
//! state) to reach a value, through a private PropertyCollector and `WaitForUpdatesEx` long
//! polls: no reads in a sleep loop. Tasks have their own shared watch (`task`).

use std::time::Duration;

use super::client::Client;
use super::error::{Error, ErrorKind, Result};
use super::methods::{
    CreateFilter, CreatePropertyCollector, DestroyPropertyCollector, WaitForUpdatesEx,
};
use super::property::{ObjectSpec, PropertyFilterSpec, PropertySpec};
use super::types::ManagedObjectReference;
use super::xml::Node;

/// Longest single long poll of a property wait.
const LONG_POLL_SECONDS: u32 = 30;

impl Client {
    /// Waits until `done` accepts the values of `paths` of `obj` (each `None` while unset), for
    /// at most `timeout`; returns those values. A failed long poll is asked again from the start
    /// (the current values), so lost answers cost a call, never the wait.
    pub async fn wait_for_properties(
        &self,
        obj: &ManagedObjectReference,
        paths: &[&str],
        timeout: Duration,
        done: impl Fn(&[Option<Node>]) -> bool,
    ) -> Result<Vec<Option<Node>>> {
        let collector = self
            .call(&CreatePropertyCollector {
                this: self.service_content().property_collector.clone(),
            })
            .await?;
        let outcome = tokio::time::timeout(
            timeout,
            self.watch_properties(&collector, obj, paths, &done),
        )
        .await;
        // The collector (and its filter) is not needed any more.
        let _ = self
            .call(&DestroyPropertyCollector { this: collector })
            .await;
        outcome.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "{obj} did not reach the awaited {} within {timeout:?}",
                    paths.join(", ")
                ),
            )
        })?
    }

    async fn watch_properties(
        &self,
        collector: &ManagedObjectReference,
        obj: &ManagedObjectReference,
        paths: &[&str],
        done: &impl Fn(&[Option<Node>]) -> bool,
    ) -> Result<Vec<Option<Node>>> {
        self.call(&CreateFilter {
            this: collector.clone(),
            spec: PropertyFilterSpec {
                props: vec![PropertySpec::new(&obj.kind, paths)],
                objects: vec![ObjectSpec::object(obj.clone())],
            },
            partial_updates: false,
        })
        .await?;
        let mut values: Vec<Option<Node>> = vec![None; paths.len()];
        let mut version = String::new();
        let mut failures = 0u32;
        loop {
            let update = self
                .call(&WaitForUpdatesEx {
                    this: collector.clone(),
                    version: version.clone(),
                    max_wait_seconds: LONG_POLL_SECONDS,
                })
                .await;
            match update {
                Ok(Some(set)) => {
                    failures = 0;
                    version = set.text_of("version").unwrap_or_default().to_string();
                    for change in set
                        .children_named("filterSet")
                        .flat_map(|f| f.children_named("objectSet"))
                        .filter(|o| o.moref_of("obj").as_ref() == Some(obj))
                        .flat_map(|o| o.children_named("changeSet"))
                    {
                        let name = change.text_of("name").unwrap_or_default();
                        if let Some(i) = paths.iter().position(|p| *p == name) {
                            values[i] = change.child("val").cloned();
                        }
                    }
                    if done(&values) {
                        return Ok(values);
                    }
                }
                Ok(None) => {}
                Err(e) if e.is_not_found() => return Err(e),
                Err(e) => {
                    failures += 1;
                    if failures > 5 {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, %obj, "a property wait's long poll failed; asking again");
                    // From the start: the current values, whatever was lost.
                    version.clear();
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                }
            }
        }
    }
}
