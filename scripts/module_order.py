#!/usr/bin/env python3
"""Which top-level modules of src/ use which (issue 20 item 4: no cycles in the core).

Reads every `crate::x` path outside comments (and `crate::Item` for items lib.rs
re-exports, counted as their module), prints each module's dependencies, and
lists every edge that goes against the core order below (exit status 1 if any).

Run: scripts/module_order.py [--all]   (--all: every edge, not just the order's)
"""

import pathlib
import re
import sys

# The order (issue 20 item 4): a module may use only those of earlier ranks;
# modules of one rank do not use each other, except the surfaces of the last
# rank (without a cycle). Leaves that use nothing of the
# crate (events, logging) and the binary's own files are not ranked.
ORDER = [
    ("config",),
    ("state",),
    ("scheduler",),
    ("snapshot",),
    ("proxy", "health", "dns", "lookup"),
    ("control",),
    # Fleet mode routes changes through etcd before the controller applies
    # them: beside the controller, below the handle that sends changes to it.
    ("fleet",),
    ("balancer",),
    ("ops",),
    ("admin", "ssh"),
]
RANK = {m: i for i, group in enumerate(ORDER) for m in group}

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def modules():
    for p in sorted(SRC.iterdir()):
        if p.name in ("lib.rs", "main.rs"):
            continue
        if p.is_dir():
            yield p.name, sorted(p.rglob("*.rs"))
        elif p.suffix == ".rs":
            yield p.stem, [p]


def root_reexports(names):
    """Item name -> module, for `pub use module::{...}` in lib.rs."""
    text = (SRC / "lib.rs").read_text()
    out = {}
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+);", text, re.S):
        module, items = m.group(1), m.group(2)
        if module not in names:
            continue
        for item in items.strip("{}").split(","):
            item = item.strip()
            if item:
                out[item.split(" as ")[-1].strip()] = module
    return out


def code(text):
    """The text without comments (line comments and doc comments)."""
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def main():
    mods = dict(modules())
    items = root_reexports(mods)
    deps = {}
    for name, files in mods.items():
        used = {}
        for f in files:
            for m in re.finditer(r"\bcrate::(\w+)", code(f.read_text())):
                target = items.get(m.group(1), m.group(1))
                if target in mods and target != name:
                    used.setdefault(target, set()).add(str(f.relative_to(SRC.parent)))
        deps[name] = used
    everything = "--all" in sys.argv
    for name in sorted(deps, key=lambda n: (RANK.get(n, 99), n)):
        if everything or name in RANK:
            shown = sorted(deps[name], key=lambda n: (RANK.get(n, 99), n))
            print(f"{name}: {', '.join(shown)}")
    bad = []
    for name, used in deps.items():
        for target, files in used.items():
            if name not in RANK or target not in RANK:
                continue
            same = RANK[target] == RANK[name] and RANK[name] < len(ORDER) - 1
            if RANK[target] > RANK[name] or same:
                bad.append((name, target, sorted(files)))
    cycles = sorted(
        (a, b) for a in deps for b in deps[a] if a < b and a in deps.get(b, {})
    )
    print()
    for name, target, files in sorted(bad, key=lambda b: (RANK[b[0]], b[0], b[1])):
        print(f"against the order: {name} -> {target} ({', '.join(files)})")
    for a, b in cycles:
        print(f"cycle: {a} <-> {b}")
    unranked = sorted(n for n in deps if n not in RANK and deps[n])
    if unranked:
        print(f"not ranked (not checked): {', '.join(unranked)}")
    if not bad and not cycles:
        print("no edge against the order, no cycle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
