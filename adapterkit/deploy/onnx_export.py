"""`--format onnx`: the merged model with its head as an ONNX graph (torch's exporter), optionally with an int8
dynamic-quantized copy, each scored with onnxruntime on the run's validation examples against the trained run.

Why torch's exporter and not optimum's: optimum-onnx (0.1) requires transformers < 4.58, and adapterkit runs on
transformers 5. The graph takes the tokenizer's own inputs (input_ids, attention_mask[, token_type_ids]) with
dynamic batch and sequence axes and returns `logits`, as optimum's exports do."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from ..errors import AdapterkitError
from ..inference import verify

OPSET = 17


class OnnxError(AdapterkitError):
    pass


def check_supported(recipe, head) -> None:
    """Native transformers heads over encoders export; the rest is one line before any model loads."""
    if head.auto_class is None or head.wrap is not None or head.lm_training:
        raise OnnxError(
            f"--format onnx: task.type {recipe.task.type!r} is not supported (ONNX export covers the native "
            f"encoder heads: sequence/token classification, regression, multi-label); use --format merged"
            + (" or gguf" if head.lm_training else "")
        )
    pooling = getattr(recipe.task, "pooling", None)
    if pooling not in (None, "auto"):
        raise OnnxError(
            f"--format onnx: task.pooling {pooling!r} uses adapterkit's own head module; "
            f"ONNX export needs the native head (task.pooling: auto)"
        )


def require():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxError(
            "--format onnx needs the onnx and onnxruntime packages: pip install 'adapterkit[onnx]'"
        ) from None


class OrtModel:
    """An onnxruntime session standing in for the torch model inside verify.run_pass (logits only, no loss)."""

    def __init__(self, path: Path, adapter: Path | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.options = ort.RunOptions()
        if adapter is not None:  # an .onnx_adapter file: its weights replace the graph's own for every call
            self.adapter = ort.LoraAdapter()
            self.adapter.Load(str(adapter))
            self.options.add_active_adapter(self.adapter)
        feeds = {"input_ids", "attention_mask", "token_type_ids"}
        self.inputs = [i.name for i in self.session.get_inputs() if i.name in feeds]

    def __call__(self, **batch):
        feed = {k: batch[k].cpu().numpy() for k in self.inputs}
        logits = torch.from_numpy(self.session.run(["logits"], feed, run_options=self.options)[0])
        return SimpleNamespace(logits=logits, loss=torch.zeros(()))

    def parameters(self):
        yield torch.zeros(())

    def eval(self):
        return self


def write_onnx(model, sample: dict, path: Path, fold_constants: bool = True) -> list[str]:
    """Export `model` (eager attention) with the sample batch's inputs; returns the input names. Without
    `fold_constants` every weight keeps its parameter's name (folding renames transposed weights)."""
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    axes = {k: {0: "batch", 1: "sequence"} for k in names}
    axes["logits"] = (
        {0: "batch", 1: "sequence"}
        if model.config.architectures and "TokenClassification" in model.config.architectures[0]
        else {0: "batch"}
    )
    with torch.no_grad():
        torch.onnx.export(
            model,
            (),
            str(path),
            kwargs={k: sample[k] for k in names},
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=fold_constants,
        )
    return names


def _without_loss(p: verify.Pass) -> verify.Pass:
    p.metrics = {k: v for k, v in p.metrics.items() if k != "loss"}  # the ONNX graph returns logits only
    return p


def export_onnx(tmp: Path, ref, head, model, merged_probe, tolerance: float, quantize: str | None) -> dict:
    """Export the verified merged `model` (saved in `tmp`) to model.onnx (+ model_int8.onnx), check the graph against
    the merged model's probe pass, drop the torch weights. Returns the report's ONNX part; raises (nothing written)
    when the graph disagrees with the model."""
    require()
    import logging
    import warnings

    recipe, labels = ref.recipe, ref.labels
    model.set_attn_implementation("eager")  # the tracer follows eager attention; sdpa's mask helpers do not export
    sample = next(iter(ref.probe))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = write_onnx(model, sample, tmp / "model.onnx")
    graph = OrtModel(tmp / "model.onnx")
    check = verify.logit_check(
        verify.run_pass(graph, ref.probe, head, probe=10**9, labels=labels, task=recipe.task), merged_probe, tolerance
    )
    if not check.pop("ok"):
        raise OnnxError(
            f"export: onnxruntime logits differ from the merged model by {check['max_abs_diff']:.2e} "
            f"({check['relative_diff']:.1e} of the largest logit) > tolerance {tolerance:g}; nothing was written"
        )
    passes = {"onnx": _without_loss(verify.run_pass(graph, ref.loader, head, labels=labels, task=recipe.task))}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime's quantizer logs a pre-processing hint on the root logger
        try:
            quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model_int8.onnx"), weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        passes["onnx_int8"] = _without_loss(
            verify.run_pass(OrtModel(tmp / "model_int8.onnx"), ref.loader, head, labels=labels, task=recipe.task)
        )
    for f in tmp.glob("*.safetensors"):  # the graph holds the weights
        f.unlink()
    return {
        "onnx_vs_merged": {"precision": "float32", **check},
        "inputs": names,
        "opset": OPSET,
        "quantize": quantize,
        "loads_with": f"onnxruntime.InferenceSession({str(tmp / 'model.onnx')!r})",
        "tokenizer": f"transformers.AutoTokenizer.from_pretrained({str(tmp)!r})",
        "labels": "config.json beside model.onnx: id2label",
        "passes": passes,
    }
