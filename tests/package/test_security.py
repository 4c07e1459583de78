"""Security rules checked on the package source: weights only through safetensors (no torch.load, no pickle),
recipes are data (no eval/exec, yaml.safe_load only), and remote code only when the recipe turns it on."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "adapterkit"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{ast.unparse(f.value)}.{f.attr}" if isinstance(f, ast.Attribute) else ""
            yield name, node


def problems_in(source: str) -> list[str]:
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve") for n in names):
                problems.append(f"line {node.lineno}: imports a pickle-based module")
    for name, node in _calls(tree):
        where = f"line {node.lineno}"
        if name in ("eval", "exec", "compile"):
            problems.append(f"{where}: {name}()")
        if name == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant)):
            problems.append(f"{where}: __import__ of a computed name")
        if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(node.func):
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            problems.append(f"{where}: {name} (use yaml.safe_load)")
        for k in node.keywords:
            if k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is True:
                problems.append(f"{where}: trust_remote_code=True hard-coded (it must come from the recipe)")
    return problems


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_source_follows_the_security_rules(path):
    problems = problems_in(path.read_text())
    assert not problems, f"{path.relative_to(PACKAGE)}: " + "; ".join(problems)


def test_the_scan_catches_violations():
    bad = ("import pickle\nimport torch, yaml\ntorch.load('x')\ntorch.load('y', weights_only=True)\neval('1')\n"
           "yaml.load('a')\nf(trust_remote_code=True)\nf(trust_remote_code=cfg.trust_remote_code)\n")
    found = problems_in(bad)
    assert [p.split(":")[0] for p in found] == ["line 1", "line 3", "line 5", "line 6", "line 7"], found


def test_remote_code_is_off_by_default():
    from adapterkit.config import BackboneConfig

    assert BackboneConfig(path="x").trust_remote_code is False
