#!/usr/bin/env python3
"""Counts the public items of each library crate, and how many carry an example in their doc
comment (a ``` block). Rough (a line-based read, not rustdoc's), but it does not change between
runs, so a before/after comparison is fair. Usage: scripts/doc-examples.py [crates-dir]"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "crates"
item = re.compile(r'^\s*pub (async fn|fn|struct|enum|trait|type|const|static|mod) (\w+)')
totals = [0, 0]
for crate in sorted(os.listdir(root)):
    src = os.path.join(root, crate, "src")
    if not os.path.isdir(src):
        continue
    n = ex = 0
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            doc, fence = [], False
            for line in open(os.path.join(d, f), encoding="utf-8"):
                s = line.strip()
                if s.startswith("///"):
                    doc.append(s)
                    continue
                if s.startswith("#[") or s == "":
                    if s == "":
                        doc = []
                    continue
                m = item.match(line)
                if m and m.group(1) != "mod":
                    n += 1
                    if any(l.startswith("/// ```") for l in doc):
                        ex += 1
                doc = []
    totals[0] += n
    totals[1] += ex
    print(f"{crate:20} {ex:4} of {n:4} public items have an example")
print(f"{'total':20} {totals[1]:4} of {totals[0]:4}")
