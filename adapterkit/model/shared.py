"""One base model in memory for several runs trained on it.

The backbone's weights load once (`SharedBase`). Each run's task model is then built on the meta device from the
same code path as a run loaded alone (`load_run(..., base=)`): every leaf module of the backbone is the shared one
(the very module object, so int8 layers keep their bitsandbytes state), the head modules are the run's own, and
PEFT wraps that model with the run's adapter. A run therefore computes exactly what it computes alone, its adapter
and head cost only their own size, and unloading it is dropping its model object.

Why leaves and not PEFT's `load_adapter` into one model: one PEFT model holds adapters of one method only, and the
runs on a base differ in method (LoRA, bottleneck, IA3, prompt tuning) and in head (classification, NER, a causal
LM); leaf sharing serves them all from one copy. Runs of one method that mixes in a batch still share one PEFT
model through `load_adapter` (model/mixed.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..files import read_json
from .backbone import DTYPES, checkpoint_dir, is_decoder, load_config, load_model

# What must match for two runs to read the same base weights the same way.
_LOADING = ("dtype", "quantization", "int8_matmul", "rope_scaling", "gguf_file", "trust_remote_code")


@dataclass(frozen=True)
class BaseKey:
    """Which base a run was trained on and how it loads: a Hub id at a commit, or a local folder with a digest of
    its config and weight files; plus the loading settings (`_LOADING`)."""

    source: str
    loading: tuple

    def describe(self) -> str:
        settings = ", ".join(f"{k} {v}" for k, v in zip(_LOADING, self.loading) if v not in (None, False))
        return f"{self.source} ({settings})"


def folder_digest(folder: Path) -> str:
    """sha256 over the folder's config.json and the names and sizes of its weight files: the same folder with
    other weights in it is another base."""
    h = hashlib.sha256()
    for p in sorted(folder.glob("*")):
        if p.name == "config.json":
            h.update(p.read_bytes())
        elif p.suffix in (".safetensors", ".gguf"):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def base_key(run: Path, recipe, quantization=None) -> BaseKey:
    b = recipe.backbone.model_copy(update={"quantization": quantization} if quantization else {})
    recorded = read_json(run / "run.json", "run status").get("backbone") or {}
    if recorded.get("id") and recorded.get("revision"):
        source = f"{recorded['id']}@{recorded['revision']}"
    else:
        folder = checkpoint_dir(b)
        source = f"{folder.resolve()} #{folder_digest(folder)}"
    return BaseKey(source, tuple(str(v) if isinstance(v, dict) else v for v in (getattr(b, k, None) for k in _LOADING)))


def same_base(run: Path, key: BaseKey, origin: Path, origin_key: BaseKey) -> None:
    if key != origin_key:
        raise RunDirError(
            f"{run}: not on the same base as {origin}: {key.describe()} against {origin_key.describe()}; "
            f"runs loaded together must share their base model and how it loads"
        )


def _direct(module) -> bool:
    return bool(module._parameters) or bool(module._buffers)


def _top(model):
    """The outermost transformers model inside a task model, and its body (the base model without a task head)."""
    from transformers import PreTrainedModel

    top = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    return top, getattr(top, top.base_model_prefix, top)


def _keyed(model) -> list[tuple[str, str, Any]]:
    """(key, name in `model`, module) of each module with its own tensors inside the transformers model, keyed the
    same way whatever task class holds the body: `body.` + the name in the base model, `top.` + the name in the
    transformers model for parts outside the body (a decoder's lm_head)."""
    top, body = _top(model)
    top_name = next(n for n, m in model.named_modules() if m is top)
    inside = {id(m): n for n, m in body.named_modules()}
    out = []
    for rel, m in top.named_modules():
        if _direct(m):
            key = f"body.{inside[id(m)]}" if id(m) in inside else f"top.{rel}"
            out.append((key, f"{top_name}.{rel}".strip(".") if top_name else rel, m))
    return out


class SharedBase:
    """The backbone of a set of runs, loaded once (`from_run`); `skeleton` and `share` build each run's task model
    around it."""

    def __init__(self, origin: Path, key: BaseKey, backbone_cfg, quantization=None):
        from transformers import AutoModel, AutoModelForCausalLM

        self.origin, self.key, self.backbone = Path(origin), key, backbone_cfg
        auto = AutoModelForCausalLM if is_decoder(load_config(backbone_cfg)) else AutoModel
        model = load_model(backbone_cfg, auto, quantization)
        model.requires_grad_(False)
        self.device = next(model.parameters()).device
        self.parts = {key: m for key, _, m in _keyed(model)}  # the only references kept: the model's shell goes

    @classmethod
    def from_run(cls, run: Path, recipe, quantization=None) -> SharedBase:
        """The base `run` was trained on, loaded as the run loads it (`quantization` overrides the recipe's)."""
        return cls(run, base_key(run, recipe, quantization), recipe.backbone, quantization)

    def check(self, run: Path, recipe, quantization=None) -> None:
        """Refuse a run trained on another base, or loading it otherwise, naming both runs."""
        same_base(run, base_key(run, recipe, quantization), self.origin, self.key)

    def skeleton(self, cfg, auto_class, quantization=None, device=None, **config_kwargs):
        """`load_model`'s stand-in: the task model's structure on the meta device, weights filled in by `share`."""
        import copy

        import torch

        config = copy.deepcopy(load_config(cfg))
        config.update(config_kwargs)
        with torch.device("meta"):
            return auto_class.from_config(config, dtype=DTYPES[cfg.dtype])

    def share(self, model, head_modules: list[str]) -> None:
        """Put the shared base into a skeleton: leaves become the shared modules, tensors held directly by larger
        modules (BERT's position ids) the shared tensors; head modules get fresh storage for the run's head file."""
        heads = {id(m) for n in head_modules for m in model.get_submodule(n).modules()}
        for key, name, m in _keyed(model):
            if id(m) in heads:  # the run's own: filled from its head file
                if any(t.is_meta for t in (*m.parameters(False), *m.buffers(False))):
                    m.to_empty(device=self.device, recurse=False)
                continue
            shared = self.parts.get(key)
            if shared is None:
                raise RunDirError(f"the shared base has no {key.split('.', 1)[1]} for this run's task model")
            if next(m.children(), None) is None:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, shared)
            else:
                for attr in ("_parameters", "_buffers"):
                    getattr(m, attr).update({k: getattr(shared, attr)[k] for k in getattr(m, attr)})
        left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
        if left:
            raise RunDirError(f"the shared base does not fill {left[0]} of this run's task model")
