"""Composing trained bottleneck adapters (issue #45): `adapter.method: fusion` and `stack` over source runs train
(only the fusion layers / the adapter on top, and the head), keep the sources frozen and equal to their runs' files,
save with the sources copied in (sha256 in adapter_config.json), and reload to identical predictions; bad sources are
one line. Tiny BERT; the benchmark uses MiniLM."""
import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import cli, run_loads_with, tiny_recipe, write_recipe, write_sentiment

pytestmark = pytest.mark.slow  # every test here trains tiny models

BOTTLENECK = {"method": "bottleneck", "bottleneck_size": 8}


@pytest.fixture(scope="module")
def sources(tiny_bert, tmp_path_factory):
    """Two bottleneck runs on different data (seeds), the composition's sources."""
    root = tmp_path_factory.mktemp("sources")
    runs = []
    for i in range(2):
        (root / f"data{i}").mkdir()
        files = write_sentiment(root / f"data{i}", n_train=32, n_val=16, seed=i)
        out = root / f"src{i}"
        rec = tiny_recipe(tiny_bert, files, out, replace={"adapter": dict(BOTTLENECK)}, training={"epochs": 1})
        res = cli("train", write_recipe(root / f"src{i}.yaml", rec))
        assert res.code == 0, res.err
        runs.append(out)
    return runs


def _compose(tiny_bert, tmp_path, adapter: dict, name="composed"):
    (tmp_path / "target").mkdir(exist_ok=True)
    files = write_sentiment(tmp_path / "target", n_train=32, n_val=16, seed=7)
    out = tmp_path / name
    rec = tiny_recipe(tiny_bert, files, out, replace={"adapter": adapter}, training={"epochs": 2})
    res = cli("train", write_recipe(tmp_path / f"{name}.yaml", rec))
    return res, out


def _source_weights(run):
    return {k: v for k, v in load_file(run / "adapter" / "adapter_model.safetensors").items()}


@pytest.mark.parametrize("method", ["fusion", "stack"])
def test_composition_trains_keeps_sources_frozen_and_reloads_identically(tiny_bert, tmp_path, sources, method):
    from adapterkit.inference import predict, predict_logits
    from adapterkit.inference.pool import open_pool
    from adapterkit.model import load_run

    adapter = {"method": method, "sources": [str(s) for s in sources]}
    if method == "stack":
        adapter["sources"] = adapter["sources"][:1]
        adapter["bottleneck_size"] = 4
    res, out = _compose(tiny_bert, tmp_path, adapter)
    assert res.code == 0, res.err
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["compose"] == method and len(cfg["sources"]) == len(adapter["sources"])
    import hashlib

    for spec, src in zip(cfg["sources"], adapter["sources"]):
        blob = (sources[0].parent / src.rsplit("/", 1)[-1] / "adapter" / "adapter_model.safetensors").read_bytes()
        assert spec["sha256"] == hashlib.sha256(blob).hexdigest()
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    # the sources are copied in unchanged (frozen through training)
    for i, src in enumerate(adapter["sources"]):
        for key, value in _source_weights(sources[0].parent / src.rsplit("/", 1)[-1]).items():
            path, _, leaf = key.rpartition(".bottleneck_")
            part, _, param = leaf.partition(".")
            (mine,) = [v for k, v in saved.items()  # PEFT may keep the adapter name inside nested keys
                       if k in (f"{path}.bottleneck_sources.{i}.{part}.{param}",
                                f"{path}.bottleneck_sources.default.{i}.{part}.{param}")]
            torch.testing.assert_close(mine, value, rtol=0, atol=0)
    trained = [k for k in saved if "bottleneck_fusion" in k] if method == "fusion" else \
              [k for k in saved if ".bottleneck_down." in k and "sources" not in k]
    assert trained, sorted(saved)[:5]
    if method == "fusion":  # the value projection started at the identity and moved
        value = next(v for k, v in saved.items() if k.endswith("value.weight") and "bottleneck_fusion" in k)
        assert not torch.equal(value, torch.eye(value.shape[0]))
    metrics = json.loads((out / "metrics.json").read_text())
    run = load_run(out)
    texts = ["good great fine", "bad awful poor", "great", "awful bad"]
    first = predict_logits(run.model, run.tokenizer, texts, 32)
    again = load_run(out)
    torch.testing.assert_close(predict_logits(again.model, again.tokenizer, texts, 32), first, rtol=0, atol=0)
    res = cli("eval", out)
    assert res.code == 0, res.err
    assert json.loads(res.out)["accuracy"] == metrics["validation"]["accuracy"]
    # served from a shared base beside one of its sources: the same rows as the run alone
    pool = open_pool([out, sources[0]])
    assert pool.predict(out.name, texts) == predict(out, texts)
    if method == "fusion":  # not mergeable: said so; the adapter export loads in a process without adapterkit's loader
        res = cli("export", out, "--out", tmp_path / "merged")
        assert res.code == 2 and "'fusion'" in res.err and "--format adapter" in res.err
        assert cli("export", out, "--format", "adapter", "--out", tmp_path / "exp").code == 0
        report = json.loads((tmp_path / "exp" / "export_report.json").read_text())
        assert report["reloaded_vs_run"]["max_abs_diff"] < 1e-5
        assert run_loads_with(report["loads_with"], tmp_path) == "PeftModelForSequenceClassification"


def test_bad_sources_are_one_line(tiny_bert, tmp_path, sources):
    lora = tmp_path / "lora"
    (tmp_path / "d").mkdir()
    files = write_sentiment(tmp_path / "d", n_train=16, n_val=8)
    assert cli("train", write_recipe(tmp_path / "l.yaml", tiny_recipe(tiny_bert, files, lora, training={"epochs": 1}))).code == 0
    cases = [
        ({"method": "fusion", "sources": [str(sources[0]), str(lora)]}, "adapter.sources[1]: " + str(lora) + " holds a LORA adapter"),
        ({"method": "fusion", "sources": [str(sources[0]), str(tmp_path / "nope")]}, "adapter.sources[1]: "),
        ({"method": "fusion", "sources": [str(sources[0])]}, "adapter.sources"),
        ({"method": "stack", "sources": [str(sources[0])], "placement": "houlsby"}, "adapter.placement: houlsby differs"),
    ]
    for adapter, expected in cases:
        res, out = _compose(tiny_bert, tmp_path, adapter, name="bad")
        assert res.code == 2 and len(res.err_lines) == 1 and expected in res.err_lines[0], (adapter, res.err)
