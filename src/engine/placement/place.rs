//! One placement decision: every host through the filters, the ones that fit scored and
//! ranked (ties by host name), the best chosen, the rest explained, and a one-line summary.

use super::error::Error;
use super::filter::{
    check, free_gpus, vgpu_entry, Failure, Fit, GpuNeed, Resolved, MAX_AFFINITY_VMS,
};
use super::index::Index;
use super::model::{Candidate, Decision, Fleet, Placement, PlacementRequest, Rejection};
use super::score::Weights;

/// An inventory indexed for placement, plus what the placements committed so far consumed.
///
/// Build it once per snapshot ([`Placer::new`] is linear in the inventory's size), then ask
/// it any number of times: [`Placer::place`] leaves it as it is, [`Placer::place_and_commit`]
/// (what a batch uses) records the VM it places so later requests see its CPU, memory,
/// disk, GPUs and group.
#[derive(Debug)]
pub struct Placer<'a> {
    pub(crate) ix: Index<'a>,
}

impl<'a> Placer<'a> {
    /// Indexes an inventory; fails on duplicate host or datastore names.
    pub fn new(inventory: &'a Fleet) -> Result<Self, Error> {
        Ok(Placer {
            ix: Index::new(inventory)?,
        })
    }

    /// Flattens every VM's name and groups into one table, so requests that name an
    /// anti-affinity group or VMs scan it instead of the inventory's scattered strings:
    /// worth it before many decisions on one placer (a batch does it on its first commit).
    pub fn index_vms(&mut self) {
        self.ix.build_vm_table();
    }

    /// Places one request without recording it.
    pub fn place(&self, request: &PlacementRequest) -> Result<Decision, Error> {
        validate(request)?;
        let resolved = Resolved::new(&self.ix, request);
        Ok(decide(&self.ix, &resolved).0)
    }

    /// Places one request and, when a host fits, records the VM there.
    pub fn place_and_commit(&mut self, request: &PlacementRequest) -> Result<Decision, Error> {
        validate(request)?;
        let (decision, chosen) = decide(&self.ix, &Resolved::new(&self.ix, request));
        if let Some((fit, gpus, vgpu)) = chosen {
            commit(&mut self.ix, request, &fit, &gpus, vgpu);
        }
        Ok(decision)
    }
}

/// Places one request on an inventory (indexes it first; use a [`Placer`] to place many).
pub fn place(inventory: &Fleet, request: &PlacementRequest) -> Result<Decision, Error> {
    Placer::new(inventory)?.place(request)
}

/// Checks a request's fields before anything is placed.
pub(crate) fn validate(req: &PlacementRequest) -> Result<(), Error> {
    let invalid = |field, reason: &str| {
        Err(Error::InvalidRequest {
            request: req.name.clone(),
            field,
            reason: reason.to_string(),
        })
    };
    if req.cpus == 0 {
        return invalid("cpus", "must be at least 1");
    }
    if req.per_vcpu_mhz == 0 {
        return invalid("per_vcpu_mhz", "must be at least 1");
    }
    if req.memory_mib == 0 {
        return invalid("memory_mib", "must be at least 1");
    }
    if !(req.cpu_overcommit.is_finite() && req.cpu_overcommit > 0.0) {
        return invalid("cpu_overcommit", "must be a positive number");
    }
    if !(req.memory_overcommit.is_finite() && req.memory_overcommit > 0.0) {
        return invalid("memory_overcommit", "must be a positive number");
    }
    if req.affinity_vms.len() > MAX_AFFINITY_VMS {
        return invalid("affinity_vms", "names more than 64 VMs");
    }
    if let Some(gpu) = &req.gpu {
        if gpu.count == 0 {
            return invalid("gpu.count", "must be at least 1");
        }
        if gpu.model.is_some() && gpu.vgpu_profile.is_some() {
            return invalid(
                "gpu.model",
                "conflicts with gpu.vgpu_profile: a model is for passthrough GPUs",
            );
        }
    }
    Ok(())
}

/// What a commit needs: the fit, the passthrough GPUs (indexes into `host_gpus.items`) and
/// the vGPU profile entry.
type Chosen = (Fit, Vec<usize>, Option<usize>);

/// Runs the filters over every host, ranks the fits and writes the decision.
pub(crate) fn decide(ix: &Index<'_>, r: &Resolved<'_, '_>) -> (Decision, Option<Chosen>) {
    let req = r.req;
    let n = ix.hosts.len();
    let mut fits: Vec<Fit> = Vec::with_capacity(n);
    let mut failures: Vec<(u32, Failure)> = Vec::new();
    for h in 0..n as u32 {
        match check(ix, r, h) {
            Ok(fit) => fits.push(fit),
            Err(failure) => failures.push((h, failure)),
        }
    }
    let hosts_fit = fits.len();

    // Best first; equal totals go to the lower id, i.e. the host name.
    let order = |a: &Fit, b: &Fit| {
        b.score
            .total
            .total_cmp(&a.score.total)
            .then(a.host.cmp(&b.host))
    };
    let keep = req.max_candidates.max(1).min(fits.len());
    if keep > 0 && fits.len() > keep {
        fits.select_nth_unstable_by(keep - 1, order);
        fits.truncate(keep);
    }
    fits.sort_unstable_by(order);

    let chosen = fits.first().map(|fit| {
        let (gpus, vgpu) = match &r.gpu {
            GpuNeed::None => (Vec::new(), None),
            GpuNeed::Passthrough { count, model } => (
                free_gpus(ix, fit.host, model.as_deref())
                    .take(*count as usize)
                    .collect(),
                None,
            ),
            GpuNeed::Vgpu { profile, .. } => (Vec::new(), vgpu_entry(ix, fit.host, profile)),
        };
        (*fit, gpus, vgpu)
    });
    let placement = chosen.as_ref().map(|(fit, gpus, vgpu)| {
        let c = candidate(ix, fit);
        Placement {
            host: c.host,
            cluster: c.cluster,
            datastore: c.datastore,
            network: c.network,
            pci_devices: gpus
                .iter()
                .map(|&i| ix.host_gpus.items[i].device.id.clone())
                .collect(),
            vgpu_profile: vgpu.map(|i| ix.host_vgpus.items[i].name.clone()),
            score: fit.score,
            headroom: fit.headroom,
        }
    });
    let candidates: Vec<Candidate> = fits
        .iter()
        .take(req.max_candidates)
        .map(|fit| candidate(ix, fit))
        .collect();
    let rejected: Vec<Rejection> = failures
        .iter()
        .map(|&(h, failure)| Rejection {
            host: ix.hosts[h as usize].name.clone(),
            filter: failure.filter(),
            reason: failure.reason(ix, r, h),
        })
        .collect();
    let summary = summary(r, n, hosts_fit, &failures, placement.as_ref());
    let decision = Decision {
        request: req.name.clone(),
        placement,
        candidates,
        rejected,
        hosts_total: n,
        hosts_fit,
        weights: Weights::of(req.strategy),
        summary,
    };
    (decision, chosen)
}

fn candidate(ix: &Index<'_>, fit: &Fit) -> Candidate {
    let host = ix.hosts[fit.host as usize];
    Candidate {
        host: host.name.clone(),
        cluster: host.cluster.clone(),
        datastore: ix.datastores[fit.datastore as usize].name.clone(),
        network: fit
            .network
            .map(|i| ix.host_nets.items[i as usize].name.to_string()),
        score: fit.score,
        headroom: fit.headroom,
    }
}

/// "0/8 hosts fit: 3 insufficient memory, 2 missing VLAN 120, 2 in maintenance, 1 disconnected"
/// or "6/8 hosts fit, chose esx-03 (datastore ds-1, network vlan-120); rejected: ...".
/// Rejection counts go largest first, then in filter order.
fn summary(
    r: &Resolved<'_, '_>,
    total: usize,
    fit: usize,
    failures: &[(u32, Failure)],
    placement: Option<&Placement>,
) -> String {
    // (key, first failure with it, count); there are few distinct keys.
    let mut groups: Vec<((u8, u32), Failure, usize)> = Vec::new();
    for &(_, failure) in failures {
        let key = failure.summary_key();
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.2 += 1,
            None => groups.push((key, failure, 1)),
        }
    }
    groups.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let counts = groups
        .iter()
        .map(|(_, failure, count)| format!("{count} {}", failure.label(r)))
        .collect::<Vec<_>>()
        .join(", ");
    match placement {
        Some(p) => {
            let mut line = format!(
                "{fit}/{total} hosts fit, chose {} (datastore {}",
                p.host, p.datastore
            );
            if let Some(network) = &p.network {
                line.push_str(", network ");
                line.push_str(network);
            }
            line.push(')');
            if !counts.is_empty() {
                line.push_str("; rejected: ");
                line.push_str(&counts);
            }
            line
        }
        None if total == 0 => "0/0 hosts fit: the inventory has no hosts".to_string(),
        None => format!("{fit}/{total} hosts fit: {counts}"),
    }
}

/// Records a placed VM: its CPU, memory, disk and GPUs, its name and its groups.
fn commit(
    ix: &mut Index<'_>,
    req: &PlacementRequest,
    fit: &Fit,
    gpus: &[usize],
    vgpu: Option<usize>,
) {
    let h = fit.host as usize;
    ix.cpu_used[h] += req.required_cpu_mhz();
    ix.mem_used[h] += req.memory_mib;
    ix.ds_free[fit.datastore as usize] -= req.disk_gib;
    for &i in gpus {
        ix.gpu_taken[i] = true;
    }
    if let (Some(i), Some(gpu)) = (vgpu, &req.gpu) {
        ix.vgpu_free[i] -= gpu.count;
    }
    let groups = req.anti_affinity_group.iter().chain(&req.groups);
    ix.add_vm(fit.host, &req.name, groups.map(String::as_str));
}
