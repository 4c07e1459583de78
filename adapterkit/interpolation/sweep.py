"""Interpolate between the base model and a trained adapter: evaluate the adapter at several scales.

LoRA-family adapters are scaled through PEFT's own per-layer `set_scale` (scale x alpha/r), so scale 0 is
exactly the base model with the trained head, 1 is the trained run, >1 extrapolates. IA3 vectors are
interpolated as 1 + s*(l - 1) (identity at 0). Writes sweep.json, sweep.md and sweep.png (metric vs scale).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..adapters import METHODS
from ..errors import AdapterkitError
from ..files import check_out_dir
from ..heads import HEADS
from ..inference import verify
from ..model import load_run


class SweepError(AdapterkitError):
    pass


MAX_SCALES = 100  # each scale is one evaluation pass over the split


def parse_scales(text: str) -> list[float]:
    if str(text).count(",") >= MAX_SCALES:  # counted before a list of a million floats is made
        raise SweepError(
            f"--scales: more than {MAX_SCALES} scales; each is an evaluation pass, give at most {MAX_SCALES}"
        )
    try:
        scales = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise SweepError(f"--scales: {text!r}; expected comma-separated numbers, e.g. 0,0.25,0.5,0.75,1,1.25") from None
    if not scales:
        raise SweepError("--scales: give at least one scale, e.g. 0,0.5,1")
    bad = next((s for s in scales if not math.isfinite(s)), None)
    if bad is not None:  # float() reads nan and inf; a NaN scale makes every adapter weight NaN
        raise SweepError(f"--scales: {bad} is not a finite number; expected comma-separated numbers, e.g. 0,0.5,1")
    return scales


def scaler(model):
    """A function scale -> None that sets every adapter layer of `model` to that scale of its trained strength."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
    ia3 = [m for m in model.modules() if isinstance(m, IA3Layer)]
    if not lora and not ia3:
        raise SweepError(
            "sweep: this run's adapter has no scalable layers (LoRA-family or IA3); "
            "prompt, prefix and bottleneck adapters cannot be interpolated with the base"
        )
    if any(getattr(m, "use_dora", {}).get(a) for m in lora for a in m.lora_A):
        # DoRA re-normalises W + s*BA to the learned magnitude, so s=0 is not the base model; say so, do not hide it.
        note = "DoRA: the learned magnitude stays applied at every scale; scale 0 is not the base model"
    else:
        note = None
    originals = [{a: p.detach().clone() for a, p in m.ia3_l.items()} for m in ia3]

    def set_scale(s: float) -> None:
        for m in lora:
            for a in list(m.scaling):
                m.set_scale(a, s)  # PEFT: scaling = s * alpha / r (or / sqrt(r) for rsLoRA)
        with torch.no_grad():
            for m, orig in zip(ia3, originals):
                for a, p in m.ia3_l.items():
                    p.copy_(1 + s * (orig[a] - 1))

    set_scale.note = note
    return set_scale


def sweep(
    run_dir,
    scales: list[float],
    out: str | Path | None = None,
    split: str = "validation",
    max_examples: int | None = None,
    quantization: str | None = None,
) -> dict:
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "sweep"
    if quantization not in (None, "none", "int8", "nf4"):
        raise SweepError(f"--quantization: {quantization!r}; expected none, int8 or nf4")
    if max_examples is not None and max_examples < 1:  # 0 used to mean "all" by accident (a falsy limit)
        raise SweepError(f"--max-examples: {max_examples}; expected a positive number of examples (omit it for all)")
    check_out_dir(out, "--out", SweepError)
    run = load_run(run_dir, quantization)
    model, tokenizer, recipe, labels = run.model, run.tokenizer, run.recipe, run.labels
    if METHODS[recipe.adapter.method].trains_base:
        raise SweepError(f"sweep: a {recipe.adapter.method} fine-tuning run has no adapter to scale")
    head = HEADS[recipe.task.type]
    set_scale = scaler(model)
    ev = verify.eval_loader(recipe, tokenizer, labels, split, max_examples)
    points = []
    for s in scales:
        set_scale(s)
        points.append({"scale": s, **verify.run_pass(model, ev.loader, head, labels=labels, task=recipe.task).metrics})
    set_scale(1.0)
    metric = verify.primary_metric(recipe, points[0])
    result = {
        "run": str(run_dir),
        "split": ev.split,
        "file": ev.path,
        "examples": ev.examples,
        "method": recipe.adapter.method,
        "quantization": quantization or recipe.backbone.quantization,
        "metric": metric,
        "points": points,
    }
    if set_scale.note:
        result["note"] = set_scale.note
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    (out / "sweep.md").write_text(_markdown(result))
    _plot(result, out / "sweep.png")
    result["out"] = str(out)
    return result


def _markdown(result: dict) -> str:
    keys = [k for k, v in result["points"][0].items() if k != "scale" and isinstance(v, (int, float))]
    lines = [
        f"Adapter scale sweep: {result['run']} ({result['method']}, {result['quantization']}), "
        f"{result['split']} split, {result['examples']} examples.",
        "",
        "| scale | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for p in result["points"]:
        lines.append(f"| {p['scale']:g} | " + " | ".join(f"{p[k]:.4f}" for k in keys) + " |")
    if result.get("note"):
        lines += ["", f"Note: {result['note']}"]
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    key = result["metric"]
    xs = [p["scale"] for p in result["points"]]
    ys = [p[key] for p in result["points"]]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(xs, ys, color="tab:blue", linewidth=1.5)
    ax.scatter(xs, ys, color="red", s=30, zorder=3)  # pure red markers: one per evaluated scale
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("adapter scale (0 = base model + trained head, 1 = trained)")
    ax.set_ylabel(f"{result['split']} {key}")
    ax.set_title(Path(result["run"]).name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata={"Description": json.dumps({"metric": key, "scale": xs, "value": ys})})
    plt.close(fig)
