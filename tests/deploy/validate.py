#!/usr/bin/env python3
"""Validates Veil's deployment manifests offline.

  validate.py istio PATH...     every YAML document under PATH (files or directories)
  validate.py compose FILE [--base DIR]
                                a Compose file against the Compose specification's schema;
                                relative paths in it resolve from DIR (default: its folder)

Istio custom resources are checked against the `openAPIV3Schema` of their kind's served
version in tests/schemas/istio-crds.gen.yaml with a JSON-schema validator (Draft 4, the
dialect OpenAPI 3.0 schemas follow). The schema is closed the way `kubectl apply` with
strict field validation treats it: an object that lists `properties` (and does not say
x-kubernetes-preserve-unknown-fields) accepts no other field, so a misspelt field is an
error rather than silently pruned. CEL rules (x-kubernetes-validations) are not evaluated.

Kubernetes built-ins (Deployment, Service, Secret) and kustomize files have no schema here:
they get structural checks (required fields, references that resolve, the keyservice
container's hardening). Prints one `ok <file> <kind> <name>` line per document; any problem
is printed as `error: ...` and the exit status is 1.
"""
import copy
import json
import os
import re
import sys

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRDS = os.path.join(ROOT, "tests/schemas/istio-crds.gen.yaml")
COMPOSE_SCHEMA = os.path.join(ROOT, "tests/schemas/compose-spec.json")

errors = []


def error(msg):
    errors.append(msg)


def close(schema):
    """A copy of an OpenAPI schema where listed properties are the only ones allowed."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def load_crds():
    crds = {}
    for doc in yaml.safe_load_all(open(CRDS, encoding="utf-8")):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for v in spec["versions"]:
            if v.get("served"):
                key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                crds[key] = close(v["schema"]["openAPIV3Schema"])
    return crds


def yaml_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for d, _, names in sorted(os.walk(p)):
                for n in sorted(names):
                    if n.endswith((".yaml", ".yml")):
                        yield os.path.join(d, n)
        else:
            yield p


def rel(path):
    return os.path.relpath(path, ROOT)


# ---- structural checks for what has no schema here ----

def check_kustomize(path, doc):
    base = os.path.dirname(path)
    for field in ("resources", "components"):
        for r in doc.get(field, []):
            target = os.path.join(base, r)
            if not os.path.exists(target):
                error(f"{rel(path)}: {field}: {r} does not exist")
            elif os.path.isdir(target) and not os.path.exists(os.path.join(target, "kustomization.yaml")):
                error(f"{rel(path)}: {field}: {r} has no kustomization.yaml")
    for i, p in enumerate(doc.get("patches", [])):
        if "path" in p and not os.path.exists(os.path.join(base, p["path"])):
            error(f"{rel(path)}: patches[{i}].path: {p['path']} does not exist")
        if "target" in p and "kind" not in p["target"]:
            error(f"{rel(path)}: patches[{i}].target: no kind")
    want = "Component" if doc["apiVersion"].endswith("v1alpha1") else "Kustomization"
    if doc["kind"] != want:
        error(f"{rel(path)}: {doc['apiVersion']} goes with kind {want}, not {doc['kind']}")


HARDENED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def check_container(where, c, volumes):
    if not c.get("name"):
        error(f"{where}: container without a name")
    for m in c.get("volumeMounts", []):
        if m["name"] not in volumes:
            error(f"{where}: volumeMount {m['name']} names no volume of the pod")
    if c.get("name", "").startswith("veil-"):
        if not c.get("image"):
            error(f"{where}: no image")
        sc = c.get("securityContext", {})
        for k, v in HARDENED.items():
            if sc.get(k) is not v:
                error(f"{where}: securityContext.{k} must be {v}")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            error(f"{where}: securityContext.capabilities.drop must include ALL")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits"):
            error(f"{where}: resources.requests and resources.limits required")
        if c["name"] == "veil-keyservice":
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    error(f"{where}: {probe} required")
            for e in c.get("env", []):
                if "value" in e and any(s in e["name"] for s in ("TOKEN", "SECRET", "PASSWORD")) and not e["name"].endswith("_FILE"):
                    error(f"{where}: env {e['name']}: a secret must come from a Secret, not a literal")


def check_deployment(path, doc, secrets_seen):
    name = doc.get("metadata", {}).get("name")
    where = f"{rel(path)}: Deployment {name}"
    if doc.get("apiVersion") != "apps/v1":
        error(f"{where}: apiVersion must be apps/v1")
    tmpl = doc.get("spec", {}).get("template", {})
    pod = tmpl.get("spec", {})
    labels = tmpl.get("metadata", {}).get("labels", {})
    sel = doc.get("spec", {}).get("selector", {}).get("matchLabels")
    if sel is not None and not all(labels.get(k) == v for k, v in sel.items()):
        error(f"{where}: selector.matchLabels {sel} do not match the pod labels {labels}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "secret" in v:
            secrets_seen.add(("volume", v["secret"]["secretName"], None))
    for kind in ("initContainers", "containers"):
        for c in pod.get(kind, []):
            check_container(f"{where}: {kind} {c.get('name')}", c, volumes)
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets_seen.add(("key", ref["name"], ref["key"]))
    if not pod.get("containers"):
        error(f"{where}: no containers")


def check_service(path, doc):
    where = f"{rel(path)}: Service {doc['metadata']['name']}"
    if not doc.get("spec", {}).get("selector"):
        error(f"{where}: no selector")
    for p in doc.get("spec", {}).get("ports", []):
        if "port" not in p:
            error(f"{where}: a port without `port`")


def istio(paths):
    crds = load_crds()
    secrets = {}
    secrets_seen = set()
    # For the cross-reference checks after the loop.
    docs = []
    for path in yaml_files(paths):
        try:
            loaded = list(yaml.safe_load_all(open(path, encoding="utf-8")))
        except yaml.YAMLError as e:
            error(f"{rel(path)}: not YAML: {e}")
            continue
        for doc in loaded:
            if not doc:
                continue
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            name = doc.get("metadata", {}).get("name", "-")
            docs.append((path, doc))
            n_before = len(errors)
            if (api, kind) in crds:
                v = jsonschema.Draft4Validator(crds[(api, kind)])
                body = {k: doc[k] for k in ("spec",) if k in doc}
                for e in sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path)):
                    where = ".".join(str(p) for p in e.absolute_path)
                    error(f"{rel(path)}: {kind} {name}: {where}: {e.message}")
            elif api.split("/")[0].endswith("istio.io"):
                error(f"{rel(path)}: {kind} {api}: no served version of this kind in the CRDs")
            elif api.startswith("kustomize.config.k8s.io/"):
                check_kustomize(path, doc)
            elif kind == "Deployment":
                check_deployment(path, doc, secrets_seen)
            elif kind == "Service":
                check_service(path, doc)
            elif kind == "Secret" and api == "v1":
                data = {**doc.get("data", {}), **doc.get("stringData", {})}
                secrets[name] = set(data)
            else:
                error(f"{rel(path)}: {api} {kind}: nothing knows how to check this")
            if len(errors) == n_before:
                print(f"ok {rel(path)} {kind} {name}")
    for what, name, key in sorted(secrets_seen, key=str):
        if name not in secrets:
            error(f"Secret {name} is used but no manifest shows its keys")
        elif key is not None and key not in secrets[name]:
            error(f"Secret {name} has no key {key}")


def compose(path, base=None):
    schema = json.load(open(COMPOSE_SCHEMA, encoding="utf-8"))
    text = open(path, encoding="utf-8").read()
    doc = yaml.safe_load(text)
    # Compose interpolates `$NAME` and `${...}` everywhere and refuses any other `$`
    # (write `$$` for a literal one). Comments are not interpolated.
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"\$(?![{$A-Za-z_])", line.replace("$$", "")):
            error(f"{rel(path)}:{lineno}: a `$` compose cannot interpolate: {line.strip()}")
    # The schema says draft-07 (its $schema URL lacks the trailing '#').
    for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in e.absolute_path)
        error(f"{rel(path)}: {where}: {e.message}")
    base = base or os.path.dirname(os.path.abspath(path))
    for name, svc in doc.get("services", {}).items():
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = os.path.join(base, build.get("context", "."))
            df = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(df):
                error(f"{rel(path)}: services.{name}.build: {rel(df)} does not exist")
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")) and not os.path.exists(os.path.join(base, src)):
                # The filter build output is made by `make wasm`; everything else must exist.
                if not src.startswith("./target/"):
                    error(f"{rel(path)}: services.{name}.volumes: {src} does not exist")
        if "image" not in svc and "build" not in svc:
            error(f"{rel(path)}: services.{name}: neither image nor build")
        elif "image" in svc and ":" not in svc["image"].split("/")[-1] and "build" not in svc:
            error(f"{rel(path)}: services.{name}: image {svc['image']} is not pinned to a tag")
    if not errors:
        print(f"ok {rel(path)} compose")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("istio", "compose"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "istio":
        istio(sys.argv[2:])
    else:
        base = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--base" else None
        compose(sys.argv[2], base)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
