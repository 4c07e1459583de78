"""The recipe reference is generated from the config classes and registries; the committed file must match."""
import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from adapterkit import docs
from adapterkit.config.schema import DEFAULT_LR, DEFAULT_WARMUP
from adapterkit.adapters import BUILTIN_METHODS, METHODS
from adapterkit.config import Recipe
from adapterkit.heads import BUILTIN_HEADS, HEADS


def _sections(ann):
    """The pydantic model inside a section annotation (Model, list[Model], Model | None), and whether it is a list."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    for a in typing.get_args(ann):
        model, many = _sections(a)
        if model is not None:
            return model, many or typing.get_origin(ann) is list
    return None, False


def _paths(ann, prefix):
    model, many = _sections(ann)
    for name, f in model.model_fields.items():
        sub, sub_many = _sections(f.annotation)
        if sub is not None and not sub_many and isinstance(f.annotation, type):
            yield from _paths(f.annotation, f"{prefix}{name}.")
            continue
        yield f"{prefix}{name}", f
        if sub is not None:
            yield from _paths(f.annotation, f"{prefix}{name}[].")


def test_committed_reference_is_current():
    # A fresh process: other tests register extra methods/heads in this one, and the file lists the built-ins.
    out = subprocess.run([sys.executable, "-m", "adapterkit.docs", "--check"], capture_output=True, text=True)
    assert out.returncode == 0, f"docs/recipe-reference.md is stale; run `python -m adapterkit.docs`\n{out.stderr[-500:]}"


@pytest.mark.slow
def test_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "ref.md"
    stale.write_text(docs.render().replace("| `training.lr` |", "| `training.learning_rate` |"))
    out = subprocess.run([sys.executable, "-m", "adapterkit.docs", "--check", "--out", str(stale)], capture_output=True, text=True)
    assert out.returncode == 1 and "stale" in out.stderr
    assert subprocess.run([sys.executable, "-m", "adapterkit.docs", "--out", str(stale)], capture_output=True).returncode == 0
    assert stale.read_text() == docs.render()


def test_every_key_type_and_default_is_documented():
    text = docs.render()
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0].strip("| `"), line)  # first: the key tables come before the task-type table
    for path, field in _paths(Recipe, ""):
        assert path in rows, f"{path} missing from the reference"
        row = rows[path]
        if field.description:
            assert " ".join(field.description.split()).replace("|", "\\|") in row
        if not field.is_required() and field.default is not None and not isinstance(field.default, bool) and field.default_factory is None:
            assert f"`{field.default}`" in row, (path, row)
    assert "| `training.lr` | float \\| null (> 0) | null |" in text
    assert "| `backbone.path` | str | **required** |" in text
    assert {"lora", "full", "bottleneck"} <= BUILTIN_METHODS and {"causal_lm", "regression"} <= BUILTIN_HEADS
    for name, method in ((n, METHODS[n]) for n in sorted(BUILTIN_METHODS)):  # plugins document themselves
        assert f"#### `method: {name}`" in text
        section = text.split(f"#### `method: {name}`")[1].split("####")[0]
        warmup = DEFAULT_WARMUP if method.default_warmup is None else method.default_warmup
        assert f"`training.lr`: `{method.default_lr or DEFAULT_LR:g}`, `training.warmup_ratio`: `{warmup:g}`" in section, name
        for key in method.settings.model_fields:
            assert f"| `adapter.{key}` |" in section, (name, key)
    for name, head in ((n, HEADS[n]) for n in sorted(BUILTIN_HEADS)):
        assert f"| `{name}` |" in text
        settings = head.settings
        for key in (settings.model_fields if settings else {}):
            section = text.split(f"#### `type: {name}`")[1].split("####")[0]
            assert f"| `task.{key}` |" in section or f"| `task.{key}." in section, (name, key)  # a nested section: its keys, dotted
