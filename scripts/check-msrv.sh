#!/usr/bin/env bash
# Checks that the declared MSRV is true: every publishable library crate of the workspace
# must declare a `rust-version` at least as high as the highest one among the crates it
# compiles with — its normal and build dependencies, transitively, with all features and
# for every target platform, as resolved by Cargo.lock. Dev-dependencies (tests,
# examples, benches) are reported for information only.
#
#   scripts/check-msrv.sh
#
# A dependency that declares no `rust-version` counts with the first release of its
# edition (2015: 1.0, 2018: 1.31, 2021: 1.56, 2024: 1.85), a lower bound only.
# Needs cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "check-msrv: python3 not found (it reads the output of cargo metadata)" >&2
  exit 1
fi

# --locked: the check is about the versions Cargo.lock pins. A stale lockfile fails here
# with cargo's own message ("the lock file needs to be updated").
metadata="$(cargo metadata --format-version 1 --locked --all-features)"

python3 -c '
import json
import sys

EDITION_FLOOR = {"2015": "1.0", "2018": "1.31", "2021": "1.56", "2024": "1.85"}
LIB_KINDS = {"lib", "rlib", "dylib", "cdylib", "staticlib", "proc-macro"}


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def needs(package):
    """The lowest Rust the package compiles with, as far as its manifest says."""
    if package["rust_version"]:
        return package["rust_version"]
    return EDITION_FLOOR.get(package["edition"], "1.0")


meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
deps = {n["id"]: n["deps"] for n in meta["resolve"]["nodes"]}
members = set(meta["workspace_members"])


def closure(root, kinds):
    """Every package reachable from `root` over edges of the given kinds (None = normal)."""
    seen, stack = set(), [root]
    while stack:
        for dep in deps[stack.pop()]:
            if dep["pkg"] not in seen and any(k["kind"] in kinds for k in dep["dep_kinds"]):
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    return seen


def highest(ids):
    """(version, which packages) for the most demanding non-member packages among `ids`."""
    found = sorted((packages[pid] for pid in ids - members), key=lambda p: (p["name"], p["version"]))
    if not found:
        return "1.0", "no dependencies"
    top = max(version(needs(p)) for p in found)
    at_top = [p for p in found if version(needs(p)) == top]
    first = at_top[0]
    who = "{} {}{}".format(first["name"], first["version"],
                           "" if first["rust_version"] else ", from its edition")
    if len(at_top) > 1:
        who += " and {} more".format(len(at_top) - 1)
    return needs(first), who


libraries = sorted(
    (packages[m] for m in members
     if packages[m]["publish"] != []
     and any(LIB_KINDS & set(t["kind"]) for t in packages[m]["targets"])),
    key=lambda p: p["name"],
)
failed = False
overall = None
for lib in libraries:
    need, source = highest(closure(lib["id"], {None, "build"}))
    if overall is None or version(need) > version(overall[0]):
        overall = (need, source)
    declared = lib["rust_version"]
    ok = declared is not None and version(declared) >= version(need)
    failed |= not ok
    print("{:<20} declares {:<6} needs {:<6} for {}{}".format(
        lib["name"], declared or "none", need, source, "" if ok else "   <-- too low"))

print("MSRV of the libraries: {} ({})".format(*overall))
# Examples, tests and benches also compile the dev-dependencies: the README promises a
# toolchain for the flood demo, so say when they need more than the libraries.
dev = highest(set().union(*(closure(m, {None, "build", "dev"}) for m in members)))
if version(dev[0]) > version(overall[0]):
    print("note: examples, tests and benches need {} ({})".format(*dev))

if failed:
    print("check-msrv: a declared rust-version is lower than what the crate compiles with;"
          " raise rust-version in the root Cargo.toml ([workspace.package]) and the README",
          file=sys.stderr)
    sys.exit(1)
' <<<"$metadata"
