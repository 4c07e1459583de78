"""The package's shape: imports run one way through the layers, and no module can reach itself through imports.

Every import statement counts, at module level and inside functions alike, so a function-level import cannot
hide an upward dependency or a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "adapterkit"

# Each top-level module or package of adapterkit and its layer: a module may import only from lower layers (or
# from inside its own package). Two packages on one layer do not import each other.
LAYERS = {
    "errors": 0,
    "console": 0,
    "stats": 0,
    "environment": 0,
    "signals": 0,
    "files": 1,
    "lazy": 1,
    "plugins": 1,
    "hub": 1,
    "progress": 1,
    "launch": 1,
    "config": 2,
    "metrics": 3,
    "adapters": 4,
    "heads": 4,
    "model": 5,
    "data": 5,  # independent: data reads and encodes with a tokenizer it is given, never a model
    "runs": 7,
    "scoring": 7,
    "training": 8,
    "inference": 9,
    "deploy": 10,
    "interpolation": 10,
    "tuning": 10,
    "serving": 10,
    "cli": 11,
    "docs": 11,
    "": 11,  # "" is the package root (adapterkit/__init__.py, the public API)
}


def modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports (every import statement, any depth)."""
    edges = {}
    for name, f in mods.items():
        is_pkg = f.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in mods else origin for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t.startswith("adapterkit") and t != name:
                    found.add(t)
        edges[name] = found
    return edges


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan). A package `__init__` importing its own
    submodules to register them is fine as long as no submodule imports the package `__init__` back."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            a, b = top(src), top(dst)
            if a == b and a != "":
                continue  # inside one package
            if b == "":
                bad.append(f"{src} imports the package root (the public API sits on top)")
            elif LAYERS[b] >= LAYERS[a]:
                bad.append(f"{src} (layer {LAYERS[a]}, {a or 'root'}) imports {dst} (layer {LAYERS[b]}, {b})")
    return sorted(bad)


def test_every_module_has_a_layer():
    unknown = sorted({top(m) for m in modules()} - set(LAYERS))
    assert not unknown, f"add these to LAYERS (and to the README's layout): {unknown}"


def test_no_import_cycle():
    found = cycles(imports(modules()))
    assert not found, f"import cycles: {found}"


def test_imports_run_down_the_layers():
    found = violations(imports(modules()))
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_should():
    # The same functions on made-up graphs: a cycle is found, and so is config reaching up into training.
    assert cycles({"adapterkit.a.x": {"adapterkit.a.y"}, "adapterkit.a.y": {"adapterkit.a.x"}}) == [
        ["adapterkit.a.x", "adapterkit.a.y"]
    ]
    assert violations({"adapterkit.config.schema": {"adapterkit.training.loop"}})
    assert violations({"adapterkit.model.assemble": {"adapterkit.runs.rundir"}})
    assert violations({"adapterkit.adapters.lora": {"adapterkit.heads.registry"}})  # same layer, other package
    assert not violations({"adapterkit.training.loop": {"adapterkit.model.assemble", "adapterkit.training.checkpoint"}})


@pytest.mark.parametrize(
    "leaf", ["adapters.registry", "heads.registry", "data.encoders", "data.readers", "deploy.formats"]
)
def test_registries_are_leaves(leaf):
    """Registries import nothing of adapterkit above the errors: users extend them without pulling the package in."""
    edges = imports(modules())
    allowed = {"adapterkit.errors"}
    assert edges[f"adapterkit.{leaf}"] <= allowed, edges[f"adapterkit.{leaf}"]


def test_config_imports_no_registry_and_no_peft():
    """Validating a recipe's structure needs no PEFT and runs no plugin: the schema and its loader import only
    pydantic, YAML and the base layer."""
    for name in ("schema", "load", "__init__"):
        tree = ast.parse((PACKAGE / "config" / f"{name}.py").read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not {m for m in names if m.split(".")[0] in ("peft", "torch", "transformers", "bitsandbytes")}, (
            name,
            names,
        )
