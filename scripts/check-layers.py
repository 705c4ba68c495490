#!/usr/bin/env python3
"""Checks that a crate's modules import each other without circles.

Reads every `crate::...` and `super::...` path in SRC (default loadgen/src), resolves
it to the module file it names, and reports any cycle among files and among top-level
layers (config, engine, scenario, ...). A module declaring its children (`mod x;`) is
containment, not an import. Test modules (`#[cfg(test)]` to the end of a file) are left
out: they may reach across layers to build fixtures.

Usage: scripts/check-layers.py [SRC] [--layers]   exit 0: no cycle, 1: cycles printed
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
src = os.path.normpath(args[0] if args else os.path.join(os.path.dirname(__file__), "..", "loadgen", "src"))
show_layers = "--layers" in sys.argv


def module_of(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    return tuple(rel)


files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[module_of(p)] = os.path.relpath(p, src)
            if os.path.relpath(p, src) == "main.rs":
                files[("<main>",)] = "main.rs"


def resolve(parts):
    """Longest prefix of `parts` that is a module file."""
    for i in range(len(parts), 0, -1):
        if tuple(parts[:i]) in files:
            return tuple(parts[:i])
    return ()


PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}", re.S)
edges = {}
for mod, rel in files.items():
    text = open(os.path.join(src, rel), encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    text = re.sub(r"//[^\n]*", "", text)
    targets = set()

    def add(kind, tail):
        # `super` is the parent of this module, whether it is `x.rs` or `x/mod.rs`.
        base = [] if kind == "crate" else list(mod[:-1])
        parts = base + [t for t in tail.split("::") if t]
        t = resolve(parts)
        if t and t != mod:
            targets.add(t)

    for m in GROUP.finditer(text):
        kind, head = m.group(1), m.group(2)
        for item in m.group(3).split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                add(kind, head + "::" + item.split("::{")[0])
            elif item == "self":
                add(kind, head)
    for m in PATH.finditer(GROUP.sub("", text)):
        add(m.group(1), m.group(2))
    edges[mod] = targets


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def name(m):
    return "::".join(m) or "lib"


layer = lambda m: m[0] if m else "lib"
layers = {}
for a, ts in edges.items():
    for b in ts:
        if layer(a) != layer(b):
            layers.setdefault(layer(a), set()).add(layer(b))

bad = 0
for comp in cycles(edges):
    bad += 1
    print("import circle among files: " + ", ".join(files[m] for m in comp))
for comp in cycles(layers):
    bad += 1
    print("import circle among layers: " + ", ".join(comp))
if show_layers or bad == 0:
    for a in sorted(layers):
        print(f"{a} -> {', '.join(sorted(layers[a]))}")
print(f"{len(files)} files, {sum(len(t) for t in edges.values())} imports between modules: "
      + ("no circles" if bad == 0 else f"{bad} circle(s)"))
sys.exit(1 if bad else 0)
