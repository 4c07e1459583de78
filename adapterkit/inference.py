"""Evaluate and predict with a trained run."""
from __future__ import annotations

import torch

from . import data as data_mod
from .errors import DataError
from .heads import HEADS
from .model import load_run
from .rundir import read_json
from .trainer import evaluate


def load_for_eval(run_dir, quantization=None, zero_shot: bool = False):
    """(model, tokenizer, recipe, labels) of a trained run; with `zero_shot`, the run's backbone without the trained
    adapter, so a base model is scored by exactly the same data, prompts and metrics as the tuned one."""
    if not zero_shot:
        model, tokenizer, recipe, labels, _ = load_run(run_dir, quantization)
        return model, tokenizer, recipe, labels
    from pathlib import Path

    from transformers import AutoTokenizer

    from .config import load_recipe
    from .errors import RunDirError
    from .heads import build_task_model

    run = Path(run_dir)
    if not (run / "recipe.yaml").is_file() or not (run / "labels.json").is_file():
        raise RunDirError(f"{run}: not an adapterkit run (recipe.yaml or labels.json missing)")
    recipe = load_recipe(run / "recipe.yaml")
    if not HEADS[recipe.task.type].extra.get("zero_shot"):
        raise DataError(f"--zero-shot: task.type {recipe.task.type!r} has a trained head, so its base model cannot score; "
                        f"zero-shot works for heads that reuse the LM head (label_words, causal_lm)")
    labels = read_json(run / "labels.json", "label map")["labels"]
    model, _ = build_task_model(recipe, labels, quantization)
    model.eval()
    return model, AutoTokenizer.from_pretrained(run / "tokenizer"), recipe, labels


def eval_run(run_dir, split: str = "validation", data_file: str | None = None, quantization=None, zero_shot: bool = False) -> dict:
    model, tokenizer, recipe, labels = load_for_eval(run_dir, quantization, zero_shot)
    head = HEADS[recipe.task.type]
    path = data_file or getattr(recipe.data, split, None)
    if not path:
        raise DataError(f"data.{split}: the run's recipe has no {split} file; pass --data FILE")
    ds, has_labels = data_mod.load_eval_file(recipe, tokenizer, head, labels, path, "--data" if data_file else f"data.{split}")
    if not has_labels:
        raise DataError(f"{path}: no {recipe.data.label_column!r} column to score against")
    dl = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False)
    return evaluate(model, dl, head, labels=labels, task=recipe.task)


@torch.no_grad()
def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    from .progress import chunks

    for i in chunks(len(texts), batch_size, "predicting", min_items=4 * batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        enc.pop("token_type_ids", None) if "token_type_ids" not in tokenizer.model_input_names else None
        out.append(model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _head_logits(model, tokenizer, recipe, head, labels, texts: list[str]) -> torch.Tensor:
    import datasets

    ds = head.extra["tokenize"](datasets.Dataset.from_dict({recipe.data.text_column: texts}), tokenizer, recipe, labels, "--text")
    device = next(model.parameters()).device
    dl = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False)
    return torch.cat([model(**{k: v.to(device) for k, v in b.items()}).logits.float().cpu() for b in dl])


def predict(run_dir, texts: list[str]) -> list[dict]:
    model, tokenizer, recipe, labels, _ = load_run(run_dir)
    head = HEADS[recipe.task.type]
    if head.predict is None:
        raise DataError(f"predict: task.type {recipe.task.type!r} has no class predictions; use `adapterkit generate`")
    if head.label_kind == "tokens":  # word-level tags for whitespace-split words
        from .tokens import predict_words

        return predict_words(model, tokenizer, texts, labels, recipe.data.max_length)
    if "tokenize" in head.extra:  # heads with their own prompt format (label words) tokenize through it
        logits = _head_logits(model, tokenizer, recipe, head, labels, texts)
    else:
        logits = predict_logits(model, tokenizer, texts, recipe.data.max_length)
    preds = head.predict(logits)
    rows = []
    for text, p, lg in zip(texts, preds, logits):
        row = {"text": text}
        if "decode" in head.extra:
            row.update(head.extra["decode"](p, recipe.task, labels))
        elif head.label_kind == "class":
            row.update(label=labels[int(p)], score=round(float(lg.softmax(-1).max()), 4))
        elif head.label_kind == "multi":
            row["labels"] = [labels[i] for i, on in enumerate(p.tolist()) if on]
        else:
            row["prediction"] = p.tolist()
        rows.append(row)
    return rows
