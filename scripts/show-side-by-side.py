#!/usr/bin/env python3
"""Prints what the client sent next to what the upstream received, one JSON line per row.

Usage: show-side-by-side.py SENT.json RECEIVED.json
Long sealed values are shortened in the middle so both columns fit the terminal.
"""
import json
import shutil
import sys


def lines(doc):
    return json.dumps(doc, indent=2, ensure_ascii=False).splitlines()


def fit(s, width):
    if len(s) <= width:
        return s.ljust(width)
    keep = width - 1
    return s[: keep - 12] + "…" + s[-12:]


def main():
    sent = json.load(open(sys.argv[1], encoding="utf-8"))
    received = json.load(open(sys.argv[2], encoding="utf-8"))
    total = max(shutil.get_terminal_size((160, 40)).columns, 100)
    width = (total - 3) // 2
    left, right = lines(sent), lines(received)
    print(fit("what the client sent", width) + " │ " + "what the vendor received")
    print("─" * width + "─┼─" + "─" * width)
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        print(fit(a, width) + " │ " + fit(b, width).rstrip())


if __name__ == "__main__":
    main()
