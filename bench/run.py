#!/usr/bin/env python3
"""Veil's load benchmark: the same Envoy without and with the Veil filter (each shell), alternated.

    .venv/bin/python bench/run.py [--scenario seal] [--duration 10] [--filter native] ...   (see --help)
    make bench [SCENARIO=seal] [DURATION=5] [FILTER=wasm|native|both]

For each scenario: builds the release artefacts (unless --no-build), starts keyservice, the demo
upstream (--no-record) and one Envoy per configuration, all from one rendered template
(envoy/veil-demo.yaml): the control (the Veil filter entry removed), one treatment per shell
(wasm: the proxy-wasm filter; native: libveil.so, the dynamic module) and each shell's floor
(the same place in the chain holding an empty proxy-wasm filter / an empty dynamic module, built
from bench/floors/), then alternates their rounds (C,W,N,FW,FN,C,W,N,...):

  1. closed loop at fixed concurrency (--connections), wrk (veil-bench-load for the relay):
     maximum requests/s and the ratio T/C, for the treatments and the floors;
  2. open loop at a fixed rate (--rate-fraction of control's maximum), veil-bench-load --rate
     (or wrk's Lua pacing with --rate-gen wrk): added latency T - C (treatments only).

Medians over rounds are reported, with Envoy's CPU time per request, its RSS, the keyservice
callouts per request, and one machine-readable line per scenario and shell
(`<scenario> ratio=... filter=wasm|native floor_ratio=... floor_gap=...`). Everything started here is
stopped at the end, also on failure or Ctrl-C. bench/README.md explains every number.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Ports the demo stack (scripts/stack.sh) may hold; the benchmark never uses them.
RESERVED_PORTS = {10000, 9901, 9911, 18080}

# Targets from the performance issue.
TARGET_RATIO_MIN = 0.70
TARGET_RATIO_AIM = 0.85
TARGET_P50_ADDED_MS = 0.3
TARGET_P99_ADDED_MS = 1.0
TARGET_RSS_DELTA_MIB = 30.0
# "No callout per request": a key refresh every refresh_secs is fine, one per request is not.
TARGET_CALLOUTS_PER_REQ = 0.001
# The native shell's targets (issue #16): RSS within 5 MiB of control, every ratio within
# 0.06 of the empty dynamic module's floor measured in the same run.
TARGET_NATIVE_RSS_DELTA_MIB = 5.0
TARGET_NATIVE_FLOOR_GAP = 0.06
# ... and the native filter's cost per request (Envoy CPU, treatment - control) within this
# many times the native time of the same transform (veil-bench-transform, the code of
# core/benches/seal.rs) plus the empty dynamic module's own cost (floor - control).
TARGET_NATIVE_COST_TRANSFORM_FACTOR = 2.0

SHELLS = ("wasm", "native")
FLOOR = {"wasm": "floor-wasm", "native": "floor-native"}
# The native body-rewriting floor (bench/floors/native with filter config `rewrite`): Veil's
# body handling with an identity transform, what any native filter that rewrites the body costs.
REWRITE_FLOOR = "floor-native-rewrite"


# ---------------------------------------------------------------------------------------------
# Scenarios: one row each. A scenario that is not built yet is listed with its reason and
# skipped with a "not available yet" line; making it available is filling in its row (and, if
# it needs them, another filter config / Envoy template / upstream flags: stacks are keyed by
# those, so such a scenario gets its own stack).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    path: str = ""
    method: str = "POST"
    body: str | None = None  # fixture, relative to the repository root
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    # Distinct bodies generated from `body` (every string/number leaf made unique per variant),
    # cycled per request (by wrk and by veil-bench-load --bodies), so the filter's
    # deterministic-seal memo misses. 0 = replay `body` as is.
    variants: int = 0
    # The filter counter that must grow by one per treatment request (proves the filter ran).
    filter_counter: str | None = "veil.seal.requests"
    filter_config: str = "envoy/veil-demo.filter.json"
    envoy_template: str = "envoy/veil-demo.yaml"
    upstream_args: tuple[str, ...] = ("--no-record",)
    available: bool = True
    unavailable: str = ""
    # The probe's answer must carry sealed values through the control and none through the
    # treatment (proves the filter unsealed it).
    probe_unsealed: bool = False
    # Closed-loop load: "wrk", or "relay": veil-bench-load (encodes every request with the
    # relay client for the treatment, plaintext for the control). The fixed-rate phase uses
    # veil-bench-load --rate for every scenario (relay mode for a relay treatment).
    loadgen: str = "wrk"
    # Targets of this scenario.
    ratio_min: float = TARGET_RATIO_MIN
    # The native shell's throughput target (issue #16).
    native_ratio_min: float = 0.85
    # The transform the filter runs per request, timed natively by veil-bench-transform for
    # the native cost target (None: no such target, e.g. the relay's).
    transform: str | None = None
    callouts_max: float = TARGET_CALLOUTS_PER_REQ
    in_default_set: bool = True


SCENARIOS: list[Scenario] = [
    Scenario(
        "seal",
        "one Moesif event (fixtures/moesif/event.json) sealed on POST /collector/v1/events",
        path="/collector/v1/events",
        body="fixtures/moesif/event.json",
        transform="seal-event",
    ),
    Scenario(
        "seal-batch",
        "a batch of 20 events (fixtures/moesif/events-batch.json) on POST /collector/v1/events/batch",
        path="/collector/v1/events/batch",
        body="fixtures/moesif/events-batch.json",
        native_ratio_min=0.70,
        transform="seal-batch",
    ),
    Scenario(
        "unseal",
        "a sealed search answer (fixtures/moesif/search-response-plaintext.json, its 2 events sealed "
        "under the stack's data key) unsealed on GET /api/static (upstream /v1/static)",
        path="/api/static",
        method="GET",
        headers=(("Accept", "application/json"),),
        filter_counter="veil.unseal.responses",
        # {sealed_search} is the fixture sealed by veil-bench-seal-fixture when the stack starts.
        upstream_args=("--no-record", "--static-body", "{sealed_search}"),
        probe_unsealed=True,
        native_ratio_min=0.80,
        transform="unseal",
    ),
    Scenario(
        "relay-local",
        "a 1 KB JSON body POSTed through the relay to /app/reflect (1 KB answer), replay window in "
        "Envoy's shared data (replay.mode local); control: the same request in plaintext",
        path="/app/reflect",
        body="bench/relay-body-1k.json",
        filter_counter="veil.relay.requests",
        loadgen="relay",
        ratio_min=0.80,
        native_ratio_min=0.80,
    ),
    Scenario(
        "relay-global",
        "like relay-local with replay.mode global: one loopback callout per request to the "
        "keyservice's replay window (bench/filter-relay-global.json)",
        path="/app/reflect",
        body="bench/relay-body-1k.json",
        filter_counter="veil.relay.requests",
        filter_config="bench/filter-relay-global.json",
        loadgen="relay",
        # One replay check per request is the design (plus pair look-ups at set-up: 5%).
        callouts_max=1.05,
        native_ratio_min=0.65,
    ),
    # Not in the default set: diagnostics.
    Scenario(
        "seal-off",
        "event.json through the filter with the moesif profile disabled (enabled: false): the "
        "filter's fixed per-request cost, no buffering, no sealing",
        path="/collector/v1/events",
        body="fixtures/moesif/event.json",
        filter_counter="veil.seal.passthrough",
        filter_config="bench/filter-seal-off.json",
        in_default_set=False,
    ),
    # Worst case for the memo (every value new).
    Scenario(
        "seal-unique",
        "like seal, but 4096 distinct event bodies (every value unique: the seal memo misses)",
        path="/collector/v1/events",
        body="fixtures/moesif/event.json",
        variants=4096,
        in_default_set=False,
        transform="seal-event-direct",
    ),
    Scenario(
        "seal-batch-unique",
        "like seal-batch, but 256 distinct batches (every value unique: the seal memo misses)",
        path="/collector/v1/events/batch",
        body="fixtures/moesif/events-batch.json",
        variants=256,
        in_default_set=False,
    ),
]
BY_NAME = {s.name: s for s in SCENARIOS}


class BenchError(Exception):
    pass


def log(msg: str = "") -> None:
    print(msg, flush=True)


def step(msg: str) -> None:
    log(f"==> {msg}")


# ---------------------------------------------------------------------------------------------
# Processes: everything started is recorded and stopped in `stop_all` (called from `finally`,
# and on SIGTERM/SIGHUP, which are turned into an exception so the `finally` runs).
# ---------------------------------------------------------------------------------------------


class Procs:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], cpus: set[int] | None):
        logf = open(self.run_dir / f"{name}.log", "wb")
        preexec = None
        if cpus:
            preexec = lambda: os.sched_setaffinity(0, cpus)  # noqa: E731
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches us, not them: we stop them in order
            preexec_fn=preexec,
        )
        logf.close()
        self.procs.append((name, p))
        return p

    def check_alive(self, p: subprocess.Popen, name: str) -> None:
        if p.poll() is not None:
            raise BenchError(f"{name} exited with status {p.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.run_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def stop_all(self) -> None:
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise BenchError("no free port on 127.0.0.1")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0,
              method: str = "POST") -> tuple[int, str]:
    req = urllib.request.Request(url, data=body if body else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_until(what: str, secs: float, probe, procs: Procs, proc=None, name: str = "") -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc is not None:
            procs.check_alive(proc, name)
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready within {secs:.0f}s" + (f":\n{procs.tail(name)}" if name else ""))


# ---------------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_secs(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_secs() -> float:
    """CPU seconds spent not idle, all CPUs together, since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / CLK_TCK


def machine_info() -> dict:
    info = {"kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        info["cpu_model"] = m.group(1).strip() if m else "?"
    except (OSError, subprocess.SubprocessError):
        info["cpu_model"] = "?"
    with open("/proc/loadavg") as f:
        info["loadavg"] = f.read().split()[:3]
    return info


def foreign_load(seconds: float, ours: list[int]) -> float:
    """Cores kept busy by processes other than `ours` over `seconds`."""
    b0, o0 = machine_busy_secs(), sum(cpu_secs(p) for p in ours)
    time.sleep(seconds)
    b1, o1 = machine_busy_secs(), sum(cpu_secs(p) for p in ours)
    return max(0.0, ((b1 - b0) - (o1 - o0)) / seconds)


# ---------------------------------------------------------------------------------------------
# Counters: Envoy admin /stats and the keyservice's /metrics
# ---------------------------------------------------------------------------------------------


def envoy_stats(admin: str) -> dict[str, int]:
    status, text = http_get(
        f"http://{admin}/stats?filter=^(cluster\\.veil_keyservice\\.upstream_rq_total|wasmcustom\\.|veil\\.)",
        timeout=5,
    )
    if status != 200:
        raise BenchError(f"Envoy admin /stats answered {status}")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            out[name.strip()] = int(value)
    return out


def keyservice_requests(addr: str) -> int:
    status, text = http_get(f"http://{addr}/metrics", timeout=5)
    if status != 200:
        raise BenchError(f"keyservice /metrics answered {status}")
    total = 0
    # Per-request work: data keys, relay pair lookups, global replay checks. Pairings (one per
    # relay client at set-up, not per request) are counted apart (keyservice_pairings).
    for m in re.finditer(r"^veil_keyservice_(?:data_key_requests|relay_lookups|relay_seq)_total"
                         r"(?:\{[^}]*\})?\s+(\d+)", text, re.M):
        total += int(m.group(1))
    return total


def keyservice_pairings(addr: str) -> int:
    status, text = http_get(f"http://{addr}/metrics", timeout=5)
    if status != 200:
        raise BenchError(f"keyservice /metrics answered {status}")
    return sum(int(m.group(1)) for m in re.finditer(
        r"^veil_keyservice_relay_pairings_total(?:\{[^}]*\})?\s+(\d+)", text, re.M))


def stat(stats: dict[str, int], suffix: str) -> int:
    """A filter counter by its name as the filter defines it (`veil.seal.requests`): the wasm
    shell's appear as `wasmcustom.veil.*`, the native shell's as `veil.*` (its
    metrics_namespace); each Envoy has one of them."""
    for k, v in stats.items():
        if k in (suffix, f"wasmcustom.{suffix}"):
            return v
    return 0


# ---------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Envoy:
    role: str  # "control" | "wasm" | "native" | "floor-wasm" | "floor-native" | REWRITE_FLOOR
    listen: str
    admin: str
    config: Path
    proc: subprocess.Popen | None = None
    rss_idle_mib: float = 0.0


DYNAMIC_MODULE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def is_veil_filter(f: dict) -> bool:
    """The Veil filter entry of either shell (the proxy-wasm filter or the dynamic module)."""
    return f.get("name") == "envoy.filters.http.wasm" or (
        (f.get("typed_config") or {}).get("@type") == DYNAMIC_MODULE_TYPE)


def http_filter_lists(cfg: dict):
    for listener in cfg.get("static_resources", {}).get("listeners", []) or []:
        for chain in listener.get("filter_chains", []) or []:
            for nf in chain.get("filters", []) or []:
                hcm = nf.get("typed_config", {}) or {}
                if isinstance(hcm.get("http_filters"), list):
                    yield hcm


def strip_veil_filter(cfg: dict, replacement: dict | None = None) -> int:
    """Removes the Veil filter entry (either shell) from every HTTP connection manager, or puts
    `replacement` in its place; returns how many entries were found."""
    found = 0
    for hcm in http_filter_lists(cfg):
        out = []
        for f in hcm["http_filters"]:
            if is_veil_filter(f):
                found += 1
                if replacement is not None:
                    out.append(copy.deepcopy(replacement))
            else:
                out.append(f)
        hcm["http_filters"] = out
    return found


def floor_entry(shell: str, bins: dict[str, Path], rewrite: bool = False) -> dict:
    """The empty filter of a shell (or, `rewrite`, the native body-rewriting floor), at the Veil
    filter's place in the chain."""
    if shell == "wasm":
        return {"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "floor", "root_id": "floor", "fail_open": False,
                       "vm_config": {"vm_id": "floor", "runtime": "envoy.wasm.runtime.v8",
                                     "code": {"local": {"filename": str(bins["floor_wasm"])}}}}}}
    entry = {"name": "floor", "typed_config": {
        "@type": DYNAMIC_MODULE_TYPE,
        "dynamic_module_config": {"module": {"local": {"filename": str(bins["floor_native_installed"])}},
                                  "do_not_close": True},
        "filter_name": "floor"}}
    if rewrite:
        entry["typed_config"]["filter_config"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                  "value": "rewrite"}
    return entry


def install_module(src: Path, dst: Path) -> Path:
    """Copies a dynamic module into place the safe way: a new file, renamed over the old one
    (never overwrite a .so an Envoy may have mapped)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    return dst


def set_socket_port(addr_holder: dict, port: int) -> None:
    addr_holder["address"]["socket_address"]["port_value"] = port


class Stack:
    """keyservice + upstream + treatment and control Envoys for one (template, filter config)."""

    count = 0

    def __init__(self, args, procs: Procs, run_dir: Path, bins: dict[str, Path], key: tuple):
        self.args = args
        self.procs = procs
        self.run_dir = run_dir
        self.bins = bins
        self.template, self.filter_config, self.upstream_args = key
        Stack.count += 1
        self.tag = f"stack{Stack.count}"
        self.keyservice_addr = ""
        self.upstream_addr = ""
        self.envoys: dict[str, Envoy] = {}
        self.token = secrets.token_hex(32)

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.procs.procs]

    def start(self) -> None:
        import yaml  # PyYAML (requirements.txt); imported here so --help works without it

        a = self.args
        cpus_envoy, cpus_rest = a.cpu_sets
        rd = self.run_dir
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
        ks_env = dict(
            base_env,
            VEIL_KEYRING=str(rd / "keyring.json"),
            VEIL_LOCAL_KEK_FILE=str(rd / "local-kek.key"),
            KMS_PROVIDER="local",
            VEIL_KEYSERVICE_TOKEN_FILE=str(rd / "keyservice.token"),
        )
        if not (rd / "keyservice.token").exists():
            fd = os.open(rd / "keyservice.token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token)
        else:
            self.token = (rd / "keyservice.token").read_text().strip()
        if not (rd / "keyring.json").exists():
            r = subprocess.run(
                [str(self.bins["keyservice"]), "keyring", "init"],
                env=ks_env, capture_output=True, text=True, timeout=30, cwd=rd,
            )
            if r.returncode != 0:
                raise BenchError(f"keyring init failed: {r.stderr.strip()}")
        # The relay's pin, taken out of band as a client would (veil-bench-load --server-key).
        if not (rd / "relay-server-key").exists():
            r = subprocess.run(
                [str(self.bins["keyservice"]), "relay-key", "show"],
                env=ks_env, capture_output=True, text=True, timeout=30, cwd=rd,
            )
            if r.returncode != 0:
                raise BenchError(f"relay-key show failed: {r.stderr.strip()}")
            (rd / "relay-server-key").write_text(r.stdout.strip() + "\n")

        ks_port, up_port = free_port(), free_port()
        self.keyservice_addr = f"127.0.0.1:{ks_port}"
        self.upstream_addr = f"127.0.0.1:{up_port}"
        ks = self.procs.start(
            f"{self.tag}-keyservice",
            [str(self.bins["keyservice"]), "serve"],
            dict(ks_env, VEIL_KEYSERVICE_LISTEN=self.keyservice_addr),
            cpus_rest,
        )
        wait_until("keyservice", 20, lambda: http_get(f"http://{self.keyservice_addr}/readyz")[0] == 200,
                   self.procs, ks, f"{self.tag}-keyservice")
        upstream_args = list(self.upstream_args)
        if "{sealed_search}" in upstream_args:
            # The search answer's events sealed under this keyring's current data key.
            sealed = rd / f"{self.tag}-sealed-search.json"
            r = subprocess.run(
                [str(self.bins["seal_fixture"]), "--keyservice", self.keyservice_addr,
                 "--token-file", str(rd / "keyservice.token"),
                 "--in", str(ROOT / "fixtures/moesif/search-response-plaintext.json"), "--out", str(sealed)],
                capture_output=True, text=True, timeout=30,
            )
            if r.returncode != 0:
                raise BenchError(f"veil-bench-seal-fixture failed: {r.stderr.strip()}")
            log(f"    {r.stdout.strip()}")
            upstream_args = [str(sealed) if x == "{sealed_search}" else x for x in upstream_args]
        up = self.procs.start(
            f"{self.tag}-upstream",
            [str(self.bins["upstream"]), "--listen", self.upstream_addr,
             "--threads", str(a.upstream_threads), *upstream_args],
            base_env,
            cpus_rest,
        )
        wait_until("upstream", 20, lambda: http_get(f"http://{self.upstream_addr}/healthz")[0] == 200,
                   self.procs, up, f"{self.tag}-upstream")

        # Treatments: the template rendered exactly as scripts/stack.sh renders it, once per
        # shell; control: the same YAML with the Veil filter entry removed; floors: the empty
        # filter of each shell in its place. One listener and admin port each.
        roles = ["control"] + list(a.shells) + ([FLOOR[sh] for sh in a.shells] if a.floors else [])
        if a.floors and a.rewrite_floor and "native" in a.shells:
            roles.append(REWRITE_FLOOR)
        ports = {role: (free_port(), free_port()) for role in roles}
        up_listen_port = up_port
        self.envoys = {}
        rendered: dict[str, dict] = {}
        for shell in a.shells:
            cfg_path = rd / f"{self.tag}-envoy-{shell}.yaml"
            render_env = dict(
                base_env,
                VEIL_FILTER=shell,
                VEIL_LISTEN_ADDR="127.0.0.1", VEIL_LISTEN_PORT=str(ports[shell][0]),
                VEIL_ADMIN_ADDR="127.0.0.1", VEIL_ADMIN_PORT=str(ports[shell][1]),
                VEIL_UPSTREAM_ADDR="127.0.0.1", VEIL_UPSTREAM_PORT=str(up_listen_port),
                VEIL_KEYSERVICE_ADDR="127.0.0.1", VEIL_KEYSERVICE_PORT=str(ks_port),
                VEIL_WASM=str(self.bins.get("wasm", "")),
                VEIL_NATIVE_MODULE=str(self.bins.get("native_installed", "")),
                VEIL_FILTER_CONFIG_FILE=str(ROOT / self.filter_config),
            )
            r = subprocess.run(
                [sys.executable, str(ROOT / "scripts/render-envoy.py"), str(ROOT / self.template), str(cfg_path)],
                env=render_env, capture_output=True, text=True, timeout=30,
            )
            if r.returncode != 0:
                raise BenchError(f"render-envoy.py ({shell}) failed: {r.stderr.strip()}")
            rendered[shell] = yaml.safe_load(cfg_path.read_text())
            if strip_veil_filter(copy.deepcopy(rendered[shell])) != 1:
                raise BenchError(f"{cfg_path}: expected exactly one Veil filter entry")
            self.envoys[shell] = Envoy(shell, f"127.0.0.1:{ports[shell][0]}", f"127.0.0.1:{ports[shell][1]}", cfg_path)
        base = rendered[a.shells[0]]
        listeners = base["static_resources"]["listeners"]
        if len(listeners) != 1:
            raise BenchError(f"expected one listener in {self.template}, found {len(listeners)}")
        for role in roles:
            if role in SHELLS:
                continue
            cfg = copy.deepcopy(base)
            if role == "control":
                strip_veil_filter(cfg)
                what = "the Veil filter entry removed"
            elif role == REWRITE_FLOOR:
                strip_veil_filter(cfg, floor_entry("native", self.bins, rewrite=True))
                what = "the Veil filter replaced by the native body-rewriting floor (bench/floors/native, `rewrite`)"
            else:
                shell = role.removeprefix("floor-")
                strip_veil_filter(cfg, floor_entry(shell, self.bins))
                what = f"the Veil filter replaced by the empty {shell} filter (bench/floors/{shell})"
            set_socket_port(cfg["admin"], ports[role][1])
            set_socket_port(cfg["static_resources"]["listeners"][0], ports[role][0])
            path = rd / f"{self.tag}-envoy-{role}.yaml"
            path.write_text(f"# Generated by bench/run.py: the treatment config with {what}.\n"
                            + yaml.safe_dump(cfg, sort_keys=False))
            self.envoys[role] = Envoy(role, f"127.0.0.1:{ports[role][0]}", f"127.0.0.1:{ports[role][1]}", path)
        # Control first, as the rounds run.
        self.envoys = {role: self.envoys[role] for role in roles}
        # The demo filter config's relay section reads its client-id secret from here.
        envoy_env = dict(
            base_env,
            VEIL_KEYSERVICE_TOKEN=self.token,
            VEIL_RELAY_CLIENT_ID_SECRET=secrets.token_hex(32),
        )
        for e in self.envoys.values():
            e.proc = self.procs.start(
                f"{self.tag}-envoy-{e.role}",
                [str(a.envoy), "-c", str(e.config), "--concurrency", "1",
                 "--log-level", a.envoy_log_level, "--disable-hot-restart"],
                envoy_env,
                cpus_envoy,
            )
        for e in self.envoys.values():
            wait_until(f"Envoy ({e.role})", 60, lambda e=e: http_get(f"http://{e.admin}/ready")[0] == 200,
                       self.procs, e.proc, f"{self.tag}-envoy-{e.role}")
        for shell in a.shells:
            t = self.envoys[shell]
            # Ready means the filter holds the current data key (as scripts/stack.sh waits for).
            wait_until(f"the {shell} filter's first data key", 20,
                       lambda t=t: stat(envoy_stats(t.admin), "veil.keys.fetch_ok") >= 1,
                       self.procs, t.proc, f"{self.tag}-envoy-{shell}")
        time.sleep(1.0)
        for e in self.envoys.values():
            e.rss_idle_mib = rss_bytes(e.proc.pid) / MIB


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------

LUA_COMMON = r"""
-- Generated by bench/run.py.
wrk.method = "%(method)s"
%(headers)s
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end
%(body)s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "VEILBENCH requests=%%d duration_us=%%d bytes=%%d err_connect=%%d err_read=%%d err_write=%%d err_status=%%d err_timeout=%%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("VEILBENCH lat_min_us=%%d lat_mean_us=%%.1f lat_stdev_us=%%.1f lat_max_us=%%d\n",
    latency.min, latency.mean, latency.stdev, latency.max))
  for _, p in ipairs({50, 75, 90, 99, 99.9, 99.99}) do
    io.write(string.format("VEILBENCH p%%s_us=%%d\n", tostring(p), latency:percentile(p)))
  end
end
"""

# One body, sent as is (wrk builds the request once).
LUA_STATIC_BODY = 'wrk.body = slurp([==[%(path)s]==])'

# Many bodies (one per line of a file, JSON-compact so no newline inside), cycled per request.
LUA_VARIANT_BODIES = r"""
local bodies = {}
for line in io.lines([==[%(path)s]==]) do bodies[#bodies + 1] = line end
local requests_fmt, next_i = nil, 0
local threads_setup = 0
function setup(thread)
  -- each thread starts at another place in the cycle
  thread:set("start_at", threads_setup * 997)
  threads_setup = threads_setup + 1
end
function init(args)
  requests_fmt = {}
  for i = 1, #bodies do requests_fmt[i] = wrk.format(nil, nil, nil, bodies[i]) end
  next_i = (start_at or 0) %% #bodies
end
function request()
  next_i = next_i %% #requests_fmt + 1
  return requests_fmt[next_i]
end
"""

# Open-loop pacing. wrk has no rate limiting of its own (wrk2 has, but is not packaged); its
# Lua `delay()` hook is asked, before each request a connection is about to send, how many
# milliseconds to wait. Each wrk thread keeps a schedule of send slots at `rate/threads` per
# second (evenly spaced, or exponential gaps for Poisson arrivals) read against a monotonic
# clock (clock_gettime through LuaJIT's FFI) and answers the wait until its next free slot. The
# mean rate is exact while enough connections are idle; wrk's timers have 1 ms resolution, so
# sends are grouped on millisecond ticks (about rate/1000 requests per tick). Latency is
# measured from the actual send (no coordinated-omission correction); if the server falls
# behind, the schedule runs late and the achieved rate (reported) drops below the target.
LUA_PACING = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } veilbench_timespec;
int clock_gettime(int clk_id, veilbench_timespec *tp);
]]
local ts = ffi.new("veilbench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e3 + tonumber(ts.tv_nsec) * 1e-6
end
local gap_ms = 1000.0 * %(threads)d / %(rate)f
local poisson = %(poisson)s
local next_ms = nil
function delay()
  local now = now_ms()
  if next_ms == nil then next_ms = now end
  if poisson then
    next_ms = next_ms - math.log(1 - math.random()) * gap_ms
  else
    next_ms = next_ms + gap_ms
  end
  local d = next_ms - now
  if d <= 0.5 then return 0 end
  return math.floor(d + 0.5)
end
"""


def make_variants(src: Path, n: int, out: Path) -> None:
    """n compact copies of a JSON document, every string and number leaf made unique per copy
    (dates stay dates so the policy treats them alike). One document per line."""
    doc = json.loads(src.read_text())
    date = re.compile(r"^\d{4}-\d\d-\d\d([T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d))?$")

    def vary(v, i):
        if isinstance(v, dict):
            return {k: vary(x, i) for k, x in v.items()}
        if isinstance(v, list):
            return [vary(x, i) for x in v]
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, (int, float)):
            return v + i
        if isinstance(v, str):
            return v if date.match(v) else f"{v}~{i}"
        return v

    with open(out, "w") as f:
        for i in range(n):
            f.write(json.dumps(vary(doc, i), separators=(",", ":")) + "\n")


def variants_file(sc: Scenario, run_dir: Path) -> Path:
    """The scenario's distinct bodies, one per line (read by wrk's script and veil-bench-load)."""
    vfile = run_dir / f"{sc.name}.variants.jsonl"
    if not vfile.exists():
        make_variants(ROOT / sc.body, sc.variants, vfile)
    return vfile


def write_lua(sc: Scenario, run_dir: Path, rate: float | None, threads: int, poisson: bool) -> Path:
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in sc.headers)
    if sc.variants:
        body = LUA_VARIANT_BODIES % {"path": variants_file(sc, run_dir)}
    elif sc.body:
        body = LUA_STATIC_BODY % {"path": ROOT / sc.body}
    else:
        body = ""
    text = LUA_COMMON % {"method": sc.method, "headers": headers, "body": body}
    if rate:
        text += LUA_PACING % {"threads": threads, "rate": rate, "poisson": "true" if poisson else "false"}
    kind = f"rate{int(rate)}" if rate else "closed"
    path = run_dir / f"{sc.name}-{kind}.lua"
    path.write_text(text)
    return path


@dataclasses.dataclass
class Round:
    role: str
    phase: str  # "concurrency" | "rate" | "warmup"
    index: int
    requests: int = 0
    rps: float = 0.0
    errors: int = 0
    error_detail: str = ""
    p: dict = dataclasses.field(default_factory=dict)  # "50" -> ms
    mean_ms: float = 0.0
    max_ms: float = 0.0
    envoy_cpu_cores: float = 0.0
    envoy_cpu_us_per_req: float = 0.0
    wrk_cpu_cores: float = 0.0  # the load generator's CPU (wrk or veil-bench-load)
    gen: str = "wrk"  # "wrk" | "veil" (veil-bench-load)
    # veil-bench-load --rate: how late sends left after their due time (µs), slots not sent.
    late_us: dict = dataclasses.field(default_factory=dict)  # "50" -> µs
    slots_missed: int = 0
    foreign_cores: float = 0.0
    rss_mib: float = 0.0
    noisy: bool = False


def wait_for_quiet(args, procs: Procs) -> float:
    """Waits (at most --quiet-wait seconds) until processes other than ours leave the machine
    nearly idle; returns the last foreign load seen (cores)."""
    t0 = time.monotonic()
    deadline = t0 + args.quiet_wait
    ours = [p.pid for _, p in procs.procs]
    waited = False
    while True:
        load = foreign_load(0.5, ours)
        if load <= args.quiet_below or time.monotonic() >= deadline:
            if waited:
                log(f"    (waited {time.monotonic() - t0:.0f}s for other processes to go quiet; "
                    f"now {load:.2f} cores)")
            return load
        waited = True
        time.sleep(1.0)


def run_load(args, sc: Scenario, envoy: Envoy, lua: Path, seconds: float, phase: str, index: int,
             procs: Procs, rate: float | None = None) -> Round:
    """One round: wrk with `lua`, or veil-bench-load (relay scenarios; the fixed-rate phase
    unless --rate-gen wrk)."""
    cpus_envoy, cpus_rest = args.cpu_sets
    if args.quiet_wait > 0 and phase != "warmup":
        wait_for_quiet(args, procs)
    url = f"http://{envoy.listen}{sc.path}"
    # wrk takes whole seconds only (0.5 would be a usage error).
    argv = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", "5s", "-s", str(lua), url]
    gen = "wrk"
    if uses_veil_load(args, sc, rate):
        gen = "veil"
        extra = ["--connections", str(args.connections), "--duration", f"{seconds:g}"]
        if rate:
            extra += ["--rate", f"{rate:.3f}"]
        argv = load_argv(args, sc, envoy, extra, stack_dir=lua.parent)
    preexec = (lambda: os.sched_setaffinity(0, cpus_rest)) if cpus_rest else None
    ours = [p.pid for _, p in procs.procs]
    epid = envoy.proc.pid
    def children_cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    e0, b0, w0 = cpu_secs(epid), machine_busy_secs(), children_cpu()
    o0 = sum(cpu_secs(p) for p in ours)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=preexec)
    rss = []
    try:
        # RSS under load: sampled at 50% and 80% of the round.
        for frac in (0.5, 0.8):
            delay = t0 + seconds * frac - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if p.poll() is None:
                rss.append(rss_bytes(epid))
        out, err = p.communicate(timeout=seconds + 30)
    except BaseException:
        p.kill()
        p.wait()
        raise
    elapsed = time.monotonic() - t0
    e1, b1, w1 = cpu_secs(epid), machine_busy_secs(), children_cpu()
    o1 = sum(cpu_secs(x) for x in ours)
    w_cpu = w1 - w0  # wrk was the only child reaped during the round
    name = "wrk" if gen == "wrk" else "veil-bench-load"
    if p.returncode != 0:
        raise BenchError(f"{name} failed ({p.returncode}): {err.strip() or out.strip()}")
    kv = dict(re.findall(r"(\S+?)=(\S+)", "\n".join(l for l in out.splitlines() if l.startswith("VEILBENCH"))))
    if "requests" not in kv:
        raise BenchError(f"{name} printed no summary:\n{out}\n{err}")
    r = Round(envoy.role, phase, index, gen=gen)
    r.requests = int(kv["requests"])
    dur = int(kv["duration_us"]) / 1e6
    r.rps = r.requests / dur if dur > 0 else 0.0
    errs = {k: int(kv[k]) for k in kv if k.startswith("err_")}
    r.errors = sum(errs.values())
    r.error_detail = " ".join(f"{k[4:]}={v}" for k, v in errs.items() if v)
    for k, v in kv.items():
        if k.startswith("p") and k.endswith("_us"):
            r.p[k[1:-3]] = int(v) / 1000.0
        elif k.startswith("late_p") and k.endswith("_us"):
            r.late_us[k[6:-3]] = int(v)
    r.slots_missed = int(kv.get("slots_missed", 0))
    r.mean_ms = float(kv["lat_mean_us"]) / 1000.0
    r.max_ms = int(kv["lat_max_us"]) / 1000.0
    envoy_cpu = e1 - e0
    r.envoy_cpu_cores = envoy_cpu / elapsed
    r.envoy_cpu_us_per_req = envoy_cpu * 1e6 / r.requests if r.requests else 0.0
    r.wrk_cpu_cores = w_cpu / elapsed
    # Busy CPU time of the machine not spent in our processes or the generator: noise.
    r.foreign_cores = max(0.0, ((b1 - b0) - (o1 - o0) - w_cpu) / elapsed)
    r.rss_mib = max(rss) / MIB if rss else rss_bytes(epid) / MIB
    return r


def uses_veil_load(args, sc: Scenario, rate: float | None) -> bool:
    """veil-bench-load drives the relay scenarios (wrk cannot encode) and, unless --rate-gen
    wrk, every fixed-rate round."""
    return sc.loadgen == "relay" or bool(rate and args.rate_gen == "veil")


def load_argv(args, sc: Scenario, envoy: Envoy, extra: list[str], stack_dir: Path) -> list[str]:
    """veil-bench-load: through the relay for a relay scenario's treatment, plaintext otherwise
    (the same request; the same distinct bodies as wrk for a scenario with variants)."""
    relay = sc.loadgen == "relay" and envoy.role in SHELLS
    argv = [str(args.load_gen), "--mode", "relay" if relay else "plain",
            "--url", f"http://{envoy.listen}", "--method", sc.method, "--path", sc.path]
    if relay:
        argv += ["--server-key", str(stack_dir / "relay-server-key")]
    if sc.variants:
        argv += ["--bodies", str(variants_file(sc, stack_dir))]
    elif sc.body:
        argv += ["--body", str(ROOT / sc.body)]
    for k, v in sc.headers:
        argv += ["-H", f"{k}: {v}"]
    return argv + extra


def fmt_round(sc: Scenario, r: Round, rate: float | None) -> str:
    tgt = f" (target {rate:.0f})" if rate else ""
    s = (f"  {sc.name:<11} {r.phase:<11} {r.role:<9} #{r.index}: {r.rps:9.0f} req/s{tgt}"
         f"  p50 {r.p.get('50', 0):6.3f}  p99 {r.p.get('99', 0):6.3f}  p99.9 {r.p.get('99.9', 0):6.3f} ms"
         f"  envoy {r.envoy_cpu_cores:4.2f} cores {r.envoy_cpu_us_per_req:6.1f} us/req"
         f"  {r.gen} {r.wrk_cpu_cores:4.2f}  other {r.foreign_cores:4.2f}  rss {r.rss_mib:6.1f} MiB")
    if r.late_us:
        s += f"  late p50 {r.late_us.get('50', 0)} p99 {r.late_us.get('99', 0)} us"
    if r.slots_missed:
        s += f"  MISSED {r.slots_missed} slots"
    if r.errors:
        s += f"  ERRORS {r.errors} ({r.error_detail})"
    return s


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else 0.0


def run_scenario(args, sc: Scenario, stack: Stack, procs: Procs) -> list[dict]:
    envoys = stack.envoys
    shells = [r for r in envoys if r in SHELLS]
    floors = [r for r in envoys if r.startswith("floor-")]
    headers = dict(sc.headers)
    # One request through each Envoy first: each must answer 200, and each shell's filter must
    # count it.
    body = (ROOT / sc.body).read_bytes() if sc.body else b""
    before = {sh: envoy_stats(envoys[sh].admin) for sh in shells}
    for e in envoys.values():
        if sc.loadgen == "relay":
            r = subprocess.run(load_argv(args, sc, e, ["--connections", "1", "--requests", "1",
                                                      "--duration", "20"], stack.run_dir),
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or "requests=1 " not in r.stdout or "err_status=0" not in r.stdout:
                raise BenchError(f"{sc.name}: probe through the {e.role} Envoy failed: "
                                 f"{r.stdout.strip()} {r.stderr.strip()}")
            continue
        try:
            status, text = http_post(f"http://{e.listen}{sc.path}", body, headers, method=sc.method)
        except OSError as err:
            raise BenchError(f"{sc.name}: probe request to the {e.role} Envoy failed: {err}") from err
        if status != 200:
            raise BenchError(f"{sc.name}: {e.role} answered {status} to a probe request: {text[:300]}")
        # Sealed values of either format (the fixture is sealed in the current one, v2).
        sealed = "veil:v1:" in text or "veil:v2:" in text
        if sc.probe_unsealed and (sealed != (e.role not in SHELLS)):
            raise BenchError(f"{sc.name}: the {e.role} answer {'still has' if e.role in SHELLS else 'lacks'} "
                             f"sealed values: {text[:300]}")
    if sc.filter_counter:
        for sh in shells:
            after = envoy_stats(envoys[sh].admin)
            if stat(after, sc.filter_counter) - stat(before[sh], sc.filter_counter) != 1:
                raise BenchError(f"{sc.name}: the {sh} filter did not count the probe request ({sc.filter_counter})")

    transform_us = time_transform(args, sc, stack) if "native" in shells else None

    closed = write_lua(sc, stack.run_dir, None, args.threads, False)
    rounds: list[Round] = []
    order = ["control"] + shells + floors

    sent = {sh: 0 for sh in shells}  # every treatment request after the counter snapshot, kept or not

    def one(role, phase, idx, lua, secs, rate=None):
        for attempt in range(args.noisy_retries + 1):
            r = run_load(args, sc, envoys[role], lua, secs, phase, idx, procs, rate)
            if role in sent and phase != "warmup":
                sent[role] += r.requests
            noisy = phase != "warmup" and r.foreign_cores > args.noisy_above
            if noisy and attempt < args.noisy_retries:
                log(fmt_round(sc, r, rate) + "  <- discarded: other processes were busy; again")
                continue
            break
        r.noisy = noisy
        if phase != "warmup":
            rounds.append(r)
        log(fmt_round(sc, r, rate) + ("  (noisy)" if noisy else ""))
        if r.errors and not args.allow_errors:
            raise BenchError(f"{sc.name}: {role} had {r.errors} errors ({r.error_detail}); "
                             f"logs in {stack.run_dir}")
        return r

    # Warm-up: V8 tiers the filter up to optimized code under load; caches and pools fill.
    if args.warmup > 0:
        for role in order:
            one(role, "warmup", 0, closed, args.warmup)

    s0_envoy = {sh: envoy_stats(envoys[sh].admin) for sh in shells}
    s0_ks = keyservice_requests(stack.keyservice_addr)
    s0_pairings = keyservice_pairings(stack.keyservice_addr)
    for i in range(1, args.rounds + 1):
        for role in order:
            one(role, "concurrency", i, closed, args.duration)
    rps_c = med(r.rps for r in rounds if r.phase == "concurrency" and r.role == "control")

    rate = args.rate or rps_c * args.rate_fraction
    if rate > 0 and args.rate_fraction > 0:
        # The wrk script is used only with --rate-gen wrk (and never for the relay).
        paced = write_lua(sc, stack.run_dir, rate, args.threads, args.arrivals == "poisson")
        for i in range(1, args.rounds + 1):
            for role in ["control"] + shells:
                one(role, "rate", i, paced, args.duration, rate)

    s1_envoy = {sh: envoy_stats(envoys[sh].admin) for sh in shells}
    ks_callouts = keyservice_requests(stack.keyservice_addr) - s0_ks
    pairings = keyservice_pairings(stack.keyservice_addr) - s0_pairings
    all_sent = sum(sent.values())
    floor_rps = {f: med(r.rps for r in rounds if r.phase == "concurrency" and r.role == f) for f in floors}
    out = []
    for sh in shells:
        out.append(summarize(args, sc, sh, rounds, envoys, sent[sh], s0_envoy[sh], s1_envoy[sh],
                             ks_callouts, all_sent, pairings, rate, rps_c, floor_rps.get(FLOOR[sh]),
                             transform_us if sh == "native" else None,
                             floor_rps.get(REWRITE_FLOOR) if sh == "native" else None))
    return out


def time_transform(args, sc: Scenario, stack) -> float | None:
    """The native time (µs) of the scenario's transform, on Envoy's CPU while the Envoys idle:
    veil-bench-transform's fastest batch (the criterion code path, without criterion)."""
    if not sc.transform:
        return None
    cpus_envoy = args.cpu_sets[0]
    r = subprocess.run([str(stack.bins["transform"]), sc.transform], capture_output=True, text=True,
                       timeout=120, preexec_fn=(lambda: os.sched_setaffinity(0, cpus_envoy))
                       if cpus_envoy else None)
    m = re.search(r"us_per_run=([0-9.]+)", r.stdout)
    if r.returncode != 0 or not m:
        raise BenchError(f"{sc.name}: veil-bench-transform {sc.transform} failed: "
                         f"{r.stdout.strip()} {r.stderr.strip()}")
    log(f"    native transform {sc.transform}: {float(m.group(1)):.1f} us per request "
        "(veil-bench-transform, fastest of 5 batches)")
    return float(m.group(1))


def summarize(args, sc: Scenario, shell: str, all_rounds: list, envoys: dict, t_requests: int,
              s0_envoy: dict, s1_envoy: dict, ks_callouts: int, all_sent: int, pairings: int,
              rate: float, rps_c: float, rps_floor: float | None,
              transform_us: float | None = None, rps_rewrite_floor: float | None = None) -> dict:
    """One shell's result: its rounds as "treatment" against the control's."""
    order = ["control", "treatment"]
    rounds = [dataclasses.replace(r, role="treatment") if r.role == shell else r
              for r in all_rounds if r.role in ("control", shell)]
    conc = {role: [r for r in rounds if r.phase == "concurrency" and r.role == role] for role in order}
    rps_t = med(r.rps for r in conc["treatment"])
    rate_rounds = {}
    if any(r.phase == "rate" for r in rounds):
        rate_rounds = {role: [r for r in rounds if r.phase == "rate" and r.role == role] for role in order}
    callouts_envoy = (s1_envoy.get("cluster.veil_keyservice.upstream_rq_total", 0)
                      - s0_envoy.get("cluster.veil_keyservice.upstream_rq_total", 0))
    # The relay load generator pairs its clients at the start of each round: set-up, not
    # per-request work (reported apart). Pairings go through whichever shell's Envoy.
    callouts_envoy = max(0, callouts_envoy - pairings)
    filtered = (stat(s1_envoy, sc.filter_counter) - stat(s0_envoy, sc.filter_counter)) if sc.filter_counter else 0
    rejected = sum(v for k, v in s1_envoy.items() if ".rejected." in k or k.endswith(".failed")) - sum(
        v for k, v in s0_envoy.items() if ".rejected." in k or k.endswith(".failed"))

    res: dict = {"scenario": sc.name, "filter": shell, "summary": sc.summary}
    res["rps_control"] = rps_c
    res["rps_treatment"] = rps_t
    res["ratio"] = rps_t / rps_c if rps_c else 0.0
    res["rps_floor"] = rps_floor
    res["floor_ratio"] = (rps_floor / rps_c) if (rps_floor and rps_c) else None
    res["conc_latency_ms"] = {
        role: {p: med(r.p.get(p) for r in conc[role]) for p in ("50", "99", "99.9")} for role in order
    }
    res["envoy_cpu_us_per_req"] = {role: med(r.envoy_cpu_us_per_req for r in conc[role]) for role in order}
    res["envoy_cpu_cores"] = {role: med(r.envoy_cpu_cores for r in conc[role]) for role in order}
    res["wrk_cpu_cores"] = {role: med(r.wrk_cpu_cores for r in conc[role]) for role in order}
    res["foreign_cores_max"] = max((r.foreign_cores for r in rounds), default=0.0)
    res["noisy_rounds"] = sum(1 for r in rounds if r.noisy)
    res["filter_us_per_req_from_rps"] = (1e6 / rps_t - 1e6 / rps_c) if rps_c and rps_t else 0.0
    # Per pair (control round i, treatment round i, run close together), then the median: slow
    # drift of the machine cancels within a pair.
    pairs = list(zip(conc["control"], conc["treatment"]))
    cpu_diffs = sorted(t.envoy_cpu_us_per_req - c.envoy_cpu_us_per_req for c, t in pairs)
    res["filter_us_per_req_from_cpu"] = med(cpu_diffs)
    def added_cpu(role: str) -> float | None:
        """A floor's own Envoy CPU per request over control's, per pair as above."""
        diffs = [f.envoy_cpu_us_per_req - c.envoy_cpu_us_per_req
                 for c, f in zip(conc["control"], (r for r in all_rounds
                                                   if r.phase == "concurrency" and r.role == role))]
        return med(diffs) if diffs else None

    res["floor_cpu_us_per_req_added"] = added_cpu(FLOOR[shell])
    # The native body-rewriting floor (identity transform), the same way; reported, not a target.
    if rps_rewrite_floor is not None:
        rw_rss = [r.rss_mib for r in all_rounds if r.phase == "concurrency" and r.role == REWRITE_FLOOR]
        res["rewrite_floor_ratio"] = rps_rewrite_floor / rps_c if rps_c else None
        res["rewrite_floor_cpu_us_per_req_added"] = added_cpu(REWRITE_FLOOR)
        res["rewrite_floor_rss_delta_mib"] = (med(rw_rss) - med(r.rss_mib for r in conc["control"])) if rw_rss else None
    res["transform_us"] = transform_us
    res["filter_us_per_req_from_cpu_range"] = [cpu_diffs[0], cpu_diffs[-1]] if cpu_diffs else [0, 0]
    res["ratio_pairs"] = sorted(t.rps / c.rps for c, t in pairs if c.rps)
    res["rss_mib"] = {role: med(r.rss_mib for r in conc[role]) for role in order}
    res["rss_delta_mib"] = res["rss_mib"]["treatment"] - res["rss_mib"]["control"]
    res["rss_idle_mib"] = {"control": envoys["control"].rss_idle_mib, "treatment": envoys[shell].rss_idle_mib}
    if rate_rounds:
        lat = {role: {p: med(r.p.get(p) for r in rate_rounds[role]) for p in ("50", "99", "99.9")} for role in order}
        res["rate_target"] = rate
        res["rate_achieved"] = {role: med(r.rps for r in rate_rounds[role]) for role in order}
        res["rate_latency_ms"] = lat
        res["added_ms"] = {p: lat["treatment"][p] - lat["control"][p] for p in ("50", "99", "99.9")}
        res["rate_envoy_cpu_us_per_req"] = {role: med(r.envoy_cpu_us_per_req for r in rate_rounds[role]) for role in order}
        res["rate_envoy_cpu_cores"] = {role: med(r.envoy_cpu_cores for r in rate_rounds[role]) for role in order}
        res["rate_gen"] = "veil" if uses_veil_load(args, sc, rate) else "wrk"
        res["rate_gen_cpu_cores"] = {role: med(r.wrk_cpu_cores for r in rate_rounds[role]) for role in order}
        # How late veil-bench-load's sends left (µs after their due time); none for wrk.
        res["rate_late_us"] = {role: {p: med(r.late_us.get(p) for r in rate_rounds[role]) for p in ("50", "99")}
                               for role in order} if res["rate_gen"] == "veil" else {}
        res["rate_slots_missed"] = sum(r.slots_missed for role in order for r in rate_rounds[role])
        res["rate_sustained"] = res["rate_achieved"]["treatment"] >= 0.97 * rate
    res["treatment_requests"] = t_requests
    res["filter_counted"] = filtered
    res["filter_rejected_or_failed"] = rejected
    res["callouts_envoy"] = callouts_envoy
    # The keyservice serves every shell's Envoy: its count is shared out per request sent.
    res["callouts_keyservice"] = ks_callouts
    per_req_ks = max(0, ks_callouts - pairings) / all_sent if all_sent else 0.0
    res["callouts_per_req"] = max(callouts_envoy / t_requests if t_requests else 0.0, per_req_ks)
    res["pairings"] = pairings
    res["ratio_min"] = sc.native_ratio_min if shell == "native" else sc.ratio_min
    res["callouts_max"] = sc.callouts_max
    res["rounds"] = [dataclasses.asdict(r) for r in rounds]
    report(sc, res)
    return res


def report(sc: Scenario, res: dict) -> None:
    c, t = "control", "treatment"
    log("")
    log(f"  {sc.name} [{res['filter']} shell]: {sc.summary}")
    log(f"  {'':<34}{'control':>12}{res['filter']:>12}{'T - C / T/C':>14}")
    log(f"  {'max throughput (req/s)':<34}{res['rps_control']:12.0f}{res['rps_treatment']:12.0f}{res['ratio']:14.3f}")
    if res.get("floor_ratio") is not None:
        log(f"  {'  its floor (empty ' + res['filter'] + ' filter)':<34}{'':12}{res['rps_floor']:12.0f}"
            f"{res['floor_ratio']:14.3f}  (gap {res['floor_ratio'] - res['ratio']:+.3f})")
    if res.get("rewrite_floor_ratio") is not None:
        log(f"  {'  body-rewriting native floor':<34}{'':12}{res['rewrite_floor_ratio'] * res['rps_control']:12.0f}"
            f"{res['rewrite_floor_ratio']:14.3f}  (+{res['rewrite_floor_cpu_us_per_req_added']:.1f} us Envoy CPU/req, "
            f"RSS {res['rewrite_floor_rss_delta_mib']:+.1f} MiB)")
    for p in ("50", "99", "99.9"):
        lc, lt = res["conc_latency_ms"][c][p], res["conc_latency_ms"][t][p]
        log(f"  {'  p' + p + ' at ' + str(ARGS.connections) + ' connections (ms)':<34}{lc:12.3f}{lt:12.3f}{lt - lc:14.3f}")
    if "rate_target" in res:
        ra = res["rate_achieved"]
        log(f"  {'fixed rate (req/s, target %.0f)' % res['rate_target']:<34}{ra[c]:12.0f}{ra[t]:12.0f}")
        for p in ("50", "99", "99.9"):
            lc, lt = res["rate_latency_ms"][c][p], res["rate_latency_ms"][t][p]
            log(f"  {'  p' + p + ' at fixed rate (ms)':<34}{lc:12.3f}{lt:12.3f}{lt - lc:14.3f}")
        rc = res["rate_envoy_cpu_cores"]
        log(f"  {'  Envoy CPU at fixed rate (cores)':<34}{rc[c]:12.2f}{rc[t]:12.2f}")
        gc = res["rate_gen_cpu_cores"]
        log(f"  {'  ' + res['rate_gen'] + ' CPU at fixed rate (cores)':<34}{gc[c]:12.2f}{gc[t]:12.2f}")
        if res["rate_late_us"]:
            for p in ("50", "99"):
                lc, lt = res["rate_late_us"][c][p], res["rate_late_us"][t][p]
                log(f"  {'  send lateness p' + p + ' (us)':<34}{lc:12.0f}{lt:12.0f}")
        if res["rate_slots_missed"]:
            log(f"  NOTE: {res['rate_slots_missed']} send slots were never sent (the Envoy fell far "
                "behind the schedule)")
        if not res["rate_sustained"]:
            log("  NOTE: the treatment could not sustain the fixed rate (it is above its maximum): the "
                "added latency there is queueing, not the filter's service time")
        elif rc[t] > 0.75:
            log(f"  NOTE: at this rate the treatment's Envoy worker is {rc[t]:.0%} busy, so queueing "
                "inflates its latency (try --rate-fraction 0.2 for the added service time)")
    ec = res["envoy_cpu_us_per_req"]
    log(f"  {'Envoy CPU per request (us)':<34}{ec[c]:12.1f}{ec[t]:12.1f}{ec[t] - ec[c]:14.1f}")
    log(f"  {'Envoy CPU used (cores)':<34}{res['envoy_cpu_cores'][c]:12.2f}{res['envoy_cpu_cores'][t]:12.2f}")
    closed_gen = "veil-bench-load" if sc.loadgen == "relay" else "wrk"
    log(f"  {closed_gen + ' CPU used (cores)':<34}{res['wrk_cpu_cores'][c]:12.2f}{res['wrk_cpu_cores'][t]:12.2f}")
    ri = res["rss_idle_mib"]
    log(f"  {'Envoy RSS idle after start (MiB)':<34}{ri[c]:12.1f}{ri[t]:12.1f}{ri[t] - ri[c]:14.1f}")
    log(f"  {'Envoy RSS under load (MiB)':<34}{res['rss_mib'][c]:12.1f}{res['rss_mib'][t]:12.1f}{res['rss_delta_mib']:14.1f}")
    lo, hi = res["filter_us_per_req_from_cpu_range"]
    log(f"  filter cost per request: {res['filter_us_per_req_from_rps']:.1f} us from 1/rps_T - 1/rps_C; "
        f"{res['filter_us_per_req_from_cpu']:.1f} us from Envoy CPU time (median of pairs, range "
        f"{lo:.1f}..{hi:.1f}); T/C per pair: " + " ".join(f"{x:.2f}" for x in res["ratio_pairs"]))
    log(f"  keyservice callouts during the measured rounds: {res['callouts_envoy']} (Envoy cluster), "
        f"{res['callouts_keyservice']} (keyservice /metrics) for {res['treatment_requests']} requests "
        f"= {res['callouts_per_req']:.2e} per request"
        + (f" (relay pairings at set-up, not counted: {res['pairings']})" if res.get("pairings") else ""))
    if sc.filter_counter:
        log(f"  filter counted {res['filter_counted']} requests ({sc.filter_counter}); "
            f"rejected/failed: {res['filter_rejected_or_failed']}")
    if res["noisy_rounds"]:
        log(f"  WARNING: {res['noisy_rounds']} round(s) kept although other processes used up to "
            f"{res['foreign_cores_max']:.2f} cores: those numbers are noisy")
    checks = targets(res)
    for name, ok, detail in checks:
        log(f"  target {name:<28} {'PASS' if ok else 'FAIL'}  {detail}")
    res["targets"] = {name: ok for name, ok, _ in checks}
    log("")
    log(machine_line(res))


def targets(res: dict) -> list[tuple[str, bool, str]]:
    ratio_min = res.get("ratio_min", TARGET_RATIO_MIN)
    callouts_max = res.get("callouts_max", TARGET_CALLOUTS_PER_REQ)
    out = [("throughput ratio >= %.2f" % ratio_min, res["ratio"] >= ratio_min,
            f"{res['ratio']:.3f} (aim {TARGET_RATIO_AIM})")]
    if "added_ms" in res:
        a = res["added_ms"]
        out.append(("added p50 <= %.1f ms" % TARGET_P50_ADDED_MS, a["50"] <= TARGET_P50_ADDED_MS, f"{a['50']:.3f} ms"))
        out.append(("added p99 <= %.1f ms" % TARGET_P99_ADDED_MS, a["99"] <= TARGET_P99_ADDED_MS, f"{a['99']:.3f} ms"))
    if callouts_max >= 1.0:
        out.append((f"at most {callouts_max:g} callouts per request", res["callouts_per_req"] <= callouts_max,
                    f"{res['callouts_per_req']:.3f} per request"))
    else:
        out.append(("no callout per request", res["callouts_per_req"] < callouts_max,
                    f"{res['callouts_per_req']:.2e} per request"))
    rss_max = TARGET_NATIVE_RSS_DELTA_MIB if res.get("filter") == "native" else TARGET_RSS_DELTA_MIB
    out.append(("RSS delta <= %.0f MiB" % rss_max, res["rss_delta_mib"] <= rss_max,
                f"{res['rss_delta_mib']:.1f} MiB"))
    if res.get("filter") == "native" and res.get("floor_ratio") is not None:
        gap = res["floor_ratio"] - res["ratio"]
        out.append(("within %.2f of the floor" % TARGET_NATIVE_FLOOR_GAP, gap <= TARGET_NATIVE_FLOOR_GAP,
                    f"floor {res['floor_ratio']:.3f}, gap {gap:.3f}"))
    bound = cost_bound_us(res)
    if bound is not None:
        cost = res["filter_us_per_req_from_cpu"]
        out.append(("cost <= %gx transform + floor" % TARGET_NATIVE_COST_TRANSFORM_FACTOR, cost <= bound,
                    f"{cost:.1f} us vs {TARGET_NATIVE_COST_TRANSFORM_FACTOR:g} x {res['transform_us']:.1f} + "
                    f"{max(0.0, res['floor_cpu_us_per_req_added']):.1f} = {bound:.1f} us (Envoy CPU per request)"))
    return out


def cost_bound_us(res: dict) -> float | None:
    """Issue #16: the native filter's cost per request (Envoy CPU µs, treatment - control) may
    be at most 2x the native transform time plus the empty module's own cost (floor - control,
    taken as 0 when the floor measured below control). None: not measured in this run."""
    if res.get("filter") != "native" or res.get("transform_us") is None:
        return None
    if res.get("floor_cpu_us_per_req_added") is None:
        return None
    return (TARGET_NATIVE_COST_TRANSFORM_FACTOR * res["transform_us"]
            + max(0.0, res["floor_cpu_us_per_req_added"]))


def machine_line(res: dict) -> str:
    parts = [
        res["scenario"],
        f"ratio={res['ratio']:.3f}",
        f"rps_control={res['rps_control']:.0f}",
        f"rps_treatment={res['rps_treatment']:.0f}",
    ]
    if "added_ms" in res:
        parts += [
            f"rate_rps={res['rate_target']:.0f}",
            f"p50_added_ms={res['added_ms']['50']:.3f}",
            f"p99_added_ms={res['added_ms']['99']:.3f}",
            f"p999_added_ms={res['added_ms']['99.9']:.3f}",
            f"rate_sustained={'yes' if res['rate_sustained'] else 'no'}",
            f"rate_gen={res['rate_gen']}",
        ]
        if res["rate_late_us"]:
            late = max(res["rate_late_us"][role]["99"] for role in ("control", "treatment"))
            parts.append(f"late_p99_us={late:.0f}")
    parts += [
        f"filter_us_per_req={res['filter_us_per_req_from_rps']:.1f}",
        f"cpu_us_per_req_added={res['filter_us_per_req_from_cpu']:.1f}",
        f"callouts_per_req={res['callouts_per_req']:.2e}",
        f"rss_delta_mib={res['rss_delta_mib']:.1f}",
    ]
    if res.get("floor_ratio") is not None:
        parts += [f"floor_ratio={res['floor_ratio']:.3f}", f"floor_gap={res['floor_ratio'] - res['ratio']:.3f}"]
    if res.get("rewrite_floor_ratio") is not None:
        parts += [f"rewrite_floor_ratio={res['rewrite_floor_ratio']:.3f}",
                  f"rewrite_floor_cpu_us_per_req_added={res['rewrite_floor_cpu_us_per_req_added']:.1f}",
                  f"rewrite_floor_rss_delta_mib={res['rewrite_floor_rss_delta_mib']:.1f}"]
    bound = cost_bound_us(res)
    if bound is not None:
        parts += [f"transform_us={res['transform_us']:.1f}",
                  f"floor_cpu_us_per_req_added={res['floor_cpu_us_per_req_added']:.1f}",
                  f"cost_bound_us={bound:.1f}"]
    parts += [
        f"filter={res['filter']}",
        "targets=" + ("pass" if all(res.get("targets", {}).values()) else "fail"),
    ]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Build and main
# ---------------------------------------------------------------------------------------------


def build(args) -> dict[str, Path]:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    # --bin-dir: native binaries built elsewhere (e.g. the debug ones the test suite runs); the
    # filter is always the release wasm, as in the end-to-end tests.
    # Default: the helpers outside Envoy from the `bench-tools` profile (release without LTO,
    # Cargo.toml), the transform timer from `release` (the profile libveil.so inherits).
    bin_dir = Path(args.bin_dir) if args.bin_dir else target / "bench-tools"
    if not bin_dir.is_absolute():
        bin_dir = ROOT / bin_dir
    transform_dir = bin_dir if args.bin_dir else target / "release"
    bins = {
        "keyservice": bin_dir / "veil-keyservice",
        "upstream": bin_dir / "veil-demo-upstream",
        "seal_fixture": bin_dir / "veil-bench-seal-fixture",
        "load_gen": bin_dir / "veil-bench-load",
        "transform": transform_dir / "veil-bench-transform",
    }
    # The shells' filters and their floors (only what the selected shells need).
    if "wasm" in args.shells:
        bins["wasm"] = ROOT / args.wasm if args.wasm else target / "wasm32-wasip1/release/veil_filter.wasm"
    if "native" in args.shells:
        bins["native"] = ROOT / args.native if args.native else target / "native/libveil.so"
        if args.floors:
            bins["floor_native"] = target / "native/libveilfloor.so"
    if "wasm" in args.shells and args.floors:
        bins["floor_wasm"] = target / "wasm32-wasip1/release/veil_bench_floor_wasm.wasm"
    if not args.no_build:
        step("building release artefacts (filters, floors, keyservice, demo upstream)")
        cmds = []
        if "wasm" in bins:
            cmds.append(["cargo", "build", "-q", "-p", "veil-filter", "--target", "wasm32-wasip1", "--release"])
        if "floor_wasm" in bins:
            cmds.append(["cargo", "build", "-q", "-p", "veil-bench-floor-wasm", "--target", "wasm32-wasip1",
                         "--release"])
        if "native" in bins:
            cmds.append(["cargo", "build", "-q", "--profile", "native", "-p", "veil-native"]
                        + (["-p", "veil-bench-floor-native"] if "floor_native" in bins else []))
        cmds.append(["cargo", "build", "-q", "--release", "-p", "veil-bench-transform"])
        cmds.append(["cargo", "build", "-q", "--profile", "bench-tools", "-p", "veil-keyservice", "-p", "veil-e2e",
                     "--bins"])
        for cmd in cmds:
            log("    " + " ".join(cmd))
            r = subprocess.run(cmd, cwd=ROOT, timeout=1800)
            if r.returncode != 0:
                raise BenchError(f"build failed: {' '.join(cmd)}")
    for name, path in bins.items():
        if not path.exists():
            raise BenchError(f"missing {path} (build it, or drop --no-build)")
    return bins


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Envoy with and without the Veil filter, alternated: throughput, latency, CPU, RSS, callouts.",
        epilog="Scenarios: " + ", ".join(
            s.name + ("" if s.available else " (not available yet)") + ("" if s.in_default_set else " (not in the default set)")
            for s in SCENARIOS),
    )
    env = os.environ
    ap.add_argument("--scenario", action="append", default=None,
                    help="scenario name (repeatable, or comma-separated); 'all' = the default set "
                         "[env SCENARIO; default: all]")
    ap.add_argument("--duration", type=float, default=float(env.get("DURATION") or 10),
                    help="seconds per measured round [env DURATION; default 10]")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per Envoy per scenario [3]")
    ap.add_argument("--rounds", type=int, default=3,
                    help="control/treatment pairs per phase; medians are reported [3]")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections [64]")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    ap.add_argument("--rate-fraction", type=float, default=0.5,
                    help="fixed-rate phase at this fraction of control's max req/s; 0 skips the phase [0.5]")
    ap.add_argument("--rate", type=float, default=0, help="fixed rate in req/s (overrides --rate-fraction)")
    ap.add_argument("--rate-gen", choices=("veil", "wrk"), default="veil",
                    help="load generator of the fixed-rate phase: veil = veil-bench-load --rate (µs "
                         "pacing, latency from the due time); wrk = wrk's Lua delay() pacing (1 ms "
                         "ticks, latency from the send); the relay scenarios always use veil [veil]")
    ap.add_argument("--arrivals", choices=("uniform", "poisson"), default="uniform",
                    help="send schedule of the fixed-rate phase; poisson needs --rate-gen wrk [uniform]")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                    help="pin Envoy to CPU 0 and wrk/upstream/keyservice to the other CPUs "
                         "[default: on with 2 or more CPUs]")
    ap.add_argument("--quiet-wait", type=float, default=20,
                    help="before each round, wait up to this many seconds for other processes on the "
                         "machine to go quiet; 0 = do not wait [20]")
    ap.add_argument("--quiet-below", type=float, default=0.2,
                    help="'quiet' means other processes use at most this many cores [0.2]")
    ap.add_argument("--noisy-above", type=float, default=0.3,
                    help="a round during which other processes used more cores than this is noisy "
                         "[0.3]")
    ap.add_argument("--noisy-retries", type=int, default=2,
                    help="a noisy round is discarded and run again, at most this many times [2]")
    ap.add_argument("--upstream-threads", type=int, default=1, help="demo upstream tokio threads [1]")
    ap.add_argument("--envoy", default=str(ROOT / ".venv/bin/envoy"), help="Envoy binary [.venv/bin/envoy]")
    ap.add_argument("--envoy-log-level", default="warning", help="Envoy --log-level [warning]")
    ap.add_argument("--no-build", action="store_true", help="use the artefacts already built")
    ap.add_argument("--bin-dir", metavar="DIR",
                    help="take veil-keyservice, veil-demo-upstream, veil-bench-load, "
                         "veil-bench-seal-fixture, veil-bench-transform from DIR (relative: to the repository), e.g. "
                         "target/debug with --no-build; the wasm stays the release build "
                         "[$CARGO_TARGET_DIR/bench-tools, veil-bench-transform from $CARGO_TARGET_DIR/release]")
    ap.add_argument("--wasm", metavar="FILE",
                    help="the filter's wasm [$CARGO_TARGET_DIR/wasm32-wasip1/release/veil_filter.wasm]")
    ap.add_argument("--native", metavar="FILE",
                    help="the native filter (installed into the run directory by new file + rename) "
                         "[$CARGO_TARGET_DIR/native/libveil.so]")
    ap.add_argument("--filter", choices=("wasm", "native", "both"), default=env.get("FILTER") or "both",
                    help="which shell(s) to measure against the control [env FILTER; default both]")
    ap.add_argument("--floors", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure each shell's floor: an empty proxy-wasm filter / an empty "
                         "dynamic module in the Veil filter's place (bench/floors/) [on]")
    ap.add_argument("--rewrite-floor", action=argparse.BooleanOptionalAction, default=True,
                    help="with --floors and the native shell, also measure the native body-rewriting floor "
                         "(bench/floors/native, filter config `rewrite`: Veil's body handling with an identity "
                         "transform) [on]")
    ap.add_argument("--keep", action="store_true", help="keep the run directory (configs, logs, keyring)")
    ap.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--allow-errors", action="store_true", help="do not stop on HTTP/socket errors")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--hold", type=float, default=0, metavar="SECONDS",
                    help="start the stack of the first scenario, print its addresses and PIDs, keep "
                         "it up this many seconds (for curl, perf, ...), stop it; no measurement")
    args = ap.parse_args(argv)
    names = args.scenario or ([env["SCENARIO"]] if env.get("SCENARIO") else ["all"])
    flat = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if "all" in flat:
        flat = [s.name for s in SCENARIOS if s.in_default_set]
    for n in flat:
        if n not in BY_NAME:
            ap.error(f"unknown scenario {n!r} (known: {', '.join(BY_NAME)})")
    args.scenarios = [BY_NAME[n] for n in dict.fromkeys(flat)]
    args.shells = list(SHELLS) if args.filter == "both" else [args.filter]
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1 or args.threads < 1:
        ap.error("--duration, --rounds, --connections and --threads must be positive")
    if args.connections < args.threads:
        ap.error("--connections must be at least --threads")
    if args.arrivals == "poisson" and args.rate_gen != "wrk":
        ap.error("--arrivals poisson needs --rate-gen wrk (veil-bench-load spaces sends evenly)")
    ncpu = len(os.sched_getaffinity(0))
    if args.pin is None:
        args.pin = ncpu >= 2
    if args.pin and ncpu >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        args.cpu_sets = ({cpus[0]}, set(cpus[1:]))
    else:
        args.cpu_sets = (None, None)
    return args


ARGS = None


def main(argv=None) -> int:
    global ARGS
    args = ARGS = parse_args(argv)
    if args.list:
        for s in SCENARIOS:
            flags = [] if s.available else ["not available yet: " + s.unavailable]
            if not s.in_default_set:
                flags.append("not in the default set")
            log(f"{s.name:<18} {s.summary}" + (f"  [{'; '.join(flags)}]" if flags else ""))
        return 0
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk not found: scripts/setup.sh installs it (apt-get install wrk)")
    args.wrk = wrk
    try:
        import yaml  # noqa: F401
    except ImportError:
        raise BenchError("PyYAML missing: scripts/setup.sh (or .venv/bin/pip install -r requirements.txt)")
    if not Path(args.envoy).exists():
        raise BenchError(f"no Envoy at {args.envoy}: scripts/setup.sh installs it")

    run_dir = Path(tempfile.mkdtemp(prefix="veil-bench-"))
    os.chmod(run_dir, 0o700)
    procs = Procs(run_dir)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    results = []
    failed = False
    info = machine_info()
    try:
        bins = build(args)
        args.load_gen = bins["load_gen"]
        # Dynamic modules are loaded from copies in the run directory (new file + rename).
        for name in ("native", "floor_native"):
            if name in bins:
                bins[f"{name}_installed"] = install_module(bins[name], run_dir / bins[name].name)
        step(f"machine: {info['cpu_model']}, {info['cpus']} CPUs, kernel {info['kernel']}, "
             f"load average {' '.join(info['loadavg'])}")
        envoy_version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True,
                                       timeout=60).stdout.strip().splitlines()
        envoy_version = envoy_version[-1] if envoy_version else "?"
        log(f"    envoy: {envoy_version}")
        log(f"    wrk {args.threads} thread(s), {args.connections} connections; fixed rate: "
            + ("veil-bench-load --rate" if args.rate_gen == "veil" else "wrk Lua pacing (relay: veil-bench-load)")
            + "; Envoy --concurrency 1"
            + (f"; pinned: Envoy on CPU {sorted(args.cpu_sets[0])}, the rest on {sorted(args.cpu_sets[1])}"
               if args.cpu_sets[0] else "; not pinned"))
        log(f"    shells: {', '.join(args.shells)}; floors: {'on' if args.floors else 'off'}")
        log(f"    rounds: warm-up {args.warmup:g}s per Envoy, then {args.rounds} x (control, shells, floors) "
            f"x {args.duration:g}s at fixed concurrency, then the same at a fixed rate")
        log(f"    run directory: {run_dir}")
        stacks: dict[tuple, Stack] = {}
        for sc in args.scenarios:
            if not sc.available:
                log(f"--- {sc.name}: not available yet ({sc.unavailable}); skipped")
                log(f"{sc.name} skipped=not-available-yet")
                continue
            key = (sc.envoy_template, sc.filter_config, sc.upstream_args)
            if key not in stacks:
                step(f"starting keyservice, upstream and the Envoys (control, shells, floors) for {sc.filter_config}")
                st = Stack(args, procs, run_dir, bins, key)
                st.start()
                stacks[key] = st
                e = st.envoys
                for role, env in e.items():
                    log(f"    {role:<12} {env.listen} (admin {env.admin})  config {env.config.name}")
                fl = foreign_load(1.0, st.pids())
                if fl > 0.15:
                    log(f"    WARNING: other processes keep {fl:.2f} cores busy: results will be noisy")
            if args.hold > 0:
                st = stacks[key]
                for role, e in st.envoys.items():
                    log(f"    {role:<9} pid {e.proc.pid}: curl -sS -X {sc.method} --data-binary @{sc.body} "
                        f"-H 'content-type: application/json' http://{e.listen}{sc.path}")
                log(f"    keyservice {st.keyservice_addr}, upstream {st.upstream_addr}; "
                    f"holding for {args.hold:g}s (Ctrl-C stops)")
                time.sleep(args.hold)
                break
            step(f"scenario {sc.name}")
            results.extend(run_scenario(args, sc, stacks[key], procs))
    except KeyboardInterrupt as e:
        log(f"\ninterrupted ({e or 'Ctrl-C'}); stopping everything")
        failed = True
    except BenchError as e:
        log(f"error: {e}")
        failed = True
    except Exception as e:  # an unexpected failure still stops everything (finally) and says what
        import traceback

        traceback.print_exc()
        log(f"error: {type(e).__name__}: {e}")
        failed = True
    finally:
        procs.stop_all()
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"machine": info, "args": {k: v for k, v in vars(args).items()
                                           if k not in ("scenarios", "cpu_sets")},
                 "results": results}, indent=2, default=str))
        if args.keep or failed:
            log(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    if failed:
        return 1
    if args.check and not all(all(r.get("targets", {}).values()) for r in results):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
