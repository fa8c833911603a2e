#!/usr/bin/env python3
"""Checks that every shipped config where more than one Envoy shares a pairing store sets
the relay's replay mode to `global` (issue #17 item 4; docs/relay.md "Replay protection").

  replay_modes.py [ROOT]      ROOT: a tree laid out like the repository (default: it)

In `local` mode each Envoy keeps its own replay window, so a request a hop captured is
accepted once more by another replica (or after a restart): the upstream runs it twice.

What it reads, and how it counts Envoys:
- docker-compose.yml: the services that run Envoy (an `envoyproxy/envoy` image, an
  `envoy*` Dockerfile, or `envoy` as the command), each `deploy.replicas` (or `scale`)
  times; their relay config is the one in compose/envoy-<shell>.yaml (each shell's).
- every YAML document under istio/: each relay config embedded in an EnvoyFilter or a
  WasmPlugin (any JSON string or mapping with a `relay` member), placed on the workloads
  its `workloadSelector`/`selector` labels select. A Deployment of the tree whose pod labels
  match counts with its `spec.replicas` (default 1); labels no shipped Deployment carries
  select the user's own pods, of which there may be any number: counted as many.
- docs/deploy-*.md and docs/relay.md: each fenced code block holding a relay config. These
  guides describe deployments (several instances behind a load balancer, Istio), so their
  examples must say `global`; a single-instance example belongs in docs/configuration.md.

Prints `ok <where> envoys=<n|many> mode=<mode>` per relay config found; each violation is
`error: <where>: …` on stderr, and the exit status is 1.
"""
import json
import os
import re
import sys

import yaml

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANY = "many"
errors = []
found = []


def rel(path):
    return os.path.relpath(path, ROOT)


def relay_configs(node):
    """Every relay config (the `relay` mapping of a filter config) inside `node`: nested
    mappings and lists, and strings that hold a filter config as JSON."""
    if isinstance(node, dict):
        if isinstance(node.get("relay"), dict):
            yield node["relay"]
        for v in node.values():
            yield from relay_configs(v)
    elif isinstance(node, list):
        for v in node:
            yield from relay_configs(v)
    elif isinstance(node, str) and '"relay"' in node:
        try:
            doc = json.loads(node)
        except ValueError:
            return
        yield from relay_configs(doc)


def mode_of(relay):
    replay = relay.get("replay") or {}
    return replay.get("mode", "local") if isinstance(replay, dict) else "local"


def check(where, envoys, relay):
    mode = mode_of(relay)
    found.append(f"ok {where} envoys={envoys} mode={mode}")
    if mode != "global" and (envoys == MANY or envoys > 1):
        errors.append(
            f"{where}: relay replay mode {mode!r} with {envoys} Envoys on one pairing store; "
            "use \"replay\": {\"mode\": \"global\"} (in `local` mode a captured request is "
            "accepted once more by another replica: the upstream runs it twice)")


def compose():
    path = os.path.join(ROOT, "docker-compose.yml")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    envoys = 0
    for name, svc in (doc.get("services") or {}).items():
        image = str(svc.get("image", ""))
        build = svc.get("build") or {}
        dockerfile = str(build.get("dockerfile", "")) if isinstance(build, dict) else ""
        command = svc.get("command") or []
        command = command if isinstance(command, list) else str(command).split()
        if (image.startswith("envoyproxy/envoy") or "envoy" in os.path.basename(dockerfile)
                or (command and command[0] == "envoy")):
            replicas = (svc.get("deploy") or {}).get("replicas", svc.get("scale", 1))
            try:
                envoys += int(replicas)
            except (TypeError, ValueError):
                envoys = MANY  # an interpolated count: any number
                break
    # One config per shell (compose/envoy-wasm.yaml, compose/envoy-native.yaml).
    for name in sorted(os.listdir(os.path.join(ROOT, "compose"))):
        if not (name.startswith("envoy") and name.endswith(".yaml")):
            continue
        cfg = os.path.join(ROOT, "compose", name)
        with open(cfg, encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        for d in docs:
            for relay in relay_configs(d):
                check(rel(cfg), envoys, relay)


def deployments(docs):
    """(pod labels, replicas) of every Deployment in `docs`."""
    out = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "Deployment":
            spec = d.get("spec") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            out.append((labels, spec.get("replicas", 1)))
    return out


def istio():
    base = os.path.join(ROOT, "istio")
    docs = []
    for dirpath, _, files in sorted(os.walk(base)):
        for name in sorted(files):
            if name.endswith((".yaml", ".yml")):
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    docs += [(path, d) for d in yaml.safe_load_all(f) if d]
    deps = deployments(d for _, d in docs)
    for path, d in docs:
        if d.get("kind") not in ("EnvoyFilter", "WasmPlugin"):
            continue
        spec = d.get("spec") or {}
        sel = ((spec.get("workloadSelector") or {}).get("labels")
               or (spec.get("selector") or {}).get("matchLabels") or {})
        matching = [r for labels, r in deps
                    if all(labels.get(k) == v for k, v in sel.items())]
        envoys = MANY if not sel or not matching else sum(int(r) for r in matching)
        where = f"{rel(path)} {d.get('kind')} {(d.get('metadata') or {}).get('name')}"
        for relay in relay_configs(spec):
            check(where, envoys, relay)


FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)


def docs():
    names = [n for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
             if (n.startswith("deploy-") and n.endswith(".md")) or n == "relay.md"]
    for name in names:
        path = os.path.join(ROOT, "docs", name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in FENCE.finditer(text):
            block = m.group(1)
            if "replay" not in block:
                continue
            line = text.count("\n", 0, m.start()) + 1
            try:
                parsed = list(yaml.safe_load_all(block))
            except yaml.YAMLError:
                # JSON fragments (`"relay": {…}`) are YAML only as a mapping's member.
                try:
                    parsed = [yaml.safe_load("{" + block + "}")]
                except yaml.YAMLError:
                    errors.append(f"{rel(path)}:{line}: a code block mentions replay but "
                                  "does not parse; cannot check its mode")
                    continue
            for p in parsed:
                for relay in relay_configs(p):
                    check(f"{rel(path)}:{line}", MANY, relay)


compose()
istio()
docs()
print("\n".join(found))
for e in errors:
    print(f"error: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
