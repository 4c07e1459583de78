"""Data through `datasets`: parquet, arrow, `save_to_disk` folders (one data set, or splits) and Hub data sets each
train from a recipe; bad sources are one line naming the key; `data.validation_split` holds out seeded rows and
records them."""
import csv
import json
from pathlib import Path

import pytest

from helpers import cli, hub_repo, tiny_recipe, write_recipe, write_sentiment


def _rows(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}


def _sources(kind: str, d: Path, files: dict) -> dict:
    """The data section for the sentiment files written as `kind`."""
    import datasets

    sets = {s: datasets.Dataset.from_dict(_rows(files[s])) for s in ("train", "validation")}
    if kind == "parquet":
        for s, ds in sets.items():
            ds.to_parquet(d / f"{s}.parquet")
        return {"train": str(d / "train.parquet"), "validation": str(d / "validation.parquet")}
    if kind == "arrow":
        out = {}
        for s, ds in sets.items():
            ds.save_to_disk(d / f"{s}_arrow")
            out[s] = str(next((d / f"{s}_arrow").glob("*.arrow")))
        return out
    if kind == "disk":
        for s, ds in sets.items():
            ds.save_to_disk(d / f"{s}_disk")
        return {"format": "disk", "train": str(d / "train_disk"), "validation": str(d / "validation_disk")}
    if kind == "disk_splits":
        datasets.DatasetDict(sets).save_to_disk(d / "splits")
        return {"format": "disk", "name": str(d / "splits"), "train": "train", "validation": "validation"}
    raise AssertionError(kind)


@pytest.fixture
def hub_data(tmp_path, monkeypatch, sentiment_files):
    """A Hub data set `adapterkit-tests/sentiment` in a real hub cache layout: two configs (README card) of parquet files."""
    import datasets

    home = tmp_path / "hf"
    files = {"README.md": b"---\nconfigs:\n- config_name: plain\n  data_files:\n  - split: train\n    path: plain/train.parquet\n"
                          b"  - split: validation\n    path: plain/validation.parquet\n- config_name: other\n  data_files:\n"
                          b"  - split: train\n    path: plain/train.parquet\n---\n"}
    for s in ("train", "validation"):
        datasets.Dataset.from_dict(_rows(sentiment_files[s])).to_parquet(tmp_path / f"hub_{s}.parquet")
        files[f"plain/{s}.parquet"] = tmp_path / f"hub_{s}.parquet"
    hub_repo(home, "adapterkit-tests/sentiment", files, repo_type="dataset", commit="e" * 40)
    monkeypatch.setenv("HF_HOME", str(home))
    return {"format": "hub", "name": "adapterkit-tests/sentiment", "config": "plain", "train": "train", "validation": "validation"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parquet", "arrow", "disk", "disk_splits", "hub"])
def test_each_source_trains_from_a_recipe(kind, tiny_bert, sentiment_files, tmp_path, request):
    data = request.getfixturevalue("hub_data") if kind == "hub" else _sources(kind, tmp_path, sentiment_files)
    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", training={"epochs": 1},
                    replace={"data": {**data, "max_length": 32}})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0 and metrics["train"]["examples"] == 64
    assert cli("eval", tmp_path / "run").code == 0


def test_bad_sources_are_one_line(tiny_bert, sentiment_files, tmp_path, hub_data):
    parquet = _sources("parquet", tmp_path, sentiment_files)
    splits = _sources("disk_splits", tmp_path, sentiment_files)
    cases = [
        ({**parquet, "text_column": "sentence"}, "data.text_column: column 'sentence' not in"),
        ({**hub_data, "validation": "valid"}, "data.validation: split 'valid' not in adapterkit-tests/sentiment (splits there: ['train', 'validation'])"),
        ({**hub_data, "config": "nope"}, "data.config: 'nope' is not a config of adapterkit-tests/sentiment"),
        ({k: v for k, v in hub_data.items() if k != "config"}, "data.config: adapterkit-tests/sentiment has several configs"),
        ({"format": "hub", "train": "train"}, "data.name: `format: hub` needs the data set id"),
        ({"format": "disk", "train": splits["name"]}, "set data.name to the folder"),
        ({**splits, "test": "test"}, "data.test: split 'test' not in"),
        ({"train": parquet["train"], "validation": parquet["validation"], "validation_split": 0.1}, "data.validation_split: give data.validation or"),
        ({"format": "parquet", "train": str(sentiment_files["train"])}, "data.train: cannot read"),
    ]
    for data, expected in cases:
        r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", replace={"data": {**data, "max_length": 32}})
        res = cli("train", write_recipe(tmp_path / "r.yaml", r))
        assert res.code == 2, expected
        assert len(res.err_lines) == 1 and expected in res.err_lines[0], (expected, res.err_lines)


@pytest.mark.slow
def test_validation_split_holds_out_seeded_rows_and_records_them(tiny_bert, tmp_path):
    files = write_sentiment(tmp_path, n_train=80, n_val=8)
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", training={"epochs": 1, "seed": 3},
                    replace={"data": {"train": str(files["train"]), "validation_split": 0.25, "max_length": 32}})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 0, res.err
    run = tmp_path / "run"
    record = json.loads((run / "data_split.json").read_text())
    assert record["rows"] == 80 and len(record["validation_rows"]) == 20 and record["train_rows"] == 60 and record["seed"] == 3
    assert record["validation_rows"] == sorted(set(record["validation_rows"])) and all(0 <= i < 80 for i in record["validation_rows"])
    from adapterkit.data import holdout

    assert holdout(80, 0.25, 3)[1] == record["validation_rows"]  # seeded: the same rows every time
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["examples"] == 60
    from adapterkit.inference import eval_run

    assert eval_run(run)["loss"] == metrics["validation"]["loss"]  # eval carves the same rows again


def test_hub_data_set_with_an_empty_parquet_file_is_one_line(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = tmp_path / "hf"
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    pq.write_table(pa.table({"text": ["good", "bad"], "label": ["pos", "neg"]}), tmp_path / "rows.parquet")
    hub_repo(home, "adapterkit-tests/empty-train", {"data/train-00000-of-00001.parquet": tmp_path / "empty.parquet",
                                                    "data/validation-00000-of-00001.parquet": tmp_path / "rows.parquet"},
             repo_type="dataset", commit="f" * 40)
    monkeypatch.setenv("HF_HOME", str(home))
    data = {"format": "hub", "name": "adapterkit-tests/empty-train", "train": "train", "validation": "validation", "max_length": 32}
    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", replace={"data": data})
    res = cli("data", "check", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 2  # was: unexpected DatasetGenerationError, exit 1
    err = res.err_lines
    assert err == ["adapterkit: error: data.name: cannot read adapterkit-tests/empty-train: data/train-00000-of-00001.parquet has no rows"], err
