"""Recipe files -> typed `Recipe`: YAML parsing, `--set` overrides, plugins, validation, resolved paths.

Order matters: the YAML is read and the overrides applied, then the plugin modules the recipe names are imported
(so a head or method they register is known), and only then is the recipe validated against the registries."""
from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path
from typing import Any, Collection

import yaml
from pydantic import ValidationError

from .. import console
from ..errors import RecipeError
from ..plugins import import_plugin
from .schema import Recipe, Registries

MAX_DEPTH = 64  # recipes are a few levels of sections, lists and mappings; far deeper is a broken or hostile file


class RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false (any case) are booleans. YAML 1.1 also reads yes/no/on/off as
    booleans, which turned `training.mixed_precision: no` into false; kept as strings, a string key gets the word and
    a boolean key still accepts it (pydantic reads yes/no/on/off as booleans)."""


RecipeLoader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str):
    """Recipe YAML (a file or a --set value) -> Python data; RecursionError for absurdly nested input. What
    yaml.safe_load does, with the SafeLoader subclass above: still no Python objects, only plain data."""
    loader = RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check_values(data, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and non-finite floats (nan, inf) anywhere, naming the key. Iterative:
    a recursive walk would itself overflow on the deep input it is meant to refuse."""
    stack = [(data, "", 0)]
    while stack:
        node, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            key = key if len(key) <= 60 else key[:60] + "..."
            raise RecipeError(f"{source}: {key or 'recipe'}: nested more than {MAX_DEPTH} levels deep; a recipe is a few levels of sections and values")
        if isinstance(node, float) and not math.isfinite(node):
            raise RecipeError(f"{source}: {key or 'recipe'}: {node} is not a finite number")
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in items)


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "recipe_key":  # a section's validator naming one of its keys
        loc, msg = f"{loc}.{first['ctx']['key']}" if loc else first["ctx"]["key"], first["ctx"]["msg"]
    elif first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/recipe-reference.md)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{source}: {loc or 'recipe'}: {msg}{more}"


def apply_override(data: dict, assignment: str) -> None:
    """Apply `a.b.c=value` to a nested dict; the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"--set {assignment!r}: empty key part in {key!r}")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise RecipeError(f"--set {key}: the value is nested more than {MAX_DEPTH} levels deep") from None
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise RecipeError(f"--set {key}: {p!r} is a value, not a section")
        node = node[p]
    node[parts[-1]] = value


def plugin_keys(data: dict) -> list[tuple[str, str]]:
    """(key path, module name) of every plugin a recipe names: `adapter.plugin`, `task.plugin` and each
    `tasks[i].task.plugin`."""
    found = []
    adapter = data.get("adapter")
    if isinstance(adapter, dict) and adapter.get("plugin"):
        found.append(("adapter.plugin", adapter["plugin"]))
    task = data.get("task")
    if isinstance(task, dict) and task.get("plugin"):
        found.append(("task.plugin", task["plugin"]))
    for i, spec in enumerate(data.get("tasks") or []):
        sub = spec.get("task") if isinstance(spec, dict) else None
        if isinstance(sub, dict) and sub.get("plugin"):
            found.append((f"tasks.{i}.task.plugin", sub["plugin"]))
    return found


def recipe_from_dict(data: Any, overrides: list[str] = (), source: str = "recipe", registries: Registries | None = None,
                     allowed_plugins: Collection[str] | None = None) -> Recipe:
    """Validate recipe data. With `registries`, the plugins it names are imported first and method and head
    settings are checked against the registries; without, only the structure is checked. `allowed_plugins` (for
    recipes that are data, like a run folder's): only those modules are imported, any other named one is refused."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping of sections (backbone, adapter, task, data, training, export)")
    check_values(data, source)  # before deepcopy, which recurses
    data = copy.deepcopy(data)
    before = copy.deepcopy(data.get("adapter")) if isinstance(data.get("adapter"), dict) else None
    for o in overrides:
        apply_override(data, o)
    if overrides:
        check_values(data, f"{source} with --set")
    if registries is not None:
        for key, name in plugin_keys(data):
            # A module this process imported already (the training that wrote the run) runs nothing new.
            if isinstance(name, str) and allowed_plugins is not None and name not in allowed_plugins and name not in sys.modules:
                raise RecipeError(f"{source}: {key} names the module {name!r}; a run folder's files never import code on "
                                  f"their own: pass --plugin {name} to this command if you trust it")
            if isinstance(name, str):
                import_plugin(name, key)
        _drop_other_method_settings(data, before, overrides, registries)
    try:
        return Recipe.model_validate(data, context=registries)
    except ValidationError as e:
        raise RecipeError(_format_error(e, source)) from None


GENERIC_ADAPTER_KEYS = ("method", "plugin", "init_from")


def _drop_other_method_settings(data: dict, before: dict | None, overrides, registries: Registries) -> None:
    """`--set adapter.method=X` on a recipe written for another method: the recipe's settings that X does not take
    are dropped, with a note (written in the recipe next to X itself they are still rejected)."""
    adapter = data.get("adapter")
    if not before or not isinstance(adapter, dict) or adapter.get("method") == before.get("method", "lora"):
        return
    if not any(o.split("=", 1)[0].strip() == "adapter.method" for o in overrides):
        return
    method = registries.methods.get(adapter.get("method"))
    if method is None:
        return  # validation names the unknown method
    takes = set(getattr(method.settings, "model_fields", {}))
    own = {k for k in adapter if k not in before or adapter[k] != before[k]}  # keys the overrides set themselves
    dropped = [k for k in before if k not in GENERIC_ADAPTER_KEYS and k not in takes and k not in own]
    extra_ok = getattr(method.settings, "model_config", {}).get("extra") == "allow"  # e.g. `peft`: its keys go to PEFT
    if extra_ok:
        return
    for k in dropped:
        adapter.pop(k, None)
    if dropped:
        console.echo(f"adapterkit: note: --set adapter.method={adapter['method']} drops the recipe's "
              f"{', '.join('adapter.' + k for k in dropped)} ({before.get('method', 'lora')} settings)", err=True)


def load_recipe(path: str | Path, overrides: list[str] = (), registries: Registries | None = None,
                allowed_plugins: Collection[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the recipe as UTF-8") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except RecursionError:  # the YAML parser recurses once per nesting level
        raise RecipeError(f"{path}: nested more than {MAX_DEPTH} levels deep; a recipe is a few levels of sections and values") from None
    return recipe_from_dict(data, overrides, source=str(path), registries=registries, allowed_plugins=allowed_plugins)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_id(path: str) -> bool:
    """`org/name` (or `name`) that is not a local path: a model or data set id on the Hugging Face Hub."""
    return bool(HUB_ID.match(path)) and not Path(path).expanduser().exists() and ".." not in path


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _resolve_data(data) -> None:
    if data.format == "hub":
        return  # split names of a Hub data set, not paths
    if data.name:
        data.name = _absolute(data.name)  # a DatasetDict folder; the splits are names inside it
        return
    for split in ("train", "validation", "test"):
        if getattr(data, split):
            setattr(data, split, _absolute(getattr(data, split)))


def resolve_paths(recipe: Recipe) -> Recipe:
    """Absolute data and model paths, so a saved recipe works from any directory (Hub ids and split names stay)."""
    r = recipe.model_copy(deep=True)
    _resolve_data(r.data)
    if not r.backbone.path.startswith("package:") and not is_hub_id(r.backbone.path):
        r.backbone.path = _absolute(r.backbone.path)
    r.training.output_dir = _absolute(r.training.output_dir)
    for spec in r.tasks or []:
        _resolve_data(spec.data)
    return r


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
