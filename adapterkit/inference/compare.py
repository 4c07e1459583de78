"""Two runs (or a run and its base model) scored on the same examples: every metric, the difference with a paired
bootstrap 95% interval, and McNemar's exact test where predictions are single classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import metrics as metrics_mod
from ..data.readers import check_utf8
from ..errors import AdapterkitError
from ..files import atomic_write_text, check_out_dir, read_json
from ..heads import HEADS, task_settings
from ..heads.token import counts_metrics, entity_counts, token_metrics
from ..model import LoadedRun, load_run_recipe, require_finished
from ..model.generation import generate_batch
from ..model.identity import check_identity
from ..scoring import collect, head_metrics
from ..stats import mcnemar_exact, paired_bootstrap
from .run import eval_data, load_for_eval


class CompareError(AdapterkitError):
    pass


@dataclass
class Scored:
    """One side of a comparison: what it predicted for each example, and how to score any subset of them."""

    name: str
    n: int
    score: Callable[[np.ndarray], dict]  # example indices -> {metric: value}
    refs: object  # the references, to check both sides scored the same examples
    correct: np.ndarray | None  # per-example right/wrong (single-class heads), for McNemar


def _numeric(d: dict) -> dict:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def score_run(run: LoadedRun, name: str, split: str, data_file: str | None) -> Scored:
    recipe, labels = run.recipe, run.labels
    head = HEADS[recipe.task.type]
    dl, rows = eval_data(run, split, data_file, by_length=False)  # both sides in the file's order: paired by index
    if rows is not None:  # generated-text metrics: one generation per prompt, corpus metrics on any subset
        names = tuple(task_settings(recipe.task).generation_metrics)
        prompts, references = rows
        preds = generate_batch(run.model, run.tokenizer, prompts, task_settings(recipe.task).generation)
        return Scored(
            name,
            len(preds),
            lambda idx: _numeric(metrics_mod.compute(names, [preds[i] for i in idx], [references[i] for i in idx])),
            references,
            None,
        )
    if head.predict is None:
        raise CompareError(
            f"compare: task.type {recipe.task.type!r} is scored by its loss only; "
            f"set task.generation_metrics to compare generations"
        )
    c = collect(run.model, dl, head, desc=name)
    preds, refs = c.preds, c.refs
    correct = (preds == refs).numpy() if head.label_kind == "class" else None
    return Scored(name, len(refs), _scorer(head, preds, refs, labels, recipe.task), refs.tolist(), correct)


def _scorer(head, preds, refs, labels, task):
    """{metric: value} of a subset of the examples. Entity metrics of the built-in NER head come from per-sentence
    counts when those reproduce seqeval on the whole split (lenient matching), else from seqeval each time."""
    slow = lambda idx: _numeric(head_metrics(head, preds[idx], refs[idx], labels, task))  # noqa: E731
    if head.metrics_fn is not token_metrics or getattr(task_settings(task), "entity_scheme", None):
        return slow
    counts = entity_counts(preds, refs, labels)
    full, fast = slow(list(range(len(refs)))), counts_metrics(counts, slice(None))
    if any(full.get(k) != v for k, v in fast.items()):
        return slow
    return lambda idx: counts_metrics(counts, idx)


def _task_and_labels(run_dir) -> tuple[str, list | None]:
    """A run's task type and label map, read from its files without loading any model."""
    run = Path(run_dir)
    require_finished(run)
    check_identity(run)
    return load_run_recipe(run).task.type, read_json(run / "labels.json", "label map")["labels"]


def check_comparable(a: tuple, b: tuple, name_a: str, name_b: str) -> None:
    """`a`, `b`: (task type, labels) of the two sides."""
    (ta, la), (tb, lb) = a, b
    if ta != tb:
        raise CompareError(f"compare: task.type differs: {name_a} is {ta!r}, {name_b} is {tb!r}")
    if la != lb:
        if set(la or []) != set(lb or []):
            only_a = sorted(set(la or []) - set(lb or []))
            only_b = sorted(set(lb or []) - set(la or []))
            raise CompareError(f"compare: different label sets: only in {name_a}: {only_a}; only in {name_b}: {only_b}")
        raise CompareError(f"compare: {name_a} and {name_b} have the same labels in a different order (labels.json)")


MIN_SAMPLES, MAX_SAMPLES = 100, 100_000  # paired bootstrap resamples (--samples)


def compare(
    run_a,
    run_b=None,
    split: str = "test",
    data_file: str | None = None,
    baseline: bool = False,
    samples: int = 1000,
    seed: int = 0,
    out: Path | None = None,
) -> dict:
    """Score RUN_A and RUN_B (or, with `baseline`, RUN_A's base model zero-shot) on the same examples; A - B per
    metric with its paired-bootstrap interval; McNemar's exact p for single-class predictions."""
    if baseline == (run_b is not None):
        raise CompareError("compare: give RUN_B, or --baseline to compare RUN_A with its own base model")
    if isinstance(samples, bool) or not isinstance(samples, int) or not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        # 0 reported [+nan, +nan]; a 2.5th percentile of a few resamples is one of them, not an interval
        raise CompareError(f"--samples: {samples!r}; expected {MIN_SAMPLES} to {MAX_SAMPLES} bootstrap resamples")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CompareError(f"--seed: {seed!r}; expected a non-negative integer")
    if out is not None:
        check_out_dir(Path(out), "--out", CompareError)
    if data_file:
        check_utf8(data_file, "--data")
    name_a = str(run_a)
    info_a = _task_and_labels(run_a)
    if baseline:
        if not HEADS[info_a[0]].zero_shot:
            raise CompareError(
                f"compare --baseline: task.type {info_a[0]!r} has a trained head; train its "
                f"head-only baseline (--set adapter.method=full --set adapter.trainable_layers=0 --set backbone.quantization=none) and pass it as RUN_B"
            )
        name_b = f"{run_a} (base model, zero-shot)"
    else:
        name_b = str(run_b)
        check_comparable(info_a, _task_and_labels(run_b), name_a, name_b)  # before any model loads
    sa = score_run(load_for_eval(run_a), name_a, split, data_file)  # one model in memory at a time
    sb = score_run(load_for_eval(run_a, zero_shot=True) if baseline else load_for_eval(run_b), name_b, split, data_file)
    if sa.n != sb.n or sa.refs != sb.refs:
        where = data_file or f"split {split!r}"
        raise CompareError(
            f"compare: {name_a} and {name_b} score different examples on {where} ({sa.n} vs {sb.n} examples"
            f"{'' if sa.n != sb.n else ', references differ'}); pass the same --data FILE"
        )
    diffs = paired_bootstrap(sa.score, sb.score, sa.n, samples, seed)
    result = {
        "a": name_a,
        "b": name_b,
        "data": data_file or split,
        "examples": sa.n,
        "bootstrap_samples": samples,
        "metrics": {k: d.as_dict() for k, d in diffs.items()},
    }
    if sa.correct is not None and sb.correct is not None:
        result["mcnemar"] = mcnemar_exact(sa.correct.tolist(), sb.correct.tolist())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.json", json.dumps(result, indent=1))
        atomic_write_text(out / "compare.md", format_compare(result))
    return result


def format_compare(result: dict) -> str:
    lines = [
        f"A: {result['a']}",
        f"B: {result['b']}",
        f"{result['examples']} examples ({result['data']}); 95% paired bootstrap over {result['bootstrap_samples']} resamples",
        "",
        "| metric | A | B | A - B | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for k, d in result["metrics"].items():
        lines.append(f"| {k} | {d['a']:.4f} | {d['b']:.4f} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] |")
    if "mcnemar" in result:
        m = result["mcnemar"]
        lines += [
            "",
            f"McNemar exact test: only A right on {m['only_a_correct']}, only B right on {m['only_b_correct']}; "
            f"p = {m['p']:.4g}",
        ]
    return "\n".join(lines) + "\n"
