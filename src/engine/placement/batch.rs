//! Batch placement for Terraform `count` / `for_each`: requests placed in order, each one
//! seeing the CPU, memory, disk, GPUs and groups of those placed before it, so three requests
//! with `anti_affinity_group = "web"` land on three hosts, or the one that cannot says why.

use serde::{Deserialize, Serialize};

use super::error::Error;
use super::model::{Decision, Fleet, PlacementRequest};
use super::place::{validate, Placer};

/// The outcome of a batch: one decision per request, in request order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchDecision {
    /// One decision per request, in order.
    pub decisions: Vec<Decision>,
    /// Requests that got a host.
    pub placed: usize,
    /// One line: "3/3 placed" or "2/3 placed; web-2: 0/2 hosts fit: 2 already run group web".
    pub summary: String,
}

impl Placer<'_> {
    /// Places requests in order, committing each, so later ones see earlier ones. A request no
    /// host fits is reported in its decision and the batch goes on; an invalid request fails
    /// the batch before anything is placed.
    pub fn place_batch(&mut self, requests: &[PlacementRequest]) -> Result<BatchDecision, Error> {
        for request in requests {
            validate(request)?;
        }
        let mut decisions = Vec::with_capacity(requests.len());
        for request in requests {
            decisions.push(self.place_and_commit(request)?);
        }
        let placed = decisions.iter().filter(|d| d.placement.is_some()).count();
        let mut summary = format!("{placed}/{} placed", decisions.len());
        let mut failed = decisions.iter().filter(|d| d.placement.is_none());
        if let Some(first) = failed.next() {
            summary.push_str(&format!("; {}: {}", first.request, first.summary));
            let more = failed.count();
            if more > 0 {
                summary.push_str(&format!(" (and {more} more unplaced)"));
            }
        }
        Ok(BatchDecision {
            decisions,
            placed,
            summary,
        })
    }
}

/// Places a batch of requests on an inventory (see [`Placer::place_batch`]).
pub fn place_batch(
    inventory: &Fleet,
    requests: &[PlacementRequest],
) -> Result<BatchDecision, Error> {
    Placer::new(inventory)?.place_batch(requests)
}
