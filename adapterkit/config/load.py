"""Recipe files -> typed `Recipe`: YAML parsing, `--set` overrides, plugins, validation, resolved paths.

Order matters: the YAML is read and the overrides applied, then the plugin modules the recipe names are imported
(so a head or method they register is known), and only then is the recipe validated against the registries."""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .. import console
from ..errors import RecipeError
from ..plugins import import_plugin
from .schema import AdapterConfig, Recipe, Registries, TaskConfig, _model_in

MAX_DEPTH = 64  # recipes are a few levels of sections, lists and mappings; far deeper is a broken or hostile file


# Extra values that YAML aliases (*name) may add when expanded: a recipe repeats a section or two; a billion-laughs
# file (nested anchors, each alias repeating the last) expands 800 bytes into billions of values, which every walk
# over the data (these checks, validation, copying) would visit.
MAX_ALIAS_VALUES = 100_000


class RecipeLoader(yaml.SafeLoader):
    """YAML with the YAML 1.2 core schema's scalars: null, true/false (any case), decimal, 0o octal and 0x hex
    integers, and floats with or without a dot (1e-4); everything else is a string. PyYAML's YAML 1.1 rules read
    `1:30` as the sexagesimal 90, `010` as octal 8, yes/no/on/off as booleans (`training.mixed_precision: no` became
    false) and 2024-01-01 as a date. A string key still accepts yes/no/on/off as words, a boolean key as booleans
    (pydantic reads them so). Merge keys (`<<: *defaults`) are kept."""

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        digits, sign = text.lstrip("+-"), -1 if text.startswith("-") else 1
        try:
            if digits[:2] in ("0o", "0x"):
                return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
            return int(text, 10)  # `010` is 10, as YAML 1.2 says, not octal 8
        except ValueError:  # e.g. more digits than Python converts (4300)
            raise yaml.constructor.ConstructorError(
                None, None, f"integer {text[:20]}... has too many digits", node.start_mark
            ) from None


_YAML12 = {  # tag -> (regex, first characters), YAML 1.2.2 section 10.3.2 (core schema)
    "tag:yaml.org,2002:bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    "tag:yaml.org,2002:int": (r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    "tag:yaml.org,2002:float": (
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
}
# YAML 1.1's bool, int, float, timestamp and `=` (value) resolvers out; null and merge (<<) stay.
RecipeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag.rsplit(":", 1)[1] in ("null", "merge")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, (_rx, _first) in _YAML12.items():  # int before float: `10` matches both
    RecipeLoader.add_implicit_resolver(_tag, re.compile(_rx), list(_first))
RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_yaml_int)


class RecipeDumper(yaml.SafeDumper):
    """yaml.safe_dump that also quotes the strings YAML 1.2 reads as numbers (`1e5`, `0o7`), so a saved recipe reads
    back the same with RecipeLoader and with YAML 1.1 readers."""


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
    RecipeDumper.add_implicit_resolver(_tag, re.compile(_YAML12[_tag][0]), list(_YAML12[_tag][1]))


def dump_yaml(data) -> str:
    return yaml.dump(data, Dumper=RecipeDumper, sort_keys=False)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _duplicate_key(node) -> yaml.ScalarNode | None:
    """The second of two equal keys written in one mapping (merge keys `<<` aside): YAML readers keep the last one,
    so a second `training:` section silently replaced the first."""
    seen = set()
    for k, _ in node.value:
        if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
            if (k.tag, k.value) in seen:
                return k
            seen.add((k.tag, k.value))
    return None


def check_node_graph(root, source: str) -> None:
    """Refuse a node graph whose aliases would expand it by more than MAX_ALIAS_VALUES values, or that contains
    itself, counted on the graph without expanding it (each node's expanded size once, iteratively); and a key
    written twice in one mapping."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode) and not leaving and key not in size:
            dup = _duplicate_key(node)
            if dup is not None:
                shown = dup.value if len(dup.value) <= 40 else dup.value[:40] + "..."
                raise RecipeError(
                    f"{source}: line {dup.start_mark.line + 1}: the key {shown!r} appears twice in one mapping "
                    f"(the second would silently replace the first); merge them into one"
                )
        if leaving:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] - len(size) > MAX_ALIAS_VALUES:  # the part expanded so far already adds more than the limit
                raise RecipeError(
                    f"{source}: YAML aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} extra values; "
                    f"a recipe repeats a few sections at most (is this an alias bomb?)"
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise RecipeError(
                f"{source}: a YAML alias (*name) refers to a value that contains it; recursive data is not allowed"
            )
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def parse_yaml(text: str, source: str = "YAML"):
    """Recipe YAML (a file, a --set value, a search space) -> Python data; RecursionError for absurdly nested input,
    RecipeError naming `source` for alias bombs and keys written twice. What yaml.safe_load does, with the SafeLoader
    subclass above: still no Python objects, only plain data."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_node_graph(node, source)  # before anything is built from it
        return loader.construct_document(node)
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
            raise RecipeError(
                f"{source}: {key or 'recipe'}: nested more than {MAX_DEPTH} levels deep; a recipe is a few levels of sections and values"
            )
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


def section_model(parts: list[str]) -> type[BaseModel] | None:
    """The schema section that the dotted key `parts` names (training, training.early_stopping, ...), or None."""
    model: type[BaseModel] | None = Recipe
    for p in parts:
        field = model.model_fields.get(p) if model is not None else None
        sub = field.annotation if field is not None else None
        model = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
        if model is None:
            return None
    return model


def refuse_section_mapping(key: str, value, model) -> None:
    """`--set training={lr: 0.001}` replaced the whole section: every other key of the recipe's `training` was
    silently dropped. Refused, pointing to the per-key form."""
    if isinstance(value, dict) and model is not None:
        first = next(iter(value), None)
        shown = value[first] if isinstance(value.get(first), str) else json.dumps(value.get(first))
        example = f"--set {key}.{first}={shown}" if isinstance(first, str) else f"--set {key}.KEY=VALUE"
        raise RecipeError(
            f"--set {key}: {key} is a section; setting it to a mapping would drop the recipe's other "
            f"{key} keys: set its keys one at a time, e.g. {example}"
        )


def apply_override(data: dict, assignment: str) -> None:
    """Apply `a.b.c=value` to a nested dict; the value is parsed as YAML 1.2 (numbers, bools, lists). A whole section
    (a mapping for `training`) is refused: its keys are set one at a time."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. training.lr=3e-4")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise RecipeError(f"--set {assignment!r}: empty key part in {key!r}")
    try:
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise RecipeError(f"--set {key}: the value is nested more than {MAX_DEPTH} levels deep") from None
    refuse_section_mapping(key, value, section_model(parts))
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        if not isinstance(node[p], dict):
            raise RecipeError(f"--set {key}: {p!r} is a value, not a section")
        node = node[p]
    node[parts[-1]] = value


def plugin_keys(data: dict) -> list[tuple[str, str]]:
    """(key path, module name) of every plugin a recipe names: `adapter.plugin`, `task.plugin`, `data.plugin` and
    each `tasks[i].task.plugin` / `tasks[i].data.plugin`."""
    found = []
    for key in ("adapter", "task", "data"):
        section = data.get(key)
        if isinstance(section, dict) and section.get("plugin"):
            found.append((f"{key}.plugin", section["plugin"]))
    for i, spec in enumerate(data.get("tasks") or []):
        for key in ("task", "data"):
            sub = spec.get(key) if isinstance(spec, dict) else None
            if isinstance(sub, dict) and sub.get("plugin"):
                found.append((f"tasks.{i}.{key}.plugin", sub["plugin"]))
    return found


def recipe_from_dict(
    data: Any,
    overrides: Sequence[str] = (),
    source: str = "recipe",
    registries: Registries | None = None,
    allowed_plugins: Collection[str] | None = None,
) -> Recipe:
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
            if (
                isinstance(name, str)
                and allowed_plugins is not None
                and name not in allowed_plugins
                and name not in sys.modules
            ):
                raise RecipeError(
                    f"{source}: {key} names the module {name!r}; a run folder's files never import code on "
                    f"their own: pass --plugin {name} to this command if you trust it"
                )
            if isinstance(name, str):
                import_plugin(name, key)
        for o in overrides:
            _refuse_settings_mapping(data, o.split("=", 1)[0].strip(), registries)
        _drop_other_method_settings(data, before, overrides, registries)
    try:
        return Recipe.model_validate(data, context=registries)
    except ValidationError as e:
        raise RecipeError(_format_error(e, source)) from None


GENERIC_ADAPTER_KEYS = ("method", "plugin", "init_from")


def _refuse_settings_mapping(data: dict, key: str, registries: Registries) -> None:
    """A head's or method's own group of settings (task.generation) is a section too: `--set task.generation={...}`
    would drop its other keys. Which groups there are depends on the head and method, so after plugins load."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in ("task", "adapter") or not isinstance(data.get(parts[0]), dict):
        return
    section = data[parts[0]]
    record = (
        registries.heads.get(section.get("type", TaskConfig.model_fields["type"].default))
        if parts[0] == "task"
        else registries.methods.get(section.get("method", AdapterConfig.model_fields["method"].default))
    )
    settings = getattr(record, "settings", None)
    field = settings.model_fields.get(parts[1]) if settings is not None else None
    if field is not None:
        refuse_section_mapping(key, section.get(parts[1]), _model_in(field.annotation))


def _drop_other_method_settings(data: dict, before: dict | None, overrides, registries: Registries) -> None:
    """`--set adapter.method=X` on a recipe written for another method: the recipe's settings that X does not take
    are dropped, with a note (written in the recipe next to X itself they are still rejected)."""
    adapter = data.get("adapter")
    if not before or not isinstance(adapter, dict) or adapter.get("method") == before.get("method", "lora"):
        return
    if not any(o.split("=", 1)[0].strip() == "adapter.method" for o in overrides):
        return
    method = registries.methods.get(str(adapter.get("method")))
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
        console.echo(
            f"adapterkit: note: --set adapter.method={adapter['method']} drops the recipe's "
            f"{', '.join('adapter.' + k for k in dropped)} ({before.get('method', 'lora')} settings)",
            err=True,
        )


def load_recipe(
    path: str | Path,
    overrides: Sequence[str] = (),
    registries: Registries | None = None,
    allowed_plugins: Collection[str] | None = None,
) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the recipe as UTF-8") from None
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except RecursionError:  # the YAML parser recurses once per nesting level
        raise RecipeError(
            f"{path}: nested more than {MAX_DEPTH} levels deep; a recipe is a few levels of sections and values"
        ) from None
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
    Path(path).write_text(dump_yaml(recipe.to_dict()))
