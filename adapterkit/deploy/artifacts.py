"""Export a trained run as a verified deployment artifact.

`merged`: the base is reloaded in full precision from its original checkpoint (merging into int8 weights
re-quantizes and drops small updates), the adapter is merged, the head attached, and the result saved as a
plain transformers folder. Before anything is written we check that merged and unmerged full-precision
logits agree, and we report how often the export agrees with the quantized model that was trained.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import data as data_mod
from ..adapters import METHODS
from ..config import BackboneConfig
from ..errors import AdapterkitError
from ..files import check_out_dir, new_temp_dir, read_json
from ..heads import HEADS, Head, HeadContext, HeadModel
from ..inference import verify
from ..model import build_task_model, is_mergeable, load_run, load_run_recipe
from ..model.backbone import DTYPES, checkpoint_dir, hub_id, load_model, package_hub_id, resolve_path
from ..model.identity import recorded_identity
from ..scoring import autocast
from . import gguf_export, onnx_export
from .formats import FORMATS, ExportFormat, ExportOptions, register_format
from .formats import names as format_names


class ExportError(AdapterkitError):
    pass


def export(
    run_dir,
    out,
    dtype: str = "float32",
    fmt: str = "merged",
    verify_samples: int | None = None,
    tolerance: float | None = None,
    requantize: bool = True,
    quantize: str | None = None,
    gguf_type: str = "f16",
    from_merged: str | None = None,
) -> dict:
    """Write a verified export of `run_dir` to `out` in format `fmt` (deploy/formats.py) and return its report (also
    saved as export_report.json). Nothing lands in `out` unless verification passes."""
    run_dir, out = Path(run_dir), Path(out)
    if verify_samples is not None and (
        isinstance(verify_samples, bool) or not isinstance(verify_samples, int) or verify_samples < 1
    ):
        # 0 verified on every example (a falsy limit); nothing documents it as "skip the check"
        raise ExportError(
            f"--verify-samples: {verify_samples!r}; expected a positive number of examples (omit it for all)"
        )
    if tolerance is not None and (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not (math.isfinite(tolerance) and tolerance > 0)
    ):
        raise ExportError(f"--tolerance: {tolerance!r}; expected a positive finite number")  # nan passed every check
    options = ExportOptions(dtype, verify_samples, tolerance, requantize, quantize, gguf_type, from_merged)
    check_out_dir(out, "--out", ExportError)
    if out.exists() and any(out.iterdir()) and not (out / "export_report.json").is_file():
        raise ExportError(f"--out: {out} exists and is not an adapterkit export; choose an empty or new folder")
    _check_only_exported(out)
    form = FORMATS.get(fmt)
    if form is None:
        raise ExportError(f"--format: {fmt!r}; expected {format_names()} (several runs: bundle or onnx-adapter)")
    _check_options(form, options)
    recipe = load_run_recipe(run_dir) if (run_dir / "recipe.yaml").is_file() else None
    if form.check is not None:
        form.check(recipe, options)
    if recipe is not None and form.merges and not is_mergeable(recipe):
        raise ExportError(
            f"export: adapter method {recipe.adapter.method!r} adds modules that cannot be merged into the weights; "
            f"use --format adapter (loads with peft.PeftModel.from_pretrained)"
        )
    tmp = new_temp_dir(out)  # a unique name adapterkit made: a user's own OUT.tmp folder is never touched
    try:
        report = form.write(run_dir, tmp, options)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = _final_paths(report, tmp, out)
    report["files"] = _file_report(tmp)
    (tmp / "export_report.json").write_text(json.dumps(report, indent=1))
    old = new_temp_dir(out, "old")
    if (
        out.exists()
    ):  # an empty folder or an earlier export (only the files its report lists): swapped out, then deleted
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return report


def _final_paths(report, tmp: Path, out: Path):
    """The report with the temporary folder's path (written while verifying) replaced by the export's own, absolute,
    so its `loads_with` strings run as written from any directory."""
    if isinstance(report, dict):
        return {k: _final_paths(v, tmp, out) for k, v in report.items()}
    if isinstance(report, list):
        return [_final_paths(v, tmp, out) for v in report]
    if isinstance(report, str):
        return report.replace(str(tmp), str(out.resolve()))
    return report


def _check_only_exported(out: Path) -> None:
    """An earlier export in `out` is replaced; only the files its report lists are its own. Anything else (a user's
    notes, a model card, a report that lists nothing) would be lost with it, so it is refused instead."""
    if not (out / "export_report.json").is_file():
        return
    listed = read_json(out / "export_report.json", "export report").get("files")
    listed = set(listed) if isinstance(listed, dict) else set()
    extra = []
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if p.is_symlink() or not p.is_dir():
            if rel not in listed and rel != "export_report.json":
                extra.append(rel)
        elif not any(f == rel or f.startswith(rel + "/") for f in listed):
            extra.append(rel + "/")  # a folder no listed file is in
    if extra:
        raise ExportError(
            f"--out: {out} holds files an earlier export did not list as its own ({extra[:3]}); move them "
            f"away or choose a new folder (replacing the export would delete them)"
        )


def _file_report(folder: Path) -> dict:
    """Size of every file, and the tensor dtypes (with counts) inside each safetensors file (header only)."""
    from safetensors import safe_open

    files = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        entry: dict[str, object] = {"bytes": p.stat().st_size}
        if p.suffix == ".safetensors":
            counts: dict[str, int] = {}
            with safe_open(str(p), "pt") as f:
                for k in f.keys():
                    dt = str(f.get_slice(k).get_dtype())
                    counts[dt] = counts.get(dt, 0) + 1
            entry["dtypes"] = counts
        files[str(p.relative_to(folder))] = entry
    return files


def _score(recipe, passes: dict, reference: str) -> dict:
    """Metric of every pass, and each one's prediction agreement with the reference (trained) pass."""
    ref = passes[reference]
    key = verify.primary_metric(recipe, ref.metrics)
    out: dict[str, Any] = {"metric": key}
    for name, p in passes.items():
        out[name] = {"metrics": p.metrics}
        if name != reference:
            out[name]["prediction_agreement"] = round(verify.agreement(p, ref), 6)
            if key in p.metrics and key in ref.metrics:
                # Points on a 0-100 scale for bounded metrics (accuracy, f1), raw difference otherwise.
                scale = 100.0 if key != "loss" and 0 <= ref.metrics[key] <= 1 else 1.0
                out[name]["delta_points"] = round((p.metrics[key] - ref.metrics[key]) * scale, 4)
    return out


@dataclass
class Reference:
    """The trained run as trained (quantized), scored on the validation split: what every export is checked against."""

    tokenizer: Any
    recipe: Any
    labels: list | None
    head: Head
    loader: Any  # the validation examples verification scores
    probe: Any  # the first PROBE_EXAMPLES of them, whose full logits are compared
    trained_pass: verify.Pass
    info: dict  # split, file and number of examples verified on


def _prepare(run_dir: Path, verify_samples: int | None) -> Reference:
    run = load_run(run_dir)
    recipe, labels = run.recipe, run.labels
    head = HEADS[recipe.task.type]
    ev = verify.eval_loader(recipe, run.tokenizer, labels, "validation", verify_samples)
    with autocast(recipe.training.mixed_precision, next(run.model.parameters()).device.type):  # as training scored
        trained_pass = verify.run_pass(run.model, ev.loader, head, labels=labels, task=recipe.task)
    del run.model
    probe = verify.eval_loader(recipe, run.tokenizer, labels, "validation", PROBE_EXAMPLES).loader
    info = {"split": ev.split, "file": ev.path, "examples": ev.examples}
    return Reference(run.tokenizer, recipe, labels, head, ev.loader, probe, trained_pass, info)


PROBE_EXAMPLES = 64  # merged-vs-unmerged logits are compared on this many validation examples (full logits kept)


def _export_adapter(run_dir: Path, tmp: Path, dtype: str, verify_samples: int | None, tolerance: float | None) -> dict:
    """PEFT adapter folder whose modules_to_save carry the trained head, so
    PeftModel.from_pretrained(<task model of the base>, DIR) restores adapter and head together."""
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    ref = _prepare(run_dir, verify_samples)
    recipe, labels, head = ref.recipe, ref.labels, ref.head
    loaded_full = load_run(run_dir, quantization="none")
    full, head_modules = loaded_full.model, loaded_full.head_modules
    reference = verify.run_pass(full, ref.probe, head, probe=PROBE_EXAMPLES, labels=labels, task=recipe.task)
    native = not isinstance(full.get_base_model(), HeadModel)
    del full, loaded_full
    cfg = read_json(run_dir / "adapter" / "adapter_config.json", "adapter config")
    base = base_name(recipe.backbone)
    cfg["base_model_name_or_path"] = base  # the Hub id where there is one, so PEFT and other tools find the base
    if recipe.backbone.revision and hub_id(recipe.backbone):
        cfg["revision"] = recipe.backbone.revision
    if cfg.get("task_type") is None and head.peft_task_type:
        cfg["task_type"] = head.peft_task_type
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    head_state = load_file(run_dir / "head.safetensors")
    if native:
        # None, not [], when nothing but the adapter trained (causal LM: the LM head is the base's own), so serving
        # engines that refuse modules_to_save (vLLM, TGI) load the adapter.
        cfg["modules_to_save"] = sorted(set(cfg.get("modules_to_save") or []) | set(head_modules)) or None
        # PEFT stores modules_to_save weights under base_model.model.<module path>, without the adapter name.
        weights.update({f"base_model.model.{k}": v for k, v in head_state.items()})
    weights = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in weights.items()}
    (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    save_file(
        {k: v.contiguous() for k, v in weights.items()},
        str(tmp / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    ref.tokenizer.save_pretrained(tmp)
    (tmp / "labels.json").write_text(json.dumps({"labels": labels}))
    shutil.copy2(run_dir / "recipe.yaml", tmp / "recipe.yaml")
    report = {
        "format": "adapter",
        "run": str(run_dir),
        "dtype": dtype,
        "method": recipe.adapter.method,
        "base": base,
        "verified_on": ref.info,
    }
    # Verify: reload the way a user would, without adapterkit's loader, and compare with the run.
    if native:
        base_model, _ = build_task_model(recipe, labels, quantization="none")
        loaded = PeftModel.from_pretrained(base_model, tmp, is_trainable=False)
        report["loads_with"] = (
            f"peft.PeftModel.from_pretrained(transformers.{head.auto().__name__}.from_pretrained("
            f"{base!r}{_revision_kwarg(cfg)}{_label_kwargs(head, labels)}), {str(tmp)!r})"
        )
        if str(cfg.get("peft_type")).upper() == "BOTTLENECK":  # PEFT has no bottleneck adapters: ours register it
            report["loads_with"] = f"(__import__('{BOTTLENECK_MODULE}'), {report['loads_with']})[1]"
    else:
        loaded = load_run(run_dir, quantization="none").model
        shutil.copy2(run_dir / "head.safetensors", tmp / "head.safetensors")
        report["loads_with"] = (
            f"peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained({base!r}), {str(tmp)!r}) + "
            f"head.safetensors (custom head: adapterkit's module)"
        )
    loaded.to(DTYPES[dtype]).eval()
    got = verify.run_pass(loaded, ref.probe, head, probe=PROBE_EXAMPLES, labels=labels, task=recipe.task)
    check = verify.logit_check(got, reference, _tolerance(recipe.export, tolerance, dtype))
    report["reloaded_vs_run"] = check
    if not check.pop("ok"):
        raise ExportError(f"export: the reloaded adapter differs from the run by {_over(check)}; nothing was written")
    exported_pass = verify.run_pass(loaded, ref.loader, head, labels=labels, task=recipe.task)
    report["verification"] = _score(recipe, {"trained": ref.trained_pass, "exported": exported_pass}, "trained")
    report["verification"]["trained"]["quantization"] = recipe.backbone.quantization
    return report


BOTTLENECK_MODULE = "adapterkit.adapters.bottleneck.registration"  # registers bottleneck, fusion and stack with PEFT


def _revision_kwarg(cfg: dict) -> str:
    return f", revision={cfg['revision']!r}" if cfg.get("revision") else ""


def _label_kwargs(head, labels) -> str:
    """`, num_labels=N, id2label={...}` for heads with named classes: the loaded model then names them."""
    if not head.named_labels or not labels:
        return ""
    return f", num_labels={len(labels)}, id2label={dict(enumerate(labels))!r}"


def base_name(backbone) -> str:
    """How an export names its base model: the Hub id when the run has one (a packaged model's, when its package
    holds that repository's own weights), else the local checkpoint folder."""
    return hub_id(backbone) or package_hub_id(backbone) or str(checkpoint_dir(backbone))


def _over(check: dict) -> str:
    return (
        f"{check['max_abs_diff']:.2e}, {check['relative_diff']:.1e} of the largest logit ({check['logit_scale']:.3g}), "
        f"> tolerance {check['tolerance']:g} of it (a float32 merge normally differs by 1e-7 to 1e-5 of it)"
    )


def _tolerance(export_cfg, tolerance: float | None, dtype: str) -> float:
    """The merged-vs-unmerged check runs in float32; a half-precision export adds rounding, so its reload
    check gets a looser bound (bf16 keeps ~3 significant digits)."""
    tol = tolerance if tolerance is not None else export_cfg.tolerance
    return tol if dtype == "float32" else max(tol, 5e-2)


def _export_merged(
    run_dir: Path,
    tmp: Path,
    dtype: str,
    verify_samples: int | None,
    tolerance: float | None,
    requantize: bool,
    onnx_quantize: str | None = None,
    gguf_type: str | None = None,
    from_merged: str | None = None,
) -> dict:
    """`onnx_quantize` (none or int8): go on from the verified merged folder to ONNX graphs (deploy/onnx_export.py);
    `gguf_type`: to one GGUF file (deploy/gguf_export.py); `from_merged`: from that merged export of the run instead
    of merging again (its merge check and scores are reused)."""
    ref = _prepare(run_dir, verify_samples)
    recipe, labels, head = ref.recipe, ref.labels, ref.head
    earlier = None if from_merged is None else _earlier_merged(run_dir, Path(from_merged))
    saved = _merge_and_save(run_dir, ref, tmp, dtype, tolerance) if earlier is None else _reuse(earlier, ref, tmp)
    report = {
        "format": "merged",
        "run": str(run_dir),
        "dtype": dtype,
        "method": recipe.adapter.method,
        "verified_on": ref.info,
        "merged_vs_unmerged": {"precision": "float32", **saved.check},
        "loads_with": saved.loads_with,
    }
    ref.tokenizer.save_pretrained(tmp)
    passes = {"trained": ref.trained_pass}
    if earlier is None:
        passes["exported"] = verify.run_pass(saved.reloaded, ref.loader, head, labels=labels, task=recipe.task)
        report["run_identity"] = recorded_identity(run_dir)  # what a later --from-merged checks
    # ONNX and GGUF go on from the reloaded float32 export, checked against the merged model's probe logits.
    tol = saved.check["tolerance"]
    if onnx_quantize is not None:
        part = onnx_export.export_onnx(
            tmp, ref, head, saved.reloaded, saved.merged_probe, tol, None if onnx_quantize == "none" else onnx_quantize
        )
        passes.update(part.pop("passes"))
        report.update(format="onnx", **part)
    if gguf_type is not None:
        report.update(format="gguf", **_to_gguf(tmp, ref, head, saved.reloaded, saved.merged_probe, gguf_type, tol))
    saved.reloaded = None
    if requantize:
        int8 = _load_int8(tmp, recipe, labels, head, saved.custom, ref.tokenizer)
        passes["exported_int8"] = verify.run_pass(int8, ref.loader, head, labels=labels, task=recipe.task)
    report["verification"] = _score(recipe, passes, "trained")
    report["verification"]["trained"]["quantization"] = recipe.backbone.quantization
    if earlier is not None:  # the merged model's own scores, from the export that verified it
        report["verification"]["exported"] = {**earlier.report["verification"]["exported"], "from": str(earlier.folder)}
        report["merged_vs_unmerged"]["from"] = str(earlier.folder)
    if requantize:
        report["verification"]["exported_int8"]["note"] = "exported merged model re-quantized to LLM.int8 on load"
    # Kept for readers of the first report format.
    report["agreement_with_trained"] = {
        "quantization": recipe.backbone.quantization,
        "prediction_agreement": report["verification"]["exported"]["prediction_agreement"],
    }
    return report


@dataclass
class _Earlier:
    folder: Path
    report: dict


def _earlier_merged(run_dir: Path, folder: Path) -> _Earlier:
    """A merged float32 export of exactly this run's weights (its report's run identity), or a one-line refusal."""
    where = f"--from-merged: {folder}"
    if not (folder / "export_report.json").is_file():
        raise ExportError(f"{where} has no export_report.json; give a folder `adapterkit export RUN --out DIR` wrote")
    report = read_json(folder / "export_report.json", "export report")
    if report.get("format") != "merged" or report.get("dtype") != "float32":
        raise ExportError(
            f"{where} is a {report.get('format')} {report.get('dtype')} export; expected a float32 merged one"
        )
    if (folder / "adapterkit_head.safetensors").is_file():
        raise ExportError(f"{where} holds a custom head (adapterkit's module), which ONNX and GGUF exports do not take")
    if report.get("run_identity") != recorded_identity(run_dir):
        raise ExportError(
            f"{where} was not exported from {run_dir} as it is now (its report's run identity differs, or an older "
            f"adapterkit wrote it); export the run merged again"
        )
    return _Earlier(folder, report)


def _reuse(earlier: _Earlier, ref, tmp: Path) -> _Saved:
    """The earlier merged export's files in `tmp`, its model reloaded and its merge check: no second merge."""
    for f in earlier.folder.iterdir():
        if f.is_file() and f.name != "export_report.json":
            shutil.copy2(f, tmp / f.name)
    reloaded, loads_with = _reload(ref, tmp, "float32")
    probe = verify.run_pass(
        reloaded, ref.probe, ref.head, probe=PROBE_EXAMPLES, labels=ref.labels, task=ref.recipe.task
    )
    check = {k: v for k, v in earlier.report["merged_vs_unmerged"].items() if k != "precision"}
    return _Saved(reloaded, False, loads_with, check, probe)


def _reload(ref, tmp: Path, dtype: str):
    """The merged model saved in `tmp`, loaded back by its transformers auto class (wrapped again where the head
    needs it), and the expression that loads it."""
    loaded = ref.head.auto().from_pretrained(tmp, dtype=DTYPES[dtype], use_safetensors=True)
    reloaded = _rewrap(loaded, ref.head, ref.recipe, ref.labels, ref.tokenizer).eval()
    return reloaded, f"transformers.{ref.head.auto().__name__}.from_pretrained({str(tmp)!r})"


@dataclass
class _Saved:
    """A merged export written to its folder: the model reloaded from it (float32 merges, half-precision rounds),
    whether its head is adapterkit's own, the merge check and the merged model's probe logits."""

    reloaded: Any
    custom: bool
    loads_with: str
    check: dict
    merged_probe: Any


def _merge_and_save(run_dir: Path, ref, tmp: Path, dtype: str, tolerance: float | None) -> _Saved:
    """Merge the adapter into a full-precision base, check the merged logits against the unmerged ones, save the
    merged model in `dtype` and reload it from the folder (the merged model is freed before the reload)."""
    recipe, labels, head = ref.recipe, ref.labels, ref.head
    full = load_run(run_dir, quantization="none").model
    unmerged = verify.run_pass(full, ref.probe, head, probe=PROBE_EXAMPLES, labels=labels, task=recipe.task)
    try:
        merged = full.merge_and_unload() if hasattr(full, "merge_and_unload") else full
    except (NotImplementedError, ValueError) as e:  # PEFT cannot merge this adapter type
        raise ExportError(
            f"export: PEFT cannot merge this {recipe.adapter.method} adapter ({str(e).splitlines()[0][:160]}); "
            f"use --format adapter"
        ) from None
    del full
    merged.eval()
    merged_probe = verify.run_pass(merged, ref.probe, head, probe=PROBE_EXAMPLES, labels=labels, task=recipe.task)
    check = verify.logit_check(merged_probe, unmerged, tolerance if tolerance is not None else recipe.export.tolerance)
    if not check.pop("ok"):
        raise ExportError(
            f"export: merged and unmerged logits differ by {_over(check)} (--tolerance / export.tolerance); "
            f"nothing was written"
        )
    merged = merged.to(DTYPES[dtype])
    if isinstance(merged, HeadModel):
        from safetensors.torch import save_file

        merged.backbone.save_pretrained(tmp)
        head_state = {k: v.contiguous() for k, v in merged.head.state_dict().items()}
        save_file(head_state, str(tmp / "adapterkit_head.safetensors"))
        (tmp / "adapterkit_head.json").write_text(json.dumps({"task": recipe.task.model_dump(), "labels": labels}))
        loads_with = "adapterkit (custom head): backbone loads with transformers.AutoModel"
        return _Saved(merged, True, loads_with, check, merged_probe)
    # Wrapped heads (label words) keep the whole task in the transformers model inside the wrapper.
    inner = merged if hasattr(merged, "save_pretrained") else merged.backbone
    inner.save_pretrained(tmp)
    del merged, inner
    reloaded, loads_with = _reload(ref, tmp, dtype)
    return _Saved(reloaded, False, loads_with, check, merged_probe)


def _to_gguf(tmp: Path, ref, head, model, merged_probe, gguf_type: str, tolerance: float) -> dict:
    """The verified merged `model` (saved in `tmp`) -> tmp/model.gguf alone, loaded back by transformers and compared."""
    from ..heads.lm import GenerationSettings

    recipe = ref.recipe
    source = resolve_path(recipe.backbone) / recipe.backbone.gguf_file if recipe.backbone.gguf_file else None
    info = gguf_export.write_gguf(
        model, ref.tokenizer, tmp / "model.gguf", gguf_type, source, Path(base_name(recipe.backbone)).name
    )
    for f in list(tmp.iterdir()):  # the GGUF file stands alone (and is verified alone)
        if f.name != "model.gguf":
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    prompts, _ = data_mod.load_generation_rows(recipe, ref.tokenizer, head, split=ref.info["split"])
    tol = gguf_export.TOLERANCE[gguf_type] or tolerance
    check = gguf_export.verify_gguf(
        tmp,
        "model.gguf",
        model,
        merged_probe,
        ref,
        head,
        tol,
        prompts[:20],
        GenerationSettings(max_new_tokens=24, batch_size=8),
    )
    if not check["logits"].pop("ok"):
        c = check["logits"]
        raise ExportError(
            f"export: the GGUF file ({gguf_type}) read back by transformers differs from the merged model by "
            f"{c['max_abs_diff']:.2e}, {c['relative_diff']:.1e} of the largest logit > tolerance {tol:g}; nothing was written"
        )
    return {
        "gguf_type": gguf_type,
        **info,
        "gguf_vs_merged": check,
        "loads_with": "llama.cpp (llama-cli -m model.gguf), Ollama (Modelfile: FROM ./model.gguf), or "
        "transformers.AutoModelForCausalLM.from_pretrained(DIR, gguf_file='model.gguf')",
    }


def _export_gguf_lora(run_dir: Path, tmp: Path, o: ExportOptions) -> dict:
    """llama.cpp's LoRA adapter GGUF (adapter.gguf) and the base model as GGUF (base.gguf): `llama-cli -m base.gguf
    --lora adapter.gguf` runs the run without merging. The adapter file is read back and each layer's update rebuilt
    as llama.cpp computes it; the base file is read back by transformers and compared with the base model."""
    from transformers import AutoModelForCausalLM

    from ..heads.lm import GenerationSettings

    ref = _prepare(run_dir, o.verify_samples)
    recipe, head, labels = ref.recipe, ref.head, ref.labels
    name = Path(base_name(recipe.backbone)).name
    run = load_run(run_dir, quantization="none")
    tensors = gguf_export.lora_tensors(run.model)
    del run
    info = gguf_export.write_lora_gguf(tensors, tmp / "adapter.gguf", o.gguf_type, name)
    read_back = gguf_export.check_lora_gguf(tmp / "adapter.gguf", tensors, {"f32": 1e-6, "f16": 1e-2}[o.gguf_type])
    if not read_back.pop("ok"):
        raise ExportError(
            f"export: the LoRA updates read back from adapter.gguf differ from the run's by "
            f"{read_back['relative_diff']:.1e} of the largest entry; nothing was written"
        )
    base = load_model(recipe.backbone, AutoModelForCausalLM, quantization="none").eval()
    source = resolve_path(recipe.backbone) / recipe.backbone.gguf_file if recipe.backbone.gguf_file else None
    gguf_export.write_gguf(base, ref.tokenizer, tmp / "base.gguf", o.gguf_type, source, name)
    probe = verify.run_pass(base, ref.probe, head, probe=PROBE_EXAMPLES, labels=labels, task=recipe.task)
    prompts, _ = data_mod.load_generation_rows(recipe, ref.tokenizer, head, split=ref.info["split"])
    tol = gguf_export.TOLERANCE[o.gguf_type] or _tolerance(recipe.export, o.tolerance, "float32")
    settings = GenerationSettings(max_new_tokens=24, batch_size=8)
    base_check = gguf_export.verify_gguf(tmp, "base.gguf", base, probe, ref, head, tol, prompts[:20], settings)
    if not base_check["logits"].pop("ok"):
        raise ExportError(
            f"export: base.gguf read back differs from the base model beyond {tol:g}; nothing was written"
        )
    return {
        "format": "gguf-lora",
        "run": str(run_dir),
        "gguf_type": o.gguf_type,
        "adapter": {**info, "read_back": read_back},
        "base_gguf_vs_base": base_check,
        "loads_with": "llama.cpp: llama-cli -m base.gguf --lora adapter.gguf (or your own GGUF of the same base); "
        "llama-cpp-python: Llama(model_path='base.gguf', lora_path='adapter.gguf')",
    }


def _check_gguf_lora(recipe, o: ExportOptions) -> None:
    _check_gguf(recipe, o)
    if recipe is not None and recipe.adapter.method not in ("lora", "rslora"):
        raise ExportError(
            f"--format gguf-lora: adapter.method {recipe.adapter.method!r}; llama.cpp applies LoRA adapters "
            f"(lora, rslora); use --format gguf (merged)"
        )
    if o.gguf_type not in ("f32", "f16"):
        raise ExportError(f"--gguf-type: {o.gguf_type!r}; --format gguf-lora writes f32 or f16 LoRA factors")


def _load_int8(folder: Path, recipe, labels, head, custom: bool, tokenizer):
    """The exported folder loaded the way a deployment would quantize it (LLM.int8, heads kept in float)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    cfg = BackboneConfig(path=str(folder), quantization="int8")
    if not custom:
        return _rewrap(load_model(cfg, head.auto()), head, recipe, labels, tokenizer).eval()
    backbone = load_model(cfg, AutoModel)
    module = head.module(backbone.config.hidden_size, recipe.task, labels)
    module.load_state_dict(load_file(folder / "adapterkit_head.safetensors"))
    return HeadModel(backbone, module, head.loss).eval()


def _rewrap(model, head, recipe, labels, tokenizer):
    return head.wrap(model, HeadContext(recipe, labels, tokenizer))[0] if head.wrap is not None else model


def _check_options(form: ExportFormat, o: ExportOptions) -> None:
    if o.quantize not in (None, "int8") or (o.quantize and "quantize" not in form.takes):
        raise ExportError(
            f"--quantize: {o.quantize!r}; only `int8`, with --format onnx (merged exports re-quantize on load: --requantize)"
        )
    if o.dtype not in DTYPES:
        raise ExportError(f"--dtype: {o.dtype!r}; expected one of {sorted(DTYPES)}")
    if o.from_merged is not None and "from_merged" not in form.takes:
        raise ExportError(f"--from-merged: only with --format onnx or gguf, not {form.name}")
    if o.tolerance is not None and not o.tolerance > 0:
        raise ExportError(f"--tolerance: {o.tolerance} must be > 0")


def _check_adapter(recipe, o: ExportOptions) -> None:
    if recipe is not None and METHODS[recipe.adapter.method].trains_base:
        raise ExportError(f"export: a {recipe.adapter.method} fine-tuning run has no adapter; use --format merged")


def _check_onnx(recipe, o: ExportOptions) -> None:
    if o.dtype != "float32":
        raise ExportError(f"--dtype: {o.dtype!r}; --format onnx writes float32 (and an int8 copy with --quantize int8)")
    if recipe is not None:
        onnx_export.check_supported(recipe, HEADS[recipe.task.type])


def _check_gguf(recipe, o: ExportOptions) -> None:
    if o.dtype != "float32":
        raise ExportError(f"--dtype: {o.dtype!r}; --format gguf takes its precision from --gguf-type (f32, f16, q8_0)")
    if recipe is not None:
        gguf_export.check_supported(recipe, o.gguf_type)


register_format(
    ExportFormat(
        "merged",
        lambda run, tmp, o: _export_merged(run, tmp, o.dtype, o.verify_samples, o.tolerance, o.requantize),
        merges=True,
        description="the adapter merged into full-precision weights: a plain transformers folder",
    )
)
register_format(
    ExportFormat(
        "adapter",
        lambda run, tmp, o: _export_adapter(run, tmp, o.dtype, o.verify_samples, o.tolerance),
        check=_check_adapter,
        description="the PEFT adapter with the head in modules_to_save: PeftModel.from_pretrained over the base",
    )
)
register_format(
    ExportFormat(
        "onnx",
        lambda run, tmp, o: _export_merged(
            run,
            tmp,
            o.dtype,
            o.verify_samples,
            o.tolerance,
            False,
            onnx_quantize=o.quantize or "none",
            from_merged=o.from_merged,
        ),
        check=_check_onnx,
        merges=True,
        takes=("quantize", "from_merged"),
        description="ONNX graphs for onnxruntime (and an int8 copy)",
    )
)
register_format(
    ExportFormat(
        "gguf",
        lambda run, tmp, o: _export_merged(
            run, tmp, o.dtype, o.verify_samples, o.tolerance, False, gguf_type=o.gguf_type, from_merged=o.from_merged
        ),
        check=_check_gguf,
        merges=True,
        takes=("gguf_type", "from_merged"),
        description="one GGUF file for llama.cpp and Ollama",
    )
)
register_format(
    ExportFormat(
        "gguf-lora",
        _export_gguf_lora,
        check=_check_gguf_lora,
        takes=("gguf_type",),
        description="llama.cpp's LoRA adapter GGUF with the base as GGUF, applied at load without merging",
    )
)
