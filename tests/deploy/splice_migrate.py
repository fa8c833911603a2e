#!/usr/bin/env python3
"""Puts what `veil-keyservice migrate` printed into a shipped standalone Envoy config, the
way its report tells an operator to, so the real Envoy can load the result.

Usage: splice_migrate.py CONFIG REPORT OUT

CONFIG  envoy/veil-seal.yaml (migrate moesif) or envoy/veil-relay.yaml (migrate mte-relay)
REPORT  migrate's stdout
OUT     the config with: the filter configuration (the wasm filter's `configuration`), and
        for the relay the listener address (PORT), the `app` cluster (UPSTREAM), the virtual
        host's CORS policy (CORS_ORIGINS / CORS_METHODS) and response_headers_to_add
        (HEADERS). Every piece must find its place; a piece with nowhere to go is an error.
"""
import json
import re
import sys

import yaml


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def sections(report):
    """`# ---- <title> ----` headers and the text under each."""
    out = {}
    parts = re.split(r"^# ---- (.*) ----$", report, flags=re.M)
    for title, body in zip(parts[1::2], parts[2::2]):
        out[title] = body
    return out


def main():
    config_path, report_path, out_path = sys.argv[1:4]
    cfg = yaml.safe_load(open(config_path, encoding="utf-8"))
    s = sections(open(report_path, encoding="utf-8").read())
    filt = next((v for k, v in s.items() if k.startswith("filter configuration")), None)
    if filt is None:
        die("no filter configuration in the report")
    filter_json = json.loads(filt[filt.index("{"): filt.rindex("}") + 1])
    listener = cfg["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    if len(wasm) != 1:
        die("the config has no single wasm filter")
    wasm[0]["typed_config"]["config"]["configuration"]["value"] = json.dumps(filter_json)
    for title, body in s.items():
        if not title.startswith("Envoy: "):
            continue
        piece = yaml.safe_load(body)
        vh = hcm["route_config"]["virtual_hosts"][0]
        if title.startswith("Envoy: PORT"):
            listener["address"] = piece["address"]
        elif title.startswith("Envoy: UPSTREAM"):
            clusters = cfg["static_resources"]["clusters"]
            i = next((i for i, c in enumerate(clusters) if c["name"] == "app"), None)
            if i is None:
                die("no cluster `app` to replace")
            clusters[i] = piece[0]
        elif title.startswith("Envoy: CORS"):
            vh.setdefault("typed_per_filter_config", {}).update(piece)
        elif title.startswith("Envoy: HEADERS"):
            vh["response_headers_to_add"] = piece["response_headers_to_add"]
        else:
            die(f"nowhere to put {title!r}")
    with open(out_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
