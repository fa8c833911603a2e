#!/usr/bin/env python3
"""Static checks of docker/*.Dockerfile, or of the Dockerfiles named on the command line
(there is no Docker engine here to build them).

For each Dockerfile (build context: the repository root):
- every base image is pinned to a tag (no `latest`, no bare name); the Rust builder's tag
  is the toolchain rust-toolchain.toml pins;
- every COPY/ADD source from the context exists and is not excluded by .dockerignore;
- every `cargo build -p PKG [--bin BIN]` names a workspace package (and one of its bins),
  per `cargo metadata`; with `--locked`, Cargo.lock must be up to date with the manifests
  (else that build fails);
- the final stage runs as a non-root USER, except the wasm image, whose final stage must
  be `FROM scratch` holding exactly /plugin.wasm (what Istio's WasmPlugin takes).
Prints `ok <file>` per Dockerfile; problems as `error: ...`, exit status 1.
"""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def instructions(text):
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        op, _, rest = cur.partition(" ")
        lines.append((op.upper(), rest.strip()))
        cur = ""
    return lines


def main():
    errors = []
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    host = re.search(r"^host: (\S+)", subprocess.run(
        ["rustc", "-vV"], cwd=ROOT, check=True, capture_output=True, text=True).stdout, re.M).group(1)
    # Resolves the whole graph against Cargo.lock without changing it (may fetch manifests
    # of the host's packages from crates.io, as the build would).
    locked = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host],
        cwd=ROOT, capture_output=True, text=True)
    bins = {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in meta["packages"]}
    toolchain = re.search(r'channel\s*=\s*"([^"]+)"', open(os.path.join(ROOT, "rust-toolchain.toml")).read()).group(1)
    ignored = [l.strip().rstrip("/") for l in open(os.path.join(ROOT, ".dockerignore"))
               if l.strip() and not l.startswith("#")]
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "docker", "*.Dockerfile")))
    if not files:
        errors.append("no docker/*.Dockerfile")
    for path in files:
        rel = os.path.relpath(path, ROOT)
        n = len(errors)
        ins = instructions(open(path, encoding="utf-8").read())
        stages, final = [], None
        for op, rest in ins:
            if op == "FROM":
                words = rest.split()
                image = words[0]
                if len(words) >= 3 and words[1].upper() == "AS":
                    stages.append(words[2])
                final = {"image": image, "user": None, "copies": []}
                if image != "scratch" and image not in stages:
                    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
                    if not tag or tag == "latest":
                        errors.append(f"{rel}: FROM {image}: pin a tag")
                    if name.endswith("rust") and not tag.startswith(toolchain + "-") and tag != toolchain:
                        errors.append(f"{rel}: FROM {image}: rust-toolchain.toml pins {toolchain}")
            elif op in ("COPY", "ADD"):
                args = shlex.split(rest)
                flags = [a for a in args if a.startswith("--")]
                paths = [a for a in args if not a.startswith("--")]
                srcs, dst = paths[:-1], paths[-1]
                final["copies"].append(dst)
                if any(f.startswith("--from") for f in flags):
                    continue
                for s in srcs:
                    if s == ".":
                        continue
                    if not os.path.exists(os.path.join(ROOT, s)):
                        errors.append(f"{rel}: {op} {s}: not in the build context")
                    elif s.strip("./").split("/")[0] in ignored:
                        errors.append(f"{rel}: {op} {s}: excluded by .dockerignore")
            elif op == "USER":
                final["user"] = rest
            elif op == "RUN":
                for m in re.finditer(r"cargo build([^&;|]*)", rest):
                    words = m.group(1).split()
                    if "--locked" in words and locked.returncode != 0:
                        errors.append(f"{rel}: cargo build --locked: Cargo.lock is not up to date "
                                      f"({locked.stderr.strip().splitlines()[-1] if locked.stderr.strip() else 'cargo metadata --locked failed'})")
                    pkg = words[words.index("-p") + 1] if "-p" in words else None
                    if pkg not in bins:
                        errors.append(f"{rel}: cargo build -p {pkg}: no such workspace package")
                        continue
                    if "--bin" in words and words[words.index("--bin") + 1] not in bins[pkg]:
                        errors.append(f"{rel}: --bin {words[words.index('--bin') + 1]}: {pkg} has bins {sorted(bins[pkg])}")
        if final is None:
            errors.append(f"{rel}: no FROM")
        elif final["image"] == "scratch":
            if final["copies"] != ["/plugin.wasm"]:
                errors.append(f"{rel}: a scratch image must hold exactly /plugin.wasm, has {final['copies']}")
        elif final["user"] in (None, "root", "0", "0:0"):
            errors.append(f"{rel}: the final stage must set a non-root USER")
        if len(errors) == n:
            print(f"ok {rel}")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
