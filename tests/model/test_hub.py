"""Backbones by Hugging Face Hub id, read offline from a real hub cache layout built from the packaged MiniLM, with
a Hub data set beside it: train, evaluate and export; the run and its exports name the id and the commit."""
import json

import pytest
import yaml

from helpers import ROOT, cli, hub_repo, minilm_dir, one_error_line, tiny_recipe, write_recipe, write_sentiment

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


@pytest.mark.slow
def test_hub_id_and_hub_data_train_evaluate_and_export_offline(hf_home, tmp_path):
    recipe = {"backbone": {"path": MODEL_ID, "quantization": "int8"}, "adapter": {"method": "lora", "r": 4, "alpha": 8},
              "data": {"format": "hub", "name": DATA_ID, "train": "train", "validation": "validation", "max_length": 32,
                       "max_train_samples": 96},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "batch_size": 16, "lr": 2e-3}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli("train", path).code == 0
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["backbone"]["path"] == MODEL_ID and saved["backbone"]["revision"] == COMMIT  # pinned to the commit
    assert saved["data"]["name"] == DATA_ID and saved["data"]["train"] == "train"
    assert json.loads((run / "run.json").read_text())["backbone"] == {"id": MODEL_ID, "revision": COMMIT}
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == MODEL_ID
    res = cli("eval", run)
    assert res.code == 0
    assert json.loads(res.out)["loss"] == json.loads((run / "metrics.json").read_text())["validation"]["loss"]
    assert cli("export", run, "--out", tmp_path / "adapter", "--format", "adapter").code == 0
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
    assert cli("export", run, "--out", tmp_path / "merged", "--no-requantize").code == 0
    report = json.loads((tmp_path / "merged" / "export_report.json").read_text())
    assert report["verification"]["exported"]["prediction_agreement"] >= 0.9


def test_uncached_ids_are_one_line(hf_home, tmp_path):
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
        res = cli("train", path)
        assert res.code == 2
        assert len(res.err_lines) == 1 and message in res.err_lines[0], (message, res.err_lines)


# ---- a model that left the cache, a revision that is a path (issue #36, class 8) ----

def _sentiment_recipe(tmp_path, backbone: dict) -> str:
    r = tiny_recipe(MODEL_ID, write_sentiment(tmp_path, n_train=8, n_val=4), tmp_path / "run", replace={"backbone": backbone})
    return str(write_recipe(tmp_path / "r.yaml", r))


def test_a_model_that_left_the_cache_is_named_by_id_and_revision(hf_home, tmp_path):
    import shutil

    path = _sentiment_recipe(tmp_path, {"path": MODEL_ID, "revision": COMMIT})
    assert cli("data", "check", path).code == 0  # this process has now looked the snapshot up once
    shutil.rmtree(hf_home / "hub" / f"models--{MODEL_ID.replace('/', '--')}")  # e.g. `hf cache delete`
    line = one_error_line(["data", "check", path])  # was: "backbone.path: ... is not a folder"
    for s in (f"backbone.path: '{MODEL_ID}' at revision '{COMMIT}'", "not in the Hugging Face cache", f"{hf_home / 'hub'} (HF_HOME)",
              f"hf download {MODEL_ID} --revision {COMMIT}"):
        assert s in line, (s, line)


def test_a_cached_snapshot_without_config_is_named_by_id(hf_home, tmp_path):
    snap = hf_home / "hub" / f"models--{MODEL_ID.replace('/', '--')}" / "snapshots" / COMMIT
    (snap / "config.json").unlink()
    line = one_error_line(["data", "check", _sentiment_recipe(tmp_path, {"path": MODEL_ID})])
    assert f"backbone.path: '{MODEL_ID}' is in the Hugging Face cache" in line and "without its config.json" in line, line
    assert f"hf download {MODEL_ID}" in line


@pytest.mark.parametrize("revision", ["../../x", "/etc", "main/../../x", "refs/../../../x", "a//b", ".hidden", "v 1", "x.lock"])
def test_a_revision_is_never_a_path(hf_home, revision):
    from adapterkit.errors import ModelError
    from adapterkit.hub import hub_snapshot, revision_problem

    assert revision_problem(revision)
    with pytest.raises(ModelError, match=r"^backbone\.revision: .*expected a branch or tag name"):  # library callers too
        hub_snapshot(MODEL_ID, revision, error=ModelError)


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "release-2_rc.1", COMMIT])
def test_revisions_that_are_names_pass(revision):
    from adapterkit.hub import revision_problem

    assert revision_problem(revision) is None


@pytest.mark.slow
def test_eval_of_a_run_whose_model_left_the_cache(tiny_bert, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "hf"
    hub_repo(home, "adapterkit-tests/tiny-bert", {p.name: p for p in tiny_bert.iterdir() if p.is_file()}, commit=COMMIT)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _sentiment_recipe(tmp_path, {"path": "adapterkit-tests/tiny-bert"})
    assert cli("train", path, "--set", "training.max_steps=2").code == 0
    shutil.rmtree(home / "hub")
    line = one_error_line(["eval", tmp_path / "run"])
    assert f"'adapterkit-tests/tiny-bert' at revision '{COMMIT}' is not a local folder and not in the Hugging Face cache" in line, line
    assert "(HF_HOME)" in line and f"--revision {COMMIT}" in line
