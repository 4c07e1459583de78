"""Backbones by Hugging Face Hub id, read offline from a real hub cache layout built from the packaged MiniLM, with
a Hub data set beside it: train, evaluate and export; the run and its exports name the id and the commit."""
import json

import pytest
import yaml

from adapterkit.cli import main
from conftest import ROOT, hub_repo, minilm_dir

MODEL_ID, DATA_ID = "sentence-transformers/all-MiniLM-L6-v2", "adapterkit-tests/reviews"
COMMIT = "c" * 40


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    import pandas as pd

    home = tmp_path / "hf"
    src = minilm_dir()
    hub_repo(home, MODEL_ID, {p.name: p for p in src.iterdir() if p.is_file()}, commit=COMMIT)
    files = {}
    for split in ("train", "validation"):
        frame = pd.read_csv(ROOT / "examples" / "reviews" / f"{split}.csv")
        out = tmp_path / f"{split}.parquet"
        frame.to_parquet(out)
        files[f"data/{split}-00000-of-00001.parquet"] = out
    hub_repo(home, DATA_ID, files, repo_type="dataset", commit="d" * 40)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _run(*argv):
    try:
        main(list(argv))
        return 0
    except SystemExit as e:
        return e.code


@pytest.mark.slow
def test_hub_id_and_hub_data_train_evaluate_and_export_offline(hf_home, tmp_path, capsys):
    recipe = {"backbone": {"path": MODEL_ID, "quantization": "int8"}, "adapter": {"method": "lora", "r": 4, "alpha": 8},
              "data": {"format": "hub", "name": DATA_ID, "train": "train", "validation": "validation", "max_length": 32,
                       "max_train_samples": 96},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "batch_size": 16, "lr": 2e-3}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert _run("train", str(path)) == 0
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["backbone"]["path"] == MODEL_ID and saved["backbone"]["revision"] == COMMIT  # pinned to the commit
    assert saved["data"]["name"] == DATA_ID and saved["data"]["train"] == "train"
    assert json.loads((run / "run.json").read_text())["backbone"] == {"id": MODEL_ID, "revision": COMMIT}
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == MODEL_ID
    capsys.readouterr()
    assert _run("eval", str(run)) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == json.loads((run / "metrics.json").read_text())["validation"]["loss"]
    assert _run("export", str(run), "--out", str(tmp_path / "adapter"), "--format", "adapter") == 0
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (cfg["base_model_name_or_path"], cfg["task_type"], cfg["revision"]) == (MODEL_ID, "SEQ_CLS", COMMIT)
    # A user reloads it by the id, as PEFT's own loader would: base from the cache, adapter + head from the export.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # (cache_dir: transformers read HF_HOME when it was imported, before this test set it)
    base = AutoModelForSequenceClassification.from_pretrained(cfg["base_model_name_or_path"], revision=cfg["revision"], num_labels=2,
                                                              cache_dir=hf_home / "hub")
    model = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        logits = model(**tok(["This lamp is beautifully made."], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert _run("export", str(run), "--out", str(tmp_path / "merged"), "--no-requantize") == 0
    report = json.loads((tmp_path / "merged" / "export_report.json").read_text())
    assert report["verification"]["exported"]["prediction_agreement"] >= 0.9


def test_uncached_ids_are_one_line(hf_home, tmp_path, capsys):
    for section, message in (({"backbone": {"path": "nobody/no-such-model"}}, "backbone.path: 'nobody/no-such-model' is not a local folder and not in the Hugging Face cache"),
                             ({"backbone": {"path": MODEL_ID, "revision": "v9"}}, f"backbone.path: '{MODEL_ID}' at revision 'v9' is not"),
                             ({"data": {"format": "hub", "name": "nobody/no-such-data", "train": "train"}},
                              "data.name: 'nobody/no-such-data' is not a local folder and not in the Hugging Face cache")):
        recipe = {"backbone": {"path": MODEL_ID}, "data": {"format": "hub", "name": DATA_ID, "train": "train"},
                  "training": {"output_dir": str(tmp_path / "run")}}
        for k, v in section.items():
            recipe[k] = {**recipe.get(k, {}), **v}
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(recipe))
        capsys.readouterr()
        assert _run("train", str(path)) == 2
        err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
        assert len(err) == 1 and message in err[0], (message, err)
