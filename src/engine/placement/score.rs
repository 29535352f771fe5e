//! Soft constraints: how well a host that fits suits the VM, per criterion and weighted.
//!
//! Every criterion scores 0–100 from the host's state *after* placement:
//!
//! - `cpu`: 100 × (1 − CPU utilisation) under spread and balanced, 100 × CPU utilisation
//!   under pack;
//! - `memory`: the same for memory;
//! - `balance`: 100 × (1 − |CPU utilisation − memory utilisation|), the two-resource form of
//!   Kubernetes' BalancedAllocation;
//! - `datastore`: 100 × the share of the chosen datastore left free;
//! - `gpu`: 0 when a request without GPUs would land on a host with a GPU or vGPU instance
//!   free (keeping those hosts for the VMs that need them), else 100.
//!
//! Utilisation is used ÷ allocatable (capacity × over-commit ratio). The total is the weighted
//! mean (see [`Weights::of`]), so it is 0–100 too. With these weights, more free CPU, memory or
//! datastore space never lowers a host's spread score: `balance` is not weighted under spread.

use serde::{Deserialize, Serialize};

use super::model::Strategy;

/// Per-criterion scores (0–100) of one host and their weighted total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreBreakdown {
    /// CPU: free share (spread, balanced) or used share (pack) after placement.
    pub cpu: f64,
    /// Memory: free share (spread, balanced) or used share (pack) after placement.
    pub memory: f64,
    /// How close CPU and memory utilisation are after placement.
    pub balance: f64,
    /// Share of the chosen datastore still free after placement.
    pub datastore: f64,
    /// Keeps hosts with free GPUs for VMs that need them.
    pub gpu: f64,
    /// Weighted mean of the above.
    pub total: f64,
}

/// How much each criterion counts in a strategy's total.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight of `cpu`.
    pub cpu: f64,
    /// Weight of `memory`.
    pub memory: f64,
    /// Weight of `balance`.
    pub balance: f64,
    /// Weight of `datastore`.
    pub datastore: f64,
    /// Weight of `gpu`.
    pub gpu: f64,
}

impl Weights {
    /// The weights of a strategy: CPU and memory dominate spread and pack, balance dominates
    /// balanced (which keeps a little of spread's preference for free hosts, so an empty and a
    /// full host with equal utilisations do not tie).
    pub const fn of(strategy: Strategy) -> Weights {
        match strategy {
            Strategy::Spread | Strategy::Pack => Weights {
                cpu: 4.0,
                memory: 4.0,
                balance: 0.0,
                datastore: 1.0,
                gpu: 1.0,
            },
            Strategy::Balanced => Weights {
                cpu: 1.0,
                memory: 1.0,
                balance: 6.0,
                datastore: 1.0,
                gpu: 1.0,
            },
        }
    }

    fn sum(&self) -> f64 {
        self.cpu + self.memory + self.balance + self.datastore + self.gpu
    }
}

/// A host's state after placement, as the scores read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct After {
    /// CPU used ÷ allocatable, 0–1.
    pub cpu_util: f64,
    /// Memory used ÷ allocatable, 0–1.
    pub memory_util: f64,
    /// Chosen datastore's free ÷ capacity, 0–1.
    pub datastore_free: f64,
    /// The request needs no GPU but the host has one free.
    pub wastes_gpu: bool,
}

/// `part ÷ whole` clamped to 0–1; 0 when `whole` is 0.
pub(crate) fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).min(1.0)
    }
}

/// Scores one host.
pub(crate) fn score(strategy: Strategy, after: &After) -> ScoreBreakdown {
    let w = Weights::of(strategy);
    let (cpu, memory) = match strategy {
        Strategy::Pack => (100.0 * after.cpu_util, 100.0 * after.memory_util),
        Strategy::Spread | Strategy::Balanced => (
            100.0 * (1.0 - after.cpu_util),
            100.0 * (1.0 - after.memory_util),
        ),
    };
    let balance = 100.0 * (1.0 - (after.cpu_util - after.memory_util).abs());
    let datastore = 100.0 * after.datastore_free;
    let gpu = if after.wastes_gpu { 0.0 } else { 100.0 };
    let total = (w.cpu * cpu
        + w.memory * memory
        + w.balance * balance
        + w.datastore * datastore
        + w.gpu * gpu)
        / w.sum();
    ScoreBreakdown {
        cpu,
        memory,
        balance,
        datastore,
        gpu,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(cpu: f64, mem: f64) -> After {
        After {
            cpu_util: cpu,
            memory_util: mem,
            datastore_free: 0.5,
            wastes_gpu: false,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn spread_scores_free_share() {
        // cpu 25% used -> 75, memory 50% -> 50, balance 1 - 0.25 = 75, ds 50, gpu 100.
        // total = (4*75 + 4*50 + 0*75 + 1*50 + 1*100) / 10 = 650 / 10 = 65.
        let s = score(Strategy::Spread, &after(0.25, 0.5));
        assert!(close(s.cpu, 75.0) && close(s.memory, 50.0));
        assert!(close(s.balance, 75.0) && close(s.datastore, 50.0) && close(s.gpu, 100.0));
        assert!(close(s.total, 65.0), "{s:?}");
    }

    #[test]
    fn pack_scores_used_share() {
        // cpu 25 and memory 50 used: (4*25 + 4*50 + 50 + 100) / 10 = 450 / 10 = 45.
        let s = score(Strategy::Pack, &after(0.25, 0.5));
        assert!(close(s.cpu, 25.0) && close(s.memory, 50.0));
        assert!(close(s.total, 45.0), "{s:?}");
    }

    #[test]
    fn balanced_scores_closeness() {
        // (1*75 + 1*50 + 6*75 + 50 + 100) / 10 = 725 / 10 = 72.5.
        let s = score(Strategy::Balanced, &after(0.25, 0.5));
        assert!(close(s.total, 72.5), "{s:?}");
        // Equal utilisations balance perfectly: (60 + 60 + 600 + 50 + 100) / 10 = 87.
        let s = score(Strategy::Balanced, &after(0.4, 0.4));
        assert!(close(s.balance, 100.0) && close(s.total, 87.0), "{s:?}");
    }

    #[test]
    fn gpu_criterion_penalises_wasting_a_gpu_host() {
        let mut a = after(0.25, 0.5);
        a.wastes_gpu = true;
        let s = score(Strategy::Spread, &a);
        // 650 - 100 = 550 -> 55.
        assert!(close(s.gpu, 0.0) && close(s.total, 55.0), "{s:?}");
    }

    #[test]
    fn share_handles_zero_and_overflow() {
        assert_eq!(share(5, 0), 0.0);
        assert_eq!(share(15, 10), 1.0);
        assert!(close(share(1, 4), 0.25));
    }
}
