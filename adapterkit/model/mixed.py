"""Runs whose method mixes in a batch (`Method.mixes_in_batch`: LoRA, bottleneck) share one PEFT model on the
shared base: the first run's model takes the others' adapters by name (PEFT's `load_adapter`/`set_adapter`), and a
batch can hold rows of several runs, each through its own adapter (PEFT's `adapter_names`) and its own head
(`RoutedHead`)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import METHODS, method_settings
from ..adapters.mixing import forget_adapter, row_spans
from ..errors import RunDirError
from ..heads import HEADS


class RoutedHead(nn.Module):
    """A head module per run, picked per row. Our own because PEFT's ModulesToSaveWrapper mixes rows only for
    Linear, Embedding and Conv modules, and a BERT classification head includes its pooler."""

    def __init__(self, name: str, module: nn.Module):
        super().__init__()
        self.heads = nn.ModuleDict({name: module})
        self.active = name
        self.route: list[str] | None = None  # one adapter name per row while a mixed batch runs

    def forward(self, x, *args, **kwargs):
        if self.route is None:
            return self.heads[self.active](x, *args, **kwargs)
        out = None
        for name, start, end in row_spans(self.route):
            rows = [a[start:end] if torch.is_tensor(a) and a.shape[:1] == x.shape[:1] else a for a in args]
            part = self.heads[name](x[start:end], *rows, **kwargs)
            if out is None:
                out = part.new_empty((x.shape[0], *part.shape[1:]))
            out[start:end] = part
        return out


def _tokenizer_digest(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((run / "tokenizer").glob("*")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def mix_key(run: Path, recipe, labels) -> tuple | None:
    """Runs with the same key can share one PEFT model: a method that mixes, one task class with the same label
    count, tokenizer and text length. None: the run gets a model of its own (over the shared base all the same)."""
    method = METHODS[recipe.adapter.method]
    if method.mixes_in_batch is None or not method.mixes_in_batch(method_settings(recipe.adapter)):
        return None
    if HEADS[recipe.task.type].inputs != "text":  # LM and label-word heads keep per-run state outside the head
        return None
    return (method.name, recipe.task.type, len(labels or []), recipe.data.max_length, _tokenizer_digest(run))


@dataclass
class MixGroup:
    """One PEFT model holding several runs' adapters; `members` maps run names to PEFT adapter names."""

    key: tuple
    model: Any
    heads: dict[str, RoutedHead]
    members: dict[str, str] = field(default_factory=dict)
    count: int = 0

    @classmethod
    def start(cls, key: tuple, name: str, model, head_modules: list[str]) -> MixGroup:
        """A group from a run loaded alone (load_run on the shared base): its heads become routed heads."""
        inner = model.get_base_model()
        first = model.active_adapter
        heads = {}
        for path in head_modules:
            parent, _, child = path.rpartition(".")
            owner = inner.get_submodule(parent) if parent else inner
            heads[path] = RoutedHead(first, getattr(owner, child))
            setattr(owner, child, heads[path])
        return cls(key, model, heads, {name: first})

    def attach(self, name: str, run: Path, head_state: dict) -> None:
        """Add a run's adapter by name and its head beside the others'."""
        self.count += 1
        adapter = f"run{self.count}"  # PEFT names are module keys: a run name may hold a '.'
        try:
            self.model.load_adapter(run / "adapter", adapter_name=adapter, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as e:
            raise RunDirError(f"{run / 'adapter'}: cannot add this adapter: {str(e).splitlines()[0]}") from None
        for path, routed in self.heads.items():
            module = copy.deepcopy(next(iter(routed.heads.values())))
            own = {k[len(path) + 1 :]: v for k, v in head_state.items() if k.startswith(path + ".")}
            result = module.load_state_dict(own, strict=False)
            if result.missing_keys or result.unexpected_keys:
                self.model.delete_adapter(adapter)
                bad = (result.missing_keys or result.unexpected_keys)[0]
                raise RunDirError(f"{run / 'head.safetensors'}: {path}.{bad} does not fit this run's head")
            routed.heads[adapter] = module
        self.members[name] = adapter

    def activate(self, name: str) -> None:
        adapter = self.members[name]
        if self.model.active_adapter != adapter:
            self.model.set_adapter(adapter)
        for routed in self.heads.values():
            routed.active = adapter

    def detach(self, name: str) -> bool:
        """Drop a run's adapter and head; True when no run is left (the caller drops the group)."""
        adapter = self.members.pop(name)
        if not self.members:
            return True
        self.activate(next(iter(self.members)))  # before the delete: PEFT warns when the active one goes
        forget_adapter(self.model, adapter)
        self.model.delete_adapter(adapter)
        for routed in self.heads.values():
            del routed.heads[adapter]
        return False

    def order(self, names: list[str]) -> list[int]:
        """Row order that groups the rows of each run (a stable sort by membership): each run's rows one span."""
        rank = {n: i for i, n in enumerate(self.members)}
        return sorted(range(len(names)), key=lambda i: rank[names[i]])

    @contextmanager
    def rows(self, names: list[str]) -> Iterator[dict]:
        """Within the block, one forward pass runs row i through run names[i]'s adapter and head (rows grouped by
        run: `order`); yields the keyword arguments that forward pass takes."""
        adapters = [self.members[n] for n in names]
        method = METHODS[self.key[0]]
        mixed = (
            method.mixed_rows(self.model, adapters) if method.mixed_rows else nullcontext({"adapter_names": adapters})
        )
        for routed in self.heads.values():
            routed.route = adapters
        try:
            with mixed as forward:
                yield forward
        finally:
            for routed in self.heads.values():
                routed.route = None
