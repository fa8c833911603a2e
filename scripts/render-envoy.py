#!/usr/bin/env python3
"""Fills the ${VEIL_...} placeholders of an Envoy config template from the environment.

Usage: render-envoy.py TEMPLATE OUTPUT
Every placeholder must have a value: a missing one is an error naming it.
"""
import os
import re
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: render-envoy.py TEMPLATE OUTPUT", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src, encoding="utf-8").read()
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
