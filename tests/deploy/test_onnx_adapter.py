"""`--format onnx-adapter`: one base graph and one onnxruntime adapter file per LoRA run; one plain onnxruntime
session switches between the runs per call, and each run's predictions equal its own ONNX export and PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import cli

pytestmark = pytest.mark.slow  # the runs it exports are trained once per session

TEXTS = ["a good thing", "bad bad awful terrible product here", "ok", "what a lovely day it was", "broken"]


@pytest.fixture(scope="module")
def exports(base_runs, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_adapter")
    res = cli("export", base_runs["lora0"], f"second={base_runs['lora1']}", "--format", "onnx-adapter", "--out", d / "multi",
              "--verify-samples", "8")
    assert res.code == 0, res.err
    for name in ("lora0", "lora1"):
        res = cli("export", base_runs[name], "--format", "onnx", "--out", d / name, "--verify-samples", "8")
        assert res.code == 0, res.err
    return d


def _logits(session, tokenizer, options=None):
    enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    names = [i.name for i in session.get_inputs() if i.name in ("input_ids", "attention_mask", "token_type_ids")]
    return session.run(["logits"], {k: enc[k] for k in names}, run_options=options)[0]


def test_one_session_serves_each_run_as_its_own_export_and_pytorch(exports, base_runs):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from adapterkit.inference.run import predict_logits
    from adapterkit.model import load_run

    multi = exports / "multi"
    assert sorted(p.name for p in multi.glob("*.onnx*")) == ["base.onnx", "lora0.onnx_adapter", "second.onnx_adapter"]
    report = json.loads((multi / "export_report.json").read_text())
    assert report["runs"]["second"]["onnx_vs_run"]["max_abs_diff"] < 1e-4
    tokenizer = AutoTokenizer.from_pretrained(multi)
    session = ort.InferenceSession(str(multi / "base.onnx"), providers=["CPUExecutionProvider"])  # one session
    got = {}
    for adapter, run in (("lora0", "lora0"), ("second", "lora1")):
        lora = ort.LoraAdapter()
        lora.Load(str(multi / f"{adapter}.onnx_adapter"))
        options = ort.RunOptions()
        options.add_active_adapter(lora)
        got[run] = _logits(session, tokenizer, options)
        own = _logits(ort.InferenceSession(str(exports / run / "model.onnx"), providers=["CPUExecutionProvider"]), tokenizer)
        alone = load_run(base_runs[run])
        torch_logits = predict_logits(alone.model, alone.tokenizer, TEXTS, alone.recipe.data.max_length).numpy()
        assert np.abs(got[run] - own).max() < 1e-4 and (got[run].argmax(-1) == own.argmax(-1)).all()
        assert np.abs(got[run] - torch_logits).max() < 1e-4
    assert np.abs(got["lora0"] - got["lora1"]).max() > 1e-4  # the adapter decides, not the graph's own weights


@pytest.mark.parametrize("run,says", [("bottleneck0", "holds LoRA runs"), ("ner", "one graph serves runs of one task and label count")])
def test_runs_it_cannot_hold_are_one_line(base_runs, tmp_path, no_model, run, says):
    res = cli("export", base_runs["lora0"], base_runs[run], "--format", "onnx-adapter", "--out", tmp_path / "x")
    assert res.code == 2 and len(res.err_lines) == 1 and says in res.err, res.err
    assert not (tmp_path / "x").exists()
