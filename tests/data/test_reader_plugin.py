"""Data formats are a registry: `data.format` is checked against it, and a plugin reader named by `data.plugin`
reads a format of its own end to end (data check, train, and eval of the run, which imports the plugin only when
the command line says --plugin: a run folder is data)."""
import json
import sys

import pytest

from adapterkit.data.readers import READERS, formats
from helpers import cli, tiny_recipe, write_recipe

PLUGIN = '''
import datasets

from adapterkit.data.readers import Reader, register_reader


def read(path, field, cfg=None):
    rows = [line.split(" | ") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})


register_reader(Reader("pipe", read, (".pipe",)))
'''


@pytest.fixture
def pipe_files(tmp_path, monkeypatch):
    (tmp_path / "pipe_reader.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)  # plugins are found beside the recipe, as `python -m` would
    words = {"pos": ["great", "lovely", "fine"], "neg": ["awful", "dull", "bad"]}
    files = {}
    for split, n in (("train", 24), ("validation", 8)):
        p = tmp_path / f"{split}.pipe"
        p.write_text("".join(f"a {words[l][i % 3]} film {i} | {l}\n" for i in range(n) for l in ("pos", "neg")))
        files[split] = p
    yield files
    READERS.pop("pipe", None)
    sys.modules.pop("pipe_reader", None)


def test_data_format_is_checked_against_the_registry(tiny_bert, tmp_path, pipe_files, no_model):
    r = tiny_recipe(tiny_bert, pipe_files, tmp_path / "out")
    r["data"]["format"] = "pipe"
    res = cli("data", "check", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 2 and "data.format: 'pipe' is not a data format" in res.err and "'parquet'" in res.err, res.err
    assert "pipe" not in formats()


@pytest.mark.slow
def test_a_plugin_reader_works_end_to_end(tiny_bert, tmp_path, pipe_files):
    r = tiny_recipe(tiny_bert, pipe_files, tmp_path / "run", training={"max_steps": 6, "batch_size": 8})
    r["data"]["plugin"] = "pipe_reader"  # format `auto`: the plugin's suffix picks it
    recipe = write_recipe(tmp_path / "r.yaml", r)
    res = cli("data", "check", recipe)
    assert res.code == 0, res.err
    res = cli("train", recipe)
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["labels"] == ["neg", "pos"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]["accuracy"] >= 0
    READERS.pop("pipe"), sys.modules.pop("pipe_reader")
    res = cli("eval", tmp_path / "run")  # the run's recipe names the plugin: not imported unasked
    assert res.code == 2 and "data.plugin" in res.err and "--plugin" in res.err, res.err
    res = cli("eval", tmp_path / "run", "--plugin", "pipe_reader")
    assert res.code == 0, res.err
