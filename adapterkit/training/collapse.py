"""Degenerate training, seen at an evaluation: predictions that collapsed to one class (or one tag for every token),
an entity F1 of 0 while the gold has entities, or accuracy no better than always answering the commonest class.

Such a run has a finite, often flat loss and would otherwise finish looking fine (a LoRA NER run tagged every token
`O` for five epochs and reported success). Each finding is one sentence naming what collapsed, the likely cause and
what `training.on_collapse` does about it (recovery: training/recovery.py)."""

from __future__ import annotations

import torch

HINT = "the learning rate is the usual cause: lower training.lr (or training.head_lr)"


def findings(head, preds: torch.Tensor | None, refs: torch.Tensor | None, metrics: dict, labels=None) -> list[str]:
    """What looks collapsed in one evaluation's predictions (empty when nothing does)."""
    if preds is None or refs is None or head.label_kind not in ("class", "tokens"):
        return []

    def name(i: int) -> str:
        return repr(labels[i]) if labels and 0 <= i < len(labels) else str(i)

    keep = refs != -100
    p, r = preds[keep], refs[keep]
    if r.numel() == 0:
        return []
    out = []
    gold = torch.unique(r)
    seen = torch.unique(p)
    what = "token" if head.label_kind == "tokens" else "example"
    if len(gold) > 1 and len(seen) == 1:
        out.append(
            f"the model predicts {name(int(seen[0]))} for every validation {what} (the gold has {len(gold)} classes)"
        )
    if head.label_kind == "tokens":
        f1 = next((metrics[k] for k in ("f1", "overall_f1") if k in metrics), None)
        if f1 == 0 and len(gold) > 1:
            out.append("entity F1 is 0 while the validation gold has entities")
    elif "accuracy" in metrics and len(gold) > 1:
        majority = torch.bincount(r).max().item() / r.numel()
        if metrics["accuracy"] <= majority + 1e-9 and not out:
            out.append(
                f"validation accuracy {metrics['accuracy']:.4f} is no better than always answering the commonest "
                f"class ({majority:.4f})"
            )
    return out


def message(step: int, found: list[str], mode: str = "warn") -> str:
    then = {
        "warn": "training.on_collapse: stop ends such a run, recover (the default) goes back to better weights at a "
        "lower learning rate",
        "stop": "training.on_collapse: stop ends the run",
        "recover": "training.on_collapse: recover goes back to better weights at a lower learning rate",
    }[mode]
    return f"training looks collapsed at step {step}: {'; '.join(found)}; {HINT}; {then}"
