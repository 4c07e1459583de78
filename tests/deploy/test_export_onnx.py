"""`export --format onnx [--quantize int8]`: the graph answers like the merged model (onnxruntime, float32), the int8
copy is scored against the trained run, the folder loads without adapterkit, and unsupported heads are one line."""
import json
import subprocess
import sys

import pytest

from helpers import cli, run_loads_with, tiny_recipe, write_ner, write_recipe, write_sentiment

pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra (make setup installs it)")


def _train(model_dir, files, out, **sections):
    from adapterkit.model import recipe_from_dict
    from adapterkit.training import train

    sections.setdefault("training", {}).update(epochs=2, lr=2e-2)
    train(recipe_from_dict(tiny_recipe(model_dir, files, out, **sections)))
    return out


@pytest.mark.slow
def test_sequence_classification_onnx_and_int8_verified_and_loads_without_adapterkit(tiny_bert, tmp_path):
    from adapterkit.deploy import export
    from adapterkit.inference import predict

    run = _train(tiny_bert, write_sentiment(tmp_path), tmp_path / "run")
    report = export(run, tmp_path / "onnx", fmt="onnx", quantize="int8")
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert "model.onnx" in files and "model_int8.onnx" in files and not any(f.endswith(".safetensors") for f in files)
    check = report["onnx_vs_merged"]
    assert check["examples"] == 32 and check["max_abs_diff"] <= check["allowed_abs_diff"]
    v = report["verification"]
    assert v["onnx"]["prediction_agreement"] == 1.0 and v["onnx"]["delta_points"] == 0.0
    assert 0.8 <= v["onnx_int8"]["prediction_agreement"] <= 1.0 and "delta_points" in v["onnx_int8"]
    assert "loss" not in v["onnx"]["metrics"] and report["format"] == "onnx"
    assert run_loads_with(report["loads_with"], tmp_path) == "InferenceSession"
    assert run_loads_with(report["tokenizer"], tmp_path).endswith("Tokenizer")
    assert "id2label" in json.loads((tmp_path / "onnx" / "config.json").read_text())  # where report["labels"] says
    texts = ["the film was great and really great", "the film was awful"]
    script = f"""
import json, sys, numpy as np, onnxruntime as ort
from transformers import AutoConfig, AutoTokenizer
d = {str(tmp_path / 'onnx')!r}
assert not any(m.startswith('adapterkit') for m in sys.modules)
tok = AutoTokenizer.from_pretrained(d)
s = ort.InferenceSession(d + '/model.onnx', providers=['CPUExecutionProvider'])
enc = tok({texts!r}, padding=True, return_tensors='np')
feed = {{i.name: enc[i.name].astype(np.int64) for i in s.get_inputs()}}
labels = AutoConfig.from_pretrained(d).id2label
print(json.dumps([labels[int(i)] for i in s.run(['logits'], feed)[0].argmax(-1)]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [r["label"] for r in predict(run, texts)]


@pytest.mark.slow
def test_token_classification_onnx_has_dynamic_sequence_logits(tiny_bert, tmp_path):
    from adapterkit.deploy import export

    run = _train(tiny_bert, write_ner(tmp_path), tmp_path / "run", task={"type": "token_classification"})
    report = export(run, tmp_path / "onnx", fmt="onnx")
    assert report["verification"]["onnx"]["prediction_agreement"] == 1.0
    assert report["verification"]["metric"] in ("f1", "accuracy") and "model_int8.onnx" not in report["files"]


@pytest.mark.parametrize("task,expected", [
    ({"type": "causal_lm"}, "--format onnx: task.type 'causal_lm' is not supported"),
    ({"type": "sequence_classification", "pooling": "mean"}, "--format onnx: task.pooling 'mean' uses adapterkit's own head module"),
])
def test_unsupported_heads_are_refused_before_loading(tiny_bert, tmp_path, task, expected):
    run = tmp_path / "run"
    run.mkdir()
    files = write_sentiment(tmp_path)
    write_recipe(run / "recipe.yaml", tiny_recipe(tiny_bert, files, run, task=task))
    res = cli("export", run, "--out", tmp_path / "x", "--format", "onnx")
    err = res.err.strip().splitlines()
    assert res.code == 2 and len(err) == 1 and expected in err[0], err
    for args, msg in ((["--format", "merged", "--quantize", "int8"], "--quantize: 'int8'; only `int8`, with --format onnx"),
                      (["--format", "onnx", "--dtype", "bf16"], "--format onnx writes float32")):
        res = cli("export", run, "--out", tmp_path / "x", *args)
        assert res.code == 2 and msg in res.err, res.err


@pytest.mark.slow
def test_onnx_from_an_earlier_merged_export_does_not_merge_again(tiny_bert, tmp_path, monkeypatch):
    import adapterkit.deploy.artifacts as artifacts
    from adapterkit.deploy import export

    files = write_sentiment(tmp_path)
    run = _train(tiny_bert, files, tmp_path / "run")
    merged = export(run, tmp_path / "merged", requantize=False)
    assert merged["run_identity"]["sha256"]

    def no_merge(*a, **k):
        raise AssertionError("merged again")

    monkeypatch.setattr(artifacts, "_merge_and_save", no_merge)
    report = export(run, tmp_path / "onnx", fmt="onnx", from_merged=str(tmp_path / "merged"))
    assert report["onnx_vs_merged"]["max_abs_diff"] <= report["onnx_vs_merged"]["allowed_abs_diff"]
    assert report["merged_vs_unmerged"]["from"] == str(tmp_path / "merged")
    assert report["verification"]["exported"]["metrics"] == merged["verification"]["exported"]["metrics"]
    assert report["verification"]["onnx"]["prediction_agreement"] == 1.0
    assert (tmp_path / "onnx" / "model.onnx").is_file()

    other = _train(tiny_bert, files, tmp_path / "other", training={"seed": 1})
    res = cli("export", other, "--out", tmp_path / "o2", "--format", "onnx", "--from-merged", tmp_path / "merged")
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "--from-merged" in res.err, res.err
    res = cli("export", run, "--out", tmp_path / "o3", "--from-merged", tmp_path / "merged")
    assert res.code == 2 and "only with --format onnx or gguf" in res.err, res.err
