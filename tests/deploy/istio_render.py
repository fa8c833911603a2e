#!/usr/bin/env python3
"""Applies Veil's Istio resources to a base Envoy config the way istiod does, so that the
result can be loaded and run by a real Envoy in the tests.

Usage: istio_render.py BASE OUT --context SIDECAR_OUTBOUND|GATEWAY --labels k=v,...
                       --port N --wasm-file PATH [--namespace NS] RESOURCE.yaml...

BASE      an Envoy bootstrap standing in for what istiod generates for the workload (one
          HTTP listener, the routes of its VirtualServices / ServiceEntries, the router)
--labels  the workload's pod labels (WasmPlugin selector, EnvoyFilter workloadSelector)
--port    the destination port of the listener's traffic, as a WasmPlugin `match` sees it
--wasm-file  the module Istio's agent would have fetched from the WasmPlugin `url`
RESOURCE  YAML files holding WasmPlugin, EnvoyFilter and DestinationRule resources (others
          are skipped)

What it does, as Istio does:
- EnvoyFilter: for a selected workload, each configPatch whose match.context fits.
  Implemented: `CLUSTER` `ADD` (the value becomes a cluster); `EXTENSION_CONFIG` `ADD` (kept
  by name, as istiod serves it over ECDS); `HTTP_FILTER` `INSERT_BEFORE` matched on the
  http_connection_manager's `subFilter` (inserted in every HTTP connection manager of the
  base; a `config_discovery` reference is resolved to the EXTENSION_CONFIG of that name, as
  ECDS would deliver it, and remote `oci://` wasm code becomes the local --wasm-file, as
  istio-agent does). Any other patch is an error, so nothing is silently ignored.
- VirtualService `corsPolicy` (per http route): becomes the CorsPolicy of the base's routes
  in the virtual host named after the VirtualService (allowOrigins exact/prefix/regex,
  allowMethods, allowHeaders, exposeHeaders, maxAge, allowCredentials, unmatchedPreflights).
- DestinationRule: `tls` (top level or per port) with mode SIMPLE becomes the
  UpstreamTlsContext of the base's `outbound|<port>||<host>` cluster: `sni`, the
  `subjectAltNames` as exact DNS SAN matchers, `caCertificates` as trusted CA. Other TLS
  modes are an error.
- WasmPlugin: for a selected workload whose traffic its `match` covers, an
  `envoy.filters.http.wasm` filter named `<namespace>.<name>`: root_id = pluginName,
  configuration = pluginConfig as JSON in a StringValue (protojson: sorted keys, integral
  numbers without a fraction), V8 runtime, vmConfig.env as host_env_keys (HOST) or
  key_values (INLINE), fail_open for FAIL_OPEN only. Placed by phase: AUTHN before the
  authentication filters, AUTHZ before RBAC, STATS before the stats filter, no phase just
  before the router; higher priority first within a phase. `sha256`, when set, must match
  the module.
"""
import argparse
import hashlib
import json
import sys

import yaml

PHASE_ANCHORS = {
    "AUTHN": ("istio_authn", "envoy.filters.http.jwt_authn"),
    "AUTHZ": ("envoy.filters.http.rbac",),
    "STATS": ("istio.stats",),
    "UNSPECIFIED_PHASE": ("envoy.filters.http.router",),
}


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def selected(selector_labels, labels):
    return all(labels.get(k) == v for k, v in (selector_labels or {}).items())


def protojson(v):
    """pluginConfig is a google.protobuf.Struct: every number is a double, printed the
    JavaScript way (integral values without a fraction)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 1e21 else f
    if isinstance(v, list):
        return [protojson(x) for x in v]
    if isinstance(v, dict):
        return {k: protojson(x) for k, x in v.items()}
    die(f"pluginConfig: unsupported value {v!r}")


def wasm_filter(res, ns, wasm_file):
    spec = res["spec"]
    name = f"{res['metadata'].get('namespace', ns)}.{res['metadata']['name']}"
    if spec.get("type", "HTTP") not in ("HTTP", "UNSPECIFIED_PLUGIN_TYPE"):
        die(f"WasmPlugin {name}: only HTTP plugins are rendered")
    code = open(wasm_file, "rb").read()
    if spec.get("sha256") and hashlib.sha256(code).hexdigest() != spec["sha256"]:
        die(f"WasmPlugin {name}: sha256 does not match {wasm_file}")
    env = {}
    host_keys, key_values = [], {}
    for e in spec.get("vmConfig", {}).get("env", []):
        if e.get("valueFrom", "INLINE") == "HOST":
            host_keys.append(e["name"])
        else:
            key_values[e["name"]] = e.get("value", "")
    if host_keys:
        env["host_env_keys"] = host_keys
    if key_values:
        env["key_values"] = key_values
    vm = {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm_file}}}
    if env:
        vm["environment_variables"] = env
    config = {
        "name": name,
        "root_id": spec.get("pluginName", name),
        "vm_config": vm,
        "fail_open": spec.get("failStrategy", "FAIL_CLOSE") == "FAIL_OPEN",
    }
    if spec.get("pluginConfig"):
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(protojson(spec["pluginConfig"]), sort_keys=True, separators=(",", ":")),
        }
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


def local_code(typed_config, wasm_file):
    """What istio-agent does to an ECDS wasm config with remote `oci://` code: fetches the
    image and points Envoy at the local module (here: the --wasm-file)."""
    tc = json.loads(json.dumps(typed_config))
    code = tc["config"]["vm_config"]["code"]
    remote = code.get("remote")
    if remote:
        uri = remote["http_uri"]["uri"]
        if not uri.startswith("oci://"):
            die(f"wasm code {uri}: only oci:// images are rendered")
        if remote.get("sha256") and hashlib.sha256(open(wasm_file, "rb").read()).hexdigest() != remote["sha256"]:
            die(f"wasm code {uri}: sha256 does not match {wasm_file}")
        tc["config"]["vm_config"]["code"] = {"local": {"filename": wasm_file}}
    return tc


def cors_policy(c):
    """A VirtualService corsPolicy as Envoy's CorsPolicy (what istiod generates)."""
    p = {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"}
    origins = []
    for o in c.get("allowOrigins", []):
        (k, v), = o.items()
        origins.append({"safe_regex": {"regex": v}} if k == "regex" else {k: v})
    if origins:
        p["allow_origin_string_match"] = origins
    for src, dst in (("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"), ("exposeHeaders", "expose_headers")):
        if c.get(src):
            p[dst] = ",".join(c[src])
    if "maxAge" in c:
        p["max_age"] = str(int(c["maxAge"].rstrip("s")))
    if "allowCredentials" in c:
        p["allow_credentials"] = c["allowCredentials"]
    if c.get("unmatchedPreflights") == "IGNORE":
        p["forward_not_matching_preflights"] = False
    return p


def covers(match_list, context, port):
    if not match_list:
        return True
    want = {"SIDECAR_OUTBOUND": "CLIENT", "SIDECAR_INBOUND": "SERVER", "GATEWAY": "CLIENT"}[context]
    for m in match_list:
        mode = m.get("mode", "UNDEFINED")
        if mode not in ("UNDEFINED", "CLIENT_AND_SERVER", want):
            continue
        ports = [p["number"] for p in m.get("ports", [])]
        if not ports or port in ports:
            return True
    return False


def http_managers(cfg):
    for lis in cfg["static_resources"].get("listeners", []):
        for chain in lis.get("filter_chains", []):
            for f in chain.get("filters", []):
                if f.get("name") == "envoy.filters.network.http_connection_manager":
                    yield f["typed_config"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("resources", nargs="+")
    p.add_argument("--context", required=True, choices=["SIDECAR_OUTBOUND", "SIDECAR_INBOUND", "GATEWAY"])
    p.add_argument("--labels", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--wasm-file", required=True)
    p.add_argument("--namespace", default="default")
    a = p.parse_args()
    labels = dict(kv.split("=", 1) for kv in a.labels.split(",") if kv)
    cfg = yaml.safe_load(open(a.base, encoding="utf-8"))
    clusters = cfg["static_resources"].setdefault("clusters", [])
    plugins = []
    extensions = {}
    inserts = []
    cors_policies = []
    by_name = {c["name"]: c for c in clusters}
    for path in a.resources:
        for res in yaml.safe_load_all(open(path, encoding="utf-8")):
            if not res:
                continue
            kind = res.get("kind")
            spec = res.get("spec", {})
            if kind == "EnvoyFilter":
                if not selected(spec.get("workloadSelector", {}).get("labels"), labels):
                    continue
                for i, patch in enumerate(spec.get("configPatches", [])):
                    ctx = patch.get("match", {}).get("context", "ANY")
                    if ctx not in ("ANY", a.context):
                        continue
                    op = patch["patch"]["operation"]
                    value = patch["patch"]["value"]
                    what = (patch["applyTo"], op)
                    if what == ("CLUSTER", "ADD"):
                        if any(c["name"] == value["name"] for c in clusters):
                            die(f"{path}: configPatches[{i}]: cluster {value['name']} already exists")
                        clusters.append(value)
                        print(f"EnvoyFilter {res['metadata']['name']}: added cluster {value['name']}")
                    elif what == ("EXTENSION_CONFIG", "ADD"):
                        extensions[value["name"]] = value
                        print(f"EnvoyFilter {res['metadata']['name']}: extension config {value['name']}")
                    elif what == ("HTTP_FILTER", "INSERT_BEFORE"):
                        f = patch["match"].get("listener", {}).get("filterChain", {}).get("filter", {})
                        if f.get("name") != "envoy.filters.network.http_connection_manager" or "subFilter" not in f:
                            die(f"{path}: configPatches[{i}]: only a subFilter of the http_connection_manager is implemented")
                        inserts.append((res["metadata"]["name"], f["subFilter"]["name"], value))
                    else:
                        die(f"{path}: configPatches[{i}]: {patch['applyTo']} {op} is not implemented here")
            elif kind == "DestinationRule":
                host = spec["host"]
                policy = spec.get("trafficPolicy", {})
                settings = [(p["port"]["number"], p["tls"]) for p in policy.get("portLevelSettings", []) if "tls" in p]
                for name, cluster in by_name.items():
                    parts = name.split("|")
                    if len(parts) != 4 or parts[0] != "outbound" or parts[3] != host:
                        continue
                    tls = next((t for port, t in settings if str(port) == parts[1]), policy.get("tls"))
                    if not tls:
                        continue
                    if tls.get("mode") != "SIMPLE":
                        die(f"{path}: DestinationRule {res['metadata']['name']}: tls mode {tls.get('mode')} is not implemented here")
                    validation = {}
                    if tls.get("caCertificates"):
                        validation["trusted_ca"] = {"filename": tls["caCertificates"]}
                    if tls.get("subjectAltNames"):
                        validation["match_typed_subject_alt_names"] = [
                            {"san_type": "DNS", "matcher": {"exact": n}} for n in tls["subjectAltNames"]]
                    ctx = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"}
                    if tls.get("sni"):
                        ctx["sni"] = tls["sni"]
                    if validation:
                        ctx["common_tls_context"] = {"validation_context": validation}
                    cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": ctx}
                    print(f"DestinationRule {res['metadata']['name']}: TLS origination on {name}")
            elif kind == "VirtualService":
                for h in spec.get("http", []):
                    if "corsPolicy" in h:
                        cors_policies.append((res["metadata"]["name"], cors_policy(h["corsPolicy"])))
            elif kind == "WasmPlugin":
                if not selected(spec.get("selector", {}).get("matchLabels"), labels):
                    continue
                if not covers(spec.get("match"), a.context, a.port):
                    continue
                plugins.append(res)
    plugins.sort(key=lambda r: -(r["spec"].get("priority") or 0))
    for hcm in http_managers(cfg):
        chain = hcm["http_filters"]
        for res in plugins:
            phase = res["spec"].get("phase", "UNSPECIFIED_PHASE")
            names = [f["name"] for f in chain]
            anchor = next((i for i, n in enumerate(names) if n in PHASE_ANCHORS[phase]), None)
            if anchor is None:
                die(f"WasmPlugin {res['metadata']['name']}: the base has no filter for phase {phase}")
            # Same phase, higher priority first: after the plugins already placed there.
            chain.insert(anchor, wasm_filter(res, a.namespace, a.wasm_file))
            print(f"WasmPlugin {res['metadata']['name']}: inserted before {names[anchor]}")
    for ef, before, value in inserts:
        if "config_discovery" in value:
            ext = extensions.get(value["name"])
            if ext is None:
                die(f"EnvoyFilter {ef}: no EXTENSION_CONFIG named {value['name']}")
            want = value["config_discovery"].get("type_urls", [])
            if ext["typed_config"]["@type"].split("/")[-1] not in [t.split("/")[-1] for t in want]:
                die(f"EnvoyFilter {ef}: {value['name']} is not of the types {want}")
            value = {"name": value["name"], "typed_config": local_code(ext["typed_config"], a.wasm_file)}
        for hcm in http_managers(cfg):
            chain = hcm["http_filters"]
            names = [f["name"] for f in chain]
            if before not in names:
                die(f"EnvoyFilter {ef}: the base has no {before}")
            chain.insert(names.index(before), value)
            print(f"EnvoyFilter {ef}: inserted {value['name']} before {before}")
    for vs, policy in cors_policies:
        for hcm in http_managers(cfg):
            for vh in hcm["route_config"]["virtual_hosts"]:
                if vh["name"] != vs:
                    continue
                for r in vh["routes"]:
                    r.setdefault("typed_per_filter_config", {})["envoy.filters.http.cors"] = policy
                print(f"VirtualService {vs}: corsPolicy on the routes of {vh['name']}")
    with open(a.out, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
