"""Export a trained run as a verified deployment artifact.

`merged`: the base is reloaded in full precision from its original checkpoint (merging into int8 weights
re-quantizes and drops small updates), the adapter is merged, the head attached, and the result saved as a
plain transformers folder. Before anything is written we check that merged and unmerged full-precision
logits agree, and we report how often the export agrees with the quantized model that was trained.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from . import data as data_mod
from .backbone import DTYPES
from .errors import AdapterkitError
from .heads import HEADS, HeadModel
from .inference import predict_logits
from .model import is_mergeable, load_run


class ExportError(AdapterkitError):
    pass


def _texts(recipe, n: int) -> list[str]:
    for split in ("validation", "test", "train"):
        path = getattr(recipe.data, split)
        if path and Path(path).is_file():
            ds = data_mod.read_file(path, recipe.data.format, f"data.{split}")
            return [str(t) for t in ds[recipe.data.text_column][:n]], split, path
    raise ExportError("export: the run's recipe names no data file to verify the export on")


def _agreement(a: torch.Tensor, b: torch.Tensor, head) -> float:
    pa, pb = head.predict(a), head.predict(b)
    return float((pa == pb).float().mean())


def export(run_dir, out, dtype: str = "float32", fmt: str = "merged", verify_samples: int | None = None) -> dict:
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "export_report.json").is_file():
        raise ExportError(f"--out: {out} exists and is not an adapterkit export; choose an empty or new folder")
    if fmt not in ("merged", "adapter"):
        raise ExportError(f"--format: {fmt!r}; expected merged or adapter")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype: {dtype!r}; expected one of {sorted(DTYPES)}")
    from .config import load_recipe

    recipe = load_recipe(run_dir / "recipe.yaml") if (run_dir / "recipe.yaml").is_file() else None
    if recipe is not None and fmt == "merged" and not is_mergeable(recipe):
        raise ExportError(f"export: adapter method {recipe.adapter.method!r} adds modules that cannot be merged into the weights; "
                          f"use --format adapter (loads with peft.PeftModel.from_pretrained)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if fmt == "adapter":
        report = _export_adapter(run_dir, tmp)
    else:
        report = _export_merged(run_dir, tmp, dtype, verify_samples)
    report["files"] = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / "export_report.json").write_text(json.dumps(report, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return report


def _export_adapter(run_dir: Path, tmp: Path) -> dict:
    for name in ("adapter", "tokenizer"):
        if (run_dir / name).is_dir():
            shutil.copytree(run_dir / name, tmp / name)
    for name in ("head.safetensors", "labels.json", "recipe.yaml"):
        shutil.copy2(run_dir / name, tmp / name)
    return {"format": "adapter", "run": str(run_dir), "loads_with": "peft.PeftModel.from_pretrained(base, 'adapter') + head.safetensors"}


def _export_merged(run_dir: Path, tmp: Path, dtype: str, verify_samples: int | None) -> dict:
    trained, tokenizer, recipe, labels, _ = load_run(run_dir)
    head = HEADS[recipe.task.type]
    texts, split, path = _texts(recipe, verify_samples or 10**9)
    max_len = recipe.data.max_length
    trained_logits = predict_logits(trained, tokenizer, texts, max_len)
    del trained

    full, _, _, _, _ = load_run(run_dir, quantization="none")
    probe = texts[:64]
    unmerged = predict_logits(full, tokenizer, probe, max_len)
    merged = full.merge_and_unload() if hasattr(full, "merge_and_unload") else full
    merged.eval()
    merged_logits = predict_logits(merged, tokenizer, probe, max_len)
    diff = (merged_logits - unmerged).abs()
    tol = recipe.export.tolerance
    report = {"format": "merged", "run": str(run_dir), "dtype": dtype, "verified_on": {"split": split, "file": path, "examples": len(texts)},
              "merged_vs_unmerged": {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "tolerance": tol,
                                     "examples": len(probe)}}
    if float(diff.max()) > tol:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"export: merged and unmerged logits differ by {float(diff.max()):.2e} > tolerance {tol:g} "
                          f"(export.tolerance); nothing was written")
    merged = merged.to(DTYPES[dtype])
    if isinstance(merged, HeadModel):
        from safetensors.torch import save_file

        merged.backbone.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in merged.head.state_dict().items()}, str(tmp / "adapterkit_head.safetensors"))
        (tmp / "adapterkit_head.json").write_text(json.dumps({"task": recipe.task.model_dump(), "labels": labels}))
        report["loads_with"] = "adapterkit (custom head): backbone loads with transformers.AutoModel"
        exported_logits = predict_logits(merged, tokenizer, texts, max_len)
    else:
        merged.save_pretrained(tmp)
        report["loads_with"] = f"transformers.{head.auto_class.__name__}.from_pretrained"
        reloaded = head.auto_class.from_pretrained(tmp, dtype=DTYPES[dtype])
        reloaded.eval()
        exported_logits = predict_logits(reloaded, tokenizer, texts, max_len)
    tokenizer.save_pretrained(tmp)
    report["agreement_with_trained"] = {"quantization": recipe.backbone.quantization,
                                        "prediction_agreement": round(_agreement(exported_logits, trained_logits, head), 6)}
    return report
