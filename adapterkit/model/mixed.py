"""Runs whose method mixes in a batch (`Method.mixes_in_batch`: LoRA, bottleneck) share one PEFT model on the
shared base: the first run's model takes the others' adapters by name (PEFT's `load_adapter`/`set_adapter`), and a
batch can hold rows of several runs, each through its own adapter (PEFT's `adapter_names`) and its own head
(`RoutedHead`). The heads may differ in width (a sentiment head beside a topic head or a regression head of the same
model class): several tasks answer in one forward pass (AdapterHub's `Parallel`)."""

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
        self.widths: dict[str, int] = {}  # each head's output width in the last mixed batch

    def forward(self, x, *args, **kwargs):
        if self.route is None:
            return self.heads[self.active](x, *args, **kwargs)
        parts = []
        for name, start, end in row_spans(self.route):
            rows = [a[start:end] if torch.is_tensor(a) and a.shape[:1] == x.shape[:1] else a for a in args]
            parts.append((start, end, self.heads[name](x[start:end], *rows, **kwargs)))
            self.widths[name] = parts[-1][2].shape[-1]
        first = parts[0][2]
        # Heads of different widths share one output, zero-padded on the right: each run reads its own columns.
        out = first.new_zeros((x.shape[0], *first.shape[1:-1], max(p.shape[-1] for _, _, p in parts)))
        for start, end, part in parts:
            out[start:end, ..., : part.shape[-1]] = part
        return out


def _tokenizer_digest(run: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((run / "tokenizer").glob("*")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def mix_key(run: Path, recipe, labels) -> tuple | None:
    """Runs with the same key can share one PEFT model: a method that mixes, one model class (heads of any width),
    tokenizer and text length. None: the run gets a model of its own (over the shared base all the same)."""
    method = METHODS[recipe.adapter.method]
    if method.mixes_in_batch is None or not method.mixes_in_batch(method_settings(recipe.adapter)):
        return None
    if HEADS[recipe.task.type].inputs != "text":  # LM and label-word heads keep per-run state outside the head
        return None
    head = HEADS[recipe.task.type]
    model_class = str(head.auto_class) if head.auto_class is not None else recipe.task.type
    return (method.name, model_class, recipe.data.max_length, _tokenizer_digest(run))


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
            mine = module.state_dict()
            bad = sorted(set(mine) ^ set(own))
            if bad:
                self.model.delete_adapter(adapter)
                raise RunDirError(f"{run / 'head.safetensors'}: {path}.{bad[0]} does not fit this run's head")
            for key, value in own.items():  # a head of another width: its own tensors, not copies into the first's
                owner, _, leaf = key.rpartition(".")
                sub = module.get_submodule(owner) if owner else module
                kind = nn.Parameter if isinstance(getattr(sub, leaf), nn.Parameter) else (lambda t, **_: t)
                setattr(sub, leaf, kind(value.to(mine[key].device, mine[key].dtype), requires_grad=False))
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

    def width(self, name: str) -> int | None:
        """The output width of a run's head in the last mixed batch (its columns of the shared, padded output)."""
        return next((r.widths[self.members[name]] for r in self.heads.values() if self.members[name] in r.widths), None)

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
