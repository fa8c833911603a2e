#!/usr/bin/env python3
"""Validates Veil's deployment manifests offline.

  validate.py istio PATH...     every YAML document under PATH (files or directories)
  validate.py render DIR        prints what `kubectl apply -k DIR` would apply (the subset of
                                kustomize used here: resources, components, patches)
  validate.py compose FILE [--base DIR]
                                a Compose file against the Compose specification's schema,
                                interpolated from the environment as compose does (so
                                VEIL_FILTER=native checks the native variant); relative paths
                                in it resolve from DIR (default: its folder)

Istio custom resources are checked against the `openAPIV3Schema` of their kind's served
version in tests/schemas/istio-crds.gen.yaml with a JSON-schema validator (Draft 4, the
dialect OpenAPI 3.0 schemas follow). The schema is closed the way `kubectl apply` with
strict field validation treats it: an object that lists `properties` (and does not say
x-kubernetes-preserve-unknown-fields) accepts no other field, so a misspelt field is an
error rather than silently pruned. CEL rules (x-kubernetes-validations) are not evaluated.

Kubernetes built-ins (Deployment, Service, Secret, ServiceAccount) are validated against
Kubernetes' own OpenAPI schemas as JSON schemas, strict (unknown fields are errors), from the
`kubernetes-validate` package (K8S_VERSION below), plus structural checks (references that
resolve, the keyservice container's hardening). Strategic-merge patch files (named by a
kustomization's `patches`) are partial objects: they are checked after being merged, as
`kubectl apply -k` would: every Kustomization under the paths is rendered (its resources,
then its components' resources and patches, merged the strategic way: maps key by key, lists
of named objects by `name`, other lists replaced) and each Deployment of the result goes
through the same checks. Prints one `ok <file> <kind> <name>` line per document and one
`rendered <kustomization> <kind> <name>` line per rendered object; any problem is printed as
`error: ...` and the exit status is 1.
"""
import copy
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate.utils as k8s
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRDS = os.path.join(ROOT, "tests/schemas/istio-crds.gen.yaml")
COMPOSE_SCHEMA = os.path.join(ROOT, "tests/schemas/compose-spec.json")

errors = []

# The Kubernetes version whose schemas the core types are checked against.
K8S_VERSION = "1.33"
CORE_KINDS = {"Deployment", "Service", "Secret", "ServiceAccount"}


def check_core(where, doc):
    """A Kubernetes built-in against its published schema (strict)."""
    try:
        k8s.validate(doc, K8S_VERSION, strict=True)
    except k8s.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path)
        error(f"{where}: {path}: {e.message}")
    except Exception as e:  # unknown kind/version
        error(f"{where}: {e}")


def merge(base, patch):
    """Strategic merge, the subset used here: maps merge key by key, lists of maps that all
    have a `name` merge by name, any other value is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    named = lambda l: isinstance(l, list) and all(isinstance(x, dict) and "name" in x for x in l)
    if named(base) and named(patch):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            i = next((i for i, x in enumerate(out) if x["name"] == p["name"]), None)
            if i is None:
                out.append(copy.deepcopy(p))
            else:
                out[i] = merge(out[i], p)
        return out
    return copy.deepcopy(patch)


def label_selected(selector, labels):
    for term in (selector or "").split(","):
        if term and "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
    return True


def render(kdir, seen=None):
    """The objects `kubectl apply -k kdir` would apply (the subset of kustomize used here)."""
    seen = seen or set()
    if kdir in seen:
        error(f"{rel(kdir)}: kustomization cycle")
        return []
    seen = seen | {kdir}
    k = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml"), encoding="utf-8"))
    objs = []
    for r in k.get("resources", []):
        p = os.path.join(kdir, r)
        if os.path.isdir(p):
            objs += render(p, seen)
        elif os.path.isfile(p):
            objs += [d for d in yaml.safe_load_all(open(p, encoding="utf-8")) if d]
    for c in k.get("components", []):
        cdir = os.path.join(kdir, c)
        if not os.path.isfile(os.path.join(cdir, "kustomization.yaml")):
            continue
        comp = yaml.safe_load(open(os.path.join(cdir, "kustomization.yaml"), encoding="utf-8"))
        for r in comp.get("resources", []):
            objs += [d for d in yaml.safe_load_all(open(os.path.join(cdir, r), encoding="utf-8")) if d]
        objs = apply_patches(cdir, comp, objs)
    objs = apply_patches(kdir, k, objs)
    if k.get("namespace"):
        for o in objs:
            o.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objs


def apply_patches(kdir, k, objs):
    for p in k.get("patches", []):
        if "path" not in p or not os.path.isfile(os.path.join(kdir, p["path"])):
            continue
        patch = yaml.safe_load(open(os.path.join(kdir, p["path"]), encoding="utf-8"))
        t = p.get("target", {})
        out = []
        for o in objs:
            labels = o.get("metadata", {}).get("labels", {})
            if o.get("kind") == t.get("kind") and label_selected(t.get("labelSelector"), labels):
                name = o["metadata"]["name"]
                o = merge(o, patch)
                o["metadata"]["name"] = name
            out.append(o)
        objs = out
    return objs


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


def patch_files(paths):
    """Files named by some kustomization's `patches[].path`: partial objects."""
    out = set()
    for path in yaml_files(paths):
        if os.path.basename(path) != "kustomization.yaml":
            continue
        k = yaml.safe_load(open(path, encoding="utf-8")) or {}
        for p in k.get("patches", []):
            if "path" in p:
                out.add(os.path.normpath(os.path.join(os.path.dirname(path), p["path"])))
    return out


def istio(paths):
    crds = load_crds()
    secrets = {}
    secrets_seen = set()
    patches = patch_files(paths)
    kustomizations = []
    # For the cross-reference checks after the loop.
    docs = []
    for path in yaml_files(paths):
        if os.path.normpath(path) in patches:
            print(f"patch {rel(path)}")
            continue
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
                if doc.get("kind") == "Kustomization":
                    kustomizations.append(os.path.dirname(path))
            elif kind == "Deployment":
                check_core(f"{rel(path)}: Deployment {name}", doc)
                check_deployment(path, doc, secrets_seen)
            elif kind == "Service":
                check_core(f"{rel(path)}: Service {name}", doc)
                check_service(path, doc)
            elif kind == "ServiceAccount" and api == "v1":
                check_core(f"{rel(path)}: ServiceAccount {name}", doc)
            elif kind == "Secret" and api == "v1":
                check_core(f"{rel(path)}: Secret {name}", doc)
                data = {**doc.get("data", {}), **doc.get("stringData", {})}
                secrets[name] = set(data)
            else:
                error(f"{rel(path)}: {api} {kind}: nothing knows how to check this")
            if len(errors) == n_before:
                print(f"ok {rel(path)} {kind} {name}")
    # What `kubectl apply -k` of each Kustomization would apply, patches merged.
    for kdir in kustomizations:
        for o in render(kdir):
            kind, name = o.get("kind"), o.get("metadata", {}).get("name")
            where = f"{rel(kdir)} (rendered)"
            n_before = len(errors)
            if kind in CORE_KINDS:
                check_core(f"{where}: {kind} {name}", o)
            if kind == "Deployment":
                check_deployment(os.path.join(kdir, "kustomization.yaml"), o, secrets_seen)
                pod = o["spec"]["template"]["spec"]
                if pod.get("serviceAccountName") and not any(
                    x.get("kind") == "ServiceAccount" and x["metadata"]["name"] == pod["serviceAccountName"]
                    for x in render(kdir)
                ):
                    error(f"{where}: Deployment {name}: ServiceAccount {pod['serviceAccountName']} is not deployed")
            if len(errors) == n_before:
                print(f"rendered {rel(kdir)} {kind} {name}")
    for what, name, key in sorted(secrets_seen, key=str):
        if name not in secrets:
            error(f"Secret {name} is used but no manifest shows its keys")
        elif key is not None and key not in secrets[name]:
            error(f"Secret {name} has no key {key}")


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(line):
    """Compose's interpolation of one line from this process's environment:
    `${V:-default}`, `${V-default}`, `${V}`; a required `${V:?message}` that is unset becomes
    `<V>` (compose refuses to start without it, which is the point of `:?`)."""
    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        val = os.environ.get(name)
        if op == ":-":
            return val if val else arg
        if op == "-":
            return arg if val is None else val
        if op in (":?", "?"):
            return f"<{name}>" if val is None or (op == ":?" and not val) else val
        return val or ""
    return INTERPOLATION.sub(sub, line).replace("$$", "$")


def compose(path, base=None):
    schema = json.load(open(COMPOSE_SCHEMA, encoding="utf-8"))
    text = open(path, encoding="utf-8").read()
    # Compose interpolates `$NAME` and `${...}` everywhere and refuses any other `$`
    # (write `$$` for a literal one). Comments are not interpolated.
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"\$(?![{$A-Za-z_])", line.replace("$$", "")):
            error(f"{rel(path)}:{lineno}: a `$` compose cannot interpolate: {line.strip()}")
        lines.append(interpolate(line))
    # What compose would run with this environment (VEIL_FILTER picks the Envoy image and
    # config): the paths below are checked after interpolation.
    doc = yaml.safe_load("\n".join(lines))
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
                # Build output (./target/…) is made by cargo; everything else must exist.
                if not src.startswith("./target/"):
                    error(f"{rel(path)}: services.{name}.volumes: {src} does not exist")
        if "image" not in svc and "build" not in svc:
            error(f"{rel(path)}: services.{name}: neither image nor build")
        elif "image" in svc and ":" not in svc["image"].split("/")[-1] and "build" not in svc:
            error(f"{rel(path)}: services.{name}: image {svc['image']} is not pinned to a tag")
    if not errors:
        print(f"ok {rel(path)} compose")


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("istio", "compose", "render"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "render":
        yaml.safe_dump_all(render(os.path.abspath(sys.argv[2])), sys.stdout, sort_keys=False)
    elif sys.argv[1] == "istio":
        istio(sys.argv[2:])
    else:
        base = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--base" else None
        compose(sys.argv[2], base)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
