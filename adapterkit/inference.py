"""Evaluate and predict with a trained run."""
from __future__ import annotations

import torch

from . import data as data_mod
from .errors import DataError
from .heads import HEADS
from .model import load_run
from .trainer import evaluate


def eval_run(run_dir, split: str = "validation", data_file: str | None = None, quantization=None) -> dict:
    model, tokenizer, recipe, labels, _ = load_run(run_dir, quantization)
    head = HEADS[recipe.task.type]
    path = data_file or getattr(recipe.data, split, None)
    if not path:
        raise DataError(f"data.{split}: the run's recipe has no {split} file; pass --data FILE")
    ds, has_labels = data_mod.load_eval_file(recipe, tokenizer, head, labels, path, "--data" if data_file else f"data.{split}")
    if not has_labels:
        raise DataError(f"{path}: no {recipe.data.label_column!r} column to score against")
    dl = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False)
    return evaluate(model, dl, head)


@torch.no_grad()
def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        enc.pop("token_type_ids", None) if "token_type_ids" not in tokenizer.model_input_names else None
        out.append(model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
    return torch.cat(out)


def predict(run_dir, texts: list[str]) -> list[dict]:
    model, tokenizer, recipe, labels, _ = load_run(run_dir)
    head = HEADS[recipe.task.type]
    logits = predict_logits(model, tokenizer, texts, recipe.data.max_length)
    preds = head.predict(logits)
    rows = []
    for text, p, lg in zip(texts, preds, logits):
        row = {"text": text}
        if head.label_kind == "class":
            row.update(label=labels[int(p)], score=round(float(lg.softmax(-1).max()), 4))
        elif head.label_kind == "multi":
            row["labels"] = [labels[i] for i, on in enumerate(p.tolist()) if on]
        else:
            row["prediction"] = p.tolist()
        rows.append(row)
    return rows
