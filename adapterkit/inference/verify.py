"""Evaluation passes that keep what verification needs: the head's metrics (the trainer's own code), and per
position predictions and the first logits, so two models can be compared on exactly the same inputs.
Used by export (exported vs trained vs re-quantized) and sweep (metric per adapter scale)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import data as data_mod
from ..errors import DataError
from ..heads import HEADS
from ..scoring import evaluate


@dataclass
class EvalLoader:
    loader: object
    split: str
    path: str
    examples: int


@dataclass
class Pass:
    metrics: dict
    preds: torch.Tensor  # 1-D: predictions at every scored position (class per example, label per token, next token)
    probe_logits: list = field(default_factory=list)  # logits of the first `probe` examples, per batch
    probe_examples: int = 0  # how many examples those logits come from


# Logits kept per pass at most (float32 values, 256 MiB): a decoder with a 49k vocabulary has 0.2 MB of logits a token.
PROBE_FLOATS = 2**26


def _available(cfg, split: str) -> bool:
    if not data_mod.has_split(cfg, split):
        return False
    if cfg.format == "hub" or cfg.name:
        return True
    return Path(getattr(cfg, split) or cfg.train).exists()  # a validation hold-out comes from the training file


def split_path(data, split: str = "validation") -> tuple[str, str]:
    """The split a run is verified on: the asked one, else the first of validation/test the data section has.
    Returns (split, where its rows come from)."""
    for name in (split, "validation", "test"):
        if _available(data, name):
            return name, data_mod.describe(data, name)
    raise DataError(f"data.{split}: the run's recipe names no {split} (or validation/test) file to evaluate on")


def eval_loader(recipe, tokenizer, labels, split: str = "validation", max_examples: int | None = None) -> EvalLoader:
    """Deterministic (unshuffled) loader over a split of the run's recipe."""
    head = HEADS[recipe.task.type]
    name, path = split_path(recipe.data, split)
    ds, has_labels = data_mod.load_eval_split(recipe, tokenizer, head, labels, name)
    if not has_labels:
        raise DataError(f"{path}: no {recipe.data.label_column!r} column to score against")
    if max_examples and max_examples < len(ds):
        ds = ds.select(range(max_examples))
    # Batched as training's evaluation batches (longest first): the trained pass then reproduces metrics.json (an
    # int8 backbone's outputs move with a batch's padding, which flipped single examples between the two).
    loader = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False, by_length=True)
    return EvalLoader(loader, name, path, len(ds))


class _Recorder:
    """Stands in for the model inside scoring.evaluate, so metrics and recorded predictions come from one pass."""

    def __init__(self, model, head, probe: int):
        self.model, self.head, self.probe = model, head, probe
        self.preds: list = []
        self.probe_logits: list = []
        self.seen, self.kept, self.probe_examples = 0, 0, 0

    def __call__(self, **batch):
        device = next(self.model.parameters()).device
        out = self.model(**{k: v.to(device) for k, v in batch.items()})
        logits = out.logits.detach().float()
        # Heads without a decoder (causal LM) are compared on their argmax token.
        p = self.head.predict(logits) if self.head.predict is not None else logits.argmax(-1)
        labels = batch.get("labels")
        labels = labels.to(p.device) if labels is not None else None
        if labels is not None and labels.shape == p.shape and labels.dtype == torch.long:
            p = p[labels != -100]
        self.preds.append(p.reshape(-1).cpu())
        if self.seen < self.probe and self.kept < PROBE_FLOATS:
            part = logits[: self.probe - self.seen]
            n = part.shape[0]
            if labels is not None and part.ndim == 3 and labels.shape == logits.shape[:2]:
                part = part[labels[:n] != -100]  # token-level heads: the scored positions only, not the padding
            self.probe_logits.append(part.cpu())
            self.kept += part.numel()
            self.probe_examples += n
        self.seen += logits.shape[0]
        return out

    def eval(self):
        self.model.eval()

    def train(self):  # evaluate() puts the model back in train mode; verification keeps it in eval mode
        pass


@torch.no_grad()
def run_pass(model, loader, head, probe: int = 0, labels=None, task=None) -> Pass:
    """`labels`/`task`: the run's label names and task section, which some heads' metrics need (entity spans)."""
    rec = _Recorder(model, head, probe)
    model.eval()
    metrics = evaluate(rec, loader, head, desc="verify", labels=labels, task=task)
    return Pass(
        metrics=metrics,
        preds=torch.cat(rec.preds) if rec.preds else torch.empty(0),
        probe_logits=rec.probe_logits,
        probe_examples=rec.probe_examples,
    )


def agreement(a: Pass, b: Pass) -> float:
    if a.preds.shape != b.preds.shape:
        return 0.0
    return float((a.preds == b.preds).float().mean()) if a.preds.numel() else 1.0


def logit_diff(a: list, b: list) -> tuple[float, float]:
    """Max and mean |a - b| over probe logits (same inputs, same batching)."""
    d = torch.cat([(x.float() - y.float()).abs().reshape(-1) for x, y in zip(a, b)])
    return float(d.max()), float(d.mean())


def logit_check(got: Pass, ref: Pass, tolerance: float) -> dict:
    """|got - ref| over the probe logits, judged against the logits' own scale: allowed is `tolerance` times the largest
    |logit| of `ref` (at least 1), so a 49k-vocabulary decoder and a 2-class head get the same relative bound.
    `examples` counts the probe examples really compared."""
    mx, mean = logit_diff(got.probe_logits, ref.probe_logits)
    scale = max((float(x.float().abs().max()) for x in ref.probe_logits if x.numel()), default=0.0)
    allowed = tolerance * max(scale, 1.0)
    return {
        "max_abs_diff": mx,
        "mean_abs_diff": mean,
        "logit_scale": scale,
        "relative_diff": mx / max(scale, 1.0),
        "tolerance": tolerance,
        "allowed_abs_diff": allowed,
        "examples": ref.probe_examples,
        "ok": mx <= allowed,
    }


def primary_metric(recipe, metrics: dict) -> str | None:
    """The metric that selects checkpoints in training, else the head's first metric present."""
    m = recipe.training.early_stopping.metric
    if m != "loss" and m in metrics:
        return m
    for name in (*HEADS[recipe.task.type].metrics, "f1", "accuracy"):
        if name in metrics:
            return name
    return next((k for k, v in metrics.items() if k != "loss" and isinstance(v, (int, float))), "loss")
