#!/usr/bin/env python3
"""Scale benchmark: N VMs with ceso_vm beside HashiCorp's vsphere_virtual_machine 2.0.2 (the peer).

Run by `make bench`, or directly:

    scripts/testbed.sh --peer
    python3 bench/vms.py                       # N = 200 (both) and 1,000 (ours), -parallelism 10 and 50
    python3 bench/vms.py --vms 10,100 --delay 5 --parallelism 10
    python3 bench/vms.py --vms 2 --check       # both configs apply, plan empty, destroy

The same workload for both providers, each on its own fresh simulator (vCenter model:
one datacenter DC0, cluster DC0_C0 of 3 hosts + 1 standalone host, datastore LocalDS_0;
flags -tls -vapi -cralias -delay D, i.e. D ms of latency on every SOAP call, 20 by default),
for each N and each -parallelism P (10, Terraform's default, and 50 by default):

  apply     `terraform apply` creating N VMs from scratch: 1 vCPU, 1024 MiB, guest
            otherGuest64, one 1 GiB thin disk "disk0", one vmxnet3 NIC on --network
            ("VM Network" or the distributed port group "DC0_DVPG0"), powered on.
  plan      `terraform plan -detailed-exitcode` with everything in place: a refresh of
            all N VMs, which must show no changes (exit 0) for both; otherwise the plan
            text is kept in the JSON and in target/bench/vms-plan-SIDE-N.txt.
  destroy   `terraform destroy`.

Per step and side: wall time,
SOAP round trips (GET /vcsim-counts before and after; every POST to /sdk and /pbm,
per method; the launcher does not count the peer's vAPI /rest calls), round trips
per VM, the simulator's peak of concurrent SOAP calls, and the provider's peak RSS
(the probe of bench/bench.py: Terraform starts a wrapper that runs the real binary
as its child and records its ru_maxrss). Ours runs through dev_overrides, configured
from CESO_URL/CESO_USER/CESO_PASSWORD/CESO_ALLOW_UNVERIFIED_SSL; the peer through a
filesystem mirror and `terraform init`.

Watchdog: govmomi 0.24's simulator can drop a WaitForUpdatesEx with a Go panic when a
PropertyFilter of the same collector is destroyed meanwhile (its updates are lost with it).
Each step counts such panics (`simulator_panics`); a step during which the simulator sees
no SOAP call but WaitForUpdatesEx for --stall-seconds is abandoned, and that provider and N
run again on a fresh simulator (--attempts; the abandoned run stays in `failed_attempts`).

Writes target/bench/vms.json and prints a table with ours/peer ratios (lower is better).
A missing binary makes that side "skipped"; a failed step is an error (exit 1), and the
later steps of that side and N are skipped (a failed apply is still destroyed).
Python 3.11, standard library only; loopback only; every subprocess has a timeout.
The other parts of `make bench`: bench/bench.py (foundation), bench/transfers.py (multi-GiB
disk transfers beside curl and restic), `cargo bench --bench hot_backup`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402  (shared helpers: processes, vcsim, probe, CLI configs)

ROOT = B.ROOT
TESTBED = B.TESTBED
STEPS = ("apply", "plan", "destroy")
VCSIM_FLAGS = ["-tls", "-vapi", "-cralias"]
DATACENTER, CLUSTER, DATASTORE = "DC0", "DC0_C0", "LocalDS_0"


def step_timeout(n: int, args) -> int:
    """Generous: ~60 s fixed plus 3 s per VM (the peer at 300 VMs takes minutes, not hours)."""
    return int(args.timeout_base + args.timeout_per_vm * n)


# --------------------------------------------------------------------------- configurations


def hcl_ours(n: int, network: str) -> str:
    return (B.required_providers("ours") + "\n"
            "# Connection from CESO_URL, CESO_USER, CESO_PASSWORD, CESO_ALLOW_UNVERIFIED_SSL.\n"
            'provider "ceso" {}\n\n'
            'resource "ceso_vm" "vm" {\n'
            f"  count     = {n}\n"
            '  name      = format("bench-%03d", count.index)\n'
            "  num_cpus  = 1\n"
            "  memory_mb = 1024\n"
            '  guest_id  = "otherGuest64"\n\n'
            "  disk {\n"
            '    label   = "disk0"\n'
            "    size_gb = 1\n"
            "    thin    = true\n"
            "  }\n\n"
            "  network_interface {\n"
            f"    network = {json.dumps(network)}\n"
            "  }\n"
            "}\n")


def hcl_peer(n: int, network: str, hostport: str) -> str:
    return (B.required_providers("peer") + "\n"
            'provider "vsphere" {\n'
            f"  vsphere_server       = {json.dumps(hostport)}\n"
            '  user                 = "u"\n'
            '  password             = "p"\n'
            "  allow_unverified_ssl = true\n"
            "}\n\n"
            f'data "vsphere_datacenter" "dc" {{\n  name = "{DATACENTER}"\n}}\n\n'
            f'data "vsphere_compute_cluster" "c" {{\n  name          = "{CLUSTER}"\n'
            "  datacenter_id = data.vsphere_datacenter.dc.id\n}\n\n"
            f'data "vsphere_datastore" "ds" {{\n  name          = "{DATASTORE}"\n'
            "  datacenter_id = data.vsphere_datacenter.dc.id\n}\n\n"
            f'data "vsphere_network" "net" {{\n  name          = {json.dumps(network)}\n'
            "  datacenter_id = data.vsphere_datacenter.dc.id\n}\n\n"
            'resource "vsphere_virtual_machine" "vm" {\n'
            f"  count            = {n}\n"
            '  name             = format("bench-%03d", count.index)\n'
            "  resource_pool_id = data.vsphere_compute_cluster.c.resource_pool_id\n"
            "  datastore_id     = data.vsphere_datastore.ds.id\n"
            "  num_cpus         = 1\n"
            "  memory           = 1024\n"
            '  guest_id         = "otherGuest64"\n\n'
            "  wait_for_guest_net_timeout = 0\n"
            "  wait_for_guest_ip_timeout  = 0\n\n"
            "  network_interface {\n"
            "    network_id = data.vsphere_network.net.id\n"
            "  }\n\n"
            "  disk {\n"
            '    label            = "disk0"\n'
            "    size             = 1\n"
            "    thin_provisioned = true\n"
            "  }\n\n"
            "  lifecycle {\n"
            "    # the simulator does not store it\n"
            "    ignore_changes = [swap_placement_policy]\n"
            "  }\n"
            "}\n")


# --------------------------------------------------------------------------- one side, one N


def _delta(before: dict, after: dict) -> tuple[dict, dict]:
    tot = {}
    for path, v in after.get("total", {}).items():
        d = v - before.get("total", {}).get(path, 0)
        if d:
            tot[path] = d
    meth = {}
    for path, m in after.get("methods", {}).items():
        bm = before.get("methods", {}).get(path, {})
        dm = {k: v - bm.get(k, 0) for k, v in m.items() if v - bm.get(k, 0)}
        if dm:
            meth[path] = dict(sorted(dm.items(), key=lambda kv: (-kv[1], kv[0])))
    return tot, meth


def _rss(recs: list[dict], poller: B.HwmPoller) -> dict:
    starts = [r["pid"] for r in recs if r.get("event") == "start"]
    exits = {r["pid"]: r for r in recs if r.get("event") == "exit"}
    per, polled = [], []
    for pid in starts:
        if pid in exits:
            per.append(exits[pid]["maxrss_kib"])
        elif pid in poller.seen:
            per.append(poller.seen[pid])
            polled.append(pid)
    return {"peak_kib": max(per) if per else None, "launches": len(starts), "per_launch_kib": per,
            "polled_fallback_pids": polled}


def _state_resources(tfdir: Path, rtype: str) -> list[dict]:
    try:
        st = json.loads((tfdir / "terraform.tfstate").read_text())
    except (FileNotFoundError, ValueError):
        return []
    out = []
    for r in st.get("resources", []):
        if r.get("mode") == "managed" and r.get("type") == rtype:
            out.extend(i.get("attributes", {}) for i in r.get("instances", []))
    return out


PANIC_MARK = b"http: panic serving"


def simulator_panics(vc: B.Vcsim) -> int:
    """Requests the simulator dropped with a Go panic so far (its log)."""
    try:
        return vc.log.read_bytes().count(PANIC_MARK)
    except OSError:
        return 0


def _progress(counts: dict) -> int:
    """SOAP calls so far, long polls excluded (a client stuck on them makes no progress)."""
    return sum(c for m in counts.get("methods", {}).values() for k, c in m.items() if k != "WaitForUpdatesEx")


def run_watched(cmd, *, cwd, env, timeout: float, vc: B.Vcsim, stall_s: float) -> dict:
    """B.run with a watchdog: every 2 s it reads /vcsim-counts (keeping the highest
    peak_inflight it sees, since each read resets it) and gives up on the command once no
    SOAP call other than WaitForUpdatesEx has arrived for stall_s seconds: a client whose
    task updates the simulator lost waits forever (see the report of `simulator_panics`)."""
    cmd = [str(c) for c in cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    peak, last, last_change = 0, None, t0
    stalled, timed_out = None, False
    try:
        while True:
            try:
                out, err = p.communicate(timeout=2)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.perf_counter()
            if now - t0 > timeout:
                timed_out = True
            else:
                try:
                    c = vc.counts()
                except (OSError, ValueError):
                    continue
                peak = max(peak, c.get("peak_inflight") or 0)
                prog = _progress(c)
                if prog != last:
                    last, last_change = prog, now
                elif now - last_change > stall_s:
                    n = simulator_panics(vc)
                    stalled = (f"stalled: no SOAP call but WaitForUpdatesEx for {stall_s:.0f} s "
                               f"(after {now - t0:.0f} s; simulator log: {n} request(s) dropped by a panic"
                               f"{', see ' + str(vc.log) if n else ''})")
            if timed_out or stalled:
                B._killgroup(p)
                out, err = p.communicate()
                break
    finally:
        B._killgroup(p)
    return {"rc": p.returncode, "out": out.decode("utf-8", "replace"), "err": err.decode("utf-8", "replace"),
            "secs": time.perf_counter() - t0, "peak_inflight": peak, "stalled": stalled, "timed_out": timed_out}


class Side:
    """One provider against one fresh simulator, for one N."""

    def __init__(self, side: str, binary: Path, n: int, par: int, args, work: Path):
        self.side, self.binary, self.n, self.par, self.args, self.work = side, binary, n, par, args, work
        self.rtype = "ceso_vm" if side == "ours" else "vsphere_virtual_machine"
        self.tfdir = work / "tf"
        self.tfdir.mkdir(parents=True)
        self.cfg = work / "cli.tfrc"
        if side == "ours":
            self.probe = work / "plugins" / binary.name
            self.probe.parent.mkdir()
            B.cli_config_dev(self.cfg, B.OURS_SOURCE, self.probe.parent)
        else:
            mirror = work / "mirror"
            d = mirror / "registry.terraform.io" / B.PEER_SOURCE / B.PEER_VERSION / B.PLATFORM
            d.mkdir(parents=True)
            self.probe = d / B.PEER_BIN
            B.cli_config_mirror(self.cfg, mirror)
        # Written once: the peer's mirror package is hashed into the lock file at init.
        # Every launch appends to one log; each step takes the records it added.
        self.rss_log = work / "rss.jsonl"
        B.write_probe(self.probe, binary, self.rss_log)

    def tf(self, step: str, argv: list[str], vc: B.Vcsim, *, ok_codes=(0,)) -> dict:
        log = self.rss_log
        first = len(B.read_records(log))
        env = B.tf_env(self.cfg)
        if self.side == "ours":
            env.update(CESO_URL=vc.url, CESO_USER="u", CESO_PASSWORD="p", CESO_ALLOW_UNVERIFIED_SSL="true")
        panics0 = simulator_panics(vc)
        c0 = vc.counts()  # also resets the simulator's peak_inflight
        poller = B.HwmPoller(log)
        poller.start()
        try:
            w = run_watched([self.args.terraform, *argv, "-input=false", "-no-color",
                             f"-parallelism={self.par}"],
                            cwd=self.tfdir, env=env, timeout=step_timeout(self.n, self.args),
                            vc=vc, stall_s=self.args.stall_seconds)
        finally:
            poller.stop.set()
            poller.join(5)
        c1 = vc.counts()
        (self.work / f"{step}.stdout").write_text(w["out"])
        (self.work / f"{step}.stderr").write_text(w["err"])
        tot, meth = _delta(c0, c1)
        calls = sum(tot.values())
        res = {
            "wall_s": round(w["secs"], 3),
            "exit_code": w["rc"],
            "soap_calls": calls,
            "soap_calls_per_vm": round(calls / self.n, 2),
            "soap_calls_by_path": tot,
            "soap_methods": meth,
            "peak_inflight": max(w["peak_inflight"], c1.get("peak_inflight") or 0),
            "rss": _rss(B.read_records(log)[first:], poller),
        }
        panics = simulator_panics(vc) - panics0
        if panics:
            res["simulator_panics"] = panics
        if w["stalled"]:
            raise Stalled(res, f"terraform {argv[0]}: {w['stalled']}")
        if w["timed_out"]:
            raise StepError(res, f"terraform {argv[0]} timed out after {step_timeout(self.n, self.args)} s\n"
                                 f"{B._tail(w['err'] or w['out'], 40)}")
        if w["rc"] not in ok_codes:
            raise StepError(res, f"terraform {argv[0]} exit {w['rc']}\n{B._tail(w['err'] or w['out'], 40)}")
        return res

    def measure(self) -> dict:
        out: dict = {"n": self.n, "parallelism": self.par, "steps": {}}
        sim_dir = self.work / "vcsim"
        flags = [*VCSIM_FLAGS, "-delay", str(self.args.delay)]
        with B.Vcsim(self.args.vcsim, sim_dir, flags) as vc:
            out["simulator"] = {"flags": flags, "url": vc.url}
            if self.side == "ours":
                (self.tfdir / "main.tf").write_text(hcl_ours(self.n, self.args.network))
            else:
                (self.tfdir / "main.tf").write_text(hcl_peer(self.n, self.args.network, vc.hostport))
                *_, secs = B.run([self.args.terraform, "init", "-input=false", "-no-color"],
                                 cwd=self.tfdir, env=B.tf_env(self.cfg), timeout=B.T_TF_SHORT)
                out["init_s"] = round(secs, 3)
            applied = False
            for step in STEPS:
                if out.get("stalled"):
                    out["steps"][step] = {"skipped": "an earlier step stalled"}
                    continue
                if step != "destroy" and any("error" in s for s in out["steps"].values()):
                    out["steps"][step] = {"skipped": "an earlier step failed"}
                    continue
                if step == "destroy" and not applied:
                    out["steps"][step] = {"skipped": "nothing was applied"}
                    continue
                print(f"bench: vms: N={self.n} {self.side}: {step} ...", file=sys.stderr, flush=True)
                argv = {"apply": ["apply", "-auto-approve"], "plan": ["plan", "-detailed-exitcode"],
                        "destroy": ["destroy", "-auto-approve"]}[step]
                try:
                    applied = applied or step == "apply"
                    r = self.tf(step, argv, vc, ok_codes=(0, 2) if step == "plan" else (0,))
                    if step == "apply":
                        vms = _state_resources(self.tfdir, self.rtype)
                        r["vms_in_state"] = len(vms)
                        if self.side == "ours":
                            hosts: dict = {}
                            for a in vms:
                                hosts[a.get("host")] = hosts.get(a.get("host"), 0) + 1
                            r["hosts"] = hosts
                            r["power_states"] = sorted({str(a.get("power_state")) for a in vms})
                        if len(vms) != self.n:
                            raise StepError(r, f"state holds {len(vms)} {self.rtype}, not {self.n}")
                    if step == "plan":
                        r["no_changes"] = r["exit_code"] == 0
                        if not r["no_changes"]:
                            text = (self.work / "plan.stdout").read_text()
                            dest = self.args.out.parent / f"vms-plan-{self.side}-{self.n}.txt"
                            dest.write_text(text)
                            r["plan_diff_file"] = str(dest)
                            r["plan_diff"] = text[-20000:]
                            print(f"bench: vms: N={self.n} {self.side}: plan NOT empty (exit 2), "
                                  f"saved in {dest}", file=sys.stderr, flush=True)
                    if step == "destroy":
                        left = _state_resources(self.tfdir, self.rtype)
                        r["vms_left_in_state"] = len(left)
                        if left:
                            raise StepError(r, f"{len(left)} {self.rtype} left in state after destroy")
                    out["steps"][step] = r
                except StepError as e:
                    out["steps"][step] = dict(e.res, error=str(e))
                    if isinstance(e, Stalled):
                        out["stalled"] = f"{step}: {e}"
                    print(f"bench: vms: N={self.n} {self.side}: {step}: error: {e}", file=sys.stderr, flush=True)
                except (B.BenchError, OSError, subprocess.SubprocessError) as e:
                    out["steps"][step] = {"error": str(e)}
                    print(f"bench: vms: N={self.n} {self.side}: {step}: error: {e}", file=sys.stderr, flush=True)
        peaks = [s["rss"]["peak_kib"] for s in out["steps"].values() if s.get("rss", {}).get("peak_kib")]
        out["peak_rss_kib"] = max(peaks) if peaks else None
        return out


class StepError(Exception):
    def __init__(self, res: dict, msg: str):
        super().__init__(msg)
        self.res = res


class Stalled(StepError):
    """The simulator stopped answering usefully; this attempt is over (the caller may retry)."""


# --------------------------------------------------------------------------- report


def _ratio(a, b):
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def ratios_for(ours: dict, peer: dict) -> dict:
    r = {}
    for step in STEPS:
        o, p = ours.get("steps", {}).get(step, {}), peer.get("steps", {}).get(step, {})
        r[step] = {k: _ratio(o.get(k), p.get(k)) for k in ("wall_s", "soap_calls")}
        r[step]["peak_rss_kib"] = _ratio(o.get("rss", {}).get("peak_kib"), p.get("rss", {}).get("peak_kib"))
    r["peak_rss_kib"] = _ratio(ours.get("peak_rss_kib"), peer.get("peak_rss_kib"))
    return r


def _cell(side: dict, step: str, what: str) -> str:
    if not side or "skipped" in side:
        return "skipped"
    if "error" in side and "steps" not in side:
        return "ERROR"
    s = side.get("steps", {}).get(step, {})
    if "skipped" in s:
        return "skipped"
    if not s or ("error" in s and "wall_s" not in s):
        return "ERROR" if s else "-"
    err = " ERR" if "error" in s else ""
    if what == "wall":
        return f"{s['wall_s']:.1f} s{err}"
    if what == "calls":
        return f"{s['soap_calls']} ({s['soap_calls_per_vm']:.1f}/VM)"
    if what == "rss":
        k = s.get("rss", {}).get("peak_kib")
        return f"{k / 1024:.1f} MiB" if k else "-"
    return "-"


def print_table(doc: dict) -> None:
    rows = [("N", "step", "metric", "ours (ceso)", f"peer (vsphere {B.PEER_VERSION})", "ours/peer")]
    for n_key, run in doc["runs"].items():
        ours, peer, rat = run.get("ours", {}), run.get("peer", {}), run.get("ratios_ours_over_peer", {})
        for step in STEPS:
            for what, label, rk in (("wall", "wall time", "wall_s"), ("calls", "SOAP calls", "soap_calls"),
                                    ("rss", "peak RSS", "peak_rss_kib")):
                r = rat.get(step, {}).get(rk)
                rows.append((n_key, step, label, _cell(ours, step, what), _cell(peer, step, what),
                             f"{r:.2f}x" if r is not None else "-"))
            o = ours.get("steps", {}).get(step, {}) if ours else {}
            p = peer.get("steps", {}).get(step, {}) if peer else {}
            if step == "plan":
                def empty(s):
                    return "-" if "no_changes" not in s else ("empty" if s["no_changes"] else "CHANGES")
                rows.append((n_key, step, "no-op plan", empty(o), empty(p), ""))
    w = [max(len(r[i]) for r in rows) for i in range(6)]
    print()
    for i, r in enumerate(rows):
        print(f"{r[0]:>{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}  {r[4]:>{w[4]}}  {r[5]:>{w[5]}}")
        if i == 0:
            print("  ".join("-" * x for x in w))
    print()
    # which calls dominate
    for n_key, run in doc["runs"].items():
        for side in ("ours", "peer"):
            s = run.get(side) or {}
            for step in STEPS:
                st = s.get("steps", {}).get(step, {})
                meth = st.get("soap_methods", {})
                if not meth:
                    continue
                n = int(run.get("n") or n_key.split()[0])
                flat = sorted(((m, c, p) for p, mm in meth.items() for m, c in mm.items()), key=lambda x: -x[1])
                top = ", ".join(f"{m}{'' if p == '/sdk' else ' ' + p} {c} ({c / n:.1f}/VM)" for m, c, p in flat[:5])
                pan = f"; {st['simulator_panics']} simulator panic(s)" if st.get("simulator_panics") else ""
                print(f"N={n_key} {side:4} {step:7} peak {st.get('peak_inflight')} in flight{pan}; top calls: {top}")
            for f in s.get("failed_attempts", []):
                print(f"N={n_key} {side:4} an earlier attempt was abandoned: {f.get('stalled', '').splitlines()[0]}")


# The goals at scale (#14): against the peer, a no-op plan at least 10x faster and
# apply and destroy at least 4x faster; ours alone, a provider of at most 32 MiB at 1,000 VMs.
RATIO_GOALS = {"plan": 0.1, "apply": 0.25, "destroy": 0.25}
RSS_GOAL_KIB, RSS_GOAL_MIN_VMS = 32 * 1024, 1000


def goals(doc: dict) -> list[dict]:
    """Each goal that a run of this invocation can speak to, measured or not (a failed step
    is never counted as met)."""
    out = []
    for key, run in doc["runs"].items():
        rat = run.get("ratios_ours_over_peer", {})
        for step, limit in RATIO_GOALS.items():
            r = rat.get(step, {}).get("wall_s")
            if "steps" in run.get("peer", {}):
                ok = r is not None and not any("error" in run[s].get("steps", {}).get(step, {})
                                               for s in ("ours", "peer"))
                out.append({"run": key, "what": f"{step} wall time ours/peer",
                            "measured": f"{r:.3f}" if r is not None else "failed", "goal": f"<= {limit}",
                            "met": ok and r <= limit})
        ours = run.get("ours", {})
        if run.get("n", 0) >= RSS_GOAL_MIN_VMS and "steps" in ours:
            k = ours.get("peak_rss_kib")
            failed = any("error" in st for st in ours["steps"].values())
            out.append({"run": key, "what": "provider peak RSS",
                        "measured": f"{k / 1024:.1f} MiB" if k and not failed else "failed",
                        "goal": "<= 32 MiB", "met": bool(k) and not failed and k <= RSS_GOAL_KIB})
    return out


# --------------------------------------------------------------------------- driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", default="200,1000", help="comma-separated VM counts (default: %(default)s)")
    ap.add_argument("--sides", default="ours,peer", help="ours, peer or both (default: %(default)s)")
    ap.add_argument("--peer-max-vms", type=int, default=200,
                    help="skip the peer above this N, reported as skipped; 0: no limit (default: %(default)s)")
    ap.add_argument("--network", default="VM Network", help='"VM Network" or "DC0_DVPG0" (default: %(default)s)')
    ap.add_argument("--delay", type=int, default=20, help="simulator latency per SOAP call, ms (default: %(default)s)")
    ap.add_argument("--parallelism", default="10,50",
                    help="comma-separated terraform -parallelism values, each a run (default: %(default)s)")
    ap.add_argument("--ceso", type=Path, default=ROOT / "target/release/terraform-provider-ceso")
    ap.add_argument("--peer", type=Path, default=TESTBED / "bin" / B.PEER_BIN)
    ap.add_argument("--terraform", type=Path, default=TESTBED / "bin/terraform")
    ap.add_argument("--vcsim", type=Path, default=TESTBED / "bin/vcsim")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default: target/bench/vms.json, or vms-check.json with --check)")
    ap.add_argument("--stall-seconds", type=float, default=60,
                    help="give up on a step once the simulator saw no SOAP call but WaitForUpdatesEx "
                         "for this long (default: %(default)s)")
    ap.add_argument("--attempts", type=int, default=2,
                    help="runs of one provider and N on a fresh simulator when one stalls (default: %(default)s)")
    ap.add_argument("--timeout-base", type=float, default=60)
    ap.add_argument("--timeout-per-vm", type=float, default=3)
    ap.add_argument("--check", action="store_true",
                    help="sanity run (e.g. --vms 2): fails unless every step passes and both plans are empty")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (terraform output, logs)")
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / ("target/bench/vms-check.json" if args.check else "target/bench/vms.json")
    try:
        ns = [int(x) for x in args.vms.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--vms: not a list of numbers: {args.vms!r}")
    if not ns or min(ns) < 1:
        ap.error("--vms: need positive counts")
    try:
        pars = [int(x) for x in str(args.parallelism).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--parallelism: not a list of numbers: {args.parallelism!r}")
    if not pars or min(pars) < 1:
        ap.error("--parallelism: need positive values")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not set(sides) <= {"ours", "peer"}:
        ap.error("--sides: ours and/or peer")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for p in (args.terraform, args.vcsim):
        if not p.is_file():
            print(f"bench: vms: missing {p} (run scripts/testbed.sh --peer)", file=sys.stderr)
            return 1
    args.terraform = args.terraform.resolve()
    _, out, _, _ = B.run([args.terraform, "version", "-json"], cwd=ROOT, env=B.base_env(), timeout=B.T_TF_SHORT)
    tf_version = json.loads(out).get("terraform_version")

    scratch = Path(tempfile.mkdtemp(prefix="ceso-bench-vms-"))
    binaries: dict = {}
    skipped: dict = {}
    for side, b in (("ours", args.ceso), ("peer", args.peer)):
        if side not in sides:
            skipped[side] = "not selected (--sides)"
            continue
        b = b.absolute()
        if not (b.is_file() and os.access(b, os.X_OK)):
            hint = "cargo build --release" if side == "ours" else "scripts/testbed.sh --peer"
            skipped[side] = f"binary not found: {b} ({hint})"
            continue
        # A snapshot of the binary, so a rebuild during the run cannot change what is measured.
        snap = scratch / "bin" / side / b.name
        snap.parent.mkdir(parents=True)
        shutil.copy2(b.resolve(), snap)
        st = snap.stat()
        binaries[side] = {"path": str(b), "bytes": st.st_size,
                          "mtime": _dt.datetime.fromtimestamp(b.resolve().stat().st_mtime,
                                                              _dt.timezone.utc).isoformat(timespec="seconds"),
                          "snapshot": snap}

    doc = {
        "benchmark": "vms",
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "hostname": socket.gethostname()},
        "terraform": {"path": str(args.terraform), "version": tf_version},
        "settings": {"vms": ns, "network": args.network, "delay_ms": args.delay, "parallelism": pars,
                     "simulator_flags": [*VCSIM_FLAGS, "-delay", str(args.delay)],
                     "simulator_model": "vCenter: DC0, cluster DC0_C0 (3 hosts) + 1 standalone host, LocalDS_0",
                     "peer_max_vms": args.peer_max_vms,
                     "counted_paths": "POST /sdk and /pbm (the launcher does not count /rest)"},
        "binaries": {k: {kk: vv for kk, vv in v.items() if kk != "snapshot"} for k, v in binaries.items()},
        "runs": {},
    }
    errors = []
    t_all = time.perf_counter()
    try:
        for n, par in [(n, par) for n in ns for par in pars]:
            key = f"{n} p{par}" if len(pars) > 1 else str(n)
            run: dict = {"n": n, "parallelism": par}
            for side in ("ours", "peer"):
                if side in skipped:
                    run[side] = {"skipped": skipped[side]}
                    continue
                if side == "peer" and args.peer_max_vms and n > args.peer_max_vms:
                    run[side] = {"skipped": f"N={n} > --peer-max-vms {args.peer_max_vms}"}
                    continue
                failed = []
                for attempt in range(1, args.attempts + 1):
                    try:
                        t0 = time.perf_counter()
                        r = Side(side, binaries[side]["snapshot"], n, par, args,
                                 scratch / f"n{n}-p{par}" / f"{side}-{attempt}").measure()
                        r["total_s"] = round(time.perf_counter() - t0, 1)
                    except (B.BenchError, OSError, subprocess.SubprocessError) as e:
                        r = {"error": str(e)}
                        print(f"bench: vms: N={n} {side}: error: {e}", file=sys.stderr, flush=True)
                    if not r.get("stalled") or attempt == args.attempts:
                        break
                    print(f"bench: vms: N={n} {side}: attempt {attempt} stalled; again on a fresh simulator",
                          file=sys.stderr, flush=True)
                    failed.append(r)
                r["attempt"] = attempt
                if failed:
                    r["failed_attempts"] = failed
                run[side] = r
                for step, s in run[side].get("steps", {}).items():
                    if "error" in s:
                        errors.append(f"N={key} {side} {step}: {s['error'].splitlines()[0]}")
                    if args.check and step == "plan" and s.get("no_changes") is False:
                        errors.append(f"N={key} {side} plan: not empty (see {s.get('plan_diff_file')})")
                if "error" in run[side]:
                    errors.append(f"N={key} {side}: {run[side]['error'].splitlines()[0]}")
            if "steps" in run.get("ours", {}) and "steps" in run.get("peer", {}):
                run["ratios_ours_over_peer"] = ratios_for(run["ours"], run["peer"])
            doc["runs"][key] = run
            doc["total_s"] = round(time.perf_counter() - t_all, 1)
            args.out.write_text(json.dumps(doc, indent=2) + "\n")  # after each N: a partial run still reports
    finally:
        if args.keep:
            print(f"bench: vms: scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    doc["goals"] = goals(doc)
    doc["total_s"] = round(time.perf_counter() - t_all, 1)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(doc)
    for g in doc["goals"]:
        print(f"goal {g['run']} {g['what']}: {g['measured']} (goal {g['goal']}) {'met' if g['met'] else 'MISSED'}")
    for side, why in skipped.items():
        if why != "not selected (--sides)":
            print(f"{side}: skipped: {why}")
    for e in errors:
        print(f"ERROR {e}")
    print(f"total {doc['total_s']:.0f} s; wrote "
          f"{args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
