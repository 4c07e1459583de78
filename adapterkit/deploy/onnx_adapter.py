"""`adapterkit export RUN... --format onnx-adapter --out DIR`: one base ONNX graph and one `.onnx_adapter` file per
LoRA run (onnxruntime's adapter format), so one onnxruntime session serves every run, switching per call:

    import onnxruntime as ort
    session = ort.InferenceSession("DIR/base.onnx")
    adapter = ort.LoraAdapter(); adapter.Load("DIR/NAME.onnx_adapter")
    options = ort.RunOptions(); options.add_active_adapter(adapter)
    logits = session.run(["logits"], inputs, run_options=options)[0]

The graph is the first run's unmerged LoRA model. Its LoRA factors and head weights are initializers that are also
graph inputs (onnxruntime's overridable initializers), with the rank a symbolic dimension, so runs of other ranks fit;
LoRA's scale is folded into B (the graph multiplies by 1). Each adapter file holds one run's factors and head. Every
run is checked before anything is written: onnxruntime with its adapter against the run in PyTorch (logits on
validation examples) and scored on the validation split against the run as trained."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import AdapterkitError
from ..files import check_out_dir, new_temp_dir, read_json
from ..heads import HEADS
from ..inference import verify
from ..inference.pool import checked_specs
from ..model import load_run, load_run_recipe
from . import onnx_export
from .formats import ExportOptions

BASE = "base.onnx"


class OnnxAdapterError(AdapterkitError):
    pass


def _check_runs(specs) -> None:
    """LoRA runs with a native encoder head, of one task and label count: one line before any model loads."""
    first = None
    for _, path in specs:
        recipe = load_run_recipe(path)
        if recipe.adapter.method not in ("lora", "rslora"):
            raise OnnxAdapterError(
                f"{path}: adapter.method {recipe.adapter.method!r}; --format onnx-adapter holds LoRA runs "
                f"(lora, rslora): export others with --format onnx"
            )
        onnx_export.check_supported(recipe, HEADS[recipe.task.type])
        labels = read_json(path / "labels.json", "label map").get("labels")
        shape = (recipe.task.type, len(labels or []))
        first = first or (path, shape)
        if shape != first[1]:
            raise OnnxAdapterError(
                f"{path}: a {shape[0]} run with {shape[1]} labels; {first[0]} is a {first[1][0]} run with "
                f"{first[1][1]}: one graph serves runs of one task and label count"
            )


def _unscaled(run: Path):
    """The run in full precision with LoRA's scale folded into B (so the graph's scale is 1 for every run)."""
    from peft.tuners.lora import Linear

    loaded = load_run(run, quantization="none")
    with torch.no_grad():
        for m in loaded.model.modules():
            if isinstance(m, Linear):
                if any(m.use_dora.get(a) for a in m.lora_A):
                    raise OnnxAdapterError(f"{run}: DoRA layers do not fit a LoRA adapter file; use --format onnx")
                for a in m.lora_B:
                    m.lora_B[a].weight.mul_(m.scaling[a])
                    m.scaling[a] = 1.0
    return loaded


def _swappable(loaded) -> dict[str, np.ndarray]:
    """The weights an adapter file carries: every LoRA factor and the head's weights, by graph initializer name."""
    model = loaded.model.get_base_model()
    heads = tuple(f"{h}." for h in loaded.head_modules)
    return {
        n: np.ascontiguousarray(p.detach().float().numpy())
        for n, p in model.named_parameters()
        if "lora_A" in n or "lora_B" in n or n.startswith(heads)
    }


def _write_graph(loaded, sample: dict, path: Path, names: set[str]) -> list[str]:
    """The run's model as ONNX with `names` overridable: graph inputs beside their initializers, LoRA ranks symbolic."""
    import onnx
    from onnx import helper

    model = loaded.model.get_base_model()
    model.set_attn_implementation("eager")  # the tracer follows eager attention; sdpa's mask helpers do not export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = onnx_export.write_onnx(model, sample, path, fold_constants=False)  # keeps the weights' own names
    graph = onnx.load(str(path))
    missing = names - {i.name for i in graph.graph.initializer}
    if missing:
        raise OnnxAdapterError(f"export: the ONNX graph has no weight {sorted(missing)[0]}; it cannot take adapters")
    for init in graph.graph.initializer:
        if init.name in names:
            rank_axis = 0 if "lora_A" in init.name else 1 if "lora_B" in init.name else None
            shape = ["rank" if i == rank_axis else d for i, d in enumerate(init.dims)]
            graph.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, shape))
    del graph.graph.value_info[:]  # shapes traced with the first run's rank
    onnx.save(graph, str(path))
    return inputs


def _write_adapter(weights: dict[str, np.ndarray], path: Path) -> None:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in weights.items()})  # borrows the arrays
    fmt.export_adapter(str(path))


def export_onnx_adapters(runs: list, out: Path, options: ExportOptions) -> dict:
    """Write base.onnx and NAME.onnx_adapter for each run into `out`, each run verified; nothing lands otherwise."""
    onnx_export.require()
    out = Path(out)
    check_out_dir(out, "--out", OnnxAdapterError)
    if out.exists() and any(out.iterdir()):
        raise OnnxAdapterError(f"--out: {out} is not empty; an onnx-adapter export goes into a new or empty folder")
    if options.dtype != "float32":
        raise OnnxAdapterError(f"--dtype: {options.dtype!r}; --format onnx-adapter writes float32")
    specs = checked_specs(runs, "none")
    _check_runs(specs)
    tmp = new_temp_dir(out)
    try:
        report = _write_all(specs, tmp, options)
        (tmp / "export_report.json").write_text(json.dumps(report, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write_all(specs, tmp: Path, options: ExportOptions) -> dict:
    from .artifacts import PROBE_EXAMPLES, _prepare, _score

    report: dict = {"format": "onnx-adapter", "base": BASE, "opset": onnx_export.OPSET, "runs": {}}
    names: set[str] = set()
    for i, (name, path) in enumerate(specs):
        ref = _prepare(path, options.verify_samples)
        loaded = _unscaled(path)
        weights = _swappable(loaded)
        if i == 0:
            names = set(weights)
            report["inputs"] = _write_graph(loaded, next(iter(ref.probe)), tmp / BASE, names)
            ref.tokenizer.save_pretrained(tmp)
        elif set(weights) != names:
            other = sorted(set(weights) ^ names)[0]
            raise OnnxAdapterError(
                f"{path}: adapts other modules than {specs[0][1]} ({other}); one graph serves runs with the same "
                f"LoRA targets: export it with --format onnx"
            )
        reference = verify.run_pass(
            loaded.model, ref.probe, ref.head, probe=PROBE_EXAMPLES, labels=ref.labels, task=ref.recipe.task
        )
        del loaded
        _write_adapter(weights, tmp / f"{name}.onnx_adapter")
        graph = onnx_export.OrtModel(tmp / BASE, adapter=tmp / f"{name}.onnx_adapter")
        got = verify.run_pass(graph, ref.probe, ref.head, probe=PROBE_EXAMPLES, labels=ref.labels, task=ref.recipe.task)
        check = verify.logit_check(got, reference, options.tolerance or 1e-4)
        if not check.pop("ok"):
            raise OnnxAdapterError(
                f"export: onnxruntime with {name}.onnx_adapter differs from the run {path} by "
                f"{check['max_abs_diff']:.2e}; nothing was written"
            )
        scored = verify.run_pass(graph, ref.loader, ref.head, labels=ref.labels, task=ref.recipe.task)
        scored.metrics = {k: v for k, v in scored.metrics.items() if k != "loss"}  # the graph returns logits only
        (tmp / f"{name}.labels.json").write_text(json.dumps({"labels": ref.labels}))
        report["runs"][name] = {
            "run": str(Path(path).resolve()),
            "adapter": f"{name}.onnx_adapter",
            "labels": f"{name}.labels.json",
            "verified_on": ref.info,
            "onnx_vs_run": {"precision": "float32", **check},
            "verification": _score(ref.recipe, {"trained": ref.trained_pass, "onnx_adapter": scored}, "trained"),
        }
    return report
