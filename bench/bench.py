#!/usr/bin/env python3
"""Foundation benchmark: ceso beside HashiCorp's vsphere provider 2.0.2 (the peer).

Run by `make bench`, or directly:

    scripts/testbed.sh --peer
    python3 bench/bench.py --ceso target/release/terraform-provider-ceso

Measured on this machine, in one run, for each provider:

  cold_start_ms    spawn the binary with go-plugin's environment (magic cookie,
                   protocol 5, AutoMTLS client cert) until its first stdout line,
                   the handshake `1|5|unix|PATH|grpc|CERT`; median of --cold-runs.
  schema_ms        `terraform providers schema -json` wall time, median of
                   --schema-runs. Ours through dev_overrides (no init), the peer
                   through a filesystem_mirror (one `terraform init` first).
  schema_dev_ms    the same with the peer also through dev_overrides: like for
                   like. (Through a mirror Terraform re-hashes the installed
                   package against the lock file on every command, which costs
                   the 31 MiB peer tens of ms that dev_overrides skips.)
  binary_bytes     size of the provider binary.
  apply_rss_kib    peak RSS of the provider process(es) during `terraform apply`
                   of one data source against vcsim (-tls -vapi -cralias) on a
                   free loopback port. A probe named like the provider runs the
                   real binary as its child and records the child's ru_maxrss.

Prints a table with ours/peer ratios (lower is better everywhere) and writes
target/bench/foundation.json. A missing binary makes that side "skipped: <reason>";
any other failure is an error and the exit status is 1.
Python 3.11, standard library only; loopback only; every subprocess has a timeout.

`make bench` runs, each with its own exit status folded into make's: this file; bench/vms.py
(fleets of N VMs beside the peer); `cargo bench --bench hot_backup` (ceso-backup beside
restic); bench/transfers.py (multi-GiB disks: backup, restore, cold move and OVA deploy
beside curl and restic, target/bench/transfers.json). vms.py and transfers.py reuse this file's
helpers (`import bench as B`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTBED = ROOT / ".testbed"

# Terraform's go-plugin handshake cookie (TF_PLUGIN_MAGIC_COOKIE), as found in the
# terraform 1.0.3 and vsphere 2.0.2 binaries. Note: not "...4330efc4d8ed8b8b1ea5f7a3aa3e1c15";
# with that value the peer refuses to start ("This binary is a plugin...").
MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
OURS_SOURCE = "choiceomg/ceso"
OURS_ADDR = "registry.terraform.io/" + OURS_SOURCE
PEER_SOURCE = "hashicorp/vsphere"
PEER_ADDR = "registry.terraform.io/" + PEER_SOURCE
PEER_VERSION = "2.0.2"
PEER_BIN = f"terraform-provider-vsphere_v{PEER_VERSION}_x5"
PLATFORM = "linux_amd64"

# Timeouts (seconds) for every subprocess we start.
T_HANDSHAKE = 30
T_TF_SHORT = 120  # version, init, providers schema
T_TF_APPLY = 300
T_VCSIM_UP = 30
T_OPENSSL = 60


class Skip(Exception):
    """This side cannot be measured on this machine (reported, not an error)."""


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- processes


def _killgroup(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tail(b: bytes | str, n: int = 25) -> str:
    s = b.decode("utf-8", "replace") if isinstance(b, bytes) else b
    s = _ANSI.sub("", s)  # `providers schema` has no -no-color
    return "\n".join(s.rstrip().splitlines()[-n:])


def run(cmd, *, cwd, env, timeout, check=True):
    """Run cmd in its own process group; kill the whole group on timeout or after exit
    (a provider left behind by terraform must not outlive the measurement)."""
    cmd = [str(c) for c in cmd]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killgroup(p)
        out, err = p.communicate()
        raise BenchError(f"timed out after {timeout}s: {' '.join(cmd)}\n{_tail(err)}")
    finally:
        _killgroup(p)
    secs = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise BenchError(f"exit {p.returncode}: {' '.join(cmd)}\n{_tail(err or out)}")
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), secs


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "PLUGIN_")) and k not in ("CHECKPOINT_DISABLE",)}
    env.update(CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1", TF_INPUT="0")
    for k in ("NO_PROXY", "no_proxy"):
        env[k] = ",".join(x for x in (env.get(k, ""), "127.0.0.1,localhost") if x)
    return env


# --------------------------------------------------------------------------- cold start


def client_cert(out_dir: Path) -> str | None:
    """A PEM certificate for PLUGIN_CLIENT_CERT (go-plugin AutoMTLS), generated once."""
    pem = out_dir / "plugin-client-cert.pem"
    if pem.is_file() and pem.stat().st_size > 0:
        return pem.read_text()
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    key = out_dir / "plugin-client-key.pem"
    tmp = pem.with_suffix(".tmp")
    run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", tmp, "-days", "3650", "-subj", "/O=ceso-bench/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        cwd=out_dir, env=base_env(), timeout=T_OPENSSL)
    tmp.replace(pem)
    return pem.read_text()


def _first_line(p: subprocess.Popen, deadline: float) -> bytes:
    fd = p.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise BenchError(f"no handshake line within {T_HANDSHAKE}s (got {buf!r})")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise BenchError(f"provider exited (status {p.wait(5)}) before its handshake line (got {buf!r})")
        buf += chunk
    return buf.split(b"\n", 1)[0]


def cold_start(binary: Path, runs: int, cert: str | None, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = base_env()
    env.update(TF_PLUGIN_MAGIC_COOKIE=MAGIC_COOKIE, PLUGIN_PROTOCOL_VERSIONS="5",
               PLUGIN_MIN_PORT="10000", PLUGIN_MAX_PORT="25000", TMPDIR=str(work))
    if cert:
        env["PLUGIN_CLIENT_CERT"] = cert
    times, line = [], ""
    for i in range(runs + 1):  # run 0 warms the page cache and is not counted
        errlog = work / "stderr.log"
        with open(errlog, "wb") as ef:
            t0 = time.perf_counter()
            p = subprocess.Popen([str(binary)], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=ef, start_new_session=True)
            try:
                raw = _first_line(p, t0 + T_HANDSHAKE)
                dt = time.perf_counter() - t0
            except BenchError as e:
                raise BenchError(f"{e}\nstderr: {_tail(errlog.read_bytes())}") from None
            finally:
                _killgroup(p)
                p.wait(10)
                p.stdout.close()
        line = raw.decode("utf-8", "replace").strip()
        if i:
            times.append(dt * 1000)
    parts = line.split("|")
    if len(parts) < 5 or parts[0] != "1" or parts[1] != "5" or parts[4] != "grpc":
        raise BenchError(f"unexpected handshake line: {line!r}")
    return {
        "value": round(statistics.median(times), 2), "unit": "ms",
        "min": round(min(times), 2), "max": round(max(times), 2), "runs": [round(t, 2) for t in times],
        "handshake": "|".join(parts[:5]) + ("|<server cert>" if len(parts) > 5 and parts[5] else ""),
        "auto_mtls": bool(cert) and len(parts) > 5 and bool(parts[5]),
    }


# --------------------------------------------------------------------------- terraform configs


def cli_config_dev(path: Path, source: str, plugin_dir: Path) -> None:
    path.write_text(
        "provider_installation {\n"
        f"  dev_overrides {{\n    \"{source}\" = {json.dumps(str(plugin_dir))}\n  }}\n"
        "  direct {}\n}\n"
        "disable_checkpoint = true\n")


def cli_config_mirror(path: Path, mirror: Path) -> None:
    # Mirror only, no `direct`: the peer's install can never reach the network.
    path.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(str(mirror))}\n"
        f"    include = [\"{PEER_ADDR}\"]\n  }}\n}}\n"
        "disable_checkpoint = true\n")


def peer_mirror(root: Path, binary: Path, *, copy: bool = False) -> Path:
    d = root / "registry.terraform.io" / PEER_SOURCE / PEER_VERSION / PLATFORM
    d.mkdir(parents=True, exist_ok=True)
    dst = d / PEER_BIN
    if copy:
        shutil.copy2(binary, dst)
    else:
        dst.symlink_to(binary.resolve())
    return root


def required_providers(side: str) -> str:
    if side == "ours":
        return f'terraform {{\n  required_providers {{\n    ceso = {{ source = "{OURS_SOURCE}" }}\n  }}\n}}\n'
    return (f'terraform {{\n  required_providers {{\n    vsphere = {{\n      source  = "{PEER_SOURCE}"\n'
            f'      version = "{PEER_VERSION}"\n    }}\n  }}\n}}\n')


def tf_env(cli_config: Path) -> dict:
    env = base_env()
    env["TF_CLI_CONFIG_FILE"] = str(cli_config)
    return env


# --------------------------------------------------------------------------- schema


def schema_time(side: str, binary: Path, tf: Path, runs: int, work: Path, mode: str) -> dict:
    """mode "dev": dev_overrides, no init (ours always; the peer for a like-for-like figure).
    mode "mirror": filesystem_mirror + one `terraform init` (the peer, as users install it:
    every later command re-hashes the installed package against the lock file)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "main.tf").write_text(required_providers(side))
    cfg = work / "cli.tfrc"
    extra = {"install": "dev_overrides" if mode == "dev" else "filesystem_mirror"}
    addr = OURS_ADDR if side == "ours" else PEER_ADDR
    if side == "ours":
        cli_config_dev(cfg, OURS_SOURCE, binary.parent)  # not resolve(): a symlinked binary keeps its name
    elif mode == "dev":
        cli_config_dev(cfg, PEER_SOURCE, binary.parent)
    else:
        cli_config_mirror(cfg, peer_mirror(work / "mirror", binary))
    env = tf_env(cfg)
    if mode == "mirror":
        *_, secs = run([tf, "init", "-input=false", "-no-color"], cwd=work, env=env, timeout=T_TF_SHORT)
        extra["init_ms"] = round(secs * 1000, 1)
    times = []
    for i in range(runs + 1):  # run 0 is a warm-up
        _, out, _, secs = run([tf, "providers", "schema", "-json"], cwd=work, env=env, timeout=T_TF_SHORT)
        if i:
            times.append(secs * 1000)
    try:
        doc = json.loads(out)
        s = doc["provider_schemas"][addr]
    except (ValueError, KeyError) as e:
        raise BenchError(f"schema output lacks {addr}: {e!r}: {out[:300]!r}") from None
    return {
        "value": round(statistics.median(times), 1), "unit": "ms",
        "min": round(min(times), 1), "max": round(max(times), 1), "runs": [round(t, 1) for t in times],
        "schema_json_bytes": len(out.encode()),
        "resources": len(s.get("resource_schemas", {})),
        "data_sources": len(s.get("data_source_schemas", {})),
        **extra,
    }


# --------------------------------------------------------------------------- vcsim


class Vcsim:
    def __init__(self, binary: Path, work: Path, flags: list[str], tmpdir: Path | None = None):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        urlf = work / "vcsim.url"
        self.log = work / "vcsim.log"
        self._logf = open(self.log, "wb")
        self.p = subprocess.Popen([str(binary), "-l", "127.0.0.1:0", "-url-file", str(urlf), *flags],
                                  # its datastores (temp dirs) go with the scratch directory
                                  env={**os.environ, "TMPDIR": str(tmpdir or work)},
                                  cwd=work, stdin=subprocess.DEVNULL, stdout=self._logf,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + T_VCSIM_UP
        while not (urlf.is_file() and urlf.read_text().strip()):
            if self.p.poll() is not None:
                self.close()
                raise BenchError(f"vcsim exited {self.p.returncode}: {_tail(self.log.read_bytes())}")
            if time.monotonic() > deadline:
                self.close()
                raise BenchError(f"vcsim not up within {T_VCSIM_UP}s")
            time.sleep(0.05)
        full = urllib.request.urlparse(urlf.read_text().strip())
        host = full.hostname or ""
        if not (host == "localhost" or host.startswith("127.") or host == "::1"):
            self.close()
            raise BenchError(f"vcsim is not on loopback: {full.netloc}")
        self.scheme, self.hostport = full.scheme, f"{host}:{full.port}"
        self.url = f"{full.scheme}://{self.hostport}{full.path}"  # without user:pass

    def counts(self) -> dict:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"{self.scheme}://{self.hostport}/vcsim-counts")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=ctx))
        with opener.open(req, timeout=10) as r:
            return json.load(r)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                _killgroup(self.p)
                self.p.wait(10)
        self._logf.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def soap_calls(before: dict, after: dict) -> int:
    b, a = before.get("total", {}), after.get("total", {})
    return sum(a.values()) - sum(b.values())


# --------------------------------------------------------------------------- RSS probe

# Installed in place of the provider binary. Terraform starts it exactly as it would
# start the provider; it runs the real binary as its child (same argv tail, env and
# stdio, so the go-plugin handshake passes straight through), forwards signals,
# waits, appends {"event":"exit","maxrss_kib":...} to LOG and exits as the child did.
# The child dies with it (PR_SET_PDEATHSIG) should the probe itself be SIGKILLed;
# the "start" record lets bench.py poll /proc/PID/status VmHWM as a fallback.
PROBE = r'''#!{python} -S
import json, os, resource, signal, subprocess, sys
REAL = {real!r}
LOG = {log!r}
child = None

def rec(**kw):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(kw) + "\n").encode())
    finally:
        os.close(fd)

def forward(signum, frame):
    if child is not None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

def die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass

for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, forward)
child = subprocess.Popen([REAL] + sys.argv[1:], preexec_fn=die_with_parent)
rec(event="start", pid=child.pid, argv=sys.argv[1:])
rc = child.wait()
rec(event="exit", pid=child.pid, rc=rc, maxrss_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
if rc < 0:  # die of the same signal, so our parent sees what it would have seen
    if -rc not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
sys.exit(rc if rc >= 0 else 128 - rc)
'''


def write_probe(path: Path, real: Path, log: Path) -> None:
    path.write_text(PROBE.replace("{python}", sys.executable)
                    .replace("{real!r}", repr(str(real.resolve())))
                    .replace("{log!r}", repr(str(log))))
    path.chmod(0o755)


def _vmhwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
    except (OSError, ValueError):
        return None
    return None


class HwmPoller(threading.Thread):
    """Fallback: polls VmHWM of every provider child the probe announced."""

    def __init__(self, log: Path):
        super().__init__(daemon=True)
        self.log, self.seen, self.stop = log, {}, threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            for r in read_records(self.log):
                if r.get("event") == "start":
                    v = _vmhwm_kib(r["pid"])
                    if v is not None:
                        self.seen[r["pid"]] = max(v, self.seen.get(r["pid"], 0))


def read_records(log: Path) -> list[dict]:
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            pass  # a line being written
    return out


def apply_config(side: str, vc: Vcsim) -> str:
    """One data source read against vcsim; its output "product" must come back non-empty."""
    if side == "ours":
        return (f'provider "ceso" {{\n  url                  = {json.dumps(vc.url)}\n'
                '  user                 = "u"\n  password             = "p"\n'
                '  allow_unverified_ssl = true\n}\n\n'
                'data "ceso_endpoint" "this" {}\n\n'
                'output "product" {\n  value = data.ceso_endpoint.this.product_name\n}\n')
    return (f'provider "vsphere" {{\n  vsphere_server       = {json.dumps(vc.hostport)}\n'
            '  user                 = "u"\n  password             = "p"\n'
            '  allow_unverified_ssl = true\n}\n\n'
            'data "vsphere_datacenter" "dc" {}\n\n'
            'output "product" {\n  value = data.vsphere_datacenter.dc.id\n}\n')


def apply_rss(side: str, binary: Path, tf: Path, vcsim_bin: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    log = work / "rss.jsonl"
    cfg = work / "cli.tfrc"
    tfdir = work / "tf"
    tfdir.mkdir()
    with Vcsim(vcsim_bin, work / "vcsim", ["-tls", "-vapi", "-cralias"]) as vc:
        if side == "ours":
            plugdir = work / "plugins"
            plugdir.mkdir()
            write_probe(plugdir / binary.name, binary, log)
            cli_config_dev(cfg, OURS_SOURCE, plugdir)
        else:
            mirror = work / "mirror"
            d = peer_mirror(mirror, binary, copy=False) / "registry.terraform.io" / PEER_SOURCE / PEER_VERSION / PLATFORM
            (d / PEER_BIN).unlink()
            write_probe(d / PEER_BIN, binary, log)
            cli_config_mirror(cfg, mirror)
        (tfdir / "main.tf").write_text(required_providers(side) + "\n" + apply_config(side, vc))
        env = tf_env(cfg)
        extra = {}
        if side == "peer":
            *_, secs = run([tf, "init", "-input=false", "-no-color"], cwd=tfdir, env=env, timeout=T_TF_SHORT)
            extra["init_ms"] = round(secs * 1000, 1)
            log.unlink(missing_ok=True)  # init does not start the provider; keep apply's records only
        c0 = vc.counts()
        poller = HwmPoller(log)
        poller.start()
        try:
            *_, secs = run([tf, "apply", "-auto-approve", "-input=false", "-no-color"],
                           cwd=tfdir, env=env, timeout=T_TF_APPLY)
        finally:
            poller.stop.set()
            poller.join(5)
        c1 = vc.counts()
    state = json.loads((tfdir / "terraform.tfstate").read_text())
    product = state.get("outputs", {}).get("product", {}).get("value")
    if not product:
        raise BenchError(f"apply left no output value: {state.get('outputs')!r}")
    recs = read_records(log)
    starts = [r["pid"] for r in recs if r.get("event") == "start"]
    exits = {r["pid"]: r for r in recs if r.get("event") == "exit"}
    if not starts:
        raise BenchError("terraform never started the provider through the RSS probe")
    per, polled = [], []
    for pid in starts:
        if pid in exits:
            per.append(exits[pid]["maxrss_kib"])
        elif pid in poller.seen:
            per.append(poller.seen[pid])
            polled.append(pid)
    if not per:
        raise BenchError("no RSS figure for any provider process")
    peak = max(per)
    return {
        "value": peak, "unit": "KiB", "mib": round(peak / 1024, 1),
        "provider_launches": len(starts), "per_launch_kib": per,
        "exit_codes": [exits[p]["rc"] for p in starts if p in exits],
        "polled_fallback_pids": polled,
        "per_launch_polled_vmhwm_kib": [poller.seen.get(p) for p in starts],  # cross-check, 50 ms polls
        "apply_ms_through_probe": round(secs * 1000, 1),
        "vcsim_soap_calls": soap_calls(c0, c1),
        "output": product,
        **extra,
    }


# --------------------------------------------------------------------------- driver

METRICS = [
    # key, label, formatter
    ("cold_start_ms", "cold start to handshake (median)", lambda m: f"{m['value']:.1f} ms"),
    ("schema_ms", "providers schema -json (median)", lambda m: f"{m['value']:.0f} ms"),
    ("schema_dev_ms", "  same, both via dev_overrides", lambda m: f"{m['value']:.0f} ms"),
    ("binary_bytes", "binary size", lambda m: f"{m['mib']:.1f} MiB"),
    ("apply_rss_kib", "provider peak RSS during apply", lambda m: f"{m['mib']:.1f} MiB"),
]


def measure_side(side, binary, tf, vcsim, cert, args, work) -> dict:
    res: dict = {"binary": str(binary), "metrics": {}}
    if binary is None or not binary.is_file():
        hint = ("build it: cargo build --release" if side == "ours" else "install it: scripts/testbed.sh --peer")
        res["skipped"] = f"binary not found: {binary} ({hint})"
        return res
    if not os.access(binary, os.X_OK):
        res["skipped"] = f"not executable: {binary}"
        return res
    st = binary.stat()
    res["metrics"]["binary_bytes"] = {"value": st.st_size, "unit": "B", "mib": round(st.st_size / 2**20, 2)}
    steps = [
        ("cold_start_ms", lambda: cold_start(binary, args.cold_runs, cert, work / "cold")),
        ("schema_ms", lambda: schema_time(side, binary, tf, args.schema_runs, work / "schema",
                                          "dev" if side == "ours" else "mirror")),
        # ours is always measured through dev_overrides: reuse that run
        ("schema_dev_ms", lambda: (dict(res["metrics"]["schema_ms"], same_run_as="schema_ms")
                                   if side == "ours" and "schema_ms" not in args.skip
                                   else schema_time(side, binary, tf, args.schema_runs,
                                                    work / "schema-dev", "dev"))),
        ("apply_rss_kib", lambda: apply_rss(side, binary, tf, vcsim, work / "apply")),
    ]
    for key, fn in steps:
        if key in args.skip:
            res["metrics"][key] = {"skipped": "--skip"}
            continue
        need = {"schema_ms": [tf], "schema_dev_ms": [tf], "apply_rss_kib": [tf, vcsim]}.get(key, [])
        missing = [str(p) for p in need if not (p and Path(p).is_file())]
        if missing:
            res["metrics"][key] = {"skipped": f"missing {', '.join(missing)} (run scripts/testbed.sh --peer)"}
            continue
        print(f"bench: {side}: {key} ...", file=sys.stderr, flush=True)
        try:
            res["metrics"][key] = fn()
            if "error" in res["metrics"][key]:  # a reused failed run
                raise BenchError(res["metrics"][key]["error"])
        except (Skip, BenchError, OSError, subprocess.SubprocessError) as e:
            kind = "skipped" if isinstance(e, Skip) else "error"
            res["metrics"][key] = {kind: str(e)}
            print(f"bench: {side}: {key}: {kind}: {e}", file=sys.stderr, flush=True)
    return res


def cell(side: dict, key: str, fmt) -> str:
    if "skipped" in side:
        return "skipped"
    m = side["metrics"].get(key, {})
    if "value" in m:
        return fmt(m)
    if "skipped" in m:
        return "skipped"
    return "ERROR" if "error" in m else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ceso", type=Path, default=ROOT / "target/release/terraform-provider-ceso",
                    help="our provider binary (default: %(default)s)")
    ap.add_argument("--peer", type=Path, default=TESTBED / "bin" / PEER_BIN)
    ap.add_argument("--terraform", type=Path, default=TESTBED / "bin/terraform")
    ap.add_argument("--vcsim", type=Path, default=TESTBED / "bin/vcsim")
    ap.add_argument("--out", type=Path, default=ROOT / "target/bench/foundation.json")
    ap.add_argument("--cold-runs", type=int, default=10)
    ap.add_argument("--schema-runs", type=int, default=5)
    ap.add_argument("--skip", action="append", default=[], choices=[k for k, *_ in METRICS if k != "binary_bytes"],
                    help="leave a measurement out (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tf = args.terraform.resolve() if args.terraform.exists() else args.terraform
    tf_version = None
    if tf.is_file():
        _, out, _, _ = run([tf, "version", "-json"], cwd=ROOT, env=base_env(), timeout=T_TF_SHORT)
        tf_version = json.loads(out).get("terraform_version")
    cert = client_cert(args.out.parent)
    if not cert:
        print("bench: openssl not found: cold start runs without PLUGIN_CLIENT_CERT (no AutoMTLS)", file=sys.stderr)

    scratch = Path(tempfile.mkdtemp(prefix="ceso-bench-"))
    try:
        sides = {}
        for side, binary in (("ours", args.ceso), ("peer", args.peer)):
            binary = binary.absolute() if binary else None
            sides[side] = measure_side(side, binary, tf, args.vcsim, cert, args, scratch / side)
    finally:
        if args.keep:
            print(f"bench: scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    ratios = {}
    for key, *_ in METRICS:
        a = sides["ours"]["metrics"].get(key, {}).get("value")
        b = sides["peer"]["metrics"].get(key, {}).get("value")
        ratios[key] = round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    doc = {
        "benchmark": "foundation",
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "hostname": socket.gethostname()},
        "terraform": {"path": str(tf), "version": tf_version},
        "settings": {"cold_runs": args.cold_runs, "schema_runs": args.schema_runs, "auto_mtls_cert": bool(cert)},
        "ours": sides["ours"], "peer": sides["peer"],
        "ratios_ours_over_peer": ratios,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")

    rows = [("metric", "ours (ceso)", f"peer (vsphere {PEER_VERSION})", "ours/peer")]
    for key, label, fmt in METRICS:
        r = ratios[key]
        rows.append((label, cell(sides["ours"], key, fmt), cell(sides["peer"], key, fmt),
                     f"{r:.2f}x" if r is not None else "-"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for i, r in enumerate(rows):
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}")
        if i == 0:
            print("  ".join("-" * x for x in w))
    errors = []
    for side in ("ours", "peer"):
        s = sides[side]
        if "skipped" in s:
            print(f"{side}: skipped: {s['skipped']}")
        for key, m in s["metrics"].items():
            if "skipped" in m and m["skipped"] != "--skip":
                print(f"{side}: {key}: skipped: {m['skipped']}")
            if "error" in m:
                errors.append(f"{side}: {key}: {m['error'].splitlines()[0]}")
    pm = sides["peer"]["metrics"].get("apply_rss_kib", {})
    if "value" in pm:
        print(f"peer apply: {pm['provider_launches']} provider launches, {pm['vcsim_soap_calls']} SOAP calls, "
              f"{pm['apply_ms_through_probe']:.0f} ms (through the RSS probe)")
    om = sides["ours"]["metrics"].get("apply_rss_kib", {})
    if "value" in om:
        print(f"ours apply: {om['provider_launches']} provider launches, {om['vcsim_soap_calls']} SOAP calls, "
              f"{om['apply_ms_through_probe']:.0f} ms (through the RSS probe)")
    for e in errors:
        print(f"ERROR {e}")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
