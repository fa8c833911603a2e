#!/usr/bin/env python3
"""Fills the ${VEIL_...} placeholders of an Envoy config template from the environment.

Usage: render-envoy.py TEMPLATE OUTPUT
Every placeholder must have a value: a missing one is an error naming it.
VEIL_FILTER_CONFIG may instead come from a JSON file named by VEIL_FILTER_CONFIG_FILE; it is
validated as JSON and compacted to one line (the template quotes it as a YAML string).
VEIL_FILTER=wasm|native (default wasm) keeps that shell's block of the template (the lines
from `# veil-filter: <shell>` to the next `# veil-filter:` marker) and drops the others, so
only the chosen shell's placeholders (VEIL_WASM or VEIL_NATIVE_MODULE) need values.
"""
import json
import os
import re
import sys


MARKER = re.compile(r"^\s*# veil-filter: (\w+)")


def select_shell(text: str, shell: str) -> str:
    """Keeps the `# veil-filter: <shell>` block, drops the other shells' blocks and markers."""
    out, keep = [], True
    for line in text.splitlines(keepends=True):
        m = MARKER.match(line)
        if m:
            keep = m.group(1) in (shell, "end")
            continue
        if keep:
            out.append(line)
    return "".join(out)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: render-envoy.py TEMPLATE OUTPUT", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src, encoding="utf-8").read()
    shell = os.environ.get("VEIL_FILTER") or "wasm"
    if shell not in ("wasm", "native"):
        print(f"error: VEIL_FILTER={shell!r}: wasm or native", file=sys.stderr)
        return 1
    text = select_shell(text, shell)
    cfg_file = os.environ.get("VEIL_FILTER_CONFIG_FILE")
    if cfg_file and "VEIL_FILTER_CONFIG" not in os.environ:
        try:
            cfg = json.load(open(cfg_file, encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"error: {cfg_file}: {e}", file=sys.stderr)
            return 1
        # Single-quoted YAML string: a quote is written twice.
        os.environ["VEIL_FILTER_CONFIG"] = json.dumps(cfg, separators=(",", ":")).replace("'", "''")
    missing = sorted({m for m in re.findall(r"\$\{(VEIL_[A-Z0-9_]+)\}", text) if m not in os.environ})
    if missing:
        print(f"error: {src}: no value for {', '.join(missing)}", file=sys.stderr)
        return 1
    out = re.sub(r"\$\{(VEIL_[A-Z0-9_]+)\}", lambda m: os.environ[m.group(1)], text)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(out)
    os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
