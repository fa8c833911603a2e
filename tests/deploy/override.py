#!/usr/bin/env python3
"""Points a shipped Envoy config at test addresses, changing nothing else.

Usage: override.py IN OUT [--listen ADDR:PORT] [--admin ADDR:PORT]
                          [--cluster NAME=ADDR:PORT]... [--wasm PATH]
                          [--native-module PATH] [--ca PATH]

--listen   the address of the (single) listener
--admin    the admin address
--cluster  the endpoint of cluster NAME (its type, TLS settings and SNI stay as shipped)
--wasm     vm_config.code.local.filename of every wasm filter
--native-module  dynamic_module_config.module.local.filename of every dynamic module
--ca       validation_context.trusted_ca.filename of every upstream TLS context

Every option must change something that exists (a cluster name that is not in the config,
a --ca with no TLS context, ... is an error), so a test cannot silently run a config other
than the one it names.
"""
import argparse
import sys

import yaml


def addr(text):
    host, _, port = text.rpartition(":")
    return {"address": host, "port_value": int(port)}


def walk(node, visit):
    visit(node)
    if isinstance(node, dict):
        for v in node.values():
            walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            walk(v, visit)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--listen")
    p.add_argument("--admin")
    p.add_argument("--cluster", action="append", default=[])
    p.add_argument("--wasm")
    p.add_argument("--native-module")
    p.add_argument("--ca")
    a = p.parse_args()
    cfg = yaml.safe_load(open(a.src, encoding="utf-8"))
    res = cfg["static_resources"]
    if a.listen:
        listeners = res["listeners"]
        if len(listeners) != 1:
            sys.exit(f"error: {a.src}: --listen needs exactly one listener, found {len(listeners)}")
        listeners[0]["address"]["socket_address"] = addr(a.listen)
    if a.admin:
        cfg["admin"]["address"]["socket_address"] = addr(a.admin)
    clusters = {c["name"]: c for c in res.get("clusters", [])}
    for spec in a.cluster:
        name, _, where = spec.partition("=")
        if name not in clusters:
            sys.exit(f"error: {a.src}: no cluster {name!r} (has {sorted(clusters)})")
        eps = clusters[name]["load_assignment"]["endpoints"]
        eps[0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = addr(where)
    counts = {"wasm": 0, "native_module": 0, "ca": 0}

    def visit(node):
        if not isinstance(node, dict):
            return
        if a.wasm and "vm_config" in node:
            node["vm_config"]["code"]["local"]["filename"] = a.wasm
            counts["wasm"] += 1
        dm = node.get("dynamic_module_config")
        if a.native_module and isinstance(dm, dict) and "local" in (dm.get("module") or {}):
            dm["module"]["local"]["filename"] = a.native_module
            counts["native_module"] += 1
        vc = node.get("validation_context")
        if a.ca and isinstance(vc, dict) and "trusted_ca" in vc:
            vc["trusted_ca"] = {"filename": a.ca}
            counts["ca"] += 1

    walk(cfg, visit)
    for what in ("wasm", "native_module", "ca"):
        if getattr(a, what) and counts[what] == 0:
            flag = what.replace("_", "-")
            sys.exit(f"error: {a.src}: --{flag} given but nothing to change")
    with open(a.dst, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
