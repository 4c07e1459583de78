"""Warm start (`adapter.init_from`): a new run starts from a trained adapter instead of a fresh one, with a fresh
optimizer and schedule; `--resume` is for continuing an interrupted run, this is for continuing a finished one on
new data. The source is an adapterkit run (its adapter and its head), a PEFT adapter folder, or a Hub id of one.

Label maps must match the source run's, unless `task.labels` names the new set: then the head rows of the kept
classes are carried over and new classes start fresh."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import is_hub_id
from ..errors import ModelError
from ..files import check_safetensors, read_json
from ..hub import hub_snapshot
from .identity import check_identity

FIELD = "adapter.init_from"


@dataclass
class Source:
    where: str  # as the recipe named it
    kind: str  # run | adapter | hub
    adapter: Path  # folder with adapter_config.json + adapter_model.safetensors
    head: Path | None = None  # head.safetensors of a run
    labels: list | None = None  # a run's label map


def resolve(init_from: str) -> Source:
    path = Path(init_from).expanduser()
    if path.is_dir():
        if (path / "adapter" / "adapter_config.json").is_file():
            check_identity(path)  # a head and labels from different trainings would carry the wrong classes over
            labels = (
                read_json(path / "labels.json", "label map")["labels"] if (path / "labels.json").is_file() else None
            )
            head = path / "head.safetensors" if (path / "head.safetensors").is_file() else None
            return Source(init_from, "run", path / "adapter", head, labels)
        if (path / "adapter_config.json").is_file():
            return Source(init_from, "adapter", path)
        raise ModelError(
            f"{FIELD}: {path} is neither an adapterkit run (adapter/ missing) nor a PEFT adapter folder (adapter_config.json missing)"
        )
    if is_hub_id(init_from):
        folder = hub_snapshot(init_from, None, ("*.json", "*.safetensors"), "model", FIELD, ModelError)
        if not (folder / "adapter_config.json").is_file():
            raise ModelError(
                f"{FIELD}: the Hub repository {init_from!r} holds no adapter_config.json (not a PEFT adapter)"
            )
        return Source(init_from, "hub", folder)
    raise ModelError(f"{FIELD}: {init_from} is not a folder (a run, a PEFT adapter folder) or a Hugging Face Hub id")


def check_labels(source: Source, labels: list | None, named: bool) -> None:
    """Before any model loads: a run's head fits only the same classes, unless task.labels names the new set."""
    if source.head is None or source.labels is None or labels is None or list(source.labels) == list(labels):
        return
    if not named:
        gone = [l for l in source.labels if l not in labels]
        new = [l for l in labels if l not in source.labels]
        raise ModelError(
            f"{FIELD}: {source.where} was trained on the labels {list(source.labels)}, this data has {list(labels)}"
            + (f" (new: {new})" if new else "")
            + (f" (gone: {gone})" if gone else "")
            + "; set task.labels to the new label set to carry the kept classes over"
        )


def apply(model, source: Source, labels: list | None) -> dict:
    """Load the source adapter (and head) into a freshly built PEFT model. Returns what the run records."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    cfg = read_json(source.adapter / "adapter_config.json", "adapter config")
    ours = model.peft_config["default"] if hasattr(model, "peft_config") else None
    if ours is None:
        raise ModelError(f"{FIELD}: this recipe's adapter method trains no PEFT adapter to start from")
    if str(cfg.get("peft_type")) != str(ours.peft_type.value if hasattr(ours.peft_type, "value") else ours.peft_type):
        raise ModelError(
            f"{FIELD}: {source.where} holds a {cfg.get('peft_type')} adapter, this recipe trains {ours.peft_type}"
        )
    weights_file = source.adapter / "adapter_model.safetensors"
    check_safetensors(weights_file, "adapter")
    state = load_file(weights_file)
    try:
        result = set_peft_model_state_dict(model, state)
    except RuntimeError as e:  # shapes differ: another rank, other target modules
        raise ModelError(
            f"{FIELD}: the adapter in {source.where} does not fit this recipe's adapter ({str(e).splitlines()[-1].strip()[:200]}); "
            f"use the same adapter settings as the source"
        ) from None
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ModelError(
            f"{FIELD}: the adapter in {source.where} has weights this recipe's adapter lacks ({unexpected[:2]}); "
            f"use the same target modules as the source"
        )
    record = {"source": source.where, "kind": source.kind, "adapter": str(source.adapter), "head": False}
    if source.head is not None:
        check_safetensors(source.head, "head")
        inner = model.get_base_model()
        own = dict(inner.named_parameters())
        head = load_file(source.head)
        kept = [l for l in (labels or []) if source.labels and l in source.labels]
        with torch.no_grad():
            for name, value in head.items():
                target = own.get(name)
                if target is None:
                    raise ModelError(f"{FIELD}: the head of {source.where} has {name}, which this recipe's head lacks")
                if target.shape == value.shape and (
                    labels is None
                    or source.labels is None
                    or list(labels) == list(source.labels)
                    or value.shape[0] != len(source.labels)
                ):
                    target.copy_(value.to(target.dtype))
                elif (
                    source.labels is not None
                    and value.shape[0] == len(source.labels)
                    and labels is not None
                    and target.shape[0] == len(labels)
                ):
                    for i, label in enumerate(labels):  # per-class rows: kept classes keep theirs, new ones stay fresh
                        if label in source.labels:
                            target[i].copy_(value[source.labels.index(label)].to(target.dtype))
                else:
                    raise ModelError(
                        f"{FIELD}: the head weight {name} of {source.where} has shape {tuple(value.shape)}, "
                        f"this recipe's has {tuple(target.shape)}"
                    )
        record.update(head=True, kept_labels=kept, new_labels=[l for l in (labels or []) if l not in kept])
    return record
