"""Evaluate and predict with a trained run (or, for zero-shot scoring, its base model)."""

from __future__ import annotations

import torch

from .. import data as data_mod
from ..data.readers import check_utf8
from ..errors import DataError
from ..heads import HEADS
from ..model import LoadedRun, load_base, load_run
from ..progress import chunks
from ..scoring import autocast, evaluate, generated_text_metrics


def load_for_eval(run_dir, quantization=None, zero_shot: bool = False) -> LoadedRun:
    """A trained run; with `zero_shot`, the run's backbone without the trained adapter, so a base model is scored by
    exactly the same data, prompts and metrics as the tuned one."""
    return load_base(run_dir, quantization) if zero_shot else load_run(run_dir, quantization)


def eval_data(run: LoadedRun, split: str = "validation", data_file: str | None = None, by_length: bool = True):
    """The loader of a split of the run's recipe (or of a file with the same columns), and the (prompts, references)
    for generated-text metrics when the recipe asks for them (else None). `by_length`: longest examples first, as
    training's evaluations batch them (metrics ignore order); False keeps the file's order (per-example pairing)."""
    tokenizer, recipe, labels = run.tokenizer, run.recipe, run.labels
    head = HEADS[recipe.task.type]
    if data_file:
        path = data_file
        ds, has_labels = data_mod.load_eval_file(recipe, tokenizer, head, labels, data_file, "--data")
    else:
        if not data_mod.has_split(recipe.data, split):
            raise DataError(f"data.{split}: the run's recipe has no {split} file; pass --data FILE")
        path = data_mod.describe(recipe.data, split)
        ds, has_labels = data_mod.load_eval_split(recipe, tokenizer, head, labels, split)
    if not has_labels:
        raise DataError(f"{path}: no {recipe.data.label_column!r} column to score against")
    # Longest first, as training's evaluations batch (metrics ignore order): the same batches, the same numbers.
    dl = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False, by_length=by_length)
    rows = None
    if data_mod.wants_generation(
        recipe.task, head
    ):  # generated-text metrics, before (--zero-shot) or after tuning alike
        rows = data_mod.load_generation_rows(
            recipe, tokenizer, head, split=None if data_file else split, path=data_file
        )
    return dl, rows


def eval_run(
    run_dir, split: str = "validation", data_file: str | None = None, quantization=None, zero_shot: bool = False
) -> dict:
    if data_file:
        check_utf8(data_file, "--data")  # before the model loads
    return eval_loaded(load_for_eval(run_dir, quantization, zero_shot), split, data_file)


def eval_loaded(run: LoadedRun, split: str = "validation", data_file: str | None = None) -> dict:
    """`eval_run` for a run already loaded (alone, or on a shared base: inference/pool.py)."""
    dl, rows = eval_data(run, split, data_file)
    with autocast(run.recipe.training.mixed_precision, next(run.model.parameters()).device.type):
        result = evaluate(run.model, dl, HEADS[run.recipe.task.type], labels=run.labels, task=run.recipe.task)
        result.update(generated_text_metrics(run.model, run.tokenizer, run.recipe.task, rows))
    return result


@torch.no_grad()
def predict_logits(
    model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64, forward: dict | None = None
) -> torch.Tensor:
    """The model's logits for texts, in batches. `forward`: keyword arguments of the forward call (a mixed-adapter
    batch's, whose texts then fit one batch)."""
    device = next(model.parameters()).device
    out = []
    for i in chunks(len(texts), batch_size, "predicting", min_items=4 * batch_size):
        enc = tokenizer(
            texts[i : i + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        enc.pop("token_type_ids", None) if "token_type_ids" not in tokenizer.model_input_names else None
        out.append(model(**{k: v.to(device) for k, v in enc.items()}, **(forward or {})).logits.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _head_logits(model, tokenizer, recipe, head, labels, texts: list[str]) -> torch.Tensor:
    import datasets

    ds = data_mod.encoder_for(head).encode(
        datasets.Dataset.from_dict({recipe.data.text_column: texts}), tokenizer, recipe, head, labels, "--text", False
    )
    device = next(model.parameters()).device
    dl = data_mod.dataloader(ds, tokenizer, recipe.training.eval_batch_size, False, 0, False)
    return torch.cat([model(**{k: v.to(device) for k, v in b.items()}).logits.float().cpu() for b in dl])


def predict(run_dir, texts: list[str]) -> list[dict]:
    return predict_loaded(load_run(run_dir), texts)


def predict_loaded(run: LoadedRun, texts: list[str]) -> list[dict]:
    """Predictions of a run already loaded (alone, or on a shared base: inference/pool.py), one row per text."""
    model, tokenizer, recipe = run.model, run.tokenizer, run.recipe
    labels: list = run.labels or []  # heads without a label map (regression) read none
    head = HEADS[recipe.task.type]
    if head.predict is None:
        raise DataError(f"predict: task.type {recipe.task.type!r} has no class predictions; use `adapterkit generate`")
    if head.label_kind == "tokens":  # word-level tags for whitespace-split words
        return predict_words(model, tokenizer, texts, labels, recipe.data.max_length)
    if head.inputs != "text":  # heads with their own prompt format (label words) encode through their encoder
        logits = _head_logits(model, tokenizer, recipe, head, labels, texts)
    else:
        logits = predict_logits(model, tokenizer, texts, recipe.data.max_length)
    return prediction_rows(run, texts, logits)


def prediction_rows(run: LoadedRun, texts: list[str], logits: torch.Tensor) -> list[dict]:
    """`adapterkit predict`'s row per text from the head's logits (label and score, labels, or numbers)."""
    recipe, labels = run.recipe, run.labels or []
    head = HEADS[recipe.task.type]
    assert head.predict is not None
    preds = head.predict(logits)
    rows = []
    for text, p, lg in zip(texts, preds, logits):
        row: dict[str, object] = {"text": text}
        if head.decode is not None:
            row.update(head.decode(p, recipe.task, labels))
        elif head.label_kind == "class":
            row.update(label=labels[int(p)], score=round(float(lg.softmax(-1).max()), 4))
        elif head.label_kind == "multi":
            row["labels"] = [labels[i] for i, on in enumerate(p.tolist()) if on]
        else:
            row["prediction"] = p.tolist()
        rows.append(row)
    return rows


def predict_words(
    model, tokenizer, texts: list[str], labels: list[str], max_length: int, batch_size: int = 32
) -> list[dict]:
    """Tag each whitespace-separated word by its first sub-token's prediction, grouped into entities (seqeval's reading)."""
    from seqeval.metrics.sequence_labeling import get_entities

    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(texts), batch_size):
        words = [t.split() for t in texts[i : i + batch_size]]
        enc = tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        with torch.no_grad():
            pred = model(**{k: v.to(device) for k, v in enc.items()}).logits.argmax(-1).cpu()
        for j, ws in enumerate(words):
            first = {}
            for pos, w in enumerate(enc.word_ids(j)):
                if w is not None and w not in first:
                    first[w] = labels[int(pred[j, pos])]
            tags = [first.get(w, "O") for w in range(len(ws))]  # words cut by max_length get O
            ents = [
                {"type": t, "text": " ".join(ws[s : e + 1]), "start": s, "end": e + 1} for t, s, e in get_entities(tags)
            ]
            rows.append({"text": texts[i + j], "tags": list(zip(ws, tags)), "entities": ents})
    return rows
