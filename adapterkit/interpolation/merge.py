"""Combine adapters trained on the same backbone into one run directory (PEFT's add_weighted_adapter).

The result is a normal run directory (recipe, labels, tokenizer, adapter, head), so eval, predict, sweep and
export work on it unchanged. The adapters are combined in float32 on a full-precision base.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from ..adapters import METHODS
from ..config import save_recipe
from ..errors import AdapterkitError
from ..files import atomic_write_text, check_out_dir, check_safetensors, new_temp_dir, read_json
from ..inference import eval_run
from ..model import RUN_FILES, load_run, load_run_recipe, require_finished
from ..model.identity import check_identity, run_identity

COMBINATIONS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
NEEDS_DENSITY = ("ties", "dare_linear", "dare_ties")


class MergeError(AdapterkitError):
    pass


def _check_runs(runs: list[Path]):
    if len(runs) < 2:
        raise MergeError("merge: give at least two run directories")
    recipes, labels = [], []
    for run in runs:
        require_finished(run, (*RUN_FILES, "adapter/adapter_config.json"), MergeError)
        check_identity(run)
        recipes.append(load_run_recipe(run))
        labels.append(read_json(run / "labels.json", "label map")["labels"])
    first = recipes[0]
    for run, r, lab in zip(runs, recipes, labels):
        if not METHODS[r.adapter.method].combinable:  # DoRA magnitudes, IA3 vectors...: no combination rule
            raise MergeError(
                f"{run}: adapter.method {r.adapter.method!r} cannot be combined; merge supports "
                f"{[n for n, m in METHODS.items() if m.combinable]}"
            )
        if (r.backbone.path, r.backbone.gguf_file) != (first.backbone.path, first.backbone.gguf_file):
            raise MergeError(
                f"{run}: backbone {r.backbone.path} differs from {runs[0]}'s {first.backbone.path}; "
                f"adapters combine only on the same backbone"
            )
        if r.task.type != first.task.type or lab != labels[0]:
            raise MergeError(
                f"{run}: task {r.task.type} with labels {lab} differs from {runs[0]} ({first.task.type}, {labels[0]})"
            )
    return recipes, labels[0]


def merge(
    runs,
    weights: list[float] | None,
    out,
    method: str = "linear",
    density: float | None = None,
    evaluate: bool = True,
    seed: int = 0,
) -> dict:
    runs, out = [Path(r) for r in runs], Path(out)
    if method not in COMBINATIONS:
        raise MergeError(f"--method: {method!r}; expected one of {list(COMBINATIONS)}")
    weights = list(weights) if weights else [1.0 / len(runs)] * len(runs)
    if not all(math.isfinite(w) for w in weights):  # nan/inf weights give an all-NaN adapter
        raise MergeError(f"--weights: {','.join(map(str, weights))}; every weight must be a finite number")
    if len(weights) != len(runs):
        raise MergeError(f"--weights: {len(weights)} weights for {len(runs)} runs")
    if abs(sum(weights)) < 1e-12:  # before any model loads
        raise MergeError(
            "--weights: they sum to 0; the task heads are averaged with these weights, which needs a non-zero sum"
        )
    if method in NEEDS_DENSITY:
        density = 0.5 if density is None else density
        if not 0 < density <= 1:
            raise MergeError(f"--density: {density} must be in (0, 1]")
    elif density is not None:  # was ignored without a word: the merge was not the one asked for
        raise MergeError(f"--density: only used with --method {', '.join(NEEDS_DENSITY)}, not {method}")
    check_out_dir(out, "--out", MergeError)
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"--out: {out} exists and is not empty; choose a new folder")
    recipes, labels = _check_runs(runs)

    first = load_run(runs[0], quantization="none")
    model, recipe = first.model, first.recipe
    names = ["default"]
    for i, run in enumerate(runs[1:], 1):
        check_safetensors(run / "adapter" / "adapter_model.safetensors", "adapter")
        model.load_adapter(run / "adapter", adapter_name=f"run{i}", is_trainable=False)
        names.append(f"run{i}")
    torch.manual_seed(seed)  # DARE drops at random
    try:
        model.add_weighted_adapter(names, weights, "merged", combination_type=method, density=density)
    except ValueError as e:
        raise MergeError(f"merge: {method}: {str(e).splitlines()[0]}") from None
    _fix_rslora_scaling(model, "merged")
    _check_finite(model, "merged")

    tmp = new_temp_dir(out)  # a unique name adapterkit made: a user's own OUT.tmp folder is never touched
    try:
        info = _write_merged(model, recipe, runs, weights, labels, method, density, out, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del model, first  # eval_run loads the merged run: one model in memory at a time
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.rename(out)
    if evaluate:
        info["validation"] = eval_run(out) if recipe.data.validation else None
        atomic_write_text(out / "metrics.json", json.dumps({"validation": info["validation"]}, indent=1))
        atomic_write_text(out / "run.json", json.dumps(info, indent=1))
    info["out"] = str(out)
    return info


def _check_finite(model, name: str) -> None:
    """The combined adapter must be finite before anything is written: extreme weights or a degenerate svd/ties
    combination would otherwise give a run marked finished whose every prediction is NaN."""
    bad = next((n for n, p in model.named_parameters() if name in n.split(".") and not torch.isfinite(p).all()), None)
    if bad is not None:
        raise MergeError(
            f"merge: the combined adapter has NaN or inf values ({bad}); nothing was written. "
            f"Check --weights and --method"
        )


def _write_merged(model, recipe, runs, weights, labels, method, density, out, tmp) -> dict:
    """Everything of the merged run into `tmp`; returns its run.json info."""
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp / "peft", selected_adapters=["merged"])
    saved = tmp / "peft" / "merged" if (tmp / "peft" / "merged").is_dir() else tmp / "peft"
    shutil.move(str(saved), tmp / "adapter")
    shutil.rmtree(tmp / "peft", ignore_errors=True)

    # Heads are not adapters: combine them with the same weights, normalised to sum 1 (a weighted average),
    # so merging two heads with 0.5/0.5 gives their mean.
    total = sum(weights)  # not 0: checked in merge()
    heads = [load_file(run / "head.safetensors") for run in runs]
    head = {k: sum(w * h[k].float() for w, h in zip(weights, heads)) / total for k in heads[0]}
    bad = next((k for k, v in head.items() if not torch.isfinite(v).all()), None)
    if bad is not None:
        raise MergeError(
            f"merge: the averaged head has NaN or inf values ({bad}); nothing was written. Check --weights"
        )
    save_file({k: v.to(heads[0][k].dtype).contiguous() for k, v in head.items()}, str(tmp / "head.safetensors"))

    cfg = json.loads((tmp / "adapter" / "adapter_config.json").read_text())
    merged_recipe = recipe.model_copy(deep=True)
    merged_recipe.adapter = type(recipe.adapter).model_validate(
        {**recipe.to_dict()["adapter"], "method": "lora", "r": cfg["r"], "alpha": cfg["lora_alpha"]}
    )
    merged_recipe.training.output_dir = str(out.resolve())
    save_recipe(merged_recipe, tmp / "recipe.yaml")
    shutil.copytree(runs[0] / "tokenizer", tmp / "tokenizer")
    atomic_write_text(tmp / "labels.json", json.dumps({"labels": labels}, indent=1))
    info = {
        "status": "finished",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "merged_from": [str(r.resolve()) for r in runs],
        "weights": weights,
        "combination": method,
        "density": density,
        "rank": cfg["r"],
        "identity": run_identity(tmp),
    }
    atomic_write_text(tmp / "run.json", json.dumps(info, indent=1))
    return info


def _fix_rslora_scaling(model, name: str) -> None:
    """add_weighted_adapter folds each source's scaling into the new factors and gives the new adapter
    lora_alpha = r, i.e. scaling 1, but keeps use_rslora from the first source, which would scale by sqrt(r)."""
    from peft.tuners.lora import LoraLayer

    cfg = model.peft_config[name]
    if not getattr(cfg, "use_rslora", False):
        return
    cfg.use_rslora = False
    for m in model.modules():
        if isinstance(m, LoraLayer) and name in m.scaling:
            m.use_rslora[name] = False
            m.scaling[name] = m.lora_alpha[name] / m.r[name]
