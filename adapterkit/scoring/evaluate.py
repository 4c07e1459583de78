"""Evaluation inside and after training: loss and the head's metrics over a data loader, gathered across
processes. Also used by eval, verification and export (inference/verify.py), so every number comes from one code path."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import metrics as metrics_mod
from ..heads import task_settings
from ..model.generation import generate_batch
from ..progress import progress


def lower_is_better(metric: str, mode: str = "auto") -> bool:
    if mode != "auto":
        return mode == "min"
    name = metric.rpartition("/")[2]  # multi-task selection names a metric as TASK/METRIC
    return name in ("loss", "perplexity", "mse", "mae", "rmse") or name.endswith("loss")


@dataclass
class Collected:
    """One pass over a loader: summed loss, example count, and the head's predictions with their references."""

    loss_sum: float
    n: int
    preds: torch.Tensor | None
    refs: torch.Tensor | None


@torch.no_grad()
def collect(model, loader, head, accelerator=None, desc="eval") -> Collected:
    """Run the model over a dataloader (gathered across processes, padding duplicates dropped). Token-level
    predictions of different widths are padded with -100, which metrics ignore."""
    model.eval()
    preds, refs, losses, n = [], [], 0.0, 0
    for batch in progress(loader, desc=desc, leave=False):
        out = model(**batch)
        bs = batch["input_ids"].shape[0]
        loss = out.loss.detach().float() * bs
        p = head.predict(out.logits) if head.predict is not None else None
        r = batch["labels"]
        if accelerator is not None:
            loss = accelerator.reduce(loss, "sum")
            bs = accelerator.reduce(torch.tensor(bs, device=loss.device), "sum").item()
            if p is not None:
                if p.ndim > 1 and r.ndim > 1 and head.label_kind == "tokens":
                    p = accelerator.pad_across_processes(p, dim=1, pad_index=-100)
                    r = accelerator.pad_across_processes(r, dim=1, pad_index=-100)
                p, r = accelerator.gather_for_metrics((p, r))
        losses += loss.item()
        n += bs
        if p is not None:
            preds.append(p.cpu())
            refs.append(r.cpu())
    model.train()
    return Collected(losses, n, _cat_padded(preds) if preds else None, _cat_padded(refs) if refs else None)


def evaluate(model, loader, head, accelerator=None, desc="eval", labels=None, task=None) -> dict[str, float]:
    """Loss and the head's metrics over a dataloader."""
    return score(collect(model, loader, head, accelerator, desc), head, labels, task)


def score(c: Collected, head, labels=None, task=None) -> dict[str, float]:
    """Loss and the head's metrics of one collected pass."""
    result = {"loss": round(c.loss_sum / max(c.n, 1), 6)}
    if c.preds is not None:
        result.update(head_metrics(head, c.preds, c.refs, labels, task))
    elif head.loss_metrics is not None:
        result.update(head.loss_metrics(result["loss"]))
    return result


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    if parts[0].ndim < 2 or all(p.shape[1:] == parts[0].shape[1:] for p in parts):
        return torch.cat(parts)
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-100) for p in parts])


def head_metrics(head, preds: torch.Tensor, refs: torch.Tensor, labels=None, task=None) -> dict[str, float]:
    if head.metrics_fn is not None:
        return head.metrics_fn(preds, refs, labels, task)
    return metrics_mod.compute(head.metrics, preds.tolist(), refs.tolist())


def generated_text_metrics(model, tokenizer, task, rows) -> dict:
    """task.generation_metrics (bleu, chrf, rouge, exact_match) of batched generations from `rows`' prompts against
    their references; {} when the task asks for none."""
    return generate_and_score(model, tokenizer, task, rows)[0]


def generate_and_score(model, tokenizer, task, rows) -> tuple[dict, list[str] | None]:
    """generated_text_metrics and the generated texts themselves (None when the task asks for no metrics)."""
    settings = task_settings(task)
    names = getattr(settings, "generation_metrics", None)
    if not names or rows is None:
        return {}, None
    prompts, references = rows
    predictions = generate_batch(model, tokenizer, prompts, settings.generation)
    return metrics_mod.compute(tuple(names), predictions, references), predictions
